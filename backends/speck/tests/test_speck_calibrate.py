"""The Speck path's compiler choices (snncc_speck.calibrate; target options readout, thresholds,
readout_threshold=calibrated, calibration_data): hand-checked effects on one-neuron graphs,
recorded in speck_config.json, bad values refused in one line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from snncc.errors import TargetError
from snncc.sim.reference import run
from snncc.targets import parse_options

from snncc_speck.calibrate import calibrate_readout_threshold, calibrate_thresholds, chip_graph, speck_run
from snncc_speck.target import SpeckTarget

from speck_graphs import Builder

X = torch.tensor([[1.0, 1.0]]).reshape(1, 2, 1, 1)  # one event on each input channel, channel 0 first


def readout_only():
    """input (2, 1, 1) -> logits: class 0 = e0 - e1, class 1 = 0.5 e0 + 0.4 e1."""
    b = Builder((2, 1, 1))
    return b.build(b.add("flat", "reshape", [b.conv("c", "input", [[[[1.0]], [[-1.0]]], [[[0.5]], [[0.4]]]])],
                         {"shape": (2,)}))


def hidden():
    """input (2, 1, 1) -> f (w = +1, -1; theta 1, beta 0) -> logits -f, +f."""
    b = Builder((2, 1, 1))
    f = b.fire("f", b.conv("c", "input", [[[[1.0]], [[-1.0]]]]), beta=0.0)
    return b.build(b.add("flat", "reshape", [b.conv("r", f, [[[[-1.0]]], [[[1.0]]]])], {"shape": (2,)}))


def test_spike_readout_fires_on_partial_sums_membrane_readout_is_exact():
    g = readout_only()
    ref = run(g, X).output  # logits (0, 0.9): class 1
    assert ref.flatten().tolist() == [0.0, 0.9]
    spikes = speck_run(chip_graph(g, readout="spikes", readout_threshold=1.0), X)
    # class 0: +1 reaches the threshold at the first event (a spike), -1 comes too late; class 1: 0.9 < 1
    assert spikes.output.flatten().tolist() == [1.0, 0.0]
    mem = speck_run(chip_graph(g, readout="membrane"), X)
    assert mem.output.flatten().tolist() == [0.0, 0.9]
    assert [n.op for n in chip_graph(g, readout="membrane").nodes] == ["input", "conv", "output"]


def test_chip_integers():
    from snncc_speck.chip import load_chip

    g = readout_only()  # scale 127 / max|w| = 127: weights 127, -127, 63.5 -> 64 (half to even), 50.8 -> 51
    mem = speck_run(chip_graph(g, readout="membrane", chip=load_chip("speck")), X)
    assert mem.output.flatten().tolist() == [0.0, 115.0]


def test_threshold_calibration_takes_the_early_spike_back():
    g = hidden()
    ref = run(g, X)
    assert ref.counts["f"].sum() == 0  # V = 1 - 1 = 0 < theta
    assert speck_run(chip_graph(g, readout="membrane"), X).counts["f"].sum() == 1  # fired on the partial sum 1
    f = calibrate_thresholds(g, X)
    # any factor > 1 keeps the partial sum 1 below threshold: the bisection on [1, 1.6] halves towards 1
    assert f == {"f": 1 + 0.6 / 2 ** 7}
    assert speck_run(chip_graph(g, f, "membrane"), X).counts["f"].sum() == 0


def test_readout_threshold_calibration_picks_the_best_agreeing():
    g = readout_only()
    best, scores = calibrate_readout_threshold(g, X, candidates=(1.0, 0.3))
    # 0.3: class 0 spikes once (1 -> 0.7, then -0.3), class 1 twice (0.5 -> 0.2, 0.6 -> 0.3): argmax 1
    assert scores == {1.0: 0.0, 0.3: 1.0} and best == 0.3


def _npz(tmp_path, x):
    p = tmp_path / "cal.npz"
    np.savez(p, x=x.numpy())
    return str(p)


def test_emit_records_the_calibrated_choices(tmp_path):
    g = hidden()
    tgt = SpeckTarget()
    opts = parse_options(tgt, {"thresholds": "calibrated", "readout": "membrane",
                               "calibration_data": _npz(tmp_path, X)})
    cfg = json.loads(tgt.emit(g, opts)["speck_config.json"])
    fac = 1 + 0.6 / 2 ** 7
    cal = cfg["calibration"]
    assert cal["threshold_factors"] == {"f": fac} and cal["samples"] == 1 and cal["data"] == "cal.npz"
    assert cal["readout"] == "membrane" and cal["readout_threshold"] is None and cal["on"] == "chip integers"
    # logits (0, 0): class 0. Default: f fires on the partial sum, logits (-1, 1), the spike readout says class 1
    assert cal["agreement_default"] == 0.0 and cal["agreement_chosen"] == 1.0
    f = next(c for c in cfg["cores"] if c["layer"] == "f")
    assert f["threshold_high"] == round(fac * f["scale"])
    ro = next(c for c in cfg["cores"] if c["layer"] == "readout")
    assert ro["threshold_high"] == 2 ** 15 - 1 and cfg["readout"] == "membrane"
    assert ("readout membrane; threshold factors: f x1.005; prediction agreement with the integer model under the "
            "Speck rule (one spike per input event): default 0.00% -> chosen 100.00%") in tgt.report_section(
        tgt.emit(g, opts))
    plain_files = tgt.emit(g, {})
    assert tgt.report_section(plain_files) == ""
    plain = json.loads(plain_files["speck_config.json"])
    assert plain["calibration"] is None and plain["readout"] == "spikes"
    assert next(c for c in plain["cores"] if c["layer"] == "f")["threshold_high"] == round(f["scale"])


@pytest.mark.parametrize("opts, msg", [
    ({"readout": "counts"}, "unknown readout 'counts'"),
    ({"thresholds": "auto"}, "unknown thresholds 'auto'"),
    ({"thresholds": "calibrated"}, "thresholds=calibrated needs calibration data"),
    ({"readout_threshold": "calibrated", "readout": "membrane", "calibration_data": "x.npz"},
     "readout_threshold=calibrated needs readout=spikes"),
    ({"calibration_data": "x.npz"}, "calibration_data is given but nothing is calibrated"),
    ({"thresholds": "calibrated", "calibration_data": "x.npz", "calibration_samples": 0},
     "calibration_samples must be an integer >= 1"),
])
def test_bad_options_are_refused(opts, msg):
    with pytest.raises(TargetError, match=msg):
        parse_options(SpeckTarget(), opts)


def test_cli_refuses_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "snncc.cli", "compile", "missing.pt2", "--target", "speck",
                        "-o", str(tmp_path / "o"), "--target-option", "thresholds=calibrated"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "thresholds=calibrated needs calibration data" in r.stderr


def test_compile_records_choices_in_manifest_and_report(tmp_path):
    import snncc
    from snncc.models.speck import speck_cnn
    from snncc.nn import MultiStep

    torch.manual_seed(0)
    model = MultiStep(speck_cnn(channels=(4,), input_size=8, pools=(2,), kernel_sizes=3, D=2), 2)
    x = (torch.rand(2, 3, 2, 8, 8) < 0.3).double()  # (T, N, 2, 8, 8) events
    opts = {"readout": "membrane", "thresholds": "calibrated", "calibration_data": _npz(tmp_path, x)}
    dep = snncc.compile(model, input_shape=(2, 8, 8), target="speck", input_kind="spike", target_options=opts)
    dep.save(str(tmp_path / "out"))
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["target_options"] == opts
    cfg = json.loads((tmp_path / "out" / "speck_config.json").read_text())
    assert cfg["calibration"]["samples"] == 3 and set(cfg["calibration"]["threshold_factors"]) == {"features_1"}
    assert "## Speck path choices (calibrated on 3 samples of cal.npz, chip integers)" in (
        tmp_path / "out" / "report.md").read_text()
    plain = snncc.compile(model, input_shape=(2, 8, 8), target="speck", input_kind="spike")
    assert dep.files["ir.npz"] == plain.files["ir.npz"]  # the integer model is unchanged: only the chip config is
    assert dep.files["speck_config.json"] != plain.files["speck_config.json"]


def test_event_graph_is_what_the_chip_was_configured_with(tmp_path):
    """`Deployment.event_graph` (what `simulate --events` runs on a speck artefact): the chip
    integers, the calibrated threshold factors and the readout recorded in speck_config.json."""
    from snncc.api import Deployment
    from snncc_speck.chip import load_chip

    g = hidden()
    tgt = SpeckTarget()
    opts = parse_options(tgt, {"thresholds": "calibrated", "readout": "membrane",
                               "calibration_data": _npz(tmp_path, X)})
    plain, what = Deployment("speck", g, g, {"target_options": {}}, tgt.emit(g, {})).event_graph()
    assert what == ("the Speck chip network (speck integers, scale_policy max, deployed thresholds, "
                    "spike readout (threshold 1))")
    # deployed thresholds: f fires on the partial sum +1 (the integer model does not: 1 - 1 = 0)
    assert speck_run(plain, X).counts["f"].sum() == 1 and run(g, X).counts["f"].sum() == 0
    cal, what = Deployment("speck", g, g, {"target_options": opts.given()}, tgt.emit(g, opts)).event_graph()
    assert what.endswith("1 calibrated threshold factor(s), membrane readout)")
    r = speck_run(cal, X)
    assert r.counts["f"].sum() == 0 and r.output.flatten().tolist() == [0.0, 0.0]  # the membranes: logits (0, 0)
    same = speck_run(chip_graph(g, {"f": 1 + 0.6 / 2 ** 7}, "membrane", chip=load_chip("speck")), X)
    assert torch.equal(r.output, same.output)
    dep = Deployment("sim", g, g, {}, {"ir.json": b""})
    assert dep.event_graph() == (g, "the deployed graph (the integer model)")


def test_simulate_events_runs_the_chip_network(tmp_path):
    from snncc.models.speck import speck_cnn
    from snncc.nn import MultiStep
    from snncc.sim.event_streams import dense_to_stream, write_events

    import snncc

    torch.manual_seed(0)
    model = MultiStep(speck_cnn(channels=(4,), input_size=8, pools=(2,), kernel_sizes=3, D=2), 2)
    snncc.compile(model, input_shape=(2, 8, 8), target="speck", input_kind="spike").save(str(tmp_path / "out"))
    x = (torch.rand(2, 3, 2, 8, 8) < 0.3).double()
    streams = [dense_to_stream(x[:, i].numpy(), 1000.0) for i in range(3)]
    write_events(str(tmp_path / "ev.npz"), streams, np.zeros(3, dtype=np.int64))
    r = subprocess.run([sys.executable, "-m", "snncc.cli", "simulate", str(tmp_path / "out"), "--events",
                        str(tmp_path / "ev.npz"), "--bin-us", "1000"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith("network: the Speck chip network (speck integers")


def test_cli_simulate_backend_speck_compares_argmax_not_readout_spikes_with_logits(tmp_path, capsys):
    """`simulate --backend speck` runs the sinabs network: its output is the readout layer's spike
    counts / T, another quantity than the reference's logits, so the line gives argmax agreement
    (it printed a max |output diff| of 27.9 on the shipped events model, next to '== reference')."""
    import snncc
    from snncc.cli import main
    from snncc.models.speck import speck_cnn
    from snncc.nn import MultiStep

    torch.manual_seed(0)
    model = MultiStep(speck_cnn(channels=(4,), input_size=8, pools=(2,), kernel_sizes=3, D=2), 2)
    dep = snncc.compile(model, input_shape=(2, 8, 8), target="speck", input_kind="spike")
    out = str(tmp_path / "out")
    dep.save(out)
    x = dep.inputs(samples=8, seed=0)
    r, ref = dep.simulate(x, backend="speck"), dep.reference(x)
    assert all(torch.equal(r.counts[k], ref.counts[k]) for k in ref.counts)
    agree = int((r.output.argmax(1) == ref.output.argmax(1)).sum())
    capsys.readouterr()
    assert main(["simulate", out, "--backend", "speck", "--samples", "8"]) == 0
    o = capsys.readouterr().out
    assert (f"speck: 8 samples, spike counts == reference, output = the readout layer's spike counts / T, "
            f"agreement with the integer model {agree / 8:.2%} ({agree}/8)") in o, o
    assert "output diff" not in o


def test_seeded_agreement_without_data_is_measured(monkeypatch):
    """No calibration data: the compile measures both readouts on seeded random events. On
    `readout_only` the membrane readout is exact, and the spike readout (threshold 1; chip integers:
    weights 127, -127, 64, 51, threshold 127) misses every sample with an event on channel 1 (alone:
    no class fires, argmax 0 vs the integer model's 1; with channel 0: class 0 fires first)."""
    from snncc_speck import calibrate
    from snncc_speck.chip import load_chip

    monkeypatch.setitem(calibrate.SEEDED, "rate", 0.5)  # enough channel-1 events among 16 samples
    g = readout_only()
    got = calibrate.seeded_agreement(g, chip=load_chip("speck"))
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand((1, 16, 2, 1, 1), generator=gen) < 0.5).double()
    missed = int(x[0, :, 1].sum())
    assert 0 < missed < 16
    assert got == {"samples": 16, "rate": 0.5, "seed": 0, "spikes": 1 - missed / 16, "membrane": 1.0}
    files = SpeckTarget().emit(g, {})
    assert json.loads(files["speck_config.json"])["seeded_agreement"]["samples"] == 16
    line = SpeckTarget().summary_note(files)
    assert line == (f"Speck chip path: prediction agreement with the integer model under the Speck rule, measured "
                    f"on 16 seeded random event inputs (rate 0.5; no data given): this configuration "
                    f"(readout=spikes) {1 - missed / 16:.2%}, readout=membrane 100.00%; --target-option "
                    f"readout=membrane improves it; on your data: --target-option thresholds=calibrated "
                    f"--target-option calibration_data=FILE (events example: membrane 90.89%, spikes 70.67%, "
                    f"docs/speck_agreement.md)")


def test_seeded_agreement_names_what_the_event_simulator_refuses():
    """A binary hard-reset network runs on sinabs but not under the event simulator's Speck rule:
    the compile's line says it was not measured, and why, in one line."""
    b = Builder((1, 1, 1))
    f = b.fire("f", b.conv("c", "input", [[[[1.0]]]]), D=1, beta=0.0)
    g = b.build(f)
    g["f"].attrs["reset"] = "value"
    line = SpeckTarget().summary_note(SpeckTarget().emit(g, {}))
    assert line.startswith("Speck chip path: prediction agreement with the integer model under the Speck rule, "
                           "measured on 16 seeded random event inputs (rate 0.05; no data given): not measured (")
    assert "hard reset acts on a window's total" in line and "\n" not in line



@pytest.mark.parametrize("threshold", [1.0, 0.5, 1000.0])
def test_both_readouts_from_one_run_are_each_readouts_own_run(threshold):
    """`seeded_agreement` reads both readouts off one run of the spike readout's network with its
    output moved to the readout current. Both equal their own graphs' runs, exactly; a readout
    threshold that changes the quantised readout weights (1000: the scale is then limited by the
    16-bit threshold, 32767 / 1000 instead of 127 / max|w|) makes the two graphs differ beyond the
    readout: no shared run, each readout runs its own graph."""
    from snncc_speck import calibrate
    from snncc_speck.chip import load_chip

    g = hidden()
    chip = {"chip": load_chip("speck"), "scale_policy": "max"}

    def own(x):
        return {ro: speck_run(chip_graph(g, None, ro, threshold if ro == "spikes" else 1.0, **chip), x).output
                for ro in ("spikes", "membrane")}

    x = (torch.rand((1, 16, 2, 1, 1), generator=torch.Generator().manual_seed(1)) < 0.5).double()
    both, mine = calibrate._both_readouts(g, x, threshold, **chip), own(x)
    if threshold == 1000.0:
        assert both is None
        ws = chip_graph(g, None, "spikes", threshold, **chip)["readout.conv"].params["weight"]
        wm = chip_graph(g, None, "membrane", 1.0, **chip)["readout.conv"].params["weight"]
        assert not np.array_equal(ws, wm)
    else:
        assert torch.equal(both["membrane"], mine["membrane"])
        assert torch.equal(both["spikes"], mine["spikes"].reshape(16, -1))
        assert mine["spikes"].sum() > 0  # the readout fired
    # the recorded figures: each readout's own run on the seeded inputs
    xs = (torch.rand((1, 16, 2, 1, 1), generator=torch.Generator().manual_seed(0)) < calibrate.SEEDED["rate"]).double()
    ref, seeded = run(g, xs).output, own(xs)
    assert calibrate.seeded_agreement(g, threshold, **chip) == {
        **calibrate.SEEDED, **{ro: calibrate.agreement(seeded[ro], ref) for ro in ("spikes", "membrane")}}
