"""Versioned, deterministic serialisation of graphs: per graph a JSON document plus one `.npz` of
parameters; several graphs of one artefact (the traced model and its deployed form) share arrays.

The JSON names each parameter by a reference into an archive:
- `"<key>"`: the array stored under `<key>` in the graph's own `.npz`;
- `{"file": "traced.npz", "key": K}`: an array another graph of the artefact already stored;
- either of them plus `"times": [k1, k2, ...]`: a folded weight, the referenced array (the
  model's own, usually float32) times the factors stored under k1, k2 in the graph's own archive,
  multiplied left to right in float64 (`snncc.ir.derived`): the same operands in the same order, so
  the loaded array is bit for bit the one the passes computed. A chain is written only after
  recomputing it from the stored values and comparing bits; otherwise the array itself is stored.
The graph's meta is JSON, except that an array in it (of one or more dimensions: a target's per-neuron
calibration, say) is stored in the graph's own archive under `meta/<path>` and named in the JSON
as `{"$array": "<key>"}`, so a per-neuron table does not become text; one whose values are all
whole numbers within int32 (a count of bias LSBs per neuron, say) is stored as the narrowest of int8 /
int16 / int32 holding them (`_meta_storage`), loaded back as the same float64 values like every array.
An array shared by several nodes (the normal form's private copies of one projection) is stored
once, under its first node's key. Arrays that float32 holds exactly are stored as float32 (loaded
back as the same float64 values). Writing is deterministic (sorted keys, fixed zip timestamps), so
compiling the same model twice gives byte-identical files.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Callable

import numpy as np

from snncc.errors import IRError, LoadError
from snncc.ir import derived
from snncc.ir.graph import Graph, Node

FORMAT = "snncc-ir"
VERSION = 2  # 2: parameter references into other archives and factor chains (version 1 still reads)
READS = (1, 2)
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)

Stored = dict[int, tuple[str, str, np.ndarray]]  # id(array) -> (archive file, key, the array: keeps the id alive)


_CHUNK = 1 << 20  # elements per slice when comparing or recomputing a large array (no full-size temporaries)


def _storage(v: np.ndarray) -> np.ndarray:
    """The array as stored: float32 when that holds every value exactly (a float32 model's own
    weights: half the bytes), float64 otherwise. Loading gives float64 back, bit for bit the same
    values."""
    a = np.ascontiguousarray(v, dtype=np.float64)
    f = a.astype(np.float32)
    af, ff = a.reshape(-1), f.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):
        exact = all(np.array_equal(ff[i:i + _CHUNK].astype(np.float64), af[i:i + _CHUNK])
                    for i in range(0, af.size, _CHUNK))
    return f if exact else a


def _meta_storage(v: np.ndarray) -> np.ndarray:
    """An array of the meta as stored: the narrowest of int8 / int16 / int32 when it holds every
    value exactly (whole numbers, no -0.0), else `_storage`. Loading gives float64 back, the same
    values, and the array written again is stored the same way."""
    a = np.asarray(v)
    if a.size and a.dtype.kind in "iuf":
        f = a.astype(np.float64)
        with np.errstate(invalid="ignore"):
            whole = bool(np.isfinite(f).all() and np.array_equal(f, np.rint(f)) and not np.signbit(f[f == 0]).any())
        if whole and (n := narrow_int(f, (np.int8, np.int16, np.int32))) is not None:
            return np.ascontiguousarray(n)
    return _storage(a)


def narrow_int(a: np.ndarray, widths=(np.int8, np.int16, np.int32, np.int64)) -> np.ndarray | None:
    """Whole-number array `a` as the first integer type of `widths` holding its values (its smallest
    and largest), or None when none does."""
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    t = next((t for t in widths if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max), None)
    return None if t is None else a.astype(t, copy=False)


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.ascontiguousarray(a, dtype=np.float64), np.ascontiguousarray(b, dtype=np.float64)
    return a.shape == b.shape and bool(np.array_equal(a.view(np.uint64), b.view(np.uint64)))


def _chain_gives(root: np.ndarray, factors: tuple[np.ndarray, ...], a: np.ndarray) -> bool:
    """derived.product(root, factors) has the bits of `a`: recomputed a slice of leading rows at a
    time (the same multiplications in the same order, so the same bits) when every factor keeps
    the root's shape and is per-row or broadcast along the first axis; whole otherwise."""
    fs = [np.asarray(f) for f in factors]
    rows = a.shape[0] if a.ndim else 0
    if (root.shape != a.shape or rows == 0 or any(f.ndim > a.ndim for f in fs)
            or np.broadcast_shapes(a.shape, *(f.shape for f in fs)) != a.shape):
        return _same_bits(derived.product(root, factors), a)
    step = max(1, _CHUNK // max(1, a.size // rows))
    for s in range(0, rows, step):
        part = [f[s:s + step] if f.ndim == a.ndim and f.shape[0] == rows else f for f in fs]
        if not _same_bits(derived.product(root[s:s + step], part), a[s:s + step]):
            return False
    return True


class _Archive:
    """One `.npz` being written. `stored` (shared by the archives of one artefact) maps id(array)
    to where it was stored; chains (folded weights) are local to the archive that wrote them."""

    def __init__(self, file: str, stored: Stored):
        self.file, self.stored = file, stored
        self.arrays: dict[str, np.ndarray] = {}
        self.as_stored: set[str] = set()  # keys whose array is written in its `_storage` form (when written)
        self.as_meta: set[str] = set()  # keys of the meta's arrays, written in their `_meta_storage` form
        self.chains: dict[int, tuple[dict, np.ndarray]] = {}

    def ref(self, a: np.ndarray, key: str):
        """A reference to `a`, storing it under `key` unless some archive of the artefact holds it."""
        hit = self.stored.get(id(a))
        if hit is None:
            self.arrays[key] = a  # converted as it is written: no second copy of the weights held meanwhile
            self.as_stored.add(key)
            self.stored[id(a)] = hit = (self.file, key, a)
        return hit[1] if hit[0] == self.file else {"file": hit[0], "key": hit[1]}

    def param(self, a: np.ndarray, key: str):
        """The reference for a node's parameter: stored already, a checked chain, or stored now."""
        if id(a) in self.chains:
            return self.chains[id(a)][0]
        chain = None if id(a) in self.stored else derived.origin(a)
        if chain is not None:
            root, factors = chain
            base = self.stored[id(root)][2] if id(root) in self.stored else _storage(root)
            if _chain_gives(base, factors, a):
                r = self.ref(root, key + ".root")
                r = dict(r) if isinstance(r, dict) else {"key": r}
                r["times"] = []
                for i, f in enumerate(factors):
                    self.arrays[f"{key}.x{i}"] = np.ascontiguousarray(f, dtype=np.float64)
                    r["times"].append(f"{key}.x{i}")
                self.chains[id(a)] = (r, a)  # later sharers name the same chain
                return r
        return self.ref(a, key)

    def npz(self) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
            for key, v in self.arrays.items():
                if key in self.as_meta:
                    v = _meta_storage(v)
                elif key in self.as_stored:
                    v = _storage(v)
                info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
                # streamed into the archive (no per-array copy); the size estimate (data + the
                # longest version-1 header) only decides zip64 as writestr would, the header gets the real one
                info.file_size = v.nbytes + (1 << 16)
                with zf.open(info, "w") as dest:
                    np.lib.format.write_array(dest, v, allow_pickle=False)
        return buf.getvalue()


def _dump(graph: Graph, file: str, stored: Stored) -> tuple[bytes, bytes]:
    ar = _Archive(file, stored)
    nodes = []
    for n in graph.nodes:
        nodes.append({
            "name": n.name,
            "op": n.op,
            "inputs": list(n.inputs),
            "attrs": _jsonable(n.attrs),
            "params": {k: ar.param(n.params[k], f"{n.name}/{k}") for k in sorted(n.params)},
            "shape": list(n.shape),
            "kind": n.kind,
        })
    data = {"format": FORMAT, "version": VERSION, "T": graph.T, "meta": _jsonable(graph.meta, ar, "meta"),
            "nodes": nodes}
    doc = json.dumps(data, indent=1, sort_keys=True).encode() + b"\n"
    return doc, ar.npz()


def graph_to_json(graph: Graph) -> dict:
    return json.loads(dumps(graph)[0])


ARRAY_REF = "$array"  # {"$array": key}: an array of the meta, stored in the graph's own archive


def _jsonable(v, ar: _Archive | None = None, path: str = ""):
    """`v` as JSON values; with an archive `ar`, an array of one or more dimensions is stored there
    (under `path`) and replaced by {ARRAY_REF: key}."""
    if isinstance(v, dict):
        return {str(k): _jsonable(x, ar, f"{path}/{k}") for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x, ar, f"{path}/{i}") for i, x in enumerate(v)]
    if hasattr(v, "item") and getattr(v, "shape", None) == ():
        return v.item()
    if ar is not None and isinstance(v, np.ndarray) and v.ndim:
        ar.arrays[path] = v  # always the graph's own archive: the reader takes a plain key
        ar.as_meta.add(path)
        return {ARRAY_REF: path}
    return v


def _meta_arrays(v, array: Callable[[str], np.ndarray]):
    """The meta as written: every {ARRAY_REF: key} replaced by the array stored under key."""
    if isinstance(v, dict):
        if set(v) == {ARRAY_REF}:
            return array(v[ARRAY_REF])
        return {k: _meta_arrays(x, array) for k, x in v.items()}
    if isinstance(v, list):
        return [_meta_arrays(x, array) for x in v]
    return v


def dumps(graph: Graph) -> tuple[bytes, bytes]:
    """Return (json bytes, npz bytes) of one self-contained graph."""
    return _dump(graph, "", {})


def dumps_set(graphs: list[tuple[str, Graph]]) -> dict[str, bytes]:
    """Serialise graphs of one artefact, in order, as `<stem>.json` + `<stem>.npz` each: a later graph
    names arrays an earlier one stored (the deployed graph reads the traced model's weights) instead
    of storing them again."""
    stored: Stored = {}
    files = {}
    for stem, g in graphs:
        files[f"{stem}.json"], files[f"{stem}.npz"] = _dump(g, f"{stem}.npz", stored)
    return files


def _archive(npz: bytes, source: str) -> dict[str, np.ndarray]:
    """Every array of one `.npz`, as float64 (decoded once: arrays shared by nodes stay shared)."""
    try:
        arrays = np.load(io.BytesIO(npz), allow_pickle=False)
        params_of = {k: arrays[k] for k in arrays.files}
    except Exception as e:  # zipfile/numpy raise many types for corrupt files
        raise LoadError(f"parameter archive unreadable ({e.__class__.__name__}: {e})", where=source) from None
    for key, arr in params_of.items():
        if arr.dtype.kind not in "biuf":
            raise LoadError(f"parameter {key!r} holds {arr.dtype} values, expected numbers", where=source)
    return {k: np.asarray(a, dtype=np.float64) for k, a in params_of.items()}


def loads(doc: bytes, npz: bytes, source: str = "<memory>", other: Callable[[str], bytes] | None = None,
          archives: dict | None = None, file: str | None = None) -> Graph:
    """A graph from its JSON and `.npz`. `other(file)` gives the bytes of another archive of the
    artefact that the graph references (read through the manifest's hash check); `archives` (file ->
    decoded arrays) is a cache shared by the graphs of one artefact, so they share arrays in memory;
    `file` is this graph's own archive name in it."""
    try:
        data = json.loads(doc)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise LoadError(f"not a JSON document ({e.__class__.__name__})", where=source) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise LoadError(f"not an {FORMAT} graph (field 'format')", where=source)
    if data.get("version") not in READS:
        raise LoadError(f"graph schema version {data.get('version')!r}, this snncc reads versions "
                        f"{', '.join(map(str, READS))}", where=source, hint="recompile the model with this snncc")
    _check_schema(data, source)
    archives = {} if archives is None else archives
    own = archives[file] if file in archives else _archive(npz, source)
    if file is not None:
        archives[file] = own
    chains: dict[str, np.ndarray] = {}

    def array(file: str | None, key, what: str) -> np.ndarray:
        if not isinstance(key, str):
            raise LoadError(f"{what} must name an archive key", where=source, hint="recompile the model")
        if file is None:
            arrays = own
        else:
            if not isinstance(file, str) or other is None:
                raise LoadError(f"{what} names another archive ({file!r}), which is not available here",
                                where=source, hint="load the graph from its artefact folder")
            if file not in archives:
                archives[file] = _archive(other(file), file)
            arrays = archives[file]
        if key not in arrays:
            raise LoadError(f"parameter {key!r} missing from the archive{' ' + file if file else ''}", where=source)
        return arrays[key]

    def param(ref, what: str) -> np.ndarray:
        if isinstance(ref, str):
            return array(None, ref, what)
        if not isinstance(ref, dict) or not set(ref) <= {"file", "key", "times"}:
            raise LoadError(f"{what} must be an archive key or an object {{file, key, times}}", where=source,
                            hint="recompile the model")
        base = array(ref.get("file"), ref.get("key"), what)
        if "times" not in ref:
            return base
        times = ref["times"]
        if not isinstance(times, list):
            raise LoadError(f"{what}.times must list archive keys", where=source, hint="recompile the model")
        memo = json.dumps(ref, sort_keys=True)  # sharers of one folded weight get one array again
        if memo not in chains:
            factors = tuple(array(None, k, what) for k in times)
            try:
                out = derived.product(base, factors)
            except ValueError as e:
                raise LoadError(f"{what}: factors do not broadcast against the weight ({e})", where=source,
                                hint="recompile the model") from None
            chains[memo] = derived.record(out, base, factors)  # re-serialises to the same chain
        return chains[memo]

    try:
        nodes = []
        for nd in data["nodes"]:
            params = {k: param(ref, f"node {nd['name']}: parameter {k}") for k, ref in nd["params"].items()}
            nodes.append(Node(nd["name"], nd["op"], nd["inputs"], nd["attrs"], params, tuple(nd["shape"]),
                              nd["kind"]))
        meta = _meta_arrays(data.get("meta", {}), lambda k: array(None, k, f"meta {k}").copy())
        g = Graph(nodes, T=data.get("T", 1), meta=meta)
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise LoadError(f"malformed graph document ({e.__class__.__name__}: {e})", where=source) from None
    except IRError as e:
        raise LoadError(f"invalid graph ({e.one_line()})", where=source, hint="recompile the model") from None
    try:
        g.verify()
    except IRError as e:
        raise LoadError(f"invalid graph ({e.one_line()})", where=source, hint="recompile the model") from None
    return g


_NODE_FIELDS = {"name": str, "op": str, "inputs": list, "attrs": dict, "params": dict, "shape": list, "kind": str}


def _check_schema(data: dict, source: str) -> None:
    """Field types of the graph document, checked before anything is built from it."""
    def bad(field, what):
        raise LoadError(f"field {field} {what}", where=source, hint="recompile the model")

    T = data.get("T", 1)
    if isinstance(T, bool) or not isinstance(T, int):
        bad("T", f"must be an integer, got {type(T).__name__}")
    if not isinstance(data.get("meta", {}), dict):
        bad("meta", "must be an object")
    nodes = data.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        bad("nodes", "must be a non-empty list")
    for i, nd in enumerate(nodes):
        if not isinstance(nd, dict):
            bad(f"nodes[{i}]", "must be an object")
        for k, kind in _NODE_FIELDS.items():
            if not isinstance(nd.get(k), kind):
                bad(f"nodes[{i}].{k}", f"must be a {'JSON ' + kind.__name__ if kind is not str else 'string'}")
        if not all(isinstance(v, str) for v in nd["inputs"]):
            bad(f"nodes[{i}].inputs", "must list node names")
        if not all(isinstance(v, (str, dict)) for v in nd["params"].values()):
            bad(f"nodes[{i}].params", "must map parameter names to archive references")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in nd["shape"]):
            bad(f"nodes[{i}].shape", "must list non-negative integers")
