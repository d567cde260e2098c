"""snncc's simulators against Lava's CPU simulation (lava-nc 0.10.0, Loihi2SimCfg) on the same
deployed graph: wall time per batch, medians over repeats, and the ratio Lava / snncc. Not a test.

    .venv/bin/python benchmarks/bench_lava.py [--repeats 3] [--batch 8] [--model ConvChain]

Rows: snncc reference executor (`snncc.sim.reference.run`, float64), the T x D synchronous
simulator (`snncc.sim.sync.simulate(graph, x, "exact")`), snncc_lava's integer reference
(`fixed.simulate_fixed`), and Lava floating_pt / fixed_pt runs of the lowered network (compile +
run + read-back, as a user pays it; the batch streams through one run). Each row also checks that
its spike counts equal the row it must equal (float rows: the reference; fixed_pt: simulate_fixed).
Target: snncc >= 100x faster than Lava.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from nets import ConvChain, ResidualSepConv, randomize_bn  # noqa: E402

from snncc.frontend.loader import LoadedModel, trace  # noqa: E402
from snncc.passes.manager import run_pipeline  # noqa: E402
from snncc.sim import reference, sync  # noqa: E402
from snncc_lava.fixed import quantize, simulate_fixed  # noqa: E402
from snncc_lava.lower import run_network  # noqa: E402
from snncc_lava.network import build  # noqa: E402

MODELS = {"ConvChain": ConvChain, "ResidualSepConv": ResidualSepConv}


def deployed(cls):
    torch.manual_seed(0)
    return run_pipeline(trace(LoadedModel(randomize_bn(cls(), 0), None, cls.input_shape)), "deploy").graph


def timed(fn, repeats):
    ts, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), out


def equal(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k].to(torch.float64), b[k].to(torch.float64)) for k in b)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--model", default="ConvChain", choices=sorted(MODELS))
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    g = deployed(MODELS[a.model])
    x = torch.rand((a.batch,) + MODELS[a.model].input_shape, generator=torch.Generator().manual_seed(0),
                   dtype=torch.float64) * 2
    net = build(g)
    q = quantize(net)
    ref = reference.run(g, x, torch.float64)
    fx = simulate_fixed(q, x)
    rows = []
    for name, fn, check in [
        ("snncc reference.run (float64)", lambda: reference.run(g, x, torch.float64).counts, ref.counts),
        ("snncc sync.simulate exact", lambda: sync.simulate(g, x, "exact").counts, ref.counts),
        ("snncc_lava simulate_fixed (int)", lambda: simulate_fixed(q, x).counts, fx.counts),
        ("Lava floating_pt", lambda: run_network(net, x, "burst").counts, ref.counts),
        ("Lava fixed_pt", lambda: run_network(net, x, "burst", q).counts, fx.counts),
    ]:
        reps = a.repeats if name.startswith("Lava") else max(a.repeats, 5)
        t, counts = timed(fn, reps)
        rows.append((name, t, equal(counts, check)))
    print(f"model {a.model}, batch {a.batch}, T {g.T}, D {net.D}, populations {len(net.populations)}, "
          f"synapses {sum(int((p.weight != 0).sum()) for p in net.projections)}, 1 thread, medians")
    print(f"{'simulator':34s} {'seconds':>10s} {'ms/sample':>10s}  counts")
    for name, t, ok in rows:
        print(f"{name:34s} {t:10.4f} {1e3 * t / a.batch:10.2f}  {'equal' if ok else 'DIFFER'}")
    lava_f, lava_x = rows[3][1], rows[4][1]
    print()
    for name, t, _ in rows[:3]:
        verdict = "met" if min(lava_f, lava_x) / t >= 100 else "MISSED"
        print(f"Lava floating_pt / {name}: {lava_f / t:8.0f}x   Lava fixed_pt / {name}: {lava_x / t:8.0f}x"
              f"   target >= 100x: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
