"""Peak memory of simulating E-SpikeFormer at 224x224: the PyTorch eager integer forward,
snncc's exact schedule and its streaming schedule, each in its own process on the same batch.
Not a test.

    .venv/bin/python benchmarks/bench_memory.py [--size 10M] [--batch 32] [--img 224] [--dtype float32]

The model is deployed once in a first child (`--mode deploy`, which writes the deployed graph as
IR JSON + npz to a temporary folder); then every mode runs in a fresh child process (`--mode
eager|exact|streaming`), so its peak resident set (ru_maxrss) is its own and excludes tracing:
`build` is the resident set after loading (the torch module for eager; the deployed graph and the
`Simulator` for the schedules), `peak` the maximum during the run (`exact` returns the output
like eager; `exact+counts` also keeps every population's counts, batch x neurons values), `run` = peak - build (what
simulating the batch itself costs). Random seeded weights with BatchNorm statistics randomised
so neurons fire (tests/nets.py `randomize_bn`); one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MODES = ("eager", "exact", "exact+counts", "streaming")


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def one(mode: str, size: str, batch: int, img: int, dtype: str, folder: str) -> dict:
    import torch

    sys.path.insert(0, os.path.join(HERE, "..", "tests"))
    from nets import randomize_bn

    from snncc.frontend.loader import LoadedModel, trace
    from snncc.models import e_spikeformer
    from snncc.nn import reset_state
    from snncc.passes.manager import run_pipeline
    from snncc.sim.sync import Simulator

    from snncc.ir import serialize

    torch.set_num_threads(1)
    stem = os.path.join(folder, f"{size}_{img}")
    dt = getattr(torch, dtype)
    x = torch.randn((batch, 3, img, img), generator=torch.Generator().manual_seed(0)) * 2
    if mode in ("eager", "deploy"):
        torch.manual_seed(0)
        m = randomize_bn(e_spikeformer(size, img_size=img), 0).eval()
    if mode == "deploy":
        js, npz = serialize.dumps(run_pipeline(trace(LoadedModel(m, None, (3, img, img))), "deploy").graph)
        with open(stem + ".json", "wb") as f:
            f.write(js)
        with open(stem + ".npz", "wb") as f:
            f.write(npz)
        return {"mode": "deploy"}
    if mode == "eager":
        run = lambda: (reset_state(m), m(x))  # noqa: E731
    else:
        with open(stem + ".json", "rb") as f, open(stem + ".npz", "rb") as h:
            g = serialize.loads(f.read(), h.read(), stem)
        sim = Simulator(g, dt)
        xd = x.to(dt)
        # exact: what eager gives (the output; counts freed after their last reader); exact+counts
        # also returns every population's spike counts (what verify and estimate read)
        schedule = mode.split("+")[0]
        run = lambda: sim.run(xd, schedule, keep_counts=mode in ("exact+counts", "streaming"))  # noqa: E731
    import gc

    gc.collect()
    build = rss_mib()
    t0 = time.perf_counter()
    with torch.no_grad():
        run()
    sec = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": mode, "size": size, "batch": batch, "img": img, "dtype": dtype, "build_mib": build,
            "peak_mib": peak, "run_mib": peak - build, "seconds": sec}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="10M")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--img", type=int, default=224)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--mode", choices=("deploy",) + MODES, help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.mode:
        print(json.dumps(one(a.mode, a.size, a.batch, a.img, a.dtype, a.folder)))
        return 0
    import tempfile

    tmp = tempfile.mkdtemp(prefix="snncc_bench_memory_")
    rows = []
    for mode in ("deploy",) + MODES:
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--mode", mode, "--size", a.size,
                            "--batch", str(a.batch), "--img", str(a.img), "--dtype", a.dtype, "--folder", tmp],
                           capture_output=True, text=True)
        if mode == "deploy":
            if p.returncode != 0:
                print(f"deploying E-SpikeFormer-{a.size} failed: {p.stderr.strip()[-300:]}")
                return 1
            continue
        if p.returncode != 0:
            rows.append({"mode": mode, "error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"})
        else:
            rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
        print(f"[bench_memory] {mode} done", file=sys.stderr, flush=True)
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    print(f"# peak memory, E-SpikeFormer-{a.size} at {a.img}x{a.img}, batch {a.batch}, {a.dtype}, 1 thread, "
          f"one process per mode")
    print(f"{'mode':<11}{'build MiB':>10}{'peak MiB':>10}{'run MiB':>9}{'seconds':>9}{'run / eager run':>17}")
    eager = next((r for r in rows if r["mode"] == "eager" and "error" not in r), None)
    for r in rows:
        if "error" in r:
            print(f"{r['mode']:<11} failed: {r['error'][:100]}")
            continue
        ratio = f"{r['run_mib'] / eager['run_mib']:.2f}" if eager and eager["run_mib"] > 0 else "-"
        print(f"{r['mode']:<11}{r['build_mib']:>10.0f}{r['peak_mib']:>10.0f}{r['run_mib']:>9.0f}{r['seconds']:>9.1f}"
              f"{ratio:>17}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
