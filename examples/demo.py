"""The end-to-end demo (README's first command): load or train the bundled digits models,
compile them for every installed target, verify every level against PyTorch on the test split,
simulate the deployed graph and print the report.

Run: `bash scripts/demo.sh` (or `.venv/bin/python examples/demo.py [--out demo-out] [--samples N]`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from snncc.compiler import compile_model  # noqa: E402
from snncc.errors import SnnccError  # noqa: E402
from snncc.frontend.loader import LoadedModel  # noqa: E402
from snncc.passes.manager import run_pipeline  # noqa: E402
from snncc.sim.reference import run  # noqa: E402
from snncc.targets import available  # noqa: E402
from snncc.verify import compare  # noqa: E402


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "demo-out"), help="where compiled artefacts go")
    ap.add_argument("--samples", type=int, default=0, help="limit the test split (0: all)")
    args = ap.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    from examples.digits.train import load_or_train

    t0 = time.time()
    data = load_or_train(log=lambda m: print(f"[digits] {m}", flush=True))
    x = torch.as_tensor(data["x_test"], dtype=torch.float64)
    y = torch.as_tensor(data["y_test"])
    if args.samples:
        x, y = x[: args.samples], y[: args.samples]
    targets = sorted(set(available()) | {"sim"})
    print(f"\n== snncc demo: {len(x)} test digits, targets: {', '.join(targets)} ==")
    rows = []
    for name, model in data["models"].items():
        lm = LoadedModel(model.eval(), None, tuple(x.shape[1:]), 1, f"{name} (examples/digits)")
        print(f"\n--- {name} ---")
        for tgt in targets:
            try:
                res = compile_model(lm, target=tgt)
            except SnnccError as e:
                print(f"[{tgt}] not deployable: {e.one_line()}")
                continue
            out = os.path.join(args.out, f"{name}-{tgt}")
            res.write(out)
            print(f"[{tgt}] {res.summary()} -> {out}")
        traced = res.traced if "res" in locals() else None
        if traced is None:
            continue
        folded = run_pipeline(traced, "fold").graph
        deployed = run_pipeline(traced, "deploy").graph
        rep = compare(lm.eager, {"traced": traced, "folded": folded, "deployed": deployed}, x)
        print(rep.table())
        with torch.no_grad():
            eager_acc = accuracy(model(x.float()), y)
        dep = run(deployed, x)
        rows.append((name, eager_acc, accuracy(dep.output, y), rep.ok,
                     int(sum(c.sum() for c in dep.counts.values()))))
    print("\n== report ==")
    print(f"{'model':<16}{'PyTorch acc':>12}{'deployed acc':>14}{'levels agree':>14}{'spikes':>12}")
    for name, a, b, ok, spikes in rows:
        print(f"{name:<16}{a:>12.2%}{b:>14.2%}{('yes' if ok else 'NO'):>14}{spikes:>12}")
    print(f"\ndone in {time.time() - t0:.1f} s; artefacts in {args.out}")
    return 0 if all(r[3] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
