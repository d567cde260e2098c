"""Provenance of folded parameters: arrays the passes computed as `base * factor` (elementwise,
broadcast), remembered so that an artefact stores the model's own array once (at its precision,
usually float32) plus the small factors, and the loader recomputes the same float64 products bit
for bit (IEEE multiplication is correctly rounded, so the same operands in the same order give the
same bits on every machine).

`scaled(w, f)` is the one way a pass folds a factor into a weight. A chain of folds (BatchNorm,
then 1/D, then a scale) is recorded flat, as (root, [f1, f2, ...]) with the product taken left to
right, so intermediate products are not kept alive. Entries die with their array (weak
references); `origin(a)` answers for a live array only.
"""

from __future__ import annotations

import weakref

import numpy as np

# id(result) -> (weakref to result, root array, factors in order)
_ORIGIN: dict[int, tuple[weakref.ref, np.ndarray, tuple[np.ndarray, ...]]] = {}


def _forget(key: int, ref: weakref.ref, table=_ORIGIN) -> None:
    e = table.get(key)  # `table` bound at definition: still there while the interpreter shuts down
    if e is not None and e[0] is ref:
        del table[key]


def record(result: np.ndarray, root: np.ndarray, factors: tuple[np.ndarray, ...]) -> np.ndarray:
    """Remember that `result` == root * factors[0] * factors[1] ... (left to right, float64)."""
    key = id(result)
    ref = weakref.ref(result, lambda r, key=key, forget=_forget: forget(key, r))  # bound: safe at shutdown
    _ORIGIN[key] = (ref, root, tuple(factors))
    return result


def origin(a: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, ...]] | None:
    """(root, factors) if `a` is a recorded product that is still alive, else None."""
    e = _ORIGIN.get(id(a))
    if e is None or e[0]() is not a:
        return None
    return e[1], e[2]


def product(root: np.ndarray, factors) -> np.ndarray:
    """root * factors[0] * ... in float64, left to right: how `scaled` chains compute, and how the
    loader recomputes a stored chain."""
    out = np.asarray(root, dtype=np.float64)
    for f in factors:
        out = out * f
    return out


def scaled(w: np.ndarray, factor) -> np.ndarray:
    """w * factor in float64 (factor broadcast against w: a scalar or a per-channel column), recorded."""
    f = np.array(factor, dtype=np.float64)  # a private copy: a later write to the caller's array cannot change it
    f.flags.writeable = False
    w64 = np.asarray(w, dtype=np.float64)
    out = w64 * f
    prev = origin(w)
    if prev is not None:
        return record(out, prev[0], prev[1] + (f,))
    return record(out, w, (f,))
