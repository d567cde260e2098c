"""fold_layout: constant folding of data-movement ops, and the "fold_layout" rewrite column of the
op registry (per layout op: when it is the identity, and how two of it in a row compose).

Requires: nothing. Changes: a reshape to the shape it already has and an identity permutation
disappear; reshape-of-reshape becomes one reshape; permute-of-permute becomes one permute
(when the inner one has no other user). Preserves: every value (layout only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from snncc.ir import registry
from snncc.ir.graph import Graph, Node
from snncc.ir.ops import OPS
from snncc.passes.base import PassResult, bypass, single_user

registry.column("fold_layout", "rewrite", "fold_layout (passes/fold_layout): when a layout op is the identity, and "
                                          "how it absorbs a producer of the same op", module="snncc.passes.fold_layout")


@dataclass(frozen=True)
class LayoutFold:
    identity: Callable[[Node, Node], bool]  # (node, its input) -> the node moves nothing
    compose: Callable[[Node, Node], None]  # (inner, outer): the outer's attributes become inner then outer


def _reshape_identity(n: Node, src: Node) -> bool:
    return tuple(n.attrs["shape"]) == src.shape


def _permute_identity(n: Node, src: Node) -> bool:
    return tuple(n.attrs["dims"]) == tuple(range(len(n.shape)))


def _reshape_compose(inner: Node, outer: Node) -> None:  # the outer shape is the result already
    pass


def _permute_compose(inner: Node, outer: Node) -> None:
    outer.attrs["dims"] = tuple(inner.attrs["dims"][d] for d in outer.attrs["dims"])


registry.implement("reshape", LayoutFold(_reshape_identity, _reshape_compose), rewrite="fold_layout",
                   where="snncc.passes.fold_layout (identity shape, reshape of a reshape)")
registry.implement("permute", LayoutFold(_permute_identity, _permute_compose), rewrite="fold_layout",
                   where="snncc.passes.fold_layout (identity permutation, permutations composed)")
registry.refuse(*(op for op, s in OPS.items() if not s.layout), rewrite="fold_layout",
                why="not a layout op (OpSpec.layout): it computes values, it does not only move them")


def fold_layout(graph: Graph) -> PassResult:
    g = graph.clone()
    changes = []
    changed = True
    while changed:
        changed = False
        users = g.users()
        for n in g.nodes:
            if not n.spec.layout:
                continue
            rule = registry.lookup(n.op, "fold_layout", where=f"node {n.name}")
            src = g[n.inputs[0]]
            if rule.identity(n, src):
                bypass(g, n)
                changes.append(f"removed identity {n.op} {n.name}")
                changed = True
                break
            if src.op == n.op and single_user(g, src.name, users) is n:
                rule.compose(src, n)
                n.inputs = [src.inputs[0]]
                g.remove(src.name)
                changes.append(f"merged {src.name} into {n.name}")
                changed = True
                break
    return PassResult(g.verify(), changes)
