"""Synchronous T x D simulator (snncc.sim.sync): exact schedule bit-exact against the reference
executor on deployed nets, spike trains by hand, streaming departures from the integer model,
incremental spike products, stateful multi-timestep graphs."""

import numpy as np
import pytest
import torch

from nets import Attention, ConvChain, ResidualSepConv, randomize_bn
from snncc.errors import SnnccError
from snncc.frontend.loader import LoadedModel, trace
from snncc.ir import Graph, Node
from snncc.passes.manager import run_pipeline
from snncc.sim.reference import run
from snncc.sim.sync import levels, simulate
from snncc.sim.tally import compare_streaming

F64 = torch.float64


def deployed(model):
    randomize_bn(model)
    return run_pipeline(trace(LoadedModel(model.eval(), None, tuple(model.input_shape))), "deploy").graph


NETS = [("convchain", lambda: ConvChain()), ("residual", lambda: ResidualSepConv()),
        ("attn_left", lambda: Attention(order="left", scale=1.0)),
        ("attn_right", lambda: Attention(order="right", scale=1.0))]


def net_batch(make, B: int):
    """A seeded test net deployed, a batch of B inputs and the reference run on it."""
    torch.manual_seed(0)
    m = make()
    g = deployed(m)
    x = torch.randn(B, *m.input_shape, dtype=F64) * 2
    return g, x, run(g, x)


@pytest.mark.parametrize("name,make", NETS, ids=[n for n, _ in NETS])
def test_exact_schedule_equals_reference_bit_exact(name, make):
    g, x, ref = net_batch(make, 16)
    for acc in ("window", "substep"):
        r = simulate(g, x, schedule="exact", accumulate=acc)
        assert set(r.counts) == set(ref.counts)
        for k in ref.counts:
            assert torch.equal(r.counts[k], ref.counts[k]), (acc, k)
        if acc == "window":
            assert torch.equal(r.output, ref.output)
        else:
            torch.testing.assert_close(r.output, ref.output, rtol=0, atol=1e-12)
    total = sum(int(c.sum()) for c in ref.counts.values())
    assert total > 0
    for n in g.neurons():  # every population of the test nets spikes (attention threshold included)
        assert int(ref.counts[n.name].sum()) > 0, n.name
    # latency: D per population on the longest path plus the input window
    depth = max(levels(g)[n.name] for n in g.neurons())
    assert r.latency_substeps == 4 * (depth + 1) == r.nsfr.shape[0]
    # NSFR sums to all spikes / (batch * neurons)
    n_neurons = sum(int(np.prod(n.shape)) for n in g.neurons())
    assert float(r.nsfr.sum()) == pytest.approx(total / (16 * n_neurons))
    # exact schedule: population at level L fires only in window L
    pop = g.neurons()[-1].name
    r = simulate(g, x, record=(pop,))
    tr = r.trains[pop]
    L = r.levels[pop]
    assert tr.shape == (r.latency_substeps, 16) + g[pop].shape
    assert torch.equal(tr.sum(0), ref.counts[pop])
    assert float(tr[: 4 * L].abs().sum()) == 0 and float(tr[4 * (L + 1):].abs().sum()) == 0
    # bursts occupy the first n sub-steps of the window: trains are non-increasing in time
    w = tr[4 * L: 4 * (L + 1)]
    assert bool((w[1:] <= w[:-1]).all())


def test_exact_float32_matches_float32_reference():
    torch.manual_seed(1)
    m = ConvChain()
    g = deployed(m)
    x = torch.randn(8, *m.input_shape) * 2
    ref = run(g, x, torch.float32)
    r = simulate(g, x, dtype=torch.float32)
    assert r.output.dtype == torch.float32
    assert torch.equal(r.output, ref.output)
    assert all(torch.equal(r.counts[k], ref.counts[k]) for k in ref.counts)


def one_neuron(D=4, **attrs):
    return Graph([Node("x", "input", [], {"shape": (1,)}),
                  Node("f", "fire", ["x"], {"D": D, "rounding": "floor", **attrs}),
                  Node("o", "output", ["f"])]).infer()


def test_single_neuron_spike_trains_by_hand():
    g = one_neuron()
    x = torch.tensor([[2.7]], dtype=F64)
    # exact: window 0 integrates, window 1 carries floor(2.7) = 2 spikes in its first 2 sub-steps
    r = simulate(g, x, record=("f",))
    assert r.trains["f"][:, 0, 0].tolist() == [0, 0, 0, 0, 1, 1, 0, 0]
    assert r.nsfr.tolist() == [0, 0, 0, 0, 1, 1, 0, 0]
    assert r.latency_substeps == 8 and r.output.tolist() == [[2.0]]
    # streaming, input spread as 0.675 per sub-step from sub-step 1: v = .675, 1.35*, 1.025*, .7
    r = simulate(g, x, schedule="streaming", record=("f",))
    assert r.trains["f"][:, 0, 0].tolist() == [0, 0, 1, 1, 0]
    assert r.latency_substeps == 5 and r.counts["f"].tolist() == [[2.0]]
    # streaming, whole input at the window start: spikes right away
    r = simulate(g, x, schedule="streaming", input_mode="start", record=("f",))
    assert r.trains["f"][:, 0, 0].tolist() == [0, 1, 1, 0, 0]
    # at most D spikes per window, constant current and beta
    g = one_neuron(theta=0.5, beta=0.25)
    g["f"].params["bias"] = np.array([0.5])
    x = torch.tensor([[9.0], [0.1], [-3.0]], dtype=F64)
    for sched in ("exact", "streaming"):
        r = simulate(g, x, schedule=sched)
        assert r.counts["f"][:, 0].tolist() == [4, 1, 0]  # floor(9.75/.5)->4, floor(.85/.5)=1, <0 -> 0
        assert r.counts["f"][:, 0].tolist() == run(g, x).counts["f"][:, 0].tolist()


def spike_linear_graph():
    # two spike inputs a, b; neuron 0 sees 2a - b, neuron 1 sees b / 4
    return Graph([Node("x", "input", [], {"shape": (2,), "kind": "spike"}),
                  Node("w", "linear", ["x"], params={"weight": np.array([[2.0, -1.0], [0.0, 0.25]])}),
                  Node("n", "fire", ["w"], {"D": 4, "rounding": "floor"}),
                  Node("o", "output", ["n"])]).infer()


def test_streaming_cannot_take_back_early_spikes():
    g = spike_linear_graph()
    x = torch.tensor([[2.0, 4.0], [0.0, 0.0]], dtype=F64)
    # a = 2 spikes at sub-steps 0,1; b = 4 spikes at 0..3. Neuron 0 current per sub-step 1, 1, -1, -1:
    # integer model floor(0) = 0 spikes, streaming fires twice before the negative input arrives.
    ref = run(g, x)
    assert ref.counts["n"].tolist() == [[0, 1], [0, 0]]
    ex = simulate(g, x, schedule="exact")
    assert torch.equal(ex.counts["n"], ref.counts["n"])
    st = simulate(g, x, schedule="streaming", record=("n", "x"))
    assert st.counts["n"].tolist() == [[2, 1], [0, 0]]
    assert st.trains["x"][:, 0].tolist() == [[1, 1], [1, 1], [0, 1], [0, 1], [0, 0]]
    assert st.trains["n"][:, 0].tolist() == [[0, 0], [1, 0], [1, 0], [0, 0], [0, 1]]
    rep = compare_streaming(g, x)
    (p,) = rep.populations
    assert (p.population, p.neurons, p.differing, p.mean_abs_error) == ("n", 2, 1, 0.5)
    assert (p.integer_spikes, p.streaming_spikes) == (1, 3)
    # sample 0: integer output [0, 1] -> class 1, streaming [2, 1] -> class 0; sample 1 agrees
    assert rep.prediction_agreement == 0.5 and rep.output_max_abs_diff == 2.0
    assert rep.total_differing == 1
    assert (rep.latency_exact, rep.latency_streaming) == (8, 5)
    t = rep.table()
    assert "prediction agreement 0.5000" in t and t.splitlines()[1].split() == ["n", "4", "1", "0.5000", "1", "3"]


def skip_graph(relay: bool = False):
    """a = fire(x), b = fire(a), c = fire(a - b / 2): c reads a over a level-skipping projection
    (fan-in form), or through a relay of a's projection (relay form): c is at level 3 either way."""
    w = lambda v: {"weight": np.array([[v]])}  # noqa: E731
    fire = {"D": 4, "rounding": "floor"}
    skip = ([Node("pa", "linear", ["a"], params=w(1.0)), Node("r", "relay", ["pa"], {"D": 4})] if relay
            else [Node("pa", "linear", ["a"], params=w(1.0))])
    return Graph([Node("x", "input", [], {"shape": (1,)}),
                  Node("a", "fire", ["x"], fire),
                  Node("ab", "linear", ["a"], params=w(1.0)),
                  Node("b", "fire", ["ab"], fire),
                  *skip,
                  Node("bc", "linear", ["b"], params=w(-0.5)),
                  Node("s", "add", ["r" if relay else "pa", "bc"]),
                  Node("c", "fire", ["s"], fire),
                  Node("o", "output", ["c"])], T=2).infer()


@pytest.mark.parametrize("relay", [False, True], ids=["fanin", "relay"])
def test_streaming_aligns_level_skipping_inputs_by_hand(relay):
    """The streaming timeline on a graph with a level-skipping input, two timesteps, by hand: each
    hop costs one sub-step, the skip projection (or relay) delays a's spikes so that c's window
    sub-step j sees a and b of their own window sub-step j, and window t of a level-L population is
    global sub-steps [4t + L, 4t + L + 4). A skip read one sub-step early/late, or a window read one
    window late, gives other trains."""
    g = skip_graph(relay)
    x = torch.tensor([[[2.0]], [[3.0]]], dtype=F64)  # (T, B, 1)
    st = simulate(g, x, schedule="streaming", record=("a", "b", "c"))
    assert st.latency_substeps == 4 * 2 + 3 and levels(g)["c"] == 3
    tr = {k: st.trains[k][:, 0, 0].tolist() for k in "abc"}
    # t=0: x/4 = .5 per sub-step: a v = .5, 1*, .5, 1* -> window [1, 5) spikes at 2, 4
    # t=1: x/4 = .75: a v = .75, 1.5*, 1.25*, 1* -> window [5, 9) spikes at 6, 7, 8
    assert tr["a"] == [0, 0, 1, 0, 1, 0, 1, 1, 1, 0, 0]
    # b copies a one sub-step later: windows [2, 6), [6, 10)
    assert tr["b"] == [0, 0, 0, 1, 0, 1, 0, 1, 1, 1, 0]
    # c, windows [3, 7) and [7, 11), current a_j - b_j / 2 per window sub-step j:
    # t=0: 0, .5, 0, .5 -> v = 0, .5, .5, 1* (global 6); t=1: 0, .5, .5, .5 -> v = 0, .5, 1*, .5 (global 9)
    assert tr["c"] == [0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0]
    # here streaming equals the integer model: a = 2, 3; b = 2, 3; c = floor(2 - 1) = 1, floor(3 - 1.5) = 1
    ref = run(g, x)
    assert st.counts["c"].tolist() == ref.counts["c"].tolist() == [[2.0]]
    assert st.output.tolist() == ref.output.tolist() == [[1.0]]


def test_spike_product_increments_by_hand():
    g = Graph([Node("x", "input", [], {"shape": (2, 2), "kind": "spike"}),
               Node("p", "spike_product", ["x", "x"]),
               Node("f", "fire", ["p"], {"D": 4, "theta": 2.0, "rounding": "floor"}),
               Node("o", "output", ["f"])]).infer()
    x = torch.tensor([[[2.0, 1.0], [0.0, 3.0]]], dtype=F64)  # x @ x = [[4, 5], [0, 9]]
    ref = run(g, x)
    assert ref.counts["f"].tolist() == [[[2, 2], [0, 4]]]
    assert torch.equal(simulate(g, x).counts["f"], ref.counts["f"])
    assert torch.equal(simulate(g, x, accumulate="substep").counts["f"], ref.counts["f"])
    # streaming: running counts give products [[1,2],[0,1]], [[4,4],[0,4]], [[4,5],[0,9]] x2, so the
    # increments are [[1,2],[0,1]], [[3,2],[0,3]], [[0,1],[0,5]], 0; neuron (1,1) reaches v = 9 only
    # at sub-step 2 and fires 3 of its 4 spikes before the window closes.
    st = simulate(g, x, schedule="streaming", record=("f",))
    tr = st.trains["f"][1:, 0]  # window of level 1 starts at sub-step 1
    assert tr[:, 0, 0].tolist() == [0, 1, 1, 0]
    assert tr[:, 0, 1].tolist() == [1, 1, 0, 0]
    assert tr[:, 1, 0].tolist() == [0, 0, 0, 0]
    assert tr[:, 1, 1].tolist() == [0, 1, 1, 1]
    assert st.counts["f"].tolist() == [[[2, 2], [0, 3]]]


def stateful_graph(T=3, seed=0):
    rng = np.random.default_rng(seed)
    return Graph([Node("x", "input", [], {"shape": (2, 5, 5), "kind": "spike"}),
                  Node("c", "conv", ["x"], {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1)},
                       {"weight": rng.normal(0, 0.4, (3, 2, 3, 3))}),
                  Node("f", "fire", ["c"], {"D": 4, "theta": 0.75, "beta": 0.375, "rounding": "floor",
                                            "stateful": True}, {"bias": rng.normal(0, 0.2, (3, 1, 1))}),
                  Node("m", "mean", ["f"], {"dims": (1, 2)}),
                  Node("h", "linear", ["m"], params={"weight": rng.normal(0, 1, (4, 3)), "bias": rng.normal(0, 1, 4)}),
                  Node("o", "output", ["h"])], T=T).infer()


def test_stateful_multi_timestep_equals_reference():
    g = stateful_graph()
    x = torch.randint(0, 5, (3, 6, 2, 5, 5), generator=torch.Generator().manual_seed(0)).to(F64)
    ref = run(g, x)
    for acc in ("window", "substep"):
        r = simulate(g, x, accumulate=acc, record=("f", "x"))
        assert torch.equal(r.counts["f"], ref.counts["f"])
        torch.testing.assert_close(r.output, ref.output, rtol=0, atol=1e-12)
        assert r.latency_substeps == 4 * (3 + 1)
        # timestep t of the input in window t, of the neuron in window t + 1
        assert torch.equal(r.trains["x"][0:4].sum(0), x[0]) and torch.equal(r.trains["x"][8:12].sum(0), x[2])
        assert float(r.trains["f"][:4].sum()) == 0
        per_t = [r.trains["f"][4 * (t + 1): 4 * (t + 2)].sum(0) for t in range(3)]
        assert torch.equal(sum(per_t), ref.counts["f"])
    assert torch.equal(simulate(g, x).output, ref.output)
    assert int(ref.counts["f"].sum()) > 0
    rep = compare_streaming(g, x)  # the report runs; streaming on T > 1 is pipelined with S = D T + depth
    assert rep.latency_streaming == 4 * 3 + 1


def test_stateful_single_neuron_by_hand():
    g = one_neuron(stateful=True)
    g.T = 3
    x = torch.tensor([[[2.5]], [[2.5]], [[0.2]]], dtype=F64)
    ref = run(g, x)  # v: 2.5 -> 2 spikes keep .5; 3.0 -> 3 keep 0; 0.2 -> 0
    assert ref.counts["f"].tolist() == [[5]]
    ex = simulate(g, x, record=("f",))
    assert ex.trains["f"][:, 0, 0].tolist() == [0] * 4 + [1, 1, 0, 0] + [1, 1, 1, 0] + [0] * 4
    assert ex.output.tolist() == ref.output.tolist() == [[5 / 3]]
    st = simulate(g, x, schedule="streaming", record=("f",))
    # spread 0.625 per sub-step: .625, 1.25*, .875, 1.5* | carry .5: 1.125*, .75, 1.375*, 1.0* | .05 x 4
    assert st.trains["f"][:, 0, 0].tolist() == [0, 0, 1, 0, 1, 1, 0, 1, 1, 0, 0, 0, 0]
    assert st.counts["f"].tolist() == [[5]]


def test_rejects_undeployed_graph_and_bad_inputs():
    g = one_neuron()
    g["f"].attrs["norm"] = 4.0
    with pytest.raises(SnnccError, match="deploy"):
        simulate(g, torch.ones(1, 1))
    with pytest.raises(SnnccError, match="counts"):
        simulate(spike_linear_graph(), torch.tensor([[0.5, 1.0]]))
    with pytest.raises(SnnccError, match="schedule"):
        simulate(one_neuron(), torch.ones(1, 1), schedule="async")
    with pytest.raises(SnnccError, match="record"):
        simulate(one_neuron(), torch.ones(1, 1), record=("o",))


def test_simulator_reused_over_batches_carries_nothing_over():
    """A `Simulator` built once runs batch after batch exactly like fresh one-shot runs (stateful
    neurons must start every batch from beta, not from the previous batch's membrane)."""
    from snncc.sim.sync import Simulator

    g = stateful_graph()
    gen = torch.Generator().manual_seed(1)
    xa, xb = (torch.randint(0, 5, (3, 4, 2, 5, 5), generator=gen).to(F64) for _ in range(2))
    sim = Simulator(g)
    for acc in ("window", "substep"):
        for x in (xa, xb, xa):
            r, fresh, ref = sim.run(x, accumulate=acc), simulate(g, x, accumulate=acc), run(g, x)
            assert torch.equal(r.counts["f"], fresh.counts["f"]) and torch.equal(r.counts["f"], ref.counts["f"])
            assert torch.equal(r.output, fresh.output) and torch.equal(r.nsfr, fresh.nsfr)


def test_nsfr_histogram_counts_spikes_per_substep_by_hand():
    """Exact schedule: a neuron with count n spikes in the first n sub-steps of its window, so the
    spikes at sub-step j of the window are the neurons with n > j."""
    g = one_neuron(D=4)
    x = torch.tensor([[0.0], [1.0], [4.0], [2.0], [3.0], [0.0]], dtype=F64)  # six samples, one neuron
    r = simulate(g, x)
    assert r.counts["f"].reshape(-1).tolist() == [0, 1, 4, 2, 3, 0]
    window = r.nsfr[r.window_start["f"]: r.window_start["f"] + 4] * 6
    assert window.tolist() == [4.0, 3.0, 2.0, 1.0]


@pytest.mark.parametrize("name,make", NETS[1:3], ids=[n for n, _ in NETS[1:3]])
def test_keep_counts_false_gives_the_same_output_nsfr_and_trains(name, make):
    """Without per-population counts (what eager returns: the output) the exact schedule frees each
    population's counts after its last reader; output, NSFR and recorded trains stay bit for bit."""
    torch.manual_seed(0)
    m = make()
    g = deployed(m)
    x = torch.randn(8, *m.input_shape, dtype=F64) * 2
    keep = g.neurons()[0].name
    full = simulate(g, x)
    lean = simulate(g, x, record=(keep,), keep_counts=False)
    assert lean.counts == {}
    assert torch.equal(lean.output, full.output) and torch.equal(lean.output, run(g, x).output)
    assert torch.equal(lean.nsfr, full.nsfr) and float(full.nsfr.sum()) > 0
    assert torch.equal(lean.trains[keep].sum(0), full.counts[keep])
    assert torch.equal(simulate(g, x, keep_counts=False).output, full.output)


def test_kept_counts_are_the_smallest_signed_integers_holding_T_times_D():
    """Counts are kept as integers 0..T*D in count_dtype(T * D) while the schedules compute in float:
    1 byte per neuron at D = 4 instead of 8, equal to the reference's float counts exactly."""
    from snncc.sim.sync import count_dtype

    assert [count_dtype(b) for b in (4, 127, 128, 32767, 32768)] == [torch.int8, torch.int8, torch.int16,
                                                                     torch.int16, torch.int32]
    g, x, ref = net_batch(ResidualSepConv, 8)
    for sched in ("exact", "streaming"):
        r = simulate(g, x, schedule=sched)
        assert {c.dtype for c in r.counts.values()} == {torch.int8}
    ex = simulate(g, x)
    for k in ref.counts:
        assert torch.equal(ex.counts[k], ref.counts[k]) and int((ex.counts[k] != ref.counts[k]).sum()) == 0, k
    # signed: the difference of two kept counts does not wrap
    st = simulate(g, x, schedule="streaming")
    k = g.neurons()[-1].name
    assert torch.equal(st.counts[k] - ex.counts[k], (st.counts[k].double() - ref.counts[k]).to(torch.int8))
    # sums over T: stateful graph, T = 3, D = 4 -> 0..12 in int8
    g3 = stateful_graph()
    x3 = torch.randint(0, 5, (3, 6, 2, 5, 5), generator=torch.Generator().manual_seed(0)).to(F64)
    r3 = simulate(g3, x3)
    assert r3.counts["f"].dtype == torch.int8 and torch.equal(r3.counts["f"], run(g3, x3).counts["f"])
    # D = 200: counts up to 200 need int16 (int8 would wrap 150 to -106)
    big = simulate(one_neuron(D=200), torch.tensor([[150.5], [250.0]], dtype=F64))
    assert big.counts["f"].dtype == torch.int16 and big.counts["f"][:, 0].tolist() == [150, 200]


def two_neurons(D1: int, D2: int):
    """x -> f1 (D1, theta 1) -> 1.5 f1 -> f2 (D2, theta 1) -> output; floor rounding."""
    return Graph([Node("x", "input", [], {"shape": (1,)}),
                  Node("f1", "fire", ["x"], {"D": D1, "rounding": "floor"}),
                  Node("w", "linear", ["f1"], params={"weight": np.array([[1.5]])}),
                  Node("f2", "fire", ["w"], {"D": D2, "rounding": "floor"}),
                  Node("o", "output", ["f2"])]).infer()


def test_mixed_D_shares_one_window_and_caps_each_population_by_hand():
    """A D = 4 population feeding a D = 1 one (an SDT-V3 detector's backbone and neck): one clock of
    4 sub-steps per window; the D = 1 population fires at most once, at its window's first sub-step."""
    g = two_neurons(4, 1)
    x = torch.tensor([[2.7], [0.4]], dtype=F64)
    # f1: floor(2.7) = 2 spikes in sub-steps 4, 5; f2: floor(1.5 * 2) = 3, capped at 1, at sub-step 8
    r = simulate(g, x, record=("f1", "f2"))
    assert r.D == 4 and r.latency_substeps == 12
    assert r.trains["f1"][:, 0, 0].tolist() == [0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0]
    assert r.trains["f2"][:, 0, 0].tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]
    assert r.counts["f2"][:, 0].tolist() == [1, 0] and r.output.tolist() == [[1.0], [0.0]]
    # the same numbers in the sub-step accumulation and equal to the reference executor
    ref = run(g, x)
    for acc in ("window", "substep"):
        ex = simulate(g, x, accumulate=acc)
        assert all(torch.equal(ex.counts[k], ref.counts[k]) for k in ref.counts)
    # streaming: 2.7 spread as 0.675 per sub-step: f1 fires at sub-steps 2 and 3 (v = 1.35, 1.025);
    # f2 sees 1.5 at sub-steps 3 and 4 and may fire once only: at sub-step 3 (v = 1.5), never again
    st = simulate(g, x, schedule="streaming", record=("f1", "f2"))
    assert st.trains["f1"][:, 0, 0].tolist() == [0, 0, 1, 1, 0, 0]
    assert st.trains["f2"][:, 0, 0].tolist() == [0, 0, 0, 1, 0, 0]
    assert st.counts["f2"][:, 0].tolist() == [1, 0]
    # a smaller D upstream: D = 1 feeding D = 4, the window is still 4 sub-steps
    g = two_neurons(1, 4)
    r = simulate(g, x, record=("f1", "f2"))
    assert r.trains["f1"][:, 0, 0].tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    assert r.counts["f2"][:, 0].tolist() == [1, 0]  # floor(1.5 * 1) = 1
    assert all(torch.equal(r.counts[k], c) for k, c in run(g, x).counts.items())


def test_mixed_D_network_equals_the_reference_bit_exact():
    """A conv chain whose populations use D = 4, 1 and 2 (the head's): the exact schedule's counts
    equal the reference executor's, neuron by neuron."""
    torch.manual_seed(0)
    m = ConvChain(head_norm=1)
    m.n2.D = m.n2.norm = 1
    m.head_fire.D = 2
    g = deployed(m)
    assert sorted({n.attrs["D"] for n in g.neurons()}) == [1, 2, 4]
    x = torch.randn(16, *m.input_shape, dtype=F64) * 2
    ref = run(g, x)
    for acc in ("window", "substep"):
        r = simulate(g, x, accumulate=acc)
        for k, c in ref.counts.items():
            assert torch.equal(r.counts[k], c), (acc, k)
        assert torch.equal(r.output, ref.output)
    assert int(ref.counts["n2"].max()) == 1 and int(ref.counts["n2"].sum()) > 10  # the D = 1 cap binds
