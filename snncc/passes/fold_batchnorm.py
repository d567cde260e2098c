"""fold_batchnorm: fold inference BatchNorm into the preceding conv/linear.

Requires: the BN's input is a conv/linear (possibly through one permute, as in BatchNorm1d on
transposed tokens) whose only user is the BN and whose output channel axis is the BN's axis. Changes: weight W' = W * g / sqrt(v + eps) per output channel,
bias b' = (b - m) * g / sqrt(v + eps) + beta; the BN node disappears.
Preserves: the reference executor's output (up to float rounding).
"""

from __future__ import annotations

import numpy as np

from snncc.ir.derived import scaled
from snncc.ir.graph import Graph
from snncc.passes.base import PassResult, batchnorm_affine, bypass, out_channel_axis, single_user


def fold_batchnorm(graph: Graph) -> PassResult:
    g = graph.clone()
    changes = []
    users = g.users()
    for bn in [n for n in g.nodes if n.op == "batchnorm"]:
        prod = g[bn.inputs[0]]
        axis = bn.attrs["axis"] % len(bn.shape)
        via = None
        if prod.op == "permute" and single_user(g, prod.name, users) is bn:
            # BatchNorm1d on (B, C, N) after a token-wise linear: x.transpose(1, 2) -> BN.
            via, axis, prod = prod, prod.attrs["dims"][axis], g[prod.inputs[0]]
            if single_user(g, prod.name, users) is not via:
                continue
        elif single_user(g, prod.name, users) is not bn:
            continue
        if axis != out_channel_axis(prod):  # None: no weights per output channel (its "out_channels" cell)
            continue
        k, _ = batchnorm_affine(bn)
        w = prod.params["weight"]
        prod.params["weight"] = scaled(w, k.reshape((-1,) + (1,) * (w.ndim - 1)))
        b = prod.params.get("bias", np.zeros(w.shape[0]))
        prod.params["bias"] = (b - bn.params["mean"]) * k + bn.params["bias"]
        bypass(g, bn)
        users = g.users()
        changes.append(f"folded {bn.name} into {prod.name}")
    return PassResult(g.verify(), changes)
