"""set_window: a traced graph re-windowed to D and deployed is the graph the same model re-traced
with D gives (bit for bit); `snncc estimate --sweep-D` runs it from an artefact."""

import numpy as np
import pytest
import torch

from nets import ConvChain, randomize_bn
from snncc.cli import main
from snncc.errors import SnnccError
from snncc.compiler import deploy_factory
from snncc.estimate.report import sweep_D
from snncc.frontend.loader import LoadedModel, trace
from snncc.ir import Graph, Node
from snncc.passes.manager import run_pipeline
from snncc.passes.set_window import set_window


def model(D):
    torch.manual_seed(0)
    return randomize_bn(ConvChain(D=D)).eval()


def same_graph(a: Graph, b: Graph):
    assert [n.name for n in a.nodes] == [n.name for n in b.nodes]
    for m, n in zip(a.nodes, b.nodes):
        assert (m.op, m.inputs, m.attrs, m.shape, m.kind) == (n.op, n.inputs, n.attrs, n.shape, n.kind), m.name
        assert m.params.keys() == n.params.keys() and all(np.array_equal(m.params[k], n.params[k]) for k in m.params)


@pytest.mark.parametrize("D", [1, 2, 8])
def test_rewindowed_deploy_equals_retraced_model(D):
    traced = trace(LoadedModel(model(4), None, (2, 8, 8)), frontend="fx")
    res = set_window(traced, D)
    assert len(res.changes) == 2 and all(f"D 4 -> {D}, norm 4 -> {D}" in c for c in res.changes)
    ours = run_pipeline(res.graph, "deploy").graph
    same_graph(ours, deploy_factory(model, (2, 8, 8), frontend="fx")(D))
    assert [n.attrs["D"] for n in traced.neurons()] == [4, 4]  # the input graph is untouched


def test_keeps_a_norm_that_is_not_D_and_rejects_bad_D():
    g = Graph([Node("x", "input", [], {"shape": (3,)}), Node("f", "fire", ["x"], {"D": 4, "norm": 2.0}),
               Node("o", "output", ["f"])]).infer()
    out = set_window(g, 8).graph
    assert out["f"].attrs["D"] == 8 and out["f"].attrs["norm"] == 2.0
    for bad in (0, 2.5, -1):
        with pytest.raises(SnnccError, match="window length D must be a positive integer"):
            set_window(g, bad)


def test_cli_estimate_sweep_D_matches_python_sweep(tmp_path, capsys):
    pt2 = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(model(4), (torch.zeros(2, 2, 8, 8),)), pt2)
    out = str(tmp_path / "a")
    assert main(["compile", str(pt2), "-o", out]) == 0
    x = torch.randn((6, 2, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    y = np.arange(6) % 3
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y)
    capsys.readouterr()
    code = main(["estimate", out, "--data", str(tmp_path / "d.npz"), "--sweep-D", "2,1", "--report", str(tmp_path / "r")])
    o, e = capsys.readouterr()
    assert code == 0, e
    build = deploy_factory(model, (2, 8, 8))
    want = sweep_D(build, x, "45nm", Ds=[1, 2, 4], labels=y, reference_D=4)
    assert want.to_markdown() in o  # the same numbers, row for row (D 1, 2, 4; accuracy from y)
    assert [r.D for r in want.rows] == [1, 2, 4] and want.row(4).agreement == 1.0
    md = open(tmp_path / "r" / "report.md").read()
    assert "## comparison of D" in md and want.to_markdown() in md and "report_d_sweep.png" in md
    for bad in ("0,2", "a,b"):
        assert main(["estimate", out, "--sweep-D", bad]) == 2
        assert "--sweep-D" in capsys.readouterr().err
