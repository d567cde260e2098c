"""snncc's event-driven simulation against sinabs' time-stepped simulation of the same Speck
network. Not a test.

    .venv/bin/python benchmarks/bench_sinabs.py [--repeats 5] [--batch 16] [--T 4]

The network: `snncc.models.speck_cnn` (spike input, random seeded weights) deployed and lowered by
the Speck backend; sinabs runs the real `SpeckNetwork` (nn.Conv2d + IAFSqueeze with MaxSpike(D)
and MembraneSubtract: the deployed graph's integer model, docs/design.md §3's `ideal` policy, one sinabs
step per timestep), snncc runs `snncc.sim.events.simulate(..., policy='ideal')` over the composed
address tables, built once like the sinabs module. Both in float64 on the same Poisson spike
input (one row per input rate); the spike counts of every population are checked equal before timing. Columns: median
seconds per batch, samples per second, SynOps (event simulation's count), the ratios, and the event
simulator under the chip's own `speck` policy (one spike per input event). Targets: the
event simulation faster than sinabs at input rate 0.02, and the crossover rate (where events stop
beating sinabs: the ratio's log-log interpolation through 1 between the two rates around it).
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import torch

from snncc.frontend.loader import LoadedModel, trace
from snncc.passes.manager import run_pipeline
from snncc.sim.events import build_network, simulate

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import median_times, print_table  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--T", type=int, default=4, help="timesteps per sample")
    ap.add_argument("--rates", default="0.005,0.01,0.02,0.05,0.1,0.2",
                    help="mean spike counts per input site and timestep (comma-separated): event-driven work "
                         "scales with activity, time-stepped work does not")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    from snncc.models.speck import speck_cnn
    from snncc_speck import sinabs_net
    from snncc_speck.target import analyse

    rows = [("model", "rate", "T", "batch", "sinabs s", "events ideal s", "events speck s", "sinabs img/s",
             "events img/s", "SynOps/batch", "ideal/sinabs speed", "speck/sinabs speed", "counts", "faster at 0.02")]
    ratios: dict[str, list[tuple[float, float, float]]] = {}
    cases = [(size, shape, float(r)) for size, shape in (("tiny", (2, 16, 16)), ("small", (2, 32, 32)))
             for r in a.rates.split(",")]
    for size, shape, rate in cases:
        torch.manual_seed(0)
        g = run_pipeline(trace(LoadedModel(speck_cnn(size).eval(), None, shape), input_kind="spike"), "deploy").graph
        g.T = a.T
        an = analyse(g)
        if an.problems:
            print(f"speck_cnn-{size} does not fit Speck: {an.problems}")
            return 1
        spec, arrays = sinabs_net.network_spec(an.lowered, g.T, None)
        snet = sinabs_net.SpeckNetwork(spec, arrays, dtype=torch.float64)
        enet = build_network(g)
        gen = torch.Generator().manual_seed(1)
        x = torch.poisson(torch.full((a.T, a.batch) + shape, rate), generator=gen).clamp(max=g.neurons()[0].attrs["D"])
        x = x.double()
        xs = sinabs_net.to_batch_major(x)
        sc = snet.counts(xs)
        ev = simulate(enet, x, "ideal", "layer")
        same = all(torch.equal(sc[k].reshape(ev.counts[k].shape).double(), ev.counts[k].double())
                   for k in ev.counts if k in sc)
        common = sum(1 for k in ev.counts if k in sc)
        t_s, t_e, t_k = median_times([lambda: snet.counts(xs), lambda: simulate(enet, x, "ideal", "layer"),
                                      lambda: simulate(enet, x, "speck", "layer")], a.repeats)
        ratios.setdefault(f"speck_cnn-{size}", []).append((rate, t_s / t_e, t_s / t_k))
        target = ("met" if t_s / t_e > 1 else "MISSED") if abs(rate - 0.02) < 1e-12 else "-"
        rows.append((f"speck_cnn-{size}", f"{rate:g}", str(a.T), str(a.batch), f"{t_s:.4f}", f"{t_e:.4f}", f"{t_k:.4f}",
                     f"{a.batch / t_s:,.0f}", f"{a.batch / t_e:,.0f}", f"{ev.synops:,}", f"{t_s / t_e:.2f}x",
                     f"{t_s / t_k:.2f}x", f"{'equal' if same else 'DIFFER'} ({common} populations)", target))
    print_table(f"sinabs time-stepped vs snncc event-driven simulation, float64, 1 thread, median of "
                f"{a.repeats} (round-robin)", rows)
    for model, rs in ratios.items():
        print(f"{model}: crossover input rate (events stop beating sinabs): ideal {crossover(rs, 1)}, "
              f"speck {crossover(rs, 2)}")
    return 0


def crossover(rs: list[tuple[float, ...]], col: int) -> str:
    """The input rate where the speed ratio (column `col`) falls through 1: log-log interpolation
    between the two measured rates around it."""
    rs = sorted(rs)
    for lo, hi in zip(rs, rs[1:]):
        if lo[col] >= 1 > hi[col]:
            f = math.log(lo[col]) / (math.log(lo[col]) - math.log(hi[col]))
            return f"{math.exp(math.log(lo[0]) + f * (math.log(hi[0]) - math.log(lo[0]))):.3g}"
    if rs and all(r[col] >= 1 for r in rs):
        return f"above {rs[-1][0]:g} (faster at every measured rate)"
    if rs and all(r[col] < 1 for r in rs):
        return f"below {rs[0][0]:g} (slower at every measured rate)"
    return "not monotone in the measured rates: " + ", ".join(f"{r[0]:g}: {r[col]:.2f}x" for r in rs)


if __name__ == "__main__":
    sys.exit(main())
