"""Results a user can trust, through the installed `snncc` command and the API: a data file means
all of it, accuracy and agreement sit next to every prediction-level result, spike inputs are
checked once for every command, data laid out (N, T, ...) is read as such, and the small things
(umask, --layer, warnings, a loaded verify's footer) say what they do.

Each subcommand and each behaviour of the process (warnings printed on a fresh start, worker
processes, a model file importing its sibling) runs the installed command at least once; the
other cases vary only what the library reads and prints and run `snncc.cli.main` in this process
(`main`: the snncc_main fixture; the speck fixture's compile: tests/cli_run.py's run_main; both
under PYTHONWARNINGS=default's filters), which saves a torch import per case."""

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch

from cli_run import run_main
from nets import ConvChain, randomize_bn

import snncc

pytestmark = pytest.mark.slow  # each test runs the installed command several times: ~1-2 minutes on 2 busy cores


@pytest.fixture
def main(snncc_main):
    """`snncc.cli.main` in this process: (exit code, stdout, stderr), warnings shown as snncc_cmd's."""
    return lambda *argv, cwd=None: snncc_main(*argv, cwd=cwd, warnings_filter="default")

EXE = os.path.join(os.path.dirname(sys.executable), "snncc")
SMALL_SPECK = {"channels": [4], "input_size": 8, "pools": [2], "kernel_sizes": 3, "D": 2}


def snncc_cmd(*argv, cwd=None):
    """The installed command as a user runs it: (exit code, stdout, stderr)."""
    env = dict(os.environ, PYTHONWARNINGS="default")  # warnings show, as on a user's terminal
    p = subprocess.run([EXE, *map(str, argv)], capture_output=True, text=True, cwd=cwd, env=env)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module")
def conv(tmp_path_factory):
    """A .pt2 exported at batch 1, its artefact, and a labelled data file of 40 samples."""
    tmp = tmp_path_factory.mktemp("conv")
    torch.manual_seed(0)
    net = randomize_bn(ConvChain()).eval()
    pt2 = tmp / "conv.pt2"
    torch.export.save(torch.export.export(net, (torch.zeros(1, 2, 8, 8),)), pt2)
    art = tmp / "art"
    code, _, e = snncc_cmd("compile", pt2, "-o", art)
    assert code == 0, e
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn((40, 2, 8, 8), generator=gen) * 2).numpy().astype(np.float32)
    y = np.arange(40) % 5
    np.savez(tmp / "data.npz", x=x, y=y)
    return {"tmp": tmp, "net": net, "pt2": pt2, "art": art, "data": tmp / "data.npz", "x": x, "y": y}


def hand_scores(dep, x, y):
    """Accuracy and its count by hand: the reference's argmax against the labels."""
    out = dep.reference(torch.as_tensor(x).double()).output
    correct = int((out.argmax(1).numpy() == y).sum())
    return correct, out


def test_a_data_file_means_all_of_it_and_samples_takes_the_first_n(conv, main):
    d, art = conv["data"], conv["art"]
    code, o, e = snncc_cmd("simulate", art, "--data", d, "--schedule", "exact")
    assert code == 0 and e == "", e
    assert o.splitlines()[0] == f"inputs: all 40 samples of {d}, labelled"
    assert "exact schedule: 40 samples," in o
    code, o, e = main("simulate", art, "--data", d, "--schedule", "exact", "--samples", "7")
    assert code == 0, e
    assert o.splitlines()[0] == f"inputs: the first 7 samples of 40 of {d}, labelled"
    assert "exact schedule: 7 samples," in o
    code, o, e = main("estimate", art, "--data", d)
    assert code == 0 and e == "", e
    assert "# estimate: 40 samples," in o
    code, o, e = main("verify", conv["pt2"], art, "--data", d)
    assert code == 0, e
    assert "samples: 40 " in o
    code, o, _ = main("simulate", art, "--schedule", "exact")  # no data: 16 seeded random inputs
    assert o.splitlines()[0] == "inputs: 16 random samples, seed 0" and "exact schedule: 16 samples," in o
    dep = snncc.load(art)
    assert dep.simulate_data(d, ("exact",)).samples == 40
    assert dep.simulate_data(d, ("exact",), samples=5).samples == 5
    assert dep.estimate(d).samples == 40
    assert dep.verify(d).samples == 40


def test_accuracy_and_agreement_next_to_every_prediction(conv, tmp_path, main):
    d, art = conv["data"], conv["art"]
    dep = snncc.load(art)
    c, _ = hand_scores(dep, conv["x"], conv["y"])
    acc = f"accuracy {c / 40:.4f} ({c}/40)"
    code, o, e = main("simulate", art, "--data", d, "--schedule", "event")
    assert code == 0, e
    assert f"agreement with the integer model 100.00% (40/40), {acc}, integer model {c / 40:.4f} ({c}/40)" in o
    code, o, e = main("simulate", art, "--data", d, "--schedule", "exact")
    assert acc in o
    code, o, e = main("verify", conv["pt2"], art, "--data", d)
    assert code == 0, e
    assert f"accuracy on the labels: integer model {c / 40:.4f} ({c}/40)" in o
    rows = {line.split()[0]: line.split() for line in o.splitlines()[2:6]}  # after the inputs and header lines
    assert set(rows) == {"pytorch", "traced", "folded", "deployed"}
    assert all(r[-1] == f"{c / 40:.4f}" for r in rows.values())  # each level's accuracy column
    code, o, e = main("estimate", art, "--data", d, "--report", tmp_path / "rep")
    assert code == 0 and e == "", e
    assert f"accuracy of the integer model on the labels: {c / 40:.4f} ({c}/40)" in o
    md = open(tmp_path / "rep" / "report.md").read()
    assert f"| integer model (reference) | 40 | 100.00% (40/40) | {c / 40:.4f} ({c}/40) |" in md
    assert f"| exact schedule | 40 | 100.00% (40/40) | {c / 40:.4f} ({c}/40) |" in md
    assert "| streaming schedule | 40 |" in md
    assert "accuracy per schedule and target simulator" in open(tmp_path / "rep" / "report.html").read()
    # the API: the same counts
    assert dep.estimate(d).correct == c and dep.simulate_data(d, ("exact",)).correct["reference"] == c
    rep = dep.verify(d)
    assert rep.accuracy("deployed") == c / 40


def test_verify_model_argument_takes_a_module_or_a_pt2_path(conv):
    dep = snncc.load(conv["art"])
    x = torch.as_tensor(conv["x"][:6])
    for model in (conv["net"], str(conv["pt2"]), torch.export.load(str(conv["pt2"]))):
        rep = dep.verify(x, model=model)
        assert rep.levels[0].level == "pytorch" and rep.ok, rep.table()
    rep = dep.verify(x)  # a loaded artefact without a model: no PyTorch row, and no footer about one
    assert [lv.level for lv in rep.levels] == ["traced", "folded", "deployed"]
    assert "pytorch compared" not in rep.table() and "no PyTorch model given" in rep.table()


def test_model_def_file_imports_its_sibling_module(tmp_path):
    pkg = tmp_path / "mine"
    pkg.mkdir()
    (pkg / "blocks.py").write_text("import torch.nn as nn\nfrom snncc.nn import SFANeuron\n\n"
                                   "class Block(nn.Sequential):\n"
                                   "    def __init__(self):\n"
                                   "        super().__init__(nn.Conv2d(2, 4, 3, padding=1), SFANeuron(D=4))\n")
    (pkg / "net.py").write_text("import torch.nn as nn\nfrom blocks import Block\n\n"
                                "def make():\n    return nn.Sequential(Block(), nn.Flatten(), nn.Linear(4 * 64, 3))\n")
    sys.path.insert(0, str(pkg))
    try:
        from net import make  # noqa: E402  (the user's own code, built here to save its weights)
    finally:
        sys.path.remove(str(pkg))
    torch.save(make().state_dict(), tmp_path / "w.pt")
    code, o, e = snncc_cmd("compile", tmp_path / "w.pt", "--model-def", f"{pkg / 'net.py'}:make", "--input-shape",
                           "2,8,8", "-o", tmp_path / "out", cwd=tmp_path)
    assert code == 0, e
    assert "wrote" in o


@pytest.fixture(scope="module")
def speck(tmp_path_factory):
    """A T = 2 spike-input model for Speck from a state_dict (as the README compiles the shipped one),
    compiled in this process (the conv fixture runs the installed compile)."""
    from snncc.models.speck import speck_cnn

    tmp = tmp_path_factory.mktemp("speck")
    torch.manual_seed(0)
    torch.save(speck_cnn(**SMALL_SPECK).state_dict(), tmp / "w.pt")
    load = ["--model-def", "snncc.models.speck:speck_cnn", "--factory-kwargs", json.dumps(SMALL_SPECK),
            "--input-shape", "2,8,8"]
    code, _, e = run_main("compile", tmp / "w.pt", *load, "--timesteps", "2", "--input-kind", "spike",  # in this process
                          "--target", "speck", "-o", tmp / "art", warnings_filter="default")
    assert code == 0, e
    gen = torch.Generator().manual_seed(2)
    x = torch.randint(0, 3, (6, 2, 2, 8, 8), generator=gen).numpy().astype(np.uint8)  # (N, T, C, H, W)
    y = np.arange(6) % 2
    np.savez(tmp / "nt.npz", x_test=x, y_test=y)
    np.savez(tmp / "tn.npz", x=x.swapaxes(0, 1), y=y)
    np.savez(tmp / "flat.npz", x=x.reshape(12, 2, 8, 8), y=y)
    np.savez(tmp / "half.npz", x=x.astype(np.float32) + 0.5, y=y)
    np.savez(tmp / "neg.npz", x=-x.astype(np.float32) - 1, y=y)
    np.savez(tmp / "square.npz", x=x[:2])  # N = T = 2: either axis could be time
    return {"tmp": tmp, "art": tmp / "art", "w": tmp / "w.pt", "load": load, "x": x, "y": y}


def test_spike_inputs_are_checked_once_for_every_command_and_the_api(speck, main):
    """The first case through the installed command, the others in this process."""
    t, art = speck["tmp"], speck["art"]
    first = float(speck["x"][0, 0, 0, 0, 0])  # sample 0, timestep 0: the first value checked
    for bad, value in (("half.npz", f"{first + 0.5:g}"), ("neg.npz", f"{-first - 1:g}")):
        for argv in (["verify", speck["w"], art, *speck["load"]], ["simulate", art], ["simulate", art, "--schedule",
                     "event"], ["simulate", art, "--backend", "speck"], ["estimate", art]):
            run = snncc_cmd if (bad, argv[0]) == ("half.npz", "verify") else main
            code, o, e = run(*argv, "--data", t / bad)
            assert code == 2 and o.count("\n") <= 1, (argv, o, e)  # at most the inputs line, nothing computed
            assert e.startswith(f"snncc: error: {t / bad}: x: sample ") and f"holds {value}: the model takes spike " \
                "input, non-negative integer event counts per timestep" in e and e.count("\n") == 1, (argv, e)
    dep = snncc.load(art)
    with pytest.raises(snncc.errors.SnnccError, match="non-negative integer event counts"):
        dep.simulate(torch.full((3, 2, 8, 8), 0.5))
    with pytest.raises(snncc.errors.SnnccError, match="non-negative integer event counts"):
        dep.estimate(torch.full((3, 2, 8, 8), -1.0))


def test_state_dict_verify_of_a_T_step_spike_model_runs_at_the_artefacts_T(speck, main):
    """In this process (the installed verify of this artefact: the first spike-input refusal)."""
    code, o, e = main("verify", speck["w"], speck["art"], *speck["load"], "--data", speck["tmp"] / "nt.npz")
    assert code == 0, e
    pytorch = o.splitlines()[2].split()  # after the inputs and header lines
    assert pytorch[0] == "pytorch" and float(pytorch[1]) == 0.0 and "verdict: OK" in o


def test_data_laid_out_N_T_is_read_from_the_shapes_and_said(speck, main):
    t, art = speck["tmp"], speck["art"]
    dep = snncc.load(art)
    ref = dep.reference(torch.as_tensor(speck["x"].swapaxes(0, 1)).double())  # (T, N, ...): the executors' own
    c = int((ref.output.argmax(1).numpy() == speck["y"]).sum())
    lines = {}
    for f, layout, extra in (("nt.npz", "(N, T, *shape)", []), ("tn.npz", "(T, N, *shape)", []),
                             ("flat.npz", "(N * T, *shape), sample-major (sinabs' flattened batch)",
                              ["--data-layout", "flat"])):
        code, o, e = main("simulate", art, "--data", t / f, "--schedule", "exact", *extra)
        assert code == 0, e
        assert f"read as {layout}, labelled" in o.splitlines()[0], o
        lines[f] = o.splitlines()[1]
        assert f"exact schedule: 6 samples," in lines[f] and f"accuracy {c / 6:.4f} ({c}/6)" in lines[f]
    assert len(set(lines.values())) == 1  # one data set, three layouts, one result
    # (N * T, C, H, W) is never taken as N * T samples, and N = T needs the flag
    code, o, e = main("simulate", art, "--data", t / "flat.npz")
    assert code == 2 and "--data-layout N or flat" in e and e.count("\n") == 1
    code, o, e = main("simulate", art, "--data", t / "square.npz")
    assert code == 2 and "both leading axes are 2" in e and "--data-layout NT or TN" in e
    code, o, e = main("simulate", art, "--data", t / "square.npz", "--data-layout", "NT", "--schedule", "exact")
    assert code == 0 and "read as (N, T, *shape)" in o, e
    assert dep.simulate_data(str(t / "flat.npz"), ("exact",), data_layout="flat").correct["reference"] == c


def test_estimate_prints_no_warning_and_the_speck_dynamic_energy_is_unknown(conv, speck, main):
    """The worker pool's run and the speck profile's (sinabs imported) through the installed
    command: a fresh process shows the warnings of its imports too."""
    for extra in ([], ["--workers", "2"]):
        code, o, e = (snncc_cmd if extra else main)("estimate", conv["art"], "--samples", "4", *extra)
        assert code == 0 and e == "", e
    code, o, e = snncc_cmd("estimate", speck["art"], "--profile", "speck", "--data", speck["tmp"] / "nt.npz")
    assert code == 0 and e == "", e
    line = next(l for l in o.splitlines() if l.startswith("energy per sample"))
    assert line.startswith("energy per sample: dynamic unknown (profile speck gives no energy per SynOp), static ")
    rep = snncc.load(speck["art"]).estimate(str(speck["tmp"] / "nt.npz"), "speck")
    assert rep.to_dict()["dynamic_energy_unknown"] == "profile speck gives no energy per SynOp"


def test_artefacts_follow_the_umask_and_layer_needs_report(conv, tmp_path, main):
    """In this process: the umask is this process's (a started command inherits it)."""
    old = os.umask(0o022)
    try:
        code, _, e = main("compile", conv["pt2"], "-o", tmp_path / "a")
        assert code == 0, e
        code, _, e = main("estimate", tmp_path / "a", "--samples", "2", "--report", tmp_path / "rep",
                          "--markdown", tmp_path / "est.md")
        assert code == 0, e
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(tmp_path / "a" / "manifest.json").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "a" / "ir.npz").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "est.md").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "rep" / "report.html").st_mode) == 0o644
    code, o, e = main("estimate", conv["art"], "--layer", "n1")
    assert code == 2 and o == ""
    assert e == "snncc: error: --layer: --layer chooses the population whose spike maps the report shows (add " \
                "--report DIR, or drop --layer)\n"


def test_target_scores_cover_the_whole_file_batch_by_batch(speck, main):
    """The report's target-simulator row: the whole data file (6 samples) run in batches of 4 and 2,
    its counts equal to one sinabs run over all 6 computed here by hand; `samples` takes the first N;
    `estimate --report --batch-size 4` writes that row."""
    from snncc.sim.scores import Scores

    dep = snncc.load(speck["art"])
    x, y = speck["x"], speck["y"]
    xt = torch.as_tensor(x).double().transpose(0, 1)  # (T, N, ...)
    out, ref = dep.simulate(xt, backend="speck").output, dep.reference(xt).output
    agree, correct = int((out.argmax(1) == ref.argmax(1)).sum()), int((out.argmax(1).numpy() == y).sum())
    ref_correct = int((ref.argmax(1).numpy() == y).sum())
    nt = speck["tmp"] / "nt.npz"
    assert dep.target_scores(nt, batch_size=4) == [("target speck's simulator", Scores(6, correct, agree, ref_correct))]
    a3 = int((out[:3].argmax(1) == ref[:3].argmax(1)).sum())
    (what, s), = dep.target_scores(nt, samples=3, batch_size=2)
    assert (s.samples, s.agree, s.correct) == (3, a3, int((out[:3].argmax(1).numpy() == y[:3]).sum()))
    (_, s), = dep.target_scores(xt, labels=y, batch_size=5)  # a tensor as simulate takes it, with labels
    assert s == Scores(6, correct, agree, ref_correct)
    code, o, e = main("estimate", speck["art"], "--profile", "speck", "--data", nt, "--batch-size", "4",
                      "--report", speck["tmp"] / "rep")
    assert code == 0 and e == "", e
    md = (speck["tmp"] / "rep" / "report.md").read_text()
    assert f"| target speck's simulator | 6 | {agree / 6:.2%} ({agree}/6) | {correct / 6:.4f} ({correct}/6) |" in md
