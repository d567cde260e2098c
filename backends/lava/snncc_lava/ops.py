"""The Loihi 2 (Lava) lowering's behaviour per op of the IR: its cells in snncc's op registry
("loihi" column), one `LoihiOp` per op.

The lowering (`network`: populations, projections, max pools, spike products; `mapping`: the chip's
cores) reads an op's behaviour from its cell (`network.loihi_op`) instead of testing op names: what
a node of the op is in a current tree (leaf, merge, consumer), how it becomes a population or a
mapping unit, its part in a one-kernel projection (`network.KernelRule`), the synapses its explicit
matrix stores, its receptive-field rule and shared-kernel size in the mapping, and the checks that
refuse a node. The per-op sparse maps themselves are the event simulator's (`snncc.sim.events`
`op_matrix`). Adding an op: register its cell here (or a refusal with its reason), and in the
"netx" column of the netx export (`netx.NetxOp`, registered in `netx`, imported below).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from snncc.ir import registry
from snncc_lava import mapping as m
from snncc_lava import network as nw


@dataclass(frozen=True)
class LoihiOp:
    """What the Loihi lowering does with a node of one op."""

    leaf: bool = False  # a source of current trees, never walked through (populations, max pools, the input)
    product: bool = False  # a graded source computed by its own process (SpikeProduct)
    merge: bool = False  # sums its inputs' currents
    consumer: bool = False  # owns a current tree (populations, the read-out)
    neuron: bool = False  # a spiking population a spike product's operand may read
    population: Callable | None = None  # (node, D, level, host, evaluator) -> network.Population
    or_pool: bool = False  # a max pool of spikes: OR neurons fed by a 0/1 sum pool (network.MaxPool)
    unit: str = ""  # the on-chip unit kind of the mapping ("": not a unit)
    kernel: nw.KernelRule | None = None  # its part in a one-kernel projection (None: breaks one)
    synapses: Callable | None = None  # (graph, node) -> entries of its explicit synapse matrix
    box: Callable | None = None  # (graph, node, box, input shape) -> the input box an output box reads
    shared_kernel: Callable | None = None  # (node) -> weights per output feature of a shared kernel
    check: Callable | None = None  # (graph, node) -> problems, one line each


registry.column("loihi", "target", "Loihi 2 through Lava (backends/lava)", "snncc_lava.ops")


def _cell(op: str, where: str, **kw) -> None:
    registry.implement(op, LoihiOp(**kw), target="loihi", where=where)


_N, _M = "snncc_lava.network", "snncc_lava.mapping"
_cell("input", f"{_N} (host encoding currents or a SpikeInput)", leaf=True)
_cell("fire", f"{_N}._fire_population (WindowBurstIF neurons)", leaf=True, consumer=True, neuron=True,
      population=nw._fire_population, unit="fire", check=nw._check_fire)
_cell("relay", f"{_N}._relay_population (relay accumulators: one graded message per window)", leaf=True,
      consumer=True, population=nw._relay_population, unit="relay")
_cell("output", f"{_N} (the read-out)", consumer=True)
_cell("max_pool", f"{_N}.MaxPool (burst emission: a sum pool into LIF neurons that fire on any input, the "
                  "per-sub-step OR of the bursts; emit=graded refused); of the input's encoding (a current, host domain): part "
                  "of the host current (snncc_lava.network.host_currents)", leaf=True, or_pool=True, unit="max_pool",
      box=m._box_pool)
_cell("spike_product", f"{_N} (the SpikeProduct process)", product=True, unit="product", check=nw._check_product)
_cell("add", f"{_N}.tree_matrices (merges sum)", merge=True, kernel=nw.KERNEL_RULES["add"], box=m._box_same)
_cell("scale", f"{_N} (a sparse diagonal; folded into a one-kernel projection)", kernel=nw.KERNEL_RULES["scale"],
      box=m._box_same)
_cell("conv", f"{_N} (sparse synapse matrix; a shared kernel in the mapping)", kernel=nw.KERNEL_RULES["conv"],
      synapses=nw._synapses_conv, box=m._box_conv, shared_kernel=m._kernel_conv)
_cell("linear", f"{_N} (sparse synapse matrix; dense weights in the mapping)", kernel=nw.KERNEL_RULES["linear"],
      synapses=nw._synapses_linear, box=m._box_linear, shared_kernel=m._kernel_linear)
_cell("pool", f"{_N} (sparse synapse matrix)", synapses=nw._synapses_pool, box=m._box_pool)
_cell("mean", f"{_N} (sparse synapse matrix; a sum after a linear or 1x1 conv in a one-kernel projection)",
      kernel=nw.KERNEL_RULES["mean"], synapses=nw._synapses_in, box=m._box_mean)
_cell("upsample", f"{_N} (sparse synapse matrix)", synapses=nw._synapses_out, box=m._box_upsample)
_cell("bilinear", f"{_N} (sparse synapse matrix)", synapses=nw._synapses_bilinear, box=m._box_bilinear)
_cell("offset", f"{_N} (sparse synapse matrix)", synapses=nw._synapses_in, box=m._box_offset)
_cell("reshape", f"{_N} (a layout: an index map)", kernel=nw.KERNEL_RULES["reshape"], box=m._box_reshape)
_cell("permute", f"{_N} (a layout: an index map)", kernel=nw.KERNEL_RULES["permute"], box=m._box_permute)
registry.refuse("batchnorm", "pad", target="loihi", why=registry.NOT_DEPLOYED)

from snncc_lava import netx as _netx  # noqa: E402,F401  (registers the "netx" column: the netx export's cells)
