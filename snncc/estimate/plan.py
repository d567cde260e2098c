"""The static half of the estimator: populations, projections and their real fan-out, host MACs
and latency, read once from a deployed graph (synaptic normal form).

A *population* is a spike source (a fire node, or an input of kind spike) and/or a consumer of
currents (a fire node, or the graph output read out as accumulators). Every consumer's input
current is a sum of *terms* (the flattened root add); a term reads one or more sources:
- a **synaptic** projection: a source population through a chain of linear ops (spike layout
  ops, conv, linear, pool, mean, scale, add). Its fan-out map gives, per source neuron, the number
  of target neurons one spike updates, counted from the real address maps: the chain is run with
  every weight, factor and pooling/mean weight set to one and no bias, and the fan-out is the
  vector-Jacobian product with an all-ones output (a conv_transpose of ones). Border neurons of a
  padded conv get their smaller fan-out, strides and groups are honoured, pooling/mean/linear
  compose. That path count equals the number of distinct targets whenever no target is reached
  twice (any single op; any chain in which no op merging inputs follows the first op spreading
  them); a conv followed by a bilinear resize is counted per axis from the bilinear weights'
  nonzeros (`_conv_bilinear_distinct`, exact without probing); otherwise the distinct count is
  taken by probing one-hot inputs when the dense map has at most PROBE_LIMIT entries, and the path count is kept and flagged as an upper bound beyond that.
- a **product** projection: a spike product (attention) of 2-3 spike operands; its cost is the
  number of multiply-free coincidence operations, counted from the operand spikes (see
  `coincidences`).
- a **readout**: the graph output reading a population's spikes as they are (through layout ops
  only): messages routed off chip, no synapses.
- a **relay** (residual-stream accumulator, `relay` op) is a population too: a consumer of its
  input tree and a source of graded messages; a projection from a relay is synaptic like one
  from spikes (one message of a nonzero value triggers its fan-out's accumulates).
- a **host** term: the real-valued input current, reaching the neuron through ops that cost dense
  MACs on the host (the encoding layer). Identical copies that the normal form made of one host op
  (a stem conv feeding several residual consumers) are computed once and counted once.

*Architecture* ops (`architecture_ops`): the trained network's own synaptic work, counted on the
same deployed graph without the normal form's copies: every distinct (value-numbered) synaptic op
other than a spike product whose sources (through weightless ops) are all spiking populations,
with the fan-out of its chain from each source (`path_counts`). Copies made for fan-in are one
value, relays are not ops of the trained network, residual additions and ops on currents made by
weighted ops are free, ops on the real-valued input are the host's MACs (docs/design.md §2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from snncc.errors import SnnccError
from snncc.ir.analysis import sources as weightless_sources, value_numbers
from snncc.ir import registry
from snncc.ir.graph import Graph, Node
from snncc.ir.ops import BOUNDARY_OPS, CONSUMER_OPS, POPULATION_OPS, SOURCE_OPS, SPIKE, bilinear_weights
from snncc.sim.reference import Interpreter

PROBE_LIMIT = 1 << 24  # source neurons x target neurons of a dense one-hot probe


@dataclass
class Population:
    name: str
    role: str  # 'fire' | 'relay' | 'spike_input' | 'output'
    shape: tuple
    D: int  # 0 for spike inputs and the output readout
    destinations: list[str] = field(default_factory=list)  # consumers this source's spikes are routed to

    @property
    def neurons(self) -> int:
        return int(math.prod(self.shape))


@dataclass
class Projection:
    source: str  # population (or the real-valued input for a host term)
    target: str  # consumer population
    kind: str  # 'synaptic' | 'readout' (the output reading spikes directly) | 'host'
    term: str  # the term node of the target's input sum
    ops: list[str] = field(default_factory=list)  # nodes between source and target, graph order
    fanout: np.ndarray | None = None  # synaptic: per source neuron, source shape
    exact: bool = True  # fan-out is the distinct-target count (False: path count, an upper bound)
    macs: int = 0  # host: dense MACs per timestep (after de-duplicating copies)

    @property
    def synapses(self) -> int:
        return int(self.fanout.sum()) if self.fanout is not None else 0


@dataclass
class ProductNode:
    node: str
    target: str
    operands: list[str]  # operand node names (spike kind)
    sources: list[str]  # populations behind the operands
    order: str


@dataclass
class ArchOp:
    """One synaptic op of the trained network: its spiking sources and per-source fan-out maps."""
    node: str
    consumer: str  # the first population (graph order) whose input reads the op
    fanout: dict[str, np.ndarray]  # source population -> (source shape) synaptic paths into the op's output


@dataclass
class Plan:
    graph: Graph
    T: int
    populations: dict[str, Population]
    projections: list[Projection]
    products: list[ProductNode]
    mac_nodes: dict[str, int]  # host op -> dense MACs per timestep (0 for de-duplicated copies)
    latency_substeps: int  # sum of D along the longest population path + the last one's firing window
    critical_path: list[str]
    notes: list[str] = field(default_factory=list)
    architecture: list[ArchOp] = field(default_factory=list)
    # the same on one clock whose window is the largest D (every population costs one window):
    # W * (depth + 1), the synchronous simulator's and Loihi's latency; equal to the above for one D
    clocked_latency_substeps: int = 0
    clocked_critical_path: list[str] = field(default_factory=list)

    def projections_into(self, target: str) -> list[Projection]:
        return [p for p in self.projections if p.target == target]

    def links(self) -> list[tuple[str, str]]:
        seen: dict[tuple[str, str], None] = {}
        for p in self.projections:
            if p.kind in ("synaptic", "readout"):
                seen[(p.source, p.target)] = None
        for pr in self.products:
            for s in pr.sources:
                seen[(s, pr.target)] = None
        return list(seen)

    @property
    def sample_substeps(self) -> int:
        """Sub-steps for one sample of T windows, pipelined: a new window every max-D sub-steps."""
        return self.timing(clocked=False)[1]

    def timing(self, clocked: bool) -> tuple[int, int, list[str]]:
        """(latency, sample, critical path) in sub-steps. `clocked`: one clock whose window is the
        largest D for every population (a synchronous chip; `Formula.clocked`), so a population
        with a smaller D still takes a whole window; otherwise each population takes its own D
        (an asynchronous chip). Both pipeline a new window every max-D sub-steps."""
        dmax = max((p.D for p in self.populations.values()), default=0)
        lat, path = ((self.clocked_latency_substeps, self.clocked_critical_path) if clocked
                     else (self.latency_substeps, self.critical_path))
        return lat, lat + (self.T - 1) * dmax, list(path)


# ---- structural evaluation ---------------------------------------------------------------------
class _Structural(Interpreter):
    """Runs a current tree with every weight one and no bias: entries count synaptic paths.
    Reads parameter shapes, never their values (no float64 copy of the model's weights)."""

    def __init__(self, graph: Graph):  # not Interpreter.__init__: that converts every parameter
        self.graph, self.dtype = graph, torch.float64
        self.state, self.ties, self.last_step = {}, {}, False

    def p(self, n: Node, k: str):
        v = n.params.get(k)
        return None if k == "bias" or v is None else torch.ones(v.shape, dtype=torch.float64)

    def op_pool(self, n: Node, x):
        a = n.attrs
        return F.avg_pool2d(x, a["kernel"], a["stride"], a["padding"]) * (a["kernel"][0] * a["kernel"][1])

    def op_mean(self, n: Node, x):
        return x.sum(dim=tuple(d + 1 for d in n.attrs["dims"]), keepdim=n.attrs["keepdim"])

    def op_spike_product(self, n: Node, *xs):  # products are their own projections: no linear path
        return torch.zeros((xs[0].shape[0],) + tuple(n.shape), dtype=torch.float64)


def closure(g: Graph, term: str) -> list[Node]:
    """Nodes between the term and its sources (populations, inputs), term included, graph order."""
    names: set[str] = set()
    stack = [term]
    while stack:
        name = stack.pop()
        n = g[name]
        if name in names or n.op in SOURCE_OPS:
            continue
        names.add(name)
        stack.extend(n.inputs)
    return [n for n in g.nodes if n.name in names]


def _leaves(g: Graph, nodes: list[Node], term: str) -> list[str]:
    names = {n.name for n in nodes}
    out: dict[str, None] = {}
    for n in nodes:
        for i in n.inputs:
            if i not in names:
                out[i] = None
    if term not in names:  # the term is itself a source (an input current straight into a neuron)
        out[term] = None
    return list(out)


def _evaluate(interp: Interpreter, nodes: list[Node], env: dict) -> dict:
    for n in nodes:
        env[n.name] = interp.impl(n.op)(n, *[env[i] for i in n.inputs])
    return env


def _path_nodes(g: Graph, nodes: list[Node], leaf: str) -> list[Node]:
    """Nodes of the closure that depend on `leaf`, graph order."""
    dep: set[str] = {leaf}
    out = []
    for n in nodes:
        if any(i in dep for i in n.inputs):
            dep.add(n.name)
            out.append(n)
    return out


# Whether an op of a chain spreads one input neuron over several outputs and/or merges several inputs
# into one output (`_provably_exact`): per op, registered for the "fanout" cost model.
registry.column("fanout", "cost", "whether an op spreads one neuron to several or merges several into one "
                "(path counts are exact distinct-target counts when no merge follows a spread)", "snncc.estimate.plan")


@registry.implements("conv", cost="fanout")
def _fanout_conv(g: Graph, n: Node) -> tuple[bool, bool]:
    return True, True


@registry.implements("linear", cost="fanout")
def _fanout_linear(g: Graph, n: Node) -> tuple[bool, bool]:
    w = n.params["weight"].shape
    return w[0] > 1, w[1] > 1


@registry.implements("pool", cost="fanout")
def _fanout_pool(g: Graph, n: Node) -> tuple[bool, bool]:
    k, s = n.attrs["kernel"], n.attrs["stride"]
    return any(si < ki for si, ki in zip(s, k)), math.prod(k) > 1


@registry.implements("mean", cost="fanout")
def _fanout_mean(g: Graph, n: Node) -> tuple[bool, bool]:
    src = g[n.inputs[0]].shape
    return False, math.prod(src[d] for d in n.attrs["dims"]) > 1


@registry.implements("upsample", cost="fanout")
def _fanout_upsample(g: Graph, n: Node) -> tuple[bool, bool]:
    return math.prod(n.attrs["scale"]) > 1, False


@registry.implements("bilinear", cost="fanout")
def _fanout_bilinear(g: Graph, n: Node) -> tuple[bool, bool]:  # an output reads up to 2 x 2 inputs, an input
    return True, True  # reaches the outputs around it (either may be 1 on an axis; spreading and merging is safe)


@registry.implements("scale", "add", "offset", "reshape", "permute", cost="fanout")
def _fanout_none(g: Graph, n: Node) -> tuple[bool, bool]:
    return False, False  # one neuron to one (add: its operands are separate leaves)


@registry.implements("max_pool", cost="fanout")
def _fanout_selects(g: Graph, n: Node) -> tuple[bool, bool]:
    return False, False  # a spike reaches the layer only where it wins the max: path counts through it are
    # upper bounds, flagged inexact with a note (`plan`)


@registry.implements("spike_product", cost="fanout")
def _fanout_product(g: Graph, n: Node) -> tuple[bool, bool]:
    return False, False  # no linear path: its integer output is its own projection's source


registry.refuse(*BOUNDARY_OPS, cost="fanout", why=registry.NOT_IN_A_TREE)
registry.refuse("batchnorm", "pad", cost="fanout", why=registry.NOT_DEPLOYED)


def _fanout_cell(n: Node):
    """The op's fanout rule, None where it is refused (a graph end) or missing."""
    c = registry.cell(n.op, "fanout")
    return None if c is None or c.refused else c.impl


def _spreads_merges(g: Graph, n: Node) -> tuple[bool, bool]:
    return registry.lookup(n.op, "fanout", where=f"node {n.name}")(g, n)


def _provably_exact(g: Graph, path: list[Node], leaf: str) -> bool:
    dep = {leaf}
    spread = False
    for n in path:
        if sum(i in dep for i in n.inputs) > 1:  # two paths from the leaf meet
            return False
        s, m = _spreads_merges(g, n)
        if spread and m:
            return False
        spread = spread or s
        dep.add(n.name)
    return True


def _conv_bilinear_distinct(g: Graph, path: list[Node], leaf: str) -> np.ndarray | None:
    """The distinct-target count of a 2-D conv followed by a bilinear resize (then one-to-one ops),
    without probing: a spike at (c, y, x) reaches the conv outputs of its group's channels in the
    rows R(y) and columns C(x) of its windows; a bilinear output row i is reached when its nonzero
    interpolation weights (ops.bilinear_weights) touch R(y), so the count is the product of the
    group's channels, the reached rows and the reached columns (separable per axis). None for any
    other chain (path counts that overcount where windows overlap: 2.25x at a x2 upsample)."""
    from snncc.ir.ops import bilinear_weights

    if len(path) < 2 or path[0].op != "conv" or path[1].op != "bilinear" or path[1].inputs != [path[0].name] \
            or len(g[leaf].shape) != 3 or path[0].inputs != [leaf]:
        return None
    dep = {leaf, path[0].name, path[1].name}
    for n in path[2:]:  # one neuron to one, one path each
        if _fanout_cell(n) is not _fanout_none or sum(i in dep for i in n.inputs) != 1:
            return None
        dep.add(n.name)
    conv, bil = path[0], path[1]
    w = conv.params["weight"].shape
    C, H, W = g[leaf].shape
    reached = []
    for ax, n_in in enumerate((H, W)):
        k, s, p, d = w[2 + ax], conv.attrs["stride"][ax], conv.attrs["padding"][ax], conv.attrs["dilation"][ax]
        n_mid = conv.shape[1 + ax]
        A = bilinear_weights(n_mid, bil.shape[1 + ax], bil.attrs["align_corners"]) != 0  # (n_out, n_mid)
        o = np.arange(n_mid)
        cnt = np.zeros(n_in, dtype=np.int64)
        for y in range(n_in):
            off = y - o * s + p  # the kernel tap of input y in window o
            mid = (off >= 0) & (off <= (k - 1) * d) & (off % d == 0)
            cnt[y] = int(A[:, mid].any(axis=1).sum())
        reached.append(cnt)
    per_group = w[0] // conv.attrs["groups"]
    return (per_group * reached[0][:, None] * reached[1][None, :])[None].repeat(C, 0).astype(np.float64)


def fanout_map(g: Graph, nodes: list[Node], term: str, leaf: str,
               interp: Interpreter | None = None, probe_limit: int | None = None,
               paths: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
    """Per source neuron, the number of term outputs one spike of `leaf` reaches; and exactness.
    `paths`: the leaf's path counts when already computed (`path_counts`)."""
    path = _path_nodes(g, nodes, leaf)
    interp = interp or _Structural(g)
    shape = g[leaf].shape
    leaves = _leaves(g, nodes, term)
    if paths is None:
        paths = path_counts(g, nodes, term, [leaf], interp)[leaf]
    if not paths.any() or _provably_exact(g, path, leaf):
        return paths, True
    distinct = _conv_bilinear_distinct(g, path, leaf)
    if distinct is not None:
        return distinct, True
    n_in, n_out = math.prod(shape), math.prod(g[term].shape)
    if n_in * n_out > (PROBE_LIMIT if probe_limit is None else probe_limit):
        return paths, False

    def run(x):
        env = {l: torch.zeros((x.shape[0],) + g[l].shape, dtype=torch.float64) for l in leaves}
        env[leaf] = x
        return _evaluate(interp, nodes, env)[term]

    out = np.zeros(n_in)
    # every probe row carries all leaves and intermediate tensors of the tree, not just the term
    widest = max([n_out] + [math.prod(g[l].shape) for l in leaves] + [math.prod(n.shape) for n in nodes])
    chunk = max(1, (1 << 22) // max(widest, 1))
    with torch.no_grad():
        for s in range(0, n_in, chunk):
            idx = torch.arange(s, min(n_in, s + chunk))
            eye = torch.zeros((len(idx), n_in), dtype=torch.float64)
            eye[torch.arange(len(idx)), idx] = 1.0
            r = run(eye.reshape((len(idx),) + shape))
            out[s:s + len(idx)] = (r.reshape(len(idx), -1) > 0).sum(1).numpy()
    return out.reshape(shape), True


def path_counts(g: Graph, nodes: list[Node], term: str, leaves: list[str],
                interp: Interpreter | None = None) -> dict[str, np.ndarray]:
    """Per leaf, per source neuron: the number of synaptic paths to the term's outputs (weights one).
    The structural tree is linear in each leaf, so the counts are the vector-Jacobian product of an
    all-ones output (`_ones_vjp`: one backward sweep, every weight one), for every leaf at once."""
    interp = interp or _Structural(g)
    all_leaves = _leaves(g, nodes, term)
    key = None
    if type(interp) is _Structural:  # every weight one: the counts depend on the tree's structure only
        key = _structure_key(g, nodes, term, all_leaves, leaves)
        memo = interp.__dict__.setdefault("_path_memo", {})
        if key in memo:  # the same tree elsewhere (the blocks of a stage): same counts
            return dict(zip(leaves, memo[key]))
    if type(interp) is _Structural and all(n.op in _ONES_VJP for n in nodes):
        out = _ones_vjp(g, nodes, term, leaves)
    else:  # an op without a structural backward rule, or a caller's own interpreter: autograd
        out = _autograd_counts(g, nodes, term, leaves, all_leaves, interp)
    if key is not None:
        for v in out.values():
            v.flags.writeable = False  # shared by every tree of this structure
        memo[key] = tuple(out[l] for l in leaves)
    return out


def _autograd_counts(g: Graph, nodes: list[Node], term: str, leaves: list[str], all_leaves: list[str],
                     interp: Interpreter) -> dict[str, np.ndarray]:
    """Path counts by one forward and one backward pass of `interp` (the gradient of the summed output)."""
    env = {l: torch.zeros((1,) + g[l].shape, dtype=torch.float64) for l in all_leaves}
    for l in leaves:
        env[l] = torch.zeros((1,) + g[l].shape, dtype=torch.float64, requires_grad=True)
    y = _evaluate(interp, nodes, env)[term]
    xs = [env[l] for l in leaves]
    if not y.requires_grad:
        return {l: np.zeros(g[l].shape) for l in leaves}
    grads = torch.autograd.grad(y.sum(), xs, allow_unused=True)
    return {l: (np.zeros(g[l].shape) if gr is None else np.rint(gr[0].numpy())) for l, gr in zip(leaves, grads)}


# The backward rule of each op with every weight one (d sum(out) / d in, given d sum(out) / d out = gy,
# batch axis first). All values are integers below 2**53, so float64 sums are exact in any order:
# the counts equal `_autograd_counts` of `_Structural` bit for bit, without a full-width conv (a
# ones kernel makes every output channel of a group read every input channel of it alike, so the
# group's output gradients are summed first and spread by one depthwise transposed conv).
def _vjp_conv(g: Graph, n: Node, gy):
    a, w = n.attrs, n.params["weight"].shape  # (Co, Ci / groups, *kernel)
    G, x = a["groups"], g[n.inputs[0]].shape
    s = gy.reshape((1, G, w[0] // G) + gy.shape[2:]).sum(2)
    grad = torch.nn.grad.conv2d_input if len(w) == 4 else torch.nn.grad.conv1d_input
    gx = grad((1, G) + tuple(x[1:]), torch.ones((G, 1) + tuple(w[2:]), dtype=torch.float64), s,
              a["stride"], a["padding"], a["dilation"], G)
    return [gx.unsqueeze(2).expand((1, G, w[1]) + tuple(x[1:])).reshape((1,) + tuple(x))]


def _vjp_pool(g: Graph, n: Node, gy):  # structural pool: sum over the (zero-padded) window
    a, x = n.attrs, g[n.inputs[0]].shape
    return [torch.nn.grad.conv2d_input((1,) + tuple(x), torch.ones((x[0], 1) + tuple(a["kernel"]), dtype=torch.float64),
                                       gy, a["stride"], a["padding"], 1, x[0])]


def _vjp_mean(g: Graph, n: Node, gy):  # structural mean: a sum
    x = g[n.inputs[0]].shape
    if not n.attrs["keepdim"]:
        for d in sorted(d % len(x) for d in n.attrs["dims"]):
            gy = gy.unsqueeze(d + 1)
    return [gy.expand((1,) + tuple(x))]


def _vjp_upsample(g: Graph, n: Node, gy):  # each input neuron's block of outputs, summed
    (sh, sw), (c, h, w) = n.attrs["scale"], g[n.inputs[0]].shape
    return [gy.reshape(1, c, h, sh, w, sw).sum((3, 5))]


def _bilinear_taps(g: Graph, n: Node):
    """The 0/1 structure (nonzero weights) of a bilinear op's per-axis matrices (float64 tensors)."""
    (_, h, w), (H, W), ac = g[n.inputs[0]].shape, n.attrs["size"], n.attrs["align_corners"]
    return [torch.from_numpy((bilinear_weights(a, b, ac) != 0).astype(np.float64)) for a, b in ((h, H), (w, W))]


def _vjp_bilinear(g: Graph, n: Node, gy):  # every nonzero weight one path
    bh, bw = _bilinear_taps(g, n)
    return [torch.einsum("bcHW,Hh,Ww->bchw", gy, bh, bw)]


def _vjp_offset(g: Graph, n: Node, gy):  # the input's slice
    a = n.attrs
    return [gy.narrow(a["axis"] + 1, a["at"], g[n.inputs[0]].shape[a["axis"]])]


def _vjp_permute(g: Graph, n: Node, gy):
    inv = np.argsort(n.attrs["dims"])
    return [gy.permute(0, *(int(d) + 1 for d in inv))]


registry.column("paths", "cost", "structural backward rule (every weight one): synaptic path counts in one sweep; "
                "a tree with an op without one is counted by autograd of the structural interpreter",
                "snncc.estimate.plan")
for _op, _fn in {
    "conv": _vjp_conv,
    "linear": lambda g, n, gy: [gy.sum(-1, keepdim=True).expand(gy.shape[:-1] + (n.params["weight"].shape[1],))],
    "pool": _vjp_pool,
    "max_pool": _vjp_pool,  # structurally: every window a neuron is in
    "upsample": _vjp_upsample,
    "bilinear": _vjp_bilinear,
    "offset": _vjp_offset,
    "mean": _vjp_mean,
    "scale": lambda g, n, gy: [gy],  # a factor of ones; the output has the input's shape
    "add": lambda g, n, gy: [gy] * len(n.inputs),
    "reshape": lambda g, n, gy: [gy.reshape((1,) + tuple(g[n.inputs[0]].shape))],
    "permute": _vjp_permute,
    "spike_product": lambda g, n, gy: [None] * len(n.inputs),  # its own projection: no linear path
}.items():
    registry.implement(_op, _fn, cost="paths", where=f"snncc.estimate.plan (structural backward rule of {_op})")
registry.refuse(*BOUNDARY_OPS, cost="paths", why=registry.NOT_IN_A_TREE)
registry.refuse("batchnorm", "pad", cost="paths", why=registry.NOT_DEPLOYED)
_ONES_VJP = registry.table("paths")


def _ones_vjp(g: Graph, nodes: list[Node], term: str, leaves: list[str]) -> dict[str, np.ndarray]:
    """Path counts of a tree of `_ONES_VJP` ops: the all-ones output gradient swept back to every
    leaf in reverse graph order (each gradient freed once its node has passed it on)."""
    grads: dict[str, torch.Tensor] = {term: torch.ones((1,) + tuple(g[term].shape), dtype=torch.float64)}
    with torch.no_grad():
        for n in reversed(nodes):
            gy = grads.pop(n.name, None)
            if gy is None:
                continue
            for i, gx in zip(n.inputs, _ONES_VJP[n.op](g, n, gy)):
                if gx is not None:
                    grads[i] = grads[i] + gx if i in grads else gx
    return {l: (np.rint(grads[l][0].numpy()) if l in grads else np.zeros(g[l].shape)) for l in leaves}


def _structure_key(g: Graph, nodes: list[Node], term: str, all_leaves: list[str], leaves: list[str]):
    """What a structural evaluation of a tree depends on: ops, wiring, attributes, shapes and
    parameter shapes (never values), leaf shapes, and which leaves are asked for."""
    at = {l: ("leaf", j) for j, l in enumerate(all_leaves)}
    rows = []
    for i, n in enumerate(nodes):
        rows.append((n.op, tuple(at[x] for x in n.inputs), repr(sorted(n.attrs.items())), n.shape,
                     tuple((k, v.shape) for k, v in sorted(n.params.items()))))
        at[n.name] = ("node", i)
    return (tuple(rows), tuple(g[l].shape for l in all_leaves), at[term], tuple(at[l] for l in leaves))


# ---- host MACs -------------------------------------------------------------------------------
registry.column("host_macs", "cost", "dense multiply-accumulates of an op on a real-valued current (the host's "
                "encoding layer), per sample and timestep", "snncc.estimate.plan")


@registry.implements("conv", cost="host_macs")
def _macs_conv(g: Graph, n: Node) -> int:
    return math.prod(n.shape) * math.prod(n.params["weight"].shape[1:])


@registry.implements("linear", cost="host_macs")
def _macs_linear(g: Graph, n: Node) -> int:
    return math.prod(n.shape) * n.params["weight"].shape[1]


@registry.implements("pool", cost="host_macs")
def _macs_pool(g: Graph, n: Node) -> int:
    return math.prod(n.shape) * math.prod(n.attrs["kernel"])


@registry.implements("mean", cost="host_macs")
def _macs_mean(g: Graph, n: Node) -> int:
    return math.prod(g[n.inputs[0]].shape)


@registry.implements("bilinear", cost="host_macs")
def _macs_bilinear(g: Graph, n: Node) -> int:  # one multiply per nonzero weight of kron(Ah, Aw), per channel
    bh, bw = _bilinear_taps(g, n)
    return n.shape[0] * int(bh.sum()) * int(bw.sum())


@registry.implements("scale", cost="host_macs")
def _macs_scale(g: Graph, n: Node) -> int:
    return math.prod(n.shape)


registry.refuse("add", "offset", "upsample", "reshape", "permute", cost="host_macs",
                why="free: sums and data movement, no multiplies (0 MACs)")
registry.refuse("max_pool", cost="host_macs", why="0 MACs: a max of spike counts is free; a max of the input's encoding "
                                                 "is comparisons on the host, not multiply-accumulates")
registry.refuse("spike_product", cost="host_macs",
                why="priced as coincidence operations of its operand spikes (plan.coincidences), not MACs")
registry.refuse(*BOUNDARY_OPS, cost="host_macs", why=registry.NOT_IN_A_TREE)
registry.refuse("batchnorm", "pad", cost="host_macs", why=registry.NOT_DEPLOYED)


MAC_OPS = tuple(registry.table("host_macs"))  # ops with dense MACs on the host


def dense_macs(g: Graph, n: Node) -> int:
    """Multiply-accumulates of one op on a real-valued (current) input, per sample and timestep
    (0 for an op the "host_macs" cost model refuses: free or priced elsewhere)."""
    c = registry.cell(n.op, "host_macs")
    return c.impl(g, n) if c is not None and not c.refused else 0


def _host_key(n: Node, canon: dict[str, str]):
    params = tuple((k, v.shape, v.tobytes()) for k, v in sorted(n.params.items()))
    return (n.op, tuple(canon.get(i, i) for i in n.inputs), repr(sorted(n.attrs.items())), params)


def _host_fed(g: Graph) -> set[str]:
    """Current nodes whose value depends on a real-valued input or on a spike product's output."""
    fed: set[str] = set()
    for n in g.nodes:
        if n.kind != "current" or n.op in SOURCE_OPS:  # a relay is a population
            continue
        for i in n.inputs:
            m = g[i]
            if (m.op == "input" and m.kind != SPIKE) or m.spec.product or i in fed:
                fed.add(n.name)
                break
    return fed


# ---- the plan --------------------------------------------------------------------------------
def _population_of(g: Graph, name: str) -> str:
    """The fire node or input behind a spike tensor (through spike layout ops)."""
    n = g[name]
    while n.op not in ("fire", "input"):
        if not (n.spec.layout and n.kind == SPIKE):
            raise SnnccError(f"spike tensor {name!r} is not a population or a layout of one",
                             where=f"node {n.name}", hint="run the deploy pipeline (normal form) first")
        n = g[n.inputs[0]]
    return n.name


def analyze(graph: Graph, probe_limit: int | None = None, architecture: bool = True) -> Plan:
    """Read populations, projections (with fan-out maps), host MACs and latency from `graph`.
    `probe_limit` overrides PROBE_LIMIT (0: never probe; fan-outs not provably exact stay path
    counts, flagged as upper bounds). `architecture=False` leaves `Plan.architecture` empty (the
    compile report's static tables do not use it: a third of their time at 19M)."""
    g = graph
    pops: dict[str, Population] = {}
    for n in g.nodes:
        if n.op == "input" and n.kind == SPIKE:
            pops[n.name] = Population(n.name, "spike_input", n.shape, 0)
        elif n.op in POPULATION_OPS:
            pops[n.name] = Population(n.name, n.op, n.shape, int(n.attrs["D"]))
    out_node = g.output
    pops[out_node.name] = Population(out_node.name, "output", out_node.shape, 0)

    fed = _host_fed(g)
    canon: dict[str, str] = {}
    seen: dict = {}
    mac_nodes: dict[str, int] = {}
    for n in g.nodes:
        if n.name in fed and n.op in MAC_OPS:
            key = _host_key(n, canon)
            if key in seen:
                canon[n.name] = seen[key]
                mac_nodes[n.name] = 0
            else:
                seen[key] = n.name
                mac_nodes[n.name] = dense_macs(g, n)

    projections: list[Projection] = []
    products: list[ProductNode] = []
    notes: list[str] = []
    structural = _Structural(g)
    for c in [n for n in g.nodes if n.op in POPULATION_OPS] + [out_node]:
        root = g[c.inputs[0]]
        terms = list(root.inputs) if root.op == "add" else [root.name]
        for t in terms:
            nodes = closure(g, t)
            for n in nodes:
                if n.spec.product:
                    srcs = [_population_of(g, i) for i in n.inputs]
                    products.append(ProductNode(n.name, c.name, list(n.inputs), srcs, n.attrs["order"]))
            host_ops = [n.name for n in nodes if n.name in mac_nodes]
            host_macs = sum(mac_nodes[m] for m in host_ops)
            host_leaf = None
            spiking = [l for l in _leaves(g, nodes, t) if _is_source(g, l)
                       and not (g[l].kind == SPIKE and all(n.spec.layout for n in _path_nodes(g, nodes, l)))]
            paths = path_counts(g, nodes, t, spiking, structural) if spiking else {}
            for leaf in _leaves(g, nodes, t):
                path = _path_nodes(g, nodes, leaf)
                if g[leaf].kind == SPIKE and all(n.spec.layout for n in path):
                    # the output reads spikes as they are (maybe reshaped): routed off chip, no synapses
                    projections.append(Projection(leaf, c.name, "readout", t, [n.name for n in path]))
                elif _is_source(g, leaf):
                    fan, exact = fanout_map(g, nodes, t, leaf, structural, probe_limit, paths[leaf])
                    if not fan.any():
                        continue  # reached only through a spike product
                    pooled = [n.name for n in path if _fanout_cell(n) is _fanout_selects]
                    if pooled:  # a spike reaches the layer only where it wins the max: every window it is in
                        exact = False
                        notes.append(f"fan-out {leaf} -> {c.name} through max pooling ({', '.join(pooled)}) counts "
                                     f"every window a spike is in (upper bound: a pooled spike is sent once)")
                    elif not exact:
                        notes.append(f"fan-out {leaf} -> {c.name} is a path count (upper bound): the dense "
                                     f"map is too large to probe")
                    projections.append(Projection(leaf, c.name, "synaptic", t, [n.name for n in path], fan, exact))
                elif host_leaf is None:
                    host_leaf = leaf
            if host_leaf is not None or host_macs:
                # the real-valued input (or a spike product's integer output) through dense ops
                projections.append(Projection(host_leaf or t, c.name, "host", t, host_ops, None, True, host_macs))

    for p in projections:
        if p.kind in ("synaptic", "readout") and p.target not in pops[p.source].destinations:
            pops[p.source].destinations.append(p.target)
    for pr in products:
        for s in pr.sources:
            if pr.target not in pops[s].destinations:
                pops[s].destinations.append(pr.target)

    lat, crit = _latency(g, pops, projections, products, lambda p: p.D)
    dmax = max((p.D for p in pops.values()), default=0)
    clat, ccrit = _latency(g, pops, projections, products, lambda p: dmax if p.D else 0)
    return Plan(g, g.T, pops, projections, products, mac_nodes, lat, crit, notes,
                architecture_ops(g, structural) if architecture else [], clat, ccrit)


def _is_source(g: Graph, name: str) -> bool:
    """A population's output read by a current tree: spikes (of a neuron or a spike input) or a relay's value."""
    return g[name].kind == SPIKE or g[name].op == "relay"


def architecture_ops(g: Graph, structural: Interpreter | None = None) -> list[ArchOp]:
    """The trained network's synaptic ops on spikes (module docstring), once per distinct value."""
    structural = structural or _Structural(g)
    same = value_numbers(g)
    memo: dict = {}
    users = g.users()
    out = []
    for n in g.nodes:
        if not n.spec.synaptic or n.spec.product or same[n.name] != n.name:
            continue
        srcs = set()
        for i in n.inputs:
            srcs |= weightless_sources(g, i, memo)
        if not srcs or not all(g[s].kind == SPIKE for s in srcs):
            continue  # host MACs (encoding), a relay's value, or a weighted op's current: not spike-driven SOPs
        # the chain from the sources to n: weightless ops only (closure stops at populations, and
        # `srcs` guarantees no weighted op below n)
        nodes = closure(g, n.name)
        leaves = _leaves(g, nodes, n.name)
        counts = path_counts(g, nodes, n.name, leaves, structural)
        fan: dict[str, np.ndarray] = {}
        for l in leaves:
            p = _population_of(g, l)
            fan[p] = fan[p] + counts[l] if p in fan else counts[l]
        out.append(ArchOp(n.name, _first_consumer(g, n.name, users), fan))
    return out


def _first_consumer(g: Graph, name: str, users: dict) -> str:
    order = {m.name: i for i, m in enumerate(g.nodes)}
    best = None
    stack, seen = [name], set()
    while stack:
        m = stack.pop()
        for u in users[m]:
            if u.name in seen:
                continue
            seen.add(u.name)
            if u.op in CONSUMER_OPS:
                if best is None or order[u.name] < order[best]:
                    best = u.name
            else:
                stack.append(u.name)
    return best or g.output.name


def _latency(g: Graph, pops: dict[str, Population], projections, products,
             window: Callable[[Population], int]) -> tuple[int, list[str]]:
    """The longest population path to the output, each population costing `window(p)` sub-steps."""
    preds: dict[str, set[str]] = {p: set() for p in pops}
    for p in projections:
        if p.kind in ("synaptic", "readout"):
            preds[p.target].add(p.source)
    for pr in products:
        preds[pr.target].update(pr.sources)
    best: dict[str, tuple[int, list[str]]] = {}
    for n in g.nodes:  # graph order is topological
        if n.name not in pops:
            continue
        # ties go to the first source in graph order (a set's order changes with the process's hash seed)
        prev = max((best[s] for s in best if s in preds[n.name]), key=lambda b: b[0], default=(0, []))
        best[n.name] = (prev[0] + window(pops[n.name]), prev[1] + [n.name])
    out = best[g.output.name]
    # The last population's burst takes one more window to arrive (the synchronous exact schedule:
    # level k integrates during window k and fires during window k + 1), so the latency is the
    # simulator's: D * (depth + 1) sub-steps for one D (snncc.sim.sync, one definition for both).
    # With different D per population, `window` is each one's own D (asynchronous) or the largest D
    # (one clock: W * (depth + 1) sub-steps, `sim.sync.window_length`).
    last = next((window(pops[p]) for p in reversed(out[1]) if pops[p].D), 0)
    return out[0] + last, out[1]


# ---- spike products ----------------------------------------------------------------------------
def coincidences(xs: list[torch.Tensor], order: str = "left") -> torch.Tensor:
    """Multiply-free operations of a spike product, per sample (batch axis first).

    One integer n counts as n spikes. The first stage multiplies two spike tensors: every pair of
    spikes meeting on the shared axis is one coincidence (one accumulate of 1), so its cost is
    sum(A @ B) = sum_k colsum(A)[k] * rowsum(B)[k]. A second stage multiplies the integer
    intermediate P by a spike tensor C: each spike of C adds the nonzero entries of the column of P
    it meets, so its cost is sum((P != 0) @ C) for (A B) C, and sum(A @ (P != 0)) for A (B C).
    """
    B = xs[0].shape[0]
    if len(xs) == 2:
        return (xs[0] @ xs[1]).reshape(B, -1).sum(1)
    a, b, c = xs
    if order == "left":
        p = a @ b
        return p.reshape(B, -1).sum(1) + ((p != 0).to(c.dtype) @ c).reshape(B, -1).sum(1)
    p = b @ c
    return p.reshape(B, -1).sum(1) + (a @ (p != 0).to(a.dtype)).reshape(B, -1).sum(1)
