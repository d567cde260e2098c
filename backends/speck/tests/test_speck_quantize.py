"""8-bit weights / 16-bit thresholds with one scale per layer; the error report."""

from __future__ import annotations

import numpy as np
import pytest

from snncc_speck.chip import load_chip
from snncc_speck.lower import lower
from snncc_speck.quantize import quantize_layer

from speck_graphs import Builder


def layer_with(w, theta=1.0, beta=0.5, bias=None):
    w = np.asarray(w, dtype=np.float64)
    b = Builder((w.shape[1], 3, 3))
    g = b.build(b.fire("f", b.conv("c", "input", w, padding=1), theta=theta, beta=beta, bias=bias))
    return lower(g).layers[0]


def test_scale_from_weights_and_error_report_by_hand():
    # weights {1.0, -0.5, 0.3, 0}: scale = 127 / 1.0 = 127 (128/0.5 = 256 is looser)
    w = np.zeros((1, 1, 3, 3))
    w[0, 0, 0, :3] = [1.0, -0.5, 0.3]
    q = quantize_layer(layer_with(w, theta=2.0, beta=1.0), load_chip())
    assert q.scale == 127.0 and q.limited_by == "weights"
    # 127*1 = 127; 127*-0.5 = -63.5 -> -64 (half to even); 127*0.3 = 38.1 -> 38
    assert q.weight[0, 0, 0, :3].tolist() == [127, -64, 38] and int(np.abs(q.weight).sum()) == 127 + 64 + 38
    assert q.threshold == 254 and q.initial_membrane == 127 and q.lower_bound == -32768
    r = q.report
    assert r["weights_nonzero"] == 3 and r["weights_zeroed"] == 0
    # errors: |-64/127 + 0.5| = 0.5/127; |38/127 - 0.3| = 0.1/127 -> max 0.5/127
    assert r["weight_max_abs_error"] == pytest.approx(0.5 / 127, rel=1e-12)
    assert r["weight_rel_l2_error"] == pytest.approx(np.hypot(0.5, 0.1) / 127 / np.sqrt(1 + 0.25 + 0.09), rel=1e-9)
    assert r["threshold_rel_error"] == 0.0


def test_small_weights_are_not_collapsed_by_the_lower_bound():
    # sinabs scales with max(|threshold|, |min_v_mem|) = 2^15 when min_v_mem is its default -2^15,
    # i.e. scale ~ 1 and every weight below 0.5 becomes 0. Here the lower bound is a fixed chip
    # integer, so the scale follows the weights: 127 / 0.02 = 6350.
    w = np.full((2, 2, 3, 3), 0.01)
    w[0, 0, 0, 0] = 0.02
    q = quantize_layer(layer_with(w, theta=0.05, beta=0.025), load_chip())
    assert q.scale == pytest.approx(6350.0)
    assert q.report["weights_zeroed"] == 0 and int(q.weight.min()) == 64 and int(q.weight.max()) == 127
    assert q.threshold == 318 and q.lower_bound == -32768  # 0.05 * 6350 = 317.5 -> 318 (half to even)


def test_threshold_limits_scale_when_large():
    # weight 1, threshold 1000: weights allow 127, the 16-bit threshold 32767/1000 = 32.767
    q = quantize_layer(layer_with(np.ones((1, 1, 1, 1)), theta=1000.0, beta=0.0), load_chip())
    assert q.limited_by == "threshold/state" and q.scale == pytest.approx(32.767)
    assert q.threshold == 32767 and q.weight.item() == 33


def test_pow2_policy_is_exact_on_dyadic_weights():
    w = np.array([3.0, -2.0, 1.5, 0.25]).reshape(1, 4, 1, 1)
    q = quantize_layer(layer_with(w, theta=2.0, beta=1.0), load_chip(), policy="pow2")
    # 127/3 = 42.3 -> 32 = 2^5
    assert q.scale == 32.0 and q.weight.ravel().tolist() == [96, -64, 48, 8]
    assert q.report["weight_max_abs_error"] == 0.0 and (q.threshold, q.initial_membrane) == (64, 32)
