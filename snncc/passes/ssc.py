"""ssc: spike sparse convolution (SSC, DESIGN 4; paper section 6.2) as a rewrite of the conv
address maps, plus its dense reference and the leakage measure.

An event at input site q reaches output neurons p with q = p*stride - padding + k*dilation
(vanilla spike convolution, VSC). SSC adds one condition to this address map: output p is
updated only where its *centre site* (the input site under the kernel centre, q = p*stride -
padding + (k//2)*dilation) is active. Masked sites keep no state and emit nothing, so masked
regions never fill in as depth grows (VSC lets the active region grow by the kernel radius per
layer: information leakage).

What this module owns:
- `site_masks(graph, mask)`: a static site mask (per input site active or not, shape (H, W) of the
  graph input) propagated through the graph: a conv's output site is active iff its centre input
  site is; sum/avg pooling keeps a site active iff any site of its window is; add is the union;
  layout ops that keep (C, *spatial) pass it on; a fire population's mask is its input's mask.
  Returns `SiteMasks(conv={conv: output mask}, neurons={fire: mask})`.
- `ssc(graph, mask, mode="mask")`: the pass (mode "centre": no static mask, `report['masks']` is
  the string "centre", which `build_network` takes as the centre-spiked rule). The graph is
  unchanged (SSC changes address maps, not weights):
  the result's `report` holds the masks and per-conv active fractions; feed
  `report['masks']` to `snncc.sim.events.build_network(graph, masks=...)`, which drops the rows
  of masked output sites from every composed conv table and disables masked neurons
  (masked address tables).
- `dense_ssc(graph, x, masks | mask, mode)`: the dense reference: every conv's output multiplied by
  the mask of its active centre sites, every masked fire neuron emits nothing and keeps no state.
  mode "mask" uses static masks; mode "centre" is the paper's "centre spiked" rule: a conv output
  site is active iff its centre input site holds a spike (any channel; for the real-valued input,
  a nonzero value), computed per sample and timestep from the actual conv input, and a fire
  neuron is active iff any conv term feeding it is active at its site. The event simulator runs
  both: `build_network(graph, masks=SiteMasks)` (static) and `build_network(graph,
  masks="centre")` (gates evaluated from the events emitted so far; see snncc.sim.events for what
  order and completion mean for it; under the ideal policy it equals this reference exactly).
- `leakage(counts, masks)`: per population, the fraction of masked sites (static mask) that fire.

From MIM pre-training to deployment (VSC). SSC changes only *which* address-map entries are
used, never a weight: the same weights serve VSC once the mask is dropped. So an encoder
pre-trained with SSC (masked image modelling) is deployed by compiling the same checkpoint with no
mask (`build_network(graph)` instead of `build_network(graph, masks=...)`); fine-tuning then
proceeds with VSC as the paper does. See docs/ssc.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from snncc.errors import PassError, SnnccError
from snncc.ir.graph import Graph, Node
from snncc.passes.base import PassResult
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


def propagate(graph: Graph, leaf: dict[str, torch.Tensor], fixed_fires: bool = False) -> dict[str, torch.Tensor]:
    """Masks (B, *spatial) bool of every node reachable from the leaves' masks; nodes without a
    spatial (C, *spatial) layout get none. A fire's mask is its input's, unless `fixed_fires`
    and the fire has a leaf mask."""
    out: dict[str, torch.Tensor] = {}
    for n in graph.nodes:
        if n.name in leaf and (n.op == "input" or fixed_fires):
            out[n.name] = leaf[n.name]
            continue
        ins = [out.get(i) for i in n.inputs]
        if n.op == "conv":
            if ins[0] is not None:
                out[n.name] = centre_gather(ins[0], n)
        elif n.op == "pool":
            if ins[0] is not None:
                out[n.name] = _pool_any(ins[0], n)
        elif n.op == "add":
            live = [m for m in ins if m is not None]
            if live and len(live) == len(ins):
                m = live[0]
                for x in live[1:]:
                    m = m | x
                out[n.name] = m
        elif n.op in ("fire", "scale", "output"):
            if ins[0] is not None:
                out[n.name] = ins[0]
        elif n.op in ("reshape", "permute"):
            src = graph[n.inputs[0]].shape
            keeps = (n.op == "reshape" and tuple(n.shape) == tuple(src)) or \
                    (n.op == "permute" and tuple(n.attrs["dims"]) == tuple(range(len(src))))
            if ins[0] is not None and keeps:
                out[n.name] = ins[0]
    return out


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


def ssc(graph: Graph, mask=None, mode: str = "mask") -> PassResult:
    """The SSC pass: site masks for every conv's address map (graph unchanged, masks in the report).
    mode "centre": the centre-spiked rule, decided per sample at run time (report['masks'] = 'centre')."""
    if mode not in MODES:
        raise SnnccError(f"unknown SSC mode {mode!r}", hint=f"one of {', '.join(MODES)}")
    if mode == "centre":
        convs = [n.name for n in graph.nodes if n.op == "conv"]
        return PassResult(graph, [f"SSC (centre spiked) on {len(convs)} convs: output p updated only where its "
                                  f"centre site spiked in this sample and timestep"], {"masks": "centre"})
    sm = site_masks(graph, mask)
    active = {k: float(v.mean()) for k, v in sm.conv.items()}
    changes = [f"SSC on {len(sm.conv)} convs: output p updated only where its centre site is active"]
    return PassResult(graph, changes, {"masks": sm, "active_fraction": active})


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
            key = self.same.get(name, name)  # private copies of a conv are evaluated once
            if m.op == "conv" and key in self._live and tuple(m.shape[1:]) == tuple(n.shape[1:]):
                ms.append(self._live[key])
            elif m.op in ("add", "scale") or (m.op in ("reshape", "permute") and m.kind == "current"):
                stack.extend(m.inputs)
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


def leakage(graph: Graph, counts: dict[str, torch.Tensor], masks: SiteMasks) -> dict[str, float]:
    """Per fire population with a spatial mask: fraction of masked (sample, site) pairs where any
    channel fires. 0 means the masked region stayed silent."""
    out = {}
    for n in graph.neurons():
        m = masks.neurons.get(n.name)
        if m is None or n.name not in counts:
            continue
        fired = (counts[n.name] > 0).any(1).numpy()  # (B, *spatial)
        masked = ~np.broadcast_to(m, fired.shape)
        tot = int(masked.sum())
        out[n.name] = float((fired & masked).sum()) / tot if tot else 0.0
    return out


__all__ = ["SiteMasks", "site_masks", "ssc", "dense_ssc", "leakage", "propagate", "centre_gather",
           "MaskedInterpreter", "MODES"]
