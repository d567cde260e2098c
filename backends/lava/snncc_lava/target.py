"""`LoihiTarget`: the snncc target plugin for Loihi 2 through Lava (entry point `loihi`).

check -> rules the deployed graph breaks for the Lava lowering; emit -> the network description
(`describe`); simulate -> run the network in Lava floating_pt or fixed_pt (`lower`); simulate_part
-> run chosen populations (or one chip's share) with boundary inputs from the reference (`part`). Lava is
imported lazily, on the first simulate, so listing targets or emitting never starts the Lava
runtime.

Options (emit and simulate; `--target-option key=value` on the CLI):
- emit: "burst" (default) | "graded" -- unary spikes or one graded message per window;
- precision: "float" (default) | "fixed" -- fixed writes the quantised network (integer weight
  mantissas, weight exponents, vth, bias mantissa/exponent, v_init; `fixed.quantize`) and
  `lava/quantisation.json`, the per-population quantisation report;
- netx: false (default) | true -- also write `lava/network.net`, the lava-dl netx HDF5 file
  (`netx`; always integer, quantised with the netx policy), or fail naming what netx cannot express;
- residual: "auto" (default) | "fanin" | "relay" -- how membrane-shortcut streams are deployed
  (`lowering_options`: auto prices them with the loihi profile in floating_pt and fixed_pt,
  keeps fan-in with netx);
- calibration_data: FILE (.npz/.npy, read as --data), calibration_samples: N (default 64) -- with
  precision=fixed only: the per-population scaling choices (`fixed.calibrate`) measured on the
  first N samples, stored in the deployed graph (ir.json meta `target.loihi.fixed_choices`) so that the
  Lava lowering and the integer model re-quantise with them, and reported before/after;
- weight_bits: 8 (default) | 16 -- with precision=fixed only: 16 makes every projection two synapse
  groups into the same neurons (8-bit high mantissas at weight_exp e plus 8-bit low mantissas at
  e - 8, `fixed.mantissas`), stored in the deployed graph (ir.json meta `target.loihi.weight_bits`) so the
  Lava lowering and the integer model read the same integers; the mapping charges both groups;
- system: "chip" (default) | "kapoho" | "hala" | N -- the Loihi 2 system the model is mapped onto
  (`mapping`): check refuses, in one line per resource, a model that does not fit it; emit writes
  `lava/mapping.json` (piece -> chip, core; utilisation; inter-chip links and traffic) and the
  compile report carries the resource report rendered from that file (`report_section`; `explain`
  prints the same from the mapping, by --explain even on failure).
The explicit network description (`lava/network.json` + `weights.npz`, CSR synapse matrices) is
written only when it has at most DESCRIBE_LIMIT materialised synapses: above that (E-SpikeFormer
at 224x224) the artefact keeps the kernels in ir.npz and the mapping, and the Lava network is
built from the IR when simulating. precision=fixed quantises kernels (`network.KernelPath`) and
stores them compactly (int8 kernels, docs/formats.md), so it needs matrices only for projections
that are not one kernel; netx and the Lava runs need every matrix and are refused beyond the memory
this machine has (`network.memory_problems`).
Every file is deterministic bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from importlib.metadata import PackageNotFoundError, version

from snncc.errors import TargetError
from snncc.ir.graph import Graph
from snncc.targets import Options, Target, calibration_inputs, check_calibration_samples, option, store

from snncc_lava import compat, describe, mapping, network

EMIT_MODES = ("burst", "graded")
PRECISIONS = ("float", "fixed")
RESIDUAL_FORMS = ("auto", "fanin", "relay")
DESCRIBE_LIMIT = 20_000_000  # materialised synapses up to which lava/network.json + weights.npz are written


@dataclass(frozen=True)
class LoihiOptions(Options):
    emit: str = option("burst", "burst | graded")
    precision: str = option("float", "float | fixed")
    netx: bool = option(False, "true | false: also write lava/network.net")
    residual: str = option("auto", "auto | fanin | relay: membrane-shortcut lowering (auto: cost model)")
    system: str | int = option("chip", "chip | kapoho | hala | N: Loihi 2 system to map onto (default chip)")
    calibration_data: str | None = option(None, "an .npz/.npy data set (as --data): with precision=fixed, the "
                                                "scaling choices are measured on it (fixed.calibrate)")
    calibration_samples: int = option(64, "integer >= 1, samples of calibration_data used (default 64)")
    weight_bits: int = option(8, "8 | 16: with precision=fixed, 16 gives every projection a second 8-bit synapse "
                                 "group (low mantissas at weight_exp - 8), twice the synapse memory")


OPTIONS = LoihiOptions.meanings()


def _needs_matrices(options: LoihiOptions) -> bool:
    return options.precision == "fixed" or bool(options.netx)


def _refuse_unbuildable(graph: Graph, kernels: bool = False) -> None:
    """Lava's CPU simulation needs the explicit synapse matrices: refuse in one line, before
    allocating, when they would not fit this machine (a model mapped onto many chips). `kernels`:
    only the projections that are not one kernel need matrices (the fixed-point quantisation and
    integer model, `network.build(explicit=False)`)."""
    problems = network.memory_problems(graph, network.matrix_form_nodes(graph) if kernels else None)
    if problems:
        raise TargetError(problems[0], where="loihi simulate",
                          hint="run a sub-graph in Lava: snncc simulate OUT --backend lava --populations NAME[,NAME] "
                               "or --chip K (or --backend snncc)")


def calibrate(net: network.Network, options: LoihiOptions) -> dict:
    """`fixed.calibrate` on the first calibration_samples of calibration_data (read by the core's
    data reader, as --data: a bad file or shape is refused in one line naming it): the chosen
    scaling choices and their before/after measurement, as quantisation.json's `calibration`."""
    from snncc_lava import fixed

    x, name = calibration_inputs(net.graph, options)
    choices, report = fixed.calibrate(net, x, options.emit)
    return {"data": name, "choices": choices, **report}


class LoihiTarget(Target):
    name = "loihi"
    description = ("Loihi 2 through Lava 0.10.0 (floating_pt / fixed_pt simulation): WindowBurstIF neurons, "
                   "Sparse/DelaySparse synapses, SpikeProduct (attention), host encoding currents or spike "
                   "input; netx HDF5 export")

    Options = LoihiOptions
    exports = {"netx": "lava-dl netx HDF5 (snncc_lava.netx): D binary threshold copies per neuron, one step per window"}

    def export_file(self, fmt: str, graph: Graph) -> bytes:
        """`fmt` (one of `exports`) of a deployed fan-in graph: what `snncc export-netx` writes; a
        TargetError naming every node the format cannot express."""
        if fmt != "netx":
            raise TargetError(f"the loihi target writes no {fmt} files", where=f"export-{fmt}", hint="netx")
        from snncc_lava import netx
        try:
            return netx.export(graph)
        except TargetError as e:  # its hint speaks of the compile option netx=true
            raise TargetError(e.what, where=e.where, hint="netx reads input/conv/flatten/dense chains of non-stateful "
                              "neurons; snncc export-nir writes any deployed graph") from None

    def export_notes(self, fmt: str, data: bytes) -> list[str]:
        from snncc_lava import netx

        return [netx.notes(data)] if fmt == "netx" else []

    profile = "loihi"
    backend = "lava"  # `--backend lava`: the Lava processes
    libraries = ("lava",)

    def validate(self, options: LoihiOptions) -> None:
        if options.precision not in PRECISIONS:
            raise TargetError(f"unknown precision {options.precision!r}", where="loihi option precision",
                              hint=f"one of {', '.join(PRECISIONS)}")
        if options.residual not in RESIDUAL_FORMS:
            raise TargetError(f"unknown residual form {options.residual!r}", where="loihi option residual",
                              hint=f"one of {', '.join(RESIDUAL_FORMS)}")
        if not isinstance(options.netx, bool):
            raise TargetError(f"netx must be true or false, got {options.netx!r}", where="loihi option netx")
        mapping.load_resources().system(options.system)  # names a bad system in one line
        if options.emit not in EMIT_MODES:
            raise TargetError(f"unknown spike emission mode {options.emit!r}", where="loihi option emit",
                              hint=f"one of {', '.join(EMIT_MODES)}")
        given = options.given()
        check_calibration_samples(options, self.name)
        calibrating = [k for k in ("calibration_data", "calibration_samples") if k in given]
        if calibrating and options.precision != "fixed":
            raise TargetError(f"{calibrating[0]} chooses fixed-point scaling, and precision is {options.precision}",
                              where=f"loihi option {calibrating[0]}", hint="add --target-option precision=fixed")
        if "weight_bits" in given:
            if isinstance(options.weight_bits, bool) or options.weight_bits not in (8, 16):
                raise TargetError(f"weight_bits must be 8 or 16, got {options.weight_bits!r}",
                                  where="loihi option weight_bits")
            if options.precision != "fixed":
                raise TargetError(f"weight_bits sets fixed-point synapse groups, and precision is {options.precision}",
                                  where="loihi option weight_bits", hint="add --target-option precision=fixed")
            if options.netx and options.weight_bits != 8:
                raise TargetError("netx stores one 8-bit weight per synapse", where="loihi option weight_bits",
                                  hint="weight_bits=8 (or no netx=true)")
        if "calibration_samples" in given and not options.calibration_data:
            raise TargetError("calibration_samples is given without calibration_data",
                              where="loihi option calibration_samples",
                              hint="add --target-option calibration_data=FILE.npz (inputs as for --data)")
        if "calibration_data" in given and not isinstance(options.calibration_data, str):
            raise TargetError(f"calibration_data must be a file name, got {options.calibration_data!r}",
                              where="loihi option calibration_data")

    def lowering_options(self, options: LoihiOptions | dict | None = None) -> dict:
        """residual_lowering options. residual "auto" (default): streams are priced with the loihi
        profile (graded messages: relays where cheaper), in floating_pt and in fixed_pt, where relays
        are about as accurate as fan-in (digits_former, argmax agreement of fixed_pt with the float
        model: relay / fan-in / auto 0.970 / 0.970 / 0.970 on the first 100 test digits, 0.982 /
        0.989 / 0.987 on all 450; docs/compiler.md); "fanin" / "relay" force the form; netx (no relay layer) keeps fan-in."""
        options = self.parse(options)
        res = options.residual
        if options.netx:
            if res == "relay":
                raise TargetError("netx has no relay layer", where="loihi option residual",
                                  hint="residual=fanin or auto with netx=true")
            return {"profile": self.profile, "graded": False, "reason": "the netx export has no relay layer"}
        if res != "auto":
            return {"profile": self.profile, "residual": res}
        return {"profile": self.profile}

    def map_onto(self, graph: Graph, options: LoihiOptions | dict | None = None) -> mapping.Mapping:
        """The core/chip mapping of `graph` on the option's system (computed once per graph)."""
        options = self.parse(options)
        system = str(options.system)
        groups = 2 if options.precision == "fixed" and options.weight_bits == 16 else 1
        cached = getattr(self, "_mapped", None)  # holds the graph itself, so its id is never reused
        if cached is None or cached[0] is not graph or cached[1] != (system, groups):
            res = mapping.load_resources()
            if groups > 1:  # weight_bits=16: two synapse groups, each with its weights (and sparse indices)
                res = replace(res, weight_bits=groups * res.weight_bits, sparse_index_bits=groups * res.sparse_index_bits)
            self._mapped = (graph, (system, groups), mapping.build(graph, system, res))
        return self._mapped[2]

    def check(self, graph: Graph, options: LoihiOptions | dict | None = None) -> list[str]:
        options = self.parse(options)
        problems = network.unsupported(graph) + network.graded_problems(graph, options.emit)
        if problems:
            return problems
        problems = list(self.map_onto(graph, options).problems)
        if options.netx:
            problems += [f"netx=true exports the explicit synapse matrices, and {p}; compile without netx "
                         f"or on a larger machine" for p in network.memory_problems(graph)]
        elif _needs_matrices(options):  # fixed: kernels are quantised as kernels, only the rest as matrices
            problems += [f"precision=fixed quantises the projections that are not one kernel as explicit "
                         f"matrices, and {p}; compile with precision=float or on a larger machine"
                         for p in network.memory_problems(graph, network.matrix_form_nodes(graph))]
        return problems

    def explain(self, graph: Graph, options: LoihiOptions | dict | None = None) -> str:
        """The resource report: pieces, per-chip utilisation, inter-chip traffic, and what does not fit."""
        if network.unsupported(graph):
            return ""
        return self.map_onto(graph, options).report()

    def report_section(self, files: dict[str, bytes]) -> str:
        """The compile report's resource report, from the artefact's lava/mapping.json, and with
        precision=fixed the quantisation table from lava/quantisation.json."""
        out = ""
        if "lava/mapping.json" in files:
            out = mapping.report_markdown(json.loads(files["lava/mapping.json"]))
        if "lava/quantisation.json" in files:  # precision=fixed: per layer exponents, mantissas, clipping
            from snncc_lava import fixed
            out += ("\n" if out else "") + fixed.report_markdown(json.loads(files["lava/quantisation.json"]))
        return out

    def summary_note(self, files: dict[str, bytes]) -> str:
        """With calibration_data: one line, the fixed model's agreement and counts differing on the
        calibration samples with the rules' scaling and with the chosen one."""
        if "lava/quantisation.json" not in files:
            return ""
        from snncc_lava import fixed
        return fixed.calibration_line(json.loads(files["lava/quantisation.json"]))

    def placement(self, files: dict[str, bytes]) -> dict | None:
        """lava/mapping.json: `estimate --profile loihi` charges routing per chip and link with it."""
        return json.loads(files["lava/mapping.json"]) if "lava/mapping.json" in files else None

    def emit(self, graph: Graph, options: LoihiOptions | dict | None = None) -> dict[str, bytes]:
        options = self.parse(options)
        m = self.map_onto(graph, options)
        mapped = {"lava/mapping.json": (json.dumps(m.to_json(), indent=1, sort_keys=True) + "\n").encode()}
        synapses = network.materialised_synapses(graph)
        if not _needs_matrices(options) and synapses > DESCRIBE_LIMIT:
            return mapped  # kernels stay in ir.npz; simulate builds the Lava network from the IR
        qnet = None
        if options.precision == "fixed":  # integers stored compactly: kernels, not matrices
            from snncc_lava import fixed
            net = network.build(graph, explicit=False)
            calibration = None
            if options.weight_bits != 8:  # ir.json: every re-quantisation of this graph reads it
                store(graph, fixed.TARGET, fixed.WEIGHT_BITS_KEY, options.weight_bits)
            if options.calibration_data:
                calibration = calibrate(net, options)
                # ir.json: what every re-quantisation reads
                store(graph, fixed.TARGET, fixed.CHOICES_KEY, calibration["choices"])
            qnet = fixed.quantize(net, choices=fixed.stored_choices(graph))
            if calibration is not None:  # the per-neuron bias corrections are stored once, in the deployed graph (ir.npz)
                calibration = {**calibration, "choices": {n: fixed.without_bias(c) for n, c in calibration["choices"].items()}}
            qnet.report["calibration"] = calibration
        else:
            net = network.build(graph)
        files = describe.files(net, options.emit, self.versions(), qnet)
        if options.netx:
            from snncc_lava import netx
            files["lava/network.net"] = netx.export(graph, network.build(graph) if qnet is not None else net)
        files.update(mapped)
        return files

    def versions(self) -> dict[str, str]:
        try:
            return {compat.LAVA_DIST: version(compat.LAVA_DIST)}
        except PackageNotFoundError:
            return {compat.LAVA_DIST: "not installed"}

    def simulate(self, graph: Graph, x, options: LoihiOptions | dict | None = None):
        """Run `graph` on x ((B, *in) or (T, B, *in)); returns a LavaResult (output, counts, steps)."""
        options = self.parse(options)
        _refuse_unbuildable(graph)
        from snncc_lava.lower import simulate
        return simulate(graph, x, options.emit, options.precision)

    def simulate_part(self, graph: Graph, x, populations: list[str] | None = None, chip: int | None = None,
                      files: dict | None = None, options: LoihiOptions | dict | None = None):
        """Run the chosen populations (or those with a piece on `chip` in the artefact `files`'
        lava/mapping.json) in Lava with boundary inputs teacher-forced from the reference; returns a
        part.PartResult (per-population counts against the reference, or in fixed_pt against snncc's
        fixed_pt model of the part)."""
        from snncc_lava import part

        options = self.parse(options)
        names = list(populations or []) + (part.chip_populations(files or {}, chip) if chip is not None else [])
        return part.simulate(graph, x, names, only_members=not populations, emit=options.emit,
                             precision=options.precision)

    def simulation_options(self, options: LoihiOptions) -> dict:
        """The compile options `simulate` reads back from an artefact (precision, emit), as given."""
        return {k: v for k, v in self.parse(options).given().items() if k in ("precision", "emit")}

    def reference_name(self, options: LoihiOptions | dict | None = None) -> str:
        """What `reference` computes, in a few words."""
        if self.parse(options).precision == "fixed":
            return "snncc's fixed_pt integer model (snncc_lava.fixed)"
        return "the exact T x D schedule"

    def approximates(self, options: LoihiOptions | dict | None = None) -> bool:
        """precision=fixed: the integer model differs from the float one by quantisation."""
        return self.parse(options).precision == "fixed"

    def reference(self, graph: Graph, x, options: LoihiOptions | dict | None = None):
        """snncc's own model of what this target computes, without Lava: the fixed-point integer
        reference (precision "fixed", bit-exact with Lava fixed_pt) or the exact T x D schedule
        (precision "float"). Same result fields as `simulate` (output, counts)."""
        options = self.parse(options)
        if options.precision == "fixed":
            from snncc_lava import fixed

            _refuse_unbuildable(graph, kernels=True)  # convolutions run from the kernels' integers
            return fixed.simulate_fixed(fixed.quantize(network.build(graph, explicit=False),
                                                       choices=fixed.stored_choices(graph)), x, options.emit)
        from snncc.sim.sync import simulate as sync_simulate

        return sync_simulate(graph, x, "exact")
