"""config: the documented Speck chip configuration (`speck_config.json`) and, when samna is
importable, the samna configuration object built the way sinabs builds it.

The per-core fields follow sinabs 3.1.3 `DynapcnnConfigBuilder.get_dynapcnn_layer_config_dict`
(`backend/dynapcnn/chips/dynapcnn.py`), so the JSON maps one to one onto samna's
`CNNLayerConfig`: `dimensions`, `weights` (samna layout: kernel axes transposed, (c_out, c_in, x, y)),
`biases`, `leak_enable`, `threshold_high`, `threshold_low`, `return_to_zero`,
`neurons_initial_value` (one value for every neuron here; samna wants (f, x, y)) and up to two
`destinations` with their sum `pooling`.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from snncc_speck.lower import Lowered
from snncc_speck.mapping import Placement

FORMAT = "snncc-speck-config/1"

FIELDS = {
    "core": "physical core (0-8) chosen by the layer-to-core matching",
    "layer": "snncc population (fire node) held by the core; 'readout' for the added output layer",
    "dimensions": "input_shape {size {x, y}, feature_count} after source-side pooling, output_shape, "
                  "padding {x, y}, stride {x, y}, kernel_size (square)",
    "weights": "8-bit integers, samna layout (c_out, c_in, kernel x, kernel y) = torch weight.transpose(2, 3)",
    "biases": "16-bit integers per output channel (constant current * scale); zeros when the layer has none",
    "leak_enable": "true when any bias is nonzero (Speck applies biases as a leak on a slow clock)",
    "threshold_high": "spike threshold, 16-bit integer (theta * scale)",
    "threshold_low": "lower bound of the membrane, 16-bit integer (fixed at -2^15; not part of the scale)",
    "return_to_zero": "false: subtractive reset (v -= threshold per spike); true: a binary hard-reset neuron "
                      "(membrane set to 0 where it fired; lowered as v - beta, threshold theta - beta)",
    "neurons_initial_value": "initial membrane of every neuron (beta * scale; half a threshold after round_to_floor)",
    "destinations": "up to 2 target cores, each with its own sum pooling (1, 2 or 4)",
    "sources": "cores (or the input) sending events here; several = a merge: their pooled spike maps add up",
    "scale": "the layer's quantisation scale: chip integer = round(deployed value * scale)",
    "max_spikes_per_step": "ideal-policy cap D per timestep (null: none); Speck emits one spike per input event",
}


def _xy(pair) -> dict:
    return {"x": int(pair[1]), "y": int(pair[0])}


def chip_config(low: Lowered, placement: Placement, quant: dict, T: int, chip_name: str,
                versions: dict) -> dict:
    core_of = placement.cores
    dests: dict[str, list[dict]] = {}
    for lay in low.layers:
        for src, pool in lay.sources:  # a merge layer is a destination of each of its sources
            dests.setdefault(src, []).append({"layer": core_of.get(lay.name), "enable": True,
                                              "pooling": pool, "target": lay.name})
    cores = []
    for lay in low.layers:
        q = quant[lay.name]
        c, h, w = lay.in_shape
        f, ho, wo = lay.out_shape
        bias = q.bias if q.bias is not None else np.zeros(lay.c_out, dtype=np.int64)
        cores.append({
            "core": core_of.get(lay.name),
            "layer": lay.name,
            "source": lay.source,
            "sources": [s for s, _ in lay.sources],
            "dimensions": {
                "input_shape": {"size": {"x": w, "y": h}, "feature_count": c},
                "output_shape": {"size": {"x": wo, "y": ho}, "feature_count": f},
                "padding": _xy(lay.padding), "stride": _xy(lay.stride), "kernel_size": int(lay.kernel[0]),
            },
            "weights": q.weight.transpose(0, 1, 3, 2).tolist(),
            "biases": bias.tolist(),
            "leak_enable": bool(np.any(bias)),
            "threshold_high": q.threshold,
            "threshold_low": q.lower_bound,
            "return_to_zero": lay.reset == "zero",
            "neurons_initial_value": q.initial_membrane,
            "destinations": [{k: v for k, v in d.items()} for d in dests.get(lay.name, [])],
            "scale": q.scale,
            "max_spikes_per_step": lay.D,
            "quantisation": q.report,
        })
    cores.sort(key=lambda d: (d["core"] is None, d["core"] if d["core"] is not None else 0, d["layer"]))
    return {
        "format": FORMAT, "chip": chip_name, "T": int(T), "versions": versions, "fields": FIELDS,
        "input": {"name": low.input_name, "shape": list(low.input_shape),
                  "destinations": dests.get(low.input_name, [])},
        "output": {"layer": low.output_layer, "core": core_of.get(low.output_layer)},
        "cores": cores,
    }


def samna_available() -> bool:
    """True only for a real samna. The `samna` on PyPI is a placeholder whose import runs
    `pip install --force-reinstall samna==<v> --index-url=<gitlab>` (marked `PYPI_SAMNA = True`);
    it is detected from its source, never imported."""
    spec = importlib.util.find_spec("samna")
    if spec is None or not spec.origin:
        return False
    try:
        with open(spec.origin, encoding="utf-8", errors="replace") as f:
            src = f.read()
    except OSError:
        return False
    return "PYPI_SAMNA" not in src and "install_real_samna" not in src


def samna_configuration(config: dict, device: str = "speck2e"):  # pragma: no cover - samna is not installed here
    """Build samna's configuration object from `chip_config(...)`, the way sinabs'
    `DynapcnnConfigBuilder.build_config` fills it. UNTESTED: samna is not on the public index and
    is not installed in this environment; importing it is guarded so the target works without it."""
    from sinabs.backend.dynapcnn.chip_factory import ChipFactory  # imports samna

    builder = ChipFactory(device).get_config_builder()
    cfg = builder.get_default_config()
    cfg.dvs_layer.pass_sensor_events = False
    for core in config["cores"]:
        chip_layer = cfg.cnn_layers[core["core"]]
        chip_layer.dimensions = core["dimensions"]
        for i, d in enumerate(core["destinations"]):
            chip_layer.destinations[i].layer = d["layer"]
            chip_layer.destinations[i].enable = True
            chip_layer.destinations[i].pooling = d["pooling"]
        f = core["dimensions"]["output_shape"]
        init = np.full((f["feature_count"], f["size"]["x"], f["size"]["y"]), core["neurons_initial_value"])
        for param in ("weights", "biases", "leak_enable", "threshold_high", "threshold_low", "return_to_zero"):
            setattr(chip_layer, param, core[param])
        chip_layer.neurons_initial_value = init.astype(int).tolist()
        chip_layer.monitor_enable = core["layer"] == config["output"]["layer"]
    return cfg
