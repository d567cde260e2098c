"""One deploy driver (`snncc.compiler.deploy`): `snncc compile`, `snncc inspect --level deployed` of
a model file and `compiler.deploy_factory` lower a model alike for a target and its options. The
shipped digits transformer is the witness: the sim target (45nm profile) relays its first
residual stream where the loihi profile fans it in, so a driver that ignores the target gives a
different graph.

The artefact is compiled by the installed command and one `inspect` runs it too; the other
`inspect` runs call the same `snncc.cli.main` in this process (each spared start-up is about
2.8 CPU s of Python and torch import)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]
ART = ROOT / "examples" / "digits" / "artifacts"
PT2 = ART / "digits_former.pt2"
EXE = os.path.join(os.path.dirname(sys.executable), "snncc")


def snncc(*args: str) -> str:
    r = subprocess.run([EXE, *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture
def snncc_main(capsys):
    """`snncc ARGS` through `snncc.cli.main` in this process: its standard output."""
    from snncc.cli import main

    def run(*args: str) -> str:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        assert code == 0, err
        return out
    return run


def relays(listing: str) -> int:
    return sum(1 for line in listing.splitlines() if line.split()[1:2] == ["relay"])


@pytest.fixture(scope="module")
def loihi_artefact(tmp_path_factory):
    out = tmp_path_factory.mktemp("deploy") / "former-loihi"
    snncc("compile", str(PT2), "--target", "loihi", "-o", str(out))
    return out


def test_inspect_of_the_model_lowers_as_the_artefact_was_compiled(loihi_artefact, snncc_main):
    header, stored = snncc("inspect", str(loihi_artefact), "--level", "deployed").split("\n", 1)
    assert header.startswith("# artefact") and "target loihi" in header
    as_loihi = snncc_main("inspect", str(PT2), "--level", "deployed", "--target", "loihi")
    as_sim = snncc_main("inspect", str(PT2), "--level", "deployed")
    assert as_loihi == stored
    # loihi fans the first of the 4 streams in and relays 3 (10 relay populations); sim relays all 4 (12)
    assert relays(stored) == 10 and relays(as_sim) == 12
    assert as_sim != stored


def test_target_options_reach_the_lowering(loihi_artefact, snncc_main):
    every = snncc_main("inspect", str(PT2), "--level", "deployed", "--target", "loihi",
                       "--target-option", "residual=relay")
    none = snncc_main("inspect", str(PT2), "--level", "deployed", "--target", "loihi",
                      "--target-option", "residual=fanin")
    assert relays(every) == 12 and relays(none) == 0


def test_deploy_factory_gives_the_compiled_graph(loihi_artefact):
    sys.path.insert(0, str(ROOT))
    from examples.digits.train import load_model

    from snncc import artifact
    from snncc.compiler import deploy_factory
    from snncc.ir.printer import listing

    stored = artifact.read_graph(str(loihi_artefact), "ir")
    D = stored.neurons()[0].attrs["D"]
    g = deploy_factory(lambda d: load_model(ART, "digits_former"), (1, 8, 8), target="loihi")(D)
    assert listing(g) == listing(stored)
    for n in stored.nodes:
        assert set(g[n.name].params) == set(n.params), n.name
        for k, v in n.params.items():
            assert np.array_equal(np.asarray(g[n.name].params[k], dtype=np.float64), np.asarray(v, dtype=np.float64)), \
                (n.name, k)
    sim = deploy_factory(lambda d: load_model(ART, "digits_former"), (1, 8, 8))(D)
    assert relays(listing(sim)) == 12
