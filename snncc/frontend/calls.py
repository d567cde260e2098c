"""The small vocabulary every front end shares: `Call` (one fx node reduced to a canonical
operation with plain arguments) and `where` (an fx node's module path and source line, the
`where` of every front-end error). Kept apart from the converter so the peer-framework readers and
the time-loop folding can use them without importing the converter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch.fx as fx


@dataclass
class Call:
    """One fx node reduced to a canonical operation with plain arguments."""

    op: str
    args: tuple
    kwargs: dict


def where(n: fx.Node) -> str:
    """Module path and source line of an fx node, as fx recorded them."""
    parts = [f"fx node {n.name!r}"]
    stack = n.meta.get("nn_module_stack")
    if stack:
        path, cls = list(stack.values())[-1]
        cls = cls if isinstance(cls, str) else getattr(cls, "__qualname__", str(cls))
        parts.append(f"module {path or '<root>'} ({cls.rsplit('.', 1)[-1]})")
    trace = n.meta.get("stack_trace")
    if trace:
        files = re.findall(r'File "([^"]+)", line (\d+)', trace)
        if files:
            f, line = files[-1]
            parts.append(f"{f}:{line}")
    return ", ".join(parts)
