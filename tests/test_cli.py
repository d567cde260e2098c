"""The snncc CLI end to end: every accepted model form, artefacts, verify, and error paths."""

import json
import os
import subprocess
import sys

import pytest
import torch

from nets import ConvChain, ResidualSepConv, randomize_bn
from snncc.cli import main

NETS = os.path.join(os.path.dirname(__file__), "nets.py")


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """The model in three forms, written once for the module (no test writes to them)."""
    d = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    m = randomize_bn(ConvChain())
    sd = d / "conv.pt"
    torch.save(m.state_dict(), sd)
    pt2 = d / "conv.pt2"
    torch.export.save(torch.export.export(m, (torch.zeros(2, 2, 8, 8),)), pt2)
    pick = d / "conv_module.pt"
    torch.save(m, pick)
    return {"sd": str(sd), "pt2": str(pt2), "pickle": str(pick)}


@pytest.fixture
def files(model_files, tmp_path):
    """The module's model files and this test's own folder for what it writes."""
    return {**model_files, "tmp": tmp_path}


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_compile_pt2_inspect_verify(files, capsys):
    out = str(files["tmp"] / "art")
    code, o, e = run_cli(capsys, "compile", files["pt2"], "--target", "sim", "-o", out)
    assert code == 0, e
    assert "compiled for sim: 2 neuron populations" in o
    assert sorted(os.listdir(out)) == ["ir.json", "ir.npz", "manifest.json", "report.md", "traced.json", "traced.npz"]
    man = json.load(open(os.path.join(out, "manifest.json")))
    assert man["input_shape"] == [2, 8, 8] and man["versions"]["torch"].startswith("2.13")
    code, o, _ = run_cli(capsys, "inspect", out)
    assert code == 0 and "c1" in o and "NO (MACs)" in o
    code, o, _ = run_cli(capsys, "verify", files["pt2"], out, "--samples", "8")
    assert code == 0 and "verdict: OK" in o


def test_state_dict_with_model_def_and_dump_after(files, capsys):
    out = str(files["tmp"] / "art2")
    code, o, e = run_cli(capsys, "compile", files["sd"], "--model-def", f"{NETS}:ConvChain",
                         "--factory-kwargs", '{"D": 4}', "--input-shape", "2,8,8", "-o", out,
                         "--dump-after", "fold_norm")
    assert code == 0, e
    assert "--- after fold_norm ---" in o
    code, o, e = run_cli(capsys, "verify", files["sd"], out, "--model-def", f"{NETS}:ConvChain",
                         "--input-shape", "2,8,8", "--samples", "4")
    assert code == 0, o + e


def test_compile_is_deterministic(files, capsys):
    a, b = str(files["tmp"] / "a"), str(files["tmp"] / "b")
    for out in (a, b):
        assert run_cli(capsys, "compile", files["pt2"], "-o", out)[0] == 0
    for name in os.listdir(a):
        assert open(os.path.join(a, name), "rb").read() == open(os.path.join(b, name), "rb").read(), name


def test_pickle_needs_trust(files, capsys):
    out = str(files["tmp"] / "p")
    code, _, e = run_cli(capsys, "compile", files["pickle"], "--input-shape", "2,8,8", "-o", out)
    assert code == 2 and e.count("\n") == 1
    assert "file holds pickled objects" in e and "--trust-pickle" in e
    assert not os.path.exists(out)
    code, _, e = run_cli(capsys, "compile", files["pickle"], "--input-shape", "2,8,8", "--trust-pickle", "-o", out)
    assert code == 0, e


@pytest.mark.parametrize("argv,msg", [
    (["compile", "missing.pt2", "-o", "X"], "missing.pt2: file not found"),
    (["compile", "{sd}", "-o", "X"], "checkpoint is a state_dict; snncc needs the model definition"),
    (["compile", "{sd}", "--model-def", "nets_missing.py", "-o", "X"], "must look like file.py:factory"),
    (["compile", "{sd}", "--model-def", NETS + ":Nope", "-o", "X"], "no factory named 'Nope'"),
    (["compile", "{sd}", "--model-def", NETS + ":ResidualSepConv", "--input-shape", "3,8,8", "-o", "X"],
     "state_dict does not fit the model"),
    (["compile", "{sd}", "--model-def", NETS + ":ConvChain", "--input-shape", "2,a", "-o", "X"],
     "--input-shape must be comma-separated integers"),
    (["compile", "{pt2}", "--target", "tpu", "-o", "X"], "--target: unknown target 'tpu'"),
    (["compile", "{pt2}", "--dump-after", "nope", "-o", "X"], "--dump-after nope: no such pass"),
    (["compile", "{trunc}", "-o", "X"], "not a readable torch.export program"),
    (["inspect", "{tmp}"], "not an snncc artefact (no manifest.json)"),
])
def test_errors_are_one_line_with_exit_2(files, capsys, argv, msg):
    trunc = files["tmp"] / "trunc.pt2"
    trunc.write_bytes(open(files["pt2"], "rb").read()[:300])
    argv = [a.format(sd=files["sd"], pt2=files["pt2"], trunc=str(trunc), tmp=str(files["tmp"])) for a in argv]
    argv = [str(files["tmp"] / "X") if a == "X" else a for a in argv]
    code, _, e = run_cli(capsys, *argv)
    assert code == 2, e
    last = e.strip().splitlines()[-1]
    assert last.startswith("snncc: error: ") and e.count("snncc: error") == 1
    assert msg in last
    assert not os.path.exists(files["tmp"] / "X")


def test_unknown_backend_names_the_backend_flag(files, capsys):
    out = files["tmp"] / "b"
    assert run_cli(capsys, "compile", files["pt2"], "-o", str(out))[0] == 0
    code, _, e = run_cli(capsys, "simulate", str(out), "--backend", "tpu")
    assert code == 2 and e.count("snncc: error") == 1, e
    last = e.strip().splitlines()[-1]
    assert last.startswith("snncc: error: --backend: unknown backend 'tpu' (installed backends: snncc, ")
    assert "sim" in last and "`snncc targets` lists them" in last


def test_tampered_artefact_is_refused(files, capsys):
    out = files["tmp"] / "t"
    assert run_cli(capsys, "compile", files["pt2"], "-o", str(out))[0] == 0
    with open(out / "ir.npz", "r+b") as f:
        f.seek(200)
        f.write(b"\x00\x01")
    code, _, e = run_cli(capsys, "inspect", str(out))
    assert code == 2 and "content hash differs from the manifest" in e


def test_verify_mismatch_exits_1(files, capsys, tmp_path):
    out = str(tmp_path / "r")
    torch.manual_seed(1)
    other = randomize_bn(ConvChain(), seed=5)
    p = tmp_path / "other.pt2"
    torch.export.save(torch.export.export(other, (torch.zeros(2, 2, 8, 8),)), p)
    assert run_cli(capsys, "compile", str(p), "-o", out)[0] == 0
    code, o, e = run_cli(capsys, "verify", files["pt2"], out, "--samples", "8")
    assert code == 1 and "MISMATCH" in o


def test_console_script_and_targets():
    exe = os.path.join(os.path.dirname(sys.executable), "snncc")
    p = subprocess.run([exe, "targets"], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.startswith("") and "sim" in p.stdout
    p = subprocess.run([exe, "compile", "nope.pt2", "-o", "x"], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.strip() == "snncc: error: nope.pt2: file not found"


def test_simulate_and_estimate_artefact(files, capsys):
    out = str(files["tmp"] / "s")
    assert run_cli(capsys, "compile", files["pt2"], "-o", out)[0] == 0
    code, o, e = run_cli(capsys, "simulate", out, "--samples", "4")
    assert code == 0, e
    assert "spike counts == reference" in o and "latency 12 sub-steps" in o
    md = str(files["tmp"] / "est.md")
    code, o, e = run_cli(capsys, "estimate", out, "--profile", "45nm", "--samples", "4", "--markdown", md)
    assert code == 0, e
    assert os.path.exists(md)
    code, _, e = run_cli(capsys, "estimate", out, "--profile", "nope")
    assert code == 2 and e.count("snncc: error") == 1


def test_T_recorded_with_the_checkpoint_is_used_and_a_disagreeing_timesteps_warned(tmp_path, capsys):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    art = os.path.join(root, "examples", "events", "artifacts")
    args = ["compile", os.path.join(art, "speck_cnn.pt"), "--model-def", "snncc.models.speck:speck_cnn",
            "--factory-kwargs", '{"size": "small"}', "--input-shape", "2,32,32", "--input-kind", "spike"]
    code, o, e = run_cli(capsys, *args, "-o", str(tmp_path / "a"))  # speck_cnn.json beside it says T = 4
    assert code == 0, e
    assert json.load(open(tmp_path / "a" / "manifest.json"))["T"] == 4
    exe = os.path.join(os.path.dirname(sys.executable), "snncc")  # warnings as a user sees them
    p = subprocess.run([exe, *args, "--timesteps", "2", "-o", str(tmp_path / "b")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "snncc: warning: --timesteps 2 differs from the T = 4 recorded with the checkpoint" in p.stderr
    assert json.load(open(tmp_path / "b" / "manifest.json"))["T"] == 2


def test_single_step_program_over_T_timesteps_warns_that_its_neurons_deploy_stateless(tmp_path):
    """The shipped event model's `.pt2` is its single-step module exported at batch 1: the membrane
    the module carries between calls is not in the program. Compiled with --timesteps 4 by the
    installed command, its neurons deploy stateless (the module path deploys them stateful: the
    README's 95% against 88% on the test set) and one warning says so and what deploys them as
    trained; at T = 1 there is nothing to carry and no warning."""
    import snncc

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    pt2 = os.path.join(root, "examples", "events", "artifacts", "speck_cnn.pt2")
    exe = os.path.join(os.path.dirname(sys.executable), "snncc")
    p = subprocess.run([exe, "compile", pt2, "--timesteps", "4", "--input-kind", "spike", "-o", str(tmp_path / "a")],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    warned = [ln for ln in p.stderr.splitlines() if "holds no neuron state" in ln]
    assert warned == [f"snncc: warning: {pt2}: the program is one timestep and holds no neuron state (a membrane a "
                      f"module keeps between calls is not exported), so its 3 neuron layers deploy stateless over "
                      f"T = 4: every timestep starts from the initial membrane. A model whose neurons carry their "
                      f"membrane across timesteps deploys as trained from its module or state_dict (--model-def), or "
                      f"from a program of the whole sequence (--input-layout)"], p.stderr
    fires = snncc.load(str(tmp_path / "a")).deployed.neurons()
    assert len(fires) == 3 and not any(n.attrs["stateful"] for n in fires)
    p = subprocess.run([exe, "compile", pt2, "--input-kind", "spike", "-o", str(tmp_path / "b")],
                       capture_output=True, text=True)
    assert p.returncode == 0 and "neuron state" not in p.stderr, p.stderr
