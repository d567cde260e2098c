"""The event simulator behind `Deployment.simulate(schedule="event")` on a network built the way
sinabs users build it: T from `IAFSqueeze(num_timesteps=T)`, sinabs' (B*T, ...) batch read with
layout="B*T" or refused, spike counts equal to sinabs' own forward neuron by neuron, the event
network built once per deployment, the runs kernel on threads equal to the per-event oracle."""

import numba
import numpy as np
import pytest
import torch
import torch.nn as nn

import snncc
from snncc.errors import SnnccError
from snncc.sim.events import build_network, simulate

sl = pytest.importorskip("sinabs.layers")
sa = pytest.importorskip("sinabs.activation")

T = 4


def _sinabs_net(seed=0):
    """2x16x16 -> Conv(3x3, 4)-IAF-SumPool(2) -> Conv(3x3, 8)-IAF-SumPool(2) -> Linear(128, 5)-IAF,
    weights multiples of 1/8 (sums exact in sinabs' float32 and snncc's float64)."""
    torch.manual_seed(seed)
    mk = lambda: sl.IAFSqueeze(num_timesteps=T, spike_fn=sa.MultiSpike, reset_fn=sa.MembraneSubtract())  # noqa
    m = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), mk(), sl.SumPool2d(2),
                      nn.Conv2d(4, 8, 3, padding=1, bias=False), mk(), sl.SumPool2d(2),
                      nn.Flatten(), nn.Linear(128, 5, bias=False), mk())
    with torch.no_grad():
        for p in (m[0].weight, m[3].weight, m[7].weight):
            p.copy_(torch.round((torch.randn_like(p) + 0.2) * 2.0 / p[0].numel() ** 0.5 * 8) / 8)
    return m.eval()


def _sinabs_counts(m, xs):
    """Spikes per IAFSqueeze layer summed over T, (B, ...), from sinabs' own forward."""
    out = []
    hooks = [mm.register_forward_hook(lambda mod, i, o: out.append(o.detach())) for mm in m
             if isinstance(mm, sl.IAFSqueeze)]
    for mm in m.modules():
        if hasattr(mm, "reset_states"):
            mm.reset_states()
    with torch.no_grad():
        m(xs)
    for h in hooks:
        h.remove()
    return [o.reshape((-1, T) + tuple(o.shape[1:])).sum(1).double() for o in out]


@pytest.fixture(scope="module")
def dep_and_model():
    m = _sinabs_net()
    dep = snncc.compile(m, torch.zeros(1, 2, 16, 16), input_kind="spike")
    return dep, m


def test_sinabs_num_timesteps_gives_T(dep_and_model):
    dep, _ = dep_and_model
    assert dep.deployed.T == T


@pytest.mark.parametrize("threads", [1, 2])
def test_event_schedule_equals_sinabs_neuron_by_neuron(dep_and_model, threads):
    dep, m = dep_and_model
    B = 3
    gen = torch.Generator().manual_seed(1)
    xs = torch.poisson(torch.full((B * T, 2, 16, 16), 0.3), generator=gen)  # sinabs' (B*T, C, H, W)
    expect = _sinabs_counts(m, xs)
    old = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        r = dep.simulate(xs, schedule="event", layout="B*T")
    finally:
        numba.set_num_threads(old)
    fires = [n.name for n in dep.deployed.nodes if n.op == "fire"]
    assert len(fires) == len(expect) == 3
    for f, e in zip(fires, expect):
        assert torch.equal(r.counts[f].double(), e), f
        assert int(e.sum()) > 0, f  # every layer is active
    # the same run from (T, B, ...) counts
    r2 = dep.simulate(xs.reshape((B, T, 2, 16, 16)).transpose(0, 1), schedule="event")
    assert all(torch.equal(r2.counts[f], r.counts[f]) for f in fires)


def test_event_network_built_once_and_policies(dep_and_model):
    dep, _ = dep_and_model
    gen = torch.Generator().manual_seed(2)
    x = torch.poisson(torch.full((T, 2, 2, 16, 16), 0.3), generator=gen)
    r1 = dep.simulate(x, schedule="event")
    net = dep._event_net
    assert net is not None
    for pol in ("ideal", "greedy", "speck"):
        r = dep.simulate(x, schedule="event", policy=pol)
        assert dep._event_net is net
        own = simulate(build_network(dep.deployed), x, pol)
        assert r.policy == pol and r.synops == own.synops
        assert all(torch.equal(r.counts[k], own.counts[k]) for k in own.counts)
    assert torch.equal(r1.counts[next(iter(r1.counts))], dep.simulate(x, schedule="event").counts[next(iter(r1.counts))])


def test_flat_batch_refused_without_layout(dep_and_model):
    dep, _ = dep_and_model
    xs = torch.zeros(2 * T, 2, 16, 16)
    with pytest.raises(SnnccError, match="layout='B\\*T'"):
        dep.simulate(xs, schedule="event")
    with pytest.raises(SnnccError, match="multiple"):
        dep.simulate(torch.zeros(T + 1, 2, 16, 16), schedule="event", layout="B*T")
    with pytest.raises(SnnccError, match="policy"):
        dep.simulate(torch.zeros(T, 1, 2, 16, 16), schedule="event", policy="lazy")
    r = dep.simulate(torch.ones(2, 2, 16, 16), schedule="event", layout="static")  # 2 samples repeated over T
    assert next(iter(r.counts.values())).shape[0] == 2


def test_float32_spike_batch_reaches_the_event_simulator_as_float32(dep_and_model, monkeypatch):
    """`dep.simulate(schedule="event")` hands a float32 spike batch to the event simulator as float32
    (no float64 copy: `Deployment._given`), with the same counts, output and synops as the float64
    batch, and checks it the same way (a 0.5, -1, NaN or Inf refused in one line naming the sample)."""
    from snncc.sim.events import runner

    dep, _ = dep_and_model
    xs = torch.poisson(torch.full((2 * T, 2, 16, 16), 0.3), generator=torch.Generator().manual_seed(4))
    seen, own = [], runner._inputs
    monkeypatch.setattr(runner, "_inputs", lambda g, x: (seen.append(x.dtype), own(g, x))[1])
    for pol in ("ideal", "speck"):
        seen.clear()
        r32 = dep.simulate(xs, schedule="event", layout="B*T", policy=pol)
        assert seen and set(seen) == {torch.float32}
        seen.clear()
        r64 = dep.simulate(xs.double(), schedule="event", layout="B*T", policy=pol)
        assert seen and set(seen) == {torch.float64}
        assert r32.synops == r64.synops > 0 and torch.equal(r32.output, r64.output)
        assert all(torch.equal(r32.counts[k], r64.counts[k]) for k in r64.counts)
    # the event runner checks the values as it reads them (no pass of check_values over a clean
    # batch); a bad one gets check_values' message naming its sample (here a frame of the B*T batch)
    import snncc.data.inputs as data_inputs

    calls, real = [], data_inputs.check_values
    monkeypatch.setattr(data_inputs, "check_values", lambda *a: (calls.append(1), real(*a))[1])
    dep.simulate(xs, schedule="event", layout="B*T")
    assert calls == []
    for pol in ("ideal", "speck"):
        for v, said in ((0.5, "sample 3 holds 0.5"), (-1.0, "sample 3 holds -1"), (float("nan"), "sample 3 holds NaN"),
                        (float("inf"), "sample 3 holds NaN or Inf")):
            bad = xs.clone()
            bad[3, 1, 2, 2] = v
            with pytest.raises(SnnccError, match=said):
                dep.simulate(bad, schedule="event", layout="B*T", policy=pol)


def _installed_compile(tmp_path, timesteps: int) -> tuple[str, str]:
    """(the installed `snncc`, an artefact it compiled from speck_cnn("tiny") exported at batch 1)."""
    import os
    import subprocess
    import sys

    from snncc.models.speck import speck_cnn

    torch.manual_seed(0)
    m = speck_cnn("tiny").eval()
    pt2 = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(m, (torch.zeros(1, 2, 16, 16),)), pt2)
    exe = os.path.join(os.path.dirname(sys.executable), "snncc")
    out = str(tmp_path / "art")
    p = subprocess.run([exe, "compile", str(pt2), "--input-kind", "spike", "--timesteps", str(timesteps), "-o", out],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return exe, out


def test_installed_command_schedule_event_on_pt2(tmp_path):
    """The path users take: a .pt2 exported at batch 1, `snncc compile`, `snncc simulate
    --schedule event` (through Deployment.simulate): counts equal the reference, exit 0."""
    import subprocess

    exe, out = _installed_compile(tmp_path, 3)
    p = subprocess.run([exe, "simulate", out, "--schedule", "event", "--samples", "4"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "event simulation (ideal policy): 4 samples" in p.stdout and "spike counts == reference" in p.stdout
    dep = snncc.load(out)
    x = dep.inputs(None, 4, 0)
    r = dep.simulate(x, schedule="event", layout="static")
    assert f"{r.synops} synaptic ops" in p.stdout and r.synops > 0


def test_installed_command_says_when_it_compiles_the_event_kernels(tmp_path):
    """The first event run with an installation compiles the simulator's kernels (20-60 s of
    silence otherwise): `snncc simulate --schedule event -v` says so once, naming numba's cache
    folder; the next run loads them and says nothing (`kernels.first_use`)."""
    import os
    import subprocess

    exe, out = _installed_compile(tmp_path, 2)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    said = []
    for _ in range(2):
        p = subprocess.run([exe, "simulate", out, "--schedule", "event", "--samples", "2", "-v"], capture_output=True,
                           text=True, env=env)
        assert p.returncode == 0, p.stderr
        assert "event simulation (ideal policy): 2 samples" in p.stdout
        said.append([ln for ln in p.stderr.splitlines() if "compiling the event simulator's kernels" in ln])
    assert len(said[0]) == 1 and str(tmp_path / "numba") in said[0][0]
    assert said[1] == []
