"""Estimate reports with plots: Markdown + self-contained HTML, and the static
per-population part of the compile report.

Owns `write_report` (per-layer energy bars, the network spike firing rate per sub-step (NSFR,
paper Fig. 9), spike maps of one population averaged over channels per sub-step (paper Fig. 8),
a comparison of window lengths D), the data behind every plot (`layer_energy`, `spike_maps`,
`sweep_D`), and `static_markdown` (parameters, synapses, weight memory per population, the
target's memory table) used by `snncc.compiler.report_markdown`.

Plots are drawn with matplotlib's Agg backend, written as PNG next to the Markdown file and
embedded as base64 in the HTML file (no external assets). All files are written atomically;
nothing in the output depends on the time or the machine (PNG metadata is stripped).
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch

from snncc import artifact
from snncc.errors import SnnccError
from snncc.ir import registry
from snncc.ir.graph import Graph, Node
from snncc.estimate.energy import Activity, terms
from snncc.estimate.plan import closure

# ---- per-layer energy -------------------------------------------------------------------------
TERM_LABELS = {"mac": "MAC (host, dense)", "sop": "AC (synaptic ops + spike products)",
               "neuron_active": "neuron update, active", "neuron_inactive": "neuron update, inactive",
               "routing": "spike routing"}


def layer_energy(report) -> dict[str, dict[str, float]]:
    """Dynamic energy per sample (J) of every population by term, from the per-population
    counts of `report` and its profile's figures (the same formulas as the report's totals:
    the terms summed over populations equal `report.energy` minus static energy). Synaptic
    operations and host MACs are charged to the receiving population, routed messages to the
    sending one. Empty when the report has no profile or the profile has no dynamic figures."""
    prof = report.profile
    out: dict[str, dict[str, float]] = {}
    if prof is None:
        return out
    for p in report.populations:
        fire = p.role == "fire"
        e = terms(prof, Activity(p.sops_in, p.spike_products_in, p.macs_in, p.neuron_updates if fire else None,
                                 p.spikes if fire else 0.0, p.messages))
        if e:
            out[p.name] = e
    return out


def _energy_unit(j: float) -> tuple[str, float]:
    for unit, f in (("J", 1.0), ("mJ", 1e-3), ("uJ", 1e-6), ("nJ", 1e-9), ("pJ", 1e-12)):
        if abs(j) >= f:
            return unit, f
    return "pJ", 1e-12


# ---- spike maps (paper Fig. 8) ----------------------------------------------------------------
@dataclass
class SpikeMaps:
    name: str
    shape: tuple  # per-sample population shape
    substeps: list[int]  # global sub-step of every panel
    window: list[tuple[int, int]]  # (timestep t, sub-step j within the window) of every panel
    maps: np.ndarray  # (panels, H, W): spikes averaged over channels and the batch
    channels: int  # how many channels each map averages
    samples: int = 1  # how many samples each map averages


def _as_map(a: np.ndarray, shape: tuple) -> tuple[np.ndarray, int]:
    """(B, *shape) 0/1 -> (H, W) mean over channels and batch, and the channel count."""
    a = a.mean(0)
    if len(shape) == 3:  # (C, H, W)
        return a.mean(0), shape[0]
    if len(shape) == 2:  # (N tokens, C): tokens on a square grid when N is a square
        m = a.mean(1)
        n = shape[0]
        r = math.isqrt(n)
        return (m.reshape(r, r) if r * r == n else m.reshape(1, n)), shape[1]
    if len(shape) == 1:
        return a.reshape(1, -1), 1
    return a.reshape(a.shape[0], -1).mean(0).reshape(1, -1), shape[0]


def spike_maps(sync_result, name: str | None = None) -> SpikeMaps:
    """The spike trains of one population recorded by `simulate(..., record=(name,))`, averaged
    over channels (and the batch), one H x W map per sub-step of the population's windows
    (T windows of D sub-steps; exact schedule: its emission windows)."""
    trains = sync_result.trains
    if not trains:
        raise SnnccError("the simulation recorded no spike trains", where="report",
                         hint="simulate(graph, x, record=('layer name',))")
    if name is None:
        name = next(iter(trains))
    if name not in trains:
        raise SnnccError(f"no recorded spike trains for {name!r}", where="report",
                         hint=f"recorded: {', '.join(trains)}")
    tr = trains[name].detach().to(torch.float64).cpu().numpy()  # (S, B, *shape)
    shape = tuple(tr.shape[2:])
    D, T = sync_result.D, sync_result.T
    start = sync_result.window_start.get(name)
    if start is None:  # a recorded spike input: its window starts at sub-step 0
        start = 0
    steps, win, maps = [], [], []
    ch = 1
    for t in range(T):
        for j in range(D):
            s = t * D + start + j
            m, ch = _as_map(tr[s], shape)
            steps.append(s)
            win.append((t, j))
            maps.append(m)
    return SpikeMaps(name, shape, steps, win, np.stack(maps), ch, int(tr.shape[1]))


_spike_maps = spike_maps  # write_report's argument of the same name shadows it


# ---- D sweep ----------------------------------------------------------------------------------
@dataclass
class DRow:
    D: int
    energy: float | None  # J per sample (total), None without a profile
    energy_terms: dict[str, float]
    sops: float
    spike_products: float
    macs: float
    spikes: float
    firing_rate: float  # spikes / (neurons * D * T)
    latency_substeps: int
    agreement: float  # fraction of samples whose argmax equals the reference D's
    accuracy: float | None  # fraction correct when labels were given


@dataclass
class DSweep:
    rows: list[DRow]
    reference_D: int
    samples: int
    profile: str | None

    def row(self, D: int) -> DRow:
        for r in self.rows:
            if r.D == D:
                return r
        raise KeyError(D)

    def to_markdown(self) -> str:
        acc = any(r.accuracy is not None for r in self.rows)
        head = ["D", "energy / sample", "SOPs", "spike products", "MACs", "spikes", "firing rate",
                "latency (sub-steps)", f"agreement with D={self.reference_D}"] + (["accuracy"] if acc else [])
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for r in self.rows:
            if r.energy is None:
                en = "-"
            else:
                u, f = _energy_unit(r.energy)
                en = f"{r.energy / f:.4g} {u}"
            cells = [str(r.D), en, f"{r.sops:.6g}", f"{r.spike_products:.6g}", f"{r.macs:.6g}", f"{r.spikes:.6g}",
                     f"{r.firing_rate:.4f}", str(r.latency_substeps), f"{r.agreement:.4f}"]
            if acc:
                cells.append("-" if r.accuracy is None else f"{r.accuracy:.4f}")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


def _pred(y: torch.Tensor) -> torch.Tensor:
    return y.reshape(y.shape[0], -1).argmax(-1)


def _split(x, sample_dims: int, batch_size: int | None):
    """Batches of `x`: a tensor or array split along its sample axis (the second one for (T, B,
    *shape) inputs), or `x` itself when it already is an iterable of batches."""
    if not isinstance(x, (torch.Tensor, np.ndarray)):
        yield from x
        return
    x = torch.as_tensor(x)
    per_t = x.dim() == sample_dims + 2  # (T, B, *shape)
    B = x.shape[1] if per_t else x.shape[0]
    bs = batch_size or B
    for s in range(0, B, bs):
        yield x[:, s:s + bs] if per_t else x[s:s + bs]


def sweep_D(graphs: dict | Callable[[int], Graph], x, profile="45nm", Ds: Iterable[int] | None = None,
            labels=None, reference_D: int | None = None, batch_size: int | None = None) -> DSweep:
    """Estimate the same model deployed with different window lengths D on the same inputs `x`:
    a tensor ((B, *shape) or (T, B, *shape)), split into `batch_size` batches, or an iterable of
    such batches (e.g. `snncc.data.InputBatches`), read once: every D observes each batch before
    the next one is read, so a folder of shards is streamed.

    `graphs`: {D: deployed graph}, or a callable D -> deployed graph (e.g. `compiler.deploy_factory`) with
    `Ds`. Agreement is the fraction of samples whose output argmax equals that of `reference_D`
    (default: the largest D); accuracy needs `labels`."""
    from snncc.estimate.estimator import Estimator

    if callable(graphs) and not isinstance(graphs, dict):
        if Ds is None:
            raise SnnccError("a graph factory needs the list of D values", where="sweep_D", hint="pass Ds=[1, 2, 4]")
        graphs = {int(D): graphs(int(D)) for D in Ds}
    if not graphs:
        raise SnnccError("no D values to compare", where="sweep_D")
    keys = sorted(graphs)
    ref = max(keys) if reference_D is None else int(reference_D)
    if ref not in graphs:
        raise SnnccError(f"reference D={ref} is not among the swept values {keys}", where="sweep_D")
    ests = {D: Estimator(graphs[D], profile) for D in keys}
    outs: dict[int, list] = {D: [] for D in keys}
    for b in _split(x, len(graphs[keys[0]].inputs[0].shape), batch_size):
        for D in keys:
            outs[D].append(_pred(ests[D].observe(b).output))
    preds = {D: torch.cat(outs[D]) for D in keys}
    reports = {D: ests[D].report() for D in keys}
    lab = None if labels is None else torch.as_tensor(np.asarray(labels)).reshape(-1)
    rows = []
    for D in keys:
        r = reports[D]
        t = r.totals
        fires = [p for p in r.populations if p.role == "fire"]
        upd = sum(p.neuron_updates for p in fires)
        rows.append(DRow(D, r.energy.get("total") if r.energy else None, dict(r.energy), t["sops"],
                         t["spike_products"], t["macs"], t["spikes"],
                         (sum(p.spikes for p in fires) / upd) if upd else 0.0, r.latency_substeps,
                         float((preds[D] == preds[ref]).double().mean()),
                         None if lab is None else float((preds[D] == lab.to(preds[D].dtype)).double().mean())))
    prof_name = reports[keys[0]].profile.name if reports[keys[0]].profile is not None else None
    return DSweep(rows, ref, reports[keys[0]].samples, prof_name)


# ---- plots ------------------------------------------------------------------------------------
@dataclass
class Plot:
    key: str  # file stem suffix: report_<key>.png
    title: str
    xlabel: str
    ylabel: str
    data: dict  # the numbers drawn
    png: bytes = b""


class _Figures:
    """pyplot-free figures on the Agg canvas: no global backend switch, nothing left open."""

    @staticmethod
    def subplots(nrows: int = 1, ncols: int = 1, figsize=(8, 4), squeeze: bool = True):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize)
        FigureCanvasAgg(fig)
        return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def _plt():
    return _Figures


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def plot_energy(report) -> Plot:
    plt = _plt()
    per = layer_energy(report)
    names = [p.name for p in report.populations if p.name in per and sum(per[p.name].values()) > 0] \
        or [p.name for p in report.populations if p.name in per]
    pname = report.profile.name if report.profile is not None else "no profile"
    if per:
        terms = [k for k in TERM_LABELS if any(k in per[n] for n in names)]
        total = max((sum(per[n].values()) for n in names), default=0.0)
        unit, f = _energy_unit(total if total else 1e-12)
        vals = {k: [per[n].get(k, 0.0) / f for n in names] for k in terms}
        title = f"Energy per layer ({pname} profile, dynamic energy per sample)"
        xlabel = f"energy per sample ({unit})"
        legend = [TERM_LABELS[k] for k in terms]
    else:  # no dynamic per-operation figure (e.g. speck: static power only): show the SynOps
        names = [p.name for p in report.populations]
        terms = ["sops", "spike_products"]
        vals = {"sops": [p.sops_in for p in report.populations],
                "spike_products": [p.spike_products_in for p in report.populations]}
        title = f"Synaptic operations per layer ({pname} profile has no energy per operation)"
        xlabel = "operations per sample"
        legend = ["synaptic ops", "spike products"]
        unit = "ops"
    h = max(3.0, 0.28 * len(names) + 1.5)
    fig, ax = plt.subplots(figsize=(9, h))
    left = np.zeros(len(names))
    y = np.arange(len(names))
    for k, lab in zip(terms, legend):
        v = np.asarray(vals[k], dtype=float)
        ax.barh(y, v, left=left, label=lab)
        left += v
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=7 if len(names) > 20 else 9)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_ylabel("population (layer)")
    ax.set_title(title, fontsize=10)
    if len(terms) > 1:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    data = {"layers": names, "unit": unit, "values": vals}
    return Plot("energy", title, xlabel, "population (layer)", data, _png(fig))


def plot_nsfr(sync_result) -> Plot:
    plt = _plt()
    nsfr = sync_result.nsfr.detach().to(torch.float64).cpu().numpy()
    D, T = sync_result.D, sync_result.T
    title = (f"Network spike firing rate per sub-step (NSFR, {sync_result.schedule} schedule, "
             f"D={D}, T={T})")
    xlabel, ylabel = "sub-step", "fraction of all neurons spiking (NSFR)"
    fig, ax = plt.subplots(figsize=(9, 3.5))
    s = np.arange(len(nsfr))
    ax.bar(s, nsfr, width=0.85, color="tab:blue")
    for b in range(0, len(nsfr) + 1, D):
        ax.axvline(b - 0.5, color="0.8", lw=0.6, zorder=0)
    ax.set_xlabel(xlabel + f" (grey lines: windows of D={D} sub-steps)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.set_xlim(-0.5, len(nsfr) - 0.5)
    fig.tight_layout()
    return Plot("nsfr", title, xlabel, ylabel, {"nsfr": nsfr.tolist()}, _png(fig))


def plot_spike_maps(sm: SpikeMaps, D: int) -> Plot:
    plt = _plt()
    k = len(sm.substeps)
    ncols = min(k, D) if D else k
    nrows = math.ceil(k / ncols)
    H, W = sm.maps.shape[1:]
    pw = 2.2 if W > 1 else 6.0
    ph = max(0.6, 2.2 * H / max(W, 1)) if W > 1 else 0.9
    fig, axes = plt.subplots(nrows, ncols, figsize=(pw * ncols + 1.2, ph * nrows + 1.0), squeeze=False)
    vmax = float(sm.maps.max()) or 1.0
    im = None
    for i in range(nrows * ncols):
        ax = axes[i // ncols][i % ncols]
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= k:
            ax.axis("off")
            continue
        t, j = sm.window[i]
        im = ax.imshow(sm.maps[i], vmin=0.0, vmax=vmax, cmap="viridis", interpolation="nearest", aspect="auto"
                       if H == 1 else "equal")
        ax.set_title(f"sub-step {sm.substeps[i]} (t={t}, j={j})", fontsize=8)
    what = f"{sm.shape[0]} channels" if len(sm.shape) == 3 else f"{sm.channels} channels per token"
    n = f"{sm.samples} sample{'s' if sm.samples != 1 else ''}"
    title = f"Spike maps of {sm.name}: firing averaged over {what} and {n}, one map per sub-step"
    fig.suptitle(title, fontsize=10)
    if im is not None:
        cb = fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8)
        cb.set_label("mean spikes per neuron in the sub-step")
    data = {"name": sm.name, "substeps": list(sm.substeps), "maps": sm.maps.tolist(), "panels": k,
            "samples": sm.samples}
    xlabel = "W (width)" if len(sm.shape) == 3 else "token"
    axes[-1][0].set_xlabel(xlabel, fontsize=8)
    axes[-1][0].set_ylabel("H (height)" if len(sm.shape) == 3 else "", fontsize=8)
    return Plot("spike_maps", title, xlabel, "H (height)", data, _png(fig))


def plot_d_sweep(sw: DSweep) -> Plot:
    plt = _plt()
    Ds = [r.D for r in sw.rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    x = np.arange(len(Ds))
    if all(r.energy is not None for r in sw.rows):
        unit, f = _energy_unit(max(r.energy for r in sw.rows) or 1e-12)
        ev = [r.energy / f for r in sw.rows]
        a1.bar(x, ev, color="tab:orange")
        a1.set_ylabel(f"energy per sample ({unit})")
        a1.set_title(f"Energy per sample vs D ({sw.profile} profile)", fontsize=9)
        edata = {"energy": [r.energy for r in sw.rows], "unit": unit}
    else:
        ev = [r.sops + r.spike_products for r in sw.rows]
        a1.bar(x, ev, color="tab:orange")
        a1.set_ylabel("synaptic ops + spike products per sample")
        a1.set_title("Operations per sample vs D (no profile)", fontsize=9)
        edata = {"ops": ev}
    a1.set_xticks(x)
    a1.set_xticklabels([str(d) for d in Ds])
    a1.set_xlabel("D (max spikes per neuron per window)")
    agree = [100 * r.agreement for r in sw.rows]
    a2.plot(Ds, agree, "o-", label=f"agreement with D={sw.reference_D}")
    acc = [r.accuracy for r in sw.rows]
    if all(a is not None for a in acc):
        a2.plot(Ds, [100 * a for a in acc], "s--", label="accuracy (labels)")
    a2.set_ylim(-2, 102)
    a2.set_xticks(Ds)
    a2.set_xlabel("D (max spikes per neuron per window)")
    a2.set_ylabel("% of samples")
    a2.set_title(f"Prediction agreement with D={sw.reference_D}" + (" and accuracy" if acc and acc[0] is not None
                                                                  else "") + f" ({sw.samples} samples)", fontsize=9)
    a2.legend(fontsize=8, loc="lower right")
    title = "Comparison of window lengths D: energy and agreement"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    data = dict(D=Ds, agreement=[r.agreement for r in sw.rows], accuracy=acc, **edata)
    return Plot("d_sweep", title, "D", "energy / agreement", data, _png(fig))


# ---- writing ----------------------------------------------------------------------------------
@dataclass
class ReportFiles:
    markdown: str
    html: str
    pngs: dict[str, str] = field(default_factory=dict)  # key -> path
    plots: list[Plot] = field(default_factory=list)

    def plot(self, key: str) -> Plot:
        for p in self.plots:
            if p.key == key:
                return p
        raise KeyError(key)


def _paths(out: str) -> tuple[str, str]:
    """(folder, stem): a folder (existing, or given with a trailing separator) gets report.md /
    report.html; anything else is a prefix PREFIX.md / PREFIX.html (a .md/.html suffix dropped)."""
    if os.path.isdir(out) or out.endswith(os.sep) or out.endswith("/"):
        return os.path.abspath(out), "report"
    out = os.path.abspath(out)
    stem = os.path.basename(out)
    for ext in (".md", ".html"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
    return os.path.dirname(out), stem


def _md_to_html(md: str) -> str:
    """The Markdown subset the estimate tables use: headings, pipe tables, bullets, paragraphs."""
    out: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        ln = lines[i]
        if ln.startswith("#"):
            lvl = min(6, len(ln) - len(ln.lstrip("#")))
            out.append(f"<h{lvl}>{html.escape(ln[lvl:].strip())}</h{lvl}>")
        elif ln.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            out.append("<table>")
            out.append("<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in rows[0]) + "</tr>")
            for r in rows[2:]:
                out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>")
            out.append("</table>")
            continue
        elif ln.startswith("- "):
            out.append("<ul>")
            while i < len(lines) and lines[i].startswith("- "):
                out.append(f"<li>{html.escape(lines[i][2:])}</li>")
                i += 1
            out.append("</ul>")
            continue
        elif ln.startswith("```"):
            i += 1
            block = []
            while i < len(lines) and not lines[i].startswith("```"):
                block.append(lines[i])
                i += 1
            out.append("<pre>" + html.escape("\n".join(block)) + "</pre>")
        elif ln.strip():
            out.append(f"<p>{html.escape(ln)}</p>")
        i += 1
    return "\n".join(out)


_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;font-size:12px;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 6px;"
        "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}"
        "figure{margin:1.5em 0}figcaption{font-size:13px;color:#555}")


def write_report(report, outdir_or_prefix: str, sync_result=None, spike_maps=None, d_sweep: DSweep | None = None,
                 title: str | None = None, scores: list | None = None) -> ReportFiles:
    """Write `report.md` + `report.html` (and one PNG per plot) for an estimate `Report`.

    - `sync_result`: a `snncc.sim.sync.SyncResult` for the NSFR plot (its `.nsfr`); when it
      recorded spike trains and `spike_maps` is None, the first recorded population's maps.
    - `spike_maps`: a population name recorded in `sync_result`, or a `SpikeMaps`.
    - `d_sweep`: a `DSweep` from `sweep_D` (energy and agreement per D).
    - `scores`: (run, sim.scores.Scores) rows, e.g. `SimTally.scores()` and `Deployment.target_scores`:
      the accuracy table (schedules and the target's simulator).
    `outdir_or_prefix`: a folder (report.md, report.html, report_<plot>.png) or a file prefix
    (PREFIX.md, PREFIX.html, PREFIX_<plot>.png). Returns the paths and each plot's data."""
    folder, stem = _paths(outdir_or_prefix)
    plots: list[Plot] = [plot_energy(report)]
    if sync_result is not None:
        plots.append(plot_nsfr(sync_result))
    sm = None
    if isinstance(spike_maps, SpikeMaps):
        sm = spike_maps
    elif isinstance(spike_maps, str):
        if sync_result is None:
            raise SnnccError("spike maps by name need the sync_result that recorded them", where="report",
                             hint="simulate(graph, x, record=(name,))")
        sm = _spike_maps(sync_result, spike_maps)
    elif spike_maps is None and sync_result is not None and sync_result.trains:
        sm = _spike_maps(sync_result)
    elif spike_maps is not None:
        raise SnnccError(f"spike_maps must be a population name or SpikeMaps, not {type(spike_maps).__name__}",
                         where="report")
    if sm is not None:
        D = sync_result.D if sync_result is not None else len(sm.substeps)
        plots.append(plot_spike_maps(sm, D))
    if d_sweep is not None:
        plots.append(plot_d_sweep(d_sweep))

    files = ReportFiles(os.path.join(folder, f"{stem}.md"), os.path.join(folder, f"{stem}.html"), plots=plots)
    out: dict[str, bytes] = {}  # written together at the end (artifact.write_set: one writer at a time)
    for p in plots:
        path = os.path.join(folder, f"{stem}_{p.key}.png")
        out[path] = p.png
        files.pngs[p.key] = path

    head = title or "snncc energy estimate" + (f" ({report.profile.name} profile)" if report.profile else "")
    body = report.to_markdown()
    md = [f"# {head}", ""]
    extra: list[str] = []
    per = layer_energy(report)
    if per:
        rows = ["| population | " + " | ".join(TERM_LABELS[k] for k in TERM_LABELS
                                                   if any(k in e for e in per.values())) + " | total |"]
        keys = [k for k in TERM_LABELS if any(k in e for e in per.values())]
        rows.append("|" + "|".join("---" for _ in range(len(keys) + 2)) + "|")
        for name, e in per.items():
            rows.append(f"| {name} | " + " | ".join(f"{e.get(k, 0.0):.4g} J" for k in keys)
                        + f" | {sum(e.values()):.4g} J |")
        extra += ["## energy per layer (J per sample, dynamic)", ""] + rows + [""]
    if sync_result is not None:
        nsfr = sync_result.nsfr.tolist()
        extra += ["## network spike firing rate per sub-step (NSFR)", "",
                  f"{sync_result.schedule} schedule, D={sync_result.D}, T={sync_result.T}, "
                  f"{len(nsfr)} sub-steps; peak {max(nsfr):.4f} at sub-step {int(np.argmax(nsfr))}", "",
                  "| sub-step | " + " | ".join(str(i) for i in range(len(nsfr))) + " |",
                  "|---|" + "|".join("---" for _ in nsfr) + "|",
                  "| NSFR | " + " | ".join(f"{v:.4f}" for v in nsfr) + " |", ""]
    if scores:
        from snncc.sim.scores import markdown_table

        extra += ["## accuracy per schedule and target simulator", "", markdown_table(scores), ""]
    if d_sweep is not None:
        extra += ["## comparison of D", "", d_sweep.to_markdown()]
    plot_md = ["## plots", ""]
    for p in plots:
        plot_md += [f"### {p.title}", "", f"![{p.title}]({os.path.basename(files.pngs[p.key])})", ""]
    text = "\n".join(md) + "\n" + "\n".join(plot_md) + "\n" + body.replace("\n## ", "\n## ") + "\n" + "\n".join(extra)
    out[files.markdown] = (text.rstrip() + "\n").encode()

    figs = []
    for p in plots:
        b64 = base64.b64encode(p.png).decode("ascii")
        t = html.escape(p.title, quote=True)
        figs.append(f'<figure><h2>{t}</h2><img src="data:image/png;base64,{b64}" alt="{t}" title="{t}">'
                    f'<figcaption>{t}</figcaption></figure>')
    doc = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
           f"<title>{html.escape(head)}</title><style>{_CSS}</style></head><body>\n"
           f"<h1>{html.escape(head)}</h1>\n" + "\n".join(figs) + "\n" + _md_to_html(body) + "\n"
           + _md_to_html("\n".join(extra)) + "\n</body></html>\n")
    out[files.html] = doc.encode()
    artifact.write_set(out)
    return files


def default_layer(graph: Graph) -> str:
    """The population the CLI shows spike maps of: the first one with a (C, H, W) map, else the first."""
    fires = graph.neurons()
    if not fires:
        raise SnnccError("graph has no neuron populations", where="report")
    for n in fires:
        if len(n.shape) == 3 and n.shape[1] * n.shape[2] > 1:
            return n.name
    return fires[0].name


SPIKE_MAP_SAMPLES = 64  # the spike maps average this many samples at most: bounded memory for any data file


def write_estimate_report(graph: Graph, report, x, out_dir: str, layer: str | None = None,
                          d_sweep: DSweep | None = None, scores: list | None = None) -> ReportFiles:
    """`snncc estimate --report DIR`: simulate the first `SPIKE_MAP_SAMPLES` samples of the batch `x`
    with the exact T x D schedule, recording `layer` (default `default_layer`), and write
    DIR/report.md + report.html (with `scores`, the accuracy table per schedule)."""
    from snncc.sim.sync import simulate

    axis = x.dim() - len(graph.inputs[0].shape) - 1  # the sample axis: after T for a (T, B, ...) input
    x = x.narrow(axis, 0, min(SPIKE_MAP_SAMPLES, x.shape[axis]))

    layer = layer or default_layer(graph)
    if layer not in graph or graph[layer].op != "fire":
        raise SnnccError(f"no neuron population {layer!r}", where="--layer",
                         hint=f"populations: {', '.join(n.name for n in graph.neurons())}")
    sr = simulate(graph, x, record=(layer,))
    return write_report(report, os.path.join(out_dir, ""), sync_result=sr, spike_maps=layer, d_sweep=d_sweep,
                        scores=scores)


# ---- static part of the compile report --------------------------------------------------------
def _tree(g: Graph, fire: str) -> list:
    """Current nodes of a population's input tree (up to spike sources and inputs)."""
    names = {n.name for i in g[fire].inputs for n in closure(g, i)}
    return [n for n in g.nodes if n.name in names]


registry.column("weights", "cost", "weight entries an op stores (the compile report's weight memory at float32 and "
                "8 bits)", "snncc.estimate.report")


@registry.implements("conv", "linear", cost="weights")
def _weight_matrix(n: Node) -> int:
    return int(n.params["weight"].size) if "weight" in n.params else 0


registry.refuse("scale", "batchnorm", "pad", "fire", "relay", cost="weights",
                why="per-channel factors or constants, not a weight matrix (counted among the parameters)")
registry.refuse("add", "pool", "max_pool", "upsample", "bilinear", "offset", "mean", "reshape", "permute", "spike_product", "input",
                "output", cost="weights", why="no stored weights: fixed sums, data movement or the graph's ends")


def weight_entries(n: Node) -> int:
    """Weight entries `n` stores (0 for an op the "weights" cost model refuses)."""
    c = registry.cell(n.op, "weights")
    return c.impl(n) if c is not None and not c.refused else 0


def static_stats_per_population(graph: Graph, probe_limit: int | None = 0) -> list[dict]:
    """Per consumer population (fires and the output readout): neurons, D, parameters (every
    parameter entry of its private current tree and its own constant current), weight entries
    (conv/linear weights), synapses (sum of the real fan-out maps of its synaptic projections,
    `snncc.estimate.analyze`), host MACs per timestep, and weight memory at float32 / 8 bits.
    `probe_limit` 0 (default) keeps compile fast: fan-outs that are not provably exact are not
    probed one-hot but kept as path counts and flagged "(upper bound)"; None probes as the
    estimator does (can take minutes on 224x224 models)."""
    from snncc.estimate.plan import analyze

    plan = analyze(graph, probe_limit=probe_limit, architecture=False)
    rows = []
    for name, pop in plan.populations.items():
        if pop.role == "spike_input":
            continue
        nodes = _tree(graph, name) + [graph[name]]
        params = sum(int(v.size) for n in nodes for v in n.params.values())
        weights = sum(weight_entries(n) for n in nodes)
        projs = plan.projections_into(name)
        syn = sum(p.synapses for p in projs if p.kind == "synaptic")
        macs = sum(p.macs for p in projs if p.kind == "host")
        exact = all(p.exact for p in projs if p.kind == "synaptic")
        rows.append({"population": name, "role": pop.role, "neurons": pop.neurons, "D": pop.D,
                     "parameters": params, "weights": weights, "synapses": syn, "synapses_exact": exact,
                     "host_macs": macs, "weight_bytes_fp32": 4 * weights, "weight_bytes_int8": weights})
    return rows


def _bytes(n: int) -> str:
    for unit, f in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= f:
            return f"{n / f:.2f} {unit}"
    return f"{n} B"


def static_markdown(graph: Graph, memory: tuple[str, str] = ("", "")) -> str:
    """The static section of `report.md`: per-population parameters, synapses and weight memory,
    totals, and `memory` = (target name, its memory table text) when the target gives one."""
    rows = static_stats_per_population(graph)
    head = ["population", "neurons", "D", "parameters", "weights", "synapses", "host MACs/step",
            "weights fp32", "weights 8-bit"]
    lines = ["## Parameters, synapses and weight memory per population", "",
             "Synapses count the connections spikes actually use (real fan-out maps of the normal-form "
             "projections, border and stride effects included); weights are conv/linear weight entries "
             "(shared by a conv's synapses); memory is weights x 4 bytes (float32) and x 1 byte (8-bit).", "",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        syn = f"{r['synapses']}" + ("" if r["synapses_exact"] else " (upper bound)")
        lines.append(f"| {r['population']} | {r['neurons']} | {r['D'] or '-'} | {r['parameters']} | {r['weights']} | "
                     f"{syn} | {r['host_macs']} | {_bytes(r['weight_bytes_fp32'])} | "
                     f"{_bytes(r['weight_bytes_int8'])} |")
    tot = {k: sum(r[k] for r in rows) for k in ("neurons", "parameters", "weights", "synapses", "host_macs",
                                                 "weight_bytes_fp32", "weight_bytes_int8")}
    lines.append(f"| total | {tot['neurons']} | - | {tot['parameters']} | {tot['weights']} | {tot['synapses']} | "
                 f"{tot['host_macs']} | {_bytes(tot['weight_bytes_fp32'])} | {_bytes(tot['weight_bytes_int8'])} |")
    lines.append("")
    name, text = memory
    if text:
        lines += [f"## Memory per core ({name or 'target'})", "", "```", str(text).rstrip(), "```", ""]
    return "\n".join(lines)


__all__ = ["write_report", "write_estimate_report", "default_layer", "ReportFiles", "Plot", "layer_energy", "spike_maps", "SpikeMaps", "sweep_D", "DSweep",
           "DRow", "deploy_factory", "static_markdown", "static_stats_per_population"]
