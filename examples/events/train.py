"""Train the Speck-compatible event CNN on digit event streams and write its artefacts.

Owns :data:`SPEC`, :func:`load_event_split`, :func:`train_events` and :func:`load_or_train`.
Run ``python -m examples.events.train [--out DIR]``.

The model is :func:`snncc.models.speck_cnn` (single step, stateful neurons) wrapped in
:class:`snncc.nn.MultiStep` with ``T`` timesteps. Artefacts in the output dir (default
``examples/events/artifacts/``): ``speck_cnn.pt`` (state_dict of the single-step model),
``speck_cnn.json`` (factory, kwargs, ``T``, input shape per step, accuracy),
``speck_cnn.pt2`` (``torch.export`` of the single-step model, batch 1, membrane at 0) and
``events_test.npz`` with ``x_test`` (N, T, 2, 32, 32) uint8 events and ``y_test`` (N,) int64, and
the same test set as recordings, ``events_test_stream.npz`` (tonic-style ``x, y, t, p`` arrays, t in
microseconds, 1 ms per timestep, plus ``labels``; :func:`write_test_stream`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from examples.digits.train import SEED, evaluate, load_model, load_split, random_shift, save_artifacts, train_model
from examples.events.data import BIN_US, T_DEFAULT, digits_to_events, write_recordings
from snncc.nn import MultiStep

DEFAULT_OUT = Path(__file__).resolve().parent / "artifacts"
NAME = "speck_cnn"
SPEC: dict[str, Any] = dict(factory="snncc.models.speck:speck_cnn", kwargs=dict(size="small"),
                            T=T_DEFAULT, epochs=20, lr=5e-3, batch_size=64)


def load_event_split(T: int = T_DEFAULT):
    """Event versions of the deterministic digits split: x (N, T, 2, 32, 32) uint8, y (N,)."""
    xtr, xte, ytr, yte = load_split()
    return digits_to_events(xtr, T), digits_to_events(xte, T), ytr, yte


def to_time_major(xb: torch.Tensor) -> torch.Tensor:
    """(B, T, 2, H, W) -> (T, B, 2, H, W) float."""
    return xb.float().transpose(0, 1)


def shift_events(xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random +-2 px translation of whole event streams (same shift for all timesteps of a sample)."""
    B, T, C, H, W = xb.shape
    return random_shift(xb.float().reshape(B, T * C, H, W), gen, 2).reshape(B, T, C, H, W)


def make_wrapper(model: torch.nn.Module, T: int = T_DEFAULT) -> MultiStep:
    return MultiStep(model, T)


def train_events(outdir: Path = DEFAULT_OUT, log=print) -> dict[str, Any]:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    T = SPEC["T"]
    xtr, xte, ytr, yte = load_event_split(T)
    np.savez_compressed(outdir / "events_test.npz", x_test=xte, y_test=yte)
    write_test_stream(outdir)
    xtr_t, ytr_t = torch.from_numpy(xtr), torch.from_numpy(ytr)
    xte_t, yte_t = torch.from_numpy(xte), torch.from_numpy(yte)
    from examples.digits.train import build

    torch.manual_seed(SEED)
    model = build(SPEC["factory"], SPEC["kwargs"])
    wrapper = make_wrapper(model, T)
    log(f"training {NAME} ({sum(p.numel() for p in model.parameters())} params, T={T})")
    t0 = time.time()
    train_model(wrapper, xtr_t, ytr_t, SPEC["epochs"], SPEC["lr"], SPEC["batch_size"],
                augment=shift_events, prep=to_time_major, log=log)
    dt = time.time() - t0
    acc = evaluate(wrapper, xte_t, yte_t, prep=to_time_major)
    log(f"{NAME}: test accuracy {acc:.4f}, training {dt:.1f} s")
    example = torch.from_numpy(xte[:1, 0]).float()  # one timestep, (1, 2, 32, 32)
    save_artifacts(outdir, NAME, model, SPEC["factory"], SPEC["kwargs"], example,
                   extra=dict(T=T, wrapper="snncc.nn.MultiStep", test_accuracy=acc,
                              train_seconds=round(dt, 1), seed=SEED, epochs=SPEC["epochs"],
                              test_split="events_test.npz",
                              test_input_layout="x_test: (N, T, 2, H, W) uint8, channel 0 ON, 1 OFF"))
    return dict(accuracy=acc, seconds=dt)


def write_test_stream(outdir: Path = DEFAULT_OUT, bin_us: float = BIN_US) -> Path:
    """The test split (``events_test.npz``) as event recordings, ``events_test_stream.npz``, next to it."""
    outdir = Path(outdir)
    data = np.load(outdir / "events_test.npz")
    return write_recordings(data["x_test"], data["y_test"], outdir / "events_test_stream.npz", bin_us)


def load_or_train(outdir: Path = DEFAULT_OUT, force: bool = False, log=print) -> dict[str, Any]:
    """Load (training if missing) the event model. Returns ``{"model": single-step model (eval),
    "wrapper": MultiStep, "T": int, "x_test", "y_test", "meta"}``."""
    outdir = Path(outdir)
    if force or not all((outdir / f).exists() for f in (f"{NAME}.json", f"{NAME}.pt", "events_test.npz")):
        train_events(outdir, log=log)
    meta = json.loads((outdir / f"{NAME}.json").read_text())
    model = load_model(outdir, NAME)
    data = np.load(outdir / "events_test.npz")
    return dict(model=model, wrapper=make_wrapper(model, meta["T"]).eval(), T=meta["T"],
                x_test=data["x_test"], y_test=data["y_test"], meta=meta)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    r = train_events(args.out)
    print(f"{NAME}: accuracy {r['accuracy']:.4f} in {r['seconds']:.1f} s")


if __name__ == "__main__":
    main()
