"""netx HDF5 export of a deployed graph (docs/design.md §5): a file that lava-dl 0.6.0's own reader
(`lava.lib.dl.netx.hdf5.Network`) builds and Lava runs with the same spike counts as snncc's
fixed-point simulation (`fixed.simulate_fixed` of the 'netx' quantisation), or a refusal naming
the gap. Written with h5py; `validate` re-reads a file against the schema netx reads.

What netx offers (read in lava-dl 0.6.0's netx/hdf5.py and lava-nc 0.10.0's LIF models): layers
'input', 'conv', 'flatten', 'dense' in sequence ('pool', 'average', 'concat', 'convT', 'unpool'
raise NotImplementedError); neurons 'CUBA' (Lava LIF: u = u * (1 - du/4096) + (a << 6),
v = v * (1 - dv/4096) + u + (bias << 6), one binary spike when v > vThMant << 6, then v = 0), SDNN
(sigma-delta, ReLU: no floor/cap) and resonate-and-fire; graded spikes only from sigma-delta
neurons and the network input (`input_message_bits`); an optional pipelined reset of every
neuron (`Network(..., reset_interval=R)`: u = v = 0 at the start of the step). snncc's window
neuron (n = clip(floor(v / theta), 0, D) spikes per window) maps onto this exactly as follows.

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
per-step reset clears it), fan-in from more than one source (residual / membrane shortcuts: netx
has no add or merge layer), a source that is not the previous layer, spike products (attention),
pooling that does not fold into a following dense layer (netx has no pool layer), relays.
Files are deterministic bytes: every dataset is written with track_times=False.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import h5py
import numpy as np

from snncc.errors import TargetError
from snncc.ir.graph import Graph
from snncc_lava.fixed import W_MIN, QNetwork, quantize
from snncc_lava.network import Network, TreeEvaluator, build, pool_nodes, tree_nodes

FORMAT = "snncc-netx/1"
TYPES = ("input", "conv", "flatten", "dense")
NEURON = {"type": "CUBA", "iDecay": 4096, "vDecay": 0, "refDelay": 1, "gradedSpike": 0}
HOST_MESSAGE_BITS = 24  # graded input: the host's 24-bit encoding activations
SPIKE_MESSAGE_BITS = 8  # graded input: spike counts per timestep
BIAS_MIN, BIAS_MAX = -4096, 4095  # Lava LIF bias_mant: 13-bit signed
POOL_OPS = ("pool", "mean")
CHAIN = ("netx layers are a chain, one input each (lava-dl 0.6.0's reader has no add or merge layer: "
         "'concat' and 'average' raise NotImplementedError)")


@dataclass
class Layer:
    type: str
    shape: tuple
    arrays: dict = field(default_factory=dict)  # weight, bias, stride, ... (numpy)
    neuron: dict | None = None
    node: str = ""  # the IR fire (or output) this layer computes


def problems(g: Graph) -> list[str]:
    """Every node netx cannot express, one line each (empty: exportable)."""
    out = []
    order = {n.name: i for i, n in enumerate(g.nodes)}
    in_name = g.inputs[0].name if len(g.inputs) == 1 else None
    if in_name is None:
        out.append(f"graph has {len(g.inputs)} inputs; netx takes one")
    for n in g.nodes:
        if n.op == "fire" and n.attrs["stateful"]:
            out.append(f"node {n.name}: stateful neuron (membrane carried across timesteps) -- netx's CUBA "
                       f"resets to zero on a spike, snncc keeps v - n * theta")
        if n.op == "spike_product":
            out.append(f"node {n.name}: spike_product (attention) -- netx has no multiplicative layer")
        elif n.op == "relay":
            out.append(f"node {n.name}: relay (residual-stream accumulator, graded) -- netx has no relay layer")
    out += [f"node {n.name}: max pooling of spikes -- netx has no max-pool layer" for n in pool_nodes(g)]
    prev = in_name
    consumers = [n for n in g.nodes if n.op == "fire"] + [g.output]
    for c in consumers:
        tree, leaves = tree_nodes(g, c)
        if any(t.op == "spike_product" for t in tree):
            pass  # named by its spike_product node
        elif len(leaves) > 1:
            out.append(f"node {c.name}: fan-in from {', '.join(leaves)} (residual / shortcut) -- {CHAIN}")
        elif leaves and leaves[0] != prev:
            out.append(f"node {c.name}: reads {leaves[0]}, not the previous layer {prev} -- netx layers are sequential")
        for t in tree:
            if t.op in POOL_OPS and not _folds_into_linear(g, t, {x.name for x in tree}):
                out.append(f"node {t.name}: {t.op} pooling feeding {c.name} -- netx has no pooling layer "
                           f"(only pooling followed by a linear layer folds into its dense weights)")
        if c.op == "fire":
            prev = c.name
    return sorted(set(out), key=lambda s: (order.get(s.split(":")[0].removeprefix("node "), -1), s))


def _folds_into_linear(g: Graph, node, tree: set[str]) -> bool:
    """True when every path from `node` to the tree's root passes through a linear op."""
    users = [u for u in g.users()[node.name] if u.name in tree]
    if not users:
        return False
    return all(u.op == "linear" or _folds_into_linear(g, u, tree) for u in users)


def _conv_node(g: Graph, consumer):
    """The single 2-D conv node forming `consumer`'s whole tree, or None."""
    tree, leaves = tree_nodes(g, consumer)
    if len(tree) == 1 and tree[0].op == "conv" and tree[0].params["weight"].ndim == 4 and tree[0].inputs == leaves:
        return tree[0]
    return None


def layers(g: Graph, net: Network | None = None, qnet: QNetwork | None = None) -> tuple[list[Layer], dict]:
    """The netx layer list of the deployed graph `g` and the snncc metadata; TargetError when netx
    cannot express it (see the module docstring for the layout)."""
    bad = problems(g)
    if bad:
        raise TargetError(f"netx cannot express {len(bad)} node(s): " + "; ".join(bad), where="netx export",
                          hint="netx reads input/conv/flatten/dense chains of non-stateful neurons; "
                               "emit without netx=true")
    net = net or build(g)
    qnet = qnet or quantize(net, "netx")
    if qnet.policy != "netx":
        raise TargetError("netx export needs the quantisation policy 'netx' (weight exponent 0, bias_exp 6)",
                          where="netx export")
    D = net.D
    in_node = g.inputs[0]
    fires = [n for n in g.nodes if n.op == "fire"]
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
    prev_shape, prev_copies = in_shape, 1
    for c in fires + [g.output]:
        fire = c.op == "fire"
        q = qnet.populations.get(c.name)
        copies = D if fire else 1
        conv = _conv_node(g, c)
        if fire and q.host_input:  # identity synapses: the host sends the activation itself
            n_ch = c.shape[0]
            if len(c.shape) == 3:
                conv_w = np.ones((n_ch * D, 1, 1, 1), np.int64)
                geom = {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": n_ch}
            else:
                conv_w, geom = None, None
                w = np.repeat(np.eye(math.prod(c.shape), dtype=np.int64), D, axis=0)
        else:
            _, leaves = tree_nodes(g, c)
            w = projs[(leaves[0], c.name if fire else "output")].weight.toarray().astype(np.int64)
            if fire and conv is not None:
                k = _conv_from_matrix(conv, w, g[leaves[0]].shape, c.shape)
                conv_w = np.repeat(np.repeat(k, prev_copies, axis=1), copies, axis=0)
                a = conv.attrs
                geom = {k_: a[k_] for k_ in ("stride", "padding", "dilation", "groups")}
            else:
                conv_w = None
                w = np.repeat(w[:, _expanded_columns(prev_shape, prev_copies)], copies, axis=0)
        if conv_w is None and len(prev_shape) > 1:
            out.append(Layer("flatten", (math.prod(prev_shape) * prev_copies, 1, 1)))
        if conv_w is not None:
            arrays = {"weight": conv_w, "stride": np.array(geom["stride"], np.int64),
                      "padding": np.array(geom["padding"], np.int64), "dilation": np.array(geom["dilation"], np.int64),
                      "groups": np.int64(geom["groups"]), "inChannels": np.int64(prev_shape[0] * prev_copies),
                      "outChannels": np.int64(conv_w.shape[0]), "kernelSize": np.array(conv_w.shape[2:], np.int64)}
            shape = (c.shape[0] * copies,) + tuple(c.shape[1:])
            layer = Layer("conv", shape, arrays)
        else:
            arrays = {"weight": w, "inFeatures": np.int64(w.shape[1]), "outFeatures": np.int64(w.shape[0])}
            layer = Layer("dense", (w.shape[0],), arrays)
        if fire:
            layer.arrays["bias"] = _copy_biases(c, q, D, per_channel=conv_w is not None)
            layer.neuron = {**NEURON, "vThMant": int(q.vth) - 1}
        layer.node = c.name
        out.append(layer)
        prev_shape, prev_copies = tuple(c.shape), copies
    return out, meta


def _expanded_columns(shape: tuple, copies: int) -> np.ndarray:
    """For each input of a layer fed by `copies` threshold copies per neuron (channel-major: neuron
    (c, pos) is inputs (c * copies + k, pos)), the flat index of the neuron it copies."""
    C = shape[0]
    R = math.prod(shape[1:]) if len(shape) > 1 else 1
    orig = np.arange(C)[:, None, None] * R + np.arange(R)[None, None, :]
    return np.broadcast_to(orig, (C, copies, R)).reshape(-1)


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


def _conv_from_matrix(conv, m: np.ndarray, in_shape: tuple, out_shape: tuple) -> np.ndarray:
    """Recover the integer conv kernel from the quantised dense matrix of that conv (each matrix
    entry is exactly one kernel tap, so the mantissas are the same), checking every tap agrees."""
    w = conv.params["weight"]
    Co, Cig, kh, kw = w.shape
    a = conv.attrs
    g = a["groups"]
    (sy, sx), (py, px), (dy, dx) = a["stride"], a["padding"], a["dilation"]
    C, H, W = in_shape
    _, Ho, Wo = out_shape
    k = np.zeros(w.shape, np.int64)
    seen = np.zeros(w.shape, bool)
    M = m.reshape(Co, Ho, Wo, C, H, W)
    for o in range(Co):
        grp = o // (Co // g)
        for ci in range(Cig):
            c = grp * Cig + ci
            for i in range(kh):
                for j in range(kw):
                    for y in range(Ho):
                        iy = y * sy - py + i * dy
                        if not 0 <= iy < H:
                            continue
                        for x in range(Wo):
                            ix = x * sx - px + j * dx
                            if 0 <= ix < W:
                                v = int(M[o, y, x, c, iy, ix])
                                if seen[o, ci, i, j] and k[o, ci, i, j] != v:
                                    raise TargetError(f"conv {conv.name}: tap ({o},{ci},{i},{j}) quantised inconsistently",
                                                      where="netx export")
                                k[o, ci, i, j], seen[o, ci, i, j] = v, True
    return k


# --------------------------------------------------------------------------------------------
# writing and reading


def _put(grp: h5py.Group, key: str, value) -> None:
    grp.create_dataset(key, data=value, track_times=False)


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
