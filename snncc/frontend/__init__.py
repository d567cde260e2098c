"""Front ends: load a trained PyTorch model and trace it (torch.export, or torch.fx as a fallback)
into the spiking IR. `load_model` reads a model file (`snncc.load` reads an artefact)."""

from snncc.frontend.loader import LoadedModel, load_model, trace

__all__ = ["LoadedModel", "load_model", "trace"]
