"""Every Speck rule: each violation is reported with the layer/node and the numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from snncc.errors import TargetError
from snncc.frontend.loader import LoadedModel, trace
from snncc.models.speck import speck_cnn
from snncc.passes.manager import run_pipeline
from snncc.targets import get

from snncc_speck.target import SpeckTarget

from speck_graphs import Builder, TinyAttention, chain


def one_layer(shape=(2, 8, 8), w_shape=(4, 2, 3, 3), stride=1, padding=1, **fire):
    b = Builder(shape)
    return b.build(b.fire("f", b.conv("c", "input", np.ones(w_shape), stride=stride, padding=padding), **fire))


def test_entry_point_loads_target():
    t = get("speck")
    assert isinstance(t, SpeckTarget) and t.name == "speck"
    assert t.versions()["sinabs"] == "3.1.3"


def test_fitting_model_has_no_problems():
    assert SpeckTarget().check(chain(3)) == []


def test_attention_is_rejected():
    torch.manual_seed(0)
    g = trace(LoadedModel(TinyAttention().eval(), None, (6, 4)), input_kind="spike")
    d = run_pipeline(g, "deploy").graph
    probs = SpeckTarget().check(d)
    att = [p for p in probs if "spike product (attention)" in p]
    assert len(att) == 1
    sp = [n for n in d.nodes if n.op == "spike_product"][0]
    assert att[0].startswith(f"node {sp.name}: spike product (attention) of 3 spike tensors")


def test_real_valued_input_is_rejected():
    torch.manual_seed(0)
    g = trace(LoadedModel(speck_cnn("tiny").eval(), None, (2, 16, 16)), input_kind="current")
    d = run_pipeline(g, "deploy", options={"check_spike_driven": {"allow_macs": True}}).graph
    probs = SpeckTarget().check(d)
    assert ("input input: real-valued input (kind 'current') of shape (2, 16, 16); Speck takes events: "
            "encode the input as spikes (compile with --input-kind spike)") in probs


def test_ten_layers_is_rejected():
    probs = SpeckTarget().check(chain(10, c=2, side=4))
    assert probs == ["model has 10 conv layers (f0, f1, f2, f3, f4, f5, f6, f7, f8, f9) > 9 cores"]


def test_kernel_rules():
    t = SpeckTarget()
    assert t.check(one_layer(w_shape=(4, 2, 3, 5), padding=(1, 2))) == ["layer f: kernel 3x5 is not square"]
    assert t.check(one_layer((2, 20, 20), (4, 2, 17, 17), padding=0)) == ["layer f: kernel 17x17 > 16x16"]


def test_stride_padding_rules():
    t = SpeckTarget()
    assert t.check(one_layer((2, 9, 9), stride=3)) == ["layer f: stride 3x3 not in 1/2/4/8"]
    assert t.check(one_layer((2, 8, 8), padding=8)) == ["layer f: padding 8x8 > 7"]


def test_channel_and_map_rules():
    t = SpeckTarget()
    assert t.check(one_layer((2, 1, 1), (1025, 2, 1, 1), padding=0)) == ["layer f: 1025 output channels > 1024"]
    # 130x130 input; stride 4 gives a 33x33 map, neuron memory 4*2^(6+6) = 16384 fits
    assert t.check(one_layer((2, 130, 130), (4, 2, 2, 2), stride=4, padding=0)) == ["input input: 130x130 > 128x128"]
    assert t.check(one_layer((2, 100, 100), (1, 2, 1, 1), padding=0)) == ["layer f: output map 100x100 > 64x64"]


def test_pooling_rules():
    b = Builder((2, 9, 9))
    f0 = b.fire("f0", b.conv("c0", "input", np.ones((2, 2, 1, 1))))
    g = b.build(b.fire("f1", b.conv("c1", b.pool("p", f0, 3), np.ones((2, 2, 1, 1)))))
    assert SpeckTarget().check(g) == ["layer f1: sum pooling 3 on the way from f0 not in 1/2/4"]
    b = Builder((2, 8, 8))
    f0 = b.fire("f0", b.conv("c0", "input", np.ones((2, 2, 1, 1))))
    g = b.build(b.fire("f1", b.conv("c1", b.pool("p", f0, 2, stride=1), np.ones((2, 2, 1, 1)))))
    assert SpeckTarget().check(g) == ["node p: pooling kernel (2, 2) stride (1, 1) padding (0, 0) feeding layer f1; "
                                      "Speck pools are square sum pools with stride = kernel and no padding"]


def test_destinations_rule():
    b = Builder((2, 4, 4))
    f0 = b.fire("f0", b.conv("c0", "input", np.ones((2, 2, 1, 1))))
    outs = [b.fire(f"g{i}", b.conv(f"d{i}", f0, np.ones((2, 2, 1, 1)))) for i in range(3)]
    g = b.build(outs[0])
    assert SpeckTarget().check(g) == ["layer f0: 3 destinations (g0, g1, g2) > 2 per core"]


def test_memory_rule():
    # 32 channels on a 64x64 map: neuron memory 32*2^(6+6) = 131072 > 65536 (largest core)
    probs = SpeckTarget().check(one_layer((2, 64, 64), (32, 2, 3, 3)))
    assert probs == ["layer f: does not fit any core: neuron memory 131072 > 65536 (largest core)"]
    # 1024 in, 64 out, 3x3: kernel 1024*2^(4+6) = 1048576 > 65536
    probs = SpeckTarget().check(one_layer((1024, 2, 2), (64, 1024, 3, 3)))
    assert probs == ["layer f: does not fit any core: kernel memory 1048576 > 65536 (largest core)"]


def test_fan_in_and_stateless_rules():
    b = Builder((2, 4, 4), T=2)
    f0 = b.fire("f0", b.conv("c0", "input", np.ones((2, 2, 1, 1))))
    a = b.add("sum", "add", [b.conv("c1", f0, np.ones((2, 2, 1, 1))), b.conv("c2", "input", 2 * np.ones((2, 2, 1, 1)))])
    g = b.build(b.fire("f1", a, stateful=False))
    probs = SpeckTarget().check(g)
    assert probs == ["node sum: layer f1 merges f0 and input with different weights (4 of 4 differ); a Speck core "
                     "has one kernel: merged sources' spike maps are added (sinabs Merge) and share it"]
    b = Builder((2, 4, 4), T=2)  # the same kernel on both branches: a merge, lowered
    f0 = b.fire("f0", b.conv("c0", "input", np.ones((2, 2, 1, 1))))
    a = b.add("sum", "add", [b.conv("c1", f0, np.ones((2, 2, 1, 1))), b.conv("c2", "input", np.ones((2, 2, 1, 1)))])
    assert SpeckTarget().check(b.build(b.fire("f1", a))) == []
    assert SpeckTarget().check(one_layer(stateful=False)) == []  # T = 1: no state to carry
    g2 = one_layer(stateful=False)
    g2.T = 3
    assert SpeckTarget().check(g2) == ["layer f: stateless neuron over T=3 timesteps; Speck membranes carry over "
                                       "(stateful integrate-and-fire)"]


def test_quantisation_that_loses_weights_is_rejected():
    # theta 1e6 against unit weights: 16-bit threshold forces scale 32767/1e6, every weight rounds to 0
    probs = SpeckTarget().check(one_layer(theta=1e6, beta=0.0))
    assert len(probs) == 1 and probs[0].startswith("layer f: all 72 nonzero weights quantise to 0 at scale 0.032767")


def test_emit_refuses_with_one_error_listing_everything():
    g = one_layer((2, 64, 64), (32, 2, 3, 5), padding=(1, 2))
    with pytest.raises(TargetError) as e:
        SpeckTarget().emit(g, {})
    msg = str(e.value)
    assert "model does not fit Speck (2 problem(s))" in msg
    assert "layer f: kernel 3x5 is not square" in msg
    assert "layer f: does not fit any core: neuron memory 131072 > 65536 (largest core)" in msg
    assert "memory per core:" in msg and "0     16384       65536" in msg


def test_leaky_neuron_is_refused_over_timesteps_in_one_line():
    g = one_layer()
    g["f"].attrs["leak"] = 0.5
    assert SpeckTarget().check(g) == []  # T = 1: nothing is carried, so nothing leaks
    g.T = 3
    assert SpeckTarget().check(g) == ["layer f: leaky neuron (leak 0.5 per timestep) over T=3 timesteps; Speck's IAF "
                                      "membrane has no leak (sinabs DynapcnnLayer takes IAFSqueeze layers only)"]


def test_spike_residual_into_a_membrane_is_refused_naming_the_bare_weight(monkeypatch):
    """A research loop neuron that sums a residual of spikes into its membrane (the x1 scale on
    spikes fold_scale keeps): Speck adds spikes only through a core's one kernel, so it is refused
    in one line naming the node; the same model lowers for Loihi (backends/lava/tests/test_leaky_lava.py)."""
    import snncc
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[3] / "tests"))
    from test_research_multistep import SumNet

    torch.manual_seed(0)
    with pytest.raises(TargetError) as e:
        snncc.compile(SumNet(1.0).eval(), torch.zeros(4, 2, 2, 8, 8), input_layout="TB", target="speck",
                      input_kind="spike")
    line = e.value.one_line()
    assert "node n2_in: spikes of n1 enter the membrane of layer n2 through a bare x1 weight, not a kernel" in line
    assert "\n" not in line
