"""Shared fixtures: models built in code (tests/nets.py) traced to IR."""

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

torch.set_num_threads(2)


@pytest.fixture
def trace_model():
    from snncc.frontend.loader import LoadedModel, trace

    def _trace(model, frontend="auto", input_kind="current"):
        lm = LoadedModel(model.eval(), None, tuple(model.input_shape))
        return lm, trace(lm, frontend=frontend, input_kind=input_kind)

    return _trace
