"""The acceptance check on the shipped digits models (CNN and transformer): Lava
floating_pt spike counts == snncc exact-schedule counts == IR reference counts on the first test
digits; fixed_pt == snncc's fixed-point reference bit for bit (slow: about 5 s per Lava run for the
CNN, about 28 s for the transformer: 39 populations, 2 spike products, 67 projections, delays up to
80 steps through one identity relay). A Lava run's cost is mostly building the network (the
transformer: about 26 CPU s at 2 digits, 38 at 20), so N digits is few: enough that every count
check is far from vacuous (5 digits: 63k spikes in the CNN, 113k in the transformer, 1,039 attention
spikes in fixed point) and that several digits are in flight at once through the relays' delays."""

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
N = 5  # test digits per run
# model -> the fewest spikes its N digits must produce (the check is not vacuous)
MODELS = {"digits_cnn": 1000, "digits_former": 10000}


@pytest.fixture(scope="module", params=sorted(MODELS))
def digits(request):
    sys.path.insert(0, str(ROOT))
    from examples.digits.train import load_model

    art = ROOT / "examples" / "digits" / "artifacts"
    model = load_model(art, request.param)
    x = torch.as_tensor(np.load(art / "digits_test.npz")["x_test"][:N], dtype=torch.float64)
    g = run_pipeline(trace(LoadedModel(model, None, (1, 8, 8))), "deploy").graph
    return request.param, g, x


@pytest.mark.slow
def test_lava_float_equals_exact_schedule_equals_reference_on_the_first_digits(digits):
    from snncc_lava.target import LoihiTarget

    name, g, x = digits
    ref = run(g, x)
    exact = simulate(g, x, "exact")
    lava = LoihiTarget().simulate(g, x)
    for k, c in ref.counts.items():
        assert torch.equal(exact.counts[k], c), k
        assert torch.equal(lava.counts[k].double(), c), k
    assert sum(int(c.sum()) for c in ref.counts.values()) > MODELS[name]


@pytest.mark.slow
def test_lava_fixed_equals_fixed_point_reference_on_the_first_digits(digits):
    from snncc_lava.target import LoihiTarget

    name, g, x = digits
    t = LoihiTarget()
    lava = t.simulate(g, x, {"precision": "fixed"})
    ours = t.reference(g, x, {"precision": "fixed"})
    for k, c in ours.counts.items():
        assert torch.equal(lava.counts[k], c), k
    assert np.array_equal(lava.readout, ours.readout)
    if name == "digits_former":  # attention spikes in fixed point
        assert int(ours.counts["stage3_0_attn_attn_spike"].sum()) > 100


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_lava_float_with_relays_equals_reference_on_the_first_digits(name):
    """The digits models deployed for the loihi target (residual_lowering priced with the loihi
    profile: the CNN's 2 streams and 3 of the transformer's 4 are relayed): Lava floating_pt ==
    exact schedule == reference, with relays sending graded 24-bit messages."""
    sys.path.insert(0, str(ROOT))
    from examples.digits.train import load_model
    from snncc_lava.target import LoihiTarget

    art = ROOT / "examples" / "digits" / "artifacts"
    x = torch.as_tensor(np.load(art / "digits_test.npz")["x_test"][:N], dtype=torch.float64)
    t = LoihiTarget()
    r = run_pipeline(trace(LoadedModel(load_model(art, name), None, (1, 8, 8))), "deploy",
                     options={"residual_lowering": t.lowering_options({})})
    g = r.graph
    choices = [s["choice"] for s in r.reports["residual_lowering"]["streams"]]
    assert choices == {"digits_cnn": ["relay", "relay"], "digits_former": ["fanin", "relay", "relay", "relay"]}[name]
    ref = run(g, x)
    exact = simulate(g, x, "exact")
    lava = t.simulate(g, x)
    for k, c in ref.counts.items():
        assert torch.equal(exact.counts[k], c), k
        assert torch.equal(lava.counts[k].double(), c), k
    assert torch.equal(lava.output, ref.output)
    assert sum(int(c.sum()) for c in ref.counts.values()) > MODELS[name]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_lava_fixed_with_relays_equals_fixed_point_reference_on_the_first_digits(name):
    """Every stream relayed (target option residual=relay), fixed_pt: Lava == simulate_fixed bit for
    bit, relay payloads included."""
    sys.path.insert(0, str(ROOT))
    from examples.digits.train import load_model
    from snncc_lava.target import LoihiTarget

    art = ROOT / "examples" / "digits" / "artifacts"
    x = torch.as_tensor(np.load(art / "digits_test.npz")["x_test"][:N], dtype=torch.float64)
    t = LoihiTarget()
    opts = {"precision": "fixed", "residual": "relay"}
    g = run_pipeline(trace(LoadedModel(load_model(art, name), None, (1, 8, 8))), "deploy",
                     options={"residual_lowering": t.lowering_options(opts)}).graph
    assert sum(n.op == "relay" for n in g) == {"digits_cnn": 4, "digits_former": 12}[name]
    lava = t.simulate(g, x, opts)
    ours = t.reference(g, x, opts)
    for k, c in ours.counts.items():
        assert torch.equal(lava.counts[k], c), k
    for k, c in ours.relays.items():
        assert torch.equal(lava.relays[k], c), k
    assert np.array_equal(lava.readout, ours.readout)
    # relay consumers' thresholds leave u >= 32 thresholds of room (fixed._population_scale): no
    # wrap or saturation (the weight-based scale wrapped u 15950 times on 100 transformer digits)
    assert ours.events == {"u_wraps": 0, "v_saturations": 0, "host_saturations": 0}
