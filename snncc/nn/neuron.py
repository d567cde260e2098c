"""SFA spiking neurons for training: the integer fire function with a straight-through gradient.

Owns :class:`SFANeuron` (stateless ``Fire_D`` and the stateful integrate-and-fire variant for
event data), :func:`reset_state` and the :class:`MultiStep` wrapper that runs a single-step model
over T real timesteps.

Export contract (relied on by ``snncc.frontend``): in ``eval()`` mode, under ``torch.export``,
a neuron appears in the ATen graph as exactly

* ``rounding="half_even"``: ``aten.clamp(x, 0, D) -> aten.round -> aten.div.Tensor(., norm)``
* ``rounding="half_up"``:   ``aten.clamp(x, 0, D) -> aten.add.Tensor(., 0.5) -> aten.floor -> aten.div.Tensor(., norm)``

The ``div`` is always emitted, also when ``norm == 1`` (``div by 1``), so the pattern is uniform.
A stateful neuron exports the same pattern (its membrane starts at 0 and the state update is
skipped while exporting); the front end tells it apart by ``stateful=True`` on the module.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn as nn

__all__ = ["SFANeuron", "MultiStep", "reset_state", "neurons", "fire", "ROUNDING_MODES"]

ROUNDING_MODES = ("half_even", "half_up")


def _quant(x: torch.Tensor, D: float, rounding: str) -> torch.Tensor:
    """Integer fire function with plain ops: ``round(clamp(x, 0, D))``."""
    c = torch.clamp(x, 0, D)
    if rounding == "half_even":
        return torch.round(c)
    return torch.floor(c + 0.5)


class _FireSTE(torch.autograd.Function):
    """``round(clamp(x, 0, D))`` forward; gradient passed unchanged where ``0 <= x <= D``, else 0."""

    @staticmethod
    def forward(ctx, x, D, rounding):  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.D = D
        return _quant(x, D, rounding)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        mask = (x >= 0) & (x <= ctx.D)
        return grad_out * mask.to(grad_out.dtype), None, None


def fire(x: torch.Tensor, D: float = 4, rounding: str = "half_even", ste: bool = True) -> torch.Tensor:
    """Functional ``Fire_D`` (integer counts, no normalisation). ``ste`` selects the STE gradient."""
    if rounding not in ROUNDING_MODES:
        raise ValueError(f"rounding must be one of {ROUNDING_MODES}, got {rounding!r}")
    if ste:
        return _FireSTE.apply(x, D, rounding)
    return _quant(x, D, rounding)


def _exporting() -> bool:
    try:
        return bool(torch.compiler.is_exporting())
    except AttributeError:  # very old torch
        return False


class SFANeuron(nn.Module):
    """Spike Firing Approximation neuron: ``forward(x) = round(clamp(x, 0, D)) / norm``.

    Args:
        D: maximum integer spike count per timestep (4 or 8 in practice).
        norm: output divisor; defaults to ``D`` (hidden layers). Use ``norm=1`` for the neuron
            in front of a classifier head.
        rounding: ``"half_even"`` (``torch.round``) or ``"half_up"`` (``floor(. + 0.5)``).
        stateful: integrate-and-fire over successive calls (one call = one timestep):
            ``v = v + x; n = quant(clamp(v, 0, D)); v = v - n; return n / norm``.
            Reset with :func:`reset_state` (or :meth:`reset`).

    Training uses a custom autograd function whose backward passes the gradient unchanged where
    ``0 <= x <= D`` and blocks it elsewhere (stateful neuron: where ``0 <= v <= D``; the membrane
    carries gradient through time, the subtractive reset ``v - n`` uses a detached ``n``).
    In ``eval()`` mode without gradients, and always while ``torch.export`` traces the module,
    the forward uses the plain ops listed in the module docstring (same values).
    """

    def __init__(self, D: float = 4, norm: float | None = None, rounding: str = "half_even",
                 stateful: bool = False) -> None:
        super().__init__()
        if rounding not in ROUNDING_MODES:
            raise ValueError(f"rounding must be one of {ROUNDING_MODES}, got {rounding!r}")
        if D <= 0:
            raise ValueError(f"D must be positive, got {D}")
        self.D = D
        self.norm = D if norm is None else norm
        if self.norm == 0:
            raise ValueError("norm must be non-zero")
        self.rounding = rounding
        self.stateful = stateful
        self.v: torch.Tensor | None = None  # membrane (stateful only); not a buffer: shape follows input

    def reset(self) -> None:
        self.v = None

    def _use_ste(self, x: torch.Tensor) -> bool:
        if _exporting():
            return False
        return self.training or (torch.is_grad_enabled() and x.requires_grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        exporting = _exporting()
        if self.stateful:
            if self.v is None or exporting:
                v = x  # membrane starts at 0
            elif self.v.shape != x.shape:
                raise RuntimeError(
                    f"SFANeuron state has shape {tuple(self.v.shape)} but input has "
                    f"{tuple(x.shape)}; call snncc.nn.reset_state(model) between samples")
            else:
                v = self.v + x
            n = fire(v, self.D, self.rounding, ste=self._use_ste(v))
            if not exporting:
                self.v = v - n.detach()
            return n / self.norm
        n = fire(x, self.D, self.rounding, ste=self._use_ste(x))
        return n / self.norm

    def extra_repr(self) -> str:
        s = f"D={self.D}, norm={self.norm}, rounding={self.rounding!r}"
        return s + (", stateful=True" if self.stateful else "")


def neurons(model: nn.Module) -> Iterator[SFANeuron]:
    """All :class:`SFANeuron` modules in ``model``."""
    for m in model.modules():
        if isinstance(m, SFANeuron):
            yield m


def reset_state(model: nn.Module) -> None:
    """Reset the membrane of every (stateful) neuron in ``model`` to 0."""
    for m in neurons(model):
        m.reset()


class MultiStep(nn.Module):
    """Run a single-step (B, C, H, W) model over T timesteps and average its outputs.

    ``forward(x)``: ``x`` of shape (T, B, ...) is fed one timestep per call; a 4-D ``x`` of shape
    (B, C, H, W) is repeated ``self.T`` times. Neuron state is reset before the first step.
    The compiler compiles ``wrapper.model`` with ``T = wrapper.T``.
    """

    def __init__(self, model: nn.Module, T: int) -> None:
        super().__init__()
        if T < 1:
            raise ValueError("T must be >= 1")
        self.model = model
        self.T = int(T)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            steps = [x] * self.T
        elif x.dim() == 5:
            if x.shape[0] != self.T:
                raise ValueError(f"input has {x.shape[0]} timesteps, wrapper expects T={self.T}")
            steps = list(x.unbind(0))
        else:
            raise ValueError(f"expected (T, B, C, H, W) or (B, C, H, W) input, got shape {tuple(x.shape)}")
        reset_state(self.model)
        out = None
        for xt in steps:
            y = self.model(xt)
            out = y if out is None else out + y
        return out / len(steps)
