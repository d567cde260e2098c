"""Re-rolling a stateful neuron written as a Python loop over T (research code's multi-step IF
neurons: SpikingJelly's `IFNode(step_mode='m')`, `MultiStepIFNode`-like classes, loops such as
`for t in range(T): mem = (mem_old - spike) * decay + x[t]; out[t] = spike`), and SpikingJelly
2.0's fused multi-step IF, LIF and I-LIF nodes.

`torch.export` unrolls such a loop: `x[t]` becomes `select`/`unbind`, the membrane a chain of
adds, and the per-step spikes are `stack`ed or copied into a pre-allocated output. The
converter hands every value of one timestep to this module as a `Lin`: an exact linear form
over *atoms*, (IR node, t) for the step-t value of a (T, B, ...) tensor and (chain, t) for the
spikes a neuron fired at step t. At every fire the membrane's form must be that of SFA's IF
neuron with soft reset and a leak l in [0, 1] (l = 1: integrate-and-fire, no decay),

    u_t = sum_i a_i sum_{t' <= t} l^(t - t') X^i_{t'} - sum_{t' < t} l^(t - t') S_{t'} + c

(inputs X^i, e.g. `mem = mem * decay + x1[t] + x2[t]` or a residual added inside the loop, each
with the same factor a_i at every step and the same leak; each spike removes one threshold, and
what is left decays by l per step like the input; c a constant offset that is neither integrated
nor leaked, e.g. SpikingJelly's `v - v_threshold`), which is one IR `fire` with `stateful=True`,
`leak = l` on `sum_i a_i X^i` (IR `scale`s and an `add`) and `beta = c`: the leak multiplies the
residual v - n - c (`snncc.sim.reference.carry`). l is read at the second timestep (the weight of
x[0] relative to a fresh input) and every later step must match the form exactly. l = 0 (`mem =
(mem_old - spike) * 0 + x[t]`) keeps nothing between timesteps: a fresh membrane at every step,
recognised by the same inputs read at the next timestep with no spike term, and built as a
stateless fire. A binary spike written as a comparison, `(v - th >= 0)` (`> 0`: strict), is that
fire at D = 1 in units where the threshold is 1 (`compare`), and the hard reset `v = (1 - spike) *
v` of old SpikingJelly's clock_driven nodes makes the atom ("r", chain, t), the membrane after the
reset: then u_t = l * r_{t-1} + sum_i a_i X^i_t + c, a fire with reset "value" (to c, v_reset 0).
Anything else (a hard reset to another value, a reset by another amount, a leak outside [0, 1],
inputs that decay differently, a layer applied inside the loop) is refused in one line saying
what to write instead. The IR node is built when the T per-step spikes are gathered again
(stack, or the filled output buffer). At T = 1 the fire is stateless (nothing is carried), and a
stateless loop neuron (T = 1, or decay 0) may read a max of currents held back by the converter
(SpikeYOLO's SPPF read by `mem_update`): it fires on the pooled sources, whose spikes are pooled
(`Converter.fire_pooled`); a stateful one is refused, the max does not commute with its membrane.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from snncc.errors import FrontendError

REL = 1e-12  # coefficients compared relative to the largest one
STATIC = "*"  # the timestep of a value that is the same at every step (a static input read in the loop)


@dataclass
class Lin:
    """sum(coef * atom) + const; atoms are ("x", ir_node, t) or ("s", chain, t)."""

    terms: dict = field(default_factory=dict)
    const: float = 0.0

    def __add__(self, o: "Lin") -> "Lin":
        t = dict(self.terms)
        for k, v in o.terms.items():
            t[k] = t.get(k, 0.0) + v
        return Lin({k: v for k, v in t.items() if v != 0.0}, self.const + o.const)

    def scaled(self, f: float) -> "Lin":
        if f == 0.0:
            return Lin({}, 0.0)
        return Lin({k: v * f for k, v in self.terms.items()}, self.const * f)


@dataclass
class Chain:
    """One neuron found in the loop: its summed inputs and their factors, offset, leak and fires so far."""

    key: int
    inputs: dict  # IR node of each summed input -> its factor a_i
    c: float
    D: int
    rounding: str
    where: str
    base: str
    steps: int = 0
    node: str | None = None  # the IR fire node, once gathered
    leak: float = 1.0  # read at the second timestep
    hard: bool = False  # a hard reset to the offset c (("r", chain, t) atoms: the membrane after it)
    fired: tuple | None = None  # (t, the membrane's form) of the last fire, for a hard reset's product
    static: bool = False  # its inputs are the same at every step (a loop in forward over a static input)
    q: float | None = None  # what one spike of step t - 1 removes from the membrane at step t (read at t = 1)

    @property
    def first(self) -> tuple[str, float]:
        """The first input and its factor (the one the leak is read from)."""
        return next(iter(self.inputs.items()))


@dataclass
class Layer:
    """A layer applied inside the loop to the step-t value of one source (a neuron's spikes "s" or
    another value "x"), at every t; `node` its IR node once built."""

    id: str
    fxn: object
    call: object
    kind: str
    key: object
    node: str | None = None


@dataclass
class StepBuffer:
    """`out = torch.zeros_like(x)` of a (T, B, ...) value, filled one timestep at a time."""

    T: int
    slots: dict = field(default_factory=dict)
    node: str | None = None  # the IR node of the filled buffer, once gathered


@dataclass
class Slot:
    buf: StepBuffer
    t: int


def is_step_value(v) -> bool:
    return isinstance(v, (Lin, StepBuffer, Slot))


def _num(v) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if hasattr(v, "numel") and v.numel() == 1 and not hasattr(v, "graph"):
        return float(v)
    return None


class TimeLoop:
    """Per-converter state of the unrolled loops (chains of one neuron over t = 0..T-1)."""

    def __init__(self, conv):
        self.conv = conv
        self.chains: dict[int, Chain] = {}
        self.layers: dict[tuple, Layer] = {}  # a layer applied to one value at every step, by (op, args, source)
        self.layer_ids: dict[str, Layer] = {}
        self.pooled: dict[str, object] = {}  # "~pN" -> a held-back max of currents (PooledCurrent) read as x[t]
        self._canon: dict[str, str] = {}  # IR node -> the first IR node computing the same value
        self._canon_by: dict[tuple, list] = {}

    # ---- entry points from the converter ----------------------------------------------------
    def select(self, fxn, x, dim: int, index: int, where: str) -> Lin:
        lead = self.conv.lead_in(fxn)
        t_pos = lead.index("T") if "T" in lead else None
        held = not isinstance(x, str)  # a max of currents (SPPF) held back for a stateless neuron
        rank = len(lead) + len(x.shape if held else self.conv.graph[x].shape)
        if t_pos is None or dim % rank != t_pos:
            raise FrontendError(f"x[{index}] on axis {dim} of a value laid out ({', '.join(lead)}, ...) is not a "
                                "timestep", where=where,
                                hint="index only the time axis of a (T, B, ...) tensor; a model taking (T, B, ...) "
                                     "at once: --input-layout TB (API: input_layout='TB')")
        if held:
            x = next((k for k, v in self.pooled.items() if v is x), None) or self._hold(x)
        return Lin({("x", x, int(index) % self.conv.T): 1.0})

    def _hold(self, pooled) -> str:
        key = f"~p{len(self.pooled)}"
        self.pooled[key] = pooled
        return key

    def unbind(self, fxn, x, dim: int, where: str) -> tuple:
        return tuple(self.select(fxn, x, dim, t, where) for t in range(self.conv.T))

    def like(self, fxn, x, value: float):
        """zeros_like / full_like: a constant of one timestep, or a (T, B, ...) buffer."""
        if isinstance(x, Lin):
            return Lin({}, float(value))
        if self.conv.is_held_max(x) and "T" in self.conv.lead_in(fxn) and value == 0.0:
            return StepBuffer(self.conv.T)  # mem_update's output buffer on SPPF's pooled currents
        self.conv.refuse_held(x, fxn)
        if self.conv.is_tensor(x) and "T" in self.conv.lead_in(fxn) and value == 0.0:
            return StepBuffer(self.conv.T)
        if self.conv.is_tensor(x) and self.static_input():  # snntorch Leaky: mem = zeros_like(input_) at its
            return Lin({}, float(value))  # first call, in a loop over T written in forward on a static input
        raise FrontendError("zeros_like/full_like of an activation outside a loop over timesteps",
                            where=self.conv_where(fxn))

    def arith(self, op: str, fxn, a, b, alpha=1) -> Lin:
        la, lb = self._lin(a, fxn), self._lin(b, fxn)
        if op in ("add", "sub"):
            lb = lb.scaled(float(alpha) * (-1.0 if op == "sub" else 1.0))
            return la + lb
        if op == "rsub":
            return lb + la.scaled(-float(alpha))
        fa, fb = self._const_of(la), self._const_of(lb)
        if op == "mul":
            if fa is None and fb is None:
                hard = self._hard_reset(la, lb)
                if hard is not None:
                    return hard
                raise FrontendError("a product of two values of the loop (e.g. a hard reset v * (1 - spike)) is not "
                                    "SFA's IF neuron", where=self.conv_where(fxn),
                                    hint="use a soft reset, v = v - spike * v_threshold (SpikingJelly: v_reset=None)")
            return la.scaled(fb) if fb is not None else lb.scaled(fa)
        if op == "div":
            if fb is None or fb == 0.0:
                raise FrontendError("division by a value of the loop", where=self.conv_where(fxn))
            return la.scaled(1.0 / fb)
        raise FrontendError(f"{op} inside a loop over timesteps", where=self.conv_where(fxn))

    def compare(self, fxn, a, b, strict: bool, where: str) -> Lin:
        """A binary spike written as a comparison, `(v - th >= 0)` (`> 0`: strict): the fire of
        floor (strict) clamp(v - th + 1, 0, 1), one spike when v reaches th, in units where the
        threshold is 1 (the offset 1 - th is the neuron's c)."""
        w = self._lin(a, fxn) + self._lin(b, fxn).scaled(-1.0) + Lin({}, 1.0)
        if not w.terms:  # e.g. snntorch's reset of the first step, (0 - threshold > 0)
            return Lin({}, float(w.const > 1.0 if strict else w.const >= 1.0))
        stack = (getattr(fxn, "meta", None) or {}).get("nn_module_stack")
        path = list(stack.values())[-1][0] if stack else ""  # named after its module (snntorch's net.1)
        return self.fire(fxn, w, 1, 1.0, "strict" if strict else "floor", where, str(path) or fxn.name)

    def _hard_reset(self, la: Lin, lb: Lin) -> Lin | None:
        """`(1 - spike) * v` of a neuron's own step-t spike and membrane (SpikingJelly's hard reset
        to v_reset = 0: `v = (1 - spike) * v + spike * v_reset`): the atom ("r", chain, t), its
        membrane after the reset, or None when the product is not that."""
        for s, v in ((la, lb), (lb, la)):
            if s.const == 1.0 and len(s.terms) == 1:
                (key, coef), = s.terms.items()
                if key[0] == "s" and coef == -1.0 and key[1] in self.chains:
                    ch = self.chains[key[1]]
                    if ch.fired is not None and ch.fired[0] == key[2] and _same(v + Lin({}, ch.c), ch.fired[1]):
                        ch.hard = True
                        return Lin({("r", ch.key, key[2]): 1.0})
        return None

    def fire(self, fxn, u, D: int, norm: float, rounding: str, where: str, base: str) -> Lin:
        u = self._lin(u, fxn)
        for ch in self.chains.values():  # the membrane of a step compared again (snntorch's reset recomputes
            if ch.fired is not None and (ch.D, ch.rounding) == (int(D), rounding) and _same(u, ch.fired[1]):
                return Lin({("s", ch.key, ch.fired[0]): 1.0 / norm})  # the previous step's spike): its spikes
        xs = {k: v for k, v in u.terms.items() if k[0] == "x"}
        ss = {k: v for k, v in u.terms.items() if k[0] in ("s", "r")}
        keys = {k[1] for k in ss}
        static = {k[1] for k in xs if k[2] == STATIC}
        if not ss:  # first fire of a new neuron (u_0 = sum_i a_i X^i_0 + c), or a neuron that keeps nothing
            steps = sorted({k[2] for k in xs if k[2] != STATIC})
            if not steps and not static:
                raise FrontendError("the membrane reads no input of the loop", where=where)
            if static and steps:
                raise FrontendError("the membrane sums a value of one timestep and a value of every timestep",
                                    where=where, hint="feed the loop either x[t] or the same input at every step")
            if len(steps) > 1:
                raise FrontendError(f"the membrane sums inputs of timesteps {steps} and no spikes", where=where,
                                    hint="v = l * v + x[t] (+ other inputs of step t); spike = round(clamp(v / th, "
                                         "0, D)); v = v - spike * th")
            t, inputs = (steps[0] if steps else 0), {k[1]: v for k, v in xs.items()}
            ch = self._fresh(t, inputs, u.const, int(D), rounding) if t else None
            if ch is None and t:
                raise FrontendError(f"the neuron's first step reads timestep {t}", where=where,
                                    hint="loop over t = 0..T-1 in order")
            if ch is None:
                ch = Chain(len(self.chains), inputs, u.const, int(D), rounding, where, base)
                ch.static = bool(static)
                self.chains[ch.key] = ch
            elif t == 1:
                ch.leak = 0.0  # decay 0: nothing of step 0 is left at step 1
        else:
            if len(keys) != 1:
                raise FrontendError("the membrane mixes the spikes of two neurons", where=where)
            ch = self.chains[keys.pop()]
            t = ch.steps
            if t == 1 and ch.hard:
                ch.leak = u.terms.get(("r", ch.key, 0), 0.0)
                if -REL <= ch.leak - 1.0 <= REL:
                    ch.leak = 1.0
                if not 0.0 < ch.leak <= 1.0:
                    raise FrontendError(f"the membrane's decay {ch.leak:.4g} per timestep is outside (0, 1]",
                                        where=where)
            elif t == 1:
                x0, a0 = ch.first
                # a static input X (the same at every step) enters step 1 as (1 + l) X
                ch.leak = u.terms.get(("x", x0, STATIC), 0.0) / a0 - 1.0 if ch.static else \
                    u.terms.get(("x", x0, 0), 0.0) / a0
                if -REL <= ch.leak - 1.0 <= REL:
                    ch.leak = 1.0
                if -REL <= ch.leak <= REL:
                    ch.leak = 0.0
                if not 0.0 <= ch.leak <= 1.0:
                    raise FrontendError(f"the membrane's decay {ch.leak:.4g} per timestep is outside [0, 1] (the input "
                                        "of step 0 weighs that much of a fresh input at step 1)", where=where,
                                        hint="a leak l = 1 - 1/tau with tau >= 1: v = l * v + x[t]")
                # one spike of step 0 removes q at step 1: q = l (reset, then leak: SpikingJelly) in units of
                # the threshold, or q = the threshold subtracted after the leak (snntorch's order)
                ch.q = -u.terms.get(("s", ch.key, 0), 0.0)
                if abs(ch.q - ch.leak) <= REL * max(1.0, abs(ch.q)):
                    ch.q = ch.leak
                elif not ch.q > 0.0:
                    raise FrontendError(f"a spike adds {-ch.q:.4g} to the membrane of the next timestep", where=where,
                                        hint="reset by subtracting the threshold: v = v - spike * th")
        tx = (lambda s: STATIC) if ch.static else (lambda s: s)
        if t and ch.hard:  # u_t = leak * r_{t-1} + sum_i a_i X^i_t + c
            want = Lin({("x", x, tx(t)): a for x, a in ch.inputs.items()}, ch.c) + \
                Lin({("r", ch.key, t - 1): ch.leak})
            if not _same(u, want):
                raise FrontendError("the membrane after a hard reset is not v = l * v + x[t]", where=where,
                                    hint="v = v + (x[t] - v) / tau (or v * l + x[t]); spike = (v >= th); "
                                         "v = (1 - spike) * v")
        elif t:
            lk = ch.leak
            q = lk if ch.q is None else ch.q
            if ch.static:
                xw = Lin({("x", x, STATIC): a * sum(lk ** s for s in range(t + 1)) for x, a in ch.inputs.items()})
            else:
                xw = Lin({("x", x, s): a * lk ** (t - s) for x, a in ch.inputs.items() for s in range(t + 1)})
            want = xw + Lin({}, ch.c) + Lin({("s", ch.key, s): -(q * lk ** (t - 1 - s)) for s in range(t)})
            if not _same(u, want):
                raise FrontendError(_explain(u, want, ch, t), where=where,
                                    hint="snncc deploys (leaky) integrate-and-fire with soft reset: v = l * v + x[t]; "
                                         "spike = round(clamp(v / th, 0, D)); v = v - spike * th (0 <= l <= 1)")
            if (int(D), rounding) != (ch.D, ch.rounding):
                raise FrontendError("the neuron changes D or its rounding between timesteps", where=where)
        atom = ("s", ch.key, ch.steps)
        ch.fired = (ch.steps, u)
        ch.steps += 1
        return Lin({atom: 1.0 / norm})

    def static_input(self) -> bool:
        """The program's input has no time axis and none was made yet: a loop over T written in
        forward reads the same input at every step (snntorch's tutorial loop)."""
        return self.conv.T is None and not self.conv.layout

    def layer(self, fxn, call, where: str) -> Lin:
        """A layer applied inside the loop to one timestep's value (snntorch's idiom: the network
        called on the input at every step): the same layer on the step-t value of the same source
        at every step is one IR layer on that source, built once the source is (`node_of`)."""
        x = call.args[0]
        if len(x.terms) != 1 or x.const != 0.0 or abs(next(iter(x.terms.values())) - 1.0) > REL:
            raise FrontendError(f"{call.op} of a sum (or a scaled copy) of the loop's values inside a loop over T",
                                where=where, hint="apply a layer to one neuron's spikes (or one layer's output) "
                                                  "per timestep")
        (kind, key, t), = x.terms
        if t == STATIC:
            raise FrontendError(f"{call.op} of a value of every timestep inside the loop", where=where)
        sig = (call.op, kind, key, str(getattr(fxn, "target", "")), repr(getattr(fxn, "args", ())[1:]),
               repr(getattr(fxn, "kwargs", {})))
        d = self.layers.get(sig)
        if d is None:
            d = self.layers[sig] = Layer(f"~{len(self.layers)}", fxn, call, kind, key)
            self.layer_ids[d.id] = d
        return Lin({("x", d.id, t): 1.0})

    def node_of(self, key: str) -> str:
        """The IR node of an ("x", key, t) atom: key itself, or a layer applied in the loop (built
        on its source's IR node, the source first)."""
        if key in self.pooled:  # a max of currents read by anything but a stateless neuron: refused
            self.conv.tensor(self.pooled[key], None)
        d = self.layer_ids.get(key)
        if d is None:
            return key
        if d.node is None:
            src = self._build(self.chains[d.key]) if d.kind == "s" else self.node_of(d.key)
            self.conv._out_lead = None
            d.node = self.conv.tensor(getattr(self.conv, f"c_{d.call.op}")(d.fxn, src, *d.call.args[1:],
                                                                            **d.call.kwargs), d.fxn)
        return d.node

    def canon(self, name: str) -> str:
        """The first IR node computing the same value as `name` (same op, attributes, parameters
        and inputs): torch.export recomputes `conv(x)` at every step of a loop in forward."""
        if name in self._canon:
            return self._canon[name]
        n = self.conv.graph[name]
        key = (n.op, tuple(self.canon(i) for i in n.inputs), repr(sorted(n.attrs.items())), tuple(sorted(n.params)))
        out = name
        for other in self._canon_by.setdefault(key, []):
            o = self.conv.graph[other]
            if all(np.array_equal(np.asarray(n.params[k]), np.asarray(o.params[k])) for k in n.params):
                out = other
                break
        else:
            self._canon_by[key].append(name)
        self._canon[name] = out
        return out

    def jelly_if(self, fxn, x, v, threshold, reset, where: str) -> tuple:
        """SpikingJelly 2.0's multi-step `IFNode` with a spiking (heaviside) surrogate, which runs as
        the fused op `sj_if::forward(x_seq, v, threshold, reset, ...)`: per step h = v + x[t],
        spike = (h - threshold >= 0), v = h - spike * threshold (v_reset=None) or v = v_reset where
        it fired (a number: a hard reset, peers.jelly_reset). That is the peer neuron of peers.py at
        D = 1: floor(clamp(u / threshold, 0, 1)), u starting at 0 (soft) or v_reset (hard). Returns (spikes, None, None) for the op's (spikes, v, h)."""
        return self._jelly(fxn, x, v, threshold, reset, "IFNode", where, D=1, rounding="floor", leak=1.0)

    def jelly_lif(self, fxn, x, v, tau, decay_input, threshold, reset, where: str) -> tuple:
        """`LIFNode(step_mode='m')` with a heaviside surrogate, the fused op `sj_lif::forward(x_seq,
        v, tau, decay_input, threshold, reset, ...)`, v_reset=None: per step h = v - v / tau + x[t]
        (decay_input=False) or h = v + (x[t] - v) / tau (True), spike = (h >= threshold), v = h -
        spike * threshold: the IFNode's neuron with leak 1 - 1/tau, on x / tau when the input
        decays too (peers.jelly_leak)."""
        from snncc.frontend.peers import jelly_leak

        leak, gain = jelly_leak("LIFNode", tau, decay_input, where)
        return self._jelly(fxn, x, v, threshold, reset, "LIFNode", where, D=1, rounding="floor", leak=leak, gain=gain)

    def jelly_ilif(self, fxn, x, v, tau, count, lower, upper, threshold, where: str) -> tuple:
        """`ILIFNode(step_mode='m')`, the fused op `sj_ilif::forward(x_seq, v, tau, count, lower,
        upper, threshold, ...)`: per step h = (1 - 1/tau) v + x[t], c = round(clamp(h / threshold, 0,
        count)) (torch.round: half to even), v = h - c * threshold. lower/upper bound the
        straight-through gradient only."""
        from snncc.frontend.peers import jelly_leak

        leak, _ = jelly_leak("ILIFNode", tau, False, where)
        if float(count) != int(count) or not int(count) >= 1:
            raise FrontendError(f"ILIFNode spike count {count} is not a positive integer", where=where)
        return self._jelly(fxn, x, v, threshold, None, "ILIFNode", where, D=int(count), rounding="half_even",
                           leak=leak)

    def _jelly(self, fxn, x, v, threshold, reset, cls: str, where: str, D: int, rounding: str, leak: float,
               gain: float = 1.0) -> tuple:
        """A fused SpikingJelly multi-step node -> a stateful fire (the op's (spikes, v, h) -> (spikes, None, None))."""
        from snncc.frontend.peers import jelly_hard_reset, jelly_reset

        if reset is not None and D != 1:
            raise jelly_hard_reset(cls, reset, where)
        mode, beta = jelly_reset(reset, where)
        v0 = self._lin(v, fxn) if is_step_value(v) or _num(v) is not None else None
        if v0 is None or v0.terms or v0.const != beta:
            raise FrontendError(f"the {cls}'s membrane does not start at {beta:g}" +
                                (" (its v_reset)" if mode == "value" else ""), where=where,
                                hint="call spikingjelly's functional.reset_net(model) before compiling")
        if "T" not in self.conv.lead_in(fxn):
            raise FrontendError(f"a multi-step {cls} on a value without a time axis", where=where,
                                hint="give it (T, B, ...) tensors (see --input-layout)")
        th = float(threshold)
        if not th > 0:
            raise FrontendError(f"threshold {th} must be positive", where=where)
        name = self.conv.c_peer_neuron(fxn, self.conv.tensor(x, fxn), D, th, f"spikingjelly {cls}", rounding=rounding,
                                       leak=leak, gain=gain, reset=mode, beta=beta)
        return name, None, None

    def copy_(self, fxn, dst, src):
        if not isinstance(dst, Slot):
            raise FrontendError("in-place copy into an activation is not supported", where=self.conv_where(fxn))
        dst.buf.slots[dst.t] = self._lin(src, fxn)
        return dst.buf

    def slot(self, buf: StepBuffer, index: int) -> Slot:
        return Slot(buf, int(index) % buf.T)

    def buffer_node(self, fxn, buf: StepBuffer, where: str) -> str:
        """The IR node of a filled output buffer (gathered once)."""
        if buf.node is None:
            buf.node = self.gather(fxn, [buf.slots.get(t) for t in range(buf.T)], where)
        return buf.node

    def gather(self, fxn, items, where: str) -> str:
        """T per-step values (stack, or a filled buffer) -> one IR node laid out (T, B, ...)."""
        if self.static_input():  # the loop in forward over a static input: T is its number of steps
            self.conv.T = len(items)
        T = self.conv.T
        if len(items) != T:
            raise FrontendError(f"{len(items)} timesteps gathered where the model has T = {T}", where=where)
        atoms = [self._lin(v, fxn) for v in items]
        if any(len(v.terms) != 1 or v.const != 0.0 for v in atoms):
            raise FrontendError("the values gathered over time are not one layer's or one neuron's output per "
                                "timestep", where=where, hint="stack the spikes of one neuron, in time order")
        (kind, key, _), coef = next(iter(atoms[0].terms.items()))
        expect = [{(kind, key, t): coef} for t in range(T)]
        if any(not _same(Lin(e), v) for e, v in zip(expect, atoms)):
            sources = {k[:2] for v in atoms for k in v.terms}
            what = f"come from {len(sources)} different neurons or layers" if len(sources) > 1 else \
                "are not in time order (or are scaled differently)"
            raise FrontendError(f"the values gathered over time {what}", where=where,
                                hint="gather one neuron's (or one layer's) value of every timestep, in order")
        if kind == "x":
            node = self.node_of(key)
        else:
            node = self._build(self.chains[key])
        if abs(coef - 1.0) > REL:
            node = self.conv.add(fxn, "scale", [node], {}, {"factor": np.asarray(coef)}, base=f"{fxn.name}_scale")
        return node

    # ---- helpers -------------------------------------------------------------------------------
    def _fresh(self, t: int, inputs: dict, c: float, D: int, rounding: str) -> Chain | None:
        """The neuron whose step t reads these inputs with no spike term: one that fired steps
        0..t-1 on the same inputs and keeps nothing between timesteps (decay 0), or None."""
        for ch in self.chains.values():
            if ch.steps == t and (t == 1 or ch.leak == 0.0) and (ch.D, ch.rounding) == (D, rounding) and \
                    _same(Lin({("x", k, 0): v for k, v in inputs.items()}, c),
                          Lin({("x", k, 0): v for k, v in ch.inputs.items()}, ch.c)):
                return ch
        return None

    def _current(self, ch: Chain) -> str:
        """The fire's input: sum_i a_i X^i (a scale where a_i != 1, and on a summed spike tensor:
        the IR adds currents)."""
        many = len(ch.inputs) > 1
        parts = []
        for i, (x, a) in enumerate(ch.inputs.items()):
            x = self.node_of(x)
            if abs(a - 1.0) > REL or many and self.conv.graph[x].kind != "current":
                x = self.conv.add(None, "scale", [x], {}, {"factor": np.asarray(a)}, base=f"{ch.base}_in")
            parts.append(x)
        shapes = {self.conv.graph[x].shape for x in parts}
        if len(shapes) > 1:
            raise FrontendError(f"the membrane sums inputs of shapes {sorted(shapes)}", where=ch.where,
                                hint="sum inputs of one shape (broadcast them before the loop)")
        return self.conv.add(None, "add", parts, base=f"{ch.base}_sum") if many else parts[0]

    def _build(self, ch: Chain) -> str:
        if ch.node is None:
            if ch.steps != self.conv.T:
                raise FrontendError(f"the neuron fired on {ch.steps} of T = {self.conv.T} timesteps", where=ch.where)
            stateful = ch.leak != 0.0 and self.conv.T > 1  # decay 0 or T = 1: a fresh membrane every timestep
            if any(x in self.pooled for x in ch.inputs):
                ch.node = self._fire_pooled(ch, stateful)
                return ch.node
            attrs = {"D": ch.D, "norm": 1.0, "rounding": ch.rounding, "stateful": stateful, "beta": float(ch.c),
                     "leak": float(ch.leak) if stateful else 1.0, "reset": "value" if ch.hard else "subtract"}
            if ch.q is not None and ch.q != ch.leak:  # snntorch's order: u = l u + X - q s, fires at u + c > 1
                attrs.update(theta=float(ch.q), beta=float(ch.q - 1.0 + ch.c), leak_first=True, stateful=True)
            ch.node = self.conv.add(None, "fire", [self._current(ch)], attrs, base=ch.base)
        return ch.node

    def _fire_pooled(self, ch: Chain, stateful: bool) -> str:
        """A loop neuron on a held-back max of currents (SpikeYOLO's SPPF read by mem_update): the
        max commutes with a stateless neuron (T = 1, or decay 0), which fires on each pooled source
        (`Converter.fire_pooled`); a membrane carried over the steps does not commute with it."""
        (x, a), *more = ch.inputs.items()
        pooled = self.pooled[x] if x in self.pooled else next(self.pooled[k] for k in ch.inputs if k in self.pooled)
        if stateful:
            raise FrontendError(f"max pooling of a current before a stateful neuron is not deployable: the neuron "
                                f"carries its membrane over the T = {self.conv.T} time steps (leak {ch.leak:g}), and "
                                "the integral of a max is not the max of the integrals", where=pooled.where,
                                hint="max-pool the neuron's spikes (conv-bn-neuron-maxpool), or compile at T = 1")
        if more or abs(a - 1.0) > REL or ch.c != 0.0:
            raise FrontendError("a max of currents scaled, offset or summed with other inputs inside a loop neuron "
                                "is not deployable", where=pooled.where,
                                hint="feed the loop the pooled (and concatenated) currents alone: mem = x[t]")
        return self.conv.fire_pooled(None, pooled, ch.D, 1.0, ch.rounding, ch.base)

    def _lin(self, v, fxn) -> Lin:
        if isinstance(v, Lin):
            return v
        n = _num(v)
        if n is not None:
            return Lin({}, n)
        if isinstance(v, Slot) and len(v.buf.slots) == v.buf.T:  # out[t] of a filled buffer (e.g. a residual)
            return Lin({("x", self.buffer_node(fxn, v.buf, self.conv_where(fxn)), v.t): 1.0})
        if isinstance(v, (StepBuffer, Slot)):
            raise FrontendError("the output buffer is read inside the loop", where=self.conv_where(fxn))
        if self.conv.is_tensor(v) and self.static_input():  # the same value at every step of the loop
            return Lin({("x", self.canon(v), STATIC): 1.0})
        raise FrontendError("a whole tensor meets one timestep's value inside a loop over T", where=self.conv_where(fxn),
                            hint="keep only the neuron inside the loop; run layers on the whole (T, B, ...) "
                                 "tensor or on x.flatten(0, 1)")

    @staticmethod
    def _const_of(lin: Lin) -> float | None:
        return lin.const if not lin.terms else None

    def conv_where(self, fxn) -> str:
        from snncc.frontend.calls import where

        return where(fxn) if fxn is not None else "loop over timesteps"


def _same(u: Lin, w: Lin) -> bool:
    scale = max([1.0] + [abs(v) for v in list(u.terms.values()) + list(w.terms.values())])
    keys = set(u.terms) | set(w.terms)
    return all(abs(u.terms.get(k, 0.0) - w.terms.get(k, 0.0)) <= REL * scale for k in keys) and \
        abs(u.const - w.const) <= REL * max(1.0, abs(w.const))


def _explain(u: Lin, w: Lin, ch: Chain, t: int) -> str:
    if t >= 1:
        for x, a in ch.inputs.items():
            now, prev = u.terms.get(("x", x, t), 0.0), u.terms.get(("x", x, t - 1), 0.0)
            if abs(now - a) > REL * max(1.0, abs(a)):
                return (f"an input enters the membrane with factor {now:.4g} at timestep {t} and {a:.4g} at "
                        "timestep 0 (the same inputs, the same factors, at every step)")
            if abs(prev - a * ch.leak) > REL * max(1.0, abs(a)):
                if x != ch.first[0]:
                    return (f"the inputs decay differently: at timestep {t} the step-{t - 1} value of input {x} "
                            f"weighs {prev / a:.4g} of a fresh one, of input {ch.first[0]} {ch.leak:.4g} (one leak "
                            "per neuron, on the sum of its inputs: a synaptic current filter is not deployed)")
                return (f"the membrane's decay changes over time: at timestep {t} the input of step {t - 1} weighs "
                        f"{prev / a:.4g} of a fresh input, at timestep 1 {ch.leak:.4g} (one leak per neuron)")
        s = u.terms.get(("s", ch.key, t - 1), 0.0)
        if abs(s + ch.leak) > REL:
            return (f"the reset removes {-s:.4g} x the spike count from the membrane where a soft reset by one "
                    f"threshold (then the decay {ch.leak:.4g}) removes {ch.leak:.4g} (divide the membrane by the "
                    "threshold that it subtracts)")
    if abs(u.const - w.const) > REL * max(1.0, abs(w.const)):
        return f"a constant {u.const - w.const:.4g} builds up in the membrane over time (put it in the layer bias)"
    return "the membrane update over time is not SFA's integrate-and-fire with soft reset"
