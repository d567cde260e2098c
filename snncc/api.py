"""The public Python API: `compile` a model into a `Deployment`, `load` one from an artefact folder.

One implementation: the `snncc` command line is a thin layer over these functions (docs/api.md).

    import snncc
    dep = snncc.compile(model, torch.zeros(1, 2, 8, 8), target="sim")
    dep.verify(x)                  # PyTorch vs traced vs folded vs deployed (VerifyReport)
    dep.simulate(x, "exact")       # the T x D synchronous simulation (SyncResult)
    dep.estimate(x, "45nm")        # SOPs, MACs, energy, bandwidth (estimate.Report)
    dep.save("out/")               # an artefact folder, as `snncc compile -o out/` writes
    dep2 = snncc.load("out/")
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from snncc import artifact
from snncc.errors import SnnccError, TargetError
from snncc.ir.graph import Graph
from snncc.sim.device import to_cpu
from snncc.sim.device import use as use_device

TARGET_BATCH = 64  # samples a target's simulator runs at once in `target_scores` (memory stays bounded)


@dataclass
class Deployment:
    """A compiled model: the traced and deployed graphs, the target and its artefact files.

    `model` is the loaded PyTorch model when the deployment was compiled in this process (it is
    what `verify` compares against); a deployment read with `load` has none unless given one."""

    target: str
    traced: Graph
    deployed: Graph
    manifest: dict
    files: dict[str, bytes] = field(repr=False, default_factory=dict)
    model: object = field(repr=False, default=None)  # frontend.loader.LoadedModel
    summary: str = ""
    explain: str = field(repr=False, default="")
    dumps: dict[str, str] = field(repr=False, default_factory=dict)
    _event_net: object = field(repr=False, default=None, compare=False)  # sim.events.EventNetwork, built once

    # ---- inputs ---------------------------------------------------------------------------
    def inputs(self, data=None, samples: int | None = None, seed: int = 0, data_layout: str = "auto") -> torch.Tensor:
        """`data` as float64 (a tensor/array in the model's own layout, or a path to an .npz/.npy data
        set: all of it, or its first `samples`, laid out as `data_layout` says, data.inputs.LAYOUTS),
        or `samples` (default 16) seeded random inputs when `data` is None. Every input passes the
        one check the command line applies too (data.inputs.check_values)."""
        from snncc.data.inputs import inputs

        if data is None or isinstance(data, (str, os.PathLike)):
            return inputs(self.deployed, None if data is None else os.fspath(data), samples, seed, data_layout)[0]
        return self._given(data)

    def _given(self, data, keep_f32: bool = False, check: bool = True) -> torch.Tensor:
        """`inputs` of a tensor or array: float64 (or, `keep_f32`, float32 spike counts as they are:
        every float32 count is exact in float64, and the event simulator reads either without a
        float64 copy of the batch, `sim.events.runner._inputs`), in the executors' layout, checked
        (`check`; else by the caller: `_check_given`)."""
        from snncc.data.inputs import time_major

        t = torch.as_tensor(np.asarray(data) if not isinstance(data, torch.Tensor) else data)
        if not (keep_f32 and t.dtype == torch.float32 and self.deployed.inputs[0].kind == "spike"):
            t = t.double()
        x = time_major(self.deployed, t)
        if check:
            self._check_given(x)
        return x

    def _check_given(self, x) -> None:
        from snncc.data.inputs import check_values

        check_values(self.deployed, x, "inputs", 1 if x.dim() == len(self.deployed.inputs[0].shape) + 2 else 0)

    # ---- checks and runs ------------------------------------------------------------------
    def verify(self, data=None, samples: int | None = None, seed: int = 0, model=None, device: str | None = None,
               labels=None, data_layout: str = "auto", progress: Callable[[str], None] | None = None):
        """Compare the PyTorch model (if known), traced, folded and deployed levels on the same
        inputs (snncc.verify.compare: forced runs, ties explained, nothing else). `model`: the
        PyTorch model to compare with when this deployment was loaded (an nn.Module, an
        ExportedProgram, or a .pt2 path); `labels` (or a data file's y) add each level's accuracy.
        `device`: where the IR executors run (the PyTorch model runs on the CPU); `progress` gets a
        line as each level starts."""
        from snncc.passes.manager import run_pipeline
        from snncc.verify import compare

        if data is not None and isinstance(data, (str, os.PathLike)):
            from snncc.data.inputs import inputs, time_major

            x, file_labels = inputs(self.traced, os.fspath(data), samples, seed, data_layout)
            x = self.inputs(time_major(self.traced, x))  # back in the model's layout, then checked as any tensor
            labels = file_labels if labels is None else labels
        else:
            x = self.inputs(data, samples, seed)
        eager, precision = _eager64(self._model(model))
        folded = run_pipeline(self.traced, "fold").graph
        with use_device(device):
            return compare(eager, {"traced": self.traced, "folded": folded, "deployed": self.deployed}, x,
                           eager_precision=precision, labels=labels, progress=progress)

    def _model(self, model):
        """The PyTorch model `verify` compares: `model` (a LoadedModel, an nn.Module, an
        ExportedProgram or a model file path), run at the artefact's T and input layout, or the one
        compiled in this process."""
        from snncc.frontend.loader import LoadedModel, _unwrap, load_model

        if model is None:
            return self.model
        shape, T = tuple(self.traced.inputs[0].shape), self.traced.T
        if isinstance(model, LoadedModel):  # e.g. a state_dict loaded without its T: run as compiled
            lm = model
        elif isinstance(model, (str, os.PathLike)):
            lm = load_model(os.fspath(model), input_shape=shape)
        elif isinstance(model, torch.export.ExportedProgram):
            lm = LoadedModel(None, model, shape, T, "program")
        elif isinstance(model, nn.Module):
            module, _ = _unwrap(model)
            lm = LoadedModel(module.eval(), None, shape, T, type(module).__name__)
        else:
            raise SnnccError(f"cannot compare with a {type(model).__name__}", where="verify",
                             hint="pass model= an nn.Module, an ExportedProgram or a .pt2 path")
        lm.T, lm.layout = T, self.traced.meta.get("input_layout", "")
        lm.output_time_axis = self.traced.meta.get("output_time_axis")
        return lm

    def reference(self, data=None, samples: int | None = None, seed: int = 0, device: str | None = None):
        """The reference executor on the deployed graph (sim.reference.Result, on the CPU)."""
        from snncc.sim.reference import run

        x = self.inputs(data, samples, seed)
        with use_device(device):
            return to_cpu(run(self.deployed, x))

    def event_graph(self) -> tuple[Graph, str]:
        """The graph the target's chip runs on event recordings (`snncc simulate --events`) and a
        one-line account of it: the target's `event_graph` hook (a chip target: the chip integers,
        calibrated thresholds and readout it emitted; by default the deployed graph itself)."""
        if self.target == "sim" or not self.files:
            return self.deployed, "the deployed graph (the integer model)"
        tgt = self._target()
        return tgt.event_graph(self.deployed, self.files, self._target_options(tgt))

    def backend_name(self) -> str:
        """The `--backend` name of the artefact's target's own simulator (for hints)."""
        if self.target == "sim":
            return "NAME (a chip target's simulator)"
        return self._target().backend_name()

    def _target(self):
        """The artefact's target object."""
        from snncc.targets import get as get_target

        return get_target(self.target)

    def _target_options(self, tgt):
        """The artefact's stored target options, parsed for `tgt` (`targets.parse_options`)."""
        from snncc.targets import parse_options

        return parse_options(tgt, self.manifest.get("target_options") or {})

    def simulate(self, data=None, schedule: str = "exact", backend: str = "snncc", samples: int | None = None,
                 seed: int = 0, options: dict | None = None, device: str | None = None,
                 populations: list[str] | None = None, chip: int | None = None, policy: str = "ideal",
                 layout: str = ""):
        """snncc's synchronous simulation (`schedule` "exact" -> SyncResult, "streaming" ->
        StreamingReport against the reference), the event-driven one (`schedule` "event" ->
        sim.events.EventResult, firing `policy` "ideal", "greedy" or "speck"; its address tables are
        built on the first call and kept on the deployment; `layout` "B*T" reads an (N, *shape) spike
        batch as sinabs' squeezed (B*T, *shape) one, "static" as N samples repeated over T; a spike
        model of T > 1 refuses an (N, *shape) batch without it), or a target's own simulator (`backend`:
        a target's name or the `backend` name it declares). `populations` / `chip` (a target backend):
        only those populations, or one chip's share of the artefact's placement, with their boundary
        inputs from the reference (the target's `simulate_part`: counts per population against it)."""
        if schedule == "event" and backend == "snncc":
            return self._simulate_events(data, samples, seed, policy, layout)
        x = self.inputs(data, samples, seed)
        part = populations is not None or chip is not None
        if part and backend == "snncc":
            raise SnnccError("populations / chip choose a sub-graph for a target's simulator", where="--populations",
                             hint=f"add --backend {self.backend_name()}")
        if backend != "snncc":
            tgt = _backend_target(backend)
            options = self._backend_options(tgt, options)
            if part:
                return tgt.simulate_part(self.deployed, x, populations, chip, self.files, options)
            return tgt.simulate(self.deployed, x, options or None)
        from snncc.sim.sync import simulate
        from snncc.sim.tally import compare_streaming

        if schedule not in ("exact", "streaming"):
            raise SnnccError(f"unknown schedule {schedule!r}", where="schedule", hint="exact, streaming or event")
        with use_device(device):
            if schedule == "exact":
                return to_cpu(simulate(self.deployed, x, "exact"))
            return to_cpu(compare_streaming(self.deployed, x))

    def _simulate_events(self, data, samples: int, seed: int, policy: str, layout: str):
        from snncc.sim.events import build_network, simulate
        from snncc.sim.events.runner import BadSpikeInput

        g = self.deployed
        shape = tuple(g.inputs[0].shape)
        if layout not in ("", "B*T", "static"):
            raise SnnccError(f"unknown input layout {layout!r}", where="layout", hint="'B*T' or 'static'")
        given = data is not None and not isinstance(data, (str, os.PathLike))
        # spike counts given as a tensor: the event runner checks every value as it reads them (the
        # nonzero entries, `BadSpikeInput`) and check_values then names the sample; a pass of its own
        # over the batch was 4-7% of a sinabs64 run at rate 0.02
        spike = g.inputs[0].kind == "spike"
        x = self._given(data, keep_f32=True, check=not spike) if given else self.inputs(data, samples, seed)
        x_given = x
        flat = spike and g.T > 1 and x.dim() == len(shape) + 1
        if data is not None and flat and not layout:
            raise SnnccError(f"an ({x.shape[0]}, {', '.join(map(str, shape))}) spike batch for a model of T = {g.T}: "
                             f"sinabs' squeezed (B*T, ...) layout or {x.shape[0]} static samples?", where="inputs",
                             hint="pass layout='B*T' (sinabs) or layout='static', or give (T, B, ...) counts")
        if layout == "B*T":
            if not flat or x.shape[0] % g.T:
                raise SnnccError(f"layout 'B*T' needs an (N, {', '.join(map(str, shape))}) batch with N a multiple "
                                 f"of T = {g.T}, got {tuple(x.shape)}", where="inputs",
                                 hint="reshape the batch, or drop layout")
            x = x.reshape((x.shape[0] // g.T, g.T) + shape).transpose(0, 1)
        if self._event_net is None:
            self._event_net = build_network(g)
        try:
            return simulate(self._event_net, x, policy)
        except BadSpikeInput:
            if given and spike:
                self._check_given(x_given)  # the value and its sample, as every other path says it
            raise

    def _backend_options(self, tgt, options: dict | None) -> dict | None:
        """The options a target's simulator runs with: `options` when given; else, for an artefact
        compiled for that target, the compile options its simulator reads (the target's
        `simulation_options` hook, e.g. a fixed-point precision), so a fixed_pt artefact runs fixed_pt."""
        if options is not None or self.target != tgt.name:
            return options
        return tgt.simulation_options(self._target_options(tgt)) or None

    def target_scores(self, data=None, labels=None, samples: int | None = None, seed: int = 0,
                      batch_size: int | None = None, progress: bool = False, data_layout: str = "auto") -> list:
        """The accuracy-table rows (what, sim.scores.Scores) of this artefact's target simulator (its
        `simulate` hook: Lava for loihi, sinabs for speck; none for sim or a target without one):
        agreement with the integer model and, with labels, accuracy (`estimate --report`). `data`: a
        data file or folder of shards (all of it, or its first `samples`, with its own labels), seeded
        random inputs (None), or a tensor as `simulate` takes it with `labels`. The simulator runs
        `batch_size` samples at a time (default TARGET_BATCH: memory stays bounded on a whole file)
        and the counts are summed; `progress` shows a bar (Lava takes seconds per sample)."""
        from snncc.data.inputs import InputBatches, time_major
        from snncc.sim.scores import Scores, score
        from snncc.targets import Target, get as get_target

        tgt = get_target(self.target)
        if type(tgt).simulate is Target.simulate:  # no simulator of its own (sim)
            return []
        bs = max(1, int(batch_size or TARGET_BATCH))
        if data is None or isinstance(data, (str, os.PathLike)):
            batches = InputBatches(self.deployed, None if data is None else os.fspath(data), samples, bs, seed,
                                   data_layout)
            it, total = ((time_major(self.deployed, x), y) for x, y in batches.with_labels()), len(batches)
        else:
            x = self.inputs(data, samples, seed)
            tb = x.dim() == len(self.deployed.inputs[0].shape) + 2  # (T, B, ...)
            n = int(x.shape[1] if tb else x.shape[0])
            y = None if labels is None else np.asarray(labels)[:n]
            it = ((x[:, s:s + bs] if tb else x[s:s + bs], None if y is None else y[s:s + bs])
                  for s in range(0, n, bs))
            total = -(-n // bs)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=total, desc=f"{tgt.name} simulator", unit="batch")
        acc = None
        for xb, yb in it:
            sc = score(self.simulate(xb, backend=self.target).output, self.reference(xb).output, yb)
            acc = sc if acc is None else acc + sc
        return [(f"target {tgt.name}'s simulator", acc or Scores(0))]

    def target_reference(self, data=None, backend: str = "", samples: int | None = None, seed: int = 0,
                         options: dict | None = None):
        """(result, name): the target's own model of what its simulator computes, without the
        simulator (its `reference` hook: e.g. a fixed-point integer model the simulator equals bit
        for bit), and a one-line name of it; None when the target has no such model. `backend`:
        the simulator's name (default: the artefact's target)."""
        tgt = _backend_target(backend or self.target)
        options = self._backend_options(tgt, options) or {}
        result = tgt.reference(self.deployed, self.inputs(data, samples, seed), options)
        if result is None:
            return None
        return result, tgt.reference_name(options)

    def target_model_tally(self, data=None, samples: int | None = None, seed: int = 0, batch_size: int | None = None,
                           data_layout: str = "auto", progress: bool = False):
        """What the target's own model costs (sim.tally.ModelTally: argmax agreement with the integer
        model, neuron counts that differ per population, accuracy with labels), batch by batch over a
        data set or seeded inputs, without the target's simulator; None unless the artefact's target
        says its model differs by design (`Target.approximates`: Loihi precision=fixed)."""
        from snncc.data.inputs import InputBatches
        from snncc.sim.reference import run
        from snncc.sim.tally import ModelTally

        if self.target == "sim" or not self.files:
            return None
        try:
            tgt = self._target()
        except TargetError:  # its package is not installed here: no model of its own to run
            return None
        options = self._backend_options(tgt, None) or {}
        if not tgt.approximates(options):
            return None
        batches = InputBatches(self.deployed, None if data is None else os.fspath(data), samples, batch_size, seed,
                               data_layout)
        tally = ModelTally(self.deployed, tgt.reference_name(options))
        it = batches.with_labels()
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=len(batches), desc="target model", unit="batch")
        for x, y in it:
            tally.observe(tgt.reference(self.deployed, x, options), to_cpu(run(self.deployed, x)), y)
        return tally

    def simulate_data(self, data=None, schedules=("exact", "streaming"), samples: int | None = None, seed: int = 0,
                      batch_size: int | None = None, progress: bool = False, device: str | None = None,
                      workers: int = 1, ray_address: str | None = None, data_layout: str = "auto"):
        """The synchronous `schedules` against the reference over a data set, batch by batch (a
        file or a folder of .npz/.npy shards, all of it or its first `samples`, laid out as
        `data_layout` says; or seeded random inputs): a sim.tally.SimTally of
        integer statistics (counts that differ, agreement, accuracy when the data has labels y).
        `workers` > 1 / `ray_address` shard the batches as `estimate` does; the merged statistics
        equal one process's."""
        from functools import partial

        from snncc.data.inputs import InputBatches
        from snncc.sim.tally import SimTally

        path = None if data is None else os.fspath(data)
        if workers > 1 or ray_address:
            from snncc.data.workers import map_batches

            return map_batches(partial(SimTally, schedules=tuple(schedules)), self.deployed, path, samples, batch_size,
                               seed, max(1, workers), ray_address, progress, device, desc="simulate",
                               layout=data_layout)
        batches = InputBatches(self.deployed, path, samples, batch_size, seed, data_layout)
        it = batches.with_labels()
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=len(batches), desc="simulate", unit="batch")
        with use_device(device):
            return SimTally(self.deployed, schedules).run(it)

    def estimate(self, data=None, profile: str = "45nm", samples: int | None = None, seed: int = 0,
                 batch_size: int | None = None, rate: float | None = None, progress: bool = False,
                 device: str | None = None, workers: int = 1, ray_address: str | None = None,
                 data_layout: str = "auto"):
        """Energy, latency and bandwidth over a data set (estimate.Report): a file or a folder of
        .npz/.npy shards (streamed; all of it or its first `samples`, laid out as `data_layout`
        says), or seeded random inputs. `workers` > 1 shards the batches over
        local processes, `ray_address` over Ray ("local" or a cluster address); the merged
        statistics equal one process's (data/workers.py)."""
        from snncc.estimate import Estimator
        from snncc.data.inputs import InputBatches

        placement = None
        if self.target != "sim" and self.files:  # a chip target's placement, read with its own profile
            try:
                tgt = self._target()
            except TargetError:  # its package is not installed here: the profile alone prices the graph
                tgt = None
            placement = tgt.placement(self.files) if tgt is not None and profile == tgt.profile else None
        if (workers > 1 or ray_address) and (data is None or isinstance(data, (str, os.PathLike))):
            from snncc.estimate.estimator import run_sharded

            est = run_sharded(self.deployed, profile, None if data is None else os.fspath(data), samples, batch_size,
                              seed, max(1, workers), ray_address, progress, device, placement, data_layout)
            return est.report(rate=rate)

        if data is None or isinstance(data, (str, os.PathLike)):
            batches = InputBatches(self.deployed, None if data is None else os.fspath(data), samples, batch_size, seed,
                                   data_layout)
        else:
            batches = [self.inputs(data)]
        with use_device(device):
            est = Estimator(self.deployed, profile=profile, placement=placement)
            est.run(batches.with_labels() if isinstance(batches, InputBatches) else batches, progress=progress,
                    total=len(batches))  # with labels: the integer model's accuracy too
            return est.report(rate=rate)

    def report(self, directory: str, data=None, profile: str = "45nm", samples: int | None = None, seed: int = 0,
               layer: str | None = None, labels=None):
        """Write `directory`/report.md and report.html with plots (energy per layer, NSFR, spike maps)
        and the accuracy table as `estimate --report` writes it: the integer model, the exact and
        streaming schedules and the target's simulator (`target_scores`), with accuracy when `labels`
        are given or the data file has them."""
        from snncc.data.inputs import inputs, time_major
        from snncc.estimate.report import write_estimate_report
        from snncc.sim.tally import SimTally

        x = self.inputs(data, samples, seed)
        if labels is None and isinstance(data, (str, os.PathLike)):
            labels = inputs(self.deployed, os.fspath(data), samples, seed)[1]
        rep = self.estimate(x if data is None else data, profile, samples, seed)  # data as given: the model's layout
        tally = SimTally(self.deployed, ("exact", "streaming"))
        tally.observe(x, labels)
        # the target simulator's row: the same samples, batch by batch (a file: read again with its labels)
        file = isinstance(data, (str, os.PathLike))
        scores = tally.scores() + (self.target_scores(data, samples=samples, seed=seed) if file or data is None else
                                   self.target_scores(time_major(self.deployed, x), labels))
        return write_estimate_report(self.deployed, rep, x, directory, layer, scores=scores)

    def export_nir(self, path: str, form: str = "binary"):
        """Write the deployed graph as a NIR file (`snncc.interop.nir_io.write_nir`; `form` "binary"
        or "multispike"). Relayed residual streams (NIR has no relay) are first lowered to fan-in
        from the traced graph (`compiler.fanin_deployed`), which `NirExport.lost` then says."""
        from snncc.compiler import fanin_deployed
        from snncc.interop.nir_io import write_nir

        graph, relowered = fanin_deployed(self.traced, self.deployed)
        ex = write_nir(graph, path, form)
        if relowered:
            ex.lost.insert(0, "residual streams: this artefact relays them (graded accumulators) and NIR has no "
                              "relay, so the traced graph was deployed again with every stream in fan-in form "
                              "(the same function: NIR sums a node's incoming edges)")
        return ex

    def export_file(self, fmt: str, path: str) -> list[str]:
        """Write the deployed graph in a chip format an installed target exports (`netx`: the loihi
        target's lava-dl HDF5) to `path`, atomically; relayed residual streams are first lowered to
        fan-in from the traced graph, as for NIR. Returns the target's notes on the file (netx: what
        carrying the shortcuts costs). A TargetError names what the format cannot express."""
        from snncc.compiler import fanin_deployed
        from snncc.targets import exporter

        target = exporter(fmt)
        graph, _ = fanin_deployed(self.traced, self.deployed)
        data = target.export_file(fmt, graph)
        artifact.write_bytes(path, data)
        return target.export_notes(fmt, data)

    def listing(self, level: str = "deployed") -> str:
        """The graph listing of `snncc inspect` (level "deployed" or "traced")."""
        from snncc.ir.printer import listing

        return listing(self.deployed if level == "deployed" else self.traced)

    def save(self, path: str, protect: tuple[str, ...] = ()) -> None:
        """Write the artefact folder (atomically; refuses to replace anything but an snncc artefact)."""
        if not self.files:
            raise SnnccError("this deployment has no artefact files", where="save")
        src = getattr(self.model, "source", "") if self.model is not None else ""
        artifact.write(path, self.files, self.manifest, protect=tuple(protect) + ((src,) if src else ()))


def _backend_target(backend: str):
    """The target whose simulator `backend` names (a target's name or the `backend` it declares)."""
    from snncc.targets import for_backend

    return for_backend(backend)





def compile(model, example_input: torch.Tensor | None = None, *, target: str = "sim", input_kind: str = "current",
            input_shape: tuple[int, ...] | None = None, model_def: str | None = None,
            factory_kwargs: dict | None = None, trust_pickle: bool = False, frontend: str = "auto",
            allow_macs: bool = False, target_options: dict | None = None, dump_after: tuple[str, ...] = (),
            timesteps: int | None = None, approximate_lif: bool = False, nir_lif: str = "",
            progress: Callable[[str], None] | None = None, input_layout: str = "") -> Deployment:
    """Compile `model` for `target`.

    `model`: an `nn.Module` (with `example_input` of shape (B, *shape), or `input_shape`), a
    `torch.export.ExportedProgram`, or a path (.pt2, state_dict + `model_def`, .onnx, .nir, or a
    pickled module with `trust_pickle`). `nir_lif` says how a NIR file's continuous-time LIF
    neurons become steps: "steps" (tau in timesteps, sinabs' reading), "euler:DT" or "exp:DT"
    (exact leaky neurons), "approximate" (= `approximate_lif`: IF, leak dropped, recorded in
    `deployed.meta["nir_approximations"]`). `timesteps` sets T for a single-step module of an
    event model; without it, an integer "T" in a JSON file beside a checkpoint (`model.json` next to
`model.pt`) is used, and a `timesteps` that disagrees with it is warned about. `input_layout`
"BT" / "TB": the module itself takes the whole sequence, (B, T, *shape) / (T, B, *shape)
(multi-step research code; `example_input` is laid out so, or give `timesteps` and the
per-step `input_shape`); its inputs are then passed to `verify`/`simulate` in that layout. Raises
`snncc.errors.SnnccError` subclasses with what/where/hint."""
    from snncc.compiler import compile_model
    from snncc.frontend.loader import LoadedModel, load_model
    from snncc.ir.ops import MAX_T
    from snncc.targets import get as get_target, parse_options

    tgt = get_target(target)
    options = parse_options(tgt, target_options)
    if isinstance(model, (str, os.PathLike)):
        loaded = load_model(os.fspath(model), model_def=model_def, factory_kwargs=factory_kwargs,
                      trust_pickle=trust_pickle, input_shape=tuple(input_shape) if input_shape else None,
                      approximate_lif=approximate_lif, nir_lif=nir_lif, layout=input_layout, timesteps=timesteps)
    elif isinstance(model, torch.export.ExportedProgram):
        from snncc.frontend.loader import _program_input_shape

        loaded = LoadedModel(None, model, _program_input_shape(model, "program"), 1, "")
        loaded.set_layout(input_layout, timesteps)
    elif isinstance(model, nn.Module):
        from snncc.frontend.loader import _unwrap

        module, T = _unwrap(model)
        skip = 2 if input_layout else 1
        shape = (tuple(example_input.shape[skip:]) if example_input is not None
                 else tuple(input_shape or getattr(module, "input_shape", ()) or ()))
        if input_layout and example_input is not None:
            T = int(example_input.shape["TB".index("T") if input_layout == "TB" else 1])
        if not shape:
            raise SnnccError("the input shape is unknown", where="compile",
                             hint="pass example_input (B, *shape) or input_shape")
        loaded = LoadedModel(module.eval(), None, shape, T, type(module).__name__)
    else:
        raise SnnccError(f"cannot compile a {type(model).__name__}", where="compile",
                         hint="pass an nn.Module, an ExportedProgram or a model file path")
    if input_layout not in ("", "TB", "BT"):
        raise SnnccError(f"unknown input layout {input_layout!r}", where="--input-layout", hint="BT or TB")
    loaded.layout = input_layout
    recorded = _recorded_T(model) if isinstance(model, (str, os.PathLike)) else None
    if recorded is not None and timesteps is None and loaded.T == 1:
        loaded.T = recorded  # the checkpoint's sidecar JSON records how it was trained
    elif recorded is not None and timesteps is not None and timesteps != recorded:
        import warnings

        warnings.warn(f"--timesteps {timesteps} differs from the T = {recorded} recorded with the checkpoint",
                      stacklevel=2)
    if timesteps is not None:
        if not (isinstance(timesteps, int) and 1 <= timesteps <= MAX_T):
            raise SnnccError(f"timesteps must be an integer in 1..{MAX_T}, got {timesteps!r}", where="--timesteps")
        if loaded.T not in (1, timesteps):
            import warnings

            warnings.warn(f"the model's own T = {loaded.T} is replaced by --timesteps {timesteps}", stacklevel=2)
        loaded.T = timesteps
    if input_layout and loaded.T == 1 and timesteps is None and recorded is None and example_input is None and \
            loaded.program is None:
        raise SnnccError(f"input layout {input_layout} needs the number of timesteps", where="--input-layout",
                         hint="pass --timesteps T with the per-step --input-shape")
    res = compile_model(loaded, target=target, input_kind=input_kind, frontend=frontend, dump_after=tuple(dump_after),
                        allow_macs=allow_macs, progress=progress, target_options=options)
    return Deployment(target, res.traced, res.deployed, res.manifest, res.files, loaded, res.summary(), res.explain,
                      dict(res.dumps))


def _recorded_T(path) -> int | None:
    """T recorded next to a state_dict checkpoint: `model.json` beside `model.pt` with an integer
    "T" (the shipped examples write one, naming the checkpoint in "state_dict"), or None. An
    exported program is what it was traced as: a sidecar T does not apply to a `.pt2`."""
    import json

    path = os.fspath(path)
    side = os.path.splitext(path)[0] + ".json"
    try:
        with open(side) as f:
            doc = json.load(f)
        T = doc.get("T")
        named = doc.get("state_dict")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    # it describes this checkpoint: it names it as its state_dict, or names no file and this is one
    if named is not None and named != os.path.basename(path):
        return None
    if named is None and os.path.splitext(path)[1] in (".pt2", ".onnx", ".nir"):
        return None
    return T if isinstance(T, int) and not isinstance(T, bool) and T >= 1 else None


def load(path: str) -> Deployment:
    """Read an artefact folder written by `Deployment.save` / `snncc compile -o` (hashes and schema
    checked)."""
    return Deployment(*artifact.read_artefact(os.fspath(path)))


def _eager64(loaded):
    """The PyTorch model in float64 when it is a module or a `.pt2` program (a copy; the user's stays
    float32), else as it is; (None, "") when there is no model."""
    import copy

    if loaded is None:
        return None, ""
    from snncc.frontend.loader import LoadedModel

    program = loaded.module is None and loaded.program is not None and loaded.onnx is None and loaded.nir is None
    if loaded.module is None and not program:
        return loaded.eager, "float32"
    try:  # a .pt2 too: its float32 spikes can sit on the other side of a rounding step than the exact model's
        with warnings.catch_warnings():  # torch's deprecation notices while it copies a program's tree specs
            warnings.simplefilter("ignore")
            m64 = copy.deepcopy(loaded.program.module() if program else loaded.module).double()
    except Exception:  # a module that cannot be copied or cast: compare in its own precision
        return loaded.eager, "float32"
    if program:
        eager = LoadedModel(None, loaded.program, loaded.input_shape, loaded.T, loaded.source, layout=loaded.layout,
                            output_time_axis=loaded.output_time_axis, program_module=m64).eager
    else:
        eager = LoadedModel(m64, None, loaded.input_shape, loaded.T, loaded.source, layout=loaded.layout,
                            output_time_axis=loaded.output_time_axis).eager
    try:  # layers that make their own float32 (snntorch's spikes: (mem > threshold).float()) cannot run in float64
        eager(torch.zeros((1,) + tuple(loaded.input_shape), dtype=torch.float64))
    except Exception:
        return loaded.eager, "float32"
    return eager, "float64"
