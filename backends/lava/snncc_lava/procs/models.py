"""Process models of `WindowBurstIF` and `SpikeProduct` (floating_pt and fixed_pt each), of
`Recorder` (one model, tagged for both), and Lava's own DelaySparse models with one cache.

DelaySparse: lava 0.10's AbstractPyDelaySparseModel.calc_act rebuilds the delay-split weight
matrix (one vstack of `weights.multiply(delays == k)` for every k <= max_delay) on every time
step: ~100 ms per step for a 250k-synapse projection with delay 15. `PyDelaySparseModelFloatCached`
and `PyDelaySparseModelBitAccCached` are Lava's models unchanged except that this matrix is built
once, on the first step (after the fixed_pt model has clipped and truncated the weights); weights
and delays are static in an inference network. `lower.py` selects them through
Loihi2SimCfg(exception_proc_model_map=...).

floating_pt: arithmetic follows snncc.sim.reference operation by operation (v = u + beta + bias +
carry, floor(v / theta), clip to [0, D], carry = v - n * theta - beta, times `leak` when it is not
1: the leak acts between windows only) so float64 counts match it.

fixed_pt: integer arithmetic with Lava's fixed_pt LIF conventions (see snncc_lava.fixed, whose
`simulate_fixed` it must equal bit for bit): u <- wrap24(u + (a_in << 6)) every sub-step of a
window; at the window's end v = sat24(u + m + bias_mant << bias_exp), n = clip(floor(v / (vth << 6)),
0, D), m <- v - n * (vth << 6) when stateful (m = v_init at a sample start / every window otherwise),
leaked when leak_mant != 2**12 (`fixed.carried`: m <- v_init + ((m - v_init) * leak_mant) >> 12, at
the window boundary only). This leak is snncc's own neuron: on a real Loihi 2 it needs a custom
microcode neuron (an assumption: the built-in LIF decays v at every time step, i.e. every sub-step).
"""

from __future__ import annotations

import numpy as np

from snncc_lava import compat
from snncc_lava.fixed import ACT_SHIFT, VTH_SHIFT, count, next_membrane, relay_payload, saturate_v, shift, wrap_u
from snncc_lava.network import product

compat.install()

from lava.magma.core.decorator import implements, requires, tag  # noqa: E402
from lava.magma.core.model.py.model import PyLoihiProcessModel  # noqa: E402
from lava.magma.core.model.py.ports import PyInPort, PyOutPort  # noqa: E402
from lava.magma.core.model.py.type import LavaPyType  # noqa: E402
from lava.magma.core.resources import CPU  # noqa: E402
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol  # noqa: E402

from lava.proc.sparse.models import PyDelaySparseModelBitAcc, PyDelaySparseModelFloat  # noqa: E402
from lava.proc.sparse.process import DelaySparse  # noqa: E402

from snncc_lava.procs.process import MAX_RECORDER_INPUTS, RESETS, Recorder, SpikeProduct, WindowBurstIF  # noqa: E402


@implements(proc=WindowBurstIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyWindowBurstIFModelFloat(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    D: int = LavaPyType(int, int)
    cap: int = LavaPyType(int, int)
    theta: float = LavaPyType(float, float)
    beta: float = LavaPyType(float, float)
    bias: np.ndarray = LavaPyType(np.ndarray, float)
    const: np.ndarray = LavaPyType(np.ndarray, float)
    offset: int = LavaPyType(int, int)
    windows: int = LavaPyType(int, int)
    period: int = LavaPyType(int, int)
    stateful: int = LavaPyType(int, int)
    leak: float = LavaPyType(float, float)
    reset_mode: int = LavaPyType(int, int)
    strict: int = LavaPyType(int, int)
    graded: int = LavaPyType(int, int)
    relay: int = LavaPyType(int, int)
    vth: int = LavaPyType(int, int)
    bias_mant: np.ndarray = LavaPyType(np.ndarray, np.int32)
    bias_exp: int = LavaPyType(int, int)
    v_init: int = LavaPyType(int, int)
    leak_mant: int = LavaPyType(int, int)  # fixed_pt only
    u: np.ndarray = LavaPyType(np.ndarray, float)
    carry: np.ndarray = LavaPyType(np.ndarray, float)
    n: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self) -> None:
        a = self.a_in.recv()
        D, K = int(self.D), int(self.windows)
        r = self.time_step - int(self.offset) - 1
        out = np.zeros_like(self.u)
        if r >= 0:
            k, j = divmod(r, D)
            if 1 <= k <= K:  # emit the count of window k - 1
                if self.graded:
                    out = self.n.copy() if j == 0 else out
                else:
                    out = (j < self.n).astype(float)
            if k < K:
                self.u = self.u + a
                if j == D - 1:
                    self._fire(k)
        self.s_out.send(out)

    def _fire(self, k: int) -> None:
        theta, beta = float(self.theta), float(self.beta)
        if k % int(self.period) == 0:  # first window of a sample
            self.carry = np.zeros_like(self.carry)
        v = self.u + self.const if np.any(self.const) else self.u
        v = v + beta if beta != 0.0 else v
        v = v + self.bias if np.any(self.bias) else v
        if self.relay:  # a relay forwards its window value: the reference's op_relay
            self.n = v
            self.u = np.zeros_like(self.u)
            return
        if self.stateful:
            v = v + self.carry
        u = v / theta if theta != 1.0 else v
        n = np.clip(np.ceil(u) - 1 if self.strict else np.floor(u), 0, int(self.cap))
        if self.stateful:  # snncc.sim.reference.carry: the residual after the reset, times the leak
            mode = RESETS[int(self.reset_mode)]
            self.carry = (v - beta) * (n == 0) if mode == "value" else v - beta if mode in ("leak_first", "none") \
                else v - n * theta - beta
            if float(self.leak) != 1.0:
                self.carry = self.carry * float(self.leak)
            if mode == "leak_first":
                self.carry = self.carry - n * theta
        self.n = n
        self.u = np.zeros_like(self.u)


@implements(proc=WindowBurstIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyWindowBurstIFModelFixed(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    D: int = LavaPyType(int, int)
    cap: int = LavaPyType(int, int)
    theta: float = LavaPyType(float, float)
    beta: float = LavaPyType(float, float)
    bias: np.ndarray = LavaPyType(np.ndarray, float)
    const: np.ndarray = LavaPyType(np.ndarray, float)
    offset: int = LavaPyType(int, int)
    windows: int = LavaPyType(int, int)
    period: int = LavaPyType(int, int)
    stateful: int = LavaPyType(int, int)
    leak: float = LavaPyType(float, float)  # unused here: the quantised leak_mant acts
    leak_mant: int = LavaPyType(int, np.int32, precision=13)  # leak x 2**12 (fixed.carried)
    reset_mode: int = LavaPyType(int, int)
    strict: int = LavaPyType(int, int)
    graded: int = LavaPyType(int, int)
    relay: int = LavaPyType(int, int)
    vth: int = LavaPyType(int, np.int32, precision=17)
    bias_mant: np.ndarray = LavaPyType(np.ndarray, np.int16, precision=13)
    bias_exp: int = LavaPyType(int, np.int16, precision=3)
    v_init: int = LavaPyType(int, np.int32, precision=24)
    u: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    carry: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    n: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)

    def run_spk(self) -> None:
        a = self.a_in.recv().astype(np.int64)
        D, K = int(self.D), int(self.windows)
        r = self.time_step - int(self.offset) - 1
        out = np.zeros(self.u.shape, np.int32)
        if r >= 0:
            k, j = divmod(r, D)
            if 1 <= k <= K:  # emit the count of window k - 1
                if self.graded:
                    out = self.n.astype(np.int32) if j == 0 else out
                else:
                    out = (j < self.n).astype(np.int32)
            if k < K:
                self.u = wrap_u(self.u.astype(np.int64) + np.left_shift(a, ACT_SHIFT))
                if j == D - 1:
                    self._fire(k)
        self.s_out.send(out)

    def _fire(self, k: int) -> None:
        if self.relay:  # v = sat24(u + bias); send v >> 6 (snncc_lava.fixed.relay_payload)
            bias = shift(self.bias_mant.astype(np.int64), int(self.bias_exp))
            self.n = relay_payload(saturate_v(self.u.astype(np.int64) + bias))
            self.u = np.zeros_like(self.u)
            return
        theta_eff = int(self.vth) << VTH_SHIFT
        if k % int(self.period) == 0 or not self.stateful:  # sample start: membrane from beta
            m = np.full(self.u.shape, int(self.v_init), np.int64)
        else:
            m = self.carry.astype(np.int64)
        bias = shift(self.bias_mant.astype(np.int64), int(self.bias_exp))
        v = saturate_v(self.u.astype(np.int64) + m + bias)
        n = count(v, theta_eff, int(self.cap), bool(self.strict))
        self.carry = next_membrane(v, n, theta_eff, int(self.v_init), int(self.leak_mant), RESETS[int(self.reset_mode)])
        self.n = n
        self.u = np.zeros_like(self.u)


class _WindowProduct:
    """The timing both SpikeProduct models share: every operand's spikes are summed per window
    (operand i emits window w during steps starts[i] + (w + 1) D + 1 .. + D), and on the last
    emission sub-step of the deepest operand the window's product is formed."""

    def _window_product(self, dtype) -> np.ndarray | None:
        """Receive this step's operand spikes; the product of the window just completed, or None."""
        D, K, m = int(self.D), int(self.windows), int(self.nops)
        ins = [self.a_in0.recv(), self.a_in1.recv(), self.a_in2.recv()]
        accs = [self.acc0, self.acc1, self.acc2]
        for i in range(m):
            r = self.time_step - int(self.starts[i]) - D - 1
            if 0 <= r < K * D:
                accs[i][r // D] += ins[i].astype(dtype)
        r = self.time_step - int(np.max(self.starts[:m])) - D - 1
        if not (0 <= r < K * D and r % D == D - 1):
            return None
        w = r // D
        idx = [self.index0, self.index1, self.index2]
        shp = [self.shape0, self.shape1, self.shape2]
        x = [accs[i][w][idx[i]].astype(dtype).reshape(tuple(int(s) for s in shp[i])) for i in range(m)]
        return product(x, "right" if self.right else "left")


@implements(proc=SpikeProduct, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PySpikeProductModelFloat(_WindowProduct, PyLoihiProcessModel):
    """float64 window counts and products, the reference executor's operation order (exact for
    integer counts: every partial sum is an integer below 2**53)."""

    a_in0: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    a_in1: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    a_in2: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    index0: np.ndarray = LavaPyType(np.ndarray, np.int64)
    index1: np.ndarray = LavaPyType(np.ndarray, np.int64)
    index2: np.ndarray = LavaPyType(np.ndarray, np.int64)
    shape0: np.ndarray = LavaPyType(np.ndarray, np.int64)
    shape1: np.ndarray = LavaPyType(np.ndarray, np.int64)
    shape2: np.ndarray = LavaPyType(np.ndarray, np.int64)
    acc0: np.ndarray = LavaPyType(np.ndarray, float)
    acc1: np.ndarray = LavaPyType(np.ndarray, float)
    acc2: np.ndarray = LavaPyType(np.ndarray, float)
    starts: np.ndarray = LavaPyType(np.ndarray, np.int64)
    nops: int = LavaPyType(int, int)
    right: int = LavaPyType(int, int)
    scale: float = LavaPyType(float, float)
    D: int = LavaPyType(int, int)
    windows: int = LavaPyType(int, int)

    def run_spk(self) -> None:
        y = self._window_product(float)
        out = np.zeros(self.s_out.shape, float)
        if y is not None:
            s = float(self.scale)
            out = (y * s if s != 1.0 else y).reshape(-1)
        self.s_out.send(out)


@implements(proc=SpikeProduct, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySpikeProductModelFixed(_WindowProduct, PyLoihiProcessModel):
    """int64 window counts and the raw integer product (no scale: `fixed.quantize` folds it into
    the weights of the product's projections), sent as an int32 graded message; equals the
    product path of `fixed.simulate_fixed` bit for bit."""

    a_in0: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    a_in1: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    a_in2: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    index0: np.ndarray = LavaPyType(np.ndarray, np.int64)
    index1: np.ndarray = LavaPyType(np.ndarray, np.int64)
    index2: np.ndarray = LavaPyType(np.ndarray, np.int64)
    shape0: np.ndarray = LavaPyType(np.ndarray, np.int64)
    shape1: np.ndarray = LavaPyType(np.ndarray, np.int64)
    shape2: np.ndarray = LavaPyType(np.ndarray, np.int64)
    acc0: np.ndarray = LavaPyType(np.ndarray, np.int64)
    acc1: np.ndarray = LavaPyType(np.ndarray, np.int64)
    acc2: np.ndarray = LavaPyType(np.ndarray, np.int64)
    starts: np.ndarray = LavaPyType(np.ndarray, np.int64)
    nops: int = LavaPyType(int, int)
    right: int = LavaPyType(int, int)
    scale: float = LavaPyType(float, float)
    D: int = LavaPyType(int, int)
    windows: int = LavaPyType(int, int)

    def run_spk(self) -> None:
        y = self._window_product(np.int64)
        out = np.zeros(self.s_out.shape, np.int32)
        if y is not None:
            y = y.reshape(-1)
            if np.abs(y).max(initial=0) >= 2**31:
                raise OverflowError(f"spike product {y.max()} does not fit an int32 graded message")
            out = y.astype(np.int32)
        self.s_out.send(out)


@implements(proc=Recorder, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt", "fixed_pt")
class PyRecorderModel(PyLoihiProcessModel):
    for _i in range(MAX_RECORDER_INPUTS):
        locals()[f"in{_i}"] = LavaPyType(PyInPort.VEC_DENSE, float)
    del _i
    out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    sizes: np.ndarray = LavaPyType(np.ndarray, np.int64)
    firsts: np.ndarray = LavaPyType(np.ndarray, np.int64)
    bins: np.ndarray = LavaPyType(np.ndarray, np.int64)
    nin: int = LavaPyType(int, int)
    windows: int = LavaPyType(int, int)
    D: int = LavaPyType(int, int)
    last: int = LavaPyType(int, int)
    acc: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self) -> None:
        t, D, K = self.time_step, int(self.D), int(self.windows)
        off = 0
        for i in range(int(self.nin)):
            a = getattr(self, f"in{i}").recv()
            n, b = int(self.sizes[i]), int(self.bins[i])
            r = t - int(self.firsts[i])
            if 0 <= r < K * D:
                row = (r // D) // b
                self.acc[off + row * n: off + (row + 1) * n] += a
            off += -(-K // b) * n
        if t == int(self.last):
            self.out.send(self.acc)


class _CachedDelayWeights:
    """calc_act of AbstractPyDelaySparseModel with the delay-split weight matrix built once."""

    _delay_wgts = None

    def calc_act(self, s_in) -> np.ndarray:
        if self._delay_wgts is None:
            self._delay_wgts = self.get_delay_wgts_mat(self.weights, self.delays, self.a_buff.shape[-1] - 1)
        return np.reshape(self._delay_wgts.dot(s_in), (self.a_buff.shape[-1], self.weights.shape[0])).T


@implements(proc=DelaySparse, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyDelaySparseModelFloatCached(_CachedDelayWeights, PyDelaySparseModelFloat):
    pass


@implements(proc=DelaySparse, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyDelaySparseModelBitAccCached(_CachedDelayWeights, PyDelaySparseModelBitAcc):
    pass
