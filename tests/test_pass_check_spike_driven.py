import numpy as np
import pytest

from nets import ConvChain, randomize_bn
from snncc.errors import PassError
from snncc.ir import Graph, Node
from snncc.passes.check_spike_driven import check_spike_driven


def test_encoding_layer_reported(trace_model):
    _, g = trace_model(randomize_bn(ConvChain()))
    r = check_spike_driven(g)
    assert r.report["encoding"] == ["c1"]
    assert r.report["spike_driven"]["c1"] is False
    assert r.report["spike_driven"]["c2"] is True and r.report["spike_driven"]["head"] is True
    assert r.report["model_spike_driven"] is True


def test_mac_layer_beyond_encoding_is_an_error_unless_allowed():
    g = Graph([Node("x", "input", [], {"kind": "spike", "shape": (4,)}),
               Node("l1", "linear", ["x"], {}, {"weight": np.ones((3, 4))}),
               Node("l2", "linear", ["l1"], {}, {"weight": np.ones((2, 3))}),
               Node("o", "output", ["l2"])]).infer()
    with pytest.raises(PassError, match="not spike-driven .*: l2"):
        check_spike_driven(g)
    r = check_spike_driven(g, allow_macs=True)
    assert r.report["mac_layers"] == ["l2"]
