"""A chosen sub-graph in Lava (`part`): only its populations are built, their inputs from outside
are teacher-forced from the reference run of the whole graph, and their counts equal the
reference's bit for bit (hand-computed on a small graph; ConvChain multi-step, the residual model
in the middle, a population fed by a spike product; the shipped digits models with their relays
inside the part); in fixed_pt equal to snncc's fixed_pt model of the part (the whole model's when
every population is chosen); bad choices are one line (exit 2 by the CLI)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import stateful_multistep
from nets import ConvChain, randomize_bn
from test_attention import X, product_graph

from snncc.cli import main
from snncc.errors import TargetError
from snncc.sim import reference
from snncc_lava import part


DIGITS = Path(__file__).resolve().parents[3] / "examples" / "digits" / "artifacts"  # what demo.py compiles


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_part_equal(r: part.PartResult, names):
    assert r.populations == names
    for p in names:
        assert torch.equal(r.counts[p], r.reference[p]), p
    assert r.ok


def test_hand_computed_part(conv_pool_linear):
    # one input spike at (channel 0, row 2, col 2); conv 3x3 of ones: f fires once in rows/cols 1-3
    # of every channel; sum pool 2x2 -> [[1, 2, 0], [2, 4, 0], [0, 0, 0]]; linear of ones over the
    # last axis -> rows 3, 6, 0, clamped to D = 4: g counts 3, 4, 0 by row in every channel
    g = conv_pool_linear
    x = torch.zeros((1, 2, 6, 6), dtype=torch.float64)
    x[0, 0, 2, 2] = 1
    want = torch.zeros((1, 3, 3, 3), dtype=torch.float64)
    want[:, :, 0], want[:, :, 1] = 3, 4
    for names, boundary in ((["g"], {"g": ["f"]}), (["f", "g"], {"f": ["x"], "g": []}), (["f"], {"f": ["x"]})):
        r = part.simulate(g, x, names)
        assert_part_equal(r, names)
        assert r.boundary == boundary
        if "g" in names:
            assert torch.equal(r.counts["g"], want)
    assert int(r.counts["f"].sum()) == 27
    assert r.processes == 3  # the boundary RingBuffer, f and the Recorder: nothing of g is built


def test_conv_chain_second_population_stateful_multistep(conv_chain):
    g, x = stateful_multistep(conv_chain)
    r = part.simulate(g, x, ["n2"])
    assert_part_equal(r, ["n2"])
    assert r.boundary == {"n2": ["n1"]}
    assert torch.equal(r.reference["n2"], reference.run(g, x, torch.float64).counts["n2"])
    assert int(r.counts["n2"].sum()) > 30  # not a silent population


@pytest.mark.parametrize("emit", ["burst", "graded"])
def test_residual_middle_populations(residual, emit):
    x = torch.rand((2, 3, 8, 8), generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2
    names = [n.name for n in residual.neurons()]
    assert names == ["f1_0", "f1_3", "f1_6", "f2_0", "out_fire"]
    for chosen in (["f1_3", "f1_6"], ["f1_6", "f2_0"]):
        r = part.simulate(residual, x, chosen, emit=emit)
        assert_part_equal(r, chosen)
        assert all(int(r.counts[p].sum()) > 0 for p in chosen)
    assert r.boundary["f1_6"] == ["f1_3"]  # outside the part [f1_6, f2_0]: forced from the reference


def test_fixed_part_of_every_population_is_the_whole_fixed_model(residual):
    """precision fixed: Lava fixed_pt of the part == snncc's fixed_pt model of the part on the same
    boundary currents; with every population chosen the part's quantisation is the whole
    network's (a population's scale depends only on its incoming weights), so its counts equal
    `simulate_fixed` of the whole model: a check that does not lean on the part machinery."""
    from snncc_lava import fixed
    from snncc_lava.network import build

    x = torch.rand((2, 3, 8, 8), generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2
    names = [n.name for n in residual.neurons()]
    r = part.simulate(residual, x, names, precision="fixed")
    assert_part_equal(r, names)
    whole = fixed.simulate_fixed(fixed.quantize(build(residual)), x)
    assert all(torch.equal(r.counts[p], whole.counts[p]) for p in names)
    assert all(r.integer_model[p].sum() > 0 for p in names)
    mid = part.simulate(residual, x, ["f1_6", "f2_0"], precision="fixed")  # forced from the float reference
    assert_part_equal(mid, ["f1_6", "f2_0"])
    assert mid.against == "snncc's fixed_pt model of the part" and "(fixed_pt)" in mid.table()
    assert "| f1_6 | " in mid.table() and "counts differ |" in mid.table()


def test_population_after_a_spike_product():
    g = product_graph("right")
    r = part.simulate(g, X, ["c"])
    assert_part_equal(r, ["c"])
    assert r.boundary == {"c": ["p"]} and int(r.counts["c"].sum()) > 0


def test_bad_choices_are_one_line(conv_pool_linear, monkeypatch):
    g = conv_pool_linear
    x = torch.zeros((1, 2, 6, 6))
    with pytest.raises(TargetError, match="nope is not a neuron population of the deployed graph"):
        part.simulate(g, x, ["f", "nope"])
    with pytest.raises(TargetError, match="no neuron population chosen"):
        part.simulate(g, x, [])
    with pytest.raises(TargetError, match="p is a spike product; it is a boundary input"):
        part.simulate(product_graph("right"), X, ["p", "c"])
    import snncc.resources as res

    monkeypatch.setattr(res, "available_bytes", lambda: 1000)
    # the part [g] stores only its own tree: pool 108 + linear 81 synapses (24 B each while building)
    with pytest.raises(TargetError, match=r"sub-graph \(1 population\(s\)\) does not fit: the Lava lowering "
                                          r"stores 189 synapses"):
        part.simulate(g, x, ["g"])


@pytest.fixture
def loihi_artefact(tmp_path, capsys):
    torch.manual_seed(0)
    m = randomize_bn(ConvChain())
    p = tmp_path / "conv.pt2"
    torch.export.save(torch.export.export(m, (torch.zeros(2, 2, 8, 8),)), p)
    out = str(tmp_path / "lo")
    code, o, e = run_cli(capsys, "compile", str(p), "--target", "loihi", "-o", out)
    assert code == 0, e
    return out


def test_cli_populations_and_chip(loihi_artefact, capsys):
    out = loihi_artefact
    code, o, e = run_cli(capsys, "simulate", out, "--backend", "lava", "--populations", "n2", "--samples", "2")
    assert code == 0, o + e
    assert "| n2 | 128 | n1 |" in o and "== reference" in o and "\n| n1 |" not in o
    code, o, e = run_cli(capsys, "simulate", out, "--backend", "lava", "--chip", "0", "--samples", "2")
    assert code == 0, o + e
    assert "| n1 | 384 | input |" in o and "| n2 | 128 | - |" in o and "!=" not in o
    for argv, msg in ((["--populations", "n3"], "n3 is not a neuron population"),
                      (["--chip", "3"], "chip 3 holds no population in lava/mapping.json")):
        code, o, e = run_cli(capsys, "simulate", out, "--backend", "lava", *argv, "--samples", "2")
        assert code == 2 and msg in e and len(e.strip().splitlines()) == 1, e
    code, o, e = run_cli(capsys, "simulate", out, "--populations", "n2", "--samples", "2")
    assert code == 2 and "add --backend lava" in e, e


def test_too_large_whole_model_runs_a_part_instead(conv_pool_linear, monkeypatch):
    import snncc.resources as res
    from snncc_lava.target import LoihiTarget

    # the whole graph needs 2,133 x 24 B = 51 kB while building; the part [g] 189 x 24 B = 4.5 kB
    monkeypatch.setattr(res, "available_bytes", lambda: 10_000)
    x = torch.ones((1, 2, 6, 6))
    with pytest.raises(TargetError) as e:
        LoihiTarget().simulate(conv_pool_linear, x)
    assert "--populations" in e.value.hint and "--chip" in e.value.hint
    r = LoihiTarget().simulate_part(conv_pool_linear, x, ["g"])
    assert_part_equal(r, ["g"])
    assert torch.equal(r.counts["g"], torch.full((1, 3, 3, 3), 4.0, dtype=torch.float64))
    rf = LoihiTarget().simulate_part(conv_pool_linear, x, ["g"], options={"precision": "fixed"})
    assert_part_equal(rf, ["g"])  # Lava fixed_pt == snncc's fixed_pt model of the part
    assert torch.equal(rf.counts["g"].double(), r.counts["g"])  # saturated at D: fixed point agrees here


@pytest.fixture(scope="module")
def digits_loihi(tmp_path_factory):
    """The shipped digits models compiled for loihi by the CLI (as examples/demo.py does): the
    residual streams become relays there (3 in digits_former, 4 in digits_cnn)."""
    out = tmp_path_factory.mktemp("digits")
    for name in ("digits_cnn", "digits_former"):
        assert main(["compile", str(DIGITS / f"{name}.pt2"), "--target", "loihi", "-o", str(out / name)]) == 0
    return out


def test_digits_former_part_with_relays_after_a_spike_product(digits_loihi):
    import snncc

    dep = snncc.load(str(digits_loihi / "digits_former"))
    g = dep.deployed
    x = torch.as_tensor(np.load(DIGITS / "digits_test.npz")["x_test"][:4], dtype=torch.float64)
    # the attention output (fed by the spike product Q K^T V), the residual relay after it, the
    # MLP and the relay after that, and the next stage's first population
    chosen = ["stage3_0_attn_attn_spike", "stage3_0_add_7@relay", "stage3_0_mlp_spike1", "stage3_0_mlp_spike2",
              "stage3_0_add_8@relay", "stage4_0_sepconv_spike1"]
    assert [g[n].op for n in chosen] == ["fire", "relay", "fire", "fire", "relay", "fire"]
    r = dep.simulate(x, backend="lava", populations=chosen)
    assert r.populations == chosen and r.ok
    assert r.boundary["stage3_0_attn_attn_spike"] == ["stage3_0_attn_matmul_1"]  # the spike product
    assert r.boundary["stage3_0_add_7@relay"] == ["stage3_0_add_6@relay"]
    ref = reference.run(g, x, torch.float64, keep_values=True)
    for p in chosen:
        if g[p].op == "fire":  # counts: bit for bit, and against an independent reference run
            assert torch.equal(r.counts[p], ref.counts[p]) and torch.equal(r.reference[p], ref.counts[p]), p
            assert int(r.counts[p].sum()) > 500, p
        else:  # relays: the values sent (T = 1: the window's value), float64 rounding at most
            assert g.T == 1 and torch.equal(r.reference[p], ref.values[p]), p
            assert torch.allclose(r.counts[p], ref.values[p], rtol=0, atol=part.RELAY_TOLERANCE), p
    assert set(r.relays) == {"stage3_0_add_7@relay", "stage3_0_add_8@relay"}


def test_digits_cnn_chip_share_runs_its_relays(digits_loihi, capsys):
    code, o, e = run_cli(capsys, "simulate", str(digits_loihi / "digits_cnn"), "--backend", "lava", "--chip", "0",
                         "--data", str(DIGITS / "digits_test.npz"), "--samples", "3")
    assert code == 0, o + e
    rows = [l for l in o.splitlines() if l.startswith("| ") and not l.startswith("| population")]
    relays = [l for l in rows if "@relay" in l.split("|")[1]]
    assert len(rows) == 17 and len(relays) == 4  # one chip: every population and relay of the model
    assert rows[0].startswith("| stem_spike | 1024 | input |")
    assert all(l.endswith("| == reference |") for l in rows if l not in relays)
    assert all("== reference" in l and "(relay: sum of values sent)" in l for l in relays)
