"""netx HDF5 export of a deployed graph (docs/design.md §5): a file that lava-dl 0.6.0's own reader
(`lava.lib.dl.netx.hdf5.Network`) builds and Lava runs with the same spike counts as snncc's
fixed-point simulation (`fixed.simulate_fixed` of the 'netx' quantisation), or a refusal naming
the gap. Written with h5py; `validate` re-reads a file against the schema netx reads.

What netx offers (read in lava-dl 0.6.0's netx/hdf5.py and lava-nc 0.10.0's LIF models): layers
'input', 'conv', 'flatten', 'dense' in sequence, one input each ('pool', 'average', 'concat',
'convT', 'unpool' raise NotImplementedError; no add or merge layer); neurons 'CUBA' (Lava LIF:
u = u * (1 - du/4096) + (a << 6), v = v * (1 - dv/4096) + u + (bias << 6), bias_exp fixed at 6,
one binary spike when v > vThMant << 6, then v = 0), SDNN (sigma-delta, ReLU: no floor/cap) and
resonate-and-fire; graded spikes only from sigma-delta neurons and the network input
(`input_message_bits`); synaptic delays only on dense layers (`delay`; conv has none), so a carried
shortcut is delayed by its pass-through layers, not by delays; an optional pipelined reset of every
neuron (`Network(..., reset_interval=R)`: LIFReset, u = v = 0 at the start of the step, layer i's
phase offset by i). snncc's window neuron (n = clip(floor(v / theta), 0, D) spikes per window)
maps onto this exactly as follows.

Layout (one netx step = one snncc window, i.e. one training timestep; load with
`Network(path, reset_interval=1, input_message_bits=snncc/inputMessageBits)`):
- Every step starts from u = v = 0 (reset_interval=1), so a layer's membrane holds one window:
  v = (a << 6) + (bias << 6) with a the window's summed synaptic input; a bias added "every step"
  is then added once per window, which is snncc's constant current plus beta.
- Threshold copies. A population of D-spike neurons becomes D binary CUBA neurons per neuron,
  copy k with bias (bias + beta - k * vth) and vThMant = vth - 1: copy k fires iff
  v >= (k + 1) (vth << 6) (membranes are whole multiples of 64, so `>` one unit lower is `>=`),
  and the copies' spikes add up to clip(floor(v / (vth << 6)), 0, D), the deployed count. Copies
  are channel-major (neuron (c, pos) -> channels c * D + k); the next layer repeats its weights
  over the D copies of each input, so it receives exactly W @ n. Reset-to-zero and one spike per
  step no longer matter: each copy fires at most once per window.
- Pipelining: layer i answers window k at step k + i + 1 (each block adds one step); steps that
  carry no window of a layer see only its bias (they compute the answer to an all-zero window).
- Input. A real-valued input's encoding layer stays on the host, as in every snncc deployment:
  the netx input is that population's integer activation (`fixed.host_activation`, 24-bit graded,
  `snncc/input` names it), entering through identity synapses (a 1x1 depthwise conv with weight 1,
  or an identity dense). A spike input enters as graded counts (8 bits).
- Shortcuts (residual fan-in: a consumer reading populations other than the previous layer) are
  carried as pass-through channels: every layer between a source and its last consumer gets extra
  output channels, one binary CUBA neuron per element of each of the source's D copies, whose one
  identity synapse (weight w, bias vth - w: it fires iff the copy it reads fired) repeats the copy
  one step later, exactly as the main path advances one step per layer, so a source's window
  reaches its consumer in the same step as the main path's. A consumer's layer then reads its main
  input and the carried channels side by side: its kernel (or dense matrix) is recovered from the
  consumer's quantised projection matrices over whatever channels hold each source (`Held`), and
  checked to reproduce them exactly. Through a conv layer a carried channel is a 1-hot kernel at the
  tap reading input row y * stride + q, one channel per stride phase q (a stride-2 layer carries an
  8x8 map as four 4x4 phase channels; the consumer's kernel reads the phases), so no position is
  lost; a layer whose spatial map the carry cannot follow that way is refused naming it. Through a
  dense layer a carried element is one identity row. Layers with carried channels are written with
  groups 1 (the carry's zero taps cost kernel entries, not synapses; weights are stored gzip
  compressed). The cost (carried neurons, one synapse each) is in `snncc/notes`.
- `layer/<i>`: `type` (1,) 'S10' ASCII; `shape` (C, H, W) (netx reverses it to (x, y, f)) or (N,);
  conv `weight` (C_out, C_in/groups, kh, kw) PyTorch layout (netx flips and transposes it, Lava's
  Conv flips it back: a correlation), `stride`/`padding`/`dilation` (y, x), `groups`; dense
  `weight` (N_out, N_in) over the C-order flattened input; `bias` per channel (conv) or neuron;
  `neuron/{type CUBA, iDecay 4096, vDecay 0, vThMant, refDelay, gradedSpike}`. The read-out is a
  dense layer without `neuron` (netx's non-leaky integrator: with the reset its membrane is the
  window's a << 6, dequantised with `snncc/outputScale` and `snncc/outputBias`).
Integers come from `fixed.quantize(net, policy="netx")`: weight mantissas at exponent 0 (netx's
`optimize_weight_bits` re-derives an exponent, exactly), bias_exp 6, beta a whole bias unit, and a
scale that keeps bias + beta - (D - 1) vth inside the 13-bit mantissa.

Refused with one TargetError naming every such node (what netx cannot express): stateful neurons
(the membrane must carry v - n * theta across timesteps; netx resets to zero on a spike and the
per-step reset clears it), a shortcut from the network input (it enters the first layer only),
spike products (attention), pooling feeding a conv layer (netx has no pool layer; pooling that ends
in a dense layer folds into its matrix), max pooling of spikes, relays (the export re-lowers them
to fan-in from the traced graph), a conv layer whose input is not one convolution of the held
channels (upsampling, say). Concat is no IR op (netx's concat layer raises NotImplementedError).
Files are deterministic bytes: every dataset is written with track_times=False.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Callable

import h5py
import numpy as np

from snncc.errors import TargetError, name_list
from snncc.ir import registry
from snncc.ir.graph import Graph
from snncc_lava.fixed import W_MIN, QNetwork, quantize
from snncc_lava.network import Network, build, tree_nodes

FORMAT = "snncc-netx/1"
TYPES = ("input", "conv", "flatten", "dense")
NEURON = {"type": "CUBA", "iDecay": 4096, "vDecay": 0, "refDelay": 1, "gradedSpike": 0}
HOST_MESSAGE_BITS = 24  # graded input: the host's 24-bit encoding activations
SPIKE_MESSAGE_BITS = 8  # graded input: spike counts per timestep
BIAS_MIN, BIAS_MAX = -4096, 4095  # Lava LIF bias_mant: 13-bit signed
INPUT_ONCE = ("netx's input enters the first layer only (shortcuts are carried from neuron layers; "
              "the network input is not a population of threshold copies)")
MAX_GROUPS = 127  # Lava's Conv process model holds `groups` as np.int8 (lava/proc/conv/models.py)


@dataclass
class Layer:
    type: str
    shape: tuple
    arrays: dict = field(default_factory=dict)  # weight, bias, stride, ... (numpy)
    neuron: dict | None = None
    node: str = ""  # the IR fire (or output) this layer computes
    carried: int = 0  # neurons of this layer that carry a shortcut (copies of an earlier population)


@dataclass
class Held:
    """What a netx tensor (a layer's output) holds, per element: the population it copies (`pop`,
    an index into the export's population names), that population's neuron (`idx`, flat) and the
    threshold copy (`copy`). Arrays have the tensor's netx shape (C, H, W) or (N,)."""
    pop: np.ndarray
    idx: np.ndarray
    copy: np.ndarray

    @property
    def shape(self) -> tuple:
        return self.pop.shape

    def flat(self) -> "Held":
        return Held(self.pop.reshape(-1), self.idx.reshape(-1), self.copy.reshape(-1))


def _main(code: int, shape: tuple, copies: int) -> Held:
    """A population's own neurons as `copies` threshold copies, channel-major: neuron (c, pos) is
    channels c * copies + k of a conv tensor, neuron n elements n * copies + k of a flat one."""
    n = np.arange(math.prod(shape)).reshape(shape[0], 1, *shape[1:])
    idx = np.broadcast_to(n, (shape[0], copies) + tuple(shape[1:])).reshape((shape[0] * copies,) + tuple(shape[1:]))
    cp = np.broadcast_to(np.arange(copies).reshape((1, copies) + (1,) * (len(shape) - 1)), (shape[0], copies) +
                         tuple(shape[1:])).reshape(idx.shape)
    return Held(np.full(idx.shape, code), idx.copy(), cp.copy())


# ---- the op registry's "netx" column: what each op becomes in a netx layer list -------------------
registry.column("netx", "target", "lava-dl netx HDF5 export (loihi netx=true, snncc export-netx): each op's part "
                "in a netx layer, or why netx cannot say it", "snncc_lava.netx")


@dataclass(frozen=True)
class NetxOp:
    """An op in the netx export: `population` (a neuron population: threshold copies of a layer),
    `dense` (a dense layer: pooling before it folds into its weights), `pooling` (sums over
    positions: only a dense layer after it can take it), `geometry(node)` (a conv's (stride,
    padding, kernel, dilation) candidate for the consumer's conv layer, None when it is none),
    `groups(node)` (the groups a conv layer may keep), `check(g, node)` (its problems, one line each)."""

    population: bool = False
    dense: bool = False
    pooling: bool = False
    geometry: Callable | None = None
    groups: Callable | None = None
    check: Callable | None = None


_REFUSED = NetxOp()  # a refused op plays no part; `problems` names it with its reason


def netx_op(n) -> NetxOp:
    c = registry.cell(n.op, "netx")
    return _REFUSED if c is not None and c.refused else registry.lookup(n.op, "netx", where=f"node {n.name}")


def _refused(n) -> bool:
    c = registry.cell(n.op, "netx")
    return c is None or c.refused


def _check_fire(g: Graph, n) -> list[str]:
    if n.attrs["stateful"]:
        return [f"node {n.name}: stateful neuron (membrane carried across timesteps) -- netx's CUBA "
                f"resets to zero on a spike, snncc keeps v - n * theta"]
    return []


def _conv_geometry(t):
    if t.params["weight"].ndim != 4:
        return None
    a = t.attrs
    return tuple(a["stride"]), tuple(a["padding"]), tuple(t.params["weight"].shape[2:]), tuple(a["dilation"])


_HERE = "snncc_lava.netx"
registry.implement("input", NetxOp(), target="netx", where=f"{_HERE} (the 'input' layer)")
registry.implement("fire", NetxOp(population=True, check=_check_fire), target="netx",
                   where=f"{_HERE} (a layer of D binary CUBA threshold copies per neuron)")
registry.implement("output", NetxOp(), target="netx", where=f"{_HERE} (the last layer, read as the output)")
registry.implement("conv", NetxOp(geometry=_conv_geometry, groups=lambda t: int(t.attrs.get("groups", 1))),
                   target="netx", where=f"{_HERE}._conv_layer (a 'conv' layer)")
registry.implement("linear", NetxOp(dense=True), target="netx", where=f"{_HERE} (a 'dense' layer)")
registry.implement("pool", NetxOp(pooling=True), target="netx",
                   where=f"{_HERE} (folded into the dense layer after it; refused before a conv layer)")
registry.implement("mean", NetxOp(pooling=True), target="netx",
                   where=f"{_HERE} (folded into the dense layer after it; refused before a conv layer)")
for _op in ("add", "scale", "reshape", "permute", "upsample", "bilinear", "offset"):
    registry.implement(_op, NetxOp(), target="netx", where=f"{_HERE} (composed into the consumer layer's weights)")
registry.refuse("spike_product", target="netx", why="spike_product (attention) -- netx has no multiplicative layer")
registry.refuse("relay", target="netx", why="relay (residual-stream accumulator, graded) -- netx has no relay layer")
registry.refuse("max_pool", target="netx", why="max pooling of spikes -- netx has no max-pool layer")
registry.refuse("batchnorm", "pad", target="netx", why=registry.NOT_DEPLOYED)


def problems(g: Graph) -> list[str]:
    """Every node netx cannot express, one line each (empty: exportable)."""
    out = []
    order = {n.name: i for i, n in enumerate(g.nodes)}
    in_name = g.inputs[0].name if len(g.inputs) == 1 else None
    if in_name is None:
        out.append(f"graph has {len(g.inputs)} inputs; netx takes one")
    for n in g.nodes:  # each op's check, or the reason its netx cell refuses it
        if _refused(n):
            c = registry.cell(n.op, "netx")
            out.append(f"node {n.name}: " + (c.why if c else f"{n.op} has no netx cell (snncc_lava.netx)"))
        elif netx_op(n).check is not None:
            out += netx_op(n).check(g, n)
    fires = g.neurons()
    out += [f"node {n.name}: D = {n.attrs['D']} beside {fires[0].name}'s D = {fires[0].attrs['D']} -- the export "
            f"writes D threshold copies per neuron, one D per file" for n in fires if n.attrs["D"] != fires[0].attrs["D"]]
    consumers = [n for n in g.nodes if netx_op(n).population] + [g.output]
    for i, c in enumerate(consumers):
        tree, leaves = tree_nodes(g, c)
        if any(_refused(t) for t in tree):
            pass  # named by its refused node (a spike product)
        elif in_name in leaves and (i > 0 or len(leaves) > 1):
            others = [s for s in leaves if s != in_name]
            out.append(f"node {c.name}: reads the network input ({in_name})" + (f" beside {', '.join(others)}" if others
                       else f" after {consumers[0].name}") + f" -- {INPUT_ONCE}")
        for t in tree:  # a dense layer (1-D consumer) takes any pooling into its matrix; a conv layer cannot
            if netx_op(t).pooling and len(c.shape) > 1 and not _folds_into_linear(g, t, {x.name for x in tree}):
                out.append(f"node {t.name}: {t.op} pooling feeding {c.name} -- netx has no pooling layer "
                           f"(only pooling that ends in a dense layer folds into its weights)")
    return sorted(set(out), key=lambda s: (order.get(s.split(":")[0].removeprefix("node "), -1), s))


def _folds_into_linear(g: Graph, node, tree: set[str]) -> bool:
    """True when every path from `node` to the tree's root passes through a linear op."""
    users = [u for u in g.users()[node.name] if u.name in tree]
    if not users:
        return False
    return all(netx_op(u).dense or _folds_into_linear(g, u, tree) for u in users)


def _carry_weight(c, vth: int) -> int:
    """The identity synapse of a carry neuron: with bias vth - w, it fires (one spike) exactly when
    the copy it carries fired (w + vth - w >= vth; vth - w < vth)."""
    w = max(2, vth - BIAS_MAX + (vth - BIAS_MAX) % 2)
    if w > 254:
        raise TargetError(f"node {c.name}: threshold mantissa {vth} leaves no 8-bit identity weight for the carried "
                          f"shortcut channels (bias vth - w must fit 13 bits)", where="netx export")
    return w


SHOWN = 3  # reasons a refusal spells out; the other nodes are named only


def layers(g: Graph, net: Network | None = None, qnet: QNetwork | None = None) -> tuple[list[Layer], dict]:
    """The netx layer list of the deployed graph `g` and the snncc metadata; TargetError when netx
    cannot express it (see the module docstring for the layout)."""
    bad = problems(g)
    if bad:
        rest = [b.split(":")[0].removeprefix("node ") for b in bad[SHOWN:]]  # named, their reasons left out
        more = f"; and {len(rest)} more: {name_list(rest)}" if rest else ""
        raise TargetError(f"netx cannot express {len(bad)} node(s): " + "; ".join(bad[:SHOWN]) + more,
                          where="netx export",
                          hint="netx reads input/conv/flatten/dense chains of non-stateful neurons; "
                               "emit without netx=true")
    net = net or build(g)
    qnet = qnet or quantize(net, "netx")
    if qnet.policy != "netx":
        raise TargetError("netx export needs the quantisation policy 'netx' (weight exponent 0, bias_exp 6)",
                          where="netx export")
    D = net.D
    in_node = g.inputs[0]
    fires = [n for n in g.nodes if netx_op(n).population]
    host = [c for c in fires if qnet.populations[c.name].host_input]
    if not fires or net.output_host:
        raise TargetError("the output reads the host input directly; netx has no neuron to run", where="netx export")
    in_shape = tuple(host[0].shape) if host else tuple(in_node.shape)
    meta = {"format": FORMAT, "D": D, "T": net.T, "copies": D, "resetInterval": 1,
            "inputMessageBits": HOST_MESSAGE_BITS if host else SPIKE_MESSAGE_BITS,
            "input": (f"host activation of {host[0].name} (snncc_lava.fixed.host_activation)" if host
                      else f"spike counts of {in_node.name} per timestep"),
            "outputScale": qnet.output_scale, "outputBias": np.asarray(net.output_const, np.float64)}
    out = [Layer("input", in_shape)]
    projs = {(p.source, p.target): p for p in qnet.projections}
    consumers = fires + [g.output]
    names = [in_node.name] + [c.name for c in fires]  # population codes: 0 the input, i + 1 consumer i
    code = {s: i for i, s in enumerate(names)}
    reads = {c.name: tree_nodes(g, c)[1] for c in consumers}
    last = {}  # population -> the last consumer (position) reading it
    for m, c in enumerate(consumers):
        for s in reads[c.name]:
            last[s] = m
    held = _main(0, in_shape, 1)
    for m, c in enumerate(consumers):
        fire = netx_op(c).population
        q = qnet.populations.get(c.name)
        copies = D if fire else 1
        carry = [i + 1 for i in range(m) if last.get(names[i + 1], -1) > m]  # earlier populations read after m
        w_carry = _carry_weight(c, int(q.vth)) if carry else 0
        if fire and q.host_input:  # identity synapses: the host sends the activation itself
            layer, held = _host_layer(c, code[c.name], D)
        else:
            target = c.name if fire else "output"
            mats = {code[s]: projs[(s, target)].weight for s in reads[c.name]}
            if len(c.shape) == 3 and len(held.shape) == 3:
                layer, held = _conv_layer(g, c, names, held, mats, carry, copies, w_carry)
            else:
                if len(held.shape) > 1:
                    out.append(Layer("flatten", (math.prod(held.shape), 1, 1)))
                    held = held.flat()
                layer, held = _dense_layer(c, code.get(c.name, len(names)), held, mats, carry, copies, w_carry)
        if fire:
            main = _copy_biases(c, q, D, per_channel=layer.type == "conv")
            extra = layer.arrays["weight"].shape[0] - main.size  # carry neurons: bias vth - w
            layer.arrays["bias"] = np.concatenate([main, np.full(extra, int(q.vth) - w_carry, np.int64)])
            layer.neuron = {**NEURON, "vThMant": int(q.vth) - 1}
        layer.node = c.name
        out.append(layer)
    neurons = sum(math.prod(ly.shape) for ly in out[1:] if ly.neuron is not None)
    carried = sum(ly.carried for ly in out)
    meta["carriedNeurons"] = carried
    stored = sum(ly.arrays["weight"].size for ly in out if "weight" in ly.arrays)
    nonzero = sum(int(np.count_nonzero(ly.arrays["weight"])) for ly in out if "weight" in ly.arrays)
    meta["notes"] = (f"shortcuts carried as pass-through channels: {carried} extra binary neurons "
                     f"({carried / max(neurons - carried, 1):.1%} more than the network's {neurons - carried}) and "
                     f"{carried} extra synapses (one identity tap each); the layers store {stored} weights, "
                     f"{nonzero} nonzero (a layer with carried channels is one groups-1 kernel)" if carried
                     else "a chain: no shortcut carried")
    return out, meta


def _copy_biases(c, q, D: int, per_channel: bool) -> np.ndarray:
    """netx bias mantissas (bias_exp 6) of the D copies of population `c`: the bias with beta
    folded in, minus k thresholds for copy k, so copy k fires iff v >= (k + 1) theta."""
    if q.v_init % 64:
        raise TargetError(f"node {c.name}: initial membrane {q.v_init} is not a whole bias unit (64)",
                          where="netx export", hint="quantise with policy 'netx'")
    bias = q.bias_mant.astype(np.int64) + q.v_init // 64
    if per_channel:
        per_ch = bias.reshape(c.shape[0], -1)
        if not (per_ch == per_ch[:, :1]).all():
            raise TargetError(f"node {c.name}: bias varies inside a channel; netx conv bias is per channel",
                              where="netx export")
        bias = per_ch[:, 0]
    out = (bias[:, None] - np.arange(D)[None, :] * int(q.vth)).reshape(-1)
    if out.size and (out.min() < BIAS_MIN or out.max() > BIAS_MAX):
        raise TargetError(f"node {c.name}: threshold copies need bias mantissas {out.min()}..{out.max()}, "
                          f"outside netx's 13 bits", where="netx export")
    return out


def _host_layer(c, code: int, D: int) -> tuple[Layer, Held]:
    n_ch = c.shape[0]
    if len(c.shape) == 3:
        arrays = {"weight": np.ones((n_ch * D, 1, 1, 1), np.int64), "stride": np.array((1, 1)),
                  "padding": np.array((0, 0)), "dilation": np.array((1, 1)), "groups": np.int64(n_ch)}
        layer = Layer("conv", (n_ch * D,) + tuple(c.shape[1:]), _conv_arrays(arrays, n_ch))
    else:
        w = np.repeat(np.eye(math.prod(c.shape), dtype=np.int64), D, axis=0)
        layer = Layer("dense", (w.shape[0],), {"weight": w, "inFeatures": np.int64(w.shape[1]),
                                               "outFeatures": np.int64(w.shape[0])})
    return layer, _main(code, tuple(c.shape), D)


def _conv_arrays(a: dict, in_channels: int) -> dict:
    w = a["weight"]
    return {**{k: np.asarray(v, np.int64) for k, v in a.items() if k != "weight"}, "weight": w,
            "inChannels": np.int64(in_channels), "outChannels": np.int64(w.shape[0]),
            "kernelSize": np.array(w.shape[2:], np.int64)}


def _dense_layer(c, code: int, held: Held, mats: dict, carry: list[int], copies: int, w_carry: int):
    """A dense layer: the consumer's matrices read through the held columns, rows repeated over the
    copies, then one identity row per carried element."""
    n = math.prod(c.shape)
    w = np.zeros((n, held.pop.size), np.int64)
    for p, m in mats.items():
        cols = np.nonzero(held.pop == p)[0]
        w[:, cols] = m.tocsc()[:, held.idx[cols]].toarray()
    w = np.repeat(w, copies, axis=0)
    kept = np.nonzero(np.isin(held.pop, carry))[0]
    eye = np.zeros((kept.size, held.pop.size), np.int64)
    eye[np.arange(kept.size), kept] = w_carry
    w = np.concatenate([w, eye])
    main = _main(code, (n,), copies)
    new = Held(np.concatenate([main.pop, held.pop[kept]]), np.concatenate([main.idx, held.idx[kept]]),
               np.concatenate([main.copy, held.copy[kept]]))
    layer = Layer("dense", (w.shape[0],), {"weight": w, "inFeatures": np.int64(w.shape[1]),
                                           "outFeatures": np.int64(w.shape[0])}, carried=int(kept.size))
    return layer, new


def _geometries(g: Graph, c, held_hw: tuple, coo) -> list[tuple]:
    """Candidate (stride, padding, kernel, dilation) pairs of the consumer's conv layer: the IR convs'
    own (largest kernel first), then the smallest box around the matrices' taps."""
    tree, _ = tree_nodes(g, c)
    cands = []
    for t in tree:
        geometry = netx_op(t).geometry
        if geometry is not None and geometry(t) is not None:
            cands.append(geometry(t))
    cands.sort(key=lambda k: -k[2][0] * k[2][1])
    (Hi, Wi), (Ho, Wo) = held_hw, tuple(c.shape[1:])
    _, y, x, _, yy, xx, _ = coo
    box = []
    for pos, src, hi_, ho in ((y, yy, Hi, Ho), (x, xx, Wi, Wo)):
        found = None
        for s in sorted({1, max(hi_ // ho, 1)}):
            off = src - pos * s
            lo, hi = (int(off.min()), int(off.max())) if off.size else (0, 0)
            for p in range(max(0, -lo), max(0, -lo) + 3):
                for k in range(hi + p + 1, hi + p + 2 * s + 3):
                    if (hi_ + 2 * p - k) // s + 1 == ho and found is None:
                        found = (s, p, k)
        box.append(found)
    if all(box):
        cands.append(tuple(zip(*box)) + ((1, 1),))
    return cands


def _kernel(coo, geom, C: int, Cin: int, hw_in: tuple, hw_out: tuple) -> np.ndarray | None:
    """The (C, Cin, ky, kx) kernel whose convolution with `geom` is exactly the matrices given in
    netx coordinates (`coo`), or None: every entry must be one tap, a tap one value wherever it
    applies, and every in-range application of a nonzero tap an entry of the matrices."""
    o, y, x, ci, yy, xx, v = coo
    (sy, sx), (py, px), (ky, kx), (dy, dx) = geom
    (Hi, Wi), (Ho, Wo) = hw_in, hw_out
    ty, tx = yy - y * sy + py, xx - x * sx + px
    if (ty % dy).any() or (tx % dx).any():
        return None
    iy, ix = ty // dy, tx // dx
    if iy.size and (iy.min() < 0 or iy.max() >= ky or ix.min() < 0 or ix.max() >= kx):
        return None
    key = ((o * Cin + ci) * ky + iy) * kx + ix
    order = np.argsort(key, kind="stable")
    ks, vs = key[order], v[order]
    first = np.r_[True, ks[1:] != ks[:-1]] if ks.size else np.zeros(0, bool)
    if (vs != vs[first][np.cumsum(first) - 1]).any():
        return None
    uk, uv = ks[first], vs[first]
    cy = np.array([sum(0 <= r * sy - py + i * dy < Hi for r in range(Ho)) for i in range(ky)])
    cx = np.array([sum(0 <= r * sx - px + j * dx < Wi for r in range(Wo)) for j in range(kx)])
    if int((cy[(uk // kx) % ky] * cx[uk % kx]).sum()) != v.size:
        return None
    k = np.zeros((C, Cin, ky, kx), np.int64)
    k.reshape(-1)[uk] = uv
    return k


def _phase_taps(s: int, p: int, k: int, d: int) -> bool:
    """Whether a conv with this (stride, padding, kernel, dilation) has, for every stride phase q, the
    tap reading input row y * s + q (so carried channels keep every position, one phase each)."""
    return all((q + p) % d == 0 and (q + p) // d < k for q in range(s))


def _conv_layer(g: Graph, c, names: list[str], held: Held, mats: dict, carry: list[int], copies: int, w_carry: int):
    """A conv layer: the kernel recovered from the consumer's matrices over the held channels (main
    and carried shortcuts side by side), repeated over the copies; then, per carried channel and
    stride phase, a 1-hot channel that follows the layer's spatial map exactly."""
    Cin, Hi, Wi = held.shape
    C, Ho, Wo = c.shape
    ch_pop, ch_copy = held.pop[:, 0, 0], held.copy[:, 0, 0]
    parts = []
    for p, m in mats.items():
        m = m.tocoo()
        sel = (held.pop == p) & (held.copy == 0)
        ci, yy, xx = np.nonzero(sel)
        inv = np.full((3, m.shape[1]), -1, np.int64)
        inv[:, held.idx[sel]] = (ci, yy, xx)
        if (inv[0, m.col] < 0).any():
            raise TargetError(f"node {c.name}: {names[p]} is not held by the previous netx layer", where="netx export")
        o, r = np.divmod(m.row, Ho * Wo)
        y, x = np.divmod(r, Wo)
        keep = m.data != 0
        parts.append((o[keep], y[keep], x[keep], *inv[:, m.col[keep]], m.data[keep].astype(np.int64)))
    coo = tuple(np.concatenate(a) for a in zip(*parts))
    carried = np.nonzero(np.isin(ch_pop, carry))[0]
    fail = None
    for geom in _geometries(g, c, (Hi, Wi), coo):
        (sy, sx), (py, px), (ky, kx), (dy, dx) = geom
        if ((Hi + 2 * py - dy * (ky - 1) - 1) // sy + 1, (Wi + 2 * px - dx * (kx - 1) - 1) // sx + 1) != (Ho, Wo):
            continue
        if carried.size and ((Ho * sy, Wo * sx) != (Hi, Wi) or not _phase_taps(sy, py, ky, dy)
                             or not _phase_taps(sx, px, kx, dx)):
            fail = fail or f"{Hi}x{Wi} -> {Ho}x{Wo} with stride {sy}x{sx}, padding {py}x{px}, kernel {ky}x{kx}"
            continue
        k = _kernel(coo, geom, C, Cin, (Hi, Wi), (Ho, Wo))
        if k is not None:
            break
    else:
        src = ", ".join(names[p] for p in sorted(mats))
        if fail:
            kept = ", ".join(names[p] for p in sorted({int(x) for x in ch_pop[carried]}))
            raise TargetError(f"node {c.name}: the shortcut from {kept} cannot be carried through this layer "
                              f"({fail}: not stride x output size, or no tap per stride phase) -- netx would lose "
                              f"positions", where="netx export")
        raise TargetError(f"node {c.name}: its input from {src} is not one convolution over the held channels",
                          where="netx export")
    twins = {}
    for ch in range(Cin):
        twins.setdefault((int(ch_pop[ch]), held.idx[ch].tobytes()), {})[int(ch_copy[ch])] = ch
    src, dst = [], []  # every input channel takes the kernel columns of its copy-0 twin
    for group in twins.values():
        if 0 in group:
            src += [group[0]] * len(group)
            dst += list(group.values())
    phases = [(ch, qy, qx) for ch in carried for qy in range(sy) for qx in range(sx)]
    n_main = C * copies
    w = np.zeros((n_main + len(phases), Cin, ky, kx), np.int16)
    w[:n_main, dst] = np.repeat(k[:, src], copies, axis=0)
    if phases:
        ch, qy, qx = (np.array(a) for a in zip(*phases))
        w[n_main + np.arange(len(phases)), ch, (qy + py) // dy, (qx + px) // dx] = w_carry
    main = _main(names.index(c.name) if c.name in names else len(names), tuple(c.shape), copies)
    new = Held(*(np.concatenate([getattr(main, a)] + [getattr(held, a)[ch, qy::sy, qx::sx][None]
                                                      for ch, qy, qx in phases]) for a in ("pop", "idx", "copy")))
    groups = 1
    if not carried.size:  # a grouped conv (depthwise) stays grouped: Lava's Conv model keeps groups in int8
        gs = {netx_op(t).groups(t) for t in tree_nodes(g, c)[0] if netx_op(t).groups is not None}
        for G in sorted((d for d in range(MAX_GROUPS, 1, -1) if gs and all(x % d == 0 for x in gs)), reverse=True):
            if w.shape[0] % G or Cin % G:
                continue
            blocks = np.abs(w).reshape(G, w.shape[0] // G, G, Cin // G, -1).sum((1, 3, 4))
            if not (blocks - np.diag(np.diag(blocks))).any():
                groups = G
                w = w.reshape(G, w.shape[0] // G, G, Cin // G, ky, kx)[np.arange(G), :, np.arange(G)].reshape(
                    w.shape[0], Cin // G, ky, kx)
                break
    arrays = _conv_arrays({"weight": w, "stride": (sy, sx), "padding": (py, px), "dilation": (dy, dx),
                           "groups": groups}, Cin)
    return Layer("conv", (w.shape[0], Ho, Wo), arrays, carried=len(phases) * Ho * Wo), new


# --------------------------------------------------------------------------------------------
# writing and reading


def _put(grp: h5py.Group, key: str, value) -> None:
    grp.create_dataset(key, data=value, track_times=False)


def _put_weight(grp: h5py.Group, value: np.ndarray) -> None:
    """Weights as int16, gzip-compressed (h5py decompresses for netx): carried channels make kernels
    mostly zeros, which compress to almost nothing."""
    grp.create_dataset("weight", data=value.astype(np.int16), compression="gzip", compression_opts=1,
                       shuffle=True, track_times=False)


def _put_str(grp: h5py.Group, key: str, value: str) -> None:
    grp.create_dataset(key, (1,), "S10", [value.encode("ascii")], track_times=False)


def write(layers_: list[Layer], meta: dict) -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w", libver="earliest", track_order=False) as f:
        top = f.create_group("layer")
        for i, layer in enumerate(layers_):
            grp = top.create_group(str(i))
            _put_str(grp, "type", layer.type)
            _put(grp, "shape", np.array(layer.shape, np.int64))
            for k in sorted(layer.arrays):
                if k == "weight":
                    _put_weight(grp, layer.arrays[k])
                else:
                    _put(grp, k, layer.arrays[k])
            if layer.neuron is not None:
                ng = grp.create_group("neuron")
                for k in sorted(layer.neuron):
                    v = layer.neuron[k]
                    if isinstance(v, str):
                        _put_str(ng, k, v)
                    else:
                        _put(ng, k, np.int64(v))
        sg = f.create_group("snncc")
        for k in sorted(meta):
            v = meta[k]
            if isinstance(v, str):
                _put(sg, k, np.bytes_(v.encode("ascii")))
            else:
                _put(sg, k, v)
        sg.create_dataset("nodes", data=np.array([ly.node.encode("ascii") for ly in layers_], "S64"),
                          track_times=False)
    return buf.getvalue()


def export(g: Graph, net: Network | None = None, qnet: QNetwork | None = None) -> bytes:
    ls, meta = layers(g, net, qnet)
    return write(ls, meta)


def notes(data: bytes) -> str:
    """The file's `snncc/notes`: what carrying the shortcuts costs (or that nothing was carried)."""
    with h5py.File(io.BytesIO(data), "r") as f:
        return f["snncc/notes"][()].decode("ascii") if "snncc/notes" in f else ""


def _read_str(ds) -> str:
    v = ds[0] if len(ds.shape) > 0 else ds[()]
    return v.decode("ascii")


REQUIRED = {"input": ("shape",), "flatten": ("shape",),
            "conv": ("shape", "weight", "stride", "padding", "dilation", "groups"),
            "dense": ("shape", "weight")}
NEURON_KEYS = ("type", "iDecay", "vDecay", "vThMant")


def read(data: bytes) -> list[dict]:
    """The layer list of a netx file as plain dicts (type, shape, arrays, neuron), read the way
    netx's NetDict does (type decoded from ASCII, weights/bias as int)."""
    out = []
    with h5py.File(io.BytesIO(data), "r") as f:
        top = f["layer"]
        for i in range(len(top)):
            grp = top[str(i)]
            d = {"type": _read_str(grp["type"]), "shape": tuple(int(s) for s in grp["shape"][()])}
            for k in grp.keys():
                if k in ("type", "shape", "neuron"):
                    continue
                v = grp[k][()]
                d[k] = v.astype(int).copy() if k in ("weight", "bias") else v
            if "neuron" in grp:
                ng = grp["neuron"]
                d["neuron"] = {k: (_read_str(ng[k]) if k == "type" else ng[k][()]) for k in ng.keys()}
            out.append(d)
    return out


def validate(data: bytes) -> list[dict]:
    """Re-read a netx file and check it against the schema netx reads; returns the layers
    (`read`), raises TargetError naming the layer and field of the first violation."""
    def fail(i, what):
        raise TargetError(what, where=f"netx layer/{i}")

    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            if "layer" not in f:
                raise TargetError("no 'layer' group", where="netx file")
            keys = sorted(f["layer"].keys(), key=lambda k: int(k) if k.isdigit() else -1)
            if keys != [str(i) for i in range(len(keys))]:
                raise TargetError(f"layer keys {keys} are not 0..n-1", where="netx file")
            for i in keys:
                grp = f["layer"][i]
                if "type" not in grp or grp["type"].dtype.kind != "S":
                    fail(i, "'type' must be an ASCII string dataset")
    except OSError as e:
        raise TargetError(f"not an HDF5 file: {e}", where="netx file") from None
    ls = read(data)
    prev = None
    for i, d in enumerate(ls):
        t = d["type"]
        if t not in TYPES:
            fail(i, f"type {t!r} is not one netx reads ({', '.join(TYPES)})")
        if (i == 0) != (t == "input"):
            fail(i, "an 'input' layer must come first, and only first")
        for k in REQUIRED[t]:
            if k != "shape" and k not in d:
                fail(i, f"{t} layer lacks '{k}'")
        shape = d["shape"]
        if t == "conv":
            w = d["weight"]
            if w.ndim != 4 or len(shape) != 3 or w.shape[0] != shape[0]:
                fail(i, f"conv weight {w.shape} does not match shape {shape}")
            for k in ("stride", "padding", "dilation"):
                if np.shape(d[k]) not in ((2,), ()):
                    fail(i, f"conv {k} must be 2 integers (y, x)")
            if prev is None or len(prev) != 3 or prev[0] != w.shape[1] * int(d["groups"]):
                fail(i, f"conv input channels {w.shape[1]} x groups {int(d['groups'])} do not match the previous shape {prev}")
        if t == "dense":
            w = d["weight"]
            if w.ndim != 2 or w.shape[0] != math.prod(shape) or w.shape[1] != math.prod(prev):
                fail(i, f"dense weight {w.shape} does not map {prev} to {shape}")
            if len(prev) > 1 and ls[i - 1]["type"] != "flatten":
                fail(i, "a dense layer after a multi-dimensional layer needs a 'flatten' layer before it")
        if t == "flatten":
            if math.prod(shape) != math.prod(prev):
                fail(i, f"flatten shape {shape} does not hold the previous shape {prev}")
            shape = prev  # flatten passes the same neurons on
        if t in ("conv", "dense"):
            w = d["weight"]
            if w.min() < W_MIN or w.max() > 255:
                fail(i, f"weights outside 8 bits ({w.min()}..{w.max()})")
            if "bias" in d and (np.shape(d["bias"]) not in ((shape[0],),) or np.abs(d["bias"]).max() > 4096):
                fail(i, f"bias of shape {np.shape(d['bias'])} must be ({shape[0]},) 13-bit integers")
            if "neuron" in d:
                nr = d["neuron"]
                for k in NEURON_KEYS:
                    if k not in nr:
                        fail(i, f"neuron lacks '{k}'")
                if nr["type"] not in ("CUBA", "LOIHI"):
                    fail(i, f"neuron type {nr['type']!r} is not CUBA/LOIHI")
                if not 0 <= int(nr["vThMant"]) < 2**17:
                    fail(i, f"vThMant {nr['vThMant']} is not a 17-bit unsigned integer")
        prev = shape if t != "flatten" else (math.prod(shape),)
    return ls
