"""Event recordings as users have them: tonic-style numpy structured arrays with fields `x, y, t,
p` (t in microseconds), in `.npy` (one recording) or `.npz` (one recording per array, plus an
optional integer `labels` array), read, validated, binned and run in real time.

Owns `read_events` / `write_events` (the files), `EventStream` (one validated recording),
`bin_counts` (the (T, C=2, H, W) counts the synchronous path and the integer model take),
`dense_to_stream` (a binned (T, 2, H, W) sample written back as timed events) and
`simulate_stream` (the asynchronous simulator fed the recording's events in time order, with a
real-time account: `StreamResult`).

Conventions: `sensor_size` is tonic's (W, H[, P]); polarity p is 1 (ON) or 0 (OFF) (-1 and bool
are accepted as OFF/ON); counts channel 0 is ON, channel 1 OFF (the layout of
examples/events); input address of an event = channel * H * W + y * W + x.

Real-time model (greedy/speck policies, one recording, layer order; `StreamResult`):
- every population is one core (Speck: one layer per core), the graph output (the readout) one
  more; a core handles the events that reach it one at a time, first come first served, each
  taking the per-event time `substep_time` of the Speck profile (snncc/profiles/
  speck.json; an assumption there, so here);
- an input event reaches its cores at its timestamp; a spike is emitted when the core of its
  population has finished the event that made it (the runner's trace names it), and reaches the
  next cores then; a spike of a timestep's first update (its constant current) carries the id of
  the event delivered just before that update (`runner._Trace`): when that event reached its
  population's core the spike leaves after it, otherwise at the start of the timestep's time bin;
- latency of an input event: from its timestamp to the completion of the last event it caused
  (through any depth, the output readout included); the decision: the running sum of the output
  readout, settled once its argmax is strict and final;
- SynOps/s per core over time: synaptic operations of the events arriving at a core per window
  (`window_us`), against the profile's per-core limit (`synops_per_s_per_core`, also an
  assumption); a window above it is a moment the core would stall;
- average power at the recording's own event rate: static power + E_SOP x SynOps/s (E_SOP from
  snncc/sim/data/speck_stream.json, an assumption with its reason).
"""

from __future__ import annotations

import functools
import json
import math
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from snncc.errors import LoadError, SnnccError
from snncc.ir.graph import Graph

FIELDS = ("x", "y", "t", "p")
_HINT = "a tonic-style structured array with integer fields x, y, p and timestamps t in microseconds"
DATA_FILE = Path(__file__).parent / "data" / "speck_stream.json"


@dataclass
class EventStream:
    """One validated recording: coordinates, timestamps (us, sorted), polarity 0/1."""
    x: np.ndarray  # int64
    y: np.ndarray  # int64
    t: np.ndarray  # float64, microseconds, non-decreasing
    p: np.ndarray  # int64, 1 = ON, 0 = OFF
    sensor_size: tuple[int, int]  # (W, H), tonic order
    source: str = ""

    def __len__(self) -> int:
        return int(self.t.size)

    @property
    def width(self) -> int:
        return self.sensor_size[0]

    @property
    def height(self) -> int:
        return self.sensor_size[1]

    def channels(self) -> np.ndarray:
        """Counts channel of every event: 0 for ON, 1 for OFF."""
        return 1 - self.p

    def addresses(self) -> np.ndarray:
        """Input address of every event (channel * H * W + y * W + x)."""
        return (self.channels() * self.height + self.y) * self.width + self.x


def _sensor(sensor_size) -> tuple[int, int]:
    s = tuple(int(v) for v in sensor_size)
    if len(s) not in (2, 3) or s[0] < 1 or s[1] < 1 or (len(s) == 3 and s[2] != 2):
        raise SnnccError(f"sensor size {tuple(sensor_size)} is not (W, H) or (W, H, 2)", where="sensor_size",
                         hint="tonic order: width, height[, polarities]")
    return s[0], s[1]


def validate(arr, sensor_size, where: str = "events") -> EventStream:
    """Check one structured array and return it as an `EventStream`; one `LoadError` naming the
    place (`where`) and field on the first problem."""
    W, H = _sensor(sensor_size)
    names = getattr(getattr(arr, "dtype", None), "names", None)
    if names is None:
        raise LoadError(f"not a structured array (dtype {getattr(arr, 'dtype', type(arr).__name__)})", where=where,
                        hint=_HINT)
    for f in FIELDS:
        if f not in names:
            raise LoadError(f"missing field {f!r} (fields: {', '.join(names)})", where=f"{where}, field {f}",
                            hint=_HINT)
    arr = np.asarray(arr).reshape(-1)
    cols = {}
    for f in ("x", "y", "p"):
        v = arr[f]
        if v.dtype.kind == "b":
            v = v.astype(np.int64)
        if v.dtype.kind not in "iuf":
            raise LoadError(f"field of dtype {v.dtype} is not numeric", where=f"{where}, field {f}", hint=_HINT)
        if v.dtype.kind == "f":
            bad = np.flatnonzero(~np.isfinite(v) | (v != np.floor(v)))
            if bad.size:
                raise LoadError(f"non-integer value {v[bad[0]]!r} at event {bad[0]}", where=f"{where}, field {f}",
                                hint=_HINT)
        cols[f] = v.astype(np.int64)
    for f, size, name in (("x", W, "width"), ("y", H, "height")):
        v = cols[f]
        neg = np.flatnonzero(v < 0)
        if neg.size:
            raise LoadError(f"negative coordinate {v[neg[0]]} at event {neg[0]}", where=f"{where}, field {f}",
                            hint="coordinates count from 0")
        out = np.flatnonzero(v >= size)
        if out.size:
            raise LoadError(f"coordinate {v[out[0]]} at event {out[0]} is outside the sensor {name} {size}",
                            where=f"{where}, field {f}", hint=f"sensor size (W, H) = ({W}, {H})")
    p = cols["p"]
    p = np.where(p == -1, 0, p)
    bad = np.flatnonzero((p != 0) & (p != 1))
    if bad.size:
        raise LoadError(f"polarity {cols['p'][bad[0]]} at event {bad[0]} is not 0/1 (or -1/1)",
                        where=f"{where}, field p", hint="1 = ON, 0 or -1 = OFF")
    t = arr["t"]
    if t.dtype.kind not in "iuf":
        raise LoadError(f"field of dtype {t.dtype} is not numeric", where=f"{where}, field t", hint=_HINT)
    t = t.astype(np.float64)
    nan = np.flatnonzero(np.isnan(t) | np.isinf(t))
    if nan.size:
        raise LoadError(f"timestamp {t[nan[0]]} at event {nan[0]}", where=f"{where}, field t",
                        hint="timestamps are finite microseconds")
    dec = np.flatnonzero(t[1:] < t[:-1])
    if dec.size:
        i = int(dec[0]) + 1
        raise LoadError(f"timestamps are not sorted: t = {t[i]:g} at event {i} after {t[i - 1]:g}",
                        where=f"{where}, field t", hint="sort the recording by t (np.sort(events, order='t'))")
    return EventStream(cols["x"], cols["y"], t, p, (W, H), where)


def _member(archive, key: str, path) -> np.ndarray:
    """One array of an `.npz`, or one line saying why it cannot be read (object arrays are pickles:
    never loaded)."""
    try:
        return archive[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise LoadError(f"cannot read this member: {e or e.__class__.__name__}", where=f"{path}[{key}]",
                        hint=_HINT) from None


def read_events(path, sensor_size) -> tuple[list[EventStream], np.ndarray | None]:
    """Read `.npy` (one recording) or `.npz` (every structured array a recording, in key order;
    an integer array `labels` if present). Returns (recordings, labels or None)."""
    path = Path(path)
    if path.suffix not in (".npy", ".npz"):
        raise LoadError(f"unknown event file type {path.suffix!r}", where=str(path), hint="a .npy or .npz file")
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise LoadError("event file not found", where=str(path)) from None
    except IsADirectoryError:
        raise LoadError("is a folder, expected an event file", where=str(path), hint=_HINT) from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise LoadError(f"cannot read: {e or e.__class__.__name__} (empty, truncated or not a NumPy file)",
                        where=str(path), hint=_HINT) from None
    if isinstance(data, np.ndarray):  # a .npy file, whatever its name says
        return [validate(data, sensor_size, str(path))], None
    with data:
        keys = [k for k in data.files if k != "labels"]
        if not keys:
            raise LoadError("no recordings in the archive", where=str(path), hint=_HINT)
        streams = [validate(_member(data, k, path), sensor_size, f"{path}[{k}]") for k in keys]
        labels = None
        if "labels" in data.files:
            labels = _member(data, "labels", path)
            if labels.dtype.kind not in "iu" or labels.shape != (len(streams),):
                raise LoadError(f"labels of dtype {labels.dtype} and shape {labels.shape} do not give one integer "
                                f"per recording ({len(streams)})", where=f"{path}[labels]")
            labels = labels.astype(np.int64)
    return streams, labels


EVENT_DTYPE = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i1")])


def to_structured(s: EventStream) -> np.ndarray:
    a = np.empty(len(s), dtype=EVENT_DTYPE)
    a["x"], a["y"], a["p"] = s.x, s.y, s.p
    a["t"] = np.round(s.t).astype(np.int64)
    return a


def write_events(path, streams, labels=None) -> Path:
    """Write recordings (`EventStream`s or structured arrays) to `.npz` (keys `events_00000`, ...,
    and `labels`) or one recording to `.npy`."""
    path = Path(path)
    arrs = [to_structured(s) if isinstance(s, EventStream) else np.asarray(s) for s in streams]
    if path.suffix == ".npy":
        if len(arrs) != 1 or labels is not None:
            raise SnnccError("a .npy file holds one recording and no labels", where=str(path), hint="use .npz")
        np.save(path, arrs[0])
        return path
    out = {f"events_{i:05d}": a for i, a in enumerate(arrs)}
    if labels is not None:
        out["labels"] = np.asarray(labels, dtype=np.int64)
    np.savez_compressed(path, **out)
    return path


def time_bins(s: EventStream, T: int, bin_us: float | None = None, t_start: float = 0.0) -> np.ndarray:
    """Bin index (0..T-1) of every event: bins [t_start + k bin_us, t_start + (k+1) bin_us);
    without `bin_us` the span t_start..last event is cut into T equal bins (the last event in the
    last bin)."""
    if T < 1:
        raise SnnccError(f"T must be >= 1, got {T}")
    if len(s) and s.t[0] < t_start:
        raise SnnccError(f"event at t = {s.t[0]:g} us before t_start = {t_start:g}", where=s.source)
    if bin_us is None:
        span = (s.t[-1] - t_start) if len(s) else 0.0
        if span <= 0:
            return np.zeros(len(s), dtype=np.int64)
        return np.minimum(np.floor((s.t - t_start) / span * T), T - 1).astype(np.int64)
    kf = np.floor((s.t - t_start) / bin_us)  # in float: a tiny bin_us must not wrap around int64
    late = np.flatnonzero(kf >= T)
    if late.size:
        raise SnnccError(f"event {late[0]} at t = {s.t[late[0]]:g} us is after the {T} bins of {bin_us:g} us",
                         where=s.source, hint="pass a larger T or bin_us, or cut the recording")
    return kf.astype(np.int64)


def bin_counts(s: EventStream, T: int, bin_us: float | None = None, t_start: float = 0.0) -> np.ndarray:
    """(T, 2, H, W) float64 event counts per time bin (channel 0 ON, 1 OFF)."""
    k = time_bins(s, T, bin_us, t_start)
    n = 2 * s.height * s.width
    c = np.bincount(k * n + s.addresses(), minlength=T * n)
    return c.reshape(T, 2, s.height, s.width).astype(np.float64)


def dense_to_stream(counts: np.ndarray, bin_us: float, source: str = "") -> EventStream:
    """A binned sample (T, 2, H, W) of event counts as a recording: bin k's events get timestamps
    spread evenly over [k bin_us, (k+1) bin_us) (integer microseconds) in raster order (channel,
    y, x; an address with count n appears n times). `bin_counts(stream, T, bin_us)` gives `counts`
    back."""
    counts = np.asarray(counts)
    if counts.ndim != 4 or counts.shape[1] != 2:
        raise SnnccError(f"counts of shape {counts.shape} are not (T, 2, H, W)")
    T, _, H, W = counts.shape
    xs, ys, ts, ps = [], [], [], []
    for k in range(T):
        flat = counts[k].reshape(-1).astype(np.int64)
        addr = np.repeat(np.arange(flat.size), flat)
        m = addr.size
        if m > bin_us:
            raise SnnccError(f"{m} events in bin {k} do not fit {bin_us:g} integer microseconds", hint="a larger bin_us")
        c, rest = np.divmod(addr, H * W)
        y, x = np.divmod(rest, W)
        xs.append(x)
        ys.append(y)
        ps.append(1 - c)
        ts.append(k * bin_us + np.floor(np.arange(m) * bin_us / max(m, 1)))
    cat = lambda v, d: np.concatenate(v).astype(d) if v else np.zeros(0, d)  # noqa: E731
    return EventStream(cat(xs, np.int64), cat(ys, np.int64), cat(ts, np.float64), cat(ps, np.int64), (W, H), source)


# ---- the asynchronous simulation in real time ---------------------------------------------------
@dataclass
class CoreLoad:
    """SynOps/s of one core over time (windows of `window_us` from the recording's start)."""
    core: str
    synops: int
    rates: np.ndarray  # SynOps/s per window (events' arrival times)
    limit: float  # SynOps/s per core
    stalls: list[float] = field(default_factory=list)  # start (us) of every window above the limit

    @property
    def peak(self) -> float:
        return float(self.rates.max()) if self.rates.size else 0.0


@dataclass
class StreamResult:
    result: object  # the EventResult of the run (counts, output, events, synops)
    latency_us: np.ndarray  # per input event, in time order
    decision: int  # argmax of the output readout
    settle_us: float | None  # time (from t_start) the decision became strict and final; None if tied
    done_us: float  # completion of the last event
    duration_us: float  # last minus first input timestamp
    cores: list[CoreLoad]
    power_w: float  # average power at the recording's event rate
    synops_per_s: float  # the recording's average SynOps/s (all cores)
    event_time_us: float  # per-event time used (profile substep_time)
    sources: dict[str, str]  # figure -> value and source

    def table(self) -> str:
        lat = self.latency_us
        q = (lambda f: f"{f(lat):.1f}") if lat.size else (lambda f: "-")
        lines = [f"{lat.size} input events over {self.duration_us:.0f} us; per-event time {self.event_time_us:g} us",
                 f"latency input event -> last consequence (us): median {q(np.median)}, mean {q(np.mean)}, "
                 f"max {q(np.max)}",
                 f"decision: class {self.decision}, settled at {self.settle_us if self.settle_us is not None else '-'} "
                 f"us, all events done at {self.done_us:.1f} us",
                 f"average power at the recording's rate: {self.power_w * 1e3:.4f} mW "
                 f"({self.synops_per_s:.3g} SynOps/s)"]
        for c in self.cores:
            lines.append(f"core {c.core}: {c.synops} SynOps, peak {c.peak:.3g} SynOps/s vs limit {c.limit:.3g}; "
                         f"{len(c.stalls)} window(s) would stall" + (f" (from {c.stalls[0]:g} us)" if c.stalls else ""))
        return "\n".join(lines)


@functools.lru_cache(maxsize=1)
def _e_sop() -> tuple[float, str]:
    """The chip data file's energy per SynOp (J) and its source line, read once per process."""
    from snncc.profile import UNITS

    data = json.loads(DATA_FILE.read_text())["figures"]["e_sop"]
    return data["value"] * UNITS[data["unit"]][1], f"{data['value']} {data['unit']}: {data['source']}"


def _stream_figures(profile):
    from snncc.profile import load_profile

    prof = load_profile(profile)
    for k in ("substep_time", "synops_per_s_per_core", "p_static"):
        if not prof.has(k):
            raise LoadError(f"profile {prof.name} has no {k!r}", where=f"profile {prof.name}, field {k}",
                            hint="the Speck profile (snncc/profiles/speck.json) gives it")
    e_sop, src_e = _e_sop()
    src = {k: f"{prof.figures[k].value} {prof.figures[k].unit}: {prof.figures[k].source}"
           for k in ("substep_time", "synops_per_s_per_core", "p_static")}
    src["e_sop"] = src_e
    return prof.si("substep_time") * 1e6, prof.si("synops_per_s_per_core"), prof.si("p_static"), e_sop, src


def _stream_tables(net):
    """What the real-time model reads of a network, derived once and kept on it
    (`EventNetwork.derived`): source names, cores (the consumers) and their index, per (source,
    core) the SynOps an event of each address makes at that core, and per source feeding the
    output its table's output entries as a CSR (indptr, output column, weight)."""
    hit = net.derived.get("stream_tables")
    if hit is not None:
        return hit
    names = list(net.tables)
    cores = list(net.consumers)
    cidx = {c: i for i, c in enumerate(cores)}
    olo, ohi = net.offsets[net.graph.output.name]
    fan, to_out = {}, {}
    for si, s in enumerate(names):
        t = net.tables[s]
        entry_addr = np.repeat(np.arange(t.n), np.diff(t.indptr))
        for c in t.targets:
            lo, hi = net.offsets[c]
            sel = (t.slots >= lo) & (t.slots < hi)
            if t.group is not None:  # centre SSC: one operation per (address, slot) group
                sel &= np.r_[True, t.group[1:] != t.group[:-1]]
            fan[(si, cidx[c])] = np.bincount(entry_addr[sel], minlength=t.n)
        if net.graph.output.name in t.targets:  # (entries in table order: per address, as `lookup` gives them)
            m = (t.slots >= olo) & (t.slots < ohi)
            indptr = np.r_[0, np.cumsum(np.bincount(entry_addr[m], minlength=t.n))]
            to_out[si] = (indptr, t.slots[m] - olo, t.weights[m])
    hit = net.derived["stream_tables"] = (names, cores, cidx, fan, to_out)
    return hit


def _output_increments(csr, addr: np.ndarray, width: int) -> np.ndarray:
    """(events, width): what each event (source address) adds to the output readout, every
    address's entries summed in table order (`np.add.at`, unbuffered, in index order)."""
    indptr, col, w = csr
    st = indptr[addr]
    ln = indptr[addr + 1] - st
    ev = np.repeat(np.arange(addr.size), ln)
    idx = np.arange(int(ln.sum())) - np.repeat(np.cumsum(ln) - ln, ln) + np.repeat(st, ln)
    inc = np.zeros((addr.size, width))
    np.add.at(inc, (ev, col[idx]), w[idx])
    return inc


def simulate_stream(graph_or_net, stream: EventStream, T: int | None = None, bin_us: float | None = None,
                    t_start: float = 0.0, policy: str = "speck", profile="speck", window_us: float = 1000.0,
                    synops_limit: float | None = None, event_time_us: float | None = None,
                    speck_cap_D: bool = False, v_min=None) -> StreamResult:
    """Run one recording on the deployed graph (or its `EventNetwork`): binned into the graph's T
    windows (`bin_counts`), each window's input events delivered in their time order under the
    greedy or speck policy ('layer' order: a population's events in the order they were emitted),
    then timed by the module's real-time model. `synops_limit` / `event_time_us` override the
    profile's figures."""
    from snncc.sim.events import build_network
    from snncc.sim.events.address import EventNetwork
    from snncc.sim.events.runner import _flat_tables, _simulate

    if policy not in ("greedy", "speck"):
        raise SnnccError(f"policy {policy!r} has no per-event timing", where="simulate_stream",
                         hint="greedy or speck: the ideal policy fires bursts once a population is complete")
    net = graph_or_net if isinstance(graph_or_net, EventNetwork) else build_network(graph_or_net)
    g: Graph = net.graph
    inp = g.inputs[0]
    if tuple(inp.shape) != (2, stream.height, stream.width):
        raise SnnccError(f"input {tuple(inp.shape)} does not take a {stream.width}x{stream.height} 2-polarity "
                         f"recording", where=f"node {inp.name}", hint="input shape (2, H, W) for sensor (W, H)")
    if not len(stream):
        raise SnnccError("the recording holds no events: no latency or decision to measure", where=stream.source,
                         hint="drop empty recordings from the file")
    T = int(T or g.T or 1)
    tau, limit, p_static, e_sop, sources = _stream_figures(profile)
    tau = float(event_time_us) if event_time_us is not None else tau
    limit = float(synops_limit) if synops_limit is not None else limit

    k = time_bins(stream, T, bin_us, t_start)
    counts = bin_counts(stream, T, bin_us, t_start)
    addr = stream.addresses()
    order = [addr[k == i] for i in range(T)]
    stream_idx = [np.flatnonzero(k == i) for i in range(T)]
    x = torch.from_numpy(counts).unsqueeze(1)  # (T, 1, 2, H, W)
    res, run = _simulate(net, x, policy, "layer", speck_cap_D=speck_cap_D, v_min=v_min, input_order=order,
                         trace=True)
    width = bin_us if bin_us is not None else ((stream.t[-1] - t_start) / T if len(stream) else 0.0)

    tr = run.trace
    n_ids = run.clock + 1
    names, cores, cidx, fan, to_out = _stream_tables(net)
    inp_i = names.index(inp.name)
    out_name = g.output.name
    done = np.full((len(cores), n_ids), np.nan)  # completion time of event id at core
    root = np.full(n_ids, -1, dtype=np.int64)  # input event (stream index) each id descends from
    free = np.zeros(len(cores))
    latest = np.full(len(stream), -np.inf)
    arrivals: list[list] = [[] for _ in cores]  # (arrival times, synops)
    in_time = np.full(n_ids, np.nan)  # per input event id: its timestamp and stream index
    in_root = np.full(n_ids, -1, dtype=np.int64)
    for t_bin, keys in tr.inputs:
        in_time[keys] = stream.t[stream_idx[t_bin]]
        in_root[keys] = stream_idx[t_bin]
    out_hist = []  # (completion time, sample 0 output increment) of events reaching the output
    olo, ohi = net.offsets[out_name]
    base = _flat_tables(net).base
    for t_bin, clock, src, samples, rows, keys in tr.steps:
        n = keys.size
        if n == 0:  # a step that delivered nothing (e.g. a bin without input events)
            continue
        ids = clock + np.arange(n)
        si = int(src[0])
        if not np.all(src == si):
            raise SnnccError("a step mixes sources; the real-time model needs 'layer' order", where="simulate_stream")
        if si == inp_i:
            a = in_time[keys]
            r = in_root[keys]
        else:
            pop = cidx[names[si]]
            parent_ok = (keys >= 0) & (keys < n_ids)
            pk = np.where(parent_ok, keys, 0)
            a = np.where(parent_ok, done[pop, pk], np.nan)
            first = np.isnan(a)  # spikes of the timestep's first update: at the bin's start
            a = np.where(first, t_start + t_bin * width, a)
            r = np.where(first, -1, root[pk])
        root[ids] = r
        addr_s = rows - base[si]
        for c in net.tables[names[si]].targets:
            ci = cidx[c]
            j = np.arange(1, n + 1) * tau
            f = j + np.maximum(free[ci], np.maximum.accumulate(a - (j - tau)))
            free[ci] = f[-1] if n else free[ci]
            done[ci, ids] = f
            ok = r >= 0
            np.maximum.at(latest, r[ok], f[ok])
            arrivals[ci].append((a, fan[(si, ci)][addr_s]))
            if c == out_name:
                out_hist.append((f, _output_increments(to_out[si], addr_s, ohi - olo)))
    t_in = stream.t
    lat = latest - t_in if len(stream) else np.zeros(0)
    # the decision: running output readout (its constant current at every bin's start)
    const = net.const[olo:ohi]
    pts_t = np.concatenate([np.array([t_start + b * width for b in range(T)], dtype=np.float64)]
                           + [f for f, _ in out_hist])
    pts_v = np.concatenate([np.tile(const, (T, 1))] + [inc for _, inc in out_hist])
    o = np.argsort(pts_t, kind="stable")
    times = pts_t[o]
    run_out = np.cumsum(pts_v[o], axis=0)
    final = run_out[-1]
    decision = int(np.argmax(final))
    # per row of `run_out`: its class `decision` strictly above every other
    strict = (run_out[:, decision:decision + 1] > np.delete(run_out, decision, axis=1)).all(axis=1)
    settle = None
    if strict[-1]:  # the first time after which the argmax is the final class, strictly, for good
        ok = (np.argmax(run_out, axis=1) == decision) & strict
        bad = np.flatnonzero(~ok)
        settle = float(times[0] if bad.size == 0 else times[bad[-1] + 1])
    done_us = float(np.nanmax(np.where(np.isnan(done), -np.inf, done))) if n_ids else 0.0
    duration = float(t_in[-1] - t_in[0]) if len(stream) > 1 else 0.0
    span = max(duration, width * T) if duration == 0 else duration
    loads = []
    total = 0
    for ci, c in enumerate(cores):
        if not arrivals[ci]:
            continue
        a = np.concatenate([x for x, _ in arrivals[ci]])
        s_ = np.concatenate([y for _, y in arrivals[ci]])
        total += int(s_.sum())
        nw = max(int(math.floor((float(a.max()) - t_start) / window_us)) + 1, 1)
        per = np.bincount(np.floor((a - t_start) / window_us).astype(np.int64), weights=s_, minlength=nw)
        rates = per / (window_us * 1e-6)
        stalls = [t_start + i * window_us for i in np.flatnonzero(rates > limit).tolist()]
        loads.append(CoreLoad(c, int(s_.sum()), rates, limit, stalls))
    sps = total / (span * 1e-6) if span > 0 else 0.0
    power = p_static + e_sop * sps
    return StreamResult(res, lat, decision, settle, done_us, duration, loads, power, sps, tau, sources)


def summary(results: list[StreamResult], labels=None) -> str:
    """One line over several recordings: latency percentiles (all input events), settle times,
    peak SynOps/s per core against the limit, average power, and accuracy against `labels`."""
    if not results:
        return "no recordings"
    lat = np.concatenate([r.latency_us for r in results])
    settle = [r.settle_us for r in results if r.settle_us is not None]
    stall = sum(1 for r in results if any(c.stalls for c in r.cores))
    parts = [f"{len(results)} recordings, {lat.size} input events",
             f"latency median {np.median(lat):.0f} us, p95 {np.percentile(lat, 95):.0f} us, max {lat.max():.0f} us"
             if lat.size else "no input events",
             f"decision settled at median {np.median(settle):.0f} us" if settle else "no strict decision",
             f"{stall} recording(s) with a core above {results[0].cores[0].limit:.3g} SynOps/s (stall)"
             if results[0].cores else "",
             f"average power {np.mean([r.power_w for r in results]) * 1e3:.3f} mW"]
    if labels is not None:
        y = np.asarray(labels)[:len(results)]
        parts.append(f"accuracy {np.mean([r.decision == int(t) for r, t in zip(results, y)]):.2%}")
    return "; ".join(p for p in parts if p)


def run_recordings(graph_or_net, path, sensor_size=None, T: int | None = None, bin_us: float | None = None,
                   policy: str = "speck", samples: int | None = None, **kw) -> tuple[list[StreamResult], str]:
    """Read a recordings file and run each (up to `samples`) with `simulate_stream`; returns the
    results and their `summary`. `sensor_size` defaults to the graph input's (W, H)."""
    from snncc.sim.events.address import EventNetwork

    g = graph_or_net.graph if isinstance(graph_or_net, EventNetwork) else graph_or_net
    if sensor_size is None:
        shape = tuple(g.inputs[0].shape)
        if len(shape) != 3 or shape[0] != 2:
            raise SnnccError(f"input {shape} is not (2, H, W): give the sensor size", where=f"node {g.inputs[0].name}")
        sensor_size = (shape[2], shape[1])
    streams, labels = read_events(path, sensor_size)
    if samples is not None:
        streams = streams[:samples]
    from snncc.sim.events import build_network

    from snncc.profile import load_profile

    net = graph_or_net if isinstance(graph_or_net, EventNetwork) else build_network(graph_or_net)
    kw["profile"] = load_profile(kw.get("profile", "speck"))  # read once, not per recording
    res = [simulate_stream(net, s, T=T, bin_us=bin_us, policy=policy, **kw) for s in streams]
    return res, summary(res, labels)


__all__ = ["summary", "run_recordings", "EventStream", "FIELDS", "EVENT_DTYPE", "validate", "read_events", "write_events", "to_structured",
           "time_bins", "bin_counts", "dense_to_stream", "simulate_stream", "StreamResult", "CoreLoad"]
