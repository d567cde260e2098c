"""snncc: compile SFA-trained spiking networks (integer training, spike inference) to neuromorphic targets."""

from snncc.version import __version__

__all__ = ["compile", "load", "Deployment", "__version__"]


def __getattr__(name):  # the API imports torch: only when it is used, not on `import snncc`
    if name in ("compile", "load", "Deployment"):
        from snncc import api

        return getattr(api, name)
    raise AttributeError(f"module 'snncc' has no attribute {name!r}")
