"""The end-to-end demo (README's first command).

1. digits (real-valued 8x8 images): the SFA CNN and the tiny E-SpikeFormer with attention are
   compiled for every installed target, every level is verified against PyTorch on the test
   split, the deployed graph is simulated (exact and streaming T x D schedules, Loihi fixed-point
   reference, Lava itself in floating_pt and fixed_pt on 20 digits) and its energy estimated.
2. events (2-polarity event streams, T = 4): the Speck-sized CNN is compiled for Speck, the real
   sinabs network is run in float and at chip precision, and the event-driven simulator runs the
   `ideal` and `speck` firing policies.
Trained models ship in examples/*/artifacts (retrained when missing).

Run: `bash scripts/demo.sh` (or `.venv/bin/python examples/demo.py [--out demo-out] [--samples N]`).
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from snncc.compiler import compile_model  # noqa: E402
from snncc.errors import SnnccError  # noqa: E402
from snncc.estimate import Estimator  # noqa: E402
from snncc.frontend.loader import LoadedModel  # noqa: E402
from snncc.passes.manager import run_pipeline  # noqa: E402
from snncc.sim import events  # noqa: E402
from snncc.sim.reference import run  # noqa: E402
from snncc.sim.sync import simulate  # noqa: E402
from snncc.sim.tally import SimTally  # noqa: E402
from snncc.targets import available, get  # noqa: E402
from snncc.verify import compare  # noqa: E402


def acc(out: torch.Tensor, y: torch.Tensor) -> float:
    return float((out.reshape(len(y), -1).argmax(1) == y).float().mean())


def same_counts(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k].double(), b[k].double()) for k in b)


class Report:
    def __init__(self):
        self.rows: list[tuple[str, str, str]] = []
        self.failures: list[str] = []

    def add(self, model: str, what: str, value: str, ok: bool = True):
        self.rows.append((model, what, value))
        if not ok:
            self.failures.append(f"{model}: {what} = {value}")
        print(f"  {what:<44} {value}", flush=True)

    def table(self) -> str:
        w0 = max(len(r[0]) for r in self.rows)
        w1 = max(len(r[1]) for r in self.rows)
        return "\n".join(f"{m:<{w0}}  {w:<{w1}}  {v}" for m, w, v in self.rows)


# the best documented configuration per target (docs/speck_agreement.md: the host reads the output
# layer's membrane potentials instead of its spikes, 90.89% agreement with the integer model on chip
# integers under the Speck rule against 70.67% for the default spike readout)
TARGET_OPTIONS = {"speck": {"readout": "membrane"}}


def compile_all(lm: LoadedModel, targets: list[str], out: str, input_kind: str, rep: Report, name: str):
    results = {}
    for tgt in targets:
        try:
            res = compile_model(lm, target=tgt, input_kind=input_kind, target_options=TARGET_OPTIONS.get(tgt))
        except SnnccError as e:  # the whole refusal, shortened at a word
            rep.add(name, f"compile --target {tgt}", "refused: " + textwrap.shorten(e.what, 160, placeholder=" ..."))
            continue
        path = os.path.join(out, f"{name}-{tgt}")
        res.write(path)
        rep.add(name, f"compile --target {tgt}", f"ok -> {os.path.relpath(path, ROOT)}")
        results[tgt] = res
    return results


def digits(args, rep: Report, targets: list[str]):
    from examples.digits.train import load_or_train

    data = load_or_train(log=lambda m: print(f"[digits] {m}", flush=True))
    x = torch.as_tensor(data["x_test"], dtype=torch.float64)
    y = torch.as_tensor(data["y_test"])
    if args.samples:
        x, y = x[: args.samples], y[: args.samples]
    for name, model in data["models"].items():
        print(f"\n== {name}: {len(x)} test digits ==", flush=True)
        lm = LoadedModel(model.eval(), None, tuple(x.shape[1:]), 1, f"{name} (examples/digits)")
        compiled = compile_all(lm, targets, args.out, "current", rep, name)
        res = compiled["sim"]
        traced, deployed = res.traced, res.deployed
        v = compare(lm.eager, {"traced": traced, "folded": run_pipeline(traced, "fold").graph,
                               "deployed": deployed}, x)
        print(v.table())
        rep.add(name, "verify: PyTorch/traced/folded/deployed", "agree" if v.ok else "MISMATCH", v.ok)
        with torch.no_grad():
            rep.add(name, "accuracy: PyTorch integer model", f"{acc(model(x.float()), y):.2%}")
        ref = run(deployed, x)
        rep.add(name, "accuracy: deployed graph (reference)", f"{acc(ref.output, y):.2%}")
        ex = simulate(deployed, x, "exact")
        ok = same_counts(ex.counts, ref.counts)
        rep.add(name, "T x D exact schedule counts == reference", f"{ok} (latency {ex.latency_substeps} sub-steps)", ok)
        tl = SimTally(deployed, ("streaming",))
        tl.observe(x, y)
        st = tl.streaming_report()
        n = st.batch * sum(p.neurons for p in st.populations)
        rep.add(name, "streaming schedule (approximation, not exact)",
                f"accuracy {tl.accuracy('streaming'):.2%}: streaming is an approximation for this network, not "
                f"its result (neurons fire as input arrives, before a window is complete; docs/compiler.md); "
                f"agrees with the integer model on {st.prediction_agreement:.2%} of predictions, "
                f"{st.total_differing / n:.1%} of neuron counts differ; the exact schedule above is the network's")
        if "loihi" in compiled:
            loihi = get("loihi")
            try:
                fx = loihi.reference(deployed, x, {"precision": "fixed"})
                rep.add(name, "accuracy: Loihi fixed-point (8-bit weights)", f"{acc(fx.output, y):.2%}")
            except SnnccError as e:
                rep.add(name, "Loihi fixed-point", "refused: " + textwrap.shorten(e.what, 160, placeholder=" ..."))
            k = min(20, len(x))  # Lava itself: ~0.4 s per digit once the pipeline is full
            t0 = time.perf_counter()
            lv = loihi.simulate(deployed, x[:k])
            ok = same_counts(lv.counts, run(deployed, x[:k]).counts)
            rep.add(name, f"Lava floating_pt counts == reference ({k} digits)",
                    f"{ok}; accuracy {acc(lv.output, y[:k]):.2%} ({time.perf_counter() - t0:.0f} s)", ok)
            lq = loihi.simulate(deployed, x[:k], {"precision": "fixed"})
            fq = loihi.reference(deployed, x[:k], {"precision": "fixed"})
            ok = same_counts(lq.counts, fq.counts)
            rep.add(name, f"Lava fixed_pt counts == snncc fixed-point reference ({k} digits)",
                    f"{ok}; accuracy {acc(lq.output, y[:k]):.2%}", ok)
        for profile in ("45nm", "loihi"):
            est = Estimator(deployed, profile=profile)
            est.observe(x)
            r = est.report()
            rep.add(name, f"energy per sample ({profile})", f"{r.energy['total'] * 1e6:.4f} uJ")


def events_part(args, rep: Report, targets: list[str]):
    from examples.events.train import load_or_train

    d = load_or_train(log=lambda m: print(f"[events] {m}", flush=True))
    x = torch.as_tensor(d["x_test"]).transpose(0, 1).double()  # (T, N, 2, H, W)
    y = torch.as_tensor(d["y_test"])
    if args.samples:
        x, y = x[:, : args.samples], y[: args.samples]
    name = "events_speck_cnn"
    print(f"\n== {name}: {x.shape[1]} test event streams, T = {d['T']} ==", flush=True)
    lm = LoadedModel(d["model"], None, tuple(x.shape[2:]), d["T"], "speck_cnn (examples/events)")
    compiled = compile_all(lm, targets, args.out, "spike", rep, name)
    deployed = compiled["sim"].deployed
    with torch.no_grad():
        rep.add(name, "accuracy: PyTorch integer model (T=4)", f"{acc(d['wrapper'](x.float()), y):.2%}")
    ref = run(deployed, x)
    rep.add(name, "accuracy: deployed graph (reference)", f"{acc(ref.output, y):.2%}")
    ideal = events.simulate(deployed, x, policy="ideal", reference=True)
    ok = ideal.agreement.neuron_agreement == 1.0
    rep.add(name, "event sim, ideal policy == integer model", f"{ideal.agreement.neuron_agreement:.2%} of neurons", ok)
    k = min(16, x.shape[1])  # the per-event policy is sequential per neuron: a subset keeps it short
    sp = events.simulate(deployed, x[:, :k], policy="speck", speck_cap_D=True, reference=True)
    rep.add(name, f"event sim, speck policy ({k} samples)", f"{sp.agreement.neuron_agreement:.2%} of neurons, "
            f"{sp.agreement.prediction_agreement:.2%} of predictions agree with the integer model")
    from examples.events.data import BIN_US
    from examples.events.train import write_test_stream
    from snncc.sim.event_streams import run_recordings

    path = write_test_stream()  # events_test_stream.npz next to the artefacts: tonic-style x, y, t, p
    _, text = run_recordings(deployed, path, T=d["T"], bin_us=BIN_US, policy="speck", samples=k)
    rep.add(name, f"recordings in real time ({k}, speck policy)", text)
    if "speck" in compiled:
        speck = get("speck")
        from snncc_speck.lower import with_readout

        sf = speck.simulate(deployed, x)
        ok = same_counts(sf.counts, run(with_readout(deployed), x).counts)
        rep.add(name, "sinabs network counts == reference", str(ok), ok)
        rep.add(name, "accuracy: sinabs readout, float", f"{acc(sf.output, y):.2%}")
        sq = speck.simulate(deployed, x, {"precision": "chip"})
        rep.add(name, "accuracy: sinabs readout, chip precision", f"{acc(sq.output, y):.2%}")
        res = compiled["speck"]
        g, what = speck.event_graph(res.deployed, res.files, res.manifest["target_options"])
        chip = events.simulate(g, x[:, :k], policy="speck")
        rep.add(name, f"Speck chip path ({k} samples)", f"accuracy {acc(chip.output, y[:k]):.2%}, assuming the host "
                f"reads the output membranes (readout=membrane): {what}")
    est = Estimator(deployed, profile="speck")
    est.observe(x)
    r = est.report()
    rep.add(name, "synaptic ops per sample", f"{r.totals['sops']:.0f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "demo-out"), help="where compiled artefacts go")
    ap.add_argument("--samples", type=int, default=0, help="limit the test splits (0: all)")
    args = ap.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    t0 = time.time()
    targets = sorted(set(available()) | {"sim"}, key=lambda t: (t != "sim", t))
    print(f"snncc demo: targets {', '.join(targets)}")
    rep = Report()
    digits(args, rep, targets)
    events_part(args, rep, targets)
    print("\n== report ==")
    print(rep.table())
    print(f"\ndone in {time.time() - t0:.0f} s; artefacts in {args.out}")
    if rep.failures:
        print("FAILED: " + "; ".join(rep.failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
