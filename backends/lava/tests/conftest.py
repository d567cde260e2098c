"""Shared fixtures of the Loihi backend tests: deployed graphs of the small models in tests/nets.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))

from nets import Attention, ConvChain, ResidualSepConv, randomize_bn  # noqa: E402

from snncc.frontend.loader import LoadedModel, trace  # noqa: E402
from snncc.passes.manager import run_pipeline  # noqa: E402
from snncc.sim import reference  # noqa: E402


def assert_counts_equal(g, x, res):
    """A Lava (or fixed-point) result's spike counts equal the reference executor's, population
    by population; returns the reference result."""
    ref = reference.run(g, x, torch.float64)
    assert set(res.counts) == set(ref.counts)
    for k in ref.counts:
        assert torch.equal(res.counts[k], ref.counts[k]), k
    return ref


def deployed(cls, seed=0, **kw):
    torch.manual_seed(seed)
    m = randomize_bn(cls(**kw), seed)
    return run_pipeline(trace(LoadedModel(m, None, cls.input_shape)), "deploy").graph


@pytest.fixture(scope="session")
def conv_chain():
    return deployed(ConvChain)


@pytest.fixture(scope="session")
def residual():
    return deployed(ResidualSepConv)


@pytest.fixture(scope="session")
def attention():
    return deployed(Attention)
