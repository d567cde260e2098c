"""Data sets as folders of .npz/.npy shards, streamed by `estimate`, and the estimate sharded
over worker processes (issue 15): the merged integer statistics equal one process's exactly."""

import numpy as np
import pytest
import torch

import snncc
from nets import ConvChain, randomize_bn
from snncc.cli import main
from snncc.estimate import Estimator
from snncc.estimate.data import InputBatches, read_data


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


def test_two_workers_merge_to_exactly_one_process(dep, shards):
    from snncc.estimate.workers import run_sharded

    d, x = shards
    one = Estimator(dep.deployed, profile="45nm").run(InputBatches(dep.deployed, str(d), 0, 4))
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
    from snncc.estimate.workers import run_sharded

    d, _ = shards
    one = Estimator(dep.deployed, profile="45nm").run(InputBatches(dep.deployed, str(d), 0, 4))
    two = run_sharded(dep.deployed, "45nm", str(d), 0, 4, 0, workers=2, address="local")
    assert one.state() == two.state()


def test_cli_simulate_streams_a_folder_and_checks_every_batch(dep, shards, tmp_path, capsys):
    d, x = shards
    out = str(tmp_path / "art")
    dep.save(out)
    assert main(["simulate", out, "--data", str(d), "--samples", "100", "--schedule", "exact"]) == 0
    o = capsys.readouterr().out
    assert "exact schedule: 23 samples from 3 shards" in o and "spike counts == reference" in o
    assert main(["simulate", out, "--data", str(d), "--samples", "12"]) == 0  # the first 12 only; no streaming
    o = capsys.readouterr().out
    assert "12 samples from 2 shards" in o and "streaming schedule: not run on a folder" in o
