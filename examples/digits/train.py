"""Train the digits example models and write their deployment artefacts.

Owns the digits data split (:func:`load_split`), the CPU training loop (:func:`train_model`,
:func:`evaluate`), artefact writing/reading (:func:`save_artifacts`, :func:`load_model`) and
:func:`load_or_train`. Run ``python -m examples.digits.train [--out DIR] [--force]``.

Artefacts per model ``<name>`` in the output dir (default ``examples/digits/artifacts/``):
``<name>.pt2`` (``torch.export`` program of the eval-mode model, batch 1),
``<name>.pt`` (state_dict), ``<name>.json`` (factory ``module:function``, kwargs, input shape,
accuracy, training time); plus ``digits_test.npz`` with ``x_test`` (N, 1, 8, 8) float32 in [0, 1]
and ``y_test`` (N,) int64.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_OUT = Path(__file__).resolve().parent / "artifacts"
SEED = 0
TEST_FRACTION = 0.25

# name -> (factory path, kwargs, training hyper-parameters)
MODELS: dict[str, dict[str, Any]] = {
    "digits_cnn": dict(factory="examples.digits.models:digits_cnn", kwargs=dict(width=16),
                       epochs=30, lr=3e-3, batch_size=64),
    "digits_former": dict(factory="examples.digits.models:digits_former", kwargs={},
                          epochs=40, lr=5e-3, batch_size=64),
}


def load_split(seed: int = SEED, test_fraction: float = TEST_FRACTION):
    """Deterministic stratified split of ``load_digits``: x in [0, 1], shape (N, 1, 8, 8) float32."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    return train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)


def random_shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` pixels (zero fill), deterministic given ``gen``."""
    B, _, H, W = x.shape
    p = max_shift
    xp = F.pad(x, (p, p, p, p))
    dx = torch.randint(0, 2 * p + 1, (B,), generator=gen)
    dy = torch.randint(0, 2 * p + 1, (B,), generator=gen)
    rows = (dy[:, None] + torch.arange(H)[None])  # (B, H)
    cols = (dx[:, None] + torch.arange(W)[None])  # (B, W)
    idx_b = torch.arange(B)[:, None, None]
    return xp[idx_b, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256,
             prep: Callable[[torch.Tensor], torch.Tensor] | None = None) -> float:
    """Top-1 accuracy of ``model`` in eval mode."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        out = model(prep(xb) if prep else xb)
        correct += (out.argmax(1) == y[i:i + batch_size]).sum().item()
    return correct / len(x)


def train_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 30, lr: float = 3e-3,
                batch_size: int = 64, seed: int = SEED, augment: Callable | None = random_shift,
                prep: Callable[[torch.Tensor], torch.Tensor] | None = None, max_steps: int | None = None,
                log: Callable[[str], None] | None = print, schedule: str = "onecycle") -> list[float]:
    """AdamW, one-cycle LR schedule (``schedule="constant"``: fixed ``lr``), label smoothing 0.1.
    Returns the per-step training losses.

    ``augment(xb, gen)`` is applied to each batch before ``prep(xb)``; ``max_steps`` stops early
    (used by tests)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = (len(x) + batch_size - 1) // batch_size
    total = epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    if schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(total, 1), pct_start=0.15)
    elif schedule == "constant":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    else:
        raise ValueError(f"unknown schedule {schedule!r}")
    losses: list[float] = []
    step = 0
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            xb, yb = x[idx], y[idx]
            if augment is not None:
                xb = augment(xb, gen)
            out = model(prep(xb) if prep else xb)
            loss = F.cross_entropy(out, yb, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            step += 1
            if step >= total:
                return losses
        if log is not None and (ep + 1) % 5 == 0:
            log(f"  epoch {ep + 1}/{epochs} loss {np.mean(losses[-steps_per_epoch:]):.4f}")
    return losses


def build(factory: str, kwargs: dict[str, Any]) -> nn.Module:
    """Import ``module:function`` and call it with ``kwargs``."""
    mod, fn = factory.split(":")
    return getattr(importlib.import_module(mod), fn)(**kwargs)


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(i) for i in v]
    if isinstance(v, dict):
        return {k: _jsonable(i) for k, i in v.items()}
    return v


def save_artifacts(outdir: Path, name: str, model: nn.Module, factory: str, kwargs: dict[str, Any],
                   example_input: torch.Tensor, export_module: nn.Module | None = None,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``<name>.pt`` (state_dict), ``<name>.json`` and, if export succeeds, ``<name>.pt2``.

    ``export_module`` (default ``model``) is what gets exported with ``example_input``."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    model.eval()
    torch.save(model.state_dict(), outdir / f"{name}.pt")
    meta: dict[str, Any] = dict(name=name, factory=factory, kwargs=_jsonable(kwargs),
                                input_shape=list(example_input.shape), state_dict=f"{name}.pt")
    target = export_module if export_module is not None else model
    try:
        ep = torch.export.export(target.eval(), (example_input,))
        torch.export.save(ep, outdir / f"{name}.pt2")
        meta["exported_program"] = f"{name}.pt2"
    except Exception as e:  # pragma: no cover - reported, not hidden
        meta["export_error"] = f"{type(e).__name__}: {e}"
    meta.update(extra or {})
    (outdir / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def load_model(outdir: Path, name: str) -> nn.Module:
    """Rebuild ``<name>`` from its JSON (factory + kwargs) and load its state_dict; eval mode."""
    outdir = Path(outdir)
    meta = json.loads((outdir / f"{name}.json").read_text())
    model = build(meta["factory"], meta["kwargs"])
    model.load_state_dict(torch.load(outdir / meta["state_dict"], weights_only=True))
    return model.eval()


def train_all(outdir: Path = DEFAULT_OUT, names: list[str] | None = None, log=print) -> dict[str, Any]:
    """Train the digits models, save artefacts and the test split; return accuracies and times."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    xtr, xte, ytr, yte = load_split()
    np.savez_compressed(outdir / "digits_test.npz", x_test=xte, y_test=yte)
    xtr_t, ytr_t = torch.from_numpy(xtr), torch.from_numpy(ytr)
    xte_t, yte_t = torch.from_numpy(xte), torch.from_numpy(yte)
    results: dict[str, Any] = {}
    for name in names or list(MODELS):
        spec = MODELS[name]
        torch.manual_seed(SEED)
        model = build(spec["factory"], spec["kwargs"])
        log(f"training {name} ({sum(p.numel() for p in model.parameters())} params)")
        t0 = time.time()
        train_model(model, xtr_t, ytr_t, spec["epochs"], spec["lr"], spec["batch_size"], log=log)
        dt = time.time() - t0
        acc = evaluate(model, xte_t, yte_t)
        log(f"{name}: test accuracy {acc:.4f}, training {dt:.1f} s")
        save_artifacts(outdir, name, model, spec["factory"], spec["kwargs"], xte_t[:1],
                       extra=dict(test_accuracy=acc, train_seconds=round(dt, 1), seed=SEED,
                                  epochs=spec["epochs"], test_split="digits_test.npz"))
        results[name] = dict(accuracy=acc, seconds=dt)
    return results


def load_or_train(outdir: Path = DEFAULT_OUT, force: bool = False, log=print) -> dict[str, Any]:
    """Load the digits models and test split from ``outdir``, training whatever is missing.

    Returns ``{"models": {name: eval model}, "x_test": ndarray, "y_test": ndarray,
    "meta": {name: json dict}}``."""
    outdir = Path(outdir)
    missing = [n for n in MODELS if force or not ((outdir / f"{n}.json").exists()
                                                  and (outdir / f"{n}.pt").exists())]
    if missing or not (outdir / "digits_test.npz").exists():
        train_all(outdir, missing or list(MODELS), log=log)
    data = np.load(outdir / "digits_test.npz")
    return dict(models={n: load_model(outdir, n) for n in MODELS}, x_test=data["x_test"],
                y_test=data["y_test"],
                meta={n: json.loads((outdir / f"{n}.json").read_text()) for n in MODELS})


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--model", choices=list(MODELS), action="append")
    args = ap.parse_args(argv)
    res = train_all(args.out, args.model)
    for n, r in res.items():
        print(f"{n}: accuracy {r['accuracy']:.4f} in {r['seconds']:.1f} s")


if __name__ == "__main__":
    main()
