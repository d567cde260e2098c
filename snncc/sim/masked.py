"""Executors with spike sparse convolution (SSC, docs/design.md §4): the reference interpreter with masked
convolutions (`MaskedInterpreter`), the dense SSC reference run (`dense_ssc`), and the site-mask
geometry both they and the SSC pass use (`SiteMasks`, `centre_gather`, `propagate`, `site_masks`).

The pass (`snncc.passes.ssc`) only computes masks (graph -> graph); running a graph under them
happens here, and in the event simulator (`snncc.sim.events`, gated address tables).
- `MaskedInterpreter(graph, masks)`: conv outputs times their active-site mask, masked fire
  neurons silent and stateless; `masks` a `SiteMasks` (static) or "centre" (centre spiked: a conv
  output site is active iff its centre input site holds a spike in this sample and timestep, any
  channel; a fire neuron is active iff a conv term feeding it is active at its site).
- `dense_ssc(graph, x, masks | mask, mode)`: run the graph that way (mode "mask": static masks or
  an input-site mask to propagate with `site_masks`; mode "centre").
Per op, two columns of the op registry live here: "ssc_masks" (an op's output sites from its
inputs', `propagate`) and "ssc_centre" (what a neuron's centre-rule mask reads in its input tree).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from snncc.errors import PassError, SnnccError
from snncc.ir.graph import Graph, Node
from snncc.ir.ops import OPS
from snncc.ir.registry import NOT_DEPLOYED, cell, column, implement, implements, refuse
from snncc.sim.reference import Interpreter, Result

MODES = ("mask", "centre")


@dataclass
class SiteMasks:
    """Static SSC masks: bool arrays over spatial sites (no channel axis, no batch axis)."""
    conv: dict[str, np.ndarray] = field(default_factory=dict)  # conv -> active output sites
    neurons: dict[str, np.ndarray] = field(default_factory=dict)  # fire -> active sites
    nodes: dict[str, np.ndarray] = field(default_factory=dict)  # every node with a spatial mask


def _spatial_nd(shape: tuple) -> int:
    return len(shape) - 1


def centre_gather(m: torch.Tensor, n: Node) -> torch.Tensor:
    """Conv output-site mask from an input-site mask m (B, *spatial): the centre site of each output."""
    w = n.params["weight"]
    nd = w.ndim - 2
    out = m
    for i in range(nd):
        k, s, p, d = w.shape[2 + i], n.attrs["stride"][i], n.attrs["padding"][i], n.attrs["dilation"][i]
        L = m.shape[1 + i]
        Lo = n.shape[1 + i]
        q = torch.arange(Lo) * s - p + (k // 2) * d
        valid = (q >= 0) & (q < L)
        qc = q.clamp(0, L - 1)
        out = out.index_select(1 + i, qc)
        shape = [1] * out.dim()
        shape[1 + i] = Lo
        out = out & valid.reshape(shape)
    return out


def _pool_any(m: torch.Tensor, n: Node) -> torch.Tensor:
    (kh, kw), (sy, sx), (py, px) = n.attrs["kernel"], n.attrs["stride"], n.attrs["padding"]
    f = F.pad(m.to(torch.float64).unsqueeze(1), (px, px, py, py))
    return F.max_pool2d(f, (kh, kw), (sy, sx)).squeeze(1) > 0


# ---- site-mask rules: the "ssc_masks" column of the op registry ------------------------------------
column("ssc_masks", "executor", "SSC site masks (sim/masked.propagate): the active sites of an op's output "
       "from its inputs' (the masked interpreter, the SSC pass and the event simulator's gating)",
       module="snncc.sim.masked")


def _same(graph: Graph, n: Node, ins: list):  # the input's sites, unchanged
    return ins[0]


def _mask_conv(graph: Graph, n: Node, ins: list):
    return None if ins[0] is None else centre_gather(ins[0], n)


def _mask_pool(graph: Graph, n: Node, ins: list):
    return None if ins[0] is None else _pool_any(ins[0], n)


def _mask_add(graph: Graph, n: Node, ins: list):
    live = [m for m in ins if m is not None]
    if not live or len(live) != len(ins):
        return None
    m = live[0]
    for x in live[1:]:
        m = m | x
    return m


def _mask_offset(graph: Graph, n: Node, ins: list):  # an offset along channels keeps the sites
    return ins[0] if n.attrs["axis"] == 0 else None


def _mask_upsample(graph: Graph, n: Node, ins: list):
    if ins[0] is None:
        return None
    sh, sw = n.attrs["scale"]
    return ins[0].repeat_interleave(sh, dim=1).repeat_interleave(sw, dim=2)


def _mask_bilinear(graph: Graph, n: Node, ins: list):  # a site is live if one of its nonzero weights reads a live site
    if ins[0] is None:
        return None
    from snncc.ir.ops import bilinear_weights

    (H, W), (Ho, Wo), ac = ins[0].shape[-2:], n.attrs["size"], n.attrs["align_corners"]
    ah = torch.from_numpy((bilinear_weights(H, Ho, ac) != 0).astype(np.float64))
    aw = torch.from_numpy((bilinear_weights(W, Wo, ac) != 0).astype(np.float64))
    return (ah @ ins[0].to(torch.float64) @ aw.T) > 0


def _mask_reshape(graph: Graph, n: Node, ins: list):  # only the identity reshape keeps the sites
    return ins[0] if tuple(n.shape) == tuple(graph[n.inputs[0]].shape) else None


def _mask_permute(graph: Graph, n: Node, ins: list):  # only the identity permute keeps the sites
    return ins[0] if tuple(n.attrs["dims"]) == tuple(range(len(graph[n.inputs[0]].shape))) else None


def _no_sites(graph: Graph, n: Node, ins: list):  # no (C, *spatial) layout, or sites not tracked
    return None


implement("conv", _mask_conv, executor="ssc_masks")
implements("pool", "max_pool", executor="ssc_masks")(_mask_pool)
implement("add", _mask_add, executor="ssc_masks")
implements("fire", "scale", "output", executor="ssc_masks")(_same)
implement("offset", _mask_offset, executor="ssc_masks")
implement("upsample", _mask_upsample, executor="ssc_masks")
implement("bilinear", _mask_bilinear, executor="ssc_masks")
implement("reshape", _mask_reshape, executor="ssc_masks")
implement("permute", _mask_permute, executor="ssc_masks")
implements("input", "linear", "mean", "spike_product", "relay", executor="ssc_masks")(_no_sites)
refuse("batchnorm", "pad", executor="ssc_masks", why=NOT_DEPLOYED + " (propagate gives such a node no mask)")


def propagate(graph: Graph, leaf: dict[str, torch.Tensor], fixed_fires: bool = False) -> dict[str, torch.Tensor]:
    """Masks (B, *spatial) bool of every node reachable from the leaves' masks; nodes without a
    spatial (C, *spatial) layout get none. A fire's mask is its input's, unless `fixed_fires`
    and the fire has a leaf mask. Each op's rule is its `ssc_masks` cell; an op refused there
    gets no mask."""
    out: dict[str, torch.Tensor] = {}
    for n in graph.nodes:
        if n.name in leaf and (n.op == "input" or fixed_fires):
            out[n.name] = leaf[n.name]
            continue
        c = cell(n.op, "ssc_masks")
        if c is None or c.refused:
            continue
        m = c.impl(graph, n, [out.get(i) for i in n.inputs])
        if m is not None:
            out[n.name] = m
    return out


class MaskedInterpreter(Interpreter):
    """The reference executor with SSC: conv outputs times their active-site mask, masked fire
    neurons silent and stateless. `masks` is a SiteMasks (static) or the string 'centre'."""

    def __init__(self, graph: Graph, masks, dtype: torch.dtype = torch.float64):
        super().__init__(graph, dtype)
        self.masks = masks
        self._live: dict[str, torch.Tensor] = {}  # centre mode: node -> (B, *spatial) this timestep
        self._env_inputs: dict[str, torch.Tensor] = {}

    def _bcast(self, m, x):
        m = torch.as_tensor(np.asarray(m)) if not isinstance(m, torch.Tensor) else m
        if m.dim() == x.dim() - 2:  # shared (spatial) mask
            return m.to(x.dtype).reshape((1, 1) + tuple(m.shape))
        return m.to(x.dtype).unsqueeze(1)  # (B, *spatial)

    def op_conv(self, n: Node, x):
        y = super().op_conv(n, x)
        if self.masks == "centre":
            live = (x != 0).any(1)  # (B, *spatial): a spike (or nonzero input) at the site
            m = centre_gather(live, n)
            self._live[n.name] = m
            return y * self._bcast(m, y)
        m = self.masks.conv.get(n.name)
        return y if m is None else y * self._bcast(m, y)

    def _fire_mask(self, n: Node):
        if self.masks != "centre":
            return self.masks.neurons.get(n.name)
        # centre mode: a neuron is active iff a conv term feeding it is active at its site
        ms = []
        stack = [n.inputs[0]]
        seen = set()
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            m = self.graph[name]
            c = cell(m.op, "ssc_centre")  # refused: the walk ends there
            if c is not None and not c.refused:
                terms, walk = c.impl(self, m, n)
                ms.extend(terms)
                stack.extend(walk)
        if not ms:
            return None
        out = ms[0]
        for x in ms[1:]:
            out = out | x
        return out

    def op_fire(self, n: Node, u):
        m = self._fire_mask(n)
        cnt, y = super().op_fire(n, u)
        if m is None:
            return cnt, y
        mk = self._bcast(m, cnt)
        if n.attrs["stateful"] and n.name in self.state:  # no state is kept after the last step
            self.state[n.name] = self.state[n.name] * mk
        return cnt * mk, y * mk


# ---- the centre rule's walk: the "ssc_centre" column ------------------------------------------------
column("ssc_centre", "executor", "centre-spiked SSC (MaskedInterpreter, mode centre): what a neuron's mask reads "
       "in its input current tree: a conv term's live output sites, or the op's inputs walked through",
       module="snncc.sim.masked")


def _centre_term(it: MaskedInterpreter, m: Node, fire: Node):  # its live sites, where they are the neuron's
    key = it.same.get(m.name, m.name)  # private copies of a conv are evaluated once
    if key in it._live and tuple(m.shape[1:]) == tuple(fire.shape[1:]):
        return [it._live[key]], []
    return [], []


def _centre_through(it: MaskedInterpreter, m: Node, fire: Node):  # a sum or a factor keeps the terms' sites
    return [], list(m.inputs)


def _centre_through_currents(it: MaskedInterpreter, m: Node, fire: Node):  # a layout op inside the current tree
    return [], list(m.inputs) if m.kind == "current" else []


implement("conv", _centre_term, executor="ssc_centre")
implements("add", "scale", executor="ssc_centre")(_centre_through)
implements("reshape", "permute", executor="ssc_centre")(_centre_through_currents)
refuse(*(op for op in OPS if op not in ("conv", "add", "scale", "reshape", "permute")), executor="ssc_centre",
       why="ends the walk: a neuron's centre-rule mask reads the conv terms reached through sums, scales and "
           "layout ops of currents only")


def site_masks(graph: Graph, mask) -> SiteMasks:
    """Propagate a static input-site mask ((H, W) for a (C, H, W) input) through the graph."""
    inp = graph.inputs[0]
    m = torch.as_tensor(np.asarray(mask, dtype=bool))
    if tuple(m.shape) != tuple(inp.shape[1:]):
        raise PassError(f"site mask of shape {tuple(m.shape)} does not fit input sites {inp.shape[1:]}",
                        where=f"node {inp.name}", hint="pass one bool per spatial site of the input")
    masks = propagate(graph, {inp.name: m.unsqueeze(0)})
    sm = SiteMasks()
    for n in graph.nodes:
        if n.name in masks:
            a = masks[n.name][0].numpy().copy()
            sm.nodes[n.name] = a
            if n.op == "conv":
                sm.conv[n.name] = a
            elif n.op == "fire":
                sm.neurons[n.name] = a
    return sm


def dense_ssc(graph: Graph, x, masks=None, mode: str = "mask", mask=None) -> Result:
    """Dense SSC reference: run `graph` on `x` with masked convolutions.

    mode 'mask': static masks (a `SiteMasks`, or `mask` = an input-site mask to propagate);
    mode 'centre': the centre-spiked rule (per sample, per timestep)."""
    if mode not in MODES:
        raise SnnccError(f"unknown SSC mode {mode!r}", hint=f"one of {', '.join(MODES)}")
    if mode == "mask":
        if masks is None:
            if mask is None:
                raise SnnccError("SSC mode 'mask' needs `masks` (SiteMasks) or an input-site `mask`")
            masks = site_masks(graph, mask)
        it = MaskedInterpreter(graph, masks)
    else:
        it = MaskedInterpreter(graph, "centre")
    with torch.no_grad():
        return it.run(x)



__all__ = ["SiteMasks", "propagate", "site_masks", "centre_gather", "MaskedInterpreter", "dense_ssc", "MODES"]
