"""snncc_lava: the Loihi 2 target of snncc, run through Lava (lava-nc 0.10.0) in floating point.

Owns the Lava side of deployment: the Python 3.11 compatibility shim (`compat`), the custom
neuron processes (`procs`), lowering of a deployed graph to Lava processes (`lower`), the
network description written as an artefact (`emit`) and the `LoihiTarget` plugin (`target`).
Importing this package does not import Lava; the modules that need it call `compat.install()`.
"""

__version__ = "0.1.0"

from snncc_lava import ops as _ops  # noqa: F401  (the op registry's "loihi" column)
