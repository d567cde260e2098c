"""quantize: Speck layers to chip integers, one scale per layer, with a per-layer error report.

A layer's spikes are integer counts whatever its scale, so each layer is scaled on its own:
weights, bias, threshold and initial membrane are all multiplied by the same `scale` and
rounded (half to even). The scale is the largest one at which the weights fit 8 bits
([-128, 127]) and threshold, initial membrane and bias fit 16 bits; policy 'pow2' rounds it
down to a power of two (weights that are dyadic rationals then quantise exactly). The chip's
lower bound (threshold_low = -2^15) is a fixed integer and never enters the scale: sinabs'
discretisation includes min_v_mem in its scale, and the default -2^15 then collapses the scale
to about 1 so small weights round to zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from snncc_speck.chip import Chip
from snncc_speck.lower import SpeckLayer

POLICIES = ("max", "pow2")


@dataclass
class LayerQuant:
    name: str
    scale: float
    weight: np.ndarray  # int64, (c_out, c_in, kh, kw)
    bias: np.ndarray | None  # int64 (c_out,)
    threshold: int
    initial_membrane: int
    lower_bound: int
    limited_by: str  # 'weights' or 'threshold/state'
    report: dict

    def as_params(self) -> dict:
        p = {"weight": self.weight.astype(np.float64), "theta": float(self.threshold),
             "beta": float(self.initial_membrane)}
        if self.bias is not None:
            p["bias"] = self.bias.astype(np.float64)
        return p


def _scale_for(layer: SpeckLayer, chip: Chip) -> tuple[float, str]:
    wlo, whi = chip.weight_range
    slo, shi = chip.state_range
    w = layer.weight
    s_w = math.inf
    if w.size and w.max() > 0:
        s_w = min(s_w, whi / float(w.max()))
    if w.size and w.min() < 0:
        s_w = min(s_w, wlo / float(w.min()))
    state = [abs(layer.theta), abs(layer.beta)]
    if layer.bias is not None:
        state.append(float(np.abs(layer.bias).max()))
    s_s = shi / max(state)
    s = min(s_w, s_s)
    return (1.0 if math.isinf(s) else s), ("weights" if s_w <= s_s else "threshold/state")



def _l2(a: np.ndarray) -> float:
    """Euclidean norm by NumPy's pairwise sum: the same last digit whatever the BLAS thread count
    (`np.linalg.norm` goes through a threaded dot product, and the artefact's bytes followed it)."""
    return float(np.sqrt(np.sum(np.square(np.asarray(a, dtype=np.float64)))))

def quantize_layer(layer: SpeckLayer, chip: Chip, policy: str = "max") -> LayerQuant:
    if policy not in POLICIES:
        raise ValueError(f"scale policy must be one of {POLICIES}, got {policy!r}")
    wlo, whi = chip.weight_range
    slo, shi = chip.state_range
    s, limited = _scale_for(layer, chip)
    if policy == "pow2":
        s = 2.0 ** math.floor(math.log2(s))
    qw = np.clip(np.rint(layer.weight * s), wlo, whi).astype(np.int64)
    qb = None if layer.bias is None else np.clip(np.rint(layer.bias * s), slo, shi).astype(np.int64)
    qt = int(min(max(1, round(layer.theta * s)), shi))
    qv = int(np.clip(round(layer.beta * s), slo, shi))
    w = layer.weight
    back = qw / s
    nz = w != 0
    norm = _l2(w)
    report = {
        "scale": s,
        "limited_by": limited,
        "weights": int(w.size),
        "weights_nonzero": int(nz.sum()),
        "weights_zeroed": int((nz & (qw == 0)).sum()),  # nonzero weights that quantise to 0
        "weight_max_abs_error": float(np.abs(back - w).max()) if w.size else 0.0,
        "weight_rel_l2_error": _l2(back - w) / norm if norm else 0.0,
        "threshold": layer.theta,
        "threshold_q": qt,
        "threshold_rel_error": abs(qt / s - layer.theta) / layer.theta,
        "initial_membrane": layer.beta,
        "initial_membrane_q": qv,
        "initial_membrane_abs_error": abs(qv / s - layer.beta),
        "bias_max_abs_error": (float(np.abs(qb / s - layer.bias).max()) if qb is not None else 0.0),
    }
    return LayerQuant(layer.name, s, qw, qb, qt, qv, slo, limited, report)


def quantize(layers: list[SpeckLayer], chip: Chip, policy: str = "max") -> dict[str, LayerQuant]:
    return {lay.name: quantize_layer(lay, chip, policy) for lay in layers}


def quantization_problems(quant: dict[str, LayerQuant]) -> list[str]:
    out = []
    for q in quant.values():
        r = q.report
        if r["weights_nonzero"] and r["weights_zeroed"] == r["weights_nonzero"]:
            out.append(f"layer {q.name}: all {r['weights_nonzero']} nonzero weights quantise to 0 at scale "
                       f"{q.scale:.6g} (limited by {q.limited_by}: threshold {r['threshold']:.6g} -> "
                       f"{r['threshold_q']}); the threshold is too large against the weights for 8/16 bits")
    return out


def quantization_table(quant: dict[str, LayerQuant]) -> str:
    from snncc_speck.mapping import _table

    rows = [("layer", "scale", "limited by", "threshold", "init v", "w max err", "w rel err", "zeroed", "thr rel err")]
    for q in quant.values():
        r = q.report
        rows.append((q.name, f"{q.scale:.6g}", q.limited_by, str(q.threshold), str(q.initial_membrane),
                     f"{r['weight_max_abs_error']:.3g}", f"{r['weight_rel_l2_error']:.3g}",
                     f"{r['weights_zeroed']}/{r['weights_nonzero']}", f"{r['threshold_rel_error']:.3g}"))
    return _table(rows)
