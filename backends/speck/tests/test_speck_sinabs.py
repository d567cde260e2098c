"""The sinabs network against snncc's reference executor, and the emitted files.

What matches exactly (float64 spike counts per neuron, every layer, T timesteps):
- the float sinabs network (IAFSqueeze, MaxSpike(D), MembraneSubtract, initial membrane beta)
  against `reference.run` of the deployed graph (plus the readout population `with_readout`
  adds for a current output); the ideal policy fires floor(v/theta) <= D per step, as the IR;
- the quantised sinabs network (chip integers) against `reference.run` of the lowered graph with
  the same integers (`layers_to_graph`); and against the original deployed graph when the
  weights are dyadic and the scale a power of two (policy 'pow2'), where quantisation is exact.
Not modelled: the chip's lower bound -2^15 (never reached here), and Speck's one-spike-per-event
policy (docs/design.md §3), under which the chip can emit fewer spikes.
"""

from __future__ import annotations

import numpy as np
import torch

from snncc.frontend.loader import LoadedModel, trace
from snncc.models.speck import speck_cnn
from snncc.passes.manager import run_pipeline
from snncc.sim.reference import run

from snncc_speck import sinabs_net
from snncc_speck.chip import load_chip
from snncc_speck.lower import layers_to_graph, lower, with_readout
from snncc_speck.quantize import quantize
from snncc_speck.target import SpeckTarget

from speck_graphs import Builder, events, int_weights


def tiny_deployed(T=3):
    torch.manual_seed(0)
    m = speck_cnn("tiny").eval()
    return run_pipeline(trace(LoadedModel(m, None, (2, 16, 16), T=T), input_kind="spike"), "deploy").graph


def sinabs_counts(low, T, x, quant=None):
    spec, arrays = sinabs_net.network_spec(low, T, quant)
    net = sinabs_net.SpeckNetwork(spec, arrays, torch.float64)
    return net.counts(sinabs_net.to_batch_major(x))


def assert_counts_equal(ours, ref):
    assert set(ours) <= set(ref)
    for k, v in ours.items():
        r = ref[k]
        assert torch.equal(v.reshape(r.shape), r), k


def test_float_network_equals_reference_on_traced_speck_cnn():
    d = tiny_deployed(T=3)
    x = events((2, 16, 16), T=3, B=4, seed=1)
    ref = run(with_readout(d, threshold=0.25), x).counts
    low = lower(d, readout_threshold=0.25)
    ours = sinabs_counts(low, 3, x)
    assert sorted(ours) == ["features_1", "features_4", "readout"]
    assert_counts_equal(ours, ref)
    assert ref["features_1"].sum() > 100 and ref["features_4"].sum() > 100 and ref["readout"].sum() > 0
    # the lowered graph (pool -> conv -> fire per core) is the same model
    assert_counts_equal(run(layers_to_graph(low, 3), x).counts, ref)


def test_quantised_network_equals_integer_reference():
    d = tiny_deployed(T=3)
    x = events((2, 16, 16), T=3, B=4, seed=2)
    low = lower(d, readout_threshold=0.25)
    quant = quantize(low.layers, load_chip(), "max")
    ref_q = run(layers_to_graph(low, 3, {n: q.as_params() for n, q in quant.items()}), x).counts
    ours = sinabs_counts(low, 3, x, quant)
    assert_counts_equal(ours, ref_q)
    assert ref_q["features_1"].sum() > 100


def hand_built(T=4):
    """Integer weights; avg pool (1/4 folds into weights), sum pool, flatten + linear head with a fire."""
    rng = np.random.default_rng(3)
    b = Builder((2, 8, 8), T=T)
    f0 = b.fire("f0", b.conv("c0", "input", int_weights(rng, (4, 2, 3, 3)), padding=1), D=4, theta=2.0, beta=1.0)
    f1 = b.fire("f1", b.conv("c1", b.pool("p1", f0, 2, mode="avg"), int_weights(rng, (6, 4, 3, 3)), padding=1),
                D=2, theta=1.0, beta=0.5)
    flat = b.add("flat", "reshape", [b.pool("p2", f1, 2)], {"shape": (6 * 2 * 2,)})
    head = b.add("head", "linear", [flat], {}, {"weight": int_weights(rng, (3, 24))})
    return b.build(b.fire("f2", head, D=8, theta=4.0, beta=2.0))


def test_hand_built_lowering_shapes():
    low = lower(hand_built())
    assert [(l.name, l.pool, l.in_shape, l.kernel, l.out_shape) for l in low.layers] == [
        ("f0", 1, (2, 8, 8), (3, 3), (4, 8, 8)),
        ("f1", 2, (4, 4, 4), (3, 3), (6, 4, 4)),
        ("f2", 2, (6, 2, 2), (2, 2), (3, 1, 1)),  # the Linear covers its flattened 6x2x2 input
    ]
    assert low.output_layer == "f2"


def test_pow2_quantised_network_equals_original_reference_bit_for_bit():
    g = hand_built(T=4)
    x = events((2, 8, 8), T=4, B=3, seed=4)
    ref = run(g, x).counts
    low = lower(g)
    quant = quantize(low.layers, load_chip(), "pow2")
    # f1's weights carry the avg pool's 1/4: dyadic, so a power-of-two scale keeps them exact
    assert all(q.report["weight_max_abs_error"] == 0.0 for q in quant.values())
    assert_counts_equal(sinabs_counts(low, 4, x), ref)
    assert_counts_equal(sinabs_counts(low, 4, x, quant), ref)
    assert ref["f0"].sum() > 50 and ref["f1"].sum() > 10 and ref["f2"].sum() > 0


def test_emit_is_deterministic_and_rebuilds_the_network():
    g = hand_built(T=4)
    t = SpeckTarget()
    a, b = t.emit(g, {"scale_policy": "pow2"}), t.emit(g, {"scale_policy": "pow2"})
    assert sorted(a) == ["sinabs_model.json", "sinabs_model.npz", "speck_config.json"]
    assert a == b
    net = sinabs_net.loads(a["sinabs_model.json"], a["sinabs_model.npz"], torch.float64)
    x = events((2, 8, 8), T=4, B=3, seed=5)
    ours = net.counts(sinabs_net.to_batch_major(x))
    assert_counts_equal(ours, run(g, x).counts)
    import json

    cfg = json.loads(a["speck_config.json"])
    cores = {c["layer"]: c for c in cfg["cores"]}
    f1 = cores["f1"]
    assert f1["dimensions"]["input_shape"] == {"size": {"x": 4, "y": 4}, "feature_count": 4}
    assert f1["dimensions"]["kernel_size"] == 3 and f1["dimensions"]["stride"] == {"x": 1, "y": 1}
    assert f1["threshold_low"] == -32768 and f1["return_to_zero"] is False
    assert f1["threshold_high"] == round(1.0 * f1["scale"]) and f1["neurons_initial_value"] == f1["threshold_high"] // 2
    assert cores["f0"]["destinations"] == [{"layer": f1["core"], "enable": True, "pooling": 2, "target": "f1"}]
    assert cfg["output"] == {"layer": "f2", "core": cores["f2"]["core"]}
    # samna layout: kernel axes transposed
    w = np.array(cores["f0"]["weights"])
    np.testing.assert_array_equal(w.transpose(0, 1, 3, 2) / cores["f0"]["scale"], lower(g).layers[0].weight)


def test_grouped_conv_global_mean_and_scale_lower_exactly():
    """Depthwise conv -> dense kernel with zero blocks; mean over (H, W) + Linear -> a conv covering
    the map with W / (H*W); a per-channel scale folds into the rows."""
    rng = np.random.default_rng(6)
    b = Builder((4, 4, 4), T=3)
    f0 = b.fire("f0", b.conv("dw", "input", int_weights(rng, (4, 1, 3, 3)), padding=1, groups=4), theta=2.0, beta=1.0)
    m = b.add("gap", "mean", [f0], {"dims": (1, 2)})
    lin = b.add("head", "linear", [m], {}, {"weight": int_weights(rng, (5, 4)) * 4})
    s = b.add("ls", "scale", [lin], {}, {"factor": np.array([1.0, 0.5, 2.0, 1.0, 0.25])})
    g = b.build(b.fire("f1", s, theta=0.5, beta=0.25))
    low = lower(g)
    dw, head = low.layers
    assert dw.weight.shape == (4, 4, 3, 3) and np.count_nonzero(dw.weight[0, 1:]) == 0  # off-diagonal blocks
    assert head.kernel == (4, 4) and head.in_shape == (4, 4, 4) and head.out_shape == (5, 1, 1)
    np.testing.assert_array_equal(head.weight[:, :, 2, 3], g["head"].params["weight"] / 16
                                  * np.array([1.0, 0.5, 2.0, 1.0, 0.25])[:, None])
    x = events((4, 4, 4), T=3, B=4, seed=7)
    ref = run(g, x).counts
    assert_counts_equal(sinabs_counts(low, 3, x), ref)
    assert ref["f0"].sum() > 20 and ref["f1"].sum() > 0


def test_target_simulate_float_equals_reference_and_chip_precision_runs():
    from snncc_speck.target import SpeckTarget

    d = tiny_deployed(T=3)
    x = events((2, 16, 16), T=3, B=4, seed=2)
    tgt = SpeckTarget()
    r = tgt.simulate(d, x, {"readout_threshold": 0.25})
    ref = run(with_readout(d, threshold=0.25), x)
    assert set(r.counts) == set(ref.counts)
    for k in ref.counts:
        assert torch.equal(r.counts[k], ref.counts[k]), k
    assert torch.equal(r.output, ref.counts["readout"] / 3)
    q = tgt.simulate(d, x, {"readout_threshold": 0.25, "precision": "chip"})
    assert set(q.counts) == set(ref.counts) and q.output.shape == r.output.shape
