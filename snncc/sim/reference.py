"""The reference executor: runs any level of the IR (traced, folded, normal form) batch-wise in
float32 or float64 and returns the output plus the spike count of every neuron population.

It is the semantic ground truth the simulators and targets are checked against (docs/design.md §7). Fire
semantics (docs/design.md §2): with input current U, constant current b, threshold theta, initial
membrane beta and rounding q, a neuron emits n = clip(q((v) / theta), 0, D) with v = beta + U + b;
a stateful neuron keeps leak * (v - n * theta - beta) for the next timestep (`carry`; leak = 1:
integrate-and-fire, LIF's 1 - 1/tau otherwise; beta is not integrated), or what its reset mode
says (hard reset to beta, no reset, the leak before the subtraction). The op emits n / norm.
A relay (residual-stream accumulator) emits its window's input current plus its constant current,
unchanged; `Result.messages` counts its graded messages (neurons whose value is nonzero).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from snncc.errors import SnnccError
from snncc.ir.analysis import dead_after, value_numbers
from snncc.ir.graph import Graph, Node
from snncc.ir.ops import bilinear_weights
from snncc.ir.registry import column, implements, lookup, supports

column("reference", "executor", "the reference interpreter: any IR level, batch-wise, the semantic ground truth",
       "snncc.sim.reference")
supports(["input"], executor="reference", where="snncc.sim.reference.Interpreter.run (the timestep's input batch)")


@dataclass
class Result:
    output: torch.Tensor  # (B, *out_shape), mean over T for multi-timestep graphs
    counts: dict[str, torch.Tensor] = field(default_factory=dict)  # fire node -> (B, *shape) spikes summed over T
    values: dict[str, torch.Tensor] = field(default_factory=dict)  # every node's last value, when kept
    ties: dict[str, int] = field(default_factory=dict)  # half_even fire -> inputs at k + 1/2, k even
    messages: dict[str, torch.Tensor] = field(default_factory=dict)  # relay -> (B, *shape) nonzero values, over T


def quantize(x: torch.Tensor, rounding: str, inplace: bool = False) -> torch.Tensor:
    """x rounded by the neuron's rounding mode; `inplace` overwrites x (the caller owns it)."""
    if rounding == "half_even":
        return x.round_() if inplace else torch.round(x)
    if rounding == "half_up":
        return (x.add_(0.5) if inplace else x + 0.5).floor_()
    if rounding == "floor":
        return x.floor_() if inplace else torch.floor(x)
    if rounding == "strict":  # thresholds strictly exceeded: the largest integer below x
        return (x.ceil_() if inplace else torch.ceil(x)).sub_(1)
    raise SnnccError(f"unknown rounding mode {rounding!r}")


def fire_count(v: torch.Tensor, attrs: dict, consume: bool = False) -> torch.Tensor:
    """Spikes a neuron with membrane v (beta and constant current included) emits in one window.
    With `consume` the caller gives up v and its storage is reused for the result."""
    theta = attrs["theta"]
    if theta != 1.0:
        u, consume = v / theta, True
    else:
        u = v
    return quantize(u, attrs["rounding"], inplace=consume).clamp_(0, attrs["D"])


def carry(v: torch.Tensor, cnt: torch.Tensor, attrs: dict) -> torch.Tensor:
    """What a stateful neuron with membrane v (beta included) that emitted cnt spikes carries to the
    next timestep, without the offset beta: the membrane after its reset, times `leak` (ops `fire`).
    Soft reset: leak * (v - cnt * theta - beta), or leak * (v - beta) - cnt * theta with
    `leak_first`; hard reset ("value"): 0 where the neuron fired, leak * (v - beta) elsewhere; no
    reset: leak * (v - beta). The one place the leak and the reset act: between timesteps, never
    between the D sub-steps of a window. Every executor of the IR carries through here."""
    leak, reset, beta = attrs["leak"], attrs["reset"], attrs["beta"]
    if reset == "subtract" and not attrs["leak_first"]:
        r = v - cnt * attrs["theta"] - beta
        return r * leak if leak != 1.0 else r
    r = v - beta if beta != 0.0 else v
    if leak != 1.0:
        r = r * leak
    if reset == "subtract":  # leak_first
        return r - cnt * attrs["theta"]
    if reset == "value":
        return torch.where(cnt > 0, torch.zeros_like(r), r)
    return r


def carried_membrane(v: torch.Tensor, cnt, attrs: dict) -> torch.Tensor:
    """`carry` for executors whose membrane holds beta: the next timestep's starting membrane,
    beta + carry(v, cnt); v - cnt * theta for a soft-reset integrate-and-fire neuron."""
    if attrs["leak"] == 1.0 and attrs["reset"] == "subtract" and not attrs["leak_first"]:
        return v - cnt * attrs["theta"] if not (isinstance(cnt, (int, float)) and cnt == 0) else v
    return carry(v, cnt, attrs) + attrs["beta"]


def timestep_inputs(graph: Graph, x, dtype: torch.dtype) -> list[torch.Tensor]:
    """Split an input batch into one (B, *shape) tensor per timestep: x is (B, *shape) (repeated
    over the graph's T timesteps) or (T, B, *shape). Shared by every executor of the IR."""
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(
        device=torch.get_default_device(), dtype=dtype)  # the executor's device (snncc.sim.device.use)
    in_shape = graph.inputs[0].shape
    if tuple(x.shape[-len(in_shape):]) != in_shape:
        raise SnnccError(f"input of shape {tuple(x.shape)} does not end in the graph's input shape {in_shape}",
                         hint="pass (B, *shape) or (T, B, *shape)")
    if x.dim() == len(in_shape) + 1:
        return [x] * graph.T
    if x.dim() == len(in_shape) + 2:
        if x.shape[0] != graph.T:
            raise SnnccError(f"input has {x.shape[0]} timesteps, graph expects T={graph.T}")
        return list(x)
    raise SnnccError(f"input of rank {x.dim()} for per-sample shape {in_shape}")


class Interpreter:
    """Walks the graph once per timestep. Each op's behaviour is the `op_<name>` method registered
    for the "reference" executor (snncc.ir.registry); `impl(op)` dispatches through the registry,
    so a subclass that overrides `op_<name>` changes one op."""

    executor = "reference"

    def __init__(self, graph: Graph, dtype: torch.dtype = torch.float64):
        self.graph = graph
        self.dtype = dtype
        tensors: dict[int, torch.Tensor] = {}  # one tensor per distinct array (shared private copies)

        def tensor(v):
            if id(v) not in tensors:  # a float64 array is read in place on the CPU (no op writes to a parameter;
                # the graph's arrays are read-only): a large model's weights are not copied once per executor
                if isinstance(v, np.ndarray) and v.dtype == np.float64 and dtype == torch.float64 and \
                        torch.get_default_device().type == "cpu":
                    with warnings.catch_warnings():  # torch's notice that the array is not writable
                        warnings.simplefilter("ignore", UserWarning)
                        tensors[id(v)] = torch.as_tensor(v)
                else:
                    tensors[id(v)] = torch.tensor(v, dtype=dtype)
            return tensors[id(v)]

        self._params = {n.name: {k: tensor(v) for k, v in n.params.items()} for n in graph.nodes}
        self.state: dict[str, torch.Tensor] = {}
        self.ties: dict[str, int] = {}
        self.same = value_numbers(graph)  # copies of one value (private trees) are evaluated once
        self.last_step = False  # set by the executor on its last timestep: no state to carry on
        self.dead = dead_after(graph, self.same)  # values to drop once a node has run

    def impl(self, op: str):
        """The bound method implementing `op` (a subclass's override of it, if any); one line naming
        the op and the executor when the registry has none."""
        names = self.__dict__.setdefault("_op_methods", {})  # op -> method name (no bound methods: no cycle)
        name = names.get(op)
        if name is None:
            fn = lookup(op, self.executor)
            if not callable(fn):  # an op `run` handles itself (the input)
                raise SnnccError(f"op {op}: {fn} handles it; it has no op method")
            name = names[op] = fn.__name__
        return getattr(self, name)

    def run(self, x, keep_values: bool = False) -> Result:
        g = self.graph
        inputs = g.inputs
        if len(inputs) != 1:
            raise SnnccError(f"graph has {len(inputs)} inputs; the reference executor runs single-input graphs")
        xs = timestep_inputs(g, x, self.dtype)
        self.state = {}
        counts: dict[str, torch.Tensor] = {}
        messages: dict[str, torch.Tensor] = {}
        out_sum = None
        values: dict[str, torch.Tensor] = {}
        for t, xt in enumerate(xs):
            self.last_step = t == len(xs) - 1
            env: dict[str, torch.Tensor] = {}
            for n in g.nodes:
                if n.op == "input":
                    env[n.name] = xt
                elif self.same[n.name] != n.name:
                    env[n.name] = env[self.same[n.name]]
                elif n.op == "fire":
                    cnt, y = self.impl("fire")(n, env[n.inputs[0]])
                    counts[n.name] = cnt if n.name not in counts else counts[n.name] + cnt
                    env[n.name] = y
                elif n.op == "relay":
                    y = env[n.name] = self.impl("relay")(n, env[n.inputs[0]])
                    m = (y != 0).to(y.dtype)
                    messages[n.name] = m if n.name not in messages else messages[n.name] + m
                else:
                    env[n.name] = self.impl(n.op)(n, *[env[i] for i in n.inputs])
                if not keep_values:
                    for d in self.dead.get(n.name, ()):
                        del env[d]
            out = env[g.output.name]
            out_sum = out if out_sum is None else out_sum + out
            if keep_values:
                values = env
        return Result(out_sum / len(xs) if len(xs) > 1 else out_sum, counts, values, dict(self.ties), messages)

    # ---- ops ------------------------------------------------------------------------------
    def p(self, n: Node, k: str):
        return self._params[n.name].get(k)

    @implements("fire", executor="reference")
    def op_fire(self, n: Node, u: torch.Tensor):
        a = n.attrs
        v = u + a["beta"] if a["beta"] != 0.0 else u
        b = self.p(n, "bias")
        if b is not None:
            v = v + b
        keep = a["stateful"] and not self.last_step  # the carried membrane is read next timestep
        if a["stateful"] and n.name in self.state:
            v = v + self.state[n.name]
        # v is ours to overwrite unless it is still u (the caller's) or needed below (state, ties)
        cnt = fire_count(v, a, consume=v is not u and not keep and a["rounding"] != "half_even")
        if a["rounding"] == "half_even":
            u = v / a["theta"]
            fl = torch.floor(u)
            tie = (u - fl == 0.5) & (torch.remainder(fl, 2) == 0) & (fl >= 0) & (fl < a["D"])
            self.ties[n.name] = self.ties.get(n.name, 0) + int(tie.sum())
        if keep:
            self.state[n.name] = carry(v, cnt, a)
        return cnt, (cnt / a["norm"] if a["norm"] != 1.0 else cnt)

    @implements("relay", executor="reference")
    def op_relay(self, n: Node, u: torch.Tensor):
        b = self.p(n, "bias")
        return u + b if b is not None else u

    @implements("conv", executor="reference")
    def op_conv(self, n: Node, x):
        a = n.attrs
        w = self.p(n, "weight")
        fn = F.conv2d if w.dim() == 4 else F.conv1d
        return fn(x, w, self.p(n, "bias"), a["stride"], a["padding"], a["dilation"], a["groups"])

    @implements("linear", executor="reference")
    def op_linear(self, n: Node, x):
        return F.linear(x, self.p(n, "weight"), self.p(n, "bias"))

    @implements("batchnorm", executor="reference")
    def op_batchnorm(self, n: Node, x):
        axis = n.attrs["axis"]
        axis = axis + 1 if axis >= 0 else x.dim() + axis
        shape = [1] * x.dim()
        shape[axis] = -1
        m, var, w, b = (self.p(n, k).reshape(shape) for k in ("mean", "var", "weight", "bias"))
        return (x - m) / torch.sqrt(var + n.attrs["eps"]) * w + b

    @implements("add", executor="reference")
    def op_add(self, n: Node, *xs):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out

    @implements("scale", executor="reference")
    def op_scale(self, n: Node, x):
        return x * self.p(n, "factor")

    @implements("pool", executor="reference")
    def op_pool(self, n: Node, x):
        a = n.attrs
        y = F.avg_pool2d(x, a["kernel"], a["stride"], a["padding"])
        if a["mode"] == "sum":
            y = y * (a["kernel"][0] * a["kernel"][1])
        return y

    @implements("max_pool", executor="reference")
    def op_max_pool(self, n: Node, x):
        a = n.attrs
        return F.max_pool2d(x, a["kernel"], a["stride"], a["padding"])

    @implements("pad", executor="reference")
    def op_pad(self, n: Node, x):
        t, b, l, r = n.attrs["pads"]
        y = F.pad(x, (l, r, t, b))
        v = self.p(n, "value")
        if v is not None:  # the border holds v per channel, the interior x
            inner = torch.zeros_like(y, dtype=torch.bool)
            inner[..., t:t + x.shape[-2], l:l + x.shape[-1]] = True
            y = torch.where(inner, y, v.reshape(-1, 1, 1).to(y.dtype))
        return y

    @implements("upsample", executor="reference")
    def op_upsample(self, n: Node, x):
        sh, sw = n.attrs["scale"]
        return x.repeat_interleave(sh, dim=2).repeat_interleave(sw, dim=3)

    @implements("bilinear", executor="reference")
    def op_bilinear(self, n: Node, x):
        (h, w), (H, W), ac = x.shape[-2:], n.attrs["size"], n.attrs["align_corners"]
        ah = torch.from_numpy(bilinear_weights(h, H, ac)).to(x.dtype)
        aw = torch.from_numpy(bilinear_weights(w, W, ac)).to(x.dtype)
        return torch.einsum("bchw,Hh,Ww->bcHW", x, ah, aw)

    @implements("offset", executor="reference")
    def op_offset(self, n: Node, x):
        a = n.attrs
        shape = list(x.shape)
        shape[a["axis"] + 1] = a["size"]
        y = x.new_zeros(shape)
        y.narrow(a["axis"] + 1, a["at"], x.shape[a["axis"] + 1]).copy_(x)
        return y

    @implements("mean", executor="reference")
    def op_mean(self, n: Node, x):
        return x.mean(dim=tuple(d + 1 for d in n.attrs["dims"]), keepdim=n.attrs["keepdim"])

    @implements("reshape", executor="reference")
    def op_reshape(self, n: Node, x):
        return x.reshape(x.shape[0], *n.attrs["shape"])

    @implements("permute", executor="reference")
    def op_permute(self, n: Node, x):
        return x.permute(0, *(d + 1 for d in n.attrs["dims"]))

    @implements("spike_product", executor="reference")
    def op_spike_product(self, n: Node, *xs):
        if len(xs) == 2:
            y = xs[0] @ xs[1]
        elif n.attrs["order"] == "left":
            y = (xs[0] @ xs[1]) @ xs[2]
        else:
            y = xs[0] @ (xs[1] @ xs[2])
        s = n.attrs["scale"]
        return y * s if s != 1.0 else y

    @implements("output", executor="reference")
    def op_output(self, n: Node, x):
        return x


def run(graph: Graph, x, dtype: torch.dtype = torch.float64, keep_values: bool = False) -> Result:
    """Run `graph` on a batch `x` of shape (B, *input_shape) or (T, B, *input_shape)."""
    with torch.no_grad():
        return Interpreter(graph, dtype).run(x, keep_values=keep_values)
