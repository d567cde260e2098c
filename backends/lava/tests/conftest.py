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


def stateful_multistep(conv_chain):
    """ConvChain at T = 3 with stateful neurons and its (T, B, *in) input: the carried membrane matters."""
    g = conv_chain.clone()
    g.T = 3
    for n in g.neurons():
        n.attrs["stateful"] = True
    return g, torch.rand((3, 2, 2, 8, 8), generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 1.5


def deployed(cls, seed=0, **kw):
    torch.manual_seed(seed)
    m = randomize_bn(cls(**kw), seed)
    return run_pipeline(trace(LoadedModel(m, None, cls.input_shape)), "deploy").graph


@pytest.fixture
def conv_pool_linear():
    """x (spike 2x6x6) -> conv 3x3 pad 1 (ones) -> f (3x6x6) -> sum pool 2x2 -> linear 3x3 (ones) -> g
    (3x3x3) -> output: small enough to count synapses, pieces and routes by hand."""
    import numpy as np

    from snncc.ir.graph import Graph, Node

    return Graph([
        Node("x", "input", [], {"kind": "spike", "shape": (2, 6, 6)}),
        Node("c", "conv", ["x"], {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1)},
             {"weight": np.ones((3, 2, 3, 3))}),
        Node("f", "fire", ["c"], {"D": 4, "rounding": "floor"}),
        Node("p", "pool", ["f"], {"mode": "sum", "kernel": (2, 2), "stride": (2, 2)}),
        Node("l", "linear", ["p"], {}, {"weight": np.ones((3, 3))}),
        Node("g", "fire", ["l"], {"D": 4, "rounding": "floor"}),
        Node("o", "output", ["g"]),
    ]).verify()


def strided_conv():
    """x (spike 1x8x8) -> 1x1 conv -> f (1x8x8) -> 1x1 conv stride 2 -> g (1x4x4) -> output: g reads
    f's even rows and columns only (a receptive box over-counts them)."""
    import numpy as np

    from snncc.ir.graph import Graph, Node

    fire = {"D": 4, "rounding": "floor"}
    conv = lambda stride: {"stride": (stride, stride), "padding": (0, 0), "dilation": (1, 1)}
    return Graph([
        Node("x", "input", [], {"kind": "spike", "shape": (1, 8, 8)}),
        Node("c0", "conv", ["x"], conv(1), {"weight": np.ones((1, 1, 1, 1))}), Node("f", "fire", ["c0"], fire),
        Node("c", "conv", ["f"], conv(2), {"weight": np.ones((1, 1, 1, 1))}), Node("g", "fire", ["c"], fire),
        Node("o", "output", ["g"])]).verify()


@pytest.fixture
def strided():
    return strided_conv()


@pytest.fixture(scope="session")
def conv_chain():
    return deployed(ConvChain)


@pytest.fixture(scope="session")
def residual():
    return deployed(ResidualSepConv)


@pytest.fixture(scope="session")
def attention():
    return deployed(Attention)


@pytest.fixture
def snncc_in_process(capsys):
    """`snncc ARGS` through `snncc.cli.main` in this process, a CompletedProcess like the installed
    command's: the commands a test runs beyond its one installed case per subcommand (each spared
    start-up is about 2.8 CPU s of Python and torch import)."""
    import os
    import subprocess

    from snncc.cli import main

    exe = os.path.join(os.path.dirname(sys.executable), "snncc")

    def run(*args):
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess([exe, *map(str, args)], code, out, err)
    return run
