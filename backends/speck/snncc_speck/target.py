"""target: `SpeckTarget`, the snncc plugin object (entry point `snncc.targets: speck`).

`check` lists every Speck rule a deployed graph breaks (structure, per-layer limits, routing,
memory placement, quantisation); `explain` prints the full compatibility report with the memory
and placement tables; `emit` writes `speck_config.json` (documented per-core chip configuration)
and `sinabs_model.json` + `sinabs_model.npz` (the quantised sinabs network, rebuilt with
`snncc_speck.sinabs_net.loads`). Options (`target_options`): `readout_threshold` (float, 1.0:
threshold of the readout layer added for a current-valued output, in the output's units, or
'calibrated'), `readout` ('spikes' | 'membrane'), `thresholds` ('deployed' | 'calibrated'),
`calibration_data` / `calibration_samples` (the data the calibrated choices are made on;
`snncc_speck.calibrate`; the choices and their agreement are recorded in `speck_config.json`),
`scale_policy` ('max' | 'pow2'), `chip` (data file name, 'speck'), `samna` (bool: also write
`samna_config.txt` through sinabs when a real samna is importable; untested here).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from snncc.errors import TargetError
from snncc.ir.graph import Graph
from snncc.targets import Options, Target, calibration_inputs, check_calibration_samples, option

from snncc_speck import config as chip_config_mod
from snncc_speck import sinabs_net
from snncc_speck.calibrate import READOUTS, THRESHOLDS, calibrate, chip_graph, scale_thresholds, seeded_agreement
from snncc_speck.chip import Chip, load_chip
from snncc_speck.lower import Lowered, SpeckLayer, lower, with_readout
from snncc_speck.mapping import Placement, core_table, destination_problems, memory_problems, memory_table, place
from snncc_speck.quantize import LayerQuant, quantization_problems, quantization_table, quantize


@dataclass(frozen=True)
class SpeckOptions(Options):
    readout_threshold: float | str = option(1.0, "float > 0 | calibrated: threshold of the spike readout layer "
                                                 "(default 1.0)")
    readout: str = option("spikes", "spikes | membrane: the host reads the readout layer's spike counts or its "
                                    "final membranes")
    thresholds: str = option("deployed", "deployed | calibrated: hidden thresholds scaled to match spike counts "
                                         "under the one-spike-per-event rule on calibration data")
    calibration_data: str | None = option(None, "an .npz/.npy data set (as --data) for the calibrated choices")
    calibration_samples: int = option(64, "integer >= 1, samples of calibration_data used (default 64)")
    scale_policy: str = option("max", "max | pow2")
    chip: str = option("speck", "chip data file name (default speck)")
    samna: bool = option(False, "true | false: also write samna_config.txt (needs a real samna)")


OPTIONS = SpeckOptions.meanings()


@dataclass
class SpeckResult:
    output: torch.Tensor  # (B, *out) readout spike counts averaged over T
    counts: dict  # layer name -> (B, *shape) spike counts summed over T
    # what `output` holds when it is not the graph's own output (a current): `simulate` compares argmax
    output_kind: str = "the readout layer's spike counts / T"


@dataclass
class Analysis:
    chip: Chip
    lowered: Lowered
    placement: Placement
    quant: dict[str, LayerQuant]
    problems: list[str]


def layer_problems(lay: SpeckLayer, chip: Chip) -> list[str]:
    L = chip.limits
    out = []
    kh, kw = lay.kernel
    w = f"layer {lay.name}"
    if kh != kw:
        out.append(f"{w}: kernel {kh}x{kw} is not square")
    if max(kh, kw) > L["max_kernel"]:
        out.append(f"{w}: kernel {kh}x{kw} > {L['max_kernel']}x{L['max_kernel']}")
    if any(s not in L["strides"] for s in lay.stride):
        out.append(f"{w}: stride {lay.stride[0]}x{lay.stride[1]} not in {'/'.join(map(str, L['strides']))}")
    if max(lay.padding) > L["max_padding"]:
        out.append(f"{w}: padding {lay.padding[0]}x{lay.padding[1]} > {L['max_padding']}")
    for what, c in (("input", lay.c_in), ("output", lay.c_out)):
        if c > L["max_channels"]:
            out.append(f"{w}: {c} {what} channels > {L['max_channels']}")
    mh, mw = L["max_output_map"]
    if lay.out_shape[1] > mh or lay.out_shape[2] > mw:
        out.append(f"{w}: output map {lay.out_shape[1]}x{lay.out_shape[2]} > {mh}x{mw}")
    for src, pool in lay.sources:
        if pool not in L["pooling"]:
            out.append(f"{w}: sum pooling {pool} on the way from {src} not in "
                       f"{'/'.join(map(str, L['pooling']))}")
    return out


def analyse(graph: Graph, options: SpeckOptions | None = None, calibration: dict | None = None) -> Analysis:
    """Lower, map and quantise; `calibration` (from `resolve_calibration`) gives the threshold
    factors and the readout threshold chosen on calibration data."""
    options = options or SpeckOptions()
    chip = load_chip(str(options.chip))
    L = chip.limits
    rt = options.readout_threshold
    if calibration and calibration.get("readout_threshold") is not None:
        rt = calibration["readout_threshold"]
    low = lower(graph, float(rt) if rt != "calibrated" else 1.0)
    scale_thresholds(low, (calibration or {}).get("threshold_factors"))
    problems = list(low.problems)
    inp = graph.inputs[0]
    mh, mw = L["max_input"]
    if len(low.input_shape) == 3 and (low.input_shape[1] > mh or low.input_shape[2] > mw):
        problems.append(f"input {inp.name}: {low.input_shape[1]}x{low.input_shape[2]} > {mh}x{mw}")
    if len(low.layers) > L["max_layers"]:
        problems.append(f"model has {len(low.layers)} conv layers ({', '.join(l.name for l in low.layers)}) "
                        f"> {L['max_layers']} cores")
    for lay in low.layers:
        problems += layer_problems(lay, chip)
    problems += destination_problems(low.layers, low.input_name, L["max_destinations"])
    placement = place(low.layers, chip)
    mem = memory_problems(low.layers, placement, chip)
    if len(low.layers) > L["max_layers"]:  # the layer count already says it; keep per-layer misfits only
        mem = [m for m in mem if not m.startswith("placement:")]
    problems += mem
    quant = quantize(low.layers, chip, options.scale_policy)
    if options.readout == "membrane":  # the output layer never fires; the host reads it
        for lay in low.layers:
            if lay.readout:
                quant[lay.name].threshold = chip.state_range[1]
    problems += quantization_problems(quant)
    return Analysis(chip, low, placement, quant, problems)


def resolve_calibration(graph: Graph, options: SpeckOptions) -> dict | None:
    """The calibrated choices (`snncc_speck.calibrate.calibrate` on `calibration_data`), or None
    when no option asks for one."""
    if "calibrated" not in (options.thresholds, options.readout_threshold):
        return None
    x, name = calibration_inputs(graph, options)
    out = calibrate(graph, x, options.thresholds, options.readout, options.readout_threshold,
                    chip=load_chip(str(options.chip)), scale_policy=options.scale_policy)  # for the integers it emits
    out["data"] = name
    return out


def _fmt_shape(s) -> str:
    return "x".join(map(str, s))


def layer_table(low: Lowered) -> str:
    from snncc_speck.mapping import _table

    rows = [("layer", "source", "pool", "input", "kernel", "stride", "pad", "output", "theta", "beta", "D", "bias",
             "absorbs")]
    for l in low.layers:
        rows.append((l.name + (" (readout)" if l.readout else ""), "+".join(s for s, _ in l.sources),
                     "+".join(str(p) for _, p in l.sources), _fmt_shape(l.in_shape),
                     _fmt_shape(l.kernel), _fmt_shape(l.stride), _fmt_shape(l.padding), _fmt_shape(l.out_shape),
                     f"{l.theta:.6g}", f"{l.beta:.6g}", "-" if l.D is None else str(l.D),
                     "yes" if l.bias is not None else "no", ",".join(l.nodes)))
    return _table(rows)


class SpeckTarget(Target):
    name = "speck"
    profile = "speck"  # binary events only (graded_messages 0): residual_lowering keeps fan-in
    description = "SynSense Speck through sinabs 3.1.3 (9 conv cores, 8-bit weights, 16-bit membranes)"
    Options = SpeckOptions
    libraries = ("sinabs", "samna")

    def validate(self, options: SpeckOptions) -> None:
        given = options.given()
        t = options.readout_threshold
        if t != "calibrated" and (isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < float("inf")):
            raise TargetError(f"readout_threshold must be a number > 0 or calibrated, got {t!r}",
                              where="speck option readout_threshold")
        for key, allowed in (("readout", READOUTS), ("thresholds", THRESHOLDS)):
            if getattr(options, key) not in allowed:
                raise TargetError(f"unknown {key} {getattr(options, key)!r}", where=f"speck option {key}",
                                  hint=f"one of {', '.join(allowed)}")
        check_calibration_samples(options, self.name)
        if options.readout == "membrane" and t == "calibrated":
            raise TargetError("readout_threshold=calibrated needs readout=spikes (a membrane readout never fires)",
                              where="speck option readout_threshold")
        wants = [k for k in ("thresholds", "readout_threshold") if getattr(options, k) == "calibrated"]
        if wants and not options.calibration_data:
            raise TargetError(f"{'/'.join(wants)}=calibrated needs calibration data",
                              where=f"speck option {wants[0]}",
                              hint="add --target-option calibration_data=FILE.npz (inputs as for --data)")
        if "calibration_data" in given and not wants:
            raise TargetError("calibration_data is given but nothing is calibrated", where="speck option calibration_data",
                              hint="add thresholds=calibrated and/or readout_threshold=calibrated")
        if options.scale_policy not in ("max", "pow2"):
            raise TargetError(f"unknown scale_policy {options.scale_policy!r}", where="speck option scale_policy",
                              hint="one of max, pow2")
        if not isinstance(options.samna, bool):
            raise TargetError(f"samna must be true or false, got {options.samna!r}", where="speck option samna")
        if "chip" in given:
            load_chip(str(options.chip))

    def check(self, graph: Graph, options: SpeckOptions | dict | None = None) -> list[str]:
        """The rules of the default configuration (options that change the integers, calibration
        included, are checked by `emit`, which refuses with the memory tables)."""
        return analyse(graph).problems

    def explain(self, graph: Graph, options: SpeckOptions | dict | None = None) -> str:
        a = analyse(graph, self.parse(options))
        low = a.lowered
        lines = [f"# Speck compatibility report (chip '{a.chip.name}', sinabs {self.versions()['sinabs']})", ""]
        if a.problems:
            lines.append(f"does NOT fit: {len(a.problems)} problem(s)")
            lines += [f"  - {p}" for p in a.problems]
        else:
            lines.append(f"fits: {len(low.layers)} layer(s) on {len(a.placement.cores)} of "
                         f"{len(a.chip.cores)} cores")
        lines += ["", f"input {low.input_name}: {_fmt_shape(low.input_shape)} events ({graph.inputs[0].kind}); "
                      f"output from layer {low.output_layer}; T={graph.T}", ""]
        if low.layers:
            lines += ["## layers (one core each)", layer_table(low), "",
                      "## memory per layer (entries)",
                      f"kernel = {a.chip.memory_formulas['kernel']}; neuron = {a.chip.memory_formulas['neuron']}; "
                      f"bias = {a.chip.memory_formulas['bias']}",
                      memory_table(low.layers, a.placement), "",
                      "## placement" if a.placement.fits else "## memory per core (placement failed)",
                      core_table(low.layers, a.placement, a.chip), "",
                      "## quantisation (8-bit weights, 16-bit threshold/membrane, one scale per layer)",
                      quantization_table(a.quant), ""]
        biased = [l.name for l in low.layers if l.bias is not None]
        if biased:
            lines.append(f"constant currents on {', '.join(biased)}: the sinabs network adds them every timestep; "
                         f"Speck applies biases as a leak on its own slow clock (leak_enable), so on-chip "
                         f"timing differs and biases cost power.")
        lines.append("neuron policy: the sinabs network fires floor(v/theta) spikes per step (at most D) with "
                     "subtractive reset, the deployed graph's integer model; Speck hardware emits one spike per "
                     "input event, so on-chip counts can be lower (docs/design.md §3).")
        return "\n".join(lines) + "\n"

    def emit(self, graph: Graph, options: SpeckOptions | dict | None = None) -> dict[str, bytes]:
        options = self.parse(options)
        calibration = resolve_calibration(graph, options)
        a = analyse(graph, options, calibration)
        if a.problems:
            raise TargetError(
                f"model does not fit Speck ({len(a.problems)} problem(s)):\n"
                + "\n".join(f"  - {p}" for p in a.problems)
                + "\nmemory per core:\n" + core_table(a.lowered.layers, a.placement, a.chip)
                + "\nmemory per layer:\n" + memory_table(a.lowered.layers, a.placement),
                where="target speck", hint="see `snncc compile --target speck --explain`")
        import json

        cfg = chip_config_mod.chip_config(a.lowered, a.placement, a.quant, graph.T, a.chip.name, self.versions())
        cfg["readout"] = options.readout
        cfg["calibration"] = calibration  # None: nothing chosen on data
        if calibration is None:  # the chip path's agreement measured on seeded events instead (summary_note)
            rt = options.readout_threshold
            cfg["seeded_agreement"] = seeded_agreement(graph, float(rt) if isinstance(rt, (int, float)) else 1.0,
                                                       chip=a.chip, scale_policy=options.scale_policy)
        spec, arrays = sinabs_net.network_spec(a.lowered, graph.T, a.quant)
        doc, npz = sinabs_net.dumps(spec, arrays)
        files = {"speck_config.json": json.dumps(cfg, indent=1, sort_keys=True).encode(),
                 "sinabs_model.json": doc, "sinabs_model.npz": npz}
        if options.samna and chip_config_mod.samna_available():  # pragma: no cover - no real samna here
            files["samna_config.txt"] = str(chip_config_mod.samna_configuration(cfg)).encode()
        return files

    def report_section(self, files: dict[str, bytes]) -> str:
        """The Speck-path choices for the compile report: readout, threshold factors and their
        agreement with the integer model on the calibration data (empty without calibration)."""
        import json

        cfg = json.loads(files["speck_config.json"])
        c = cfg.get("calibration")
        if not c:
            return ""
        fac = ", ".join(f"{k} x{v:.4g}" for k, v in (c["threshold_factors"] or {}).items()) or "none"
        rt = "" if c["readout_threshold"] is None else f", readout threshold {c['readout_threshold']:g}"
        return (f"## Speck path choices (calibrated on {c['samples']} samples of {c['data']}, {c['on']})\n\n"
                f"readout {cfg['readout']}{rt}; threshold factors: {fac}; prediction agreement with the "
                f"integer model under the Speck rule (one spike per input event): default "
                f"{c['agreement_default']:.2%} -> chosen {c['agreement_chosen']:.2%}. The integer model "
                f"(ir.json) is unchanged and stays the reference.\n")

    def summary_note(self, files: dict[str, bytes]) -> str:
        """The compile's line on the chip path: the prediction agreement with the integer model it
        measured, on the calibration data when given, else on seeded random events (both readouts,
        `calibrate.seeded_agreement`), and the option that improves it (docs/speck_agreement.md)."""
        import json

        cfg = json.loads(files["speck_config.json"])
        c = cfg.get("calibration")
        readout = cfg.get("readout", "spikes")
        other = "membrane" if readout == "spikes" else "spikes"
        if c:
            better = (" (--target-option readout=membrane improves it: 70.67% -> 90.89% on the events example, "
                      "docs/speck_agreement.md)" if readout == "spikes" else "")
            return (f"Speck chip path: prediction agreement with the integer model under the Speck rule on "
                    f"{c['samples']} samples of {c['data']}: default {c['agreement_default']:.2%} -> this "
                    f"configuration {c['agreement_chosen']:.2%}{better}")
        s = cfg.get("seeded_agreement") or {}
        head = (f"Speck chip path: prediction agreement with the integer model under the Speck rule, measured on "
                f"{s.get('samples')} seeded random event inputs (rate {s.get('rate')}; no data given)")
        if "error" in s or readout not in s:
            return f"{head}: not measured ({s.get('error', 'no measurement recorded')})"
        hint = (f"; --target-option readout={other} improves it" if s[other] > s[readout] else "")
        return (f"{head}: this configuration (readout={readout}) {s[readout]:.2%}, readout={other} "
                f"{s[other]:.2%}{hint}; on your data: --target-option thresholds=calibrated --target-option "
                f"calibration_data=FILE (events example: membrane 90.89%, spikes 70.67%, docs/speck_agreement.md)")

    def event_graph(self, graph: Graph, files: dict[str, bytes],
                    options: SpeckOptions | dict | None = None) -> tuple[Graph, str]:
        """What the chip runs on events, as an snncc graph: the lowered cores with the emitted chip
        integers (8-bit weights, 16-bit thresholds), the calibrated threshold factors and readout
        recorded in speck_config.json (`snncc_speck.calibrate.chip_graph`), and a one-line account."""
        import json

        options = self.parse(options)
        cfg = json.loads(files["speck_config.json"])
        c = cfg.get("calibration") or {}
        readout = cfg.get("readout", "spikes")
        rt = c.get("readout_threshold") if c else options.readout_threshold
        rt = 1.0 if rt is None or readout == "membrane" else float(rt)
        factors = c.get("threshold_factors") or None
        policy = options.scale_policy
        g = chip_graph(graph, factors, readout, rt, chip=load_chip(str(options.chip)),
                       scale_policy=policy)
        fac = f"{len(factors)} calibrated threshold factor(s)" if factors else "deployed thresholds"
        ro = "membrane readout" if readout == "membrane" else f"spike readout (threshold {rt:g})"
        return g, f"the Speck chip network ({cfg.get('chip', 'speck')} integers, scale_policy {policy}, {fac}, {ro})"

    def memory_table(self, graph: Graph) -> str:
        """Kernel/neuron/bias memory per core and per layer (for the compile report)."""
        a = analyse(graph)
        return ("memory per core:\n" + core_table(a.lowered.layers, a.placement, a.chip)
                + "\nmemory per layer:\n" + memory_table(a.lowered.layers, a.placement))

    def simulate(self, graph: Graph, x, options: SpeckOptions | dict | None = None):
        """Run the lowered sinabs network on spike input x ((T, B, ...) or (B, ...) repeated T
        times). The simulator's own option "precision" (a dict key beside the target options):
        "float" (deployed values) or "chip" (8-bit weights, 16-bit thresholds, integer membranes).
        Returns SpeckResult(output, counts) with the reference executor's conventions: counts
        summed over T per population; output = the readout layer's spikes (counts) averaged over T."""
        options = dict(options.given() if isinstance(options, Options) else options or {})
        precision = options.pop("precision", "float")
        if precision not in ("float", "chip"):
            raise TargetError(f"precision must be 'float' or 'chip', got {precision!r}", where="speck.simulate")
        a = analyse(graph, self.parse(options))
        if a.problems:
            raise TargetError(f"model does not fit Speck: {'; '.join(a.problems)}", where="target speck")
        dtype = torch.float64 if precision == "float" else torch.float32
        spec, arrays = sinabs_net.network_spec(a.lowered, graph.T, a.quant if precision == "chip" else None)
        net = sinabs_net.SpeckNetwork(spec, arrays, dtype=dtype)
        x = torch.as_tensor(x, dtype=dtype)
        if x.dim() == len(graph.inputs[0].shape) + 1:
            x = x.unsqueeze(0).expand((graph.T,) + tuple(x.shape))
        with torch.no_grad():
            counts = net.counts(sinabs_net.to_batch_major(x))
        ir = with_readout(graph)  # the IR populations, readout included, give the shapes
        counts = {k: (v.reshape((v.shape[0],) + ir[k].shape) if k in ir else v).to(torch.float64)
                  for k, v in counts.items()}
        out_name = spec["output"] or spec["layers"][-1]["name"]
        return SpeckResult(counts[out_name] / graph.T, counts)

    def versions(self) -> dict:
        from importlib.metadata import PackageNotFoundError, version

        out = {}
        for pkg in ("sinabs", "networkx", "samna"):
            try:
                out[pkg] = version(pkg)
            except PackageNotFoundError:
                out[pkg] = "not installed"
        return out
