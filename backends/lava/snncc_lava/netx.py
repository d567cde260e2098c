"""netx HDF5 export of a deployed graph (DESIGN 5): the sequential subset lava-dl's
`lava.lib.dl.netx.hdf5.Network` reads (input, conv, flatten, dense), written with h5py, plus a
validator that re-reads a file and checks it against that schema.

Schema (field names and types as lava-dl netx's reader, `netx/hdf5.py` + `netx/utils.py` NetDict,
and slayer's `export_hdf5` use them):
- `layer/<i>` for i = 0..n-1; `type`: (1,) 'S10' ASCII ('input', 'conv', 'flatten', 'dense');
  `shape`: int array (C, H, W) (netx reverses it to its (x, y, f) order); for dense (N,).
- conv: `weight` int (C_out, C_in/groups, kh, kw) in PyTorch layout (netx flips the kernel and
  transposes to Lava's (out, x, y, in), and Lava's Conv flips it back: a correlation, like torch),
  `stride`, `padding`, `dilation` int (2,) in (y, x) order, `groups` int, `inChannels`,
  `outChannels`, `kernelSize`; optional `bias` int (C_out,).
- dense: `weight` int (N_out, N_in) over the C-order flattened input; optional `bias` (N_out,);
  `inFeatures`, `outFeatures`. A dense without `neuron` is netx's non-leaky integrator (our
  read-out).
- `neuron/{type, iDecay, vDecay, vThMant, refDelay, gradedSpike}`: 'CUBA' with iDecay = 4096
  (netx passes du = iDecay - 1 = 4095: the current register keeps only this step's input) and
  vDecay = 0 (no leak): an integrate-and-fire neuron.
Integers come from `fixed.quantize(net, policy="netx")`: weight mantissas with weight exponent 0
(netx reads weights as plain integers and derives its own exponent), vThMant = vth (same units as
the weights: netx, like Lava's LIF, compares v with vThMant << 6 and shifts activations by 6), and
`bias` = bias mantissa for netx's bias_exp = 6 (one unit = one weight unit), with the neuron's
initial membrane beta folded in (bias + round(v_init / 64)).

The encoding layer. The deployed graph's first population integrates a conv (or any linear map)
of the real-valued input, which snncc keeps on the host. In the netx file it is the first
conv/dense layer with graded (integer) input: the host sends x_int = round(x * 2**inputExp) and the
layer's 8-bit weights are round_even(w * scale / 2**inputExp), with inputExp the smallest exponent
that keeps the largest weight within 254 (`snncc/inputExp`). `layer/0` is an 'input' layer with
only a `shape`, so netx takes it as the network's input shape and adds no input neuron.

What netx cannot express is refused with one TargetError that names every such node: fan-in from
more than one source (residual / membrane shortcuts, a host current mixed with spikes), a source
that is not the previous layer (non-sequential), spike products (attention) and pooling that does
not fold into a following dense layer (netx has no pool layer; global average pooling before a
linear head folds into that head's dense weights). Semantics that netx's LIF does not share (it
resets to zero, fires one spike per step, adds the bias every step) are recorded under `snncc/`
(D, window, subtractive reset) for a reader that knows them; netx itself ignores that group.
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
from snncc_lava.fixed import W_MAX, W_MIN, QNetwork, quantize, round_even_mantissa
from snncc_lava.network import Network, TreeEvaluator, build, tree_nodes

FORMAT = "snncc-netx/1"
TYPES = ("input", "conv", "flatten", "dense")
NEURON = {"type": "CUBA", "iDecay": 4096, "vDecay": 0, "refDelay": 1, "gradedSpike": 0}
POOL_OPS = ("pool", "mean")


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
        if n.op == "spike_product":
            out.append(f"node {n.name}: spike_product (attention) -- netx has no multiplicative layer")
        elif n.op == "relay":
            out.append(f"node {n.name}: relay (residual-stream accumulator, graded) -- netx has no relay layer")
    prev = in_name
    consumers = [n for n in g.nodes if n.op == "fire"] + [g.output]
    for c in consumers:
        tree, leaves = tree_nodes(g, c)
        if any(t.op == "spike_product" for t in tree):
            pass  # named by its spike_product node
        elif len(leaves) > 1:
            out.append(f"node {c.name}: fan-in from {', '.join(leaves)} (residual / shortcut) -- "
                       f"netx layers are sequential, one input each")
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
    cannot express it."""
    bad = problems(g)
    if bad:
        raise TargetError(f"netx cannot express {len(bad)} node(s): " + "; ".join(bad), where="netx export",
                          hint="netx reads input/conv/flatten/dense chains only; emit without netx=true")
    net = net or build(g)
    qnet = qnet or quantize(net, "netx")
    if qnet.policy != "netx":
        raise TargetError("netx export needs the quantisation policy 'netx' (weight exponent 0, bias_exp 6)",
                          where="netx export")
    ev = TreeEvaluator(g)
    in_node = g.inputs[0]
    out = [Layer("input", tuple(in_node.shape))]
    meta = {"format": FORMAT, "D": net.D, "T": net.T, "reset": "subtract", "count": "floor(v / (vThMant << 6)), at most D",
            "window": "integrate D sub-steps, then emit the count", "inputExp": 0,
            "outputScale": qnet.output_scale, "outputBias": np.asarray(net.output_const, np.float64)}
    projs = {(p.source, p.target): p for p in qnet.projections}
    prev_shape = tuple(in_node.shape)
    for c in [n for n in g.nodes if n.op == "fire"] + [g.output]:
        fire = c.op == "fire"
        q = qnet.populations.get(c.name)
        _, leaves = tree_nodes(g, c)
        src = leaves[0]
        host = src == in_node.name
        conv = _conv_node(g, c)
        if host:
            w = conv.params["weight"] if conv is not None else ev.matrix(c, src)
            w_int, e_in = _encoding_weights(w, q.scale)
            meta["inputExp"] = e_in
        else:
            key = (src, c.name if fire else "output")
            w_int = projs[key].weight.toarray()
            if conv is not None:
                w_int = _conv_from_matrix(conv, w_int, g[src].shape, c.shape)
        if conv is None and len(prev_shape) > 1:
            out.append(Layer("flatten", (math.prod(prev_shape), 1, 1)))
        arrays = {"weight": np.asarray(w_int, np.int64)}
        if fire:
            bias = q.bias_mant.astype(np.int64) + int(round(q.v_init / 64))
            if host:  # the host current carried the tree's constant; the netx layer must hold it
                bias = bias + np.rint(ev.constant(c) * q.scale).astype(np.int64)
            if conv is not None:
                per_ch = bias.reshape(c.shape[0], -1)
                if not (per_ch == per_ch[:, :1]).all():
                    raise TargetError(f"node {c.name}: bias varies inside a channel; netx conv bias is per channel",
                                      where="netx export")
                bias = per_ch[:, 0]
            arrays["bias"] = bias
        if conv is not None:
            a = conv.attrs
            arrays.update(stride=np.array(a["stride"], np.int64), padding=np.array(a["padding"], np.int64),
                          dilation=np.array(a["dilation"], np.int64), groups=np.int64(a["groups"]),
                          inChannels=np.int64(conv.params["weight"].shape[1] * a["groups"]),
                          outChannels=np.int64(conv.params["weight"].shape[0]),
                          kernelSize=np.array(conv.params["weight"].shape[2:], np.int64))
            layer = Layer("conv", tuple(c.shape), arrays)
        else:
            n_out = math.prod(c.shape)
            arrays.update(inFeatures=np.int64(arrays["weight"].shape[1]), outFeatures=np.int64(n_out))
            layer = Layer("dense", (n_out,), arrays)
        if fire:
            layer.neuron = {**NEURON, "vThMant": int(q.vth)}
        layer.node = c.name
        out.append(layer)
        prev_shape = tuple(c.shape)
    return out, meta


def _encoding_weights(w: np.ndarray, scale: float) -> tuple[np.ndarray, int]:
    top = float(np.abs(w).max())
    e = 0
    if top > 0:
        e = -16
        while round_even_mantissa(top * scale / 2.0**e) > W_MAX:
            e += 1
    return np.clip(round_even_mantissa(w * scale / 2.0**e), W_MIN, W_MAX), e


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
                if not 0 < int(nr["vThMant"]) < 2**17:
                    fail(i, f"vThMant {nr['vThMant']} is not a 17-bit unsigned integer")
        prev = shape if t != "flatten" else (math.prod(shape),)
    return ls
