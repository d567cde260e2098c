"""Tests for the digits and events examples: data, a few training steps, artefact round trips.

None of these depends on a full training run: artefacts are written from (briefly trained)
models into a temporary directory.
"""

import json

import numpy as np
import pytest
import torch

from examples.digits import models as dmodels
from examples.digits import train as dtrain
from examples.events import train as etrain
from examples.events.data import digits_to_events
from snncc.nn import MultiStep, SFANeuron, reset_state


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def split():
    xtr, xte, ytr, yte = dtrain.load_split()
    return torch.from_numpy(xtr), torch.from_numpy(xte), torch.from_numpy(ytr), torch.from_numpy(yte)


def test_split_deterministic_and_stratified(split):
    xtr, xte, ytr, yte = split
    assert xtr.shape == (1347, 1, 8, 8) and xte.shape == (450, 1, 8, 8)
    assert xtr.dtype == torch.float32 and 0.0 <= float(xtr.min()) and float(xtr.max()) <= 1.0
    again = dtrain.load_split()
    assert np.array_equal(again[1], xte.numpy()) and np.array_equal(again[3], yte.numpy())
    assert set(np.bincount(yte.numpy()).tolist()) <= {43, 44, 45, 46}


def test_random_shift_is_a_translation():
    x = torch.zeros(2, 1, 8, 8)
    x[:, 0, 3, 4] = 1.0
    g = torch.Generator().manual_seed(0)
    y = dtrain.random_shift(x, g, 1)
    assert y.shape == x.shape and torch.equal(y.sum((1, 2, 3)), torch.ones(2))
    r, c = (y[0, 0] == 1).nonzero()[0].tolist()
    assert abs(r - 3) <= 1 and abs(c - 4) <= 1


def _few_steps(model, x, y, steps=16, lr=1e-2, batch_size=16, **kw):
    kw.setdefault("augment", None)
    losses = dtrain.train_model(model, x, y, epochs=steps, lr=lr, batch_size=batch_size, max_steps=steps, log=None,
                                schedule="constant", **kw)
    assert len(losses) == steps
    return losses


def test_digits_cnn_training_steps_reduce_loss(split):
    xtr, _, ytr, _ = split
    torch.manual_seed(0)
    losses = _few_steps(dmodels.digits_cnn(width=8), xtr[:64], ytr[:64])
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])


def test_digits_former_training_steps_reduce_loss(split):
    xtr, _, ytr, _ = split
    torch.manual_seed(0)
    m = dmodels.digits_former()
    losses = _few_steps(m, xtr[:64], ytr[:64], steps=16, batch_size=64)  # full batch: smooth loss
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])


def test_digits_models_structure():
    cnn = dmodels.digits_cnn()
    assert cnn.head_spike.norm == 1 and isinstance(cnn.stem_spike, SFANeuron)
    former = dmodels.digits_former()
    assert former.img_size == 8 and former.num_classes == 10
    assert len(former.stage3) == 1 and len(former.stage4) == 1


def test_artifacts_round_trip(tmp_path, split):
    _, xte, _, _ = split
    torch.manual_seed(0)
    kwargs = dict(width=4)
    m = dmodels.digits_cnn(**kwargs)
    dtrain.train_model(m, xte[:64], torch.arange(64) % 10, epochs=1, batch_size=32, log=None, max_steps=2)
    meta = dtrain.save_artifacts(tmp_path, "cnn", m, "examples.digits.models:digits_cnn", kwargs, xte[:1],
                                 extra=dict(test_accuracy=0.5))
    assert meta["exported_program"] == "cnn.pt2" and "export_error" not in meta
    on_disk = json.loads((tmp_path / "cnn.json").read_text())
    assert on_disk["factory"] == "examples.digits.models:digits_cnn" and on_disk["kwargs"] == {"width": 4}
    assert on_disk["input_shape"] == [1, 1, 8, 8] and on_disk["test_accuracy"] == 0.5
    loaded = dtrain.load_model(tmp_path, "cnn")
    ep = torch.export.load(tmp_path / "cnn.pt2")
    x = xte[:1]
    assert torch.equal(loaded(x), m.eval()(x))
    assert torch.allclose(ep.module()(x), m(x), atol=1e-6)


def test_load_or_train_reuses_artifacts(tmp_path, split, monkeypatch):
    _, xte, _, yte = split
    for name, spec in dtrain.MODELS.items():
        torch.manual_seed(0)
        m = dtrain.build(spec["factory"], spec["kwargs"])
        dtrain.save_artifacts(tmp_path, name, m, spec["factory"], spec["kwargs"], xte[:1])
    np.savez_compressed(tmp_path / "digits_test.npz", x_test=xte.numpy(), y_test=yte.numpy())

    def boom(*a, **k):
        raise AssertionError("should not train")

    monkeypatch.setattr(dtrain, "train_all", boom)
    out = dtrain.load_or_train(tmp_path)
    assert set(out["models"]) == set(dtrain.MODELS)
    assert out["x_test"].shape == (450, 1, 8, 8) and out["y_test"].shape == (450,)
    assert all(not m.training for m in out["models"].values())


def test_digits_to_events_deterministic_binary():
    imgs = np.zeros((2, 8, 8), dtype=np.float32)
    imgs[0, 2:6, 3] = 1.0  # vertical bar
    ev = digits_to_events(imgs, T=4)
    assert ev.shape == (2, 4, 2, 32, 32) and ev.dtype == np.uint8
    assert set(np.unique(ev)) <= {0, 1}
    assert ev[1].sum() == 0  # blank image -> no events
    assert np.array_equal(ev, digits_to_events(imgs, T=4))
    # first step moves right by one pixel: a 2-px wide, 8-px tall bar gives 8 ON and 8 OFF events
    assert ev[0, 0, 0].sum() == 8 and ev[0, 0, 1].sum() == 8
    # second step moves down: horizontal edges of the bar (2 px wide)
    assert ev[0, 1, 0].sum() == 2 and ev[0, 1, 1].sum() == 2


def test_event_split_shapes():
    xtr, xte, ytr, yte = etrain.load_event_split(4)
    assert xtr.shape == (1347, 4, 2, 32, 32) and xte.shape == (450, 4, 2, 32, 32)
    assert xte.sum() > 0 and len(yte) == 450


def test_events_training_steps_reduce_loss():
    xtr, _, ytr, _ = etrain.load_event_split(4)
    x, y = torch.from_numpy(xtr[:64]), torch.from_numpy(ytr[:64])
    torch.manual_seed(0)
    model = dtrain.build(etrain.SPEC["factory"], dict(size="tiny", input_size=32))
    w = MultiStep(model, 4)
    losses = _few_steps(w, x, y, augment=etrain.shift_events, prep=etrain.to_time_major)
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3])


def test_events_export_single_step_equals_first_timestep(tmp_path):
    _, xte, _, _ = etrain.load_event_split(4)
    torch.manual_seed(0)
    model = dtrain.build(etrain.SPEC["factory"], etrain.SPEC["kwargs"])
    x0 = torch.from_numpy(xte[:1, 0]).float()
    meta = dtrain.save_artifacts(tmp_path, "speck_cnn", model, etrain.SPEC["factory"], etrain.SPEC["kwargs"],
                                 x0, extra=dict(T=4))
    assert "exported_program" in meta
    ep = torch.export.load(tmp_path / "speck_cnn.pt2")
    reset_state(model)
    assert torch.equal(ep.module()(x0), model(x0))
    loaded = dtrain.load_model(tmp_path, "speck_cnn")
    xs = torch.from_numpy(xte[:3]).float().transpose(0, 1)
    assert torch.equal(MultiStep(loaded, 4)(xs), MultiStep(model.eval(), 4)(xs))


def test_event_test_set_as_recordings(tmp_path):
    """The shipped events_test_stream.npz is the test split as tonic-style recordings: binned at
    1 ms per timestep it gives x_test back exactly; the writer reproduces it; one recording runs
    through the asynchronous simulator in time order."""
    from examples.events.data import BIN_US, write_recordings
    from snncc.frontend.loader import LoadedModel, trace
    from snncc.passes.manager import run_pipeline
    from snncc.sim.event_streams import bin_counts, read_events, simulate_stream

    art = etrain.DEFAULT_OUT
    d = np.load(art / "events_test.npz")
    streams, labels = read_events(art / "events_test_stream.npz", (32, 32))
    assert len(streams) == 450 and np.array_equal(labels, d["y_test"])
    for s, xi in zip(streams, d["x_test"]):
        assert np.array_equal(bin_counts(s, 4, BIN_US), xi)
    write_recordings(d["x_test"][:3], d["y_test"][:3], tmp_path / "three.npz")
    again, lab = read_events(tmp_path / "three.npz", (32, 32, 2))
    assert lab.tolist() == d["y_test"][:3].tolist()
    assert all(np.array_equal(a.t, b.t) and np.array_equal(a.x, b.x) for a, b in zip(again, streams[:3]))
    model = dtrain.load_model(art, "speck_cnn")
    g = run_pipeline(trace(LoadedModel(model, None, (2, 32, 32), 4), input_kind="spike"), "deploy").graph
    r = simulate_stream(g, streams[0], T=4, bin_us=BIN_US)
    assert r.result.events["input"] == len(streams[0]) == int(d["x_test"][0].sum())
    assert r.latency_us.size == len(streams[0]) and r.latency_us.min() >= 1.0
    assert len(r.cores) == len(g.neurons()) + 1
