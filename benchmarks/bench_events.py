"""Throughput of the event-driven simulator (snncc.sim.events): synaptic events (synaptic
operations delivered) per second on Speck-sized CNNs, medians over repeats, 1 thread. Not a test.

    .venv/bin/python benchmarks/bench_events.py [--repeats 5] [--models a,b] [--batch 16]

Columns: build = time to compose the address tables (once per model); then per firing policy /
order: SynOps per event-loop run and SynOps/s (median). `ideal` delivers a burst of n spikes as one
table lookup with multiplicity n (SynOps counted n times); `greedy`/`speck` deliver every spike
as its own event and process every neuron's contributions in order (one stable sort by target per
step, then a rank-by-rank loop on contiguous slices), so they are slower. Target: >= 5e6 SynOps/s
per core (speck_cnn-small, 2 cores shared: about 1.2e7 for greedy/speck, 4.5e7 for ideal).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

from snncc.frontend.loader import LoadedModel, trace
from snncc.passes.manager import run_pipeline
from snncc.sim.events import build_network, simulate

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import print_table  # noqa: E402


def models():
    from snncc.models.speck import speck_cnn

    return {
        "speck_cnn-tiny": (lambda: speck_cnn("tiny"), (2, 16, 16)),
        "speck_cnn-small": (lambda: speck_cnn("small"), (2, 32, 32)),
    }


CASES = [("ideal", "layer"), ("ideal", "random"), ("greedy", "layer"), ("speck", "layer"), ("speck", "interleaved")]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--models", default=None, help="comma-separated subset")
    ap.add_argument("--rate", type=float, default=0.1, help="mean spike count per input site (Poisson)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    table = models()
    names = a.models.split(",") if a.models else list(table)
    rows = [("model", "policy/order", "build s", "synapses", "in events", "SynOps/run", "run s", "SynOps/s",
             ">= 5e6")]
    for name in names:
        make, shape = table[name]
        torch.manual_seed(0)
        m = make().eval()
        g = run_pipeline(trace(LoadedModel(m, None, shape), input_kind="spike"), "deploy").graph
        t0 = time.perf_counter()
        net = build_network(g)
        t_build = time.perf_counter() - t0
        gen = torch.Generator().manual_seed(1)
        x = torch.poisson(torch.full((a.batch, *shape), a.rate), generator=gen).clamp(max=4).double()
        for policy, order in CASES:
            r = simulate(net, x, policy, order)  # warm-up
            ts = []
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                simulate(net, x, policy, order)
                ts.append(time.perf_counter() - t0)
            t = statistics.median(ts)
            rows.append((name, f"{policy}/{order}", f"{t_build:.2f}", f"{net.synapses:,}", f"{int(x.sum()):,}",
                         f"{r.synops:,}", f"{t:.3f}", f"{r.synops / t:,.0f}", "met" if r.synops / t >= 5e6 else "MISSED"))
    print_table(f"snncc.sim.events throughput (target >= 5e6 SynOps/s per core), float64, 1 thread, batch "
                f"{a.batch}, median of {a.repeats} repeats", rows, left=2)


if __name__ == "__main__":
    main()
