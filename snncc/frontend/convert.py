"""Maps a torch.fx graph (ATen-level from `torch.export`, or module-level from `symbolic_trace`)
onto the spiking IR.

Both front ends reduce each fx node to a canonical call (`conv`, `linear`, `batchnorm`, `add`,
`mul`, `div`, `matmul`, `mean`, `pool`, `reshape`, `permute`, `identity`, `clamp`, `round`,
`floor`, `neuron`) and this module turns those into IR nodes. SFA neurons are recognised by
pattern (`clamp(x, 0, D) -> round -> div Norm`, `clamp -> add 0.5 -> floor -> div`, with or
without the div) or, when the module is at hand, by class.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx as fx

from snncc.errors import FrontendError
from snncc.frontend.calls import Call, where
from snncc.frontend.time_loop import Lin, StepBuffer, TimeLoop, _num, is_step_value
from snncc.ir.analysis import host_domain
from snncc.ir.graph import Graph, Node
from snncc.ir.ops import CURRENT, SPIKE, takes_operand, tuple_n


_LEAF_MODULES = ("Conv1d", "Conv2d", "Linear", "BatchNorm1d", "BatchNorm2d", "AvgPool2d", "AdaptiveAvgPool2d",
                 "Flatten", "SumPool2d")


# layers that may run inside a loop over T on one step's value (TimeLoop.layer)
LOOP_LAYERS = ("conv", "linear", "batchnorm", "reshape", "pool", "max_pool", "flatten")


def node_base_name(fxn: fx.Node | None, op: str) -> str:
    """Name IR nodes after the module that produced them: `stage1.0.conv` -> `stage1_0_conv`."""
    if fxn is None:
        return op
    stack = fxn.meta.get("nn_module_stack")
    if fxn.op == "call_module":
        return str(fxn.target)
    if stack:
        path, cls = list(stack.values())[-1]
        cls = cls if isinstance(cls, str) else getattr(cls, "__qualname__", str(cls))
        cls = cls.rsplit(".", 1)[-1]
        if path and (cls in _LEAF_MODULES or cls in neuron_module_classes()):
            return path
        if path:
            return f"{path}.{fxn.name}"
    return fxn.name


def neuron_module_classes() -> tuple[str, ...]:
    return ("SFANeuron",)


# the ops a PooledCurrent passes through (or a neuron reads it); any other op reading it is refused
HOLDS_POOLED = ("max_pool", "cat", "reshape", "identity", "item", "neuron", "clamp", "peer_neuron")


@dataclass
class PooledCurrent:
    """A current held back because a max is no synaptic sum (of a current that depends on a neuron's
    spikes; a max of the input's encoding, host domain, is a plain `max_pool`): `max_pool` of
    `args[0]`, or `cat` of `args` along `attrs["axis"]` (SpikeYOLO's SPPF: cat(x, mp(x), mp(mp(x)),
    ...)); each arg is an IR
    node (a current) or another PooledCurrent. A stateless SFA neuron (clamp -> round) is monotone
    and acts per value, so it commutes with max pooling and with placement: neuron(tree(u)) =
    tree(neuron(u)). c_neuron fires once on each source current and rebuilds the tree on its spikes
    (max pooling of spikes, offsets); anything else reading it is refused (`Converter.tensor`)."""
    op: str
    args: tuple
    attrs: dict
    shape: tuple
    where: str


@dataclass
class SpikeBN:
    """BatchNorm applied directly to spikes, `a * s + b` per channel, waiting for the conv that
    consumes it (research code's BNAndPadLayer: the next conv's padding is filled with b, so the
    BN folds into that conv exactly, border included)."""
    src: str  # the spike tensor (IR node name)
    scale: np.ndarray  # a (C,)
    shift: np.ndarray  # b (C,)
    where: str
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)  # (left, right, top, bottom) filled with ...
    filled: set = field(default_factory=set)  # ... b on these borders ("left", "right", "top", "bottom")


@dataclass
class Placement:
    """A tensor of zeros whose slices along one per-sample axis are written (`out = zeros(...);
    out[:, :c] = y`, in place or as torch's functional `slice_scatter`): each written source sits at
    its offset, the rest stays 0 (IR `offset`s summed, like torch.cat). `node` once it is read."""
    shape: tuple  # per sample
    lead: tuple
    where: str
    parts: list = field(default_factory=list)  # (axis, start, end, IR node)
    node: str | None = None

    def placed(self, axis: int, start: int, end: int, src: str, fxn) -> None:
        if self.node is not None:
            raise FrontendError("a slice is written after the tensor was read", where=where(fxn),
                                hint="fill every slice before using the tensor")
        for a, s0, e0, _ in self.parts:
            if a != axis:
                raise FrontendError(f"slices written along axes {a} and {axis} of one tensor", where=where(fxn),
                                    hint="place sources along one axis (channels), as torch.cat does")
            if start < e0 and s0 < end:
                raise FrontendError(f"slice {start}:{end} overwrites slice {s0}:{e0} of the same tensor",
                                    where=where(fxn), hint="write each slice once")
        self.parts.append((axis, start, end, src))


@dataclass
class PadFill:
    """The borders of a padded current map filled in place so far (`copy_` into its slices): the
    pad node takes the fill as its per-channel value once every padded border holds it."""
    name: str  # the pad node
    pad: tuple[int, int, int, int]  # (left, right, top, bottom)
    where: str
    value: np.ndarray | None = None
    filled: set = field(default_factory=set)

    def missing(self) -> set:
        need = {k for k, p in zip(("left", "right", "top", "bottom"), self.pad) if p}
        return need - self.filled

    def complete(self) -> bool:
        return self.value is not None and not self.missing()


def _border(pad, dim, start, end, step, fxn) -> str:
    """Which padded border (left, right, top, bottom) the slice `start:end` of axis `dim` is."""
    l, r, t, b = pad
    p = {2: (t, b), 3: (l, r)}.get(dim)
    if p is None or step != 1:
        raise FrontendError(f"copy into axis {dim} of a padded map", where=where(fxn))
    lo, hi = p
    if (start in (0, None)) and end == lo:
        return "top" if dim == 2 else "left"
    if start == -hi and (end is None or end >= 1 << 62):
        return "bottom" if dim == 2 else "right"
    raise FrontendError(f"copy into rows {start}:{end} of axis {dim} is not a padded border", where=where(fxn))


def _per_channel(vals: np.ndarray, vec: np.ndarray) -> np.ndarray | None:
    """`vec` (C,) laid out like `vals` ((..., C, h, w)), or a mismatch sentinel when it cannot be."""
    if vals.ndim in (3, 4) and vals.shape[vals.ndim - 3] == vec.size:
        return np.broadcast_to(vec.reshape((1,) * (vals.ndim - 3) + (-1, 1, 1)), vals.shape)
    return np.full(vals.shape, np.nan)


def _channel_vector(vals: np.ndarray, c: int) -> np.ndarray | None:
    """The per-channel vector a fill `vals` ((..., C, h, w), or a scalar) holds, or None if it varies
    along the border."""
    if vals.ndim == 0:
        return np.full(c, float(vals))
    if vals.ndim not in (3, 4) or vals.shape[vals.ndim - 3] != c:
        return None
    flat = vals.reshape(-1, c, vals.shape[-2] * vals.shape[-1]) if vals.ndim == 4 else vals.reshape(1, c, -1)
    vec = flat[0, :, 0]
    return vec if np.array_equal(flat, np.broadcast_to(vec[None, :, None], flat.shape)) else None


def _pending(v) -> bool:
    if isinstance(v, Placement):
        return True
    """A value the converter holds back for a later op (a spike BatchNorm, a slice of it)."""
    return isinstance(v, SpikeBN) or is_step_value(v) or (
        isinstance(v, tuple) and bool(v) and (isinstance(v[0], str) and v[0] == "slice" or is_step_value(v[0])))


def output_heads(out, leaf=lambda v: isinstance(v, (fx.Node, torch.Tensor))) -> list:
    """The values of a model's output that are deployed: every element of a flat tuple or list of
    tensors (several outputs: a backbone + neck's feature levels), otherwise its first tensor (the
    prediction of `(logits, extras...)`, where the extras are nested structures). One rule for the
    front ends (fx nodes) and the eager model (tensors)."""
    if isinstance(out, (tuple, list)) and len(out) > 1 and all(leaf(o) for o in out):
        return list(out)
    while isinstance(out, (tuple, list)) and out:
        out = out[0]
    return [out]


def pack_outputs(heads: list[torch.Tensor]) -> torch.Tensor:
    """Several outputs as the deployed graph's one output: each (B, ...) flattened per sample, in
    order, concatenated (`Graph.meta["outputs"]` says where each one sits)."""
    if len(heads) == 1:
        return heads[0]
    return torch.cat([h.reshape(h.shape[0], -1) for h in heads], 1)


def needed_nodes(nodes, out) -> set:
    """The fx nodes the deployed output(s) (an fx node or a list of them) depend on, with the
    in-place copies into them: what a model computes only for its other outputs (extras,
    statistics) is never converted."""
    def ancestors(start, keep):
        stack = list(start)
        while stack:
            n = stack.pop()
            if n in keep:
                continue
            keep.add(n)
            stack.extend(a for a in n.all_input_nodes)

    keep: set = set()
    ancestors(list(out) if isinstance(out, (list, tuple)) else [out], keep)
    inplace = [n for n in nodes if n.args and isinstance(n.args[0], fx.Node) and (
        n.target is operator.setitem or (n.op in ("call_function", "call_method") and str(
            n.target if n.op == "call_method" else getattr(n.target, "__name__", "")).split(".")[0].endswith("_")))]
    changed = True
    while changed:
        changed = False
        for n in inplace:
            if n in keep:
                continue
            dst = n.args[0]
            while dst not in keep and dst.args and isinstance(dst.args[0], fx.Node):
                dst = dst.args[0]  # through the views (select, slice) to the written tensor
            if dst in keep:
                ancestors([n], keep)
                changed = True
    return keep


class Converter:
    """Builds a Graph from canonical calls. `values` maps fx node -> IR node name or constant."""

    def __init__(self, input_kind: str = CURRENT, root: torch.nn.Module | None = None):
        self.graph = Graph()
        self.values: dict[fx.Node, Any] = {}
        self.input_kind = input_kind
        self.root = root
        self.batch: int | None = None
        # Leading (non-sample) axes of each value, research-code style: ("B",) by default; a model
        # that adds a time axis itself (`x.unsqueeze(0).repeat(T, 1, ...)`) has values laid out
        # ("1", "B"), ("T", "B"), ("B", "T") or merged ("TB",) for its convs; every timestep holds the
        # same per-sample content until the mean over T, so the graph runs T identical windows.
        self.lead: dict[fx.Node, tuple[str, ...]] = {}
        self.T: int | None = None
        self.layout = ""  # "TB" / "BT" when the model's input carries the time axis itself
        self.time_reduced: set[fx.Node] = set()  # values past a mean over T (only affine ops may follow)
        self._batch_first_output = ""  # the first output read batch-first (outputs may not mix it with (T, B, ...))
        self._out_lead: tuple[str, ...] | None = None
        self._padded: dict[fx.Node, SpikeBN] = {}
        self._pad_fill: dict[str, PadFill] = {}  # pad node -> its borders filled in place so far
        self._consumed: set[fx.Node] = set()
        self._counter: dict[str, int] = {}
        self.loop = TimeLoop(self)  # neurons written as a Python loop over T (time_loop.py)
        self.live: set | None = None  # the fx nodes the output needs (None: all); dead users match no pattern

    # ---- helpers ------------------------------------------------------------------------
    def name(self, base: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_]", "_", base).strip("_") or "n"
        return self.graph.fresh_name(base)

    def add(self, fxn: fx.Node | None, op: str, inputs, attrs=None, params=None, base: str | None = None) -> str:
        nm = self.name(base or node_base_name(fxn, op))
        node = Node(nm, op, list(inputs), attrs or {}, params or {})
        self.graph.append(node)
        try:
            self.graph.infer_last()
        except FrontendError:
            raise
        except Exception as e:  # IRError from inference: re-raise pointing at the model code
            raise FrontendError(f"{getattr(e, 'what', e)}", where=where(fxn) if fxn is not None else nm) from None
        return nm

    def is_tensor(self, v) -> bool:
        return isinstance(v, str)

    def const(self, v, fxn: fx.Node, what: str) -> np.ndarray:
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu()
            if t.dtype in (torch.float32, torch.float64, torch.int64, torch.int32, torch.bool):
                # numpy's float64 copy owns its memory (a torch-backed array does not), so graph
                # verification checks it finite once, not once per pass (snncc.ir.graph._all_finite)
                return t.numpy().astype(np.float64)
            return t.double().numpy()
        if isinstance(v, (int, float)):
            return np.asarray(float(v))
        raise FrontendError(f"expected a constant {what}, got an activation tensor", where=where(fxn),
                            hint="only parameters and numbers may be used here")

    def lead_sizes(self, lead: tuple[str, ...]) -> tuple[int, ...]:
        size = {"B": self.batch, "T": self.T, "1": 1, "TB": (self.T or 1) * (self.batch or 1)}
        return tuple(size[a] for a in lead)

    def lead_in(self, fxn: fx.Node) -> tuple[str, ...]:
        """The leading axes of `fxn`'s first activation input (through nodes a pattern consumed,
        e.g. the clamp and round of a neuron, which have no layout of their own)."""
        seen = set()
        args = list(getattr(fxn, "args", ())) + list(getattr(fxn, "kwargs", {}).values())  # ONNX refs have none
        stack = [a for a in args if isinstance(a, fx.Node)]
        while stack:
            a = stack.pop(0)
            if a in seen:
                continue
            seen.add(a)
            if a in self.lead:
                return self.lead[a]
            if a in self._consumed or a not in self.values:
                stack.extend(x for x in a.args if isinstance(x, fx.Node))
        return ("B",)

    def _shape(self, fxn: fx.Node) -> tuple[int, ...]:
        val = fxn.meta.get("val", fxn.meta.get("tensor_meta"))
        return tuple(int(s) for s in val.shape)

    def per_sample_shape(self, fxn: fx.Node) -> tuple[int, ...]:
        """The per-sample shape of `fxn`'s value; a reshape may also move between time/batch
        layouts ((T, B, ...) <-> (T*B, ...)), which sets the layout of its result."""
        shape = self._shape(fxn)
        src = self.lead_in(fxn)
        numel = math.prod(self._shape_of_input(fxn)[len(src):]) if getattr(fxn, "args", ()) else None
        cands = [src] + ([("T", "B"), ("TB",), ("B", "T"), ("B",)] if self.T else [("1", "B"), ("B",)])
        # a program exported at batch 1 fits several layouts ((T, 1, C, H, W) is (T, B) or (T*B,) with
        # a leading 1): a reshape that keeps the per-sample shape only moves between layouts, and
        # (T*B, ...) reshaped to (T, 1, ...) is research code's x.reshape(T, B, ...)
        same = [c for c in cands if tuple(shape[len(c):]) == tuple(self._shape_of_input(fxn)[len(src):])]
        split = [("T", "B")] if src == ("TB",) else []
        for lead in same + split + cands:
            sizes = self.lead_sizes(lead)
            if None in sizes or tuple(shape[:len(lead)]) != sizes:
                continue
            if numel is not None and math.prod(shape[len(lead):]) != numel:
                continue
            if lead != src and "T" in "".join(src + lead) and {"TB"} & set(src + lead) and \
                    not ({src, lead} <= {("T", "B"), ("TB",)}):
                continue  # (B, T) and (T*B) do not merge in that order
            self._out_lead = lead
            return shape[len(lead):]
        raise FrontendError(f"op changes the batch axis (shape {shape}, batch {self.batch}"
                            f"{', T ' + str(self.T) if self.T else ''})", where=where(fxn),
                            hint="keep the batch (and a time axis) leading; reshapes may only merge or split "
                                 "(T, B) and T*B")

    def _shape_of_input(self, fxn: fx.Node) -> tuple[int, ...]:
        for a in getattr(fxn, "args", ()):
            if isinstance(a, fx.Node):
                return self._shape(a)
        return ()

    def axis(self, d: int, rank: int, fxn: fx.Node) -> int:
        """Turn a batched axis into a per-sample axis (rank: the per-sample rank)."""
        nl = len(self.lead_in(fxn))
        d = d + rank + nl if d < 0 else d
        if d < nl:
            raise FrontendError("op acts on the batch axis", where=where(fxn))
        return d - nl

    # ---- the conversion -------------------------------------------------------------------
    def input(self, fxn: fx.Node, shape: tuple[int, ...]):
        lead = ("B",) if not self.layout else tuple(self.layout)  # "TB" / "BT": the model's own time axis
        if self.batch is None:
            self.batch = shape[lead.index("B")]
        if self.T and "T" in lead and shape[lead.index("T")] != self.T:
            raise FrontendError(f"input of shape {shape} has no time axis of length T = {self.T} ({self.layout})",
                                where=where(fxn))
        self.lead[fxn] = lead
        nm = self.add(fxn, "input", [], {"kind": self.input_kind, "shape": tuple(shape[len(lead):])}, base="input")
        self.values[fxn] = nm

    def output(self, fxn: fx.Node, v, src: fx.Node | None = None):
        self.add(fxn, "output", [self._output_value(fxn, v, src, "model output")], base="output")

    def outputs(self, fxn: fx.Node, vs: list, srcs: list):
        """Several outputs (`output_heads`): each flattened per sample and placed at its offset of
        one output vector, so every executor and target deploys them as one read-out; their names,
        shapes and offsets go to `graph.meta["outputs"]`, where verify and the reports split them."""
        if len(vs) == 1:
            return self.output(fxn, vs[0], srcs[0])
        parts = []
        for i, (v, src) in enumerate(zip(vs, srcs)):
            v = self._output_value(fxn, v, src, f"output {i} of {len(vs)} (the model returns {len(vs)} tensors; "
                                                f"none may be dropped)")
            shape = self.graph[v].shape
            flat = v if len(shape) == 1 else self.add(fxn, "reshape", [v], {"shape": (math.prod(shape),)},
                                                      base=f"output{i}_flat")
            parts.append((v, shape, flat))
        size = sum(math.prod(s) for _, s, _ in parts)
        placed, levels, at = [], [], 0
        for i, (v, shape, flat) in enumerate(parts):
            placed.append(self.add(fxn, "offset", [flat], {"axis": 0, "at": at, "size": size}, base=f"output{i}"))
            levels.append({"name": f"output{i}", "node": v, "shape": list(shape), "at": at})
            at += math.prod(shape)
        self.add(fxn, "output", [self.add(fxn, "add", placed, base="outputs")], base="output")
        self.graph.meta["outputs"] = levels

    def _output_value(self, fxn: fx.Node, v, src: fx.Node | None, what: str) -> str:
        if isinstance(v, Placement):
            v = self.placement_node(fxn, v)
        v = self.tensor(v, fxn) if isinstance(v, PooledCurrent) else v  # refused: a max of currents
        if not self.is_tensor(v):
            raise FrontendError(f"{what} is not a tensor computed from the input", where=where(fxn))
        lead = self.lead.get(src, ("B",)) if src is not None else ("B",)
        if sorted(lead) == ["1", "B"]:
            # multi-step code run at T = 1 (`x.unsqueeze(0)` then SeqToANNContainer-style layers: the
            # SDT-V3 detection backbone and neck return (1, B, C, H, W) levels): the unit axis is that
            # code's time axis, and the mean over it is the value itself
            lead = tuple("T" if a == "1" else a for a in lead)
        if lead != ("B",):
            if "T" not in lead:
                raise FrontendError(f"{what} keeps a leading axis of size 1 (layout {', '.join(lead)})",
                                    where=where(fxn), hint="drop it (x.squeeze(0) or x.mean(0)) in the model's output")
            if set(lead) != {"T", "B"}:
                raise FrontendError(f"{what} keeps the time axis (layout {', '.join(lead)})", where=where(fxn),
                                    hint="average it over time (e.g. x.mean(0)) as the model's prediction")
            # multi-step code returns (T, B, ...) and averages outside (SpikingJelly: out.mean(0)): the deployed
            # read-out is that mean over T, as for an x.mean(0) inside the model; the eager model is averaged alike
            t = lead.index("T")
            if self._batch_first_output:
                raise FrontendError(f"{what} keeps the time axis (layout {', '.join(lead)}) and "
                                    f"{self._batch_first_output} does not", where=where(fxn),
                                    hint="return every output in one layout, or average them over time in the model")
            if self.graph.meta.get("output_time_axis", t) != t:
                raise FrontendError(f"{what} keeps the time axis on axis {t}, another output on axis "
                                    f"{self.graph.meta['output_time_axis']}", where=where(fxn),
                                    hint="return every output in one layout, or average them over time in the model")
            self.graph.meta["output_time_axis"] = t
        elif self.graph.meta.get("output_time_axis") is not None:
            raise FrontendError(f"{what} has no time axis and an earlier output keeps it", where=where(fxn),
                                hint="return every output in one layout, or average them over time in the model")
        else:
            self._batch_first_output = what.split(" (")[0]
        return v

    def emit(self, fxn: fx.Node, call: Call):
        if fxn in self._consumed:
            return
        if self._loop_call(fxn, call):
            self.lead.setdefault(fxn, self.lead_in(fxn))  # a buffer of T steps keeps its value's layout
            return
        handler = getattr(self, f"c_{call.op}", None)
        if handler is None:
            raise FrontendError(f"unsupported operation {call.op}", where=where(fxn),
                                hint="snncc maps conv/linear/batchnorm/SFA neurons/add/scale/pooling/mean/"
                                     "reshape/permute/matmul of spikes; rewrite the model or file an issue")
        self._out_lead = None
        if call.op not in ("slice", "copy_", "copy", "slice_scatter", "index_put"):
            call.args = tuple(self.placement_node(fxn, a) if isinstance(a, Placement) else
                              [self.placement_node(fxn, b) if isinstance(b, Placement) else b for b in a]
                              if isinstance(a, list) else a for a in call.args)
        if call.op not in HOLDS_POOLED:  # a held-back max of currents read by any other op: refused naming the pool
            for a in call.args:
                for b in (a if isinstance(a, (list, tuple)) else [a]):
                    if isinstance(b, PooledCurrent):
                        self.tensor(b, fxn)
        lead = self.lead_in(fxn)
        reduced = any(isinstance(a, fx.Node) and a in self.time_reduced for a in fxn.args)
        if reduced and call.op in ("neuron", "clamp", "round", "floor", "matmul"):
            raise FrontendError(f"{call.op} after the mean over time", where=where(fxn),
                                hint="only affine layers may follow the average over T")
        self.values[fxn] = handler(fxn, *call.args, **call.kwargs)
        self.lead[fxn] = self._out_lead or lead
        if reduced:
            self.time_reduced.add(fxn)

    def _loop_call(self, fxn: fx.Node, call: Call) -> bool:
        """Ops of an unrolled loop over timesteps (x[t], per-step arithmetic, stack, out[t] = s);
        False for ordinary ops, after turning a filled per-step buffer into its IR value."""
        op, args = call.op, call.args
        w = where(fxn)
        if op == "item" and isinstance(args[0], (tuple, list)):
            self.values[fxn] = args[0][int(args[1])]
            return True
        if op == "select":
            x, dim, idx = args
            self.values[fxn] = self.loop.slot(x, idx) if isinstance(x, StepBuffer) else \
                self.loop.select(fxn, x if isinstance(x, PooledCurrent) else self.tensor(x, fxn), int(dim), int(idx), w)
            return True
        if op == "unbind":
            x = args[0]
            self.values[fxn] = self.loop.unbind(fxn, x if isinstance(x, PooledCurrent) else self.tensor(x, fxn),
                                                int(args[1]), w)
            return True
        if op == "like":
            self.values[fxn] = self.loop.like(fxn, args[0], float(args[1]))
            return True
        if op in ("jelly_if", "jelly_lif", "jelly_ilif"):
            self.values[fxn] = getattr(self.loop, op)(fxn, *args, where=w)
            self.lead[fxn] = self.lead_in(fxn)
            return True
        if op == "stack":
            if int(args[1]) != 0:
                raise FrontendError(f"stack on axis {args[1]}", where=w, hint="stack timesteps on axis 0")
            self.values[fxn] = self.loop.gather(fxn, list(args[0]), w)
            self.lead[fxn] = ("T", "B")
            return True
        flat = list(args) + list(call.kwargs.values())
        if not any(is_step_value(a) for a in flat):
            return False
        if any(isinstance(a, StepBuffer) for a in flat) and op != "copy_":
            def done(a):
                return self.loop.buffer_node(fxn, a, w) if isinstance(a, StepBuffer) else a
            call.args = tuple(done(a) for a in args)
            call.kwargs = {k: done(v) for k, v in call.kwargs.items()}
            return False
        if op in ("add", "sub", "rsub", "mul", "div"):
            self.values[fxn] = self.loop.arith(op, fxn, *args, **call.kwargs)
        elif op == "identity":
            self.values[fxn] = args[0]
        elif op == "compare":
            self.values[fxn] = self.loop.compare(fxn, *args, where=w)
        elif op == "copy_":
            self.values[fxn] = self.loop.copy_(fxn, *args)
        elif op == "clamp":
            return False  # the neuron pattern (c_clamp -> c_neuron -> TimeLoop.fire)
        elif op in LOOP_LAYERS and isinstance(args[0], Lin) and not any(is_step_value(a) for a in flat[1:]):
            self.values[fxn] = self.loop.layer(fxn, call, w)
        else:
            raise FrontendError(f"{op} on one timestep's value inside a loop over T is not supported", where=w,
                                hint="keep only the neuron inside the loop; run layers on the whole (T, B, ...) "
                                     "tensor or on x.flatten(0, 1)")
        return True

    def fold_constant(self, fxn: fx.Node) -> bool:
        """Evaluate an op whose inputs are all constants (e.g. `gamma.view(1, -1, 1, 1)` on a
        parameter) and keep the result as a constant. Returns False when it reads an activation."""
        args = [self.values.get(a, a) if isinstance(a, fx.Node) else a for a in fxn.args]
        kwargs = {k: self.values.get(v, v) if isinstance(v, fx.Node) else v for k, v in fxn.kwargs.items()}
        flat = list(args) + list(kwargs.values())
        if any(isinstance(a, fx.Node) or self.is_tensor(a) or _pending(a) for a in flat):
            return False
        if not any(isinstance(a, torch.Tensor) for a in flat):
            return False
        with torch.no_grad():
            if fxn.op == "call_method":
                self.values[fxn] = getattr(args[0], fxn.target)(*args[1:], **kwargs)
            else:
                self.values[fxn] = fxn.target(*args, **kwargs)
        return True

    # canonical calls -------------------------------------------------------------------------
    def c_identity(self, fxn, x, *rest, **kw):
        return x

    def c_python(self, fxn, fn, *args):
        """Python arithmetic on shapes and numbers (never on activations)."""
        if any(self.is_tensor(a) for a in args):
            raise FrontendError(f"{getattr(fn, '__name__', fn)} on an activation is not supported", where=where(fxn))
        return fn(*args)

    def c_conv(self, fxn, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        w = self.const(weight, fxn, "conv weight")
        nd = w.ndim - 2
        if isinstance(x, SpikeBN):
            return self._conv_of_spike_bn(fxn, x, w, bias, stride, padding, dilation, groups)
        if isinstance(padding, str):
            raise FrontendError(f"padding={padding!r} is not supported", where=where(fxn), hint="use integer padding")
        attrs = {"stride": _tuple(stride, nd), "padding": _tuple(padding, nd), "dilation": _tuple(dilation, nd),
                 "groups": int(groups)}
        params = {"weight": w}
        if bias is not None:
            params["bias"] = self.const(bias, fxn, "conv bias")
        return self.add(fxn, "conv", [self.tensor(x, fxn)], attrs, params)

    def _conv_of_spike_bn(self, fxn, bn: SpikeBN, w, bias, stride, padding, dilation, groups):
        """conv(pad_b(a s + b)) = conv_p(a s) + sum_k w b: the BN's scale goes onto the spikes' channels
        (a scale node the fold passes move into the weights), its shift into the conv bias; exact
        only when every padded site holds b, which the model's own border fill guarantees. A grouped
        (depthwise) conv sees the shift of its own group's channels only."""
        if w.ndim != 4:
            raise FrontendError("BatchNorm on spikes folds into a conv2d only", where=where(fxn))
        conv_pad = _tuple(padding, 2)
        l, r, t, btm = bn.pad
        if any(conv_pad) and np.any(bn.shift):
            raise FrontendError("BatchNorm on spikes before a zero-padded conv does not fold exactly: the border "
                                "sees 0 where the BN gives its shift", where=where(fxn),
                                hint="fill the padding with the BN's shift (BNAndPadLayer) and use padding=0")
        need = {k for k, p in (("left", l), ("right", r), ("top", t), ("bottom", btm)) if p}
        if np.any(bn.shift) and not need <= bn.filled:
            raise FrontendError(f"the padding before this conv is not filled with the BatchNorm's shift on "
                                f"{', '.join(sorted(need - bn.filled))}", where=where(fxn),
                                hint="fill every padded border with the shift (BNAndPadLayer) so the BN folds exactly")
        if not (l == r and t == btm):
            raise FrontendError(f"asymmetric padding {bn.pad} before a conv", where=where(fxn))
        scaled = self.add(fxn, "scale", [bn.src], {}, {"factor": bn.scale.reshape(-1, 1, 1)}, base=f"{fxn.name}_bn")
        groups = int(groups)
        shift = bn.shift.reshape(groups, -1)[np.arange(w.shape[0]) // (w.shape[0] // groups)]  # (C_out, C_in/g)
        const = np.einsum("ockl,oc->o", w, shift)
        b0 = self.const(bias, fxn, "conv bias") if bias is not None else np.zeros(w.shape[0])
        attrs = {"stride": _tuple(stride, 2), "padding": (t + conv_pad[0], l + conv_pad[1]),
                 "dilation": _tuple(dilation, 2), "groups": groups}
        return self.add(fxn, "conv", [scaled], attrs, {"weight": w, "bias": b0 + const})

    def c_pad(self, fxn, x, pad, mode="constant", value=None):
        p = list(pad) + [0] * (4 - len(pad))
        if mode != "constant" or len(pad) > 4 or any(v < 0 for v in p):
            raise FrontendError(f"pad {tuple(pad)} mode {mode!r} value {value!r}", where=where(fxn),
                                hint="only constant padding of the last two axes is supported")
        if not isinstance(x, SpikeBN):
            return self._pad_current(fxn, x, p, value)
        if value not in (None, 0, 0.0):
            raise FrontendError(f"pad {tuple(pad)} mode {mode!r} value {value!r}", where=where(fxn))
        bn = SpikeBN(x.src, x.scale, x.shift, x.where, tuple(int(v) for v in p), set())
        self._padded[fxn] = bn
        return bn

    def _pad_current(self, fxn, x, p, value):
        """A constant border around a current map: a `pad` node (the `reparam` pass fuses it into
        the projection that consumes it); research code fills its borders afterwards (`copy_`)."""
        xs = self.graph[self.tensor(x, fxn)]
        if xs.kind != CURRENT or len(xs.shape) != 3:
            raise FrontendError("padding an activation outside a conv is supported on (C, H, W) currents only",
                                where=where(fxn), hint="use the conv's own padding")
        l, r, t, b = (int(v) for v in p)
        params = {}
        if value not in (None, 0, 0.0):
            params["value"] = np.full(xs.shape[0], float(value))
        nm = self.add(fxn, "pad", [xs.name], {"pads": (t, b, l, r)}, params)
        self._pad_fill[nm] = PadFill(nm, (l, r, t, b), where(fxn))
        return nm

    def c_slice(self, fxn, x, dim=0, start=None, end=None, step=1):
        """A view of a padded map (its borders are about to be filled), or of a tensor of zeros
        whose slices are written (Placement)."""
        if isinstance(x, Placement):
            return ("slice", x, int(dim), start, end, int(step or 1))
        if not (isinstance(x, SpikeBN) or (isinstance(x, str) and x in self._pad_fill)):
            raise FrontendError("slicing an activation is not supported", where=where(fxn))
        return ("slice", x, int(dim), start, end, int(step or 1))

    def c_copy_(self, fxn, dst, src):
        """`padded[:, :, 0:p, :] = values`: record which border of a padded map holds which values
        (a spike BN's border must hold its shift; a current's border one value per channel)."""
        if not (isinstance(dst, tuple) and dst and dst[0] == "slice"):
            raise FrontendError("in-place copy into an activation is not supported", where=where(fxn))
        _, target, dim, start, end, step = dst
        if isinstance(target, Placement):
            self._place(fxn, target, dim, start, end, step, src)
            return dst
        vals = self.const(src, fxn, "fill value")
        if isinstance(target, SpikeBN):
            if not np.allclose(vals, _per_channel(vals, target.shift), rtol=1e-6, atol=1e-7):
                raise FrontendError("the padding is filled with values other than the BatchNorm's shift",
                                    where=where(fxn),
                                    hint="fill it with bias - mean * weight / sqrt(var + eps) (BNAndPadLayer)")
            target.filled.add(_border(target.pad, dim, start, end, step, fxn))
            return dst
        fill = self._pad_fill[target]
        c = self.graph[target].shape[0]
        vec = _channel_vector(vals, c)
        if vec is None:
            raise FrontendError("the padded border is filled with values that vary along it", where=where(fxn),
                                hint="fill every border with one value per channel (BNAndPadLayer)")
        if fill.value is not None and not np.allclose(vec, fill.value, rtol=1e-6, atol=1e-7):
            raise FrontendError("the borders of a padded map are filled with different values", where=where(fxn),
                                hint="fill every border with the same value per channel (BNAndPadLayer)")
        fill.value = vec if fill.value is None else fill.value
        fill.filled.add(_border(fill.pad, dim, start, end, step, fxn))
        if fill.complete():
            node = self.graph[target]
            node.params = {**node.params, "value": np.asarray(fill.value, dtype=np.float64)}
        return dst

    def c_zeros(self, fxn, size, *_):
        """`torch.zeros(B, C, H, W)` (or x.new_zeros): a Placement, its slices written next."""
        shape = self._shape(fxn)
        for lead in ([("T", "B")] if self.T else []) + [("B",)]:
            if tuple(shape[:len(lead)]) == self.lead_sizes(lead):
                self._out_lead = lead
                return Placement(tuple(shape[len(lead):]), lead, where(fxn))
        raise FrontendError(f"zeros of shape {tuple(shape)} do not lead with the batch axis (batch {self.batch})",
                            where=where(fxn), hint="create it as torch.zeros(x.shape[0], C, H, W)")

    def c_copy(self, fxn, dst, src):
        """torch's functional copy into a slice of a Placement: the source itself (same shape)."""
        if not (isinstance(dst, tuple) and dst and dst[0] == "slice" and isinstance(dst[1], Placement)):
            raise FrontendError("copy into an activation is not supported", where=where(fxn))
        src = self.tensor(src, fxn)
        if tuple(self._shape(fxn)[len(dst[1].lead):]) != self.graph[src].shape:
            raise FrontendError("a copy that broadcasts its source into a slice", where=where(fxn),
                                hint="write a tensor of the slice's shape")
        return src

    def c_slice_scatter(self, fxn, base, src, dim=0, start=None, end=None, step=1):
        """`slice_scatter(base, src, dim, start, end)`: base with src written into the slice."""
        if not isinstance(base, Placement):
            raise FrontendError("writing into a slice of an activation is not supported (only of a tensor of "
                                "zeros: a placement, like torch.cat)", where=where(fxn),
                                hint="torch.cat the parts, or write them into torch.zeros(...)")
        new = Placement(base.shape, base.lead, base.where, list(base.parts))
        self._place(fxn, new, dim, start, end, step, src)
        return new

    def c_index_put(self, fxn, base, indices, values, accumulate=False):
        """`y[:, idx] = src` (aten index_put): into a tensor of zeros with `idx` one ascending run
        of consecutive integers along one axis, a slice write (Placement); refused otherwise."""
        what = "index_put (y[..., idx] = src)"
        if not isinstance(base, Placement):
            raise FrontendError(f"{what} into an activation is not deployable (it overwrites computed values)",
                                where=where(fxn), hint="write into torch.zeros(...) or torch.cat the parts")
        given = [(d, v) for d, v in enumerate(indices) if v is not None]
        idx = given[0][1] if len(given) == 1 and isinstance(given[0][1], torch.Tensor) else None
        run = idx is not None and idx.dtype in (torch.int64, torch.int32) and idx.dim() == 1 and idx.numel() > 0 \
            and torch.equal(idx, torch.arange(int(idx[0]), int(idx[0]) + idx.numel(), dtype=idx.dtype))
        if accumulate or not run:
            raise FrontendError(f"{what} with {'accumulate=True' if accumulate else 'indices other than one ascending run of consecutive integers along one axis'} is not deployable (only slice writes into zeros are placements)",
                                where=where(fxn), hint="write slices, y[:, a:b] = src, or torch.cat the parts")
        new = Placement(base.shape, base.lead, base.where, list(base.parts))
        self._place(fxn, new, given[0][0], int(idx[0]), int(idx[0]) + idx.numel(), 1, values)
        return new

    def _place(self, fxn, p: Placement, dim, start, end, step, src) -> None:
        nl = len(p.lead)
        d = int(dim) + nl + len(p.shape) if int(dim) < 0 else int(dim)
        if d < nl or int(step or 1) != 1:
            raise FrontendError(f"writing into axis {dim} (step {step}) of a tensor laid out ({', '.join(p.lead)}, "
                                "...)", where=where(fxn), hint="write slices of a per-sample axis (channels)")
        axis, n = d - nl, p.shape[d - nl]
        s0, e0, _ = slice(None if start is None else int(start), None if end is None else int(end)).indices(n)
        src = self.tensor(src, fxn)
        want = p.shape[:axis] + (e0 - s0,) + p.shape[axis + 1:]
        if self.graph[src].shape != want:
            raise FrontendError(f"a source of shape {self.graph[src].shape} written into a slice of shape {want}",
                                where=where(fxn), hint="write a tensor of the slice's shape")
        p.placed(axis, s0, e0, src, fxn)

    def placement_node(self, fxn, p: Placement) -> str:
        """The IR value of a Placement: each source at its offset, summed (zeros elsewhere)."""
        if p.node is None:
            if not p.parts:
                raise FrontendError("a tensor of zeros is read as an activation", where=p.where,
                                    hint="write the sources into its slices first")
            placed = [self.add(fxn, "offset", [src], {"axis": a, "at": s0, "size": p.shape[a]})
                      for a, s0, e0, src in sorted(p.parts, key=lambda q: q[1])]
            p.node = placed[0] if len(placed) == 1 else self.add(fxn, "add", placed)
        return p.node

    def c_linear(self, fxn, x, weight, bias=None):
        params = {"weight": self.const(weight, fxn, "linear weight")}
        if bias is not None:
            params["bias"] = self.const(bias, fxn, "linear bias")
        return self.add(fxn, "linear", [self.tensor(x, fxn)], {}, params)

    def c_batchnorm(self, fxn, x, weight, bias, mean, var, eps, channel_axis=1):
        xs = self.graph[self.tensor(x, fxn)]
        if xs.kind == "spike" and len(xs.shape) == 3 and channel_axis == 1:
            m, v = self.const(mean, fxn, "running mean"), self.const(var, fxn, "running var")
            w = self.const(weight, fxn, "weight") if weight is not None else np.ones_like(m)
            b = self.const(bias, fxn, "bias") if bias is not None else np.zeros_like(m)
            a = w / np.sqrt(v + float(eps))
            return SpikeBN(xs.name, a, b - m * a, where(fxn))
        c = self.const(mean, fxn, "running mean").shape[0]
        w = self.const(weight, fxn, "weight") if weight is not None else np.ones(c)
        b = self.const(bias, fxn, "bias") if bias is not None else np.zeros(c)
        axis = channel_axis - 1
        if len(xs.shape) == 1:
            axis = 0
        return self.add(fxn, "batchnorm", [xs.name], {"axis": axis, "eps": float(eps)},
                        {"mean": self.const(mean, fxn, "running mean"), "var": self.const(var, fxn, "running var"),
                         "weight": w, "bias": b})

    def c_add(self, fxn, a, b, alpha=1):
        if self.is_tensor(a) and not self.is_tensor(b) and (_num(b) == 0.0 or self._zeros(fxn, b)):
            return a  # x + 0, x - 0
        if self.is_tensor(b) and not self.is_tensor(a) and (_num(a) == 0.0 or self._zeros(fxn, a)) and alpha == 1:
            return b  # 0. + x: a membrane started at the float 0. (SpikingJelly's v = v + x; snntorch's mem
        if self.is_tensor(a) and self.is_tensor(b):
            if alpha != 1:
                b = self.add(fxn, "scale", [b], {}, {"factor": np.asarray(float(alpha))}, base=f"{fxn.name}_alpha")
            # spikes in a sum (SEW-ResNet's ADD of two spike maps, a spike shortcut added to a
            # current) enter it through a unit synapse: whatever reads the sum reads each spike
            # tensor through its own projection, conv(a + b) = conv(a) + conv(b) (fan-in)
            a, b = (self.add(fxn, "scale", [v], {}, {"factor": np.asarray(1.0)}, base=f"{fxn.name}_spikes")
                    if self.graph[v].kind == SPIKE else v for v in (a, b))
            return self.add(fxn, "add", [a, b])
        raise FrontendError("adding a constant to an activation is not supported outside an SFA neuron pattern",
                            where=where(fxn), hint="express constants as a layer bias")

    def _zeros(self, fxn, c) -> bool:
        """c is a tensor of zeros that does not widen the sum (snntorch's membrane buffer, reset to
        zeros of the input's shape, times beta)."""
        return isinstance(c, torch.Tensor) and not bool(c.any()) and \
            torch.broadcast_shapes(tuple(c.shape), self._shape_of_act(fxn)) == self._shape_of_act(fxn)

    def _shape_of_act(self, fxn) -> tuple:
        for a in fxn.args:
            if isinstance(a, fx.Node) and self.is_tensor(self.values.get(a)):
                return self._shape(a)
        return ()

    def c_sub(self, fxn, a, b, alpha=1):
        return self.c_add(fxn, a, b, -alpha)

    def c_mul(self, fxn, a, b):
        if self.is_tensor(a) and self.is_tensor(b):
            raise FrontendError("elementwise product of two activations is not supported", where=where(fxn),
                                hint="only spike products through matmul are deployable")
        x, c = (a, b) if self.is_tensor(a) else (b, a)
        return self.scale(fxn, x, self.const(c, fxn, "factor"))

    def c_div(self, fxn, a, b):
        if not self.is_tensor(a) or self.is_tensor(b):
            raise FrontendError("only division of an activation by a constant is supported", where=where(fxn))
        return self.scale(fxn, a, 1.0 / self.const(b, fxn, "divisor"))

    def scale(self, fxn, x, factor: np.ndarray):
        xs = self.graph[self.tensor(x, fxn)].shape
        f = np.asarray(factor, dtype=np.float64)
        nl = len(self.lead_in(fxn))
        while f.ndim > len(xs) and nl > 0:
            if f.shape[0] != 1:
                raise FrontendError(f"factor of shape {f.shape} varies over the batch", where=where(fxn))
            f = f[0]
            nl -= 1
        return self.add(fxn, "scale", [x], {}, {"factor": f})

    def c_matmul(self, fxn, a, b):
        if self.is_tensor(a) and self.is_tensor(b):
            # Fuse (a b) c and a (b c) into one three-operand spike product when the inner
            # product has no other user (its integer result is never materialised on chip).
            fa, fb = fxn.args[0], fxn.args[1]
            for inner, inner_fx, other, order in ((a, fa, b, "left"), (b, fb, a, "right")):
                node = self.graph[inner]
                if takes_operand(node) and isinstance(inner_fx, fx.Node) and len(inner_fx.users) == 1:
                    ins = node.inputs + [other] if order == "left" else [other] + node.inputs
                    self.graph.remove(inner)
                    return self.add(fxn, node.op, ins, {"order": order})
            return self.add(fxn, "spike_product", [a, b], {"order": "left"})
        if self.is_tensor(a):
            w = self.const(b, fxn, "matrix")
            if w.ndim != 2:
                raise FrontendError(f"matmul with a constant of rank {w.ndim}", where=where(fxn))
            return self.add(fxn, "linear", [a], {}, {"weight": w.T.copy()})
        raise FrontendError("matmul of a constant by an activation is not supported", where=where(fxn),
                            hint="write it as activation @ weight")

    def _time_reduce(self, fxn, x, dims, keepdim, factor):
        """Split the mean (or sum) over dims into its part over the time axis (replicated values:
        the mean is the value itself, the sum T times it) and the rest."""
        lead = self.lead_in(fxn)
        rank = len(self.graph[self.tensor(x, fxn)].shape) + len(lead)
        dims = [dims] if isinstance(dims, int) else list(dims)
        dims = [d % rank for d in dims]
        t_axes = [i for i, a in enumerate(lead) if a in ("T", "1") and i in dims]
        if not t_axes or keepdim:
            return None
        t = t_axes[0]
        rest = [d - 1 if d > t else d for d in dims if d != t]
        self._out_lead = tuple(a for i, a in enumerate(lead) if i != t)
        if lead[t] == "1":  # a leading axis of size 1 (x.unsqueeze(0)): its mean and its sum are the value
            return x, rest
        self.time_reduced.add(fxn)
        y = x if factor == 1 else self.add(fxn, "scale", [x], {}, {"factor": np.asarray(float(self.T))},
                                          base=f"{fxn.name}_sumT")
        return y, rest

    def c_mean(self, fxn, x, dims, keepdim=False):
        xs = self.graph[self.tensor(x, fxn)].shape
        if dims is None:
            raise FrontendError("mean over all axes includes the batch axis", where=where(fxn))
        tr = self._time_reduce(fxn, x, dims, keepdim, 1)
        if tr is not None:
            x, rest = tr
            return self.c_mean_rest(fxn, x, rest, keepdim, len(self._out_lead)) if rest else x
        dims = [dims] if isinstance(dims, int) else list(dims)
        ds = tuple(sorted(self.axis(d, len(xs), fxn) for d in dims))
        return self.add(fxn, "mean", [x], {"dims": ds, "keepdim": bool(keepdim)})

    def c_mean_rest(self, fxn, x, dims, keepdim, nl):
        xs = self.graph[self.tensor(x, fxn)].shape
        ds = tuple(sorted(d - nl for d in dims))
        if any(d < 0 for d in ds):
            raise FrontendError("op acts on the batch axis", where=where(fxn))
        return self.add(fxn, "mean", [x], {"dims": ds, "keepdim": bool(keepdim)})

    def c_repeat(self, fxn, x, repeats):
        """`x.unsqueeze(0).repeat(T, 1, ...)` (or expand): the model's own time axis."""
        lead = self.lead_in(fxn)
        reps = [int(r) for r in repeats]
        full = self._shape_of_input(fxn)
        out = self._shape(fxn)
        if lead == ("1", "B") and len(reps) == len(full) and all(r == 1 for r in reps[1:]):
            T = out[0]
        elif lead == ("B",) and len(reps) == len(full) + 1 and all(r == 1 for r in reps[1:]):
            T = out[0]  # repeat adds the leading axis itself
        else:
            raise FrontendError(f"repeat {tuple(reps)} of a value laid out ({', '.join(lead)}, ...)", where=where(fxn),
                                hint="snncc takes a time axis added as x.unsqueeze(0).repeat(T, 1, ...)")
        if self.T not in (None, T):
            raise FrontendError(f"a second time axis of length {T} (the model already repeats T = {self.T})",
                                where=where(fxn))
        self.T = T
        self._out_lead = ("T", "B")
        return self.tensor(x, fxn)

    def c_max_pool(self, fxn, x, kernel=None, stride=None, padding=0, dilation=1, ceil_mode=False):
        """Max pooling of spikes (IR `max_pool`: per timestep, an OR of binary spikes, the max of
        counts). Of a current, a 1x1 window (SpikeFPN's extra level, `F.max_pool2d(x, 1, stride=2)`)
        is a strided subsample, a sum over one value: IR `pool` mode sum, exact. A wider window on a
        current in the host domain (computed from the real-valued input alone: snntorch's
        Conv -> MaxPool -> Leaky on the image) is an IR `max_pool` of that current, part of the
        input's encoding; on any other current it is held back (PooledCurrent) until a stateless
        neuron reads it, through more max pools and cats (SPPF), and refused anywhere else (no
        synaptic sum; no commuting with a stateful neuron)."""
        k = tuple_n(kernel, 2)
        s = tuple_n(stride if stride not in (None, [], ()) else kernel, 2)
        pad = tuple_n(padding, 2)
        out = tuple(self._shape(fxn)[len(self.lead_in(fxn)):])  # per sample
        if ceil_mode or any(d != 1 for d in tuple_n(dilation, 2)):
            raise FrontendError("max pooling with ceil_mode or dilation is not supported", where=where(fxn))
        if isinstance(x, PooledCurrent):
            return PooledCurrent("max_pool", (x,), {"kernel": k, "stride": s, "padding": pad},
                                 out, where(fxn))
        x = self.tensor(x, fxn)
        if self.graph[x].kind != SPIKE and k == (1, 1) and not any(pad):
            if s == (1, 1):
                return x
            return self.add(fxn, "pool", [x], {"mode": "sum", "kernel": k, "stride": s, "padding": (0, 0)})
        if self.graph[x].kind != SPIKE and x not in host_domain(self.graph):
            return PooledCurrent("max_pool", (x,), {"kernel": k, "stride": s, "padding": pad},
                                 out, where(fxn))
        return self.add(fxn, "max_pool", [x], {"kernel": k, "stride": s, "padding": pad})

    def c_expand(self, fxn, x, size):
        lead = self.lead_in(fxn)
        out = self._shape(fxn)
        if lead == ("1", "B") and tuple(out[1:]) == tuple(self._shape_of_input(fxn)[1:]):
            if self.T not in (None, out[0]):
                raise FrontendError(f"a second time axis of length {out[0]}", where=where(fxn))
            self.T = out[0]
            self._out_lead = ("T", "B")
            return self.tensor(x, fxn)
        raise FrontendError("expand of an activation other than a leading time axis", where=where(fxn))

    def c_sum(self, fxn, x, dims, keepdim=False):
        tr = self._time_reduce(fxn, x, dims, keepdim, self.T)
        if tr is not None:
            x, rest = tr
            if not rest:
                return x
            nl = len(self._out_lead)
            xs = self.graph[self.tensor(x, fxn)].shape
            m = self.c_mean_rest(fxn, x, rest, keepdim, nl)
            n = int(np.prod([xs[d - nl] for d in rest]))
            return self.add(fxn, "scale", [m], {}, {"factor": np.asarray(float(n))}, base=f"{fxn.name}_sum")
        xs = self.graph[self.tensor(x, fxn)].shape
        m = self.c_mean(fxn, x, dims, keepdim)
        dims = [dims] if isinstance(dims, int) else list(dims)
        n = int(np.prod([xs[self.axis(d, len(xs), fxn)] for d in dims]))
        return self.add(fxn, "scale", [m], {}, {"factor": np.asarray(float(n))}, base=f"{fxn.name}_sum")

    def c_pool(self, fxn, x, kernel, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
        k = _tuple(kernel, 2)
        s = _tuple(stride, 2) if stride not in (None, [], ()) else k
        p = _tuple(padding, 2)
        if ceil_mode:
            raise FrontendError("avg_pool2d with ceil_mode=True is not supported", where=where(fxn))
        if any(p) and not count_include_pad:
            raise FrontendError("avg_pool2d with count_include_pad=False and padding is not supported",
                                where=where(fxn))
        if divisor_override not in (None, 1, k[0] * k[1]):
            raise FrontendError(f"avg_pool2d divisor_override={divisor_override}", where=where(fxn))
        mode = "sum" if divisor_override == 1 else "avg"
        return self.add(fxn, "pool", [self.tensor(x, fxn)], {"mode": mode, "kernel": k, "stride": s, "padding": p})

    def c_adaptive_pool(self, fxn, x, size):
        xs = self.graph[self.tensor(x, fxn)].shape
        size = _tuple(size, 2)
        if size != (1, 1):
            h, w = xs[1], xs[2]
            if h % size[0] or w % size[1]:
                raise FrontendError(f"adaptive pooling {xs} -> {size} with uneven windows", where=where(fxn))
            k = (h // size[0], w // size[1])
            return self.add(fxn, "pool", [x], {"mode": "avg", "kernel": k, "stride": k, "padding": (0, 0)})
        return self.add(fxn, "mean", [x], {"dims": (1, 2), "keepdim": True})

    def c_dropout_training(self, fxn, *_):
        raise FrontendError("dropout in training mode (random)", where=where(fxn),
                            hint="call model.eval() before torch.export (F.dropout: pass training=self.training)")

    def c_upsample(self, fxn, x, *_):
        """Nearest-neighbour upsampling (`F.interpolate(mode='nearest')`, `nn.Upsample`) of a
        (C, H, W) value by integer factors, read from the shapes the program recorded."""
        xs = self.graph[self.tensor(x, fxn)].shape
        out = self._shape(fxn)[len(self.lead_in(fxn)):]
        if len(xs) != 3 or len(out) != 3 or out[0] != xs[0] or out[1] % xs[1] or out[2] % xs[2]:
            raise FrontendError(f"nearest upsampling {xs} -> {out} is not by integer factors of (H, W)",
                                where=where(fxn), hint="use scale_factor=2 (or any integer) on a (B, C, H, W) tensor")
        scale = (out[1] // xs[1], out[2] // xs[2])
        if scale == (1, 1):
            return x
        return self.add(fxn, "upsample", [x], {"scale": scale})

    def c_bilinear(self, fxn, x, align_corners=False):
        """Bilinear interpolation (`F.interpolate(mode='bilinear')`, `nn.Upsample`) of a (C, H, W)
        value to the size the program recorded: the IR `bilinear` (fixed fractional weights)."""
        xs = self.graph[self.tensor(x, fxn)].shape
        out = self._shape(fxn)[len(self.lead_in(fxn)):]
        if len(xs) != 3 or len(out) != 3 or out[0] != xs[0]:
            raise FrontendError(f"bilinear interpolation {xs} -> {out} is not of a (C, H, W) map", where=where(fxn),
                                hint="interpolate a (B, C, H, W) tensor")
        args, kw = getattr(fxn, "args", ()), getattr(fxn, "kwargs", {}) or {}
        if "upsample_bilinear2d" in str(getattr(fxn, "target", "")):  # aten: (x, size, align_corners, scales...)
            scales = [a for a in args[3:] if a is not None]
        else:  # F.interpolate(x, size, scale_factor, ...)
            scales = [a for a in [kw.get("scale_factor", args[2] if len(args) > 2 else None)] if a is not None]
        if len(scales) == 1:
            scales = list(scales[0]) if isinstance(scales[0], (list, tuple)) else scales * 2
        for s, i, o in zip(scales, xs[1:], out[1:]):
            if float(s) * i != o:  # torch then maps coordinates by 1 / s, not by in / out
                raise FrontendError(f"bilinear interpolation by scale_factor {s} of {i} rows to {o} (not an exact "
                                    f"size)", where=where(fxn), hint="pass size= (or a scale_factor that gives an "
                                    "integer size exactly)")
        if tuple(out) == tuple(xs):
            return x  # the identity (both alignments at equal sizes)
        return self.add(fxn, "bilinear", [x], {"size": (int(out[1]), int(out[2])), "align_corners": bool(align_corners)})

    def c_interpolate(self, fxn, x, mode):
        raise FrontendError(f"interpolation mode {mode} is not deployable (its weights reach beyond the 2 x 2 "
                            "neighbours, or differ per size)", where=where(fxn),
                            hint="use mode='bilinear' (fixed fractional weights) or mode='nearest' (a 0/1 fan-out)")

    def c_cat(self, fxn, xs, dim=0):
        """`torch.cat` of activations: each input placed at its offset along the axis (an
        `offset` node, its slice of the consumers' addresses), the offsets summed."""
        args = getattr(fxn, "args", ())  # ONNX refs have none
        srcs = [a for a in (args[0] if args and isinstance(args[0], (list, tuple)) else [])
                if isinstance(a, fx.Node)]
        held = any(isinstance(v, PooledCurrent) for v in xs)  # SPPF: cat(x, mp(x), ...) before a neuron
        names = [v if isinstance(v, PooledCurrent) else self.tensor(v, fxn) for v in xs]
        lead = self.lead.get(srcs[0], ("B",)) if srcs else ("B",)
        shapes = [v.shape if isinstance(v, PooledCurrent) else self.graph[v].shape for v in names]
        d = dim + len(shapes[0]) + len(lead) if dim < 0 else dim
        if d < len(lead):
            raise FrontendError("cat along the batch (or time) axis", where=where(fxn),
                                hint="concatenate feature maps along channels (dim 1 of (B, C, H, W))")
        axis = d - len(lead)
        self._out_lead = lead
        if held:
            shape = list(shapes[0])
            shape[axis] = sum(sh[axis] for sh in shapes)
            return PooledCurrent("cat", tuple(names), {"axis": axis}, tuple(shape), where(fxn))
        if len(names) == 1:
            return names[0]
        size = sum(s[axis] for s in shapes)
        placed, at = [], 0
        for v, s in zip(names, shapes):
            placed.append(self.add(fxn, "offset", [v], {"axis": axis, "at": at, "size": size}))
            at += s[axis]
        return self.add(fxn, "add", placed)

    def c_reshape(self, fxn, x, *_):
        users = list(getattr(fxn, "users", ()))
        if self.batch == 1 and len(users) == 1 and "index_put" in str(users[0].target) and \
                users[0].args[2] is fxn and self.lead_in(fxn) == ("B",) and \
                (1,) + tuple(self._shape(fxn)) == tuple(self._shape_of_input(fxn)):
            return x  # torch strips the leading 1 of the value written by `y[:, idx] = src`: still the batch axis
        shape = self.per_sample_shape(fxn)
        if isinstance(x, PooledCurrent) and shape == x.shape:
            return x  # multi-step code's pool.flatten(0, 1) / .reshape(T, B, ...): a layout change only
        if shape == self.graph[self.tensor(x, fxn)].shape:
            return x  # only the time/batch layout changed
        return self.add(fxn, "reshape", [self.tensor(x, fxn)], {"shape": shape})

    def c_unsqueeze(self, fxn, x, dim):
        """An axis inserted where the program says: before the batch axis it is a new leading axis
        (the time axis-to-be of `x.unsqueeze(0).repeat(T, ...)`), never a guess from sizes (at batch
        1 every leading size is 1)."""
        lead = self.lead_in(fxn)
        d = int(dim) % len(self._shape(fxn))
        if d >= len(lead):
            return self._relayout(fxn, x, lead)
        if d == 0 and lead == ("B",):
            return self._relayout(fxn, x, ("1", "B"))
        return self.c_reshape(fxn, x)

    def c_squeeze(self, fxn, x, dims=None):
        """Axes removed where the program says; a size-1 leading axis ("1") goes, the batch or time
        axis may not."""
        if dims is None:
            return self.c_reshape(fxn, x)
        lead = self.lead_in(fxn)
        rank = len(self._shape_of_input(fxn))
        dims = {int(d) % rank for d in ([dims] if isinstance(dims, int) else dims)}
        if any(lead[d] != "1" for d in dims if d < len(lead)):
            raise FrontendError("squeeze of the batch (or time) axis", where=where(fxn),
                                hint="squeeze a per-sample axis; a program exported at batch 1 still has a batch axis")
        return self._relayout(fxn, x, tuple(a for i, a in enumerate(lead) if i not in dims))

    def _relayout(self, fxn, x, lead: tuple[str, ...]):
        """The value of x with leading axes `lead` and the per-sample rest of fxn's shape."""
        self._out_lead = lead
        shape = self._shape(fxn)[len(lead):]
        if shape == self.graph[self.tensor(x, fxn)].shape:
            return x
        return self.add(fxn, "reshape", [self.tensor(x, fxn)], {"shape": shape})

    def c_permute(self, fxn, x, dims):
        xs = self.graph[self.tensor(x, fxn)].shape
        lead = self.lead_in(fxn)
        nl = len(lead)
        dims = [d + len(xs) + nl if d < 0 else d for d in dims]
        if sorted(dims[:nl]) != list(range(nl)):
            full = self._shape_of_input(fxn)
            hint = None
            if lead == ("B",) and dims[:2] == [1, 0] and len(full) >= 3:  # a (B, T, ...) input, swapped to (T, B)
                hint = (f"a model taking (B, T, ...) input: pass --input-layout BT --timesteps {full[1]} and the "
                        f"per-step --input-shape {','.join(map(str, full[2:]))} (API: input_layout='BT')")
            raise FrontendError("permutation moves the batch axis", where=where(fxn), hint=hint)
        self._out_lead = tuple(lead[d] for d in dims[:nl])  # (T, B) <-> (B, T) is a layout change only
        rest = tuple(d - nl for d in dims[nl:])
        if rest == tuple(range(len(xs))):
            return x
        return self.add(fxn, "permute", [x], {"dims": rest})

    def c_transpose(self, fxn, x, d0, d1):
        rank = len(self.graph[self.tensor(x, fxn)].shape) + len(self.lead_in(fxn))
        dims = list(range(rank))
        d0, d1 = d0 % rank, d1 % rank
        dims[d0], dims[d1] = dims[d1], dims[d0]
        return self.c_permute(fxn, x, dims)

    def c_neuron(self, fxn, x, D, norm, rounding, stateful=False):
        stack = fxn.meta.get("nn_module_stack")
        path = list(stack.values())[-1][0] if stack else (fxn.target if fxn.op == "call_module" else "")
        if isinstance(x, Lin):
            return self.loop.fire(fxn, x, D, norm, rounding, where(fxn), str(path) or fxn.name)
        if isinstance(x, PooledCurrent) and stateful:
            raise FrontendError("max pooling of a current before a stateful neuron is not deployable: the neuron "
                                "integrates each position's current over the time steps, and the integral of a "
                                "max is not the max of the integrals", where=x.where,
                                hint="max-pool the neuron's spikes (conv-bn-neuron-maxpool), or use a stateless "
                                     "neuron (clamp -> round), which commutes with the max")
        if isinstance(x, PooledCurrent):
            return self.fire_pooled(fxn, x, D, norm, rounding, str(path))
        return self.add(fxn, "fire", [self.tensor(x, fxn)],
                        {"D": int(D), "norm": float(norm), "rounding": rounding, "stateful": bool(stateful)},
                        base=str(path) or None)

    def fire_pooled(self, fxn, x: PooledCurrent, D, norm, rounding, path: str) -> str:
        """A stateless neuron on a held-back max of currents: fire once on each source current and
        rebuild the tree (max pools, cats) on its spikes; `path` (the neuron's module, may be empty)
        names the first fire (fxn may then be None: a loop neuron built when its steps are gathered)."""
        name = path or fxn.name
        fired: dict = {}  # source current -> its fire; id(subtree) -> its node

        def rebuild(v):
            if not isinstance(v, PooledCurrent):
                if v not in fired:
                    first = not any(isinstance(k, str) for k in fired)
                    fired[v] = self.add(fxn, "fire", [v], {"D": int(D), "norm": float(norm), "rounding": rounding},
                                        base=(path or None) if first else f"{name}_{v}")
                return fired[v]
            if id(v) in fired:  # a shared subtree (SPPF's y1 is pooled again and placed): built once
                return fired[id(v)]
            ins = [rebuild(a) for a in v.args]
            if v.op == "max_pool":
                fired[id(v)] = self.add(fxn, "max_pool", ins, v.attrs, base=f"{ins[0]}_max_pool")
                return fired[id(v)]
            size, at, placed = v.shape[v.attrs["axis"]], 0, []
            for i in ins:
                placed.append(self.add(fxn, "offset", [i], {"axis": v.attrs["axis"], "at": at, "size": size},
                                       base=f"{i}_offset"))
                at += self.graph[i].shape[v.attrs["axis"]]
            return self.add(fxn, "add", placed, base=f"{name}_cat")

        return rebuild(x)

    @staticmethod
    def is_held_max(v) -> bool:
        """A max of currents held back for the stateless neuron that reads it (PooledCurrent)."""
        return isinstance(v, PooledCurrent)

    def refuse_held(self, v, fxn) -> None:
        """A value held back for its reader (a max of currents, BatchNorm on spikes) read by something
        else (a neuron's zeros_like state, ...): its own refusal, naming where it was made."""
        if isinstance(v, (PooledCurrent, SpikeBN)):
            self.tensor(v, fxn)

    def tensor(self, v, fxn) -> str:
        if isinstance(v, Placement):
            return self.placement_node(fxn, v)
        if isinstance(v, PooledCurrent):
            raise FrontendError("max pooling of a current is not deployable here: a max is no synaptic sum; of a "
                                "current that depends on a neuron's spikes it deploys only when a stateless SFA "
                                "neuron reads it (through max pools and cats: they commute), not a stateful one "
                                "(its membrane integrates over the steps); on the input's encoding (before any "
                                "neuron) it is host work and deploys",
                                where=v.where,
                                hint="max-pool the neuron's spikes (conv-bn-neuron-maxpool)")
        if isinstance(v, SpikeBN):
            raise FrontendError("BatchNorm on spikes is only deployable when a conv consumes it (it folds into that "
                                "conv's weights and constant current)", where=v.where,
                                hint="put the BatchNorm after the conv, or feed it to a conv (BNAndPadLayer style)")
        if not self.is_tensor(v):
            raise FrontendError("expected an activation tensor, got a constant", where=where(fxn))
        fill = self._pad_fill.get(v)
        if fill is not None and fill.filled and fill.missing():
            raise FrontendError(f"the padded border is filled on {', '.join(sorted(fill.filled))} but not on "
                                f"{', '.join(sorted(fill.missing()))}", where=fill.where,
                                hint="fill every padded border with the same value per channel (BNAndPadLayer)")
        return v

    # ---- neuron patterns -----------------------------------------------------------------
    def c_clamp(self, fxn, x, lo=None, hi=None):
        """clamp(x, 0, D) must open an SFA neuron pattern; match it and consume the chain."""
        if not (lo == 0 and isinstance(hi, (int, float)) and float(hi).is_integer() and hi >= 1):
            raise FrontendError(f"clamp({lo}, {hi}) is not an SFA neuron (expected clamp(x, 0, D) with integer D)",
                                where=where(fxn), hint="SFA neurons are round(clamp(x, 0, D)) / Norm")
        chain = []
        nxt = self.only_user(fxn)
        rounding = None
        if nxt is not None and self.canon(nxt).op == "round":
            rounding, chain = "half_even", [nxt]
        elif nxt is not None and self.canon(nxt).op == "add":
            c = self.canon(nxt)
            other = [a for a in c.args if not isinstance(a, fx.Node)]
            fl = self.only_user(nxt)
            if other == [0.5] and fl is not None and self.canon(fl).op == "floor":
                rounding, chain = "half_up", [nxt, fl]
        if rounding is None:
            raise FrontendError("clamp(x, 0, D) is not followed by round() or (+0.5, floor())",
                                where=where(fxn), hint="SFA neurons are round(clamp(x, 0, D)) / Norm")
        norm = 1.0
        last = chain[-1]
        nd = self.only_user(last)
        if nd is not None:
            c = self.canon(nd)
            if c.op == "div" and c.args[0] is last and isinstance(c.args[1], (int, float)):
                norm, chain = float(c.args[1]), chain + [nd]
            elif c.op == "mul" and isinstance(c.args[1], (int, float)) and c.args[0] is last and c.args[1] > 0:
                norm, chain = 1.0 / float(c.args[1]), chain + [nd]
        for n in chain:
            self._consumed.add(n)
        out = self.c_neuron(fxn, x, int(hi), norm, rounding)
        self.values[chain[-1]] = out
        return out

    def c_round(self, fxn, *a, **k):
        raise FrontendError("round() outside an SFA neuron pattern", where=where(fxn),
                            hint="SFA neurons are round(clamp(x, 0, D)) / Norm")

    def c_floor(self, fxn, *a, **k):
        raise FrontendError("floor() outside an SFA neuron pattern", where=where(fxn),
                            hint="SFA neurons are floor(clamp(x, 0, D) + 0.5) / Norm")

    def only_user(self, n: fx.Node) -> fx.Node | None:
        """The single live computing user of n (None for several, or for the graph output). A user
        whose result nothing reads (SpikingJelly's reset `v = v - spike * v_threshold` after the
        last step) does not count."""
        users = [u for u in n.users if self.live is None or u in self.live or u.op == "output"]
        return users[0] if len(users) == 1 and users[0].op.startswith("call") else None

    def canon(self, fxn: fx.Node) -> Call:  # provided by the front end
        raise NotImplementedError




def _tuple(v, n):
    if isinstance(v, (list, tuple)):
        v = tuple(int(x) for x in v)
        return v * n if len(v) == 1 else v
    return (int(v),) * n
