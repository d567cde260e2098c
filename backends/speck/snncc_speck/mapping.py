"""mapping: memory each Speck layer needs and the placement of layers on cores.

Memory per layer (entries, formulas from the chip file, after sinabs' `memory_summary`):
kernel = c_in * 2^(ceil(log2(kh*kw)) + ceil(log2(c_out))), neuron = c_out *
2^(ceil(log2(h_out)) + ceil(log2(w_out))), bias = c_out when the layer has a bias. Destinations: every
source (a core, or the event input) sends its spikes to at most `max_destinations` (2) cores,
each with its own pooling; a merge layer is one destination of each of its sources
(`destinations`, `destination_problems`). Placement is
a maximum bipartite matching (networkx Hopcroft-Karp) between layers and cores, with an edge
wherever all three memories fit; every layer must be matched.
"""

from __future__ import annotations

from dataclasses import dataclass


from snncc_speck.chip import Chip, Core
from snncc_speck.lower import SpeckLayer


def _clog2(n: int) -> int:
    """ceil(log2(n)) for n >= 1, in integers (no float rounding at powers of two)."""
    return (int(n) - 1).bit_length()


@dataclass(frozen=True)
class Memory:
    kernel: int
    neuron: int
    bias: int

    def fits(self, core: Core) -> bool:
        return (self.kernel <= core.kernel_memory and self.neuron <= core.neuron_memory
                and self.bias <= core.bias_memory)


def kernel_memory(c_in: int, kh: int, kw: int, c_out: int) -> int:
    return c_in * 2 ** (_clog2(kh * kw) + _clog2(c_out))


def neuron_memory(c_out: int, h_out: int, w_out: int) -> int:
    return c_out * 2 ** (_clog2(h_out) + _clog2(w_out))


def layer_memory(layer: SpeckLayer) -> Memory:
    kh, kw = layer.kernel
    _, h, w = layer.out_shape
    return Memory(kernel_memory(layer.c_in, kh, kw, layer.c_out), neuron_memory(layer.c_out, h, w),
                  layer.c_out if layer.bias is not None else 0)


def destinations(layers: list[SpeckLayer]) -> dict[str, list[tuple[str, int]]]:
    """source (layer or input) -> [(destination layer, pooling)], merges included."""
    out: dict[str, list[tuple[str, int]]] = {}
    for lay in layers:
        for src, pool in lay.sources:
            out.setdefault(src, []).append((lay.name, pool))
    return out


def destination_problems(layers: list[SpeckLayer], input_name: str, max_destinations: int) -> list[str]:
    out = []
    for src, ds in destinations(layers).items():
        if len(ds) > max_destinations:
            out.append(f"{'input' if src == input_name else 'layer'} {src}: {len(ds)} destinations "
                       f"({', '.join(d for d, _ in ds)}) > {max_destinations} per core")
    return out


@dataclass
class Placement:
    cores: dict[str, int]  # layer name -> core id (matched layers only)
    memory: dict[str, Memory]
    candidates: dict[str, list[int]]  # layer -> cores it fits
    unplaced: list[str]

    @property
    def fits(self) -> bool:
        return not self.unplaced


def place(layers: list[SpeckLayer], chip: Chip) -> Placement:
    import networkx as nx  # here, not with the module: only placing layers needs it (0.4 s to import)

    memory = {lay.name: layer_memory(lay) for lay in layers}
    cand = {lay.name: [c.core for c in chip.cores if memory[lay.name].fits(c)] for lay in layers}
    # integer node labels: their hashes (hence set order inside networkx) do not depend on
    # PYTHONHASHSEED, so the placement (and the emitted bytes) is the same on every run
    G = nx.Graph()
    n = len(layers)
    G.add_nodes_from(range(n), bipartite=0)
    G.add_nodes_from((n + c.core for c in chip.cores), bipartite=1)
    for i, lay in enumerate(layers):
        for c in cand[lay.name]:
            G.add_edge(i, n + c)
    match = nx.bipartite.hopcroft_karp_matching(G, top_nodes=range(n)) if G.number_of_edges() else {}
    cores = {lay.name: match[i] - n for i, lay in enumerate(layers) if i in match}
    return Placement(cores, memory, cand, [lay.name for lay in layers if lay.name not in cores])


def memory_problems(layers: list[SpeckLayer], placement: Placement, chip: Chip) -> list[str]:
    """One problem per layer that fits no core (with the numbers), plus one when the layers that
    fit individually still compete for too few cores."""
    out = []
    big_k = max(c.kernel_memory for c in chip.cores)
    big_n = max(c.neuron_memory for c in chip.cores)
    for lay in layers:
        m = placement.memory[lay.name]
        if placement.candidates[lay.name]:
            continue
        why = []
        if m.kernel > big_k:
            why.append(f"kernel memory {m.kernel} > {big_k} (largest core)")
        if m.neuron > big_n:
            why.append(f"neuron memory {m.neuron} > {big_n} (largest core)")
        if m.bias > max(c.bias_memory for c in chip.cores):
            why.append(f"bias memory {m.bias} > {max(c.bias_memory for c in chip.cores)}")
        if not why:
            why.append(f"no core has both kernel memory >= {m.kernel} and neuron memory >= {m.neuron}")
        out.append(f"layer {lay.name}: does not fit any core: {', '.join(why)}")
    competing = [n for n in placement.unplaced if placement.candidates[n]]
    if competing:
        out.append(f"placement: {len(placement.cores)} of {len(layers)} layers placed; "
                   f"{', '.join(competing)} fit only cores "
                   f"{sorted(set(c for n in competing for c in placement.candidates[n]))}, which are taken")
    return out


def memory_table(layers: list[SpeckLayer], placement: Placement) -> str:
    rows = [("layer", "c_in", "kernel", "c_out", "out map", "kernel mem", "neuron mem", "bias mem", "fits cores",
             "core")]
    for lay in layers:
        m = placement.memory[lay.name]
        rows.append((lay.name, str(lay.c_in), "x".join(map(str, lay.kernel)), str(lay.c_out),
                     "x".join(map(str, lay.out_shape[1:])), str(m.kernel), str(m.neuron), str(m.bias),
                     ",".join(map(str, placement.candidates[lay.name])) or "-",
                     str(placement.cores.get(lay.name, "-"))))
    return _table(rows)


def core_table(layers: list[SpeckLayer], placement: Placement, chip: Chip) -> str:
    by_core = {c: n for n, c in placement.cores.items()}
    rows = [("core", "kernel mem", "neuron mem", "bias mem", "layer", "kernel used", "neuron used", "bias used")]
    for c in chip.cores:
        name = by_core.get(c.core)
        m = placement.memory.get(name) if name else None
        rows.append((str(c.core), str(c.kernel_memory), str(c.neuron_memory), str(c.bias_memory), name or "-",
                     str(m.kernel) if m else "-", str(m.neuron) if m else "-", str(m.bias) if m else "-"))
    return _table(rows)


def _table(rows: list[tuple]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
