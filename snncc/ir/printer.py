"""The human-readable listing of a graph (`snncc inspect`): one row per node, and what its read-out holds."""

from __future__ import annotations

from snncc.ir.analysis import spike_driven
from snncc.ir.graph import Graph
from snncc.ir.ops import summarize


def listing(graph: Graph) -> str:
    sd = spike_driven(graph)
    rows = [("node", "op", "kind", "shape", "inputs", "spike-driven", "details")]
    for n in graph.nodes:
        flag = {True: "yes", False: "NO (MACs)", None: "absorbed"}[sd[n.name]] if n.name in sd else ""
        rows.append((n.name, n.op, n.kind, "x".join(map(str, n.shape)), ",".join(n.inputs), flag,
                     summarize(n.op, n.attrs, n.params)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = [f"# graph: {len(graph)} nodes, T={graph.T}"]
    if outputs_line(graph):
        lines.append(f"# {outputs_line(graph)}")
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1])
    return "\n".join(line.rstrip() for line in lines) + "\n"


def outputs_line(graph: Graph) -> str:
    """What the graph's read-out holds when the model returns several outputs (each at its offset,
    `graph.meta["outputs"]`), and how many outputs of the model are not deployed; "" otherwise."""
    parts = graph.meta.get("outputs") or []
    text = ""
    if parts:
        text = f"{len(parts)} outputs, all deployed: " + ", ".join(
            f"{p['name']} {'x'.join(map(str, p['shape']))} ({p['node']}) at {p['at']}" for p in parts)
    if graph.meta.get("input_layout_inferred"):
        text += ("; " if text else "") + (f"input layout TB read from the program's input {graph.meta['input_layout_inferred']}"
                                          f" (exported at batch 1: axis 0 is time; --input-layout sets it)")
    if graph.meta.get("output_time_axis") is not None and graph.T == 1:
        lay = "(1, B, ...)" if graph.meta["output_time_axis"] == 0 else "(B, 1, ...)"
        text += ("; " if text else "") + (f"the model's output keeps an axis of size 1 {lay} (multi-step code at "
                                          f"T = 1): deployed without it (x.squeeze({graph.meta['output_time_axis']}))")
    elif graph.meta.get("output_time_axis") is not None:
        lay = "(T, B, ...)" if graph.meta["output_time_axis"] == 0 else "(B, T, ...)"
        text += ("; " if text else "") + (f"the model's output keeps the time axis {lay}: deployed as its mean over T "
                                          f"(x.mean({graph.meta['output_time_axis']}))")
    if graph.meta.get("outputs_ignored"):
        text += ("; " if text else "") + (f"{graph.meta['outputs_ignored']} more outputs not deployed (the nested "
                                          f"extras of (prediction, extras...))")
    return text
