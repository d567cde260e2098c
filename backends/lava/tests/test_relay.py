"""Residual-stream relays on Lava: a relay is a WindowBurstIF in relay mode sending its window value
as one graded message (24-bit graded projections). floating_pt: Lava's counts, output and relay
values equal the IR reference on the 3-block stage of tests/nets.py (spike input, hand-computed
counts) and on ResidualSepConv (a relay fed by the host's encoding current). fixed_pt: a relay
sends v >> 6 in its own activation units; Lava equals `simulate_fixed` bit for bit (counts,
payloads, read-out); a relay's scale keeps the identity from the relay it reads exact and a
relay consumer's threshold leaves u room. The Loihi target prices streams with the loihi profile
(floating_pt and fixed_pt) and keeps fan-in for netx unless told otherwise."""

import pytest
import torch

from conftest import assert_counts_equal
from nets import RESIDUAL_STAGE_X, ResidualSepConv, randomize_bn, residual_stage
from snncc.errors import TargetError
from snncc.frontend.loader import LoadedModel, trace
from snncc.passes.manager import run_pipeline
from snncc.sim.reference import run
from snncc_lava import fixed
from snncc_lava.fixed import quantize, simulate_fixed
from snncc_lava.lower import RELAY_BITS, run_network, simulate
from snncc_lava.network import build
from snncc_lava.target import LoihiTarget


def relayed(g):
    r = run_pipeline(g, "deploy", options={"residual_lowering": {"profile": "loihi", "residual": "relay"}})
    assert any(n.op == "relay" for n in r.graph)
    return r.graph


def fixed_bit_exact(net, q, x):
    """Lava fixed_pt == simulate_fixed bit for bit (counts, relay payloads, read-out); ours."""
    ref = simulate_fixed(q, x)
    res = run_network(net, x, "burst", q)
    for k in ref.counts:
        assert torch.equal(res.counts[k], ref.counts[k]), k
    for k in ref.relays:
        assert torch.equal(res.relays[k], ref.relays[k]), k
    assert (res.readout == ref.readout).all()
    return ref


@pytest.fixture(scope="module")
def stage():
    return relayed(residual_stage())


@pytest.fixture(scope="module")
def residual_relay():
    torch.manual_seed(0)
    m = randomize_bn(ResidualSepConv(), 0)
    return relayed(trace(LoadedModel(m, None, ResidualSepConv.input_shape)))


def test_network_of_a_relayed_stage(stage):
    net = build(stage)
    relays = [p for p in net.populations.values() if p.relay]
    assert [p.name for p in relays] == ["u0@relay", "u1@relay", "u2@relay"]
    # levels: R0 1, s0 2, R1 3, s1 4, R2 5, s2 6, s3 7 (a relay is one level, like a neuron)
    assert {p.name: p.level for p in net.populations.values()} == {
        "u0@relay": 1, "s0": 2, "u1@relay": 3, "s1": 4, "u2@relay": 5, "s2": 6, "s3": 7}
    # identity projections out of every relay, unit weights
    for pr in net.projections:
        if pr.source.endswith("@relay"):
            assert pr.weight.nnz == 4 and set(pr.weight.data) == {1.0}
    assert RELAY_BITS == 24


@pytest.mark.parametrize("emit", ["burst", "graded"])
def test_stage_lava_float_equals_reference(stage, emit):
    x = torch.cat([torch.tensor(RESIDUAL_STAGE_X, dtype=torch.float64),
                   torch.randint(0, 5, (3, 2, 1, 2), generator=torch.Generator().manual_seed(1)).double()])
    res = simulate(stage, x, emit)
    ref = assert_counts_equal(stage, x, res)
    assert torch.equal(res.output, ref.output)
    assert res.counts["s2"][0].tolist() == [[[4.0, 2.0]], [[4.0, 2.0]]]  # hand-computed (tests/nets.py)
    vals = run(stage, x, keep_values=True).values
    for name, v in res.relays.items():  # the values the relays sent (T = 1: one window per sample)
        assert torch.equal(v, vals[name]), name
    assert res.relays["u2@relay"][0].tolist() == [[[4.5, 2.0]], [[4.5, 2.0]]]  # U2


def test_host_fed_relay_lava_float_equals_reference(residual_relay):
    assert residual_relay["stem@relay"].op == "relay"  # U0 = the encoding conv, integrated by a relay
    x = torch.randn((3,) + tuple(ResidualSepConv.input_shape), generator=torch.Generator().manual_seed(2),
                    dtype=torch.float64) * 2
    res = simulate(residual_relay, x)
    ref = assert_counts_equal(residual_relay, x, res)
    assert torch.allclose(res.output, ref.output, atol=1e-12)
    assert sum(int(c.sum()) for c in ref.counts.values()) > 100


@pytest.mark.parametrize("emit", ["burst", "graded"])
def test_stage_lava_fixed_equals_simulate_fixed(stage, emit):
    net = build(stage)
    q = quantize(net)
    # R0's scale: its largest incoming weight (0.5) maps to mantissa 254, so one unit of current is
    # 508 activation units; U0 = (2, 1) is sent as payloads (1016, 508)
    assert q.populations["u0@relay"].scale == 508.0 and q.populations["u0@relay"].relay
    x = torch.cat([torch.tensor(RESIDUAL_STAGE_X, dtype=torch.float64),
                   torch.randint(0, 5, (3, 2, 1, 2), generator=torch.Generator().manual_seed(1)).double()])
    ref = simulate_fixed(q, x, emit)
    assert ref.relays["u0@relay"][0].tolist() == [[[1016, 508]], [[1016, 508]]]
    res = run_network(net, x, emit, q)
    assert set(res.counts) == set(ref.counts) == {"s0", "s1", "s2", "s3"}
    for k in ref.counts:
        assert torch.equal(res.counts[k], ref.counts[k]), k
    for k in ref.relays:
        assert torch.equal(res.relays[k], ref.relays[k]), k
    assert (res.readout == ref.readout).all()
    assert res.counts["s2"][0].tolist() == [[[4, 2]], [[4, 2]]]  # the float counts, hand-computed


def test_host_fed_relay_lava_fixed_equals_simulate_fixed(residual_relay):
    net = build(residual_relay)
    q = quantize(net)
    x = torch.randn((2,) + tuple(ResidualSepConv.input_shape), generator=torch.Generator().manual_seed(2),
                    dtype=torch.float64) * 2
    fixed_bit_exact(net, q, x)
    assert q.report["populations"]["stem@relay"]["relay"] and "vth" not in q.report["populations"]["stem@relay"]


def test_target_prices_streams_with_the_loihi_profile():
    t = LoihiTarget()
    assert t.lowering_options({}) == {"profile": "loihi"}
    assert t.lowering_options({"precision": "fixed"}) == {"profile": "loihi"}  # priced as floating_pt
    assert t.lowering_options({"precision": "fixed", "residual": "relay"}) == {"profile": "loihi", "residual": "relay"}
    assert t.lowering_options({"netx": True})["graded"] is False
    with pytest.raises(TargetError, match="netx has no relay layer"):
        t.lowering_options({"netx": True, "residual": "relay"})
    with pytest.raises(TargetError, match="unknown residual form 'copy'"):
        t.lowering_options({"residual": "copy"})
    with pytest.raises(TargetError, match="unknown option"):
        t.lowering_options({"precison": "fixed"})


def test_compile_for_loihi_prices_with_the_loihi_profile():
    from snncc.compiler import compile_model

    torch.manual_seed(0)
    m = randomize_bn(ResidualSepConv(), 0)
    lm = LoadedModel(m, None, ResidualSepConv.input_shape)
    r = compile_model(lm, "loihi")
    rep = r.pipeline.reports["residual_lowering"]
    assert rep["profile"] == "loihi" and rep["capabilities"]["graded_messages"]
    (st,) = rep["streams"]
    # one shallow stream: the relays' neuron updates (52 pJ x D per neuron) cost more than the copies
    assert st["choice"] == "fanin" and st["why"].startswith("fan-in energy 3.973e-07 J/window <= relay 4.653e-07")
    fx = compile_model(lm, "loihi", target_options={"precision": "fixed"})
    assert fx.pipeline.reports["residual_lowering"]["streams"] == rep["streams"]  # the same pricing
    forced = compile_model(lm, "loihi", target_options={"precision": "fixed", "residual": "relay"})
    assert forced.pipeline.reports["residual_lowering"]["streams"][0]["choice"] == "relay"
    assert "lava/quantisation.json" in forced.files


def test_relay_chain_scales_keep_the_identity_exact_and_consumers_head_room():
    """The stage with b0 = 0.3 (not a power-of-two ratio of 0.5): R1's weight-based scale 254 / 0.3
    = 846.67 is lowered to R0's 508 x 212 x 2**-7 = 841.375, so R0 -> R1 is mantissa 212 << -7,
    exactly R1 / R0 (the weight-based scale rounded it to 214: +0.3% gain). s0 reads R0's payloads
    (weight 1 / 508 per unit): the weight-based scale 254 x 508 x 2**-3 gave vth 16129 (u holds
    about 5 thresholds), the graded rule takes 254 x 508 x 2**-5 = 4032.25, vth 4032 (32)."""
    g = residual_stage()
    g["b0"].params["weight"][:] = 0.3
    net = build(relayed(g))
    q = quantize(net)
    assert q.populations["u0@relay"].scale == 508.0
    assert q.populations["u1@relay"].scale == 508 * 212 / 128
    (ident,) = [pr for pr in q.projections if (pr.source, pr.target) == ("u0@relay", "u1@relay")]
    assert ident.exp == -7 and set(ident.weight.data) == {212}
    assert q.populations["s0"].scale == 254 * 508 / 32 and q.populations["s0"].vth == 4032
    (r0s0,) = [pr for pr in q.projections if (pr.source, pr.target) == ("u0@relay", "s0")]
    assert r0s0.exp == -5 and set(r0s0.weight.data) == {254}  # 4032.25 / 508 = 7.9375 = 254 x 2**-5
    x = torch.cat([torch.tensor(RESIDUAL_STAGE_X, dtype=torch.float64),
                   torch.randint(0, 5, (3, 2, 1, 2), generator=torch.Generator().manual_seed(1)).double()])
    ref = fixed_bit_exact(net, q, x)
    assert torch.equal(ref.counts["s3"], run(net.graph, x).counts["s3"].long())  # float counts


def test_relay_shift_choice_by_hand_and_lava_reads_it(stage):
    """A relay's calibrated shift k multiplies its scale by 2**k: R0 at 508 x 2 = 1016 sends U0 =
    (2, 1) as (2032, 1016); R1 (scale 1016 either way) reads it exactly: identity mantissa 128 << -7
    (it was 128 << -6 from R0 at 508).
    `relay_shift` keeps the largest payload within 2**16: 1016 x 4 = 4064 -> 2, 20000 -> 1 (40000;
    80000 would not fit), 40000 -> 0. Lava fixed_pt reads the choice bit for bit; a relay takes
    only a shift in [0, 2]."""
    net = build(stage)
    q = quantize(net, choices={"u0@relay": {"shift": 1}})
    assert q.populations["u0@relay"].scale == 1016.0 and q.populations["u1@relay"].scale == 1016.0
    (ident,) = [pr for pr in q.projections if (pr.source, pr.target) == ("u0@relay", "u1@relay")]
    assert ident.exp == -7 and set(ident.weight.data) == {128}
    assert q.report["populations"]["u0@relay"]["choice"] == {"shift": 1}
    x = torch.cat([torch.tensor(RESIDUAL_STAGE_X, dtype=torch.float64),
                   torch.randint(0, 5, (3, 2, 1, 2), generator=torch.Generator().manual_seed(1)).double()])
    ref = fixed_bit_exact(net, q, x)
    assert ref.relays["u0@relay"][0].tolist() == [[[2032, 1016]], [[2032, 1016]]]
    assert ref.relay_peaks["u0@relay"] == max(int(w.abs().max()) for w in ref.relays["u0@relay"]) // net.T
    assert [fixed.relay_shift(p) for p in (1016, 20000, 40000)] == [2, 1, 0]
    for bad in ({"shift": 3}, {"shift": 1, "clip": 1.25}):
        with pytest.raises(TargetError, match="relay u0@relay"):
            quantize(net, choices={"u0@relay": bad})
