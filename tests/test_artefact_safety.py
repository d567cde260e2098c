"""Artefact folders under stress: a compile killed mid-write leaves nothing or one
complete artefact; two concurrent compiles into one folder give one complete artefact; compiling
twice gives byte-identical files for every target; and property-based fuzzing of the artefact
files (ir.json, ir.npz, traced.json, manifest.json; re-hashed or not) never makes the reader or the
executors escape with anything but a one-line snncc error.

The kills and the concurrent compiles are processes'; of the two compiles compared byte for byte,
one runs the installed command and one `snncc.cli.main` in this process (two processes, each with
its own hash seed and history), and the fuzzer's base artefact is compiled in this process: each
saves a torch import."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli_run import run_main
from nets import ConvChain, ResidualSepConv, randomize_bn
from snncc import artifact
from snncc.errors import SnnccError
from snncc.sim.reference import run

EXE = os.path.join(os.path.dirname(sys.executable), "snncc")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVENTS_PT2 = os.path.join(ROOT, "examples", "events", "artifacts", "speck_cnn.pt2")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    t = tmp_path_factory.mktemp("safety")
    torch.manual_seed(0)
    torch.export.save(torch.export.export(randomize_bn(ConvChain()), (torch.zeros(2, 2, 8, 8),)), t / "conv.pt2")
    torch.export.save(torch.export.export(randomize_bn(ResidualSepConv()), (torch.zeros(2, 3, 8, 8),)),
                      t / "res.pt2")
    return t


def _complete(out) -> None:
    """`out` is one whole artefact: every manifest file present with its hash, nothing else."""
    man = artifact.read_manifest(str(out))
    for name in man["files"]:
        artifact.read_file(str(out), name, man)
    listed = set(man["files"]) | {"manifest.json"}
    assert set(os.listdir(out)) == listed
    artifact.read_graph(str(out), "ir")
    artifact.read_graph(str(out), "traced")


def _no_temp(folder) -> bool:
    return not [f for f in os.listdir(folder) if f.startswith(".snncc-tmp-")]


def test_killed_compile_leaves_nothing_or_a_complete_artefact(models, tmp_path):
    out = tmp_path / "out"
    seen_tmp = 0
    for delay in (0.0, 0.3, 0.6, 1.0, 1.5, 0.0, 0.0, 0.0):  # 0.0: kill the moment the write starts
        if delay == 0.0 and seen_tmp:
            continue  # the extra attempts only until one kill has landed inside a write
        if out.exists():
            shutil.rmtree(out)
        p = subprocess.Popen([EXE, "compile", str(models / "res.pt2"), "-o", str(out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.monotonic()
        while p.poll() is None:  # kill as the write starts, or after `delay` seconds
            if not _no_temp(tmp_path):
                seen_tmp += 1
                break
            if delay and time.monotonic() - t0 > delay:
                break
            time.sleep(0.0005)
        p.send_signal(signal.SIGKILL)
        p.wait()
        if out.exists():
            _complete(out)
    # a later compile into the same place completes and removes what killed writers left
    assert subprocess.run([EXE, "compile", str(models / "res.pt2"), "-o", str(out)],
                          capture_output=True).returncode == 0
    _complete(out)
    assert _no_temp(tmp_path)
    assert seen_tmp >= 1, "no kill landed during a write"


def test_two_concurrent_compiles_give_one_complete_artefact(models, tmp_path):
    out = tmp_path / "out"
    for _ in range(2):
        ps = [subprocess.Popen([EXE, "compile", str(models / m), "-o", str(out)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE) for m in ("conv.pt2", "res.pt2")]
        errs = [p.communicate()[1] for p in ps]
        assert [p.returncode for p in ps] == [0, 0], errs
        _complete(out)
        assert _no_temp(tmp_path)


def test_a_write_removes_what_dead_writers_and_probes_left(models, tmp_path):
    """`.snncc-tmp-<pid>-*` (a killed write) and `.snncc-probe-<pid>-*` (check_writable's trial
    folder, killed before its removal) of processes that are gone are removed by the next write
    into that folder; a running process's are kept. In this process (the kills are above)."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    left = [f".snncc-tmp-{dead.pid}-a", f".snncc-probe-{dead.pid}-b", f".snncc-probe-{os.getpid()}-c"]
    for name in left:
        (tmp_path / name).mkdir()
    assert run_main("compile", models / "conv.pt2", "-o", tmp_path / "out")[0] == 0
    _complete(tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == sorted([f".snncc-probe-{os.getpid()}-c", "out"])


@pytest.mark.parametrize("target,model,extra", [
    ("sim", "res.pt2", []),
    ("loihi", "conv.pt2", ["--target-option", "precision=fixed"]),
    ("speck", EVENTS_PT2, ["--input-kind", "spike"]),
])
def test_compiling_twice_gives_byte_identical_files(models, tmp_path, target, model, extra):
    """Every byte of an artefact is the same whatever the thread count and the hash seed: the first
    compile runs in this process (one torch/BLAS thread, this process's hash seed), the second as
    the installed command with two threads and PYTHONHASHSEED=2 (BLAS/OpenMP reductions sum in an
    order that depends on the thread count: the Speck diagnostics computed through them once changed
    their last digits)."""
    path = model if os.path.isabs(model) else str(models / model)
    outs = []
    for i in range(2):
        out = tmp_path / f"o{i}"
        argv = ["compile", path, "--target", target, "-o", str(out)] + extra
        if i == 0:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                code, _, err = run_main(*argv)
            finally:
                torch.set_num_threads(threads)
        else:
            env = dict(os.environ, OMP_NUM_THREADS="2", MKL_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2",
                       PYTHONHASHSEED="2")
            p = subprocess.run([EXE] + argv, capture_output=True, text=True, env=env)
            code, err = p.returncode, p.stderr
        assert code == 0, err
        outs.append({f: open(out / f, "rb").read() for f in sorted(_walk(out))})
    assert list(outs[0]) == list(outs[1]) and len(outs[0]) >= 6
    for f in outs[0]:
        assert outs[0][f] == outs[1][f], f"{target}: {f} differs between two compiles"


def _walk(folder):
    for root, _, names in os.walk(folder):
        for n in names:
            yield os.path.relpath(os.path.join(root, n), folder)


# ---- fuzzing -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base_artefact(models, tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzzbase") / "art"
    assert run_main("compile", models / "res.pt2", "-o", out)[0] == 0
    return {f: open(out / f, "rb").read() for f in os.listdir(out)}


JSON_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
                        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                        st.lists(st.integers(-3, 10 ** 6), max_size=4), st.just({}), st.just([[[]]]),
                        st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, prefix + (i,))


def _set(doc, path, value):
    value = copy.deepcopy(value)  # st.just() hands out one shared object: never mutate it later
    if not path:
        return value
    cur = doc
    for k in path[:-1]:
        cur = cur[k]
    if isinstance(cur, dict) and draw_delete(value):
        cur.pop(path[-1], None)
    else:
        cur[path[-1]] = value
    return doc


def _get(doc, path):
    for k in path:
        doc = doc[k]
    return doc


def draw_delete(value) -> bool:
    return isinstance(value, dict) and value == {"__delete__": 1}


@st.composite
def mutated(draw, base):
    files = dict(base)
    name = draw(st.sampled_from(["ir.json", "ir.npz", "traced.json", "manifest.json"]))
    how = draw(st.sampled_from(["tweak", "tweak", "json", "json", "bytes", "truncate"]))
    blob = files[name]
    if how == "tweak" and name.endswith(".json"):  # plausible values: numbers nudged, lists resized
        doc = json.loads(blob)
        for _ in range(draw(st.integers(1, 2))):  # leaves of the document as the last tweak left it
            leaves = [p for p in _paths(doc) if p and isinstance(_get(doc, p), (int, float, list))]
            path = draw(st.sampled_from(leaves))
            v = _get(doc, path)
            if isinstance(v, list):
                new = v[:-1] if v and draw(st.booleans()) else v + [draw(st.integers(0, 3))]
            elif isinstance(v, bool):
                new = not v
            elif isinstance(v, int):
                new = v + draw(st.sampled_from([-2, -1, 1, 2, 7])) if draw(st.booleans()) else draw(st.integers(-1, 9))
            else:
                new = v * draw(st.sampled_from([0.0, -1.0, 0.5, 2.0, 1e300]))
            doc = _set(doc, path, new)
        blob = json.dumps(doc).encode()
    elif how == "json" and name.endswith(".json"):
        doc = json.loads(blob)
        paths = list(_paths(doc))
        for _ in range(draw(st.integers(1, 3))):
            path = draw(st.sampled_from(paths))
            value = draw(st.one_of(JSON_VALUES, st.just({"__delete__": 1})))
            doc = _set(doc, path, value)
            paths = list(_paths(doc))
        blob = json.dumps(doc).encode()
    elif how == "truncate":
        blob = blob[: draw(st.integers(0, max(0, len(blob) - 1)))]
    else:
        b = bytearray(blob)
        for _ in range(draw(st.integers(1, 16))):
            pos = draw(st.integers(0, len(b) - 1))
            b[pos] = draw(st.integers(0, 255))
        blob = bytes(b)
    files[name] = blob
    if name != "manifest.json" and (how == "tweak" or draw(st.booleans())):  # re-hash: the parsers themselves must cope
        man = json.loads(files["manifest.json"])
        man["files"][name] = {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
        files["manifest.json"] = json.dumps(man).encode()
    return files


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


_counter = [0]


def _use(art: str) -> None:
    """What the CLI does with an artefact: read both graphs, run the reference and both simulators."""
    from snncc.estimate import Estimator
    from snncc.sim.sync import simulate

    g = artifact.read_graph(art, "ir")
    artifact.read_graph(art, "traced")
    x = torch.as_tensor(np.random.default_rng(0).normal(size=(2,) + g.inputs[0].shape))
    run(g, x)
    simulate(g, x, "exact")
    est = Estimator(g, profile="45nm")
    est.run([x])
    est.report()


def test_fuzzed_artefacts_never_escape(base_artefact, fuzz_dir):
    escapes = []
    accepted = [0]

    @settings(max_examples=500, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(mutated(base_artefact))
    def check(files):
        _counter[0] += 1
        art = fuzz_dir / f"a{_counter[0]}"
        art.mkdir()
        for f, blob in files.items():
            (art / f).write_bytes(blob)
        try:
            _use(str(art))
            accepted[0] += 1
        except SnnccError as e:
            assert "\n" not in e.one_line()
        except Exception as e:  # an escape: record it with the mutation that caused it
            escapes.append(f"{e.__class__.__name__}: {str(e)[:200]}")
        finally:
            shutil.rmtree(art)

    check()
    assert _counter[0] >= 500
    assert accepted[0] >= 5, "the fuzzer never reached the executors"
    assert escapes == [], f"{len(escapes)} escapes, e.g. {escapes[:5]}"
