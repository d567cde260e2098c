"""Front ends: traced IR equals eager PyTorch; neurons recognised by pattern; clear errors."""

import pytest
import torch
import torch.nn as nn

from nets import Attention, ConvChain, Fire, ResidualSepConv, randomize_bn
from snncc.errors import FrontendError
from snncc.frontend.loader import LoadedModel, trace
from snncc.sim.reference import run

MODELS = [
    ("conv_half_even", lambda: ConvChain()),
    ("conv_half_up_head_norm1", lambda: ConvChain(rounding="half_up", head_norm=1)),
    ("residual_sepconv_layerscale", lambda: ResidualSepConv()),
    ("attention_left", lambda: Attention(order="left")),
    ("attention_right", lambda: Attention(order="right", rounding="half_up")),
]


def _x(model, n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n,) + tuple(model.input_shape), generator=g) * 2


@pytest.mark.parametrize("frontend", ["export", "fx"])
@pytest.mark.parametrize("name,make", MODELS, ids=[m[0] for m in MODELS])
def test_traced_ir_equals_eager(name, make, frontend, trace_model):
    torch.manual_seed(0)
    model = randomize_bn(make())
    lm, g = trace_model(model, frontend=frontend)
    x = _x(model)
    with torch.no_grad():
        y = model(x)
    r = run(g, x, torch.float32)
    assert torch.allclose(r.output.float(), y, atol=1e-4), (r.output - y).abs().max()
    assert len(g.neurons()) == sum(isinstance(m, Fire) for m in model.modules()) + (
        1 if name.startswith("attention") else 0)  # n_in is applied twice


def test_neuron_patterns_map_to_fire_attributes(trace_model):
    _, g = trace_model(randomize_bn(ConvChain(rounding="half_up", head_norm=1)))
    fires = {n.name: n.attrs for n in g.neurons()}
    assert fires["n1"]["rounding"] == "half_up" and fires["n1"]["norm"] == 4.0 and fires["n1"]["D"] == 4
    assert fires["head_fire"]["norm"] == 1.0
    _, g = trace_model(randomize_bn(ConvChain(D=8)))
    assert {n.attrs["rounding"] for n in g.neurons()} == {"half_even"}
    assert {n.attrs["D"] for n in g.neurons()} == {8}


def test_attention_becomes_one_three_operand_spike_product(trace_model):
    for order in ("left", "right"):
        _, g = trace_model(randomize_bn(Attention(order=order)))
        sps = [n for n in g if n.op == "spike_product"]
        assert len(sps) == 1 and len(sps[0].inputs) == 3 and sps[0].attrs["order"] == order


class ReLUModel(nn.Module):
    input_shape = (4,)

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.relu(self.fc(x))


class BadClamp(nn.Module):
    input_shape = (4,)

    def forward(self, x):
        return torch.round(torch.clamp(x, -1, 4))


def test_unsupported_op_error_names_op_module_and_line(trace_model):
    with pytest.raises(FrontendError) as e:
        trace_model(ReLUModel())
    msg = e.value.one_line()
    assert "unsupported operation aten.relu" in msg and "test_frontend.py:" in msg


def test_non_sfa_clamp_is_rejected(trace_model):
    with pytest.raises(FrontendError, match=r"clamp\(-1, 4\) is not an SFA neuron"):
        trace_model(BadClamp())


class IntShapes(nn.Module):
    """Research code calling int() on shapes: symbolic_trace cannot take it, torch.export can."""

    input_shape = (2, 4, 4)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 1)
        self.n = Fire(4)

    def forward(self, x):
        B, C, H, W = x.shape
        y = self.n(self.conv(x))
        return y.reshape(int(B), int(4 * H * W)).mean(1, keepdim=True)


def test_int_on_shapes_traces_with_export(trace_model):
    model = IntShapes().eval()
    lm, g = trace_model(model)
    x = _x(model)
    assert g.meta["frontend"] == "torch.export"
    assert torch.allclose(run(g, x).output.float(), model(x), atol=1e-6)
    with pytest.raises(FrontendError, match="symbolic_trace failed"):
        trace_model(model, frontend="fx")


def test_source_is_a_files_name_or_the_label_as_given(tmp_path):
    """meta["source"] (the manifest's `source`): a file's base name, or an in-memory model's label
    whole (it was cut at its last '/': "speck_cnn (examples/events)" became "events)")."""
    m = randomize_bn(ConvChain())
    label = "speck_cnn (examples/events)"
    assert trace(LoadedModel(m, None, (2, 8, 8), source=label)).meta["source"] == label
    p = tmp_path / "sub" / "conv.pt2"
    p.parent.mkdir()
    p.write_bytes(b"")
    assert trace(LoadedModel(m, None, (2, 8, 8), source=str(p))).meta["source"] == "conv.pt2"
