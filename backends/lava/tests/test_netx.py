"""netx HDF5 export: lava-dl 0.6.0's own reader runs it in Lava with snncc's fixed-point counts (ConvChain
with host input, a spike-input MLP over T = 2, a tiny residual graph counted by hand, ConvChain compiled
and written by the installed `snncc`, the shipped digits CNN by `snncc.cli.main`); the layout
(identity input, D threshold copies, carried shortcut channels) validated against the netx schema;
deterministic bytes; every node netx cannot express named (stateful neurons, a shortcut from the input,
attention, pooling feeding a conv layer)."""

from __future__ import annotations

import io
import math
import time

import h5py
import numpy as np
import pytest
import torch

from snncc.errors import TargetError
from snncc.ir.graph import Graph, Node
from snncc_lava import fixed, netx
from snncc_lava.network import build

FIRE = {"D": 4, "theta": 1.0, "beta": 0.5, "norm": 1.0, "rounding": "floor"}


def test_conv_chain_layout(conv_chain):
    """input = the host's encoding activation of n1; n1 behind identity synapses; every neuron as D
    threshold copies (channel-major), the next layer's weights repeated over the copies."""
    data = netx.export(conv_chain)
    ls = netx.validate(data)
    D = 4
    assert [(d["type"], d["shape"]) for d in ls] == [
        ("input", (6, 8, 8)), ("conv", (6 * D, 8, 8)), ("conv", (8 * D, 4, 4)), ("flatten", (8 * D * 16, 1, 1)),
        ("dense", (5,))]
    q = fixed.quantize(build(conv_chain), "netx")
    with h5py.File(io.BytesIO(data), "r") as f:
        assert f["layer/1/type"].dtype == np.dtype("S10") and f["layer/1/type"][0].decode("ascii") == "conv"
        assert f["snncc/nodes"][()].tolist() == [b"", b"n1", b"n2", b"", b"output"]
        assert int(f["snncc/resetInterval"][()]) == 1 and int(f["snncc/inputMessageBits"][()]) == 24
        assert np.array_equal(f["snncc/outputBias"][()], conv_chain["head"].params["bias"])
    assert np.array_equal(ls[1]["weight"], np.ones((6 * D, 1, 1, 1))) and int(ls[1]["groups"]) == 6
    n1, n2 = q.populations["n1"], q.populations["n2"]
    k2 = ls[2]["weight"]
    assert k2.shape == (8 * D, 6 * D, 3, 3)
    m = q.projections[0].weight.toarray()  # n1 -> n2 in the fixed-point network
    assert k2[0, 0, 1, 1] == m[0, 0] and k2[D - 1, D + 1, 1, 1] == m[0, 64]  # (o, k) rows, (c, k) columns
    assert np.array_equal(k2[::D, ::D], k2[D - 1::D, D - 1::D])
    for layer, pop in ((ls[1], n1), (ls[2], n2)):
        nr = layer["neuron"]
        assert (nr["type"], int(nr["iDecay"]), int(nr["vDecay"]), int(nr["vThMant"])) == ("CUBA", 4096, 0, pop.vth - 1)
        base = pop.bias_mant.reshape(pop.shape[0], -1)[:, 0].astype(int) + pop.v_init // 64
        assert np.array_equal(layer["bias"].reshape(-1, D), base[:, None] - np.arange(D) * pop.vth)
    assert "neuron" not in ls[4]
    assert np.array_equal(ls[4]["weight"][:, :16 * D:16], np.repeat(q.projections[1].weight.toarray()[:, :1], D, 1))


def run_netx_reader(path, frames, message_bits, windows):
    """Load `path` with lava-dl 0.6.0's own reader and run it in Lava fixed_pt on `frames`
    ((x, y, f)-ordered input per step, last axis = steps). Layer i answers window k at time step
    k + i + 2 (Lava counts steps from 1; each block adds one): returns, per neuron layer, its spikes
    in each of the `windows` windows ((windows, C*H*W) in (C, H, W) order, or (windows, N)) and the
    read-out layer's membrane (steps, N). The spikes come through snncc_lava's Recorder (one message
    at the end; RingBuffer sinks read with Var.get() send one message per element). Channels hold 2
    messages (snncc_lava.lower.CHANNEL_SIZE); a run that does not fit /dev/shm is refused."""
    from snncc_lava import compat
    from snncc_lava.lower import CHANNEL_SIZE, check_shared_memory
    from snncc_lava.procs.process import Recorder

    compat.install_lava_dl()
    from lava.lib.dl.netx.hdf5 import Network
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.source import RingBuffer as Source
    from lava.proc.monitor.process import Monitor

    lnet = Network(str(path), reset_interval=1, input_message_bits=message_bits)
    steps = frames.shape[-1]
    src = Source(data=frames)
    src.s_out.connect(lnet.inp)
    outs = [lay.out.transpose([2, 1, 0]).flatten() if len(lay.out.shape) == 3 else lay.out for lay in lnet.layers[:-1]]
    rec = Recorder(sizes=[int(np.prod(o.shape)) for o in outs], firsts=[i + 2 for i in range(len(outs))],
                   bins=[1] * len(outs), windows=windows, D=1, last=steps)
    for i, o in enumerate(outs):
        o.connect(getattr(rec, f"in{i}"))
    mon = Monitor()
    mon.probe(lnet.layers[-1].neuron.v, steps)
    try:
        exe = lnet.compile(Loihi2SimCfg(select_tag="fixed_pt"), {"pypy_channel_size": CHANNEL_SIZE})
        check_shared_memory(exe, 1)
        lnet.create_runtime(executable=exe)
        lnet.run(condition=RunSteps(num_steps=steps))
        spikes = rec.split(rec.receive())
        v = next(iter(mon.get_data().values()))["v"]
    finally:
        lnet.stop()
    return spikes, v


def assert_netx_equals_fixed(g, names, spikes, v, ref, K):
    """The D copies' spikes of each layer's own population (its first C * D channels; carried
    shortcut channels follow them) summed per neuron equal the fixed-point counts, and the
    read-out's membrane is the fixed-point read-out << 6."""
    D = fixed.quantize(build(g), "netx").D
    top = 0
    for i, name in enumerate(names):
        shape = g[name].shape
        got = spikes[i][:, :math.prod(shape) * D].reshape((K, shape[0], D) + tuple(shape[1:])).sum(2)
        assert np.array_equal(got, ref.counts[name].numpy()), name  # T = 1: one window per sample
        assert got.sum() > 0
        top = max(top, got.max())
    assert top > 1  # some neuron fires more than once in a window: the threshold copies are exercised
    L = len(names) + 1
    assert np.array_equal(v[L: L + K], ref.readout.reshape(K, -1) << 6)


def test_netx_reader_runs_it_exactly(conv_chain, tmp_path):
    """lava-dl 0.6.0's own reader builds the file and runs it in Lava (fixed_pt): every
    population's spike counts and the read-out equal snncc's fixed-point simulation."""
    from snncc_lava.network import batch_stream, host_currents

    net = build(conv_chain)
    q = fixed.quantize(net, "netx")
    path = tmp_path / "chain.net"
    path.write_bytes(netx.export(conv_chain, net, q))
    torch.manual_seed(0)
    x = torch.rand(3, *conv_chain.inputs[0].shape) * 2
    ref = fixed.simulate_fixed(q, x)
    assert ref.events == {"u_wraps": 0, "v_saturations": 0, "host_saturations": 0}
    xs, _ = batch_stream(conv_chain, x)
    act, _ = fixed.host_activation(q.populations["n1"], host_currents(net, "n1", xs).numpy())
    K = act.shape[0]
    frames = np.zeros((8, 8, 6, K + 3), np.int32)  # netx's (x, y, f) order
    for k in range(K):
        frames[..., k] = act[k].reshape(6, 8, 8).transpose(2, 1, 0)
    spikes, v = run_netx_reader(path, frames, 24, K)
    assert_netx_equals_fixed(conv_chain, ["n1", "n2"], spikes, v, ref, K)


def test_netx_reader_runs_a_spike_input_mlp_over_timesteps(tmp_path):
    """Spike input (graded counts), dense layers fed by D threshold copies, T = 2 windows per
    sample pipelined through the network (the per-step reset separates them)."""
    from snncc.frontend.loader import LoadedModel, trace
    from snncc.nn import SFANeuron
    from snncc.passes.manager import run_pipeline

    torch.manual_seed(3)
    m = torch.nn.Sequential(torch.nn.Linear(12, 10), SFANeuron(D=3), torch.nn.Linear(10, 7), SFANeuron(D=3),
                            torch.nn.Linear(7, 4))
    with torch.no_grad():
        m[0].weight.mul_(2.0)
        m[2].weight.mul_(3.0)
    g = run_pipeline(trace(LoadedModel(m, None, (12,), 2), input_kind="spike"), "deploy").graph
    net = build(g)
    q = fixed.quantize(net, "netx")
    path = tmp_path / "mlp.net"
    path.write_bytes(netx.export(g, net, q))
    x = torch.randint(0, 4, (2, 3, 12)).double()  # (T, B, N): counts up to D per window
    ref = fixed.simulate_fixed(q, x)
    B, T = 3, 2
    K = B * T
    frames = np.zeros((12, K + 3), np.int32)
    frames[:, :K] = x.transpose(0, 1).reshape(K, 12).numpy().T  # sample-major windows
    spikes, v = run_netx_reader(path, frames, 8, K)
    D = net.D
    for i, name in enumerate(g.neurons()):  # (windows, N * D) -> per neuron and window -> summed over T
        n = g[name.name].shape[0]
        copies = spikes[i].reshape(K, n, D)
        got = copies.sum(2).reshape(B, T, n).sum(1)
        assert np.array_equal(got, ref.counts[name.name].numpy()), name.name
        assert copies[:, :, 1:].sum() > 0  # second and third copies fire: counts above 1 in a window
    L = 3
    assert np.array_equal(v[L: L + K], ref.readout.reshape(K, -1) << 6)


def test_export_is_deterministic(conv_chain):
    a = netx.export(conv_chain)
    time.sleep(1.1)  # HDF5 would embed a different second if any object tracked times
    assert netx.export(conv_chain) == a


def test_refuses_a_shortcut_from_the_network_input(residual):
    """Shortcuts are carried from neuron layers; one from the network input (here the host-computed
    stem current every block adds to) is named, one line per consumer."""
    with pytest.raises(TargetError) as e:
        netx.export(residual)
    assert e.value.where == "netx export"
    assert e.value.what == (
        f"netx cannot express 2 node(s): node f2_0: reads the network input (input) beside f1_6 -- {netx.INPUT_ONCE}; "
        f"node out_fire: reads the network input (input) beside f1_6, f2_0 -- {netx.INPUT_ONCE}")
    assert netx.INPUT_ONCE == ("netx's input enters the first layer only (shortcuts are carried from neuron layers; "
                               "the network input is not a population of threshold copies)")


def test_refuses_stateful_neurons():
    g = Graph([Node("x", "input", [], {"shape": (1, 4, 4), "kind": "spike"}),
               Node("c", "conv", ["x"], {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1)},
                    {"weight": np.ones((2, 1, 3, 3))}),
               Node("a", "fire", ["c"], {**FIRE, "stateful": True}), Node("out", "output", ["a"])]).infer()
    assert netx.problems(g) == ["node a: stateful neuron (membrane carried across timesteps) -- netx's CUBA "
                                "resets to zero on a spike, snncc keeps v - n * theta"]



def test_a_refusal_of_many_nodes_spells_out_three_and_names_the_rest():
    """Five stateful neurons in a chain: the first SHOWN reasons in full, the others by name only
    (the SDT-V3 detector's refusal listed ten reasons on one line)."""
    conv = {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1)}
    nodes, prev = [Node("x", "input", [], {"shape": (1, 4, 4), "kind": "spike"})], "x"
    for i in range(5):
        nodes += [Node(f"c{i}", "conv", [prev], conv, {"weight": np.ones((1, 1, 3, 3))}),
                  Node(f"a{i}", "fire", [f"c{i}"], {**FIRE, "stateful": True})]
        prev = f"a{i}"
    g = Graph(nodes + [Node("out", "output", [prev])]).infer()
    why = "stateful neuron (membrane carried across timesteps)"
    with pytest.raises(TargetError) as e:
        netx.export(g)
    assert netx.SHOWN == 3 and e.value.what.startswith("netx cannot express 5 node(s): node a0: " + why)
    assert e.value.what.count(why) == 3 and e.value.what.endswith("; and 2 more: a3, a4")

def test_refuses_attention(attention):
    """k and v read n_in two layers back: carried, no longer refused; the spike product and the
    shortcut from the input are."""
    with pytest.raises(TargetError) as e:
        netx.export(attention)
    assert e.value.what == (
        "netx cannot express 2 node(s): node matmul_1: spike_product (attention) -- netx has no multiplicative layer; "
        f"node n_in_1: reads the network input (input) beside n_attn -- {netx.INPUT_ONCE}")


def test_refuses_pooling_between_neurons():
    g = Graph([Node("x", "input", [], {"shape": (1, 4, 4)}), Node("a", "fire", ["x"], FIRE),
               Node("p", "pool", ["a"], {"mode": "avg", "kernel": (2, 2), "stride": (2, 2)}),
               Node("b", "fire", ["p"], FIRE), Node("out", "output", ["b"])]).infer()
    assert netx.problems(g) == ["node p: pool pooling feeding b -- netx has no pooling layer "
                                "(only pooling that ends in a dense layer folds into its weights)"]
    with pytest.raises(TargetError, match="node p: pool pooling feeding b"):
        netx.export(g)


def test_validator_rejects_what_netx_cannot_read(conv_chain):
    ls, meta = netx.layers(conv_chain)
    bad = [ls[0], netx.Layer("pool", (6, 4, 4))]
    with pytest.raises(TargetError, match=r"type 'pool' is not one netx reads") as e:
        netx.validate(netx.write(bad, meta))
    assert e.value.where == "netx layer/1"
    no_flatten = [ls[0], ls[1], ls[2], ls[4]]
    with pytest.raises(TargetError, match="needs a 'flatten' layer before it"):
        netx.validate(netx.write(no_flatten, meta))
    wrong = netx.Layer("conv", (32, 4, 4), {**ls[2].arrays, "weight": ls[2].arrays["weight"][:, :1]}, ls[2].neuron)
    with pytest.raises(TargetError, match=r"conv input channels 1 x groups 1 do not match the previous shape \(24, 8, 8\)"):
        netx.validate(netx.write([ls[0], ls[1], wrong], meta))
    with pytest.raises(TargetError, match="not an HDF5 file"):
        netx.validate(b"not hdf5")


def test_export_netx_command_writes_an_artefact_that_lava_dl_runs_exactly(tmp_path, snncc_in_process):
    """The path a user takes: a model exported at batch 1 (`.pt2`), compiled the default way
    (target sim), then `snncc export-netx ARTEFACT OUT.net` (the installed command; the loihi target
    writes it through `targets.exporter`). lava-dl 0.6.0's reader runs the file in Lava fixed_pt
    with every population's counts and the read-out equal to snncc's fixed-point simulation of the
    artefact, and here to its float deployed counts too. Bad input: one line, exit 2, nothing written."""
    import os
    import subprocess
    import sys

    import snncc
    from nets import ConvChain, randomize_bn
    from snncc.sim.reference import run
    from snncc_lava.network import batch_stream, host_currents

    torch.manual_seed(0)
    m = randomize_bn(ConvChain())
    torch.export.save(torch.export.export(m, (torch.zeros(1, 2, 8, 8),)), tmp_path / "c.pt2")
    exe = os.path.join(os.path.dirname(sys.executable), "snncc")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p and os.path.isdir(p)))
    sh = lambda *a: subprocess.run([exe, *map(str, a)], env=env, capture_output=True, text=True, timeout=600)  # noqa: E731
    assert sh("compile", tmp_path / "c.pt2", "-o", tmp_path / "art").returncode == 0
    p = sh("export-netx", tmp_path / "art", tmp_path / "c.net")
    assert p.returncode == 0 and p.stderr == "" and p.stdout.startswith(f"wrote {tmp_path / 'c.net'} (lava-dl netx")
    g = snncc.load(str(tmp_path / "art")).deployed
    data = (tmp_path / "c.net").read_bytes()
    assert data == netx.export(g) and [d["type"] for d in netx.validate(data)] == ["input", "conv", "conv", "flatten", "dense"]

    net = build(g)
    q = fixed.quantize(net, "netx")
    x = torch.rand(3, *g.inputs[0].shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    ref = fixed.simulate_fixed(q, x)
    flt = run(g, x)
    xs, _ = batch_stream(g, x)
    act, _ = fixed.host_activation(q.populations["n1"], host_currents(net, "n1", xs).numpy())
    K = act.shape[0]
    frames = np.zeros((8, 8, 6, K + 3), np.int32)
    for k in range(K):
        frames[..., k] = act[k].reshape(6, 8, 8).transpose(2, 1, 0)
    spikes, v = run_netx_reader(tmp_path / "c.net", frames, 24, K)
    assert_netx_equals_fixed(g, ["n1", "n2"], spikes, v, ref, K)
    assert all(torch.equal(ref.counts[k], flt.counts[k]) for k in flt.counts)

    for args, line in (((tmp_path / "nope", tmp_path / "x.net"), "nope: folder not found"),
                       ((tmp_path / "art", tmp_path), "is a folder, expected a file name")):
        p = snncc_in_process("export-netx", *args)
        assert p.returncode == 2 and line in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not (tmp_path / "x.net").exists()
    from nets import ResidualSepConv  # a shortcut from the input netx cannot carry: one line naming the nodes, nothing written
    torch.export.save(torch.export.export(randomize_bn(ResidualSepConv()), (torch.zeros(1, 3, 8, 8),)),
                      tmp_path / "r.pt2")
    assert snncc_in_process("compile", tmp_path / "r.pt2", "-o", tmp_path / "res").returncode == 0
    p = snncc_in_process("export-netx", tmp_path / "res", tmp_path / "r.net")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "r.net").exists()
    assert "netx cannot express" in p.stderr and "reads the network input (input) beside" in p.stderr
    assert p.stderr.rstrip().endswith("snncc export-nir writes any deployed graph)")


def tiny_residual() -> Graph:
    """x (spike 1x4x4) -> 1x1 conv (weight 1) -> a -> 3x3 conv stride 2 pad 1 (all ones) -> b (1x2x2);
    c = fire(b + K a) with K a 3x3 stride-2 pad-1 shortcut from a (tap (2, 2) = 1, tap (0, 0) = -1),
    so a is carried through b's stride-2 layer as 4 phase channels; output = sum of c's 4 counts.
    D = 4, theta 1, beta 0: every neuron fires clip(floor(input), 0, 4)."""
    fire = {"D": 4, "theta": 1.0, "beta": 0.0, "norm": 1.0, "rounding": "floor", "stateful": False}
    conv = lambda s, p: {"stride": (s, s), "padding": (p, p), "dilation": (1, 1)}  # noqa: E731
    k2 = np.zeros((1, 1, 3, 3))
    k2[0, 0, 2, 2], k2[0, 0, 0, 0] = 1.0, -1.0
    return Graph([
        Node("x", "input", [], {"kind": "spike", "shape": (1, 4, 4)}),
        Node("ca", "conv", ["x"], conv(1, 0), {"weight": np.ones((1, 1, 1, 1))}), Node("a", "fire", ["ca"], fire),
        Node("cb", "conv", ["a"], conv(2, 1), {"weight": np.ones((1, 1, 3, 3))}), Node("b", "fire", ["cb"], fire),
        Node("cc", "conv", ["b"], conv(1, 0), {"weight": np.ones((1, 1, 1, 1))}),
        Node("cs", "conv", ["a"], conv(2, 1), {"weight": k2}), Node("s", "add", ["cc", "cs"]),
        Node("c", "fire", ["s"], fire), Node("flat", "reshape", ["c"], {"shape": (4,)}),
        Node("h", "linear", ["flat"], {}, {"weight": np.ones((1, 4)), "bias": np.zeros(1)}),
        Node("o", "output", ["h"])]).verify()


def test_tiny_residual_by_hand(tmp_path):
    """The shortcut from a is carried through b's layer (stride 2: one 1-hot channel per copy and
    stride phase, at the same one-step delay as b), and c's layer reads b and the carried a side by
    side. lava-dl's reader runs the file in Lava fixed_pt with the counts computed by hand:
    x = [[1,0,0,0],[0,2,0,0],[0,0,0,1],[0,0,0,0]]; a = x; b[y, x] = sum of a over rows 2y-1..2y+1 and
    columns 2x-1..2x+1 = [[3,2],[2,3]]; c = b + a[2y+1, 2x+1] - a[2y-1, 2x-1] = [[3+2, 2], [2, 3-2]],
    capped at D = 4: [[4,2],[2,1]]; output 4 + 2 + 2 + 1 = 9."""
    g = tiny_residual()
    net = build(g)
    q = fixed.quantize(net, "netx")
    ls, meta = netx.layers(g, net, q)
    D = 4
    assert [(ly.type, ly.shape, ly.carried) for ly in ls] == [
        ("input", (1, 4, 4), 0), ("conv", (D, 4, 4), 0), ("conv", (D + 4 * D, 2, 2), 4 * D * 4),
        ("conv", (D, 2, 2), 0), ("flatten", (4 * D, 1, 1), 0), ("dense", (1,), 0)]
    w = ls[2].arrays["weight"]  # b's layer: b's kernel over a's 4 copies, then 16 carry channels
    (sy, sx), (py, px) = ls[2].arrays["stride"], ls[2].arrays["padding"]
    assert (sy, sx, py, px) == (2, 2, 1, 1)
    for k in range(D):
        for qy in range(2):
            for qx in range(2):
                e = np.zeros((D, 3, 3))
                e[k, 1 + qy, 1 + qx] = w[D + (k * 2 + qy) * 2 + qx, k, 1 + qy, 1 + qx]
                assert np.array_equal(w[D + (k * 2 + qy) * 2 + qx], e) and e.max() > 0
    wc = ls[3].arrays["weight"]  # c's layer: b's 1x1 at the centre, the shortcut taps on a's phase (1, 1)
    assert tuple(ls[3].arrays["padding"]) == (1, 1) and wc.shape == (D, D + 4 * D, 3, 3)
    assert meta["carriedNeurons"] == 4 * D * 4 and meta["notes"].startswith(
        "shortcuts carried as pass-through channels: 64 extra binary neurons (66.7% more than the network's 96) "
        "and 64 extra synapses (one identity tap each)")
    path = tmp_path / "tiny.net"
    path.write_bytes(netx.write(ls, meta))
    netx.validate(path.read_bytes())
    x = torch.tensor([[1, 0, 0, 0], [0, 2, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]], dtype=torch.float64)
    ref = fixed.simulate_fixed(q, x.reshape(1, 1, 1, 4, 4))
    hand = {"a": x.reshape(1, 1, 4, 4), "b": torch.tensor([[[[3, 2], [2, 3]]]]), "c": torch.tensor([[[[4, 2], [2, 1]]]])}
    for k, v in hand.items():
        assert torch.equal(ref.counts[k].double(), v.double()), k
    frames = np.zeros((4, 4, 1, 6), np.int32)
    frames[..., 0] = x.numpy().T[:, :, None]
    spikes, v = run_netx_reader(path, frames, 8, 1)
    assert_netx_equals_fixed(g, ["a", "b", "c"], spikes, v, ref, 1)
    out = (int(v[4, 0]) >> 6) / float(meta["outputScale"]) + float(meta["outputBias"][0])
    assert out == 9.0


_FAST_CONV_WEIGHTS: dict = {}  # per Lava process (filled after the fork): its taps and weight matrix


def _fast_conv(input_, weight, kernel_size, stride, padding, dilation, groups):
    """lava.proc.conv.utils.conv_scipy's exact result as one matrix product instead of a scipy
    convolve2d per (output, input) channel pair (the digits file's carried layers have up to 1536 x
    1280 channel pairs, ~10 us each per step): the input patches of the nonzero kernel taps
    (im2col) times the flipped kernel as a (taps x in channels, out channels) matrix, both restricted
    to the nonzero input columns. Every product and partial sum is an integer far below
    2**53, so the float64 result is the same whatever the order of the sums."""
    x, y, cin = input_.shape
    out_ch = weight.shape[0]
    dk = [dilation[i] * (kernel_size[i] - 1) + 1 for i in range(2)]
    key = (id(weight), weight.shape, tuple(dk), groups)  # a process model's weights stay fixed during a run
    if key not in _FAST_CONV_WEIGHTS:
        wd = np.zeros((out_ch, dk[0], dk[1], weight.shape[-1]))
        wd[:, ::dilation[0], ::dilation[1], :] = weight
        wf = wd[:, ::-1, ::-1, :]  # convolve2d flips the kernel
        cg, kg = cin // groups, out_ch // groups
        full = np.zeros((dk[0], dk[1], cin, out_ch))  # (tap y, tap x, input channel, output channel)
        for g in range(groups):
            full[:, :, g * cg:(g + 1) * cg, g * kg:(g + 1) * kg] = wf[g * kg:(g + 1) * kg].transpose(1, 2, 3, 0)
        taps = [(i, j) for i in range(dk[0]) for j in range(dk[1]) if full[i, j].any()]
        mat = np.concatenate([full[i, j] for i, j in taps]) if taps else np.zeros((0, out_ch))
        _FAST_CONV_WEIGHTS[key] = (weight, taps, mat)
    _, taps, mat = _FAST_CONV_WEIGHTS[key]
    a = np.pad(input_.astype(np.float64), ((padding[0], padding[0]), (padding[1], padding[1]), (0, 0)))
    xo, yo = (a.shape[0] - dk[0]) // stride[0] + 1, (a.shape[1] - dk[1]) // stride[1] + 1
    if not taps:
        return np.zeros((xo, yo, out_ch))
    cols = np.concatenate([a[i: i + stride[0] * (xo - 1) + 1: stride[0], j: j + stride[1] * (yo - 1) + 1: stride[1]]
                           for i, j in taps], axis=2).reshape(xo * yo, -1)
    nz = np.flatnonzero(cols.any(0))  # binary spikes: most input columns are zero in a step
    return (cols[:, nz] @ mat[nz]).reshape(xo, yo, out_ch)


def test_fast_conv_equals_lavas_scipy_conv():
    from snncc_lava import compat

    compat.install()
    from lava.proc.conv import utils

    rng = np.random.default_rng(0)
    cases = ((6, 4, 3, 1, 1, 1, 1), (8, 8, 3, 2, 1, 1, 4), (4, 6, 1, 1, 0, 1, 2), (5, 3, 3, 2, 2, 2, 1),
             (6, 6, 3, 1, 1, 1, 6))  # the last depthwise
    for n, (cin, cout, k, s, p, d, groups) in enumerate(cases):
        inp = rng.integers(0, 2, (7, 6, cin)).astype(np.int32)
        w = rng.integers(-256, 255, (cout, k, k, cin // groups)).astype(np.int32)
        if n == 1:  # a carried layer's kernel: most taps zero (skipped), and an input channel never spiking
            w[:, :, 1:] = 0
            inp[..., 0] = 0
        args = (np.array([k, k]), np.array([s, s]), np.array([p, p]), np.array([d, d]), groups)
        want = utils.conv_scipy(inp, w, *args)
        got = _fast_conv(inp, w, *args)
        assert got.shape == want.shape and np.array_equal(got, want) and np.abs(want).sum() > 0
        assert not _fast_conv(np.zeros_like(inp), w, *args).any()  # a step without spikes


@pytest.mark.slow  # about 15 CPU seconds: compile, export-netx and a 15-layer Lava run of 2 digits
def test_export_netx_of_the_shipped_digits_cnn_runs_exactly_in_lava(tmp_path, monkeypatch, snncc_in_process):
    """The README's digits CNN (two residual blocks with membrane shortcuts, a stride-2 downsample,
    a depthwise conv, the global mean before the head neuron), compiled the default way and written
    by `snncc export-netx` (`snncc.cli.main` here; the test above runs the installed command): its
    4 shortcuts are carried (the downsample's 8x8 map as four 4x4 stride phases through the stride-2
    layer), the cost is printed, and lava-dl 0.6.0's reader runs the file in Lava fixed_pt on 2 test
    digits with all 13 populations' counts and the read-out equal to snncc's fixed-point simulation
    (Lava's conv arithmetic is `_fast_conv`, equal to its scipy loop by the test above; the
    processes, LIF neurons, resets and pipeline are Lava's)."""
    import os
    import re

    import snncc
    from snncc.compiler import fanin_deployed
    from snncc_lava import compat
    from snncc_lava.network import batch_stream, host_currents

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    arts = os.path.join(root, "examples", "digits", "artifacts")
    sh = snncc_in_process  # the installed compile and export-netx run in the test above
    assert sh("compile", os.path.join(arts, "digits_cnn.pt2"), "-o", tmp_path / "out").returncode == 0
    p = sh("export-netx", tmp_path / "out", tmp_path / "d.net")
    assert p.returncode == 0 and p.stderr == "", p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith(f"wrote {tmp_path / 'd.net'} (lava-dl netx")
    m = re.fullmatch(r"shortcuts carried as pass-through channels: (\d+) extra binary neurons \((\d+\.\d)% more than "
                     r"the network's (\d+)\) and (\d+) extra synapses \(one identity tap each\); the layers store (\d+) "
                     r"weights, (\d+) nonzero \(a layer with carried channels is one groups-1 kernel\)", lines[1])
    assert m, lines
    art = snncc.load(str(tmp_path / "out"))
    g, relowered = fanin_deployed(art.traced, art.deployed)
    assert relowered  # the default sim artefact relays its streams
    net = build(g)
    q = fixed.quantize(net, "netx")
    data = (tmp_path / "d.net").read_bytes()
    ls = netx.validate(data)
    fires = [n.name for n in g.nodes if n.op == "fire"]
    D = net.D
    own = sum(math.prod(g[f].shape) * D for f in fires)
    carried = sum(math.prod(d["shape"]) for d in ls if "neuron" in d) - own
    assert int(m.group(1)) == int(m.group(4)) == carried and int(m.group(3)) == own
    assert int(m.group(5)) == sum(d["weight"].size for d in ls if "weight" in d)
    assert int(m.group(6)) == sum(int(np.count_nonzero(d["weight"])) for d in ls if "weight" in d)
    # stem 16 channels x D over 5 layers, block1 sepconv 64 x D over 2, downsample 32 x D over 5 (phases at
    # 4x4 after the stride-2 layer), block2 sepconv 128 x D over 2
    assert carried == D * (16 * 64 * 5 + 64 * 64 * 2 + 32 * 64 * 5 + 128 * 16 * 2)
    with np.load(os.path.join(arts, "digits_test.npz")) as f:
        x = torch.as_tensor(f["x_test"][:2]).double()
    ref = fixed.simulate_fixed(q, x)
    xs, _ = batch_stream(g, x)
    act, _ = fixed.host_activation(q.populations["stem_spike"], host_currents(net, "stem_spike", xs).numpy())
    K = act.shape[0]
    L = len(fires) + 1
    frames = np.zeros((8, 8, 16, K + L + 1), np.int32)
    for k in range(K):
        frames[..., k] = act[k].reshape(16, 8, 8).transpose(2, 1, 0)
    compat.install()
    from lava.proc.conv import utils

    monkeypatch.setattr(utils, "conv_scipy", _fast_conv)  # before Lava forks its processes
    spikes, v = run_netx_reader(tmp_path / "d.net", frames, 24, K)
    assert_netx_equals_fixed(g, fires, spikes, v, ref, K)


def test_refuses_a_carry_through_a_shrinking_layer():
    """A 3x3 conv without padding between a shortcut's source and its sum (4x4 -> 2x2): a carried
    channel cannot keep a's 16 positions in b's 2x2 layer; one line names the layer and the source."""
    fire = {"D": 4, "theta": 1.0, "beta": 0.0, "norm": 1.0, "rounding": "floor", "stateful": False}
    conv = {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1)}
    g = Graph([
        Node("x", "input", [], {"kind": "spike", "shape": (1, 4, 4)}),
        Node("ca", "conv", ["x"], conv, {"weight": np.ones((1, 1, 1, 1))}), Node("a", "fire", ["ca"], fire),
        Node("cb", "conv", ["a"], conv, {"weight": np.ones((1, 1, 3, 3))}), Node("b", "fire", ["cb"], fire),
        Node("cc", "conv", ["b"], conv, {"weight": np.ones((1, 1, 1, 1))}),
        Node("cs", "conv", ["a"], conv, {"weight": np.ones((1, 1, 3, 3))}), Node("s", "add", ["cc", "cs"]),
        Node("c", "fire", ["s"], fire), Node("flat", "reshape", ["c"], {"shape": (4,)}),
        Node("h", "linear", ["flat"], {}, {"weight": np.ones((1, 4)), "bias": np.zeros(1)}),
        Node("o", "output", ["h"])]).verify()
    assert netx.problems(g) == []
    with pytest.raises(TargetError) as e:
        netx.export(g)
    assert e.value.where == "netx export" and e.value.what == (
        "node b: the shortcut from a cannot be carried through this layer (4x4 -> 2x2 with stride 1x1, padding 0x0, "
        "kernel 3x3: not stride x output size, or no tap per stride phase) -- netx would lose positions")
