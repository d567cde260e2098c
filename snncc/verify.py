"""Verification contract (DESIGN 7, items 1-2): compare the PyTorch model, the traced IR, the
folded IR and the deployed normal form on the same inputs.

Logits are compared with a float tolerance; spike counts of every population must be equal
between levels, except where `torch.round` ties (k + 1/2, k even) were counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from snncc.ir.graph import Graph
from snncc.sim.reference import run


@dataclass
class LevelDiff:
    level: str
    max_logit_diff: float
    count_mismatches: int  # neurons (over the batch) whose spike count differs from the traced IR
    neurons: int
    predictions_agree: float


@dataclass
class VerifyReport:
    samples: int
    ties: int
    levels: list[LevelDiff] = field(default_factory=list)
    tol: float = 1e-4

    @property
    def ok(self) -> bool:
        for lv in self.levels:
            if lv.max_logit_diff > self.tol and self.ties == 0:
                return False
            if lv.count_mismatches > 0 and self.ties == 0:
                return False
        return True

    def table(self) -> str:
        rows = [f"{'level':<14}{'max |logit diff|':>18}{'count mismatches':>18}{'neurons':>10}{'same argmax':>13}"]
        for lv in self.levels:
            mm = "-" if lv.count_mismatches < 0 else str(lv.count_mismatches)
            rows.append(f"{lv.level:<14}{lv.max_logit_diff:>18.3g}{mm:>18}{lv.neurons:>10}"
                        f"{lv.predictions_agree:>12.1%}")
        rows.append(f"samples: {self.samples}   ties (round half to even at k+1/2): {self.ties}   "
                    f"verdict: {'OK' if self.ok else 'MISMATCH'}")
        return "\n".join(rows)


def compare(eager, levels: dict[str, Graph], x: torch.Tensor, tol: float = 1e-4) -> VerifyReport:
    """`eager`: callable on x (or None); `levels`: name -> graph, the first one is the reference."""
    names = list(levels)
    ref = run(levels[names[0]], x)
    rep = VerifyReport(samples=int(x.shape[-len(levels[names[0]].inputs[0].shape) - 1]),
                       ties=sum(ref.ties.values()), tol=tol)
    pred = ref.output.reshape(ref.output.shape[0], -1).argmax(1)
    if eager is not None:
        with torch.no_grad():
            y = eager(x.float()).double()
        rep.levels.append(LevelDiff("pytorch", float((y - ref.output).abs().max()), -1, 0,
                                    float((y.reshape(y.shape[0], -1).argmax(1) == pred).float().mean())))
    for name in names:
        r = ref if name == names[0] else run(levels[name], x)
        mism = 0
        total = 0
        for pop, c in ref.counts.items():
            total += c.numel()
            if pop in r.counts:
                mism += int((r.counts[pop] != c).sum())
            else:
                mism += c.numel()
        rep.levels.append(LevelDiff(name, float((r.output - ref.output).abs().max()), mism, total,
                                    float((r.output.reshape(r.output.shape[0], -1).argmax(1) == pred).float().mean())))
    return rep
