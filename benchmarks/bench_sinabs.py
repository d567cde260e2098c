"""snncc's event-driven simulation against sinabs' time-stepped simulation of the same Speck
network. Not a test.

    .venv/bin/python benchmarks/bench_sinabs.py [--repeats 5] [--batch 16] [--T 4] [--nets tiny,small,sinabs64]

`sinabs64` is a network built the way sinabs users build one, not one of ours: 2x64x64 events,
three Conv(3x3)-IAFSqueeze(MultiSpike, MembraneSubtract)-SumPool(2) blocks with 16, 32, 32
channels and a Linear(2048, 11)-IAFSqueeze head, num_timesteps T = 8, batch 16, seeded weights
that are multiples of 1/256 (every sum exact in sinabs' float32). sinabs runs its own forward on
the (B*T, 2, 64, 64) batch; snncc compiles the module (`snncc.compile`, T from `num_timesteps`)
and runs `dep.simulate(xs, schedule="event", layout="B*T", policy=...)` on the same batch (the
event network built by the first call and kept on the deployment). Spike counts of every layer
are checked equal to sinabs' neuron by neuron before timing; everything on 1 thread (torch and
numba), then the ideal (rate 0.05) and speck (rate 0.02) policies on 2 numba threads against 1 on
the batch, each with the CPU time spent outside the compiled kernels (`serial_cpu`: the part the
batch split's threads cannot overlap). The CPU columns are the
same calls' CPU time (what the work costs on a shared, loaded machine). Then the SynOps per CPU
second of each layer's deliveries (`per_layer`). The same comparison and per-layer rates on
DVS-like input (`dvs_like`: synthetic moving edges, events clustered in space and time, where
the rates table's Poisson input has events with no neighbours). Targets (issue 29): the ideal policy faster than
sinabs at input rates <= 0.05, the speck policy at <= 0.02, >= 2e9 SynOps/s per core on the conv
layers, >= 1.7x from 2 threads.

The network: `snncc.models.speck_cnn` (spike input, random seeded weights) deployed and lowered by
the Speck backend; sinabs runs the real `SpeckNetwork` (nn.Conv2d + IAFSqueeze with MaxSpike(D)
and MembraneSubtract: the deployed graph's integer model, docs/design.md §3's `ideal` policy, one sinabs
step per timestep), snncc runs `snncc.sim.events.simulate(..., policy='ideal')` over the composed
address tables, built once like the sinabs module. Both in float64 on the same Poisson spike
input (one row per input rate); the spike counts of every population are checked equal before timing. Columns: median
seconds per batch, samples per second, SynOps (event simulation's count), the ratios, and the event
simulator under the chip's own `speck` policy (one spike per input event). Targets: the
event simulation faster than sinabs at input rate 0.02, and the crossover rate (where events stop
beating sinabs: the ratio's log-log interpolation through 1 between the two rates around it).
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import torch

from snncc.frontend.loader import LoadedModel, trace
from snncc.passes.manager import run_pipeline
from snncc.sim.events import build_network, simulate

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import median_times, print_table  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--T", type=int, default=4, help="timesteps per sample")
    ap.add_argument("--nets", default="tiny,small,sinabs64",
                    help="speck_cnn sizes (tiny: 2x16x16, small: 2x32x32) and/or sinabs64 (comma-separated)")
    ap.add_argument("--rates", default="0.005,0.01,0.02,0.05,0.1,0.2",
                    help="mean spike counts per input site and timestep (comma-separated): event-driven work "
                         "scales with activity, time-stepped work does not")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    import numba

    numba.set_num_threads(1)
    nets = [n for n in a.nets.split(",") if n]
    from snncc.models.speck import speck_cnn
    from snncc_speck import sinabs_net
    from snncc_speck.target import analyse

    rows = [("model", "rate", "T", "batch", "sinabs s", "events ideal s", "events speck s", "sinabs img/s",
             "events img/s", "SynOps/batch", "ideal/sinabs speed", "speck/sinabs speed", "counts", "faster at 0.02")]
    ratios: dict[str, list[tuple[float, float, float]]] = {}
    cases = [(size, shape, float(r)) for size, shape in (("tiny", (2, 16, 16)), ("small", (2, 32, 32)))
             if size in nets for r in a.rates.split(",")]
    for size, shape, rate in cases:
        torch.manual_seed(0)
        g = run_pipeline(trace(LoadedModel(speck_cnn(size).eval(), None, shape), input_kind="spike"), "deploy").graph
        g.T = a.T
        an = analyse(g)
        if an.problems:
            print(f"speck_cnn-{size} does not fit Speck: {an.problems}")
            return 1
        spec, arrays = sinabs_net.network_spec(an.lowered, g.T, None)
        snet = sinabs_net.SpeckNetwork(spec, arrays, dtype=torch.float64)
        enet = build_network(g)
        gen = torch.Generator().manual_seed(1)
        x = torch.poisson(torch.full((a.T, a.batch) + shape, rate), generator=gen).clamp(max=g.neurons()[0].attrs["D"])
        x = x.double()
        xs = sinabs_net.to_batch_major(x)
        sc = snet.counts(xs)
        ev = simulate(enet, x, "ideal", "layer")
        same = all(torch.equal(sc[k].reshape(ev.counts[k].shape).double(), ev.counts[k].double())
                   for k in ev.counts if k in sc)
        common = sum(1 for k in ev.counts if k in sc)
        t_s, t_e, t_k = median_times([lambda: snet.counts(xs), lambda: simulate(enet, x, "ideal", "layer"),
                                      lambda: simulate(enet, x, "speck", "layer")], a.repeats)
        ratios.setdefault(f"speck_cnn-{size}", []).append((rate, t_s / t_e, t_s / t_k))
        target = ("met" if t_s / t_e > 1 else "MISSED") if abs(rate - 0.02) < 1e-12 else "-"
        rows.append((f"speck_cnn-{size}", f"{rate:g}", str(a.T), str(a.batch), f"{t_s:.4f}", f"{t_e:.4f}", f"{t_k:.4f}",
                     f"{a.batch / t_s:,.0f}", f"{a.batch / t_e:,.0f}", f"{ev.synops:,}", f"{t_s / t_e:.2f}x",
                     f"{t_s / t_k:.2f}x", f"{'equal' if same else 'DIFFER'} ({common} populations)", target))
    if cases:
        print_table(f"sinabs time-stepped vs snncc event-driven simulation, float64, 1 thread, median of "
                    f"{a.repeats} (round-robin)", rows)
    for model, rs in ratios.items():
        print(f"{model}: crossover input rate (events stop beating sinabs): ideal {crossover(rs, 1)}, "
              f"speck {crossover(rs, 2)}")
    if "sinabs64" in nets:
        return bench_sinabs64(a)
    return 0


T64 = 8


def sinabs64(seed: int = 0):
    """The sinabs-built 2x64x64 network of the module docstring (eval mode, seeded weights)."""
    import torch.nn as nn
    import sinabs.activation as sa
    import sinabs.layers as sl

    torch.manual_seed(seed)
    layers, cin = [], 2
    for c in (16, 32, 32):
        layers += [nn.Conv2d(cin, c, 3, padding=1, bias=False),
                   sl.IAFSqueeze(num_timesteps=T64, spike_fn=sa.MultiSpike, reset_fn=sa.MembraneSubtract()),
                   sl.SumPool2d(2)]
        cin = c
    layers += [nn.Flatten(), nn.Linear(2048, 11, bias=False),
               sl.IAFSqueeze(num_timesteps=T64, spike_fn=sa.MultiSpike, reset_fn=sa.MembraneSubtract())]
    m = nn.Sequential(*layers)
    with torch.no_grad():
        for mod in m:
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                w = mod.weight
                fan = w[0].numel() * (1 if w.shape[1] == 2 else 4)  # after a 2x2 sum pool: 4x the input
                w.copy_(torch.round((torch.randn_like(w) + 0.1) * 1.5 / fan ** 0.5 * 256) / 256)
    return m.eval()


def sinabs_counts(m, xs: torch.Tensor) -> list[torch.Tensor]:
    """sinabs' own forward on (B*T, ...) from reset states: spikes of every IAFSqueeze layer,
    summed over T, (B, ...)."""
    import sinabs.layers as sl

    out = []
    hooks = [mod.register_forward_hook(lambda _m, _i, o: out.append(o.detach())) for mod in m
             if isinstance(mod, sl.IAFSqueeze)]
    sinabs_forward(m, xs)
    for h in hooks:
        h.remove()
    return [o.reshape((-1, T64) + tuple(o.shape[1:])).sum(1).double() for o in out]


def dvs_like(batch: int, T: int, shape: tuple, objects: int, gen: torch.Generator, sub: int = 4,
             noise: float = 0.002) -> torch.Tensor:
    """A synthetic DVS-like batch, (batch x T, 2, H, W) counts in sinabs' sample-major layout: per
    sample `objects` discs (radius 3-9 px) moving in straight lines (0.5-2 px per sub-step, wrapping
    around the sensor), rendered at `sub` sub-steps per time bin; a pixel the disc edge enters
    gets an ON event (channel 1), one it leaves an OFF event (channel 0), summed per bin, plus
    Poisson noise of `noise` per entry and bin. An assumption about what a DVS recording looks like
    (events on moving edges, clustered in space and time), not a recording: none ships here. Uniform
    Poisson input (the rates table) is the other extreme, events with no neighbours."""
    C, H, W = shape
    n = T * sub + 1
    r = 3 + 6 * torch.rand(batch, objects, 1, generator=gen)
    p0 = torch.rand(batch, objects, 2, generator=gen) * torch.tensor([float(H), float(W)])
    ang = torch.rand(batch, objects, generator=gen) * 2 * math.pi
    speed = 0.5 + 1.5 * torch.rand(batch, objects, generator=gen)
    v = torch.stack([speed * torch.sin(ang), speed * torch.cos(ang)], -1)
    pos = p0[:, :, None] + v[:, :, None] * torch.arange(n, dtype=torch.float32)[None, None, :, None]  # (B, K, n, 2)
    yy = torch.arange(H, dtype=torch.float32)[:, None]
    xx = torch.arange(W, dtype=torch.float32)[None, :]
    dy = (yy - pos[..., 0, None, None] + H / 2) % H - H / 2
    dx = (xx - pos[..., 1, None, None] + W / 2) % W - W / 2
    inside = (dy ** 2 + dx ** 2 <= r[..., None, None] ** 2).any(1).float()  # (B, n, H, W)
    d = (inside[:, 1:] - inside[:, :-1]).reshape(batch, T, sub, H, W)
    x = torch.stack([(d < 0).float().sum(2), (d > 0).float().sum(2)], 2)  # (B, T, 2, H, W): OFF, ON
    x = x + torch.poisson(torch.full(x.shape, noise), generator=gen)
    return x.reshape((batch * T,) + tuple(shape))


def per_layer(dep, shape, gen, a, inputs=None) -> None:
    """SynOps per CPU second of each layer of sinabs64 under the ideal policy (the issue's target
    reads ">= 2e9 SynOps/s per core on conv layers"), in the run `simulate` does: sinabs64 is a
    chain, run as one compiled call (`runner._chain_schedule`, `kernels._ideal_chain`), which counts
    each step's synaptic ops and cycle-counter ticks (`kernels._cycles`) and the ticks of the whole
    call (`net.derived["chain_profile"]`). A step is the delivery into one layer (its events' rows,
    the SIMD adds, the flush and, fused, the layer's firing); its CPU time is its share of the
    call's ticks times the call's CPU time (process clock), summed over `repeats` runs. The rest
    of the call (timestep starts, the output read) and of the run (input reading and checking,
    the counts read out) belongs to no layer: the whole run's rate is the table above."""
    import time

    from snncc.sim.events import kernels

    net = dep._event_net
    into = {s: next(c for c in net.consumers if s in net.sources_of[c]) for s in net.tables}
    g = dep.deployed
    feeds = {n.name: g[n.inputs[0]].op for n in g.nodes if n.op == "fire"}  # the op each layer's neurons read
    orig = kernels._ideal_chain
    rows = [("input", "layer", "SynOps/batch", "CPU ms/batch", "SynOps/CPU s", ">= 2e9 (convs)")]
    if not kernels._CYCLE_COUNTER:
        print("sinabs64 per layer: not measured (no cycle counter read on this machine, `kernels._cycles`)")
        return
    if inputs is None:
        inputs = [(f"{rate:g}", torch.poisson(torch.full((a.batch * T64,) + shape, rate), generator=gen))
                  for rate in (0.01, 0.02, 0.05)]
    for label, xs in inputs:
        acc: dict[str, list[float]] = {}
        cpu = [0.0]

        def timed(*args):
            c0 = time.process_time()
            orig(*args)
            cpu[0] += time.process_time() - c0

        dep.simulate(xs, schedule="event", layout="B*T")  # (warm)
        kernels._ideal_chain = timed
        try:
            for _ in range(a.repeats):
                cpu[0] = 0.0
                dep.simulate(xs, schedule="event", layout="B*T")
                p = net.derived["chain_profile"]
                for (src, _), syn, ticks in zip(p["steps"], p["synops"], p["ticks"]):
                    c = acc.setdefault(into[src], [0.0, 0])
                    c[0] += cpu[0] * ticks / p["total"]
                    c[1] += int(syn)
        finally:
            kernels._ideal_chain = orig
        for c, (sec, syn) in acc.items():
            if c in feeds:
                r = syn / sec
                goal = ("met" if r >= 2e9 else "MISSED") if feeds[c] == "conv" else "-"
                rows.append((label, f"{feeds[c]} -> {c}", f"{syn // a.repeats:,}",
                             f"{sec / a.repeats * 1e3:.2f}", f"{r:.3g}", goal))
    print_table(f"sinabs64 per layer, ideal policy: SynOps per CPU second of the deliveries into each layer "
                f"(with its fused firing), each step's share of the chain run's cycle-counter ticks times the "
                f"kernel call's CPU time, {a.repeats} runs per input (a Poisson rate, or a DVS-like batch), "
                f"1 thread", rows)


def sinabs_forward(m, xs: torch.Tensor) -> torch.Tensor:
    for mod in m.modules():
        if hasattr(mod, "reset_states"):
            mod.reset_states()
    with torch.no_grad():
        return m(xs)


def bench_sinabs64(a) -> int:
    import time

    import numba

    import snncc

    m = sinabs64()
    shape = (2, 64, 64)
    dep = snncc.compile(m, torch.zeros((1,) + shape), input_kind="spike")
    assert dep.deployed.T == T64, dep.deployed.T
    fires = [n.name for n in dep.deployed.nodes if n.op == "fire"]
    gen = torch.Generator().manual_seed(1)
    xs0 = torch.poisson(torch.full((a.batch * T64,) + shape, 0.0), generator=gen)
    t0 = time.perf_counter()
    dep.simulate(xs0, schedule="event", layout="B*T")  # builds and keeps the event network (and its runs)
    build = time.perf_counter() - t0
    rows = [("rate", "sinabs s", "ideal s", "speck s", "ideal/sinabs", "speck/sinabs", "CPU ideal/sinabs",
             "CPU speck/sinabs", "SynOps/batch", "SynOps/s (ideal)", "SynOps/CPU s", "counts", "target")]
    rs = []
    ev = lambda xs, pol: dep.simulate(xs, schedule="event", layout="B*T", policy=pol)  # noqa: E731
    for rate in (float(r) for r in a.rates.split(",")):
        xs = torch.poisson(torch.full((a.batch * T64,) + shape, rate), generator=gen)
        want = sinabs_counts(m, xs)
        r = ev(xs, "ideal")
        same = all(torch.equal(r.counts[f].double(), w) for f, w in zip(fires, want))
        (t_s, t_i, t_k), (c_s, c_i, c_k) = median_times([lambda: sinabs_forward(m, xs), lambda: ev(xs, "ideal"),
                                                         lambda: ev(xs, "speck")], a.repeats, cpu=True)
        rs.append((rate, t_s / t_i, t_s / t_k))
        goals = []
        if rate <= 0.05 + 1e-12:
            goals.append("ideal " + ("met" if t_s / t_i > 1 else "MISSED"))
        if rate <= 0.02 + 1e-12:
            goals.append("speck " + ("met" if t_s / t_k > 1 else "MISSED"))
        rows.append((f"{rate:g}", f"{t_s:.3f}", f"{t_i:.3f}", f"{t_k:.3f}", f"{t_s / t_i:.2f}x", f"{t_s / t_k:.2f}x",
                     f"{c_s / c_i:.2f}x", f"{c_s / c_k:.2f}x", f"{r.synops:,}", f"{r.synops / t_i:.3g}",
                     f"{r.synops / c_i:.3g}",
                     f"{'equal' if same else 'DIFFER'} ({len(fires)} layers, {sum(int(w.sum()) for w in want):,} spikes)",
                     ", ".join(goals) or "-"))
    print_table(f"sinabs64 (2x64x64, 3 conv blocks, T = {T64}, batch {a.batch}): sinabs forward vs snncc "
                f"dep.simulate(schedule='event'), 1 thread, median of {a.repeats} (round-robin; wall and CPU time of "
                f"this process); event network "
                f"built once in {build:.1f} s", rows)
    print(f"sinabs64: crossover input rate (events stop beating sinabs): ideal {crossover(rs, 1)}, "
          f"speck {crossover(rs, 2)}")
    dvs = []
    rows = [("objects", "rate", "sinabs s", "ideal s", "speck s", "ideal/sinabs", "speck/sinabs", "SynOps/batch",
             "SynOps/CPU s", "counts")]
    for k in (1, 3, 8):
        xs = dvs_like(a.batch, T64, shape, k, gen)
        want = sinabs_counts(m, xs)
        r = ev(xs, "ideal")
        same = all(torch.equal(r.counts[f].double(), w) for f, w in zip(fires, want))
        (t_s, t_i, t_k), (c_s, c_i, c_k) = median_times([lambda: sinabs_forward(m, xs), lambda: ev(xs, "ideal"),
                                                         lambda: ev(xs, "speck")], a.repeats, cpu=True)
        rate = float(xs.mean())
        dvs.append((f"dvs {k} ({rate:.3f})", xs))
        rows.append((str(k), f"{rate:.3f}", f"{t_s:.3f}", f"{t_i:.3f}", f"{t_k:.3f}", f"{t_s / t_i:.2f}x",
                     f"{t_s / t_k:.2f}x", f"{r.synops:,}", f"{r.synops / c_i:.3g}",
                     f"{'equal' if same else 'DIFFER'} ({sum(int(w.sum()) for w in want):,} spikes)"))
    print_table(f"sinabs64 on DVS-like input (`dvs_like`: moving discs, events on their edges, noise 0.002; "
                f"rate = the batch's mean count per input entry and bin), 1 thread, median of {a.repeats}", rows)
    per_layer(dep, shape, gen, a)
    per_layer(dep, shape, gen, a, dvs)
    if numba.config.NUMBA_NUM_THREADS >= 2:
        for pol, rate in (("ideal", 0.05), ("speck", 0.02)):
            xs = torch.poisson(torch.full((a.batch * T64,) + shape, rate), generator=gen)

            def threads(n):
                return lambda: (numba.set_num_threads(n), ev(xs, pol))

            # (at least 11 alternated runs: a 2-thread wall time also waits for the second core, which
            # a shared machine lends unevenly; 5 runs put this ratio anywhere in 1.57-1.76x within an hour)
            t1, t2 = median_times([threads(1), threads(2)], max(a.repeats, 11))
            numba.set_num_threads(1)
            print(f"sinabs64 {pol} at rate {rate:g}, batch {a.batch}: 1 thread {t1:.3f} s, 2 threads {t2:.3f} s: "
                  f"{t1 / t2:.2f}x ({'met' if t1 / t2 >= 1.7 else 'MISSED'}: target >= 1.7x), load average "
                  f"{os.getloadavg()[0]:.1f}")
            (c1, s1, _, call1, out1), (c2, s2, long2, call2, out2) = (serial_cpu(lambda: ev(xs, pol), n, a.repeats)
                                                                      for n in (1, 2))
            print(f"  CPU outside the compiled kernels (holding the GIL): 1 thread {s1:.3f} of {c1:.3f} s "
                  f"({s1 / c1:.1%}), 2 threads {s2:.3f} of {c2:.3f} s ({s2 / c2:.1%}), longest thread {long2:.3f} s: "
                  f"at most {c1 / max(long2, s2):.2f}x on 2 free cores")
            print(f"  critical path (CPU): 1 thread: the call {call1:.3f} s; 2 threads: the calling thread outside the "
                  f"runs {out2:.4f} s + longest run {long2:.3f} s = {out2 + long2:.3f} s of a call using {call2:.3f} s "
                  f"CPU: {call1 / (out2 + long2):.2f}x")
    return 0


def serial_cpu(fn, threads: int, repeats: int) -> tuple[float, float, float, float, float]:
    """Medians over `repeats` calls of `fn` on `threads` numba threads: the CPU time of the event
    loop's runs (every thread's `runner._simulate`, or on a thread running none, its compiled kernels:
    a chain run's other threads; per-thread CPU clocks), the part of it spent
    outside the compiled kernels of `snncc.sim.events.kernels` (Python and numpy, which hold the
    GIL: the threads of a batch split wait for each other there), the longest run's CPU time, the
    whole call's process CPU time and the calling thread's CPU outside its own run (input checks,
    the split, the results: serial work on the critical path). A CPU-time measure: meaningful on
    a loaded machine, where wall-time ratios are not."""
    import statistics
    import threading
    import time

    import numba

    from snncc.sim.events import kernels, runner

    cpu: dict[tuple[int, str], float] = {}

    def timed(key, f):
        def w(*args, **kw):
            t0 = time.thread_time()
            try:
                return f(*args, **kw)
            finally:
                k = (threading.get_ident(), key)
                cpu[k] = cpu.get(k, 0.0) + time.thread_time() - t0
        return w

    saved = {n: getattr(kernels, n) for n in dir(kernels)
             if isinstance(getattr(kernels, n), numba.core.registry.CPUDispatcher)}
    saved_sim = runner._simulate
    rows = []
    try:
        for n, f in saved.items():
            setattr(kernels, n, timed("kernel", f))
        runner._simulate = timed("run", saved_sim)
        numba.set_num_threads(threads)
        for _ in range(repeats):
            cpu.clear()
            p0, m0 = time.process_time(), time.thread_time()
            fn()
            call, main = time.process_time() - p0, time.thread_time() - m0
            # per thread: its run's CPU, or, on a thread that ran no `_simulate` (a chain run's
            # other threads, `runner._run_chain`: one kernel call each), its kernels' CPU
            tids = {t for t, _ in cpu}
            runs = [cpu.get((t, "run"), cpu.get((t, "kernel"), 0.0)) for t in tids]
            total, inside = sum(runs), sum(v for (_, k), v in cpu.items() if k == "kernel")
            own = cpu.get((threading.get_ident(), "run"), 0.0)
            rows.append((total, total - inside, max(runs), call, main - own))
    finally:
        for n, f in saved.items():
            setattr(kernels, n, f)
        runner._simulate = saved_sim
        numba.set_num_threads(1)
    return tuple(statistics.median(r[i] for r in rows) for i in range(5))


def crossover(rs: list[tuple[float, ...]], col: int) -> str:
    """The input rate where the speed ratio (column `col`) falls through 1: log-log interpolation
    between the two measured rates around it."""
    rs = sorted(rs)
    for lo, hi in zip(rs, rs[1:]):
        if lo[col] >= 1 > hi[col]:
            f = math.log(lo[col]) / (math.log(lo[col]) - math.log(hi[col]))
            return f"{math.exp(math.log(lo[0]) + f * (math.log(hi[0]) - math.log(lo[0]))):.3g}"
    if rs and all(r[col] >= 1 for r in rs):
        return f"above {rs[-1][0]:g} (faster at every measured rate)"
    if rs and all(r[col] < 1 for r in rs):
        return f"below {rs[0][0]:g} (slower at every measured rate)"
    return "not monotone in the measured rates: " + ", ".join(f"{r[0]:g}: {r[col]:.2f}x" for r in rs)


if __name__ == "__main__":
    sys.exit(main())
