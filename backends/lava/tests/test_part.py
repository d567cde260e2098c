"""A chosen sub-graph in Lava (`part`): only its populations are built, their inputs from outside
are teacher-forced from the reference run of the whole graph, and their counts equal the
reference's bit for bit (hand-computed on a small graph; ConvChain multi-step, the residual model
in the middle, a population fed by a spike product); bad choices are one line (exit 2 by the CLI)."""

import pytest
import torch
from conftest import stateful_multistep
from nets import ConvChain, randomize_bn
from test_attention import X, product_graph

from snncc.cli import main
from snncc.errors import TargetError
from snncc.sim import reference
from snncc_lava import part


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
    with pytest.raises(TargetError, match="floating_pt only"):
        LoihiTarget().simulate_part(conv_pool_linear, x, ["g"], options={"precision": "fixed"})
