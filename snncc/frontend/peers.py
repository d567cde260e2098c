"""Neuron and pooling modules of peer SNN libraries, read by the fx front end.

Owns the mapping of a peer's module to a canonical call (`peer_neuron`, `pool`) and the
converter mixin (`PeerOps`) that turns a `peer_neuron` call into an IR `fire` node. No peer
library is imported: modules are recognised by their class's module path and read through their
public attributes, so snncc runs without sinabs or SpikingJelly installed.

- **sinabs** (3.1.3) `IAFSqueeze`: integrate-and-fire, v += x each time step, threshold
  `spike_threshold`. `spike_fn` `MultiSpike` fires floor(v / theta) spikes per step (it
  *truncates*, where SFA rounds: the IR neuron gets rounding `floor` directly, and
  `round_to_floor` leaves it alone); `MaxSpike(k)` caps that at k; `SingleSpike` at 1.
  `MultiSpike` has no cap: it becomes D = 2**15, the IR's largest window (the bound snncc's Speck
  backend also uses for an uncapped read-out; a 16-bit chip membrane cannot exceed it).
  `reset_fn` must be `MembraneSubtract()` (subtract theta per spike, the deployed neuron's
  reset); `MembraneReset` (to zero), `min_v_mem`, `tau_syn` and a per-neuron threshold are refused
  in one line. The membrane carries across time steps (a stateful IR neuron), starting at 0.
  `SumPool2d` is a sum pool. Plain `IAF` takes (B, T, ...) tensors, which nn.Conv2d cannot
  follow; it is refused with a pointer to `IAFSqueeze` (the same neuron on (B*T, ...)).
- **SpikingJelly** (2.0.0), every neuron module checked here once (`check_jelly`, before
  tracing; the one place SpikingJelly nodes are accepted or refused):
  `IFNode` with `v_reset=None` (soft reset), `v_threshold` theta: one spike per step when
  v >= theta, v -= theta (D = 1, floor, stateful); `LIFNode(decay_input=False, v_reset=None)`:
  the same neuron with leak 1 - 1/tau (h = v - v/tau + x); `LIFNode(decay_input=True,
  v_reset=None)` (h = v + (x - v)/tau = (1 - 1/tau) v + x/tau): leak 1 - 1/tau on the input
  current scaled by 1/tau (an IR `scale` before the fire, folded into the producing weights by
  fold_scale); `ILIFNode` (I-LIF: h = (1 - 1/tau) v + x, c = round(clip(h / theta, 0, D)) with
  D = its MultiLevelSpikeCount's max_spike_count, v = h - c theta; half_even, stateful, leak
  1 - 1/tau; it has no decay_input option). A hard reset (`v_reset` a number, SpikingJelly 2.0's
  default 0.0) of a binary IFNode/LIFNode is the IR's reset "value" with beta = v_reset
  (`jelly_reset`: the membrane starts at v_reset, leaks toward it, is set to it where the node
  fired). Refused in one line: a hard reset of a multi-level node, tau < 1, IFNode/LIFNode with
  MultiLevelSpikeCount and v_threshold != 1 (SpikingJelly counts
  round(h - v_threshold) and subtracts v_threshold per spike: SFA only at 1), and every other node
  type. SpikingJelly's Heaviside fires on v - theta >= 0, as the IR does. The multi-step
  nodes (`step_mode='m'`) are the same neurons over the whole time axis: the fused ops
  `sj_if/sj_lif/sj_ilif::forward` (time_loop.TimeLoop.jelly_*), or a Python loop with a
  MultiLevelSpikeCount surrogate, which time_loop re-rolls like research code's loops.

Time: each call of the network is one time step for every neuron (sinabs' squeezed layers
flatten (B, T) into the batch axis; the front end traces one step per sample and the compiled
graph runs T of them with the membranes carried).
"""

from __future__ import annotations

import numpy as np
import torch.nn as nn

from snncc.errors import FrontendError
from snncc.frontend.calls import Call

MULTISPIKE_D = 2 ** 15  # the IR's largest D (snncc.ir.ops fire bounds)

SINABS_NEURONS = ("IAF", "IAFSqueeze", "LIF", "LIFSqueeze", "ExpLeak", "ExpLeakSqueeze")


def _library(m: nn.Module) -> str:
    mod = type(m).__module__ or ""
    if mod.startswith("sinabs."):
        return "sinabs"
    if mod.startswith("spikingjelly."):
        return "spikingjelly"
    if mod.startswith("snntorch._neurons"):
        return "snntorch"
    return ""


def exported_refusal(nodes) -> tuple[object, str, str] | None:
    """A peer's layer in a torch.export program that snncc reads from the module only: (the first
    node it computed, by its `nn_module_stack`; the message; the hint), or None. sinabs' neurons:
    their squeezed layers run on (B*T, ...) batches (a program cannot be exported at batch 1), and
    the export unrolls each layer's membrane state over T as buffer arithmetic, no neuron left to
    read (re-rolling it is not done: sinabs flattens B-major, and MultiSpike is (v > 0) * floor(v /
    theta))."""
    for n in nodes:
        stack = n.meta.get("nn_module_stack")
        if not stack:
            continue
        path, cls = list(stack.values())[-1]
        cls = cls if isinstance(cls, str) else f"{getattr(cls, '__module__', '')}.{getattr(cls, '__qualname__', cls)}"
        name = cls.rsplit(".", 1)[-1]
        if cls.startswith("sinabs.") and name in SINABS_NEURONS:
            return (n, f"sinabs {name} layer '{path}' in a torch.export program: the export unrolls its membrane "
                       "state over the (B*T, ...) batch, which snncc reads from the sinabs module, not from a .pt2",
                    "save model.state_dict() and compile it with --model-def file.py:factory --input-kind spike "
                    "(T from num_timesteps), or call snncc.compile(model, example) in Python")
    return None


def is_peer_module(m: nn.Module) -> bool:
    """A peer module the fx tracer keeps as a leaf (its forward loops over time / holds state)."""
    lib = _library(m)
    if lib == "spikingjelly" and getattr(m, "step_mode", "s") == "m":
        return False  # multi-step nodes run over (T, B, ...) tensors: snncc.frontend.time_loop reads them
    return bool(lib) and (type(m).__name__ in SINABS_NEURONS + ("SumPool2d",)
                          or lib == "spikingjelly" and "Node" in type(m).__name__ or lib == "snntorch")


def has_peer_neurons(model: nn.Module) -> bool:
    return any(is_peer_module(m) and type(m).__name__ != "SumPool2d" for m in model.modules())


def loops_in_forward(model: nn.Module, example) -> bool:
    """True when one forward calls a peer neuron more than once: the loop over T is written in the
    model's forward (snntorch's tutorial, `for step in range(T): spk, mem = net(x)`), which
    torch.export unrolls (frontend/time_loop.py) and fx would trace as T separate layers."""
    import torch

    calls, hooks = {}, []
    for m in model.modules():
        if is_peer_module(m) and type(m).__name__ != "SumPool2d":
            hooks.append(m.register_forward_hook(lambda mod, i, o: calls.__setitem__(id(mod), calls.get(id(mod), 0) + 1)))
    try:
        with torch.no_grad():
            model(example)
    except Exception:  # noqa: BLE001 - the front end that traces it reports the failure
        return False
    finally:
        for h in hooks:
            h.remove()
    return any(n > 1 for n in calls.values())


def fresh_state(model: nn.Module) -> None:
    """snntorch neurons back to the state they are built in (an empty membrane, sized at the first
    call: `mem = zeros_like(input_)`), as a model is when exported fresh: after a run their membrane
    keeps that run's batch shape and the export reads it as a constant."""
    import torch

    for m in model.modules():
        if _library(m) == "snntorch" and isinstance(getattr(m, "mem", None), torch.Tensor):
            m.mem = torch.zeros(0)


def _scalar(v, what: str, name: str) -> float:
    try:
        t = v.detach() if hasattr(v, "detach") else v
        if hasattr(t, "numel") and t.numel() != 1:
            raise FrontendError(f"{what} has {t.numel()} values; snncc takes one threshold per layer",
                                where=name, hint="use a scalar threshold")
        return float(t)
    except (TypeError, ValueError):
        raise FrontendError(f"{what} {v!r} is not a number", where=name) from None


def _sinabs_neuron(m: nn.Module, name: str) -> tuple[int, float]:
    """(D, theta) of a sinabs IAF layer, or FrontendError naming what differs."""
    if type(m).__name__ != "IAFSqueeze":
        raise FrontendError(f"sinabs {type(m).__name__}: snncc reads IAFSqueeze (integrate-and-fire on (B*T, ...) "
                            "tensors)", where=name, hint="use sinabs.layers.IAFSqueeze(num_timesteps=T)")
    reset = getattr(m, "reset_fn", None)
    if type(reset).__name__ != "MembraneSubtract" or getattr(reset, "subtract_value", None) is not None:
        raise FrontendError(f"reset_fn {reset!r}: snncc's neuron subtracts one threshold per spike",
                            where=name, hint="use sinabs.activation.MembraneSubtract()")
    if getattr(m, "min_v_mem", None) is not None:
        raise FrontendError(f"min_v_mem={_scalar(m.min_v_mem, 'min_v_mem', name)}: a lower membrane bound is not modelled", where=name,
                            hint="train without min_v_mem (snncc's Speck backend sets the chip's bound itself)")
    if getattr(m, "tau_syn", None) is not None:
        raise FrontendError("tau_syn: a synaptic current filter is not an integrate-and-fire neuron", where=name)
    fn = getattr(m, "spike_fn", None)
    kind = fn.__name__ if isinstance(fn, type) else type(fn).__name__
    if kind == "MultiSpike":
        D = MULTISPIKE_D
    elif kind == "MaxSpike":
        D = int(fn.max_num_spikes_per_bin)
    elif kind == "SingleSpike":
        D = 1
    else:
        raise FrontendError(f"spike_fn {kind}: snncc reads MultiSpike, MaxSpike and SingleSpike", where=name)
    if not 1 <= D <= MULTISPIKE_D:
        raise FrontendError(f"MaxSpike({D}): the cap must be in 1..{MULTISPIKE_D}", where=name)
    theta = _scalar(m.spike_threshold, "spike_threshold", name)
    return D, theta


JELLY_DEPLOYED = ("IFNode", "LIFNode", "ILIFNode")


def jelly_dynamics(m: nn.Module, name: str) -> tuple[float, float]:
    """(leak, input gain) of a SpikingJelly neuron module ((1, 1) for IFNode), or FrontendError
    naming what differs."""
    cls = type(m).__name__
    if cls not in JELLY_DEPLOYED:
        tau = getattr(m, "tau", None)
        what = f"a leaky neuron (membrane decay 1 - 1/tau = {1 - 1 / tau:.4g} between timesteps) " \
            if isinstance(tau, (int, float)) and tau else ""
        raise FrontendError(f"SpikingJelly {cls} is {what or 'a neuron '}without a deployed counterpart; snncc deploys "
                            "IFNode, LIFNode and ILIFNode with soft reset", where=name,
                            hint="train with IFNode/LIFNode(v_reset=None) or ILIFNode")
    multilevel = type(getattr(m, "surrogate_function", None)).__name__ == "MultiLevelSpikeCount"
    if getattr(m, "v_reset", None) is not None and (multilevel or cls == "ILIFNode"):
        raise jelly_hard_reset(cls, m.v_reset, name)
    if cls != "ILIFNode" and getattr(m, "step_mode", "s") == "m" and multilevel:
        th = _scalar(m.v_threshold, "v_threshold", name)
        if th != 1.0:
            raise FrontendError(f"{cls}(v_threshold={th:g}) with MultiLevelSpikeCount fires round(h - v_threshold) "
                                "spikes and subtracts v_threshold per spike: SFA's neuron (round(h / theta), minus "
                                "theta per spike) only when v_threshold = 1", where=name,
                                hint="use v_threshold=1.0 (scale the weights instead), or ILIFNode")
    if cls == "IFNode":
        return 1.0, 1.0
    return jelly_leak(cls, m.tau, getattr(m, "decay_input", False), name)


def jelly_leak(cls: str, tau, decay_input, name: str) -> tuple[float, float]:
    """(leak, input gain) of a SpikingJelly LIF-family node with soft reset: leak = 1 - 1/tau;
    the gain is 1 with decay_input=False (h = v - v/tau + x) and 1/tau with decay_input=True
    (h = v + (x - v)/tau = (1 - 1/tau) v + x/tau)."""
    tau = float(tau)
    if not 1.0 <= tau < float("inf"):
        raise FrontendError(f"{cls} tau={tau}: the decay 1 - 1/tau must be in [0, 1] (tau >= 1)", where=name)
    return 1.0 - 1.0 / tau, (1.0 / tau if bool(decay_input) else 1.0)


def check_jelly(model: nn.Module) -> None:
    """Refuse, in one line naming the module, any SpikingJelly neuron without a deployed counterpart
    (before tracing, so the user sees the neuron instead of a fused kernel)."""
    for path, m in model.named_modules():
        if _library(m) == "spikingjelly" and "Node" in type(m).__name__:
            jelly_dynamics(m, f"module {path or '<root>'}")


def _jelly_neuron(m: nn.Module, name: str) -> tuple:
    """(D, theta, rounding, leak, input gain, reset mode, beta) of a single-step SpikingJelly node."""
    cls = type(m).__name__
    leak, gain = jelly_dynamics(m, name)
    theta = _scalar(m.v_threshold, "v_threshold", name)
    if cls == "ILIFNode":
        return int(m.surrogate_function.max_spike_count), theta, "half_even", leak, gain, "subtract", 0.0
    if type(getattr(m, "surrogate_function", None)).__name__ == "MultiLevelSpikeCount":
        raise FrontendError(f"{cls} with MultiLevelSpikeCount in single-step mode: snncc reads multi-level "
                            "SpikingJelly neurons over the whole time axis", where=name,
                            hint=f"use {cls}(step_mode='m') on (T, B, ...) tensors (see --input-layout)")
    return 1, theta, "floor", leak, gain, *jelly_reset(getattr(m, "v_reset", None), name)


def jelly_hard_reset(cls: str, v_reset, name: str) -> FrontendError:
    """The refusal of a multi-level SpikingJelly node with a hard reset (single- or multi-step)."""
    return FrontendError(f"{cls}(v_reset={v_reset}) with a multi-level spike count resets to a value (a hard "
                         "reset); snncc's multi-spike neuron subtracts the threshold per spike", where=name,
                         hint=f"use neuron.{cls}(v_reset=None) (soft reset)")


def jelly_reset(v_reset, name: str) -> tuple[str, float]:
    """(IR reset mode, beta) of a binary SpikingJelly IF/LIF node: v_reset=None subtracts the
    threshold ("subtract", 0); a number v_reset is a hard reset to it (IR "value" with beta =
    v_reset: the membrane starts at v_reset, leaks toward it and is set to it where the node fired)."""
    if v_reset is None:
        return "subtract", 0.0
    return "value", _scalar(v_reset, "v_reset", name)


def _snntorch_neuron(m: nn.Module, name: str) -> tuple:
    """(D, theta, rounding, leak, input gain, reset mode, beta, leak_first, pair) of an snntorch
    `Leaky` (1.0): mem = clamp(beta, 0, 1) * mem + x - reset * threshold, reset = the previous
    step's spike (the threshold subtracted after the leak: IR leak_first), spike = mem > threshold
    (rounding "strict"), D = 1. reset_mechanism "zero" (mem = beta * (1 - reset) * mem + x) is the
    IR's reset "value" with beta 0, "none" no reset. `pair`: output=True returns (spk, mem)."""
    cls = type(m).__name__
    if cls != "Leaky":
        raise FrontendError(f"snntorch {cls}: snncc reads snntorch.Leaky", where=name,
                            hint="use snn.Leaky(beta, init_hidden=True)")
    if not getattr(m, "init_hidden", False):
        raise FrontendError("snntorch Leaky with init_hidden=False takes its membrane as an argument", where=name,
                            hint="use snn.Leaky(beta, init_hidden=True): the membrane held in the module")
    for attr, ok, what in (("inhibition", False, "inhibition"), ("state_quant", False, "a quantised membrane"),
                           ("reset_delay", True, "reset_delay=False")):
        if bool(getattr(m, attr, ok)) != ok:
            raise FrontendError(f"snntorch Leaky with {what} is not read", where=name)
    if _scalar(getattr(m, "graded_spikes_factor", 1.0), "graded_spikes_factor", name) != 1.0:
        raise FrontendError("snntorch Leaky with graded_spikes_factor != 1 is not read", where=name)
    mode = {0: ("subtract", True), 1: ("value", False), 2: ("none", False)}[int(m.reset_mechanism_val)]
    leak = min(max(_scalar(m.beta, "beta", name), 0.0), 1.0)
    theta = _scalar(m.threshold, "threshold", name)
    return 1, theta, "strict", leak, 1.0, mode[0], 0.0, mode[1] and leak != 1.0, bool(m.output)


def module_call(m: nn.Module, x, name: str) -> Call | None:
    """The canonical call of a peer module, None when `m` is not one."""
    lib = _library(m)
    if not lib or not is_peer_module(m):
        return None
    cls = type(m).__name__
    if cls == "SumPool2d":
        if getattr(m, "ceil_mode", False):
            raise FrontendError("SumPool2d with ceil_mode=True is not supported", where=name)
        return Call("pool", (x, m.kernel_size, m.stride, 0, False, True, 1), {})
    leak_first, pair = False, False
    if lib == "snntorch":
        D, theta, rounding, leak, gain, reset, beta, leak_first, pair = _snntorch_neuron(m, name)
    elif lib == "sinabs":
        D, theta, rounding, leak, gain, reset, beta = (*_sinabs_neuron(m, name), "floor", 1.0, 1.0, "subtract", 0.0)
    else:
        D, theta, rounding, leak, gain, reset, beta = _jelly_neuron(m, name)
    if not theta > 0:
        raise FrontendError(f"threshold {theta} must be positive", where=name)
    return Call("peer_neuron", (x, D, theta, f"{lib} {cls}", rounding, leak, gain, reset, beta, leak_first, pair), {})


class PeerOps:
    """Converter mixin: `peer_neuron` -> a stateful `fire` node (floor counting unless the peer
    rounds), on its input current times `gain` (SpikingJelly's decay_input=True: an IR `scale`)."""

    def c_peer_neuron(self, fxn, x, D, theta, what, rounding="floor", leak=1.0, gain=1.0, reset="subtract",
                      beta=0.0, leak_first=False, pair=False):
        if gain != 1.0:
            x = self.add(fxn, "scale", [self.tensor(x, fxn)], {}, {"factor": np.asarray(float(gain))},
                         base=f"{fxn.name}_in")
        name = self.c_neuron(fxn, x, D, 1.0, rounding, True)
        a = self.graph[name].attrs
        a.update(theta=float(theta), leak=float(leak), reset=reset, beta=float(beta), leak_first=bool(leak_first))
        self.graph.meta.setdefault("peer_neurons", {})[name] = what
        return (name, None) if pair else name  # (spikes, membrane): the membrane is not deployed



def declared_timesteps(model: nn.Module) -> int | None:
    """T of a model whose sinabs squeezed layers were built with `num_timesteps=T` (they reshape
    (B*T, ...) to (B, T, ...)), None when none says; layers that disagree are refused."""
    ts = {getattr(m, "num_timesteps", None) for m in model.modules() if _library(m) == "sinabs"}
    ts = {t for t in ts if isinstance(t, int) and t > 0}
    if len(ts) > 1:
        raise FrontendError(f"sinabs layers built with different num_timesteps {sorted(ts)}", where="model",
                            hint="build every squeezed layer with the same num_timesteps=T")
    return ts.pop() if ts else None


def trace_batch(model: nn.Module, batch: int) -> int:
    """The example batch for tracing: sinabs' squeezed layers reshape (B*T, ...) to (B, T, ...), so
    the batch must be a multiple of every `num_timesteps` / `batch_size` they were built with."""
    import math

    for m in model.modules():
        if _library(m) == "sinabs":
            for k in ("num_timesteps", "batch_size"):
                v = getattr(m, k, None)
                if isinstance(v, int) and v > 0:
                    batch = math.lcm(batch, v)
    return batch
