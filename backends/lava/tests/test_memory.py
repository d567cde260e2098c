"""The loihi target refuses, before allocating, a model whose explicit synapse matrices would not
fit in memory (issue 14's first defect: E-SpikeFormer-5.1M at 224x224 used to allocate until the
machine killed it); the synapse count is exact on a hand-computed graph."""

import numpy as np

from snncc.ir.graph import Graph, Node
from snncc_lava import network


def _graph():
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


def test_materialised_synapses_by_hand():
    # conv: 3x6x6 outputs x (2 x 3 x 3) fan-in = 108 x 18 = 1944; pool: 3x3x3 outputs x 4 = 108;
    # linear over the last axis: 3x3x3 outputs x 3 inputs = 81
    assert network.materialised_synapses(_graph()) == 1944 + 108 + 81


def test_refused_before_allocating_when_it_cannot_fit(monkeypatch):
    import snncc.resources as res

    g = _graph()
    assert network.memory_problems(g) == []
    monkeypatch.setattr(res, "available_bytes", lambda: 1000)
    (msg,) = network.memory_problems(g)
    assert msg.startswith("the Lava lowering stores 2,133 synapses as explicit sparse matrices (about 50.0 kB")
    assert "this machine has 1000 B available" in msg
