"""sim.tally.ModelTally, the cost of a target's own model (e.g. fixed point) against the integer
model, on outputs and counts written by hand: agreement, differing counts, worst population,
accuracies; no agreement claimed for an output that is not class scores."""

from types import SimpleNamespace as NS

import numpy as np
import torch

from snncc.ir.graph import Graph, Node
from snncc.sim.tally import ModelTally

FIRE = {"D": 4, "theta": 1.0, "beta": 0.0, "norm": 1.0, "rounding": "floor"}


def graph() -> Graph:
    return Graph([Node("x", "input", [], {"shape": (2,)}), Node("a", "fire", ["x"], dict(FIRE)),
                  Node("l", "linear", ["a"], {}, {"weight": np.eye(2)}), Node("b", "fire", ["l"], dict(FIRE)),
                  Node("out", "output", ["b"])]).infer()


def test_two_batches_by_hand():
    t = ModelTally(graph(), "fixed model")
    ref = NS(output=torch.tensor([[1., 2.], [3., 0.]]), counts={"a": torch.tensor([[1, 2], [3, 0]]),
                                                                "b": torch.tensor([[0, 1], [2, 2]])})
    got = NS(output=torch.tensor([[1., 2.], [0., 3.]]), counts={"a": torch.tensor([[1, 2], [3, 0]]),
                                                                "b": torch.tensor([[0, 1], [1, 3]])})
    t.observe(got, ref, [1, 1])  # predictions: ref 1, 0; got 1, 1
    t.observe(NS(output=torch.tensor([[5., 4.]]), counts={"a": torch.tensor([[4, 0]]), "b": torch.tensor([[1, 0]])}),
              NS(output=torch.tensor([[5., 4.]]), counts={"a": torch.tensor([[4, 1]]), "b": torch.tensor([[1, 0]])}))
    assert (t.samples, t.agree, t.labelled, t.correct) == (3, 2, 2, {"model": 2, "reference": 1})
    assert t.differing == {"a": 1, "b": 2} and t.neurons == {"a": 6, "b": 6}
    assert t.line() == ("fixed model: 3 samples, agreement with the integer model 66.67% (2/3), 25.000% of neuron "
                        "counts differ (3/12; most in b: 2/6), accuracy 1.0000 (2/2), integer model 0.5000 (1/2)")
    assert t.table().splitlines() == ["  a: 1/6 (16.667%)", "  b: 2/6 (33.333%)"]


def test_no_agreement_without_class_scores():
    t = ModelTally(graph(), "m")
    t.observe(NS(output=torch.tensor([1., 2.]), counts={}), NS(output=torch.tensor([1., 2.]), counts={}), [0, 1])
    assert t.line() == "m: 2 samples, 0.000% of neuron counts differ (0/0)"
