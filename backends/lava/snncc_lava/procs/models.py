"""Process models: the floating-point implementation of `WindowBurstIF` (tag floating_pt).

Arithmetic follows snncc.sim.reference operation by operation (v = u + beta + bias + carry,
floor(v / theta), clip to [0, D], carry = v - n * theta - beta) so float64 counts match it.
"""

from __future__ import annotations

import numpy as np

from snncc_lava import compat

compat.install()

from lava.magma.core.decorator import implements, requires, tag  # noqa: E402
from lava.magma.core.model.py.model import PyLoihiProcessModel  # noqa: E402
from lava.magma.core.model.py.ports import PyInPort, PyOutPort  # noqa: E402
from lava.magma.core.model.py.type import LavaPyType  # noqa: E402
from lava.magma.core.resources import CPU  # noqa: E402
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol  # noqa: E402

from snncc_lava.procs.process import WindowBurstIF  # noqa: E402


@implements(proc=WindowBurstIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyWindowBurstIFModelFloat(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    D: int = LavaPyType(int, int)
    theta: float = LavaPyType(float, float)
    beta: float = LavaPyType(float, float)
    bias: np.ndarray = LavaPyType(np.ndarray, float)
    const: np.ndarray = LavaPyType(np.ndarray, float)
    offset: int = LavaPyType(int, int)
    windows: int = LavaPyType(int, int)
    period: int = LavaPyType(int, int)
    stateful: int = LavaPyType(int, int)
    graded: int = LavaPyType(int, int)
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
        if self.stateful:
            v = v + self.carry
        n = np.clip(np.floor(v / theta if theta != 1.0 else v), 0, int(self.D))
        if self.stateful:
            self.carry = v - n * theta - beta
        self.n = n
        self.u = np.zeros_like(self.u)
