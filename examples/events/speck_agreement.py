"""Where the Speck path departs from the integer model on the events example, one compiler choice
at a time (the ablation table of docs/speck_agreement.md).

Owns :func:`measure`: on the first ``n`` test samples of ``examples/events`` (the shipped model),
the prediction agreement with the integer model (the deployed graph's reference run) of

- the event simulator's firing rules on the deployed graph (ideal = the integer model; greedy;
  speck = one spike per input event, fired on arrival) with the output currents read exactly;
- the chip network the speck target configures (`snncc_speck.calibrate.chip_graph`) under the
  Speck rule, for the target options `readout` (spikes | membrane), `readout_threshold`
  (1 | calibrated) and `thresholds` (deployed | calibrated), chosen by the compiler on
  `calibration_data` (the first 64 training samples, written to a temporary .npz; the test samples
  are not used), in float and with the chip integers (8-bit weights, 16-bit thresholds);
- per-sample: the integer model's top-2 logit margin of the samples that disagree.

Run ``python -m examples.events.speck_agreement [--samples N]``; prints the tables. Not a test.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from examples.digits import train as dtrain
from examples.events import train as etrain
from snncc.frontend.loader import LoadedModel, trace
from snncc.passes.manager import run_pipeline
from snncc.sim.events import simulate
from snncc.sim.reference import run
from snncc.targets import get as get_target, parse_options

CALIBRATION_SAMPLES = 64


def _argmax(o: torch.Tensor) -> torch.Tensor:
    return o.reshape(o.shape[0], -1).argmax(-1)


def calibration_file(path: str, n: int = CALIBRATION_SAMPLES) -> str:
    """The first `n` training samples as (T, N, 2, 32, 32), the layout --data takes."""
    xtr, _, ytr, _ = etrain.load_event_split(4)
    np.savez(path, x=np.ascontiguousarray(xtr[:n].transpose(1, 0, 2, 3, 4)), y=ytr[:n])
    return path


def measure(n: int = 450) -> tuple[list[tuple], dict]:
    torch.set_num_threads(1)
    from snncc_speck.calibrate import chip_graph
    from snncc_speck.chip import load_chip
    from snncc_speck.target import resolve_calibration

    art = etrain.DEFAULT_OUT
    d = np.load(art / "events_test.npz")
    x = torch.from_numpy(d["x_test"][:n]).double().transpose(0, 1)  # (T, N, 2, 32, 32)
    y = torch.from_numpy(d["y_test"][:n])
    model = dtrain.load_model(art, "speck_cnn")
    g = run_pipeline(trace(LoadedModel(model, None, (2, 32, 32), 4), input_kind="spike"), "deploy").graph
    ref = run(g, x)
    rows = [("configuration", "agreement", "accuracy", "seconds")]
    preds = {}

    def add(name, fn):
        t0 = time.perf_counter()
        out = fn()
        preds[name] = _argmax(out)
        rows.append((name, f"{float((preds[name] == _argmax(ref.output)).double().mean()):.2%}",
                     f"{float((preds[name] == y).double().mean()):.2%}", f"{time.perf_counter() - t0:.1f}"))

    add("integer model (reference)", lambda: ref.output)
    add("ideal rule, deployed graph", lambda: simulate(g, x, "ideal").output)
    add("greedy rule, deployed graph, exact output currents", lambda: simulate(g, x, "greedy").output)
    add("speck rule, deployed graph, exact output currents", lambda: simulate(g, x, "speck").output)
    tgt = get_target("speck")
    choices = {}
    with tempfile.TemporaryDirectory() as tmp:
        cal = calibration_file(os.path.join(tmp, "calibration.npz"))
        configs = [
            ("readout=spikes readout_threshold=1 (default)", {}),
            ("readout=spikes readout_threshold=calibrated", {"readout_threshold": "calibrated"}),
            ("readout=spikes readout_threshold=calibrated thresholds=calibrated",
             {"readout_threshold": "calibrated", "thresholds": "calibrated"}),
            ("readout=membrane", {"readout": "membrane"}),
            ("readout=membrane thresholds=calibrated", {"readout": "membrane", "thresholds": "calibrated"}),
        ]
        for name, opts in configs:
            if "calibrated" in opts.values():
                opts = {**opts, "calibration_data": cal}
            opts = parse_options(tgt, opts)
            c = resolve_calibration(g, opts)
            choices[name] = c
            fac = (c or {}).get("threshold_factors")
            ro = opts.readout
            rt = (c or {}).get("readout_threshold") or opts.readout_threshold
            add(f"chip, speck rule, {name}", lambda: simulate(chip_graph(g, fac, ro, rt), x, "speck").output)
            qg = chip_graph(g, fac, ro, rt, load_chip("speck"))
            add(f"chip integers, speck rule, {name}", lambda: simulate(qg, x, "speck").output)
            if ro == "membrane" and not fac:
                add("chip integers, ideal rule, readout=membrane (quantisation alone)", lambda: run(qg, x).output)
    return rows, {"ref": ref, "y": y, "preds": preds, "choices": choices}


def margins(ref_out: torch.Tensor, pred: torch.Tensor) -> list[tuple]:
    """Disagreements by the integer model's top-2 logit margin (output units), in quintiles of the
    margin over all samples."""
    o = ref_out.reshape(ref_out.shape[0], -1)
    top = o.topk(2, dim=-1).values
    m = (top[:, 0] - top[:, 1]).numpy()
    dis = (pred != o.argmax(-1)).numpy()
    rows = [("top-2 margin", "samples", "disagree", "agreement")]
    edges = [0.0] + [float(q) for q in np.quantile(m, [0.2, 0.4, 0.6, 0.8])] + [np.inf]
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (m >= lo) & (m < hi)
        k = int(sel.sum())
        rows.append((f"[{lo:.3g}, {hi:.3g})", str(k), str(int(dis[sel].sum())),
                     f"{1 - dis[sel].mean():.2%}" if k else "-"))
    return rows


def _print(rows):
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=450)
    a = ap.parse_args(argv)
    rows, info = measure(a.samples)
    print(f"# events example, first {a.samples} test samples; agreement = same argmax as the integer model")
    _print(rows)
    for name, c in info["choices"].items():
        if c:
            print(f"\n{name}: factors {c['threshold_factors']}, readout threshold {c['readout_threshold']}, "
                  f"agreement on calibration data {c['agreement_default']:.2%} -> {c['agreement_chosen']:.2%}")
    best = "chip integers, speck rule, readout=membrane thresholds=calibrated"
    print(f"\n# disagreements of '{best}' by the integer model's top-2 margin")
    _print(margins(info["ref"].output, info["preds"][best]))


if __name__ == "__main__":
    main()
