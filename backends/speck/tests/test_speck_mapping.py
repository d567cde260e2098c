"""Memory per layer against hand-computed formulas, and layer-to-core placement."""

from __future__ import annotations

import numpy as np
import torch

from snncc.frontend.loader import LoadedModel, trace
from snncc.models.speck import speck_cnn
from snncc.passes.manager import run_pipeline

from snncc_speck.chip import load_chip
from snncc_speck.lower import lower
from snncc_speck.mapping import kernel_memory, layer_memory, neuron_memory, place
from snncc_speck.target import SpeckTarget, analyse

from speck_graphs import Builder, chain


def tiny_deployed(T=3):
    torch.manual_seed(0)
    m = speck_cnn("tiny").eval()  # 2x16x16 -> conv3 8 -> pool2 -> conv3 16 -> pool2 -> conv4 10
    return run_pipeline(trace(LoadedModel(m, None, (2, 16, 16), T=T), input_kind="spike"), "deploy").graph


def test_formulas_by_hand():
    # kernel = c_in * 2^(ceil(log2(kh*kw)) + ceil(log2(c_out)))
    assert kernel_memory(2, 3, 3, 8) == 2 * 2 ** (4 + 3) == 256  # log2 9 -> 4, log2 8 = 3
    assert kernel_memory(3, 5, 5, 20) == 3 * 2 ** (5 + 5) == 3072  # log2 25 -> 5, log2 20 -> 5
    assert kernel_memory(16, 1, 1, 1) == 16 * 2 ** (0 + 0) == 16
    assert kernel_memory(64, 4, 4, 10) == 64 * 2 ** (4 + 4) == 16384  # log2 16 = 4, log2 10 -> 4
    # neuron = c_out * 2^(ceil(log2(h_out)) + ceil(log2(w_out)))
    assert neuron_memory(20, 13, 7) == 20 * 2 ** (4 + 3) == 2560
    assert neuron_memory(16, 64, 64) == 16 * 2 ** (6 + 6) == 65536
    assert neuron_memory(10, 1, 1) == 10 * 2 ** 0 == 10
    assert neuron_memory(8, 33, 33) == 8 * 2 ** (6 + 6) == 32768  # 33 rounds up to 64


def test_layer_memory_of_traced_speck_cnn():
    low = lower(tiny_deployed())
    mem = {l.name: layer_memory(l) for l in low.layers}
    assert [l.name for l in low.layers] == ["features_1", "features_4", "readout"]
    # features_1: conv 2->8, 3x3, out 8x16x16: kernel 2*2^(4+3) = 256, neuron 8*2^(4+4) = 2048
    assert (mem["features_1"].kernel, mem["features_1"].neuron, mem["features_1"].bias) == (256, 2048, 0)
    # features_4: pool 2 then conv 8->16, 3x3, out 16x8x8: kernel 8*2^(4+4) = 2048, neuron 16*2^(3+3) = 1024
    assert (mem["features_4"].kernel, mem["features_4"].neuron) == (2048, 1024)
    # readout: pool 2 then conv 16->10 covering 4x4, out 10x1x1: kernel 16*2^(4+4) = 4096, neuron 10*2^0 = 10
    assert (mem["readout"].kernel, mem["readout"].neuron) == (4096, 10)
    assert low.layers[1].pool == 2 and low.layers[1].in_shape == (8, 8, 8)
    assert low.layers[2].kernel == (4, 4) and low.layers[2].out_shape == (10, 1, 1)


def test_bias_memory_counts_channels():
    b = Builder((2, 4, 4))
    w = np.ones((5, 2, 3, 3))
    g = b.build(b.fire("f", b.conv("c", "input", w, padding=1), bias=np.arange(1, 6.0).reshape(5, 1, 1)))
    lay = lower(g).layers[0]
    np.testing.assert_array_equal(lay.bias, [1, 2, 3, 4, 5])
    assert layer_memory(lay).bias == 5


def test_placement_small_network():
    low = lower(chain(3, c=4, side=8))  # every layer: kernel 2or4 * 2^(4+2), neuron 4 * 2^(3+3) = 256
    p = place(low.layers, load_chip())
    assert p.fits and sorted(p.cores) == ["f0", "f1", "f2"]
    assert len(set(p.cores.values())) == 3
    assert p.memory["f0"].kernel == 2 * 2 ** (4 + 2) == 128 and p.memory["f1"].kernel == 4 * 2 ** 6 == 256
    text = SpeckTarget().explain(chain(3, c=4, side=8))
    assert "fits: 3 layer(s) on 3 of 9 cores" in text and "## placement" in text


def _wide_chain(channels):
    rng = np.random.default_rng(0)
    b = Builder((2, 64, 64))
    src, cin = "input", 2
    for i, c in enumerate(channels):
        src = b.fire(f"f{i}", b.conv(f"c{i}", src, rng.integers(-2, 3, (c, cin, 3, 3)), padding=1))
        cin = c
    return b.build(src)


def test_placement_is_a_matching_not_first_fit():
    # 16 channels on 64x64: neuron 16*2^(6+6) = 65536 entries, only cores 0-2 (64Ki) hold it.
    # 8 channels on 64x64: 8*2^12 = 32768, cores 0-4. First fit would put f1 on core 1 and leave
    # f3 without a core; the matching moves f1 to core 3 or 4.
    a = analyse(_wide_chain([16, 8, 16, 16]))
    p = a.placement
    assert p.memory["f0"].neuron == 65536 and p.memory["f1"].neuron == 32768
    assert p.candidates["f0"] == [0, 1, 2] and p.candidates["f1"] == [0, 1, 2, 3, 4]
    assert p.fits and a.problems == []
    assert {p.cores["f0"], p.cores["f2"], p.cores["f3"]} == {0, 1, 2} and p.cores["f1"] in (3, 4)


def test_placement_failure_lists_competing_layers():
    a = analyse(_wide_chain([16, 16, 16, 16]))
    assert len(a.placement.cores) == 3 and len(a.placement.unplaced) == 1
    (msg,) = [m for m in a.problems if m.startswith("placement:")]
    assert msg == (f"placement: 3 of 4 layers placed; {a.placement.unplaced[0]} fit only cores [0, 1, 2], "
                   f"which are taken")
