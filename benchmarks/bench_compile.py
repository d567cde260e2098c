"""Compile-time benchmark: snncc trace + deploy pipeline next to
`torch.export` alone, per model, medians over repeats, ratio measured in the same run.

Run: `.venv/bin/python benchmarks/bench_compile.py [--sizes tiny-test,5.1M] [--repeats 3]`.
Target: compile <= 3x export time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from nets import Attention, ConvChain, ResidualSepConv, randomize_bn  # noqa: E402
from snncc.frontend.torch_export import export_module, from_exported  # noqa: E402
from snncc.models import count_parameters, e_spikeformer  # noqa: E402
from snncc.passes.manager import run_pipeline  # noqa: E402


def models(sizes):
    yield "ConvChain", randomize_bn(ConvChain()), (2, 8, 8)
    yield "ResidualSepConv", randomize_bn(ResidualSepConv()), (3, 8, 8)
    yield "Attention", randomize_bn(Attention()), (16, 8)
    for s in sizes:
        img = 32 if s.startswith("tiny") else 224
        yield f"E-SpikeFormer-{s}", e_spikeformer(s).eval(), (3, img, img)


def time_compile(m, x, repeats: int) -> tuple[float, float]:
    """Median seconds of torch.export alone and of snncc's trace + deploy pipeline on its result."""
    te, tc = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ep = export_module(m, x)
        t1 = time.perf_counter()
        run_pipeline(from_exported(ep), "deploy")
        t2 = time.perf_counter()
        te.append(t1 - t0)
        tc.append(t2 - t1)
    return statistics.median(te), statistics.median(tc)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="tiny-test,5.1M")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print(f"{'model':<24}{'params':>12}{'export s':>10}{'snncc s':>10}{'ratio':>8}  target <= 3x")
    for name, m, shape in models([s for s in args.sizes.split(",") if s]):
        e, c = time_compile(m, torch.zeros((2,) + shape), args.repeats)
        ratio = (e + c) / e
        print(f"{name:<24}{count_parameters(m):>12,}{e:>10.2f}{e + c:>10.2f}{ratio:>8.2f}  "
              f"{'met' if ratio <= 3 else 'MISSED'}")


if __name__ == "__main__":
    main()
