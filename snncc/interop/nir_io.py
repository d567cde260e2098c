"""NIR (Neuromorphic Intermediate Representation, package `nir` <= 1.0.4) export and import.

Export (`to_nir`) writes a deployed graph (synaptic normal form, relay-free: callers re-lower
relayed streams, `compiler.fanin_deployed`) with the NIR primitives every reader maps: Input,
Output, Affine, Conv1d/Conv2d (pools and global means as ones-kernel depthwise convs), Scale,
Flatten and IF (`v' = R I`, spike when `v > v_threshold`, reset by subtraction `v -= v_threshold`),
and LIF for a leaky neuron (tau = -1 / ln(leak) counted in timesteps: the `steps` reading below).
Current sums are NIR's summed fan-in (several edges into one node), with the nodes chained in
topological order for depth-first readers. The `binary` form (`nir_graph`) writes each D-spike
neuron as D single-spike IF copies that single-spike readers compute exactly; neurons that carry
their membrane over T > 1 windows get their initial membrane from a start pulse (`_start_pulse`:
NIR's IF has none). What NIR cannot say is
listed in `NirExport.lost`; ops it cannot express at all (spike products, permutes, a linear map
over tokens) are refused, naming the nodes. The exact snncc semantics (D spikes per window, theta,
beta, the constant current, statefulness) travel in node metadata (`snncc_*` keys), so snncc reads
its own files back exactly.

Import (`from_nir`) maps IF onto `fire` with theta = v_threshold / R, so graphs written by other
tools run on the reference executor. Per-neuron thresholds become a per-neuron input `scale` and
theta = 1. NIR's LIF is a continuous-time ODE (tau v' = v_leak - v + R I, reset by subtraction):
how it becomes steps is the reader's choice, so the import takes one (`LIF_RULES`): `steps`
(tau counted in timesteps, v <- exp(-1/tau) v + R I: sinabs 3.1.3's reading, LIFSqueeze with
norm_input=False, which needs v_leak = 0), `euler:DT` (v <- v + DT/tau (v_leak - v + R I)) or
`exp:DT` (the exact solution for an input held over DT: v <- a v + (1 - a)(v_leak + R I), a =
exp(-DT/tau)), each exactly a stateful `fire` with leak a, input gain and constant current; or
`approximate` (IF, leak dropped, listed in `nir_approximations`). Without a rule LIF is refused.
"""

from __future__ import annotations

import io
import math
import os
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from snncc.errors import FrontendError, LoadError, TargetError
from snncc.ir import registry
from snncc.ir.graph import Graph, Node
from snncc.ir.ops import CURRENT, KINDS, SPIKE, neuron_features

META = "snncc_"  # metadata key prefix


@dataclass
class NirExport:
    graph: object  # nir.NIRGraph
    lost: list[str] = field(default_factory=list)  # semantics a foreign NIR reader does not get
    names: dict[str, str] = field(default_factory=dict)  # IR node -> NIR node
    copies: dict[str, int] = field(default_factory=dict)  # IR neuron -> its single-spike copies (binary form)

    def neuron_counts(self, neuron: str, counts):
        """snncc's counts of IR `neuron` from a reader's counts (B, ...) of its NIR node: in the binary
        form the sum of each neuron's D copies (channels c*D .. c*D + D-1), else the counts as they are."""
        d = self.copies.get(neuron, 1)
        if d == 1:
            return counts
        return counts.reshape((counts.shape[0], -1, d) + tuple(counts.shape[2:])).sum(2)


def _nir():
    try:
        import nir
    except ImportError:
        raise TargetError("the nir package is not installed", hint="pip install 'nir<=1.0.4'") from None
    return nir


# ---- export ---------------------------------------------------------------------------------------
def _global_mean(g: Graph, n: Node) -> bool:
    return len(g[n.inputs[0]].shape) == 3 and n.attrs["dims"] == (1, 2)


def _numel(n: Node) -> int:
    return math.prod(n.shape)


def _flatten_dims(src: tuple, dst: tuple) -> tuple[int, int] | None:
    """(start, end) if dst is src with the axes start..end merged into one."""
    for s in range(len(src)):
        for e in range(s, len(src)):
            if tuple(src[:s]) + (math.prod(src[s:e + 1]),) + tuple(src[e + 1:]) == tuple(dst):
                return s, e
    return None


def _channel_vector(c: np.ndarray, shape: tuple, axis: int) -> np.ndarray | None:
    full = np.broadcast_to(np.asarray(c, dtype=np.float64), shape)
    moved = np.moveaxis(full, axis, 0).reshape(shape[axis], -1)
    return moved[:, 0].copy() if np.all(moved == moved[:, :1]) else None


FORMS = ("binary", "multispike")  # how a D > 1 neuron is written (`to_nir(form=)`, `--nir-form`)


def _key(name: str, taken: set) -> str:
    """A node name every reader accepts: letters, digits and '_' (snntorch 1.0 rejects '.', nirtorch
    rewrites it); made unique."""
    base = re.sub(r"[^A-Za-z0-9_]", "_", name) or "n"
    key, i = base, 1
    while key in taken:
        key, i = f"{base}_{i}", i + 1
    taken.add(key)
    return key


def _ones_conv(name: str, x: str, channels: int, copies: int, kernel: tuple, stride: tuple, padding: tuple,
               value: float) -> Node:
    """A depthwise conv of `channels` groups, each summing `copies` input channels over `kernel`
    with weight `value`: a sum/avg pool, a global mean, the sum of a neuron's copies."""
    w = np.full((channels, copies) + tuple(kernel), value)
    nd = len(kernel)
    return Node(name, "conv", [x], {"stride": tuple(stride), "padding": tuple(padding), "dilation": (1,) * nd,
                                    "groups": channels}, {"weight": w})


def _private_tree(g: Graph, root: str, private) -> list[tuple[Node, bool]] | None:
    """The current ops computing `root` down to (and with) the projections reading spikes, when each
    has one user and is of a kind whose output rows can be repeated (its `NirOp.rows` cell); else None."""
    tree, todo = [], [root]  # (node, reads a current)
    while todo:
        t = g[todo.pop()]
        if not private(t.name):
            return None
        rows = _cell(t.op).rows
        inner = rows.inner(g, t) if rows is not None else None
        if inner is None:
            return None
        tree.append((t, inner))
        if inner:
            todo += t.inputs
    return tree


@dataclass(frozen=True)
class Rows:
    """How one op of a neuron's private current tree repeats its output rows over the neuron's
    copies (the binary form): `inner(g, t)` is True when `t` reads a current whose rows are
    repeated too (walk on), False when it is a projection reading spikes or the input (a leaf),
    None when its rows cannot be repeated (no private tree); `repeat(t, inner, d)` makes `t` compute
    its value d times, channel-major (row c -> rows c*d .. c*d + d-1)."""
    inner: Callable
    repeat: Callable


def _conv_rows(g: Graph, t: Node) -> bool | None:
    x = g[t.inputs[0]]
    if x.kind == SPIKE or x.op == "input":
        return False
    # of a current: only a per-channel (depthwise) conv repeats per copy
    depthwise = t.attrs["groups"] == t.shape[0] == t.params["weight"].shape[0] and t.params["weight"].shape[1] == 1
    return True if depthwise and "bias" not in t.params else None


def _repeat_projection(t: Node, inner: bool, d: int) -> None:
    t.params = {k: np.repeat(v, d, axis=0) for k, v in t.params.items()}
    if inner:  # a per-channel conv of a current: per copy
        t.attrs["groups"] *= d


def _reshape_rows(g: Graph, t: Node) -> bool | None:
    src = g[t.inputs[0]].shape
    if src[0] != t.shape[0] and math.prod(src[1:]) != 1:
        return None  # the copies of a channel stay together only if the reshape keeps channels
    return True


def _repeat_reshape(t: Node, inner: bool, d: int) -> None:
    t.attrs["shape"] = (t.attrs["shape"][0] * d,) + tuple(t.attrs["shape"][1:])


def _repeat_scale(t: Node, inner: bool, d: int) -> None:
    f = np.asarray(t.params["factor"])
    if f.ndim == len(t.shape) and f.shape[0] > 1:
        t.params = {"factor": np.repeat(f, d, axis=0)}


_CONV_ROWS = Rows(_conv_rows, _repeat_projection)
_LINEAR_ROWS = Rows(lambda g, t: False, _repeat_projection)
_ADD_ROWS = Rows(lambda g, t: True, lambda t, inner, d: None)  # its inputs repeat theirs
_RESHAPE_ROWS = Rows(_reshape_rows, _repeat_reshape)
_SCALE_ROWS = Rows(lambda g, t: True, _repeat_scale)


def _start_pulse(put, fresh, inp: Node) -> str:
    """Neurons that spike once, at the first step, from constant currents alone (NIR's IF has no
    initial membrane; this pulse, weighted, writes one): a clock pair of stateful IFs (theta 1) fed
    the constants 1 and 0.5 spikes (1, 1, 1, ...) and (0, 1, 0, 1, ...); a third IF fed clock -
    2 * half-clock (1, -1, 1, -1, ...) fires at step 1 (v = 1 >= 1, reset to 0) and never again (v
    alternates -1, 0; above sinabs' clip at -v_threshold). Fires on v >= theta (snncc, sinabs) and
    resets by subtraction in every reader that computes the copies. Returns the pulse node, (1, 1, 1)."""
    spatial = tuple(inp.shape[1:]) if len(inp.shape) == 3 else None
    if spatial is None:  # a vector input: Affine-shaped constants
        src = inp.name if len(inp.shape) == 1 else put(Node(fresh("start_flat"), "reshape", [inp.name],
                                                            {"shape": (math.prod(inp.shape),)}))
        c = put(Node(fresh("start_const"), "linear", [src], {},
                     {"weight": np.zeros((2, math.prod(inp.shape))), "bias": np.array([1.0, 0.5])}))
        one = {"D": 1, "theta": 1.0, "beta": 0.0, "norm": 1.0, "rounding": "floor", "stateful": True, "leak": 1.0,
           "reset": "subtract", "leak_first": False}
        clk = put(Node(fresh("start_clock"), "fire", [c], dict(one)))
        d = put(Node(fresh("start_diff"), "linear", [clk], {}, {"weight": np.array([[1.0, -2.0]])}))
        return put(Node(fresh("start"), "fire", [d], dict(one)))
    c = put(Node(fresh("start_const"), "conv", [inp.name], {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1),
                                                            "groups": 1},
                 {"weight": np.zeros((2, inp.shape[0]) + spatial), "bias": np.array([1.0, 0.5])}))
    one = {"D": 1, "theta": 1.0, "beta": 0.0, "norm": 1.0, "rounding": "floor", "stateful": True, "leak": 1.0,
           "reset": "subtract", "leak_first": False}
    clk = put(Node(fresh("start_clock"), "fire", [c], dict(one)))
    d = put(Node(fresh("start_diff"), "conv", [clk], {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1),
                                                      "groups": 1}, {"weight": np.array([1.0, -2.0]).reshape(1, 2, 1, 1)}))
    return put(Node(fresh("start"), "fire", [d], dict(one)))


def _initial_membrane(put, fresh, pulse: Node, v0: np.ndarray) -> str:
    """The current `v0` (a neuron's shape) at the first step only: the start pulse spread by a conv
    whose (H, W) kernel with padding (H - 1, W - 1) reads the one pulse pixel at every position (or
    an Affine for a vector)."""
    if len(v0.shape) == 1:
        flat = put(Node(fresh(f"{pulse.name}_flat"), "reshape", [pulse.name], {"shape": (1,)})) \
            if len(pulse.shape) == 3 else pulse.name
        return put(Node(fresh(f"{pulse.name}_v0"), "linear", [flat], {}, {"weight": v0.reshape(-1, 1).copy()}))
    if len(v0.shape) != 3 or len(pulse.shape) != 3:
        raise TargetError("an initial membrane of a stateful neuron in a map behind a vector input has no NIR form",
                          where=f"node {pulse.name}", hint="--nir-form multispike, or keep the artefact (snncc.load)")
    h, w = v0.shape[1:]
    kern = np.flip(v0, axis=(1, 2))[:, None].copy()  # output (y, x) reads kernel tap (h-1-y, w-1-x)
    return put(Node(fresh(f"{pulse.name}_v0"), "conv", [pulse.name], {"stride": (1, 1), "padding": (h - 1, w - 1),
                                                                        "dilation": (1, 1), "groups": 1},
                    {"weight": kern}))


def nir_graph(graph: Graph, form: str = "binary") -> tuple[Graph, dict[str, str], dict[str, int]]:
    """The IR graph NIR is written from, equal in function to `graph` (checked by
    tests/test_nir_peers.py with snncc's own executor and the readers):
    - node names every reader accepts (`_key`);
    - a sum or average pool, and a global spatial mean, as the depthwise conv with a ones kernel
      (1/(k k) for an average) that every reader maps (snntorch 1.0 has no SumPool2d, sinabs no
      AvgPool2d); `to_nir` writes it as its groups=1 kernel;
    - form "binary": each neuron with D > 1 becomes D single-spike copies (channel c -> channels
      c D + k, k = 0..D-1) fed the same current plus k theta, with threshold D theta (D = 1): copy
      k fires iff v >= (D - k) theta, so the copies' spikes add up to clip(floor(v / theta), 0, D)
      in every window, and a reader whose IF fires at most once per step computes the deployed
      counts exactly. The projections into the neuron repeat their rows over the copies (a ones
      fan-out conv when they feed other nodes too), its consumers repeat their columns, an output
      read from spikes sums the copies.
    - stateful neurons of a multi-window graph (T > 1, membrane v - n theta carried): the copies'
      membranes stay {v + j theta : j = 0..D-1} as a set from window to window (each copy that fires
      drops D theta, exactly the copies above v - n theta + D theta), so the offsets k theta (and beta,
      snncc's initial membrane of a stateful neuron) are needed once, as an initial membrane, which
      NIR's IF has no field for: a start pulse (`_start_pulse`, IF neurons on constant currents)
      adds them at the first step only, in either form (the compact form gets beta).
    Returns (graph, {IR name: NIR name}, {neuron: copies})."""
    if form not in FORMS:
        raise TargetError(f"unknown NIR form {form!r}", where="--nir-form", hint=f"one of {', '.join(FORMS)}")
    e = _Expansion(graph, form)
    for n in graph.nodes:
        nm = e.names[n.name]
        x = e.names[n.inputs[0]] if n.inputs else None
        op = _cell(n.op)
        if op.expand is not None and op.expand(e, n, nm, x):
            continue
        if x in e.orig:  # reads a neuron's copies
            if op.copies is None:
                e.refuse(n, f"{n.op} reading a neuron's copies")
            op.copies(e, n, nm, x)
            continue
        c = n.clone()
        c.name, c.inputs = nm, [e.names[i] for i in n.inputs]
        e.put(c)
    return e.out.verify(), e.names, e.copies


class _Expansion:
    """What the per-op cells of `nir_graph` share: the graph being built, names, and the layout of
    each neuron's copies."""

    def __init__(self, graph: Graph, form: str):
        self.g, self.form = graph, form
        self.out = Graph(T=graph.T, meta=dict(graph.meta))
        self.taken: set = set()
        self.names = {n.name: _key(n.name, self.taken) for n in graph.nodes}
        self.copies: dict[str, int] = {}
        self.orig: dict[str, np.ndarray] = {}  # expanded value (out name) -> flat index of the original element
        self.rep: dict[str, int] = {}  # expanded value laid out channel-major (c D + k) -> D
        self.n_users: dict[str, int] = {}  # out node -> its users (in the finished graph)
        for k, us in graph.users().items():
            self.n_users[self.names[k]] = len(us)
        self.pulse: list[str] = []  # the start pulse, built when a neuron first needs an initial membrane

    def fresh(self, base: str) -> str:
        return _key(base, self.taken)

    def put(self, node: Node) -> str:
        self.out.append(node)
        self.out.infer_last()
        for i in node.inputs:
            self.n_users.setdefault(i, 1)  # helper nodes (a pool's conv before its reshape) have one user
        return node.name

    def v0_current(self, nm: str, u: str, v0: np.ndarray) -> str:
        self.out.meta.setdefault("nir_started", []).append(nm)
        if not self.pulse:
            self.pulse.append(_start_pulse(self.put, self.fresh, self.out.inputs[0]))
        return self.put(Node(self.fresh(f"{u}_v0"), "add",
                             [u, _initial_membrane(self.put, self.fresh, self.out[self.pulse[0]], v0)]))

    def refuse(self, n: Node, what: str):
        raise TargetError(f"{what} in the binary NIR form", where=f"node {n.name}",
                          hint="--nir-form multispike writes the compact form")


def _pool_conv(e: _Expansion, n: Node, nm: str, x: str, kernel, stride, padding, value: float, mode: str,
               keep: bool) -> None:
    """A sum/avg pool or a global mean as the depthwise ones-kernel conv every reader maps (per
    copy of a neuron's copies); `keep`: the conv carries the node's name (else a reshape to (C,) does)."""
    c = e.g[n.inputs[0]].shape[0]
    d = e.rep.get(x, 1)
    if x in e.orig and x not in e.rep:
        e.refuse(n, "pooling of a reshaped copy layout")
    conv = _ones_conv(nm if keep else e.fresh(f"{nm}_sum"), x, c, d, kernel, stride, padding, value)
    e.put(conv)
    if d == 1:  # snncc reads it back as the pool / mean (a conv of a current would cost MACs)
        e.out.meta.setdefault("nir_pools", {})[conv.name] = mode
    if not keep:
        e.put(Node(nm, "reshape", [conv.name], {"shape": (c,)}))


def _expand_pool(e: _Expansion, n: Node, nm: str, x: str) -> bool:
    a = n.attrs
    _pool_conv(e, n, nm, x, a["kernel"], a["stride"], a["padding"],
               1.0 if a["mode"] == "sum" else 1.0 / math.prod(a["kernel"]), a["mode"], True)
    return True


def _expand_mean(e: _Expansion, n: Node, nm: str, x: str) -> bool:
    if not _global_mean(e.g, n):
        return False
    k = tuple(e.g[n.inputs[0]].shape[1:])
    _pool_conv(e, n, nm, x, k, k, (0, 0), 1.0 / math.prod(k), "mean", n.attrs["keepdim"])
    return True


def _copies_conv(e: _Expansion, n: Node, nm: str, x: str) -> None:
    if x not in e.rep:
        e.refuse(n, "conv reading a neuron's copies")
    w = np.repeat(n.params["weight"], e.rep[x], axis=1)
    e.put(Node(nm, "conv", [x], dict(n.attrs), {**n.params, "weight": w}))


def _copies_linear(e: _Expansion, n: Node, nm: str, x: str) -> None:
    e.put(Node(nm, "linear", [x], {}, {**n.params, "weight": n.params["weight"][:, e.orig[x]]}))


def _copies_reshape(e: _Expansion, n: Node, nm: str, x: str) -> None:
    src = e.out[x]
    if not (len(n.shape) == 1 or (x in e.rep and n.shape[0] == e.g[n.inputs[0]].shape[0])):
        e.refuse(n, "reshape reading a neuron's copies")
    keep = len(n.shape) > 1  # channels kept: still channel-major copies
    e.put(Node(nm, "reshape", [x], {"shape": (src.shape[0],) + tuple(n.shape[1:]) if keep
                                    else (math.prod(src.shape),)}))
    e.orig[nm] = e.orig[x]
    if keep:
        e.rep[nm] = e.rep[x]


def _copies_mean(e: _Expansion, n: Node, nm: str, x: str) -> None:
    if not (x in e.rep and 0 not in n.attrs["dims"]):  # per channel: per copy
        e.refuse(n, "mean reading a neuron's copies")
    d = e.rep[x]
    e.put(Node(nm, "mean", [x], dict(n.attrs)))
    c = n.shape[0] if n.shape else 1
    e.orig[nm] = np.repeat(np.arange(math.prod(n.shape)).reshape(c, -1), d, axis=0).reshape(-1)
    e.rep[nm] = d


def _copies_scale(e: _Expansion, n: Node, nm: str, x: str) -> None:
    f = np.broadcast_to(n.params["factor"], e.g[n.inputs[0]].shape).reshape(-1)[e.orig[x]]
    e.put(Node(nm, "scale", [x], {}, {"factor": f.reshape(e.out[x].shape)}))


def _copies_output(e: _Expansion, n: Node, nm: str, x: str) -> None:
    src = e.out[x]
    if len(src.shape) == 1:
        w = np.zeros((math.prod(e.g[n.inputs[0]].shape), src.shape[0]))
        w[e.orig[x], np.arange(src.shape[0])] = 1.0
        s = e.put(Node(e.fresh(f"{x}_sum"), "linear", [x], {}, {"weight": w}))
    elif x in e.rep:
        c = src.shape[0] // e.rep[x]
        s = e.put(_ones_conv(e.fresh(f"{x}_sum"), x, c, e.rep[x], (1,) * (len(src.shape) - 1),
                             (1,) * (len(src.shape) - 1), (0,) * (len(src.shape) - 1), 1.0))
    else:
        e.refuse(n, "an output read from reshaped copies")
    e.put(Node(nm, "output", [s]))


def _expand_fire(e: _Expansion, n: Node, nm: str, x: str) -> bool:
    """A neuron: D > 1 in the binary form becomes D single-spike copies (`nir_graph`); a stateful
    one carried over windows gets its initial membrane from the start pulse."""
    if x in e.orig:
        e.refuse(n, "fire reading a neuron's copies")
    a, g = n.attrs, e.g
    D = a["D"]
    carried = a["stateful"] and g.T > 1 and a["leak"] == 1.0
    if e.form == "binary" and D > 1 and (not a["stateful"] or g.T == 1 or carried):
        shape = g[n.inputs[0]].shape
        size = math.prod(shape)
        tree = _private_tree(e.out, x, lambda v: e.n_users.get(v, 0) == 1)
        if tree is not None:  # every current op into the neuron is its own: repeat their rows
            for t, inner in tree:
                _cell(t.op).rows.repeat(t, inner, D)
            e.out.infer()
            u = x
        elif len(shape) == 1:
            w = np.zeros((size * D, size))
            w[np.arange(size * D), np.repeat(np.arange(size), D)] = 1.0
            u = e.put(Node(e.fresh(f"{nm}_fanout"), "linear", [x], {}, {"weight": w}))
        else:
            nd = len(shape) - 1
            u = e.put(Node(e.fresh(f"{nm}_fanout"), "conv", [x], {"stride": (1,) * nd, "padding": (0,) * nd,
                                                                   "dilation": (1,) * nd, "groups": shape[0]},
                           {"weight": np.ones((shape[0] * D, 1) + (1,) * nd)}))
        idx = np.repeat(np.arange(size).reshape(shape[0], -1), D, axis=0).reshape(-1)
        k = np.tile(np.repeat(np.arange(D), size // shape[0]), shape[0])
        cshape = (shape[0] * D,) + tuple(shape[1:])
        offset = (a["beta"] + k * a["theta"]).reshape(cshape)  # per window; once when carried
        b = np.broadcast_to(np.asarray(n.params.get("bias", 0.0), dtype=np.float64), shape).reshape(-1)[idx]
        if carried:
            u = e.v0_current(nm, u, offset)
            bias = b.reshape(cshape)
        else:
            bias = b.reshape(cshape) + offset
        e.put(Node(nm, "fire", [u], {**a, "D": 1, "theta": D * a["theta"], "beta": 0.0}, {"bias": bias}))
        e.orig[nm], e.rep[nm], e.copies[n.name] = idx, D, D
        return True
    if carried and a["beta"] != 0.0:  # beta, the initial membrane, by the start pulse
        c = n.clone()
        c.name, c.inputs = nm, [e.v0_current(nm, x, np.full(n.shape, float(a["beta"])))]
        c.attrs["beta"] = 0.0
        e.put(c)
        return True
    return False


# ---- per-op NIR writers (the "nir" column of the op registry) ---------------------------------
registry.column("nir", "target", "NIR export (snncc export-nir): each op's NIR primitive, or why NIR cannot say it",
                module="snncc.interop.nir_io")


@dataclass(frozen=True)
class NirOp:
    """How one op is written to NIR: `check(g, n)` says why this node cannot be (None: it can), on
    the deployed graph; `emit(w, n)` writes it on the `nir_graph` form (None: `nir_graph` rewrote
    the op into others, as a pool into a ones-kernel conv)."""
    check: Callable | None = None
    emit: Callable | None = None
    # on the way to the `nir_graph` form: `expand(e, n, nm, x)` writes the node itself and returns
    # True (a pool as a ones-kernel conv, a neuron as its copies), or False to copy it as it is;
    # `copies(e, n, nm, x)` writes it when it reads a neuron's copies (None: the binary form refuses
    # that); `rows` repeats its rows inside a neuron's private tree (None: it ends no such tree)
    expand: Callable | None = None
    copies: Callable | None = None
    rows: Rows | None = None
    # a projection: the axis of the neuron's shape its bias is per channel on (constant currents
    # move into it, `to_nir`); None: not a projection
    bias_axis: Callable | None = None


def _cell(op: str) -> NirOp:
    """The NIR writer of an op that `to_nir` has checked (every op of the `nir_graph` form has one)."""
    return registry.lookup(op, "nir")


@dataclass
class _Writer:
    """What the per-op writers of `to_nir` share: the NIR nodes and edges built so far."""
    nir: object
    g: Graph
    binary: dict  # NIR name -> copies
    weights_bias: dict  # projection -> bias moved there from its neuron
    bias_owner: dict  # projection -> that neuron
    nodes: dict = field(default_factory=dict)
    edges: list = field(default_factory=list)
    sources: dict = field(default_factory=dict)  # IR value -> NIR node ids whose (summed) outputs form it
    group_meta: dict = field(default_factory=dict)
    graded: list = field(default_factory=list)
    stateless: list = field(default_factory=list)
    grouped: list = field(default_factory=list)
    leaky: list = field(default_factory=list)

    def link(self, name: str, dst: str) -> None:
        for s in self.sources[name]:
            self.edges.append((s, dst))


def _nir_op(*ops: str, check: Callable | None = None, **binary_form):
    def deco(emit):
        for op in ops:
            registry.implement(op, NirOp(check, emit, **binary_form), where=f"{__name__}.{emit.__name__}",
                               target="nir")
        return emit
    return deco


def _emit_input(w: _Writer, n: Node) -> None:
    w.nodes[n.name] = w.nir.Input(input_type={"input": np.array(n.shape)})


def _emit_output(w: _Writer, n: Node) -> None:
    w.nodes[n.name] = w.nir.Output(output_type={"output": np.array(n.shape)})
    w.link(n.inputs[0], n.name)


def _emit_add(w: _Writer, n: Node) -> None:  # NIR sums a node's fan-in: the add is its inputs' edges
    w.sources[n.name] = [s for i in n.inputs for s in w.sources[i]]


def _check_conv(g: Graph, n: Node) -> str | None:
    return "conv of rank other than 1d/2d" if n.params["weight"].ndim not in (3, 4) else None


def _emit_conv(w: _Writer, n: Node) -> None:
    nir, g, a = w.nir, w.g, n.attrs
    wt = _ungrouped(n.params["weight"], a["groups"])
    if a["groups"] != 1:
        w.grouped.append(f"{n.name} (groups={a['groups']})")
    bias = w.weights_bias.get(n.name, n.params.get("bias"))
    bias = np.zeros(wt.shape[0]) if bias is None else bias
    in_shape = g[n.inputs[0]].shape
    if wt.ndim == 4:
        w.nodes[n.name] = nir.Conv2d(input_shape=tuple(in_shape[1:]), weight=wt, stride=a["stride"],
                                     padding=a["padding"], dilation=a["dilation"], groups=1, bias=bias)
    else:
        w.nodes[n.name] = nir.Conv1d(input_shape=int(in_shape[1]), weight=wt, stride=a["stride"][0],
                                     padding=a["padding"][0], dilation=a["dilation"][0], groups=1, bias=bias)
    if a["groups"] != 1:  # nir 1.0.4's Conv2d keeps no metadata: the graph's does
        w.group_meta[f"{META}groups:{n.name}"] = int(a["groups"])
    if n.name in g.meta.get("nir_pools", {}):
        w.group_meta[f"{META}pool:{n.name}"] = g.meta["nir_pools"][n.name]
    w.link(n.inputs[0], n.name)


def _check_linear(g: Graph, n: Node) -> str | None:
    return "linear over a token axis (NIR Affine maps vectors)" if len(g[n.inputs[0]].shape) != 1 else None


def _emit_linear(w: _Writer, n: Node) -> None:  # always Affine: sinabs 3.1.3 has no mapping for nir.Linear
    wt = n.params["weight"]
    bias = w.weights_bias.get(n.name, n.params.get("bias"))
    w.nodes[n.name] = w.nir.Affine(weight=wt, bias=np.zeros(wt.shape[0]) if bias is None else bias)
    w.link(n.inputs[0], n.name)


def _check_mean(g: Graph, n: Node) -> str | None:
    if not _global_mean(g, n) and (len(n.shape) != 1 or _numel(g[n.inputs[0]]) > 1 << 20):
        return "mean that is neither a global spatial average nor a vector (dense Linear) reduction"
    return None


def _emit_mean(w: _Writer, n: Node) -> None:  # a vector reduction (pools and global means are convs): Flatten + dense Linear
    nir, g = w.nir, w.g
    src = g[n.inputs[0]].shape
    x_id = n.inputs[0]
    if len(src) > 1:
        fl = _key(f"{n.name}_flatten", {m.name for m in g.nodes} | set(w.nodes))
        w.nodes[fl] = nir.Flatten(input_type={"input": np.array(src)}, start_dim=0, end_dim=-1)
        w.link(n.inputs[0], fl)
        w.sources[fl] = [fl]
        x_id = fl
    eye = np.eye(math.prod(src)).reshape((-1,) + tuple(src))
    wt = eye.mean(axis=tuple(d + 1 for d in n.attrs["dims"])).reshape(math.prod(src), -1).T
    w.nodes[n.name] = nir.Affine(weight=np.ascontiguousarray(wt), bias=np.zeros(wt.shape[0]))  # sinabs: no Linear
    w.link(x_id, n.name)


def _check_reshape(g: Graph, n: Node) -> str | None:
    return "reshape that is not a flatten" if _flatten_dims(g[n.inputs[0]].shape, n.shape) is None else None


def _emit_reshape(w: _Writer, n: Node) -> None:
    src = w.g[n.inputs[0]].shape
    s, e = _flatten_dims(src, n.shape)
    e = -1 if e == len(src) - 1 else e  # to the last axis: also right in a reader that counts the batch axis
    w.nodes[n.name] = w.nir.Flatten(input_type={"input": np.array(src)}, start_dim=s, end_dim=e)
    w.link(n.inputs[0], n.name)


def _emit_scale(w: _Writer, n: Node) -> None:
    w.nodes[n.name] = w.nir.Scale(scale=np.broadcast_to(n.params["factor"], n.shape).astype(np.float64).copy())
    w.link(n.inputs[0], n.name)


def _check_fire(g: Graph, n: Node) -> str | None:
    if n.attrs["norm"] != 1.0 or n.attrs["rounding"] != "floor":
        return "fire not in deployed form (norm 1, floor)"
    if neuron_features(n.attrs):
        return f"a neuron's {' and '.join(neuron_features(n.attrs))} (snncc's NIR neurons subtract theta)"
    return None


def _emit_fire(w: _Writer, n: Node) -> None:
    nir, a = w.nir, n.attrs
    if a["leak"] != 1.0 and not a["leak"] > 0.0:
        raise TargetError("leaky neuron with leak 0 (nothing carried) has no NIR LIF time constant",
                          where=f"node {n.name}", hint="keep the compiled artefact (snncc.load)")
    shape = n.shape
    meta = {f"{META}D": int(a["D"]), f"{META}theta": float(a["theta"]), f"{META}beta": float(a["beta"]),
            f"{META}stateful": int(bool(a["stateful"]))}
    if a["leak"] != 1.0:
        meta[f"{META}leak"] = float(a["leak"])
    if n.name in w.binary:
        meta[f"{META}copies"] = int(w.binary[n.name])
    if "bias" in n.params:
        meta[f"{META}bias"] = np.asarray(n.params["bias"], dtype=np.float64)
    for proj, f_name in w.bias_owner.items():
        if f_name == n.name:
            meta[f"{META}bias_in"] = proj  # written there for foreign readers; snncc takes it back out
    if a["leak"] != 1.0:  # one NIR step per timestep, tau in steps: v <- exp(-1/tau) v + I (`steps`)
        tau = -1.0 / math.log(float(a["leak"]))
        one = (1,) * len(shape)  # broadcast over the neurons: sinabs 3.1.3's reader tests any(v_leak)
        w.nodes[n.name] = nir.LIF(tau=np.full(one, tau), r=np.ones(one), v_leak=np.zeros(one),  # on axis 0
                                  v_threshold=np.full(one, float(a["theta"])), metadata=meta)
        w.leaky.append(f"{n.name} (leak {float(a['leak']):.6g}: tau {tau:.6g} steps)")
    else:
        w.nodes[n.name] = nir.IF(r=np.ones(shape), v_threshold=np.full(shape, float(a["theta"])), metadata=meta)
    w.link(n.inputs[0], n.name)
    if a["D"] > 1:
        w.graded.append(f"{n.name} (D={a['D']})")
    if not a["stateful"]:
        w.stateless.append(n.name)


_nir_op("input")(_emit_input)
_nir_op("output", copies=_copies_output)(_emit_output)
_nir_op("add", rows=_ADD_ROWS)(_emit_add)
_nir_op("conv", check=_check_conv, copies=_copies_conv, rows=_CONV_ROWS, bias_axis=lambda shape: 0)(_emit_conv)
_nir_op("linear", check=_check_linear, copies=_copies_linear, rows=_LINEAR_ROWS,
        bias_axis=lambda shape: len(shape) - 1)(_emit_linear)
_nir_op("mean", check=_check_mean, expand=_expand_mean, copies=_copies_mean)(_emit_mean)
_nir_op("reshape", check=_check_reshape, copies=_copies_reshape, rows=_RESHAPE_ROWS)(_emit_reshape)
_nir_op("scale", copies=_copies_scale, rows=_SCALE_ROWS)(_emit_scale)
_nir_op("fire", check=_check_fire, expand=_expand_fire)(_emit_fire)
registry.implement("pool", NirOp(expand=_expand_pool), where=f"{__name__}._expand_pool (a ones-kernel depthwise conv)",
                   target="nir")
registry.refuse("spike_product", target="nir", why="spike product (multiplicative synapse)")
registry.refuse("permute", target="nir", why="permute (NIR has no transpose)")
registry.refuse("upsample", target="nir", why="nearest upsampling (NIR has no upsampling node)")
registry.refuse("bilinear", target="nir", why="bilinear interpolation (NIR has no interpolation node)")
registry.refuse("offset", target="nir",
                why="offset of a concatenation or of several outputs (NIR sums fan-in, it has no concatenation)")
registry.refuse("batchnorm", target="nir", why="batchnorm (run the deploy pipeline first)")
registry.refuse("pad", target="nir", why="pad (run the deploy pipeline first: reparam fuses it into its projection)")
registry.refuse("max_pool", target="nir",
                why="max pooling, of spikes or of the input's encoding (NIR has no max-pool node)")
_RELAY = "op relay has no NIR mapping"
registry.refuse("relay", target="nir", why=_RELAY)


def to_nir(graph: Graph, form: str = "binary") -> NirExport:
    """Express a deployed graph in NIR (`form`: `FORMS`, see `nir_graph`). Raises TargetError naming
    every node NIR cannot express."""
    nir = _nir()
    g = graph
    refused: dict[str, list[str]] = {}
    relays = []
    for n in g.nodes:
        c = registry.cell(n.op, "nir")
        if c is None:
            why = f"op {n.op} (no NIR cell registered)"
        elif c.refused:
            why = c.why
        else:
            why = c.impl.check(g, n) if c.impl.check else None
        if why == _RELAY:  # refused after the others, with its own hint
            relays.append(n.name)
        elif why:
            refused.setdefault(why, []).append(n.name)
    if refused:
        parts = [f"{why}: {', '.join(names)}" for why, names in refused.items()]
        raise TargetError(f"NIR cannot express {'; '.join(parts)}", where="export-nir",
                          hint="NIR holds feed-forward conv/linear/pool networks of IF neurons")
    if relays:
        raise TargetError(_RELAY, where=f"node {relays[0]}",
                          hint="export the artefact (snncc export-nir, Deployment.export_nir): relayed streams are "
                               "re-lowered to fan-in from its traced graph")
    g, names, copies = nir_graph(g, form)
    binary = {names[k]: d for k, d in copies.items()}  # NIR name -> copies
    users = g.users()
    weights_bias: dict[str, np.ndarray] = {}  # projection -> bias moved there from its neuron
    bias_owner: dict[str, str] = {}  # projection -> that neuron
    lost: list[str] = []
    moved, kept = [], []

    # Constant currents (bias + beta of a window-reset neuron) go into a projection's bias where
    # one per-channel vector expresses them, so foreign readers see them too.
    for f in g.neurons():
        c = np.asarray(f.params.get("bias", np.zeros(())), dtype=np.float64)
        if not f.attrs["stateful"]:
            c = c + f.attrs["beta"]
        if not np.any(c):
            continue
        root = g[f.inputs[0]]
        if root.op == "reshape" and len(users[root.name]) == 1 and g[root.inputs[0]].shape[0] == f.shape[0]:
            root = g[root.inputs[0]]  # a global mean's (C, 1, 1) before the neuron's (C,)
        cands = root.inputs if root.op == "add" else [root.name]
        done = False
        for cand in cands:
            p = g[cand]
            axis = _cell(p.op).bias_axis
            if axis is None or len(users[p.name]) != 1 or "bias" in p.params or p.name in weights_bias:
                continue
            vec = _channel_vector(c, f.shape, axis(f.shape))
            if vec is not None:
                weights_bias[p.name] = vec
                bias_owner[p.name] = f.name
                moved.append(f.name)
                done = True
                break
        if not done:
            kept.append(f.name)

    w = _Writer(nir, g, binary, weights_bias, bias_owner)
    for n in g.nodes:
        c = registry.cell(n.op, "nir")
        if c is None or c.refused or c.impl.emit is None:  # pragma: no cover - nir_graph writes written ops
            raise TargetError(f"op {n.op} has no NIR mapping", where=f"node {n.name}")
        c.impl.emit(w, n)
        w.sources.setdefault(n.name, [n.name])
    nodes, edges, group_meta = w.nodes, w.edges, w.group_meta
    graded, stateless, grouped, leaky = w.graded, w.stateless, w.grouped, w.leaky

    fan_in = sorted({b for _, b in edges if sum(1 for _, d in edges if d == b) > 1})
    if fan_in:
        lost.append("summed fan-in (several edges into " + ", ".join(fan_in) + "): NIR sums a node's incoming "
                    "edges, and so do the readers of sinabs 3.1.3 and norse 1.1 (nirtorch 2.0.2), once each node "
                    "runs after its inputs (execution order below)")
    if grouped:
        lost.append("grouped convolutions " + ", ".join(grouped) + " are written as groups=1 kernels (block-diagonal, "
                    "zeros elsewhere), because nir 1.0.4 and its readers take the input channels from weight.shape[1]; "
                    "the same function, more stored synapses (snncc restores the groups from metadata)")
    if leaky:
        lost.append("leaky neurons " + ", ".join(leaky) + " are NIR LIF with tau counted in timesteps and r = 1, "
                    "v_leak = 0 (the `steps` reading, sinabs 3.1.3's: v <- exp(-1/tau) v + I); a reader that "
                    "discretises tau with its own dt (norse, snntorch) computes another neuron")
    if binary:
        lost.append("binary form: " + ", ".join(f"{k} (D={d})" for k, d in binary.items()) + " are written as D "
                    "single-spike IF copies each (channel c -> channels c*D + k, k = 0..D-1; threshold D*theta, "
                    "the copy's input current plus k*theta), the consumers' weights repeated over the copies: a "
                    "reader whose IF fires at most once per step (norse 1.1 IAFCell, sinabs with SingleSpike) "
                    "computes snncc's counts exactly at one NIR step per window (sum each neuron's D copies); "
                    "sinabs' default MultiSpike computes floor(v / theta) spikes, snncc's neuron without the cap D")
    if graded:
        lost.append("graded spikes: " + ", ".join(graded) + " emit up to D spikes per window; a NIR IF emits at "
                    "most one spike per step (snncc keeps D in metadata)" + (
                        "" if form == "binary" else "; --nir-form binary writes single-spike copies"))
    if stateless:
        lost.append("window reset: " + ", ".join(stateless) + " clear their membrane after each window; a NIR IF "
                    "keeps it across steps (run one step per sample and reset between samples)")
    lost.append("peers read a NIR IF differently: sinabs 3.1.3 builds a multi-spike IAF (floor(v / v_threshold) "
                "spikes per step, no cap at D, membrane clipped at -v_threshold), i.e. snncc's neuron without the "
                "cap (tested equal at one step per sample; NIR has no field for a spike cap, so sinabs' MultiSpike "
                "with the cap D cannot be written)")
    lost.append("firing condition: NIR IF fires when v > v_threshold, snncc when v >= theta (they differ only "
                "where the membrane lands exactly on the threshold); both reset by subtraction")
    if moved:
        lost.append("constant current and initial membrane (beta) of " + ", ".join(moved) + " are written as the "
                    "preceding projection's bias (exact for one step per window)")
    if kept:
        lost.append("constant current / initial membrane of " + ", ".join(kept) + " has no NIR form (kept only "
                    "in snncc metadata)")
    stateful_beta = [f.name for f in g.neurons() if f.attrs["stateful"] and f.attrs["beta"] != 0.0]
    if stateful_beta:
        lost.append("per-step membrane offset beta of stateful " + ", ".join(stateful_beta) + " (metadata only)")
    started = g.meta.get("nir_started", [])
    if started:
        lost.append("initial membranes: stateful " + ", ".join(started) + " carry v - n*theta across the T = "
                    f"{g.T} windows (one NIR step per window, state kept between steps, reset between samples); "
                    "NIR's IF has no initial membrane, so their beta (and the copies' k*theta) is added at the first "
                    "step by the start pulse `start` (IFs on constant currents: clock and half clock, the "
                    "difference fires once; it fires on v >= v_threshold and resets by subtraction, as snncc and "
                    "sinabs do). sinabs 3.1.3 then computes snncc's counts exactly while no membrane drops below "
                    "its clip at -v_threshold (min_v_mem; -D*theta for copies); norse 1.1's IAFCell resets to 0 "
                    "and fires on v > v_th, so it computes neither the pulse nor the carried membrane")
    if g.inputs[0].kind == CURRENT:
        lost.append("the input is a real-valued current (encoding layer); NIR Input carries no kind")
    meta = {f"{META}T": int(g.T), f"{META}input_kind": g.inputs[0].kind, f"{META}format": "snncc-nir-1",
            **group_meta}
    ng = nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)
    _declare_types(ng)
    ordered = _in_depth_first_order(ng)
    if ordered is not None:
        ng = ordered
        lost.append("execution order: nirtorch 2.0.2's `load` (the reader of sinabs 3.1.3 and norse 1.1) runs the "
                    "nodes in depth-first order from the input, each when first reached; so that every node runs "
                    "after all its inputs, the file chains the nodes in topological order with zero-weight "
                    "Conv2d/Affine nodes (`snncc_order:*` in the graph metadata: they add 0, snncc drops them)")
    return NirExport(ng, lost, names, copies)


def _dfs_is_topological(order_nodes, edges) -> bool:
    """Whether a depth-first pre-order walk from the Input (children in edge order, as nirtorch
    2.0.2's `trace_execution`) reaches every node after all its sources."""
    children: dict = {}
    for a, b in edges:
        children.setdefault(a, []).append(b)
    pos: dict = {}
    stack = [order_nodes[0]]
    while stack:
        k = stack.pop()
        if k in pos:
            continue
        pos[k] = len(pos)
        stack += reversed([c for c in children.get(k, []) if c not in pos])
    return len(pos) == len(order_nodes) and all(pos[a] < pos[b] for a, b in edges)


def _zero_nodes(nir, key: str, src: tuple, dst: tuple) -> list | None:
    """NIR nodes that map a tensor of shape `src` to zeros of shape `dst` (zero weights, zero bias):
    [(name suffix, node)], or None when no Conv2d / Flatten + Affine does."""
    if len(src) == 3 and len(dst) == 3:
        k, p = [], []
        for a, b in zip(src[1:], dst[1:]):
            if b <= a:
                k.append(a - b + 1)
                p.append(0)
            else:
                k.append(1 if (b - a) % 2 == 0 else 2)
                p.append((b - a + k[-1] - 1) // 2)
        w = np.zeros((dst[0], src[0]) + tuple(k))
        return [(key, nir.Conv2d(input_shape=tuple(src[1:]), weight=w, stride=1, padding=tuple(p), dilation=1,
                                 groups=1, bias=np.zeros(dst[0])))]
    if len(dst) == 1 and len(src) in (1, 3):
        out = []
        if len(src) == 3:
            out.append((f"{key}_flatten", nir.Flatten(input_type={"input": np.array(src)}, start_dim=0, end_dim=-1)))
        return out + [(key, nir.Affine(weight=np.zeros((dst[0], math.prod(src))), bias=np.zeros(dst[0])))]
    return None


def _in_depth_first_order(ng):
    """`ng` with its nodes chained in topological order (each node's first edge to the next node,
    through zero nodes where no edge joins them), so a depth-first reader runs every node after its
    inputs; None when `ng` already runs so, or when some pair of shapes has no zero node."""
    nir = _nir()
    order = [k for k, v in ng.nodes.items() if isinstance(v, nir.Input)]
    order += [k for k, v in ng.nodes.items() if not isinstance(v, (nir.Input, nir.Output))]
    order += [k for k, v in ng.nodes.items() if isinstance(v, nir.Output)]
    edges = [tuple(e) for e in ng.edges]
    if _dfs_is_topological(order, edges):
        return None
    before, spine, meta = {}, [], dict(ng.metadata)  # node -> the zero nodes chained in front of it
    taken = set(ng.nodes)
    for a, b in zip(order, order[1:]):
        if (a, b) in edges:
            spine.append((a, b))
            continue
        src = tuple(int(v) for v in np.asarray(ng.nodes[a].output_type["output"]).reshape(-1))
        dst = tuple(int(v) for v in np.asarray(ng.nodes[b].input_type["input"]).reshape(-1))
        zs = _zero_nodes(nir, _key(f"order_{a}", taken), src, dst)
        if zs is None:
            return None
        prev = a
        for name, node in zs:
            taken.add(name)
            before.setdefault(b, {})[name] = node
            meta[f"{META}order:{name}"] = 1
            spine.append((prev, name))
            prev = name
        spine.append((prev, b))
    nodes = {}  # in topological order: readers that build the graph node by node (snntorch's) need it
    for k in order:
        nodes.update(before.get(k, {}))
        nodes[k] = ng.nodes[k]
    out = nir.NIRGraph(nodes=nodes, edges=spine + [e for e in edges if e not in spine], metadata=meta)
    _declare_types(out)
    assert _dfs_is_topological(order[:1] + [k for k in out.nodes if k != order[0]], list(out.edges))
    return out


def _declare_types(ng) -> None:
    """Fill every node's input/output type by NIR's own inference and require that its type check
    passes, so readers that check types (and those that build layers from them) accept the file."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        ng.infer_types()
    try:
        ok = ng._check_types()
    except ValueError as e:  # pragma: no cover - a bug in the export above
        raise TargetError(f"NIR type check failed on the export ({e})", where="export-nir") from None
    if ok is False:  # pragma: no cover
        raise TargetError("NIR type check failed on the export", where="export-nir")


def _ungrouped(w: np.ndarray, groups: int) -> np.ndarray:
    """A grouped conv kernel (C_out, C_in/groups, k...) as the equivalent groups=1 kernel (C_out, C_in, k...)."""
    if groups == 1:
        return w
    co, cig = w.shape[:2]
    full = np.zeros((co, cig * groups) + w.shape[2:], dtype=w.dtype)
    per = co // groups
    for gi in range(groups):
        full[gi * per:(gi + 1) * per, gi * cig:(gi + 1) * cig] = w[gi * per:(gi + 1) * per]
    return full


def _regrouped(w: np.ndarray, groups: int) -> np.ndarray:
    """Inverse of `_ungrouped` (snncc's own files name the groups in metadata)."""
    if groups == 1:
        return w
    co, ci = w.shape[:2]
    per, cig = co // groups, ci // groups
    return np.concatenate([w[gi * per:(gi + 1) * per, gi * cig:(gi + 1) * cig] for gi in range(groups)])


def write_nir(graph: Graph, path: str, form: str = "binary") -> NirExport:
    """Export (`to_nir`), build the HDF5 file in memory, and write it with the one output writer
    (`artifact.write_bytes`: atomic, links and devices kept, one line on a full disk)."""
    from snncc import artifact

    nir = _nir()
    ex = to_nir(graph, form)
    buf = io.BytesIO()
    nir.write(buf, ex.graph)
    artifact.write_bytes(path, buf.getvalue())
    return ex


# ---- import ---------------------------------------------------------------------------------------
def _meta(node) -> dict:
    m = getattr(node, "metadata", None) or {}
    return {k[len(META):]: v for k, v in m.items() if isinstance(k, str) and k.startswith(META)}


def _name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@]", "_", str(key)) or "n"


def _ints(v, n: int) -> tuple:
    v = np.asarray(v).reshape(-1)
    return tuple(int(x) for x in (np.repeat(v, n) if v.size == 1 else v))


def flatten_nested(ng, source: str = "NIR graph"):
    """A NIRGraph whose nodes include NIRGraphs (sub-graphs, as other tools write blocks), with
    every sub-graph inlined: its nodes become `outer.inner`, edges into it go to its input's
    successors, edges out of it leave from its output's predecessors."""
    nir = _nir()
    if not any(isinstance(nd, nir.NIRGraph) for nd in ng.nodes.values()):
        return ng
    nodes, edges, entry, exit_ = {}, [], {}, {}
    for k, nd in ng.nodes.items():
        if not isinstance(nd, nir.NIRGraph):
            nodes[k] = nd
            continue
        sub = flatten_nested(nd, source)
        ins = [i for i, n in sub.nodes.items() if isinstance(n, nir.Input)]
        outs = [o for o, n in sub.nodes.items() if isinstance(n, nir.Output)]
        if len(ins) != 1 or len(outs) != 1:
            raise FrontendError(f"sub-graph has {len(ins)} inputs and {len(outs)} outputs", where=f"{source}: NIR node "
                                f"{k!r} (NIRGraph)", hint="snncc inlines sub-graphs with one input and one output")
        if (ins[0], outs[0]) in [tuple(e) for e in sub.edges]:
            raise FrontendError("sub-graph passes its input straight to its output", where=f"{source}: NIR node {k!r}")
        for ik, inner in sub.nodes.items():
            if ik not in (ins[0], outs[0]):
                nodes[f"{k}.{ik}"] = inner
        entry[k] = [f"{k}.{b}" for a, b in sub.edges if a == ins[0]]
        exit_[k] = [f"{k}.{a}" for a, b in sub.edges if b == outs[0]]
        edges += [(f"{k}.{a}", f"{k}.{b}") for a, b in sub.edges if a != ins[0] and b != outs[0]]
    for a, b in ng.edges:
        edges += [(s, d) for s in exit_.get(a, [a]) for d in entry.get(b, [b])]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=dict(getattr(ng, "metadata", None) or {}))


LIF_RULES = "steps | euler:DT | exp:DT | approximate"


def lif_rule(spec: str) -> tuple[str, float]:
    """(kind, dt) of a LIF rule (`LIF_RULES`); FrontendError for anything else."""
    kind, _, dt = str(spec).partition(":")
    if kind in ("steps", "approximate") and not dt:
        return kind, 1.0
    if kind in ("euler", "exp"):
        try:
            v = float(dt)
        except ValueError:
            v = float("nan")
        if math.isfinite(v) and v > 0:
            return kind, v
    raise FrontendError(f"unknown LIF rule {spec!r}", where="--nir-lif",
                        hint=f"one of {LIF_RULES} (DT: the time step in the file's time unit, > 0)")


def _lif_step(kind: str, dt: float, tau: np.ndarray, r: np.ndarray, v_leak: np.ndarray, where: str):
    """(leak, input gain, constant current) per step of NIR LIF neurons under rule `kind`; one
    leak per population (snncc's `leak` is a scalar), refused otherwise."""
    if np.any(tau <= 0) or not np.all(tau == tau.reshape(-1)[0]):
        raise FrontendError("LIF with per-neuron or non-positive tau: snncc's leak is one factor per population",
                            where=where, hint="one tau per LIF node")
    t = float(tau.reshape(-1)[0])
    if kind == "steps":
        if np.any(v_leak != 0):
            raise FrontendError("LIF rule steps (sinabs' reading) needs v_leak = 0", where=where,
                                hint="use --nir-lif euler:DT or exp:DT")
        a = math.exp(-1.0 / t)
        return a, r, np.zeros_like(r)
    if kind == "euler":
        if dt > t:
            raise FrontendError(f"euler step DT = {dt:g} > tau = {t:g} gives a negative leak", where=where,
                                hint="a smaller DT, or exp:DT")
        return 1.0 - dt / t, dt / t * r, dt / t * v_leak
    a = math.exp(-dt / t)
    return a, (1.0 - a) * r, (1.0 - a) * v_leak


def from_nir(ng, T: int | None = None, input_kind: str | None = None, approximate_lif: bool = False,
             source: str = "NIR graph", lif: str = "") -> Graph:
    """Build an IR graph from a `nir.NIRGraph` (nested sub-graphs are inlined). IF -> fire
    (stateful, one spike per step, floor, theta = v_threshold / R) unless snncc metadata restores
    the exact neuron; LIF under rule `lif` (`LIF_RULES`; `approximate_lif` = "approximate"),
    refused without one."""
    nir = _nir()
    rule = lif_rule(lif) if lif else (("approximate", 1.0) if approximate_lif else None)
    ng = flatten_nested(ng, source)
    gm = _meta(ng)
    bias_in = {str(_meta(v)["bias_in"]) for v in ng.nodes.values() if "bias_in" in _meta(v)}
    order = {k for k in ng.nodes if f"order:{k}" in gm}  # snncc's zero nodes that fix a reader's order
    if order:
        ng = nir.NIRGraph(nodes={k: v for k, v in ng.nodes.items() if k not in order},
                          edges=[e for e in ng.edges if e[0] not in order and e[1] not in order],
                          metadata=dict(ng.metadata))
    kind = input_kind or str(gm.get("input_kind", CURRENT))
    if kind not in KINDS:
        kind = CURRENT
    steps = int(T if T is not None else gm.get("T", 1))
    where = lambda k, nd: f"{source}: NIR node {k!r} ({type(nd).__name__})"  # noqa: E731

    preds: dict[str, list[str]] = {k: [] for k in ng.nodes}
    for a, b in ng.edges:
        if a not in ng.nodes or b not in ng.nodes:
            raise FrontendError(f"edge ({a!r}, {b!r}) names a node that does not exist", where=source)
        preds[b].append(a)
    order, done, state = [], set(), {}

    def visit(k):
        if k in done:
            return
        if state.get(k) == "visiting":
            raise FrontendError("graph has a recurrent edge (cycle)", where=where(k, ng.nodes[k]),
                                hint="snncc compiles feed-forward networks")
        state[k] = "visiting"
        for p in preds[k]:
            visit(p)
        state[k] = "done"
        done.add(k)
        order.append(k)

    for k in ng.nodes:
        visit(k)

    g = Graph(T=steps, meta={"frontend": "nir", "nir_approximations": []})
    approx: list[str] = g.meta["nir_approximations"]
    names: dict[str, str] = {}

    def add(node: Node, key, nd) -> str:
        g.append(node)
        try:  # the new node only (the earlier ones are typed): linear in the graph's size, not quadratic
            g.infer_last()
        except Exception as e:
            raise FrontendError(getattr(e, "what", str(e)), where=where(key, nd)) from None
        return node.name

    def input_of(k, nd) -> str:
        ps = preds[k]
        if not ps:
            raise FrontendError("node has no input edge", where=where(k, nd))
        if len(ps) == 1:
            return names[ps[0]]
        return add(Node(g.fresh_name(f"{_name(k)}.sum"), "add", [names[p] for p in ps]), k, nd)

    inputs = [k for k, nd in ng.nodes.items() if isinstance(nd, nir.Input)]
    outputs = [k for k, nd in ng.nodes.items() if isinstance(nd, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise FrontendError(f"graph has {len(inputs)} Input and {len(outputs)} Output nodes; snncc compiles "
                            "single-input single-output graphs", where=source)
    for k in order:
        nd = ng.nodes[k]
        nm = g.fresh_name(_name(k))
        m = _meta(nd)
        t = type(nd).__name__
        if isinstance(nd, nir.Input):
            shape = tuple(int(s) for s in np.asarray(nd.input_type["input"]).reshape(-1))
            names[k] = add(Node(nm, "input", [], {"kind": kind, "shape": shape}), k, nd)
        elif isinstance(nd, nir.Output):
            names[k] = add(Node(nm, "output", [input_of(k, nd)]), k, nd)
        elif isinstance(nd, (nir.Affine, nir.Linear)):
            params = {"weight": np.asarray(nd.weight, dtype=np.float64)}
            if isinstance(nd, nir.Affine):
                params["bias"] = np.asarray(nd.bias, dtype=np.float64).reshape(-1)
            names[k] = add(Node(nm, "linear", [input_of(k, nd)], {}, params), k, nd)
        elif isinstance(nd, (nir.Conv2d, nir.Conv1d)):
            w = np.asarray(nd.weight, dtype=np.float64)
            nd_ = w.ndim - 2
            pad = nd.padding
            if isinstance(pad, str):
                if pad == "valid":
                    pad = 0
                elif pad == "same" and all(s % 2 == 1 for s in w.shape[2:]):
                    pad = tuple((s - 1) // 2 * d for s, d in zip(w.shape[2:], _ints(nd.dilation, nd_)))
                else:
                    raise FrontendError(f"padding {pad!r} with an even kernel", where=where(k, nd))
            groups = int(nd.groups)
            written = int(gm.get(f"groups:{k}", 1))  # snncc wrote a grouped conv as its groups=1 kernel
            if groups == 1 and written > 1 and w.shape[0] % written == 0 and w.shape[1] % written == 0:
                w, groups = _regrouped(w, written), written
            params = {"weight": w}
            b = np.asarray(nd.bias, dtype=np.float64).reshape(-1)
            if np.any(b):
                params["bias"] = b
            attrs = {"stride": _ints(nd.stride, nd_), "padding": _ints(pad, nd_), "dilation": _ints(nd.dilation, nd_),
                     "groups": groups}
            pool = str(gm.get(f"pool:{k}", ""))  # snncc wrote a pool / global mean as its ones-kernel conv
            if k in bias_in:
                params.pop("bias", None)  # the neuron's constant current, restored from its metadata
            if pool and nd_ == 2 and groups == w.shape[0] and w.shape[1] == 1 and "bias" not in params:
                if pool == "mean":
                    names[k] = add(Node(nm, "mean", [input_of(k, nd)], {"dims": (1, 2), "keepdim": True}), k, nd)
                else:
                    names[k] = add(Node(nm, "pool", [input_of(k, nd)], {
                        "mode": pool, "kernel": tuple(w.shape[2:]), "stride": attrs["stride"],
                        "padding": attrs["padding"]}), k, nd)
                continue
            names[k] = add(Node(nm, "conv", [input_of(k, nd)], attrs, params), k, nd)
        elif isinstance(nd, (nir.SumPool2d, nir.AvgPool2d)):
            attrs = {"mode": "sum" if isinstance(nd, nir.SumPool2d) else "avg", "kernel": _ints(nd.kernel_size, 2),
                     "stride": _ints(nd.stride, 2), "padding": _ints(nd.padding, 2)}
            names[k] = add(Node(nm, "pool", [input_of(k, nd)], attrs), k, nd)
        elif isinstance(nd, nir.Flatten):
            x = input_of(k, nd)
            src = g[x].shape
            s, e = int(nd.start_dim), int(nd.end_dim)
            s, e = s % len(src), e % len(src)
            shape = tuple(src[:s]) + (math.prod(src[s:e + 1]),) + tuple(src[e + 1:])
            names[k] = add(Node(nm, "reshape", [x], {"shape": shape}), k, nd)
        elif isinstance(nd, nir.Scale):
            names[k] = add(Node(nm, "scale", [input_of(k, nd)], {}, {"factor": np.asarray(nd.scale, np.float64)}),
                           k, nd)
        elif isinstance(nd, (nir.IF, nir.LIF)):
            x = input_of(k, nd)
            r = np.asarray(nd.r, dtype=np.float64)
            vth = np.asarray(nd.v_threshold, dtype=np.float64)
            if np.any(r <= 0) or np.any(vth <= 0):
                raise FrontendError(f"{t} with non-positive r or v_threshold", where=where(k, nd))
            if "D" in m:  # written by snncc: the exact neuron
                attrs = {"D": int(m["D"]), "theta": float(m["theta"]), "beta": float(m["beta"]),
                         "stateful": bool(m["stateful"]), "rounding": "floor", "norm": 1.0,
                         "leak": float(m.get("leak", 1.0))}
                params = {"bias": np.asarray(m["bias"], dtype=np.float64)} if "bias" in m else {}
                if "bias_in" in m and str(m["bias_in"]) in names:
                    g[names[str(m["bias_in"])]].params.pop("bias", None)
            else:  # one step: v <- leak v + gain I + c, fire at v >= v_threshold, reset by subtraction
                leak, gain, c = 1.0, r, np.zeros_like(r)  # IF: v' = R I
                if isinstance(nd, nir.LIF):
                    if rule is None:
                        raise FrontendError("LIF is continuous-time: how it becomes steps is the reader's choice",
                                            where=where(k, nd),
                                            hint=f"pass --nir-lif {LIF_RULES} (nir_lif= in Python; docs/formats.md)")
                    if rule[0] == "approximate":
                        approx.append(f"{nm}: LIF imported as IF, leak dropped (tau, v_leak ignored)")
                    else:
                        leak, gain, c = _lif_step(*rule, np.asarray(nd.tau, dtype=np.float64), r,
                                                  np.asarray(nd.v_leak, dtype=np.float64), where(k, nd))
                        g.meta.setdefault("nir_lif", rule[0] + (f":{rule[1]:g}" if rule[0] != "steps" else ""))
                # the membrane in units of the input gain: theta = v_threshold / gain, the constant c / gain
                # (the leak is linear); per-neuron ratios scale each neuron's input instead, theta = 1
                shape = g[x].shape
                try:
                    gain, c, vth = (np.broadcast_to(v, shape).astype(np.float64) for v in (gain, c, vth))
                except ValueError:
                    raise FrontendError(f"{t} parameters of shape {r.shape} / {vth.shape} do not fit its input "
                                        f"{shape}", where=where(k, nd)) from None
                ratio = vth / gain
                if np.all(ratio == ratio.reshape(-1)[0]):
                    theta, c = float(ratio.reshape(-1)[0]), c / gain
                else:
                    x = add(Node(g.fresh_name(f"{nm}.r"), "scale", [x], {}, {"factor": 1.0 / ratio}), k, nd)
                    theta, c = 1.0, c / vth
                attrs = {"D": 1, "theta": theta, "stateful": True, "rounding": "floor", "leak": leak}
                params = {"bias": c} if np.any(c != 0) else {}
                if not any("v >= theta" in s for s in approx):
                    approx.append("IF fires at v >= theta in snncc, v > v_threshold in NIR (differs only on "
                                  "exact threshold hits)")
            names[k] = add(Node(nm, "fire", [x], attrs, params), k, nd)
        else:
            raise FrontendError(f"NIR node type {t} is not supported", where=where(k, nd),
                                hint="snncc imports Input, Output, Affine, Linear, Conv1d/2d, SumPool2d, "
                                     "AvgPool2d, Flatten, Scale, IF and LIF (with --nir-lif)")
    return g.verify()


def _check_numbers(ng, path: str) -> None:
    """Every array field of every node (nested graphs too) holds numbers: a string or object dataset
    where NIR has a number is one line naming the node and field, before any conversion."""
    import dataclasses

    stack = [("", ng)]
    while stack:  # iterative: a long chain or deep nesting never meets the recursion limit
        prefix, graph = stack.pop()
        for name, node in getattr(graph, "nodes", {}).items():
            if hasattr(node, "nodes"):  # a nested graph: its nodes are checked, its edges name nodes
                stack.append((f"{prefix}{name}.", node))
                continue
            if not dataclasses.is_dataclass(node):
                continue
            for f in dataclasses.fields(node):
                v = getattr(node, f.name, None)
                if f.name == "metadata" or v is None or isinstance(v, (dict, str)):
                    continue
                a = np.asarray(v) if isinstance(v, (list, tuple, np.ndarray, int, float)) else v
                if isinstance(a, np.ndarray) and a.dtype.kind not in "biuf":
                    raise LoadError(f"node {prefix}{name} ({type(node).__name__}): field {f.name} holds "
                                    f"{a.dtype} values where NIR has numbers", where=path,
                                    hint="write numeric arrays (float or int) for every parameter")


def load_nir(path: str, approximate_lif: bool = False, lif: str = "") -> Graph:
    """Read a `.nir` (HDF5) file into the IR (LIF under rule `lif`, see `from_nir`); LoadError for
    an unreadable file."""
    nir = _nir()
    try:
        ng = nir.read(path)
    except Exception as e:  # h5py/OSError/KeyError/ValueError for corrupt or foreign files
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else e.__class__.__name__
        raise LoadError(f"not a readable NIR file ({e.__class__.__name__}: {msg})", where=path) from None
    if not isinstance(ng, nir.NIRGraph):
        raise LoadError(f"file holds a {type(ng).__name__}, expected a NIRGraph", where=path)
    _check_numbers(ng, path)
    g = from_nir(ng, approximate_lif=approximate_lif, source=path, lif=lif)
    g.meta["source"] = os.path.basename(path)
    return g
