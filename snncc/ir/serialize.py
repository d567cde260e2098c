"""Versioned, deterministic serialisation of a `Graph`: a JSON document plus one `.npz` of parameters.

The JSON names each parameter by its key in the `.npz` (`<node>/<param>`). An array shared by
several nodes (the normal form's private copies of one projection share their weights) is stored
once, under its first node's key, and every node that shares it names that key; loading gives
them one array again. Arrays that float32 holds exactly are stored as float32 (loaded back as
the same float64 values). Writing is deterministic (sorted keys, fixed zip timestamps), so compiling
the same model twice gives byte-identical files.
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np

from snncc.errors import IRError, LoadError
from snncc.ir.graph import Graph, Node

FORMAT = "snncc-ir"
VERSION = 1
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _param_keys(graph: Graph) -> dict[tuple[str, str], str]:
    """(node, param) -> archive key: the first (graph order) node/param holding that same array."""
    first: dict[int, str] = {}
    out = {}
    for n in graph.nodes:
        for k in sorted(n.params):
            out[(n.name, k)] = first.setdefault(id(n.params[k]), f"{n.name}/{k}")
    return out


def graph_to_json(graph: Graph) -> dict:
    keys = _param_keys(graph)
    nodes = []
    for n in graph.nodes:
        nodes.append({
            "name": n.name,
            "op": n.op,
            "inputs": list(n.inputs),
            "attrs": _jsonable(n.attrs),
            "params": {k: keys[(n.name, k)] for k in sorted(n.params)},
            "shape": list(n.shape),
            "kind": n.kind,
        })
    return {"format": FORMAT, "version": VERSION, "T": graph.T, "meta": _jsonable(graph.meta), "nodes": nodes}


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "item") and getattr(v, "shape", None) == ():
        return v.item()
    return v


def _storage(v: np.ndarray) -> np.ndarray:
    """The array as stored: float32 when that holds every value exactly (a float32 model's own
    weights: half the bytes), float64 otherwise (folded weights). Loading gives float64 back, bit
    for bit the same values."""
    a = np.ascontiguousarray(v, dtype=np.float64)
    f = a.astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        exact = bool(np.array_equal(f.astype(np.float64), a))
    return f if exact else a


def dumps(graph: Graph) -> tuple[bytes, bytes]:
    """Return (json bytes, npz bytes)."""
    doc = json.dumps(graph_to_json(graph), indent=1, sort_keys=True).encode() + b"\n"
    buf = io.BytesIO()
    keys = _param_keys(graph)
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for n in graph.nodes:
            for k in sorted(n.params):
                if keys[(n.name, k)] != f"{n.name}/{k}":
                    continue  # stored under the node that holds it first
                info = zipfile.ZipInfo(f"{n.name}/{k}.npy", date_time=_ZIP_DATE)
                arr = io.BytesIO()
                np.lib.format.write_array(arr, _storage(n.params[k]), allow_pickle=False)
                zf.writestr(info, arr.getvalue())
    return doc, buf.getvalue()


def loads(doc: bytes, npz: bytes, source: str = "<memory>") -> Graph:
    try:
        data = json.loads(doc)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise LoadError(f"not a JSON document ({e.__class__.__name__})", where=source) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise LoadError(f"not an {FORMAT} graph (field 'format')", where=source)
    if data.get("version") != VERSION:
        raise LoadError(f"graph schema version {data.get('version')!r}, this snncc reads version {VERSION}",
                        where=source, hint="recompile the model with this snncc")
    _check_schema(data, source)
    try:
        arrays = np.load(io.BytesIO(npz), allow_pickle=False)
        params_of = {k: arrays[k] for k in arrays.files}
    except Exception as e:  # zipfile/numpy raise many types for corrupt files
        raise LoadError(f"parameter archive unreadable ({e.__class__.__name__}: {e})", where=source) from None
    for key, arr in params_of.items():
        if arr.dtype.kind not in "biuf":
            raise LoadError(f"parameter {key!r} holds {arr.dtype} values, expected numbers", where=source)
    params_of = {k: np.asarray(a, dtype=np.float64) for k, a in params_of.items()}  # once: shared stays shared
    try:
        nodes = []
        for nd in data["nodes"]:
            params = {}
            for k, key in nd["params"].items():
                if key not in params_of:
                    raise LoadError(f"parameter {key!r} missing from the archive", where=source)
                params[k] = params_of[key]
            nodes.append(Node(nd["name"], nd["op"], nd["inputs"], nd["attrs"], params, tuple(nd["shape"]),
                              nd["kind"]))
        g = Graph(nodes, T=data.get("T", 1), meta=data.get("meta", {}))
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
        if not all(isinstance(v, str) for v in nd["params"].values()):
            bad(f"nodes[{i}].params", "must map parameter names to archive keys")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in nd["shape"]):
            bad(f"nodes[{i}].shape", "must list non-negative integers")
