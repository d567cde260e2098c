"""lower: a deployed snncc graph (synaptic normal form) -> a list of Speck layers.

A Speck layer is one core: `[sum pool on the source side] -> conv -> IAF population`. Each
fire population of the deployed graph becomes one layer; its private current tree must be a
single chain from one spike source (a population or the event input) through

    [pool (sum or avg, kernel = stride, no padding)]* [flatten | global mean] (conv | linear) [scale | layout]*

or a residual *merge*: an add (possibly nested, followed by scales/layouts) of such chains from
several sources that all lower to the same kernel (same weights, stride, padding) and the same
pooled input shape. Speck (and sinabs' `DynapcnnNetworkModule`) merges by routing several
sources to one destination core: their pooled spike maps are added (`sinabs.layers.Merge`) and
convolved with the core's one kernel, so conv(a) + conv(b) with one kernel lowers exactly
(`SpeckLayer.merge`), and so does one conv reading a sum of spike maps (SpikingJelly SEW's ADD,
conv(a + b): the front end's x1 scale on each spike term folds into the kernel, the conv's bias
counts once); branches with different kernels cannot share a core and are reported, a constant
factor between them by its cause (an average pool or a scale on one path only).

An avg pool is a sum pool whose 1/k^2 folds into the weights; a Linear becomes a conv whose
kernel covers its input (after a flatten or a global mean, which folds 1/(H*W) into the weights);
a grouped conv is expanded to a dense kernel (Speck cores have no groups); per-channel scales
fold into the weights. A current-valued graph output (classifier logits) becomes a *readout*
layer: an IAF population with threshold `readout_threshold` whose spike count is the chip's
output (`with_readout` adds the same population to the IR so the reference executor can check it).

Everything else is reported as a problem naming the node and the numbers; `lower` never raises
for an unsupported model (the target's `check` lists every problem at once).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from snncc.ir.graph import Graph, Node
from snncc.ir.ops import neuron_features, neuron_model

READOUT_D = 2 ** 15  # readout layers fire without a per-step cap (sinabs MultiSpike); 16-bit membrane bounds it


@dataclass
class SpeckLayer:
    name: str  # the fire population this core holds
    source: str  # spike node feeding it: a population or the graph input
    pool: int  # sum pooling applied to the source's spikes on the way here (a destination setting)
    in_shape: tuple  # (C, H, W) at the core input, after pooling
    out_shape: tuple  # (C, H, W) of the neuron array
    weight: np.ndarray  # (c_out, c_in, kh, kw), float64, weights of the deployed graph
    stride: tuple
    padding: tuple
    bias: np.ndarray | None  # (c_out,) constant current per timestep, or None
    theta: float
    beta: float  # initial membrane (half a threshold after round_to_floor)
    D: int | None  # spike cap per timestep; None: unbounded (readout)
    readout: bool = False
    nodes: list[str] = field(default_factory=list)  # IR nodes this core absorbs
    merge: list[tuple[str, int]] = field(default_factory=list)  # further (source, pool): spike maps summed in
    # "subtract" (MembraneSubtract) or "zero": a hard reset (fire reset "value", D = 1) lowered as Speck's
    # return_to_zero / sinabs MembraneReset(0) on the membrane shifted by -beta (threshold theta - beta, start 0)
    reset: str = "subtract"

    @property
    def sources(self) -> list[tuple[str, int]]:
        """Every (source, pooling) feeding this core; several = a merge (sinabs `Merge`: the pooled
        spike maps are added, then convolved with the core's one kernel)."""
        return [(self.source, self.pool)] + list(self.merge)

    @property
    def kernel(self) -> tuple:
        return tuple(self.weight.shape[2:])

    @property
    def c_in(self) -> int:
        return int(self.weight.shape[1])

    @property
    def c_out(self) -> int:
        return int(self.weight.shape[0])


@dataclass
class Lowered:
    layers: list[SpeckLayer]
    problems: list[str]
    input_name: str
    input_shape: tuple  # (C, H, W)
    output_layer: str | None  # the layer whose spikes leave the chip


def _as_chw(shape: tuple) -> tuple | None:
    if len(shape) == 3:
        return tuple(shape)
    if len(shape) == 1:
        return (shape[0], 1, 1)
    return None


def with_readout(graph: Graph, threshold: float = 1.0) -> Graph:
    """The deployed graph with a readout population on a current-valued output: a stateful
    integrate-and-fire node (floor, threshold `threshold`, no cap) whose counts are what the chip
    reports. Returns the graph unchanged (a clone) when the output already carries spikes."""
    g = graph.clone()
    out = g.output
    src = g[out.inputs[0]]
    if src.kind == "spike":
        return g
    node = Node(g.fresh_name("readout"), "fire", [src.name],
                {"D": READOUT_D, "theta": float(threshold), "beta": 0.0, "norm": 1.0, "rounding": "floor",
                 "stateful": True})
    g.insert_before(out.name, node)
    out.inputs = [node.name]
    return g.infer()


def _walk(g: Graph, start: str, consumer: Node, problems: list[str]) -> tuple[Node | None, list[Node]]:
    """Single-input chain from `start` back to its spike source; None when it forks or multiplies."""
    chain: list[Node] = []
    cur = g[start]
    while cur.op not in ("fire", "input"):
        if cur.op == "spike_product":
            problems.append(f"node {cur.name}: spike product (attention) of {len(cur.inputs)} spike tensors "
                            f"{cur.inputs} feeding {consumer.name}: Speck cores only convolve, they cannot "
                            f"multiply spike tensors")
            return None, chain
        if len(cur.inputs) != 1:
            return None, chain
        chain.append(cur)
        cur = g[cur.inputs[0]]
    chain.reverse()
    return cur, chain


def _branches(g: Graph, consumer: Node, problems: list[str]) -> list[tuple[Node, list[Node]]] | None:
    """The projections feeding `consumer`: [(spike source, chain source -> root)], one per branch of
    the (possibly nested) add at the top of its tree; None after reporting a problem."""
    post: list[Node] = []  # single-input ops between the add and the consumer
    cur = g[consumer.inputs[0]]
    while cur.op not in ("fire", "input", "add") and len(cur.inputs) == 1:
        post.append(cur)
        cur = g[cur.inputs[0]]
    if cur.op != "add":
        src, chain = _walk(g, consumer.inputs[0], consumer, problems)
        if src is None and not any("spike product" in p and consumer.name in p for p in problems):
            problems.append(f"node {chain[0].name if chain else consumer.inputs[0]}: {consumer.name} has a current "
                            f"tree Speck cannot lower (a fork below the synaptic op)")
        return None if src is None else [(src, chain)]
    post.reverse()
    add = cur
    tops, stack = [], list(reversed(add.inputs))
    while stack:  # nested adds flatten into one merge
        n = stack.pop()
        if g[n].op == "add":
            stack.extend(reversed(g[n].inputs))
        else:
            tops.append(n)
    out = []
    for t in tops:
        src, chain = _walk(g, t, consumer, problems)
        if src is None:
            if not any("spike product" in p and consumer.name in p for p in problems):
                problems.append(f"node {add.name}: {consumer.name} takes fan-in from {len(tops)} projections "
                                f"({', '.join(tops)}); branch {t} is not a single chain from one spike source")
            return None
        out.append((src, chain + post))
    return out


def _channel_vector(v: np.ndarray, shape: tuple) -> np.ndarray | None:
    """`v` broadcast to `shape` ((C,H,W) or (C,)) as a per-channel vector, or None if it varies over space."""
    full = np.broadcast_to(v, shape).reshape(shape[0], -1)
    if np.all(full == full[:, :1]):
        return full[:, 0].copy()
    return None


# Ops of the deployed graph no Speck layer has, and why.
NO_SPECK_OP = {"upsample": "nearest upsampling: a Speck core cannot fan one event out to a block of neurons",
               "bilinear": "bilinear interpolation: a Speck core cannot fan one event out with fractional weights",
               "offset": "channel concatenation: a Speck layer convolves one source's events per projection"}


@dataclass
class _Branch:
    """The kernel one projection builds, op by op: before its synaptic op (pooling, layout, the
    conv or linear itself) and after it (per-channel scales, output layout)."""
    g: Graph
    source: Node
    where: str
    problems: list
    shape: tuple
    pool: int = 1
    wscale: float = 1.0
    weight: object = None
    bias: object = None
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    cover: tuple | None = None  # (C, H, W) the next linear's kernel covers, after a flatten or global mean
    covered_by: str = ""
    cscale: np.ndarray | None = None  # per source channel: scales on the spikes (a sum's x1), folded into the kernel
    bare: Node | None = None  # the first such scale (named when no kernel follows it)
    synaptic: str = ""  # the conv/linear node: branches of one sum before it share it (and its bias)
    avg_pools: list = field(default_factory=list)  # average pools whose 1/k^2 folded into the kernel


# op -> (rule on spikes before the synaptic op, rule on the current after it); a rule returns False
# to give the branch up (its problem listed). Ops without a rule are refused by `_lower_branch`.
BRANCH_RULES: dict[str, tuple] = {}


def _rule(op: str, before=None, after=None) -> None:
    BRANCH_RULES[op] = (before, after)


def _pool_before(b: _Branch, n: Node):
    k, s, p = n.attrs["kernel"], n.attrs["stride"], n.attrs["padding"]
    if k[0] != k[1] or tuple(s) != tuple(k) or any(p):
        b.problems.append(f"node {n.name}: pooling kernel {k} stride {s} padding {p} feeding {b.where}; "
                          f"Speck pools are square sum pools with stride = kernel and no padding")
    b.pool *= k[0]
    if n.attrs["mode"] == "avg":
        b.wscale /= k[0] * k[1]
        b.avg_pools.append(n.name)
    elif n.attrs["mode"] != "sum":
        b.problems.append(f"node {n.name}: {n.attrs['mode']} pooling; Speck pools by summing")
    b.shape = (b.shape[0],) + tuple(n.shape[1:])


def _reshape_before(b: _Branch, n: Node):
    if len(n.shape) == 1 and len(b.shape) == 3 and b.cover is None:
        b.cover, b.covered_by = b.shape, "flatten"  # (C, H, W) -> C*H*W, consumed by a linear
    else:
        return _layout_before(b, n)


def _layout_before(b: _Branch, n: Node):
    if _as_chw(n.shape) == b.shape:
        pass  # (C,) <-> (C, 1, 1): no data movement
    else:
        return _unmapped_before(b, n)


def _mean_before(b: _Branch, n: Node):
    if not (tuple(n.attrs["dims"]) == (1, 2) and len(b.g[n.inputs[0]].shape) == 3):
        return _unmapped_before(b, n)
    b.cover, b.covered_by = b.shape, "mean"
    b.wscale /= b.shape[1] * b.shape[2]


def _conv_before(b: _Branch, n: Node):
    w = n.params["weight"]
    if w.ndim != 4:
        b.problems.append(f"node {n.name}: {w.ndim - 2}-d convolution; Speck cores convolve 2-d maps")
        return False
    if any(d != 1 for d in n.attrs["dilation"]):
        b.problems.append(f"node {n.name}: dilation {n.attrs['dilation']}; Speck kernels are dense")
    groups = n.attrs["groups"]
    if groups != 1:  # dense equivalent: zero blocks off the diagonal
        co, cig = w.shape[:2]
        dense = np.zeros((co, cig * groups) + w.shape[2:])
        per = co // groups
        for gi in range(groups):
            dense[gi * per:(gi + 1) * per, gi * cig:(gi + 1) * cig] = w[gi * per:(gi + 1) * per]
        w = dense
    b.weight = _in_scaled(b, w * b.wscale)
    b.stride, b.padding = tuple(n.attrs["stride"]), tuple(n.attrs["padding"])
    b.bias, b.synaptic = n.params.get("bias"), n.name
    b.shape = tuple(n.shape)


def _linear_before(b: _Branch, n: Node):
    w = n.params["weight"]
    if b.cover is not None:
        c, h, wd = b.cover
        if b.covered_by == "mean":
            b.weight = np.broadcast_to(w[:, :, None, None], (w.shape[0], c, h, wd)) * b.wscale
        else:
            b.weight = w.reshape(w.shape[0], c, h, wd) * b.wscale
    elif b.shape[1:] == (1, 1):
        b.weight = w[:, :, None, None] * b.wscale
    else:
        b.problems.append(f"node {n.name}: linear on the last axis of a {b.shape} map feeding {b.where}; "
                          f"flatten or globally pool it first (a Speck Linear is a conv covering its input)")
        return False
    b.weight = _in_scaled(b, b.weight)
    b.bias, b.synaptic = n.params.get("bias"), n.name
    b.shape = (w.shape[0], 1, 1)


def _in_scaled(b: _Branch, w: np.ndarray) -> np.ndarray:
    """The kernel (c_out, c_in, kh, kw) with the spike-side scales folded into its input channels."""
    return w if b.cscale is None else w * b.cscale[None, :, None, None]


def _scale_before(b: _Branch, n: Node):
    """A scale on spikes before the synaptic op (the unit weight a sum of spike tensors gets, SEW's
    ADD: conv(a + b) = conv(a) + conv(b)) folds into the kernel's input channels; one with no
    kernel after it is a bare weight into the membrane (`_bare_weight`)."""
    f = np.asarray(n.params["factor"], dtype=np.float64)
    vec = np.full(b.shape[0], float(f.ravel()[0])) if f.size == 1 else (
        _channel_vector(f, b.shape) if b.cover is None and len(b.shape) == 3 else None)
    if vec is None:
        b.problems.append(f"node {n.name}: scale of shape {f.shape} on the spikes of {b.source.name} varies over "
                          f"space; only per-channel scales fold into the Speck kernel of {b.where}")
        return False
    b.cscale = vec if b.cscale is None else b.cscale * vec
    b.bare = b.bare or n


def _bare_weight(b: _Branch) -> str:  # spikes summed into the membrane through a bare weight (a spike residual)
    n = b.bare
    return (f"node {n.name}: spikes of {b.source.name} enter the membrane of {b.where} through a bare "
            f"x{float(np.ravel(n.params['factor'])[0]):g} weight, not a kernel; a Speck core adds "
            f"spikes only through its one convolution (fuse the residual into a conv)")


def _unmapped_before(b: _Branch, n: Node):
    b.problems.append(f"node {n.name}: {n.op} {tuple(n.shape)} on spikes before the synaptic op of "
                      f"{b.where} has no Speck equivalent")
    return False


def _scale_after(b: _Branch, n: Node):
    f = _channel_vector(n.params["factor"], tuple(n.shape))
    if f is None:
        b.problems.append(f"node {n.name}: scale of shape {n.params['factor'].shape} varies over space; "
                          f"only per-channel scales fold into Speck weights")
        return False
    b.weight = b.weight * f[:, None, None, None]
    b.bias = None if b.bias is None else b.bias * f


def _reshape_after(b: _Branch, n: Node):
    if int(np.prod(n.shape)) == int(np.prod(b.shape)):
        return None  # output layout only: element order is unchanged
    return _unmapped_after(b, n)


def _layout_after(b: _Branch, n: Node):
    if int(np.prod(n.shape)) == int(np.prod(b.shape)) and b.shape[1:] == (1, 1):
        return None  # a permute of (C, 1, 1): element order is unchanged
    return _unmapped_after(b, n)


def _unmapped_after(b: _Branch, n: Node):
    b.problems.append(f"node {n.name}: {n.op} on the current after the synaptic op of {b.where}; "
                      f"a Speck core applies one convolution (pool spikes, not currents)")
    return False


def _no_speck_op(stage: str):
    def rule(b: _Branch, n: Node):
        b.problems.append(f"node {n.name}: {NO_SPECK_OP[n.op]} ({stage} {b.where})")
        return False
    return rule


_rule("pool", _pool_before)
_rule("reshape", _reshape_before, _reshape_after)
_rule("permute", _layout_before, _layout_after)
_rule("mean", _mean_before)
_rule("conv", _conv_before)
_rule("linear", _linear_before)
_rule("scale", _scale_before, _scale_after)
for _op in NO_SPECK_OP:
    _rule(_op, _no_speck_op("feeding"), _no_speck_op("after the synaptic op of"))


def _lower_branch(g: Graph, source: Node, chain: list[Node], where: str, problems: list[str]) -> dict | None:
    """One projection (source -> [pool]* conv|linear [scale|layout]*) as a Speck kernel, op by op
    through `BRANCH_RULES`."""
    shape = _as_chw(source.shape)
    if shape is None:
        problems.append(f"{where}: source {source.name} has shape {source.shape}; Speck layers take (C, H, W) maps")
        return None
    b = _Branch(g, source, where, problems, shape)
    for n in chain:
        before, after = BRANCH_RULES.get(n.op, (None, None))
        if b.weight is None:
            rule = before or _unmapped_before
        else:
            rule = after or _unmapped_after
        if rule(b, n) is False:
            return None
    if b.weight is None:
        problems.append(_bare_weight(b) if b.bare is not None else
                        f"{where}: no conv or linear between source {source.name} and the neurons")
        return None
    c, hi, wi = _as_chw(source.shape)
    return {"source": source.name, "pool": b.pool, "in_shape": (c, hi // b.pool, wi // b.pool), "weight": b.weight,
            "stride": b.stride, "padding": b.padding, "bias": b.bias, "synaptic": b.synaptic, "avg_pools": b.avg_pools,
            "nodes": [n.name for n in chain]}


def lower_population(g: Graph, consumer: Node, problems: list[str], readout_threshold: float = 1.0
                     ) -> SpeckLayer | None:
    """One Speck layer for `consumer` (a fire node, or the output node for a readout)."""
    n_before = len(problems)
    branches = _branches(g, consumer, problems)
    if branches is None:
        return None
    readout = consumer.op == "output"
    where = f"layer {consumer.name if not readout else 'readout'}"
    low = [_lower_branch(g, src, chain, where, problems) for src, chain in branches]
    if any(b is None for b in low):
        return None
    first = low[0]
    weight, bias, stride, padding = first["weight"], first["bias"], first["stride"], first["padding"]
    biased = {first["synaptic"]}
    for b in low[1:]:  # a merge: Speck adds the sources' pooled spike maps into the one kernel
        why = []
        if b["weight"].shape != weight.shape:
            why.append(f"kernel {tuple(weight.shape)} vs {tuple(b['weight'].shape)}")
        elif not np.array_equal(b["weight"], weight):
            why.append(_kernel_difference(first, b))
        if b["stride"] != stride or b["padding"] != padding:
            why.append(f"stride/padding {stride}/{padding} vs {b['stride']}/{b['padding']}")
        if b["in_shape"] != first["in_shape"]:
            why.append(f"pooled input {first['in_shape']} vs {b['in_shape']}")
        if why:
            add = [n for n in g.nodes if n.op == "add" and any(x in b["nodes"] for x in n.inputs)]
            problems.append(f"node {add[0].name if add else consumer.inputs[0]}: {where} merges {first['source']} "
                            f"and {b['source']} with {', '.join(why)}; a Speck core has one kernel: merged "
                            f"sources' spike maps are added (sinabs Merge) and share it")
            return None
        if b["bias"] is not None and np.any(b["bias"]) and b["synaptic"] not in biased:
            bias = b["bias"] if bias is None else bias + b["bias"]
        biased.add(b["synaptic"])  # conv(a + b): both branches end in the one conv, whose bias counts once
    if len(problems) > n_before:
        return None
    if readout:
        theta, beta, D, const = float(readout_threshold), 0.0, None, None
    else:
        a = consumer.attrs
        if a["rounding"] not in ("floor", "strict") or a["norm"] != 1.0:
            problems.append(f"layer {consumer.name}: neuron rounding {a['rounding']} norm {a['norm']}; "
                            f"lower the deployed graph (pipeline 'deploy': floor, norm 1)")
        reset, feats = "subtract", list(neuron_features(a))
        if feats == ["hard reset"] and a["D"] == 1 and float(a["theta"]) > float(a["beta"]):
            reset = "zero"  # binary hard reset: v - beta starts at 0, is set to 0 where it fired, fires at theta - beta
        elif feats == ["hard reset"]:
            problems.append(f"layer {consumer.name}: neuron {neuron_model(a)} with D={a['D']}, theta {a['theta']:g}, "
                            f"beta {a['beta']:g}; Speck's reset to zero (return_to_zero) runs a binary (D = 1) "
                            f"hard reset with theta > beta only")
        elif feats:
            missing = [f for f in feats if f != "hard reset"]
            problems.append(f"layer {consumer.name}: neuron {neuron_model(a)}; snncc's Speck layers subtract the "
                            f"threshold per spike (MembraneSubtract) or reset a binary neuron to zero "
                            f"(MembraneReset, return_to_zero) and fire on v >= theta: its {' and '.join(missing)} "
                            f"{'is' if len(missing) == 1 else 'are'} not implemented")
        if not a["stateful"] and g.T > 1:
            problems.append(f"layer {consumer.name}: stateless neuron over T={g.T} timesteps; Speck membranes "
                            f"carry over (stateful integrate-and-fire)")
        if a["leak"] != 1.0 and g.T > 1:
            problems.append(f"layer {consumer.name}: leaky neuron (leak {a['leak']:.6g} per timestep) over T={g.T} "
                            f"timesteps; Speck's IAF membrane has no leak (sinabs DynapcnnLayer takes IAFSqueeze "
                            f"layers only)")
        theta, beta, D = float(a["theta"]), float(a["beta"]), int(a["D"])
        if reset == "zero":
            theta, beta = theta - beta, 0.0
        const = consumer.params.get("bias")
    if const is not None:
        vec = _channel_vector(const, consumer.shape if len(consumer.shape) != 1 else (consumer.shape[0],))
        if vec is None:
            problems.append(f"layer {consumer.name}: constant current varies over space "
                            f"(shape {const.shape}); Speck biases are one value per channel")
            return None
        bias = vec if bias is None else bias + vec
    if bias is not None and not np.any(bias):
        bias = None
    in_shape = first["in_shape"]
    out_shape = (int(weight.shape[0]),) + _conv_out(in_shape, weight, stride, padding)
    nodes = list(dict.fromkeys(n for b in low for n in b["nodes"]))
    return SpeckLayer(consumer.name if not readout else "readout", first["source"], first["pool"], in_shape, out_shape,
                      np.ascontiguousarray(weight, dtype=np.float64), stride, padding,
                      None if bias is None else np.asarray(bias, dtype=np.float64), theta, beta, D, readout,
                      nodes, [(b["source"], b["pool"]) for b in low[1:]], "subtract" if readout else reset)


def _kernel_difference(first: dict, b: dict) -> str:
    """Why two merged projections' kernels differ: through one conv (a sum of spike maps read by it), a
    constant factor from an average pool or a scale on one branch only, which a core's one kernel
    cannot apply per source; else the weights that differ."""
    w0, w1 = first["weight"], b["weight"]
    nz = w0 != 0
    if first["synaptic"] == b["synaptic"] and np.array_equal(nz, w1 != 0) and nz.any():
        r = np.unique(w1[nz] / w0[nz])
        if len(r) == 1:
            shared = set(first["nodes"]) & set(b["nodes"])
            avg = [(n, br["source"]) for br in (first, b) for n in br["avg_pools"] if n not in shared]
            why = "; ".join(f"the average pool {n.split('@')[0]} on {src}'s path folds its 1/k^2 into that "
                            f"projection only" for n, src in avg) or "a scale on one path only"
            return f"kernels that differ by a factor {float(r[0]):g} ({b['source']} vs {first['source']}: {why})"
    return f"different weights ({int((w1 != w0).sum())} of {w0.size} differ)"


def _conv_out(in_shape: tuple, weight: np.ndarray, stride: tuple, padding: tuple) -> tuple:
    _, h, w = in_shape
    kh, kw = weight.shape[2:]
    return ((h + 2 * padding[0] - kh) // stride[0] + 1, (w + 2 * padding[1] - kw) // stride[1] + 1)


def lower(graph: Graph, readout_threshold: float = 1.0) -> Lowered:
    """All Speck layers of a deployed graph, in graph order, and every structural problem."""
    g = graph
    problems: list[str] = []
    inputs = g.inputs
    inp = inputs[0]
    if len(inputs) != 1:
        problems.append(f"graph has {len(inputs)} inputs; Speck takes one event stream")
    if inp.kind != "spike":
        problems.append(f"input {inp.name}: real-valued input (kind '{inp.kind}') of shape {inp.shape}; Speck "
                        f"takes events: encode the input as spikes (compile with --input-kind spike)")
    in_shape = _as_chw(inp.shape) or tuple(inp.shape)
    layers: list[SpeckLayer] = []
    for n in g.nodes:
        if n.op == "fire":
            lay = lower_population(g, n, problems, readout_threshold)
            if lay is not None:
                layers.append(lay)
    out = g.output
    src = g[out.inputs[0]]
    output_layer = None
    several = g.meta.get("outputs") or []
    if several:
        problems.append(f"node {out.name}: the model returns {len(several)} outputs "
                        f"({', '.join(p['name'] for p in several)}); Speck reads out one layer (deploy one output)")
    elif src.kind == "current":
        lay = lower_population(g, out, problems, readout_threshold)
        if lay is not None:
            layers.append(lay)
            output_layer = lay.name
    else:
        while src.op not in ("fire", "input") and len(src.inputs) == 1:
            src = g[src.inputs[0]]
        output_layer = src.name if src.op == "fire" else None
    # branches that meet at one node report it once (SPPF: three pooled branches walk back to the first pool)
    return Lowered(layers, list(dict.fromkeys(problems)), inp.name, in_shape, output_layer)


def layers_to_graph(low: Lowered, T: int, params: dict[str, dict] | None = None) -> Graph:
    """The lowered network as an snncc graph (pool -> conv -> stateful floor fire per layer, reset
    "value" to 0 for a return-to-zero layer), so the
    reference executor can run exactly what the chip is configured with. `params` overrides, per
    layer, `weight`, `bias`, `theta`, `beta` (the quantised integers)."""
    params = params or {}
    nodes = [Node(low.input_name, "input", [], {"kind": "spike", "shape": tuple(low.input_shape)})]
    for lay in low.layers:
        p = params.get(lay.name, {})
        convs = []
        for i, (src, pool) in enumerate(lay.sources):  # a merge: one conv per source, same kernel, summed
            sfx = "" if i == 0 else f".{i}"
            if pool > 1:
                nodes.append(Node(f"{lay.name}.pool{sfx}", "pool", [src], {"mode": "sum", "kernel": (pool, pool),
                                                                          "stride": (pool, pool)}))
                src = f"{lay.name}.pool{sfx}"
            nodes.append(Node(f"{lay.name}.conv{sfx}", "conv", [src], {"stride": lay.stride, "padding": lay.padding,
                                                                      "dilation": (1, 1)},
                              {"weight": p.get("weight", lay.weight)}))
            convs.append(f"{lay.name}.conv{sfx}")
        if len(convs) > 1:
            nodes.append(Node(f"{lay.name}.merge", "add", convs))
            convs = [f"{lay.name}.merge"]
        bias = p.get("bias", lay.bias)
        fparams = {} if bias is None else {"bias": np.asarray(bias, dtype=np.float64).reshape(-1, 1, 1)}
        nodes.append(Node(lay.name, "fire", [convs[0]],
                          {"D": lay.D if lay.D is not None else READOUT_D, "theta": float(p.get("theta", lay.theta)),
                           "beta": float(p.get("beta", lay.beta)), "norm": 1.0, "rounding": "floor",
                           "stateful": True, **({"reset": "value"} if lay.reset == "zero" else {})}, fparams))
    nodes.append(Node("output", "output", [low.output_layer or low.layers[-1].name]))
    return Graph(nodes, T=T).infer()
