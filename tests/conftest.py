"""Shared fixtures: models built in code (tests/nets.py) traced to IR."""

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

# Under pytest-xdist every core already runs a worker: one thread each, no oversubscription, in the
# worker and in the processes its tests start (the installed `snncc`, Lava's runtime): a second
# OpenMP thread on a busy core spin-waits and burns CPU (`snncc verify` of the digits CNN on 30
# samples: about 3.5 CPU s with one thread, 8 to 16 with two beside other work).
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)
if os.environ.get("PYTEST_XDIST_WORKER"):
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")


@pytest.fixture
def one_thread():
    """Tiny models run fastest (and most predictably on a busy machine) single-threaded."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def trace_model():
    from snncc.frontend.loader import LoadedModel, trace

    def _trace(model, frontend="auto", input_kind="current"):
        lm = LoadedModel(model.eval(), None, tuple(model.input_shape))
        return lm, trace(lm, frontend=frontend, input_kind=input_kind)

    return _trace


@pytest.fixture
def snncc_main(capfd, caplog, monkeypatch):
    """`snncc.cli.main(argv)` in this process, read as the installed command's output: (exit code,
    stdout, stderr). A fresh `snncc` process costs a torch import (2-3 CPU s); a test that is not
    about the process itself calls this instead. stderr is read at the file descriptor (C-level
    noise counts), and the warnings shown under the console script's filters (`warnings_filter="default"`:
    PYTHONWARNINGS=default's) and the log records at WARNING and above (which the script's
    logging.basicConfig prints) are appended as the lines the script would print (tests/cli_run.py's
    run_main is the same for module-scoped fixtures)."""
    import logging
    import warnings

    from cli_run import DEFAULT_FILTERS, PYTHON_FILTERS
    from snncc.cli import main

    def run(*argv, cwd=None, warnings_filter=None):
        if cwd is not None:
            monkeypatch.chdir(cwd)
        capfd.readouterr()
        caplog.clear()
        with warnings.catch_warnings(record=True) as shown, caplog.at_level(logging.WARNING):
            warnings.filters[:] = list(DEFAULT_FILTERS if warnings_filter == "default" else PYTHON_FILTERS)
            try:
                code = main([str(a) for a in argv])
            except SystemExit as e:  # argparse
                code = e.code
        out, err = capfd.readouterr()
        err += "".join(f"snncc: warning: {w.message}\n" for w in shown)
        err += "".join(f"{r.name}: {r.getMessage()}\n" for r in caplog.records)
        return code, out, err

    return run
