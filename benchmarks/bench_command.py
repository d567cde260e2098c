"""The whole `snncc compile X.pt2 --target sim -o out` next to `torch.export.export` + `torch.export.save`
of the same model, on E-SpikeFormer built by `snncc.models.e_spikeformer` (224x224,
seeded random weights, BatchNorm randomised so neurons fire: tests/nets.py `randomize_bn`).

Per size, two fresh processes (so each peak resident set is its own), each importing torch,
torch.export and snncc before the clock starts: the first builds the model and times export + save
(batch 2, the `.pt2` the second compiles); the second times the CLI's own `main(["compile", ...])`
(load, trace, passes, report, serialise, hash, write) and its stages. Goals: command <= 2x export +
save, artefact <= 1.25x the `.pt2`, and snncc's trace + passes time per parameter within 1.5x of
the smallest size's. One thread; not a test.

    .venv/bin/python benchmarks/bench_command.py [--sizes 5.1M,19M,83M] [--repeats 1]
    .venv/bin/python benchmarks/bench_command.py --profile 5.1M   # cProfile of the command, top entries
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
GOAL_TIME, GOAL_SIZE, GOAL_PER_PARAM = 2.0, 1.25, 1.5


def _warm():
    import torch
    import torch._dynamo  # noqa: F401  (imported lazily by export and by load: outside both clocks)
    import torch._export.serde.serialize  # noqa: F401
    import torch.export  # noqa: F401

    import snncc.cli  # noqa: F401
    torch.set_num_threads(1)


def export_child(size: str, pt2: str, repeats: int) -> dict:
    _warm()
    import torch

    sys.path.insert(0, os.path.join(HERE, "..", "tests"))
    from nets import randomize_bn

    from snncc.models import count_parameters, e_spikeformer

    torch.manual_seed(0)
    m = randomize_bn(e_spikeformer(size, img_size=224), 0).eval()
    secs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ep = torch.export.export(m, (torch.zeros(2, 3, 224, 224),))
        torch.export.save(ep, pt2)
        secs.append(time.perf_counter() - t0)
        del ep
    return {"params": count_parameters(m), "export_save_s": statistics.median(secs), "pt2_bytes": os.path.getsize(pt2),
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def compile_child(pt2: str, out: str, repeats: int, profile: bool = False) -> dict:
    _warm()
    import snncc.api
    import snncc.compiler
    import snncc.frontend.loader
    from snncc import artifact
    from snncc.cli import main

    stages: dict[str, list[float]] = {}

    def timed(mod, name, key):
        fn = getattr(mod, name)

        def wrapper(*a, **k):
            t0 = time.perf_counter()
            r = fn(*a, **k)
            stages.setdefault(key, []).append(time.perf_counter() - t0)
            if key == "compile":
                for s, v in r.timings.items():
                    stages.setdefault(s, []).append(v)
            return r
        setattr(mod, name, wrapper)

    timed(snncc.frontend.loader, "load_model", "load")
    timed(snncc.compiler, "compile_model", "compile")
    timed(snncc.compiler, "report_markdown", "report")
    timed(artifact, "write", "write")
    secs = []
    for _ in range(repeats):
        shutil.rmtree(out, ignore_errors=True)
        if profile:
            import cProfile
            import io
            import pstats

            pr = cProfile.Profile()
            t0 = time.perf_counter()
            pr.runcall(main, ["compile", pt2, "--target", "sim", "-o", out])
            secs.append(time.perf_counter() - t0)
            s = io.StringIO()
            pstats.Stats(pr, stream=s).sort_stats("cumulative").print_stats(40)
            print(s.getvalue(), file=sys.stderr)
        else:
            t0 = time.perf_counter()
            code = main(["compile", pt2, "--target", "sim", "-o", out])
            secs.append(time.perf_counter() - t0)
            if code != 0:
                raise SystemExit(f"snncc compile exited {code}")
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    return {"command_s": statistics.median(secs), "artefact_bytes": size,
            "stages": {k: statistics.median(v) for k, v in stages.items()},
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _child(args: list[str]) -> dict:
    p = subprocess.run([sys.executable, os.path.abspath(__file__)] + args, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(p.stderr.strip()[-800:])
    if "--profile-child" in args:
        print(p.stderr)
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="5.1M,19M,83M")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--profile", metavar="SIZE", help="print the cProfile of the command on this size")
    ap.add_argument("--export-child", nargs=2, metavar=("SIZE", "PT2"), help=argparse.SUPPRESS)
    ap.add_argument("--compile-child", nargs=2, metavar=("PT2", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--profile-child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.export_child:
        print(json.dumps(export_child(*a.export_child, a.repeats)))
        return 0
    if a.compile_child:
        print(json.dumps(compile_child(*a.compile_child, a.repeats, a.profile_child)))
        return 0
    tmp = tempfile.mkdtemp(prefix="snncc_bench_command_")
    rows = []
    try:
        for size in ([a.profile] if a.profile else [s for s in a.sizes.split(",") if s]):
            pt2, out = os.path.join(tmp, f"e{size}.pt2"), os.path.join(tmp, f"out{size}")
            try:
                e = _child(["--export-child", size, pt2, "--repeats", str(a.repeats)])
                c = _child(["--compile-child", pt2, out, "--repeats", str(a.repeats)]
                           + (["--profile-child"] if a.profile else []))
            except RuntimeError as err:
                rows.append({"size": size, "error": str(err).splitlines()[-1] if str(err) else "failed"})
                continue
            rows.append({"size": size, **e, **{k: v for k, v in c.items() if k != "peak_mib"},
                         "export_peak_mib": e["peak_mib"], "compile_peak_mib": c["peak_mib"]})
            shutil.rmtree(out, ignore_errors=True)
            os.remove(pt2)
            print(f"[bench_command] {size} done", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"# whole command vs torch.export.export + save, E-SpikeFormer 224x224, 1 thread, repeats {a.repeats}")
    print(f"{'model':<8}{'params':>12}{'export+save s':>15}{'command s':>11}{'ratio':>7}{'<= 2x':>8}"
          f"{'.pt2 MB':>9}{'artefact MB':>13}{'ratio':>7}{'<= 1.25x':>10}{'peak MiB export / command':>27}")
    for r in rows:
        if "error" in r:
            print(f"{r['size']:<8} failed: {r['error'][:100]}")
            continue
        t, s = r["command_s"] / r["export_save_s"], r["artefact_bytes"] / r["pt2_bytes"]
        print(f"{r['size']:<8}{r['params']:>12,}{r['export_save_s']:>15.2f}{r['command_s']:>11.2f}{t:>7.2f}"
              f"{'met' if t <= GOAL_TIME else 'MISSED':>8}{r['pt2_bytes'] / 1e6:>9.1f}{r['artefact_bytes'] / 1e6:>13.1f}"
              f"{s:>7.2f}{'met' if s <= GOAL_SIZE else 'MISSED':>10}"
              f"{r['export_peak_mib']:>14.0f} / {r['compile_peak_mib']:.0f}")
    ok = [r for r in rows if "error" not in r]
    if ok:
        print()
        print("# stages of the command (s): load = torch.export.load + checks; report = compile report (static "
              "analysis); emit = target files + serialisation; write = hashes + files")
        keys = ("load", "trace", "passes", "report", "emit", "write")
        print(f"{'model':<8}" + "".join(f"{k:>9}" for k in keys) + f"{'trace+passes us/param':>24}{'vs first':>10}"
              f"{'<= 1.5x':>9}")
        base = None
        for r in ok:
            st = r["stages"]
            per = 1e6 * (st.get("trace", 0) + st.get("passes", 0)) / r["params"]
            base = base or per
            print(f"{r['size']:<8}" + "".join(f"{st.get(k, float('nan')):>9.2f}" for k in keys)
                  + f"{per:>24.3f}{per / base:>10.2f}{'met' if per / base <= GOAL_PER_PARAM else 'MISSED':>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
