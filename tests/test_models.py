"""Tests for snncc.models: E-SpikeFormer sizes and export, the Speck-compatible event CNN."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from snncc.models import (CONFIGS, SPECK_LIMITS, check_speck_limits, count_parameters, e_spikeformer,
                          speck_cnn)
from snncc.nn import ESDSA, LayerScale, MultiStep, SFANeuron, SumPool2d, reset_state

aten = torch.ops.aten


pytestmark = pytest.mark.usefixtures("one_thread")

# size -> (target parameters, relative tolerance)
PAPER_SIZES = {"5.1M": (5.1e6, 0.01), "10M": (10.0e6, 0.01), "19M": (19.0e6, 0.01),
               "83M": (83e6, 0.03), "173M": (173e6, 0.03)}
# exact counts of this implementation (regression guard)
EXACT = {"5.1M": 5_105_608, "10M": 10_023_112, "19M": 18_987_504, "83M": 83_249_256, "173M": 173_555_368}


@pytest.mark.parametrize("size", list(PAPER_SIZES))
def test_parameter_counts(size):
    with torch.device("meta"):
        m = e_spikeformer(size)
    n = count_parameters(m)
    target, tol = PAPER_SIZES[size]
    assert abs(n - target) / target <= tol
    assert n == EXACT[size]


def test_parameter_count_changes_with_num_classes_only_in_head():
    with torch.device("meta"):
        a = count_parameters(e_spikeformer("5.1M"))
        b = count_parameters(e_spikeformer("5.1M", num_classes=10))
    assert a - b == 990 * 192 + 990


def test_large_sizes_use_layer_scale_and_no_fourth_downsample():
    with torch.device("meta"):
        m = e_spikeformer("83M")
    assert isinstance(m.downsample4, nn.Identity)
    assert len(m.stage3) == 9 and len(m.stage4) == 3
    assert any(isinstance(x, LayerScale) for x in m.modules())
    with pytest.raises(KeyError):
        e_spikeformer("7M")


def _export_equal(m, x):
    m.eval()
    ep = torch.export.export(m, (x,))
    y = m(x)
    assert torch.allclose(ep.module()(x), y, atol=1e-5)
    return ep, y


@pytest.mark.parametrize("order", ["qk_v", "q_kv"])
def test_tiny_e_spikeformer_exports_equal_eager(order):
    torch.manual_seed(0)
    m = e_spikeformer("tiny-test", attn_order=order, layer_scale=0.5)
    x = torch.randn(2, 3, 32, 32)
    ep, y = _export_equal(m, x)
    assert y.shape == (2, 10)
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    n_neurons = sum(isinstance(mm, SFANeuron) for mm in m.modules())
    assert targets.count(aten.clamp.default) == targets.count(aten.round.default) == n_neurons
    assert targets.count(aten.matmul.default) == 4
    assert aten.mean.dim in targets and aten.linear.default in targets
    allowed = {aten.conv2d.default, aten.conv1d.default, aten.batch_norm.default, aten.clamp.default,
               aten.round.default, aten.div.Tensor, aten.add.Tensor, aten.mul.Tensor, aten.view.default,
               aten.reshape.default, aten.flatten.using_ints, aten.transpose.int, aten.permute.default,
               aten.matmul.default, aten.mean.dim, aten.linear.default}
    assert set(targets) <= allowed


def test_tiny_8x8_config_and_half_up():
    torch.manual_seed(0)
    m = e_spikeformer("tiny-test-8x8", rounding="half_up")
    assert all(n.rounding == "half_up" for n in m.modules() if isinstance(n, SFANeuron))
    assert m.head_spike.norm == 1
    x = torch.rand(3, 1, 8, 8)
    ep, y = _export_equal(m, x)
    assert y.shape == (3, 10)
    assert aten.floor.default in [n.target for n in ep.graph.nodes if n.op == "call_function"]


def test_training_steps_reduce_loss_e_spikeformer():
    torch.manual_seed(0)
    m = e_spikeformer("tiny-test-8x8").train()
    y = torch.arange(16) % 4
    x = torch.rand(16, 1, 8, 8) + 0.5 * y.view(-1, 1, 1, 1).float()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(12):
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.5 * losses[0]


def test_speck_cnn_respects_limits_and_exports():
    for size, side in (("tiny", 16), ("small", 32), ("medium", 64)):
        m = speck_cnn(size)
        assert check_speck_limits(m, (2, side, side)) == []
        assert all(mm.bias is None for mm in m.modules() if isinstance(mm, nn.Conv2d))
        assert all(mm.stateful for mm in m.modules() if isinstance(mm, SFANeuron))
        assert sum(isinstance(mm, nn.Conv2d) for mm in m.modules()) <= SPECK_LIMITS["max_layers"]
    m = speck_cnn("small").eval()
    x = (torch.rand(1, 2, 32, 32) > 0.8).float()
    reset_state(m)
    ep = torch.export.export(m, (x,))
    reset_state(m)
    assert torch.equal(ep.module()(x), m(x))  # first timestep (membrane 0)
    nodes = [n for n in ep.graph.nodes if n.op == "call_function"]
    pools = [n for n in nodes if n.target == aten.avg_pool2d.default]
    assert len(pools) == 3 and all(list(p.args[1:]) == [[2, 2], [2, 2], [0, 0], False, True, 1] for p in pools)
    convs = [n for n in nodes if n.target == aten.conv2d.default]
    assert len(convs) == 4 and all(len(c.args) < 3 or c.args[2] is None for c in convs)
    assert m.classifier.kernel_size == (4, 4)


def test_speck_limit_violations_detected():
    bad = nn.Sequential(nn.Conv2d(2, 8, (3, 5), padding=1), nn.BatchNorm2d(8), SumPool2d(3),
                        *[nn.Conv2d(8, 8, 3, bias=False) for _ in range(9)])
    problems = check_speck_limits(bad, (2, 200, 200))
    text = "\n".join(problems)
    for needle in ("input 200x200", "not square", "bias not allowed", "BatchNorm", "pooling 3", "10 conv layers"):
        assert needle in text


def test_speck_multistep_training_reduces_loss():
    torch.manual_seed(0)
    m = speck_cnn("tiny")
    w = MultiStep(m, T=3).train()
    x = (torch.rand(3, 16, 2, 16, 16) > 0.85).float()
    y = torch.arange(16) % 10
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = F.cross_entropy(w(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_speck_multistep_matches_manual_loop():
    torch.manual_seed(0)
    m = speck_cnn("tiny").eval()
    x = (torch.rand(4, 2, 2, 16, 16) > 0.7).float()
    reset_state(m)
    manual = sum(m(x[t]) for t in range(4)) / 4
    assert torch.allclose(MultiStep(m, 4)(x), manual)
    # state is kept between calls and cleared by reset_state
    reset_state(m)
    first = m(x[0])
    assert all(n.v is not None for n in m.modules() if isinstance(n, SFANeuron))
    reset_state(m)
    assert all(n.v is None for n in m.modules() if isinstance(n, SFANeuron))
    assert torch.equal(m(x[0]), first)


def test_configs_registered():
    assert {"5.1M", "10M", "19M", "83M", "173M", "tiny-test"} <= set(CONFIGS)
