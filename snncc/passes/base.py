"""What every pass returns, small graph-rewriting helpers the passes share, and the "out_channels"
rewrite column of the op registry: the output-channel axis of an op with weights per output channel,
along which a per-channel factor, a batchnorm or a constant folds into those weights (fold_scale,
fold_batchnorm, bias_to_current, the ONNX front end's bias Add); every other op refuses it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from snncc.ir import registry
from snncc.ir.graph import Graph, Node
from snncc.ir.ops import OPS


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


registry.column("out_channels", "rewrite", "the output-channel axis (per sample) of an op with weights per output "
                "channel: a per-channel factor, a batchnorm or a constant after it folds into its weights and bias "
                "(fold_scale, fold_batchnorm, bias_to_current, the ONNX front end)", module="snncc.passes.base")


def _first_axis(node: Node) -> int:  # (C_out, *spatial)
    return 0


def _last_axis(node: Node) -> int:  # (..., N_out)
    return len(node.shape) - 1


registry.implements("conv", rewrite="out_channels")(_first_axis)
registry.implements("linear", rewrite="out_channels")(_last_axis)
registry.refuse(*(op for op in OPS if op not in ("conv", "linear")), rewrite="out_channels",
                why="no weights per output channel: a per-channel factor or constant after it does not fold into it")


def out_channel_axis(node: Node) -> int | None:
    """The output-channel axis (per sample) of an op with weights per output channel (its
    "out_channels" cell), None for any other op."""
    c = registry.cell(node.op, "out_channels")
    return None if c is None or c.refused else c.impl(node)
