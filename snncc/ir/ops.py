"""The op table of the spiking IR: every op declared once, with its attributes, parameters,
tensor-kind rule and shape rule.

Shapes are per sample (no batch axis, no time axis). Kinds follow docs/design.md §2: a `spike` tensor
holds non-negative integer counts (at most D per window), a `current` tensor holds real-valued
synaptic input. Printing, serialisation, verification and the executors all read this table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

SPIKE = "spike"
CURRENT = "current"
KINDS = (SPIKE, CURRENT)

Shape = tuple  # tuple[int, ...]


class RuleError(Exception):
    """Raised by a shape or kind rule; the graph layer turns it into an IRError naming the node."""


@dataclass(frozen=True)
class OpSpec:
    name: str
    min_inputs: int
    max_inputs: int | None  # None: variadic
    attrs: dict[str, Any]  # attribute name -> default (REQUIRED for required ones)
    params: tuple[str, ...] = ()  # parameter names this op may carry
    required_params: tuple[str, ...] = ()
    kind_rule: Callable[[list[str], dict], str] = None  # type: ignore[assignment]
    shape_rule: Callable[[list[Shape], dict, dict], Shape] = None  # type: ignore[assignment]
    synaptic: bool = False  # carries synapses: costs SOPs on spikes, MACs on currents
    linear: bool = False  # output is linear in each input (affine with bias)
    layout: bool = False  # pure data movement (reshape/permute)
    # multiplies its inputs (a coincidence of spikes): no linear path from an input to the output,
    # which is a new value; the cost models price it by coincidences (estimate.plan), not synapses
    product: bool = False
    # on a current input, defined in the host domain only (`host_domain`); the reason it is refused
    # anywhere else (Graph.verify names the node)
    host_only: str = ""
    summary: Callable[[dict, dict], str] = field(default=lambda a, p: "")


REQUIRED = object()


def _current(kinds, attrs):
    return CURRENT


def _same_kind(kinds, attrs):
    return kinds[0]


def _all_current(kinds, attrs):
    for k in kinds:
        if k != CURRENT:
            raise RuleError(f"expects current inputs, got {k}; a sum of spike tensors has no deployed meaning")
    return CURRENT


def _fire_kind(kinds, attrs):
    if kinds[0] != CURRENT:
        raise RuleError("a neuron consumes a current; its input is a spike tensor")
    return SPIKE


def _spikes_in(kinds, attrs):
    for k in kinds:
        if k != SPIKE:
            raise RuleError(f"a spike product multiplies spike tensors; got a {k} input")
    return CURRENT


def _input_kind(kinds, attrs):
    if attrs["kind"] not in KINDS:
        raise RuleError(f"input kind must be one of {KINDS}, got {attrs['kind']!r}")
    return attrs["kind"]


def _conv_out(n, k, s, p, d):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _check_window(stride, padding, nd, dilation=None, kernel=None):
    """Stride, dilation and kernel are positive integers, padding non-negative, one per spatial axis."""
    for what, v, lo in (("stride", stride, 1), ("padding", padding, 0), ("dilation", dilation, 1),
                        ("kernel", kernel, 1)):
        if v is None:
            continue
        if not (isinstance(v, tuple) and len(v) == nd and all(isinstance(i, int) and i >= lo for i in v)):
            raise RuleError(f"{what} must be {nd} integers >= {lo}, got {v!r}")


def conv_shape(shapes, attrs, params):
    (x,) = shapes
    w = params["weight"].shape
    nd = len(w) - 2
    if len(x) != nd + 1:
        raise RuleError(f"conv{nd}d expects a (C, {'H, W' if nd == 2 else 'L'}) input, got shape {x}")
    groups = attrs["groups"]
    _check_window(attrs["stride"], attrs["padding"], nd, attrs["dilation"])
    if not (isinstance(groups, int) and groups >= 1):
        raise RuleError(f"groups must be a positive integer, got {groups!r}")
    if x[0] != w[1] * groups:
        raise RuleError(f"input has {x[0]} channels but weight expects {w[1]} x groups {groups}")
    if w[0] % groups:
        raise RuleError(f"{w[0]} output channels not divisible by groups {groups}")
    out = [w[0]]
    for i in range(nd):
        o = _conv_out(x[1 + i], w[2 + i], attrs["stride"][i], attrs["padding"][i], attrs["dilation"][i])
        if o <= 0:
            raise RuleError(f"output size {o} along spatial axis {i} (input {x}, kernel {tuple(w[2:])})")
        out.append(o)
    if "bias" in params and params["bias"].shape != (w[0],):
        raise RuleError(f"bias shape {params['bias'].shape} != ({w[0]},)")
    return tuple(out)


def linear_shape(shapes, attrs, params):
    (x,) = shapes
    w = params["weight"].shape
    if len(w) != 2 or x[-1] != w[1]:
        raise RuleError(f"linear weight {tuple(w)} does not fit input {x} (last axis must be {w[1] if len(w) == 2 else '?'})")
    if "bias" in params and params["bias"].shape != (w[0],):
        raise RuleError(f"bias shape {params['bias'].shape} != ({w[0]},)")
    return tuple(x[:-1]) + (w[0],)


def per_channel_shape(shapes, attrs, params):
    (x,) = shapes
    axis = attrs["axis"]
    if not -len(x) <= axis < len(x):
        raise RuleError(f"channel axis {axis} out of range for shape {x}")
    c = x[axis]
    for k, v in params.items():
        if v.shape != (c,):
            raise RuleError(f"parameter {k} has shape {v.shape}, expected ({c},)")
    return x


def scale_shape(shapes, attrs, params):
    (x,) = shapes
    f = params["factor"].shape
    try:
        out = _broadcast(x, f)
    except RuleError:
        raise RuleError(f"scale factor of shape {f} does not broadcast to {x}")
    if out != x:
        raise RuleError(f"scale factor of shape {f} would change shape {x}")
    return x


def _broadcast(a, b):
    n = max(len(a), len(b))
    a = (1,) * (n - len(a)) + tuple(a)
    b = (1,) * (n - len(b)) + tuple(b)
    out = []
    for i, j in zip(a, b):
        if i != j and 1 not in (i, j):
            raise RuleError(f"shapes {a} and {b} do not broadcast")
        out.append(max(i, j))
    return tuple(out)


def add_shape(shapes, attrs, params):
    out = shapes[0]
    for s in shapes[1:]:
        if s != out:
            raise RuleError(f"add of shapes {shapes}: operands must have equal shapes")
    return out


def pool_shape(shapes, attrs, params):
    (x,) = shapes
    if len(x) != 3:
        raise RuleError(f"pool2d expects a (C, H, W) input, got {x}")
    k, s, p = attrs["kernel"], attrs["stride"], attrs["padding"]
    _check_window(s, p, 2, kernel=k)
    h = _conv_out(x[1], k[0], s[0], p[0], 1)
    w = _conv_out(x[2], k[1], s[1], p[1], 1)
    if h <= 0 or w <= 0:
        raise RuleError(f"pool kernel {k} larger than input {x}")
    if "mode" in attrs and attrs["mode"] not in ("avg", "sum"):
        raise RuleError(f"pool mode must be 'avg' or 'sum', got {attrs['mode']!r}")
    if any(2 * pi > ki for pi, ki in zip(p, k)):
        raise RuleError(f"padding {p} is more than half the kernel {k}")
    return (x[0], h, w)


def _max_pool_kind(kinds, attrs):
    return kinds[0]  # spikes: a spike value; a current: the host domain only (OpSpec.host_only, Graph.verify)


MAX_OF_CURRENTS = ("a max of currents is no synaptic sum, and a neuron after it integrates the max, which does "
                   "not commute with it; max-pool the neuron's spikes, or keep the max in the encoding of the "
                   "real-valued input (before any neuron)")


def host_domain(nodes) -> set[str]:
    """The host domain (docs/design.md §2.1): the currents computed from the real-valued graph
    inputs alone, before any neuron or relay: the encoding of the input, which the host computes
    densely (multiply-accumulates) at every timestep and feeds to the first neurons as their input
    current. Names of `nodes` (graph order) in it: a real-valued input, and every current op whose
    inputs all are. A max of currents (`max_pool`) is defined there only (`OpSpec.host_only`)."""
    out: set[str] = set()
    for n in nodes:
        if n.kind == CURRENT and n.op not in POPULATION_OPS and all(i in out for i in n.inputs):
            out.add(n.name)
    return out


def pad_shape(shapes, attrs, params):
    (x,) = shapes
    pads = attrs["pads"]
    if len(x) != 3:
        raise RuleError(f"pad expects a (C, H, W) input, got {x}")
    if not (isinstance(pads, tuple) and len(pads) == 4 and all(isinstance(v, int) and v >= 0 for v in pads)):
        raise RuleError(f"pads must be 4 integers >= 0 (top, bottom, left, right), got {pads!r}")
    if "value" in params and params["value"].shape != (x[0],):
        raise RuleError(f"pad value of shape {params['value'].shape}, expected one per channel ({x[0]},)")
    return (x[0], x[1] + pads[0] + pads[1], x[2] + pads[2] + pads[3])


def upsample_shape(shapes, attrs, params):
    (x,) = shapes
    if len(x) != 3:
        raise RuleError(f"upsample expects a (C, H, W) input, got {x}")
    sc = attrs["scale"]
    if not (isinstance(sc, tuple) and len(sc) == 2 and all(isinstance(i, int) and not isinstance(i, bool) and i >= 1
                                                        for i in sc)):
        raise RuleError(f"scale must be 2 integers >= 1, got {sc!r}")
    if sc == (1, 1):
        raise RuleError("upsample by (1, 1) is the identity")
    return (x[0], x[1] * attrs["scale"][0], x[2] * attrs["scale"][1])


def bilinear_shape(shapes, attrs, params):
    (x,) = shapes
    if len(x) != 3:
        raise RuleError(f"bilinear expects a (C, H, W) input, got {x}")
    size = attrs["size"]
    if not (isinstance(size, tuple) and len(size) == 2 and all(isinstance(i, int) and not isinstance(i, bool) and i >= 1
                                                            for i in size)):
        raise RuleError(f"size must be 2 integers >= 1, got {size!r}")
    if not isinstance(attrs["align_corners"], bool):
        raise RuleError(f"align_corners must be True or False, got {attrs['align_corners']!r}")
    return (x[0],) + size


def bilinear_weights(n_in: int, n_out: int, align_corners: bool):
    """The (n_out, n_in) interpolation matrix of one axis (float64), torch's rule
    (`F.interpolate(mode='bilinear')` with `size`, or an integer `scale_factor`): output i reads
    source coordinate src = i * (n_in - 1) / (n_out - 1) (align_corners) or
    max((i + 0.5) * n_in / n_out - 0.5, 0), split between floor(src) and the next row (clamped)
    with weights 1 - frac and frac. The one definition every executor, cost model and target reads."""
    import numpy as np

    i = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = i * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
    else:
        src = np.maximum((i + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    l1 = src - i0
    A = np.zeros((n_out, n_in))
    np.add.at(A, (np.arange(n_out), i0), 1.0 - l1)
    np.add.at(A, (np.arange(n_out), i1), l1)
    return A


def offset_shape(shapes, attrs, params):
    (x,) = shapes
    axis, at, size = attrs["axis"], attrs["at"], attrs["size"]
    for k in ("axis", "at", "size"):
        if isinstance(attrs[k], bool) or not isinstance(attrs[k], int):
            raise RuleError(f"{k} must be an integer, got {attrs[k]!r}")
    if not 0 <= axis < len(x):
        raise RuleError(f"axis {axis} out of range for shape {x}")
    if at < 0 or at + x[axis] > size:
        raise RuleError(f"slice [{at}, {at + x[axis]}) of axis {axis} does not fit its size {size}")
    return tuple(size if i == axis else n for i, n in enumerate(x))


def mean_shape(shapes, attrs, params):
    (x,) = shapes
    dims = attrs["dims"]
    for d in dims:
        if not 0 <= d < len(x):
            raise RuleError(f"mean over axis {d} of shape {x}")
    if attrs["keepdim"]:
        return tuple(1 if i in dims else n for i, n in enumerate(x))
    return tuple(n for i, n in enumerate(x) if i not in dims)


def reshape_shape(shapes, attrs, params):
    (x,) = shapes
    new = tuple(attrs["shape"])
    if math.prod(new) != math.prod(x) or any(n <= 0 for n in new):
        raise RuleError(f"cannot reshape {x} ({math.prod(x)} elements) to {new}")
    return new


def permute_shape(shapes, attrs, params):
    (x,) = shapes
    dims = tuple(attrs["dims"])
    if sorted(dims) != list(range(len(x))):
        raise RuleError(f"permutation {dims} does not fit rank {len(x)}")
    return tuple(x[d] for d in dims)


def spike_product_shape(shapes, attrs, params):
    if attrs["order"] not in ("left", "right"):
        raise RuleError(f"association order must be 'left' ((a b) c) or 'right' (a (b c)), got {attrs['order']!r}")
    out = shapes[0]
    for s in shapes[1:]:
        if len(s) < 2 or len(out) < 2 or s[:-2] != out[:-2]:
            raise RuleError(f"spike product operands {shapes} must share leading (head) axes")
        if out[-1] != s[-2]:
            raise RuleError(f"spike product operands {shapes}: inner sizes {out[-1]} and {s[-2]} differ")
        out = out[:-1] + (s[-1],)
    return out


# Sane bounds that keep a corrupt or hostile artefact from hanging a simulator: SFA uses D = 4 or 8
# and T up to a few tens; a Speck readout is uncapped up to its 16-bit membrane (D = 2^15); a graph
# may hold at most MAX_SUBSTEPS = T x D sub-steps per neuron (Graph.verify).
MAX_D = 2 ** 15
MAX_T = 4096
MAX_SUBSTEPS = 2 ** 20


def _relay_kind(kinds, attrs):
    if kinds[0] != CURRENT:
        raise RuleError("a relay integrates a residual stream's current; its input is a spike tensor")
    return CURRENT


def _window_and_constant(x, attrs, params):
    """The rules a fire and a relay share: D within bounds, a constant current that broadcasts."""
    if not (isinstance(attrs["D"], int) and not isinstance(attrs["D"], bool) and 0 < attrs["D"] <= MAX_D):
        raise RuleError(f"D must be an integer in 1..{MAX_D}, got {attrs['D']!r}")
    if "bias" in params:
        try:
            b = _broadcast(x, params["bias"].shape)
        except RuleError:
            b = None
        if b != x:
            raise RuleError(f"constant current of shape {params['bias'].shape} does not broadcast to {x}")


def relay_shape(shapes, attrs, params):
    (x,) = shapes
    _window_and_constant(x, attrs, params)
    return x


def fire_shape(shapes, attrs, params):
    (x,) = shapes
    _window_and_constant(x, attrs, params)
    for k in ("theta", "beta", "norm", "leak"):
        if isinstance(attrs[k], bool) or not isinstance(attrs[k], (int, float)):
            raise RuleError(f"{k} must be a number, got {attrs[k]!r}")
    if not isinstance(attrs["stateful"], bool):
        raise RuleError(f"stateful must be true or false, got {attrs['stateful']!r}")
    if not 0 < attrs["theta"] < math.inf:
        raise RuleError(f"threshold theta must be > 0, got {attrs['theta']!r}")
    if not 0 < attrs["norm"] < math.inf:
        raise RuleError(f"Norm must be > 0, got {attrs['norm']!r}")
    if not math.isfinite(attrs["beta"]):
        raise RuleError(f"beta must be finite, got {attrs['beta']!r}")
    if attrs["rounding"] not in ROUNDING_MODES:
        raise RuleError(f"rounding must be one of {ROUNDING_MODES}, got {attrs['rounding']!r}")
    if not 0.0 <= attrs["leak"] <= 1.0:
        raise RuleError(f"leak must be in [0, 1] (the carried membrane's factor per timestep), got {attrs['leak']!r}")
    if attrs["leak"] != 1.0 and not attrs["stateful"]:
        raise RuleError(f"leak {attrs['leak']!r} on a neuron that carries no membrane (stateful is false)")
    if attrs["reset"] not in RESET_MODES:
        raise RuleError(f"reset must be one of {RESET_MODES}, got {attrs['reset']!r}")
    if not isinstance(attrs["leak_first"], bool):
        raise RuleError(f"leak_first must be true or false, got {attrs['leak_first']!r}")
    if attrs["leak_first"] and attrs["reset"] != "subtract":
        raise RuleError(f"leak_first orders the leak before a subtractive reset; reset is {attrs['reset']!r}")
    return x


def input_shape(shapes, attrs, params):
    s = tuple(attrs["shape"])
    if not s or any((not isinstance(n, int)) or n <= 0 for n in s):
        raise RuleError(f"input shape must be positive integers, got {s}")
    return s


def output_shape(shapes, attrs, params):
    return shapes[0]


# How q turns v / theta into a count: "floor" counts the thresholds reached (v >= k theta: a binary
# neuron's `v >= theta`), "strict" those exceeded (v > k theta: snntorch's `mem > threshold`),
# "half_even"/"half_up" round to the nearest count (SFA).
ROUNDING_MODES = ("half_even", "half_up", "floor", "strict")
# What a spike does to the membrane of a stateful neuron: "subtract" removes theta per spike (soft
# reset), "value" sets the membrane to beta where the neuron fired (hard reset: SpikingJelly's
# v_reset = beta), "none" leaves it.
RESET_MODES = ("subtract", "value", "none")


def neuron_model(attrs: dict) -> str:
    """One line naming a fire node's neuron model (reports, refusals)."""
    a = attrs
    kind = "IF" if a["leak"] == 1.0 else f"LIF(leak {_fmt(a['leak'])})"
    if not a["stateful"]:
        kind = "stateless"
    cmp = {"floor": ">=", "strict": ">"}.get(a["rounding"], a["rounding"].replace("_", "-") + " rounding")
    spikes = f"binary (v {cmp} theta)" if a["D"] == 1 and a["rounding"] in ("floor", "strict") else \
        f"multi-spike D={a['D']} ({cmp})"
    if not a["stateful"]:
        return f"{kind} {spikes}"
    reset = {"subtract": "soft reset" + (" after the leak" if a["leak_first"] else ""),
             "value": f"hard reset to {_fmt(float(a['beta']))}", "none": "no reset"}[a["reset"]]
    return f"{kind} {spikes}, {reset}"


NEURON_FEATURES = ("hard reset", "no reset", "leak before reset", "strict comparison")


def neuron_features(attrs: dict) -> tuple[str, ...]:
    """The parts of a fire node's model beyond the deployed neuron of docs/design.md §2.2 (soft reset by theta,
    then the leak, counting v >= k theta or rounding): what an executor or target must implement."""
    f = []
    if attrs["stateful"] and attrs["reset"] != "subtract":
        f.append("hard reset" if attrs["reset"] == "value" else "no reset")
    if attrs["stateful"] and attrs["leak_first"]:
        f.append("leak before reset")
    if attrs["rounding"] == "strict":
        f.append("strict comparison")
    return tuple(f)


def is_soft_neuron(attrs: dict) -> bool:
    return not neuron_features(attrs)


def check_neuron(name: str, attrs: dict, what: str, supported: Sequence[str] = ()) -> None:
    """Refuse, in one line naming the node, a neuron whose model uses a feature `what` (an executor
    or target) does not implement."""
    missing = [f for f in neuron_features(attrs) if f not in supported]
    if missing:
        from snncc.errors import SnnccError

        raise SnnccError(f"neuron {neuron_model(attrs)}: {what} does not implement its {' and '.join(missing)}",
                         where=f"node {name}",
                         hint="run it with the reference executor (snncc.sim.reference) or a target that does")


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (tuple, list)) and len(set(v)) == 1 and len(v) > 1:
        return _fmt(v[0])
    if isinstance(v, (tuple, list)):
        return "(" + ",".join(_fmt(x) for x in v) + ")"
    return str(v)


def _conv_summary(a, p):
    w = p["weight"].shape
    s = f"k={_fmt(tuple(w[2:]))} s={_fmt(a['stride'])} p={_fmt(a['padding'])}"
    if a["groups"] != 1:
        s += f" g={a['groups']}"
    if any(d != 1 for d in a["dilation"]):
        s += f" d={_fmt(a['dilation'])}"
    if "bias" in p:
        s += " +bias"
    return s


def _fire_summary(a, p):
    s = f"D={a['D']} theta={_fmt(a['theta'])} beta={_fmt(a['beta'])} norm={_fmt(a['norm'])} {a['rounding']}"
    if a["stateful"]:
        s += " stateful"
    if a["leak"] != 1.0:
        s += f" leak={_fmt(a['leak'])}"
    if a["reset"] != "subtract":
        s += f" reset={a['reset']}"
    if a["leak_first"]:
        s += " leak_first"
    if "bias" in p:
        s += " +const"
    return s


OPS: dict[str, OpSpec] = {}


def _op(spec: OpSpec) -> None:
    OPS[spec.name] = spec


_op(OpSpec("input", 0, 0, {"kind": CURRENT, "shape": REQUIRED}, kind_rule=_input_kind, shape_rule=input_shape,
           summary=lambda a, p: ""))
_op(OpSpec("conv", 1, 1, {"stride": REQUIRED, "padding": REQUIRED, "dilation": REQUIRED, "groups": 1},
           params=("weight", "bias"), required_params=("weight",), kind_rule=_current, shape_rule=conv_shape,
           synaptic=True, linear=True, summary=_conv_summary))
_op(OpSpec("linear", 1, 1, {}, params=("weight", "bias"), required_params=("weight",), kind_rule=_current,
           shape_rule=linear_shape, synaptic=True, linear=True,
           summary=lambda a, p: f"{p['weight'].shape[1]}->{p['weight'].shape[0]}" + (" +bias" if "bias" in p else "")))
_op(OpSpec("batchnorm", 1, 1, {"axis": 0, "eps": 1e-5}, params=("mean", "var", "weight", "bias"),
           required_params=("mean", "var", "weight", "bias"), kind_rule=_all_current, shape_rule=per_channel_shape,
           linear=True, summary=lambda a, p: f"axis={a['axis']} eps={_fmt(a['eps'])}"))
# A fire node (docs/design.md §2): n = clip(q((beta + U + bias + carried) / theta), 0, D) per timestep. A
# stateful one carries its residual r = v - n * theta - beta (the membrane after the soft reset,
# without the offset beta, which is not integrated) to the next timestep as leak * r: `leak`
# (LIF's beta = 1 - 1/tau; 1 = integrate-and-fire) acts between timesteps only, never between the
# D sub-steps of one window (the D binary spikes of a window are one integer count). `reset`
# (RESET_MODES) says what a spike does: "value" carries leak * (v - beta) where n = 0 and 0 where
# the neuron fired (the membrane set to beta), "none" leak * (v - beta); `leak_first` (snntorch's
# order) carries leak * (v - beta) - n * theta (the threshold subtracted after the leak).
# reference.carry is the one implementation.
_op(OpSpec("fire", 1, 1, {"D": REQUIRED, "theta": 1.0, "beta": 0.0, "norm": 1.0, "rounding": "half_even",
                          "stateful": False, "leak": 1.0, "reset": "subtract", "leak_first": False},
           params=("bias",), kind_rule=_fire_kind, shape_rule=fire_shape, summary=_fire_summary))
_op(OpSpec("add", 2, None, {}, kind_rule=_all_current, shape_rule=add_shape, linear=True,
           summary=lambda a, p: ""))
_op(OpSpec("scale", 1, 1, {}, params=("factor",), required_params=("factor",), kind_rule=_current,
           shape_rule=scale_shape, synaptic=True, linear=True,
           summary=lambda a, p: (f"x{_fmt(float(p['factor'].reshape(-1)[0]))}" if p["factor"].size == 1
                                 else f"x{tuple(p['factor'].shape)}")))
_op(OpSpec("pool", 1, 1, {"mode": "avg", "kernel": REQUIRED, "stride": REQUIRED, "padding": (0, 0)},
           kind_rule=_current, shape_rule=pool_shape, synaptic=True, linear=True,
           summary=lambda a, p: f"{a['mode']} k={_fmt(a['kernel'])} s={_fmt(a['stride'])}"))
# Max pooling of spike counts (per timestep; binary spikes: an OR within the window, multi-spike:
# the max count). Neither synaptic nor linear: a spike value between a population and its readers.
# Its padding (at most half the kernel) never wins a max of counts >= 0. Of a current, only in the
# host domain (snntorch's Conv -> MaxPool -> Leaky on the image): part of the input's encoding, a
# current; its padding is -inf there (torch's), so it never wins either.
_op(OpSpec("max_pool", 1, 1, {"kernel": REQUIRED, "stride": REQUIRED, "padding": (0, 0)}, kind_rule=_max_pool_kind,
           shape_rule=pool_shape, host_only=MAX_OF_CURRENTS, summary=lambda a, p: f"k={_fmt(a['kernel'])} s={_fmt(a['stride'])}"
                                                       + (f" p={_fmt(a['padding'])}" if any(a["padding"]) else "")))
# A constant border around a current map (research code's BNAndPadLayer fills it with BN(0) per
# channel): a value, not a synapse. No target runs it; `reparam` fuses it into the projection.
_op(OpSpec("pad", 1, 1, {"pads": REQUIRED}, params=("value",), kind_rule=_all_current, shape_rule=pad_shape,
           linear=True, summary=lambda a, p: f"pads={_fmt(a['pads'])}" + (" +value" if "value" in p else "")))
# Nearest-neighbour upsampling by integer factors: each input neuron reaches the scale[0] x scale[1]
# output neurons of its block with weight 1 (a fixed fan-out; on spikes a synaptic op with a 0/1
# kernel, on currents a copy the projection composes with).
_op(OpSpec("upsample", 1, 1, {"scale": REQUIRED}, kind_rule=_current, shape_rule=upsample_shape,
           synaptic=True, linear=True, summary=lambda a, p: f"nearest x{_fmt(a['scale'])}"))
# Bilinear interpolation of a (C, H, W) map to `size` (F.interpolate(mode='bilinear')): per channel,
# y = Ah @ x @ Aw.T with the fixed fractional matrices of `bilinear_weights` (separable, each output
# reads at most 2 x 2 inputs). A synaptic op with fixed weights: on spikes a fan-out with fractional
# weights into the next neurons' currents, on currents a fixed linear map the projection composes with.
_op(OpSpec("bilinear", 1, 1, {"size": REQUIRED, "align_corners": False}, kind_rule=_current,
           shape_rule=bilinear_shape, synaptic=True, linear=True,
           summary=lambda a, p: f"to {_fmt(a['size'])}" + (" align_corners" if a["align_corners"] else "")))
# An address offset: the input placed at [at, at + n) of axis `axis` of a zero tensor of `size`
# along that axis. A concatenation is the add of its inputs' offsets: each source projects into
# its slice of the consumers (weightless, one synapse per neuron).
_op(OpSpec("offset", 1, 1, {"axis": REQUIRED, "at": REQUIRED, "size": REQUIRED}, kind_rule=_current,
           shape_rule=offset_shape, linear=True,
           summary=lambda a, p: f"axis={a['axis']} at={a['at']} of {a['size']}"))
_op(OpSpec("mean", 1, 1, {"dims": REQUIRED, "keepdim": False}, kind_rule=_current, shape_rule=mean_shape,
           synaptic=True, linear=True, summary=lambda a, p: f"dims={_fmt(a['dims'])}"))
_op(OpSpec("reshape", 1, 1, {"shape": REQUIRED}, kind_rule=_same_kind, shape_rule=reshape_shape, linear=True,
           layout=True))
_op(OpSpec("permute", 1, 1, {"dims": REQUIRED}, kind_rule=_same_kind, shape_rule=permute_shape, linear=True,
           layout=True, summary=lambda a, p: f"dims={_fmt(a['dims'])}"))
_op(OpSpec("spike_product", 2, 3, {"order": "left", "scale": 1.0}, kind_rule=_spikes_in,
           shape_rule=spike_product_shape, synaptic=True, product=True,
           summary=lambda a, p: f"order={a['order']} scale={_fmt(a['scale'])}"))
# A relay (docs/design.md §2, synaptic normal form): an accumulator population of a membrane-shortcut
# stream. It integrates its input current over a window (plus its constant current `bias`) and
# forwards the value unchanged, as one graded message per neuron, to the stream's consumers: a
# current-kind value, not spikes. Chained relays R_k = R_{k-1} + B_{k-1} keep synapses linear in
# the stream's depth. In a current tree it is a source (like a neuron), never walked through.
_op(OpSpec("relay", 1, 1, {"D": REQUIRED}, params=("bias",), kind_rule=_relay_kind, shape_rule=relay_shape,
           linear=False,  # a population: passes never fold through it
           summary=lambda a, p: f"D={a['D']}" + (" +const" if "bias" in p else "")))
_op(OpSpec("output", 1, 1, {}, kind_rule=_same_kind, shape_rule=output_shape))


# Ops whose output is a population's value: sources of current trees, never walked through.
POPULATION_OPS = ("fire", "relay")
# The ends of a current tree (docs/design.md §2, synaptic normal form): its sources (a graph input or
# a population) and its consumers (a population or the graph output). An op inside a tree is none
# of these; the registry's cost models refuse these four with one reason (registry.NOT_IN_A_TREE).
SOURCE_OPS = ("input",) + POPULATION_OPS
CONSUMER_OPS = POPULATION_OPS + ("output",)  # each owns its input current tree (snncc.ir.deployed)
BOUNDARY_OPS = SOURCE_OPS + ("output",)


def spec(op: str) -> OpSpec:
    return OPS[op]


def takes_operand(node) -> bool:
    """Whether a product node (OpSpec.product) can take one more operand in place: below its
    max_inputs and without a scale of its own. A product of products associates, so the front ends
    fuse (a b) c and a (b c) into one node when the inner product has no other user (its integer
    result is then never materialised on chip)."""
    s = OPS[node.op]
    return s.product and len(node.inputs) < s.max_inputs and node.attrs["scale"] == 1.0


def normalize_attr(v):
    """Attributes are immutable plain data: lists become tuples, numpy scalars become Python scalars."""
    if isinstance(v, (list, tuple)):
        return tuple(normalize_attr(x) for x in v)
    if hasattr(v, "item") and getattr(v, "shape", None) == ():
        return v.item()
    return v


def tuple_n(v, n: int) -> tuple:
    if isinstance(v, (list, tuple)):
        v = tuple(int(x) for x in v)
        if len(v) == 1:
            return v * n
        return v
    return (int(v),) * n


def summarize(op: str, attrs: dict, params: dict) -> str:
    return OPS[op].summary(attrs, params)


def fmt_value(v) -> str:
    return _fmt(v)


__all__ = ["OPS", "OpSpec", "SPIKE", "CURRENT", "KINDS", "REQUIRED", "RuleError", "ROUNDING_MODES", "RESET_MODES",
           "neuron_model", "NEURON_FEATURES", "neuron_features", "is_soft_neuron", "check_neuron", "MAX_D", "MAX_T",
           "MAX_SUBSTEPS", "POPULATION_OPS", "takes_operand", "SOURCE_OPS", "CONSUMER_OPS", "BOUNDARY_OPS", "host_domain", "MAX_OF_CURRENTS", "spec", "bilinear_weights",
           "normalize_attr", "tuple_n", "summarize", "fmt_value"]

