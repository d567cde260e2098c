"""Address maps of the event-driven simulator: the deployed graph (synaptic normal form, docs/design.md §2)
composed into one CSR table per spike source.

Owns the op registry's "event" column (`EventOp`: per op, its sparse map and its role in the
tables: leaf, consumer, merge, max pool, SSC gate), `op_matrix` (the per-op sparse map, shared
with the Lava backend), `projection_matrix`
(stable API: the composed (N_consumer, N_source) scipy csr matrix of one consumer with respect to
one spike leaf), `build_network` and the types `AddressTable`, `EventNetwork`; plus the per-slot
constants (biases) and the dense host currents of a real-valued input.

Address tables. Every consumer (a fire population, a relay, or the graph output read as
accumulators) owns a contiguous range of *slots*. Every source (a fire, a relay, or an input of
kind spike) owns one table in CSR form: for source address a, `indptr[a]:indptr[a+1]` indexes `(slots, weights)`,
the target neurons (over all its consumers) and synaptic weights one spike at `a` updates. A
table is built by composing the projection chain from the source to the consumer's current
tree root as sparse matrices (conv with stride/padding/dilation/groups, linear on the last axis,
avg/sum pooling, mean, scale, reshape, permute, n-ary add); merges (several projections into one
population, membrane shortcuts) sum. Synapses whose composed weight is exactly 0 are dropped (they
change no membrane). Biases inside a tree and the fire's constant current are a per-timestep
constant current; the real-valued encoding input (host layer) is evaluated densely and delivered
once per timestep as an input current, not as events (a max pool of that encoding, host domain,
included). Spike products (attention) are refused.

Relays (residual-stream accumulators, `relay` op) are both: a consumer whose slots integrate its
tree (plus its constant current, in `const`) like a neuron that never fires (theta 1, D 0), and a
source whose table maps each relay neuron to the stream's consumers. The runner forwards a
relay's accumulated value once per window as one graded message per nonzero neuron (an event
whose multiplicity is the value), so its consumers never see the relay's inputs themselves.

Max pools of spikes (`max_pool` op) are sources without a table into them: a max of counts is
no sum. Each owns a table to its readers like a population, and a `MaxPoolMap` (input address ->
the pool windows it is in) that the runner applies to its input's events as they are emitted
(`snncc.sim.events.runner`: per window, the input counts so far and each output's max; an input's
k-th spike of the window raises the max when k exceeds it, and the output emits one spike). Its
input is a source (a fire, a spike input or a max pool), possibly through reshapes/permutes of
the spikes (composed into the map: a permutation of addresses).

SSC (`snncc.passes.ssc`, executed by `snncc.sim.masked`) plugs in through
`build_network(graph, masks=...)`: static masks (`SiteMasks`) drop masked conv rows from the
composed tables and disable masked neurons; `masks="centre"` marks every conv whose input is a
(pooled) spike leaf as a *gate*: its table entries carry the gate site of their target and the
runner (`snncc.sim.events.runner`) opens them per sample at run time. Refused: a gated conv on a
current that is not a pooled spike map (conv after conv), ops other than scale/add/identity
layouts after a gated conv, gated conv biases, a real-valued input (use `dense_ssc`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import scipy.sparse as sp
import torch

from snncc.errors import SnnccError
from snncc.ir.deployed import check_deployed
from snncc.ir import registry
from snncc.ir.graph import Graph, Node
from snncc.ir.ops import NEURON_FEATURES, SPIKE, bilinear_weights
from snncc.sim.reference import Interpreter


# ---- per-op behaviour: the op registry's "event" column ------------------------------------------
registry.column("event", "executor", "the event-driven simulator of deployed graphs (compact address tables)",
                "snncc.sim.events")


@dataclass(frozen=True)
class EventOp:
    """The event simulator's behaviour of one op (its cell in the op registry): what a node of the op
    is to the address tables. Registered below, one cell per op; `event_op` reads it."""

    matrix: Callable | None = None  # (node, input shape) -> (N_out, N_in) csr map on its first input
    merge: bool = False  # sums the maps of its inputs (add)
    leaf: bool = False  # a source of current trees, never walked through: its value is its own
    consumer: bool = False  # owns slots: integrates the current tree of its input
    neuron: bool = False  # its slots carry a fire population's parameters (theta, D, beta, leak, bias)
    graded: bool = False  # sends graded values: owns a table whatever its kind (a relay)
    pool_map: Callable | None = None  # (graph, node) -> MaxPoolMap: a max of its source's counts
    gated: bool = False  # centre SSC gates its output per site; static SSC masks drop its rows
    keeps_sites: Callable | None = None  # (graph, node) -> bool: keeps a spike leaf's sites (before a gate)
    after_gate: Callable | None = None  # (graph, node) -> bool: may follow a centre-gated op


def event_op(n: Node) -> EventOp:
    """The registered behaviour of `n`'s op; one line naming the node when the simulator refuses it."""
    return registry.lookup(n.op, "event", where=f"node {n.name}")


# ---- per-op sparse matrices (n_out x n_in, flattened C order, per sample) -----------------------
def _conv_matrix(n: Node, in_shape: tuple) -> sp.csr_matrix:
    w = n.params["weight"]
    nd = w.ndim - 2
    if nd == 1:
        w = w[:, :, None, :]
        H, W = 1, in_shape[1]
        Ho, Wo = 1, n.shape[1]
        (sy, sx), (py, px), (dy, dx) = (1, n.attrs["stride"][0]), (0, n.attrs["padding"][0]), (1, n.attrs["dilation"][0])
    else:
        H, W = in_shape[1], in_shape[2]
        Ho, Wo = n.shape[1], n.shape[2]
        (sy, sx), (py, px), (dy, dx) = n.attrs["stride"], n.attrs["padding"], n.attrs["dilation"]
    Co, Cig, kh, kw = w.shape
    G = n.attrs["groups"]
    Cog = Co // G
    co = np.repeat(np.arange(Co), Cig)
    cil = np.tile(np.arange(Cig), Co)
    ci = (co // Cog) * Cig + cil
    rows, cols, vals = [], [], []
    for ky in range(kh):
        oy = np.arange(Ho)
        iy = oy * sy - py + ky * dy
        vy = (iy >= 0) & (iy < H)
        for kx in range(kw):
            ox = np.arange(Wo)
            ix = ox * sx - px + kx * dx
            vx = (ix >= 0) & (ix < W)
            if not vy.any() or not vx.any():
                continue
            opos = (oy[vy][:, None] * Wo + ox[vx][None, :]).ravel()
            ipos = (iy[vy][:, None] * W + ix[vx][None, :]).ravel()
            wv = w[co, cil, ky, kx]
            rows.append((co[:, None] * (Ho * Wo) + opos[None, :]).ravel())
            cols.append((ci[:, None] * (H * W) + ipos[None, :]).ravel())
            vals.append(np.repeat(wv, len(opos)))
    n_out, n_in = Co * Ho * Wo, in_shape[0] * H * W
    return _coo(rows, cols, vals, n_out, n_in)


def _coo(rows, cols, vals, n_out, n_in) -> sp.csr_matrix:
    if not rows:
        return sp.csr_matrix((n_out, n_in))
    m = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_out, n_in))
    m.sum_duplicates()
    return m


def _pool_matrix(n: Node, in_shape: tuple) -> sp.csr_matrix:
    C, H, W = in_shape
    _, Ho, Wo = n.shape
    (kh, kw), (sy, sx), (py, px) = n.attrs["kernel"], n.attrs["stride"], n.attrs["padding"]
    wv = 1.0 if n.attrs["mode"] == "sum" else 1.0 / (kh * kw)  # avg_pool2d counts padding in the divisor
    c = np.arange(C)
    rows, cols, vals = [], [], []
    for ky in range(kh):
        oy = np.arange(Ho)
        iy = oy * sy - py + ky
        vy = (iy >= 0) & (iy < H)
        for kx in range(kw):
            ox = np.arange(Wo)
            ix = ox * sx - px + kx
            vx = (ix >= 0) & (ix < W)
            opos = (oy[vy][:, None] * Wo + ox[vx][None, :]).ravel()
            ipos = (iy[vy][:, None] * W + ix[vx][None, :]).ravel()
            rows.append((c[:, None] * (Ho * Wo) + opos[None, :]).ravel())
            cols.append((c[:, None] * (H * W) + ipos[None, :]).ravel())
            vals.append(np.full(C * len(opos), wv))
    return _coo(rows, cols, vals, C * Ho * Wo, C * H * W)


def _linear_matrix(n: Node, in_shape: tuple) -> sp.csr_matrix:
    P = math.prod(in_shape) // in_shape[-1]
    return sp.kron(sp.identity(P, format="csr"), sp.csr_matrix(n.params["weight"]), format="csr")


def _mean_matrix(n: Node, in_shape: tuple) -> sp.csr_matrix:
    n_in, n_out = math.prod(in_shape), math.prod(n.shape)
    dims = n.attrs["dims"]
    idx = np.unravel_index(np.arange(n_in), in_shape)
    keep = [i for i in range(len(in_shape)) if i not in dims]
    oshape = tuple(in_shape[i] for i in keep)
    out = np.ravel_multi_index(tuple(idx[i] for i in keep), oshape) if keep else np.zeros(n_in, dtype=np.int64)
    k = math.prod(in_shape[d] for d in dims)
    return sp.csr_matrix((np.full(n_in, 1.0 / k), (out, np.arange(n_in))), shape=(n_out, n_in))


def _upsample_matrix(n: Node, in_shape: tuple) -> sp.csr_matrix:
    n_in, n_out = math.prod(in_shape), math.prod(n.shape)
    (sh, sw), (C, H, W) = n.attrs["scale"], in_shape
    src = np.arange(n_in).reshape(C, H, 1, W, 1)
    cols = np.broadcast_to(src, (C, H, sh, W, sw)).ravel()  # output (c, y, x) reads (c, y // sh, x // sw)
    return sp.csr_matrix((np.ones(n_out), (np.arange(n_out), cols)), shape=(n_out, n_in))


def _bilinear_matrix(n: Node, in_shape: tuple) -> sp.csr_matrix:
    """kron(I_C, Ah, Aw): each output reads its 2 x 2 source neurons, fractional weights."""
    (C, H, W), (Ho, Wo), ac = in_shape, n.attrs["size"], n.attrs["align_corners"]
    hw = sp.kron(sp.csr_matrix(bilinear_weights(H, Ho, ac)), sp.csr_matrix(bilinear_weights(W, Wo, ac)))
    return sp.kron(sp.identity(C, format="csr"), hw, format="csr")


def _offset_matrix(n: Node, in_shape: tuple) -> sp.csr_matrix:
    n_in, n_out = math.prod(in_shape), math.prod(n.shape)
    a = n.attrs
    idx = np.arange(n_out).reshape(n.shape)
    rows = idx.take(np.arange(a["at"], a["at"] + in_shape[a["axis"]]), axis=a["axis"]).ravel()
    return sp.csr_matrix((np.ones(n_in), (rows, np.arange(n_in))), shape=(n_out, n_in))


def _reshape_matrix(n: Node, in_shape: tuple) -> sp.csr_matrix:
    return sp.identity(math.prod(in_shape), format="csr")


def _permute_matrix(n: Node, in_shape: tuple) -> sp.csr_matrix:
    n_in, n_out = math.prod(in_shape), math.prod(n.shape)
    perm = np.arange(n_in).reshape(in_shape).transpose(n.attrs["dims"]).ravel()
    return sp.csr_matrix((np.ones(n_in), (np.arange(n_in), perm)), shape=(n_out, n_in))


def _scale_matrix(n: Node, in_shape: tuple) -> sp.csr_matrix:
    f = np.broadcast_to(n.params["factor"], n.shape).ravel()
    return sp.diags(f, format="csr")


def op_matrix(g: Graph, n: Node) -> sp.csr_matrix:
    """The (N_out, N_in) sparse map of one linear op on its first input (conv with stride/padding/
    dilation/groups, linear, pool, nearest upsampling, mean, scale, offset, reshape, permute): the
    per-op address map every composed projection is made of (here and in the Lava backend). Each
    op's map is its `EventOp.matrix` in the op registry's "event" column."""
    m = event_op(n).matrix
    if m is None:
        raise SnnccError(f"op {n.op} has no address map", where=f"node {n.name}")
    return m(n, g[n.inputs[0]].shape)


def _spatial_rows(mask: np.ndarray, shape: tuple) -> np.ndarray:
    """A site mask (spatial shape) broadcast over channels, flattened: 1.0 active, 0.0 masked."""
    return np.broadcast_to(np.asarray(mask, dtype=bool), shape).ravel().astype(np.float64)


# ---- the network --------------------------------------------------------------------------------
@dataclass
class AddressTable:
    """CSR address map of one spike source: address a -> (slots, weights)[indptr[a]:indptr[a+1]]."""
    source: str
    shape: tuple
    indptr: np.ndarray  # int64 (n + 1,)
    slots: np.ndarray  # int64, target slot (consumer offset + neuron index)
    weights: np.ndarray  # float64
    targets: list[str] = field(default_factory=list)
    gate: np.ndarray | None = None  # centre SSC: per entry, its gate site (-1: ungated); else None
    group: np.ndarray | None = None  # centre SSC: per entry, id of its (address, slot) group

    @property
    def n(self) -> int:
        return int(math.prod(self.shape))

    @property
    def synapses(self) -> int:
        return int(self.slots.size)

    def fanout(self) -> np.ndarray:
        return np.diff(self.indptr).reshape(self.shape)

    def lookup(self, addr: int) -> tuple[np.ndarray, np.ndarray]:
        s, e = self.indptr[addr], self.indptr[addr + 1]
        return self.slots[s:e], self.weights[s:e]


@dataclass
class EventNetwork:
    graph: Graph
    consumers: list[str]  # fires and relays (graph order), then the output
    offsets: dict[str, tuple[int, int]]  # consumer -> slot range
    n_slots: int
    tables: dict[str, AddressTable]  # spike source -> table (graph order)
    sources_of: dict[str, list[str]]  # consumer -> spike sources in its tree
    host_fed: list[str]  # consumers whose tree reads the real-valued input
    const: np.ndarray  # (n_slots,) per-timestep constant current (fire bias + tree biases)
    beta: np.ndarray  # (n_slots,)
    theta: np.ndarray  # (n_slots,), 1 for relay and output slots
    D: np.ndarray  # (n_slots,) int, 0 for relay and output slots
    fires: np.ndarray  # (n_slots,) bool: slot belongs to a fire population
    stateful: np.ndarray  # (n_slots,) bool
    enabled: np.ndarray  # (n_slots,) bool: False for SSC-masked neurons
    v_min: np.ndarray  # (n_slots,) Speck lower membrane bound (float units)
    masks: object = None  # the SSC masks the tables were built with ('centre': centre spiked)
    gates: list | None = None  # centre SSC: the gated convs (_Gate), None otherwise
    consumer_gates: dict = field(default_factory=dict)  # consumer -> ids of the gates feeding it
    leak: np.ndarray | None = None  # (n_slots,) factor of a stateful neuron's carried residual, 1 elsewhere
    max_pools: dict = field(default_factory=dict)  # max pool of spikes -> MaxPoolMap (graph order)
    # what the runner derives from the fields above once and keeps for every run of this network
    # (flat tables, the ideal policy's channel-last layout, firing bounds, timestep starts, spare
    # scratch); never part of what the network means
    derived: dict = field(default_factory=dict, repr=False, compare=False)

    def slot_of(self, consumer: str) -> slice:
        a, b = self.offsets[consumer]
        return slice(a, b)

    @property
    def synapses(self) -> int:
        return sum(t.synapses for t in self.tables.values())


def _check(graph: Graph) -> None:
    if len(graph.inputs) != 1:
        raise SnnccError(f"graph has {len(graph.inputs)} inputs; the event simulator runs single-input graphs")
    check_deployed(graph, "the event simulator", supported=NEURON_FEATURES,  # greedy/speck refuse some (runner)
                   max_pool=True)
    for n in graph.nodes:  # an op the registry refuses (spike products) is named with its reason
        event_op(n)


@dataclass
class MaxPoolMap:
    """The windows of one max pool of spikes: input address a is in output windows
    `outs[indptr[a]:indptr[a+1]]` (padding is in none: a count >= 0 never loses to it)."""
    source: str  # the spike source it pools
    n_in: int
    n_out: int
    indptr: np.ndarray  # int64 (n_in + 1,)
    outs: np.ndarray  # int64


def _max_pool_map(g: Graph, n: Node) -> MaxPoolMap:
    """The pool's windows over the addresses of its spike source, through reshapes/permutes of the
    spikes between them (a permutation of addresses)."""
    w = _pool_matrix(Node(n.name, "pool", n.inputs, {**n.attrs, "mode": "sum"}, shape=n.shape),
                     tuple(g[n.inputs[0]].shape))
    src = g[n.inputs[0]]
    while src.spec.layout:
        w = w @ op_matrix(g, src)
        src = g[src.inputs[0]]
    if not _source(src):
        raise SnnccError(f"max pooling of {src.op} {src.name}: the event simulator max-pools the events of a spike "
                         f"source (a fire population, a spike input or a max pool)", where=f"node {n.name}",
                         hint="use the synchronous simulator (snncc.sim.sync)")
    w = w.tocsc()  # column a: the windows of source address a
    w.sort_indices()
    return MaxPoolMap(src.name, w.shape[1], w.shape[0], w.indptr.astype(np.int64), w.indices.astype(np.int64))


def _leaf(n: Node) -> bool:
    """A source of current trees: a neuron's spikes, a relay's value, a max pool of spikes or the input
    (a max pool of a current is part of the input's encoding, computed with it: `_host_currents`)."""
    return event_op(n).leaf and not (n.spec.host_only and n.kind != SPIKE)


def _source(n: Node) -> bool:
    """A node that owns an address table: a fire, a relay, a max pool of spikes or a spike input."""
    op = event_op(n)
    return op.leaf and (n.kind == SPIKE or op.graded)


@dataclass
class _Gate:
    """Centre-spiked SSC gate of one conv on spikes: output site p of `conv` is open in a sample
    once the centre site of p (in the conv input: the leaf's sites after `chain`'s pools) has
    emitted an event this timestep."""
    conv: str
    leaf: str
    chain: list  # nodes from the leaf to the conv (pools, identity layouts), the conv last
    sites: int  # output sites of the conv (spatial size)
    base: int = 0  # offset of this gate's sites in the run's gate-state array


def _identity_reshape(g: Graph, n: Node) -> bool:
    return tuple(n.shape) == tuple(g[n.inputs[0]].shape)


def _identity_permute(g: Graph, n: Node) -> bool:
    return tuple(n.attrs["dims"]) == tuple(range(len(g[n.inputs[0]].shape)))


def _always(g: Graph, n: Node) -> bool:
    return True


# ---- the cells: one per op ------------------------------------------------------------------------
_RUNNER = "snncc.sim.events.runner"
_MAP = "snncc.sim.events.address"
registry.implement("input", EventOp(leaf=True), executor="event",
                   where=f"{_RUNNER} (spike input events; a real-valued input as dense host currents)")
registry.implement("fire", EventOp(leaf=True, consumer=True, neuron=True), executor="event",
                   where=f"{_RUNNER} (burst-of-D populations)")
registry.implement("relay", EventOp(leaf=True, consumer=True, graded=True), executor="event",
                   where=f"{_RUNNER} (relay messages: one graded message per nonzero neuron and window)")
registry.implement("output", EventOp(consumer=True), executor="event", where=f"{_RUNNER} (the readout's accumulators)")
registry.implement("add", EventOp(merge=True), executor="event", where=f"{_MAP}._compose (merges sum)")
registry.implement("conv", EventOp(_conv_matrix, gated=True), executor="event", where=f"{_MAP}._conv_matrix")
registry.implement("pool", EventOp(_pool_matrix, keeps_sites=_always), executor="event", where=f"{_MAP}._pool_matrix")
for _op, _m in (("linear", _linear_matrix), ("mean", _mean_matrix), ("upsample", _upsample_matrix),
                ("bilinear", _bilinear_matrix), ("offset", _offset_matrix)):
    registry.implement(_op, EventOp(_m), executor="event", where=f"{_MAP}.{_m.__name__}")
registry.implement("scale", EventOp(_scale_matrix, after_gate=_always), executor="event",
                   where=f"{_MAP}._scale_matrix")
registry.implement("reshape", EventOp(_reshape_matrix, keeps_sites=_identity_reshape, after_gate=_identity_reshape),
                   executor="event", where=f"{_MAP}._reshape_matrix")
registry.implement("permute", EventOp(_permute_matrix, keeps_sites=_identity_permute, after_gate=_identity_permute),
                   executor="event", where=f"{_MAP}._permute_matrix")
registry.implement("max_pool", EventOp(leaf=True, pool_map=_max_pool_map), executor="event",
                   where=f"{_RUNNER}._pooled (per timestep window: an output spikes as its max of input counts rises; "
                         "ideal and greedy policies, refused under speck); of the input's encoding (a current, "
                         "host domain): snncc.sim.events.address._host_currents, with the host currents")
registry.refuse("spike_product", executor="event",
                why="spike products (attention) are not simulated event by event: use snncc.sim.sync")
registry.refuse("batchnorm", "pad", executor="event", why=registry.NOT_DEPLOYED)


def _compose(g: Graph, conv_masks: dict | None = None, centre: bool = False):
    """Compose every consumer's current tree into sparse matrices per spike leaf.

    Returns (blocks, sources_of, host_fed, gates): blocks[source] = [(consumer, gate, (N_consumer
    x N_source) csr)], gate None for an ungated path (always None unless `centre`); merges of
    several paths from one source into one consumer are summed (per gate)."""
    conv_masks = conv_masks or {}
    # value of a non-leaf node: {(leaf, gate, path): sparse (n_node x n_leaf)}; None = identity.
    # path: 'site' (leaf sites kept: pools/identity layouts only), 'lin' (other ops), 'gated'
    vals: dict[str, dict] = {}
    users = g.users()
    remaining = {n.name: len(users[n.name]) for n in g.nodes}
    blocks: dict[str, list] = {}
    sources_of: dict[str, list[str]] = {}
    host_fed: list[str] = []
    host_dep: set[str] = set()
    gates: dict[str, _Gate] = {}
    chains: dict[str, list] = {}  # node -> site-preserving chain from its leaf (centre mode)

    def eye(leaf):
        return sp.identity(math.prod(g[leaf].shape), format="csr")

    for n in g.nodes:
        op = event_op(n)
        if op.leaf:
            if not _source(n):  # the real-valued input: dense host currents, not events
                host_dep.add(n.name)
                vals[n.name] = {}
            else:
                vals[n.name] = {(n.name, None, "site"): None}
                chains[n.name] = []
        elif op.matrix is None and not op.merge:  # the output: a consumer without a value of its own
            pass
        elif op.merge:
            acc: dict = {}
            for i in n.inputs:
                for key, m in vals[i].items():
                    m = m if m is not None else eye(key[0])
                    if centre and key[2] == "site":
                        key = (key[0], None, "lin")
                    acc[key] = acc[key] + m if key in acc else m
            vals[n.name] = acc
        elif not any(vals[i] for i in n.inputs):
            vals[n.name] = {}  # the input's encoding (host currents) alone: no spike leaf, no table
        else:
            A = op.matrix(n, g[n.inputs[0]].shape)
            if op.gated and n.name in conv_masks:
                A = (sp.diags(_spatial_rows(conv_masks[n.name], n.shape)) @ A).tocsr()
            out = {}
            for (leaf, gate, path), m in vals[n.inputs[0]].items():
                m2 = (A @ m).tocsr() if m is not None else A
                if centre:
                    if gate is not None and not (op.after_gate and op.after_gate(g, n)):
                        raise SnnccError(f"{n.op} after the centre-gated conv {gate}: the event simulator gates "
                                         f"a conv's output per site, so only scales, adds and identity layouts "
                                         f"may follow it", where=f"node {n.name}",
                                         hint="use dense_ssc(..., mode='centre') for this graph")
                    if op.gated:
                        if gate is not None or path != "site":
                            raise SnnccError("centre-spiked SSC of a conv whose input is not a (pooled) spike "
                                             "map: its centre site has no events", where=f"node {n.name}",
                                             hint="use dense_ssc(..., mode='centre') for this graph")
                        if "bias" in n.params and np.any(n.params["bias"]):
                            raise SnnccError("centre-spiked SSC gates this conv's bias per site; the event "
                                             "simulator does not model gated constant currents",
                                             where=f"node {n.name}", hint="fold the bias into the neuron")
                        gates[n.name] = _Gate(n.name, leaf, chains[n.inputs[0]] + [n], int(math.prod(n.shape[1:])))
                        key = (leaf, n.name, "gated")
                    elif gate is not None:
                        key = (leaf, gate, "gated")
                    elif path == "site" and op.keeps_sites and op.keeps_sites(g, n):
                        key = (leaf, None, "site")
                        chains[n.name] = chains[n.inputs[0]] + [n]
                    else:
                        key = (leaf, None, "lin")
                else:
                    key = (leaf, None, "site")  # one value per leaf: merges sum in graph order
                out[key] = out[key] + m2 if key in out else m2
            vals[n.name] = out
        if not op.leaf and any(i in host_dep for i in n.inputs):
            host_dep.add(n.name)
        if op.consumer:
            root = n.inputs[0]
            sources_of[n.name] = []
            merged: dict = {}
            for (leaf, gate, _), m in vals[root].items():
                m = m if m is not None else eye(leaf)
                k = (leaf, gate)
                merged[k] = merged[k] + m if k in merged else m
                if leaf not in sources_of[n.name]:
                    sources_of[n.name].append(leaf)
            for (leaf, gate), m in merged.items():
                blocks.setdefault(leaf, []).append((n.name, gate, m))
            if root in host_dep:
                host_fed.append(n.name)
        for i in n.inputs:  # free values nobody needs any more
            remaining[i] -= 1
            if remaining[i] == 0 and not _leaf(g[i]):
                vals.pop(i, None)
    return blocks, sources_of, host_fed, gates


def projection_matrix(graph: Graph, consumer: str, source: str, masks=None) -> sp.csr_matrix:
    """The composed synaptic map of one consumer (a fire population, a relay or the output node)
    with respect to one source (a fire population, a relay or a spike input): a (N_consumer, N_source)
    scipy csr matrix, all paths from the source through the consumer's current tree summed
    (merges included; zero entries kept as scipy leaves them). `masks`: static SSC `SiteMasks`
    (rows of masked conv sites dropped). Stable API, shared with other backends."""
    _check(graph)
    conv_masks = getattr(masks, "conv", {}) or {}
    blocks, sources_of, _, _ = _compose(graph, conv_masks)
    if consumer not in sources_of:
        raise SnnccError(f"{consumer} is not a consumer (fire population, relay or output)", where=f"node {consumer}")
    ms = [m for c, _, m in blocks.get(source, []) if c == consumer]
    if not ms:
        return sp.csr_matrix((int(math.prod(graph[consumer].shape)), int(math.prod(graph[source].shape))))
    return ms[0].tocsr()


def build_network(graph: Graph, masks=None) -> EventNetwork:
    """Compose every projection chain into per-source CSR address tables.

    `masks` (optional, from `snncc.passes.ssc.site_masks`): `masks.conv[name]` is a spatial bool
    mask of a conv's output sites (rows of masked sites are dropped from the map: SSC);
    `masks.neurons[name]` disables a fire population's masked neurons.
    """
    g = graph
    _check(g)
    pools = {n.name: event_op(n).pool_map(g, n) for n in g.nodes if event_op(n).pool_map and n.kind == SPIKE}
    centre = isinstance(masks, str)
    if centre:
        if masks != "centre":
            raise SnnccError(f"unknown SSC masks {masks!r}", hint="a SiteMasks (static) or 'centre' (centre spiked)")
        if g.inputs[0].kind != SPIKE:
            raise SnnccError("centre-spiked SSC in the event simulator needs a spike input (events at sites)",
                             where=f"node {g.inputs[0].name}", hint="use dense_ssc(..., mode='centre')")
        relay = next((n for n in g.nodes if event_op(n).graded), None)
        if relay is not None:
            raise SnnccError("centre-spiked SSC gates sites by their spikes; a relay sends graded values, not spikes",
                             where=f"node {relay.name}", hint="compile with residual=fanin, or use dense_ssc")
        if pools:
            raise SnnccError("centre-spiked SSC in the event simulator gates convs on (sum-)pooled spike maps; "
                             "a max pool's sites are not modelled as gates", where=f"node {next(iter(pools))}",
                             hint="use dense_ssc(..., mode='centre') for this graph")
    conv_masks = getattr(masks, "conv", {}) or {}
    neuron_masks = getattr(masks, "neurons", {}) or {}
    consumers = [n for n in g.nodes if event_op(n).consumer and event_op(n).leaf] + [g.output]  # populations
    offsets, off = {}, 0
    for c in consumers:
        k = int(math.prod(c.shape))
        offsets[c.name] = (off, off + k)
        off += k
    n_slots = off
    host = g.inputs[0] if g.inputs[0].kind != SPIKE else None

    blocks, sources_of, host_fed, gate_map = _compose(g, conv_masks, centre)
    gates = list(gate_map.values())
    gate_id = {gt.conv: i for i, gt in enumerate(gates)}
    base = 0
    for gt in gates:
        gt.base = base
        base += gt.sites

    tables: dict[str, AddressTable] = {}
    consumer_gates: dict[str, list[int]] = {}
    wmax = np.zeros(n_slots)
    for n in g.nodes:
        if not _source(n):
            continue
        rows, cols, data, targets, gsite = [], [], [], [], []
        for cname, gate, m in blocks.get(n.name, []):
            m = m.tocoo()
            m.eliminate_zeros()
            rows.append(m.row.astype(np.int64) + offsets[cname][0])
            cols.append(m.col.astype(np.int64))
            data.append(m.data)
            if cname not in targets:
                targets.append(cname)
            if gate is None:
                gsite.append(np.full(m.nnz, -1, dtype=np.int64))
            else:
                gt = gates[gate_id[gate]]
                gsite.append(gt.base + m.row.astype(np.int64) % gt.sites)
                consumer_gates.setdefault(cname, [])
                if gate_id[gate] not in consumer_gates[cname]:
                    consumer_gates[cname].append(gate_id[gate])
        N = int(math.prod(n.shape))
        if rows and centre and any((x >= 0).any() for x in gsite):
            # entries (address, slot, gate), one per gate on a path; a slot's entries are adjacent
            r, c, d, gs = np.concatenate(rows), np.concatenate(cols), np.concatenate(data), np.concatenate(gsite)
            o = np.lexsort((gs, r, c))
            r, c, d, gs = r[o], c[o], d[o], gs[o]
            first = np.r_[True, (c[1:] != c[:-1]) | (r[1:] != r[:-1])]
            indptr = np.r_[0, np.cumsum(np.bincount(c, minlength=N))].astype(np.int64)
            np.maximum.at(wmax, r, np.abs(d))
            tables[n.name] = AddressTable(n.name, n.shape, indptr, r, d.astype(np.float64), targets,
                                          gate=gs, group=np.cumsum(first) - 1)
        elif rows:
            r, c, d = np.concatenate(rows), np.concatenate(cols), np.concatenate(data)
            T = sp.csr_matrix((d, (c, r)), shape=(N, n_slots))  # source-major
            T.sum_duplicates()
            T.eliminate_zeros()
            np.maximum.at(wmax, T.indices, np.abs(T.data))
            tables[n.name] = AddressTable(n.name, n.shape, T.indptr.astype(np.int64), T.indices.astype(np.int64),
                                          T.data.astype(np.float64), targets)
        else:
            tables[n.name] = AddressTable(n.name, n.shape, np.zeros(N + 1, dtype=np.int64),
                                          np.zeros(0, dtype=np.int64), np.zeros(0), [])

    # per-slot neuron parameters and constants
    const = _constants(g, consumers, offsets, n_slots, masks)
    beta = np.zeros(n_slots)
    theta = np.ones(n_slots)
    Dv = np.zeros(n_slots, dtype=np.int64)
    fires = np.zeros(n_slots, dtype=bool)
    stateful = np.zeros(n_slots, dtype=bool)
    leak = np.ones(n_slots)
    enabled = np.ones(n_slots, dtype=bool)
    v_min = np.full(n_slots, -np.inf)
    for c in consumers:
        s = slice(*offsets[c.name])
        if not event_op(c).neuron:
            continue
        a = c.attrs
        beta[s], theta[s], Dv[s], fires[s], stateful[s] = a["beta"], a["theta"], a["D"], True, a["stateful"]
        leak[s] = a["leak"]
        if c.name in neuron_masks:
            enabled[s] = _spatial_rows(neuron_masks[c.name], c.shape) > 0
        b = np.abs(c.params["bias"]).max() if "bias" in c.params else 0.0
        wm = wmax[s].max() if (s.stop > s.start) else 0.0
        scales = [32767.0 / max(a["theta"], abs(a["beta"]), b)]
        if wm > 0:
            scales.append(127.0 / wm)
        v_min[s] = -(2.0 ** 15) / min(scales)
    return EventNetwork(g, [c.name for c in consumers], offsets, n_slots, tables, sources_of, host_fed,
                        const, beta, theta, Dv, fires, stateful, enabled, v_min, masks,
                        gates if centre else None, consumer_gates, leak, pools)


def _interp(g: Graph, masks, biases: bool) -> Interpreter:
    if masks is not None:
        from snncc.sim.masked import MaskedInterpreter

        it = MaskedInterpreter(g, masks)
    else:
        it = Interpreter(g, torch.float64)
    if not biases:
        for n in g.nodes:  # the biases inside current trees (conv, linear); a population's is its own
            if not (event_op(n).leaf or event_op(n).consumer):
                it._params[n.name].pop("bias", None)
    return it


def _constants(g: Graph, consumers, offsets, n_slots, masks) -> np.ndarray:
    """Fire (or relay) bias + the affine constant of every consumer's tree (the tree on all-zero leaves).
    Zero values are tracked as None, so only ops with a bias (and their users) are evaluated."""
    aff = _interp(g, masks, True)
    env: dict = {}
    const = np.zeros(n_slots)
    for n in g.nodes:
        op = event_op(n)
        if op.consumer:
            env[n.name] = None
            v = env[n.inputs[0]]
            c = np.zeros(int(math.prod(n.shape))) if v is None else v[0].numpy().ravel()
            if op.leaf and "bias" in n.params:  # a population's own constant current
                c = c + np.broadcast_to(n.params["bias"], n.shape).ravel()
            const[slice(*offsets[n.name])] = c
        elif op.leaf:  # the input, a max pool of spikes: no constant
            env[n.name] = None
        else:
            args = [env[i] for i in n.inputs]
            if all(a is None for a in args) and "bias" not in n.params:
                env[n.name] = None
                continue
            args = [torch.zeros((1,) + g[i].shape, dtype=torch.float64) if a is None else a
                    for a, i in zip(args, n.inputs)]
            env[n.name] = getattr(aff, f"op_{n.op}")(n, *args)
    return const


def _host_currents(net: EventNetwork, xt: torch.Tensor) -> dict[str, np.ndarray]:
    """Linear part of every host-fed consumer's tree on the real-valued input (B, n)."""
    g = net.graph
    if not net.host_fed:
        return {}
    lin = _interp(g, net.masks, False)
    env: dict[str, torch.Tensor | None] = {}
    out = {}
    for n in g.nodes:
        op = event_op(n)
        if n.op == "input":
            env[n.name] = xt
        elif op.consumer:
            env[n.name] = None
        else:
            args = [env[i] for i in n.inputs]
            if op.merge:
                live = [a for a in args if a is not None]
                env[n.name] = None if not live else (live[0] if len(live) == 1 else lin.op_add(n, *live))
            elif args[0] is None:
                env[n.name] = None
            else:
                env[n.name] = getattr(lin, f"op_{n.op}")(n, *args)
    for c in net.host_fed:
        v = env[g[c].inputs[0]]
        if v is not None:
            out[c] = v.reshape(v.shape[0], -1).numpy()
    return out


