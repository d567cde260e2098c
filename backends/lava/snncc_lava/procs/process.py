"""Process interfaces: `WindowBurstIF`, the deployed SFA neuron (docs/design.md §2) as a Lava process,
`SpikeProduct`, the window-count product of attention, and `Recorder`, the read-out (both below).

Integrate-and-fire with subtractive reset that integrates one window of D sub-steps, then emits
its count n = clip(floor(v / theta), 0, D) during the next window: as n unary spikes in the
first n sub-steps ("burst"), or as one graded message of payload n in the first sub-step
("graded"). With `relay=True` it is a residual-stream relay: it sends the window's value
itself (input + const + bias, no threshold, no clip) as one graded message. Windows of this population start at time step `start + 1`; `windows` windows are
integrated (samples are streamed one after another, `period` windows (= T) each; a stateful
neuron's carried membrane is reset at every sample boundary).

Parameters of both precisions live on the one process (Lava requires every Var to exist in every
model): theta/beta/bias/const are read by the floating_pt model, vth/bias_mant/bias_exp/v_init (the
integers of `snncc_lava.fixed.QPopulation`) by the fixed_pt model; pass `fixed=` to set them.
"""

from __future__ import annotations

import numpy as np

from snncc_lava import compat

compat.install()

from lava.magma.core.process.ports.ports import InPort, OutPort  # noqa: E402
from lava.magma.core.process.process import AbstractProcess  # noqa: E402
from lava.magma.core.process.variable import Var  # noqa: E402

EMIT_MODES = ("burst", "graded")


RESETS = ("subtract", "value", "leak_first", "none")  # WindowBurstIF.reset_mode


class WindowBurstIF(AbstractProcess):
    def __init__(self, *, shape: tuple, D: int, theta: float, beta: float, bias: np.ndarray,
                 const: np.ndarray, start: int, windows: int, period: int, stateful: bool,
                 emit: str = "burst", fixed: dict | None = None, relay: bool = False,
                 leak: float = 1.0, reset: str = "subtract", strict: bool = False, cap: int | None = None,
                 name: str | None = None) -> None:
        if emit not in EMIT_MODES:
            raise ValueError(f"emit must be one of {EMIT_MODES}, got {emit!r}")
        super().__init__(shape=shape, name=name)
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.D = Var(shape=(1,), init=int(D))  # sub-steps per window (the network's clock)
        self.cap = Var(shape=(1,), init=int(D if cap is None else cap))  # at most cap spikes per window
        self.theta = Var(shape=(1,), init=float(theta))
        self.beta = Var(shape=(1,), init=float(beta))
        self.bias = Var(shape=shape, init=np.broadcast_to(np.asarray(bias, float), shape).copy())
        self.const = Var(shape=shape, init=np.broadcast_to(np.asarray(const, float), shape).copy())
        # not `start`: that name is a method of every process model
        self.offset = Var(shape=(1,), init=int(start))
        self.windows = Var(shape=(1,), init=int(windows))
        self.period = Var(shape=(1,), init=int(period))
        self.stateful = Var(shape=(1,), init=int(bool(stateful)))
        self.leak = Var(shape=(1,), init=float(leak))  # carried residual's factor between windows (floating_pt)
        # 0 subtract, 1 value (set to beta where it fired), 2 leak_first, 3 none (snncc_lava.fixed.next_membrane)
        self.reset_mode = Var(shape=(1,), init=RESETS.index(reset))
        self.strict = Var(shape=(1,), init=int(bool(strict)))  # spikes on v > k theta
        self.graded = Var(shape=(1,), init=int(emit == "graded" or relay))
        self.relay = Var(shape=(1,), init=int(bool(relay)))  # send the window value itself (no fire)
        fx = fixed or {}
        self.vth = Var(shape=(1,), init=int(fx.get("vth", 1)))  # effective threshold vth << 6
        self.bias_mant = Var(shape=shape, init=np.broadcast_to(np.asarray(fx.get("bias_mant", 0), np.int32), shape).copy())
        self.bias_exp = Var(shape=(1,), init=int(fx.get("bias_exp", 0)))
        self.v_init = Var(shape=(1,), init=int(fx.get("v_init", 0)))  # beta in membrane units
        self.leak_mant = Var(shape=(1,), init=int(fx.get("leak_mant", 4096)))  # fixed_pt leak x 2**12
        self.u = Var(shape=shape, init=0.0)  # input integrated in the current window
        self.carry = Var(shape=shape, init=0.0)  # membrane kept across windows (stateful)
        self.n = Var(shape=shape, init=0.0)  # count being emitted in this window


class SpikeProduct(AbstractProcess):
    """The window-count product of 2-3 spiking populations (attention), a graded source.

    Operand i arrives unsynapsed on `a_in{i}` (the flat spike train of its population, emitting
    window w during steps starts[i] + (w+1) D + 1 .. starts[i] + (w+2) D, burst or graded) and is
    summed per window; `index{i}` gathers the population's counts into the operand tensor of shape
    `shape{i}` (the reshape/permute layout ops between them). On step start + (w+2) D, with start =
    max(starts), the process sends scale * (a @ b) (2 operands), (a @ b) @ c (order 'left') or
    a @ (b @ c) ('right') of window w, flattened, as one graded message; zero on other steps.
    `operands`: (index, shape, start, population size) each. Unused third operand: a port of
    shape (1,) left unconnected (it receives zeros). floating_pt multiplies by `scale`; fixed_pt
    sends the raw integer product (the scale is folded into the weights of its projections).
    """

    def __init__(self, *, shape: tuple, operands: list[tuple[np.ndarray, tuple, int, int]], order: str,
                 scale: float, D: int, windows: int, name: str | None = None) -> None:
        if not 2 <= len(operands) <= 3:
            raise ValueError(f"a spike product takes 2 or 3 operands, got {len(operands)}")
        if order not in ("left", "right"):
            raise ValueError(f"order must be 'left' or 'right', got {order!r}")
        super().__init__(shape=shape, name=name)
        self.s_out = OutPort(shape=shape)
        ops = list(operands) + [(np.zeros(1, np.int64), (1, 1), 0, 1)] * (3 - len(operands))
        sizes = [int(n) for _, _, _, n in ops]
        self.a_in0 = InPort(shape=(sizes[0],))
        self.a_in1 = InPort(shape=(sizes[1],))
        self.a_in2 = InPort(shape=(sizes[2],))
        for i, (idx, shp, _, _) in enumerate(ops):
            setattr(self, f"index{i}", Var(shape=(len(idx),), init=np.asarray(idx, np.int64)))
            setattr(self, f"shape{i}", Var(shape=(len(shp),), init=np.asarray(shp, np.int64)))
            setattr(self, f"acc{i}", Var(shape=(int(windows), sizes[i]), init=0.0))  # counts per window
        self.starts = Var(shape=(3,), init=np.array([s for _, _, s, _ in ops], np.int64))
        self.nops = Var(shape=(1,), init=len(operands))
        self.right = Var(shape=(1,), init=int(order == "right"))
        self.scale = Var(shape=(1,), init=float(scale))
        self.D = Var(shape=(1,), init=int(D))
        self.windows = Var(shape=(1,), init=int(windows))


MAX_RECORDER_INPUTS = 64


class Recorder(AbstractProcess):
    """The read-out: observes up to 64 spike trains (or synaptic outputs) on the wire and sums them
    per window, then hands the sums to the host in ONE message at its last time step.

    Input i (port `in{i}`, shape (sizes[i],)) is connected to a population's `s_out` (the very
    messages its synapses receive) or to the read-out synapse's `a_out`. Window w of input i is
    what arrives during steps firsts[i] + w D .. firsts[i] + (w + 1) D - 1 (w < windows), summed
    into row w // bins[i] (bins = T sums a sample's windows, 1 keeps every window). At step
    `last` the process sends all rows, input after input ((rows_i, sizes[i]) each, C order,
    float64: exact for integer counts and fixed-point activations) on `out`, an OutPort flagged as
    an external pipe (Lava's mechanism for handing data to the host, as lava.proc.io.extractor).

    Why not RingBuffer sinks read with `Var.get()`: Lava 0.10's runtime.get_var sends one channel
    message per element (~80 us each), so reading (N, steps) buffers of every population cost
    more than the run itself (70 s of 181 s for 2 digits of the digits CNN).
    """

    def __init__(self, *, sizes: list[int], firsts: list[int], bins: list[int], windows: int, D: int, last: int,
                 name: str | None = None) -> None:
        if not 1 <= len(sizes) <= MAX_RECORDER_INPUTS:
            raise ValueError(f"a Recorder takes 1..{MAX_RECORDER_INPUTS} inputs, got {len(sizes)}")
        super().__init__(name=name)
        sizes = [int(n) for n in sizes] + [1] * (MAX_RECORDER_INPUTS - len(sizes))
        rows = [-(-int(windows) // int(b)) for b in bins]
        total = sum(r * n for r, n in zip(rows, sizes))
        for i, n in enumerate(sizes):
            setattr(self, f"in{i}", InPort(shape=(n,)))
        self.out = OutPort(shape=(total,))
        self.out.flag_external_pipe(buffer_size=1)
        pad = MAX_RECORDER_INPUTS - len(bins)
        self.sizes = Var(shape=(MAX_RECORDER_INPUTS,), init=np.array(sizes, np.int64))
        self.firsts = Var(shape=(MAX_RECORDER_INPUTS,), init=np.array(list(firsts) + [0] * pad, np.int64))
        self.bins = Var(shape=(MAX_RECORDER_INPUTS,), init=np.array(list(bins) + [1] * pad, np.int64))
        self.nin = Var(shape=(1,), init=len(bins))
        self.windows = Var(shape=(1,), init=int(windows))
        self.D = Var(shape=(1,), init=int(D))
        self.last = Var(shape=(1,), init=int(last))
        self.acc = Var(shape=(total,), init=0.0)
        self.layout = [(r, n) for r, n in zip(rows[:len(bins)], sizes[:len(bins)])]  # host side: how to split

    def split(self, data: np.ndarray) -> list[np.ndarray]:
        """The message sent at `last`, as one (rows_i, sizes[i]) array per input."""
        out, off = [], 0
        for r, n in self.layout:
            out.append(np.asarray(data[off: off + r * n]).reshape(r, n))
            off += r * n
        return out

    def receive(self) -> np.ndarray:
        """Call after the run: the message of step `last` (blocks until it was sent)."""
        return self.out.external_pipe_csp_recv_port.recv()
