"""fold_scale: fold per-channel or scalar `scale` nodes into an adjacent conv/linear.

Also (through) a scalar scale whose value reaches an ungrouped conv only through nearest
upsamplings and a channel concatenation (an add of channel `offset`s) folds into the conv's
weights on the input channels it lands on.

Requires: (after) the scale's input is a conv/linear used only by the scale, and the factor
varies only along the output-channel axis; or (before) the scale is scalar and its only user
is a conv/linear. Changes: weights (and bias, for the after case) are multiplied, the scale node
disappears; adjacent scalar scales merge; a scale by 1 on a current is removed (on spikes it is
the synapse that turns them into a current, e.g. a spike residual summed into a membrane, and
stays). Preserves: the reference executor's output.
"""

from __future__ import annotations

import numpy as np

from snncc.ir.derived import scaled
from snncc.ir.graph import Graph
from snncc.passes.base import PassResult, bypass, channel_factor, out_channel_axis, single_user


def fold_scale(graph: Graph) -> PassResult:
    g = graph.clone()
    changes = []
    changed = True
    while changed:
        changed = False
        users = g.users()
        for s in [n for n in g.nodes if n.op == "scale"]:
            f = s.params["factor"]
            prod = g[s.inputs[0]]
            axis = out_channel_axis(prod)  # its "out_channels" cell: the weights a factor after it folds into
            if axis is not None and single_user(g, prod.name, users) is s:
                vec = channel_factor(f, s.shape, axis)
                if vec is not None:
                    w = prod.params["weight"]
                    prod.params["weight"] = scaled(w, vec.reshape((-1,) + (1,) * (w.ndim - 1)))
                    if "bias" in prod.params:
                        prod.params["bias"] = prod.params["bias"] * vec
                    bypass(g, s)
                    changes.append(f"folded {s.name} into {prod.name} (after)")
                    changed = True
                    break
            if f.size == 1:
                nxt = single_user(g, s.name, users)
                if prod.op == "scale" and prod.params["factor"].size == 1 and single_user(g, prod.name, users) is s:
                    prod.params["factor"] = prod.params["factor"] * f
                    bypass(g, s)
                    changes.append(f"merged {s.name} into {prod.name}")
                    changed = True
                    break
                if nxt is not None and out_channel_axis(nxt) is not None:  # a scalar: into all of its weights
                    nxt.params["weight"] = scaled(nxt.params["weight"], float(f.reshape(-1)[0]))
                    bypass(g, s)
                    changes.append(f"folded {s.name} into {nxt.name} (before)")
                    changed = True
                    break
                target = _conv_slice_through(g, s, users)
                if target is not None:
                    conv, (lo, hi) = target
                    vec = np.ones(conv.params["weight"].shape[1])
                    vec[lo:hi] = float(f.reshape(-1)[0])
                    w = conv.params["weight"]
                    conv.params["weight"] = scaled(w, vec.reshape((1, -1) + (1,) * (w.ndim - 2)))
                    bypass(g, s)
                    changes.append(f"folded {s.name} into {conv.name} (input channels {lo}:{hi}, through "
                                   f"upsampling / concatenation)")
                    changed = True
                    break
                if nxt is not None and nxt.spec.product:  # a product's operand stays
                    continue
                if float(f.reshape(-1)[0]) == 1.0 and prod.kind == "current":  # x1 on spikes: a synapse
                    bypass(g, s)
                    changes.append(f"removed identity {s.name}")
                    changed = True
                    break
    return PassResult(g.verify(), changes)


def _conv_slice_through(g: Graph, s, users) -> tuple | None:
    """The ungrouped conv a scalar scale reaches through single-user nearest upsamplings and at most
    one channel offset of a concatenation (an add of channel offsets), with the input channels its
    value lands on; None otherwise. A scalar commutes with upsampling, and the concatenation puts
    the scaled value on its own input channels of the conv, so the scale folds into those weights."""
    cur, lo, hi = s, 0, s.shape[0] if len(s.shape) == 3 else None
    while hi is not None:
        nxt = single_user(g, cur.name, users)
        if nxt is None:
            return None
        if nxt.op == "upsample":
            cur = nxt
        elif nxt.op == "offset" and nxt.attrs["axis"] == 0 and (lo, hi) == (0, cur.shape[0]):
            add = single_user(g, nxt.name, users)
            if add is None or add.op != "add" or not all(g[i].op == "offset" and g[i].attrs["axis"] == 0
                                                          for i in add.inputs):
                return None
            lo, hi, cur = nxt.attrs["at"], nxt.attrs["at"] + cur.shape[0], add
        elif nxt.op == "conv" and nxt.attrs["groups"] == 1 and len(nxt.shape) == 3:
            return nxt, (lo, hi)
        else:
            return None
    return None
