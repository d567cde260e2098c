"""Prediction-level scores, computed in one place for every command and report: the predicted
class of an output (argmax over its flattened features), the count of predictions equal to the
labels (accuracy) and to the integer model's (agreement), and the one text that states them.

A result is only scored when its output is per-sample class scores, (B, classes, ...); labels are
one integer class per sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def predictions(out: torch.Tensor) -> torch.Tensor:
    """(B,) predicted class: the argmax over each sample's flattened output."""
    return out.reshape(out.shape[0], -1).argmax(-1)


def scored(out: torch.Tensor) -> bool:
    """Whether `out` holds class scores per sample (a batch axis and at least one feature axis)."""
    return out.dim() >= 2


def matches(out: torch.Tensor, target) -> int:
    """How many samples' predictions equal `target`: labels, or another output's predictions."""
    if isinstance(target, torch.Tensor) and target.dim() >= 2:
        target = predictions(target)
    pred = predictions(out)
    t = torch.as_tensor(np.asarray(target) if not isinstance(target, torch.Tensor) else target)
    return int((pred == t.reshape(-1).to(pred.device, pred.dtype)).sum())


@dataclass
class Scores:
    """Counts behind an accuracy and an agreement (None where there are no labels, or no integer
    model to agree with)."""

    samples: int
    correct: int | None = None
    agree: int | None = None
    reference_correct: int | None = None

    @property
    def accuracy(self) -> float | None:
        return None if self.correct is None else self.correct / max(1, self.samples)

    @property
    def agreement(self) -> float | None:
        return None if self.agree is None else self.agree / max(1, self.samples)

    def __add__(self, other: "Scores") -> "Scores":
        """The scores of two disjoint sets of samples (batches of one run): the counts summed; a
        count unknown in either is unknown."""
        def add(a, b):
            return None if a is None or b is None else a + b

        return Scores(self.samples + other.samples, add(self.correct, other.correct), add(self.agree, other.agree),
                      add(self.reference_correct, other.reference_correct))

    def text(self) -> str:
        """`agreement with the integer model 98.00% (49/50), accuracy 0.9400 (47/50), integer model
        0.9600 (48/50)`: the parts that are known."""
        n, parts = self.samples, []
        if self.agree is not None:
            parts.append(f"agreement with the integer model {self.agree / max(1, n):.2%} ({self.agree}/{n})")
        if self.correct is not None:
            parts.append(f"accuracy {self.correct / max(1, n):.4f} ({self.correct}/{n})")
        if self.reference_correct is not None:
            parts.append(f"integer model {self.reference_correct / max(1, n):.4f} ({self.reference_correct}/{n})")
        return ", ".join(parts)


def score(out: torch.Tensor, reference: torch.Tensor | None = None, labels=None) -> Scores:
    """The scores of one output: its agreement with `reference` (the integer model's output) and,
    with labels, its accuracy and the reference's."""
    s = Scores(int(out.shape[0]))
    if not scored(out):
        return s
    if reference is not None:
        s.agree = matches(out, reference)
    if labels is not None:
        s.correct = matches(out, labels)
        if reference is not None:
            s.reference_correct = matches(reference, labels)
    return s


def markdown_table(rows: list[tuple[str, Scores]]) -> str:
    """A Markdown table of (what, Scores): samples, agreement with the integer model, accuracy."""
    out = ["| run | samples | agreement with the integer model | accuracy |", "|---|---|---|---|"]
    for what, s in rows:
        agree = "-" if s.agree is None else f"{s.agreement:.2%} ({s.agree}/{s.samples})"
        acc = "no labels" if s.correct is None else f"{s.accuracy:.4f} ({s.correct}/{s.samples})"
        out.append(f"| {what} | {s.samples} | {agree} | {acc} |")
    return "\n".join(out)


__all__ = ["Scores", "markdown_table", "matches", "predictions", "score", "scored"]
