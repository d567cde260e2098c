"""reparam: chains of linear ops with no neuron between them become one exact conv (structural
re-parameterisation). Hand-computed fusions on tiny graphs (expected listing + numbers), the
invariant (reference executor output), refusals with their reason, and end to end the blocks of the
official re-parameterisable models, written here in their style: Meta-SpikeFormer's `RepConv`
(+ BN), SpikeYOLO's `RepConv` (grouped), HAR-DVS's `SepRepConv` (BN-and-pad on spikes) and a
RepVGG-style sum of two branches, through `snncc.compile(module)` and the installed `snncc` on a
`.pt2` exported at batch 1 (the second block's `verify` runs `snncc.cli.main` in this process,
tests/cli_run.py, read as the command's output: a torch import less)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import snncc
from nets import Fire, randomize_bn
from cli_run import run_main
from passcheck import assert_preserves, rows
from snncc.errors import FrontendError, PassError
from snncc.ir import Graph, Node
from snncc.ir.printer import listing
from snncc.passes.manager import run_pipeline
from snncc.passes.reparam import reparam
from test_research_code import BNAndPadLayer  # BN whose output border is filled with BN(0), in place

CONV = {"stride": (1, 1), "dilation": (1, 1)}


def repconv_graph(pad_value=-0.5):
    """spikes -> conv1x1 (w 2) -> BN (a = 1, b = -0.5) -> pad 1 filled with BN(0) = -0.5 ->
    depthwise 3x3 (pad 0) -> conv1x1 (w 3, bias 1), one channel."""
    dw = np.array([[0.0, 1.0, 0.0], [1.0, 2.0, 1.0], [0.0, 1.0, 0.0]])
    return Graph([
        Node("x", "input", [], {"shape": (1, 4, 4), "kind": "spike"}),
        Node("c1", "conv", ["x"], {**CONV, "padding": (0, 0)}, {"weight": np.full((1, 1, 1, 1), 2.0)}),
        Node("bn", "batchnorm", ["c1"], {"axis": 0, "eps": 0.0},
             {"mean": np.array([1.0]), "var": np.array([4.0]), "weight": np.array([2.0]), "bias": np.array([0.5])}),
        Node("pad", "pad", ["bn"], {"pads": (1, 1, 1, 1)}, {"value": np.array([pad_value])}),
        Node("dw", "conv", ["pad"], {**CONV, "padding": (0, 0)}, {"weight": dw.reshape(1, 1, 3, 3)}),
        Node("c2", "conv", ["dw"], {**CONV, "padding": (0, 0)},
             {"weight": np.full((1, 1, 1, 1), 3.0), "bias": np.array([1.0])}),
        Node("o", "output", ["c2"]),
    ]).infer()


def spikes(shape, n=4, seed=0):
    return torch.randint(0, 5, (n,) + shape, generator=torch.Generator().manual_seed(seed)).double()


def test_repconv_chain_becomes_one_3x3_conv_by_hand():
    r = reparam(repconv_graph())
    g = r.graph
    # BN: a = 2 / sqrt(4) = 1, b = 0.5 - 1 * 1 = -0.5; the border holds BN(0) = -0.5 = the folded bias,
    # so BN(pad0(conv(x))) = pad_{-0.5}(BN(conv(x))): one conv of the zero-padded input.
    # K = 3 * dw * (2 * 1) = 6 dw; bias = 3 * (sum dw = 6) * (-0.5) + 1 = -8.
    assert rows(listing(g)) == {
        "x": "x input spike 1x4x4",
        "c2": "c2 conv current 1x4x4 x yes k=3 s=1 p=1 +bias",
        "o": "o output current 1x4x4 c2",
    }
    assert g["c2"].params["weight"].reshape(3, 3).tolist() == [[0, 6, 0], [6, 12, 6], [0, 6, 0]]
    assert g["c2"].params["bias"].tolist() == [-8.0]
    assert r.changes == ["fused c1 -> bn -> pad -> dw -> c2 into one 3x3 conv c2: "
                         "16 synapses + 160 MACs before, 144 synapses + 0 MACs after"]
    f = r.report["fused"][0]
    assert (f["synapses_before"], f["macs_before"], f["synapses_after"]) == (16, 160, 144)
    assert (f["fanout_before"], f["fanout_after"]) == (1.0, 9.0)  # SOPs per input spike
    assert_preserves(repconv_graph(), g, spikes((1, 4, 4)))


def test_border_that_is_not_bn0_is_refused_with_the_reason():
    with pytest.raises(PassError) as e:
        reparam(repconv_graph(pad_value=0.0))
    msg = e.value.one_line()
    assert "constant padding pad does not fuse into a synaptic projection" in msg
    assert "holds 0 on channel 0 where a conv of the zero-padded input gives the bias -0.5" in msg


def test_pad_after_a_3x3_conv_is_refused():
    g = repconv_graph()
    g["c1"].params = {"weight": np.ones((1, 1, 3, 3))}
    g["c1"].attrs["padding"] = (1, 1)
    with pytest.raises(PassError) as e:
        reparam(g.infer())
    assert "reads the input next to the border" in e.value.one_line()


def test_zero_padded_conv_after_a_biased_conv_is_left_with_the_reason():
    g = Graph([
        Node("x", "input", [], {"shape": (1, 4, 4), "kind": "spike"}),
        Node("a", "conv", ["x"], {**CONV, "padding": (0, 0)}, {"weight": np.ones((1, 1, 1, 1)), "bias": np.ones(1)}),
        Node("b", "conv", ["a"], {**CONV, "padding": (1, 1)}, {"weight": np.ones((1, 1, 3, 3))}),
        Node("o", "output", ["b"]),
    ]).infer()
    r = reparam(g)
    assert [n.name for n in r.graph.nodes] == ["x", "a", "b", "o"]
    assert r.changes == ["not fused at a: the zero padding of b holds 0 on channel 0 where a conv of the "
                         "zero-padded input gives the bias 1"]


def test_depthwise_chain_keeps_its_groups():
    g = Graph([
        Node("x", "input", [], {"shape": (2, 5, 5), "kind": "spike"}),
        Node("a", "conv", ["x"], {**CONV, "padding": (1, 1), "groups": 2}, {"weight": np.ones((2, 1, 3, 3))}),
        Node("s", "scale", ["a"], {}, {"factor": np.array([2.0, -1.0]).reshape(2, 1, 1)}),
        Node("b", "conv", ["s"], {**CONV, "padding": (0, 0), "groups": 2},
             {"weight": np.array([1.0, 3.0]).reshape(2, 1, 1, 1), "bias": np.array([0.5, 0.25])}),
        Node("o", "output", ["b"]),
    ]).infer()
    r = reparam(g)
    b = r.graph["b"]
    assert [n.name for n in r.graph.nodes] == ["x", "b", "o"]
    assert b.attrs["groups"] == 2 and b.attrs["padding"] == (1, 1)
    # channel 0: 1 * 2 * ones; channel 1: 3 * (-1) * ones
    assert b.params["weight"].shape == (2, 1, 3, 3)
    assert b.params["weight"][:, 0, 1, 1].tolist() == [2.0, -3.0] and np.ptp(b.params["weight"][0]) == 0
    assert b.params["bias"].tolist() == [0.5, 0.25]
    assert_preserves(g, r.graph, spikes((2, 5, 5)))


def test_wide_depthwise_chain_is_composed_per_channel():
    """512 channels, 7x7 then 3x3 depthwise: composed group by group (a dense expansion would hold
    512 x 512 x 81 weights), one 9x9 depthwise conv."""
    rng = np.random.default_rng(0)
    c = 512
    g = Graph([
        Node("x", "input", [], {"shape": (c, 9, 9), "kind": "spike"}),
        Node("a", "conv", ["x"], {**CONV, "padding": (3, 3), "groups": c}, {"weight": rng.normal(size=(c, 1, 7, 7))}),
        Node("b", "conv", ["a"], {**CONV, "padding": (0, 0), "groups": c}, {"weight": rng.normal(size=(c, 1, 3, 3))}),
        Node("o", "output", ["b"]),
    ]).infer()
    r = reparam(g)
    b = r.graph["b"]
    assert b.attrs["groups"] == c and b.params["weight"].shape == (c, 1, 9, 9) and b.attrs["padding"] == (3, 3)
    assert_preserves(g, r.graph, spikes((c, 9, 9), n=2))


@pytest.mark.parametrize("first,second", [
    ({"k": 3, "s": 2, "p": 1, "g": 1}, {"k": 1, "s": 1, "p": 0, "g": 1}),  # strided, then pointwise
    ({"k": 3, "s": 2, "p": 1, "g": 2}, {"k": 3, "s": 1, "p": 0, "g": 4}),  # strided grouped, then depthwise
    ({"k": 1, "s": 1, "p": 0, "g": 4}, {"k": 3, "s": 2, "p": 0, "g": 1}),  # depthwise 1x1, then strided
    ({"k": 1, "s": 1, "p": 0, "g": 1}, {"k": 3, "s": 1, "p": 1, "g": 2}),  # zero padding of the second
])
def test_conv_pairs_compose_exactly(first, second):
    rng = np.random.default_rng(1)

    def conv(name, src, c):
        return Node(name, "conv", [src], {"stride": (c["s"],) * 2, "padding": (c["p"],) * 2, "dilation": (1, 1),
                                          "groups": c["g"]}, {"weight": rng.normal(size=(4, 4 // c["g"], c["k"], c["k"]))})

    g = Graph([Node("x", "input", [], {"shape": (4, 9, 9), "kind": "spike"}), conv("a", "x", first),
               conv("b", "a", second), Node("o", "output", ["b"])]).infer()
    r = reparam(g)
    assert [n.name for n in r.graph.nodes] == ["x", "b", "o"], r.changes
    assert r.graph["b"].attrs["stride"] == (first["s"] * second["s"],) * 2
    a, b = assert_preserves(g, r.graph, spikes((4, 9, 9)))
    assert (a.output - b.output).abs().max() < 1e-9  # float64: exact up to rounding


def test_sum_of_branches_on_one_input_is_one_conv():
    g = Graph([
        Node("x", "input", [], {"shape": (1, 4, 4), "kind": "spike"}),
        Node("a", "conv", ["x"], {**CONV, "padding": (1, 1)}, {"weight": np.ones((1, 1, 3, 3)), "bias": np.ones(1)}),
        Node("b", "conv", ["x"], {**CONV, "padding": (0, 0)}, {"weight": np.full((1, 1, 1, 1), 5.0),
                                                               "bias": np.full(1, 2.0)}),
        Node("s", "add", ["a", "b"]),
        Node("bn", "batchnorm", ["s"], {"axis": 0, "eps": 0.0},
             {"mean": np.array([1.0]), "var": np.array([1.0]), "weight": np.array([2.0]), "bias": np.array([0.0])}),
        Node("o", "output", ["bn"]),
    ]).infer()
    r = reparam(g)
    assert [n.name for n in r.graph.nodes] == ["x", "bn", "o"]
    w = r.graph["bn"].params["weight"].reshape(3, 3)
    # (ones + 5 at the centre) * 2; bias (1 + 2 - 1) * 2
    assert w.tolist() == [[2, 2, 2], [2, 12, 2], [2, 2, 2]] and r.graph["bn"].params["bias"].tolist() == [4.0]
    assert r.graph["bn"].attrs["padding"] == (1, 1)
    assert_preserves(g, r.graph, spikes((1, 4, 4)))


def test_batchnorm_after_a_sum_of_branches_on_different_inputs_goes_into_each_branch():
    g = Graph([
        Node("x", "input", [], {"shape": (1, 2, 2), "kind": "spike"}),
        Node("a", "conv", ["x"], {**CONV, "padding": (0, 0)}, {"weight": np.full((1, 1, 1, 1), 1.0)}),
        Node("t", "permute", ["x"], {"dims": (0, 2, 1)}),  # the transposed spikes: another input
        Node("c", "conv", ["t"], {**CONV, "padding": (1, 1)}, {"weight": np.full((1, 1, 3, 3), 0.5)}),
        Node("s", "add", ["a", "c"]),
        Node("bn", "batchnorm", ["s"], {"axis": 0, "eps": 0.0},
             {"mean": np.array([1.0]), "var": np.array([4.0]), "weight": np.array([4.0]), "bias": np.array([3.0])}),
        Node("o", "output", ["bn"]),
    ]).infer()
    before = g.clone()
    r = reparam(g)
    # a = 4 / 2 = 2, b = 3 - 1 * 2 = 1: a's weight 2 and bias 1, c's weights 0.5 * 2 and bias 0
    assert "bn" not in r.graph and r.changes == ["folded bn into the branches a, c of s"]
    assert r.graph["a"].params["weight"].reshape(-1).tolist() == [2.0] and r.graph["a"].params["bias"].tolist() == [1.0]
    assert np.all(r.graph["c"].params["weight"] == 1.0) and r.graph["c"].params["bias"].tolist() == [0.0]
    assert_preserves(before, r.graph, spikes((1, 2, 2)))


def test_linear_chain():
    g = Graph([
        Node("x", "input", [], {"shape": (2,), "kind": "spike"}),
        Node("l1", "linear", ["x"], {}, {"weight": np.array([[1.0, 2.0], [0.0, 1.0]]), "bias": np.array([1.0, 0.0])}),
        Node("l2", "linear", ["l1"], {}, {"weight": np.array([[1.0, 1.0]]), "bias": np.array([3.0])}),
        Node("o", "output", ["l2"]),
    ]).infer()
    r = reparam(g)
    assert r.graph["l2"].params["weight"].tolist() == [[1.0, 3.0]] and r.graph["l2"].params["bias"].tolist() == [4.0]
    assert_preserves(g, r.graph, spikes((2,)))


# ---- the official blocks, written in their style --------------------------------------------

class RepConv(nn.Module):
    """conv1x1 -> BN-and-pad -> depthwise kxk (pad 0) -> conv1x1 -> BN (`group` on the 1x1 convs)."""

    def __init__(self, cin, cout, k=3, group=1, fill=True):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cin, 1, 1, 0, bias=False, groups=group), BNAndPadLayer((k - 1) // 2, cin, fill),
            nn.Sequential(nn.Conv2d(cin, cin, k, 1, 0, groups=cin, bias=False),
                          nn.Conv2d(cin, cout, 1, 1, 0, groups=group, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x):
        return self.body(x)


class SepRepConv(nn.Module):
    """BN-and-pad on spikes -> depthwise kxk (pad 0) -> conv1x1."""

    def __init__(self, cin, cout, k=3):
        super().__init__()
        self.body = nn.Sequential(BNAndPadLayer((k - 1) // 2, cin),
                                  nn.Sequential(nn.Conv2d(cin, cin, k, 1, 0, groups=cin, bias=False),
                                                nn.Conv2d(cin, cout, 1, 1, 0, bias=False)))

    def forward(self, x):
        return self.body(x)


class Net(nn.Module):
    """stem conv+BN+neuron on the image, one re-parameterisable block between two neurons, head."""

    def __init__(self, block: str, fill=True):
        super().__init__()
        self.stem, self.bn0, self.n0 = nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), Fire(4)
        self.block = block
        if block == "meta":  # Meta-SpikeFormer: q_conv = RepConv + BN
            self.rep = nn.Sequential(RepConv(4, 4, fill=fill), nn.BatchNorm2d(4))
        elif block == "yolo":  # SpikeYOLO: grouped 1x1 convs, 5x5 depthwise
            self.rep = nn.Sequential(RepConv(4, 6, k=5, group=2), nn.BatchNorm2d(6))
        elif block == "sep":  # HAR-DVS SepConv's last stage: SepRepConv then BN
            self.rep = nn.Sequential(SepRepConv(4, 6), nn.BatchNorm2d(6))
        else:  # RepVGG: bn(conv3x3(s) + conv1x1(s))
            self.a, self.b, self.bn1 = nn.Conv2d(4, 6, 3, padding=1), nn.Conv2d(4, 6, 1), nn.BatchNorm2d(6)
        self.n1 = Fire(4)
        self.head = nn.Linear(6 if block != "meta" else 4, 3)

    def forward(self, x):
        s = self.n0(self.bn0(self.stem(x)))
        y = self.bn1(self.a(s) + self.b(s)) if self.block == "repvgg" else self.rep(s)
        return self.head(self.n1(y).mean((2, 3)))


BLOCKS = ["meta", "yolo", "sep", "repvgg"]


def model(block, **kw):
    torch.manual_seed(1)
    m = randomize_bn(Net(block, **kw))
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.Conv2d):
                mod.weight.mul_(2.0)
    return m


def eager_counts(m, x):
    """Spike counts of the model's own neurons in float64."""
    m64 = __import__("copy").deepcopy(m).double()
    seen = {}
    hooks = [getattr(m64, k).register_forward_hook(lambda mod, i, o, k=k: seen.__setitem__(k, o * mod.norm))
             for k in ("n0", "n1")]
    with torch.no_grad():
        m64(x.double())
    for h in hooks:
        h.remove()
    return seen


def x_batch(n=6):
    return torch.rand(n, 2, 8, 8, generator=torch.Generator().manual_seed(3)) * 3


@pytest.mark.parametrize("block", BLOCKS)
def test_official_blocks_compile_spike_driven_and_count_exactly(block):
    m = model(block)
    dep = snncc.compile(m, torch.zeros(1, 2, 8, 8))  # spike-driven beyond the stem: no allow_macs
    ops = [n.op for n in dep.deployed.nodes]
    assert ops == ["input", "conv", "fire", "conv", "fire", "mean", "linear", "output"], dep.listing()
    fused = dep.deployed[dep.deployed["n1"].inputs[0]]
    k = {"yolo": 5}.get(block, 3)
    assert fused.params["weight"].shape[2:] == (k, k) and fused.attrs["padding"] == ((k - 1) // 2,) * 2
    assert fused.attrs["groups"] == (2 if block == "yolo" else 1)  # grouped 1x1 convs keep their two groups
    assert ("pad" in [n.op for n in dep.traced.nodes]) == (block in ("meta", "yolo"))  # BN(0) border of a current
    x = x_batch()
    sim = dep.simulate(x, "exact")
    want = eager_counts(m, x)
    for name, c in want.items():
        assert c.sum() > 0 and torch.equal(sim.counts[name].double(), c), name
    rep = dep.verify(x)
    assert rep.ok, rep.table()


def test_meta_repconv_fused_kernel_equals_the_chain_by_hand():
    """The fused 3x3 kernel of conv1x1 -> BN -> pad(BN(0)) -> dw3x3 -> conv1x1 -> BN -> BN, computed
    here with plain numpy from the module's parameters."""
    m = model("meta")
    dep = snncc.compile(m, torch.zeros(1, 2, 8, 8))
    conv1, bnpad, seq = m.rep[0].body
    dw, pw, bn2 = seq
    bn3 = m.rep[1]

    def ab(bn):
        a = bn.weight.detach().double().numpy() / np.sqrt(bn.running_var.double().numpy() + bn.eps)
        return a, bn.bias.detach().double().numpy() - bn.running_mean.double().numpy() * a

    a1, _ = ab(bnpad.bn)
    a2, b2 = ab(bn2)
    a3, b3 = ab(bn3)
    W1 = conv1.weight.detach().double().numpy()[:, :, 0, 0]  # (4, 4)
    Wd = dw.weight.detach().double().numpy()[:, 0]  # (4, 3, 3)
    Wp = pw.weight.detach().double().numpy()[:, :, 0, 0]  # (4, 4)
    K = np.einsum("om,mhw,mi->oihw", Wp, Wd, a1[:, None] * W1) * (a3 * a2)[:, None, None, None] / 4  # n0: 1/D
    _, shift1 = ab(bnpad.bn)
    bias = a3 * (a2 * (Wp @ (Wd.sum((1, 2)) * shift1)) + b2) + b3
    run = run_pipeline(dep.traced, "fold")
    c = run.graph[run.graph["n1"].inputs[0]]
    assert np.abs(c.params["weight"] - K).max() < 1e-12
    b = c.params.get("bias", np.zeros(4)) + run.graph["n1"].params.get("bias", np.zeros((4, 1, 1))).reshape(-1)
    assert np.abs(b - bias).max() < 1e-12


def test_repconv_with_an_unfilled_border_is_refused_in_one_line():
    with pytest.raises(PassError) as e:
        snncc.compile(model("meta", fill=False), torch.zeros(1, 2, 8, 8))
    assert e.value.one_line().startswith("reparam: constant padding") and "gives the bias" in e.value.one_line()


# ---- the user's path: the installed command on a .pt2 exported at batch 1 --------------------

SNNCC = os.path.join(os.path.dirname(sys.executable), "snncc")


def _cli(*argv, cwd):
    return subprocess.run([SNNCC, *argv], cwd=cwd, capture_output=True, text=True, env=dict(os.environ))


@pytest.mark.parametrize("block", ["yolo", "sep"])
def test_pt2_through_the_installed_command(block, tmp_path):
    m = model(block)
    x = torch.rand(1, 2, 8, 8)
    torch.export.save(torch.export.export(m.eval(), (x,)), tmp_path / "m.pt2")
    r = _cli("compile", "m.pt2", "-o", "out", "-v", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "reparam: fused" in r.stderr and "re-parameterised 1 linear chain(s)" in r.stdout
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Re-parameterised chains (reparam)" in report
    if block == "yolo":
        v = _cli("verify", "m.pt2", "out", "--samples", "2", cwd=tmp_path)
        code, o, e = v.returncode, v.stdout, v.stderr
    else:
        code, o, e = run_main("verify", "m.pt2", "out", "--samples", "2", cwd=tmp_path)
    assert code == 0 and "verdict: OK" in o, o + e
    module = snncc.compile(m, torch.zeros(1, 2, 8, 8))
    program = snncc.load(str(tmp_path / "out"))
    assert listing(program.deployed) == listing(module.deployed)


def test_pt2_with_an_unfilled_border_is_refused_by_the_command(tmp_path):
    m = model("meta", fill=False)
    torch.export.save(torch.export.export(m.eval(), (torch.rand(1, 2, 8, 8),)), tmp_path / "m.pt2")
    r = _cli("compile", "m.pt2", "-o", "out", cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("snncc: error: reparam: constant padding")
    assert "(pad a conv+BatchNorm output with BN(0)" in lines[0] and not (tmp_path / "out").exists()


class HalfFilled(nn.Module):
    """A BN output padded, then only its top and bottom borders filled: not one value per channel."""

    def __init__(self):
        super().__init__()
        self.stem, self.n0 = nn.Conv2d(2, 4, 3, padding=1), Fire(4)
        self.c, self.bn, self.dw, self.n1 = nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4), \
            nn.Conv2d(4, 4, 3, groups=4), Fire(4)

    def forward(self, x):
        y = F.pad(self.bn(self.c(self.n0(self.stem(x)))), [1, 1, 1, 1])
        fill = self.bn.bias.detach().view(1, -1, 1, 1)
        y[:, :, 0:1, :] = fill
        y[:, :, -1:, :] = fill
        return self.n1(self.dw(y)).mean((1, 2, 3))


def test_border_filled_on_some_sides_only_is_refused_by_the_front_end():
    with pytest.raises(FrontendError) as e:
        snncc.compile(HalfFilled().eval(), torch.zeros(1, 2, 6, 6))
    assert "the padded border is filled on bottom, top but not on left, right" in e.value.one_line()


class PadNet(nn.Module):
    """stem -> neuron -> conv1x1 (no bias) -> F.pad(1) / nn.ZeroPad2d -> depthwise 3x3 (pad 0) ->
    BN -> neuron: the pad of a current, written functionally or as a module."""

    def __init__(self, functional=True):
        super().__init__()
        self.stem, self.bn0, self.n0 = nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), Fire(4)
        self.c1, self.pad = nn.Conv2d(4, 4, 1, bias=False), nn.ZeroPad2d(1)
        self.dw, self.bn1, self.n1 = nn.Conv2d(4, 4, 3, groups=4), nn.BatchNorm2d(4), Fire(4)
        self.functional = functional
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        y = self.c1(self.n0(self.bn0(self.stem(x))))
        y = F.pad(y, [1, 1, 1, 1]) if self.functional else self.pad(y)
        return self.head(self.n1(self.bn1(self.dw(y))).mean((2, 3)))


@pytest.mark.parametrize("functional", [True, False])
def test_fx_front_end_reads_a_pad_like_torch_export(functional):
    """`F.pad` / `nn.ZeroPad2d` through the fx front end: the same `pad` node as torch.export's,
    fused by reparam into one 3x3 conv; counts equal the model's own per neuron."""
    torch.manual_seed(1)
    m = randomize_bn(PadNet(functional))
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.Conv2d):
                mod.weight.mul_(2.0)
    fx_dep = snncc.compile(m, torch.zeros(2, 2, 8, 8), frontend="fx")
    ex_dep = snncc.compile(m, torch.zeros(2, 2, 8, 8), frontend="export")
    assert [n.op for n in fx_dep.traced.nodes if n.op == "pad"] == ["pad"]
    assert [n.op for n in fx_dep.deployed.nodes] == [n.op for n in ex_dep.deployed.nodes] == \
        ["input", "conv", "fire", "conv", "fire", "mean", "linear", "output"]
    fused_fx = fx_dep.deployed[fx_dep.deployed["n1"].inputs[0]]
    fused_ex = ex_dep.deployed[ex_dep.deployed["n1"].inputs[0]]
    assert np.array_equal(fused_fx.params["weight"], fused_ex.params["weight"])
    x = x_batch()
    want = eager_counts(m, x)
    sim = fx_dep.simulate(x, "exact")
    for name, c in want.items():
        assert c.sum() > 0 and torch.equal(sim.counts[name].double(), c), name
