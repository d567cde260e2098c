"""Data sets as folders of .npz/.npy shards, streamed by `estimate`, and the estimate sharded
over worker processes: the merged integer statistics equal one process's exactly."""

import numpy as np
import pytest
import torch

import snncc
from nets import ConvChain, randomize_bn
from snncc.cli import main
from snncc.estimate import Estimator
from snncc.data.inputs import InputBatches, read_data


@pytest.fixture(scope="module")
def dep():
    torch.manual_seed(0)
    return snncc.compile(randomize_bn(ConvChain()), torch.zeros(2, 2, 8, 8))


@pytest.fixture(scope="module")
def shards(tmp_path_factory, dep):
    d = tmp_path_factory.mktemp("shards")
    x = np.random.default_rng(0).normal(0, 2, (23, 2, 8, 8))
    np.savez(d / "part-000.npz", x=x[:10], y=np.arange(10) % 5)
    np.save(d / "part-001.npy", x[10:17])
    np.savez(d / "part-002.npz", x_test=x[17:])
    (d / "README.txt").write_text("not a shard")
    return d, x


def _single(dep, x, bs):
    est = Estimator(dep.deployed, profile="45nm")
    for s in range(0, len(x), bs):
        est.observe(torch.as_tensor(x[s:s + bs]))
    return est


def test_folder_of_shards_is_streamed_shard_by_shard(dep, shards):
    d, x = shards
    b = InputBatches(dep.deployed, str(d), samples=0, batch_size=4)
    assert [n for _, n in b.shards] == [10, 7, 6] and b.samples == 23
    assert len(b) == 3 + 2 + 2  # a batch never spans two shards
    assert torch.equal(torch.cat(list(b)), torch.as_tensor(x))
    xs, ys, _ = read_data(str(d), dep.deployed, 12)  # verify / simulate: the first 12, concatenated
    assert np.array_equal(xs, x[:12]) and ys is None  # part-001.npy has no labels
    capped = InputBatches(dep.deployed, str(d), samples=12, batch_size=4)
    assert [n for _, n in capped.shards] == [10, 2]


def test_sweep_D_streams_a_folder_and_equals_the_whole_array(dep, shards, tmp_path, capsys):
    """`estimate --sweep-D` on a folder of shards reads it batch by batch (each batch once, every D
    observing it) and prints what the same inputs as one array give."""
    from snncc.compiler import deploy
    from snncc.estimate.report import sweep_D
    from snncc.passes.set_window import set_window

    d, x = shards
    graphs = {D: deploy(set_window(dep.traced, D).graph).graph for D in (1, 2)}
    assert dep.deployed.neurons()[0].attrs["D"] == 4
    graphs[4] = dep.deployed
    seen = []

    def batches():
        for b in InputBatches(dep.deployed, str(d), samples=0, batch_size=4):
            seen.append(len(b))
            yield b

    streamed = sweep_D(graphs, batches(), "45nm", reference_D=4)
    whole = sweep_D(graphs, torch.as_tensor(x), "45nm", reference_D=4, batch_size=4)
    assert seen == [4, 4, 2, 4, 3, 4, 2]  # read once, a batch never spanning two shards
    assert streamed.to_markdown() == whole.to_markdown() and streamed.samples == whole.samples == 23
    assert [r.D for r in streamed.rows] == [1, 2, 4] and streamed.rows[-1].agreement == 1.0
    out = str(tmp_path / "art")
    dep.save(out)
    np.save(tmp_path / "all.npy", x)
    printed = []
    for data in (str(d), str(tmp_path / "all.npy")):
        assert main(["estimate", out, "--data", data, "--samples", "100", "--batch-size", "4", "--sweep-D", "1,2"]) == 0
        printed.append(capsys.readouterr().out.split("D sweep", 1)[1])
    assert printed[0] == printed[1] and streamed.to_markdown() in printed[0]


def test_two_workers_merge_to_exactly_one_process(dep, shards):
    from snncc.estimate.estimator import run_sharded

    d, x = shards
    one = Estimator(dep.deployed, profile="45nm").run(InputBatches(dep.deployed, str(d), 0, 4).with_labels())
    two = run_sharded(dep.deployed, "45nm", str(d), 0, 4, 0, workers=2)
    assert one.state() == two.state()  # spikes, SOPs, peaks, samples: bit-equal
    assert two.samples == 23 and sum(two.spikes.values()) > 0
    first = _single(dep, x[:10], 4)  # the first shard alone, batched the same way, is part of it
    assert all(first.spikes[k] <= v for k, v in two.spikes.items()) and first.samples == 10


def test_cli_estimate_with_workers_on_a_folder(dep, shards, tmp_path, capsys):
    d, _ = shards
    out = str(tmp_path / "art")
    dep.save(out)
    assert main(["estimate", out, "--data", str(d), "--samples", "100", "--batch-size", "5", "--json",
                 str(tmp_path / "a.json")]) == 0
    assert main(["estimate", out, "--data", str(d), "--samples", "100", "--batch-size", "5", "--workers", "2",
                 "--json", str(tmp_path / "b.json")]) == 0
    import json

    a, b = (json.load(open(tmp_path / f)) for f in ("a.json", "b.json"))
    assert a == b


def test_ray_workers_merge_to_exactly_one_process(dep, shards):
    pytest.importorskip("ray", reason="the optional ray extra (requirements-dev.txt installs it)")
    from snncc.estimate.estimator import run_sharded

    d, _ = shards
    one = Estimator(dep.deployed, profile="45nm").run(InputBatches(dep.deployed, str(d), 0, 4).with_labels())
    two = run_sharded(dep.deployed, "45nm", str(d), 0, 4, 0, workers=2, address="local")
    assert one.state() == two.state()


def test_cli_simulate_streams_a_folder_and_checks_every_batch(dep, shards, tmp_path, capsys):
    d, x = shards
    out = str(tmp_path / "art")
    dep.save(out)
    assert main(["simulate", out, "--data", str(d), "--samples", "100", "--schedule", "exact"]) == 0
    o = capsys.readouterr().out
    assert "exact schedule: 23 samples from 3 shards" in o and "spike counts == reference" in o
    assert "accuracy" in o and "prediction agreement" not in o  # part-000 has labels y; exact only
    assert main(["simulate", out, "--data", str(d), "--samples", "12"]) == 0  # the first 12, both schedules
    o = capsys.readouterr().out
    assert "12 samples from 2 shards" in o and "prediction agreement" in o and "over 12 samples" in o


def _tally_by_hand(dep, x, y):
    """The statistics of the streaming schedule and the accuracy, on the whole array at once."""
    from snncc.sim.tally import compare_streaming

    rep = compare_streaming(dep.deployed, torch.as_tensor(x))
    ref = dep.reference(torch.as_tensor(x))
    correct = int((ref.output[:len(y)].argmax(-1) == torch.as_tensor(y)).sum())
    return rep, correct


def test_simulate_two_workers_merge_to_exactly_one_process(dep, shards):
    from snncc.sim.tally import SimTally

    d, x = shards
    one = dep.simulate_data(str(d), samples=0, batch_size=4)
    two = dep.simulate_data(str(d), samples=0, batch_size=4, workers=2)
    assert isinstance(two, SimTally) and one.state() == two.state()  # every count, sum and maximum
    rep, correct = _tally_by_hand(dep, x, np.arange(10) % 5)  # only part-000.npz has labels
    st = two.streaming_report()
    assert [(p.population, p.differing, p.integer_spikes, p.streaming_spikes) for p in st.populations] == \
        [(p.population, p.differing, p.integer_spikes, p.streaming_spikes) for p in rep.populations]
    assert st.prediction_agreement == rep.prediction_agreement and st.batch == 23 == two.samples
    assert (two.correct["reference"], two.labelled) == (correct, 10)
    assert two.exact["differing"] == 0 and sum(two.ref_spikes.values()) > 0
    assert 0 < rep.total_differing  # the streaming schedule really differs here: the merge is not trivial


def test_cli_simulate_with_workers_prints_what_one_process_prints(dep, shards, tmp_path, capsys):
    d, _ = shards
    out = str(tmp_path / "art")
    dep.save(out)
    runs = []
    for extra in ([], ["--workers", "2"]):
        assert main(["simulate", out, "--data", str(d), "--samples", "100", "--batch-size", "5"] + extra) == 0
        runs.append(capsys.readouterr().out)
    assert runs[0] == runs[1] and "accuracy" in runs[0] and "streaming accuracy" in runs[0]
    assert main(["simulate", out, "--samples", "6", "--batch-size", "2", "--workers", "2"]) == 0  # random inputs
    o = capsys.readouterr().out
    assert "inputs: 6 random samples, seed 0" in o and "exact schedule: 6 samples," in o
    assert main(["simulate", out, "--backend", "lava", "--workers", "2"]) == 2  # one line, before any work
    err = capsys.readouterr().err.strip()
    assert "--workers, --ray-address and --batch-size shard the synchronous simulators" in err and "\n" not in err


def test_a_ray_address_that_leads_nowhere_is_refused_before_any_input_or_torch(dep, tmp_path, capsys, monkeypatch):
    """estimate and simulate check --ray-address right after reading the artefact: no input read
    or made (the random inputs import torch), no deployment built; one line, exit 2."""
    pytest.importorskip("ray", reason="the optional ray extra (requirements-dev.txt installs it)")
    import snncc.cli as cli

    out = str(tmp_path / "art")
    dep.save(out)

    def never(*a, **kw):
        raise AssertionError("work before the --ray-address check")

    monkeypatch.setattr(cli, "_input_batches", never)
    monkeypatch.setattr(cli, "_deployment", never)
    for cmd in ("estimate", "simulate"):
        assert main([cmd, out, "--samples", "4", "--ray-address", "127.0.0.1:1"]) == 2, cmd
        assert capsys.readouterr().err == ("snncc: error: --ray-address: cannot reach a Ray head at '127.0.0.1:1' "
                                           "within 5 s (Connection refused) (start the cluster, or check the "
                                           "address)\n"), cmd


def test_ray_simulate_workers_merge_to_exactly_one_process(dep, shards):
    pytest.importorskip("ray", reason="the optional ray extra (requirements-dev.txt installs it)")
    d, _ = shards
    one = dep.simulate_data(str(d), samples=0, batch_size=4)
    assert one.state() == dep.simulate_data(str(d), samples=0, batch_size=4, workers=2, ray_address="local").state()
