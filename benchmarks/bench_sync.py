"""Throughput of the synchronous T x D simulator (snncc.sim.sync) against the plain PyTorch eager
forward of the same model on the same batch: images/s, medians over repeats, and the ratio
simulator / eager. Not a test.

    .venv/bin/python benchmarks/bench_sync.py [--repeats 7] [--dtype float32|float64] [--models a,b]

Both sides are built once outside the timing: the eager module, and one `sync.Simulator` per
graph (parameter tensors and tree constants), as a user running many batches would.

Columns: eager = the original nn.Module in float32 under no_grad; exact = exact schedule
(accumulate='window', the reference's ops on window counts, trains only as counts histograms);
exact-sub = exact schedule integrating sub-step by sub-step (D-fold batch through every
projection); streaming = streaming schedule (D-fold batch plus a D-step IF loop per population).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from nets import Attention, ConvChain, ResidualSepConv, randomize_bn  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import median_times, print_table  # noqa: E402

from snncc.frontend.loader import LoadedModel, trace  # noqa: E402
from snncc.nn import reset_state  # noqa: E402
from snncc.passes.manager import run_pipeline  # noqa: E402
from snncc.sim.sync import Simulator  # noqa: E402


def models():
    from snncc.models.speck import speck_cnn

    return {
        "ConvChain": (lambda: randomize_bn(ConvChain()), (2, 8, 8), 256),
        "ResidualSepConv": (lambda: randomize_bn(ResidualSepConv()), (3, 8, 8), 256),
        "Attention": (lambda: randomize_bn(Attention(scale=1.0)), (16, 8), 256),
        "speck_cnn-small": (lambda: speck_cnn("small").eval(), (2, 32, 32), 64),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--models", default=None, help="comma-separated subset")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 default: 2 threads on a loaded 2-core machine made timings erratic)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    dtype = getattr(torch, a.dtype)
    table = models()
    names = a.models.split(",") if a.models else list(table)
    rows = [("model", "batch", "D", "S ex/st", "eager img/s", "exact img/s", "exact-sub img/s",
             "streaming img/s", "exact/eager", "sub/eager", "stream/eager", "exact <= 1.5x", "stream <= 1.5Dx")]
    for name in names:
        make, shape, B = table[name]
        torch.manual_seed(0)
        m = make().eval()
        g = run_pipeline(trace(LoadedModel(m, None, shape)), "deploy").graph
        x = torch.rand(B, *shape) * 3 if name.startswith("speck") else torch.randn(B, *shape) * 2
        xd = x.to(dtype)

        def eager():
            with torch.no_grad():
                reset_state(m)
                m(x)

        sim = Simulator(g, dtype)  # built once, like the eager module
        t_e, t_x, t_s, t_st = median_times([
            eager,
            lambda: sim.run(xd, "exact"),
            lambda: sim.run(xd, "exact", accumulate="substep"),
            lambda: sim.run(xd, "streaming")], a.repeats)
        S_ex = sim.run(xd[:1], "exact").latency_substeps
        S_st = sim.run(xd[:1], "streaming").latency_substeps
        D = g.neurons()[0].attrs["D"]
        ips = [B / t for t in (t_e, t_x, t_s, t_st)]
        ex_ok, st_ok = t_x <= 1.5 * t_e, t_st <= 1.5 * D * t_e  # the targets, on time per batch
        rows.append((name, str(B), str(D), f"{S_ex}/{S_st}", *(f"{v:,.0f}" for v in ips),
                     f"{ips[1] / ips[0]:.3f}", f"{ips[2] / ips[0]:.3f}", f"{ips[3] / ips[0]:.3f}",
                     "met" if ex_ok else "MISSED", "met" if st_ok else "MISSED"))
    print_table(f"snncc.sim.sync throughput, {a.dtype}, {a.threads} threads, median of {a.repeats} repeats "
                f"(round-robin)", rows)


if __name__ == "__main__":
    main()
