"""Hardening: every deploy pass preserves the reference executor on random valid graphs
(hypothesis), corrupt model and artefact files give one clean error line with exit code 2, and a
checkpoint with NaN weights is refused before any pass runs."""

import hashlib
import json
import os
import random
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nets import ConvChain, randomize_bn
from snncc.cli import main
from snncc.errors import IRError
from snncc.ir.graph import Graph, Node
from snncc.passes.manager import DEPLOY, PASSES
from snncc.sim.reference import run

NETS = os.path.join(os.path.dirname(__file__), "nets.py")


# ---- random valid graphs ---------------------------------------------------------------------------
@st.composite
def graphs(draw):
    """conv/linear chains with BN, membrane-shortcut residual adds, Norm D or 1, all rounding modes,
    optional stateful neurons over T = 2 timesteps."""
    seed = draw(st.integers(0, 2 ** 31 - 1))
    rng = np.random.default_rng(seed)
    T = draw(st.sampled_from([1, 1, 2]))
    C, H, W = draw(st.integers(1, 3)), draw(st.integers(3, 6)), draw(st.integers(3, 6))
    nodes = [Node("x", "input", [], {"kind": "current", "shape": (C, H, W)})]
    count = [0]

    def name(base):
        count[0] += 1
        return f"{base}{count[0]}"

    def conv_bn(src, cin, cout, k, groups=1):
        c = name("conv")
        params = {"weight": rng.normal(size=(cout, cin // groups, k, k)) * 0.7}
        if draw(st.booleans()):
            params["bias"] = rng.normal(size=cout) * 0.3
        nodes.append(Node(c, "conv", [src], {"stride": (1, 1), "padding": (k // 2, k // 2), "dilation": (1, 1),
                                             "groups": groups}, params))
        b = name("bn")
        nodes.append(Node(b, "batchnorm", [c], {"axis": 0, "eps": 1e-5},
                          {"mean": rng.normal(size=cout) * 0.3, "var": rng.uniform(0.5, 1.5, cout),
                           "weight": rng.uniform(0.5, 1.5, cout), "bias": rng.normal(size=cout) * 0.3 + 0.5}))
        return b

    def fire(src):
        f = name("fire")
        D = draw(st.integers(1, 8))
        norm = float(draw(st.sampled_from([D, 1])))
        nodes.append(Node(f, "fire", [src], {"D": D, "norm": norm,
                                             "rounding": draw(st.sampled_from(["half_even", "half_up", "floor"])),
                                             "stateful": T > 1 and draw(st.booleans())}))
        return f

    Cw = draw(st.integers(2, 4))
    u = conv_bn("x", C, Cw, draw(st.sampled_from([1, 3])))  # encoding layer on the real input
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["chain", "residual", "scaled_residual"]))
        if kind == "chain":
            u = conv_bn(fire(u), Cw, Cw, draw(st.sampled_from([1, 3])))
        else:  # membrane shortcut: u = u + f(u), f starting with a neuron
            branch = conv_bn(fire(u), Cw, Cw, 3, groups=draw(st.sampled_from([1, Cw])))
            if kind == "scaled_residual":  # per-channel layer scale
                s = name("gamma")
                nodes.append(Node(s, "scale", [branch], {}, {"factor": rng.uniform(0.5, 1.5, (Cw, 1, 1))}))
                branch = s
            a = name("add")
            nodes.append(Node(a, "add", [u, branch]))
            u = a
    s = fire(u)
    m = name("mean")
    nodes.append(Node(m, "mean", [s], {"dims": (1, 2)}))
    h = name("head")
    nodes.append(Node(h, "linear", [m], {}, {"weight": rng.normal(size=(3, Cw)), "bias": rng.normal(size=3)}))
    out = h
    if draw(st.booleans()):  # classifier-head neuron with Norm 1
        out = name("fire")
        nodes.append(Node(out, "fire", [h], {"D": draw(st.integers(1, 8)), "norm": 1.0, "rounding": "half_even"}))
    nodes.append(Node("out", "output", [out]))
    g = Graph(nodes, T=T).verify()
    x = torch.as_tensor(rng.normal(size=(4, C, H, W)) * 2)
    return g, x


@pytest.mark.slow
@settings(max_examples=30, deadline=None, derandomize=True)
@given(graphs())
def test_every_deploy_pass_preserves_the_reference(case):
    g, x = case
    ref = run(g, x)
    ties = sum(ref.ties.values())
    cur = g
    for name in DEPLOY:
        kw = {"allow_macs": True} if name == "check_spike_driven" else {}
        cur = PASSES[name](cur, **kw).graph
        r = run(cur, x)
        assert float((r.output - ref.output).abs().max()) <= 1e-6 or ties, name
        if ties:
            continue  # round-half-even ties may legitimately flip after round_to_floor
        for k, c in ref.counts.items():
            assert torch.equal(r.counts[k], c), f"{name}: counts of {k} differ"
    assert all(n.attrs["norm"] == 1.0 and n.attrs["rounding"] == "floor" for n in cur.neurons())


def test_reference_counts_ties_and_round_to_floor_differs_only_there():
    g = Graph([Node("x", "input", [], {"shape": (4,)}), Node("f", "fire", ["x"], {"D": 4}),
               Node("o", "output", ["f"])]).verify()
    x = torch.tensor([[0.5, 1.5, 2.5, 3.2]], dtype=torch.float64)
    r = run(g, x)
    assert r.counts["f"].tolist() == [[0, 2, 2, 3]] and r.ties == {"f": 2}  # 0.5 and 2.5 (k even)
    d = PASSES["round_to_floor"](g).graph
    assert run(d, x).counts["f"].tolist() == [[1, 2, 3, 3]]


# ---- corrupt files ---------------------------------------------------------------------------------
def _expect_clean(capsys, argv, must_fail=True):
    code = main(argv)  # any exception escaping main fails the test with its traceback
    err = capsys.readouterr().err
    if must_fail:
        assert code == 2, (argv, err)
    if code != 0:
        lines = [ln for ln in err.strip().splitlines() if not ln.startswith("[snncc]")]
        assert code == 2 and len(lines) == 1 and lines[0].startswith("snncc: error: "), (argv, err)
        assert "Traceback" not in err
    return code


def _mutations(data: bytes, seed: int):
    rnd = random.Random(seed)
    for frac in (0.0, 0.1, 0.5, 0.9):
        yield f"trunc{frac}", data[: int(len(data) * frac)], True
    for i in range(3):
        b = bytearray(data)
        for _ in range(8):
            pos = rnd.randrange(len(b))
            b[pos] ^= 1 << rnd.randrange(8)
        yield f"flip{i}", bytes(b), False


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    torch.manual_seed(0)
    m = randomize_bn(ConvChain())
    torch.save(m.state_dict(), tmp / "c.pt")
    torch.export.save(torch.export.export(m, (torch.zeros(2, 2, 8, 8),)), tmp / "c.pt2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (torch.zeros(2, 2, 8, 8),), str(tmp / "c.onnx"), dynamo=False)
    assert main(["compile", str(tmp / "c.pt2"), "-o", str(tmp / "art")]) == 0
    return tmp


@pytest.mark.parametrize("suffix", [".pt2", ".pt", ".onnx"])
def test_corrupt_model_files_fail_cleanly(model_files, tmp_path, capsys, suffix):
    data = open(model_files / f"c{suffix}", "rb").read()
    extra = ["--model-def", f"{NETS}:ConvChain", "--input-shape", "2,8,8"] if suffix == ".pt" else []
    for tag, blob, must_fail in _mutations(data, seed=len(suffix)):
        p = tmp_path / f"{tag}{suffix}"
        p.write_bytes(blob)
        _expect_clean(capsys, ["compile", str(p), *extra, "-o", str(tmp_path / f"out_{tag}")], must_fail)


@pytest.mark.parametrize("name", ["ir.json", "ir.npz", "manifest.json"])
@pytest.mark.parametrize("rehash", [False, True])
def test_corrupt_artefact_files_fail_cleanly(model_files, tmp_path, capsys, name, rehash):
    src = model_files / "art"
    for tag, blob, must_fail in _mutations(open(src / name, "rb").read(), seed=len(name) + rehash):
        art = tmp_path / f"{tag}"
        art.mkdir()
        for f in os.listdir(src):
            (art / f).write_bytes(open(src / f, "rb").read())
        (art / name).write_bytes(blob)
        if rehash and name != "manifest.json":  # a consistent manifest: the parser itself must cope
            man = json.load(open(art / "manifest.json"))
            man["files"][name] = {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
            (art / "manifest.json").write_text(json.dumps(man))
        fail = must_fail or not rehash
        _expect_clean(capsys, ["inspect", str(art)], fail)
        _expect_clean(capsys, ["simulate", str(art), "--samples", "2", "--schedule", "exact"], fail)
        _expect_clean(capsys, ["export-nir", str(art), str(tmp_path / f"{tag}.nir")], fail)


# ---- validation before passes ----------------------------------------------------------------------
def test_nan_checkpoint_is_one_clear_line(tmp_path, capsys):
    torch.manual_seed(0)
    m = randomize_bn(ConvChain())
    sd = m.state_dict()
    sd["c2.weight"][0, 0, 0, 0] = float("nan")
    p = tmp_path / "nan.pt"
    torch.save(sd, p)
    code = main(["compile", str(p), "--model-def", f"{NETS}:ConvChain", "--input-shape", "2,8,8",
                 "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("[snncc]")]
    assert code == 2 and len(lines) == 1
    assert lines[0] == ("snncc: error: node c2: parameter weight has non-finite values "
                        "(check the checkpoint for NaN/Inf)")
    assert not os.path.exists(tmp_path / "o")


@pytest.mark.parametrize("attrs,msg", [
    ({"D": 0}, "D must be an integer in 1..32768, got 0"),
    ({"D": 100000}, "D must be an integer in 1..32768, got 100000"),
    ({"D": 2.5}, "D must be an integer in 1..32768, got 2.5"),
    ({"D": 4, "theta": 0.0}, "threshold theta must be > 0, got 0.0"),
    ({"D": 4, "theta": float("nan")}, "threshold theta must be > 0, got nan"),
    ({"D": 4, "norm": -1.0}, "Norm must be > 0, got -1.0"),
    ({"D": 4, "rounding": "up"}, "rounding must be one of"),
    ({"D": 4, "beta": float("inf")}, "beta must be finite"),
])
def test_verify_checks_fire_attribute_ranges(attrs, msg):
    g = Graph([Node("x", "input", [], {"shape": (3,)}), Node("f", "fire", ["x"], attrs), Node("o", "output", ["f"])])
    with pytest.raises(IRError, match=msg.replace("(", r"\(").replace(")", r"\)")) as e:
        g.verify()
    assert e.value.where == "node f"


@pytest.mark.parametrize("attrs,msg", [
    ({"stride": (0, 1)}, "stride must be 2 integers >= 1, got (0, 1)"),
    ({"padding": (-1, 0)}, "padding must be 2 integers >= 0, got (-1, 0)"),
    ({"dilation": (1, 0)}, "dilation must be 2 integers >= 1, got (1, 0)"),
    ({"groups": 0}, "groups must be a positive integer, got 0"),
])
def test_verify_checks_conv_attribute_ranges(attrs, msg):
    a = {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1}
    a.update(attrs)
    g = Graph([Node("x", "input", [], {"shape": (2, 4, 4)}),
               Node("c", "conv", ["x"], a, {"weight": np.ones((2, 2, 3, 3))}), Node("o", "output", ["c"])])
    with pytest.raises(IRError) as e:
        g.verify()
    assert e.value.one_line() == f"node c: conv: {msg}"


def test_pool_with_zero_stride_is_an_ir_error():
    g = Graph([Node("x", "input", [], {"shape": (2, 4, 4)}),
               Node("p", "pool", ["x"], {"kernel": (2, 2), "stride": (0, 2)}), Node("o", "output", ["p"])])
    with pytest.raises(IRError, match=r"node p: pool: stride must be 2 integers >= 1, got \(0, 2\)"):
        g.verify()
