"""Results of the event-driven simulator: `EventResult` (counts, output, events, synaptic
operations, peak bursts, relay messages) and its agreement with the integer model (`compare`, `Agreement`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


# ---- results --------------------------------------------------------------------------------------
@dataclass
class EventResult:
    output: torch.Tensor  # (B, *out_shape), mean over T
    counts: dict[str, torch.Tensor]  # fire -> (B, *shape) spikes summed over T
    events: dict[str, int]  # population (and spike input) -> emitted events, whole batch and T
    synops: int  # synaptic operations (contributions delivered, multiplicity included)
    peak_burst: dict[str, int]  # population -> most events one sample emitted in one burst window
    steps: int  # vectorised steps of the event loop
    policy: str = "ideal"
    order: str = "layer"
    agreement: "Agreement | None" = None
    messages: dict[str, torch.Tensor] = field(default_factory=dict)  # relay -> (B, *shape) messages, over T

    @property
    def total_events(self) -> int:
        return sum(self.events.values())


@dataclass
class Agreement:
    per_population: dict[str, float]  # fraction of (sample, neuron) counts equal to the integer model
    differing: dict[str, int]
    neuron_agreement: float  # over all neurons
    prediction_agreement: float  # fraction of samples with the same argmax output
    output_max_abs_diff: float

    def table(self) -> str:
        rows = [("population", "equal", "differing")]
        for k, v in self.per_population.items():
            rows.append((k, f"{v:.4f}", str(self.differing[k])))
        w = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows]
        lines.append(f"all neurons {self.neuron_agreement:.4f}; prediction agreement {self.prediction_agreement:.4f}; "
                     f"output max |diff| {self.output_max_abs_diff:.4g}")
        return "\n".join(lines)


def compare(result: EventResult, ref_counts: dict, ref_output: torch.Tensor) -> Agreement:
    per, diff = {}, {}
    eq = tot = 0
    for k, a in ref_counts.items():
        b = result.counts[k]
        d = int((a != b).sum())
        per[k] = 1.0 - d / max(a.numel(), 1)
        diff[k] = d
        eq += a.numel() - d
        tot += a.numel()
    ro, so = ref_output, result.output
    if ro.dim() >= 2:
        pa = float((ro.reshape(ro.shape[0], -1).argmax(-1) == so.reshape(so.shape[0], -1).argmax(-1)).double().mean())
    else:
        pa = float(torch.equal(ro, so))
    return Agreement(per, diff, eq / max(tot, 1), pa, float((ro - so).abs().max()) if ro.numel() else 0.0)


