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
