"""Event recordings (snncc.sim.event_streams): tonic-style x, y, t, p arrays read and validated
(one LoadError naming file and field), binned to (T, 2, H, W), and the asynchronous simulation
fed in time order with its real-time account checked against timing computed by hand."""

import numpy as np
import pytest
import torch

from snncc.errors import LoadError, SnnccError
from snncc.ir import Graph, Node
from snncc.sim.event_streams import (EVENT_DTYPE, bin_counts, dense_to_stream, read_events, simulate_stream,
                                     validate, write_events)
from snncc.sim.events import simulate


def _arr(rows, dtype=EVENT_DTYPE):
    a = np.zeros(len(rows), dtype=dtype)
    for i, r in enumerate(rows):
        a[i] = r
    return a


# (x, y, t, p): all ON at y = 0 on a 2 x 1 sensor, t in microseconds
HAND = [(0, 0, 0, 1), (1, 0, 1, 1), (0, 0, 2, 1), (1, 0, 10, 1)]


def test_read_write_npz_npy_roundtrip_and_binning(tmp_path):
    a = _arr([(1, 2, 0, 1), (0, 0, 5, 0), (3, 1, 5, 1), (1, 2, 1999, 1), (2, 2, 2000, 0)])
    write_events(tmp_path / "rec.npz", [a, a[:2]], labels=[3, 1])
    streams, labels = read_events(tmp_path / "rec.npz", (4, 3))
    assert labels.tolist() == [3, 1] and [len(s) for s in streams] == [5, 2]
    np.save(tmp_path / "one.npy", a)
    (s,), none = read_events(tmp_path / "one.npy", (4, 3, 2))
    assert none is None and s.sensor_size == (4, 3)
    with pytest.raises(SnnccError, match="event 4 at t = 2000 us is after the 2 bins of 1000 us"):
        bin_counts(s, T=2, bin_us=1000)
    # bins of 1 ms: t 0, 5, 5 in bin 0, 1999 in bin 1, 2000 in bin 2; channel 0 ON, 1 OFF
    c = bin_counts(s, T=3, bin_us=1000)
    assert c.shape == (3, 2, 3, 4)
    assert c[0, 0, 2, 1] == 1 and c[0, 1, 0, 0] == 1 and c[0, 0, 1, 3] == 1 and c[0].sum() == 3
    assert c[1, 0, 2, 1] == 1 and c[1].sum() == 1 and c[2, 1, 2, 2] == 1 and c.sum() == 5
    # without bin_us: t_start..last event cut into T equal bins, the last event in the last bin
    assert bin_counts(s, T=2).reshape(2, -1).sum(1).tolist() == [3, 2]  # bins [0, 1000), [1000, 2000]


def test_dense_to_stream_gives_the_counts_back(tmp_path):
    rng = np.random.default_rng(0)
    counts = rng.poisson(0.3, (4, 2, 5, 6))
    s = dense_to_stream(counts, bin_us=1000)
    assert np.all(np.diff(s.t) >= 0) and s.t.max() < 4000
    write_events(tmp_path / "d.npz", [s], labels=[7])
    (r,), lab = read_events(tmp_path / "d.npz", (6, 5))
    assert lab.tolist() == [7]
    np.testing.assert_array_equal(bin_counts(r, 4, bin_us=1000), counts)


@pytest.mark.parametrize("rows,dtype,field,match", [
    ([(0, 0, 0, 1)], [("x", "<i2"), ("y", "<i2"), ("ts", "<i8"), ("p", "<i1")], "t", "missing field 't'"),
    ([(-1, 0, 0, 1)], EVENT_DTYPE, "x", "negative coordinate -1 at event 0"),
    ([(0, 0, 0, 1), (0, 3, 1, 1)], EVENT_DTYPE, "y", "coordinate 3 at event 1 is outside the sensor height 3"),
    ([(4, 0, 0, 1)], EVENT_DTYPE, "x", "outside the sensor width 4"),
    ([(0, 0, 5, 1), (0, 0, 4, 1)], EVENT_DTYPE, "t", "not sorted: t = 4 at event 1 after 5"),
    ([(0, 0, 0.0, 1), (0, 0, np.nan, 1)], [("x", "<i2"), ("y", "<i2"), ("t", "<f8"), ("p", "<i1")], "t",
     "timestamp nan at event 1"),
    ([(0, 0, 0, 2)], EVENT_DTYPE, "p", "polarity 2 at event 0"),
])
def test_bad_recordings_name_file_and_field(tmp_path, rows, dtype, field, match):
    path = tmp_path / "bad.npz"
    write_events(path, [_arr(rows, np.dtype(dtype))])
    with pytest.raises(LoadError, match=match) as e:
        read_events(path, (4, 3))
    assert e.value.where == f"{path}[events_00000], field {field}"
    assert str(path) in str(e.value)


def test_not_a_recording(tmp_path):
    np.save(tmp_path / "dense.npy", np.zeros((3, 4)))
    with pytest.raises(LoadError, match="not a structured array") as e:
        read_events(tmp_path / "dense.npy", (4, 3))
    assert e.value.where == str(tmp_path / "dense.npy")
    with pytest.raises(LoadError, match="not found"):
        read_events(tmp_path / "missing.npz", (4, 3))


def _two_neuron_graph():
    """2 x 1 sensor, both polarities -> reshape (4,) -> linear (2, 4) -> fire (theta 1) -> output."""
    w = np.array([[0.6] * 4, [0.35] * 4])
    g = Graph([Node("x", "input", attrs={"kind": "spike", "shape": (2, 1, 2)}),
               Node("flat", "reshape", ["x"], attrs={"shape": (4,)}),
               Node("lin", "linear", ["flat"], params={"weight": w}),
               Node("n", "fire", ["lin"], attrs={"D": 4, "theta": 1.0, "beta": 0.0, "norm": 1.0,
                                                 "rounding": "floor", "stateful": False}),
               Node("out", "output", ["n"])])
    return g.infer()


def test_stream_timing_by_hand():
    """Speck policy, per-event time 1 us. Neuron A (w 0.6) and B (w 0.35) get every event.
    core n: e1 [0, 1]; e2 [1, 2] A fires (0.6 + 0.6); e3 [2, 3] B fires (3 x 0.35); e4 [10, 11] A
    fires (0.2 + 0.6 + 0.6). readout core: A's spike arrives 2 -> [2, 3], B's 3 -> [3, 4], A's 11 ->
    [11, 12]. Latencies: e1 1, e2 3 - 1 = 2, e3 4 - 2 = 2, e4 12 - 10 = 2. Readout: A after 3,
    tie after 4, A = 2 > B = 1 after 12: decision A, settled at 12."""
    g = _two_neuron_graph()
    s = validate(_arr(HAND), (2, 1))
    r = simulate_stream(g, s, T=1)
    assert r.event_time_us == 1.0 and "assumed" in r.sources["substep_time"]
    assert r.latency_us.tolist() == [1.0, 2.0, 2.0, 2.0]
    assert r.decision == 0 and r.settle_us == 12.0 and r.done_us == 12.0
    assert r.result.counts["n"].reshape(-1).tolist() == [2.0, 1.0]
    assert r.duration_us == 10.0
    # the same counts as the simulator on the binned input in this order
    same = simulate(g, torch.from_numpy(bin_counts(s, 1)).unsqueeze(1), "speck")
    assert torch.equal(same.counts["n"], r.result.counts["n"])
    # SynOps per core: n gets 4 events x 2 synapses, the readout 3 spikes x 1
    loads = {c.core: c for c in r.cores}
    assert loads["n"].synops == 8 and loads["out"].synops == 3
    # windows of 5 us: n gets e1-e3 (6 SynOps) in [0, 5), e4 (2) in [10, 15)
    r5 = simulate_stream(g, s, T=1, window_us=5.0, synops_limit=1.0e6)
    n5 = {c.core: c for c in r5.cores}["n"]
    assert n5.rates.tolist() == pytest.approx([6 / 5e-6, 0.0, 2 / 5e-6])
    assert n5.stalls == [0.0]  # 1.2e6 SynOps/s > 1e6 in [0, 5); 4e5 in [10, 15) is fine
    # average power: 0.42 mW static + 23.6 pJ x 11 SynOps / 10 us
    assert r.synops_per_s == pytest.approx(11 / 10e-6)
    assert r.power_w == pytest.approx(0.42e-3 + 23.6e-12 * 11 / 10e-6)
    # a slower chip: 3 us per event queues e2 and e3 behind e1
    r3 = simulate_stream(g, s, T=1, event_time_us=3.0)
    # n: e1 [0, 3], e2 [3, 6] A, e3 [6, 9] B, e4 [10, 13] A; readout: [6, 9], [9, 12], [13, 16]
    assert r3.latency_us.tolist() == [3.0, 8.0, 10.0, 6.0] and r3.done_us == 16.0 and r3.settle_us == 16.0
    assert "ON" not in r.table() and "latency" in r.table()


def test_run_recordings_summary(tmp_path):
    """Two copies of the hand stream, labelled 0 and 1: the summary over all 8 input events."""
    from snncc.sim.event_streams import run_recordings

    path = write_events(tmp_path / "two.npz", [_arr(HAND), _arr(HAND)], labels=[0, 1])
    res, text = run_recordings(_two_neuron_graph(), path, T=1)
    assert [r.latency_us.tolist() for r in res] == [[1.0, 2.0, 2.0, 2.0]] * 2
    assert text == ("2 recordings, 8 input events; latency median 2 us, p95 2 us, max 2 us; decision settled at "
                    "median 12 us; 0 recording(s) with a core above 1e+08 SynOps/s (stall); average power "
                    f"{(0.42e-3 + 23.6e-12 * 11 / 10e-6) * 1e3:.3f} mW; accuracy 50.00%")


def _two_layer_graph():
    """2 x 1 sensor -> linear (3, 4), bias 1 on neuron 2 (it fires in every timestep's first
    update) -> fire (theta 1, stateful) -> linear (2, 3) read as currents by the output (the
    Speck membrane readout's shape)."""
    w1 = np.array([[0.6, 0.3, 0.5, 0.2], [0.35, 0.7, 0.25, 0.4], [0.0, 0.0, 0.0, 0.0]])
    w2 = np.array([[0.5, -0.25, 0.125], [-0.375, 0.75, 0.25]])
    g = Graph([Node("x", "input", attrs={"kind": "spike", "shape": (2, 1, 2)}),
               Node("flat", "reshape", ["x"], attrs={"shape": (4,)}),
               Node("lin", "linear", ["flat"], params={"weight": w1, "bias": np.array([0.0, 0.0, 1.0])}),
               Node("n", "fire", ["lin"], attrs={"D": 4, "theta": 1.0, "beta": 0.0, "norm": 1.0,
                                                 "rounding": "floor", "stateful": True}),
               Node("lin2", "linear", ["n"], params={"weight": w2}),
               Node("out", "output", ["lin2"])], T=3)
    return g.infer()


def _slow_stream(g, s, T, bin_us, tau, window_us):
    """The real-time model of snncc.sim.event_streams event by event, from the simulator's trace of
    the same run: every core a first-come-first-served queue (completion = max(free, arrival) +
    tau); a spike arrives when the core of its population finished the event it descends from
    (its key), else (a first update's spike) at its bin's start; the readout summed per event in
    completion order. Returns (latencies, done, decision, settle, {core: (synops, window sums)})."""
    from snncc.sim.event_streams import time_bins
    from snncc.sim.events import build_network
    from snncc.sim.events.runner import _flat_tables, _simulate

    net = build_network(g)
    k = time_bins(s, T, bin_us)
    idx = [np.flatnonzero(k == i) for i in range(T)]
    _, run = _simulate(net, torch.from_numpy(bin_counts(s, T, bin_us)).unsqueeze(1), "speck", "layer",
                       input_order=[s.addresses()[i] for i in idx], trace=True)
    names, base = list(net.tables), _flat_tables(net).base.tolist()
    in_event = {}
    for t_bin, keys in run.trace.inputs:
        in_event.update(zip(keys.tolist(), idx[t_bin].tolist()))
    done, root, free = {}, {}, {c: 0.0 for c in net.consumers}
    latest = [-np.inf] * len(s)
    arrivals = {c: [] for c in net.consumers}
    olo, ohi = net.offsets["out"]
    readout = [(b * bin_us, net.const[olo:ohi].copy()) for b in range(T)]
    for t_bin, clock, src, _, rows, keys in run.trace.steps:
        for j in range(keys.size):
            name, key = names[int(src[j])], int(keys[j])
            if name == "x":
                a, r = float(s.t[in_event[key]]), in_event[key]
            elif (name, key) in done:
                a, r = done[(name, key)], root[key]
            else:
                a, r = float(t_bin * bin_us), -1
            root[clock + j] = r
            table = net.tables[name]
            slots, w = table.lookup(int(rows[j]) - base[int(src[j])])
            for c in table.targets:
                lo, hi = net.offsets[c]
                f = max(free[c], a) + tau
                free[c] = done[(c, clock + j)] = f
                if r >= 0:
                    latest[r] = max(latest[r], f)
                arrivals[c].append((a, sum(1 for sl in slots if lo <= sl < hi)))
                if c == "out":
                    inc = np.zeros(ohi - olo)
                    for sl, wt in zip(slots.tolist(), w.tolist()):
                        if lo <= sl < hi:
                            inc[sl - lo] += wt
                    readout.append((f, inc))
    readout.sort(key=lambda p: p[0])  # stable: bin starts before events completing at that time
    total = np.zeros(ohi - olo)
    history = []
    for f, inc in readout:
        total = total + inc
        history.append((f, total.copy()))
    decision = int(np.argmax(total))
    settle = None
    for f, v in history:
        lead = all(v[decision] > v[i] for i in range(v.size) if i != decision)
        if not lead:
            settle = None
        elif settle is None:
            settle = f
    loads = {}
    for c, arr in arrivals.items():
        if arr:
            per = {}
            for a, n in arr:
                per[int(a // window_us)] = per.get(int(a // window_us), 0) + n
            loads[c] = (sum(n for _, n in arr), [per.get(i, 0) for i in range(max(per) + 1)])
    return [latest[i] - s.t[i] for i in range(len(s))], max(done.values()), decision, settle, loads


@pytest.mark.parametrize("tau,window_us", [(1.0, 1000.0), (3.0, 5.0)])
def test_stream_against_an_event_by_event_model(tau, window_us):
    """A 3-bin recording (the middle bin without input events: its first update's spikes arrive at
    the bin's start) through two cores and a current readout, every number of the vectorised
    real-time account equal to the event-by-event model (integer times: the same floats)."""
    g = _two_layer_graph()
    rng = np.random.default_rng(3)
    n = 24  # bins of 50 us: bin 1 empty, every queue idle by its start
    t = np.sort(np.r_[rng.integers(0, 10, n // 2), rng.integers(100, 110, n // 2)])
    rows = [(int(rng.integers(2)), 0, int(ti), int(rng.integers(2))) for ti in t]
    s = validate(_arr(rows), (2, 1))
    r = simulate_stream(g, s, bin_us=50, event_time_us=tau, window_us=window_us, synops_limit=2.0e5)
    lat, done, decision, settle, loads = _slow_stream(g, s, 3, 50, tau, window_us)
    assert r.latency_us.tolist() == lat and r.done_us == done
    assert r.decision == decision and r.settle_us == settle and settle is not None
    assert {c.core: (c.synops, c.rates.tolist()) for c in r.cores} == {
        c: (n_, [x / (window_us * 1e-6) for x in per]) for c, (n_, per) in loads.items()}
    assert [c.stalls for c in r.cores] == [[i * window_us for i, x in enumerate(per) if x / (window_us * 1e-6) > 2e5]
                                           for _, per in loads.values()]
    assert r.synops_per_s == sum(n_ for n_, _ in loads.values()) / ((s.t[-1] - s.t[0]) * 1e-6)
    # the first updates fired (the bias), and some spikes came from input events
    assert r.result.events["n"] > 3 and r.result.counts["n"].reshape(-1)[2] == 3.0
