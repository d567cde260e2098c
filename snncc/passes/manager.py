"""The pass manager: runs a named pipeline, logs what each pass changed, verifies the graph
after every pass and can dump the listing after any pass (`--dump-after PASS`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

from snncc.errors import PassError
from snncc.ir.graph import Graph
from snncc.ir.printer import listing
from snncc.passes.attention_threshold import attention_threshold
from snncc.passes.base import PassResult
from snncc.passes.bias_to_current import bias_to_current
from snncc.passes.check_spike_driven import check_spike_driven
from snncc.passes.dead_code import dead_code
from snncc.passes.fold_batchnorm import fold_batchnorm
from snncc.passes.fold_layout import fold_layout
from snncc.passes.fold_norm import fold_norm
from snncc.passes.fold_scale import fold_scale
from snncc.passes.normal_form import normal_form
from snncc.passes.reparam import reparam
from snncc.passes.residual_lowering import residual_lowering
from snncc.passes.round_to_floor import round_to_floor

log = logging.getLogger("snncc.passes")

PASSES: dict[str, Callable[..., PassResult]] = {
    "dead_code": dead_code,
    "fold_layout": fold_layout,
    "fold_batchnorm": fold_batchnorm,
    "fold_scale": fold_scale,
    "fold_norm": fold_norm,
    "reparam": reparam,
    "round_to_floor": round_to_floor,
    "attention_threshold": attention_threshold,
    "bias_to_current": bias_to_current,
    "check_spike_driven": check_spike_driven,
    "residual_lowering": residual_lowering,
    "normal_form": normal_form,
}

# The folded level: every docs/design.md §2 folding rule applied, still one node per traced op.
# reparam fuses what the folds leave between two neurons (chains of convs, pads, sums of branches).
FOLD = ["dead_code", "fold_layout", "fold_batchnorm", "fold_scale", "fold_norm", "fold_scale", "reparam",
        "round_to_floor", "attention_threshold", "bias_to_current"]
# The deployed level: folded, checked, in synaptic normal form.
# residual_lowering picks fan-in or relays per stream from the target's profile (option `profile`;
# without one every stream is fan-in).
DEPLOY = FOLD + ["check_spike_driven", "residual_lowering", "normal_form", "fold_layout"]
PIPELINES = {"fold": FOLD, "deploy": DEPLOY}


@dataclass
class PipelineRun:
    graph: Graph
    log: list[tuple[str, list[str]]] = field(default_factory=list)
    reports: dict[str, dict] = field(default_factory=dict)
    dumps: dict[str, str] = field(default_factory=dict)
    snapshots: dict[str, Graph] = field(default_factory=dict)


def run_pipeline(graph: Graph, pipeline: str | list[str] = "deploy", dump_after: tuple[str, ...] = (),
                 options: dict | None = None, snapshot_after: tuple[str, ...] = ()) -> PipelineRun:
    names = PIPELINES[pipeline] if isinstance(pipeline, str) else list(pipeline)
    unknown = [d for d in dump_after if d not in names]
    if unknown:
        raise PassError(f"--dump-after {unknown[0]}: no such pass in this pipeline",
                        hint=f"passes: {', '.join(names)}")
    options = options or {}
    run = PipelineRun(graph.clone().verify())
    for name in names:
        fn = PASSES[name]
        kw = options.get(name, {})
        res = fn(run.graph, **kw)
        run.graph = res.graph
        run.log.append((name, res.changes))
        if res.report:
            run.reports[name] = res.report
        for c in res.changes:
            log.info("%s: %s", name, c)
        if name in dump_after:
            run.dumps[name] = listing(run.graph)
        if name in snapshot_after:
            run.snapshots[name] = run.graph.clone()
    return run
