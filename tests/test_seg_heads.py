"""Segmentation and detection heads of research code: bilinear upsampling (IR `bilinear`, fixed
fractional weights), max pooling of currents with a 1x1 window (SpikeFPN's extra level: a strided
subsample, IR `pool` sum), and `y[:, idx] = src` (aten `index_put`) into a tensor of zeros.

Hand-computed graphs pin the numbers (the interpolated currents, the synapses and host MACs of a
bilinear map); small models written in the idiom of Spike-Driven Transformer V3's QFPNHead
(per level spike -> conv -> BN -> bilinear x2 per octave, levels resized to the finest and
summed, spike, classifier) and SpikeFPN (an extra output level `F.max_pool2d(out, 1, stride=2)`)
go through `snncc.compile` and `snncc` on a `.pt2` exported at batch 1 (the installed command for
the QFPN head's compile, verify and inspect; `snncc.cli.main` in this process, read as the
command's output, for the other models), spike counts bit-exact against the eager model; every
refusal is one line naming the node."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import snncc
from cli_run import run_main
from nets import Fire, randomize_bn
from snncc.errors import SnnccError
from snncc.estimate.plan import analyze, dense_macs
from snncc.ir.graph import Graph, Node
from snncc.ir.ops import bilinear_weights
from snncc.nn import SFANeuron
from snncc.sim.events import op_matrix, simulate as event_simulate
from snncc.sim.reference import run
from snncc.verify import split_outputs

SNNCC = os.path.join(os.path.dirname(sys.executable), "snncc")


def _cli(*args):
    """The installed command (the QFPN head's compile, verify and inspect)."""
    p = subprocess.run([SNNCC, *args], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def _main(*args):
    """`snncc.cli.main` in this process, read as the installed command's output (tests/cli_run.py):
    the other models' `.pt2` runs, without a torch import each."""
    return run_main(*args)


# ---- the op, by hand ---------------------------------------------------------------------------
def _bilinear_graph(align_corners=False, size=(4, 4)) -> Graph:
    """spike input (1, 2, 2) -> bilinear to `size` -> floor neuron D=16."""
    return Graph([
        Node("in", "input", [], {"kind": "spike", "shape": (1, 2, 2)}),
        Node("up", "bilinear", ["in"], {"size": size, "align_corners": align_corners}),
        Node("f", "fire", ["up"], {"D": 16, "rounding": "floor"}),
        Node("out", "output", ["f"]),
    ]).infer()


def test_bilinear_weights_are_torchs_by_hand():
    # 2 -> 4, half-pixel centres: sources -0.25 (clamped to 0), 0.25, 0.75, 1.25 (the last row clamped)
    assert bilinear_weights(2, 4, False).tolist() == [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]]
    # 2 -> 3, corners aligned: sources 0, 0.5, 1
    assert bilinear_weights(2, 3, True).tolist() == [[1, 0], [0.5, 0.5], [0, 1]]
    for ac in (False, True):
        for h, w, H, W in [(4, 5, 8, 10), (3, 3, 7, 5), (6, 6, 3, 4), (1, 3, 4, 6)]:
            x = torch.rand(2, 3, h, w, dtype=torch.float64)
            want = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=ac)
            g = Graph([Node("in", "input", [], {"kind": "current", "shape": (3, h, w)}),
                       Node("up", "bilinear", ["in"], {"size": (H, W), "align_corners": ac}),
                       Node("out", "output", ["up"])]).infer()
            assert torch.allclose(run(g, x).output, want, rtol=0, atol=1e-15)


def test_bilinear_of_spikes_is_a_fractional_fan_out_counted_by_hand():
    g = _bilinear_graph()
    assert g["up"].shape == (1, 4, 4) and g["up"].kind == "current"
    x = torch.tensor([[[[4.0, 0.0], [0.0, 8.0]]]])
    # rows of A x: [4 0], [3 2], [1 6], [0 8]; each row [a b] -> [a, .75a + .25b, .25a + .75b, b]
    want = [[4, 3, 1, 0], [3, 2, 2, 2], [1, 2, 4, 6], [0, 2, 6, 8]]  # floor of [.., 2.75, 2.25 ..], [.., 4.75 ..]
    r = run(g, x)
    assert r.counts["f"][0, 0].tolist() == want
    A = op_matrix(g, g["up"]).toarray()
    # per axis 1 + 2 + 2 + 1 = 6 nonzero weights: 6 x 6 = 36 synapses; every output's weights sum to 1
    assert A.shape == (16, 4) and (A != 0).sum() == 36 and np.allclose(A.sum(1), 1)
    assert A[5].tolist() == [0.5625, 0.1875, 0.1875, 0.0625]  # output (1, 1): .75 x .75, .75 x .25, ...
    plan = analyze(g)
    (p,) = [p for p in plan.projections if p.source == "in" and p.target == "f"]
    # each input reaches 3 rows x 3 columns (its own two, and the neighbour's inner one)
    assert p.fanout.tolist() == [[[9, 9], [9, 9]]] and p.exact and p.synapses == 36
    cur = Graph([Node("in", "input", [], {"kind": "current", "shape": (2, 2, 2)}),
                 Node("up", "bilinear", ["in"], {"size": (4, 4), "align_corners": False}),
                 Node("out", "output", ["up"])]).infer()
    assert dense_macs(cur, cur["up"]) == 2 * 36  # on a host current: one multiply per weight, per channel
    ev = event_simulate(g, x, reference=True)
    assert torch.equal(ev.counts["f"], r.counts["f"])
    g3 = _bilinear_graph(True, (3, 3))
    # [[4 0] [0 8]] -> rows [4 0], [2 4], [0 8] -> [4 2 0], [2 3 4], [0 4 8]
    assert run(g3, x).counts["f"][0, 0].tolist() == [[4, 2, 0], [2, 3, 4], [0, 4, 8]]


def test_bilinear_shape_rule_names_the_node():
    from snncc.errors import IRError

    with pytest.raises(IRError) as e:
        Graph([Node("in", "input", [], {"kind": "spike", "shape": (1, 2, 2)}),
               Node("b", "bilinear", ["in"], {"size": (4, 0)}), Node("out", "output", ["b"])]).infer()
    assert "node b" in e.value.one_line() and "2 integers >= 1" in e.value.one_line()


# ---- QFPNHead (SDT-V3 Segmentation) in its idiom -----------------------------------------------
def spike():
    return SFANeuron(4)


class Levels(nn.Module):
    """Three levels of currents (conv + BN), strides 1, 2, 4."""

    def __init__(self, ch=4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(2, ch, 3, padding=1), nn.BatchNorm2d(ch))
        self.s1, self.down1 = spike(), nn.Sequential(nn.Conv2d(ch, ch, 3, stride=2, padding=1), nn.BatchNorm2d(ch))
        self.s2, self.down2 = spike(), nn.Sequential(nn.Conv2d(ch, ch, 3, stride=2, padding=1), nn.BatchNorm2d(ch))

    def forward(self, x):
        c1 = self.stem(x)
        c2 = self.down1(self.s1(c1))
        return [c1, c2, self.down2(self.s2(c2))]


class QHead(nn.Module):
    """QFPNHead's structure: per level, log2(stride) blocks of spike -> conv3x3 -> BN (+ bilinear x2
    for the coarser levels); the levels resized to the finest and summed; spike; dropout; 1x1
    classifier."""

    def __init__(self, ch=4, classes=3, align_corners=False, strides=(1, 2, 4)):
        super().__init__()
        self.align_corners = align_corners
        self.scale_heads = nn.ModuleList()
        for s in strides:
            blocks = []
            for _ in range(max(1, int(np.log2(s)))):
                blocks += [spike(), nn.Conv2d(ch, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch)]
                if s != strides[0]:
                    blocks.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=align_corners))
            self.scale_heads.append(nn.Sequential(*blocks))
        self.out_spike, self.dropout = spike(), nn.Dropout2d(0.1)
        self.cls_seg = nn.Conv2d(ch, classes, 1)

    def forward(self, x):
        out = self.scale_heads[0](x[0])
        for i in range(1, len(x)):
            out = out + F.interpolate(self.scale_heads[i](x[i]), size=out.shape[2:], mode="bilinear",
                                      align_corners=self.align_corners)
        return self.cls_seg(self.dropout(self.out_spike(out)))


class Segmenter(nn.Module):
    def __init__(self, align_corners=False):
        super().__init__()
        self.backbone, self.head = Levels(), QHead(align_corners=align_corners)

    def forward(self, x):
        return self.head(self.backbone(x))


def _model(m, seed=0):
    torch.manual_seed(seed)
    m = randomize_bn(m, seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.Conv2d):
                mod.weight.mul_(2.5)  # neurons fire at several levels
    return m.eval()


def _inputs(n=2, size=16, seed=1):
    return torch.rand(n, 2, size, size, generator=torch.Generator().manual_seed(seed)) * 3


def _eager_counts(model, x):
    got = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, k=k: got.__setitem__(k.replace(".", "_"), o * mod.D))
             for k, m in model.named_modules() if isinstance(m, SFANeuron)]
    with torch.no_grad():
        out = model.double()(x.double())
    model.float()
    for h in hooks:
        h.remove()
    return got, out


def _check_counts(dep, model, x):
    ref = dep.reference(x)
    eager, out = _eager_counts(model, x)
    fires = [n.name for n in dep.deployed.neurons()]
    assert fires and sorted(fires) == sorted(eager)
    for k in fires:
        assert torch.equal(ref.counts[k], eager[k]), k
    assert all(ref.counts[k].sum() > 0 for k in fires)  # every population fires
    return ref, out


@pytest.mark.parametrize("align_corners", [False, True])
def test_qfpn_head_bilinear_levels_bit_exact(align_corners):
    m = _model(Segmenter(align_corners), seed=3)
    dep = snncc.compile(m, torch.zeros(1, 2, 16, 16))
    bil = [(n.inputs, n.attrs["size"], n.attrs["align_corners"], n.shape) for n in dep.deployed.nodes
           if n.op == "bilinear"]
    # level 1: one block, x2 to 16x16 (its resize to 16x16 is the identity); level 2: two blocks, 4 -> 8 -> 16
    assert [(s, a, sh) for _, s, a, sh in bil] == [((16, 16), align_corners, (4, 16, 16)),
                                                   ((8, 8), align_corners, (4, 8, 8)),
                                                   ((16, 16), align_corners, (4, 16, 16))]
    x = _inputs()
    ref, out = _check_counts(dep, m, x)
    assert torch.allclose(ref.output, out, rtol=0, atol=1e-9)
    rep = dep.verify(x)
    assert rep.ok, rep.table()
    ev = event_simulate(dep.deployed, x, reference=True)
    assert ev.agreement.neuron_agreement == 1.0 and ev.agreement.output_max_abs_diff < 1e-9
    sync = dep.simulate(x, "exact")
    assert all(torch.equal(sync.counts[k], ref.counts[k]) for k in ref.counts)


def test_qfpn_head_pt2_at_batch_1_through_the_installed_command(tmp_path):
    m = _model(Segmenter(), seed=3)
    path = tmp_path / "seg.pt2"
    torch.export.save(torch.export.export(m, (torch.rand(1, 2, 16, 16),)), path)
    out = str(tmp_path / "seg")
    code, o, e = _cli("compile", str(path), "-o", out)
    assert code == 0, o + e
    code, o, e = _cli("verify", str(path), out, "--samples", "2")
    assert code == 0 and "verdict: OK" in o, o + e
    code, o, e = _cli("inspect", out)
    assert code == 0 and "bilinear" in o, o + e
    dep, loaded = snncc.compile(m, torch.zeros(1, 2, 16, 16)), snncc.load(out)
    assert [(n.name, n.op, n.inputs, n.attrs) for n in loaded.deployed.nodes] == \
        [(n.name, n.op, n.inputs, n.attrs) for n in dep.deployed.nodes]
    x = _inputs()
    ref, _ = _check_counts(loaded, m, x)


def test_lava_runs_bilinear_bit_exact():
    pytest.importorskip("snncc_lava")

    class Small(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.s0 = nn.Conv2d(2, 3, 3, padding=1), spike()
            self.down, self.s1 = nn.Conv2d(3, 3, 3, stride=2, padding=1), spike()
            self.head = nn.Conv2d(3, 2, 1)

        def forward(self, x):
            b = self.s1(self.down(self.s0(self.stem(x))))
            return self.head(F.interpolate(b, scale_factor=2, mode="bilinear"))

    m = _model(Small(), seed=1)
    x = _inputs(size=8)
    dep = snncc.compile(m, torch.zeros(1, 2, 8, 8), target="loihi")
    assert [n.op for n in dep.deployed.nodes].count("bilinear") == 1
    ref = dep.reference(x)
    res = dep.simulate(x, backend="lava")
    for k in ref.counts:
        assert torch.equal(res.counts[k], ref.counts[k]), k
    assert torch.allclose(res.output, ref.output, rtol=0, atol=1e-9)


# ---- SpikeFPN (SDT-V3 Detection neck): an extra level by max pooling of a current ---------------
class SpikeFPNNeck(nn.Module):
    """Laterals conv1x1(spike(level)), top-down nearest x2 added, outputs conv3x3(spike(lateral)),
    and one more output level `F.max_pool2d(outs[-1], 1, stride=2)` of the last output's current."""

    def __init__(self, ch=4, out=5):
        super().__init__()
        self.lat_s = nn.ModuleList(spike() for _ in range(3))
        self.lats = nn.ModuleList(nn.Conv2d(ch, out, 1) for _ in range(3))
        self.fpn_s = nn.ModuleList(spike() for _ in range(3))
        self.fpns = nn.ModuleList(nn.Conv2d(out, out, 3, padding=1) for _ in range(3))

    def forward(self, levels):
        lat = [c(s(x)) for c, s, x in zip(self.lats, self.lat_s, levels)]
        for i in range(2, 0, -1):
            lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], scale_factor=2, mode="nearest")
        outs = [c(s(x)) for c, s, x in zip(self.fpns, self.fpn_s, lat)]
        outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return tuple(outs)


class Detector(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone, self.neck = Levels(), SpikeFPNNeck()

    def forward(self, x):
        return self.neck(self.backbone(x))


def test_spike_fpn_extra_level_max_pool_of_a_current_is_a_subsample(tmp_path):
    m = _model(Detector(), seed=3)
    dep = snncc.compile(m, torch.zeros(1, 2, 16, 16))
    (p,) = [n for n in dep.deployed.nodes if n.op == "pool"]
    assert p.attrs == {"mode": "sum", "kernel": (1, 1), "stride": (2, 2), "padding": (0, 0)} and p.shape == (5, 2, 2)
    assert [(o["name"], tuple(o["shape"])) for o in dep.deployed.meta["outputs"]] == [
        ("output0", (5, 16, 16)), ("output1", (5, 8, 8)), ("output2", (5, 4, 4)), ("output3", (5, 2, 2))]
    x = _inputs()
    ref, outs = _check_counts(dep, m, x)
    got = split_outputs(dep.deployed, ref.output)
    for i, o in enumerate(outs):
        assert torch.allclose(got[f"output{i}"], o, rtol=0, atol=1e-9), i
    assert torch.equal(got["output3"], got["output2"][:, :, ::2, ::2])
    path = tmp_path / "det.pt2"
    torch.export.save(torch.export.export(m, (torch.rand(1, 2, 16, 16),)), path)
    code, o, e = _main("compile", str(path), "-o", str(tmp_path / "det"))
    assert code == 0 and "4 outputs, all deployed" in o, o + e
    code, o, e = _main("verify", str(path), str(tmp_path / "det"), "--samples", "2")
    assert code == 0 and "verdict: OK" in o and "output output3 " in o, o + e


# ---- y[:, idx] = src (aten index_put) -----------------------------------------------------------
class IndexPut(nn.Module):
    def __init__(self, idx_a=(0, 1, 2), idx_b=(3, 4), into_activation=False):
        super().__init__()
        self.a, self.b = nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1)
        self.na, self.nb, self.c, self.nc = Fire(4), Fire(4), nn.Conv2d(5, 4, 1), Fire(4)
        self.d = nn.Conv2d(5, 5, 1)
        self.idx_a, self.idx_b, self.into_activation = list(idx_a), list(idx_b), into_activation

    def forward(self, x):
        sa, sb = self.na(self.a(x)), self.nb(self.b(x))
        y = self.d(torch.cat([sa, sb], 1)) if self.into_activation else torch.zeros(x.shape[0], 5, 8, 8, dtype=x.dtype)
        y[:, self.idx_a] = sa
        y[:, self.idx_b] = sb
        return self.nc(self.c(y)).mean((2, 3))


def test_index_put_of_consecutive_indices_into_zeros_is_a_placement(tmp_path):
    torch.manual_seed(0)
    m = IndexPut().eval()
    path = tmp_path / "ip.pt2"
    torch.export.save(torch.export.export(m, (torch.rand(1, 2, 8, 8),)), path)
    code, o, e = _main("compile", str(path), "-o", str(tmp_path / "ip"))
    assert code == 0, o + e
    code, o, e = _main("verify", str(path), str(tmp_path / "ip"), "--samples", "2")
    assert code == 0 and "verdict: OK" in o, o + e
    dep = snncc.load(str(tmp_path / "ip"))
    assert [(n.attrs["at"], n.attrs["size"]) for n in dep.deployed.nodes if n.op == "offset"] == [(0, 5), (3, 5)]
    x = torch.rand(2, 2, 8, 8) * 3
    with torch.no_grad():
        want = m.double()(x.double())
    assert torch.allclose(dep.reference(x).output, want, rtol=0, atol=1e-9)


@pytest.mark.parametrize("model,what", [
    (IndexPut((0, 2, 4), (1, 3)), "index_put (y[..., idx] = src) with indices other than one ascending run"),
    (IndexPut(into_activation=True), "index_put (y[..., idx] = src) into an activation is not deployable"),
], ids=["permuted", "into-activation"])
def test_index_put_refusals_are_one_line_naming_the_node(tmp_path, model, what):
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(model.eval(), (torch.rand(1, 2, 8, 8),)), path)
    code, o, e = _main("compile", str(path), "-o", str(tmp_path / "o"))
    assert code == 2 and what in e and "node 'index_put" in e and len(e.strip().splitlines()) == 1, e


from test_vision_ops import _Returns  # noqa: E402  conv -> spike -> fn, the vision-op refusal model


@pytest.mark.parametrize("fn,what", [
    (lambda y: F.interpolate(y, scale_factor=2, mode="bicubic"), "interpolation mode bicubic is not deployable"),
    (lambda y: F.interpolate(y, scale_factor=2, mode="bilinear", antialias=True),
     "interpolation mode bilinear with antialias=True is not deployable"),
    (lambda y: F.interpolate(y, scale_factor=1.3, mode="bilinear"), "by scale_factor 1.3 of 8 rows to 10"),
    (lambda y: F.max_pool2d(y * 2.0, 3, stride=2), "max pooling of a current is not deployable"),
], ids=["bicubic", "antialias", "inexact-scale", "max-pool-current"])
def test_refusals_are_one_line_naming_the_node(fn, what):
    with pytest.raises(SnnccError) as e:
        snncc.compile(_Returns(fn).eval(), torch.zeros(1, 2, 8, 8))
    line = e.value.one_line()
    assert what in line and "node '" in line and "\n" not in line, line


class FiveD(nn.Module):
    """Multi-step (T, B, C, H, W) code: convs on x.flatten(0, 1), a bilinear resize of the coarser
    level added to the finer one, and SpikeFPN's extra level on the flattened 5-D output."""

    def __init__(self):
        super().__init__()
        self.stem, self.s0 = nn.Conv2d(2, 3, 3, padding=1), spike()
        self.down, self.s1 = nn.Conv2d(3, 3, 3, stride=2, padding=1), spike()
        self.fpn = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        T = 2
        x = x.unsqueeze(0).repeat(T, 1, 1, 1, 1)
        B = x.shape[1]
        a = self.stem(x.flatten(0, 1))
        up = F.interpolate(self.down(self.s0(a)), size=a.shape[2:], mode="bilinear", align_corners=False)
        o = self.fpn(self.s1(a + up)).reshape(T, B, 3, 8, 8)
        p = F.max_pool2d(o.flatten(0, 1), 1, stride=2).reshape(T, B, 3, 4, 4)
        return o.mean(0), p.mean(0)


def test_five_d_bilinear_and_extra_level_from_a_batch_1_program(tmp_path):
    m = _model(FiveD(), seed=1)
    path = str(tmp_path / "five.pt2")
    torch.export.save(torch.export.export(m, (torch.rand(1, 2, 8, 8),)), path)
    dep, mod = snncc.compile(path), snncc.compile(m, torch.zeros(1, 2, 8, 8))
    assert dep.deployed.T == 2 and [n.op for n in dep.deployed.nodes].count("bilinear") == 1
    assert [(n.name, n.op, n.inputs, n.attrs) for n in dep.deployed.nodes] == \
        [(n.name, n.op, n.inputs, n.attrs) for n in mod.deployed.nodes]
    x = _inputs(size=8)
    ref, (eager, outs) = dep.reference(x), _eager_counts(m, x)
    for k in ("s0", "s1"):  # the eager neuron ran on (T * B, ...): its counts summed over T
        assert torch.equal(ref.counts[k], eager[k].reshape((2, 2) + eager[k].shape[1:]).sum(0)), k
        assert ref.counts[k].sum() > 0
    got = split_outputs(dep.deployed, ref.output)
    assert all(torch.allclose(got[f"output{i}"], o, rtol=0, atol=1e-9) for i, o in enumerate(outs))
    assert dep.verify(x).ok


# ---- SDEFormer backbone + SpikeFPN neck as SDT-V3 Detection ships them: multi-step code at T = 1 --
class QuantRound(nn.Module):
    """The detection code's MultiSpike_norm4 in eval: `clamp(x, 0, T).round_() / T` (in place)."""

    def __init__(self, T=4):
        super().__init__()
        self.T = T

    def forward(self, x):
        return torch.clamp(x, min=0, max=self.T).round_() / self.T


class UnitStepDetector(nn.Module):
    """The backbone returns each level as `x.unsqueeze(0)` ((1, B, C, H, W): multi-step code at
    T = 1); the neck runs 2-D layers through SpikingJelly's own SeqToANNContainer (flatten(0, 1)),
    resizes a coarser lateral to the finer one's `shape[2:]` (on 5-D tensors: (C, H, W), a 3-D nearest
    resize), adds it, and makes an extra level by `max_pool2d(flatten(0, 1), 1, stride=2)`; the
    model returns the (1, B, ...) levels untouched."""

    def __init__(self, ch=4, out=5):
        from spikingjelly.activation_based.layer import SeqToANNContainer

        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(2, ch, 3, padding=1), nn.BatchNorm2d(ch))
        self.s1, self.down = QuantRound(4), nn.Sequential(nn.Conv2d(ch, ch, 3, stride=2, padding=1), nn.BatchNorm2d(ch))
        self.lat_s = nn.ModuleList(QuantRound(1) for _ in range(2))
        self.lats = nn.ModuleList(SeqToANNContainer(nn.Conv2d(ch, out, 1)) for _ in range(2))
        self.fpn_s = nn.ModuleList(QuantRound(1) for _ in range(2))
        self.fpns = nn.ModuleList(SeqToANNContainer(nn.Conv2d(out, out, 3, padding=1)) for _ in range(2))

    def forward(self, x):
        a = self.stem(x)
        levels = [a.unsqueeze(0), self.down(self.s1(a)).unsqueeze(0)]
        lat = [c(s(v)) for c, s, v in zip(self.lats, self.lat_s, levels)]
        lat[0] = lat[0] + F.interpolate(lat[1], size=lat[0].shape[2:], mode="nearest")
        outs = [c(s(v)) for c, s, v in zip(self.fpns, self.fpn_s, lat)]
        T, B, C, _, _ = outs[-1].shape
        p = F.max_pool2d(outs[-1].flatten(0, 1), 1, stride=2)
        outs.append(p.reshape(T, B, C, p.shape[2], p.shape[3]))
        return tuple(outs)


def test_unit_time_axis_outputs_of_multi_step_code_compile_from_a_batch_1_program(tmp_path):
    """Before: `output 0 of 3 keeps a leading axis of size 1 (layout 1, B)`, the official
    SDEFormer + SpikeFPN refused at its outputs. The unit axis is the multi-step code's time axis at
    T = 1, so each level deploys as itself (x.squeeze(0)); every level compared."""
    m = _model(UnitStepDetector(), seed=2)
    path = tmp_path / "det.pt2"
    torch.export.save(torch.export.export(m, (torch.rand(1, 2, 8, 8),)), path)
    code, o, e = _main("compile", str(path), "-o", str(tmp_path / "det"))
    assert code == 0 and "3 outputs, all deployed" in o and "keeps an axis of size 1 (1, B, ...)" in o, o + e
    code, o, e = _main("verify", str(path), str(tmp_path / "det"), "--samples", "2")
    assert code == 0 and "verdict: OK" in o and "output output2 " in o, o + e
    dep, mod = snncc.load(str(tmp_path / "det")), snncc.compile(m, torch.zeros(1, 2, 8, 8))
    assert dep.deployed.T == 1 and [(n.name, n.op, n.inputs, n.attrs) for n in dep.deployed.nodes] == \
        [(n.name, n.op, n.inputs, n.attrs) for n in mod.deployed.nodes]
    x = _inputs(size=8)
    ref = dep.reference(x)
    with torch.no_grad():
        eager = m.double()(x.double())
    m.float()
    got = split_outputs(dep.deployed, ref.output)
    assert [tuple(got[f"output{i}"].shape) for i in range(3)] == [(2, 5, 8, 8), (2, 5, 4, 4), (2, 5, 2, 2)]
    for i, o in enumerate(eager):
        assert o.shape[0] == 1 and torch.allclose(got[f"output{i}"], o[0], rtol=0, atol=1e-9), i
    assert all(v.sum() > 0 for v in ref.counts.values()) and len(ref.counts) == 5


class PoolThenNeuron(nn.Module):
    """conv -> neuron -> conv -> MaxPool2d(3, 2, 1) of the current -> a stateless SFA neuron -> conv
    -> neuron (the pooled current depends on spikes: on the input's encoding the max would be host
    work, tests/test_snntorch_loop.py)."""

    def __init__(self):
        super().__init__()
        self.c0, self.n0 = nn.Conv2d(2, 2, 1), Fire(4)
        self.c, self.p, self.n = nn.Conv2d(2, 4, 3, padding=1), nn.MaxPool2d(3, 2, 1), Fire(4)
        self.c2, self.n2 = nn.Conv2d(4, 3, 3, padding=1), Fire(4)

    def forward(self, x):
        return self.n2(self.c2(self.n(self.p(self.c(self.n0(self.c0(x))))))).flatten(1)


def test_max_pool_of_a_current_read_by_a_stateless_neuron_commutes_with_it(tmp_path):
    torch.manual_seed(0)
    m = PoolThenNeuron().eval()
    with torch.no_grad():
        m.c0.weight.mul_(4)
        m.c0.bias.add_(1.0)
        m.c.weight.mul_(6)
        m.c2.weight.mul_(4)
        m.c2.bias.add_(1.0)
    path = tmp_path / "mp.pt2"
    torch.export.save(torch.export.export(m, (torch.rand(1, 2, 8, 8),)), path)
    code, o, e = _main("compile", str(path), "-o", str(tmp_path / "mp"))
    assert code == 0, o + e
    code, o, e = _main("verify", str(path), str(tmp_path / "mp"), "--samples", "2")
    assert code == 0 and "verdict: OK" in o, o + e
    dep = snncc.load(str(tmp_path / "mp"))
    # the neuron fires on the 8x8 current (4x the eager neuron's 4x4), its spikes are max-pooled
    assert [(n.name, n.op, n.shape) for n in dep.deployed.nodes][3:7] == [
        ("c", "conv", (4, 8, 8)), ("n", "fire", (4, 8, 8)), ("n_max_pool", "max_pool", (4, 4, 4)),
        ("c2", "conv", (3, 4, 4))]
    x = torch.rand(3, 2, 8, 8) * 2
    got = {}
    hooks = [m.n.register_forward_hook(lambda mod, i, o: got.__setitem__("n", o * 4)),
             m.n2.register_forward_hook(lambda mod, i, o: got.__setitem__("n2", o * 4))]
    with torch.no_grad():
        want = m.double()(x.double())
    for h in hooks:
        h.remove()
    ref = dep.reference(x)
    assert torch.equal(F.max_pool2d(ref.counts["n"], 3, 2, 1), got["n"]) and got["n"].sum() > 0
    assert torch.equal(ref.counts["n2"], got["n2"]) and got["n2"].sum() > 0
    assert torch.equal(ref.output, want)
    assert snncc.compile(m.float(), torch.zeros(1, 2, 8, 8)).deployed.nodes[5].op == "max_pool"  # the module path too


def test_bilinear_site_mask_by_hand():
    """The SSC site-mask rule of bilinear (sim/masked): 2x2 -> 4x4, align_corners False, reads
    source rows 0, (0 .75, 1 .25), (0 .25, 1 .75), 1 (torch's rule), so one live input site (0, 0)
    makes the 3 x 3 output sites whose nonzero weights read it live, and no other."""
    import torch

    from snncc.ir.graph import Node
    from snncc.sim.masked import _mask_bilinear

    m = torch.zeros(1, 2, 2, dtype=torch.bool)
    m[0, 0, 0] = True
    n = Node("up", "bilinear", ["x"], attrs={"size": (4, 4), "align_corners": False})
    out = _mask_bilinear(None, n, [m])
    want = torch.zeros(1, 4, 4, dtype=torch.bool)
    want[0, :3, :3] = True
    assert torch.equal(out, want)
    assert _mask_bilinear(None, n, [None]) is None


def _conv_bilinear_graph(C=1, H=2, W=2, Co=1, k=3, s=1, p=1, d=1, groups=1, size=(4, 4), ac=False,
                         tail=False) -> Graph:
    """`tail`: the resized current is scaled and summed with a current of its own size before the
    neuron (QFPNHead's `output + resize(scale_head(x))`), one-to-one ops after the resize."""
    up = [Node("up", "bilinear", ["c"], {"size": size, "align_corners": ac})]
    if tail:
        up += [Node("b", "input", [], {"kind": "current", "shape": (Co,) + tuple(size)}),
               Node("s", "scale", ["up"], {}, {"factor": np.asarray(0.5)}),
               Node("sum", "add", ["s", "b"])]
    return Graph([
        Node("in", "input", [], {"kind": "spike", "shape": (C, H, W)}),
        Node("c", "conv", ["in"], {"stride": (s, s), "padding": (p, p), "dilation": (d, d), "groups": groups},
             {"weight": np.ones((Co, C // groups, k, k))}),
        *up,
        Node("f", "fire", [up[-1].name], {"D": 4, "rounding": "floor"}),
        Node("out", "output", ["f"]),
    ]).infer()


def test_conv_then_bilinear_synapses_are_the_distinct_count_by_hand():
    """spike (1, 2, 2) -> conv 3x3 pad 1 -> (1, 2, 2) -> bilinear to (4, 4). A spike reaches both conv
    outputs per axis; bilinear rows read {0}, {0, 1}, {0, 1}, {1}: all 4 output rows, all 4 columns,
    16 distinct targets per spike, 64 synapses. The path count (4 conv outputs x 3 rows x 3 columns
    = 36 per spike, 144) overcounts 2.25x; the compile report (no probing) now says 64, exact."""
    from snncc.estimate.report import static_markdown, static_stats_per_population

    g = _conv_bilinear_graph()
    (p,) = [p for p in analyze(g, probe_limit=0).projections if p.source == "in"]
    assert p.fanout.tolist() == [[[16, 16], [16, 16]]] and p.exact and p.synapses == 64
    (row,) = [r for r in static_stats_per_population(g) if r["synapses"]]
    assert row["synapses"] == 64 and row["synapses_exact"] and "upper bound" not in static_markdown(g)


@pytest.mark.parametrize("kw", [dict(C=2, H=5, W=6, Co=4, size=(10, 12)), dict(C=2, H=5, W=6, Co=4, s=2, size=(7, 9)),
                                dict(C=2, H=5, W=6, Co=4, size=(10, 12), ac=True),
                                dict(C=2, H=5, W=6, Co=4, groups=2, k=2, p=0, size=(9, 9)),
                                dict(C=2, H=5, W=6, Co=4, d=2, p=2, size=(10, 12)),
                                dict(C=2, H=5, W=6, Co=4, size=(10, 12), tail=True)],
                         ids=["x2", "stride2", "align_corners", "groups", "dilation", "scaled_and_summed"])
def test_conv_then_bilinear_closed_form_equals_one_hot_probing(kw, monkeypatch):
    import snncc.estimate.plan as plan

    g = _conv_bilinear_graph(**kw)
    term = "sum" if kw.get("tail") else "up"
    nodes = plan.closure(g, term)
    fast, exact = plan.fanout_map(g, nodes, term, "in", probe_limit=0)
    monkeypatch.setattr(plan, "_conv_bilinear_distinct", lambda *a: None)
    probed, probed_exact = plan.fanout_map(g, nodes, term, "in", probe_limit=1 << 30)
    paths, _ = plan.fanout_map(g, nodes, term, "in", probe_limit=0)
    assert exact and probed_exact and np.array_equal(fast, probed) and paths.sum() >= fast.sum()
