"""The CLI with the chip targets: speck (events) and loihi (Lava), and the rules they refuse."""

import os

import pytest
import torch

from nets import ConvChain, randomize_bn
from snncc import artifact
from snncc.cli import main
from snncc.models import speck_cnn


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def conv_pt2(tmp_path):
    torch.manual_seed(0)
    m = randomize_bn(ConvChain())
    p = tmp_path / "conv.pt2"
    torch.export.save(torch.export.export(m, (torch.zeros(2, 2, 8, 8),)), p)
    return str(p)


def test_speck_refuses_real_valued_input_with_explain(conv_pt2, tmp_path, capsys):
    out = str(tmp_path / "x")
    code, o, e = run_cli(capsys, "compile", conv_pt2, "--target", "speck", "--explain", "-o", out)
    assert code == 2 and not os.path.exists(out)
    last = e.strip().splitlines()[-1]
    assert last.startswith("snncc: error: target speck: model does not fit:")
    assert "input" in last and "spike" in last  # names the real-valued input rule
    assert o.strip()  # the compatibility report was printed


def test_speck_compiles_event_cnn(tmp_path, capsys):
    torch.manual_seed(0)
    m = speck_cnn("tiny")
    sd = tmp_path / "speck.pt"
    torch.save(m.state_dict(), sd)
    out = str(tmp_path / "sp")
    code, o, e = run_cli(capsys, "compile", str(sd), "--model-def", "snncc.models.speck:speck_cnn",
                         "--factory-kwargs", '{"size": "tiny"}', "--input-shape", "2,16,16",
                         "--input-kind", "spike", "--target", "speck", "-o", out)
    assert code == 0, e
    files = artifact.read_manifest(out)["files"]
    assert "speck_config.json" in files and "ir.json" in files
    assert artifact.read_manifest(out)["versions"]["sinabs"] == "3.1.3"


@pytest.mark.slow
def test_loihi_compile_and_lava_simulation_match(conv_pt2, tmp_path, capsys):
    out = str(tmp_path / "lo")
    code, o, e = run_cli(capsys, "compile", conv_pt2, "--target", "loihi", "-o", out)
    assert code == 0, e
    assert artifact.read_manifest(out)["versions"]["lava-nc"] == "0.10.0"
    code, o, e = run_cli(capsys, "simulate", out, "--backend", "lava", "--samples", "2")
    assert code == 0, o + e
    assert "spike counts == reference" in o
