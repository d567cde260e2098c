"""The `snncc` command line: compile, inspect, verify, simulate, estimate, targets.

Every user-facing failure is one line on stderr (what, where, what to do) and exit code 2
(1 for a verification mismatch, 3 for an internal error, i.e. a bug); `--debug` also prints the
traceback and keeps the exit code.

torch and snncc's heavy modules are imported inside the commands, after the checks that need
none of them (arguments, target options, output folders, artefact files, data files and
--samples): a refused command answers without paying torch's import (tests/test_cli_imports.py).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import traceback
import warnings
from typing import TYPE_CHECKING

from snncc import artifact
from snncc.errors import PassError, SnnccError, TargetError
from snncc.version import __version__

if TYPE_CHECKING:  # annotations only: the commands import them when they run
    import numpy as np
    import torch


class _Parser(argparse.ArgumentParser):
    """argparse with snncc's one-line errors (exit 2) instead of a usage block."""

    def error(self, message: str):  # type: ignore[override]
        print(f"snncc: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


def _int_in(lo: int, hi: int | None, what: str):
    """An argparse type: an integer in lo..hi (hi None: no upper bound), refused as `expected <what>`."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"expected {what}, got {v}")
        return v

    return parse


_positive_int = _int_in(1, None, "a positive integer")
_non_negative_int = _int_in(0, None, "a non-negative integer")
_seed = _int_in(0, 2 ** 32 - 1, f"an integer in 0..{2 ** 32 - 1}")


def _finite_positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (0 < v < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text}")
    return v


def _bin_us(text: str) -> float:
    v = _finite_positive(text)
    if v > 1e12:  # beyond 11 days per timestep the microsecond clock arithmetic loses its meaning
        raise argparse.ArgumentTypeError(f"expected at most 1e12 microseconds per timestep, got {text}")
    return v


def _add_global_args(p: argparse.ArgumentParser, top: bool) -> None:
    """-v and --debug, accepted before and after the subcommand."""
    default = False if top else argparse.SUPPRESS
    p.add_argument("--debug", action="store_true", default=default,
                   help="show the traceback of an error (the exit code stays the same)")
    p.add_argument("-v", "--verbose", action="store_true", default=default,
                   help="log what every pass changes, and progress")


def _add_load_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-def", help="file.py:factory or package.module:factory building the model (state_dict "
                                       "checkpoints). This imports and runs that Python file or module: use only "
                                       "code you trust")
    p.add_argument("--factory-kwargs", help="JSON object of keyword arguments for the factory")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow loading a pickled whole module (runs code from the file: only for files you trust)")
    p.add_argument("--input-shape", help="per-sample input shape, e.g. 1,8,8")
    p.add_argument("--input-kind", choices=["current", "spike"], default="current",
                   help="real-valued input (the first layer is the off-chip encoding layer) or spike/event input")
    p.add_argument("--approximate-lif", action="store_true",
                   help="NIR files: import LIF neurons as IF, dropping their leak (listed as an approximation); "
                        "the same as --nir-lif approximate")
    p.add_argument("--nir-lif", metavar="RULE", default="",
                   help="NIR files: how continuous-time LIF neurons become steps: steps (tau in timesteps, "
                        "sinabs' reading), euler:DT, exp:DT (exact leaky neurons) or approximate (docs/formats.md)")
    p.add_argument("--frontend", choices=["auto", "export", "fx"], default="auto",
                   help="torch.export first (auto), or force one front end")


def _add_input_args(p: argparse.ArgumentParser) -> None:
    """The inputs of verify, simulate and estimate: a data set or seeded random samples, and a device."""
    p.add_argument("--samples", type=_positive_int,
                   help="the first N samples of --data (default: all of it), or N seeded random inputs (default 16)")
    p.add_argument("--data", help=".npz with an array x (or x_test) of inputs and optional labels y (or y_test), "
                                  "or an .npy array, or a folder of them; all of it is used (default: seeded random "
                                  "inputs)")
    p.add_argument("--data-layout", choices=("auto", "NT", "TN", "N", "flat"), default="auto",
                   help="axes of a T-step model's --data: auto (read from the shapes; the line 'inputs:' says which), "
                        "NT (N, T, ...), TN (T, N, ...), N (one frame per sample at every step) or flat (N*T, ...)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the random inputs (default 0)")
    p.add_argument("--device", default="cpu", help="where the executors run: cpu (default), cuda or cuda:N")


def _add_shard_args(p: argparse.ArgumentParser) -> None:
    """Batches and workers of simulate and estimate (data/workers.py)."""
    p.add_argument("--batch-size", type=_positive_int, help="samples per executor batch (default: all at once, "
                                                             "or one shard of a folder)")
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="shard the batches over N local worker processes (statistics merged exactly)")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="run the workers as Ray tasks: 'local' or a cluster address (needs the ray extra)")


def _add_layout_args(p) -> None:
    """--timesteps and --input-layout: the same meaning for compile and inspect, module or .pt2."""
    p.add_argument("--timesteps", type=_positive_int,
                   help="training timesteps T of a single-step event model (warns when it replaces the model's own T)")
    p.add_argument("--input-layout", choices=("BT", "TB"), default="",
                   help="the model takes the whole sequence, (B, T, *shape) or (T, B, *shape) (multi-step code; "
                        "with --timesteps and the per-step --input-shape)")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="snncc", description="Compile SFA-trained spiking networks to neuromorphic targets.")
    ap.add_argument("--version", action="version", version=f"snncc {__version__}")
    _add_global_args(ap, top=True)
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    common = argparse.ArgumentParser(add_help=False)  # -v/--debug after the subcommand too
    _add_global_args(common, top=False)
    _add = sub.add_parser

    def add_parser(name, **kw):
        return _add(name, parents=[common], **kw)

    sub.add_parser = add_parser  # type: ignore[method-assign]

    c = sub.add_parser("compile", help="compile a model into an artefact folder")
    c.add_argument("model", help=".pt2 torch.export program, state_dict checkpoint, .onnx model, .nir graph, or "
                                 "(with --trust-pickle) pickled module")
    _add_load_args(c)
    c.add_argument("--target", default="sim", help="target name (see `snncc targets`)")
    c.add_argument("-o", "--out", required=True,
                   help="artefact folder to write: a new or empty folder, or an earlier snncc artefact (replaced "
                        "only if it holds nothing but the files its manifest lists); any other existing folder, "
                        "or one that contains the model file, is refused, never deleted")
    c.add_argument("--dump-after", action="append", default=[], metavar="PASS",
                   help="print the graph listing after PASS (repeatable)")
    c.add_argument("--allow-macs", action="store_true",
                   help="deploy non-spike-driven layers beyond the encoding layer")
    c.add_argument("--explain", action="store_true", help="print the target's full compatibility report")
    _add_layout_args(c)
    c.add_argument("--target-option", action="append", default=[], metavar="KEY=VALUE",
                   help="target-specific option (repeatable); `snncc targets` lists each target's options")

    i = sub.add_parser("inspect", help="list a model's or an artefact's graph, one row per node")
    i.add_argument("path", help="model file or artefact folder")
    _add_load_args(i)
    _add_layout_args(i)
    i.add_argument("--level", choices=["traced", "deployed"], default=None,
                   help="which graph of an artefact (default deployed) or of a model (default traced)")
    i.add_argument("--target", default=None,
                   help="a model's --level deployed: lower it as compile --target TARGET does (default sim)")
    i.add_argument("--target-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a model's --level deployed: target options, as for compile")

    v = sub.add_parser("verify", help="compare PyTorch model, traced IR, folded IR and normal form")
    v.add_argument("model")
    v.add_argument("out", help="artefact folder compiled from MODEL")
    _add_load_args(v)
    _add_input_args(v)

    sm = sub.add_parser("simulate", help="simulate a compiled artefact with the T x D synchronous simulator")
    sm.add_argument("out", help="artefact folder")
    sm.add_argument("--schedule", choices=["exact", "streaming", "both", "event"], default="both",
                    help="T x D schedules (both = exact + streaming), or event: the event-driven simulator, "
                         "ideal policy, checked against the reference")
    sm.add_argument("--backend", default="snncc",
                    help="snncc (our simulators) or a target's own simulator (`snncc targets` lists them)")
    _add_input_args(sm)
    _add_shard_args(sm)
    sm.add_argument("--populations", metavar="NAME[,NAME...]",
                    help="with a target's --backend: run only these populations, their inputs from outside taken from "
                         "the reference run, and compare their counts with it")
    sm.add_argument("--chip", type=_non_negative_int, metavar="K",
                    help="with a target's --backend: run the populations its placement puts on chip K")
    sm.add_argument("--events", metavar="FILE",
                    help="event recordings (.npy/.npz, tonic-style x, y, t, p; t in us): run them in time order "
                         "through the asynchronous simulator; report latency, SynOps/s per core, power")
    sm.add_argument("--policy", choices=["greedy", "speck"],
                    help="firing rule for --events (default speck)")
    sm.add_argument("--bin-us", type=_bin_us, help="microseconds per timestep for --events (default: span / T)")
    sm.add_argument("--sensor-size", help="W,H of the recordings (default: the graph input's)")

    es = sub.add_parser("estimate", help="energy, latency and bandwidth of a compiled artefact")
    es.add_argument("out", help="artefact folder")
    es.add_argument("--profile", default="45nm", help="45nm, loihi, speck, or a profile JSON file")
    _add_input_args(es)
    es.add_argument("--rate", type=_finite_positive, help="input samples per second, for average power")
    es.add_argument("--markdown", help="also write the report as Markdown to this file")
    es.add_argument("--json", metavar="PATH", help="also write the whole report as JSON (totals incl. sops, "
                                                    "architecture_sops, synapses; per population and link)")
    _add_shard_args(es)
    es.add_argument("--progress", action="store_true", help="show a progress bar over the batches")
    es.add_argument("--report", metavar="DIR", help="write DIR/report.md + report.html with plots")
    es.add_argument("--layer", help="population whose spike maps the report shows (default: first conv map)")
    es.add_argument("--sweep-D", metavar="D1,D2,...",
                    help="also re-deploy the artefact's traced graph at these window lengths and compare energy, "
                         "spikes, latency and agreement with the compiled D (accuracy when --data has labels y)")

    sub.add_parser("targets", help="list installed targets")

    xn = sub.add_parser("export-nir", help="write a compiled artefact's deployed graph as a NIR file (HDF5)")
    xn.add_argument("out", help="artefact folder")
    xn.add_argument("file", help=".nir file to write")
    xn.add_argument("--nir-form", choices=["binary", "multispike"], default="binary",
                    help="how a neuron with D > 1 spikes per window is written: binary (default; D single-spike "
                         "IF copies, so a reader whose IF fires once per step computes snncc's counts) or "
                         "multispike (one IF per neuron, D in snncc metadata)")
    xx = sub.add_parser("export-netx", help="write a compiled artefact's deployed graph as a lava-dl netx HDF5 file "
                                            "(the loihi target's writer, backends/lava)")
    xx.add_argument("out", help="artefact folder")
    xx.add_argument("file", help=".net file to write")
    return ap


_QUIET = False  # main(): without --debug, library logging stays quiet (_quiet_libraries)


def _model_file_exists(path: str) -> None:
    """A missing model file is said before torch is imported (seconds): the loader's own words."""
    if not os.path.exists(path):
        from snncc.errors import LoadError

        raise LoadError("file not found", where=path)


def _torch():
    """torch, imported now (the checks before this call need none of it), its threads capped at the
    cores. Importing torch resets its loggers' levels (torch._logging), so they are quietened again."""
    import torch

    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    if _QUIET:
        _quiet_libraries()
    return torch


def _read_artefact(path: str):
    """`api.load(path)`, the artefact read and checked (artifact.read_artefact) before torch is imported."""
    return _deployment(artifact.read_artefact(path))


def _deployment(parts):
    """The Deployment of an artefact's checked parts (artifact.read_artefact): torch is imported here."""
    _torch()
    from snncc.api import Deployment

    return Deployment(*parts)


def _load(args, layout: str = "", timesteps: int | None = None):
    from snncc.frontend import load_model
    from snncc.frontend.loader import parse_kwargs, parse_shape

    return load_model(args.model if hasattr(args, "model") else args.path, model_def=args.model_def,
                factory_kwargs=parse_kwargs(args.factory_kwargs), trust_pickle=args.trust_pickle,
                input_shape=parse_shape(args.input_shape), approximate_lif=args.approximate_lif, nir_lif=args.nir_lif,
                layout=layout, timesteps=timesteps)


def cmd_compile(args) -> int:
    from snncc.targets import get as get_target, parse_options

    if args.dump_after:  # fail fast, before loading anything
        from snncc.passes.manager import DEPLOY

        for name in args.dump_after:
            if name not in DEPLOY:
                raise PassError(f"--dump-after {name}: no such pass in this pipeline",
                                hint=f"passes: {', '.join(DEPLOY)}")
    options = parse_options(get_target(args.target), args.target_option)  # bad options: before loading
    artifact.check_writable(args.out, protect=(args.model,))
    _model_file_exists(args.model)
    _torch()
    from snncc.api import compile as compile_api
    from snncc.frontend.loader import parse_kwargs, parse_shape

    try:
        dep = compile_api(args.model, target=args.target, input_kind=args.input_kind, input_shape=parse_shape(args.input_shape),
                          model_def=args.model_def, factory_kwargs=parse_kwargs(args.factory_kwargs),
                          trust_pickle=args.trust_pickle, frontend=args.frontend, allow_macs=args.allow_macs,
                          target_options=options, dump_after=tuple(args.dump_after),
                          timesteps=args.timesteps, approximate_lif=args.approximate_lif, nir_lif=args.nir_lif,
                          input_layout=args.input_layout, progress=_progress if _show_progress(args) else None)
    except TargetError as e:
        if args.explain and getattr(e, "explain", ""):
            print(e.explain)
        raise
    for name, text in dep.dumps.items():
        print(f"--- after {name} ---")
        print(text, end="")
    if args.explain:
        print(dep.explain)
    dep.save(args.out, protect=(args.model,))
    print(dep.summary)
    if dep.traced.meta.get("nir_lif"):
        print(f"NIR LIF neurons stepped by rule {dep.traced.meta['nir_lif']} (docs/formats.md)")
    for item in dep.traced.meta.get("nir_approximations", []):
        print(f"approximation: {item}")
    print(f"wrote {args.out}")
    return 0


def _progress(msg: str) -> None:
    print(f"[snncc] {msg}", file=sys.stderr, flush=True)


def _show_progress(args) -> bool:
    """Progress lines go to a terminal, or anywhere with -v; a script sees only results and errors."""
    return bool(getattr(args, "verbose", False)) or sys.stderr.isatty()


def cmd_inspect(args) -> int:
    from snncc.ir.printer import listing

    if os.path.isdir(args.path):  # the artefact's own graphs: deployed with its target and options at compile
        if args.target is not None or args.target_option:
            raise SnnccError("an artefact's deployed graph was lowered by its compile", where="--target",
                             hint="--target/--target-option apply to a model file; compile again to change them")
        stem = "traced" if args.level == "traced" else "ir"
        g = artifact.read_graph(args.path, stem)
        m = artifact.read_manifest(args.path)
        print(f"# artefact {args.path}: target {m.get('target')}, level {stem}")
    else:
        from snncc.targets import get as get_target, parse_options

        tgt = get_target(args.target or "sim")
        options = parse_options(tgt, args.target_option)  # bad options: before loading
        _model_file_exists(args.path)
        _torch()
        from snncc.compiler import deploy
        from snncc.frontend import trace

        loaded = _load(args, args.input_layout, args.timesteps)  # a program checks them against its input
        if loaded.program is None and args.timesteps is not None:
            loaded.T = args.timesteps
        if args.input_layout and loaded.T == 1 and loaded.program is None:
            raise SnnccError(f"input layout {args.input_layout} needs the number of timesteps", where="--input-layout",
                             hint="pass --timesteps T with the per-step --input-shape")
        g = trace(loaded, frontend=args.frontend, input_kind=args.input_kind)
        if args.level == "deployed":
            g = deploy(g, tgt, options, allow_macs=True).graph
    print(listing(g), end="")
    return 0


def _input_batches(args, graph):
    """The inputs of a run (--data: all of it or its first --samples; else seeded random inputs),
    read and checked against `graph`; a data file takes numpy only, so the commands call this
    before torch is imported and a refused --data/--samples costs no torch import."""
    from snncc.data.inputs import InputBatches

    return InputBatches(graph, args.data, args.samples, getattr(args, "batch_size", None), args.seed,
                        args.data_layout)


def _batches(args, graph, batches=None):
    """The inputs of a run (`batches` when already read by _input_batches), checked before any
    work, and the one line saying which were read (the seed is printed, so a run can be repeated)."""
    batches = _input_batches(args, graph) if batches is None else batches
    print(batches.describe())
    return batches


def _inputs(args, graph, batches=None) -> tuple[torch.Tensor, np.ndarray | None]:
    """All inputs at once in the model's own layout, as the API takes them, and their labels."""
    from snncc.data.inputs import time_major

    x, y = _batches(args, graph, batches).all()
    return time_major(graph, x), y  # the swap is its own inverse


def _simulate_data(args, dep, batches=None) -> int:
    """simulate with snncc's simulators: the data set (a file, a folder of shards, or seeded random
    inputs) batch by batch, optionally over workers; each batch's counts checked against the
    reference (a progress bar on a terminal or with -v)."""
    schedules = ("exact", "streaming") if args.schedule == "both" else (args.schedule,)
    batches = _batches(args, dep.deployed, batches)  # bad input: before work
    t = dep.simulate_data(args.data, schedules, args.samples, args.seed, args.batch_size, _show_progress(args),
                          args.device, args.workers, args.ray_address, args.data_layout)
    ok = True
    if "exact" in schedules:
        print(t.exact_line(f" from {len(batches.shards)} shards" if batches.shards else ""))
        ok = t.exact["differing"] == 0
    if "streaming" in schedules:
        print(t.streaming_text())
    m = dep.target_model_tally(args.data, args.samples, args.seed, args.batch_size, args.data_layout,
                               _show_progress(args))
    if m is not None:  # a target model that differs by design (Loihi fixed point): what it costs
        print(m.line())
        if args.verbose:
            print(m.table())
    return 0 if ok else 1


def _check_ray_address(args) -> None:
    """A --ray-address that is not an address or leads nowhere: refused now, before torch and the
    run (snncc.data.workers checks it again when it starts Ray), where Ray is installed (else the
    run says it needs Ray)."""
    if args.ray_address:
        import importlib.util

        if importlib.util.find_spec("ray") is not None:
            from snncc.data.workers import check_ray_address

            check_ray_address(args.ray_address)


def cmd_simulate(args) -> int:
    if args.device != "cpu":  # a device is checked before the artefact is read ("cpu" always exists)
        _torch()
        from snncc.sim.device import resolve

        resolve(args.device)
    parts = artifact.read_artefact(args.out)
    if (args.events or args.backend != "snncc" or args.schedule == "event") and (args.workers > 1 or args.ray_address or args.batch_size):
        raise SnnccError("--workers, --ray-address and --batch-size shard the synchronous simulators over a data "
                         "set, not --events, --schedule event or another --backend", where="simulate",
                         hint="drop them, or simulate --data with --backend snncc")
    event_schedule = args.backend == "snncc" and args.schedule == "event"
    if args.policy and not args.events:
        raise SnnccError(f"--policy {args.policy} chooses the firing rule of --events recordings; --schedule event "
                         "runs the ideal policy and checks it against the reference", where="simulate",
                         hint="pass --events FILE, or call dep.simulate(x, schedule='event', policy=...) in Python")
    if event_schedule and not args.events and args.data and os.path.isdir(args.data):
        raise SnnccError("--schedule event runs one input file, not a folder of shards", where="--data",
                         hint="pass one shard's file")
    _check_ray_address(args)
    batches = None if args.events else _input_batches(args, parts[2])  # bad input: before torch
    dep = _deployment(parts)
    if (args.events or event_schedule) and _show_progress(args):
        from snncc.sim.events.kernels import first_use

        folder = first_use()
        if folder:
            _progress(f"compiling the event simulator's kernels: the first event run here takes 20-60 s more; "
                      f"numba keeps them in {folder}")
    if args.events:
        from snncc.frontend.loader import parse_shape
        from snncc.sim.event_streams import run_recordings

        sensor = parse_shape(args.sensor_size, "--sensor-size") if args.sensor_size else None
        g, what = dep.event_graph()
        _, text = run_recordings(g, args.events, sensor, bin_us=args.bin_us, policy=args.policy or "speck",
                                 samples=args.samples)
        print(f"network: {what}")
        print(text)
        return 0
    if args.backend == "snncc" and (args.populations is not None or args.chip is not None):
        raise SnnccError("--populations / --chip choose a sub-graph for a target's simulator", where="--backend",
                         hint=f"add --backend {dep.backend_name()}")
    if event_schedule:
        x, y = _inputs(args, dep.deployed, batches)
        ref = dep.reference(x, device=args.device)
        r = dep.simulate(x, schedule="event", policy="ideal", layout="static")
        same = _same(r.counts, ref.counts) and _same(r.messages, ref.messages)
        relays = f", relay messages {sum(int(m.sum()) for m in r.messages.values())}" if r.messages else ""
        print(f"event simulation (ideal policy): {_n(ref)} samples, {r.total_events} events{relays}, "
              f"{r.synops} synaptic ops, spike counts {'==' if same else '!='} reference, max |output diff| "
              f"{float((r.output - ref.output).abs().max()):.3g}{_scores(r.output, ref, y)}")
        return 0 if same else 1
    if args.backend == "snncc":
        return _simulate_data(args, dep, batches)
    x, y = _inputs(args, dep.deployed, batches)
    if args.populations is not None or args.chip is not None:
        names = [p for p in args.populations.split(",") if p] if args.populations is not None else None
        r = dep.simulate(x, backend=args.backend, populations=names, chip=args.chip)
        print(r.table())
        return 0 if r.ok else 1
    ref = dep.reference(x, device=args.device)
    r = dep.simulate(x, backend=args.backend)
    same = _same(r.counts, ref.counts)
    diff = f"max |output diff| {float((r.output - ref.output).abs().max()):.3g}"
    if getattr(r, "output_kind", ""):  # another quantity than the graph's output (speck: readout spikes)
        diff = f"output = {r.output_kind}"
    own = None if same else dep.target_reference(x, backend=args.backend)
    if own is not None and _same(r.counts, own[0].counts):
        # differs from the integer model by design (e.g. fixed point): equal to the target's own model
        fires = [n.name for n in dep.deployed.neurons() if n.name in ref.counts and n.name in r.counts]
        differ = sum(int((r.counts[k].double() != ref.counts[k].double()).sum()) for k in fires)
        total = sum(ref.counts[k].numel() for k in fires)
        print(f"{args.backend}: {_n(ref)} samples, spike counts == {own[1]}; against the integer model "
              f"(reference): {differ / max(total, 1):.2%} of neuron counts differ, {diff}{_scores(r.output, ref, y)}")
        return 0
    also = f" and != {own[1]}" if own is not None else ""
    print(f"{args.backend}: {_n(ref)} samples, spike counts {'==' if same else '!='} reference{also}, "
          f"{diff}{_scores(r.output, ref, y)}")
    return 0 if same else 1


def _n(ref) -> int:
    """Samples of a run (its output is (B, ...))."""
    return int(ref.output.shape[0])


def _scores(out, ref, labels) -> str:
    """`, agreement with the integer model ..., accuracy ..., integer model ...` (sim.scores)."""
    from snncc.sim.scores import score

    text = score(out, ref.output, labels).text()
    return f", {text}" if text else ""


def _same(got: dict, ref: dict) -> bool:
    """Every tensor of `ref` (per population) equal to `got`'s, bit for bit."""
    import torch

    return all(k in got and torch.equal(got[k], ref[k]) for k in ref)


def cmd_estimate(args) -> int:
    Ds = _parse_Ds(args.sweep_D) if args.sweep_D is not None else None  # every problem before the run
    if args.layer and not args.report:
        raise SnnccError("--layer chooses the population whose spike maps the report shows", where="--layer",
                         hint="add --report DIR, or drop --layer")
    if args.device != "cpu":  # as in simulate: the device before the artefact
        _torch()
        from snncc.sim.device import resolve

        resolve(args.device)
    parts = artifact.read_artefact(args.out)
    _check_ray_address(args)
    early = _input_batches(args, parts[2])  # bad input: before torch
    dep = _deployment(parts)
    g = dep.deployed
    batches = _batches(args, g, early)
    rep = dep.estimate(args.data, args.profile, args.samples, args.seed, args.batch_size, args.rate,
                       args.progress or _show_progress(args), device=args.device, workers=args.workers,
                       ray_address=args.ray_address, data_layout=args.data_layout)
    print(rep.table())
    sweep = _sweep_D(args, g, batches, Ds) if Ds else None
    if args.markdown:
        artifact.write_text(args.markdown, rep.to_markdown() + ("\n## comparison of D\n\n" + sweep.to_markdown() if sweep else ""))
        print(f"wrote {args.markdown}")
    if args.json:
        from snncc.estimate.estimator import write_json

        write_json(rep, args.json)
        print(f"wrote {args.json}")
    if args.report:
        from snncc.estimate.report import write_estimate_report

        tally = dep.simulate_data(args.data, ("exact", "streaming"), args.samples, args.seed, args.batch_size,
                                  _show_progress(args), args.device, args.workers, args.ray_address, args.data_layout)
        # the target simulator's row: the same inputs as the tally, batch by batch
        target = dep.target_scores(args.data, samples=args.samples, seed=args.seed, batch_size=args.batch_size,
                                   progress=args.progress or _show_progress(args), data_layout=args.data_layout)
        files = write_estimate_report(g, rep, batches.batch(0), args.report, args.layer, d_sweep=sweep,
                                      scores=tally.scores() + target)
        print(f"wrote {files.markdown} and {files.html}")
    return 0


def _parse_Ds(text: str) -> list[int]:
    from snncc.ir.ops import MAX_D

    try:
        Ds = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise SnnccError(f"cannot read window lengths {text!r}", where="--sweep-D",
                         hint="comma-separated positive integers, e.g. 1,2,4,8") from None
    if not Ds or Ds[0] < 1:
        raise SnnccError(f"window lengths must be positive integers, got {text!r}", where="--sweep-D",
                         hint="e.g. --sweep-D 1,2,4,8")
    if Ds[-1] > MAX_D:
        raise SnnccError(f"window length {Ds[-1]} is above snncc's bound D <= {MAX_D}", where="--sweep-D",
                         hint="e.g. --sweep-D 1,2,4,8")
    return Ds


def _sweep_D(args, deployed, batches, Ds):
    """`estimate --sweep-D`: the traced graph at each D (passes.set_window), deployed as the artefact
    was (its target and options; MACs allowed: this is analysis, the artefact itself was already
    checked), on the same inputs, streamed batch by batch."""
    from snncc.compiler import deploy
    from snncc.estimate.report import sweep_D
    from snncc.passes.set_window import set_window
    from snncc.targets import get as get_target, parse_options

    D0 = deployed.neurons()[0].attrs["D"]
    traced = artifact.read_graph(args.out, "traced")
    m = artifact.read_manifest(args.out)
    tgt = get_target(m.get("target", "sim"))
    options = parse_options(tgt, m.get("target_options", {}))
    graphs = {}
    for D in sorted(set(Ds) | {D0}):
        if _show_progress(args):
            print(f"deploying at D={D}", file=sys.stderr)
        graphs[D] = deployed if D == D0 else deploy(set_window(traced, D).graph, tgt, options,
                                                    allow_macs=True).graph
    sw = sweep_D(graphs, batches, args.profile, labels=batches.labels, reference_D=D0, batch_size=batches.batch_size)
    print(f"\nD sweep ({sw.samples} samples, agreement with the compiled D={D0}):")
    print(sw.to_markdown())
    return sw


def cmd_verify(args) -> int:
    if args.device != "cpu":  # as in simulate: the device before the artefact
        _torch()
        from snncc.sim.device import resolve

        resolve(args.device)
    parts = artifact.read_artefact(args.out)
    batches = _input_batches(args, parts[1])  # bad input: before torch and the model
    dep = _deployment(parts)
    layout = dep.traced.meta.get("input_layout", "")  # the model takes the whole sequence, as it was compiled
    loaded = _load(args, layout, dep.traced.T if layout else None)
    if layout:
        loaded.T = dep.traced.T
    x, y = _inputs(args, dep.traced, batches)
    rep = dep.verify(x, model=loaded, device=args.device, labels=y,
                     progress=_progress if _show_progress(args) else None)
    print(rep.table())
    if not rep.ok:
        print(f"snncc: verification failed: {rep.first_divergence} differs from the traced model beyond rounding "
              f"ties", file=sys.stderr)
        return 1
    return 0


def cmd_targets(args) -> int:
    from snncc.targets import available, get

    eps = available()
    names = sorted(set(eps) | {"sim"})
    for name in names:
        try:
            t = get(name)
            print(f"{name:<8} {t.description}")
            if t.backend_name() != name:
                print(f"{'':<8} simulator: --backend {t.backend_name()}")
            for k, meaning in t.Options.meanings().items():
                print(f"{'':<8} --target-option {k}=...: {meaning}")
        except TargetError as e:
            print(f"{name:<8} (unavailable: {e.what})")
    return 0


def cmd_export_nir(args) -> int:
    ex = _read_artefact(args.out).export_nir(args.file, form=args.nir_form)
    print(f"wrote {args.file} ({len(ex.graph.nodes)} NIR nodes, {args.nir_form} form); what NIR readers other "
          "than snncc lose:")
    for item in ex.lost:
        print(f"- {item}")
    return 0


COMMANDS = {"compile": cmd_compile, "inspect": cmd_inspect, "verify": cmd_verify, "simulate": cmd_simulate,
            "estimate": cmd_estimate, "targets": cmd_targets}
COMMANDS["export-nir"] = cmd_export_nir


def cmd_export_netx(args) -> int:
    notes = _read_artefact(args.out).export_file("netx", args.file)
    print(f"wrote {args.file} (lava-dl netx HDF5: load with Network(path, reset_interval=1, input_message_bits=its "
          "snncc/inputMessageBits); one netx step per window)")
    for line in notes:
        print(line)
    return 0


COMMANDS["export-netx"] = cmd_export_netx


def _quiet_libraries() -> None:
    """Without --debug, torch's own logging and warnings (export retries, deprecations) stay out
    of the way: a failure is reported once, in snncc's line."""
    for name in ("torch", "torch._dynamo", "torch.export", "torch._export", "torch.fx", "onnx", "onnxruntime"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", module=r"(torch|onnx|onnxruntime|nir|nirtorch)(\.|$)")
    from snncc.targets import quiet_warnings

    quiet_warnings()  # and a chip target's own libraries (its `libraries`), when it is loaded


INTERNAL_ERROR = 3


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    global _QUIET
    _QUIET = not args.debug
    if _QUIET:
        _quiet_libraries()
    warnings.formatwarning = lambda msg, cat, *a, **k: f"snncc: warning: {msg}\n"
    try:
        return COMMANDS[args.cmd](args)
    except SnnccError as e:
        if args.debug:
            traceback.print_exc()
        print(f"snncc: error: {e.one_line()}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("snncc: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        if e.errno in (errno.EPIPE, errno.ENOSPC):  # a closed pipe or a full disk: snncc.console's one line
            raise
        return _internal_error(e, args)
    except MemoryError:
        if args.debug:
            traceback.print_exc()
        print(f"snncc: error: {args.cmd}: out of memory: this run needs more memory than the machine has (a smaller "
              f"model or input, fewer --samples, or `estimate --batch-size`)", file=sys.stderr)
        return 2
    except Exception as e:
        return _internal_error(e, args)


def _internal_error(e: Exception, args) -> int:
    """A bug in snncc: one line for the user, the traceback with --debug."""
    if args.debug:
        traceback.print_exc()
    msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
    print(f"snncc: internal error: {e.__class__.__name__}: {msg} (a bug in snncc: rerun with --debug for "
          f"the traceback and report it)", file=sys.stderr)
    return INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
