"""What every pass returns, and small graph-rewriting helpers the passes share."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from snncc.ir.graph import Graph, Node


@dataclass
class PassResult:
    graph: Graph
    changes: list[str] = field(default_factory=list)
    report: dict = field(default_factory=dict)  # structured facts a pass wants to surface


def single_user(graph: Graph, name: str, users: dict | None = None) -> Node | None:
    users = users if users is not None else graph.users()
    us = users[name]
    return us[0] if len(us) == 1 else None


def bypass(graph: Graph, node: Node) -> None:
    """Remove a single-input node, connecting its users to its input."""
    graph.replace_uses(node.name, node.inputs[0])
    graph.remove(node.name)


def batchnorm_affine(bn: Node) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) with batchnorm(x) = a x + b per channel, in float64."""
    p = bn.params
    a = p["weight"] / np.sqrt(p["var"] + bn.attrs["eps"])
    return a, p["bias"] - p["mean"] * a


def channel_factor(factor: np.ndarray, shape: tuple, axis: int) -> np.ndarray | None:
    """Return a per-channel vector if `factor` (broadcast to `shape`) varies only along `axis`."""
    full = np.broadcast_to(factor, shape)
    axis = axis % len(shape)
    idx = [0] * len(shape)
    idx[axis] = slice(None)
    vec = np.asarray(full[tuple(idx)], dtype=np.float64)
    bshape = [1] * len(shape)
    bshape[axis] = -1
    if np.array_equal(full, np.broadcast_to(vec.reshape(bshape), shape)):
        return vec
    return None


def out_channel_axis(node: Node) -> int:
    """The channel axis of a conv/linear output (per-sample)."""
    return 0 if node.op == "conv" else len(node.shape) - 1
