"""A pytest plugin that records what each test costs in CPU seconds, so the suite's slow parts can be
found on a busy machine: wall time there depends on the other load, CPU time hardly does.

Each phase (setup, call, teardown) of each test appends one tab-separated line to the file named by
SNNCC_TEST_COSTS: CPU seconds of the test process and of the child processes it waited for (a CLI
run, a Lava runtime, a worker pool), wall seconds, the phase, the xdist worker and the test id.
Writers append whole lines, so the xdist workers can share one file. `python scripts/pytest_costs.py
FILE` sums the file per test and per test file, most expensive first.

Used by `SNNCC_TEST_COSTS=costs.tsv bash scripts/test.sh` (the script adds `-p pytest_costs`).
"""

from __future__ import annotations

import collections
import os
import sys
import time

import pytest


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _record(item, phase):
    path = os.environ.get("SNNCC_TEST_COSTS")
    c0, w0 = _cpu(), time.perf_counter()
    yield
    if path:
        line = (f"{_cpu() - c0:.3f}\t{time.perf_counter() - w0:.3f}\t{phase}\t"
                f"{os.environ.get('PYTEST_XDIST_WORKER', '-')}\t{item.nodeid}\n")
        with open(path, "a") as f:
            f.write(line)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    yield from _record(item, "setup")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    yield from _record(item, "call")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item):
    yield from _record(item, "teardown")


def summary(path: str, top: int = 30) -> str:
    """The file's costs per test file and its `top` tests, CPU seconds first, most expensive first."""
    per_test = collections.defaultdict(lambda: [0.0, 0.0])
    per_file = collections.defaultdict(lambda: [0.0, 0.0, set()])
    with open(path) as f:
        for line in f:
            cpu, wall, _, _, nodeid = line.rstrip("\n").split("\t", 4)
            for acc in (per_test[nodeid], per_file[nodeid.split("::")[0]]):
                acc[0] += float(cpu)
                acc[1] += float(wall)
            per_file[nodeid.split("::")[0]][2].add(nodeid)
    cpu = sum(v[0] for v in per_test.values())
    wall = sum(v[1] for v in per_test.values())
    out = [f"{len(per_test)} tests: {cpu:.1f} CPU s, {wall:.1f} wall s summed over workers",
           "   CPU s   wall s  tests  file"]
    for name, (c, w, ids) in sorted(per_file.items(), key=lambda kv: -kv[1][0]):
        out.append(f"{c:8.1f} {w:8.1f} {len(ids):6d}  {name}")
    out.append("   CPU s   wall s  test")
    for name, (c, w) in sorted(per_test.items(), key=lambda kv: -kv[1][0])[:top]:
        out.append(f"{c:8.1f} {w:8.1f}  {name}")
    return "\n".join(out)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python scripts/pytest_costs.py COSTS.tsv [TOP]")
    print(summary(sys.argv[1], *(int(a) for a in sys.argv[2:])))
