"""The version of snncc (recorded in every artefact manifest; `snncc --version`)."""

__version__ = "0.1.0"
