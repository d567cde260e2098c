"""bias_to_current: turn the biases feeding a neuron into its constant current.

The same holds for a relay (residual-stream accumulator): its constant current is its `bias`.
Requires: the neuron's input current tree is private (every node in it has that neuron as its
only eventual user) and holds no batchnorm. Because the tree is affine in its sources,
U(s) = L(s) + U(0): the pass evaluates U(0) (all sources zero), stores it on the fire as the
`bias` parameter (per channel when it is constant over space, full-size otherwise, e.g. near
zero-padded borders) and deletes the biases inside the tree. A max pool in the tree (host domain
only: the input's encoding) is not affine, but max(a + c) = max(a) + c when c is constant within
each window (a conv's per-channel bias); any other constant there is refused naming the pool.
Preserves: the reference executor's output (up to float rounding).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from snncc.errors import PassError
from snncc.ir.deployed import current_tree
from snncc.ir.graph import Graph, Node
from snncc.ir.ops import POPULATION_OPS
from snncc.passes.base import PassResult, channel_factor, out_channel_axis
from snncc.sim.reference import Interpreter


def private_tree(g: Graph, fire: Node, users: dict) -> list[Node] | None:
    """The current nodes only `fire` (a neuron or a relay) consumes (a DAG), in graph order; None
    if one is shared. The tree stops at spike tensors, inputs and relays (sources)."""
    names = current_tree(g, fire)
    for name in names:
        if any(u.name not in names and u is not fire for u in users[name]):
            return None
    return [n for n in g.nodes if n.name in names]


def constant_current(g: Graph, tree: list[Node]) -> np.ndarray:
    """The tree on all-zero sources. Ops whose inputs are all zero are not run: a conv or linear
    gives its bias broadcast (exactly what it computes on zeros), every other op zero; only ops
    downstream of a bias are evaluated (on a 83M-parameter E-SpikeFormer this skips ~all convs)."""
    interp = Interpreter(Graph(), torch.float64)
    with warnings.catch_warnings():  # shared weights are read-only arrays; this only reads them
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        interp._params = {n.name: {k: torch.as_tensor(v) for k, v in n.params.items()} for n in tree}
    env: dict = {}  # name -> value; absent: all zero

    def value(i):
        return env[i] if i in env else torch.zeros((1,) + g[i].shape, dtype=torch.float64)

    for n in tree:
        if all(i not in env for i in n.inputs):  # every input is zero (sources are zero)
            axis = out_channel_axis(n)  # its "out_channels" cell: a bias along that axis
            b = interp.p(n, "bias") if axis is not None else None
            if b is not None:
                shape = (1,) + tuple(n.shape)
                along = [1] * len(shape)
                along[1 + axis] = -1
                env[n.name] = b.reshape(along).expand(shape)
            continue
        env[n.name] = getattr(interp, f"op_{n.op}")(n, *[value(i) for i in n.inputs])
        if n.spec.host_only and not torch.equal(env[n.name], -getattr(interp, f"op_{n.op}")(n, -value(n.inputs[0]))):
            # a max of the input's encoding: max(a + c) = max(a) + c needs c constant in each window
            raise PassError("the constant current (biases) reaching this max pool varies within a pooling window "
                            "(a bias through a zero-padded conv before it), so it cannot move to the neuron",
                            where=f"node {n.name}", hint="drop that bias, or pool before the padded conv")
    return value(tree[-1].name)[0].numpy().copy()


def compact(const: np.ndarray) -> np.ndarray:
    """Per-channel vector (broadcast-ready) when the constant only varies by channel."""
    if const.ndim >= 1:
        vec = channel_factor(const, const.shape, 0)
        if vec is not None:
            return vec.reshape((-1,) + (1,) * (const.ndim - 1))
        vec = channel_factor(const, const.shape, const.ndim - 1)
        if vec is not None:
            return vec
    return const


def bias_to_current(graph: Graph) -> PassResult:
    g = graph.clone()
    changes = []
    users = g.users()
    for fire in [n for n in g.nodes if n.op in POPULATION_OPS]:  # relays take constants like neurons
        tree = private_tree(g, fire, users)
        if not tree or any(n.op == "batchnorm" for n in tree):
            continue
        if not any("bias" in n.params for n in tree):
            continue
        const = constant_current(g, tree)
        for n in tree:
            n.params.pop("bias", None)
        c = compact(const)
        if "bias" in fire.params:
            c = fire.params["bias"] + c
        fire.params["bias"] = np.asarray(c, dtype=np.float64)
        changes.append(f"{fire.name}: constant current of shape {tuple(fire.params['bias'].shape)}")
    return PassResult(g.verify(), changes)
