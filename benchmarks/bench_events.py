"""Throughput of the event-driven simulator (snncc.sim.events): synaptic events (synaptic
operations delivered) per second on Speck-sized CNNs, medians over repeats, 1 thread. Not a test.

    .venv/bin/python benchmarks/bench_events.py [--repeats 5] [--models a,b] [--batch 16]

Columns: build = time to compose the address tables (once per model); then per firing policy /
order: SynOps per event-loop run and SynOps/s (median, timed round-robin so load hits every case
alike). `ideal` delivers a burst of n spikes as one table lookup with multiplicity n (SynOps
counted n times); `greedy`/`speck` deliver every spike as its own event, every neuron updating and
firing after each contribution. The delivery loops are numba kernels (snncc.sim.events.kernels):
their JIT compile time is measured separately (a fresh process with an empty numba cache, and one
loading the cache) and never enters the throughput, which is timed after a warm-up run. Target:
>= 2e8 SynOps/s per core for ideal, greedy and speck on speck_cnn-small.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import torch

from snncc.frontend.loader import LoadedModel, trace
from snncc.passes.manager import run_pipeline
from snncc.sim.events import build_network, simulate

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import median_times, print_table  # noqa: E402

TARGET = 2e8

_JIT = ("import time; t0 = time.perf_counter(); from snncc.sim.events import kernels; t1 = time.perf_counter(); "
        "print(t1 - t0, kernels.compile_seconds())")


def jit_seconds() -> tuple[float, float]:
    """(cold: compile every kernel in a fresh process with an empty numba cache, cached: the same
    with the cache just written) wall seconds of the kernels' first calls."""
    out = []
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, NUMBA_CACHE_DIR=d)
        for _ in range(2):
            p = subprocess.run([sys.executable, "-c", _JIT], env=env, capture_output=True, text=True, check=True)
            out.append(float(p.stdout.split()[-1]))
    return out[0], out[1]


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
             ">= 2e8")]
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
        syn = [simulate(net, x, policy, order).synops for policy, order in CASES]  # also the warm-up
        ts = median_times([lambda p=p, o=o: simulate(net, x, p, o) for p, o in CASES], a.repeats)
        for (policy, order), n, t in zip(CASES, syn, ts):
            rate = n / t
            target = ("met" if rate >= TARGET else "MISSED") if name == "speck_cnn-small" else "-"
            rows.append((name, f"{policy}/{order}", f"{t_build:.2f}", f"{net.synapses:,}", f"{int(x.sum()):,}",
                         f"{n:,}", f"{t:.4f}", f"{rate:,.0f}", target))
    print_table(f"snncc.sim.events throughput (target >= 2e8 SynOps/s per core on speck_cnn-small), float64, "
                f"1 thread, batch {a.batch}, input rate {a.rate:g}, median of {a.repeats} repeats (round-robin)",
                rows, left=2)
    cold, cached = jit_seconds()
    print(f"numba JIT (not in the throughput): {cold:.2f} s compiling every kernel in a fresh process "
          f"(empty cache), {cached:.2f} s loading them from the cache (cache=True)")


if __name__ == "__main__":
    main()
