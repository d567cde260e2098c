"""Input batches for `snncc estimate`: a data set file (.npz with an array `x`, optional `y`
labels; or a .npy array, memory-mapped) or seeded random inputs, cut into batches converted to
float64 one at a time so the executor's memory does not grow with the data set."""

from __future__ import annotations

import math

import numpy as np
import torch

from snncc.errors import LoadError
from snncc.ir.graph import Graph


class InputBatches:
    """Iterable of (B, *shape) float64 tensors; `len()` is the number of batches."""

    def __init__(self, graph: Graph, data: str | None = None, samples: int = 16, batch_size: int | None = None,
                 seed: int = 0):
        shape = graph.inputs[0].shape
        self.labels = None
        if data:
            try:
                if data.endswith(".npy"):
                    x = np.load(data, mmap_mode="r", allow_pickle=False)
                else:
                    with np.load(data, allow_pickle=False) as d:
                        x = d["x"]
                        self.labels = d["y"] if "y" in d.files else None
            except (OSError, KeyError, ValueError) as e:
                raise LoadError(f"cannot read inputs ({e.__class__.__name__}: {e})", where=data,
                                hint="pass an .npz holding an array named x, or an .npy array") from None
            if tuple(x.shape[1:]) != tuple(shape) and tuple(x.shape[2:]) != tuple(shape):
                raise LoadError(f"inputs of shape {tuple(x.shape)} do not match the model's per-sample shape "
                                f"{tuple(shape)}", where=data, hint="x must be (N, *shape)")
            self.x = x[:samples] if samples else x
        else:  # the same seeded inputs as `snncc simulate` / `verify` draw
            gen = torch.Generator().manual_seed(seed)
            if graph.inputs[0].kind == "spike":
                self.x = torch.randint(0, 3, (samples,) + shape, generator=gen).double()
            else:
                self.x = torch.randn((samples,) + shape, generator=gen, dtype=torch.float64) * 2
        self.samples = int(self.x.shape[0])
        if self.samples == 0:
            raise LoadError("no input samples", where=data or "--samples", hint="pass --samples N > 0")
        self.batch_size = max(1, int(batch_size or self.samples))
        if self.labels is not None:
            self.labels = np.asarray(self.labels)[: self.samples]

    def __len__(self) -> int:
        return math.ceil(self.samples / self.batch_size)

    def batch(self, i: int) -> torch.Tensor:
        s = i * self.batch_size
        b = self.x[s:s + self.batch_size]
        return b if isinstance(b, torch.Tensor) else torch.as_tensor(np.array(b, dtype=np.float64))

    def __iter__(self):
        for i in range(len(self)):
            yield self.batch(i)
