"""Malformed input files through the installed command: every format gets the care `.pt2` gets (one
`snncc: error:` line naming the file or member, exit 2; no traceback, no internal error). Event
recordings (`simulate --events`) here; the `.pt2`, checkpoint and `--data` cases are in
tests/test_misuse.py.

The installed `snncc` runs the first bad event file and the bad --bin-us arguments, the paths
whose bytes are the point (a newline, a name that is not UTF-8: argv as the process gets it) and
the batch-1 `.pt2` compile and verify; the cases that only vary what the library reads (the other
event files, an ONNX opset, a NIR field, 1000-node chains, a .npy named .npz) run
`snncc.cli.main` in this process (tests/cli_run.py, read as the command's output), which saves a
torch import per run."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from cli_run import run_main
from snncc.sim.event_streams import EVENT_DTYPE

EXE = os.path.join(os.path.dirname(sys.executable), "snncc")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def ev(tmp_path_factory):
    t = tmp_path_factory.mktemp("events")
    a = os.path.join(ROOT, "examples", "events", "artifacts")
    code, _, err = run_main("compile", os.path.join(a, "speck_cnn.pt"), "--model-def", "snncc.models.speck:speck_cnn",
                            "--factory-kwargs", '{"size": "small"}', "--input-shape", "2,32,32", "--timesteps", "4",
                            "--input-kind", "spike", "-o", t / "art")
    assert code == 0, err
    (t / "empty.npz").write_bytes(b"")
    three = np.zeros(3, dtype=EVENT_DTYPE)
    three["t"] = [0, 10, 20]
    np.savez(t / "three.npz", a=three)
    blob = (t / "three.npz").read_bytes()
    (t / "truncated.npz").write_bytes(blob[: len(blob) // 2])
    np.save(t / "one.npy", three)
    (t / "npy_named.npz").write_bytes((t / "one.npy").read_bytes())
    np.savez(t / "objects.npz", a=np.array([{"x": 1}], dtype=object))
    np.savez(t / "zero.npz", a=np.zeros(0, dtype=EVENT_DTYPE))
    return t


def _simulate(ev, *argv):
    return subprocess.run([EXE, "simulate", str(ev / "art"), "--events", *argv], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("name, extra, what", [
    ("empty.npz", [], "empty.npz: cannot read: No data left in file (empty, truncated or not a NumPy file)"),
    ("truncated.npz", [], "truncated.npz: cannot read: File is not a zip file"),
    ("objects.npz", [], "objects.npz[a]: cannot read this member: Object arrays cannot be loaded"),
    ("zero.npz", [], "zero.npz[a]: the recording holds no events"),
    ("three.npz", ["--bin-us", "1e-300"], "three.npz[a]: event 1 at t = 10 us is after the 4 bins of 1e-300 us"),
    ("three.npz", ["--bin-us", "1e300"], "argument --bin-us: expected at most 1e12 microseconds per timestep"),
    ("three.npz", ["--bin-us", "nan"], "argument --bin-us: expected a positive finite number, got nan"),
])
def test_bad_event_files_are_one_line(ev, name, extra, what):
    # the installed command for the first unreadable file and for the argument errors (argparse's
    # exit); the other files, which vary only what the reader says, in this process
    if name == "empty.npz" or extra[1:] in (["1e300"], ["nan"]):
        r = _simulate(ev, str(ev / name), *extra)
        code, err = r.returncode, r.stderr
    else:
        code, _, err = run_main("simulate", ev / "art", "--events", ev / name, *extra)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("snncc: error: ") and what in err, err


def test_npy_named_npz_reads_as_the_one_recording_it_holds(ev):
    a, b = (run_main("simulate", ev / "art", "--events", ev / name, "--bin-us", "1000")
            for name in ("npy_named.npz", "one.npy"))
    assert a[0] == 0 and b[0] == 0, a[2] + b[2]
    assert "1 recordings, 3 input events" in a[1]
    assert a[1].splitlines()[1:] == b[1].splitlines()[1:]  # the same numbers as the honest .npy


def test_a_path_with_a_newline_is_quoted_in_the_one_line(tmp_path):
    bad = str(tmp_path / "my\nmodel.pt2")
    r = subprocess.run([EXE, "compile", bad, "-o", str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and repr(bad) in r.stderr, r.stderr


def test_a_pt2_whose_name_is_not_utf8_compiles_and_verifies(tmp_path):
    import torch

    from nets import ConvChain, randomize_bn

    torch.manual_seed(0)
    torch.export.save(torch.export.export(randomize_bn(ConvChain()).eval(), (torch.zeros(1, 2, 8, 8),)),
                      tmp_path / "plain.pt2")
    name = os.fsdecode(os.fsencode(str(tmp_path)) + b"/m\xff.pt2")  # a byte no UTF-8 text holds
    os.rename(tmp_path / "plain.pt2", name)
    out = str(tmp_path / "o")
    r = subprocess.run([EXE, "compile", name, "-o", out], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([EXE, "verify", name, out, "--samples", "2"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "verdict: OK" in r.stdout, r.stderr
    import json

    assert json.load(open(os.path.join(out, "manifest.json")))["source"] == "m\\xff.pt2"


@pytest.fixture(scope="module")
def conv_onnx(tmp_path_factory):
    """A conv chain exported to ONNX once; each opset case rewrites its own copy."""
    import torch

    from nets import ConvChain

    path = tmp_path_factory.mktemp("onnx") / "c.onnx"
    torch.onnx.export(ConvChain().eval(), (torch.zeros(1, 2, 8, 8),), str(path), dynamo=False)
    return path


@pytest.mark.parametrize("opset", [999, 9])
def test_onnx_outside_the_opsets_read_is_one_line(tmp_path, conv_onnx, opset):
    import onnx

    path = tmp_path / "c.onnx"
    m = onnx.load(str(conv_onnx))
    m.opset_import[0].version = opset
    onnx.save(m, str(path))
    code, _, err = run_main("compile", path, "-o", tmp_path / "o")
    assert code == 2, err
    assert err.count("\n") == 1 and f"ONNX opset {opset}: snncc reads the standard operators of opsets 13-20" \
        in err, err
    assert not (tmp_path / "o").exists()


def _nir_chain(path, n, threshold=None):
    import nir

    nodes, edges, prev = {"input": nir.Input(input_type=np.array([4]))}, [], "input"
    for i in range(n):
        nodes[f"a{i}"] = nir.Affine(weight=np.eye(4) * 1.5, bias=np.full(4, 0.25))
        nodes[f"n{i}"] = nir.IF(r=np.ones(4), v_threshold=np.ones(4) if threshold is None else threshold)
        edges += [(prev, f"a{i}"), (f"a{i}", f"n{i}")]
        prev = f"n{i}"
    nodes["output"] = nir.Output(output_type=np.array([4]))
    edges.append((prev, "output"))
    nir.write(str(path), nir.NIRGraph(nodes=nodes, edges=edges))


def test_nir_with_strings_where_numbers_belong_is_one_line(tmp_path):
    import h5py

    path = tmp_path / "s.nir"
    _nir_chain(path, 1)
    with h5py.File(path, "r+") as f:  # what a careless writer leaves: a bytes dataset for a threshold
        del f["node/nodes/n0/v_threshold"]
        f["node/nodes/n0"].create_dataset("v_threshold", data=np.array([b"x"] * 4))
    code, _, err = run_main("compile", path, "-o", tmp_path / "o")
    assert code == 2, err
    assert err.count("\n") == 1 and "node n0 (IF): field v_threshold holds |S1 values where NIR has numbers" \
        in err, err


def test_a_1000_layer_nir_chain_compiles_and_simulates(tmp_path):
    path = tmp_path / "chain.nir"
    _nir_chain(path, 1000)  # 2002 nodes: every graph walk must be iterative
    out = str(tmp_path / "o")
    code, _, err = run_main("compile", path, "-o", out)  # in this process: deeper in the stack than a fresh one
    assert code == 0, err
    code, stdout, err = run_main("simulate", out, "--samples", "2")
    assert code == 0 and "spike counts == reference" in stdout, stdout + err


def test_a_1000_node_scale_chain_summary_stays_one_short_line(tmp_path):
    import nir

    from snncc.errors import name_list

    assert name_list(["a", "b"]) == "a, b"
    assert name_list([f"a{i}" for i in range(10)], limit=3) == "a0, a1, a2, ... (10 in all)"
    nodes, edges, prev = {"input": nir.Input(input_type=np.array([4]))}, [], "input"
    for i in range(1000):  # 1000 real-valued scales: all of them the encoding layer
        nodes[f"a{i}"] = nir.Scale(scale=np.full(4, 1.001))
        edges.append((prev, f"a{i}"))
        prev = f"a{i}"
    nodes["nf"] = nir.IF(r=np.ones(4), v_threshold=np.ones(4))
    nodes["output"] = nir.Output(output_type=np.array([4]))
    edges += [(prev, "nf"), ("nf", "output")]
    path = tmp_path / "scales.nir"
    nir.write(str(path), nir.NIRGraph(nodes=nodes, edges=edges))
    out = str(tmp_path / "o")
    code, stdout, err = run_main("compile", path, "-o", out)
    assert code == 0, err
    summary = stdout.splitlines()[0]
    assert "encoding layer: a0, a1, a2, a3, a4, a5, a6, a7, ... (1000 in all);" in summary and len(summary) < 400, summary
    code, stdout, err = run_main("simulate", out, "--samples", "2")
    assert code == 0 and "spike counts == reference" in stdout, stdout + err


def test_check_values_spike_input_sparse_check_names_first_bad_sample():
    """`check_values` on a spike-input graph looks at the nonzero entries only when all of them are
    positive integers; any bad value (NaN, Inf, negative, fractional; zeros are fine) is still
    refused in one line naming the first sample holding one, by the full sweep."""
    import torch

    from snncc.data.inputs import check_values
    from snncc.errors import LoadError
    from snncc.ir.graph import Graph, Node

    g = Graph([Node("x", "input", attrs={"kind": "spike", "shape": (2, 3)}), Node("out", "output", ["x"])], T=1).infer()
    x = np.zeros((4, 2, 3), dtype=np.float32)
    x[0, 1, 2], x[3, 0, 0] = 2.0, 5.0
    check_values(g, x, "x")  # non-negative integer counts: accepted
    check_values(g, torch.from_numpy(x), "x")
    check_values(g, np.zeros((4, 2, 3)), "x")
    for bad, msg in ((np.nan, "sample 2 holds NaN or Inf"), (np.inf, "sample 2 holds NaN or Inf"),
                     (-1.0, "sample 2 holds -1: the model takes spike input"),
                     (0.5, "sample 2 holds 0.5: the model takes spike input")):
        y = x.copy()
        y[2, 1, 1] = bad
        with pytest.raises(LoadError, match=msg):
            check_values(g, y, "x")
        y[3, 1, 1] = -3.0  # a later sample's bad value is not the one named
        with pytest.raises(LoadError, match=msg):
            check_values(g, torch.from_numpy(y), "x")
