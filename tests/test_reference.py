"""Reference executor: fire semantics by hand, stateful neurons over T, float32/float64."""

import numpy as np
import torch

from snncc.ir import Graph, Node
from snncc.sim.reference import run


def one_fire(**attrs):
    return Graph([Node("x", "input", [], {"shape": (6,)}), Node("f", "fire", ["x"], {"D": 4, **attrs}),
                  Node("o", "output", ["f"])]).infer()


def test_fire_counts_by_hand():
    x = torch.tensor([[-1.0, 0.49, 0.5, 1.5, 2.5, 9.0]], dtype=torch.float64)
    assert run(one_fire(), x).counts["f"].tolist() == [[0, 0, 0, 2, 2, 4]]
    assert run(one_fire(rounding="half_up"), x).counts["f"].tolist() == [[0, 0, 1, 2, 3, 4]]
    assert run(one_fire(rounding="floor", theta=0.5, beta=0.25), x).counts["f"].tolist() == [[0, 1, 1, 3, 4, 4]]
    r = run(one_fire(norm=4.0), x)
    assert r.output.tolist() == [[0, 0, 0, 0.5, 0.5, 1.0]]
    assert r.ties == {"f": 2}  # 0.5 -> 0 and 2.5 -> 2 round to even


def test_stateful_neuron_carries_membrane_with_subtractive_reset():
    g = one_fire(rounding="floor", stateful=True)
    g.T = 3
    x = torch.tensor([[[0.6] * 6], [[0.6] * 6], [[2.9] * 6]], dtype=torch.float64)  # (T, B, 6)
    r = run(g, x)
    # v: 0.6 -> 0 spikes; 1.2 -> 1 spike, keeps 0.2; 0.2 + 2.9 = 3.1 -> 3 spikes
    assert r.counts["f"][0, 0].item() == 4
    assert torch.allclose(r.output[0, 0], torch.tensor((0 + 1 + 3) / 3, dtype=torch.float64))


def test_float32_and_float64():
    g = one_fire(rounding="floor")
    x = np.array([[0.5, 1.0, 1.5, 2.0, 3.0, 3.7]])
    assert run(g, x, torch.float32).output.dtype == torch.float32
    assert run(g, x).counts["f"].tolist() == [[0, 1, 1, 2, 3, 3]]
