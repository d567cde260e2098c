"""The compile driver: trace -> deploy pipeline -> target check -> artefact files.

Everything a target rejects is reported before anything is written.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from snncc import artifact
from snncc.errors import TargetError
from snncc.frontend.loader import LoadedModel, trace
from snncc.ir import serialize
from snncc.ir.graph import Graph
from snncc.ir.printer import listing
from snncc.passes.manager import PipelineRun, run_pipeline
from snncc.targets import get as get_target


@dataclass
class CompileResult:
    target: str
    traced: Graph
    deployed: Graph
    pipeline: PipelineRun
    files: dict[str, bytes]
    manifest: dict
    timings: dict[str, float] = field(default_factory=dict)
    explain: str = ""
    source: str = ""  # the model file compiled (an artefact folder may not replace it)

    @property
    def dumps(self) -> dict[str, str]:
        return self.pipeline.dumps

    def write(self, out: str, protect: tuple[str, ...] = ()) -> None:
        """Write the artefact folder (see `artifact.write`: never replaces a folder that is not an
        snncc artefact, nor one holding a `protect` path such as the input model)."""
        artifact.write(out, self.files, self.manifest, protect=protect or (self.source,))

    def summary(self) -> str:
        st = static_stats(self.deployed)
        sd = self.pipeline.reports.get("check_spike_driven", {})
        nf = self.pipeline.reports.get("normal_form", {})
        rl = self.pipeline.reports.get("residual_lowering", {}).get("streams", [])
        relayed = sum(1 for st in rl if st["choice"] == "relay")
        return (f"compiled for {self.target}: {st['populations']} neuron populations, {st['neurons']} neurons, "
                f"{st['parameters']} parameters; encoding layer: {', '.join(sd.get('encoding', [])) or 'none'}; "
                f"residual streams: {relayed} relayed, {len(rl) - relayed} fan-in; "
                f"shortcut fan-in added {nf.get('added_synapses', 0)} synapses "
                f"({self.timings.get('total', 0):.2f} s)") + self._target_note()

    def _target_note(self) -> str:
        """The target's own line for the summary (its `summary_note(files)` hook, e.g. speck's
        expected chip-path agreement), on a new line; empty without one."""
        fn = getattr(get_target(self.target), "summary_note", None)
        note = fn(self.files) if fn is not None else ""
        return f"\n{note}" if note else ""


def lowering_options(tgt, target_options: dict) -> dict:
    """What the target tells `residual_lowering`: its chip profile (fan-in vs relay is priced with
    it) and, through `lowering_options(options)`, anything a target mode cannot lower."""
    fn = getattr(tgt, "lowering_options", None)
    if fn is not None:
        return dict(fn(target_options))
    return {"profile": getattr(tgt, "profile", None)}


def _with_options(fn, graph: Graph, target_options: dict | None):
    """Call a target's check/explain with the target options when it takes them (system=... of
    the loihi target changes what fits), else with the graph alone."""
    import inspect

    if len(inspect.signature(fn).parameters) >= 2:
        return fn(graph, dict(target_options or {}))
    return fn(graph)


def static_stats(g: Graph) -> dict:
    neurons = sum(int(_prod(n.shape)) for n in g.neurons())
    params = sum(int(v.size) for n in g.nodes for v in n.params.values())
    return {"populations": len(g.neurons()), "neurons": neurons, "parameters": params, "nodes": len(g)}


def _prod(s):
    out = 1
    for x in s:
        out *= x
    return out


def compile_model(loaded: LoadedModel, target: str = "sim", input_kind: str = "current", frontend: str = "auto",
                  dump_after: tuple[str, ...] = (), allow_macs: bool = False,
                  progress: Callable[[str], None] | None = None, target_options: dict | None = None) -> CompileResult:
    say = progress or (lambda m: None)
    tgt = get_target(target)
    t0 = time.perf_counter()
    say(f"tracing {loaded.source or 'model'}")
    traced = trace(loaded, frontend=frontend, input_kind=input_kind)
    t1 = time.perf_counter()
    say(f"running passes ({len(traced)} nodes)")
    run = run_pipeline(traced, "deploy", dump_after=dump_after,
                       options={"check_spike_driven": {"allow_macs": allow_macs},
                                "residual_lowering": lowering_options(tgt, target_options or {})})
    deployed = run.graph
    t2 = time.perf_counter()
    problems = _with_options(tgt.check, deployed, target_options)
    explain = _with_options(tgt.explain, deployed, target_options) if hasattr(tgt, "explain") else ""
    if problems:
        err = TargetError(f"model does not fit: {'; '.join(problems)}", where=f"target {target}",
                          hint="see `snncc compile --explain` for the full report")
        err.explain = explain
        raise err
    say(f"emitting {target} artefact")
    files = dict(tgt.emit(deployed, target_options or {}))
    # traced first: the deployed graph names the model's own (float32) weights there, times its fold factors
    files.update(serialize.dumps_set([("traced", traced), ("ir", deployed)]))
    t3 = time.perf_counter()
    manifest = {
        "target": target,
        "input_shape": list(traced.inputs[0].shape),
        "input_kind": traced.inputs[0].kind,
        "T": traced.T,
        "source": traced.meta.get("source", ""),
        "target_options": dict(target_options or {}),  # re-deployments (estimate --sweep-D) lower the same way
        "versions": artifact.versions(getattr(tgt, "versions", lambda: {})()),
    }
    res = CompileResult(target, traced, deployed, run, files, manifest,
                        {"trace": t1 - t0, "passes": t2 - t1, "emit": t3 - t2, "total": t3 - t0}, explain,
                        loaded.source)
    files["report.md"] = report_markdown(res).encode()
    return res


def report_markdown(res: CompileResult) -> str:
    st = static_stats(res.deployed)
    sd = res.pipeline.reports.get("check_spike_driven", {})
    nf = res.pipeline.reports.get("normal_form", {})
    lines = [f"# snncc compile report: {res.manifest['source'] or 'model'} -> {res.target}", "",
             f"- input: {res.manifest['input_kind']} of shape {tuple(res.manifest['input_shape'])}, T = {res.traced.T}",
             f"- neuron populations: {st['populations']}, neurons: {st['neurons']}, parameters: {st['parameters']}",
             f"- encoding layer (host MACs): {', '.join(sd.get('encoding', [])) or 'none'}",
             f"- whole model spike-driven beyond the encoding layer: {'yes' if sd.get('model_spike_driven', True) else 'no'}",
             f"- membrane-shortcut fan-in: {nf.get('copied_nodes', 0)} copied nodes, "
             f"{nf.get('added_synapses', 0)} added synapses", ""]
    rl = res.pipeline.reports.get("residual_lowering", {})
    if rl.get("streams"):
        lines += ["## Residual streams (residual_lowering)", "",
                  f"profile: {rl['profile']}; graded messages: {rl['capabilities']['graded_messages']} "
                  f"({rl['capabilities']['source']})", "",
                  "| stream | nodes | choice | why | fan-in synapses / SOPs per window | relay synapses / SOPs per window "
                  "| relay latency (sub-steps) |", "|---|---|---|---|---|---|---|"]
        for st in rl["streams"]:
            f, r = st["fanin"], st["relay"]
            lines.append(f"| {st['stream']} | {st['nodes'][0]} .. {st['nodes'][-1]} ({len(st['nodes'])}) | {st['choice']} "
                         f"| {st['why']} | {f['synapses']} / {f['sops']:.4g} | {r['synapses']} / {r['sops']:.4g} "
                         f"| +{r['latency_substeps']} |")
        lines.append("")
    lines += ["## Passes", ""]
    for name, changes in res.pipeline.log:
        lines.append(f"- `{name}`: {len(changes)} change(s)")
        for c in changes[:20]:
            lines.append(f"  - {c}")
        if len(changes) > 20:
            lines.append(f"  - ... {len(changes) - 20} more")
    from snncc.estimate.report import static_markdown

    lines += ["", static_markdown(res.deployed, get_target(res.target)).rstrip()]
    section = getattr(get_target(res.target), "report_section", None)  # the target's own section, if any
    if section is not None and section(res.files):
        lines += ["", section(res.files).rstrip()]
    lines += ["", "## Deployed graph (synaptic normal form)", "", "```", listing(res.deployed).rstrip(), "```", ""]
    return "\n".join(lines)
