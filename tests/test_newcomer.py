"""A newcomer's first hour on the shipped examples, through the installed `snncc` command: compile
the digits CNN for sim and loihi (and its netx file) and the event model for Speck as the README
shows it, verify, simulate every schedule and backend, estimate with a report (the target
simulators' rows over a whole event data file), export NIR from the default artefact. Each step
asserts the numbers a user reads: how many samples were used, the accuracy (equal to a hand
computation from the outputs), the agreement with the integer model, and an empty stderr (progress
goes to a terminal or -v only). Per-reader NIR counts are tests/test_nir_peers.py's.

Each subcommand runs the installed command at least once (compile, verify, export-nir, simulate
with Lava, estimate with a report); the other steps run `snncc.cli.main` in this process
(tests/cli_run.py, read as the command's output, stderr at the descriptor), which saves a torch
import per step."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import snncc
from cli_run import run_main

pytestmark = pytest.mark.slow  # about 2-3 minutes on the shared 2-core machine (Lava and sinabs runs)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(ROOT, "examples", "digits", "artifacts")
EVENTS = os.path.join(ROOT, "examples", "events", "artifacts")
EXE = os.path.join(os.path.dirname(sys.executable), "snncc")
N = 30  # samples of each test split a step uses
N_FILE = 40  # samples of the event data file read whole (no --samples): the shipped split's first ones


def run(*argv, cwd=None):
    """The installed command: its stdout, after checking it succeeded with an empty stderr."""
    p = subprocess.run([EXE, *map(str, argv)], capture_output=True, text=True, cwd=cwd)
    assert p.returncode == 0 and p.stderr == "", (argv, p.stdout[-2000:], p.stderr)
    return p.stdout


def main(*argv):
    """`run`'s checks and output, with `snncc.cli.main` in this process."""
    code, out, err = run_main(*argv)
    assert code == 0 and err == "", (argv, out[-2000:], err)
    return out


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The artefacts a newcomer compiles first, once for the module."""
    d = tmp_path_factory.mktemp("newcomer")
    out = {"dir": d, "pt2": os.path.join(DIGITS, "digits_cnn.pt2"), "digits": os.path.join(DIGITS, "digits_test.npz"),
           "events": os.path.join(EVENTS, "events_test.npz")}
    out["compile_sim"] = run("compile", out["pt2"], "--target", "sim", "-o", d / "out")
    out["compile_loihi"] = main("compile", out["pt2"], "--target", "loihi", "-o", d / "out-loihi")
    out["compile_speck"] = main("compile", os.path.join(EVENTS, "speck_cnn.pt"), "--model-def",
                               "snncc.models.speck:speck_cnn", "--factory-kwargs", '{"size": "small"}',
                               "--input-shape", "2,32,32", "--timesteps", "4", "--input-kind", "spike", "--target",
                               "speck", "--target-option", "readout=membrane", "-o", d / "out-speck")
    return out


def split(path, n=N):
    with np.load(path) as f:
        return f["x_test"][:n], f["y_test"][:n]


def acc_text(correct: int, n: int = N) -> str:
    return f"accuracy {correct / n:.4f} ({correct}/{n})"


def test_compiles_say_what_they_wrote(work):
    d = work["dir"]
    assert work["compile_sim"].splitlines()[0].startswith("compiled for sim: 13 neuron populations")
    assert work["compile_loihi"].splitlines()[0].startswith("compiled for loihi: 13 neuron populations")
    # netx: the shipped CNN's shortcuts are carried as pass-through channels (lava-dl's reader runs the
    # file with snncc's counts: backends/lava/tests/test_netx.py); the compile writes lava/network.net
    o = main("compile", work["pt2"], "--target", "loihi", "--target-option", "netx=true", "-o", d / "out-netx")
    assert o.startswith("compiled for loihi: 13 neuron populations")
    with open(d / "out-netx" / "lava" / "network.net", "rb") as f:
        assert f.read(8) == b"\x89HDF\r\n\x1a\n"
    speck = work["compile_speck"].splitlines()
    assert speck[0].startswith("compiled for speck: 3 neuron populations")
    # no data given: the chip path's agreement is measured on seeded events (by hand on a small graph in
    # backends/speck/tests/test_speck_calibrate.py), recorded in speck_config.json and printed
    import json

    with open(d / "out-speck" / "speck_config.json") as f:
        seeded = json.load(f)["seeded_agreement"]
    assert speck[1].startswith("Speck chip path: prediction agreement with the integer model under the Speck rule, "
                               "measured on 16 seeded random event inputs (rate 0.05; no data given): this "
                               f"configuration (readout=membrane) {seeded['membrane']:.2%}, readout=spikes "
                               f"{seeded['spikes']:.2%}")
    assert seeded["membrane"] > seeded["spikes"]


@pytest.mark.parametrize("art", ["out", "out-loihi"])
def test_verify_on_the_test_split(work, art):
    x, y = split(work["digits"])
    o = (run if art == "out" else main)("verify", work["pt2"], work["dir"] / art, "--data", work["digits"],
                                        "--samples", N)
    assert o.splitlines()[0] == f"inputs: the first {N} samples of 450 of {work['digits']}, labelled"
    ref = snncc.load(work["dir"] / art).reference(torch.as_tensor(x).double())
    c = int((ref.output.argmax(1).numpy() == y).sum())
    assert f"accuracy on the labels: integer model {c / N:.4f} ({c}/{N})" in o and "verdict: OK" in o
    assert f"samples: {N} " in o


def test_export_nir_from_the_default_artefact(work):
    """export-nir on the default sim artefact (its residual streams relayed): the file is written,
    the notes say the streams were re-lowered to fan-in, and snncc reads the file back computing the
    artefact's outputs, hence the same accuracy, on the test split."""
    from snncc.interop.nir_io import load_nir
    from snncc.sim.reference import run as reference

    d = work["dir"]
    o = run("export-nir", d / "out", d / "digits.nir")
    lines = o.splitlines()
    assert re.fullmatch(rf"wrote {re.escape(str(d / 'digits.nir'))} \(\d+ NIR nodes, binary form\); what NIR "
                        r"readers other than snncc lose:", lines[0]), lines[0]
    assert lines[1].startswith("- residual streams: this artefact relays them")
    x, y = split(work["digits"])
    xt = torch.as_tensor(x).double()
    mine, back = snncc.load(d / "out").reference(xt).output, reference(load_nir(str(d / "digits.nir")), xt).output
    assert torch.equal(back, mine)
    assert int((back.argmax(1).numpy() == y).sum()) == int((mine.argmax(1).numpy() == y).sum())


def test_simulate_every_schedule_and_backend(work):
    d = work["dir"]
    x, y = split(work["digits"])
    dep = snncc.load(d / "out")
    ref = dep.reference(torch.as_tensor(x).double())
    c = int((ref.output.argmax(1).numpy() == y).sum())
    o = main("simulate", d / "out", "--data", work["digits"], "--samples", N)  # the installed one: Lava's, below
    exact = next(l for l in o.splitlines() if l.startswith("exact schedule"))
    assert exact.startswith(f"exact schedule: {N} samples,") and "spike counts == reference" in exact
    assert exact.endswith(acc_text(c))
    streaming = dep.simulate(torch.as_tensor(x).double(), "streaming")
    s = int(round(streaming.prediction_agreement * N))
    assert f"prediction agreement {s / N:.4f} over {N} samples" in o
    assert re.search(rf"streaming accuracy [0-9.]+ \([0-9]+/{N}\), integer model {c / N:.4f}", o)
    o = main("simulate", d / "out", "--schedule", "event", "--data", work["digits"], "--samples", N)
    assert f"agreement with the integer model 100.00% ({N}/{N}), {acc_text(c)}" in o
    o = run("simulate", d / "out-loihi", "--backend", "lava", "--data", work["digits"], "--samples", 3)
    assert o.splitlines()[1].startswith("lava: 3 samples, spike counts == reference")
    c3 = int((ref.output[:3].argmax(1).numpy() == y[:3]).sum())
    assert "agreement with the integer model 100.00% (3/3), " + acc_text(c3, 3) in o


def test_simulate_the_event_model_on_the_speck_backend(work, speck_whole):
    """The shipped (N, T, 2, 32, 32) event split feeds the Speck artefact as it is; the agreement and
    accuracy printed equal those computed here from sinabs' outputs (the first N of speck_whole's:
    they do not depend on the batch)."""
    o = main("simulate", work["dir"] / "out-speck", "--backend", "speck", "--data", work["events"], "--samples", N)
    assert o.splitlines()[0] == (f"inputs: the first {N} samples of 450 of {work['events']}, x_test (450, 4, 2, 32, "
                                 f"32) read as (N, T, *shape), labelled")
    r, ref_s, ye = (a[:N] for a in speck_whole[:3])
    cs = int((r.argmax(1).numpy() == ye).sum())
    agree = int((r.argmax(1) == ref_s.argmax(1)).sum())
    assert f"agreement with the integer model {agree / N:.2%} ({agree}/{N}), {acc_text(cs)}" in o


def test_estimate_and_report(work):
    d = work["dir"]
    x, y = split(work["digits"])
    c = int((snncc.load(d / "out").reference(torch.as_tensor(x).double()).output.argmax(1).numpy() == y).sum())
    o = run("estimate", d / "out", "--data", work["digits"], "--samples", N, "--report", d / "rep")
    assert f"# estimate: {N} samples," in o
    assert f"accuracy of the integer model on the labels: {c / N:.4f} ({c}/{N})" in o
    md = open(d / "rep" / "report.md").read()
    assert f"| exact schedule | {N} | 100.00% ({N}/{N}) | {c / N:.4f} ({c}/{N}) |" in md
    o = main("estimate", d / "out-speck", "--profile", "speck", "--data", work["events"], "--samples", 10)
    assert "energy per sample: dynamic unknown (profile speck gives no energy per SynOp)" in o


@pytest.fixture(scope="module")
def speck_whole(work):
    """An event data file of the shipped split's first N_FILE samples (x_test, y_test, as shipped),
    the sinabs simulator's and the integer model's outputs on it, computed here in one batch (the
    report runs it in batches of 64), its labels and its path."""
    dep = snncc.load(work["dir"] / "out-speck")
    x, y = split(work["events"], N_FILE)
    path = work["dir"] / "events_first.npz"
    np.savez(path, x_test=x, y_test=y)
    xt = torch.as_tensor(x).double().transpose(0, 1)  # (N, T, ...) file -> (T, N, ...)
    return dep.simulate(xt, backend="speck").output, dep.reference(xt).output, y, str(path)


def test_report_has_the_target_simulators_rows(work, speck_whole, monkeypatch):
    """estimate --report on a loihi artefact (--samples 3) and a speck one (a whole file of N_FILE
    samples: no --samples) with labelled data: the accuracy table gets the target simulator's row (Lava /
    sinabs) over the same samples as the other rows, its sample count, agreement and accuracy
    computed here by hand from the simulator's outputs. Lava's are those of the report's own run
    (Lava costs seconds per start), observed at `Deployment.simulate`: its inputs are checked to be
    exactly the file's first 3 samples, the integer model's outputs are computed here."""
    d = work["dir"]
    x, y = split(work["digits"], 3)
    xt = torch.as_tensor(x).double()
    ref = snncc.load(d / "out-loihi").reference(xt).output
    lava_runs = []
    simulate = snncc.Deployment.simulate

    def observed(self, data=None, *a, backend="snncc", **kw):
        r = simulate(self, data, *a, backend=backend, **kw)
        if backend == "loihi":
            lava_runs.append((data, r.output))
        return r

    monkeypatch.setattr(snncc.Deployment, "simulate", observed)
    out, ref_s, ys, events = speck_whole
    for art, target, data, (r, ref, y), extra in (
            ("out-loihi", "loihi", work["digits"], (None, ref, y), ("--samples", 3)),
            ("out-speck", "speck", events, (out, ref_s, ys), ("--profile", "speck"))):
        n = len(y)
        o = main("estimate", d / art, "--data", data, "--report", d / f"rep-{art}", *extra)
        if target == "loihi":  # the report's Lava run: one batch, the very samples compared here
            assert len(lava_runs) == 1 and torch.equal(torch.as_tensor(lava_runs[0][0]).double(), xt), lava_runs
            r = lava_runs[0][1]
        agree = int((r.argmax(1) == ref.argmax(1)).sum())
        c = int((r.argmax(1).numpy() == y).sum())
        assert o.splitlines()[0].startswith("inputs: the first 3 samples of 450" if n == 3 else
                                            f"inputs: all {N_FILE} samples of {events}")
        md = open(d / f"rep-{art}" / "report.md").read()
        assert "## accuracy per schedule and target simulator" in md
        assert (f"| target {target}'s simulator | {n} | {agree / n:.2%} ({agree}/{n}) | "
                f"{c / n:.4f} ({c}/{n}) |" in md), md[md.index("## accuracy"):]
    assert len(ys) == N_FILE


def test_api_report_has_the_same_accuracy_table(work, speck_whole):
    """dep.report(DIR, data file, samples=6): the table `estimate --report` writes, the target's row
    included (its first 6 samples: sinabs' outputs do not depend on the batch)."""
    d = work["dir"]
    dep = snncc.load(d / "out-speck")
    n = 6
    out, ref, y = (a[:n] for a in speck_whole[:3])
    agree = int((out.argmax(1) == ref.argmax(1)).sum())
    c, c_ref = int((out.argmax(1).numpy() == y).sum()), int((ref.argmax(1).numpy() == y).sum())
    dep.report(str(d / "rep-api"), work["events"], profile="speck", samples=n)
    md = open(d / "rep-api" / "report.md").read()
    assert f"| integer model (reference) | {n} | 100.00% ({n}/{n}) | {c_ref / n:.4f} ({c_ref}/{n}) |" in md
    assert f"| target speck's simulator | {n} | {agree / n:.2%} ({agree}/{n}) | {c / n:.4f} ({c}/{n}) |" in md
