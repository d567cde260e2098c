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
