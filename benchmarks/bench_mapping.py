"""Loihi 2 mapping of E-SpikeFormer at 224x224: the whole `compile --target loihi
--target-option system=hala` (trace, deploy passes, core/chip mapping, artefact written) per size,
each in its own process so peak memory is per size; prints cores, chips, estimated inter-chip
messages per window (METIS, and the sequential-fill baseline on the same piece graph), mapping
time, compile time and peak RSS. Target: the 5.1M compiles in under 8 GB and a few minutes (180 s).

    .venv/bin/python benchmarks/bench_mapping.py [--sizes 5.1M,19M,83M] [--system hala]

Random (seeded) weights: the mapping depends on shapes only; traffic is the loihi profile's assumed
uniform activity. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from common import print_table  # noqa: E402

TARGET_GB, TARGET_S = 8.0, 180.0


def one(size: str, system: str) -> dict:
    import torch

    from snncc.api import compile as compile_api
    from snncc.models import e_spikeformer
    from snncc_lava import mapping

    torch.manual_seed(0)
    m = e_spikeformer(size, img_size=224).eval()
    t0 = time.perf_counter()
    dep = compile_api(m, torch.zeros(1, 3, 224, 224), target="loihi", target_options={"system": system})
    with tempfile.TemporaryDirectory(prefix="bench_mapping_") as d:
        dep.save(os.path.join(d, "out"))
    total = time.perf_counter() - t0
    doc = json.loads(dep.files["lava/mapping.json"])
    t1 = time.perf_counter()
    mp = mapping.build(dep.deployed, system)  # timed alone, same graph
    map_s = time.perf_counter() - t1
    seq = mapping.cut(mp.edges, mapping.sequential_partition(len(mp.pieces), mp.edges, mp.chips_used, mp.resources.cores))
    return {"size": size, "neurons": doc["totals"]["neurons"], "cores": doc["totals"]["cores"],
            "chips": doc["totals"]["chips"], "messages": doc["totals"]["messages_per_window"],
            "interchip": doc["totals"]["interchip_messages_per_window"], "sequential": seq, "map_s": map_s,
            "compile_s": total, "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "problems": doc["problems"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="5.1M,19M,83M")
    ap.add_argument("--system", default="hala")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one, args.system)))
        return 0
    rows = [("model", "neurons", "cores", "chips", "msgs/window", "inter-chip (METIS)", "inter-chip (sequential)",
             "mapping s", "compile s", "peak GB", "target")]
    for size in args.sizes.split(","):
        p = subprocess.run([sys.executable, __file__, "--one", size, "--system", args.system], capture_output=True,
                           text=True, cwd=ROOT)
        if p.returncode:
            rows.append((f"E-SpikeFormer-{size}", "failed: " + p.stderr.strip().splitlines()[-1]) + ("",) * 9)
            continue
        r = json.loads(p.stdout.strip().splitlines()[-1])
        ok = r["peak_gb"] < TARGET_GB and r["compile_s"] < TARGET_S
        target = (("met" if ok else "MISSED") + f" (< {TARGET_GB:g} GB, < {TARGET_S:g} s)") if size == "5.1M" \
            else "no target"
        rows.append((f"E-SpikeFormer-{size}", f"{r['neurons']:,}", f"{r['cores']:,}", str(r["chips"]),
                     f"{r['messages']:.4g}", f"{r['interchip']:.4g}", f"{r['sequential']:.4g}", f"{r['map_s']:.1f}",
                     f"{r['compile_s']:.1f}", f"{r['peak_gb']:.2f}", target))
    print_table(f"compile --target loihi --target-option system={args.system}, 224x224", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
