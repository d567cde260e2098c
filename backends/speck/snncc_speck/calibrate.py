"""calibrate: what the Speck chip runs, as an snncc graph, and the compiler choices made for it on
calibration data (the `thresholds`, `readout`, `readout_threshold` and `calibration_data` options).

Owns :func:`chip_graph` (the lowered layers as a graph, with threshold factors, the readout kind
and, optionally, the chip integers), :func:`calibrate_thresholds`, :func:`calibrate_readout_threshold`
and :func:`calibrate` (both, with the agreement before/after, as recorded in `speck_config.json`).

The integer model (the deployed graph, `ir.json`) stays the reference: these choices change only
what the chip is configured with, and their effect is reported as prediction agreement with the
integer model under the Speck firing rule (`snncc.sim.events`, policy "speck": one spike per input
event, fired on arrival). Two readouts:

- "spikes": an IAF population on the output currents whose spike counts the host reads
  (threshold `readout_threshold`); under the Speck rule its neurons fire on partial sums of the
  logits, which later negative contributions cannot take back.
- "membrane": the output layer never fires (threshold_high = 2^15 - 1) and the host reads its
  membranes at the end of the sample; the membrane is the accumulated logit. Assumption: the host
  can read the output layer's neuron states (samna's neuron-state read-out); not checked on a
  device here.
"""

from __future__ import annotations

import numpy as np
import torch

from snncc.ir.graph import Graph, Node
from snncc.ir.ops import POPULATION_OPS

from snncc_speck.lower import Lowered, layers_to_graph, lower

READOUTS = ("spikes", "membrane")
THRESHOLDS = ("deployed", "calibrated")
READOUT_CANDIDATES = (1.0, 0.5, 0.25, 0.1, 0.05)  # spike readout thresholds tried, in output units


def scale_thresholds(low: Lowered, factors: dict[str, float] | None) -> Lowered:
    """Multiply each named layer's threshold by its factor (in place; returns `low`)."""
    for lay in low.layers:
        if factors and lay.name in factors:
            lay.theta = lay.theta * float(factors[lay.name])
    return low


def chip_graph(graph: Graph, factors: dict[str, float] | None = None, readout: str = "spikes",
               readout_threshold: float = 1.0, chip=None, scale_policy: str = "max") -> Graph:
    """The Speck network of the deployed `graph` as an snncc graph: one pool -> conv -> stateful
    floor fire per core, thresholds times `factors`; a current-valued output read by `readout`
    ("membrane": the output node reads the readout core's current, summed over T by the executors'
    mean). `chip` (a `snncc_speck.chip.Chip`) puts the chip integers in (`snncc_speck.quantize`
    with `scale_policy`, as the target emits them)."""
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
    low = scale_thresholds(lower(graph, readout_threshold), factors)
    params = None
    if chip is not None:
        from snncc_speck.quantize import quantize

        params = {k: q.as_params() for k, q in quantize(low.layers, chip, scale_policy).items()}
    g = layers_to_graph(low, graph.T, params)
    if readout == "spikes" or not any(lay.readout for lay in low.layers):
        return g
    ro = next(lay.name for lay in low.layers if lay.readout)
    conv = g[ro].inputs[0]
    nodes = [n for n in g.nodes if n.name != ro]
    nodes[-1].inputs = [conv]  # the output node
    return Graph(nodes, T=g.T).infer()


def _argmax(o: torch.Tensor) -> torch.Tensor:
    return o.reshape(o.shape[0], -1).argmax(-1)


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of samples whose argmax (first index on a tie) is the same."""
    return float((_argmax(a) == _argmax(b)).double().mean())


def speck_run(g: Graph, x: torch.Tensor):
    """The Speck firing rule on graph `g` (the event simulator, policy "speck", layer order)."""
    from snncc.sim.events import simulate

    return simulate(g, x, "speck")


def calibrate_thresholds(graph: Graph, x: torch.Tensor, steps: int = 6, hi: float = 1.6,
                         reference=None, **chip) -> dict[str, float]:
    """Per population in graph order, the threshold factor in [1, hi] (bisection, `steps` halvings)
    at which its total spike count under the Speck rule equals the integer model's on `x`,
    earlier populations already scaled. Firing on arrival emits spikes on partial sums; a higher
    threshold takes the surplus back on average. `chip`, `scale_policy`: calibrate the chip
    integers (see `chip_graph`)."""
    from snncc.sim.reference import run

    ref = reference if reference is not None else run(graph, x)
    factors = {n.name: 1.0 for n in graph.neurons()}
    for p in factors:
        lo, up = 1.0, hi
        for _ in range(steps):
            mid = (lo + up) / 2
            r = speck_run(chip_graph(graph, {**factors, p: mid}, "membrane", **chip), x)
            lo, up = (mid, up) if float(r.counts[p].sum()) > float(ref.counts[p].sum()) else (lo, mid)
        factors[p] = (lo + up) / 2
    return factors


def calibrate_readout_threshold(graph: Graph, x: torch.Tensor, factors: dict[str, float] | None = None,
                                candidates=READOUT_CANDIDATES, reference=None, **chip
                                ) -> tuple[float, dict[float, float]]:
    """The spike readout threshold (of `candidates`) whose Speck-rule argmax agrees best with the
    integer model on `x` (the largest on a tie), and the agreement of every candidate."""
    from snncc.sim.reference import run

    ref = reference if reference is not None else run(graph, x)
    scores = {float(t): agreement(speck_run(chip_graph(graph, factors, "spikes", t, **chip), x).output, ref.output)
              for t in candidates}
    best = max(scores, key=lambda t: (scores[t], t))
    return best, scores


def calibrate(graph: Graph, x: torch.Tensor, thresholds: str = "deployed", readout: str = "spikes",
              readout_threshold=1.0, **chip) -> dict:
    """The choices for the options, made on calibration inputs `x`, with their effect: prediction
    agreement with the integer model under the Speck rule before (deployed thresholds, readout
    threshold 1 spikes readout) and after. `chip`, `scale_policy`: choose for the chip integers
    (the target does). JSON-able (recorded in `speck_config.json`)."""
    from snncc.sim.reference import run

    ref = run(graph, x)
    factors = calibrate_thresholds(graph, x, reference=ref, **chip) if thresholds == "calibrated" else None
    out = {"samples": int(x.shape[1] if x.dim() == len(graph.inputs[0].shape) + 2 else x.shape[0]),
           "thresholds": thresholds, "threshold_factors": factors, "readout": readout,
           "on": "chip integers" if chip.get("chip") is not None else "float"}
    rt = readout_threshold
    if readout == "spikes" and rt == "calibrated":
        rt, scores = calibrate_readout_threshold(graph, x, factors, reference=ref, **chip)
        out["readout_threshold_scores"] = {f"{k:g}": v for k, v in scores.items()}
    out["readout_threshold"] = float(rt) if readout == "spikes" else None
    base = speck_run(chip_graph(graph, None, "spikes", 1.0, **chip), x).output
    chosen = speck_run(chip_graph(graph, factors, readout, float(rt) if readout == "spikes" else 1.0, **chip),
                       x).output
    out["agreement_default"] = agreement(base, ref.output)
    out["agreement_chosen"] = agreement(chosen, ref.output)
    return out


SEEDED = {"samples": 16, "rate": 0.05, "seed": 0}  # the seeded inputs of `seeded_agreement`


def seeded_agreement(graph: Graph, readout_threshold: float = 1.0, **chip) -> dict:
    """Without calibration data: the prediction agreement with the integer model under the Speck rule
    (chip integers, deployed thresholds) of both readouts, measured on SEEDED["samples"] seeded
    random event inputs (one event with probability SEEDED["rate"] per input site and timestep,
    torch.Generator seed SEEDED["seed"]: the same inputs on every compile). Random events are not a
    user's data (docs/speck_agreement.md: on the events example the figures differ); a model the
    event simulator refuses gives {"error": its one line}. JSON-able (speck_config.json)."""
    from snncc.errors import SnnccError
    from snncc.sim.reference import run

    n, rate = SEEDED["samples"], SEEDED["rate"]
    gen = torch.Generator().manual_seed(SEEDED["seed"])
    x = (torch.rand((graph.T, n) + tuple(graph.inputs[0].shape), generator=gen) < rate).double()
    out = dict(SEEDED)
    try:
        ref = run(graph, x).output
        both = _both_readouts(graph, x, readout_threshold, **chip)
        if both is not None:
            return {**out, **{ro: agreement(both[ro], ref) for ro in READOUTS}}
        for ro in READOUTS:
            o = speck_run(chip_graph(graph, None, ro, readout_threshold if ro == "spikes" else 1.0, **chip), x)
            out[ro] = agreement(o.output, ref)
    except SnnccError as e:
        return {**SEEDED, "error": e.one_line()}
    return out


def _same_node(a, b) -> bool:
    return (a.name, a.op, a.inputs, a.attrs, a.params.keys()) == (b.name, b.op, b.inputs, b.attrs, b.params.keys()) \
        and all(np.array_equal(a.params[k], b.params[k]) for k in a.params)


def _both_readouts(graph: Graph, x: torch.Tensor, readout_threshold: float, **chip) -> dict | None:
    """The Speck-rule outputs of both readouts on `x` from one event network and one run, or None
    (then `seeded_agreement` runs each readout's `chip_graph`). The membrane readout's graph is the
    spike readout's without its readout population, the output reading that population's current,
    where the readout threshold changed nothing else (the quantised readout weights can follow it:
    checked node by node). The spike readout graph with its output moved to that current is both:
    its output the membrane readout, the readout population's spike counts / T the spike readout
    (a population that feeds nothing changes no other population's events: the same counts); the
    membrane readout's sums see the same contributions in the same order. A refusal falls back."""
    from snncc.errors import SnnccError

    try:
        gs = chip_graph(graph, None, "spikes", readout_threshold, **chip)
        gm = chip_graph(graph, None, "membrane", 1.0, **chip)
        ro = gs.output.inputs[0]
        if gs[ro].op not in POPULATION_OPS or gs.T != gm.T or gm.output.inputs != gs[ro].inputs:
            return None
        keep = [n for n in gs.nodes if n.name != ro]
        if [n.name for n in keep] != [n.name for n in gm.nodes] or not all(
                _same_node(a, b) for a, b in zip(keep[:-1], gm.nodes[:-1])):
            return None
        out = Node(gs.output.name, "output", list(gm.output.inputs), dict(gs.output.attrs))
        r = speck_run(Graph(gs.nodes[:-1] + [out], T=gs.T).infer(), x)
    except SnnccError:
        return None
    return {"spikes": r.counts[ro].reshape(r.output.shape[0], -1) / gs.T, "membrane": r.output}
