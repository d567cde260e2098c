"""snncc's event-driven simulation against sinabs' time-stepped simulation of the same Speck
network (issue 8). Not a test.

    .venv/bin/python benchmarks/bench_sinabs.py [--repeats 5] [--batch 16] [--T 4]

The network: `snncc.models.speck_cnn` (spike input, random seeded weights) deployed and lowered by
the Speck backend; sinabs runs the real `SpeckNetwork` (nn.Conv2d + IAFSqueeze with MaxSpike(D)
and MembraneSubtract: the deployed graph's integer model, DESIGN 3's `ideal` policy, one sinabs
step per timestep), snncc runs `snncc.sim.events.simulate(..., policy='ideal')` over the composed
address tables, built once like the sinabs module. Both in float64 on the same Poisson spike
input (one row per input rate); the spike counts of every population are checked equal before timing. Columns: median
seconds per batch, samples per second, SynOps (event simulation's count), the ratio, and the event
simulator under the chip's own `speck` policy (one spike per input event) for reference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

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
    ap.add_argument("--rates", default="0.02,0.1",
                    help="mean spike counts per input site and timestep (comma-separated): event-driven work "
                         "scales with activity, time-stepped work does not")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    from snncc.models.speck import speck_cnn
    from snncc_speck import sinabs_net
    from snncc_speck.target import analyse

    rows = [("model", "rate", "T", "batch", "sinabs s", "events ideal s", "events speck s", "sinabs img/s",
             "events img/s", "SynOps/batch", "events/sinabs speed", "counts")]
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
        rows.append((f"speck_cnn-{size}", f"{rate:g}", str(a.T), str(a.batch), f"{t_s:.4f}", f"{t_e:.4f}", f"{t_k:.4f}",
                     f"{a.batch / t_s:,.0f}", f"{a.batch / t_e:,.0f}", f"{ev.synops:,}", f"{t_s / t_e:.2f}x",
                     f"{'equal' if same else 'DIFFER'} ({common} populations)"))
    print_table(f"sinabs time-stepped vs snncc event-driven simulation, float64, 1 thread, median of "
                f"{a.repeats} (round-robin)", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
