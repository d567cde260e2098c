"""Memory a run will need, estimated before anything large is allocated.

Owns `available_bytes` (what this machine can still give, from /proc/meminfo) and `require`
(refuse in one line, naming what needs the memory, how much, and how much there is). Callers
estimate first and allocate after: a shape of 1x100000x100000 is refused, not attempted.
"""

from __future__ import annotations

import math
import os

from snncc.errors import SnnccError


class ResourceError(SnnccError):
    """A run that would not fit this machine's memory."""


def available_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return 1 << 62  # unknown: do not refuse


def fmt_bytes(n: float) -> str:
    for unit, size in (("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def require(nbytes: float, what: str, where: str | None = None, hint: str | None = None) -> None:
    """Raise ResourceError unless `nbytes` fit in the memory this machine has available."""
    avail = available_bytes()
    if nbytes > avail:
        raise ResourceError(f"{what} needs at least {fmt_bytes(nbytes)}; this machine has {fmt_bytes(avail)} "
                            f"available", where=where, hint=hint)


def tensor_bytes(shape, itemsize: int = 8) -> int:
    return int(math.prod(int(s) for s in shape)) * itemsize


def require_run(graph, samples: int, what: str, where: str = "--samples") -> None:
    """An executor over `graph` on `samples` samples holds at least its input, its widest value
    and that value's successor at once (float64): refuse when even that does not fit."""
    widest = max((tensor_bytes(n.shape) for n in graph.nodes), default=0)
    need = samples * (tensor_bytes(graph.inputs[0].shape) * max(1, graph.T) + 2 * widest)
    require(need, f"{what} of {samples} samples", where=where,
            hint="pass fewer --samples (or --batch-size for estimate)")
