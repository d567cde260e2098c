"""MAC/AC counts and 45 nm energy of the paper's E-SpikeFormer sizes (docs/energy.md).

For every size: build `snncc.models.e_spikeformer(size)` at 224x224 with seeded random weights
and BatchNorm statistics randomised so neurons fire (the recipe of tests/nets.py `randomize_bn`),
trace, deploy (synaptic normal form), count dense-equivalent MACs (the model's FLOPs as an ANN:
every conv, linear and attention matmul at full density, on the traced graph), then run the
reference executor on one seeded 3x224x224 input (batch 1) through `snncc.estimate.Estimator`
and collect per layer group: host MACs (encoding layer), SOPs and spike products (ACs), spikes.

Each size's result goes to RESULTS/energy_<size>.json; the Markdown table of every result found
there is printed (and written with --markdown). Not a test: the large sizes take minutes.

    .venv/bin/python benchmarks/energy_table.py 5.1M 10M 19M            # run, then print the table
    .venv/bin/python benchmarks/energy_table.py --table-only --markdown docs/energy_table.md
"""

from __future__ import annotations


import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import load_results  # noqa: E402
from nets import randomize_bn  # noqa: E402  (BN statistics chosen so neurons fire)

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "energy")
SIZES = ("5.1M", "10M", "19M", "83M", "173M")
E_MAC, E_AC = 4.6e-12, 0.9e-12  # 45 nm, Horowitz ISSCC 2014 (snncc/profiles/45nm.json)

# module prefixes of ESpikeFormer -> layer group
GROUPS = [("stage 1 (conv, C0/2 and C0, incl. 7x7 stem)", ("downsample1_1", "stage1_1", "downsample1_2", "stage1_2")),
          ("stage 2 (conv, C1)", ("downsample2", "stage2")),
          ("stage 3 (transformer, C2)", ("downsample3", "stage3")),
          ("stage 4 (transformer, C3)", ("downsample4", "stage4")),
          ("head (spike mean + linear)", ("head", "output", "mean"))]


def group_of(name: str) -> str:
    best, blen = GROUPS[-1][0], -1
    for label, prefixes in GROUPS:
        for p in prefixes:
            if (name == p or name.startswith(p + "_") or name.startswith(p + ".")) and len(p) > blen:
                best, blen = label, len(p)
    return best


def dense_equivalent_macs(g) -> dict[str, int]:
    """Per traced node: MACs of the ANN counterpart (conv, linear, attention matmuls at full density)."""
    out = {}
    for n in g.nodes:
        if n.op == "conv":
            out[n.name] = math.prod(n.shape) * math.prod(n.params["weight"].shape[1:])
        elif n.op == "linear":
            out[n.name] = math.prod(n.shape) * n.params["weight"].shape[1]
        elif n.op == "spike_product":
            shapes = [g[i].shape for i in n.inputs]
            batch = math.prod(n.shape[:-2])
            if len(shapes) == 2:
                (r, k), (_, c) = shapes[0][-2:], shapes[1][-2:]
                out[n.name] = batch * r * k * c
            else:
                (r, k), (_, m), (_, c) = shapes[0][-2:], shapes[1][-2:], shapes[2][-2:]
                if n.attrs["order"] == "left":  # (a b) c
                    out[n.name] = batch * (r * k * m + r * m * c)
                else:  # a (b c)
                    out[n.name] = batch * (k * m * c + r * k * c)
    return out


def run_size(size: str, img: int = 224, seed: int = 0, probe_limit: int | None = 0, frontend: str = "auto") -> dict:
    from snncc.estimate import Estimator, analyze
    from snncc.frontend.loader import LoadedModel, trace
    from snncc.models import e_spikeformer
    from snncc.models.e_spikeformer import count_parameters
    from snncc.passes.manager import run_pipeline

    t = {}
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    m = randomize_bn(e_spikeformer(size, img_size=img), seed)
    params = count_parameters(m)
    g = trace(LoadedModel(m, None, (3, img, img)), frontend=frontend)
    t["trace"] = time.perf_counter() - t0
    dense = dense_equivalent_macs(g)
    t1 = time.perf_counter()
    d = run_pipeline(g, "deploy").graph
    t["deploy"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    plan = analyze(d, probe_limit=probe_limit)
    est = Estimator(plan, "45nm")
    inexact = sum(1 for p in plan.projections if p.kind == "synaptic" and not p.exact)
    t["analyze"] = time.perf_counter() - t2
    x = torch.randn((1, 3, img, img), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    t3 = time.perf_counter()
    est.observe(x)
    t["observe"] = time.perf_counter() - t3
    rep = est.report()
    groups: dict[str, dict] = {label: dict(dense_macs=0, host_macs=0.0, sops=0.0, spike_products=0.0, spikes=0.0,
                                           neurons=0, updates=0.0) for label, _ in GROUPS}
    for name, v in dense.items():
        groups[group_of(name)]["dense_macs"] += v
    for p in rep.populations:
        gr = groups[group_of(p.name)]
        gr["host_macs"] += p.macs_in
        gr["sops"] += p.sops_in
        gr["spike_products"] += p.spike_products_in
        if p.role == "fire":
            gr["spikes"] += p.spikes
            gr["neurons"] += p.neurons
            gr["updates"] += p.neuron_updates
    t["total"] = time.perf_counter() - t0
    return {"size": size, "img": img, "seed": seed, "frontend": frontend, "parameters": params, "T": d.T,
            "D": sorted({n.attrs["D"] for n in d.neurons()}), "populations": len(d.neurons()),
            "probe_limit": probe_limit, "upper_bound_projections": inexact,
            "synaptic_projections": sum(1 for p in plan.projections if p.kind == "synaptic"),
            "groups": groups, "totals": dict(rep.totals), "energy": dict(rep.energy),
            "notes": list(rep.notes), "seconds": t, "torch_threads": torch.get_num_threads()}


def _si(v: float) -> str:
    for unit, f in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= f:
            return f"{v / f:.3f} {unit}"
    return f"{v:.0f}"


def _mj(j: float) -> str:
    return f"{j * 1e3:.4f} mJ" if j >= 1e-4 else f"{j * 1e6:.3f} uJ"


def table(results: list[dict]) -> str:
    lines = ["| model | params | group | dense-equivalent MACs (ANN FLOPs) | host MACs (encoding) | SOPs (AC) "
             "| spike products (AC) | firing rate | energy 45 nm (MAC x 4.6 pJ + AC x 0.9 pJ) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for label, gr in r["groups"].items():
            fr = gr["spikes"] / gr["updates"] if gr["updates"] else 0.0
            e = E_MAC * gr["host_macs"] + E_AC * (gr["sops"] + gr["spike_products"])
            lines.append(f"| {r['size']} | {r['parameters'] / 1e6:.2f}M | {label} | {_si(gr['dense_macs'])} | "
                         f"{_si(gr['host_macs'])} | {_si(gr['sops'])} | {_si(gr['spike_products'])} | {fr:.3f} | "
                         f"{_mj(e)} |")
        dense = sum(gr["dense_macs"] for gr in r["groups"].values())
        t = r["totals"]
        fr = t["active_updates"] / t["neuron_updates"] if t["neuron_updates"] else 0.0
        lines.append(f"| **{r['size']}** | **{r['parameters'] / 1e6:.2f}M** | **total** | **{_si(dense)}** | "
                     f"**{_si(t['macs'])}** | **{_si(t['sops'])}** | **{_si(t['spike_products'])}** | **{fr:.3f}** | "
                     f"**{_mj(r['energy']['total'])}** (ANN at 4.6 pJ/MAC: {_mj(E_MAC * dense)}) |")
    runs = ["", "| model | populations | D | synaptic projections (fan-out upper bound) | trace (s) | deploy (s) "
            "| analyze (s) | reference run, batch 1 (s) |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        s = r["seconds"]
        runs.append(f"| {r['size']} | {r['populations']} | {','.join(map(str, r['D']))} | "
                    f"{r.get('synaptic_projections', '?')} ({r.get('upper_bound_projections', '?')}) | {s['trace']:.0f} | "
                    f"{s['deploy']:.0f} | {s['analyze']:.0f} | {s['observe']:.0f} |")
    return "\n".join(lines + runs) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sizes", nargs="*", help=f"sizes to run ({', '.join(SIZES)})")
    ap.add_argument("--img", type=int, default=224)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", default=RESULTS, help="folder of per-size JSON results")
    ap.add_argument("--table-only", action="store_true", help="only print the table of stored results")
    ap.add_argument("--markdown", help="also write the table to this file")
    ap.add_argument("--frontend", default="auto", choices=["auto", "export", "fx"], help="snncc front end")
    ap.add_argument("--probe-limit", type=int, default=0,
                    help="fan-out probe budget (snncc.estimate.analyze): 0 keeps path counts (upper bounds) for "
                         "fan-outs that are not provably exact; -1 probes like the estimator's default (slow)")
    a = ap.parse_args(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if not a.table_only:
        from snncc import artifact

        for size in a.sizes:
            print(f"[energy_table] {size} at {a.img}x{a.img} ...", file=sys.stderr, flush=True)
            r = run_size(size, a.img, a.seed, None if a.probe_limit < 0 else a.probe_limit, a.frontend)
            print(f"[energy_table] {size}: {json.dumps(r['seconds'])}", file=sys.stderr, flush=True)
            artifact.write_text(os.path.join(a.results, f"energy_{size}.json"), json.dumps(r, indent=1) + "\n")
    text = table(load_results(a.results, "energy_", SIZES))
    print(text)
    if a.markdown:
        from snncc import artifact

        artifact.write_text(a.markdown, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
