"""Input samples for `snncc verify`, `simulate` and `estimate`: a data set file or seeded random
inputs, checked before use, cut into batches converted to float64 one at a time so the
executor's memory does not grow with the data set.

Data files (one format, used by the shipped examples; `--data` may also name a folder of such
`.npz`/`.npy` shards, read in name order and streamed shard by shard): an `.npz` holding the inputs as `x`
(or `x_test`) and optional integer labels as `y` (or `y_test`), or an `.npy` array of inputs
(memory-mapped). Inputs are (N, *shape) or (N, T, *shape) ... as the graph takes them:
(N, *shape), or (N, T, *shape) / (T, N, *shape) for a T-step model: which axis is T is read from
the shapes (`resolve_layout`; a data set whose shapes allow two readings needs `layout`, the
`--data-layout` flag), and (N * T, *shape), the flattened layout of sinabs, only when named. A
data file means all of it; `samples` takes the first N. Empty arrays, non-numeric arrays, NaN or
Inf values, shapes that do not fit the graph, and non-integer or negative values for a
spike-input graph (`check_values`, shared with the API's tensors) are refused in one line naming
the file and field.

Reading and checking a data file takes numpy only: torch is imported when a batch is made, so a
refused data file costs no torch import (tests/test_cli_imports.py).
"""

from __future__ import annotations

import math
import os
import sys
from typing import TYPE_CHECKING

import numpy as np

from snncc.errors import LoadError
from snncc.ir.graph import Graph
from snncc.resources import require_run

if TYPE_CHECKING:  # annotations only: torch is imported where tensors are made
    import torch

def _is_tensor(x) -> bool:
    """Whether x is a torch tensor, without importing torch (a tensor exists only once torch is)."""
    t = sys.modules.get("torch")
    return t is not None and isinstance(x, t.Tensor)


X_KEYS = ("x", "x_test")
Y_KEYS = ("y", "y_test")
RANDOM_SAMPLES = 16  # seeded random inputs drawn when no data set and no sample count is given
LAYOUTS = {"auto": "read from the shapes", "NT": "(N, T, *shape)", "TN": "(T, N, *shape)",
           "N": "(N, *shape), one frame per sample fed at every timestep",
           "flat": "(N * T, *shape), sample-major (sinabs' flattened batch)"}


def shard_files(path: str) -> list[str]:
    """The `.npz`/`.npy` shards of a data-set folder, in name order."""
    files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith((".npz", ".npy")))
    if not files:
        raise LoadError("folder holds no .npz or .npy shards", where=path,
                        hint="save the data set as shards, e.g. np.savez(f'{path}/part-000.npz', x=x, y=y)")
    return files


def read_data(path: str, graph: Graph, samples: int | None = None, layout: str = "auto",
              info: dict | None = None) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """(inputs, labels or None, whether inputs are (T, N, ...)) from a data file: all of it, or the
    first `samples` (a folder of shards: all of them, concatenated in name order). `layout` is
    one of LAYOUTS; `info`, when given, receives what was read ("total" samples in the file,
    "layout", "shape", "field") for `InputBatches.describe`."""
    if os.path.isdir(path):
        parts, labels = [], []
        for f in shard_files(path):
            x, y, t_major = read_data(f, graph, samples - sum(p.shape[1 if t_major else 0] for p in parts)
                                      if samples else None, layout, info)
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
    if x.dtype.kind not in "biuf":
        raise LoadError(f"holds {x.dtype} values, expected numbers", where=where)
    read_as = resolve_layout(graph, tuple(x.shape), layout, where)
    shape, T = tuple(graph.inputs[0].shape), graph.T
    if info is not None:
        info.update(field=field, shape=tuple(x.shape), layout=read_as)
    if read_as == "NT":
        x = x.swapaxes(0, 1)  # a view: executors take (T, N, *shape)
    elif read_as == "flat":
        x = x.reshape((x.shape[0] // T, T) + shape).swapaxes(0, 1)
    t_major = read_as != "N"
    n_axis = 1 if t_major else 0
    if x.shape[n_axis] == 0:
        raise LoadError("holds no samples", where=where, hint="pass a data set with at least one sample")
    if info is not None:
        info["total"] = info.get("total", 0) + int(x.shape[n_axis])
    if samples:
        x = x[:, :samples] if t_major else x[:samples]
    n = int(x.shape[n_axis])
    require_run(graph, n, "running the model", where=where)
    check_values(graph, x, where, n_axis)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.dtype.kind not in "biu" or labels.shape[0] < n:
            raise LoadError(f"labels of shape {labels.shape} and type {labels.dtype} do not fit {n} samples",
                            where=f"{path}: y", hint="labels are one integer class per sample")
        labels = labels[:n]
    return x, labels, t_major


def resolve_layout(graph: Graph, xshape: tuple, layout: str = "auto", where: str = "--data") -> str:
    """Which of LAYOUTS an input array of shape `xshape` is laid out in, for `graph`: read from the
    shapes when only one reading fits (`layout` "auto"), else the one `layout` names; a reading
    the shapes contradict, or two that both fit, are refused in one line."""
    if layout not in LAYOUTS:
        raise LoadError(f"unknown data layout {layout!r}", where="--data-layout", hint=", ".join(LAYOUTS))
    shape, T = tuple(graph.inputs[0].shape), graph.T
    k = len(xshape) - len(shape)
    if k not in (1, 2) or tuple(xshape[k:]) != shape or (k == 2 and T == 1):
        raise LoadError(f"inputs of shape {xshape} do not match the model's per-sample shape {shape}" +
                        (f" and T = {T}" if T > 1 else ""), where=where,
                        hint="x must be (N, *shape), or (N, T, *shape) / (T, N, *shape) for a T-step model")
    if k == 2:
        fits = [name for name, axis in (("NT", 1), ("TN", 0)) if xshape[axis] == T]
        if layout in ("NT", "TN"):
            if layout not in fits:
                raise LoadError(f"inputs of shape {xshape} read as {LAYOUTS[layout]} have "
                                f"{xshape[1 if layout == 'NT' else 0]} timesteps, the model T = {T}", where=where,
                                hint=f"--data-layout {'TN' if layout == 'NT' else 'NT'}" if fits else None)
            return layout
        if layout != "auto":
            raise LoadError(f"inputs of shape {xshape} have a sample and a time axis, not {LAYOUTS[layout]}",
                            where=where, hint="--data-layout NT or TN")
        if not fits:
            raise LoadError(f"inputs of shape {xshape}: neither leading axis is the model's T = {T}", where=where,
                            hint="x must be (N, T, *shape) or (T, N, *shape)")
        if len(fits) == 2:
            own = {"BT": "NT", "TB": "TN"}.get(graph.meta.get("input_layout", ""))
            if own:
                return own  # the layout the model itself takes
            raise LoadError(f"inputs of shape {xshape} read either as (N, T, *shape) or as (T, N, *shape): "
                            f"both leading axes are {T}", where=where, hint="say which with --data-layout NT or TN")
        return fits[0]
    if layout in ("NT", "TN"):
        raise LoadError(f"inputs of shape {xshape} have no time axis, not {LAYOUTS[layout]}", where=where,
                        hint="--data-layout N or flat" if T > 1 else None)
    if T == 1:
        return "N"
    if layout == "flat":
        if xshape[0] % T:
            raise LoadError(f"{xshape[0]} frames are not a whole number of samples of T = {T} steps", where=where,
                            hint="(N * T, *shape) frames, sample-major")
        return "flat"
    if layout == "N" or graph.inputs[0].kind != "spike":
        return "N"  # a real-valued image is fed at every timestep
    raise LoadError(f"inputs of shape {xshape} for a T = {T} spike model: one frame per sample fed at every "
                    f"timestep, or the (N * T, *shape) frames of a flattened batch (sinabs)?", where=where,
                    hint="say which with --data-layout N or flat, or save x as (N, T, *shape)")


def check_values(graph: Graph, x, where: str, sample_axis: int = 0) -> None:
    """The input check every command and the API share: NaN or Inf values are refused, and a
    spike-input graph takes non-negative integer counts only (one line naming the sample)."""
    a = x.detach().cpu().numpy() if _is_tensor(x) else np.asarray(x)
    if a.dtype.kind not in "biuf":
        raise LoadError(f"holds {a.dtype} values, expected numbers", where=where)
    if a.dtype.kind == "f" and graph.inputs[0].kind == "spike":
        # spike counts are mostly zeros: check the nonzero entries (NaN and Inf among them) and
        # name the first bad one with the full sweep below only when there is one
        nz = a[a != 0]
        if np.isfinite(nz).all() and (nz > 0).all() and np.array_equal(nz, np.floor(nz)):
            return
    if a.dtype.kind == "f":
        bad = ~np.isfinite(a)
        if bad.any():
            sample = int(np.argwhere(bad)[0][sample_axis])
            raise LoadError(f"sample {sample} holds NaN or Inf values", where=where,
                            hint="clean the data set; snncc does not compare models on non-finite inputs")
    if graph.inputs[0].kind != "spike":
        return
    bad = (a < 0) | (a != np.floor(a)) if a.dtype.kind == "f" else (a < 0)
    if bad.any():
        idx = tuple(np.argwhere(bad)[0])
        raise LoadError(f"sample {int(idx[sample_axis])} holds {float(a[idx]):g}: the model takes spike input, "
                        f"non-negative integer event counts per timestep", where=where,
                        hint="pass event counts (binned events), or compile with --input-kind current for "
                             "real-valued input")


def time_major(graph: Graph, x):
    """Inputs of a model that takes (B, T, *shape) (`input_layout` "BT") as the executors take
    them, (T, B, *shape); any other input unchanged (a view, no copy)."""
    if graph.meta.get("input_layout") == "BT" and x.ndim == len(graph.inputs[0].shape) + 2:
        return x.transpose(0, 1) if _is_tensor(x) else x.swapaxes(0, 1)
    return x


def random_inputs(graph: Graph, samples: int | None, seed: int) -> torch.Tensor:
    """The seeded random inputs `verify`, `simulate` and `estimate` draw without --data
    (`samples`, default RANDOM_SAMPLES): spike counts in {0, 1, 2} for spike input, N(0, 2^2) for
    a real-valued image."""
    samples = samples or RANDOM_SAMPLES
    shape = tuple(graph.inputs[0].shape)
    require_run(graph, samples, "running the model")
    import torch

    gen = torch.Generator().manual_seed(seed)
    if graph.inputs[0].kind == "spike":
        return torch.randint(0, 3, (samples,) + shape, generator=gen).double()
    return torch.randn((samples,) + shape, generator=gen, dtype=torch.float64) * 2


def inputs(graph: Graph, data: str | None, samples: int | None, seed: int,
           layout: str = "auto") -> tuple[torch.Tensor, np.ndarray | None]:
    """All inputs at once as float64 (verify, simulate), and labels when the data set has them:
    the whole data set, or its first `samples`."""
    if data:
        x, labels, _ = read_data(data, graph, samples, layout)
        import torch

        return torch.as_tensor(np.array(x, dtype=np.float64)), labels
    return random_inputs(graph, samples, seed), None


class InputBatches:
    """Iterable of (B, *shape) float64 tensors; `len()` is the number of batches. A folder of
    shards is streamed: one shard is in memory at a time and a batch never spans two shards
    (`shards` lists (file, samples) when `data` is a folder). `data` means all of it; `samples`
    takes the first N (random inputs: RANDOM_SAMPLES when not given)."""

    def __init__(self, graph: Graph, data: str | None = None, samples: int | None = None,
                 batch_size: int | None = None, seed: int = 0, layout: str = "auto"):
        self.labels = None
        self.t_major = False  # (T, N, ...) inputs are batched along their second axis
        self.shards: list[tuple[str, int]] = []
        self._graph, self._cached, self._layout = graph, (None, None), layout
        self.data, self.seed, self.info = data, seed, {}
        if data and os.path.isdir(data):
            left = samples
            for f in shard_files(data):
                x, y, self.t_major = read_data(f, graph, left, layout, self.info)
                n = int(x.shape[1 if self.t_major else 0])
                self.shards.append((f, n))
                self.info["labelled"] = self.info.get("labelled", True) and y is not None
                left = left - n if left else left
                if samples and left <= 0:
                    break
            self.samples = sum(n for _, n in self.shards)
            if len(self.shards) < len(shard_files(data)):
                self.info["total"] = None  # the later shards were not read
            self.batch_size = max(1, int(batch_size or max(n for _, n in self.shards)))
            self._index = [(k, s) for k, (_, n) in enumerate(self.shards) for s in range(0, n, self.batch_size)]
            return
        if data:
            self.x, self.labels, self.t_major = read_data(data, graph, samples, layout, self.info)
            self.info["labelled"] = self.labels is not None
        else:
            self.x = random_inputs(graph, samples, seed)
        self.samples = int(self.x.shape[1 if self.t_major else 0])
        if self.samples == 0:
            raise LoadError("no input samples", where=data or "--samples", hint="pass --samples N > 0")
        self.batch_size = max(1, int(batch_size or self.samples))

    def describe(self) -> str:
        """The one line saying which inputs a run uses: how many samples of which file (all of it
        or the first N), the layout they were read in, and whether they carry labels."""
        if not self.data:
            return f"inputs: {self.samples} random samples, seed {self.seed}"
        i, total = self.info, self.info.get("total")
        what = (f"all {self.samples} samples" if total == self.samples
                else f"the first {self.samples} samples" + (f" of {total}" if total else ""))
        src = f"{len(self.shards)} shards of {self.data}" if self.shards else self.data
        read = (f", {i['field']} {tuple(i['shape'])} read as {LAYOUTS[i['layout']]}"
                if self._graph.T > 1 or i["layout"] != "N" else "")
        return f"inputs: {what} of {src}{read}, " + ("labelled" if i.get("labelled") else "no labels")

    def all(self) -> tuple[torch.Tensor, np.ndarray | None]:
        """Every batch concatenated (verify and the target simulators take the data set at once)
        and the labels (None unless every batch has them)."""
        if len(self) == 1:
            return self.batch(0), self.labels_of(0)
        import torch

        xs, ys = zip(*self.with_labels())
        return (torch.cat(xs, dim=1 if self.t_major else 0),
                None if any(y is None for y in ys) else np.concatenate(ys))

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
            self._cached = (k, read_data(f, self._graph, n, self._layout)[:2])
        return s, *self._cached[1]

    def batch(self, i: int) -> torch.Tensor:
        s, x, _ = self._shard(i)
        b = x[:, s:s + self.batch_size] if self.t_major else x[s:s + self.batch_size]
        if _is_tensor(b):
            return b
        import torch

        return torch.as_tensor(np.array(b, dtype=np.float64))

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
