"""ONNX front end: models exported by torch.onnx (TorchScript exporter) map to the same IR
as the torch.export path: outputs equal onnxruntime's, spike counts equal the torch.export IR's."""

import warnings

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx import TensorProto, helper

from nets import Attention, ConvChain, Fire, ResidualSepConv, randomize_bn
from snncc.cli import main
from snncc.errors import FrontendError
from snncc.frontend.loader import LoadedModel, load_model, trace
from snncc.sim.reference import run


class PoolNet(nn.Module):
    """AvgPool2d, GlobalAveragePool, Flatten, Dropout, half-up neurons, a Norm=1 head neuron."""

    input_shape = (2, 8, 8)

    def __init__(self):
        super().__init__()
        self.c1, self.n1 = nn.Conv2d(2, 4, 3, padding=1), Fire(4, rounding="half_up")
        self.pool = nn.AvgPool2d(2)
        self.c2, self.b2, self.n2 = nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), Fire(8)
        self.gap, self.flat, self.drop = nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5)
        self.head, self.n_head = nn.Linear(6, 3), Fire(4, norm=1, rounding="half_up")

    def forward(self, x):
        x = self.pool(self.n1(self.c1(x)))
        x = self.n2(self.b2(self.c2(x)))
        return self.n_head(self.head(self.drop(self.flat(self.gap(x)))))


def export_onnx(model, path, batch=2):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.zeros((batch,) + tuple(model.input_shape)),), str(path), dynamo=False)
    return str(path)


CASES = [
    ("convchain", lambda: ConvChain()),
    ("convchain_halfup_headfire", lambda: ConvChain(rounding="half_up", head_norm=1)),
    ("residual", lambda: ResidualSepConv()),
    ("attention_left", lambda: Attention()),
    ("attention_right", lambda: Attention(order="right", rounding="half_up")),
    ("pools", lambda: PoolNet()),
]


@pytest.mark.parametrize("name,factory", CASES, ids=[c[0] for c in CASES])
def test_onnx_matches_eager_and_torch_export(tmp_path, name, factory):
    torch.manual_seed(0)
    m = randomize_bn(factory())
    lm = load_model(export_onnx(m, tmp_path / f"{name}.onnx"))
    assert lm.module is None and lm.program is None and lm.input_shape == tuple(m.input_shape)
    g = trace(lm)
    assert g.meta["frontend"] == "onnx"
    x = torch.randn((8,) + tuple(m.input_shape), generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    r = run(g, x)
    y = lm.eager(x.float()).double()  # onnxruntime, static batch 2 run in chunks
    assert y.shape == r.output.shape
    assert float((y - r.output).abs().max()) < 1e-4
    ref_g = trace(LoadedModel(m, None, tuple(m.input_shape)))
    ref = run(ref_g, x)
    assert [n.name for n in g.neurons()] == [n.name for n in ref_g.neurons()]
    assert [(n.attrs["D"], n.attrs["norm"], n.attrs["rounding"]) for n in g.neurons()] == \
           [(n.attrs["D"], n.attrs["norm"], n.attrs["rounding"]) for n in ref_g.neurons()]
    for k, c in ref.counts.items():
        assert torch.equal(r.counts[k], c), k
    assert float((ref.output - r.output).abs().max()) < 1e-5


def test_attention_product_fused_like_torch_export(tmp_path):
    torch.manual_seed(0)
    for order in ("left", "right"):
        m = randomize_bn(Attention(order=order))
        g = trace(load_model(export_onnx(m, tmp_path / f"a_{order}.onnx")))
        prods = [n for n in g.nodes if n.op == "spike_product"]
        assert len(prods) == 1 and len(prods[0].inputs) == 3 and prods[0].attrs["order"] == order


def _model_with(node, extra_inits=()):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    g = helper.make_graph([node], "g", [x], [y], list(extra_inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_unsupported_op_names_node_and_type(tmp_path, capsys):
    p = tmp_path / "sig.onnx"
    onnx.save(_model_with(helper.make_node("Sigmoid", ["x"], ["y"], name="/act/Sigmoid")), p)
    with pytest.raises(FrontendError) as e:
        trace(load_model(str(p)))
    assert e.value.one_line().startswith("ONNX node '/act/Sigmoid' (Sigmoid): unsupported ONNX op Sigmoid")
    code = main(["compile", str(p), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert code == 2 and err.count("snncc: error") == 1 and last.startswith("snncc: error: ")
    assert "ONNX node '/act/Sigmoid' (Sigmoid): unsupported ONNX op Sigmoid" in err


def test_clip_without_round_is_refused(tmp_path):
    lo = helper.make_tensor("lo", TensorProto.FLOAT, [], [0.0])
    hi = helper.make_tensor("hi", TensorProto.FLOAT, [], [4.0])
    p = tmp_path / "clip.onnx"
    onnx.save(_model_with(helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="/n/Clip"), [lo, hi]), p)
    with pytest.raises(FrontendError, match=r"ONNX node '/n/Clip' \(Clip\): Clip\(x, 0, D\) is not followed by Round"):
        trace(load_model(str(p)))


def test_hand_built_half_up_neuron_with_gemm(tmp_path):
    """Clip -> Add 0.5 -> Floor -> Div, Gemm with transB=0 and alpha/beta: exact hand-checked counts."""
    w = np.array([[1.0, 0.0], [0.0, 2.0], [0.5, 0.5]], np.float32)  # (K=3, N=2), transB=0
    inits = [helper.make_tensor("w", TensorProto.FLOAT, [3, 2], w.reshape(-1)),
             helper.make_tensor("c", TensorProto.FLOAT, [2], [0.5, -0.5]),
             helper.make_tensor("lo", TensorProto.FLOAT, [], [0.0]), helper.make_tensor("hi", TensorProto.FLOAT, [], [4.0]),
             helper.make_tensor("half", TensorProto.FLOAT, [], [0.5]), helper.make_tensor("d", TensorProto.FLOAT, [], [4.0])]
    nodes = [helper.make_node("Gemm", ["x", "w", "c"], ["g"], name="/fc/Gemm", alpha=2.0, beta=1.0),
             helper.make_node("Clip", ["g", "lo", "hi"], ["cl"], name="/nf/Clip"),
             helper.make_node("Add", ["cl", "half"], ["a"], name="/nf/Add"),
             helper.make_node("Floor", ["a"], ["f"], name="/nf/Floor"),
             helper.make_node("Div", ["f", "d"], ["y"], name="/nf/Div")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])
    p = tmp_path / "h.onnx"
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                                opset_imports=[helper.make_opsetid("", 17)]), p)
    lm = load_model(str(p))
    g = trace(lm)
    fire = g["nf"]
    assert (fire.op, fire.attrs["D"], fire.attrs["norm"], fire.attrs["rounding"]) == ("fire", 4, 4.0, "half_up")
    np.testing.assert_array_equal(g["fc"].params["weight"], 2 * w.T)
    xs = torch.tensor([[0.5, 0.25, 0.0], [1.0, 1.0, 1.0], [-1.0, 0.0, 3.0]], dtype=torch.float64)
    # 2*x@w + c: [1.5, 0.5], [3.5, 4.5], [1.5, 2.5]; floor(clip(., 0, 4) + 0.5): [2, 1], [4, 4], [2, 3]
    r = run(g, xs)
    assert r.counts["nf"].tolist() == [[2, 1], [4, 4], [2, 3]]
    np.testing.assert_allclose(r.output.numpy(), lm.eager(xs.float()).double().numpy(), atol=1e-6)


def test_cli_compile_and_verify_onnx(tmp_path, capsys):
    torch.manual_seed(0)
    p = export_onnx(randomize_bn(ResidualSepConv()), tmp_path / "r.onnx")
    out = str(tmp_path / "art")
    assert main(["compile", p, "-o", out]) == 0
    assert main(["verify", p, out, "--samples", "4"]) == 0
    assert "verdict: OK" in capsys.readouterr().out


def _onnx_segmenter(tmp_path, batch=1):
    from test_vision_ops import _segmenter

    m = _segmenter()
    m.input_shape = (2, 16, 16)
    return m, export_onnx(m, tmp_path / "seg.onnx", batch=batch)


def test_concat_and_nearest_resize_from_torch_onnx_export(tmp_path):
    """A segmentation head (levels upsampled by F.interpolate / nn.Upsample nearest, concatenated
    along channels) written by torch.onnx.export at batch 1: ONNX Resize -> IR upsample, Concat ->
    offsets; spike counts equal the module's (torch.export path) per neuron, the output equals
    onnxruntime's, and the installed command compiles and verifies it."""
    import os
    import subprocess
    import sys

    import snncc
    from test_vision_ops import _inputs

    m, path = _onnx_segmenter(tmp_path)
    kinds = [n.op_type for n in onnx.load(path).graph.node]
    assert "Resize" in kinds and "Concat" in kinds
    g = trace(load_model(path))
    ops = [n.op for n in g.nodes]
    assert ops.count("upsample") == 5 and ops.count("offset") == 3
    x = _inputs(4).double()
    r = run(g, x)
    dep = snncc.compile(m, torch.zeros(1, 2, 16, 16))
    ref = dep.reference(x)
    fires = [n.name for n in g.neurons()]
    assert len(fires) == len(dep.traced.neurons()) == 12
    for a, b in zip(fires, [n.name for n in dep.traced.neurons()]):
        assert torch.equal(r.counts[a], ref.counts[b]), (a, b)
    assert all(r.counts[k].sum() > 0 for k in fires)
    y = load_model(path).eager(x.float()).double()
    assert float((y - r.output).abs().max()) < 1e-4
    snncc_cmd = os.path.join(os.path.dirname(sys.executable), "snncc")
    out = tmp_path / "art"
    p = subprocess.run([snncc_cmd, "compile", path, "-o", str(out)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([snncc_cmd, "verify", path, str(out), "--samples", "2"], capture_output=True, text=True)
    assert p.returncode == 0 and "verdict: OK" in p.stdout, p.stdout + p.stderr


class Bilinear(nn.Module):
    input_shape = (2, 4, 4)

    def __init__(self, mode="bilinear", align_corners=None):
        super().__init__()
        self.c, self.n = nn.Conv2d(2, 2, 1), Fire(4)
        self.mode, self.align_corners = mode, align_corners

    def forward(self, x):
        return self.n(torch.nn.functional.interpolate(self.c(x), scale_factor=2, mode=self.mode,
                                                      align_corners=self.align_corners))


@pytest.mark.parametrize("align_corners", [False, True])
def test_linear_resize_is_the_ir_bilinear(tmp_path, align_corners):
    """torch.onnx.export writes F.interpolate(mode='bilinear') as Resize mode 'linear'
    (pytorch_half_pixel / align_corners): the IR `bilinear` of the same weights, counts equal the
    module's (torch.export path)."""
    import snncc

    torch.manual_seed(0)
    m = Bilinear(align_corners=align_corners).eval()
    with torch.no_grad():
        m.c.weight.mul_(6)
    path = export_onnx(m, tmp_path / "bl.onnx", batch=1)
    g = trace(load_model(path))
    (b,) = [n for n in g.nodes if n.op == "bilinear"]
    assert b.attrs == {"size": (8, 8), "align_corners": align_corners}
    x = torch.rand(3, 2, 4, 4, dtype=torch.float64)
    dep = snncc.compile(m, torch.zeros(1, 2, 4, 4))
    r, ref = run(g, x), dep.reference(x)
    (a,), (c,) = [n.name for n in g.neurons()], [n.name for n in dep.traced.neurons()]
    assert torch.equal(r.counts[a], ref.counts[c]) and r.counts[a].sum() > 0


def test_cubic_resize_is_refused_naming_the_node(tmp_path):
    path = export_onnx(Bilinear("bicubic"), tmp_path / "bc.onnx", batch=1)
    with pytest.raises(FrontendError) as e:
        trace(load_model(path))
    line = e.value.one_line()
    assert "Resize" in line and "mode 'cubic' is not deployable" in line and "\n" not in line
