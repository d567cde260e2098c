"""Fixed-point lowering of a Loihi `Network` to Loihi 2 ranges, its quantisation report, and the
integer reference `simulate_fixed` that the Lava fixed_pt run must equal bit for bit (docs/design.md §7.3).

Conventions mirrored from lava-nc 0.10.0's fixed_pt process models (read in site-packages):
- Sparse / DelaySparse (lava/proc/sparse/models.py, PySparseModelBitAcc, PyDelaySparseModelBitAcc;
  the same conventions as Dense's PyDenseModelBitAcc): weights are clipped and truncated to an
  8-bit mixed-sign mantissa, i.e. even integers in [-256, 254] (sign_mode MIXED is passed, never
  derived from the values); each time step the model sends `a = (W @ s) << weight_exp` (or
  `>> -weight_exp`, an arithmetic shift that floors, applied to the summed product, not per
  weight); binary spikes use `W[:, s].sum(1)`, graded ones `W @ s`. Weights are CSR matrices;
  mantissas that round to 0 are dropped (as truncate_weights' eliminate_zeros does).
- LIF (lava/proc/lif/models.py, AbstractPyLifModelFixed / PyLifModelBitAcc): the synaptic input is
  MSB-aligned by `a << 6` (act_shift) before it is added to the 24-bit current register u, which
  wraps (`> 2**23` -> `- 2**24`, `<= -2**23` -> `+ 2**24`, once); the membrane v saturates to
  [-(2**23 - 1), 2**23 - 1]; the bias is `bias_mant << bias_exp` (13-bit signed mantissa, 3-bit
  exponent) in membrane units; the threshold is `vth << 6` (vth unsigned 17 bit) and LIF fires on
  `v > vth << 6`.

The fixed-point WindowBurstIF (procs/models.py, tag fixed_pt) does exactly this, per window:
  u <- wrap24(u + (a << 6)) every sub-step of the window (a: the summed synapse outputs, or the
       host's encoding activation at the window's first sub-step);
  v  = sat24(u + m + bias_mant << bias_exp), m = v_init (beta) at a sample start (every window when
       not stateful), else the carried membrane;
  n  = clip(floor(v / (vth << 6)), 0, D);  m <- v - n * (vth << 6) (stateful);  u <- 0;
  leaky (fire `leak` < 1, stateful): m <- v_init + ((m - v_init) * leak_mant) >> 12 (`carried`), the
       residual leaked once per window boundary, never between sub-steps, with leak_mant =
       round(leak * 4096) (12-bit leak; the shift floors: both are stated roundings, so counts can
       differ from the float model's exact `leak * residual` at ties). Loihi's built-in LIF cannot
       do this (its 12-bit decay dv acts on v every step and truncates toward zero): on a real
       Loihi 2 this neuron needs custom microcode (an assumption; Lava fixed_pt runs our model).
Count rule: the deployed neuron fires floor(v / theta) spikes, so n >= 1 when v >= vth << 6; this
is LIF's `v > vth << 6` test moved by one membrane unit (the IR's floor semantics; a LIF-style
strict test would lose every exact tie, and integer membranes tie often).

Scales (documented choice, "no weight vanishes as a whole"). A population's membrane unit is
fixed by s = activation units (a_in units, 1/64 of a membrane unit) per unit of float current:
- fed by on-chip projections: s = 2**j * 254 / max|w| over all its incoming projections, j the
  smallest integer >= 0 with vth = round(theta * s) >= VTH_MIN (2048), lowered (down to -8) only
  while (D + 1) * (vth << 6) would not fit the 24-bit membrane: the largest weight of the
  population maps exactly to mantissa 254 with exponent j, and theta keeps >= 11 bits; a
  population that reads graded payloads (a relay, a spike product) takes the smallest j (down to
  -8) with vth >= VTH_MIN instead: its weights are per payload unit, and the weight-based vth sat
  near the cap, leaving u room for about D + 1 thresholds (on digits_former 15950 u wraps in 100
  digits, the cause of relay mode's lost agreement; now 0 and >= 32 thresholds of room);
  then halved while the largest bias would not fit 4095 << 7 membrane units and vth stays >= 256
  (`bias_halvings`: a clipped bias is wrong by whole thresholds, a halved scale floors one bit
  earlier; the report's `scale_halved_for_bias`);
- fed only by the host (the encoding layer): s = VTH_MIN / theta (vth exact).
Kernels, not matrices (issue 27): a projection that is one kernel (`network.KernelPath`: layouts,
adds, one conv/linear, means after a linear or 1x1 conv, so each synapse of its matrix is one
kernel entry) is quantised on its kernel with the rules below (its entries are the matrix's), its
mantissas kept as the kernel (`QProjection.kernel`, stored as int8 half mantissas); the explicit
matrix Lava's Sparse takes is composed from those integers only when Lava runs (`QProjection.weight`)
and `simulate_fixed` computes the kernel's sums with convolutions in float64 (exact: integer
operands, sums far below 2**53), so E-SpikeFormer at 224x224 runs without its matrices; the other
projections (pools, two weighted ops in a row, a mean after a spatial kernel) keep a matrix.
Each projection then takes the smallest exponent e in [-8, 7] that keeps its largest weight within
254, so a projection with small weights gets a small exponent instead of vanishing; within a
projection weights below 2**e (half a mantissa step) still round to 0 and are counted (`vanished`).
Two synapse groups (weight_bits=16, the loihi option; issue 27): every projection at exponent
e > -8 also gets a low group, a second Sparse from the same source into the same input port (Lava
sums the port's inputs) with 8-bit mantissas at e_lo = max(e - 8, -8): the weight is the nearest
even M on the 2**e_lo grid, split as hi x 2**(e - e_lo) + lo (`mantissas`), each group's summed
product shifted by its own exponent (the low one floors, every sub-step: the expected loss is
added back to the target's bias, `floor_compensation`); twice the synapse memory. Ablation on
digits_former (the 450 test digits, the integer model with one source made exact): exact weights
halve the neuron counts differing (10.47% -> 5.70%); exact biases, thresholds, host activations,
relay payloads or sub-step shifts each change nothing (10.45-10.50%); all exact: 0.
Biases (fire bias + constant current of the tree) take the smallest exponent in [0, 7] keeping the
mantissa within 13 bits (`saturated` counts clipped ones); beta becomes the 24-bit initial membrane.
The read-out (graph output, a current) gets s = 254 / max|w| with exponent 0 and is dequantised by
1/s on the host. A relay (residual-stream accumulator) integrates like a neuron (u wraps at 24 bits, v = sat24(u +
bias)) and sends v >> 6, its value in its own activation units (scale `relay_scale`: the largest
incoming weight at mantissa 254, lowered by < 1.6% so that the identity from the relay it reads is
an exact mantissa), as a 24-bit signed graded message (`relay_payload` checks the range); the weights of its projections are divided by its scale before they are quantised for
their target. `counts` of a relay hold its payloads summed over T.
Spike products (attention) send their raw integer product as a graded message
(the SpikeProduct fixed_pt model, exact int64, at most int32); the node's scale is folded into
the float weights of the product's projections before quantisation. A spike-kind input is
streamed as in float (integer counts are exact). Delays beyond 63 steps become identity relays
in the lowering (mantissa 2, weight_exp -1: exact), invisible to this integer model. A max pool of
spikes (`network.MaxPool`) sends the max count of each window as a burst (its OR neurons, Lava LIF
with weights of mantissa 2 against vth 1, fire on any spike of the window's sub-step); the weights
of its consumers are per spike, as from a population. `policy="netx"` forces exponent 0 everywhere and bias_exp 6 (the exponent lava-dl
netx hard-codes), as the netx export needs: s = min(254 / max|w|, (4094 - 2D) / (max|bias + beta| +
(D - 1) theta)) (room for the export's D threshold copies), and beta a whole number of bias units
(v_init = round(beta * s) << 6).
Choices from the numbers (`calibrate`, the loihi option calibration_data): a relay's scale may be
moved to the rule's x 2**shift (shift 0-2, the largest keeping its payloads on the calibration data
within 2**16, `relay_shift`); a population's scale may be moved to the rule's s x 2**shift x clip
(`quantize(choices=)`), chosen greedily in topological
order to minimise the measured count error against the float integer model on calibration data;
then every population's bias may take the mean input its quantised weights lose on the calibration
samples (`bias_corrections`; the 13-bit bias mantissa is per neuron, so this is free on the chip),
stored as whole bias LSBs per neuron at the corrected bias exponent ("bias_lsb", "bias_exp" in the
choice, `lsb_corrections`: int8/int16, the same mantissas as the float correction; an older
artefact's float "bias" is still read), each step kept only if the whole model measures better;
the choices are stored in the deployed graph's meta (ir.json meta.target.loihi, CHOICES_KEY; an older
artefact's meta.loihi_fixed_choices is still read) and every quantisation
of that graph reads them (`stored_choices`), so Lava fixed_pt and the integer model stay bit-equal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from snncc import targets
from snncc.errors import SnnccError, TargetError
from snncc.ir.graph import Graph
from snncc.ir.serialize import narrow_int
from snncc_lava.network import (KernelPath, Network, Population, batch_stream, graded_problems, host_currents, product,
                                spike_input_counts)

# Loihi 2 / Lava fixed_pt ranges (lava/proc/lif/models.py, lava/proc/dense/models.py)
W_MIN, W_MAX = -256, 254  # 8-bit mixed-sign mantissa after clip_weights + truncate_weights: even values
WEXP_MIN, WEXP_MAX = -8, 7
ACT_SHIFT = 6
VTH_SHIFT = 6
VTH_MAX = 2**17 - 1
UV_BITS = 24
MAX_UV = 2 ** (UV_BITS - 1)
V_LIMIT = MAX_UV - 1
BIAS_MANT_MIN, BIAS_MANT_MAX = -4096, 4095
BIAS_EXP_MIN, BIAS_EXP_MAX = 0, 7
BIAS_MAX = BIAS_MANT_MAX << BIAS_EXP_MAX  # the largest bias in membrane units
NETX_BIAS_EXP = 6  # lava-dl netx passes bias_exp=6 for CUBA/LOIHI neurons
VTH_MIN = 2048
VTH_FLOOR = 256  # the lowest threshold mantissa a bias may push a population's scale to (0.2% steps)
LEAK_BITS = 12  # the carried residual's factor: leak_mant / 2**12 (snncc's own neuron, see leak_carry)
HOST_LIMIT = MAX_UV - 1  # host activations are sent as 24-bit messages
MAX_GRADED = MAX_UV - 1  # Loihi 2 graded spike payload: 24 bits signed (assumed; Lava 0.10 does not check it)
POLICIES = ("precision", "netx")
# calibrated scaling choices (`quantize(choices=)`, `calibrate`): a population's scale times
# 2**shift * clip; stored in the deployed graph under CHOICES_KEY of the loihi target's meta (ir.json
# meta.target.loihi, `snncc.targets.store`)
SHIFT_MIN, SHIFT_MAX = -2, 3
CLIP_MAX = 2.0
CHOICES_KEY = "fixed_choices"
# a choice's calibrated bias correction: "bias_lsb" (whole bias LSBs per neuron) at exponent "bias_exp"
# (what `calibrate` stores), or an older artefact's "bias" (float current units per neuron, still read)
BIAS_KEYS = ("bias", "bias_lsb", "bias_exp")
CANDIDATES = tuple((k, r) for k in (0, 1, 2) for r in (1.0, 1.125, 1.25))
# a relay's calibrated choice: its scale times 2**shift, shift in [0, RELAY_SHIFT_MAX], the largest whose
# payloads on the calibration data stay within RELAY_PEAK (half the 2**17 its 24-bit membrane holds)
RELAY_SHIFT_MAX = 2
RELAY_PEAK = 2**16
# weight_bits=16 (`quantize(weight_bits=)`, the loihi option): every projection is two synapse groups
# into the same neurons, hi << e plus lo << (e - LOW_BITS), summed at the input port; stored in the
# deployed graph under WEIGHT_BITS_KEY of the loihi target's meta (ir.json meta.target.loihi) so every
# re-quantisation reads it
WEIGHT_BITS = (8, 16)
LOW_BITS = 8
WEIGHT_BITS_KEY = "weight_bits"
TARGET = "loihi"  # the target name whose meta sub-dict holds both
# where artefacts written before the target sub-dict hold them (top-level meta keys), still read
LEGACY_KEYS = {CHOICES_KEY: "loihi_fixed_choices", WEIGHT_BITS_KEY: "loihi_weight_bits"}
# A max pool's OR neurons (Lava LIF, du = dv = 4095, weight mantissa 2, vth 1: network.MaxPool) keep
# floor(c / 32) membrane units of a step that received c spikes; that stays at or below the
# threshold's 64 units, so no spike without input, for windows of at most 2079 inputs.
OR_MAX_WINDOW = 2079


@dataclass
class QProjection:
    source: str
    target: str
    matrix: sp.csr_matrix | None  # (N_target, N_source) int32 mantissas, even, in [-256, 254], no stored zeros
    exp: int  # weight_exp of the Sparse process
    delay: int
    nodes: list[str] = field(default_factory=list)
    kernel: np.ndarray | None = None  # int32 kernel mantissas (even, [-256, 254]) of a one-kernel projection
    path: KernelPath | None = None  # how the kernel makes the projection (network.KernelPath)
    graph: Graph | None = None
    low: "QProjection | None" = None  # weight_bits=16: the second synapse group (lo mantissas, exponent exp - 8)

    @property
    def weight(self) -> sp.csr_matrix:
        """The explicit mantissa matrix Lava's Sparse takes: for a one-kernel projection composed from
        the kernel's integers on first use (only what Lava runs ever builds it)."""
        if self.matrix is None:
            m = self.path.matrix(self.graph, self.kernel)
            q = sp.csr_matrix((np.rint(m.data).astype(np.int32), m.indices, m.indptr), shape=m.shape)
            q.eliminate_zeros()
            self.matrix = q
        return self.matrix

    def apply(self, s: np.ndarray) -> np.ndarray:
        """Integer sum W @ s (B, N_source) -> (B, N_target) int64, before the exponent's shift: with
        convolutions for a one-kernel projection (exact in float64), else the sparse matrix."""
        if self.kernel is not None:
            return np.rint(self.path.apply(s, self.kernel)).astype(np.int64)
        return np.asarray(self.matrix.astype(np.int64) @ s.T).T

    def effective(self) -> sp.csr_matrix:
        """Per-spike contribution in activation units (exact: a float64 holds these integers), both
        synapse groups with weight_bits=16."""
        w = self.weight.astype(np.float64) * 2.0 ** self.exp
        return w + self.low.effective() if self.low is not None else w


@dataclass
class QPopulation:
    name: str
    shape: tuple
    D: int
    scale: float  # activation units per unit of float current
    vth: int  # threshold mantissa; effective threshold vth << 6 membrane units
    bias_mant: np.ndarray  # (N,) int32
    bias_exp: int
    v_init: int  # beta in membrane units
    stateful: bool
    level: int
    start: int
    host_input: bool
    relay: bool = False  # a residual-stream relay: sends its value v >> 6 (activation units) graded
    leak_mant: int = 1 << LEAK_BITS  # leak = leak_mant / 2**12; 2**12: no leak (integrate-and-fire)
    reset: str = "subtract"  # next_membrane's mode: "subtract", "value" (hard reset to v_init), "leak_first", "none"
    strict: bool = False  # spikes on v > k theta (count)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def theta_eff(self) -> int:
        return int(self.vth) << VTH_SHIFT

    @property
    def bias_eff(self) -> np.ndarray:
        return shift(self.bias_mant.astype(np.int64), self.bias_exp)


@dataclass
class QNetwork:
    net: Network
    policy: str
    populations: dict[str, QPopulation]
    projections: list[QProjection]
    output_scale: float
    report: dict

    @property
    def D(self) -> int:
        return self.net.D

    @property
    def T(self) -> int:
        return self.net.T


def shift(x: np.ndarray, e: int) -> np.ndarray:
    """`x << e` for e > 0 else `x >> -e` (arithmetic, floors), as Lava's Dense and LIF bias do."""
    return np.left_shift(x, e) if e > 0 else np.right_shift(x, -e)


def wrap_u(x: np.ndarray) -> np.ndarray:
    """Lava's 24-bit wrap of the current register u (AbstractPyLifModelFixed.subthr_dynamics)."""
    w = np.where(x > MAX_UV, x - 2 * MAX_UV, x)
    return np.where(w <= -MAX_UV, x + 2 * MAX_UV, w)


def saturate_v(x: np.ndarray) -> np.ndarray:
    """Lava's saturation of the membrane v to [-(2**23 - 1), 2**23 - 1]."""
    return np.clip(x, -V_LIMIT, V_LIMIT)


def round_even_mantissa(x: np.ndarray) -> np.ndarray:
    """Nearest even integer (ties to the nearest multiple of 4), as int64, unclipped."""
    return (2 * np.rint(np.asarray(x, np.float64) / 2)).astype(np.int64)


def _exp_for(max_abs: float, scale: float, lo: int = WEXP_MIN, hi: int = WEXP_MAX) -> int:
    """Smallest exponent e in [lo, hi] with round_even(max_abs * scale / 2**e) <= W_MAX."""
    if max_abs == 0.0:
        return 0
    for e in range(lo, hi + 1):
        if round_even_mantissa(max_abs * scale / 2.0**e) <= W_MAX:
            return e
    return hi


def low_exp(e: int) -> int:
    """The exponent of a projection's low synapse group (weight_bits=16) when its high group has
    exponent e: e - LOW_BITS, not below WEXP_MIN (then the low group has e - WEXP_MIN bits)."""
    return max(e - LOW_BITS, WEXP_MIN)


def mantissas(x: np.ndarray, e: int, low: bool) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Mantissas of weights x (float, activation units per unit of what the source sends) at
    exponent e: (hi, lo, value) with hi even in [-256, 254] and, with `low` (weight_bits=16) and
    e > WEXP_MIN, lo even in [-256, 254] at exponent k = low_exp(e) such that hi << (e - k) + lo =
    M, the nearest even integer to x / 2**k (the weight on a grid 2**(e - k) times finer), else
    lo None and hi = round_even(x / 2**e); `value` the represented weight (float) and `sat`
    (hi clipped) counted by the caller from `raw`."""
    x = np.asarray(x, np.float64)
    if not low or e <= WEXP_MIN:
        m = round_even_mantissa(x / 2.0**e)
        hi = np.clip(m, W_MIN, W_MAX)
        return hi, None, hi.astype(np.float64) * 2.0**e
    k = low_exp(e)
    f = 1 << (e - k)
    M = np.clip(round_even_mantissa(x / 2.0**k), W_MIN * f - W_MAX, W_MAX * f + W_MAX)
    hi = round_even_mantissa(M / f)
    lo = M - hi * f
    up = lo > W_MAX  # a tie rounded hi down by 2: move one step of hi into lo's range
    hi, lo = np.where(up, hi + 2, hi), np.where(up, lo - 2 * f, lo)
    over, under = hi > W_MAX, hi < W_MIN  # only for weights beyond the exponent's range (clipped)
    hi = np.clip(hi, W_MIN, W_MAX)
    lo = np.where(over, W_MAX, np.where(under, W_MIN, lo))
    return hi, lo, (hi * f + lo).astype(np.float64) * 2.0**k


def _stats(d: np.ndarray, raw: np.ndarray, hi: np.ndarray, value: np.ndarray, e: int, low) -> dict:
    """Quantisation statistics over the stored (nonzero) float weights d: nonzero, vanished (the
    represented weight is 0), saturated (beyond the 8-bit mantissa at exponent e), the exponents
    and the error of the represented weights (both groups with weight_bits=16)."""
    err = np.abs(value - d)
    return {"nonzero": int(d.size), "vanished": int(np.count_nonzero(value == 0)),
            "saturated": int(np.count_nonzero((raw > W_MAX) | (raw < W_MIN))), "exp": int(e),
            **({"low_exp": low_exp(e)} if low is not None else {}),
            "max_abs_weight": float(np.abs(d).max()) if d.size else 0.0,
            "max_abs_error": float(err.max()) if d.size else 0.0,
            "rel_rms_error": float(np.sqrt((err ** 2).mean()) / np.sqrt((d ** 2).mean())) if d.size else 0.0}


def quantize_weight(w: sp.csr_matrix, scale: float, e: int, low: bool = False
                    ) -> tuple[sp.csr_matrix, sp.csr_matrix | None, dict]:
    """Mantissas of the stored (nonzero) weights of `w` (`mantissas`): the high group's matrix and,
    with `low`, the low group's (None without); weights that round to 0 are dropped from each
    matrix (as Lava's truncate_weights does), those whose represented weight is 0 counted as vanished."""
    w = sp.csr_matrix(w, dtype=np.float64)
    w.eliminate_zeros()
    d = w.data
    x = d * scale
    hi, lo, value = mantissas(x, e, low)
    stats = _stats(d, round_even_mantissa(x / 2.0**e), hi, value / scale, e, lo)

    def csr(m):
        q = sp.csr_matrix((m.astype(np.int32), w.indices.copy(), w.indptr.copy()), shape=w.shape)
        q.eliminate_zeros()
        return q
    return csr(hi), (csr(lo) if lo is not None else None), stats


def quantize_kernel(k: np.ndarray, scale: float, e: int, low: bool = False
                    ) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Mantissas (int32, the kernel's shape) of a one-kernel projection's float kernel `k` at
    `scale` and exponent e (`mantissas`: the high group, and the low group with `low`, else None),
    and the same statistics as `quantize_weight`, over kernel entries."""
    k = np.asarray(k, np.float64)
    x = k * scale
    hi, lo, value = mantissas(x, e, low)
    nz = k != 0
    stats = _stats(k[nz], round_even_mantissa(x[nz] / 2.0**e), hi[nz], value[nz] / scale, e, lo)
    return hi.astype(np.int32), (lo.astype(np.int32) if lo is not None else None), stats


def max_abs(w) -> float:
    if sp.issparse(w):
        return float(np.abs(w.data).max()) if w.nnz else 0.0
    w = np.asarray(w)
    return float(np.abs(w).max()) if w.size else 0.0


def vth_cap(D: int) -> int:
    """Largest threshold mantissa with (D + 1) * (vth << 6) inside the 24-bit membrane."""
    return min(VTH_MAX, V_LIMIT // ((D + 1) << VTH_SHIFT))


def _population_scale(p: Population, incoming: list[sp.csr_matrix], policy: str, graded: bool = False) -> float:
    """Activation units per unit of current of neuron population `p` (the rule in the module doc).
    `graded`: some source sends graded payloads (a relay, a spike product), whose weights are per
    payload unit, so their largest weight says nothing about the window current; then the
    threshold is the smallest vth >= VTH_MIN the power-of-two scales reach, which keeps the 24-bit u
    at >= 2**23 / (64 * 2 * VTH_MIN) = 32 thresholds of head room (the weight-based scale put vth
    near vth_cap, about D + 1 thresholds: digits_former's relay consumers wrapped u)."""
    m = max((max_abs(w) for w in incoming), default=0.0)
    if m == 0.0:
        s = VTH_MIN / p.theta
    elif policy == "netx":
        s = W_MAX / m
    else:
        base = W_MAX / m
        j = 0  # prefer j >= 0: a negative weight_exp floors every sub-step's sum
        while j < WEXP_MAX and round(p.theta * base * 2.0**j) < VTH_MIN:
            j += 1
        while j > WEXP_MIN and round(p.theta * base * 2.0**j) > vth_cap(p.D):
            j -= 1
        while graded and round(p.theta * base * 2.0 ** (j - 1)) >= VTH_MIN:
            j -= 1
        s = base * 2.0**j
    if policy == "netx":  # exponent 0; the bias (beta folded in) is a 13-bit mantissa << 6, and the
        # export's D threshold copies shift it by up to (D - 1) thresholds (snncc_lava.netx)
        b = (float(np.abs(p.bias + p.const + p.beta).max()) if p.size else 0.0) + (p.D - 1) * p.theta
        if b > 0:
            s = min(s, (BIAS_MANT_MAX - 1 - 2 * p.D) / b)
    return s


def bias_halvings(p: Population, s: float) -> int:
    """How many times scale `s` of population `p` is halved so that its largest bias (fire bias +
    constant current, in membrane units s x 64) fits the 13-bit mantissa at exponent 7 (BIAS_MAX,
    2**19 membrane units) instead of being clipped, while vth stays >= VTH_FLOOR. A clipped bias is
    wrong by whole thresholds (digits_cnn's head_spike: 45 of 64 biases, up to 2.0 thresholds), a
    halved scale only floors its weights' sums one bit earlier: argmax agreement with the float
    model on the 450 test digits 0.989 -> 0.998 (digits_cnn) and 0.984 -> 0.989 (digits_former),
    fan-in form; the relay form had no clipped bias and is unchanged."""
    top = float(np.abs(p.bias + p.const).max()) if p.size else 0.0
    k = 0
    while top * (s / 2.0**k) * 2**ACT_SHIFT > BIAS_MAX and round(p.theta * s / 2.0 ** (k + 1)) >= VTH_FLOOR:
        k += 1
    return k


def relay_scale(p: Population, incoming: list[sp.csr_matrix], source: float | None = None, shift: int = 0) -> float:
    """Activation units per unit of current of a relay: the largest incoming weight maps to mantissa
    254 (exponent 0); fed only by the host, one unit of current is VTH_MIN activation units. Its
    24-bit membrane holds the value x 64 (wrapping like any u); the payload it sends, v >> 6, is
    at most 2**17 in magnitude: inside Loihi 2's 24-bit signed graded payload by construction.
    `source`: the scale of the one relay this relay reads (R_k = R_{k-1} + B); the scale is then
    lowered to the largest source x m x 2**e (m even <= 254, e in [WEXP_MIN, WEXP_MAX]) not above
    the weight-based one (by less than 2 / 127 of it), so the identity R_{k-1} -> R_k is exactly
    mantissa m << e: the stream passes a chain of relays without rounding (the weight-based scale
    gave mantissas near 48 at exponent -8, a systematic gain error of up to 1.8% per relay).
    `shift` (a calibrated choice, `calibrate`): the weight-based scale times 2**shift, payloads that
    many bits finer (the sums' floors and v >> 6 lose 2**shift times less of the value)."""
    m = max((max_abs(w) for w in incoming), default=0.0)
    s = (W_MAX / m if m > 0 else float(VTH_MIN)) * 2.0**shift
    if source is None:
        return s
    r = s / source
    e = next((e for e in range(WEXP_MIN, WEXP_MAX + 1) if r / 2.0**e <= W_MAX), WEXP_MAX)
    mant = min(W_MAX, 2 * math.floor(r / 2.0**e / 2))
    return source * mant * 2.0**e if mant >= 2 else s


def _relay_population(p: Population, s: float, extra: np.ndarray | float = 0.0,
                      lsb: tuple[np.ndarray, int] | None = None) -> tuple["QPopulation", int]:
    bias_mant, bias_exp, sat = _quantize_bias((p.bias + p.const + extra) * s * 2**ACT_SHIFT, "precision", lsb)
    return QPopulation(p.name, p.shape, p.D, s, 1, bias_mant, bias_exp, 0, False, p.level, p.start, p.host_input,
                       relay=True), sat


def quantize_leak(leak: float) -> int:
    """The 12-bit leak mantissa round(leak * 2**12) in [0, 2**12] (2**12: leak 1, no leak)."""
    return int(round(float(leak) * (1 << LEAK_BITS)))


def count(v: np.ndarray, theta_eff: int, D: int, strict: bool) -> np.ndarray:
    """Spikes of a fixed-point neuron with membrane v (int64): floor(v / theta) (v >= k theta), or
    with `strict` ceil(v / theta) - 1 = floor((v - 1) / theta) (v > k theta), clipped to [0, D]."""
    return np.clip(np.floor_divide(v - 1 if strict else v, theta_eff), 0, D)


def next_membrane(v: np.ndarray, n: np.ndarray, theta_eff: int, v_init: int, leak_mant: int, reset: str) -> np.ndarray:
    """What a stateful fixed-point neuron with membrane v that emitted n spikes carries to its next
    window (snncc.sim.reference.carry in membrane units): reset "subtract" carried(v - n theta);
    "value" (hard) v_init where it fired; "leak_first" (snntorch) carried(v) - n theta; "none" carried(v). Shared by
    `simulate_fixed` and the Lava fixed_pt WindowBurstIF."""
    if reset == "value":
        return carried(np.where(n > 0, v_init, v), v_init, leak_mant)
    if reset == "leak_first":
        return carried(v, v_init, leak_mant) - n * theta_eff
    if reset == "none":
        return carried(v, v_init, leak_mant)
    return carried(v - n * theta_eff, v_init, leak_mant)


def carried(v: np.ndarray, v_init: int, leak_mant: int) -> np.ndarray:
    """What a stateful fixed-point neuron carries to its next window, from its membrane v after the
    soft reset (int64; v_init, i.e. beta, included): v itself without a leak, else
    v_init + ((v - v_init) * leak_mant) >> 12, the residual leaked once per window boundary and
    floored (an arithmetic shift), never between sub-steps (snncc.sim.reference.carry). Shared by
    `simulate_fixed` and the Lava fixed_pt WindowBurstIF, which must agree bit for bit."""
    if leak_mant == 1 << LEAK_BITS:
        return v
    return v_init + np.right_shift((v - v_init) * leak_mant, LEAK_BITS)


def relay_payload(v: np.ndarray) -> np.ndarray:
    """What a fixed_pt relay sends for membrane v (int64): v >> 6 (floor), range-checked against the
    24-bit signed graded payload of Loihi 2."""
    n = np.right_shift(v, ACT_SHIFT)
    if n.size and int(np.abs(n).max()) > MAX_GRADED:
        raise OverflowError(f"relay payload {int(np.abs(n).max())} does not fit a 24-bit signed graded message")
    return n


def floor_compensation(net: Network, pops: dict[str, QPopulation], projs: list[QProjection]) -> dict[str, float]:
    """Membrane units added to the bias of each population fed by low synapse groups (weight_bits=16)
    at a negative exponent: such a group's summed product is shifted right every sub-step, which
    floors it, losing on average 1/2 - 2**e_lo activation units (the sum of even mantissas is even,
    so its residue mod 2**-e_lo is spread over the even values), in every sub-step that can carry
    input: the source's D for one that bursts spikes, 1 for a graded one (a relay, a spike product). The
    bias adds that expectation back (x 64: membrane units). Silent sub-steps lose nothing, so this
    is the loss of a sub-step with input, not of every one. 8-bit groups are left as they are (a
    compensated high group lost agreement on digits_former: 444 -> 440 of the 450 test digits);
    on the low groups it took digits_former (weight_bits=16) from 7.08% to 6.24% of neuron counts
    differing from the float model and digits_cnn from 3.94% to 3.37% (docs/benchmarks.md)."""
    comp: dict[str, float] = {}
    for pr in projs:
        lo = pr.low
        if lo is None or lo.exp >= 0 or pr.target not in pops:
            continue
        graded = pr.source in net.products or (pr.source in pops and pops[pr.source].relay)
        steps = 1 if graded else (pops[pr.source].D if pr.source in pops else net.D)  # its own D: its cap
        comp[pr.target] = comp.get(pr.target, 0.0) + steps * (0.5 - 2.0**lo.exp) * 2**ACT_SHIFT
    return comp


def _quantize_bias(b_mem: np.ndarray, policy: str, lsb: tuple[np.ndarray, int] | None = None
                   ) -> tuple[np.ndarray, int, int]:
    """(mantissa int32, exponent, saturated count) for biases given in membrane units. With a
    calibrated correction `lsb` = (k, e) (choice "bias_lsb" / "bias_exp", `lsb_corrections`) the
    exponent is e and each mantissa rint(b_mem / 2**e) + k: the correction in the unit the chip
    applies it in, whole bias LSBs."""
    if lsb is not None:
        k, e = lsb
    elif policy == "netx":
        k, e = 0, NETX_BIAS_EXP
    else:
        top = float(np.abs(b_mem).max()) if b_mem.size else 0.0
        k, e = 0, BIAS_EXP_MIN
        while e < BIAS_EXP_MAX and np.rint(top / 2.0**e) > BIAS_MANT_MAX:
            e += 1
    m = np.rint(b_mem / 2.0**e).astype(np.int64) + k
    sat = int(np.count_nonzero((m > BIAS_MANT_MAX) | (m < BIAS_MANT_MIN)))
    return np.clip(m, BIAS_MANT_MIN, BIAS_MANT_MAX).astype(np.int32), e, sat


def _bias_membrane(p: Population, mem: float, extra: np.ndarray | float = 0.0, comp: float = 0.0) -> np.ndarray:
    """Population `p`'s bias in membrane units (`mem` per unit of current): fire bias, constant
    current and an older artefact's float correction `extra` (current units), plus `comp` (the
    low synapse groups' floor compensation, membrane units)."""
    b = (p.bias + p.const + extra) * mem
    return b + comp if comp else b


def _lsb_current(lsb: tuple[np.ndarray, int] | None, s: float) -> np.ndarray | float:
    """A correction in bias LSBs (k, e) in current units at scale s (for the reports' bias error)."""
    return 0.0 if lsb is None else lsb[0] * 2.0 ** lsb[1] / (s * 2**ACT_SHIFT)


def choice_problem(p: Population, s: float, shift: int, clip: float) -> str:
    """Why scaling choice (shift, clip) cannot be applied to population `p` whose rule-chosen scale
    is `s` (its threshold mantissa would leave [VTH_FLOOR, vth_cap], or a bias that fits would be
    clipped), or "" when it can."""
    if not isinstance(shift, int) or isinstance(shift, bool) or not SHIFT_MIN <= shift <= SHIFT_MAX:
        return f"shift {shift!r} is not an integer in [{SHIFT_MIN}, {SHIFT_MAX}]"
    if not isinstance(clip, (int, float)) or isinstance(clip, bool) or not 1.0 <= clip <= CLIP_MAX:
        return f"clip {clip!r} is not a number in [1, {CLIP_MAX}]"
    s2 = s * 2.0**shift * clip
    vth = int(round(p.theta * s2))
    if not min(VTH_FLOOR, int(round(p.theta * s))) <= vth <= vth_cap(p.D):
        return f"its threshold mantissa would be {vth}"
    top = float(np.abs(p.bias + p.const).max()) if p.size else 0.0
    if top * s2 * 2**ACT_SHIFT > BIAS_MAX and top * s * 2**ACT_SHIFT <= BIAS_MAX:
        return "its largest bias would be clipped"
    return ""


def relay_choice_problem(choice: dict) -> str:
    """Why a relay's stored scaling choice ({"shift": k}, k in [0, RELAY_SHIFT_MAX], and/or a
    calibrated bias correction, `bias_problem`) cannot be applied, or "" when it can."""
    if not choice or set(choice) - {"shift", *BIAS_KEYS}:
        return f"a relay takes only a shift, not {sorted(set(choice) - {'shift', *BIAS_KEYS}) or 'nothing'}"
    k = choice.get("shift", 0)
    if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= RELAY_SHIFT_MAX:
        return f"shift {k!r} is not an integer in [0, {RELAY_SHIFT_MAX}]"
    return ""


def _stored(graph: Graph, key: str, default):
    mine = targets.stored(graph, TARGET)
    return mine[key] if key in mine else graph.meta.get(LEGACY_KEYS[key], default)


def bias_problem(p: Population, choice: dict | None) -> str:
    """Why a stored bias correction cannot be applied to population `p`, or "" when it can (or
    there is none). Either "bias_lsb" (one integer per neuron, whole bias LSBs at the exponent
    "bias_exp", an integer in [BIAS_EXP_MIN, BIAS_EXP_MAX]: what `calibrate` stores) or an older
    artefact's "bias" (one float per neuron, current units per window); each an array (stored in
    the deployed graph's archive, read back as float64) or a list."""
    if not choice or not set(choice) & set(BIAS_KEYS):
        return ""
    if "bias" in choice and "bias_lsb" in choice:
        return "its choice holds both a float bias correction and one in bias LSBs"
    if "bias_lsb" in choice or "bias_exp" in choice:
        if "bias_lsb" not in choice or "bias_exp" not in choice:
            return "its bias correction in bias LSBs needs both bias_lsb and bias_exp"
        e = choice["bias_exp"]
        if isinstance(e, float) and e.is_integer():
            e = int(e)
        if not isinstance(e, int) or isinstance(e, bool) or not BIAS_EXP_MIN <= e <= BIAS_EXP_MAX:
            return f"its bias_exp {e!r} is not an integer in [{BIAS_EXP_MIN}, {BIAS_EXP_MAX}]"
    key = "bias_lsb" if "bias_lsb" in choice else "bias"
    b = choice[key]
    if isinstance(b, (list, tuple)):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in b):
            return "its bias correction holds a value that is not a finite number"
        b = np.asarray(b, np.float64)
    if not isinstance(b, np.ndarray) or b.ndim != 1 or b.dtype.kind not in "iuf":
        return f"its bias correction is not a list of numbers per neuron"
    if b.shape[0] != p.size:
        return f"its bias correction has {b.shape[0]} values for {p.size} neurons"
    if not np.isfinite(b).all():
        return "its bias correction holds a value that is not a finite number"
    if key == "bias_lsb" and (np.any(b != np.rint(b)) or np.abs(b).max(initial=0) >= 2**31):
        return "its bias_lsb holds a value that is not a whole number of bias LSBs (int32)"
    return ""


def _bias_lsb(choice: dict | None) -> tuple[np.ndarray, int] | None:
    """A checked choice's correction in bias LSBs as (k int64 (N,), e), or None."""
    if not choice or "bias_lsb" not in choice:
        return None
    return np.asarray(choice["bias_lsb"], np.float64).astype(np.int64), int(choice["bias_exp"])


def without_bias(choice: dict) -> dict:
    """A choice as the reports show it: the per-neuron bias correction (stored once, in the deployed
    graph's archive) summarised by its largest magnitude (`bias_max_abs`, current units, an older
    artefact's float correction; `bias_lsb_max_abs`, bias LSBs at `bias_exp`, which is kept)."""
    if "bias" in choice:
        b = np.abs(np.asarray(choice["bias"], np.float64))
        return {**{k: v for k, v in choice.items() if k != "bias"}, "bias_max_abs": float(b.max()) if b.size else 0.0}
    if "bias_lsb" in choice:
        b = np.abs(np.asarray(choice["bias_lsb"], np.float64))
        return {**{k: v for k, v in choice.items() if k != "bias_lsb"},
                "bias_lsb_max_abs": int(b.max()) if b.size else 0}
    return dict(choice)


def stored_choices(graph: Graph) -> dict | None:
    """The calibrated scaling choices a compile stored in the deployed graph (ir.json
    meta.target.loihi CHOICES_KEY, or an older artefact's meta.loihi_fixed_choices: population ->
    {"shift", "clip"} and/or a per-neuron bias correction, "bias_lsb" + "bias_exp" or an older
    artefact's "bias"), or None (the rules' defaults)."""
    return _stored(graph, CHOICES_KEY, None) or None


def stored_weight_bits(graph: Graph) -> int:
    """The weight_bits a compile stored in the deployed graph (ir.json meta.target.loihi
    WEIGHT_BITS_KEY, or an older artefact's meta.loihi_weight_bits), else 8."""
    return int(_stored(graph, WEIGHT_BITS_KEY, 8))


def quantize(net: Network, policy: str = "precision", choices: dict | None = None, lenient: bool = False,
             weight_bits: int | None = None) -> QNetwork:
    """Quantise every population and projection of `net` to Loihi 2 fixed-point ranges.
    `weight_bits` 16 (default: the graph's stored value, `stored_weight_bits`, else 8): every
    projection whose exponent e > WEXP_MIN also gets a low synapse group (`QProjection.low`,
    mantissas at exponent `low_exp(e)`), the weight on a grid up to 2**8 times finer
    (`mantissas`); the scales, thresholds and biases are those of 8 bits.
    `choices` (policy "precision"): population -> {"shift": k, "clip": r}, the calibrated scaling
    choices (`calibrate`): the population's scale is the rule's s times 2**k (the incoming
    projections' weight exponents follow it) times r >= 1 (mantissas on a grid r times finer, the
    weights above 254 / r of the largest clipped; exponents unchanged). A choice the population
    cannot take (`choice_problem`) is refused naming it, or with `lenient` (trying candidates)
    left at the default and not recorded in the report's `choice`."""
    if policy not in POLICIES:
        raise TargetError(f"unknown quantisation policy {policy!r}", where="snncc_lava.fixed",
                          hint=f"one of {', '.join(POLICIES)}")
    weight_bits = stored_weight_bits(net.graph) if weight_bits is None else int(weight_bits)
    if weight_bits not in WEIGHT_BITS or (weight_bits != 8 and policy == "netx"):
        raise TargetError(f"weight_bits {weight_bits} with the {policy} policy", where="loihi option weight_bits",
                          hint="8 or 16 (netx: 8)")
    low = weight_bits == 16
    leaky = [p.name for p in net.populations.values() if p.leak != 1.0]
    if leaky and policy == "netx":  # netx has LIF's per-step decay only (and refuses stateful neurons)
        raise TargetError(f"population {leaky[0]} is leaky (leak {net.populations[leaky[0]].leak:.6g}): netx's "
                          "neurons decay at every step, not between windows", where=f"population {leaky[0]}",
                          hint="deploy without netx=true")
    if policy == "netx" and any(p.relay for p in net.populations.values()):
        raise TargetError("netx has no relay layer", where="snncc_lava.fixed", hint="deploy with fan-in streams")
    # the float weight each projection quantises, per unit of what its source sends: a spike product
    # sends its raw integer product in fixed point, so the product's scale is folded into the weights
    # of its projections; a relay sends its value in its own activation units (payload = value x
    # scale), so its projections' weights are divided by the relay's scale (known once the relay,
    # earlier in topological order, is quantised)
    # (a one-kernel projection quantises its kernel, `network.KernelPath`; the others their matrix)
    base: list = [pr.kernel.kernel() if pr.kernel is not None else pr.weight for pr in net.projections]
    weights: list = [w * net.products[pr.source].scale if pr.source in net.products else w
                     for w, pr in zip(base, net.projections)]
    for mp in net.pools.values():
        window = int(np.diff(mp.weight.indptr).max(initial=0))
        if window > OR_MAX_WINDOW:
            raise TargetError(f"max pool {mp.name} has windows of {window} inputs; its fixed_pt OR neurons are exact "
                              f"for at most {OR_MAX_WINDOW}", where=f"node {mp.name}", hint="compile with precision=float")
    pops: dict[str, QPopulation] = {}
    scales: dict[str, float] = {}
    exp_scales: dict[str, float] = {}  # the scale weight exponents are chosen at (the clip factor left out)
    report: dict = {"policy": policy, "populations": {}, "output": {}}
    choices = dict(choices or {}) if policy == "precision" else {}
    unknown = sorted(set(choices) - set(net.populations))
    if unknown:
        raise TargetError(f"stored scaling choice for {unknown[0]}, which is not a neuron population of this "
                          f"network", where=f"population {unknown[0]}", hint="recompile the artefact")

    def per_unit(i: int):
        pr = net.projections[i]
        if pr.source in net.populations and net.populations[pr.source].relay:
            return base[i] / scales[pr.source]
        return weights[i]

    extra: dict[str, np.ndarray] = {}  # an older artefact's bias corrections (choice "bias"), current units per window
    lsb: dict[str, tuple[np.ndarray, int]] = {}  # calibrated bias corrections in bias LSBs (choice "bias_lsb", "bias_exp")
    for p in net.populations.values():
        why = bias_problem(p, choices.get(p.name))
        if why:
            raise TargetError(f"scaling choice of population {p.name} cannot be applied: {why}",
                              where=f"population {p.name}", hint="recompile the artefact")
        if choices.get(p.name) and "bias" in choices[p.name]:
            extra[p.name] = np.asarray(choices[p.name]["bias"], np.float64)
        if (k := _bias_lsb(choices.get(p.name))) is not None:
            lsb[p.name] = k
        for i, pr in enumerate(net.projections):
            if pr.target == p.name:
                weights[i] = per_unit(i)
        incoming = [w for w, pr in zip(weights, net.projections) if pr.target == p.name]
        fed = [pr.source for pr in net.projections if pr.target == p.name]
        relays_in = list(dict.fromkeys(f for f in fed if f in pops and pops[f].relay))
        if p.relay:
            choice = choices.get(p.name)
            why = relay_choice_problem(choice) if choice is not None else ""
            if why:
                raise TargetError(f"scaling choice {choice} of relay {p.name} cannot be applied: {why}",
                                  where=f"population {p.name}", hint="recompile the artefact")
            s = relay_scale(p, incoming, scales[relays_in[0]] if len(relays_in) == 1 else None,
                            choice.get("shift", 0) if choice else 0)
            q, bias_sat = _relay_population(p, s, extra.get(p.name, 0.0), lsb.get(p.name))
            pops[p.name] = q
            scales[p.name] = s
            report["populations"][p.name] = {
                "scale": s, "relay": True, "bias_exp": q.bias_exp, "bias_saturated": bias_sat,
                "host_input": p.host_input, "projections": [], **({"choice": without_bias(choice)} if choice else {}),
                "bias_max_abs_error": float(np.abs(q.bias_eff / (s * 2**ACT_SHIFT) - (p.bias + p.const
                                                                                       + extra.get(p.name, 0.0)
                                                                                       + _lsb_current(lsb.get(p.name), s))).max())
                if p.size else 0.0}
            continue
        s = _population_scale(p, incoming, policy, graded=bool(relays_in) or any(f in net.products for f in fed))
        halved = bias_halvings(p, s) if policy == "precision" else 0
        s /= 2.0**halved
        choice = choices.get(p.name)
        es = s
        if choice is not None:
            shift, clip = choice.get("shift", 0), choice.get("clip", 1.0)
            why = choice_problem(p, s, shift, clip)
            if why and not lenient:
                raise TargetError(f"scaling choice {choice} of population {p.name} cannot be applied: {why}",
                                  where=f"population {p.name}", hint="recompile the artefact")
            if why:
                choice = None
            else:
                es = s * 2.0**shift
                s = es * clip
        exp_scales[p.name] = es
        vth = int(round(p.theta * s))
        if not 1 <= vth <= VTH_MAX:
            raise TargetError(f"threshold mantissa {vth} of population {p.name} is outside [1, {VTH_MAX}]",
                              where=f"population {p.name}", hint="weights and threshold are too far apart for 8-bit weights")
        theta_eff = vth << VTH_SHIFT
        if vth > vth_cap(p.D):
            raise TargetError(f"D * threshold of population {p.name} exceeds the 24-bit membrane",
                              where=f"population {p.name}")
        mem = s * 2**ACT_SHIFT  # membrane units per unit of current
        b_float = p.bias + p.const + extra.get(p.name, 0.0) + _lsb_current(lsb.get(p.name), s)  # what the bias stands for
        bias_mant, bias_exp, bias_sat = _quantize_bias(_bias_membrane(p, mem, extra.get(p.name, 0.0)), policy,
                                                        lsb.get(p.name))
        # netx adds beta as part of its bias (bias_exp 6): a whole number of 64 membrane units
        v_init = int(round(p.beta * s)) << ACT_SHIFT if policy == "netx" else int(round(p.beta * mem))
        if abs(v_init) > V_LIMIT:
            raise TargetError(f"initial membrane (beta) of population {p.name} exceeds 24 bits", where=f"population {p.name}")
        q = QPopulation(p.name, p.shape, p.D, s, vth, bias_mant, bias_exp, v_init, p.stateful, p.level, p.start,
                        p.host_input, leak_mant=quantize_leak(p.leak), reset=p.reset, strict=p.strict)
        pops[p.name] = q
        scales[p.name] = s
        theta_q = vth / s
        bias_back = q.bias_eff.astype(np.float64) / mem
        report["populations"][p.name] = {
            "scale": s, "theta": p.theta, "vth": vth, "theta_eff": theta_eff, "theta_quantised": theta_q,
            "threshold_rel_error": abs(theta_q - p.theta) / p.theta,
            "beta": p.beta, "v_init": v_init, "beta_abs_error": abs(v_init / mem - p.beta),
            "bias_exp": bias_exp, "bias_saturated": bias_sat,
            "scale_halved_for_bias": halved, **({"choice": without_bias(choice)} if choice is not None else {}),
            "bias_max_abs_error": float(np.abs(bias_back - b_float).max()) if b_float.size else 0.0,
            "host_input": p.host_input, "projections": []}
        if p.leak != 1.0:
            report["populations"][p.name].update(
                leak=p.leak, leak_mant=q.leak_mant, leak_abs_error=abs(q.leak_mant / (1 << LEAK_BITS) - p.leak))
    for i, pr in enumerate(net.projections):
        if pr.target == "output":
            weights[i] = per_unit(i)
    out_in = [i for i, pr in enumerate(net.projections) if pr.target == "output"]
    m_out = max((max_abs(weights[i]) for i in out_in), default=0.0)
    out_scale = W_MAX / m_out if m_out > 0 else 1.0
    scales["output"] = out_scale
    exp_scales.update({k: v for k, v in scales.items() if k not in exp_scales})
    report["output"] = {"scale": out_scale, "projections": []}
    projs = []
    for pr, wf in zip(net.projections, weights):
        s = scales[pr.target]
        e = 0 if policy == "netx" or pr.target == "output" else _exp_for(max_abs(wf), exp_scales[pr.target])
        if pr.kernel is not None:
            k, klo, stats = quantize_kernel(wf, s, e, low)
            q = QProjection(pr.source, pr.target, None, e, pr.delay, list(pr.nodes), k, pr.kernel, net.graph)
            if klo is not None:
                q.low = QProjection(pr.source, pr.target, None, low_exp(e), pr.delay, list(pr.nodes), klo, pr.kernel,
                                    net.graph)
            used, used_lo = k[k != 0], (klo[klo != 0] if klo is not None else None)
            form = {"form": "kernel", "kernel_shape": list(k.shape),
                    "weight_node": pr.kernel.op.name if pr.kernel.op is not None else None}
        else:
            w, wlo, stats = quantize_weight(wf, s, e, low)
            q = QProjection(pr.source, pr.target, w, e, pr.delay, list(pr.nodes))
            if wlo is not None:
                q.low = QProjection(pr.source, pr.target, wlo, low_exp(e), pr.delay, list(pr.nodes))
            used, used_lo = w.data, (wlo.data if wlo is not None else None)
            form = {"form": "matrix"}
        projs.append(q)
        form["mantissa_range"] = [int(used.min()), int(used.max())] if used.size else [0, 0]
        if used_lo is not None:
            form["low_mantissa_range"] = [int(used_lo.min()), int(used_lo.max())] if used_lo.size else [0, 0]
        entry = {"source": pr.source, **form, **stats}
        (report["output"] if pr.target == "output" else report["populations"][pr.target])["projections"].append(entry)
    for name, comp in floor_compensation(net, pops, projs).items():
        p, q = net.populations[name], pops[name]
        mem = q.scale * 2**ACT_SHIFT
        b_float = p.bias + p.const + extra.get(name, 0.0) + _lsb_current(lsb.get(name), q.scale)
        q.bias_mant, q.bias_exp, sat = _quantize_bias(_bias_membrane(p, mem, extra.get(name, 0.0), comp), policy,
                                                       lsb.get(name))
        r = report["populations"][name]
        err = float(np.abs((q.bias_eff - comp) / mem - b_float).max()) if p.size else 0.0
        r.update(bias_exp=q.bias_exp, bias_saturated=sat, floor_compensation=comp, bias_max_abs_error=err)
    allp = [e for r in report["populations"].values() for e in r["projections"]] + report["output"]["projections"]
    report["totals"] = {"weights_nonzero": sum(e["nonzero"] for e in allp),
                        "weights_vanished": sum(e["vanished"] for e in allp),
                        "weights_saturated": sum(e["saturated"] for e in allp),
                        "bias_saturated": sum(r["bias_saturated"] for r in report["populations"].values()),
                        "max_threshold_rel_error": max((r["threshold_rel_error"] for r in report["populations"].values()
                                                        if "threshold_rel_error" in r), default=0.0)}
    report["weight_bits"] = weight_bits
    return QNetwork(net, policy, pops, projs, out_scale, report)


# --------------------------------------------------------------------------------------------
# host side


def host_activation(q: QPopulation, cur: np.ndarray) -> tuple[np.ndarray, int]:
    """Encoding current (float, (..., N)) -> the integer activation the host sends ((..., N) int32,
    round to nearest even, saturated to 24 bits) and the number of saturated entries."""
    a = np.rint(np.asarray(cur, np.float64) * q.scale)
    sat = int(np.count_nonzero(np.abs(a) > HOST_LIMIT))
    return np.clip(a, -HOST_LIMIT, HOST_LIMIT).astype(np.int32), sat


def stream(qnet: QNetwork, x) -> tuple[torch.Tensor, int]:
    """x as (B * T, *in_shape) float64 in stream order, and B (same layout as the float lowering)."""
    return batch_stream(qnet.net.graph, x)


# --------------------------------------------------------------------------------------------
# integer reference


@dataclass
class FixedResult:
    output: torch.Tensor  # (B, *out_shape) dequantised read-out, mean over T
    counts: dict[str, torch.Tensor]  # population -> (B, *shape) int64 spike counts summed over T
    readout: np.ndarray  # (B, T, N_out) int64 read-out activations summed over each window
    events: dict = field(default_factory=dict)  # wraps / saturations seen
    relays: dict = field(default_factory=dict)  # relay -> (B, *shape) int64 payloads summed over T
    pooled: dict = field(default_factory=dict)  # max pool -> (B, *shape) int64 spikes summed over T
    windows: dict = field(default_factory=dict)  # with `forced`: population -> (B, T, N) int64 per window
    relay_peaks: dict = field(default_factory=dict)  # relay -> largest |payload| of any window


def _dense(pr: QProjection, s: np.ndarray, n_out: int) -> np.ndarray:
    """Lava fixed_pt Sparse output for per-sample spike vectors s (B, N_src) int64 -> (B, N_tgt):
    the integer sum of the weights of the spiking inputs (times the payload when graded), shifted
    by the weight exponent once (Lava shifts the summed product, not each weight); a one-kernel
    projection computes the sum with its kernel (convolutions), no matrix built. With a low group
    (weight_bits=16) its own Sparse output, shifted by its own exponent, is added (two synapse
    processes into the same input port, which sums them)."""
    if not s.any():
        return np.zeros((s.shape[0], n_out), np.int64)
    a = shift(pr.apply(s), pr.exp)
    return a + shift(pr.low.apply(s), pr.low.exp) if pr.low is not None else a


def simulate_fixed(qnet: QNetwork, x, emit: str = "burst", currents: dict | None = None,
                   forced: dict | None = None) -> FixedResult:
    """Integer simulation of `qnet` on x ((B, *in) or (T, B, *in)), sub-step by sub-step as the
    Lava fixed_pt models compute it (synapse shift per sub-step, u wrap per sub-step, v saturation,
    floor count, subtractive reset; spike products land on the consumer's last sub-step).
    `currents`: population -> (B * T, N) host currents in stream order instead of the encoding
    currents of x (a sub-graph's boundary inputs, as `lower.run_network` takes them).
    `forced`: population -> (B, T, N) integer per-window counts (relays: payloads) taken as given
    instead of computed (read in place, any integer dtype, one window at a time as int64; populations
    missing from it and not `forced["only"]` send nothing); `forced["only"]` names the populations
    computed (`calibrate` measures one population on the others' outputs). The result's `windows`,
    `counts` and `relays` then hold the computed populations only (int64), and only they get state:
    a forced run allocates for what it computes, not for the whole network."""
    if emit not in ("burst", "graded"):
        raise SnnccError(f"unknown emission mode {emit!r}")
    net = qnet.net
    if net.pools and graded_problems(net.graph, emit):
        raise TargetError(graded_problems(net.graph, emit)[0], where="loihi option emit")
    xs, B = stream(qnet, x)
    T, D = net.T, net.D
    xs_bt = xs.reshape((B, T) + tuple(xs.shape[1:]))
    only = set(forced["only"]) if forced is not None else None
    computed = [p for p in qnet.populations if only is None or p in only]
    counts = {p: np.zeros((B, T, qnet.populations[p].size), np.int64) for p in computed}
    if only is not None:  # the others: the forced windows as given, or nothing sent (a zero view: no memory)
        for p, q in qnet.populations.items():
            if p not in only:
                counts[p] = forced[p] if p in forced else np.broadcast_to(np.zeros(1, np.int64), (B, T, q.size))
    n_out = int(np.prod(net.output_shape))
    readout = np.zeros((B, T, n_out), np.int64)
    host = {}
    events = {"u_wraps": 0, "v_saturations": 0, "host_saturations": 0}
    peaks: dict[str, int] = {}
    for p, q in qnet.populations.items():
        if q.host_input and (only is None or p in only):
            cur = (np.asarray(currents[p]) if currents is not None else host_currents(net, p, xs).numpy())
            cur = cur.reshape(B, T, q.size)
            host[p], sat = host_activation(q, cur)
            events["host_saturations"] += sat
    by_target: dict[str, list[QProjection]] = {}
    for pr in qnet.projections:
        by_target.setdefault(pr.target, []).append(pr)
    carry = {p: np.full((B, qnet.populations[p].size), qnet.populations[p].v_init, np.int64) for p in computed}
    sources = dict(counts)
    if net.spike_input is not None:  # the host's bursts, emitted like a level-0 population
        sources[net.spike_input.name] = spike_input_counts(net, xs, emit).reshape(B, T, -1)
    products: dict[tuple[str, int], np.ndarray] = {}

    def product_of(name: str, t: int) -> np.ndarray:
        """Raw integer product of window t (B, size): the scale lives in the projection's weights."""
        if (name, t) not in products:
            pp = net.products[name]
            xs_ = [counts[o.source][:, t][:, o.index].astype(np.int64, copy=False).reshape((B,) + o.shape)
                   for o in pp.operands]
            products[(name, t)] = product(xs_, pp.order).reshape(B, -1)
        return products[(name, t)]

    pooled: dict[str, np.ndarray] = {m: np.zeros((B, T, mp.size), np.int64) for m, mp in net.pools.items()}
    pooled_at: set = set()

    def pool_of(name: str, t: int) -> np.ndarray:
        """Window t of a max pool (B, size): the max count of each pool window (the OR neurons'
        burst; their weights, mantissa 2 against vth 1, fire on any input spike)."""
        if (name, t) not in pooled_at:
            mp = net.pools[name]
            c = pool_of(mp.source, t) if mp.source in net.pools else sources[mp.source][:, t]
            w = mp.weight
            vals = c[:, w.indices]
            starts = w.indptr[:-1]
            got = np.maximum.reduceat(vals, np.minimum(starts, max(vals.shape[1] - 1, 0)), axis=1) if vals.size \
                else np.zeros((B, mp.size), np.int64)
            got[:, np.diff(w.indptr) == 0] = 0
            pooled[name][:, t] = got
            pooled_at.add((name, t))
        return pooled[name][:, t]

    def trains(src: str, t: int, j: int) -> np.ndarray:
        if src in net.pools:
            return (j < pool_of(src, t)).astype(np.int64)
        if src in net.products:  # one graded message, landing on the consumer's last sub-step
            return product_of(src, t) if j == D - 1 else np.zeros((B, net.products[src].size), np.int64)
        n = sources[src][:, t].astype(np.int64, copy=False)  # a forced window may be stored narrower
        if emit == "graded" or (src in qnet.populations and qnet.populations[src].relay):
            return n if j == 0 else np.zeros_like(n)
        return (j < n).astype(np.int64)

    for t in range(T):
        for p, q in qnet.populations.items():
            if only is not None and p not in only:
                continue
            u = np.zeros((B, q.size), np.int64)
            for j in range(D):
                a = np.zeros((B, q.size), np.int64)
                for pr in by_target.get(p, []):
                    a = a + _dense(pr, trains(pr.source, t, j), q.size)
                if q.host_input and j == 0:
                    a = a + host[p][:, t].astype(np.int64)
                raw = u + np.left_shift(a, ACT_SHIFT)
                u = wrap_u(raw)
                events["u_wraps"] += int(np.count_nonzero(u != raw))
            m = carry[p] if (q.stateful and t > 0) else np.full((B, q.size), q.v_init, np.int64)
            raw = u + m + q.bias_eff
            v = saturate_v(raw)
            events["v_saturations"] += int(np.count_nonzero(v != raw))
            if q.relay:  # the value itself, in activation units: the graded payload
                counts[p][:, t] = relay_payload(v)
                peak = int(np.abs(counts[p][:, t]).max()) if q.size else 0
                peaks[p] = max(peaks.get(p, 0), peak)
                continue
            n = count(v, q.theta_eff, q.D, q.strict)  # the population's own D: its cap per window
            counts[p][:, t] = n
            carry[p] = next_membrane(v, n, q.theta_eff, q.v_init, q.leak_mant, q.reset)
        for j in range(D):
            for pr in by_target.get("output", []):
                readout[:, t] += _dense(pr, trains(pr.source, t, j), n_out)
    out = dequantize_output(qnet, readout.reshape(B * T, n_out), xs).reshape((B, T) + tuple(net.output_shape))
    summed = {p: torch.as_tensor(counts[p].sum(1).reshape((B,) + qnet.populations[p].shape)) for p in computed}
    relays = {p: c for p, c in summed.items() if qnet.populations[p].relay}
    res_counts = {p: c for p, c in summed.items() if p not in relays}
    for m in net.pools:  # a pool no population reads is still computed (its counts are reported)
        for t in range(T):
            pool_of(m, t)
    pools_sum = {m: torch.as_tensor(c.sum(1).reshape((B,) + net.pools[m].shape)) for m, c in pooled.items()}
    return FixedResult(torch.as_tensor(out.mean(1)), res_counts, readout, events, relays, pools_sum,
                       {p: counts[p] for p in computed} if only is not None else {}, peaks)


def dequantize_output(qnet: QNetwork, readout: np.ndarray, xs: torch.Tensor) -> np.ndarray:
    """(K, N_out) integer read-out per window -> float output per window (host side)."""
    net = qnet.net
    out = readout.astype(np.float64) / qnet.output_scale + net.output_const
    if net.output_host:
        out = out + host_currents(net, net.graph.output.name, xs).numpy()
    return out


# --------------------------------------------------------------------------------------------
# calibration


CALIBRATION_BATCH = 32  # samples per integer-model run while calibrating (memory stays bounded)


def _tally(graph: Graph, pairs) -> dict:
    """Argmax agreement and per population counts differing / summed |difference| of the fixed
    model against the float integer model over (FixedResult, snncc.sim.reference.Result) batches."""
    from snncc.sim.tally import ModelTally

    t = ModelTally(graph, "")
    l1: dict[str, int] = {}
    for res, ref in pairs:
        t.observe(res, ref)
        for p in t.pops:
            if p in res.counts and p in ref.counts:
                l1[p] = l1.get(p, 0) + int((res.counts[p].double() - ref.counts[p].double()).abs().sum())
    return {"samples": t.samples, "agree": t.agree, "scored": t.scored,
            "differing": {p: t.differing[p] for p in l1}, "neurons": {p: t.neurons[p] for p in l1}, "abs_error": l1}


def _split(graph: Graph, x, size: int) -> list:
    """x ((B, *in) or (T, B, *in)) cut into batches of at most `size` samples."""
    x = torch.as_tensor(x)
    tb = x.dim() == len(graph.inputs[0].shape) + 2
    n = int(x.shape[1] if tb else x.shape[0])
    return [x[:, s:s + size] if tb else x[s:s + size] for s in range(0, n, size)]


def calibrate(net: Network, x, emit: str = "burst", candidates=CANDIDATES) -> tuple[dict, dict]:
    """Scaling choices measured on calibration inputs x ((B, *in) or (T, B, *in)): first each relay's
    shift from its largest payload under the rules' scaling (`relay_shift`), then, greedily, one
    neuron population at a time in topological order, the candidate (shift, clip) (`quantize`'s
    `choices`) whose counts, computed on the fixed-point outputs of the populations before it
    (already at their chosen values), are nearest the float integer model's counts (the sum of
    |count difference| over samples and neurons; a tie keeps the rules' default). A population's
    quantisation depends on its own choice only (weights are per source spike; the relays' shifts
    are fixed before, spike products take none), so each candidate is quantised once for all
    populations. The relays' shifts are kept only if the whole fixed model then has fewer counts
    differing from the float one on these samples than with the rules' scaling, and so are all the
    choices at the end (E-SpikeFormer-5.1M, random weights, 2 samples: the greedy's local choices
    took it from 5.6% to 10.1% of counts differing). Last, every population's bias takes the mean
    input its quantised weights lose on these samples (`bias_corrections` on `source_means`, stored
    as whole bias LSBs per neuron, choice keys "bias_lsb" and "bias_exp", `lsb_corrections`), kept
    likewise only if the whole model then has fewer
    counts differing (digits_former, 8-bit, 64 training digits: 441 -> 446 of the 450 test digits
    agree). Samples are run CALIBRATION_BATCH at a time. Memory: each greedy step computes one
    population (`simulate_fixed(forced=)` allocates for it alone and reads the others' windows in
    place), the chosen windows are kept in the narrowest integer type, and the candidates'
    networks are dropped after the greedy.
    Returns (choices, report): population -> {"shift", "clip"} (a relay: {"shift"}) for those
    moved from the default, plus "bias_lsb" / "bias_exp" where corrected, and the before/after measurement
    (agreement, per population counts differing and summed |error|; `bias_corrected` names the
    corrected populations)."""
    from snncc.sim.reference import run

    graph = net.graph
    xs = _split(graph, x, CALIBRATION_BATCH)
    refs = [run(graph, xb) for xb in xs]
    rules = quantize(net)
    peaks: dict[str, int] = {}

    def observed():  # the rules' fixed model on each batch, noting each relay's largest payload
        for xb, ref in zip(xs, refs):
            res = simulate_fixed(rules, xb, emit)
            for r, v in res.relay_peaks.items():
                peaks[r] = max(peaks.get(r, 0), v)
            yield res, ref
    before = _tally(graph, observed())
    relays = {r: {"shift": k} for r, k in ((r, relay_shift(v)) for r, v in peaks.items()) if k}
    if relays and _differing(_tally(graph, _runs(quantize(net, choices=relays), xs, refs, emit))) >= _differing(before):
        relays = {}  # finer relays measured no better on these samples (their consumers' weights got coarser)
    base = quantize(net, choices=relays)
    trial = {c: quantize(net, choices={**relays, **{p.name: {"shift": c[0], "clip": c[1]}
                                                    for p in net.populations.values() if not p.relay}}, lenient=True)
             for c in candidates if tuple(c) != (0, 1.0)}
    windows: list[dict[str, np.ndarray]] = [{} for _ in xs]
    chosen: dict[str, dict] = dict(relays)
    for name, q in base.populations.items():
        measured = not q.relay and name in refs[0].counts
        options = [(None, base)] + [(c, qn) for c, qn in trial.items()
                                    if measured and "choice" in qn.report["populations"][name]]
        best, best_err, best_w = None, None, None
        for c, qn in options:
            err, ws = 0, []
            for xb, ref, win in zip(xs, refs, windows):
                w = simulate_fixed(qn, xb, emit, forced={**win, "only": [name]}).windows[name]
                if measured:
                    n = w.shape[0]
                    err += int(np.abs(w.sum(1).reshape(n, -1) - ref.counts[name].reshape(n, -1).numpy()).sum())
                ws.append(narrow_int(w))  # the same integers in fewer bytes (counts <= D: int8)
            if best_err is None or err < best_err:
                best, best_err, best_w = c, err, ws
        for win, w in zip(windows, best_w):
            win[name] = w
        if best is not None:
            chosen[name] = {"shift": int(best[0]), "clip": float(best[1])}
    del trial, windows, base, rules  # the candidates' networks and windows: not needed past the greedy
    after = _tally(graph, _runs(quantize(net, choices=chosen), xs, refs, emit)) if chosen else before
    if _differing(after) >= _differing(before):  # the greedy's local choices measured worse as a whole
        chosen, after = {}, before
    corrected: list[str] = []
    corr = bias_corrections(net, quantize(net, choices=chosen), source_means(net, xs, refs))
    if corr:  # the mean input the weights' rounding loses, added back to each bias; kept if it measures better
        floats = {**chosen, **{p: {**chosen.get(p, {}), "bias": np.array([float(f"{v:.6g}") for v in c])} for p, c in corr.items()}}
        lsb = lsb_corrections(net, quantize(net, choices=floats), corr)  # the same mantissas, in whole bias LSBs
        trial_c = {**chosen, **{p: {**chosen.get(p, {}), **c} for p, c in lsb.items()}}
        measured = _tally(graph, _runs(quantize(net, choices=trial_c), xs, refs, emit)) if lsb else after
        if _differing(measured) < _differing(after):
            chosen, after, corrected = trial_c, measured, sorted(lsb)
    return chosen, {"samples": before["samples"], "candidates": [list(c) for c in candidates], "before": before,
                    "after": after, "relay_peaks": peaks, "bias_corrected": corrected,
                    "measure": "relays: the largest shift keeping their largest payload within "
                               f"{RELAY_PEAK}; neurons: sum of |count - float count| per population, on the fixed "
                               "outputs of the populations before it (greedy, topological order)"}


def source_means(net: Network, xs: list, refs: list) -> dict[str, np.ndarray]:
    """What each population sends per window, averaged over the calibration samples of the float
    integer model (x batches `xs`, their `reference.run` results `refs`), in float units: a neuron
    population its count, a relay its value (linear in its inputs, so computed from the means of
    its sources: float weights, the host's mean encoding current, bias and constant). A relay
    reading a source with no mean here (a spike product, a max pool, a spike input) has none."""
    sums: dict[str, np.ndarray] = {}
    host: dict[str, np.ndarray] = {}
    n = 0
    for xb, ref in zip(xs, refs):
        B = int(ref.output.shape[0])
        n += B
        for p, pop in net.populations.items():
            if not pop.relay and p in ref.counts:
                sums[p] = sums.get(p, 0.0) + ref.counts[p].reshape(B, -1).double().sum(0).numpy() / net.T
            elif pop.relay and pop.host_input:
                cur = host_currents(net, p, batch_stream(net.graph, xb)[0]).numpy().reshape(B * net.T, -1)
                host[p] = host.get(p, 0.0) + cur.sum(0) / net.T
    means = {p: v / n for p, v in sums.items()}
    for p, pop in net.populations.items():  # relays in topological order
        if not pop.relay:
            continue
        feeds = [pr for pr in net.projections if pr.target == p]
        if any(pr.source not in means for pr in feeds):
            continue
        v = pop.bias + (host[p] / n if pop.host_input else pop.const)
        for pr in feeds:
            v = v + _float_apply(pr, means[pr.source], None)
        means[p] = np.asarray(v, np.float64)
    return means


def _float_apply(pr, mean: np.ndarray, kernel) -> np.ndarray:
    """Projection `pr` (network.Projection) applied to one vector (N_source,): with its float weights,
    or with `kernel` (a one-kernel projection) / a matrix in place of them."""
    if pr.kernel is not None:
        return pr.kernel.apply(mean[None], pr.kernel.kernel() if kernel is None else kernel)[0]
    w = pr.weight if kernel is None else kernel
    return np.asarray(w @ mean).ravel()


def bias_corrections(net: Network, qnet: QNetwork, means: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Population -> (N,) current per window its quantised weights lose on average: the sum over
    its incoming projections whose source has a mean (`source_means`) of (W_float - W_fixed) @ mean,
    W_fixed the represented weights (both synapse groups) back in current units per unit the source
    sends in float (a relay: per unit of value, its payload being value x its scale). Added to the
    bias (a 13-bit mantissa per neuron, so free on the chip), it removes the expected part of the
    weights' rounding error, the classic bias correction of post-training quantisation."""
    corr: dict[str, np.ndarray] = {}
    for pr, qp in zip(net.projections, qnet.projections):
        if pr.target not in qnet.populations or pr.source not in means:
            continue
        unit = qnet.populations[pr.source].scale if qnet.populations[pr.source].relay else 1.0
        f = unit / qnet.populations[pr.target].scale
        if pr.kernel is not None:
            k = qp.kernel.astype(np.float64) * 2.0**qp.exp
            if qp.low is not None:
                k = k + qp.low.kernel.astype(np.float64) * 2.0**qp.low.exp
            lost = _float_apply(pr, means[pr.source], pr.kernel.kernel() - k * f)
        else:
            lost = _float_apply(pr, means[pr.source], pr.weight - qp.effective() * f)
        corr[pr.target] = corr.get(pr.target, 0.0) + lost
    return corr


def lsb_corrections(net: Network, qnet: QNetwork, names) -> dict[str, dict]:
    """The float bias corrections `qnet` was quantised with (choice "bias", populations `names`) as
    choices in the unit the chip applies them in: {"bias_lsb": k, "bias_exp": e}, e the corrected
    population's bias exponent and k = its bias mantissa - rint(uncorrected bias / 2**e) (membrane
    units, the floor compensation included), so `quantize` of the returned choices (with the same
    scaling choices) gives `qnet`'s mantissas bit for bit. k is stored as the narrowest of
    int8 / int16 / int32 holding it; a population whose k are all 0 (its mantissas unchanged) is left
    out."""
    out: dict[str, dict] = {}
    for name in names:
        p, q = net.populations[name], qnet.populations[name]
        comp = qnet.report["populations"][name].get("floor_compensation", 0.0)
        base = np.rint(_bias_membrane(p, q.scale * 2**ACT_SHIFT, 0.0, comp) / 2.0**q.bias_exp).astype(np.int64)
        k = q.bias_mant.astype(np.int64) - base
        if not k.any():
            continue
        out[name] = {"bias_lsb": narrow_int(k), "bias_exp": int(q.bias_exp)}
    return out


def _runs(qnet: QNetwork, xs: list, refs: list, emit: str):
    return ((simulate_fixed(qnet, xb, emit), ref) for xb, ref in zip(xs, refs))


def _differing(tally: dict) -> int:
    return sum(tally["differing"].values())


def relay_shift(peak: int) -> int:
    """The calibrated shift of a relay whose largest |payload| on the calibration data was `peak` at
    the rule's scale: the largest k <= RELAY_SHIFT_MAX with peak x 2**k <= RELAY_PEAK (half of the
    2**17 its 24-bit membrane holds, room for inputs beyond the calibration data). A finer relay
    loses 2**k times less to the floors of its sums and payload: on digits_former (weight_bits=16)
    its relays' payloads were 1.7-2.4 units below the float value (teacher-forced, 100 test
    digits), about a thousandth of a consumer's threshold, the largest error in the model."""
    return max((k for k in range(RELAY_SHIFT_MAX + 1) if peak * 2**k <= RELAY_PEAK), default=0)


# --------------------------------------------------------------------------------------------
# artefact


def report_json(qnet: QNetwork) -> dict:
    return {"format": "snncc-lava-quantisation/1", **qnet.report,
            "conventions": {"weights": "8-bit mixed-sign mantissa (even, [-256, 254]) << weight_exp",
                            "activation": "a_in << 6 into the 24-bit current register (wraps)",
                            "threshold": "vth << 6; n = clip(floor(v / (vth << 6)), 0, D)",
                            "bias": "bias_mant (13-bit signed) << bias_exp (0..7), membrane units, once per window",
                            "membrane": "24-bit, saturating", "v_init": "beta in membrane units",
                            "leak": "carried = v_init + ((v - v_init) * leak_mant) >> 12 once per window "
                                    "boundary (stateful; leak_mant = round(leak * 4096))",
                            "relay": "v = sat24(u + bias); sends v >> 6 (its activation units, scale per "
                                     "population) as a 24-bit signed graded message"}}


def report_markdown(doc: dict, limit: int = 400) -> str:
    """The compile report's quantisation section, from lava/quantisation.json: per population its
    threshold mantissa, bias exponent, the halvings of its scale for the bias and clipped biases;
    per projection (kernel or matrix) its weight exponent, the mantissa range used, clipped
    (saturated) and vanished weights. At most `limit` projection rows (the totals cover all)."""
    lines = ["## Fixed point (Loihi 2 fixed_pt)", "",
             f"Policy {doc.get('policy')}; 8-bit mantissas (even, [-256, 254]) << weight_exp per projection, "
             "kernels quantised as kernels (`form` kernel) or as explicit matrices (`form` matrix).", ""]
    wide = doc.get("weight_bits", 8) == 16
    if wide:
        lines[-1] += (" weight_bits=16: a second synapse group per projection, low mantissas << low_exp "
                      "(weight_exp - 8, not below -8), summed with the first at the input port.")
    t = doc.get("totals", {})
    lines += [f"Totals: {t.get('weights_nonzero', 0):,} nonzero weights, {t.get('weights_vanished', 0):,} vanished "
              f"(round to 0), {t.get('weights_saturated', 0):,} clipped; {t.get('bias_saturated', 0):,} clipped biases; "
              f"largest threshold error {t.get('max_threshold_rel_error', 0.0):.2e} (relative).", "",
              "| population | source | form | weight_exp | mantissa range | " + ("low_exp | low mantissa range | " if wide else "")
              + "nonzero | clipped | vanished | vth | bias_exp | bias_halvings | clipped biases |",
              "|---" * (14 if wide else 12) + "|"]
    rows = 0
    items = list(doc.get("populations", {}).items()) + [("output", doc.get("output", {}))]
    for name, r in items:
        for pr in r.get("projections", []):
            if rows < limit:
                lo, hi = pr.get("mantissa_range", [0, 0])
                low = ""
                if wide:
                    llo, lhi = pr.get("low_mantissa_range", [0, 0])
                    low = f"| {pr.get('low_exp', '-')} | [{llo}, {lhi}] " if "low_exp" in pr else "| - | - "
                lines.append(f"| {name} | {pr['source']} | {pr.get('form', 'matrix')} | {pr['exp']} | [{lo}, {hi}] {low}"
                             f"| {pr['nonzero']:,} | {pr['saturated']:,} | {pr['vanished']:,} | {r.get('vth', '')} "
                             f"| {r.get('bias_exp', '')} | {r.get('scale_halved_for_bias', '')} | {r.get('bias_saturated', '')} |")
            rows += 1
    if rows > limit:
        lines.append(f"\n({rows - limit} more projections in lava/quantisation.json)")
    c = doc.get("calibration")
    if c:
        lines += ["", f"### Scaling chosen on calibration data ({c['samples']} samples of {c['data']})", "",
                  calibration_line(doc), "",
                  "Candidates (shift, clip): scale x 2**shift x clip; " +
                  ", ".join(f"({k}, {r:g})" for k, r in c["candidates"]) + f". Measure: {c['measure']}.", "",
                  "| population | chosen shift | chosen clip | counts differing before | after "
                  "| sum abs error before | after |", "|---|---|---|---|---|---|---|"]
        b, a = c["before"], c["after"]
        for name, n in b["neurons"].items():
            ch = c["choices"].get(name, {})
            lines.append(f"| {name} | {ch.get('shift', 0)} | {ch.get('clip', 1.0):g} | {b['differing'][name] / max(1, n):.2%} "
                         f"| {a['differing'][name] / max(1, n):.2%} | {b['abs_error'][name]:,} | {a['abs_error'][name]:,} |")
        relays = {n: ch["shift"] for n, ch in c["choices"].items()
                  if doc.get("populations", {}).get(n, {}).get("relay") and ch.get("shift", 0)}
        if relays:
            peaks = c.get("relay_peaks", {})
            lines += ["", "Relays rescaled (scale x 2**shift; largest payload at the rules' scale): " +
                      ", ".join(f"{n} {k} ({peaks.get(n, '?')})" for n, k in relays.items()) + "."]
        if c.get("bias_corrected"):
            lines += ["", f"Bias corrected ({len(c['bias_corrected'])} populations): each neuron's bias plus the mean "
                      "input its quantised weights lose on the calibration samples (`fixed.bias_corrections`)."]
    return "\n".join(lines) + "\n"


def calibration_line(doc: dict) -> str:
    """One line from quantisation.json's `calibration` (empty without): agreement with the float
    integer model and counts differing on the calibration samples, rules' scaling -> chosen."""
    c = doc.get("calibration")
    if not c:
        return ""

    def part(r):
        d, n = sum(r["differing"].values()), sum(r["neurons"].values())
        agree = f"agreement {r['agree'] / r['scored']:.2%} ({r['agree']}/{r['scored']}), " if r["scored"] else ""
        return f"{agree}{d / max(1, n):.3%} of counts differ"
    rescaled = sum(1 for ch in c["choices"].values() if ch.get("shift", 0) or ch.get("clip", 1.0) != 1.0)
    corrected = f", {len(c['bias_corrected'])} bias-corrected" if c.get("bias_corrected") else ""
    return (f"loihi fixed point calibrated on {c['samples']} samples of {c['data']}: {rescaled} population(s) "
            f"rescaled{corrected}; against the float integer model, rules' scaling {part(c['before'])} -> chosen "
            f"{part(c['after'])}")
