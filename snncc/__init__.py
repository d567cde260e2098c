"""snncc: compile SFA-trained spiking networks (integer training, spike inference) to neuromorphic targets."""

__version__ = "0.1.0"
