"""Shared fixtures: models built in code (tests/nets.py) traced to IR."""

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

# Under pytest-xdist every core already runs a worker: one thread each, no oversubscription.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


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
