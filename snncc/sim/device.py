"""Where the executors compute: `--device cpu` (default) or `cuda[:N]` when a GPU is present.

Owns `resolve` (one-line refusal of an unknown or absent device), `use` (a context in which the
reference executor, the synchronous simulator and the estimator create their tensors on that
device: torch's default device) and `to_cpu` (results come back on the CPU, so they compare with
every other result). Integer spike counts are exact on any device; float64 sums may associate
differently on a GPU, which the simulators' equality checks then report, not hide.
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch

from snncc.errors import SnnccError


def resolve(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise SnnccError(f"unknown device {device!r}", where="--device", hint="cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SnnccError("no CUDA device is available here", where="--device", hint="use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SnnccError(f"cuda:{dev.index} does not exist ({torch.cuda.device_count()} GPU(s))", where="--device")
    elif dev.type != "cpu":
        raise SnnccError(f"device type {dev.type!r} is not supported", where="--device", hint="cpu or cuda")
    return dev


@contextlib.contextmanager
def use(device: str | torch.device | None):
    dev = resolve(device)
    if dev.type == "cpu":
        yield dev
        return
    before = torch.get_default_device()
    torch.set_default_device(dev)
    try:
        yield dev
    finally:
        torch.set_default_device(before)


def to_cpu(result):
    """A result dataclass with every tensor (also inside dicts) moved to the CPU."""
    def move(v):
        if isinstance(v, torch.Tensor):
            return v.cpu()
        if isinstance(v, dict):
            return {k: move(x) for k, x in v.items()}
        return v

    if dataclasses.is_dataclass(result):
        for f in dataclasses.fields(result):
            setattr(result, f.name, move(getattr(result, f.name)))
    return result
