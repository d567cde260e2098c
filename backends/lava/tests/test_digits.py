"""The acceptance check on the shipped digits models (CNN and transformer): Lava floating_pt spike
counts == snncc exact-schedule counts == IR reference counts on the first test digits; fixed_pt ==
snncc's fixed-point reference bit for bit.

Which graphs run in Lava: both models as the loihi target deploys them by default (residual_lowering
priced with the loihi profile: the CNN's 2 streams relayed, the transformer's first stream fanned in
and its other 3 relayed), in floating_pt and in fixed_pt. The transformer's default graph has both
stream lowerings (one fan-in, 10 relays), its attention spike products and its long delays, so one
Lava run per precision covers every kind of node it has. The CNN, cheap in Lava (5-8 s a run), also
runs with every stream fanned in (the sim target's graph), so each precision sees a graph with no
relay at all too. A transformer Lava run costs about 30 CPU s (115 processes x 196 steps of Lava's own
messaging, about 1.2 ms per process per step), which is why it runs twice and not four times.

N digits is few: enough that every count check is far from vacuous (5 digits: 63k spikes in the CNN,
113k in the transformer, over 100 attention spikes in fixed point) and that several digits are in
flight at once through the relays' delays."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from snncc.frontend.loader import LoadedModel, trace
from snncc.passes.manager import run_pipeline
from snncc.sim.reference import run
from snncc.sim.sync import simulate

ROOT = Path(__file__).resolve().parents[3]
ART = ROOT / "examples" / "digits" / "artifacts"
N = 5  # test digits per run
# model -> the fewest spikes its N digits must produce (the check is not vacuous)
MODELS = {"digits_cnn": 1000, "digits_former": 10000}
# the loihi target's default lowering of each model's residual streams, and the relays it places
LOIHI_STREAMS = {"digits_cnn": (["relay", "relay"], 4),
                 "digits_former": (["fanin", "relay", "relay", "relay"], 10)}


def _model(name):
    sys.path.insert(0, str(ROOT))
    from examples.digits.train import load_model

    return load_model(ART, name)


def _digits():
    return torch.as_tensor(np.load(ART / "digits_test.npz")["x_test"][:N], dtype=torch.float64)


def _loihi_graph(name, opts):
    """The graph `compile --target loihi` deploys with these target options, checked to lower the
    streams as LOIHI_STREAMS says."""
    from snncc_lava.target import LoihiTarget

    r = run_pipeline(trace(LoadedModel(_model(name), None, (1, 8, 8))), "deploy",
                     options={"residual_lowering": LoihiTarget().lowering_options(opts)})
    choices, relays = LOIHI_STREAMS[name]
    assert [s["choice"] for s in r.reports["residual_lowering"]["streams"]] == choices
    assert sum(n.op == "relay" for n in r.graph) == relays
    return r.graph


@pytest.fixture(scope="module")
def cnn_fanin():
    """The CNN with every stream fanned in (the sim target's deploy graph: no relay)."""
    g = run_pipeline(trace(LoadedModel(_model("digits_cnn"), None, (1, 8, 8))), "deploy").graph
    assert not any(n.op == "relay" for n in g)
    return g, _digits()


@pytest.mark.slow
def test_lava_float_equals_exact_schedule_equals_reference_without_relays(cnn_fanin):
    from snncc_lava.target import LoihiTarget

    g, x = cnn_fanin
    ref = run(g, x)
    exact = simulate(g, x, "exact")
    lava = LoihiTarget().simulate(g, x)
    for k, c in ref.counts.items():
        assert torch.equal(exact.counts[k], c), k
        assert torch.equal(lava.counts[k].double(), c), k
    assert sum(int(c.sum()) for c in ref.counts.values()) > MODELS["digits_cnn"]


@pytest.mark.slow
def test_lava_fixed_equals_fixed_point_reference_without_relays(cnn_fanin):
    from snncc_lava.target import LoihiTarget

    g, x = cnn_fanin
    t = LoihiTarget()
    lava = t.simulate(g, x, {"precision": "fixed"})
    ours = t.reference(g, x, {"precision": "fixed"})
    for k, c in ours.counts.items():
        assert torch.equal(lava.counts[k], c), k
    assert np.array_equal(lava.readout, ours.readout)
    assert sum(int(c.sum()) for c in ours.counts.values()) > MODELS["digits_cnn"]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_lava_float_as_the_loihi_target_deploys_equals_reference_on_the_first_digits(name):
    """Lava floating_pt == exact schedule == reference, fan-in streams and relays sending graded
    24-bit messages alike."""
    from snncc_lava.target import LoihiTarget

    g, x = _loihi_graph(name, {}), _digits()
    ref = run(g, x)
    exact = simulate(g, x, "exact")
    lava = LoihiTarget().simulate(g, x)
    for k, c in ref.counts.items():
        assert torch.equal(exact.counts[k], c), k
        assert torch.equal(lava.counts[k].double(), c), k
    assert torch.equal(lava.output, ref.output)
    assert sum(int(c.sum()) for c in ref.counts.values()) > MODELS[name]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_lava_fixed_as_the_loihi_target_deploys_equals_fixed_point_reference_on_the_first_digits(name):
    """fixed_pt with the loihi target's default lowering (target option residual=relay gives the
    CNN the same graph): Lava == simulate_fixed bit for bit, relay payloads included."""
    from snncc_lava.target import LoihiTarget

    opts = {"precision": "fixed"}
    g, x = _loihi_graph(name, opts), _digits()
    if name == "digits_cnn":
        relayed = _loihi_graph(name, dict(opts, residual="relay"))
        assert [(n.name, n.op, n.inputs) for n in relayed] == [(n.name, n.op, n.inputs) for n in g]
    t = LoihiTarget()
    lava = t.simulate(g, x, opts)
    ours = t.reference(g, x, opts)
    for k, c in ours.counts.items():
        assert torch.equal(lava.counts[k], c), k
    for k, c in ours.relays.items():
        assert torch.equal(lava.relays[k], c), k
    assert np.array_equal(lava.readout, ours.readout)
    assert sum(int(c.sum()) for c in ours.counts.values()) > MODELS[name]
    if name == "digits_former":  # attention spikes in fixed point
        assert int(ours.counts["stage3_0_attn_attn_spike"].sum()) > 100
    # relay consumers' thresholds leave u >= 32 thresholds of room (fixed._population_scale): no
    # wrap or saturation (the weight-based scale wrapped u 15950 times on 100 transformer digits)
    assert ours.events == {"u_wraps": 0, "v_saturations": 0, "host_saturations": 0}
