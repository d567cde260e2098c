"""Input samples for `snncc verify`, `simulate` and `estimate`: a data set file or seeded random
inputs, checked before use, cut into batches converted to float64 one at a time so the
executor's memory does not grow with the data set.

Data files (one format, used by the shipped examples; `--data` may also name a folder of such
`.npz`/`.npy` shards, read in name order and streamed shard by shard): an `.npz` holding the inputs as `x`
(or `x_test`) and optional integer labels as `y` (or `y_test`), or an `.npy` array of inputs
(memory-mapped). Inputs are (N, *shape) or (N, T, *shape) ... as the graph takes them:
(N, *shape), or (T, N, *shape) for a T-step model ((N, T, *shape) for a model that takes its
input as (B, T, ...) itself, compiled with `input_layout="BT"`). Empty arrays, non-numeric arrays, NaN or Inf
values and shapes that do not fit the graph are refused in one line naming the file and field.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from snncc.errors import LoadError
from snncc.ir.graph import Graph
from snncc.resources import require_run

X_KEYS = ("x", "x_test")
Y_KEYS = ("y", "y_test")


def shard_files(path: str) -> list[str]:
    """The `.npz`/`.npy` shards of a data-set folder, in name order."""
    files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith((".npz", ".npy")))
    if not files:
        raise LoadError("folder holds no .npz or .npy shards", where=path,
                        hint="save the data set as shards, e.g. np.savez(f'{path}/part-000.npz', x=x, y=y)")
    return files


def read_data(path: str, graph: Graph, samples: int | None = None) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """(inputs, labels or None, whether inputs are (T, N, ...)) from a data file, at most `samples`
    (a folder of shards: all of them, concatenated in name order)."""
    if os.path.isdir(path):
        parts, labels = [], []
        for f in shard_files(path):
            x, y, t_major = read_data(f, graph, samples - sum(p.shape[1 if t_major else 0] for p in parts)
                                      if samples else None)
            parts.append(np.asarray(x))
            labels.append(y)
            if samples and sum(p.shape[1 if t_major else 0] for p in parts) >= samples:
                break
        y = None if any(v is None for v in labels) else np.concatenate(labels)
        return np.concatenate(parts, axis=1 if t_major else 0), y, t_major
    if not os.path.isfile(path):
        raise LoadError("file not found" if not os.path.exists(path) else "is not a file", where=path,
                        hint="pass an .npz with an array x (and labels y), or an .npy array")
    labels = None
    try:
        if path.endswith(".npy"):
            x, field = np.load(path, mmap_mode="r", allow_pickle=False), "array"
        else:
            with np.load(path, allow_pickle=False) as d:
                if not hasattr(d, "files"):
                    raise LoadError("holds one array, not an .npz archive", where=path,
                                    hint="name .npy files *.npy, or save with np.savez(path, x=inputs, y=labels)")
                field = next((k for k in X_KEYS if k in d.files), None)
                if field is None:
                    raise LoadError(f"no input array (fields: {', '.join(d.files) or 'none'})", where=path,
                                    hint="save the inputs as x (and labels as y): np.savez(path, x=inputs, y=labels)")
                x = d[field]
                yk = next((k for k in Y_KEYS if k in d.files), None)
                labels = d[yk] if yk else None
    except LoadError:
        raise
    except Exception as e:  # numpy/zipfile raise many types for corrupt files
        raise LoadError(f"cannot read inputs ({e.__class__.__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})",
                        where=path, hint="pass an .npz with an array x (and labels y), or an .npy array") from None
    where = f"{path}: {field}"
    shape = tuple(graph.inputs[0].shape)
    x = time_major(graph, x)
    if x.dtype.kind not in "biuf":
        raise LoadError(f"holds {x.dtype} values, expected numbers", where=where)
    t_major = graph.T > 1 and x.ndim == len(shape) + 2
    if tuple(x.shape[1:]) != shape and not (t_major and tuple(x.shape[2:]) == shape):
        raise LoadError(f"inputs of shape {tuple(x.shape)} do not match the model's per-sample shape {shape}",
                        where=where, hint="x must be (N, *shape), or (T, N, *shape) for a T-step model")
    n_axis = 1 if t_major else 0
    if x.shape[n_axis] == 0:
        raise LoadError("holds no samples", where=where, hint="pass a data set with at least one sample")
    if samples:
        x = x[:, :samples] if t_major else x[:samples]
    n = int(x.shape[n_axis])
    require_run(graph, n, "running the model", where=where)
    if x.dtype.kind == "f":
        bad = ~np.isfinite(np.asarray(x))
        if bad.any():
            idx = np.argwhere(bad)[0]
            sample = int(idx[n_axis])
            raise LoadError(f"sample {sample} holds NaN or Inf values", where=where,
                            hint="clean the data set; snncc does not compare models on non-finite inputs")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.dtype.kind not in "biu" or labels.shape[0] < n:
            raise LoadError(f"labels of shape {labels.shape} and type {labels.dtype} do not fit {n} samples",
                            where=f"{path}: y", hint="labels are one integer class per sample")
        labels = labels[:n]
    return x, labels, t_major


def time_major(graph: Graph, x):
    """Inputs of a model that takes (B, T, *shape) (`input_layout` "BT") as the executors take
    them, (T, B, *shape); any other input unchanged (a view, no copy)."""
    if graph.meta.get("input_layout") == "BT" and x.ndim == len(graph.inputs[0].shape) + 2:
        return x.transpose(0, 1) if isinstance(x, torch.Tensor) else x.swapaxes(0, 1)
    return x


def random_inputs(graph: Graph, samples: int, seed: int) -> torch.Tensor:
    """The seeded random inputs `verify`, `simulate` and `estimate` draw without --data: spike
    counts in {0, 1, 2} for spike input, N(0, 2^2) for a real-valued image."""
    shape = tuple(graph.inputs[0].shape)
    require_run(graph, samples, "running the model")
    gen = torch.Generator().manual_seed(seed)
    if graph.inputs[0].kind == "spike":
        return torch.randint(0, 3, (samples,) + shape, generator=gen).double()
    return torch.randn((samples,) + shape, generator=gen, dtype=torch.float64) * 2


def inputs(graph: Graph, data: str | None, samples: int, seed: int) -> tuple[torch.Tensor, np.ndarray | None]:
    """All inputs at once as float64 (verify, simulate), and labels when the data set has them."""
    if data:
        x, labels, _ = read_data(data, graph, samples)
        return torch.as_tensor(np.array(x, dtype=np.float64)), labels
    return random_inputs(graph, samples, seed), None


class InputBatches:
    """Iterable of (B, *shape) float64 tensors; `len()` is the number of batches. A folder of
    shards is streamed: one shard is in memory at a time and a batch never spans two shards
    (`shards` lists (file, samples) when `data` is a folder)."""

    def __init__(self, graph: Graph, data: str | None = None, samples: int = 16, batch_size: int | None = None,
                 seed: int = 0):
        self.labels = None
        self.t_major = False  # (T, N, ...) inputs are batched along their second axis
        self.shards: list[tuple[str, int]] = []
        self._graph, self._cached = graph, (None, None)
        if data and os.path.isdir(data):
            left = samples
            for f in shard_files(data):
                x, _, self.t_major = read_data(f, graph, left)
                n = int(x.shape[1 if self.t_major else 0])
                self.shards.append((f, n))
                left = left - n if left else left
                if samples and left <= 0:
                    break
            self.samples = sum(n for _, n in self.shards)
            self.batch_size = max(1, int(batch_size or max(n for _, n in self.shards)))
            self._index = [(k, s) for k, (_, n) in enumerate(self.shards) for s in range(0, n, self.batch_size)]
            return
        if data:
            self.x, self.labels, self.t_major = read_data(data, graph, samples)
        else:
            self.x = random_inputs(graph, samples, seed)
        self.samples = int(self.x.shape[1 if self.t_major else 0])
        if self.samples == 0:
            raise LoadError("no input samples", where=data or "--samples", hint="pass --samples N > 0")
        self.batch_size = max(1, int(batch_size or self.samples))

    def __len__(self) -> int:
        if self.shards:
            return len(self._index)
        return math.ceil(self.samples / self.batch_size)

    def _shard(self, i: int) -> tuple[int, np.ndarray, np.ndarray | None]:
        """(first sample, inputs, labels or None) of the shard (or file) that holds batch i."""
        if not self.shards:
            return i * self.batch_size, self.x, self.labels
        k, s = self._index[i]
        if self._cached[0] != k:
            f, n = self.shards[k]
            self._cached = (k, read_data(f, self._graph, n)[:2])
        return s, *self._cached[1]

    def batch(self, i: int) -> torch.Tensor:
        s, x, _ = self._shard(i)
        b = x[:, s:s + self.batch_size] if self.t_major else x[s:s + self.batch_size]
        return b if isinstance(b, torch.Tensor) else torch.as_tensor(np.array(b, dtype=np.float64))

    def with_labels(self, indices=None):
        """(batch, labels or None) for the batches `indices` (default: all, in order)."""
        for i in range(len(self)) if indices is None else indices:
            yield self.batch(i), self.labels_of(i)

    def labels_of(self, i: int) -> np.ndarray | None:
        """The labels of batch i (None when its file has no y)."""
        s, _, y = self._shard(i)
        return None if y is None else np.asarray(y[s:s + self.batch_size])

    def __iter__(self):
        for i in range(len(self)):
            yield self.batch(i)
