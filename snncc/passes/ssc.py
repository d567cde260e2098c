"""ssc: spike sparse convolution (SSC, docs/design.md §4; paper section 6.2) as a rewrite of the conv
address maps (masks for the tables; the graph is unchanged), plus the leakage measure.

An event at input site q reaches output neurons p with q = p*stride - padding + k*dilation
(vanilla spike convolution, VSC). SSC adds one condition to this address map: output p is
updated only where its *centre site* (the input site under the kernel centre, q = p*stride -
padding + (k//2)*dilation) is active. Masked sites keep no state and emit nothing, so masked
regions never fill in as depth grows (VSC lets the active region grow by the kernel radius per
layer: information leakage).

What this module owns (the mask geometry, `site_masks`, is `snncc.sim.masked`'s: the executors
and this pass read the same propagation):
- `snncc.sim.masked.site_masks(graph, mask)`: a static site mask (per input site active or not, shape (H, W) of the
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
- the dense reference run lives with the executors: `snncc.sim.masked.dense_ssc(graph, x, masks |
  mask, mode)` (every conv's output multiplied by the mask of its active centre sites, every
  masked fire neuron silent and stateless; mode "centre" is the paper's "centre spiked" rule: a
  conv output site is active iff its centre input site holds a spike, any channel, per sample and
  timestep). The event simulator runs both: `build_network(graph, masks=SiteMasks)` (static)
  and `build_network(graph, masks="centre")` (gates evaluated from the events emitted so far; see snncc.sim.events for what
  order and completion mean for it; under the ideal policy it equals this reference exactly).
- `leakage(counts, masks)`: per population, the fraction of masked sites (static mask) that fire.

From MIM pre-training to deployment (VSC). SSC changes only *which* address-map entries are
used, never a weight: the same weights serve VSC once the mask is dropped. So an encoder
pre-trained with SSC (masked image modelling) is deployed by compiling the same checkpoint with no
mask (`build_network(graph)` instead of `build_network(graph, masks=...)`); fine-tuning then
proceeds with VSC as the paper does. See docs/ssc.md.
"""

from __future__ import annotations

import numpy as np
import torch

from snncc.errors import SnnccError
from snncc.ir.graph import Graph
from snncc.passes.base import PassResult
from snncc.sim.masked import MODES, SiteMasks, site_masks


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


__all__ = ["site_masks", "ssc", "leakage", "MODES"]
