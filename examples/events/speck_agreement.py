"""Where the Speck-faithful event simulation departs from the integer model on the events example.

Owns :func:`measure`: on the first ``n`` test samples of ``examples/events`` (the shipped model),
the prediction agreement with the integer model (the deployed graph's reference run) of the event
simulator under each firing rule and input order, one change at a time:

- ideal (burst at completion): the integer model itself (must be 100%);
- greedy (fire floor(V / theta) after every update, up to D per window): firing during
  integration, early spikes cannot be taken back;
- speck, capped at D per window / uncapped: one spike per input event on top of that;
- speck with the recording's time order (events_test_stream.npz) instead of burst order;
- speck without the lower membrane bound (v_min = -inf) and with the default chip bound;
- a compiler choice against the early spikes: every population's threshold scaled so that its
  spike count under the speck rule matches the integer model's on calibration data (64 training
  samples, bisection layer by layer; the test samples are not used);
- the Speck readout (`snncc_speck.lower.with_readout`: an IF population on the output currents
  whose spike counts the chip reports), at the backend's threshold 1 and at the threshold that
  agrees best on 512 training samples (reference runs; needs the Speck backend, rows left out
  without it).

Run ``python -m examples.events.speck_agreement [--samples N]``; prints one table. Not a test.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from examples.digits import train as dtrain
from examples.events import train as etrain
from examples.events.data import BIN_US
from snncc.frontend.loader import LoadedModel, trace
from snncc.passes.manager import run_pipeline
from snncc.sim.event_streams import read_events
from snncc.sim.events import build_network, simulate
from snncc.sim.events.runner import _simulate
from snncc.sim.reference import run


def _agree(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.reshape(a.shape[0], -1).argmax(-1) == b.reshape(b.shape[0], -1).argmax(-1)).double().mean())


def measure(n: int = 64) -> list[tuple[str, str, str, str]]:
    torch.set_num_threads(1)
    art = etrain.DEFAULT_OUT
    d = np.load(art / "events_test.npz")
    x = torch.from_numpy(d["x_test"][:n]).double().transpose(0, 1)  # (T, N, 2, 32, 32)
    y = torch.from_numpy(d["y_test"][:n])
    model = dtrain.load_model(art, "speck_cnn")
    g = run_pipeline(trace(LoadedModel(model, None, (2, 32, 32), 4), input_kind="spike"), "deploy").graph
    net = build_network(g)
    ref = run(g, x)
    acc = lambda o: float((o.reshape(o.shape[0], -1).argmax(-1) == y).double().mean())  # noqa: E731
    rows = [("configuration", "agreement with integer model", "accuracy", "seconds")]
    rows.append(("integer model (reference)", "100.00%", f"{acc(ref.output):.2%}", "-"))

    def add(name, fn):
        t0 = time.perf_counter()
        out = fn()
        rows.append((name, f"{_agree(out, ref.output):.2%}", f"{acc(out):.2%}", f"{time.perf_counter() - t0:.1f}"))

    add("ideal (burst at completion)", lambda: simulate(net, x, "ideal").output)
    add("greedy, layer order", lambda: simulate(net, x, "greedy").output)
    add("speck, capped at D per window", lambda: simulate(net, x, "speck", speck_cap_D=True).output)
    add("speck, uncapped (the chip)", lambda: simulate(net, x, "speck").output)
    add("speck, uncapped, v_min = -inf", lambda: simulate(net, x, "speck", v_min=-np.inf).output)
    streams, _ = read_events(art / "events_test_stream.npz", (32, 32))

    def time_ordered(cap: bool):
        outs = []
        for i, s in enumerate(streams[:n]):
            k = np.floor(s.t / BIN_US).astype(np.int64)
            order = [s.addresses()[k == t] for t in range(x.shape[0])]
            r, _ = _simulate(net, x[:, i:i + 1], "speck", "layer", speck_cap_D=cap, input_order=order)
            outs.append(r.output)
        return torch.cat(outs)

    add("speck, uncapped, recording's time order", lambda: time_ordered(False))
    add("speck, capped, recording's time order", lambda: time_ordered(True))
    scale = calibrate_thresholds(g, n_calib=64)
    cal = build_network(_scaled(g, scale))
    add("speck, uncapped, count-matched thresholds " + ", ".join(f"{k} x{v:.3f}" for k, v in scale.items()),
        lambda: simulate(cal, x, "speck").output)
    try:
        from snncc_speck.lower import with_readout
    except ImportError:
        return rows
    for th in (1.0, calibrate_readout(g, with_readout)):
        add(f"integer model + Speck readout, threshold {th:g}", lambda th=th: run(with_readout(g, th), x).output)
    return rows


READOUT_THRESHOLDS = (1.0, 0.5, 0.25, 0.1, 0.05)


def calibrate_readout(g, with_readout, n_calib: int = 512) -> float:
    """The readout threshold (of READOUT_THRESHOLDS) whose argmax agrees best with the integer
    model on the first `n_calib` training samples (the largest on a tie)."""
    xtr, _, _, _ = etrain.load_event_split(4)
    xc = torch.from_numpy(xtr[:n_calib]).double().transpose(0, 1)
    ref = run(g, xc).output
    best = max(READOUT_THRESHOLDS, key=lambda th: (_agree(run(with_readout(g, th), xc).output, ref), th))
    return best


def _scaled(g, scale: dict):
    g2 = copy.deepcopy(g)
    for nd in g2.neurons():
        nd.attrs["theta"] = nd.attrs["theta"] * scale[nd.name]
    return g2


def calibrate_thresholds(g, n_calib: int = 64, steps: int = 6, hi: float = 1.6) -> dict[str, float]:
    """Per population in graph order, the threshold factor in [1, hi] (bisection) at which its
    total spike count under the speck rule equals the integer model's on the first `n_calib`
    training samples, earlier populations already scaled."""
    xtr, _, _, _ = etrain.load_event_split(4)
    xc = torch.from_numpy(xtr[:n_calib]).double().transpose(0, 1)
    ref = run(g, xc)
    scale = {nd.name: 1.0 for nd in g.neurons()}
    for p in scale:
        lo, up = 1.0, hi
        for _ in range(steps):
            mid = (lo + up) / 2
            r = simulate(build_network(_scaled(g, {**scale, p: mid})), xc, "speck")
            lo, up = (mid, up) if r.counts[p].sum() > ref.counts[p].sum() else (lo, mid)
        scale[p] = (lo + up) / 2
    return scale


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=64)
    a = ap.parse_args(argv)
    rows = measure(a.samples)
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(f"# events example, first {a.samples} test samples")
    for r in rows:
        print("  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)))


if __name__ == "__main__":
    main()
