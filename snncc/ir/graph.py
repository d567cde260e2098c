"""`Node` and `Graph`: the spiking IR as plain data, with shape/kind inference and a verifier.

A graph is a list of nodes in topological order; node names are unique. Parameters are float64
numpy arrays (folding passes compute in float64; executors cast). Graph-level attributes:
`T` (training timesteps; stateful neurons carry membrane across them, the output is the mean
over them) and `meta` (free-form provenance: source file, front end, encoding layer).
"""

from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

from snncc.errors import IRError
from snncc.ir.ops import CURRENT, MAX_SUBSTEPS, MAX_T, OPS, REQUIRED, RuleError, host_domain, normalize_attr


_FINITE: set[int] = set()  # ids of immutable parameter arrays already checked finite


def _all_finite(v: np.ndarray) -> bool:
    """np.isfinite over the array, once per immutable array: parameter arrays are read-only and
    shared by every clone of a graph, so each pass's verify would otherwise rescan every weight.
    An array that owns its data is made read-only here, as `Node.clone` would make it (passes
    replace parameter arrays, never write into them), so a fresh weight is scanned once, not twice."""
    if v.base is None and v.flags.writeable:
        v.flags.writeable = False
    cacheable = not v.flags.writeable and v.base is None  # owns its data and cannot change
    if cacheable and id(v) in _FINITE:
        return True
    ok = bool(np.all(np.isfinite(v)))
    if ok and cacheable:
        _FINITE.add(id(v))
        weakref.finalize(v, _FINITE.discard, id(v))
    return ok


@dataclass(eq=False)  # nodes compare by identity (graph surgery looks them up in lists)
class Node:
    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    attrs: dict = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)
    shape: tuple = ()
    kind: str = ""

    def __post_init__(self):
        if self.op not in OPS:
            raise IRError(f"unknown op {self.op!r}", where=f"node {self.name}",
                          hint=f"known ops: {', '.join(sorted(OPS))}")
        spec = OPS[self.op]
        attrs = {}
        for k, v in self.attrs.items():
            if k not in spec.attrs:
                raise IRError(f"op {self.op} has no attribute {k!r}", where=f"node {self.name}",
                              hint=f"attributes: {', '.join(spec.attrs) or 'none'}")
            attrs[k] = normalize_attr(v)
        for k, default in spec.attrs.items():
            if k not in attrs:
                if default is REQUIRED:
                    raise IRError(f"op {self.op} needs attribute {k!r}", where=f"node {self.name}")
                attrs[k] = default
        self.attrs = attrs
        params = {}
        for k, v in self.params.items():
            if k not in spec.params:
                raise IRError(f"op {self.op} has no parameter {k!r}", where=f"node {self.name}")
            params[k] = np.asarray(v, dtype=np.float64)
        for k in spec.required_params:
            if k not in params:
                raise IRError(f"op {self.op} needs parameter {k!r}", where=f"node {self.name}")
        self.params = params
        self.inputs = list(self.inputs)
        self.shape = tuple(self.shape)

    @property
    def spec(self):
        return OPS[self.op]

    def clone(self) -> "Node":
        """A copy of the node that shares its parameter arrays. Parameter arrays are immutable
        (made read-only here): passes replace an array, never write into one, so a clone costs no
        weight copies and copies of one projection (the normal form's private trees) share memory."""
        for v in self.params.values():
            v.flags.writeable = False
        return Node(self.name, self.op, list(self.inputs), copy.deepcopy(self.attrs), dict(self.params),
                    self.shape, self.kind)


class Graph:
    """An ordered collection of nodes. Mutate through the methods so the name index stays right."""

    def __init__(self, nodes: Iterable[Node] = (), T: int = 1, meta: dict | None = None):
        self.nodes: list[Node] = []
        self._by_name: dict[str, Node] = {}
        self.T = int(T)
        self.meta = dict(meta or {})
        for n in nodes:
            self.append(n)

    # ---- access -------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, name: str) -> Node:
        try:
            return self._by_name[name]
        except KeyError:
            raise IRError(f"no node named {name!r}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    @property
    def inputs(self) -> list[Node]:
        return [n for n in self.nodes if n.op == "input"]

    @property
    def output(self) -> Node:
        outs = [n for n in self.nodes if n.op == "output"]
        if len(outs) != 1:
            raise IRError(f"graph has {len(outs)} output nodes, expected exactly one")
        return outs[0]

    def users(self) -> dict[str, list[Node]]:
        """Map node name -> the nodes that consume it (in graph order, once per use)."""
        out: dict[str, list[Node]] = {n.name: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                out[i].append(n)
        return out

    def fresh_name(self, base: str, taken: set | None = None) -> str:
        """`base`, or `base_<i>`, not used by a node of the graph (nor in `taken`)."""
        def used(name):
            return name in self._by_name or (taken is not None and name in taken)

        if not used(base):
            return base
        i = 1
        while used(f"{base}_{i}"):
            i += 1
        return f"{base}_{i}"

    # ---- mutation -----------------------------------------------------------------------
    def append(self, node: Node) -> Node:
        if node.name in self._by_name:
            raise IRError(f"duplicate node name {node.name!r}")
        self.nodes.append(node)
        self._by_name[node.name] = node
        return node

    def insert_before(self, anchor: str, node: Node, *more: Node) -> Node:
        """Insert `node` (and then `more`, in order) right before `anchor`; returns `node`."""
        new = (node,) + more
        for n in new:
            if n.name in self._by_name:
                raise IRError(f"duplicate node name {n.name!r}")
        idx = self.nodes.index(self[anchor])
        self.nodes[idx:idx] = new
        for n in new:
            self._by_name[n.name] = n
        return node

    def insert_after(self, anchor: str, node: Node) -> Node:
        if node.name in self._by_name:
            raise IRError(f"duplicate node name {node.name!r}")
        idx = self.nodes.index(self[anchor])
        self.nodes.insert(idx + 1, node)
        self._by_name[node.name] = node
        return node

    def remove(self, name: str) -> None:
        node = self[name]
        self.nodes.remove(node)
        del self._by_name[name]

    def replace_uses(self, old: str, new: str) -> int:
        count = 0
        for n in self.nodes:
            if old in n.inputs and n.name != new:
                n.inputs = [new if i == old else i for i in n.inputs]
                count += 1
        return count

    def clone(self) -> "Graph":
        return Graph([n.clone() for n in self.nodes], T=self.T, meta=copy.deepcopy(self.meta))

    def toposort(self) -> None:
        """Reorder nodes so every input precedes its user (stable for already-ordered graphs)."""
        done: set[str] = set()
        order: list[Node] = []
        visiting: set[str] = set()

        def visit(n: Node):
            if n.name in done:
                return
            if n.name in visiting:
                raise IRError("graph has a cycle", where=f"node {n.name}")
            visiting.add(n.name)
            for i in n.inputs:
                visit(self[i])
            visiting.discard(n.name)
            done.add(n.name)
            order.append(n)

        for n in list(self.nodes):
            visit(n)
        self.nodes = order

    # ---- inference and verification ------------------------------------------------------
    def infer(self) -> "Graph":
        """Recompute every node's shape and kind from the op table; raise IRError naming the node."""
        seen: dict[str, Node] = {}
        for n in self.nodes:
            self._infer_one(n, seen)
            seen[n.name] = n
        return self

    def infer_last(self) -> Node:
        """Infer only the last node (its inputs are already typed): linear-time graph building."""
        n = self.nodes[-1]
        self._infer_one(n, {i: self[i] for i in n.inputs if i in self._by_name and self[i] is not n})
        return n

    @staticmethod
    def _infer_one(n: Node, seen: dict[str, Node]) -> None:
        spec = n.spec
        nin = len(n.inputs)
        if nin < spec.min_inputs or (spec.max_inputs is not None and nin > spec.max_inputs):
            want = (f"{spec.min_inputs}" if spec.max_inputs == spec.min_inputs
                    else f"{spec.min_inputs}..{spec.max_inputs if spec.max_inputs is not None else 'n'}")
            raise IRError(f"op {n.op} takes {want} inputs, got {nin}", where=f"node {n.name}")
        ins = []
        for i in n.inputs:
            if i not in seen:
                raise IRError(f"input {i!r} is not defined before this node", where=f"node {n.name}")
            ins.append(seen[i])
        try:
            n.kind = spec.kind_rule([m.kind for m in ins], n.attrs)
            n.shape = tuple(int(s) for s in spec.shape_rule([m.shape for m in ins], n.attrs, n.params))
        except RuleError as e:
            raise IRError(f"{n.op}: {e}", where=f"node {n.name}") from None
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError, ZeroDivisionError) as e:
            # attribute values of the wrong type (a corrupt artefact, a hand-built node)
            raise IRError(f"{n.op}: malformed attributes or parameters ({e.__class__.__name__}: {e})",
                          where=f"node {n.name}") from None

    def verify(self) -> "Graph":
        """Check the whole graph: well-formed, well-typed, one output, finite parameters, stored
        shapes/kinds equal to inferred ones."""
        stored = {n.name: (n.shape, n.kind) for n in self.nodes}
        self.infer()
        host = None
        for n in self.nodes:
            if stored[n.name][0] and stored[n.name] != (n.shape, n.kind):
                raise IRError(f"stored shape/kind {stored[n.name]} disagree with inferred {(n.shape, n.kind)}",
                              where=f"node {n.name}")
            if n.spec.host_only and n.kind == CURRENT:  # a max of currents: the input's encoding only
                host = host if host is not None else host_domain(self.nodes)
                if n.name not in host:
                    raise IRError(f"{n.op} of a current that depends on a neuron's spikes: {n.spec.host_only}",
                                  where=f"node {n.name}")
            for k, v in n.params.items():
                if not _all_finite(v):
                    raise IRError(f"parameter {k} has non-finite values", where=f"node {n.name}",
                                  hint="check the checkpoint for NaN/Inf")
        _ = self.output
        if not self.inputs:
            raise IRError("graph has no input node")
        if not 1 <= self.T <= MAX_T:
            raise IRError(f"T must be in 1..{MAX_T}, got {self.T}", where="graph")
        for n in self.neurons():
            if self.T * n.attrs["D"] > MAX_SUBSTEPS:
                raise IRError(f"T x D = {self.T} x {n.attrs['D']} sub-steps is above snncc's bound {MAX_SUBSTEPS}",
                              where=f"node {n.name}", hint="check T and D of the model")
        return self

    def neurons(self) -> list[Node]:
        return [n for n in self.nodes if n.op == "fire"]
