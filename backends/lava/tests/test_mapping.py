"""Core/chip mapping: hand-computed splits, utilisation, traffic and hops on a small
graph under small per-core limits; the one-line refusal when a system is too small; METIS against
the sequential baseline on a graph whose optimum is known; the shipped digits models map onto one
chip and their Lava network description is unchanged."""

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from snncc_lava import describe, mapping, network

ROOT = Path(__file__).resolve().parents[3]


def _small(**kw):
    return dataclasses.replace(mapping.load_resources(), **{"neurons": 40, "memory_bytes": 400, **kw})


def test_split_utilisation_traffic_and_hops_by_hand(conv_pool_linear):
    m = mapping.build(conv_pool_linear, "chip", _small())
    assert m.problems == []
    # f: 108 neurons, 40 per core -> 3 pieces; rows are split first: 3 x 2 rows x 6 = 36 neurons,
    # 36 x 8 bytes of state (its input is the host's spike stream: no on-chip synapses)
    f = [p for p in m.pieces if p.unit == "f"]
    assert [p.box for p in f] == [((0, 3), (0, 2), (0, 6)), ((0, 3), (2, 4), (0, 6)), ((0, 3), (4, 6), (0, 6))]
    assert [(p.neurons, p.memory) for p in f] == [(36, 288)] * 3
    # g: 27 neurons; the linear path is dense: one neuron reads 3 pooled columns x 2x2 = 12 f neurons,
    # 27 x (8 + 12) = 540 > 400 bytes -> 2 row blocks: 18 x 20 = 360 and 9 x 20 = 180 bytes
    g = [p for p in m.pieces if p.unit == "g"]
    assert [p.box for p in g] == [((0, 3), (0, 2), (0, 3)), ((0, 3), (2, 3), (0, 3))]
    assert [(p.neurons, p.memory) for p in g] == [(18, 360), (9, 180)]
    # input axons: g rows 0-1 read f rows 0-3 (3 x 4 x 6 = 72), g row 2 reads f rows 4-5 (36)
    assert [p.input_axons for p in g] == [72, 36]
    assert [p.output_routes for p in f] == [36, 36, 36]
    # traffic: every f neuron reaches exactly one g core; 1 spike per neuron and window (profile)
    assert m.edges == {(0, 3): 36.0, (1, 3): 36.0, (2, 4): 36.0}
    assert [(p.chip, p.core) for p in m.pieces] == [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4)]
    (t,) = m.traffic()
    # cores 0..4 along the first mesh row: hops 3, 2, 2 for 36 neurons each
    assert (t["source"], t["target"], t["messages_per_spike"]) == ("f", "g", 1.0)
    assert t["hops_per_spike"] == pytest.approx((36 * 3 + 36 * 2 + 36 * 2) / 108)
    assert t["crossings_per_spike"] == 0.0
    (chip,) = m.chip_table()
    assert (chip["cores"], chip["neurons"], chip["memory_bytes"]) == (5, 135, 3 * 288 + 360 + 180)
    assert chip["core_utilisation"] == 5 / 128


def test_too_small_a_system_is_one_line_naming_the_resource(conv_pool_linear):
    res = _small(cores=2)
    m = mapping.build(conv_pool_linear, "chip", res)
    assert m.problems == ["cores: the model needs 5 Loihi 2 cores (3 chips of 2); system chip has 1 chip(s), "
                          "2 cores (--target-option system=kapoho|hala|N)"]
    m = mapping.build(conv_pool_linear, 3, res)
    assert m.problems == [] and m.chips_used == 3
    assert {p.chip for p in m.pieces} == {0, 1, 2}
    assert m.interchip_messages() == sum(v for (a, b), v in m.edges.items() if m.pieces[a].chip != m.pieces[b].chip)
    doc = m.to_json()
    assert doc["totals"]["chips"] == 3 and len(doc["pieces"]) == 5
    assert sum(l["messages_per_window"] for l in doc["links"]) >= doc["totals"]["interchip_messages_per_window"]


def test_a_piece_that_cannot_fit_any_core_is_named(conv_pool_linear):
    # blocks cut channels and rows, never the last axis: f's smallest block is one 6-neuron row
    # (48 bytes of state, fits 50), g's is one 3-neuron row needing 3 x (8 + 12 dense weights) = 60
    m = mapping.build(conv_pool_linear, "chip", _small(memory_bytes=50))
    assert m.problems == ["unit g: even a block of 3 neuron(s) needs 60 bytes of core memory and 12 input axons; "
                          "a Loihi 2 core has 40 neurons, 50 bytes and 32,768 axons"]
    # a unit whose finest block (one row of one channel: 6 neurons) has more neurons than a core
    m = mapping.build(conv_pool_linear, "chip", _small(neurons=5))
    assert m.problems[0] == ("unit f: even a block of 6 neuron(s) needs 48 bytes of core memory and 0 input axons; "
                             "a Loihi 2 core has 5 neurons, 400 bytes and 32,768 axons")


def test_metis_finds_the_known_optimum_and_beats_the_sequential_baseline():
    # 8 pieces, 2 chips of 4: even pieces talk heavily to each other, odd ones too, and each even
    # piece i sends 1 message to i + 1. Optimum: {0,2,4,6} | {1,3,5,7}, cut 4 x 1 = 4 messages;
    # the sequential fill {0..3} | {4..7} cuts heavy pairs
    edges = {}
    for grp in ((0, 2, 4, 6), (1, 3, 5, 7)):
        for a in grp:
            for b in grp:
                if a < b:
                    edges[(a, b)] = 10.0
    for i in (0, 2, 4, 6):
        edges[(i, i + 1)] = 1.0
    part = mapping.metis_partition(8, edges, 2, 4)
    assert mapping.cut(edges, part) == 4.0
    assert sorted(part.count(c) for c in (0, 1)) == [4, 4]
    seq = mapping.sequential_partition(8, edges, 2, 4)
    # sequential: 4 heavy pairs of each group cross ((0,4), (0,6), (2,4), (2,6) and the odd ones),
    # every light edge (i, i + 1) stays on its chip
    assert mapping.cut(edges, seq) == 2 * 4 * 10.0


def test_metis_is_no_worse_than_sequential_on_a_mapped_graph(conv_pool_linear):
    m = mapping.build(conv_pool_linear, 3, _small(cores=2))
    seq = mapping.sequential_partition(len(m.pieces), m.edges, 3, 2)
    assert mapping.cut(m.edges, [p.chip for p in m.pieces]) <= mapping.cut(m.edges, seq)


def test_receptive_box_through_reshape_groups_axes():
    # (768, 196) <-> (768, 14, 14): one pixel of all channels stays one token column of all channels
    assert mapping._reshape_box(((0, 768), (7, 8), (7, 8)), (768, 14, 14), (768, 196)) == ((0, 768), (105, 106))
    assert mapping._reshape_box(((2, 3), (0, 196)), (768, 196), (768, 14, 14)) == ((2, 3), (0, 14), (0, 14))


@pytest.mark.parametrize("name", ["digits_cnn", "digits_former"])
def test_shipped_digits_models_map_onto_one_chip_and_keep_their_network(name):
    from snncc.frontend.loader import LoadedModel, trace
    from snncc.passes.manager import run_pipeline
    from snncc_lava.target import LoihiTarget

    sys.path.insert(0, str(ROOT))
    from examples.digits.train import load_model

    model = load_model(ROOT / "examples" / "digits" / "artifacts", name)
    g = run_pipeline(trace(LoadedModel(model, None, (1, 8, 8))), "deploy").graph
    tgt = LoihiTarget()
    assert tgt.check(g, {}) == []
    files = tgt.emit(g, {})
    doc = json.loads(files["lava/mapping.json"])
    assert doc["problems"] == [] and doc["totals"]["chips"] == 1
    assert doc["totals"]["neurons"] == sum(int(np.prod(n.shape)) for n in g.nodes if n.op in ("fire", "relay", "spike_product"))
    assert doc["totals"]["interchip_messages_per_window"] == 0
    # the Lava network description (what simulate builds) is the same as without the mapping
    want = describe.files(network.build(g), "burst", tgt.versions())
    assert files["lava/network.json"] == want["lava/network.json"]
    assert files["lava/weights.npz"] == want["lava/weights.npz"]


def test_cli_refuses_in_one_line_explains_and_maps_onto_more_chips(tmp_path, capsys):
    from snncc.cli import main
    from snncc.models import e_spikeformer

    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.pt"
    torch.save(e_spikeformer("tiny-test", img_size=224).state_dict(), ckpt)
    common = ["compile", str(ckpt), "--model-def", "snncc.models.e_spikeformer:e_spikeformer",
              "--factory-kwargs", '{"size": "tiny-test", "img_size": 224}', "--input-shape", "3,224,224",
              "--target", "loihi"]
    out = tmp_path / "one"
    assert main(common + ["--explain", "-o", str(out)]) == 2
    o, e = capsys.readouterr()
    last = e.strip().splitlines()[-1]
    assert last.startswith("snncc: error: target loihi: model does not fit: cores: the model needs ")
    assert "system chip has 1 chip(s), 128 cores" in last and not out.exists()
    assert "## Loihi 2 mapping (chip: 1 chip(s) of 128 cores)" in o and "- problem: cores:" in o  # --explain
    out = tmp_path / "kapoho"
    assert main(common + ["--target-option", "system=kapoho", "--explain", "-o", str(out)]) == 0
    o, _ = capsys.readouterr()
    doc = json.loads((out / "lava" / "mapping.json").read_text())
    assert doc["system"] == "kapoho" and doc["problems"] == [] and doc["totals"]["chips"] >= 2
    assert json.loads((out / "manifest.json").read_text())["files"].get("lava/mapping.json") is not None
    assert sum(c["cores"] for c in doc["chips"]) == doc["totals"]["cores"] == len(doc["pieces"])
    # report.md's section (the target's report_section hook, rendered from lava/mapping.json) is
    # the resource report --explain printed from the mapping, table for table
    section = mapping.report_markdown(doc)
    assert section.startswith("## Loihi 2 mapping (kapoho: 8 chip(s) of 128 cores)\n")
    assert "| chip | position |" in section and f"| {doc['pieces'][0]['unit']} | " in section
    assert section in (out / "report.md").read_text() and section in o


def test_estimator_takes_hops_and_chip_crossings_from_the_mapping(conv_pool_linear):
    from snncc.estimate import Estimator
    from snncc.profile import load_profile

    g = conv_pool_linear
    m = mapping.build(g, 3, _small(cores=2))
    doc = json.loads(json.dumps(m.to_json()))  # as read back from lava/mapping.json
    x = torch.randint(0, 5, (2, 2, 6, 6), generator=torch.Generator().manual_seed(0)).double()
    est = Estimator(g, "loihi", placement=doc)
    est.observe(x)
    rep = est.report(rate=100.0)
    (t,) = doc["traffic"]
    spikes = rep.population("f").spikes
    assert spikes > 0
    assert rep.totals["hops"] == pytest.approx(spikes * t["hops_per_spike"])
    assert rep.totals["chip_crossings"] == pytest.approx(spikes * t["crossings_per_spike"]) and t["crossings_per_spike"] > 0
    prof = load_profile("loihi")
    want = (prof.si("e_spike_tile") * spikes * t["messages_per_spike"] + prof.si("e_hop") * rep.totals["hops"]
            + prof.si("e_chip_crossing") * rep.totals["chip_crossings"])
    assert rep.energy["routing"] == pytest.approx(want)
    pl = rep.placement
    assert [c["chip"] for c in pl["chips"]] == ["0", "1", "2"]
    assert sum(c["dynamic_J"] for c in pl["chips"]) == pytest.approx(rep.energy["dynamic"])
    assert pl["static_w"] == 3 * prof.si("p_static_chip")
    assert rep.power == pytest.approx(rep.energy["dynamic"] * 100.0 + pl["static_w"])
    # every link's messages per second at 100 samples/s against the limit the mapping gives
    assert pl["links"] and all(l["messages_per_s"] == pytest.approx(l["messages_per_sample"] * 100.0) for l in pl["links"])
    assert sum(l["messages_per_sample"] for l in pl["links"]) == pytest.approx(
        sum(spikes * v for v in t["links_per_spike"].values()))
    assert "placement (3 chips" in rep.table()


def test_system_option_is_checked_in_one_line():
    from snncc.errors import TargetError
    from snncc_lava.target import LoihiTarget

    with pytest.raises(TargetError, match=r"unknown system 'foo'"):
        LoihiTarget().parse({"system": "foo"})
    with pytest.raises(TargetError, match="system of 0 chips"):
        LoihiTarget().parse({"system": 0})
    res = mapping.load_resources()
    assert res.system("hala") == ("hala", 1152, (8, 12, 12))
    assert res.system("kapoho") == ("kapoho", 8, (2, 4))
    assert res.system(6) == ("6 chips", 6, (2, 3))


def test_with_a_mapping_the_one_chip_core_warning_gives_way_to_the_placement(conv_pool_linear):
    import dataclasses as dc

    from snncc.estimate import Estimator
    from snncc.profile import load_profile

    prof = load_profile("loihi")
    # a profile whose chip holds 1 core of 8 neurons: without a mapping the estimator warns
    tiny = dc.replace(prof, figures={**prof.figures, "cores": dc.replace(prof.figures["cores"], value=1),
                                     "neurons_per_core": dc.replace(prof.figures["neurons_per_core"], value=8)})
    x = torch.ones((1, 2, 6, 6))
    plain = Estimator(conv_pool_linear, tiny)
    plain.observe(x)
    assert any("cores needed" in w for w in plain.report().warnings)
    placed = Estimator(conv_pool_linear, tiny, placement=mapping.build(conv_pool_linear, 3, _small(cores=2)).to_json())
    placed.observe(x)
    assert not any("cores needed" in w for w in placed.report().warnings)



def test_estimate_with_workers_uses_the_placement_and_equals_one_process(tmp_path, capsys):
    # ConvChain's artefact with the mapping the real mapper makes under small per-core limits
    # (40 neurons, 400 bytes, 4 cores per chip): its 15 pieces span 4 chips
    import snncc
    from nets import ConvChain, randomize_bn
    from snncc.cli import main

    torch.manual_seed(0)
    dep = snncc.compile(randomize_bn(ConvChain()), torch.zeros(2, 2, 8, 8), target="loihi")
    m = mapping.build(dep.deployed, 4, _small(cores=4))
    assert m.problems == [] and m.chips_used == 4 and m.interchip_messages() > 0
    dep.files["lava/mapping.json"] = (json.dumps(m.to_json(), indent=1, sort_keys=True) + "\n").encode()
    out = tmp_path / "art"
    dep.save(str(out))
    est = ["estimate", str(out), "--profile", "loihi", "--samples", "6", "--batch-size", "2", "--json"]
    assert main(est + [str(tmp_path / "one.json")]) == 0
    assert main(est + [str(tmp_path / "sharded.json"), "--workers", "2"]) == 0
    capsys.readouterr()
    one, sharded = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "sharded.json"))
    pl = one["placement"]
    assert [c["chip"] for c in pl["chips"]] == ["0", "1", "2", "3"] and all(c["dynamic_J"] > 0 for c in pl["chips"])
    assert pl["links"] and pl["chip_crossings"] > 0 and one["totals"]["chip_crossings"] == pl["chip_crossings"]
    assert sharded == one  # totals, per-chip energy and power, every link's traffic: exactly equal


def _attention():
    """x (2 heads, 3 tokens, 2 features) -> q = fire(x), k = fire(x / 2); p = Q K^T per head
    (2, 3, 3), a spike product; c = fire(p / 4)."""
    from snncc.ir.graph import Graph, Node

    fire = {"D": 4, "theta": 1.0, "beta": 0.5, "norm": 1.0, "rounding": "floor"}
    return Graph([
        Node("x", "input", [], {"shape": (2, 3, 2)}), Node("q", "fire", ["x"], fire),
        Node("hx", "scale", ["x"], params={"factor": np.array(0.5)}), Node("k", "fire", ["hx"], fire),
        Node("kt", "permute", ["k"], {"dims": (0, 2, 1)}),
        Node("p", "spike_product", ["q", "kt"], {"order": "left", "scale": 1.0}),
        Node("sp", "scale", ["p"], params={"factor": np.array(0.25)}), Node("c", "fire", ["sp"], fire),
        Node("out", "output", ["c"])]).infer()


def test_spike_product_traffic_is_placed_by_hand():
    from snncc.estimate import Estimator

    g = _attention()
    # 6 neurons, 4 cores per chip: q and k split by head (1 x 3 x 2), p and c by token row across
    # both heads (2 x 1 x 3); pieces q0 q1 k0 k1 | p0 p1 p2 c0 | c1 c2 on chips at (0,0) (0,1) (0,2)
    m = mapping.build(g, 3, _small(neurons=6, cores=4), partition=mapping.sequential_partition)
    assert [(p.unit, p.chip, p.core) for p in m.pieces] == [
        ("q", 0, 0), ("q", 0, 1), ("k", 0, 2), ("k", 0, 3), ("p", 1, 0), ("p", 1, 1), ("p", 1, 2), ("c", 1, 3),
        ("c", 2, 0), ("c", 2, 1)]
    # p row i reads Q[:, i, :] (2 neurons of each q piece, not the whole head) and all of K
    assert m.edges == {**{(q, p): 2.0 for q in (0, 1) for p in (4, 5, 6)},
                       **{(k, p): 6.0 for k in (2, 3) for p in (4, 5, 6)}, (4, 7): 6.0, (5, 8): 6.0, (6, 9): 6.0}
    t = {(x["source"], x["target"]): x for x in m.traffic()}
    assert t[("q", "p")]["messages_per_spike"] == 1.0 and t[("k", "p")]["messages_per_spike"] == 3.0
    # hops between cores (0,k): q->p 2 x (0+1+2 + 1+0+1) = 10, k->p 6 x (2+1+0 + 3+2+1) = 54, p->c 6 x (3+1+1)
    assert (t[("q", "p")]["hops_per_spike"], t[("k", "p")]["hops_per_spike"]) == (10 / 12, 54 / 12)
    assert t[("p", "c")]["hops_per_spike"] == 30 / 18 and t[("p", "c")]["crossings_per_spike"] == 12 / 18
    assert t[("p", "c")]["links_per_spike"] == {"[0, 1]->[0, 2]": 12 / 18}
    assert m.links() == {((0, 0), (0, 1)): 12.0 + 36.0, ((0, 1), (0, 2)): 12.0}
    # METIS sees the product's edges too, and cuts no more than the sequential fill
    metis = mapping.build(g, 3, _small(neurons=6, cores=4))
    assert metis.interchip_messages() <= m.interchip_messages() == 60.0

    # one sample: q = x, k = floor(x / 2 + 1/2); Q K^T head 0 [[1,0,1],[0,1,0],[2,0,2]] (5 nonzero),
    # head 1 [[0,0,0],[0,2,2],[0,3,6]] (4): 9 graded messages; q 9 spikes, k 7
    x = torch.tensor([[[[1, 0], [0, 1], [2, 0]], [[0, 0], [1, 1], [0, 3]]]], dtype=torch.float64)
    est = Estimator(g, "loihi", placement=json.loads(json.dumps(m.to_json())))
    est.observe(x)
    rep = est.report(rate=10.0)
    assert (rep.population("q").spikes, rep.population("k").spikes) == (9.0, 7.0)
    pl = rep.placement
    assert pl["product_messages"] == {"p": 9.0} and pl["unplaced_sources"] == []
    assert "spike products sent 9 graded messages" in rep.table()
    assert rep.totals["placed_messages"] == 9 * 1 + 7 * 3 + 9 * 1
    assert rep.totals["chip_crossings"] == pytest.approx(9 * 1 + 7 * 3 + 9 * 12 / 18)
    assert rep.totals["hops"] == pytest.approx(9 * 10 / 12 + 7 * 54 / 12 + 9 * 30 / 18)
    assert {l["link"]: l["messages_per_sample"] for l in pl["links"]} == pytest.approx(
        {"[0, 0]->[0, 1]": 9 + 7 * 3, "[0, 1]->[0, 2]": 9 * 12 / 18})
    # the product's coincidences (sum of Q K^T = 7 + 13) are charged to its own chip (1); every
    # joule lands on some chip
    assert rep.totals["spike_products"] == 20
    from snncc.profile import load_profile

    prof = load_profile("loihi")
    c = rep.population("c")
    own = prof.si("e_sop") * c.sops_in + prof.si("e_neuron_update_active") * c.spikes \
        + prof.si("e_neuron_update_inactive") * (c.neuron_updates - c.spikes)  # c sends nothing on chip
    chip = {x["chip"]: x["dynamic_J"] for x in pl["chips"]}
    assert chip["2"] == pytest.approx(own * 2 / 3)  # c's 12 neurons there, none of the 20 coincidences
    assert sum(chip.values()) == pytest.approx(rep.energy["dynamic"])


def test_boxes_over_count_where_a_stride_skips_neurons_and_exact_overlaps_measure_it(strided, conv_pool_linear):
    # g (4x4) = 1x1 conv, stride 2, of f (8x8): it reads f's even rows and columns (16 neurons);
    # the box is rows and columns 0..6, 49 neurons
    g = strided
    m = mapping.build(g, "chip")
    assert [(p.unit, p.box) for p in m.pieces] == [("f", ((0, 1), (0, 8), (0, 8))), ("g", ((0, 1), (0, 4), (0, 4)))]
    assert m.overlaps == {(0, 1): 49} and mapping.exact_overlaps(g, m) == {(0, 1): 16}
    # where windows cover their stride (conv 3x3 pad 1, sum pool 2x2) boxes are exact
    m = mapping.build(conv_pool_linear, "chip", _small())
    assert mapping.exact_overlaps(conv_pool_linear, m) == m.overlaps
