"""Vision-head ops: nearest upsampling (`upsample`), `torch.cat` (`offset` + add), dropout in eval,
and models with several outputs (a backbone + neck returning feature levels).

Hand-computed graphs pin the numbers (fan-out of an upsampled spike, the address offsets of a
concatenation); small models written in the style of Spike-Driven Transformer V3's segmentation
head (QFPN neck: nearest upsampling of currents added level to level; a head concatenating the
upsampled levels) and detection neck (SpikeFPN: several outputs) go through `snncc.compile` and
the installed `snncc` command on a batch-1 `.pt2`, with spike counts bit-exact against eager.
"""

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
from nets import randomize_bn
from snncc.estimate.plan import analyze
from snncc.ir.graph import Graph, Node
from snncc.nn import SFANeuron
from snncc.sim.events import op_matrix, projection_matrix, simulate as event_simulate
from snncc.sim.reference import run
from snncc.verify import compare, split_outputs

EXE = os.path.join(os.path.dirname(sys.executable), "snncc")


# ---- hand-computed graphs ----------------------------------------------------------------------
def _upsample_graph() -> Graph:
    """spike input (1, 2, 2) -> nearest x2 -> 3x3 box conv (pad 1) -> floor neuron D=16."""
    return Graph([
        Node("in", "input", [], {"kind": "spike", "shape": (1, 2, 2)}),
        Node("up", "upsample", ["in"], {"scale": (2, 2)}),
        Node("c", "conv", ["up"], {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1)},
             {"weight": np.ones((1, 1, 3, 3))}),
        Node("f", "fire", ["c"], {"D": 16, "rounding": "floor"}),
        Node("out", "output", ["f"]),
    ]).infer()


def test_upsample_is_a_fixed_fan_out_counted_by_hand():
    g = _upsample_graph()
    assert g["up"].shape == (1, 4, 4) and g["up"].kind == "current"
    x = torch.tensor([[[[1.0, 0.0], [0.0, 2.0]]]])
    # up = [[1 1 0 0], [1 1 0 0], [0 0 2 2], [0 0 2 2]]; each count is the 3x3 box sum around it
    want = [[4, 4, 2, 0], [4, 6, 6, 4], [2, 6, 9, 8], [0, 4, 8, 8]]
    r = run(g, x)
    assert r.counts["f"][0, 0].tolist() == want
    A = op_matrix(g, g["up"]).toarray()  # every source neuron reaches its 2x2 block, weight 1
    assert A.shape == (16, 4) and (A.sum(0) == 4).all() and (A.sum(1) == 1).all() and set(np.unique(A)) == {0, 1}
    assert A[5, 0] == 1 and A[10, 3] == 1 and A[2, 0] == 0  # (1,1) reads (0,0); (2,2) reads (1,1)
    # one spike reaches 9 distinct neurons (its block's 3x3 neighbourhood), over 4 + 6 + 6 + 9 = 25 paths
    plan = analyze(g)
    (p,) = [p for p in plan.projections if p.source == "in" and p.target == "f"]
    assert p.fanout.tolist() == [[[9, 9], [9, 9]]] and p.exact
    assert (projection_matrix(g, "f", "in").toarray() != 0).sum(0).tolist() == [9, 9, 9, 9]
    ev = event_simulate(g, x, reference=True)
    assert torch.equal(ev.counts["f"], r.counts["f"])


def _concat_graph() -> Graph:
    """cat([input, fire(2 * input)], channels) -> 1x1 conv weights (1, 10) -> floor neuron D=64."""
    return Graph([
        Node("in", "input", [], {"kind": "spike", "shape": (1, 2, 2)}),
        Node("a", "conv", ["in"], {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1)},
             {"weight": np.full((1, 1, 1, 1), 2.0)}),
        Node("fa", "fire", ["a"], {"D": 8, "rounding": "floor"}),
        Node("cat0", "offset", ["in"], {"axis": 0, "at": 0, "size": 2}),
        Node("cat1", "offset", ["fa"], {"axis": 0, "at": 1, "size": 2}),
        Node("cat", "add", ["cat0", "cat1"]),
        Node("c", "conv", ["cat"], {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1)},
             {"weight": np.array([1.0, 10.0]).reshape(1, 2, 1, 1)}),
        Node("f", "fire", ["c"], {"D": 64, "rounding": "floor"}),
        Node("out", "output", ["f"]),
    ]).infer()


def test_concat_places_each_source_at_its_channel_offset():
    g = _concat_graph()
    x = torch.tensor([[[[1.0, 2.0], [3.0, 0.0]]]])
    r = run(g, x, keep_values=True)
    assert r.counts["fa"][0, 0].tolist() == [[2, 4], [6, 0]]
    assert r.values["cat"][0].tolist() == [[[1, 2], [3, 0]], [[2, 4], [6, 0]]]
    assert r.counts["f"][0, 0].tolist() == [[21, 42], [63, 0]]  # x + 10 * floor(2x)
    A = op_matrix(g, g["cat1"]).toarray()  # fa's neuron i is address 4 + i of the (2, 2, 2) value
    assert A.shape == (8, 4) and all(A[4 + i, i] == 1 for i in range(4)) and A.sum() == 4
    assert np.array_equal(projection_matrix(g, "f", "fa").toarray(), 10 * np.eye(4))  # its slice of the conv
    assert np.array_equal(projection_matrix(g, "f", "in").toarray(), np.eye(4))
    ev = event_simulate(g, x, reference=True)
    assert torch.equal(ev.counts["f"], r.counts["f"]) and torch.equal(ev.counts["fa"], r.counts["fa"])


def test_offset_and_upsample_shape_rules_name_the_node():
    from snncc.errors import IRError

    with pytest.raises(IRError) as e:
        Graph([Node("in", "input", [], {"shape": (3, 2, 2)}),
               Node("o", "offset", ["in"], {"axis": 0, "at": 2, "size": 4}), Node("out", "output", ["o"])]).infer()
    assert "node o" in e.value.one_line() and "does not fit its size 4" in e.value.one_line()
    with pytest.raises(IRError) as e:
        Graph([Node("in", "input", [], {"shape": (3, 2, 2)}),
               Node("u", "upsample", ["in"], {"scale": (2, 0)}), Node("out", "output", ["u"])]).infer()
    assert "node u" in e.value.one_line() and "2 integers >= 1" in e.value.one_line()


# ---- models in the style of the research code -------------------------------------------------
def spike():
    return SFANeuron(4)  # round(clamp(x, 0, 4)) / 4


class Backbone(nn.Module):
    """Three levels of currents (conv + BN), strides 1, 2, 4."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4))
        self.s1 = spike()
        self.down1 = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8))
        self.s2 = spike()
        self.down2 = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8))

    def forward(self, x):
        c1 = self.stem(x)
        c2 = self.down1(self.s1(c1))
        c3 = self.down2(self.s2(c2))
        return [c1, c2, c3]


class Neck(nn.Module):
    """QFPN / SpikeFPN style: lateral = conv1x1(spike(level)); top-down, each lateral adds the
    nearest-upsampled coarser one (currents); out = conv3x3(spike(lateral))."""

    def __init__(self, chans=(4, 8, 8), out=6, size_arg=False):
        super().__init__()
        self.lat_spikes = nn.ModuleList(spike() for _ in chans)
        self.lats = nn.ModuleList(nn.Conv2d(c, out, 1) for c in chans)
        self.fpn_spikes = nn.ModuleList(spike() for _ in chans)
        self.fpns = nn.ModuleList(nn.Conv2d(out, out, 3, padding=1) for _ in chans)
        self.size_arg = size_arg

    def forward(self, levels):
        lat = [conv(s(x)) for conv, s, x in zip(self.lats, self.lat_spikes, levels)]
        for i in range(len(lat) - 1, 0, -1):
            if self.size_arg:  # mmseg's resize(..., size=prev_shape)
                lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[2:], mode="nearest")
            else:  # mmdet's upsample_cfg=dict(scale_factor=2, mode='nearest')
                lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], scale_factor=2, mode="nearest")
        return [conv(s(x)) for conv, s, x in zip(self.fpns, self.fpn_spikes, lat)]


class SegHead(nn.Module):
    """QFPNHead style: per level spike -> conv -> BN -> nearest x2 per octave (the coarsest level
    upsamples its spikes before the conv and its current after it), concatenated along channels,
    spike, dropout (eval: identity), 1x1 classifier."""

    def __init__(self, ch=6, classes=3):
        super().__init__()
        self.heads = nn.ModuleList()
        for i in range(3):
            up = [nn.Upsample(scale_factor=2, mode="nearest")] * (i > 1)  # of spikes: a 0/1 fan-out
            layers = [spike()] + up + [nn.Conv2d(ch, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch)]
            layers += [nn.Upsample(scale_factor=2, mode="nearest")] * min(i, 1)  # of currents
            self.heads.append(nn.Sequential(*layers))
        self.out_spike = spike()
        self.drop = nn.Dropout2d(0.1)
        self.cls_seg = nn.Conv2d(3 * ch, classes, 1)

    def forward(self, feats):
        parts = [h(f) for h, f in zip(self.heads, feats)]
        x = self.out_spike(torch.cat(parts, dim=1))
        return self.cls_seg(self.drop(F.dropout(x, 0.1, training=False)))


class Segmenter(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone, self.neck, self.head = Backbone(), Neck(size_arg=True), SegHead()

    def forward(self, x):
        return self.head(self.neck(self.backbone(x)))


class Detector(nn.Module):
    """Backbone + SpikeFPN-style neck returning every level (a tuple of three feature maps)."""

    def __init__(self):
        super().__init__()
        self.backbone, self.neck = Backbone(), Neck()

    def forward(self, x):
        return tuple(self.neck(self.backbone(x)))


def _model(cls, seed=0):
    torch.manual_seed(seed)
    m = randomize_bn(cls(), seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.Conv2d):
                mod.weight.mul_(2.5)  # neurons fire at several levels
    return m.eval()


def _segmenter():
    m = _model(Segmenter, seed=2)
    with torch.no_grad():  # the neck's outputs drive the head's neurons
        for c in m.neck.fpns:
            c.weight.mul_(4)
            c.bias.add_(0.5)
    return m


def _eager_counts(model, x):
    """Spike counts of every SFA neuron, from the eager model itself (hooks), by IR node name."""
    got = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, k=k: got.__setitem__(k.replace(".", "_"), o * mod.D))
             for k, m in model.named_modules() if isinstance(m, SFANeuron)]
    with torch.no_grad():
        out = model(x)
    for h in hooks:
        h.remove()
    return got, out


def _inputs(n=2, size=16, seed=1):
    return torch.rand(n, 2, size, size, generator=torch.Generator().manual_seed(seed)) * 3


def _check_counts(dep, model, x):
    ref = dep.reference(x)
    eager, out = _eager_counts(model.double(), x.double())
    model.float()
    fires = [n.name for n in dep.deployed.neurons()]
    assert fires and sorted(fires) == sorted(eager)
    for k in fires:
        assert torch.equal(ref.counts[k], eager[k]), k
    assert all(ref.counts[k].sum() > 0 for k in fires)  # every population fires
    return ref, out


def test_segmentation_head_upsamples_and_concatenates_levels_bit_exact():
    m = _segmenter()
    dep = snncc.compile(m, torch.zeros(1, 2, 16, 16))
    ops = [n.op for n in dep.deployed.nodes]
    assert ops.count("upsample") == 5 and ops.count("offset") == 3  # neck 2, head 1 + 2; a 3-level cat
    assert "dropout" not in " ".join(n.name for n in dep.deployed.nodes)
    x = _inputs()
    ref, out = _check_counts(dep, m, x)
    assert torch.allclose(ref.output, out, rtol=0, atol=1e-12)
    rep = dep.verify(x)
    assert rep.ok and rep.levels[0].max_logit_diff < 1e-9, rep.table()
    ev = event_simulate(dep.deployed, x, reference=True)
    assert ev.agreement.neuron_agreement == 1.0 and ev.agreement.output_max_abs_diff < 1e-9
    sync = dep.simulate(x, "exact")
    assert all(torch.equal(sync.counts[k], ref.counts[k]) for k in ref.counts)


def test_detection_neck_deploys_and_verifies_every_output():
    m = _model(Detector)
    dep = snncc.compile(m, torch.zeros(1, 2, 16, 16))
    parts = dep.deployed.meta["outputs"]
    assert [(p["name"], tuple(p["shape"]), p["at"]) for p in parts] == [
        ("output0", (6, 16, 16), 0), ("output1", (6, 8, 8), 1536), ("output2", (6, 4, 4), 1920)]
    assert dep.deployed.output.shape == (1536 + 384 + 96,)
    x = _inputs()
    ref, outs = _check_counts(dep, m, x)
    got = split_outputs(dep.deployed, ref.output)
    for i, o in enumerate(outs):  # each level equal to the eager model's (float64)
        assert torch.allclose(got[f"output{i}"], o, rtol=0, atol=1e-12)
    rep = dep.verify(x)
    assert rep.ok and set(rep.levels[0].outputs) == {"output0", "output1", "output2"}, rep.table()
    assert "output output2 6x4x4" in rep.table()
    # a wrong weight on the last level only: verify names that output
    bad = dep.deployed.clone()
    conv = bad["output2"]  # the offset of the last level; back through the flatten to its conv
    while conv.op != "conv":
        conv = bad[conv.inputs[0]]
    conv.params["weight"] = conv.params["weight"] * 1.5
    rep = compare(None, {"deployed": dep.deployed, "tampered": bad}, x)
    lv = rep.levels[-1]
    assert not rep.ok and lv.outputs["output2"] > 0 and lv.outputs["output0"] == lv.outputs["output1"] == 0


def _cli(*args):
    p = subprocess.run([EXE, *args], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def test_pt2_at_batch_1_through_the_installed_command(tmp_path, snncc_main):
    """The segmenter through the installed `snncc` (compile, verify, inspect), the detector's
    compile, verify and inspect through `snncc.cli.main` in this process (the same output without a
    torch import per command) and its estimate through the installed command."""
    for name, make in (("seg", _segmenter), ("det", lambda: _model(Detector))):
        m = make()
        path = tmp_path / f"{name}.pt2"
        torch.export.save(torch.export.export(m.eval(), (torch.rand(1, 2, 16, 16),)), path)
        out = str(tmp_path / name)
        run = _cli if name == "seg" else snncc_main
        code, o, e = run("compile", str(path), "-o", out)
        assert code == 0, e
        if name == "det":
            assert "3 outputs, all deployed: output0 6x16x16" in o
        code, o, e = run("verify", str(path), out, "--samples", "2")
        assert code == 0 and "verdict: OK" in o, o + e
        if name == "det":
            for i in range(3):
                assert f"output output{i} " in o
            code, o, e = _cli("estimate", out, "--samples", "2")
            assert code == 0 and "read-out: 3 outputs, all deployed: output0 6x16x16" in o, o + e
        code, o, e = run("inspect", out)
        assert code == 0 and ("upsample" in o) and ("offset" in o)
        # the .pt2 path deploys the graph the module path deploys
        dep = snncc.compile(m, torch.zeros(1, 2, 16, 16))
        loaded = snncc.load(out)
        assert [(n.name, n.op, n.inputs) for n in loaded.deployed.nodes] == \
            [(n.name, n.op, n.inputs) for n in dep.deployed.nodes]


def test_lava_runs_upsampling_concatenation_and_several_outputs_bit_exact():
    pytest.importorskip("snncc_lava")

    class Small(nn.Module):  # one level up, concatenated with the fine one, two outputs
        def __init__(self):
            super().__init__()
            self.stem, self.s0 = nn.Conv2d(2, 3, 3, padding=1), spike()
            self.down, self.s1 = nn.Conv2d(3, 4, 3, stride=2, padding=1), spike()
            self.fuse, self.s2 = nn.Conv2d(7, 4, 1), spike()
            self.head = nn.Conv2d(4, 2, 1)

        def forward(self, x):
            a = self.s0(self.stem(x))
            b = self.s1(self.down(a))
            y = self.s2(self.fuse(torch.cat([a, F.interpolate(b, scale_factor=2)], 1)))
            return self.head(y), self.head(F.interpolate(y, scale_factor=2))

    m = _model(Small)
    x = _inputs(size=8)
    dep = snncc.compile(m, torch.zeros(1, 2, 8, 8), target="loihi")
    ref = dep.reference(x)
    res = dep.simulate(x, backend="lava")
    for k in ref.counts:
        assert torch.equal(res.counts[k], ref.counts[k]), k
    assert torch.allclose(res.output, ref.output, rtol=0, atol=1e-9)
    assert [p["name"] for p in dep.deployed.meta["outputs"]] == ["output0", "output1"]


# ---- refusals, one line each --------------------------------------------------------------------
def test_speck_refuses_upsampling_concatenation_and_several_outputs_naming_nodes():
    from snncc.errors import SnnccError

    m = _model(Detector)
    with pytest.raises(SnnccError) as e:
        snncc.compile(m, torch.zeros(1, 2, 16, 16), target="speck", input_kind="spike")
    msg = e.value.one_line()
    assert "nearest upsampling: a Speck core cannot fan one event out" in msg
    assert "node output: the model returns 3 outputs (output0, output1, output2)" in msg


class _Returns(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.c, self.s, self.fn = nn.Conv2d(2, 4, 3, padding=1), spike(), fn

    def forward(self, x):
        return self.fn(self.s(self.c(x)))


@pytest.mark.parametrize("fn,what", [
    (lambda y: F.interpolate(y, scale_factor=2, mode="bicubic"), "'upsample_bicubic2d'"),
    (lambda y: F.interpolate(y, scale_factor=2, mode="bicubic"), "interpolation mode bicubic is not deployable"),
    (lambda y: F.interpolate(y, size=(12, 12), mode="nearest"), "is not by integer factors"),
    (lambda y: F.dropout(y, 0.1), "exported in training mode"),
    (lambda y: torch.cat([y, y], 0), "cat along the batch"),
    (lambda y: (y.sum((2, 3)), y.unsqueeze(0).repeat(2, 1, 1, 1, 1)), "output 1 of 2"),
], ids=["bicubic", "bicubic-why", "non-integer", "dropout-train", "cat-batch", "output-keeps-time"])
def test_refusals_are_one_line_naming_what(fn, what):
    from snncc.errors import SnnccError

    with pytest.raises(SnnccError) as e:
        snncc.compile(_Returns(fn).eval(), torch.zeros(2, 2, 8, 8))
    assert what in e.value.one_line() and "\n" not in e.value.one_line()


def test_nir_export_refuses_upsampling_and_concatenation_naming_nodes():
    pytest.importorskip("nir")
    from snncc.errors import SnnccError
    from snncc.interop.nir_io import to_nir

    with pytest.raises(SnnccError) as e:
        to_nir(_concat_graph())
    assert "offset of a concatenation or of several outputs (NIR sums fan-in, it has no concatenation): cat0, cat1" \
        in e.value.one_line()
    with pytest.raises(SnnccError) as e:
        to_nir(_upsample_graph())
    assert "nearest upsampling (NIR has no upsampling node): up" in e.value.one_line()


class FiveD(nn.Module):
    """SpikeFPN / SpikeYOLO on (T, B, C, H, W) values: the model adds its own time axis, upsamples a
    5-D level with `F.interpolate(size=finer.shape[2:])` (nearest3d over (C, H, W), C kept) and
    with SpikeYOLO's `nn.Upsample(None, (1, 2, 2), 'nearest')`, and concatenates along dim 2."""

    def __init__(self):
        super().__init__()
        self.stem, self.s0 = nn.Conv2d(2, 3, 3, padding=1), spike()
        self.down, self.s1 = nn.Conv2d(3, 3, 3, stride=2, padding=1), spike()
        self.up = nn.Upsample(None, (1, 2, 2), "nearest")
        self.fuse, self.s2 = nn.Conv2d(9, 4, 1), spike()
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        T = 2
        x = x.unsqueeze(0).repeat(T, 1, 1, 1, 1)
        B = x.shape[1]
        a = self.s0(self.stem(x.flatten(0, 1))).reshape(T, B, 3, 8, 8)
        b = self.s1(self.down(a.flatten(0, 1))).reshape(T, B, 3, 4, 4)
        y = torch.cat([a, F.interpolate(b, size=a.shape[2:], mode="nearest"), self.up(b)], dim=2)
        y = self.s2(self.fuse(y.flatten(0, 1))).reshape(T, B, 4, 8, 8)
        return self.head(y.flatten(0, 1)).reshape(T, B, 2, 8, 8).mean(0)


def test_five_d_time_major_upsample_and_cat_along_dim_2():
    m = _model(FiveD, seed=4)  # every population fires
    dep = snncc.compile(m, torch.zeros(2, 2, 8, 8))
    assert dep.deployed.T == 2
    ups = [n for n in dep.deployed.nodes if n.op == "upsample"]
    assert [(n.attrs["scale"], n.shape) for n in ups] == [((2, 2), (3, 8, 8))] * 2
    assert [n.attrs["at"] for n in dep.deployed.nodes if n.op == "offset"] == [0, 3, 6]
    x = _inputs(size=8)
    with torch.no_grad():
        eager = m.double()(x.double())
    m.float()
    ref = dep.reference(x)
    assert torch.allclose(ref.output, eager, rtol=0, atol=1e-12)
    assert all(ref.counts[k].sum() > 0 for k in ("s0", "s1", "s2"))
    rep = dep.verify(x)
    assert rep.ok, rep.table()


def test_fold_scale_folds_a_scalar_through_upsampling_and_concatenation_into_the_conv_slice():
    from snncc.passes.fold_scale import fold_scale

    conv = {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1)}
    g = Graph([
        Node("in", "input", [], {"kind": "spike", "shape": (1, 2, 2)}),
        Node("s", "scale", ["in"], {}, {"factor": np.asarray(0.25)}),
        Node("up", "upsample", ["s"], {"scale": (2, 2)}),
        Node("big", "conv", ["in"], {**conv, "padding": (1, 1)}, {"weight": np.ones((1, 1, 1, 1))}),
        Node("o0", "offset", ["big"], {"axis": 0, "at": 0, "size": 2}),
        Node("o1", "offset", ["up"], {"axis": 0, "at": 1, "size": 2}),
        Node("cat", "add", ["o0", "o1"]),
        Node("c", "conv", ["cat"], conv, {"weight": np.array([1.0, 2.0]).reshape(1, 2, 1, 1)}),
        Node("f", "fire", ["c"], {"D": 8, "rounding": "floor"}),
        Node("out", "output", ["f"]),
    ]).infer()
    assert g["big"].shape == (1, 4, 4)
    res = fold_scale(g)
    assert "s" not in res.graph and res.changes == [
        "folded s into c (input channels 1:2, through upsampling / concatenation)"]
    assert res.graph["c"].params["weight"].ravel().tolist() == [1.0, 0.5]
    x = torch.tensor([[[[4.0, 0.0], [8.0, 4.0]]]])
    a, b = run(g, x), run(res.graph, x)
    # big = x with a zero border; up = 0.25 x, each value on its 2x2 block; c = big + 2 up, clipped at 8
    want = [[2, 2, 0, 0], [2, 6, 0, 0], [4, 8, 6, 2], [4, 4, 2, 2]]
    assert a.counts["f"][0, 0].tolist() == want and torch.equal(a.output, b.output)
