"""Rendering an estimate `Report` as a per-layer plain-text table or Markdown."""

from __future__ import annotations


def _num(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) < 1e7):
        return f"{int(v):d}"
    if v == 0:
        return "0"
    if abs(v) >= 1e7 or abs(v) < 1e-3:
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}"


def _energy(j: float) -> str:
    for unit, f in (("J", 1.0), ("mJ", 1e-3), ("uJ", 1e-6), ("nJ", 1e-9), ("pJ", 1e-12)):
        if abs(j) >= f or unit == "pJ":
            return f"{j / f:.4g} {unit}"
    return f"{j:g} J"


COLUMNS = ("population", "neurons", "D", "spikes", "rate", "SOPs in", "products", "MACs", "updates",
           "dest", "messages", "ev/window", "peak ev/s", "SynOps/s peak")


def _rows(r):
    rows = []
    for p in r.populations:
        rows.append([p.name, _num(p.neurons), _num(p.D) if p.D else "-", _num(p.spikes),
                     _num(p.firing_rate) if p.role == "fire" else "-", _num(p.sops_in), _num(p.spike_products_in),
                     _num(p.macs_in), _num(p.neuron_updates), _num(p.destinations), _num(p.messages),
                     _num(p.events_per_window), _num(p.peak_event_rate), _num(p.peak_synops_per_s)])
    t = r.totals
    rows.append(["total", _num(t["neurons"]), "-", _num(t["spikes"]), "-", _num(t["sops"]),
                 _num(t["spike_products"]), _num(t["macs"]), _num(t["neuron_updates"]), "-", _num(t["messages"]),
                 "-", "-", "-"])
    return rows


def _grid(header, rows, markdown: bool) -> list[str]:
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return out
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = lambda r: "  ".join(str(x).ljust(w) if i == 0 else str(x).rjust(w) for i, (x, w) in enumerate(zip(r, widths)))
    return [fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]


def render(r, markdown: bool = False) -> str:
    h = "## " if markdown else "# "
    lines = [f"{h}estimate: {r.samples} samples, T={r.T}, per-sample means"
             + (f", profile {r.profile.name}" if r.profile else "")]
    lines.append("")
    lines += _grid(COLUMNS, _rows(r), markdown)
    lines.append("")
    lines.append(f"{h}links (source -> target)")
    lines.append("")
    lrows = [[f"{l.source} -> {l.target}", l.kind, _num(l.events_per_window), _num(l.sops), _num(l.synapses),
              "yes" if l.exact else "upper bound"] for l in r.links]
    lines += _grid(("link", "kind", "ev/window", "SOPs", "synapses", "fan-out exact"), lrows, markdown)
    lines.append("")
    lat = f"latency: {r.latency_substeps} sub-steps per window ({' -> '.join(r.critical_path)})"
    if r.latency_s is not None:
        lat += f" = {r.latency_s:.4g} s at {r.substep_time:.3g} s per sub-step"
    lines.append(("- " if markdown else "") + lat)
    lines.append(("- " if markdown else "") + f"sample: {r.sample_substeps} sub-steps for T={r.T} windows (pipelined)")
    if r.energy and r.dynamic_unknown:  # a total would read like a comparison with a priced profile
        lines.append(("- " if markdown else "") + f"energy per sample: dynamic unknown ({r.dynamic_unknown}), "
                     f"static {_energy(r.energy.get('static', 0.0))}")
    elif r.energy:
        parts = ", ".join(f"{k} {_energy(v)}" for k, v in r.energy.items() if k not in ("total", "dynamic"))
        lines.append(("- " if markdown else "") + f"energy per sample: {_energy(r.energy['total'])} ({parts})")
    if r.power is not None:
        lines.append(("- " if markdown else "") + f"average power at {r.rate:g} samples/s: "
                     + (f"static {r.power * 1e3:.4g} mW, dynamic unknown" if r.dynamic_unknown
                        else f"{r.power * 1e3:.4g} mW"))
    if r.accuracy is not None:
        lines.append(("- " if markdown else "") + f"accuracy of the integer model on the labels: {r.accuracy:.4f} "
                     f"({r.correct}/{r.labelled})")
    t = r.totals
    if t.get("architecture_sops"):
        lines.append(("- " if markdown else "") + f"architecture SOPs {_num(t['architecture_sops'])} vs deployed "
                     f"{_num(t['sops'])} ({t['sops'] / t['architecture_sops']:.3f}x); synapses: architecture "
                     f"{_num(t['architecture_synapses'])}, deployed {_num(t['synapses'])}"
                     + (f"; relays: {_num(t['relay_neurons'])} neurons, {_num(t['relay_messages'])} messages"
                        if t.get("relay_neurons") else ""))
    if r.paper:
        lines.append(("- " if markdown else "") + "paper method (45nm: E_MAC x host MACs + E_AC x (SOPs + spike "
                     f"products)): architecture {_energy(r.paper['architecture'])}, deployed "
                     f"{_energy(r.paper['deployed'])}")
    if r.placement:
        pl = r.placement
        lines += ["", f"{h}placement ({pl['system']}: {len(pl['chips'])} chip(s); {_num(pl['messages'])} messages, "
                      f"{_num(pl['hops'])} hops, {_num(pl['chip_crossings'])} chip crossings per sample"
                      + (f"; spike products sent {_num(sum(pl['product_messages'].values()))} graded messages"
                         if pl.get("product_messages") else "") + ")", ""]
        lines += _grid(("chip", "dynamic energy", "power (W)"),
                       [[c["chip"], _energy(c["dynamic_J"]), f"{c['power_W']:.4g}"] for c in pl["chips"]], markdown)
        if pl["links"]:
            lines.append("")
            lines += _grid(("inter-chip link", "messages/sample", "messages/s", "limit/s", "utilisation"),
                           [[l["link"], _num(l["messages_per_sample"]), _num(l["messages_per_s"] or 0.0),
                             _num(l["limit_messages_per_s"] or 0.0),
                             "-" if l["utilisation"] is None else f"{l['utilisation']:.2%}"] for l in pl["links"]],
                           markdown)
    if r.neuron_models:
        lines += ["", f"{h}neuron models"]
        models: dict[str, list[str]] = {}
        for pop, model in r.neuron_models.items():
            models.setdefault(model, []).append(pop)
        lines += [("- " if markdown else "  ") + f"{m}: {', '.join(pops)}" for m, pops in models.items()]
    if r.profile is not None:
        lines.append("")
        lines.append(f"{h}figures ({r.profile.name})")
        for k, v in r.profile.sources().items():
            lines.append(("- " if markdown else "  ") + f"{k}: {v}")
    for title, items in (("warnings", r.warnings), ("notes", r.notes)):
        if items:
            lines.append("")
            lines.append(f"{h}{title}")
            lines += [("- " if markdown else "  ") + w for w in items]
    return "\n".join(lines) + "\n"
