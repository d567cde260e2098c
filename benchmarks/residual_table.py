"""Architecture SOPs vs deployed SOPs and synapses of E-SpikeFormer, fan-in vs relay.

For every size: the `energy_table.py` recipe (`snncc.models.e_spikeformer(size)` at 224x224, seeded
random weights, BatchNorm randomised so neurons fire, one seeded 3x224x224 input, reference
executor at batch 1, fan-out maps with probe_limit 0), traced once and deployed three ways:
- fan-in: `residual_lowering` without a profile (every stream fan-in, the form before relays
  and the only one for Speck);
- sim: priced with the sim target's profile (45nm, graded messages);
- loihi: priced with the loihi profile (what `snncc compile --target loihi` deploys).
Each deployment is estimated (`snncc.estimate.Estimator`, 45nm figures) for architecture SOPs
(the trained network's own synaptic ops), deployed SOPs, architecture and deployed synapses, relay
messages, latency, and the paper's 45nm energy on both; per layer group too. The goal
is deployed SOPs and synapses <= 1.15 x the architecture's on the sim and loihi targets.

Results go to RESULTS/residual_<size>.json; the Markdown tables of every stored result are printed
(and written with --markdown). Not a test: CPU heavy (about a minute per deployment at 19M).

    .venv/bin/python benchmarks/residual_table.py 5.1M 19M 83M
    .venv/bin/python benchmarks/residual_table.py --table-only --markdown /tmp/residual.md
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from common import load_results, print_table  # noqa: E402
from energy_table import GROUPS, SIZES, _mj, _si, group_of  # noqa: E402
from nets import randomize_bn  # noqa: E402  (BN statistics chosen so neurons fire)

RESULTS = os.path.join(HERE, "results", "residual")
GOAL = 1.15
FORMS = (("fan-in", None), ("sim (45nm)", "45nm"), ("loihi", "loihi"))


def run_size(size: str, img: int = 224, seed: int = 0, probe_limit: int = 0) -> dict:
    from snncc.estimate import Estimator, analyze
    from snncc.frontend.loader import LoadedModel, trace
    from snncc.models import e_spikeformer
    from snncc.models.e_spikeformer import count_parameters
    from snncc.passes.manager import run_pipeline

    torch.manual_seed(seed)
    m = randomize_bn(e_spikeformer(size, img_size=img), seed)
    params = count_parameters(m)
    t0 = time.perf_counter()
    g = trace(LoadedModel(m, None, (3, img, img)))
    trace_s = time.perf_counter() - t0
    x = torch.randn((1, 3, img, img), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    forms = {}
    for label, profile in FORMS:
        t1 = time.perf_counter()
        run = run_pipeline(g, "deploy", options={"residual_lowering": {"profile": profile}})
        d = run.graph
        t2 = time.perf_counter()
        est = Estimator(analyze(d, probe_limit=probe_limit), "45nm")
        est.observe(x)
        rep = est.report()
        t3 = time.perf_counter()
        groups = {lab: {"architecture_sops": 0.0, "sops": 0.0, "spike_products": 0.0, "host_macs": 0.0}
                  for lab, _ in GROUPS}
        plan = est.plan

        def group(name: str) -> str:  # a relay is named after its add node: use its first reader's group
            while plan.populations[name].role == "relay" and plan.populations[name].destinations:
                name = plan.populations[name].destinations[0]
            return group_of(name)

        for p in rep.populations:
            gr = groups[group(p.name)]
            gr["architecture_sops"] += p.architecture_sops_in
            gr["sops"] += p.sops_in
            gr["spike_products"] += p.spike_products_in
            gr["host_macs"] += p.macs_in
        streams = run.reports.get("residual_lowering", {}).get("streams", [])
        forms[label] = {
            "profile": profile, "nodes": len(d), "relays": sum(n.op == "relay" for n in d),
            "streams": [{"nodes": len(s["nodes"]), "choice": s["choice"], "why": s["why"]} for s in streams],
            "totals": dict(rep.totals), "paper": dict(rep.paper), "latency_substeps": rep.latency_substeps,
            "groups": groups, "seconds": {"deploy": t2 - t1, "estimate": t3 - t2}}
        del run, d, est, rep, plan
    return {"size": size, "img": img, "seed": seed, "parameters": params, "probe_limit": probe_limit,
            "trace_seconds": trace_s, "forms": forms,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
            "torch_threads": torch.get_num_threads()}


def _ratio(a: float, b: float) -> str:
    r = a / b if b else float("nan")
    return f"{r:.3f}x"


def _met(a: float, b: float) -> str:
    return "met" if b and a / b <= GOAL else "MISSED"


def table(results: list[dict]) -> str:
    lines = ["| model | deployed as | streams relayed | deployed SOPs | architecture SOPs | SOPs ratio | "
             f"<= {GOAL}x | deployed synapses | architecture synapses | synapses ratio | <= {GOAL}x | "
             "relay messages | spike products | latency (sub-steps) | energy 45 nm (paper method): architecture / "
             "deployed |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        # the architecture's energy: its SOPs and the trained association order's spike products
        # (the fan-in form keeps the trained order; the profile-priced forms may re-associate)
        arch_e = r["forms"]["fan-in"]["paper"]["architecture"]
        for label, f in r["forms"].items():
            t = f["totals"]
            relayed = sum(s["choice"] == "relay" for s in f["streams"])
            lines.append(
                f"| {r['size']} | {label} | {relayed} of {len(f['streams'])} | {_si(t['sops'])} | "
                f"{_si(t['architecture_sops'])} | {_ratio(t['sops'], t['architecture_sops'])} | "
                f"{_met(t['sops'], t['architecture_sops'])} | {_si(t['synapses'])} | "
                f"{_si(t['architecture_synapses'])} | {_ratio(t['synapses'], t['architecture_synapses'])} | "
                f"{_met(t['synapses'], t['architecture_synapses'])} | {_si(t['relay_messages'])} | "
                f"{_si(t['spike_products'])} | {f['latency_substeps']} | {_mj(arch_e)} / {_mj(f['paper']['deployed'])} |")
    groups = ["", "| model | group | architecture SOPs | fan-in SOPs (ratio) | sim SOPs (ratio) | loihi SOPs (ratio) |",
              "|---|---|---|---|---|---|"]
    for r in results:
        fo = r["forms"]
        for lab, _ in GROUPS:
            arch = fo["fan-in"]["groups"][lab]["architecture_sops"]
            cells = [f"{_si(fo[k]['groups'][lab]['sops'])} ({_ratio(fo[k]['groups'][lab]['sops'], arch)})"
                     for k, _ in FORMS]
            groups.append(f"| {r['size']} | {lab} | {_si(arch)} | " + " | ".join(cells) + " |")
    runs = ["", "| model | params | deploy fan-in / sim / loihi (s) | estimate fan-in / sim / loihi (s) | "
            "graph nodes fan-in / relayed | peak RSS (GB) |", "|---|---|---|---|---|---|"]
    for r in results:
        fo = r["forms"]
        dep = " / ".join(f"{fo[k]['seconds']['deploy']:.1f}" for k, _ in FORMS)
        es = " / ".join(f"{fo[k]['seconds']['estimate']:.0f}" for k, _ in FORMS)
        runs.append(f"| {r['size']} | {r['parameters'] / 1e6:.2f}M | {dep} | {es} | "
                    f"{fo['fan-in']['nodes']} / {fo['sim (45nm)']['nodes']} | {r['peak_rss_gb']:.1f} |")
    return "\n".join(lines + groups + runs) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sizes", nargs="*", help=f"sizes to run ({', '.join(SIZES)})")
    ap.add_argument("--img", type=int, default=224)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", default=RESULTS, help="folder of per-size JSON results")
    ap.add_argument("--table-only", action="store_true", help="only print the tables of stored results")
    ap.add_argument("--markdown", help="also write the tables to this file")
    a = ap.parse_args(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    from snncc import artifact

    for size in a.sizes if not a.table_only else ():
        print(f"[residual_table] {size} at {a.img}x{a.img} ...", file=sys.stderr, flush=True)
        r = run_size(size, a.img, a.seed)
        artifact.write_text(os.path.join(a.results, f"residual_{size}.json"), json.dumps(r, indent=1) + "\n")
        rows = [("deployed as", "SOPs ratio", "synapses ratio", "goal")]
        for label, f in r["forms"].items():
            t = f["totals"]
            rows.append((label, _ratio(t["sops"], t["architecture_sops"]),
                         _ratio(t["synapses"], t["architecture_synapses"]),
                         "met" if _met(t["sops"], t["architecture_sops"]) == "met"
                         and _met(t["synapses"], t["architecture_synapses"]) == "met" else "MISSED"))
        print_table(f"E-SpikeFormer {size}: deployed / architecture", rows)
    text = table(load_results(a.results, "residual_", SIZES))
    print(text)
    if a.markdown:
        artifact.write_text(a.markdown, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
