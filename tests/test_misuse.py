"""Misuse suite: every case must end with exit code 2 (or the stated code) and exactly one stderr
line `snncc: error: ...` naming what, where and what to do: no traceback, no torch log noise, no
'internal error', no marker file from a malicious pickle, no partial output folder.

INSTALLED cases run through the installed `snncc` console script, the way a user runs it: at least
one per subcommand, and each case whose behaviour belongs to the process (code execution from a
pickle, user code calling sys.exit, argument parsing, the working folder, the recursion limit,
files written). The other cases vary only what the library refuses; they run `snncc.cli.main` in
this process (a fresh process per case costs a torch import each), with stderr captured at the file
descriptor (C-level noise counts) and warnings and log records counted as the lines the console
script would print."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from cli_run import run_main
from nets import ConvChain, randomize_bn

from snncc.cli import main

EXE = os.path.join(os.path.dirname(sys.executable), "snncc")
NETS = os.path.join(os.path.dirname(__file__), "nets.py")


class Evil:
    """Unpickling this runs `touch MARKER`: the payload of a malicious checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_bytes(marker) -> bytes:
    buf = io.BytesIO()
    torch.save((Evil(marker),), buf)
    return buf.getvalue()


def _rewrite_zip(src, dst, replace: dict):
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w") as zo:
        for info in zi.infolist():
            data = zi.read(info.filename)
            for suffix, new in replace.items():
                if info.filename.endswith(suffix):
                    data = new(data) if callable(new) else new
            zo.writestr(info, data)


def _rehash(art):
    man = json.load(open(os.path.join(art, "manifest.json")))
    for name in man["files"]:
        blob = open(os.path.join(art, name), "rb").read()
        man["files"][name] = {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
    json.dump(man, open(os.path.join(art, "manifest.json"), "w"))


def _mutated_artefact(base, dst, edit):
    shutil.copytree(base, dst)
    edit(dst)
    return dst


DEFS = '''
import sys
import torch.nn as nn
sys.path.insert(0, {tests!r})
from nets import ConvChain
from snncc.nn import SFANeuron

def raises(**kw):
    raise ValueError("boom")

def nonmodule(**kw):
    return 3

def exits(**kw):
    sys.exit(3)

def chain(**kw):
    return ConvChain(**kw)

def sfa(D=4, width=4, rounding="half_even"):
    return nn.Sequential(nn.Conv2d(2, width, 3, padding=1), SFANeuron(D, rounding=rounding), nn.Flatten(),
                         nn.Linear(width * 64, 3))
'''


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    t = tmp_path_factory.mktemp("misuse")
    torch.manual_seed(0)
    m = randomize_bn(ConvChain())
    torch.save(m.state_dict(), t / "conv.pt")
    torch.export.save(torch.export.export(m, (torch.zeros(2, 2, 8, 8),)), t / "conv.pt2")
    (t / "defs.py").write_text(DEFS.format(tests=os.path.dirname(__file__)))
    (t / "random.pt").write_bytes(bytes(range(256)) * 8)
    marker = t / "MARKER"
    # a .pt2 whose inner sample-input pickle runs code (torch.export.load falls back to weights_only=False)
    _rewrite_zip(t / "conv.pt2", t / "evil_inputs.pt2", {"data/sample_inputs/model.pt": _evil_bytes(marker)})

    def pickled_weight(cfg):  # and one whose weight config says "pickled" and whose weight runs code
        doc = json.loads(cfg)
        doc["config"][next(iter(doc["config"]))]["use_pickle"] = True
        return json.dumps(doc).encode()
    first = json.loads(zipfile.ZipFile(t / "conv.pt2").read("conv/data/weights/model_weights_config.json"))
    path = next(iter(first["config"].values()))["path_name"]
    _rewrite_zip(t / "conv.pt2", t / "evil_weight.pt2", {"model_weights_config.json": pickled_weight,
                                                           f"data/weights/{path}": _evil_bytes(marker)})
    with open(t / "evil_module.pt", "wb") as f:  # a pickled whole "module" that runs code
        f.write(_evil_bytes(marker))
    # the artefact the cases read, compiled in this process (the installed compile runs below, in
    # test_replacing_an_artefact_and_an_empty_folder and test_flags_after_the_subcommand_and_debug_exit_code)
    assert run_main("compile", t / "conv.pt2", "-o", t / "art")[0] == 0
    np.savez(t / "empty.npz", x=np.zeros((0, 2, 8, 8)))
    nan = np.zeros((3, 2, 8, 8))
    nan[1, 0, 2, 2] = np.nan
    np.savez(t / "nan.npz", x=nan)
    np.savez(t / "nox.npz", inputs=np.zeros((3, 2, 8, 8)))
    np.savez(t / "wrong.npz", x=np.zeros((3, 3, 8, 8)))
    np.save(t / "strings.npy", np.array(["a", "b"]))
    (t / "user").mkdir()
    (t / "user" / "notes.txt").write_text("mine")
    shutil.copytree(t / "art", t / "art_plus")
    (t / "art_plus" / "mine.txt").write_text("mine")
    (t / "afile").write_text("a file")
    (t / "model_dir").mkdir()
    shutil.copy(t / "conv.pt2", t / "model_dir" / "conv.pt2")

    def set_graph(art, fn):
        doc = json.load(open(os.path.join(art, "ir.json")))
        fn(doc)
        json.dump(doc, open(os.path.join(art, "ir.json"), "w"))
        _rehash(art)

    def fire_node(doc):
        return next(n for n in doc["nodes"] if n["op"] == "fire")

    arts = {
        "attrs_list": lambda a: set_graph(a, lambda d: fire_node(d).__setitem__("attrs", [1, 2])),
        "huge_D": lambda a: set_graph(a, lambda d: fire_node(d)["attrs"].__setitem__("D", 10 ** 9)),
        "huge_T": lambda a: set_graph(a, lambda d: d.__setitem__("T", 10 ** 9)),
        "TxD": lambda a: set_graph(a, lambda d: (d.__setitem__("T", 4000), fire_node(d)["attrs"].__setitem__("D", 4000))),
        "str_T": lambda a: set_graph(a, lambda d: d.__setitem__("T", "many")),
        "deep_json": lambda a: (open(os.path.join(a, "ir.json"), "w").write("[" * 100000 + "]" * 100000),
                                _rehash(a)),
    }

    def manifest(fn):
        def edit(a):
            man = json.load(open(os.path.join(a, "manifest.json")))
            fn(man)
            json.dump(man, open(os.path.join(a, "manifest.json"), "w"))
        return edit

    arts.update({
        "files_list": manifest(lambda m: m.__setitem__("files", list(m["files"]))),
        "entry_str": manifest(lambda m: m["files"].__setitem__("ir.json", "abc")),
        "shape_disagrees": manifest(lambda m: m.__setitem__("input_shape", [3, 8, 8])),
        "escape_path": manifest(lambda m: m["files"].__setitem__("../../etc/passwd", m["files"]["ir.json"])),
    })
    for name, edit in arts.items():
        _mutated_artefact(t / "art", t / f"bad_{name}", edit)
    return t


# (argv, exit code, text the one error line must contain). {t} is the fixture folder.
CASES = {
    # code execution from model files
    "pt2_evil_sample_inputs": (["compile", "{t}/evil_inputs.pt2", "-o", "{t}/o"], 2,
                               "archive member conv/data/sample_inputs/model.pt holds a pickle"),
    "pt2_evil_weight": (["compile", "{t}/evil_weight.pt2", "-o", "{t}/o"], 2, "holds a pickle that is not plain tensors"),
    "inspect_evil": (["inspect", "{t}/evil_inputs.pt2"], 2, "snncc never unpickles it"),
    "inspect_unknown_target": (["inspect", "{t}/conv.pt2", "--level", "deployed", "--target", "nope"], 2,
                               "--target: unknown target 'nope'"),
    "inspect_unknown_option": (["inspect", "{t}/conv.pt2", "--level", "deployed", "--target-option", "foo=1"], 2,
                               "unknown option(s) foo for target sim"),
    "inspect_artefact_target": (["inspect", "{t}/art", "--target", "sim"], 2,
                                "--target: an artefact's deployed graph was lowered by its compile"),
    "verify_evil": (["verify", "{t}/evil_inputs.pt2", "{t}/art"], 2, "snncc never unpickles it"),
    "pickled_module": (["compile", "{t}/evil_module.pt", "--input-shape", "2,8,8", "-o", "{t}/o"], 2,
                       "holds pickled objects, not just tensors"),
    "random_bytes_pt": (["compile", "{t}/random.pt", "--model-def", "{t}/defs.py:chain", "--input-shape", "2,8,8",
                         "-o", "{t}/o"], 2, "not a readable checkpoint"),
    # factories
    "factory_raises": (["compile", "{t}/conv.pt", "--model-def", "{t}/defs.py:raises", "--input-shape", "2,8,8",
                        "-o", "{t}/o"], 2, "factory raised ValueError: boom"),
    "factory_nonmodule": (["compile", "{t}/conv.pt", "--model-def", "{t}/defs.py:nonmodule", "--input-shape",
                           "2,8,8", "-o", "{t}/o"], 2, "factory returned a int, not a torch.nn.Module"),
    "factory_exits": (["compile", "{t}/conv.pt", "--model-def", "{t}/defs.py:exits", "--input-shape", "2,8,8",
                       "-o", "{t}/o"], 2, "factory called sys.exit(3)"),
    "factory_D0": (["compile", "{t}/conv.pt", "--model-def", "{t}/defs.py:sfa", "--factory-kwargs", '{{"D": 0}}',
                    "--input-shape", "2,8,8", "-o", "{t}/o"], 2, "factory raised ValueError: D must be positive"),
    "factory_negative_width": (["compile", "{t}/conv.pt", "--model-def", "{t}/defs.py:sfa", "--factory-kwargs",
                                '{{"width": -3}}', "--input-shape", "2,8,8", "-o", "{t}/o"], 2, "factory raised"),
    "factory_rounding": (["compile", "{t}/conv.pt", "--model-def", "{t}/defs.py:sfa", "--factory-kwargs",
                          '{{"rounding": "sideways"}}', "--input-shape", "2,8,8", "-o", "{t}/o"], 2,
                         "rounding must be one of"),
    "factory_kwargs_not_json": (["compile", "{t}/conv.pt", "--model-def", "{t}/defs.py:chain", "--factory-kwargs",
                                 "{{D: 4", "--input-shape", "2,8,8", "-o", "{t}/o"], 2, "--factory-kwargs is not JSON"),
    # input shapes
    "input_shape_wrong": (["compile", "{t}/conv.pt", "--model-def", "{t}/defs.py:chain", "--input-shape", "3,8,8",
                           "-o", "{t}/o"], 2, "does not run on a per-sample input of shape (3, 8, 8)"),
    "input_shape_huge": (["compile", "{t}/conv.pt", "--model-def", "{t}/defs.py:chain", "--input-shape",
                          "1x100000x100000", "-o", "{t}/o"], 2, "needs at least"),
    "input_shape_text": (["compile", "{t}/conv.pt", "--model-def", "{t}/defs.py:chain", "--input-shape", "two",
                          "-o", "{t}/o"], 2, "--input-shape must be comma-separated integers"),
    "input_shape_pt2": (["compile", "{t}/conv.pt2", "--input-shape", "3,8,8", "-o", "{t}/o"], 2,
                        "differs from the program's input"),
    # output folders: never delete what snncc did not write
    "out_user_folder": (["compile", "{t}/conv.pt2", "-o", "{t}/user"], 2, "is not an snncc artefact"),
    "out_artefact_plus_user_file": (["compile", "{t}/conv.pt2", "-o", "{t}/art_plus"], 2,
                                    "holds files snncc did not write (mine.txt)"),
    "out_holds_model": (["compile", "{t}/model_dir/conv.pt2", "-o", "{t}/model_dir"], 2,
                        "this folder holds the input model"),
    "out_cwd": (["compile", "conv.pt2", "-o", "."], 2, "this folder holds the input model"),
    "out_is_file": (["compile", "{t}/conv.pt2", "-o", "{t}/afile"], 2, "exists and is not a folder"),
    "out_read_only": (["compile", "{t}/conv.pt2", "-o", "/proc/snncc-out"], 2, "cannot write the artefact"),
    # samples and data
    "samples_zero": (["verify", "{t}/conv.pt2", "{t}/art", "--samples", "0"], 2, "--samples: expected a positive integer"),
    "samples_negative": (["simulate", "{t}/art", "--samples", "-4"], 2, "--samples: expected a positive integer"),
    "policy_without_events": (["simulate", "{t}/art", "--schedule", "event", "--policy", "greedy"], 2,
                              "--policy greedy chooses the firing rule of --events recordings"),
    "samples_huge": (["simulate", "{t}/art", "--samples", "1000000000"], 2, "needs at least"),
    "estimate_samples_zero": (["estimate", "{t}/art", "--samples", "0"], 2, "expected a positive integer"),
    "data_empty": (["simulate", "{t}/art", "--data", "{t}/empty.npz"], 2, "holds no samples"),
    "data_nan": (["verify", "{t}/conv.pt2", "{t}/art", "--data", "{t}/nan.npz"], 2, "sample 1 holds NaN or Inf"),
    "data_nan_estimate": (["estimate", "{t}/art", "--data", "{t}/nan.npz"], 2, "sample 1 holds NaN or Inf"),
    "data_no_x": (["simulate", "{t}/art", "--data", "{t}/nox.npz"], 2, "no input array (fields: inputs)"),
    "data_wrong_shape": (["simulate", "{t}/art", "--data", "{t}/wrong.npz"], 2, "do not match the model's per-sample"),
    "data_strings": (["simulate", "{t}/art", "--data", "{t}/strings.npy"], 2, "expected numbers"),
    "data_missing": (["estimate", "{t}/art", "--data", "{t}/none.npz"], 2, "file not found"),
    # sweep-D, checked before the estimate runs
    "sweep_empty": (["estimate", "{t}/art", "--sweep-D", ""], 2, "--sweep-D: window lengths must be positive"),
    "sweep_zero": (["estimate", "{t}/art", "--sweep-D", "0,2"], 2, "window lengths must be positive"),
    "sweep_text": (["estimate", "{t}/art", "--sweep-D", "four"], 2, "cannot read window lengths"),
    "sweep_huge": (["estimate", "{t}/art", "--sweep-D", "2,100000"], 2, "above snncc's bound"),
    # target options, for every target
    "option_sim": (["compile", "{t}/conv.pt2", "-o", "{t}/o", "--target-option", "precison=fixed"], 2,
                   "unknown option(s) precison for target sim"),
    "option_loihi": (["compile", "{t}/conv.pt2", "--target", "loihi", "-o", "{t}/o", "--target-option", "bogus=1"], 2,
                     "unknown option(s) bogus for target loihi"),
    "option_speck": (["compile", "{t}/conv.pt2", "--target", "speck", "-o", "{t}/o", "--target-option", "bogus=1"], 2,
                     "unknown option(s) bogus for target speck"),
    "option_value": (["compile", "{t}/conv.pt2", "--target", "loihi", "-o", "{t}/o", "--target-option",
                      "precision=double"], 2, "unknown precision 'double'"),
    "option_chip_path": (["compile", "{t}/conv.pt2", "--target", "speck", "-o", "{t}/o", "--target-option",
                          "chip=../../etc/passwd"], 2, "unknown chip"),
    "option_no_equals": (["compile", "{t}/conv.pt2", "-o", "{t}/o", "--target-option", "fixed"], 2,
                         "must look like key=value"),
    # malformed artefacts (re-hashed, so the parser itself must cope)
    "art_attrs_list": (["simulate", "{t}/bad_attrs_list"], 2, "must be a JSON dict"),
    "art_huge_D": (["simulate", "{t}/bad_huge_D"], 2, "D must be an integer in 1..32768"),
    "art_huge_T": (["simulate", "{t}/bad_huge_T"], 2, "T must be in 1..4096"),
    "art_TxD": (["simulate", "{t}/bad_TxD"], 2, "T x D = 4000 x 4000 sub-steps is above snncc's bound"),
    "art_str_T": (["inspect", "{t}/bad_str_T"], 2, "field T must be an integer"),
    "art_deep_json": (["inspect", "{t}/bad_deep_json"], 2, "not a JSON document (RecursionError)"),
    "art_files_list": (["simulate", "{t}/bad_files_list"], 2, "field 'files' must be an object"),
    "art_entry_str": (["inspect", "{t}/bad_entry_str"], 2, "field 'files.ir.json' must be an object"),
    "art_shape_disagrees": (["simulate", "{t}/bad_shape_disagrees"], 2, "disagrees with the manifest's input_shape"),
    "art_escape_path": (["inspect", "{t}/bad_escape_path"], 2, "must be a relative path inside the artefact"),
    "art_missing": (["simulate", "{t}/nothing"], 2, "folder not found"),
    "art_not_folder": (["estimate", "{t}/conv.pt2"], 2, "not an snncc artefact folder"),
    # other misuse
    "unknown_target": (["compile", "{t}/conv.pt2", "--target", "tpu", "-o", "{t}/o"], 2, "unknown target 'tpu'"),
    "unknown_flag": (["compile", "{t}/conv.pt2", "-o", "{t}/o", "--fast"], 2, "unrecognized arguments: --fast"),
    "missing_model": (["compile", "{t}/nope.pt2", "-o", "{t}/o"], 2, "file not found"),
}


def _run(argv, cwd):
    return subprocess.run([EXE] + argv, capture_output=True, text=True, cwd=cwd, timeout=300)


# one per subcommand, and the behaviours of the process itself (see the module docstring)
INSTALLED = {"verify_evil", "factory_exits", "unknown_flag",
             "out_cwd", "out_read_only", "missing_model", "art_deep_json", "art_missing", "samples_negative",
             "estimate_samples_zero", "data_missing"}
# Python's own warning filters (what the console script starts with; pytest installs its own)
PYTHON_FILTERS = [("default", None, DeprecationWarning, "__main__", 0), ("ignore", None, DeprecationWarning, None, 0),
                  ("ignore", None, PendingDeprecationWarning, None, 0), ("ignore", None, ImportWarning, None, 0),
                  ("ignore", None, ResourceWarning, None, 0)]


@pytest.fixture(scope="module")
def results(env):
    """The INSTALLED cases at once, two at a time (each is a fresh process importing torch)."""
    def one(name):
        return name, _run([a.format(t=env) for a in CASES[name][0]], cwd=env)
    with ThreadPoolExecutor(2) as pool:
        return dict(pool.map(one, sorted(INSTALLED)))


def _in_process(argv, env, capfd, caplog, monkeypatch):
    """`snncc.cli.main(argv)` run from the fixture folder: its exit code and the stderr lines the
    console script would print (fd 2, warnings shown under Python's default filters, log records at
    WARNING and above, which the script's logging.basicConfig prints)."""
    monkeypatch.chdir(env)
    capfd.readouterr()
    caplog.clear()
    with warnings.catch_warnings(record=True) as shown, caplog.at_level(logging.WARNING):
        warnings.filters[:] = list(PYTHON_FILTERS)
        try:
            code = main([a.format(t=env) for a in argv])
        except SystemExit as e:  # argparse
            code = e.code
    err = capfd.readouterr().err.strip().splitlines()
    return code, err + [f"snncc: warning: {w.message}" for w in shown] + [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("name", sorted(CASES))
def test_misuse_is_one_line(env, results, name, capfd, caplog, monkeypatch):
    argv, code, text = CASES[name]
    if name in INSTALLED:
        p = results[name]
        rc, err = p.returncode, p.stderr.strip().splitlines()
    else:
        rc, err = _in_process(argv, env, capfd, caplog, monkeypatch)
    stderr = "\n".join(err)
    assert rc == code, (name, stderr)
    assert len(err) == 1 and err[0].startswith("snncc: error: "), (name, stderr)
    assert text in err[0], (name, err[0])
    assert "Traceback" not in stderr and "internal error" not in stderr
    assert not (env / "MARKER").exists(), "a pickle ran code"
    assert not (env / "o").exists(), "a failed compile left an output folder"
    assert not [f for f in os.listdir(env) if f.startswith(".snncc-tmp-")], "temporary files left behind"


def test_every_subcommand_has_an_installed_case():
    assert INSTALLED <= set(CASES)
    assert {CASES[n][0][0] for n in INSTALLED} == {"compile", "inspect", "verify", "simulate", "estimate"}


def test_folders_that_were_refused_are_untouched(env, capfd, caplog, monkeypatch):
    for name in ("out_user_folder", "out_artefact_plus_user_file", "out_holds_model", "out_is_file"):
        assert _in_process(CASES[name][0], env, capfd, caplog, monkeypatch)[0] == 2, name
    assert (env / "user" / "notes.txt").read_text() == "mine"
    assert (env / "art_plus" / "mine.txt").read_text() == "mine"
    assert os.path.isfile(env / "model_dir" / "conv.pt2") and os.path.isfile(env / "conv.pt2")
    assert (env / "afile").read_text() == "a file"


def test_an_unwritable_output_is_refused_before_any_work(env, capfd, caplog, monkeypatch):
    """An -o whose folder cannot be written is refused before the model is read (artifact.check_writable
    tries the temporary folder `write` would make): the compile itself never runs."""
    import snncc.api

    def never(*a, **kw):
        raise AssertionError("the model was compiled before the -o was refused")

    monkeypatch.setattr(snncc.api, "compile", never)
    code, err = _in_process(CASES["out_read_only"][0], env, capfd, caplog, monkeypatch)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("snncc: error: /proc/snncc-out: cannot write the artefact (") and \
        "(cannot make a folder in /proc: " in err[0] and ".snncc-" not in err[0] and \
        err[0].endswith(" (choose a writable -o)"), err[0]
    assert not [f for f in os.listdir(env) if f.startswith(".snncc-")]


def test_trusted_pickle_does_run(env, tmp_path):
    """--trust-pickle really is the switch: the same file runs its code when trusted."""
    marker = tmp_path / "TRUSTED"
    with open(tmp_path / "evil.pt", "wb") as f:
        f.write(_evil_bytes(marker))
    p = _run(["compile", str(tmp_path / "evil.pt"), "--trust-pickle", "--input-shape", "2,8,8", "-o",
              str(tmp_path / "o")], cwd=tmp_path)
    assert marker.exists() and p.returncode == 2 and "holds a tuple" in p.stderr


def test_flags_after_the_subcommand_and_debug_exit_code(env, tmp_path):
    out = tmp_path / "a"
    p = _run(["compile", str(env / "conv.pt2"), "-o", str(out), "-v"], cwd=tmp_path)
    assert p.returncode == 0 and "[snncc] tracing" in p.stderr and "fold_batchnorm" in p.stderr
    p = _run(["compile", str(env / "nope.pt2"), "-o", str(out), "--debug"], cwd=tmp_path)
    assert p.returncode == 2 and "Traceback" in p.stderr and p.stderr.strip().endswith("file not found")


def test_replacing_an_artefact_and_an_empty_folder(env, tmp_path):
    out = tmp_path / "a"
    out.mkdir()  # an empty folder is fine
    assert run_main("compile", env / "conv.pt2", "-o", out, cwd=tmp_path)[0] == 0
    first = sorted(os.listdir(out))
    p = _run(["compile", str(env / "conv.pt2"), "-o", str(out)], cwd=tmp_path)  # an snncc artefact: replaced
    assert p.returncode == 0 and sorted(os.listdir(out)) == first
    assert sorted(os.listdir(tmp_path)) == ["a"]


def test_data_as_npy_and_shipped_test_split(env, tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(3, 2, 8, 8)))
    code, out, err = run_main("simulate", env / "art", "--data", tmp_path / "x.npy", "--schedule", "exact",
                              cwd=tmp_path)
    assert code == 0 and "exact schedule: 3 samples" in out, err
    np.savez(tmp_path / "split.npz", x_test=np.zeros((2, 2, 8, 8)), y_test=np.array([1, 2]))
    code, out, err = run_main("estimate", env / "art", "--data", tmp_path / "split.npz", cwd=tmp_path)
    assert code == 0, err


def test_help_says_model_def_runs_code_and_how_o_is_replaced():
    p = subprocess.run([EXE, "compile", "--help"], capture_output=True, text=True)
    text = " ".join(p.stdout.split())
    assert "imports and runs that Python file" in text
    assert "never deleted" in text and "earlier snncc artefact" in text


def test_trusted_pickled_module_finds_its_classes_in_the_current_folder(tmp_path):
    """A whole module pickled from the repository root (classes in examples/) loads from there
    with --trust-pickle, and elsewhere fails in one line naming the module."""
    from examples.digits.models import digits_cnn  # pickled by reference: module examples.digits.models

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    torch.save(digits_cnn(), tmp_path / "cnn.pt")
    args = ["compile", str(tmp_path / "cnn.pt"), "--trust-pickle", "--input-shape", "1,8,8"]
    p = _run(args + ["-o", str(tmp_path / "a")], cwd=root)
    assert p.returncode == 0, p.stderr
    p = _run(args + ["-o", str(tmp_path / "b")], cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.strip().endswith("or add it to PYTHONPATH)")
    assert "classes live in module 'examples'" in p.stderr and not (tmp_path / "b").exists()
