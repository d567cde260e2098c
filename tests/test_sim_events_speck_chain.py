"""The speck policy's whole-run kernel for chain networks (`runner._run_speck_chain`,
`kernels._speck_chain`): equal to the step-by-step event loop in everything it reports (counts,
output, events, SynOps, peak spikes, steps) and in its final membranes bit for bit, in float32
and float64, with window caps, on 1 and 2 threads, and to the per-event oracle; a speck run the
chain kernel does not take goes the old way (the batch split on 2 threads)."""

import numba
import numpy as np
import pytest
import torch

import snncc.sim.events.runner as runner_mod
from snncc.sim.events import build_network, simulate
from test_sim_events import _conv_pool_conv, _grid_weights, _oracle_equal, _speck_T3
from test_sim_events_chain import _both, _equal

F64 = torch.float64


def _bias_net(stateful):
    """conv - sum pool - conv - linear on 8 x 10 maps, T = 3: a bias on the first conv (a constant
    current at every timestep's start: first-update spikes and touched neurons after t = 0) and a
    reset value on the second population."""
    g = _conv_pool_conv(5, (8, 10), (3, 4), (1.0, 1.25), (0.3, 0.5), T=3)
    g["c1"].params["bias"] = np.array([0.625, -0.25, 1.125])
    g["B"].attrs["beta"] = 0.5
    for n in ("A", "B"):
        g[n].attrs["stateful"] = stateful
    return g.infer()


@pytest.mark.parametrize("case", ["bursts", "grid_f32", "bias_stateful", "bias_reset", "caps"])
def test_speck_chain_run_equals_the_step_loop(case, monkeypatch):
    """Spike counts per neuron, output, events, SynOps, peak spikes, steps and the final membranes
    of the chain run equal the step loop's bit for bit: input counts up to 3 (a burst of spikes per
    address), a float32 run (weights on a grid), constant currents with stateful and non-stateful
    neurons (the first update fires at every timestep), and window caps (`speck_cap_D`: counters
    zeroed at every timestep)."""
    gen = torch.Generator().manual_seed(7)
    kw = {}
    if case == "bursts":
        g = _speck_T3()
        x = torch.randint(0, 4, (3, 4, 2, 16, 16), generator=gen).to(F64)
    elif case == "grid_f32":
        g = _grid_weights(_conv_pool_conv(3, (10, 12), (16, 32), (1.0, 1.5), (0.1, 0.3), T=3))
        x = torch.poisson(torch.full((3, 4, 2, 10, 12), 0.2), generator=gen).to(F64)
    elif case == "caps":
        g = _conv_pool_conv(4, (10, 12), (6, 8), (1.0, 1.5), (0.3, 0.5), T=3)
        x = torch.poisson(torch.full((3, 5, 2, 10, 12), 0.5), generator=gen).to(F64)
        kw = {"speck_cap_D": True}
    else:
        g = _bias_net(case == "bias_stateful")
        x = torch.poisson(torch.full((3, 4, 2, 8, 10), 0.2), generator=gen).clamp(max=3).to(F64)
    net = build_network(g)
    (fast, fv, f32), (slow, sv, s32) = _both(net, x, monkeypatch, "speck", **kw)
    _equal(fast, slow)
    assert f32 == s32 and f32 == (case == "grid_f32")
    assert np.array_equal(fv, sv)
    for k, c in slow.counts.items():
        assert int(c.sum()) > 10, k  # every population fires
    if case == "caps":  # a cap binds: the same run without caps fires more
        free = simulate(net, x, "speck")
        assert sum(int(c.sum()) for c in free.counts.values()) > sum(int(c.sum()) for c in slow.counts.values())


def test_speck_chain_run_equals_the_per_event_oracle(monkeypatch):
    """The chain run against the per-event oracle (one Python update per event and synapse) on
    the biased network: everything it reports, bit for bit."""
    calls = []
    real = runner_mod._run_speck_chain
    monkeypatch.setattr(runner_mod, "_run_speck_chain", lambda *a: (calls.append(1), real(*a))[1])
    gen = torch.Generator().manual_seed(8)
    x = torch.poisson(torch.full((2, 3, 2, 8, 10), 0.3), generator=gen).clamp(max=2).to(F64)
    g = _bias_net(True)
    g.T = 2
    slow = _oracle_equal(g, x, "speck", "layer", 0, monkeypatch=monkeypatch)
    assert calls and int(slow.counts["B"].sum()) > 5


def test_a_float32_run_off_the_grid_stops_taking_samples_and_runs_again_in_float64(monkeypatch):
    """Sample 2 of a grid-weight network gets 150 spikes per address at every timestep: membranes
    clip at their lower bound (off the float32 grid). On 1 thread the float32 chain run takes that
    sample first (the most input entries), flags it and takes no other; the run is done again in
    float64, whose own flag (the same clipped membranes) stops nothing: every sample is run. The
    results equal the step loop's and a float64 run's; then an on-grid batch on the same network
    (its scratch reused after the stopped run) stays in float32 and equals its float64 run."""
    from snncc.sim.events import kernels

    g = _grid_weights(_conv_pool_conv(3, (10, 12), (16, 32), (1.0, 1.5), (0.1, 0.3), T=3))
    gen = torch.Generator().manual_seed(3)
    x = torch.poisson(torch.full((3, 4, 2, 10, 12), 0.2), generator=gen).to(F64)
    x[:, 2] = 150.0
    net = build_network(g)
    real, calls = kernels._speck_chain, []

    def spy(take, *a):  # (samples taken, membranes' type, flag) after each call
        real(take, *a)
        calls.append((int(take[0]), a[9].dtype, float(a[-2][1])))

    monkeypatch.setattr(kernels, "_speck_chain", spy)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        (fast, _, f32), (slow, _, _) = _both(net, x, monkeypatch, "speck")
        assert calls == [(1, np.float32, 1.0), (5, np.float64, 1.0)] and not f32
        _equal(fast, slow)
        _equal(fast, runner_mod._simulate(net, x, "speck", f32=False)[0])
        assert int(fast.counts["A"][2].sum()) > 100 and all(int(fast.counts["A"][b].sum()) > 0 for b in (0, 1, 3))
        calls.clear()
        y = torch.poisson(torch.full((3, 4, 2, 10, 12), 0.2), generator=gen).to(F64)
        r32, run32 = runner_mod._simulate(net, y, "speck")
        assert calls == [(5, np.float32, 0.0)] and run32.cl.f32
        _equal(r32, runner_mod._simulate(net, y, "speck", f32=False)[0])
    finally:
        numba.set_num_threads(before)


def test_speck_chain_on_two_threads_is_one_run_equal_to_one_thread(monkeypatch):
    """With 2 numba threads a chain network's speck run is one run whose samples go to the threads
    (`_run_speck_chain`), not the batch split: the same result as on one thread. A speck run the
    chain kernel does not take (a lower bound above the threshold: no channel-last run) is the
    batch split, equal to one thread too."""
    gen = torch.Generator().manual_seed(9)
    g = _speck_T3()
    x = torch.randint(0, 3, (3, 5, 2, 16, 16), generator=gen).to(F64)
    net = build_network(g)
    before = numba.get_num_threads()
    try:
        for v_min, chain in ((None, True), (2.0, False)):
            kw = {} if v_min is None else {"v_min": v_min}
            numba.set_num_threads(1)
            one = simulate(net, x, "speck", **kw)
            numba.set_num_threads(2)
            seen = {"chain": 0, "split": 0}
            with monkeypatch.context() as m:
                rc, sp = runner_mod._run_speck_chain, runner_mod._simulate_split
                m.setattr(runner_mod, "_run_speck_chain",
                          lambda *a: (seen.__setitem__("chain", seen["chain"] + 1), rc(*a))[1])
                m.setattr(runner_mod, "_simulate_split",
                          lambda *a: (seen.__setitem__("split", seen["split"] + 1), sp(*a))[1])
                two = simulate(net, x, "speck", **kw)
            assert (seen["chain"] > 0, seen["split"]) == ((True, 0) if chain else (False, 1)), (v_min, seen)
            _equal(two, one)
            assert sum(int(c.sum()) for c in one.counts.values()) > 100
    finally:
        numba.set_num_threads(before)


def test_batch_split_reports_the_whole_batchs_steps():
    """A batch split's steps are the whole batch's (the union of its parts' (timestep, source)
    steps), not the longest part's. By hand, greedy on n = (2.5 x0 + 0.6 x1, 3.7 x0), stateful:
    sample 0 gets x0 at t0 (steps: input, n); sample 1 gets x1 at t0 and t1 (t0: input; t1: input,
    and n fires 1.2). Alone they take 2 and 3 steps; the batch 4 (t0: input, n; t1: input, n), on
    one thread and split over two."""
    from test_sim_events import _hand_graph

    g = _hand_graph([[2.5, 0.6], [3.7, 0.0]], stateful=True)
    g.T = 3
    x = torch.zeros(3, 2, 2, dtype=F64)
    x[0, 0, 0] = x[0, 1, 1] = x[1, 1, 1] = 1.0
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        alone = [simulate(g, x[:, b:b + 1], "greedy").steps for b in range(2)]
        one = simulate(g, x, "greedy")
        numba.set_num_threads(2)
        two = simulate(g, x, "greedy")
    finally:
        numba.set_num_threads(before)
    assert alone == [2, 3] and one.steps == two.steps == 4
    assert one.counts["n"].tolist() == two.counts["n"].tolist() == [[2.0, 3.0], [1.0, 0.0]]
