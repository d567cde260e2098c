"""Core and chip mapping of a deployed graph onto Loihi 2 systems (no Lava import, no materialised
synapse matrix).

Owns the resource model loader (`load_resources`: `data/loihi2_resources.json`, every figure with
its source), the split of every on-chip unit into core-sized pieces (`split`), the piece graph
weighted by estimated spike traffic, the partition of pieces onto chips with METIS (`pymetis`), the
placement on the chip's core mesh and the system's chip mesh, and the result (`Mapping`: piece ->
chip, core; per-core and per-chip utilisation; inter-chip links and their traffic; per projection
the messages, hops and chip crossings one source spike costs, which the estimator's loihi formula
reads from `mapping.json`). It lives in the backend because the limits are Loihi 2's; the estimator
in the core reads only the JSON it writes.

Units: every fire and relay population, every max pool of spikes (OR neurons fed by a 0/1 sum
pool, `network.MaxPool`) and every spike product (graded sources; a SpikeProduct is
not a Loihi 2 built-in and its cost here is an assumption: no synaptic memory, its operands arrive
as graded messages, one input axon per operand piece). The host input (encoding currents, spike
input streams) and the read-out are off chip.

Pieces. A unit of rank >= 2 is cut into blocks along its first two axes (channels x rows for a
(C, H, W) map, tokens x features for (N, F)), the remaining axes whole; rank 1 along its only axis.
The block extents are the cheapest (fewest pieces; ties split rows first, which keeps convolution
traffic local) whose central block fits every per-core limit: neurons, memory (neuron state +
synaptic memory of every incoming projection) and, for per-neuron connectivity, input axons.

Projections are costed from the IR ops, never from matrices: a block's receptive field in each
source is the bounding box obtained by walking the consumer's current tree backwards (conv and
pool: channel groups and the strided window; linear and mean: the reduced axes whole; permute:
axes permuted; reshape: the bounding box of the flat index range; scale, add: unchanged). A
projection through a conv is encoded as a shared kernel (the core stores, per output channel it
holds, one kernel entry per element of one neuron's receptive field); through a linear without a
conv as dense per-synapse weights; otherwise (pools, means, layouts) as sparse weights with an
index. A spike product's operands (its own projections, one per operand population) are read
through `operand_box`: an output block of rows i and columns j of some heads reads the first
operand's rows i, the last operand's columns j and the middle one of three whole, of the same
heads, then back through the operand's layout ops (Q K^T of a head block reads only its heads' Q
rows). Receptive boxes bound the true fields (exact for single convs/pools/linears), so memory
and axons are upper bounds.

Traffic: a source neuron sends one message per spike to every core that holds a neuron reading it;
messages on a piece edge per window = overlapping source neurons x the loihi profile's assumed
spikes per neuron and window (uniform activity); a spike product's entry sends one graded message
per window to every core reading it, weighted the same (at most one per entry and window). These
edges, the operands' into the product and the product's into its consumers included, are the
graph METIS partitions and the per-link traffic of `mapping.json`. Placement: pieces of a chip in unit order along
a snake over the 8 x 16 core mesh; chips in the order of their first unit along a snake over the
system mesh; hops are Manhattan distances between cores, chip crossings between chips, with
dimension-order routing for the inter-chip links.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from snncc.errors import TargetError
from snncc.ir.graph import Graph, Node

from snncc_lava.network import loihi_op, operand_path, tree_nodes

RESOURCES = Path(__file__).parent / "data" / "loihi2_resources.json"


# ---- resource model ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Resources:
    neurons: int
    memory_bytes: int
    neuron_state_bytes: int
    weight_bits: int
    sparse_index_bits: int
    input_axons: int
    output_axons: int
    cores: int
    core_mesh: tuple
    systems: dict
    link_bandwidth: float  # bytes/s per inter-chip link
    message_bytes: int
    doc: dict = field(default_factory=dict, compare=False, repr=False)

    def system(self, spec) -> tuple[str, int, tuple]:
        """(name, chips, mesh) of `system=chip|kapoho|hala|N`."""
        if isinstance(spec, str) and spec in self.systems:
            s = self.systems[spec]
            return spec, int(s["chips"]), tuple(s["mesh"])
        try:
            n = int(spec)
        except (TypeError, ValueError):
            raise TargetError(f"unknown system {spec!r}", where="loihi option system",
                              hint=f"one of {', '.join(self.systems)} or a number of chips") from None
        if n < 1:
            raise TargetError(f"system of {n} chips", where="loihi option system", hint="at least 1 chip")
        a = int(math.isqrt(n))
        while n % a:
            a -= 1
        return f"{n} chips", n, (a, n // a)


def load_resources(path: str | Path = RESOURCES) -> Resources:
    doc = json.loads(Path(path).read_text())
    c, ch, ic = doc["core"], doc["chip"], doc["interchip"]
    v = lambda d, k: d[k]["value"]
    return Resources(int(v(c, "neurons")), int(v(c, "memory_bytes")), int(v(c, "neuron_state_bytes")),
                     int(v(c, "weight_bits")), int(v(c, "sparse_index_bits")), int(v(c, "input_axons")),
                     int(v(c, "output_axons")), int(v(ch, "cores")), tuple(v(ch, "mesh")), doc["systems"],
                     float(v(ic, "link_bandwidth_bytes_per_s")), int(v(ic, "message_bytes")), doc)


# ---- receptive boxes ---------------------------------------------------------------------------
Box = tuple  # ((lo, hi), ...) per axis, half-open


def _full(shape) -> Box:
    return tuple((0, int(s)) for s in shape)


def _union(a: Box | None, b: Box) -> Box:
    return b if a is None else tuple((min(x[0], y[0]), max(x[1], y[1])) for x, y in zip(a, b))


def volume(b: Box) -> int:
    return math.prod(max(0, hi - lo) for lo, hi in b)


def _window(lo, hi, stride, pad, k, dil, size):
    return max(0, lo * stride - pad), min(size, (hi - 1) * stride - pad + (k - 1) * dil + 1)


def _flat_box(b: Box, shape_in: tuple, shape_out: tuple) -> Box:
    """Bounding box in `shape_out` of the flat index range that box `b` of `shape_in` spans."""
    lo = int(np.ravel_multi_index(tuple(x[0] for x in b), shape_in))
    hi = int(np.ravel_multi_index(tuple(x[1] - 1 for x in b), shape_in))
    a, z = np.unravel_index(lo, shape_out), np.unravel_index(hi, shape_out)
    out = []
    for d in range(len(shape_out)):
        out.append((int(a[d]), int(z[d]) + 1))
        if a[d] != z[d]:  # the range wraps this axis: every inner axis is whole
            out += [(0, int(s)) for s in shape_out[d + 1:]]
            break
    return tuple(out)


def _reshape_box(b: Box, shape_in: tuple, shape_out: tuple) -> Box:
    """Box `b` of `shape_in` as a box of `shape_out` (same size): axes are grouped where the two
    shapes' running products meet (a merge or split of neighbouring axes), and each group is
    mapped by the bounding box of its flat range."""
    out: list = []
    i = j = 0
    while i < len(shape_in) or j < len(shape_out):
        gi, gj = [i], [j]
        pi, pj = shape_in[i] if i < len(shape_in) else 1, shape_out[j] if j < len(shape_out) else 1
        while pi != pj:
            if pi < pj:
                i += 1
                gi.append(i)
                pi *= shape_in[i]
            else:
                j += 1
                gj.append(j)
                pj *= shape_out[j]
        gi = [d for d in gi if d < len(shape_in)]
        gj = [d for d in gj if d < len(shape_out)]
        if gi and gj:
            out += list(_flat_box(tuple(b[d] for d in gi), tuple(shape_in[d] for d in gi),
                                  tuple(shape_out[d] for d in gj)))
        i, j = i + 1, j + 1
    return tuple(out)


def _box_same(g: Graph, n: Node, b: Box, shape_in: tuple) -> Box:  # adds, scales: elementwise
    return b


def _box_window(n: Node, b: Box, shape_in: tuple, ch: tuple, ks, dil) -> Box:
    st, pad = n.attrs["stride"], n.attrs["padding"]
    sp = tuple(_window(b[1 + i][0], b[1 + i][1], st[i], pad[i], ks[i], dil[i], shape_in[1 + i])
               for i in range(len(shape_in) - 1))
    return (ch,) + sp


def _box_conv(g: Graph, n: Node, b: Box, shape_in: tuple) -> Box:
    w = n.params["weight"]
    Co, Cig = w.shape[0], w.shape[1]
    G = n.attrs["groups"]
    Cog = Co // G
    ch = ((b[0][0] // Cog) * Cig, ((b[0][1] - 1) // Cog + 1) * Cig)
    return _box_window(n, b, shape_in, ch, w.shape[2:], n.attrs["dilation"])


def _box_pool(g: Graph, n: Node, b: Box, shape_in: tuple) -> Box:  # pool and max_pool: per channel
    return _box_window(n, b, shape_in, b[0], n.attrs["kernel"], (1,) * len(n.attrs["kernel"]))


def _box_linear(g: Graph, n: Node, b: Box, shape_in: tuple) -> Box:
    return b[:-1] + ((0, shape_in[-1]),)


def _box_upsample(g: Graph, n: Node, b: Box, shape_in: tuple) -> Box:
    """Output rows [lo, hi) read input rows [lo // s, ceil(hi / s))."""
    return (b[0],) + tuple((lo // s, -(-hi // s)) for (lo, hi), s in zip(b[1:], n.attrs["scale"]))


def _box_bilinear(g: Graph, n: Node, b: Box, shape_in: tuple) -> Box:
    """Output rows [lo, hi) read the input rows of their nonzero weights."""
    from snncc.ir.ops import bilinear_weights

    def rows(r, n_in, n_out):
        if r[0] >= r[1]:
            return r
        cols = np.nonzero(bilinear_weights(n_in, n_out, n.attrs["align_corners"])[r[0]:r[1]].any(0))[0]
        return (int(cols.min()), int(cols.max()) + 1)
    return (b[0],) + tuple(rows(r, i, o) for r, i, o in zip(b[1:], shape_in[1:], n.attrs["size"]))


def _box_offset(g: Graph, n: Node, b: Box, shape_in: tuple) -> Box:
    """The part of the box inside the input's slice (empty boxes stay empty)."""
    ax, at, size = n.attrs["axis"], n.attrs["at"], shape_in[n.attrs["axis"]]
    lo, hi = b[ax]
    lo, hi = min(max(lo - at, 0), size), min(max(hi - at, 0), size)
    return tuple((lo, max(lo, hi)) if d == ax else r for d, r in enumerate(b))


def _box_mean(g: Graph, n: Node, b: Box, shape_in: tuple) -> Box:
    dims = [d % len(shape_in) for d in n.attrs["dims"]]
    it = iter(b)
    return tuple((0, shape_in[d]) if d in dims else next(it) for d in range(len(shape_in)))


def _box_permute(g: Graph, n: Node, b: Box, shape_in: tuple) -> Box:
    out = [None] * len(shape_in)
    for i, d in enumerate(n.attrs["dims"]):
        out[d] = b[i]
    return tuple(out)


def _box_reshape(g: Graph, n: Node, b: Box, shape_in: tuple) -> Box:
    return _reshape_box(b, tuple(n.shape), shape_in)


def back_box(g: Graph, n: Node, b: Box) -> Box:
    """The box of n's first input that output box `b` of n reads (its op's `LoihiOp.box` rule)."""
    rule = loihi_op(n).box
    if rule is None:
        raise TargetError(f"op {n.op} has no receptive-field rule", where=f"node {n.name}")
    return rule(g, n, b, tuple(g[n.inputs[0]].shape))


# ---- units and projections ---------------------------------------------------------------------
@dataclass
class Proj:
    source: str
    target: str
    encoding: str  # conv | dense | sparse | product
    tree: list  # tree nodes (graph order), for back-propagating boxes
    root: str
    kernel: int = 0  # shared-weight entries per output feature: product of the weighted ops' kernels along the path
    operands: list = field(default_factory=list)  # product: (operand position, layout ops from the source) it feeds


@dataclass
class Unit:
    name: str
    shape: tuple
    order: int
    kind: str  # fire | relay | product | max_pool
    inputs: list = field(default_factory=list)  # Proj into this unit

    @property
    def size(self) -> int:
        return math.prod(self.shape)


def _kernel_conv(n: Node) -> int:
    return int(np.prod(n.params["weight"].shape[1:]))


def _kernel_linear(n: Node) -> int:
    return int(n.params["weight"].shape[1])


def _own_kernel(n: Node) -> int:
    """Distinct weights per output feature a weighted op stores as a shared kernel (its op's
    `LoihiOp.shared_kernel`; 1 for an op without weights)."""
    k = loihi_op(n).shared_kernel
    return 1 if k is None else k(n)


def units(g: Graph) -> tuple[dict[str, Unit], list[Proj]]:
    """On-chip units (graph order) and every projection between them (host input and read-out left out)."""
    out: dict[str, Unit] = {}
    order = {n.name: i for i, n in enumerate(g.nodes)}
    for n in g.nodes:  # populations, OR neurons of a max pool (network.MaxPool), spike products
        kind = loihi_op(n).unit
        if kind:
            out[n.name] = Unit(n.name, tuple(n.shape), order[n.name], kind)
    projs: list[Proj] = []
    for u in out.values():
        n = g[u.name]
        if u.kind == "product":  # one projection per operand population (Q K^T V with q = v: one)
            feeds: dict[str, list] = {}
            for pos, i in enumerate(n.inputs):
                src, path = operand_path(g, i)
                if src in out:
                    feeds.setdefault(src, []).append((pos, path))
            projs += [Proj(src, u.name, "product", [], "", operands=ops) for src, ops in feeds.items()]
            continue
        tree, leaves = tree_nodes(g, n, products=True)
        root = n.inputs[0]
        if u.kind == "max_pool":  # the pool window is the projection's last op (a 0/1 sum pool)
            tree, root = tree + [n], n.name
        ops: dict[str, dict[str, tuple]] = {}  # node -> leaf -> (op kinds on the way, kernel entries)
        for leaf in leaves:
            ops[leaf] = {leaf: (frozenset(), 1)}
        for t in tree:
            acc: dict[str, tuple] = {}
            for i in (t.inputs if loihi_op(t).merge else t.inputs[:1]):
                for leaf, (kinds, k) in ops.get(i, {}).items():
                    k = k * _own_kernel(t)
                    old = acc.get(leaf, (frozenset(), 0))
                    acc[leaf] = (old[0] | kinds | {t.op}, old[1] + k)
            ops[t.name] = acc
        for leaf, (kinds, k) in ops.get(root, {}).items():
            if leaf not in out:
                continue  # the host input
            enc = "conv" if "conv" in kinds else "dense" if "linear" in kinds else "sparse"
            projs.append(Proj(leaf, u.name, enc, tree, root, k))
    for p in projs:
        out[p.target].inputs.append(p)
    return out, projs


def operand_box(b: Box, shape: tuple, pos: int, count: int) -> Box:
    """The box of operand `pos` (of `count`, shape `shape`) that output box `b` of a spike product
    reads: the same head axes; rows of b for the first operand, columns of b for the last, every
    row and column for the middle one of three (a b, (a b) c and a (b c) alike)."""
    rows = b[-2] if pos == 0 else (0, shape[-2])
    cols = b[-1] if pos == count - 1 else (0, shape[-1])
    return tuple(b[:-2]) + (rows, cols)


def receptive(g: Graph, p: Proj, b: Box, units_: dict) -> Box:
    """Bounding box in p.source that the target box `b` reads."""
    if p.encoding == "product":  # every operand fed by p.source, back through its layout ops
        n = g[p.target]
        box = None
        for pos, path in p.operands:
            ob = operand_box(b, tuple(g[n.inputs[pos]].shape), pos, len(n.inputs))
            for op in reversed(path):
                ob = back_box(g, op, ob)
            box = _union(box, ob)
        return box
    boxes: dict[str, Box] = {p.root: b}
    for n in reversed(p.tree):
        if n.name not in boxes:
            continue
        bb = boxes[n.name]
        merge = loihi_op(n).merge
        ins = n.inputs if merge else n.inputs[:1]
        for i in ins:
            boxes[i] = _union(boxes.get(i), bb if merge else back_box(g, n, bb))
    # layout-free path: the root itself may be the leaf
    return boxes.get(p.source, _full(units_[p.source].shape))


# ---- per-core cost of a block ------------------------------------------------------------------
def _feature_extent(b: Box) -> int:
    ax = b[0] if len(b) >= 3 else b[-1]
    return ax[1] - ax[0]


def block_cost(g: Graph, u: Unit, b: Box, units_: dict, res: Resources) -> dict:
    """Neurons, memory bytes (state + synapses) and per-neuron input axons of one block."""
    n = volume(b)
    wb = res.weight_bits / 8
    mem = n * res.neuron_state_bytes
    axons = 0
    centre = tuple((s // 2, s // 2 + 1) for s in u.shape)
    for p in u.inputs:
        if p.encoding == "product":
            continue
        if p.encoding == "conv":
            mem += _feature_extent(b) * p.kernel * wb
        else:
            k = volume(receptive(g, p, centre, units_))  # one neuron's fan-in
            bits = res.weight_bits + (res.sparse_index_bits if p.encoding == "sparse" else 0)
            mem += n * k * bits / 8
            axons += volume(receptive(g, p, b, units_))
    return {"neurons": n, "memory": int(math.ceil(mem)), "axons": axons}


def _extents(size: int) -> list[int]:
    return sorted({-(-size // k) for k in range(1, size + 1)}, reverse=True)


def _blocks(shape: tuple, e: tuple) -> list[Box]:
    axes = [range(0, shape[d], e[d]) for d in range(len(e))]
    out = []
    for lo in np.ndindex(*[len(a) for a in axes]):
        b = tuple((axes[d][lo[d]], min(shape[d], axes[d][lo[d]] + e[d])) for d in range(len(e)))
        out.append(b + tuple((0, s) for s in shape[len(e):]))
    return out


def split(g: Graph, u: Unit, units_: dict, res: Resources) -> tuple[list[Box], str | None]:
    """Blocks of `u` that fit one core each, or ([], the one-line reason it cannot be split)."""
    shape = u.shape
    nd = 1 if len(shape) == 1 else 2
    ext = [_extents(shape[d]) for d in range(nd)]
    cands = []
    for e in np.ndindex(*[len(x) for x in ext]):
        ee = tuple(ext[d][e[d]] for d in range(nd))
        count = math.prod(-(-shape[d] // ee[d]) for d in range(nd))
        cands.append((count, -ee[0], ee))
    cands.sort()
    need = math.ceil(u.size / res.neurons)
    worst = None
    for count, _, ee in cands:
        if count < need and ee != cands[-1][2]:  # the finest blocking is costed anyway, for the reason
            continue
        lo = tuple(min(shape[d] - ee[d], (shape[d] // 2) // ee[d] * ee[d]) for d in range(nd))
        b = tuple((lo[d], lo[d] + ee[d]) for d in range(nd)) + tuple((0, s) for s in shape[nd:])
        c = block_cost(g, u, b, units_, res)
        if c["neurons"] <= res.neurons and c["memory"] <= res.memory_bytes and c["axons"] <= res.input_axons:
            return _blocks(shape, ee), None
        worst = c
    return [], (f"unit {u.name}: even a block of {worst['neurons']} neuron(s) needs {worst['memory']:,} bytes of "
                f"core memory and {worst['axons']:,} input axons; a Loihi 2 core has {res.neurons:,} neurons, "
                f"{res.memory_bytes:,} bytes and {res.input_axons:,} axons")


# ---- the mapping -------------------------------------------------------------------------------
@dataclass
class Piece:
    unit: str
    index: int
    box: Box
    neurons: int
    memory: int
    input_axons: int = 0
    output_routes: int = 0
    chip: int = -1
    core: int = -1


@dataclass
class Mapping:
    system: str
    chips_available: int
    system_mesh: tuple
    resources: Resources
    pieces: list[Piece]
    edges: dict  # (piece a, piece b) -> messages per window
    overlaps: dict  # (piece a, piece b) -> source neurons of a read by b
    projections: list[Proj]
    units: dict
    problems: list[str] = field(default_factory=list)
    chips_used: int = 0
    chip_position: dict = field(default_factory=dict)  # logical chip -> mesh coordinate
    partitioner: str = ""
    seconds: float = 0.0

    # ---- derived figures ----
    def core_xy(self, core: int) -> tuple:
        rows, cols = self.resources.core_mesh
        r, c = divmod(core, cols)
        return (r, c if r % 2 == 0 else cols - 1 - c)

    def hops(self, a: Piece, b: Piece) -> tuple[int, int]:
        (ra, ca), (rb, cb) = self.core_xy(a.core), self.core_xy(b.core)
        pa, pb = self.chip_position[a.chip], self.chip_position[b.chip]
        return abs(ra - rb) + abs(ca - cb), sum(abs(x - y) for x, y in zip(pa, pb))

    def route(self, a: int, b: int) -> list[tuple]:
        """Chip-to-chip links (dimension-order routing) from logical chip a to b, as position pairs."""
        p, q = list(self.chip_position[a]), self.chip_position[b]
        out = []
        for d in range(len(p)):
            while p[d] != q[d]:
                nxt = list(p)
                nxt[d] += 1 if q[d] > p[d] else -1
                out.append((tuple(p), tuple(nxt)))
                p = nxt
        return out

    def interchip_messages(self) -> float:
        return sum(m for (a, b), m in self.edges.items() if self.pieces[a].chip != self.pieces[b].chip)

    def links(self) -> dict:
        out: dict = {}
        for (a, b), m in self.edges.items():
            ca, cb = self.pieces[a].chip, self.pieces[b].chip
            if ca != cb:
                for l in self.route(ca, cb):
                    out[l] = out.get(l, 0.0) + m
        return out

    def traffic(self) -> list[dict]:
        """Per projection (source unit -> target unit): per source spike, the messages (destination
        cores), on-chip hops and chip crossings, and each inter-chip link's share (none before
        placement: a model that does not fit)."""
        if not self.chips_used:
            return []
        acc: dict = {}
        for (a, b), ov in self.overlaps.items():
            pa, pb = self.pieces[a], self.pieces[b]
            key = (pa.unit, pb.unit)
            t = acc.setdefault(key, {"messages": 0.0, "hops": 0.0, "crossings": 0.0, "links": {}})
            h, x = self.hops(pa, pb)
            t["messages"] += ov
            t["hops"] += ov * h
            t["crossings"] += ov * x
            if pa.chip != pb.chip:
                for l in self.route(pa.chip, pb.chip):
                    k = f"{list(l[0])}->{list(l[1])}"
                    t["links"][k] = t["links"].get(k, 0.0) + ov
        out = []
        for (s, tg), t in acc.items():
            n = self.units[s].size
            out.append({"source": s, "target": tg, "messages_per_spike": t["messages"] / n,
                        "hops_per_spike": t["hops"] / n, "crossings_per_spike": t["crossings"] / n,
                        "links_per_spike": {k: v / n for k, v in sorted(t["links"].items())}})
        return out

    def chip_table(self) -> list[dict]:
        r = self.resources
        out = []
        for c in range(self.chips_used):
            ps = [p for p in self.pieces if p.chip == c]
            out.append({"chip": c, "position": list(self.chip_position[c]), "cores": len(ps),
                        "core_utilisation": len(ps) / r.cores, "neurons": sum(p.neurons for p in ps),
                        "neuron_utilisation": sum(p.neurons for p in ps) / (r.cores * r.neurons),
                        "memory_bytes": sum(p.memory for p in ps),
                        "memory_utilisation": sum(p.memory for p in ps) / (r.cores * r.memory_bytes)})
        return out

    def fractions(self) -> dict:
        """unit -> {chip: fraction of its neurons}."""
        out: dict = {}
        for p in self.pieces:
            d = out.setdefault(p.unit, {})
            d[str(p.chip)] = d.get(str(p.chip), 0.0) + p.neurons / self.units[p.unit].size
        return out

    def to_json(self) -> dict:
        r = self.resources
        links = self.links()
        cap = r.link_bandwidth / r.message_bytes
        return {
            "format": "snncc-loihi-mapping/1",
            "resources": "snncc_lava/data/loihi2_resources.json",
            "system": self.system, "chips_available": self.chips_available, "system_mesh": list(self.system_mesh),
            "cores_per_chip": r.cores,
            "partitioner": self.partitioner,
            "problems": self.problems,
            "totals": {"pieces": len(self.pieces), "cores": len(self.pieces), "chips": self.chips_used,
                       "neurons": sum(p.neurons for p in self.pieces),
                       "messages_per_window": sum(self.edges.values()),
                       "interchip_messages_per_window": self.interchip_messages()},
            "traffic_basis": "estimated: every neuron spikes at the loihi profile's spikes_per_neuron_window",
            "link_limit_messages_per_s": cap,
            "chips": self.chip_table(),
            "pieces": [{"unit": p.unit, "piece": p.index, "box": [list(x) for x in p.box], "chip": p.chip,
                        "core": p.core, "neurons": p.neurons, "memory_bytes": p.memory,
                        "core_utilisation": {"neurons": p.neurons / r.neurons, "memory": p.memory / r.memory_bytes},
                        "input_axons": p.input_axons, "output_routes": p.output_routes} for p in self.pieces],
            "links": [{"from": list(a), "to": list(b), "messages_per_window": m} for (a, b), m in sorted(links.items())],
            "traffic": self.traffic(),
            "populations": self.fractions(),
        }

    def report(self) -> str:
        """The resource report (markdown), also when the model does not fit (`report_markdown`)."""
        return report_markdown(self.to_json())


def report_markdown(doc: dict) -> str:
    """The resource report of a mapping document (`Mapping.to_json`, or lava/mapping.json read
    back): problems, pieces and chips, estimated traffic, per-chip and per-unit tables. --explain
    prints it from the Mapping, the compile report from the artefact's file."""
    t = doc["totals"]
    lines = [f"## Loihi 2 mapping ({doc['system']}: {doc['chips_available']} chip(s) of {doc['cores_per_chip']} cores)", ""]
    lines += [f"- problem: {p}" for p in doc["problems"]]
    lines += [f"- pieces (cores): {t['pieces']}; chips used: {t['chips']}; partitioner: {doc['partitioner']}",
              f"- estimated messages per window: {t['messages_per_window']:.4g}, of which inter-chip: "
              f"{t['interchip_messages_per_window']:.4g}", ""]
    if t["chips"]:
        lines += ["| chip | position | cores | neurons | memory | core util. | memory util. |", "|---|---|---|---|---|---|---|"]
        for c in doc["chips"]:
            lines.append(f"| {c['chip']} | {c['position']} | {c['cores']} | {c['neurons']} | {c['memory_bytes']} "
                         f"| {c['core_utilisation']:.1%} | {c['memory_utilisation']:.1%} |")
        lines.append("")
    per_unit: dict = {}  # unit -> [pieces, neurons (its pieces tile it), largest piece, its memory, chips]
    for p in doc["pieces"]:
        d = per_unit.setdefault(p["unit"], [0, 0, 0, 0, set()])
        d[0] += 1
        d[1] += p["neurons"]
        d[2] = max(d[2], p["neurons"])
        d[3] = max(d[3], p["memory_bytes"])
        d[4].add(p["chip"])
    lines += ["| unit | neurons | pieces | largest piece (neurons / bytes) | chips |", "|---|---|---|---|---|"]
    for name, (k, size, nmax, mmax, chips) in per_unit.items():
        lines.append(f"| {name} | {size} | {k} | {nmax} / {mmax} | {','.join(map(str, sorted(chips)))} |")
    return "\n".join(lines) + "\n"


def _spike_rate() -> float:
    from snncc.profile import load_profile

    return float(load_profile("loihi").si("spikes_per_neuron_window", 1.0))


def piece_graph(g: Graph, us: dict, projs: list[Proj], pieces: list[Piece], by_unit: dict, rate: float) -> tuple[dict, dict]:
    """(edges, overlaps): (a, b) -> messages per window and source neurons of piece a read by piece b."""
    overlaps: dict = {}
    for p in projs:
        src = by_unit[p.source]
        lo = np.array([[x[0] for x in pieces[i].box] for i in src])
        hi = np.array([[x[1] for x in pieces[i].box] for i in src])
        for b in by_unit[p.target]:
            rb = receptive(g, p, pieces[b].box, us)
            rlo, rhi = np.array([x[0] for x in rb]), np.array([x[1] for x in rb])
            ov = np.clip(np.minimum(hi, rhi) - np.maximum(lo, rlo), 0, None).prod(axis=1)
            for j in np.nonzero(ov)[0]:
                key = (src[j], b)
                overlaps[key] = overlaps.get(key, 0) + int(ov[j])
    return {k: v * rate for k, v in overlaps.items()}, overlaps


def exact_overlaps(g: Graph, m: Mapping) -> dict:
    """(source piece, target piece) -> source neurons of the piece with a synapse into the target
    piece, from the real synapse matrices (`network.tree_matrices`) of every current-tree
    projection (spike products' operands left out): what `Mapping.overlaps` bounds with boxes.
    Materialises the matrices: for measuring small graphs (tests, benchmarks/mapping_overcount.py),
    never called by `build`."""
    from snncc_lava.network import tree_matrices

    def flat(box, shape):
        grids = np.meshgrid(*[np.arange(lo, hi) for lo, hi in box], indexing="ij")
        return np.ravel_multi_index([x.reshape(-1) for x in grids], shape)

    by_unit: dict = {}
    for i, p in enumerate(m.pieces):
        by_unit.setdefault(p.unit, []).append(i)
    out: dict = {}
    for pr in m.projections:
        if pr.encoding == "product":
            continue
        w = tree_matrices(g, g[pr.target])[pr.source].tocsr()
        owner = np.empty(m.units[pr.source].size, dtype=np.int64)
        for i in by_unit[pr.source]:
            owner[flat(m.pieces[i].box, m.units[pr.source].shape)] = i
        for b in by_unit[pr.target]:
            cols = np.unique(w[flat(m.pieces[b].box, m.units[pr.target].shape)].indices)
            for a, k in zip(*np.unique(owner[cols], return_counts=True)):
                out[(int(a), b)] = out.get((int(a), b), 0) + int(k)
    return out


METIS_SETTINGS = ((30, False), (100, False), (1, True), (30, True), (100, True))  # (ufactor, recursive)


def metis_partition(n: int, edges: dict, k: int, cap: int) -> list[int]:
    """Pieces -> k chips with METIS (pymetis), minimising the cut traffic: k-way and recursive
    bisection at a few imbalance tolerances (METIS_SETTINGS), each made to hold at most `cap`
    pieces per chip (pieces over capacity move to the chip with room they talk to most), the
    smallest cut kept."""
    if k == 1:
        return [0] * n
    import pymetis

    w: dict = {}
    for (a, b), m in edges.items():
        if a != b:
            key = (min(a, b), max(a, b))
            w[key] = w.get(key, 0.0) + m
    scale = 5e8 / max(sum(w.values()), 1e-12)  # integer weights, their sum within METIS's 32-bit range
    adj: list[list] = [[] for _ in range(n)]
    for (a, b), m in w.items():
        iw = max(1, int(round(m * scale)))
        adj[a].append((b, iw))
        adj[b].append((a, iw))
    xadj, adjncy, ew = [0], [], []
    for row in adj:
        for b, iw in sorted(row):
            adjncy.append(b)
            ew.append(iw)
        xadj.append(len(adjncy))
    best = None
    for ufactor, recursive in METIS_SETTINGS:
        opts = pymetis.Options(ufactor=ufactor, seed=0, ncuts=4, niter=20)
        _, part = pymetis.part_graph(k, adjacency=pymetis.CSRAdjacency(xadj, adjncy), eweights=ew,
                                     recursive=recursive, options=opts)
        part = _repair(list(part), adj, k, cap)
        c = cut(edges, part)
        if best is None or c < best[0]:
            best = (c, part)
    return best[1]


def _repair(part: list[int], adj: list, k: int, cap: int) -> list[int]:
    load = [0] * k
    for p in part:
        load[p] += 1
    for i in range(len(part)):
        if load[part[i]] <= cap:
            continue
        gain = [0.0] * k
        for b, iw in adj[i]:
            gain[part[b]] += iw
        room = [c for c in range(k) if load[c] < cap]
        best = max(room, key=lambda c: (gain[c], -c))
        load[part[i]] -= 1
        load[best] += 1
        part[i] = best
    return part


def sequential_partition(n: int, edges: dict, k: int, cap: int) -> list[int]:
    """Baseline for comparison only (tests, benchmark): fill chips with pieces in graph order."""
    return [i // cap for i in range(n)]


def cut(edges: dict, part: list[int]) -> float:
    """Messages per window between pieces on different chips."""
    return sum(m for (a, b), m in edges.items() if part[a] != part[b])


def _snake(mesh: tuple) -> list[tuple]:
    """Mesh coordinates in boustrophedon order (consecutive entries are neighbours)."""
    if len(mesh) == 1:
        return [(i,) for i in range(mesh[0])]
    inner = _snake(mesh[1:])
    out = []
    for i in range(mesh[0]):
        out += [(i,) + c for c in (inner if i % 2 == 0 else inner[::-1])]
    return out


def build(g: Graph, system="chip", res: Resources | None = None, partition=None) -> Mapping:
    """Map `g` onto `system`. Problems (a unit that cannot be split, more cores than the system
    has, axon limits) are listed in `Mapping.problems`, one line each, before anything is placed."""
    t0 = time.perf_counter()
    res = res or load_resources()
    name, nchips, mesh = res.system(system)
    us, projs = units(g)
    pieces: list[Piece] = []
    by_unit: dict = {}
    problems: list[str] = []
    for u in us.values():
        blocks, why = split(g, u, us, res)
        if why:
            problems.append(why)
            continue
        by_unit[u.name] = []
        for i, b in enumerate(blocks):
            c = block_cost(g, u, b, us, res)
            by_unit[u.name].append(len(pieces))
            pieces.append(Piece(u.name, i, b, c["neurons"], c["memory"], c["axons"]))
    m = Mapping(name, nchips, mesh, res, pieces, {}, {}, projs, us, problems)
    if problems:
        m.seconds = time.perf_counter() - t0
        return m
    m.edges, m.overlaps = piece_graph(g, us, projs, pieces, by_unit, _spike_rate())
    enc = {(p.source, p.target): p.encoding for p in projs}
    for (a, b), ov in m.overlaps.items():
        shared = enc[(pieces[a].unit, pieces[b].unit)] in ("conv", "product")
        pieces[a].output_routes += 1 if shared else ov
        if shared:
            pieces[b].input_axons += 1
    need = math.ceil(len(pieces) / res.cores)
    if need > nchips:
        problems.append(f"cores: the model needs {len(pieces):,} Loihi 2 cores ({need} chips of {res.cores}); "
                        f"system {name} has {nchips} chip(s), {nchips * res.cores:,} cores (--target-option system=kapoho|hala|N)")
    for p in pieces:
        if p.input_axons > res.input_axons:
            problems.append(f"input axons: {p.unit} piece {p.index} needs {p.input_axons:,}, a core has {res.input_axons:,}")
            break
    for p in pieces:
        if p.output_routes > res.output_axons:
            problems.append(f"output axons: {p.unit} piece {p.index} needs {p.output_routes:,} routes, "
                            f"a core has {res.output_axons:,}")
            break
    if problems:
        m.seconds = time.perf_counter() - t0
        return m
    part = (partition or metis_partition)(len(pieces), m.edges, need, res.cores)
    m.partitioner = "METIS k-way (pymetis)" if partition is None else getattr(partition, "__name__", "custom")
    m.chips_used = max(part) + 1
    first = {}
    for i, c in enumerate(part):
        first[c] = min(first.get(c, i), i)
    order = sorted(range(m.chips_used), key=lambda c: first[c])
    slots = _snake(mesh)
    m.chip_position = {c: slots[i] for i, c in enumerate(order)}
    counters = [0] * m.chips_used
    for i, p in enumerate(pieces):  # pieces are in unit (graph) order: snake over the core mesh
        p.chip = part[i]
        p.core = counters[p.chip]
        counters[p.chip] += 1
    m.seconds = time.perf_counter() - t0
    return m
