"""The installed `snncc` command answers a refused argument, target option, output folder,
artefact, data file or --samples, and lists an artefact's graph, without importing torch (about 2 CPU s per process):
`python -X importtime` of the console script names every module the process imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from nets import ConvChain, randomize_bn
from snncc.cli import main

EXE = os.path.join(os.path.dirname(sys.executable), "snncc")


def _run(argv, cwd):
    """(exit code, stdout, snncc's stderr lines, modules imported) of one `snncc` process."""
    p = subprocess.run([sys.executable, "-X", "importtime", EXE] + argv, capture_output=True, text=True, cwd=cwd,
                       timeout=300)
    lines = p.stderr.splitlines()
    modules = {ln.rsplit("|", 1)[1].strip() for ln in lines if ln.startswith("import time:") and "|" in ln}
    return p.returncode, p.stdout, [ln for ln in lines if not ln.startswith("import time:")], modules


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    t = tmp_path_factory.mktemp("imports")
    torch.manual_seed(0)
    m = randomize_bn(ConvChain())
    torch.export.save(torch.export.export(m, (torch.zeros(2, 2, 8, 8),)), t / "conv.pt2")
    assert main(["compile", str(t / "conv.pt2"), "-o", str(t / "art")]) == 0
    os.makedirs(t / "tampered")
    for name in os.listdir(t / "art"):
        data = (t / "art" / name).read_bytes()
        (t / "tampered" / name).write_bytes(data.replace(b'"T": ', b'"T":  ') if name == "ir.json" else data)
    (t / "user").mkdir()
    (t / "user" / "notes.txt").write_text("mine")
    nan = np.zeros((3, 2, 8, 8))
    nan[1, 0, 2, 2] = np.nan
    np.savez(t / "nan.npz", x=nan)
    np.savez(t / "empty.npz", x=np.zeros((0, 2, 8, 8)))
    np.savez(t / "nox.npz", inputs=np.zeros((3, 2, 8, 8)))
    np.savez(t / "wrong.npz", x=np.zeros((3, 3, 8, 8)))
    np.savez(t / "labels.npz", x=np.zeros((3, 2, 8, 8)), y=np.array([0.5, 1.0, 2.0]))
    np.save(t / "strings.npy", np.array(["a", "b"]))
    (t / "shards").mkdir()
    np.savez(t / "shards" / "part-000.npz", x=np.zeros((2, 2, 8, 8)))
    return t


# (argv, text of the one error line); {t} is the fixture folder
REFUSED = {
    "unknown_flag": (["compile", "{t}/conv.pt2", "-o", "{t}/o", "--fast"], "unrecognized arguments: --fast"),
    "sim_option": (["compile", "{t}/conv.pt2", "-o", "{t}/o", "--target-option", "precison=fixed"],
                   "unknown option(s) precison for target sim"),
    "unknown_target": (["compile", "{t}/conv.pt2", "--target", "tpu", "-o", "{t}/o"], "unknown target 'tpu'"),
    "user_folder": (["compile", "{t}/conv.pt2", "-o", "{t}/user"], "is not an snncc artefact"),
    "tampered": (["simulate", "{t}/tampered"], "differs from the manifest"),
    "not_artefact": (["estimate", "{t}/conv.pt2"], "not an snncc artefact folder"),
    "sweep_text": (["estimate", "{t}/art", "--sweep-D", "four"], "cannot read window lengths"),
    "samples_zero": (["verify", "{t}/conv.pt2", "{t}/art", "--samples", "0"], "expected a positive integer"),
    "export_tampered": (["export-nir", "{t}/tampered", "{t}/x.nir"], "differs from the manifest"),
    "inspect_target": (["inspect", "{t}/art", "--target", "sim"], "an artefact's deployed graph was lowered"),
    # data files and --samples: read and checked with numpy before torch
    "data_nan_simulate": (["simulate", "{t}/art", "--data", "{t}/nan.npz"], "nan.npz: x: sample 1 holds NaN or Inf"),
    "data_nan_verify": (["verify", "{t}/conv.pt2", "{t}/art", "--data", "{t}/nan.npz"], "sample 1 holds NaN or Inf"),
    "data_nan_estimate": (["estimate", "{t}/art", "--data", "{t}/nan.npz"], "sample 1 holds NaN or Inf"),
    "data_empty": (["simulate", "{t}/art", "--data", "{t}/empty.npz"], "holds no samples"),
    "data_no_x": (["estimate", "{t}/art", "--data", "{t}/nox.npz"], "no input array (fields: inputs)"),
    "data_wrong_shape": (["verify", "{t}/conv.pt2", "{t}/art", "--data", "{t}/wrong.npz"],
                         "do not match the model's per-sample shape (2, 8, 8)"),
    "data_strings": (["simulate", "{t}/art", "--data", "{t}/strings.npy"], "expected numbers"),
    "data_missing": (["estimate", "{t}/art", "--data", "{t}/none.npz"], "none.npz: file not found"),
    "data_float_labels": (["simulate", "{t}/art", "--data", "{t}/labels.npz"], "labels of shape (3,)"),
    "data_layout": (["simulate", "{t}/art", "--data", "{t}/nan.npz", "--data-layout", "TN"], "have no time axis"),
    "event_shards": (["simulate", "{t}/art", "--data", "{t}/shards", "--schedule", "event"],
                     "runs one input file, not a folder of shards"),
    "samples_huge": (["simulate", "{t}/art", "--samples", "1000000000"], "needs at least"),
    # a model file that is not there
    "model_missing": (["compile", "{t}/nope.pt2", "-o", "{t}/o"], "nope.pt2: file not found"),
    "inspect_missing": (["inspect", "{t}/nope.pt2", "--level", "deployed"], "nope.pt2: file not found"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_refusal_does_not_import_torch(env, name):
    argv, text = REFUSED[name]
    code, _, err, modules = _run([a.format(t=env) for a in argv], env)
    assert code == 2 and len(err) == 1 and err[0].startswith("snncc: error: ") and text in err[0], err
    assert "snncc.cli" in modules and "torch" not in modules
    assert not (env / "o").exists() and (env / "user" / "notes.txt").read_text() == "mine"


def test_inspecting_an_artefact_lists_its_graph_without_torch(env):
    code, out, err, modules = _run(["inspect", str(env / "art")], env)
    assert code == 0 and err == [] and "torch" not in modules
    lines = out.splitlines()
    assert lines[0] == f"# artefact {env / 'art'}: target sim, level ir"
    nodes = json.load(open(env / "art" / "ir.json"))["nodes"]
    assert all(any(n["name"] in ln for ln in lines[1:]) for n in nodes)


def test_work_and_refusals_that_need_the_model_do_import_torch(env):
    """The detector sees torch where it is needed: a model file is read with torch (a file that is
    there but holds no program is refused by torch's reader; a missing one before it, above)."""
    (env / "garbage.pt2").write_bytes(b"not a zip archive")
    code, _, err, modules = _run(["compile", str(env / "garbage.pt2"), "-o", str(env / "o")], env)
    assert code == 2 and len(err) == 1 and "garbage.pt2" in err[0] and "torch" in modules, err
    assert not (env / "o").exists()
    code, out, _, modules = _run(["simulate", str(env / "art"), "--samples", "2", "--schedule", "exact"], env)
    assert code == 0 and "exact schedule: 2 samples" in out and "torch" in modules
