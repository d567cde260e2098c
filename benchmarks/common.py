"""What the benchmark scripts share: round-robin median timing and the aligned text table they print."""

from __future__ import annotations

import os
import statistics
import time


def median_times(fns, repeats: int, cpu: bool = False):
    """Median wall time of each function; the functions are timed round-robin, so background load
    on a shared machine hits all of them alike and the ratios stay meaningful. `cpu`: also the
    median CPU time of this process per call (single-threaded work: what the call costs whatever
    the machine's load), returned as (wall, cpu)."""
    for fn in fns:
        fn()  # warm-up
    ts = [[] for _ in fns]
    cs = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            ts[i].append(time.perf_counter() - t0)
            cs[i].append(time.process_time() - c0)
    wall = [statistics.median(t) for t in ts]
    return (wall, [statistics.median(c) for c in cs]) if cpu else wall


def print_table(title: str, rows: list[tuple[str, ...]], left: int = 1) -> None:
    """`# title, load average L on N cores`, then the rows (first one the header) in columns: the
    first `left` columns left-aligned, the rest right-aligned."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {title}, load average {load:.1f} on {os.cpu_count()} cores")
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w[i]) if i < left else c.rjust(w[i]) for i, c in enumerate(r)))


def load_results(folder: str, prefix: str, sizes) -> list[dict]:
    """Every `<prefix>*.json` result in `folder`, ordered by `sizes` (the per-size benchmark tables)."""
    import json

    out = []
    if os.path.isdir(folder):
        for f in sorted(os.listdir(folder)):
            if f.startswith(prefix) and f.endswith(".json"):
                with open(os.path.join(folder, f)) as fh:
                    out.append(json.load(fh))
    order = {s: i for i, s in enumerate(sizes)}
    return sorted(out, key=lambda r: order.get(r["size"], 99))
