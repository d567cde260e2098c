"""The ideal policy's whole-run kernel for chain networks (`runner._chain_schedule`,
`kernels._ideal_chain`): which networks are chains, and a chain run equal to the step-by-step
event loop in everything it reports (counts, output, events, SynOps, peak bursts, steps) and in
its final membranes bit for bit, on 1 and 2 threads, and to the reference executor's counts."""

import numba
import numpy as np
import pytest
import torch

import snncc.sim.events.runner as runner_mod
from snncc.sim.events import build_network, simulate
from snncc.sim.reference import run
from test_sim_events import _conv_pool_conv, _hand_graph, _random_net, _speck_T3

F64 = torch.float64


def test_chain_schedule_by_hand():
    """A chain: the input completes one population, its bursts the next, the last source feeds the
    output only. A merge (two sources into one population) is none, nor a current input."""
    assert runner_mod._chain_schedule(build_network(_hand_graph([[1.0, 2.0]]))) == [("x", "n"), ("n", None)]
    g = _conv_pool_conv(1, (6, 6), (3, 4), (1.0, 1.5), (0.4, 0.5), T=2)
    assert runner_mod._chain_schedule(build_network(g)) == [("x", "A"), ("A", "B"), ("B", None)]
    assert runner_mod._chain_schedule(build_network(_random_net(0))) is None  # B adds two convs
    cur = _conv_pool_conv(1, (6, 6), (3, 4), (1.0, 1.5), (0.4, 0.5), T=2)
    cur["x"].attrs["kind"] = "current"
    assert runner_mod._chain_schedule(build_network(cur.infer())) is None
    speck = runner_mod._chain_schedule(build_network(_speck_T3()))
    assert speck is not None and speck[-1][1] is None and len(speck) == 3


def _both(net, x, monkeypatch, policy="ideal", **kw):
    """(chain run, step-loop run): (result, final membranes, flag) each, flag: the ideal run's
    membranes in q order, the speck run's in float32. The chain mode calls the chain run (a
    float32 speck run that left the grid, twice), the loop mode never. (The membranes are
    copied: the second run reuses the first one's scratch.)"""
    calls = {True: 0, False: 0}
    name = "_run_chain" if policy == "ideal" else "_run_speck_chain"
    real = getattr(runner_mod, name)
    out = []
    for chain in (True, False):
        with monkeypatch.context() as m:
            m.setattr(runner_mod, name, lambda *a, c=chain: (calls.__setitem__(c, calls[c] + 1), real(*a))[1])
            if not chain:
                m.setattr(runner_mod, "_chain_schedule", lambda net: None)
            res, run_ = runner_mod._simulate(net, x, policy, "layer", **kw)
            if policy == "ideal":
                out.append((res, run_.state.copy(), run_.q is not None))
            else:
                out.append((res, run_.cl.vq.copy(), run_.cl.f32))
    assert calls[True] >= 1 and calls[False] == 0
    return out


def _equal(a, b):
    for k in b.counts:
        assert torch.equal(a.counts[k], b.counts[k]), k
    assert torch.equal(a.output, b.output)
    assert a.events == b.events and a.synops == b.synops
    assert a.peak_burst == b.peak_burst and a.steps == b.steps


@pytest.mark.parametrize("stateful", [True, False])
def test_chain_run_equals_the_step_loop_and_the_reference(stateful, monkeypatch):
    """conv - sum pool - conv - linear on 10 x 12 maps, T = 3, B = 5: weights on the grid 2^-6, so
    a delivery is summed in float32 where its largest multiplicity allows (`RunTables.f32_exact`).
    Sample 1 is silent, timestep 1 has no input at all (every population completes without a
    delivery), and sample 3 gets multiplicities near 3e6 at timestep 2: too many quanta for
    float32, so the chain run takes float64 for that sample alone while the step loop takes it for
    the whole batch. Everything equal, the final membranes bit for bit (a float32 sum of sample
    3's events would round: 3e6 x 37/64 needs 27 bits), and the counts equal the reference's."""
    g = _conv_pool_conv(2, (10, 12), (4, 6), (1.0, 1.25), (0.4, 0.5), T=3)
    for n in g.nodes:
        if n.op == "fire":
            n.attrs["stateful"] = stateful
        if "weight" in n.params:
            n.params["weight"] = np.round(n.params["weight"] * 64) / 64
    g["c1"].params["weight"][0, 0, 1, 1] = 37 / 64
    gen = torch.Generator().manual_seed(2)
    x = torch.poisson(torch.full((3, 5, 2, 10, 12), 0.15), generator=gen).clamp(max=3).to(F64)
    x[:, 1] = 0.0
    x[1] = 0.0
    x[2, 3, 0, 4:6, 4:6] = torch.tensor([[3_000_001.0, 2_999_999.0], [3_000_003.0, 1.0]])
    net = build_network(g)
    rt = runner_mod._flat_tables(net).runs()
    assert rt.exp == 6 and not rt.f32_exact(0, 3_000_003.0) and rt.f32_exact(0, 3.0)
    (fast, fstate, fq), (slow, sstate, sq) = _both(net, x, monkeypatch)
    _equal(fast, slow)
    assert fq and sq and np.array_equal(fstate, sstate)  # both in q order, bit for bit
    ref = run(g, x)
    for k in ref.counts:
        assert torch.equal(fast.counts[k], ref.counts[k]), k
    assert int(fast.counts["A"][1].sum()) == 0 and int(fast.counts["B"].sum()) > 10
    assert fast.steps < 3 * 3  # timestep 1 had no events to deliver


def test_chain_run_on_two_threads_is_one_parallel_region_equal_to_one_thread(monkeypatch):
    """With 2 numba threads a chain network is not cut into parts (`_simulate_split`): its samples
    run on numba's threads in one call, and every result equals the 1-thread run's."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has one thread on this machine: nothing to compare")
    g = _conv_pool_conv(3, (8, 8), (4, 4), (1.0, 1.5), (0.4, 0.5), T=2)
    gen = torch.Generator().manual_seed(3)
    x = torch.poisson(torch.full((2, 7, 2, 8, 8), 0.3), generator=gen).clamp(max=3).to(F64)
    split = []
    real = runner_mod._simulate_split
    monkeypatch.setattr(runner_mod, "_simulate_split", lambda *a: (split.append(1), real(*a))[1])
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = simulate(g, x, "ideal")
        numba.set_num_threads(2)
        two = simulate(g, x, "ideal")
    finally:
        numba.set_num_threads(before)
    assert split == []
    _equal(two, one)
    assert sum(int(c.sum()) for c in one.counts.values()) > 30


@pytest.mark.parametrize("policy", ["ideal", "speck"])
def test_chain_threads_take_samples_until_none_is_left(policy, monkeypatch):
    """A chain run's threads take the samples one at a time from one counter (`kernels._take`), so a
    thread that starts late takes fewer. Here the second thread's call runs to its end before the
    first one's starts: it takes all 7 samples (on its own scratch), the first finds none left.
    The result equals the 1-thread run's; each call took what the counter says."""
    from snncc.sim.events import kernels

    g = _conv_pool_conv(3, (8, 8), (4, 4), (1.0, 1.5), (0.4, 0.5), T=2)
    gen = torch.Generator().manual_seed(4)
    x = torch.poisson(torch.full((2, 7, 2, 8, 8), 0.3), generator=gen).clamp(max=3).to(F64)
    name = "_ideal_chain" if policy == "ideal" else "_speck_chain"
    real, taken = getattr(kernels, name), []

    def spy(take, *a):  # (the counter before and after the call)
        before = int(take[0])
        real(take, *a)
        taken.append((before, int(take[0])))

    monkeypatch.setattr(kernels, name, spy)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = simulate(g, x, policy)
        numba.set_num_threads(2)
        taken.clear()
        monkeypatch.setattr(runner_mod, "_on_threads", lambda part, n: [part(i) for i in reversed(range(n))])
        two = simulate(g, x, policy)
    finally:
        numba.set_num_threads(before)
    assert taken == [(0, 8), (8, 9)]  # (each call's last take finds the end: one past it)
    _equal(two, one)
    assert sum(int(c.sum()) for c in one.counts.values()) > 30


def test_chain_take_order_is_most_input_events_first():
    """`runner._take_order`: [next, end, samples], the samples by their input events summed over the
    timesteps, most first, ties by index (first[t x B + b] starts sample b's events of timestep t)."""
    per = np.array([[3, 0, 5, 1],  # t = 0, samples 0..3
                    [1, 9, 0, 3]])  # t = 1: totals 4, 9, 5, 4
    first = np.concatenate([[0], np.cumsum(per.ravel())])
    take = runner_mod._take_order(first, 2, 4)
    assert take.dtype == np.int64 and take.tolist() == [0, 4, 1, 2, 0, 3]


@pytest.mark.parametrize("policy", ["ideal", "speck"])
def test_chain_kernels_run_the_samples_in_the_take_order(policy, monkeypatch):
    """The chain kernels run sample take[2 + i] for the i-th take: a counter that ends after two
    takes, in the order (3, 1), runs samples 3 and 1 only, each equal to the whole batch's run;
    samples 0 and 2 stay without a spike or an output."""
    g = _conv_pool_conv(3, (8, 8), (4, 4), (1.0, 1.5), (0.4, 0.5), T=2)
    gen = torch.Generator().manual_seed(5)
    x = torch.poisson(torch.full((2, 4, 2, 8, 8), 0.3), generator=gen).clamp(max=3).to(F64)
    whole = simulate(g, x, policy)
    monkeypatch.setattr(runner_mod, "_take_order", lambda first, T, B: np.array([0, 2, 3, 1, 0, 2], dtype=np.int64))
    part = simulate(g, x, policy)
    for c, want in whole.counts.items():
        assert torch.equal(part.counts[c][[3, 1]], want[[3, 1]])
        assert int(part.counts[c][[0, 2]].abs().sum()) == 0
    assert torch.equal(part.output[[3, 1]], whole.output[[3, 1]])
    assert int(part.output[[0, 2]].abs().sum()) == 0
    assert all(int(whole.counts[c][b].sum()) > 0 for c in whole.counts for b in (1, 3))


def test_chain_profile_counts_each_steps_synops_as_the_step_loop_and_its_ticks(monkeypatch):
    """The chain run's profile (`net.derived["chain_profile"]`, read by benchmarks/bench_sinabs.py's
    per-layer table): per step the synaptic ops of its deliveries, equal to the step loop's
    `deliver_ideal` counts per source summed over the run, and its cycle-counter ticks (x86:
    positive for a step with events, all steps within the whole call's ticks; elsewhere 0)."""
    from snncc.sim.events import kernels

    g = _conv_pool_conv(2, (10, 12), (4, 6), (1.0, 1.25), (0.4, 0.5), T=3)
    gen = torch.Generator().manual_seed(4)
    x = torch.poisson(torch.full((3, 4, 2, 10, 12), 0.3), generator=gen).clamp(max=3).to(F64)
    net = build_network(g)
    per_src = {}
    real = kernels.deliver_ideal

    def counted(flat, gopen, src, *a, **kw):
        r = real(flat, gopen, src, *a, **kw)  # (synops, or with a fused completion (synops, bursts))
        per_src[flat.names[src]] = per_src.get(flat.names[src], 0) + (r[0] if isinstance(r, tuple) else r)
        return r

    (fast, _, _), _ = _both(net, x, monkeypatch)
    prof = net.derived["chain_profile"]
    with monkeypatch.context() as m:
        m.setattr(runner_mod, "_chain_schedule", lambda net: None)
        m.setattr(kernels, "deliver_ideal", counted)
        slow, _ = runner_mod._simulate(net, x, "ideal", "layer")
    assert [s for s, _ in prof["steps"]] == list(net.tables) == list(per_src)
    assert [int(v) for v in prof["synops"]] == [per_src[s] for s, _ in prof["steps"]]
    assert sum(per_src.values()) == fast.synops == slow.synops > 1000
    ticks, total = prof["ticks"], prof["total"]
    if kernels._CYCLE_COUNTER:
        assert (ticks > 0).all() and ticks.sum() <= total
    else:
        assert not ticks.any() and total == 0


def test_chain_run_with_biases_and_a_reset_value_equals_the_step_loop(monkeypatch):
    """The chain run's first timestep sets every membrane to beta + const at once (`init0`, not a
    per-slot reset): with a bias on the first conv (a constant current every timestep: its
    population starts dirty) and a nonzero reset value on the second population, the chain run
    equals the step loop bit for bit and the reference executor's counts."""
    g = _conv_pool_conv(5, (8, 10), (3, 4), (1.0, 1.25), (0.3, 0.5), T=3)
    g["c1"].params["bias"] = np.array([0.375, -0.25, 0.125])
    g["B"].attrs["beta"] = 0.5
    g = g.infer()
    gen = torch.Generator().manual_seed(6)
    x = torch.poisson(torch.full((3, 4, 2, 8, 10), 0.2), generator=gen).clamp(max=3).to(F64)
    net = build_network(g)
    assert net.const.any() and net.beta.any()
    (fast, fstate, fq), (slow, sstate, sq) = _both(net, x, monkeypatch)
    _equal(fast, slow)
    assert fq and sq and np.array_equal(fstate, sstate)
    ref = run(g, x)
    for k in ref.counts:
        assert torch.equal(fast.counts[k], ref.counts[k]), k
    assert int(fast.counts["A"].sum()) > 10 and int(fast.counts["B"].sum()) > 10



def test_chain_run_counts_in_float32_only_where_every_count_is_exact(monkeypatch):
    """A chain run keeps its spike counts in float32 (`runner._run_chain`) where T x D < 2^24: a
    neuron fires at most D spikes per timestep, so every partial count is an exact float32 integer.
    At T = 513, D = 32768 a neuron can pass 2^24, and the counts are float64: here it fires 32768
    spikes at each of 512 timesteps and one more at the last, 2^24 + 1 (a float32 count would
    round it to 2^24); equal to the step loop's and the reference's."""
    from snncc.sim.events import kernels

    dtypes = []
    real = kernels._ideal_chain
    monkeypatch.setattr(kernels, "_ideal_chain", lambda *a: (dtypes.append(a[12].dtype.name), real(*a))[1])
    g = _hand_graph([[32768.0, 1.0]], D=32768)
    g.T = 513
    x = torch.zeros((513, 2, 2), dtype=F64)  # (T, B, inputs)
    x[:512, 0, 0] = 1.0
    x[512, 0, 1] = 1.0
    x[:3, 1, 1] = 2.0
    net = build_network(g)
    (fast, _, _), (slow, _, _) = _both(net, x, monkeypatch)
    assert set(dtypes) == {"float64"}  # (one call per thread)
    assert fast.counts["n"].flatten().tolist() == [2 ** 24 + 1, 6]
    _equal(fast, slow)
    assert torch.equal(fast.counts["n"], run(g, x).counts["n"])
    dtypes.clear()
    g.T = 3
    small = simulate(build_network(g), x[:3], "ideal")  # 3 x 32768 < 2^24
    assert set(dtypes) == {"float32"} and small.counts["n"].flatten().tolist() == [3 * 32768, 6]


def test_chain_input_read_in_every_layout_equals_numpy_and_refuses_bad_counts():
    """A chain run reads its whole input at once (`runner._spike_inputs`: `kernels.input_rows_view`,
    `input_rows_count`, `input_rows_fill`, rows split over threads): for (T, B, ...) tensors, the
    (B*T, ...) frames of a sinabs batch viewed as (T, B, ...), one static (B, ...) frame fed at
    every timestep (stride 0 between timesteps), float32 or float64, and timesteps in separate
    buffers (copied), the rows, counts and per-(timestep, sample) starts equal numpy's nonzero
    entries in (t, b, address) order (rows of 70 entries: one 64-entry vector compare and 6 read
    one by one); a count that is not a finite non-negative integer is refused in either part."""
    from snncc.errors import SnnccError
    from snncc.sim.events import kernels

    gen = torch.Generator().manual_seed(7)
    T, B, shape = 3, 4, (2, 5, 7)
    x = torch.poisson(torch.full((T, B) + shape, 0.3), generator=gen)
    frames = x.transpose(0, 1).reshape((B * T,) + shape).clone()  # sinabs: sample-major frames
    cases = {"TB": list(x), "TB f64": list(x.double()), "B*T": list(frames.reshape((B, T) + shape).transpose(0, 1)),
             "static": [x[0]] * T, "separate": [xt.clone() for xt in x]}
    inp = _conv_pool_conv(2, shape[1:], (3, 4), (1.0, 1.25), (0.4, 0.5), T=T).inputs[0]
    for name, xs in cases.items():
        dense = np.stack([xt.numpy().reshape(B, -1) for xt in xs])  # (T, B, n)
        rows, m, first = runner_mod._spike_inputs(inp, xs, 100)
        t_, b_, a_ = np.nonzero(dense)
        assert np.array_equal(rows, a_ + 100) and np.array_equal(m, dense[t_, b_, a_]), name
        assert np.array_equal(first, np.concatenate([[0], np.cumsum((dense != 0).sum(axis=2).ravel())])), name
        flat, st, sb, n = kernels.input_rows_view([xt.numpy() for xt in xs], name != "separate")
        assert n == 70 and np.shares_memory(flat, xs[0].numpy()) == (name != "separate"), name  # a view, or a copy
    assert runner_mod._spike_inputs(inp, cases["static"], 0)[2][-1] == T * int((x[0] != 0).sum())
    for bad in (0.5, -1.0, float("inf"), float("nan")):
        for at in ((2, 3, 1, 4, 6), (2, 3, 0, 1, 1)):  # address 69, past the row's 64-entry vector, and 8, in it
            y = x.clone()
            y[at] = bad
            with pytest.raises(SnnccError, match="non-negative integer counts"):
                runner_mod._spike_inputs(inp, list(y), 0)


def test_chain_synops_from_the_patterns_equal_the_tables_and_the_fallback(monkeypatch):
    """`RunTables.patsyn`: the synapses of each address pattern, from which `_runs_sample` counts a
    chain step's synaptic ops (no `indptr` read per event), equal the table's synapses of every
    address with that pattern; a chain run counts the same SynOps with it as without it (None:
    counted from `indptr`, as where a gap-filled run hides a difference) and as the step loop. With
    them, every later step's source has its rows in q order (`pat_q`, `base_q`: its bursts' order)."""
    g = _conv_pool_conv(2, (10, 12), (4, 6), (1.0, 1.25), (0.4, 0.5), T=3)
    gen = torch.Generator().manual_seed(8)
    x = torch.poisson(torch.full((3, 4, 2, 10, 12), 0.3), generator=gen).clamp(max=3).to(F64)
    net = build_network(g)
    rt = runner_mod._flat_tables(net).runs()
    assert rt.patsyn is not None and np.array_equal(rt.patsyn[rt.pat], np.diff(runner_mod._flat_tables(net).indptr))
    assert len(set(rt.patsyn.tolist())) > 3  # edges and interior: patterns of different sizes
    (fast, _, _), (slow, _, _) = _both(net, x, monkeypatch)
    _equal(fast, slow)
    # the later steps' sources' rows in q order (their bursts are q-ordered): a permutation of them
    pat, base, *_, pat_q, base_q, qrows = net.derived["ideal_chain_arrays"][0]
    assert qrows and not np.array_equal(pat_q, pat) and sorted(base_q.tolist()) == sorted(base.tolist())
    net2 = build_network(g)
    rt2 = runner_mod._flat_tables(net2).runs()
    monkeypatch.setattr(rt2, "patsyn", None)
    by_indptr = simulate(net2, x, "ideal")
    _equal(by_indptr, fast)
    assert fast.synops > 1000 and not net2.derived["ideal_chain_arrays"][0][-1]  # (no q rows without patsyn)


@pytest.mark.parametrize("policy", ["ideal", "speck"])
def test_an_empty_batch_is_refused_in_one_line(policy):
    """A batch of no sample, (T, 0, ...) or (0, ...), is refused with one line naming the inputs (it
    ended in a numpy reshape error, on any schedule)."""
    from snncc.errors import SnnccError

    g = _conv_pool_conv(2, (10, 12), (4, 6), (1.0, 1.25), (0.4, 0.5), T=3)
    for x in (torch.zeros((3, 0, 2, 10, 12), dtype=F64), torch.zeros((0, 2, 10, 12), dtype=F64)):
        with pytest.raises(SnnccError, match="inputs: the input batch holds no sample"):
            simulate(g, x, policy)
