"""The package's own models through the whole compiler: E-SpikeFormer (attention, membrane
shortcuts, depthwise-separable blocks, downsampling) and the Speck CNN (stateful, T > 1)."""

import pytest
import torch

from nets import randomize_bn
from snncc.frontend.loader import LoadedModel, trace
from snncc.models import e_spikeformer
from snncc.passes.manager import run_pipeline
from snncc.sim.reference import run as reference_run
from snncc.sim.sync import simulate
from snncc.verify import compare


@pytest.mark.slow
@pytest.mark.parametrize("order", ["qk_v", "q_kv"])
def test_e_spikeformer_tiny_all_levels_agree(order):
    torch.manual_seed(0)
    m = randomize_bn(e_spikeformer("tiny-test", attn_order=order), seed=1)
    lm = LoadedModel(m, None, (3, 32, 32))
    traced = trace(lm)
    run = run_pipeline(traced, "deploy")
    assert run.reports["check_spike_driven"]["encoding"] and not run.reports["check_spike_driven"]["mac_layers"]
    attn = [n for n in run.graph.neurons() if n.name.endswith("attn_spike")]
    assert attn and all(n.attrs["theta"] == 4 ** 3 / 0.5 for n in attn)  # D^3 / scale, scale = 2/sqrt(16)
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    rep = compare(lm.eager, {"traced": traced, "folded": run_pipeline(traced, "fold").graph, "deployed": run.graph}, x)
    assert rep.ok, rep.table()
    assert rep.levels[0].max_logit_diff < 1e-4
    ref = reference_run(run.graph, x)
    assert sum(int(c.sum()) for c in ref.counts.values()) > 1000  # not a comparison of silent networks
    ex = simulate(run.graph, x, "exact")
    for k, c in ref.counts.items():
        assert torch.equal(ex.counts[k], c), k


@pytest.mark.parametrize("frontend", ["export", "fx"])
def test_layer_scale_on_a_reshaped_parameter_is_folded_as_a_constant(frontend):
    """`x * gamma.view(1, -1, 1, 1)` (snncc.nn.LayerScale, used by the 83M/173M models)."""
    m = randomize_bn(e_spikeformer("tiny-test", layer_scale=0.5), seed=2)
    lm = LoadedModel(m, None, (3, 32, 32))
    traced = trace(lm, frontend=frontend)
    deployed = run_pipeline(traced, "deploy").graph
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    rep = compare(lm.eager, {"traced": traced, "deployed": deployed}, x)
    assert rep.ok and rep.levels[0].max_logit_diff < 1e-4, rep.table()
