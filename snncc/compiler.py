"""The compile driver: trace -> deploy pipeline -> target check -> artefact files.

Everything a target rejects is reported before anything is written. `deploy(traced, target,
options)` is the one way a traced graph becomes a deployed one (the deploy pipeline with the
target's lowering options): `compile_model`, `snncc inspect --level deployed`, `estimate
--sweep-D` and `deploy_factory` all go through it, so they lower alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from snncc import artifact
from snncc.errors import TargetError, name_list
from snncc.frontend.loader import LoadedModel, trace
from snncc.ir import serialize
from snncc.ir.graph import Graph
from snncc.ir.printer import listing, outputs_line
from snncc.passes.manager import PipelineRun, run_pipeline
from snncc.targets import Options, get as get_target, parse_options


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
        fused = self.pipeline.reports.get("reparam", {}).get("fused", [])
        rep = (f"re-parameterised {len(fused)} linear chain(s) into one conv each "
               f"({sum(f['synapses_before'] for f in fused)} synapses + {sum(f['macs_before'] for f in fused)} MACs "
               f"-> {sum(f['synapses_after'] for f in fused)} synapses + {sum(f['macs_after'] for f in fused)} MACs); "
               if fused else "")
        return (f"compiled for {self.target}: {st['populations']} neuron populations, {st['neurons']} neurons, "
                f"{st['parameters']} parameters; encoding layer: {name_list(sd.get('encoding', [])) or 'none'}; {rep}"
                f"residual streams: {relayed} relayed, {len(rl) - relayed} fan-in; "
                f"shortcut fan-in added {nf.get('added_synapses', 0)} synapses "
                f"({self.timings.get('total', 0):.2f} s)"
                + (f"\n{outputs_line(self.traced)}" if outputs_line(self.traced) else "") + self._target_note())

    def _target_note(self) -> str:
        """The target's own line for the summary (its `summary_note(files)` hook, e.g. speck's
        expected chip-path agreement), on a new line; empty without one."""
        note = get_target(self.target).summary_note(self.files)
        return f"\n{note}" if note else ""


def deploy(traced: Graph, target="sim", options: "Options | dict | None" = None, allow_macs: bool = False,
           dump_after: tuple[str, ...] = ()) -> PipelineRun:
    """Run the deploy pipeline on `traced` as `target` (a name or a target object) with its
    `options` (parsed, or parsed here) lowers it: `residual_lowering` gets the target's
    `lowering_options(options)` (its chip profile, and anything a target mode cannot lower);
    `allow_macs` lets non-spike-driven layers beyond the encoding layer through."""
    tgt = get_target(target) if isinstance(target, str) else target
    return run_pipeline(traced, "deploy", dump_after=dump_after,
                        options={"check_spike_driven": {"allow_macs": allow_macs},
                                 "residual_lowering": dict(tgt.lowering_options(parse_options(tgt, options)))})


def deploy_factory(model_factory: Callable[[int], "torch.nn.Module"], input_shape: tuple,
                   input_kind: str = "current", allow_macs: bool = False, frontend: str = "auto",
                   target="sim", target_options: "Options | dict | None" = None) -> Callable[[int], Graph]:
    """D -> deployed graph: re-trace `model_factory(D)` (an eval-mode torch module) and `deploy` it
    for `target` with `target_options`, so D is set wherever the model uses it (clip and
    normalisation) and the graph is lowered as `compile_model` would."""
    tgt = get_target(target) if isinstance(target, str) else target
    options = parse_options(tgt, target_options)

    def build(D: int) -> Graph:
        m = model_factory(D).eval()
        g = trace(LoadedModel(m, None, tuple(input_shape)), frontend=frontend, input_kind=input_kind)
        return deploy(g, tgt, options, allow_macs=allow_macs).graph

    return build


def fanin_deployed(traced: Graph, deployed: Graph) -> tuple[Graph, bool]:
    """The deployed graph with every residual stream in fan-in form, for formats that have no relay
    (NIR: a node sums its incoming edges; netx): `deployed` itself when it holds no relay, else the
    stored traced graph deployed again with `residual=fanin` (the same passes; MACs allowed: the
    artefact was checked when it was compiled). Returns (graph, re-lowered)."""
    if not any(n.op == "relay" for n in deployed.nodes):
        return deployed, False
    run = run_pipeline(traced, "deploy", options={"check_spike_driven": {"allow_macs": True},
                                                  "residual_lowering": {"residual": "fanin"}})
    return run.graph, True


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
                  progress: Callable[[str], None] | None = None,
                  target_options: "Options | dict | None" = None) -> CompileResult:
    say = progress or (lambda m: None)
    tgt = get_target(target)
    options = parse_options(tgt, target_options)
    t0 = time.perf_counter()
    say(f"tracing {loaded.source or 'model'}")
    traced = trace(loaded, frontend=frontend, input_kind=input_kind)
    t1 = time.perf_counter()
    say(f"running passes ({len(traced)} nodes)")
    run = deploy(traced, tgt, options, allow_macs=allow_macs, dump_after=dump_after)
    deployed = run.graph
    t2 = time.perf_counter()
    problems = tgt.check(deployed, options)
    explain = tgt.explain(deployed, options)
    if problems:
        err = TargetError(f"model does not fit: {'; '.join(problems)}", where=f"target {target}",
                          hint="see `snncc compile --explain` for the full report")
        err.explain = explain
        raise err
    say(f"emitting {target} artefact")
    files = dict(tgt.emit(deployed, options))
    # traced first: the deployed graph names the model's own (float32) weights there, times its fold factors
    files.update(serialize.dumps_set([("traced", traced), ("ir", deployed)]))
    t3 = time.perf_counter()
    manifest = {
        "target": target,
        "input_shape": list(traced.inputs[0].shape),
        "input_kind": traced.inputs[0].kind,
        "T": traced.T,
        "source": traced.meta.get("source", ""),
        "target_options": options.given(),  # re-deployments (estimate --sweep-D) lower the same way
        "versions": artifact.versions(tgt.versions()),
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
    fused = res.pipeline.reports.get("reparam", {}).get("fused", [])
    if fused:
        lines += ["## Re-parameterised chains (reparam)", "",
                  "Each chain of linear ops with no neuron between became one exact conv: its inner tensors were "
                  "currents (multiply-accumulates); the fused kernel is one synaptic projection of the input spikes "
                  "and can have more synapses than the chain.", "",
                  "| fused node | chain | synapses before | MACs before | synapses after | MACs after "
                  "| SOPs per input spike before -> after |", "|---|---|---|---|---|---|---|"]
        for f in fused:
            lines.append(f"| {f['node']} | {' -> '.join(f['chain'])} | {f['synapses_before']} | {f['macs_before']} "
                         f"| {f['synapses_after']} | {f['macs_after']} "
                         f"| {f['fanout_before']:.4g} -> {f['fanout_after']:.4g} |")
        lines.append("")
    lines += ["## Passes", ""]
    for name, changes in res.pipeline.log:
        lines.append(f"- `{name}`: {len(changes)} change(s)")
        for c in changes[:20]:
            lines.append(f"  - {c}")
        if len(changes) > 20:
            lines.append(f"  - ... {len(changes) - 20} more")
    from snncc.estimate.report import static_markdown

    tgt = get_target(res.target)
    lines += ["", static_markdown(res.deployed, (tgt.name, tgt.memory_table(res.deployed))).rstrip()]
    section = tgt.report_section(res.files)  # the target's own section, if any
    if section:
        lines += ["", section.rstrip()]
    lines += ["", "## Deployed graph (synaptic normal form)", "", "```", listing(res.deployed).rstrip(), "```", ""]
    return "\n".join(lines)
