"""scripts/pytest_costs.py, the suite's cost recorder: a test's CPU seconds include the child
processes it ran, every phase of every test is one line, and the summary ranks the costly first."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TESTS = '''
import subprocess, sys

BURN = "import time\\nt = time.process_time()\\nwhile time.process_time() - t < 0.4: pass"


def test_child_burns_cpu():
    subprocess.run([sys.executable, "-c", BURN], check=True)


def test_cheap():
    assert 1 + 1 == 2
'''


def test_costs_count_child_processes_and_rank_them_first(tmp_path):
    (tmp_path / "test_two.py").write_text(TESTS)
    costs = tmp_path / "costs.tsv"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}  # not this run's xdist worker
    env.update(SNNCC_TEST_COSTS=str(costs),
               PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "scripts"), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "pytest_costs", "-p", "no:cacheprovider",
                        "test_two.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [line.rstrip("\n").split("\t") for line in costs.read_text().splitlines()]
    assert sorted((row[2], row[4]) for row in rows) == sorted(
        (phase, f"test_two.py::{name}") for phase in ("setup", "call", "teardown")
        for name in ("test_child_burns_cpu", "test_cheap"))
    call = {row[4].split("::")[1]: float(row[0]) for row in rows if row[2] == "call"}
    assert call["test_child_burns_cpu"] >= 0.4  # the child's 0.4 s of CPU, waited for, counted
    assert call["test_cheap"] < 0.1
    assert all(row[3] == "-" for row in rows)  # no xdist worker

    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        from pytest_costs import summary
    finally:
        sys.path.remove(os.path.join(ROOT, "scripts"))
    lines = summary(str(costs)).splitlines()
    assert lines[0].startswith("2 tests: ")
    assert lines[2].split()[2:] == ["2", "test_two.py"]
    assert lines[4].split()[-1] == "test_two.py::test_child_burns_cpu"
    assert lines[5].split()[-1] == "test_two.py::test_cheap"
