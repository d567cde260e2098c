"""Fixed-point scaling chosen on calibration data (issue 27, "choices from the numbers"): the
greedy choice (`fixed.calibrate`) strictly lowers the measured count error on a graph worked by
hand, and its two guards drop relay shifts and neuron choices that do not lower the counts
differing of the whole model (graphs worked by hand); the installed `snncc compile --target-option
calibration_data=` stores the choices in the artefact, and the loaded artefact's integer model and
a real Lava fixed_pt run read them (equal to the in-memory model, and to each other bit for bit);
bad calibration options are one line, exit 2, nothing written."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from snncc.ir.graph import Graph, Node
from snncc.sim import reference
from snncc_lava import fixed
from snncc_lava.network import build

from nets import ConvChain, randomize_bn

EXE = os.path.join(os.path.dirname(sys.executable), "snncc")


def cli(*args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p and os.path.isdir(p)))
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env, timeout=600)


def host_layer():
    """x (3,) -> a (fed by the host only: scale 2048 / theta, theta 1, beta 0) -> linear -> out."""
    fire = {"D": 4, "theta": 1.0, "beta": 0.0, "norm": 1.0, "rounding": "floor"}
    return Graph([Node("x", "input", [], {"shape": (3,)}), Node("a", "fire", ["x"], fire),
                  Node("head", "linear", ["a"], {}, {"weight": np.eye(3)}), Node("out", "output", ["head"])]).infer()


def test_calibrated_scale_strictly_lowers_the_count_error_by_hand():
    """Default: a = rint(x * 2048) activation units against vth 2048: 0.9999 -> 2047.8 -> 2048 fires 1
    (float 0) and 1.9999 -> 4095.8 -> 4096 fires 2 (float 1): error 2. Shift 1 (scale 4096): 4095.6 ->
    4096 and 8191.6 -> 8192, still 1 and 2: error 2. Shift 2 (scale 8192, vth 8192): 8191.2 -> 8191
    and 16383.2 -> 16383, i.e. 0 and 1 spikes: error 0, chosen. The other entries (0.4, 2, 0.5, 0)
    are exact at every scale."""
    g = host_layer()
    x = torch.tensor([[0.9999, 0.4, 2.0], [1.9999, 0.5, 0.0]], dtype=torch.float64)
    assert reference.run(g, x).counts["a"].tolist() == [[0, 0, 2], [1, 0, 0]]
    net = build(g, explicit=False)
    choices, rep = fixed.calibrate(net, x, candidates=((0, 1.0), (1, 1.0), (2, 1.0)))
    assert choices == {"a": {"shift": 2, "clip": 1.0}}
    assert (rep["before"]["abs_error"]["a"], rep["after"]["abs_error"]["a"]) == (2, 0)
    assert (rep["before"]["differing"]["a"], rep["after"]["differing"]["a"], rep["after"]["neurons"]["a"]) == (2, 0, 6)
    q = fixed.quantize(net, choices=choices)
    assert (q.populations["a"].scale, q.populations["a"].vth) == (8192.0, 8192)
    assert fixed.simulate_fixed(q, x).counts["a"].tolist() == [[0, 0, 2], [1, 0, 0]]
    assert fixed.simulate_fixed(fixed.quantize(net), x).counts["a"].tolist() == [[1, 0, 2], [2, 0, 0]]


def test_choices_that_do_not_lower_the_counts_differing_as_a_whole_are_dropped_by_hand():
    """The last guard of `calibrate`: the greedy measures |count error| per population, but the
    choices are kept only if the whole model then has fewer counts differing. `a` (fed by the host:
    scale 2048, vth 2048) over T = 2 windows of 0.9999 and 0.99995 (float: 0 spikes). Default:
    rint(2047.80) = rint(2047.90) = 2048 fires 1 + 1 = 2. Shift 1 (scale 4096): rint(4095.59) =
    rint(4095.80) = 4096, again 2. Shift 2 (scale 8192): rint(8191.18) = 8191 fires 0 but
    rint(8191.59) = 8192 fires 1: |error| 2 -> 1, so the greedy picks shift 2, yet the one count
    still differs (1 -> 1): nothing is kept and `after` is `before`."""
    fire = {"D": 4, "theta": 1.0, "beta": 0.0, "norm": 1.0, "rounding": "floor"}
    g = Graph([Node("x", "input", [], {"shape": (1,)}), Node("a", "fire", ["x"], fire),
               Node("head", "linear", ["a"], {}, {"weight": np.eye(1)}), Node("out", "output", ["head"])], T=2).infer()
    x = torch.tensor([[[0.9999]], [[0.99995]]], dtype=torch.float64)  # (T, B, 1)
    assert reference.run(g, x).counts["a"].tolist() == [[0.0]]
    net = build(g, explicit=False)
    for k, n in ((0, 2), (1, 2), (2, 1)):
        q = fixed.quantize(net, choices={"a": {"shift": k, "clip": 1.0}})
        assert (q.populations["a"].scale, q.populations["a"].vth) == (2048.0 * 2**k, 2048 * 2**k)
        assert fixed.simulate_fixed(q, x).counts["a"].tolist() == [[n]]
    choices, rep = fixed.calibrate(net, x, candidates=((0, 1.0), (1, 1.0), (2, 1.0)))
    assert choices == {}
    assert (rep["before"]["abs_error"]["a"], rep["before"]["differing"]["a"]) == (2, 1)
    assert rep["after"] == rep["before"]


def test_relay_shifts_that_measure_no_better_are_dropped_by_hand():
    """The relays' guard of `calibrate`: their shifts are kept only if the whole rules' model with them
    has fewer counts differing. tests/nets.py's residual stage (RESIDUAL_STAGE_X, relays u0, u1, u2
    carrying U0 = (2, 1), U1 = (3, 1.5), U2 = (4.5, 2) at scales 508, 1016, 1016; s3 = fire(U3), U3 = (3.5,
    1.5))
    with s3's theta 1.7501: float counts (1, 0) per channel. s3's rule scale is 2032 and vth =
    rint(1.7501 x 2032) = rint(3556.2) = 3556 = 1.75 x 2032, so U3 = 3.5 reaches two whole thresholds:
    2 spikes (2 of 4 counts differ). The relays' largest payloads 1016, 3048, 4572 would all take
    x4 (`relay_shift`: 4572 x 4 <= 2**16), but every payload is exact at the rules' scale, so x4
    relays leave s3 at 2 and are dropped. The greedy then gives s3 shift 2: scale 8128, vth
    rint(14224.8) = 14225 > 1.75 x 8128 = 14224, 1 spike: 0 counts differ, s3's choice alone kept."""
    from nets import RESIDUAL_STAGE_X, residual_stage
    from snncc.passes.manager import run_pipeline

    g0 = residual_stage()
    g0["s3"].attrs["theta"] = 1.7501
    g = run_pipeline(g0, "deploy", options={"residual_lowering": {"profile": "loihi", "residual": "relay"}}).graph
    x = torch.tensor(RESIDUAL_STAGE_X, dtype=torch.float64)
    assert reference.run(g, x).counts["s3"].flatten().tolist() == [1.0, 0.0, 1.0, 0.0]
    net = build(g)
    rules = fixed.quantize(net)
    assert (rules.populations["s3"].scale, rules.populations["s3"].vth) == (2032.0, 3556)
    res = fixed.simulate_fixed(rules, x)
    assert res.counts["s3"].flatten().tolist() == [2, 0, 2, 0]
    assert res.relay_peaks == {"u0@relay": 1016, "u1@relay": 3048, "u2@relay": 4572}
    assert [fixed.relay_shift(p) for p in res.relay_peaks.values()] == [2, 2, 2]
    x4 = fixed.simulate_fixed(fixed.quantize(net, choices={r: {"shift": 2} for r in res.relay_peaks}), x)
    assert x4.counts["s3"].flatten().tolist() == [2, 0, 2, 0]
    choices, rep = fixed.calibrate(net, x)
    assert choices == {"s3": {"shift": 2, "clip": 1.0}}
    assert rep["relay_peaks"] == res.relay_peaks
    assert (rep["before"]["differing"]["s3"], rep["after"]["differing"]["s3"]) == (2, 0)
    q = fixed.quantize(net, choices=choices)
    assert (q.populations["s3"].scale, q.populations["s3"].vth) == (8128.0, 14225)
    assert fixed.simulate_fixed(q, x).counts["s3"].flatten().tolist() == [1, 0, 1, 0]


def _lost_input_graph():
    """b = fire(a0 + 0.302734375 a1) (theta 1.2) behind a host-fed a (D 4), and the two samples whose
    a counts are (0, 4) and (1, 4): the graph of the bias correction tests, worked by hand there."""
    fire = {"D": 4, "theta": 1.0, "beta": 0.0, "norm": 1.0, "rounding": "floor"}
    g = Graph([Node("x", "input", [], {"shape": (2,)}), Node("a", "fire", ["x"], fire),
               Node("l", "linear", ["a"], {}, {"weight": np.array([[1.0, 0.302734375]])}),
               Node("b", "fire", ["l"], {**fire, "theta": 1.2}),
               Node("head", "linear", ["b"], {}, {"weight": np.eye(1)}), Node("out", "output", ["head"])]).infer()
    return g, torch.tensor([[0.0, 4.0], [1.0, 4.0]], dtype=torch.float64)


def test_bias_correction_adds_back_the_mean_input_the_weights_lose_by_hand():
    """b = fire(a0 + 0.302734375 a1), theta 1.2, a fed by the host (theta 1). b's rule scale is 2032
    (254 x 2**3), exponent 3: 1.0 -> 254 (exact) and 0.302734375 x 2032 = 615.16 -> 76.89 -> 76
    (608 activation units), so every a1 spike loses 7.15625 of them; vth = rint(1.2 x 2032) = 2438.
    Calibration digits a = (0, 4) and (1, 4): float b fires floor(1.2109 / 1.2) = 1 and floor(2.2109 / 1.2) = 1; fixed
    4 x 608 = 2432 < 2438 fires 0 on the first. The mean a1 count is 4, so b's correction is
    4 x 7.15625 / 2032 current (28.625 activation units, bias mantissa 28.625 x 64 = 1832 at exponent
    0): 2460.6 >= 2438 fires 1, 4492.6 still 1. One count differing -> 0: kept, stored as what the
    chip adds, 1832 bias LSBs at exponent 0 (int16: 1832 > 127). On (1, 4) alone nothing differs,
    so the correction is measured no better and dropped. Lava fixed_pt equals the corrected
    integer model bit for bit; an older artefact's float correction gives the same mantissa; a
    stored correction of the wrong length is refused naming the population."""
    g, x = _lost_input_graph()
    ref = reference.run(g, x)
    assert ref.counts["b"].tolist() == [[1.0], [1.0]]
    net = build(g, explicit=False)
    q = fixed.quantize(net)
    (pb,) = [p for p in q.projections if p.target == "b"]
    assert (q.populations["b"].scale, q.populations["b"].vth, pb.exp, pb.kernel.ravel().tolist()) == (2032.0, 2438, 3, [254, 76])
    assert fixed.simulate_fixed(q, x).counts["b"].tolist() == [[0], [1]]
    means = fixed.source_means(net, [x], [ref])
    assert means["a"].tolist() == [0.5, 4.0]
    corr = fixed.bias_corrections(net, q, means)
    assert list(corr) == ["b"] and corr["b"].tolist() == pytest.approx([4 * 7.15625 / 2032], rel=1e-12, abs=0)
    choices, rep = fixed.calibrate(net, x, candidates=((0, 1.0),))
    assert list(choices) == ["b"] and set(choices["b"]) == {"bias_lsb", "bias_exp"} and rep["bias_corrected"] == ["b"]
    assert (choices["b"]["bias_lsb"].dtype, choices["b"]["bias_lsb"].tolist(), choices["b"]["bias_exp"]) == (
        np.int16, [1832], 0)
    old = fixed.quantize(net, choices={"b": {"bias": [float(f"{4 * 7.15625 / 2032:.6g}")]}})  # an older artefact's
    assert (old.populations["b"].bias_mant.tolist(), old.populations["b"].bias_exp) == ([1832], 0)
    assert (rep["before"]["differing"]["b"], rep["after"]["differing"]["b"]) == (1, 0)
    qc = fixed.quantize(net, choices=choices)
    assert (qc.populations["b"].bias_mant.tolist(), qc.populations["b"].bias_exp) == ([1832], 0)
    ours = fixed.simulate_fixed(qc, x)
    assert ours.counts["b"].tolist() == [[1], [1]]
    from snncc_lava.lower import run_network

    lava = run_network(net, x, "burst", qc)  # Lava fixed_pt reads the corrected bias bit for bit
    for p in ours.counts:
        assert torch.equal(lava.counts[p], ours.counts[p]), p
    assert (lava.readout == ours.readout).all()
    assert fixed.calibrate(net, x[1:], candidates=((0, 1.0),))[0] == {}
    with pytest.raises(fixed.TargetError, match="population b cannot be applied: its bias correction has 2 values for 1 neurons"):
        fixed.quantize(net, choices={"b": {"bias": [0.0, 0.0]}})


def test_bias_correction_is_stored_in_whole_bias_lsbs_at_its_exponent_by_hand():
    """b (2 neurons) = fire(W a + (0.05, -0.02)), W = ((1, 0.302734375), (0.5, -0.302734375)),
    theta 1.2: scale 2032 (254 x 2**3), 130048 membrane units per unit of current. Its biases,
    6502.4 and -2600.96 membrane units, take exponent 1 (3251, -1300). With the float corrections
    (0.0140871, -0.003) (current units, what `calibrate` measured and an older artefact stores) they
    are 8334.39 and -2991.104: exponent 2 (4167 > 4095 at 1), mantissas rint(2083.598) = 2084 and
    rint(-747.776) = -748. The uncorrected biases at exponent 2 are rint(1625.6) = 1626 and
    rint(-650.24) = -650, so the stored correction is (458, -98) bias LSBs at bias_exp 2, int16
    (458 > 127): 2 bytes per neuron in ir.npz instead of 8. Quantised from it, and from the artefact
    it is written to and read back, the mantissas are (2084, -748) at exponent 2, as from the floats;
    Lava fixed_pt reads them and equals the integer model bit for bit. Bad stored values are
    refused naming the population."""
    import io
    import zipfile

    from snncc import targets
    from snncc.ir import serialize

    fire = {"D": 4, "theta": 1.0, "beta": 0.0, "norm": 1.0, "rounding": "floor"}
    g = Graph([Node("x", "input", [], {"shape": (2,)}), Node("a", "fire", ["x"], fire),
               Node("l", "linear", ["a"], {}, {"weight": np.array([[1.0, 0.302734375], [0.5, -0.302734375]]),
                                               "bias": np.array([0.05, -0.02])}),
               Node("b", "fire", ["l"], {**fire, "theta": 1.2}),
               Node("head", "linear", ["b"], {}, {"weight": np.eye(2)}), Node("out", "output", ["head"])]).infer()
    net = build(g, explicit=False)
    q = fixed.quantize(net)
    assert (q.populations["b"].scale, q.populations["b"].bias_mant.tolist(), q.populations["b"].bias_exp) == (
        2032.0, [3251, -1300], 1)
    floats = fixed.quantize(net, choices={"b": {"bias": [0.0140871, -0.003]}})
    assert (floats.populations["b"].bias_mant.tolist(), floats.populations["b"].bias_exp) == ([2084, -748], 2)
    lsb = fixed.lsb_corrections(net, floats, ["b"])
    assert list(lsb) == ["b"] and lsb["b"]["bias_exp"] == 2
    assert (lsb["b"]["bias_lsb"].dtype, lsb["b"]["bias_lsb"].tolist()) == (np.int16, [458, -98])
    assert fixed.lsb_corrections(net, q, ["b"]) == {}  # nothing changed: nothing stored
    qc = fixed.quantize(net, choices=lsb)
    assert (qc.populations["b"].bias_mant.tolist(), qc.populations["b"].bias_exp) == ([2084, -748], 2)
    assert qc.report["populations"]["b"]["choice"] == {"bias_exp": 2, "bias_lsb_max_abs": 458}
    assert qc.report["populations"]["b"]["bias_max_abs_error"] == pytest.approx(
        max(abs(2084 * 4 - 6502.4 - 458 * 4), abs(-748 * 4 + 2600.96 + 98 * 4)) / 130048, abs=1e-15)
    # through the artefact: an int16 array of the graph's archive, read back as float64
    targets.store(g, fixed.TARGET, fixed.CHOICES_KEY, lsb)
    doc, npz = serialize.dumps(g)
    key = "meta/target/loihi/fixed_choices/b/bias_lsb"
    assert json.loads(doc)["meta"]["target"]["loihi"]["fixed_choices"]["b"] == {"bias_lsb": {"$array": key},
                                                                              "bias_exp": 2}
    with np.load(io.BytesIO(npz)) as z:
        assert (z[key].dtype, z[key].tolist()) == (np.int16, [458, -98])
    with zipfile.ZipFile(io.BytesIO(npz)) as zf:
        assert zf.getinfo(key + ".npy").file_size == 128 + 2 * 2  # the .npy header, then 2 bytes per neuron
    back = serialize.loads(doc, npz)
    read = fixed.quantize(build(back, explicit=False), choices=fixed.stored_choices(back))
    assert (read.populations["b"].bias_mant.tolist(), read.populations["b"].bias_exp) == ([2084, -748], 2)
    x = torch.tensor([[0.0, 4.0], [1.0, 4.0], [3.0, 1.0]], dtype=torch.float64)
    ours = fixed.simulate_fixed(read, x)
    from snncc_lava.lower import run_network

    lava = run_network(net, x, "burst", read)  # Lava fixed_pt reads the mantissas bit for bit
    for p in ours.counts:
        assert torch.equal(lava.counts[p], ours.counts[p]), p
    assert (lava.readout == ours.readout).all()
    for bad, why in [({"bias_lsb": [458, -98]}, "needs both bias_lsb and bias_exp"),
                     ({"bias_lsb": [458.5, -98], "bias_exp": 2}, "not a whole number of bias LSBs"),
                     ({"bias_lsb": [458, -98], "bias_exp": 8}, r"bias_exp 8 is not an integer in \[0, 7\]"),
                     ({"bias_lsb": [458], "bias_exp": 2}, "has 1 values for 2 neurons"),
                     ({"bias": [0.0, 0.0], "bias_lsb": [1, 1], "bias_exp": 2}, "both a float bias correction and one in")]:
        with pytest.raises(fixed.TargetError, match=f"population b cannot be applied: its .*{why}"):
            fixed.quantize(net, choices={"b": bad})


def test_forced_run_reads_narrow_windows_in_place_and_returns_only_what_it_computes():
    """`simulate_fixed(forced=)` as `calibrate` calls it: b = fire(a0 + 0.302734375 a1) (the graph of
    the bias correction test: scale 2032, a1 spikes worth 608 activation units, vth 2438) on a's
    windows given as int8 (a fed by the host fires (0, 4) and (1, 4)) counts (0, 1), as the whole
    model does; with a sending nothing, 0 and 0. Only b is computed: the result holds b's windows
    and counts alone (int64)."""
    g, x = _lost_input_graph()
    q = fixed.quantize(build(g, explicit=False))
    whole = fixed.simulate_fixed(q, x)
    assert whole.counts["a"].tolist() == [[0, 4], [1, 4]] and whole.counts["b"].tolist() == [[0], [1]]
    a = np.array([[[0, 4]], [[1, 4]]], np.int8)  # (B, T, N): one window
    r = fixed.simulate_fixed(q, x, forced={"a": a, "only": ["b"]})
    assert list(r.windows) == ["b"] and list(r.counts) == ["b"] and r.relays == {}
    assert r.windows["b"].dtype == np.int64 and r.windows["b"].tolist() == [[[0]], [[1]]]
    assert r.counts["b"].tolist() == [[0], [1]] and a.dtype == np.int8  # read in place, not converted
    assert fixed.simulate_fixed(q, x, forced={"only": ["b"]}).windows["b"].tolist() == [[[0]], [[0]]]


def test_clip_keeps_the_exponent_and_refuses_what_does_not_fit():
    """b reads a through weights (1, 0.3): rule scale 4064 (254 x 2**4), exponent 4; clip 1.25 gives
    scale 5080 at the same exponent, so 1.0 -> 317.5 clips to 254 and 0.3 -> 95.25 -> 96 (x 2**4).
    A shift pushing vth beyond the 24-bit membrane's room for D + 1 thresholds is refused."""
    fire = {"D": 4, "theta": 1.0, "beta": 0.0, "norm": 1.0, "rounding": "floor"}
    g = Graph([Node("x", "input", [], {"shape": (2,)}), Node("a", "fire", ["x"], fire),
               Node("l", "linear", ["a"], {}, {"weight": np.array([[1.0, 0.3]])}), Node("b", "fire", ["l"], fire),
               Node("head", "linear", ["b"], {}, {"weight": np.eye(1)}), Node("out", "output", ["head"])]).infer()
    net = build(g, explicit=False)
    base = fixed.quantize(net)
    q = fixed.quantize(net, choices={"b": {"shift": 0, "clip": 1.25}})
    (pb,) = [p for p in q.projections if p.target == "b"]
    (p0,) = [p for p in base.projections if p.target == "b"]
    assert (base.populations["b"].scale, p0.exp, p0.kernel.ravel().tolist()) == (4064.0, 4, [254, 76])
    assert (q.populations["b"].scale, q.populations["b"].vth, pb.exp) == (5080.0, 5080, 4)
    assert pb.kernel.ravel().tolist() == [254, 96]
    assert q.report["populations"]["b"]["choice"] == {"shift": 0, "clip": 1.25}
    with pytest.raises(fixed.TargetError, match="population b cannot be applied: its threshold mantissa would be 32512"):
        fixed.quantize(net, choices={"b": {"shift": 3, "clip": 1.0}})
    lenient = fixed.quantize(net, choices={"b": {"shift": 3, "clip": 1.0}}, lenient=True)
    assert lenient.populations["b"].scale == 4064.0 and "choice" not in lenient.report["populations"]["b"]


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """ConvChain (2x8x8 -> 6x8x8 -> 8x4x4, 512 neurons) exported at batch 1, compiled by the installed
    command with precision=fixed on 16 calibration samples."""
    d = tmp_path_factory.mktemp("cal")
    torch.manual_seed(0)
    m = randomize_bn(ConvChain(rounding="floor"), 3).eval()
    torch.export.save(torch.export.export(m, (torch.zeros(1, 2, 8, 8),)), str(d / "m.pt2"))
    x = np.random.default_rng(5).random((40, 2, 8, 8)).astype(np.float32) * 1.5
    np.savez(d / "cal.npz", x=x[:16])
    np.savez(d / "test.npz", x=x[16:])
    r = cli("compile", d / "m.pt2", "--target", "loihi", "--target-option", "precision=fixed",
            "--target-option", f"calibration_data={d / 'cal.npz'}", "--target-option", "calibration_samples=16",
            "-o", d / "out")
    assert r.returncode == 0, r.stderr
    return d, r.stdout


def test_choices_round_trip_through_the_artefact(calibrated):
    import snncc

    d, stdout = calibrated
    dep = snncc.load(str(d / "out"))
    choices = dep.deployed.meta["target"]["loihi"]["fixed_choices"]  # the loihi target's own meta
    assert fixed.stored_choices(dep.deployed) == choices and "loihi_fixed_choices" not in dep.deployed.meta
    q = json.loads((d / "out" / "lava" / "quantisation.json").read_text())
    cal = q["calibration"]
    shown = {name: fixed.without_bias(c) for name, c in choices.items()}  # the bias arrays live in ir.npz only
    doc = json.loads((d / "out" / "ir.json").read_text())["meta"]["target"]["loihi"]["fixed_choices"]
    with np.load(d / "out" / "ir.npz") as npz:
        for name, c in choices.items():  # per neuron, whole bias LSBs: an integer array of the graph's archive
            assert "bias" not in c
            if "bias_lsb" in c:
                key = f"meta/target/loihi/fixed_choices/{name}/bias_lsb"
                assert isinstance(c["bias_lsb"], np.ndarray) and c["bias_lsb"].shape == (len(c["bias_lsb"]),)
                assert doc[name]["bias_lsb"] == {"$array": key} and doc[name]["bias_exp"] == c["bias_exp"]
                stored = npz[key]
                assert stored.dtype in (np.int8, np.int16) and np.array_equal(stored, c["bias_lsb"])
                assert stored.dtype == (np.int8 if np.abs(stored).max() <= 127 else np.int16)
    assert choices and shown == cal["choices"] and cal["samples"] == 16 and cal["data"] == "cal.npz"
    for name, c in choices.items():  # what the artefact's integers were made with
        assert q["populations"][name]["choice"] == shown[name]
        if "bias_lsb" in c:
            assert shown[name]["bias_lsb_max_abs"] == max(abs(v) for v in c["bias_lsb"])
    line = next(s for s in stdout.splitlines() if s.startswith("loihi fixed point calibrated"))
    assert line == fixed.calibration_line(q) and "16 samples of cal.npz" in line
    rescaled = sum(1 for c in choices.values() if c.get("shift", 0) or c.get("clip", 1.0) != 1.0)
    corrected = [name for name, c in choices.items() if "bias_lsb" in c]
    assert sorted(corrected) == cal["bias_corrected"]
    assert f"{rescaled} population(s) rescaled" + (f", {len(corrected)} bias-corrected" if corrected else "") + ";" in line
    report = (d / "out" / "report.md").read_text()
    assert "### Scaling chosen on calibration data (16 samples of cal.npz)" in report
    assert sum(cal["after"]["abs_error"].values()) < sum(cal["before"]["abs_error"].values())
    # the in-memory model of the same choices, and the loaded artefact's integer model, agree
    xt = torch.as_tensor(np.load(d / "test.npz")["x"], dtype=torch.float64)
    mine = fixed.simulate_fixed(fixed.quantize(build(dep.deployed, explicit=False), choices=choices), xt)
    got, name = dep.target_reference(xt)
    assert "fixed_pt integer model" in name
    assert torch.equal(got.output, mine.output)
    for p in mine.counts:
        assert torch.equal(got.counts[p], mine.counts[p]), p
    default = fixed.simulate_fixed(fixed.quantize(build(dep.deployed, explicit=False)), xt)
    assert any(not torch.equal(default.counts[p], mine.counts[p]) for p in mine.counts)  # the choices matter
    # the stored integers are the chosen ones
    from snncc_lava import describe

    doc = json.loads((d / "out" / "lava" / "network.json").read_text())
    qn = fixed.quantize(build(dep.deployed, explicit=False), choices=choices)
    for e in doc["processes"]:
        if e.get("model") == "PyWindowBurstIFModelFixed":
            assert (e["vth"], e["scale"]) == (qn.populations[e["name"]].vth, qn.populations[e["name"]].scale)
    with np.load(d / "out" / "lava" / "weights.npz") as npz:
        for i, e in enumerate(e for e in doc["processes"] if e["name"].startswith("proj")):
            if e["weight"]["format"] == "kernel":
                assert np.array_equal(describe.load_kernel(npz, e), qn.projections[i].kernel)
                assert e["weight_exp"] == qn.projections[i].exp


def test_lava_fixed_pt_reads_the_stored_choices_bit_for_bit(calibrated):
    import snncc

    d, _ = calibrated
    dep = snncc.load(str(d / "out"))
    xt = torch.as_tensor(np.load(d / "test.npz")["x"][:2], dtype=torch.float64)
    lava = dep.simulate(xt, backend="lava")
    ours, _ = dep.target_reference(xt)
    assert set(lava.counts) == set(ours.counts)
    for p in ours.counts:
        assert torch.equal(lava.counts[p], ours.counts[p]), p
    assert torch.equal(lava.output, ours.output)



def test_lava_part_of_every_population_reads_the_stored_choices(calibrated):
    """`simulate --backend lava --populations ...` of a calibrated artefact: the part is quantised
    with the stored choices too (it used the rules' defaults), so the part of every population is the
    whole calibrated integer model, Lava fixed_pt equal to it bit for bit."""
    import snncc
    from snncc_lava import part

    d, _ = calibrated
    dep = snncc.load(str(d / "out"))
    xt = torch.as_tensor(np.load(d / "test.npz")["x"][:2], dtype=torch.float64)
    names = [n.name for n in dep.deployed.neurons()]
    r = part.simulate(dep.deployed, xt, names, precision="fixed")
    ours, _ = dep.target_reference(xt)
    default = fixed.simulate_fixed(fixed.quantize(build(dep.deployed, explicit=False)), xt)
    assert any(not torch.equal(default.counts[p], ours.counts[p]) for p in names)  # the choices matter here
    for p in names:
        assert torch.equal(r.counts[p], ours.counts[p]) and torch.equal(r.reference[p], ours.counts[p]), p

@pytest.mark.parametrize("case", ["missing", "shape"])
def test_bad_calibration_data_is_one_line_exit_2_nothing_written(calibrated, case, tmp_path, snncc_in_process):
    """The missing file through the installed command, the bad shape through `snncc.cli.main` here."""
    d, _ = calibrated
    np.savez(tmp_path / "bad.npz", x=np.zeros((4, 3, 8, 8), np.float32))  # 3 channels, the model takes 2
    data = {"missing": tmp_path / "none.npz", "shape": tmp_path / "bad.npz"}[case]
    out = tmp_path / "out"
    argv = ("compile", d / "m.pt2", "--target", "loihi", "--target-option", "precision=fixed",
            "--target-option", f"calibration_data={data}", "-o", out)
    r = cli(*argv) if case == "missing" else snncc_in_process(*argv)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("snncc: error: ") and data.name in lines[0], r.stderr
    assert not out.exists()


@pytest.mark.parametrize("opts, where", [({"calibration_data": "cal.npz"}, "loihi option calibration_data"),
                                         ({"precision": "float", "calibration_data": "cal.npz"},
                                          "loihi option calibration_data"),
                                         ({"precision": "fixed", "calibration_samples": 8},
                                          "loihi option calibration_samples"),
                                         ({"precision": "fixed", "calibration_data": "cal.npz",
                                           "calibration_samples": 0}, "loihi option calibration_samples")])
def test_calibration_options_need_precision_fixed_and_data(opts, where):
    """Refused when parsed (the compile's first step, before the model is read), in one line."""
    from snncc.errors import TargetError
    from snncc.targets import get

    with pytest.raises(TargetError) as e:
        get("loihi").parse(opts)
    assert e.value.where == where and "\n" not in str(e.value)
    assert get("loihi").parse({"precision": "fixed", "calibration_data": "cal.npz"}).calibration_samples == 64
