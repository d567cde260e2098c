"""Front ends: load a trained PyTorch model and trace it (torch.export, or torch.fx as a fallback)
into the spiking IR."""

from snncc.frontend.loader import LoadedModel, load, trace

__all__ = ["LoadedModel", "load", "trace"]
