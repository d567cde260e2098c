"""Estimate reports with plots (snncc.estimate.report), `snncc estimate --report`, and the static
part of the compile report: files, plot titles and data, spike-map panels, hand-counted synapses."""

from __future__ import annotations

import base64
import os
import re

import numpy as np
import pytest
import torch

from nets import ConvChain, randomize_bn
from snncc.cli import main
from snncc.compiler import deploy_factory
from snncc.estimate import Estimator
from snncc.estimate.report import (layer_energy, spike_maps, static_markdown, static_stats_per_population,
                                   sweep_D, write_report)
from snncc.ir.graph import Graph, Node
from snncc.sim.sync import simulate

PNG = b"\x89PNG\r\n\x1a\n"


def fire(name, src, D=4):
    return Node(name, "fire", [src], {"D": D, "theta": 1.0, "beta": 0.0, "norm": 1.0, "rounding": "floor"})


def hand_graph(D=4, T=1):
    """input (1,4,4) -> s -> conv 3x3 pad 1, 2 channels, weights 0.5 -> t -> output."""
    nodes = [Node("x", "input", [], {"shape": (1, 4, 4)}), fire("s", "x", D),
             Node("c", "conv", ["s"], {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1), "groups": 1},
                  {"weight": np.full((2, 1, 3, 3), 0.5)}),
             fire("t", "c", D), Node("out", "output", ["t"])]
    return Graph(nodes, T=T).infer().verify()


def hand_input(B=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((B, 1, 4, 4), generator=g, dtype=torch.float64) * 6


@pytest.fixture(scope="module")
def convchain():
    def model(D):  # the same weights for every D: only the neurons' window length changes
        torch.manual_seed(0)
        return randomize_bn(ConvChain(D=D))

    build = deploy_factory(model, (2, 8, 8), frontend="fx")
    graphs = {D: build(D) for D in (1, 2, 4)}
    assert [n.attrs["D"] for n in graphs[2].neurons()] == [2, 2]
    x = torch.randn((6, 2, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    return graphs, x


def _imgs(html):
    return re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)"', html)


def test_write_report_files_plots_and_data(convchain, tmp_path):
    graphs, x = convchain
    g = graphs[4]
    est = Estimator(g, "45nm")
    est.observe(x)
    rep = est.report()
    sr = simulate(g, x, record=("n1",))
    sw = sweep_D(graphs, x, "45nm")
    files = write_report(rep, str(tmp_path / "r") + os.sep, sync_result=sr, d_sweep=sw)
    assert files.markdown == str(tmp_path / "r" / "report.md") and os.path.isfile(files.markdown)
    assert files.html == str(tmp_path / "r" / "report.html") and os.path.isfile(files.html)
    html = open(files.html).read()
    titles = [p.title for p in files.plots]
    assert [p.key for p in files.plots] == ["energy", "nsfr", "spike_maps", "d_sweep"]
    assert titles == ["Energy per layer (45nm profile, dynamic energy per sample)",
                      "Network spike firing rate per sub-step (NSFR, exact schedule, D=4, T=1)",
                      "Spike maps of n1: firing averaged over 6 channels and 6 samples, one map per sub-step",
                      "Comparison of window lengths D: energy and agreement"]
    imgs = _imgs(html)
    assert [t for _, t in imgs] == titles  # one embedded <img> per plot, titled
    assert html.count("<img") == len(titles)
    assert "http://" not in html and "https://" not in html and "<script" not in html  # self-contained
    for (b64, _), p in zip(imgs, files.plots):
        data = base64.b64decode(b64)
        assert data.startswith(PNG) and data == p.png == open(files.pngs[p.key], "rb").read()
    md = open(files.markdown).read()
    for p in files.plots:
        assert f"![{p.title}](report_{p.key}.png)" in md
    assert "| n2 |" in md and "## comparison of D" in md

    # the NSFR plot shows exactly simulate(...).nsfr
    nsfr = simulate(g, x).nsfr
    assert files.plot("nsfr").data["nsfr"] == nsfr.tolist()
    assert len(nsfr) == 4 * (1 + 2)  # D * (T + depth)
    # spike maps: one panel per sub-step of n1's window, channel means of the recorded trains
    smd = files.plot("spike_maps").data
    start = sr.window_start["n1"]
    assert smd["panels"] == 4 and smd["substeps"] == [start, start + 1, start + 2, start + 3]
    tr = sr.trains["n1"].numpy()
    np.testing.assert_allclose(np.array(smd["maps"]), tr[start:start + 4].mean(axis=(1, 2)), rtol=0, atol=1e-15)
    # per-layer energy bars sum to the report's dynamic energy
    per = layer_energy(rep)
    assert sum(sum(e.values()) for e in per.values()) == pytest.approx(rep.energy["dynamic"], rel=1e-12)
    assert files.plot("energy").data["layers"] == ["n1", "n2", "output"]
    # D sweep: energy per D is that D's own estimate; agreement with the largest D
    assert files.plot("d_sweep").data["D"] == [1, 2, 4]
    assert sw.reference_D == 4 and sw.row(4).agreement == 1.0
    assert sw.row(4).energy == pytest.approx(rep.energy["total"], rel=1e-12)


def test_spike_maps_one_panel_per_substep_T2(tmp_path):
    g = hand_graph(D=3, T=2)
    x = hand_input()
    sr = simulate(g, x, record=("t",))
    sm = spike_maps(sr, "t")
    assert len(sm.substeps) == 2 * 3 and sm.window == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert sm.maps.shape == (6, 4, 4) and sm.channels == 2
    est = Estimator(g, "loihi")
    est.observe(x)
    rep = est.report()
    files = write_report(rep, str(tmp_path / "pre"), sync_result=sr, spike_maps="t")
    assert os.path.basename(files.markdown) == "pre.md" and os.path.isfile(str(tmp_path / "pre.html"))
    assert files.plot("spike_maps").data["panels"] == 6
    per = layer_energy(rep)  # loihi terms, routing charged to the sender
    assert set(per["t"]) == {"sop", "neuron_active", "neuron_inactive", "routing"}
    assert sum(sum(e.values()) for e in per.values()) == pytest.approx(rep.energy["dynamic"], rel=1e-12)


def test_static_markdown_hand_counted_synapses():
    g = hand_graph()
    rows = {r["population"]: r for r in static_stats_per_population(g)}
    # conv 3x3 pad 1 on 4x4, 2 output channels: corners reach 4, edges 6, interior 9 outputs per channel
    assert rows["t"]["synapses"] == 2 * (4 * 4 + 8 * 6 + 4 * 9) == 200
    assert rows["t"]["weights"] == rows["t"]["parameters"] == 18
    assert rows["t"]["weight_bytes_fp32"] == 72 and rows["t"]["weight_bytes_int8"] == 18
    assert rows["s"]["host_macs"] == 0 and rows["out"]["synapses"] == 0  # output reads t's spikes directly
    md = static_markdown(g)
    assert "| t | 32 | 4 | 18 | 18 | 200 | 0 | 72 B | 18 B |" in md

    md = static_markdown(g, ("fake", f"core 0: {len(g.neurons())} layers"))
    assert f"## Memory per core (fake)\n\n```\ncore 0: {len(g.neurons())} layers\n```" in md
    assert "Memory per core" not in static_markdown(g, ("fake", ""))


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_compile_report_and_estimate_report(tmp_path, capsys):
    torch.manual_seed(0)
    m = randomize_bn(ConvChain())
    pt2 = tmp_path / "conv.pt2"
    torch.export.save(torch.export.export(m, (torch.zeros(2, 2, 8, 8),)), pt2)
    art = str(tmp_path / "art")
    code, _, e = run_cli(capsys, "compile", str(pt2), "-o", art)
    assert code == 0, e
    rmd = open(os.path.join(art, "report.md")).read()
    # c2: 3x3, stride 2, pad 1, 6 -> 8 channels, 8x8 -> 4x4: 11 valid taps per axis summed over outputs
    assert "| n2 | 128 | 4 | 440 | 432 | 5808 | 0 | 1.69 KiB | 432 B |" in rmd
    assert "| output | 5 | - | 45 | 40 | 640 | 0 | 160 B | 40 B |" in rmd  # mean (16 -> 1) then linear 8 -> 5

    rd = str(tmp_path / "rep")
    code, o1, e = run_cli(capsys, "estimate", art, "--profile", "loihi", "--samples", "5", "--batch-size", "2",
                          "--report", rd, "--layer", "n2")
    assert code == 0, e
    assert sorted(f for f in os.listdir(rd) if not f.endswith(".png")) == ["report.html", "report.md"]
    html = open(os.path.join(rd, "report.html")).read()
    assert [t for _, t in _imgs(html)] == [
        "Energy per layer (loihi profile, dynamic energy per sample)",
        "Network spike firing rate per sub-step (NSFR, exact schedule, D=4, T=1)",
        "Spike maps of n2: firing averaged over 8 channels and 2 samples, one map per sub-step"]
    assert "estimate: 5 samples" in o1 and "wrote" in o1
    # batches stream: the same statistics as one batch of all samples
    code, o2, _ = run_cli(capsys, "estimate", art, "--profile", "loihi", "--samples", "5")
    assert o1.split("wrote")[0] == o2
    code, _, e = run_cli(capsys, "estimate", art, "--report", rd, "--layer", "nope")
    assert code == 2 and "no neuron population 'nope'" in e


def test_estimate_report_spike_maps_average_the_first_64_samples(convchain, tmp_path, monkeypatch):
    """A data file of any length: the report's spike maps simulate its first SPIKE_MAP_SAMPLES samples
    (bounded memory), say so in the title, and equal the maps of those samples simulated alone."""
    import snncc.estimate.report as report_mod

    graphs, x = convchain
    g = graphs[4]
    monkeypatch.setattr(report_mod, "SPIKE_MAP_SAMPLES", 4)  # 6 samples, the first 4 mapped
    est = Estimator(g, "45nm")
    est.observe(x)
    files = report_mod.write_estimate_report(g, est.report(), x, str(tmp_path / "r"), "n1")
    smd = files.plot("spike_maps").data
    assert smd["samples"] == 4 and "and 4 samples" in files.plot("spike_maps").title
    want = spike_maps(simulate(g, x[:4], record=("n1",)), "n1")
    np.testing.assert_array_equal(np.array(smd["maps"]), want.maps)
    assert not np.array_equal(want.maps, spike_maps(simulate(g, x, record=("n1",)), "n1").maps)  # the cap matters
