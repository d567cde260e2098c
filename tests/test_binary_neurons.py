"""Binary-spike neurons (fire D = 1): the reset modes (subtract, to a value, none), the order of the
leak and a subtractive reset (SpikingJelly: reset then leak; snntorch: leak then subtract), and the
strict comparison `v > theta` (rounding "strict"), computed by hand on one neuron over T = 4 and run
by every executor that implements them; the others refuse in one line naming the node."""

import numpy as np
import pytest
import torch

from snncc.errors import SnnccError
from snncc.ir import Graph, Node
from snncc.ir.analysis import host_domain
from snncc.ir.ops import neuron_model, summarize
from snncc.ir.serialize import dumps, loads
from snncc.passes.manager import run_pipeline
from snncc.sim import events, reference, sync
from snncc.sim.masked import MaskedInterpreter

X = [1.8, 0.5, 0.6, 1.0]  # one neuron's input current at t = 0..3, theta = 1


def neuron(conv=False, **attrs):
    w = "conv" if conv else "linear"
    shape = (1, 1, 1) if conv else (1,)
    syn = ({"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1)}, {"weight": np.ones((1, 1, 1, 1))}) if conv \
        else ({}, {"weight": np.array([[1.0]])})
    g = Graph([Node("x", "input", [], {"shape": shape}), Node("w", w, ["x"], *syn),
               Node("f", "fire", ["w"], {"D": 1, "stateful": True, "rounding": "floor", **attrs}),
               Node("head", w, ["f"], *syn), Node("o", "output", ["head"])]).infer()
    g.T = 4
    return g


def xs(conv=False):
    return torch.tensor(X, dtype=torch.float64).reshape((4, 1, 1, 1, 1) if conv else (4, 1, 1))


# By hand (theta 1, v the membrane before the comparison, r what is carried):
# soft reset, IF:        1.8 s (r .8); 1.3 s (.3); .9 (.9); 1.9 s                  -> 1 1 0 1
# hard reset to 0, IF:   1.8 s (r 0); .5 (.5); 1.1 s (0); 1.0 s (>=)                -> 1 0 1 1
# hard reset, v > theta: as above, but 1.0 is not > 1                                -> 1 0 1 0
# no reset, IF:          1.8 s; 2.3 s; 2.9 s; 3.9 s                                  -> 1 1 1 1
# no reset, leak .25:    1.8 s (.45); .95 (.2375); .8375 (.209375); 1.209375 s      -> 1 0 0 1
# hard reset, leak .5:   1.8 s (0); .5 (.25); .85 (.425); 1.425 s                    -> 1 0 0 1
# soft reset then leak .5 (SpikingJelly): 1.8 s (.5 * .8 = .4); .9 (.45); 1.05 s (.025); 1.025 s -> 1 0 1 1
# leak .5 then subtract (snntorch): 1.8 s (.9 - 1 = -.1); .4 (.2); .8 (.4); 1.4 s   -> 1 0 0 1
# hard reset to beta = 0.25 (the membrane starts and resets at 0.25), IF:
#                        2.05 s (0); .75 (.5); 1.35 s (0); 1.25 s                    -> 1 0 1 1
# ... with theta 1.3:    2.05 s; .75 (.5); 1.35 s; 1.25                              -> 1 0 1 0
CASES = {
    "soft": ({}, [1, 1, 0, 1]),
    "hard": ({"reset": "value"}, [1, 0, 1, 1]),
    "hard_strict": ({"reset": "value", "rounding": "strict"}, [1, 0, 1, 0]),
    "none": ({"reset": "none"}, [1, 1, 1, 1]),
    "none_leak": ({"reset": "none", "leak": 0.25}, [1, 0, 0, 1]),
    "hard_leak": ({"reset": "value", "leak": 0.5}, [1, 0, 0, 1]),
    "soft_leak": ({"leak": 0.5}, [1, 0, 1, 1]),
    "leak_first": ({"leak": 0.5, "leak_first": True}, [1, 0, 0, 1]),
    "hard_beta": ({"reset": "value", "beta": 0.25}, [1, 0, 1, 1]),
    "hard_beta_theta": ({"reset": "value", "beta": 0.25, "theta": 1.3}, [1, 0, 1, 0]),
}


def per_step(g, x):
    from snncc.verify import _Recorder  # keeps every timestep's count

    rec = _Recorder(g)
    with torch.no_grad():
        rec.run(x)
    return [int(c) for c, _ in rec.steps["f"]]


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_binary_neuron_by_hand(case):
    attrs, hand = CASES[case]
    g = neuron(**attrs)
    assert per_step(g, xs()) == hand
    assert int(reference.run(g, xs()).counts["f"]) == sum(hand)
    # the deployed level keeps the model (floor and strict are comparisons: round_to_floor leaves them)
    dep = run_pipeline(g, "deploy").graph
    (f,) = dep.neurons()
    assert {k: f.attrs[k] for k in attrs} == attrs
    assert int(reference.run(dep, xs()).counts[f.name]) == sum(hand)
    # the event simulator's ideal policy (counts at completion, the reference's carry)
    assert int(events.simulate(dep, xs(), policy="ideal").counts[f.name]) == sum(hand)
    sim = sync.Simulator(dep)
    for acc in ("window", "substep"):
        assert int(sim.run(xs(), "exact", accumulate=acc).counts[f.name]) == sum(hand), acc
    # the masked (SSC) interpreter: every site active, the same neuron
    gc = neuron(conv=True, **attrs)
    r = MaskedInterpreter(gc, "centre").run(xs(conv=True))
    assert int(r.counts["f"]) == sum(hand)
    # serialisation keeps the model
    back = loads(*dumps(g))
    assert back["f"].attrs == g["f"].attrs and per_step(back, xs()) == hand


@pytest.mark.parametrize("case", sorted(c for c in CASES if c not in ("soft", "soft_leak")))
def test_executors_without_the_model_refuse_in_one_line(case):
    attrs, _ = CASES[case]
    dep = run_pipeline(neuron(**attrs), "deploy").graph
    for pol in ("greedy", "speck"):  # per-event firing: the soft-reset >= neuron only
        with pytest.raises(SnnccError) as e:
            events.simulate(dep, xs(), policy=pol)
        line = e.value.one_line()
        assert "node f" in line and f"the {pol} policy fires per event" in line and "\n" not in line
    with pytest.raises(SnnccError, match="the streaming schedule .* does not implement"):
        sync.Simulator(dep).run(xs(), "streaming")


def test_model_names_and_rules():
    g = neuron(reset="value", rounding="strict", leak=0.5)
    assert neuron_model(g["f"].attrs) == "LIF(leak 0.5) binary (v > theta), hard reset to 0"
    assert neuron_model(neuron(leak=0.5, leak_first=True)["f"].attrs) == \
        "LIF(leak 0.5) binary (v >= theta), soft reset after the leak"
    assert "reset=value" in summarize("fire", g["f"].attrs, {})
    from snncc.errors import IRError

    with pytest.raises(IRError, match="reset must be one of"):
        neuron(reset="zero")
    with pytest.raises(IRError, match="leak_first orders the leak before a subtractive reset"):
        neuron(reset="value", leak_first=True)


def test_estimate_report_names_each_population_neuron_model():
    from snncc.estimate import estimate

    dep = run_pipeline(neuron(reset="value", leak=0.5), "deploy").graph
    r = estimate(dep, xs())
    (f,) = dep.neurons()
    assert r.neuron_models == {f.name: "LIF(leak 0.5) binary (v >= theta), hard reset to 0"}
    assert f"LIF(leak 0.5) binary (v >= theta), hard reset to 0: {f.name}" in r.table()
    assert r.population(f.name).spikes == 2  # 1 0 0 1 by hand; T = 4 windows of one sub-step


@pytest.mark.parametrize("case", ["hard", "hard_strict", "none", "leak_first"])
def test_targets_say_which_models_they_run(case):
    from snncc_lava.target import LoihiTarget
    from snncc_speck.target import SpeckTarget

    attrs, _ = CASES[case]
    dep = run_pipeline(neuron(conv=True, **attrs), "deploy").graph
    (f,) = dep.neurons()
    assert LoihiTarget().check(dep) == []  # WindowBurstIF runs all of them (backends/lava/tests/test_binary_lava.py)
    speck = SpeckTarget().check(dep)
    if case == "hard":  # a binary hard reset runs as return_to_zero (backends/speck/tests/test_speck_hard_reset.py)
        assert not any(f"layer {f.name}: neuron" in p for p in speck), speck
    else:
        assert any(f"neuron {neuron_model(f.attrs)}; snncc's Speck layers" in p for p in speck), speck


# ---- SpikingJelly 2.0 IFNode / LIFNode with their default hard reset ---------------------------

import torch.nn as nn  # noqa: E402

import snncc  # noqa: E402


class SJNet(nn.Module):
    """conv -> a multi-step SpikingJelly node -> head, on SpikingJelly's (T, B, C, H, W) layout."""

    def __init__(self, node):
        super().__init__()
        self.c1, self.n1, self.head = nn.Conv2d(2, 4, 3, padding=1), node, nn.Linear(4, 3)

    def forward(self, x):
        T, B = x.shape[:2]
        x = self.n1(self.c1(x.flatten(0, 1)).reshape(T, B, 4, 8, 8))
        return self.head(x.flatten(3).mean(3)).mean(0)


class Steps(nn.Module):
    """A single-step model run over T timesteps (the MultiStep-style wrapper snncc reads: .model, .T)."""

    def __init__(self, model, T):
        super().__init__()
        self.model, self.T = model, T


def own_spikes(m, x, names, reset, steps=1):
    """Spikes of m's modules `names`, summed over the calls and the time axis, from the framework's
    own forward (`reset`: its reset function; `steps` calls of m on x)."""
    own = {}

    def keep(mod, i, o, k):
        o = o[0] if isinstance(o, tuple) else o
        own[k] = own.get(k, 0) + (o.sum(0) if steps == 1 else o)

    hooks = [getattr(m, k).register_forward_hook(lambda mod, i, o, k=k: keep(mod, i, o, k)) for k in names]
    reset(m)
    with torch.no_grad():
        for _ in range(steps):
            m(x)
    reset(m)
    for h in hooks:
        h.remove()
    return own


def sj_inputs(amp=3.0):
    return torch.rand(4, 5, 2, 8, 8, generator=torch.Generator().manual_seed(3)) * amp


def sj_own_counts(m, x):
    """The node's own spikes on the conv's currents, summed over T (SpikingJelly's forward)."""
    from spikingjelly.activation_based import functional

    functional.reset_net(m)
    with torch.no_grad():
        own = m.n1(m.c1(x.float().flatten(0, 1)).reshape(4, x.shape[1], 4, 8, 8)).sum(0)
    functional.reset_net(m)
    return own


HARD_JELLY = {  # node, (leak, beta = v_reset, theta, input gain)
    "IF_default": (lambda n: n.IFNode(step_mode="m"), (1.0, 0.0, 1.0, 1.0)),
    "IF_v_reset": (lambda n: n.IFNode(v_reset=-0.5, v_threshold=0.8, step_mode="m"), (1.0, -0.5, 0.8, 1.0)),
    "LIF_default": (lambda n: n.LIFNode(step_mode="m"), (0.5, 0.0, 1.0, 0.5)),  # tau 2, decay_input
    "LIF_no_decay_input": (lambda n: n.LIFNode(tau=4.0, decay_input=False, v_reset=0.2, v_threshold=0.9,
                                               step_mode="m"), (0.75, 0.2, 0.9, 1.0)),
}


@pytest.mark.parametrize("kind", sorted(HARD_JELLY))
def test_spikingjelly_hard_reset_nodes_equal_their_own_forward(kind):
    """IFNode/LIFNode with a number v_reset (SpikingJelly 2.0's default 0.0), multi-step (the fused
    sj_if / sj_lif ops): a stateful binary fire with reset "value" and beta = v_reset, whose counts
    equal SpikingJelly's own forward per neuron; the soft-reset neuron counts otherwise."""
    from spikingjelly.activation_based import neuron

    make, (leak, beta, theta, gain) = HARD_JELLY[kind]
    torch.manual_seed(0)
    m = SJNet(make(neuron)).eval()
    dep = snncc.compile(m, torch.zeros(4, 2, 2, 8, 8), input_layout="TB")
    (fire,) = [n for n in dep.traced.nodes if n.op == "fire"]
    a = fire.attrs
    assert (a["D"], a["rounding"], a["reset"], a["leak"], a["beta"], a["theta"]) == \
        (1, "floor", "value", leak, beta, theta)
    src = dep.traced[fire.inputs[0]]
    assert (src.op == "scale" and float(src.params["factor"]) == gain) if gain != 1.0 else src.op != "scale"
    x = sj_inputs()
    rep = dep.verify(x)
    assert rep.ok, rep.table()
    own = sj_own_counts(m, x)
    counts = dep.reference(x).counts[fire.name]
    assert torch.equal(counts.float(), own) and 0 < own.sum() < 4 * own.numel()
    assert torch.equal(dep.simulate(x, "exact").counts[fire.name], counts)
    fire.attrs["reset"] = "subtract"  # the reset matters on these inputs
    assert not torch.equal(reference.run(dep.traced, x.double()).counts[fire.name], counts)


def test_spikingjelly_single_step_hard_reset_node():
    """IFNode() in single-step mode, called once per timestep (a MultiStep-style wrapper with T):
    the same hard-reset fire."""
    from spikingjelly.activation_based import functional, neuron

    torch.manual_seed(0)
    w = Steps(nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), neuron.IFNode(), nn.Flatten(2), nn.Linear(64, 3),
                            nn.Flatten(1)).eval(), 3)
    dep = snncc.compile(w, torch.zeros(2, 2, 8, 8))
    (fire,) = [n for n in dep.traced.nodes if n.op == "fire"]
    assert (fire.attrs["reset"], fire.attrs["beta"], fire.attrs["D"]) == ("value", 0.0, 1)
    x = torch.rand(5, 2, 8, 8, generator=torch.Generator().manual_seed(1)) * 2
    own = own_spikes(w.model, x, ("1",), functional.reset_net, steps=3)["1"]
    assert torch.equal(dep.reference(x).counts[fire.name].float(), own) and own.sum() > 0
    assert dep.verify(x).ok


class Repeat(nn.Module):
    """The model adds its own time axis: x (B, C, H, W) -> x.unsqueeze(0).repeat(T, 1, 1, 1, 1)."""

    def __init__(self, net, T=4):
        super().__init__()
        self.net, self.T = net, T

    def forward(self, x):
        return self.net(x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1))


def test_spikingjelly_hard_reset_pt2_through_the_cli(tmp_path, capsys):
    """The user's path: an IFNode-default multi-step model that repeats its input over T = 4,
    exported, `snncc compile m.pt2` then `snncc verify` OK; the compiled counts equal
    SpikingJelly's own forward per neuron. Exported at batch 2: at batch 1 the front end does not
    yet tell unsqueeze(0).repeat(T)'s new axis from the batch axis (the front end's axis reading)."""
    from spikingjelly.activation_based import functional, neuron

    from snncc.cli import main

    torch.manual_seed(0)
    m = Repeat(SJNet(neuron.IFNode(step_mode="m"))).eval()
    functional.reset_net(m)
    torch.export.save(torch.export.export(m, (torch.zeros(2, 2, 8, 8),)), str(tmp_path / "m.pt2"))
    functional.reset_net(m)
    assert main(["compile", str(tmp_path / "m.pt2"), "-o", str(tmp_path / "art")]) == 0
    assert main(["verify", str(tmp_path / "m.pt2"), str(tmp_path / "art")]) == 0
    assert "verdict: OK" in capsys.readouterr().out
    dep = snncc.load(str(tmp_path / "art"))
    (fire,) = dep.deployed.neurons()
    assert (fire.attrs["reset"], dep.deployed.T) == ("value", 4)
    x = torch.rand(5, 2, 8, 8, generator=torch.Generator().manual_seed(3)) * 3
    own = sj_own_counts(m.net, x.unsqueeze(0).repeat(4, 1, 1, 1, 1))
    assert torch.equal(dep.reference(x).counts[fire.name].float(), own) and own.sum() > 0


def _fresh(code: str, cwd) -> "subprocess.CompletedProcess":
    """Run snncc in a fresh interpreter (no SpikingJelly op registered yet)."""
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_pt2_with_spikingjelly_fused_ops_loads_in_a_fresh_process(tmp_path):
    """A .pt2 calling torch.ops.sj_lif (registered only when a node first runs): snncc registers
    SpikingJelly's op modules before torch.export.load, importing nothing else of SpikingJelly;
    without SpikingJelly the compile is refused in one line, nothing written."""
    from spikingjelly.activation_based import functional, neuron

    torch.manual_seed(0)
    m = Repeat(SJNet(neuron.LIFNode(step_mode="m"))).eval()
    functional.reset_net(m)
    torch.export.save(torch.export.export(m, (torch.zeros(2, 2, 8, 8),)), str(tmp_path / "m.pt2"))
    r = _fresh("import sys; from snncc.cli import main; rc = main(['compile', 'm.pt2', '-o', 'art']); "
               "print(sorted(k for k in sys.modules if k.startswith('spikingjelly.activation_based'))); sys.exit(rc)",
               tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"  # no SpikingJelly neuron module was imported
    assert snncc.load(str(tmp_path / "art")).deployed.neurons()[0].attrs["reset"] == "value"
    r = _fresh("import sys; sys.modules['spikingjelly'] = None; from snncc.cli import main; "
               "sys.exit(main(['compile', 'm.pt2', '-o', 'art2']))", tmp_path)
    err = [line for line in r.stderr.splitlines() if line.startswith("snncc:")]
    assert r.returncode == 2 and len(err) == 1, r.stderr
    assert "m.pt2: the program calls SpikingJelly's fused op torch.ops.sj_lif and SpikingJelly is not installed" \
        in err[0] and not (tmp_path / "art2").exists()


class SEWBlock(nn.Module):
    """SEW-ResNet's ADD and a Spiking-ResNet-style spike shortcut, on (T, B, C, 8, 8) with SpikingJelly's
    default IFNode (hard reset): a = sn1(conv1 x); b = sn2(conv2 a); c = sn3(conv3 (a + b)) (a sum of
    two spike maps read by a conv); d = conv4 c + a (a spike shortcut added to a current);
    e = sn4(d); head."""

    def __init__(self):
        from spikingjelly.activation_based import neuron

        super().__init__()
        self.c1, self.c2, self.c3, self.c4 = (nn.Conv2d(2 if i == 0 else 4, 4, 3, padding=1) for i in range(4))
        self.sn1, self.sn2, self.sn3, self.sn4 = (neuron.IFNode(step_mode="m") for _ in range(4))
        self.head = nn.Linear(4, 3)

    def conv(self, c, x):
        T, B = x.shape[:2]
        return c(x.flatten(0, 1)).reshape(T, B, 4, 8, 8)

    def forward(self, x):
        a = self.sn1(self.conv(self.c1, x))
        b = self.sn2(self.conv(self.c2, a))
        c = self.sn3(self.conv(self.c3, a + b))
        d = self.conv(self.c4, c) + a  # `d += a` (aten.add_) is the front end's in-place normalisation
        e = self.sn4(d)
        return self.head(e.flatten(3).mean(3)).mean(0)


def test_sew_add_and_spike_shortcut_become_fan_in_projections():
    """The sum of two spike maps read by a conv, and a spike map added to a current, compile to
    fan-in: each spike population projects into the consumer's neurons (conv(a + b) = conv(a) +
    conv(b)); every population's counts equal SpikingJelly's own forward, verify OK."""
    from spikingjelly.activation_based import functional

    torch.manual_seed(0)
    m = SEWBlock().eval()
    dep = snncc.compile(m, torch.zeros(4, 2, 2, 8, 8), input_layout="TB")
    x = sj_inputs(2.0)
    rep = dep.verify(x)
    assert rep.ok, rep.table()
    own = own_spikes(m, x, ("sn1", "sn2", "sn3", "sn4"), functional.reset_net)
    counts = dep.reference(x).counts
    fires = {n.name: n for n in dep.deployed.neurons()}
    assert len(fires) == 4
    names = sorted(fires, key=lambda k: [n.name for n in dep.deployed.nodes].index(k))
    for k, name in zip(("sn1", "sn2", "sn3", "sn4"), names):
        assert torch.equal(counts[name].float(), own[k]) and own[k].sum() > 0, k
    src = {n.name: {s for s in _sources(dep.deployed, n.name)} for n in dep.deployed.neurons()}
    assert src[names[2]] == {names[0], names[1]} and src[names[3]] == {names[0], names[2]}
    assert torch.equal(dep.simulate(x, "exact").counts[names[3]], counts[names[3]])


def _sources(g, name):
    """The populations (or the input) a neuron's current tree reads."""
    stack, out = list(g[name].inputs), set()
    while stack:
        n = g[stack.pop()]
        if n.op in ("fire", "relay", "input"):
            out.add(n.name)
        else:
            stack.extend(n.inputs)
    return out


# ---- max pooling of spikes ----------------------------------------------------------------------


def pooled(D=1):
    """input (1, 4, 4) -> conv 1x1 (weight 1) -> fire (D, IF, soft) -> max_pool 2x2 s2 -> linear sum -> output."""
    g = Graph([Node("x", "input", [], {"shape": (1, 4, 4)}),
               Node("w", "conv", ["x"], {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1)},
                    {"weight": np.ones((1, 1, 1, 1))}),
               Node("f", "fire", ["w"], {"D": D, "stateful": True, "rounding": "floor"}),
               Node("mp", "max_pool", ["f"], {"kernel": (2, 2), "stride": (2, 2)}),
               Node("flat", "reshape", ["mp"], {"shape": (4,)}),
               Node("g", "linear", ["flat"], {}, {"weight": np.array([[1.0, 10.0, 100.0, 1000.0]])}),
               Node("o", "output", ["g"])]).infer()
    g.T = 2
    return g


def test_max_pool_of_spikes_by_hand():
    """T = 2, one input map held over both timesteps; quadrant q's max count feeds weight 10^q:
    binary (D = 1): quadrants (1.2, 0, 0, 0 | 0.4 ... | 0.6, 0.6 | 0 ...): t=0 spikes at 1.2 only
    -> OR per quadrant 1, 0, 0, 0; t=1 the 0.6s reach 1.2 -> quadrant 2 fires, quadrant 0's 1.2
    (residual 0.2 + 1.2 = 1.4) fires again: outputs 1 and 1 + 100 -> mean 51. Multi-spike D = 3: the
    max of counts: t=0 quadrant 0 counts 1 (1.2), quadrant 3 has 2.5 -> 2: 1 + 2000; t=1 quadrant 0
    1 (1.4), quadrant 2 1 (1.2), quadrant 3 2.5 + 0.5 = 3 -> 3: 1 + 100 + 3000; mean 2551."""
    x = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    x[0, 0, 0, 0] = 1.2
    x[0, 0, 0, 2] = 0.4
    x[0, 0, 2, 0] = 0.6
    x[0, 0, 3, 1] = 0.6
    assert float(reference.run(pooled(1), x).output) == 51.0
    x[0, 0, 3, 3] = 2.5
    assert float(reference.run(pooled(3), x).output) == 2551.0
    dep = run_pipeline(pooled(3), "deploy").graph
    for acc in ("window", "substep"):
        assert float(sync.Simulator(dep).run(x, "exact", accumulate=acc).output) == 2551.0, acc
    for policy in ("ideal", "greedy"):  # the event simulator: an output spike as its window's max rises
        assert float(events.simulate(dep, x, policy=policy).output) == 2551.0, policy


def test_max_pool_of_a_current_is_refused_outside_the_host_domain():
    """A max of currents after a neuron (a spike-driven current) is refused by Graph.verify naming
    the node; the same max on the input's encoding (before any neuron) is a host-domain current."""
    from snncc.errors import IRError

    conv = {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1)}
    win = {"kernel": (2, 2), "stride": (2, 2)}
    nodes = [Node("x", "input", [], {"shape": (1, 4, 4)}), Node("w", "conv", ["x"], conv, {"weight": np.ones((1, 1, 1, 1))}),
             Node("mc", "max_pool", ["w"], win), Node("f", "fire", ["mc"], {"D": 1, "rounding": "floor"}),
             Node("g", "conv", ["f"], conv, {"weight": np.ones((1, 1, 1, 1))}),
             Node("mg", "max_pool", ["g"], win), Node("o", "output", ["mg"])]
    g = Graph(nodes[:4] + [Node("o", "output", ["f"])]).verify()
    assert g["mc"].kind == "current" and host_domain(g) == {"x", "w", "mc"}
    with pytest.raises(IRError, match="node mg: max_pool of a current that depends on a neuron's spikes: a max of "
                                      "currents is no synaptic sum"):
        Graph(nodes).verify()


def test_max_pool_of_the_input_encoding_by_hand():
    """input (1, 4, 4) -> conv 1x1 (weight 1, bias 0.25) -> max_pool 2x2 -> fire (D 3, floor,
    stateful, T = 2): the quadrant maxima of x + 0.25 are 1.45, 0.25, 0.85, 2.75; counts over two
    steps (membrane carried, soft reset): 1.45 -> 1, 0.45 + 1.45 -> 1 (2 in all); 0.25 -> 0, 0.5 -> 0;
    0.85 -> 0, 1.7 -> 1; 2.75 -> 2, 0.75 + 2.75 -> 3 (5). The deploy pipeline moves the bias to
    the neuron (max(a + b) = max(a) + b per channel) and the reference, sync and event simulators
    give these counts on the deployed graph."""
    g = Graph([Node("x", "input", [], {"shape": (1, 4, 4)}),
               Node("w", "conv", ["x"], {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1)},
                    {"weight": np.ones((1, 1, 1, 1)), "bias": np.array([0.25])}),
               Node("mp", "max_pool", ["w"], {"kernel": (2, 2), "stride": (2, 2)}),
               Node("f", "fire", ["mp"], {"D": 3, "stateful": True, "rounding": "floor"}),
               Node("o", "output", ["f"])]).infer()
    g.T = 2
    x = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    x[0, 0, 0, 0], x[0, 0, 1, 1] = 1.2, 0.7
    x[0, 0, 2, 1], x[0, 0, 3, 0] = 0.6, -1.0
    x[0, 0, 3, 3] = 2.5
    want = [2.0, 0.0, 1.0, 5.0]
    assert reference.run(g, x).counts["f"].reshape(-1).tolist() == want  # spikes over both steps
    dep = run_pipeline(g, "deploy").graph
    assert dep["mp"].kind == "current" and "bias" not in dep["w"].params and dep["f"].params["bias"].reshape(-1).tolist() == [0.25]
    assert reference.run(dep, x).counts["f"].reshape(-1).tolist() == want
    assert sync.simulate(dep, x).counts["f"].reshape(-1).tolist() == want
    for policy in ("ideal", "greedy"):
        assert events.simulate(dep, x, policy=policy).counts["f"].reshape(-1).tolist() == want, policy


def test_a_bias_that_varies_within_a_window_of_the_encoding_max_is_refused():
    """input -> conv 1x1 (bias 1) -> conv 3x3 of ones, zero padding -> max_pool 2x2 -> fire: the
    constant reaching the max is 4 at a corner, 6 on an edge and 9 inside (the padding), so
    max(a + c) is not max(a) + max(c): the bias cannot move to the neuron, refused naming the pool."""
    conv = {"stride": (1, 1), "dilation": (1, 1)}
    g = Graph([Node("x", "input", [], {"shape": (1, 4, 4)}),
               Node("a", "conv", ["x"], {**conv, "padding": (0, 0)}, {"weight": np.ones((1, 1, 1, 1)),
                                                                     "bias": np.ones(1)}),
               Node("b", "conv", ["a"], {**conv, "padding": (1, 1)}, {"weight": np.ones((1, 1, 3, 3))}),
               Node("mp", "max_pool", ["b"], {"kernel": (2, 2), "stride": (2, 2)}),
               Node("f", "fire", ["mp"], {"D": 1, "rounding": "floor"}), Node("o", "output", ["f"])]).infer()
    with pytest.raises(SnnccError) as e:
        run_pipeline(g, "deploy")
    assert e.value.one_line().startswith("node mp: the constant current (biases) reaching this max pool varies "
                                         "within a pooling window"), e.value.one_line()


class StemNet(nn.Module):
    """SEW/Spiking ResNet's stem on (T, B, 2, 8, 8): conv -> IFNode (multi-step, hard reset) ->
    MaxPool2d(3, 2, 1) on the spikes -> conv -> IFNode -> head."""

    def __init__(self):
        from spikingjelly.activation_based import layer, neuron

        super().__init__()
        self.c1, self.sn1 = nn.Conv2d(2, 4, 3, padding=1), neuron.IFNode(step_mode="m")
        self.mp = layer.MaxPool2d(3, 2, 1, step_mode="m")
        self.c2, self.sn2, self.head = nn.Conv2d(4, 4, 3, padding=1), neuron.IFNode(step_mode="m"), nn.Linear(4, 3)

    def forward(self, x):
        T, B = x.shape[:2]
        s = self.mp(self.sn1(self.c1(x.flatten(0, 1)).reshape(T, B, 4, 8, 8)))
        s = self.sn2(self.c2(s.flatten(0, 1)).reshape(T, B, 4, 4, 4))
        return self.head(s.flatten(3).mean(3)).mean(0)


def test_spikingjelly_max_pool_stem_equals_its_own_forward():
    from spikingjelly.activation_based import functional
    from snncc_lava.target import LoihiTarget
    from snncc_speck.target import SpeckTarget

    torch.manual_seed(0)
    m = StemNet().eval()
    dep = snncc.compile(m, torch.zeros(4, 2, 2, 8, 8), input_layout="TB")
    assert "max_pool" in {n.op for n in dep.deployed.nodes}
    x = sj_inputs(2.0)
    rep = dep.verify(x)
    assert rep.ok, rep.table()
    own = own_spikes(m, x, ("sn1", "sn2"), functional.reset_net)
    counts = dep.reference(x).counts
    f1, f2 = dep.deployed.neurons()
    assert torch.equal(counts[f1.name].float(), own["sn1"]) and torch.equal(counts[f2.name].float(), own["sn2"])
    assert own["sn2"].sum() > 0
    assert torch.equal(dep.simulate(x, "exact").counts[f2.name], counts[f2.name])
    (mp,) = [n for n in dep.deployed.nodes if n.op == "max_pool"]
    # Loihi runs it as OR neurons in burst emission (snncc_lava.network.MaxPool); graded cannot OR
    assert not any(mp.name in p for p in LoihiTarget().check(dep.deployed))
    assert any(p.startswith(f"node {mp.name}: max pooling of spikes with emit=graded")
               for p in LoihiTarget().check(dep.deployed, {"emit": "graded"}))
    assert f"node {mp.name}: max_pool (4, 4, 4) on spikes before the synaptic op of layer {f2.name} has no Speck " \
        "equivalent" in SpeckTarget().check(dep.deployed)
    # the estimate: fan-out through the max pool counts every window a spike is in, flagged an upper bound
    r = dep.estimate(x)
    (link,) = [l for l in r.links if l.target == f2.name]
    assert link.source == f1.name and not link.exact
    # by hand: a pooled site (i, j) of the 3x3/2/1 pool on 8x8 holds a_i x a_j neurons, a = (2, 3, 3, 3); the
    # 3x3/1/1 conv on 4x4 reads it at b_i x b_j positions, b = (2, 3, 3, 2), for 4 output channels; per input
    # channel (4): 4 x (sum_i a_i b_i)^2 = 4 x 28^2
    assert link.synapses == 4 * 4 * 28 ** 2


# ---- snntorch Leaky ----------------------------------------------------------------------------


def snn_net(**kw):
    """Conv - Leaky - Conv - Leaky - Linear - Leaky(output=True) (the tutorial CSNN without its max
    pools: a max of currents before a stateful neuron does not commute with it), single-step."""
    import snntorch as snn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.l1 = nn.Conv2d(1, 4, 3, padding=1), snn.Leaky(beta=0.5, init_hidden=True, **kw)
            self.c2, self.l2 = nn.Conv2d(4, 4, 3, stride=2, padding=1), snn.Leaky(beta=0.9, threshold=0.7,
                                                                                    init_hidden=True, **kw)
            self.fc, self.l3 = nn.Linear(4 * 4 * 4, 3), snn.Leaky(beta=0.8, init_hidden=True, output=True, **kw)

        def forward(self, x):
            s = self.l2(self.c2(self.l1(self.c1(x))))
            spk, mem = self.l3(self.fc(s.flatten(1)))  # returning both would be two outputs (the membrane
            return spk  # is no deployable value): the prediction is the spikes

    return Net()


@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
def test_snntorch_leaky_network_equals_its_own_forward(reset):
    """snntorch 1.0 Leaky(init_hidden=True): mem = beta * mem + x - reset * threshold (subtracted
    after the leak: leak_first), spike mem > threshold (rounding strict); reset_mechanism "zero" is
    a reset to 0 ("value"). A MultiStep-style wrapper (.model, .T = 5) runs it over T; every
    Leaky's spike counts equal snntorch's own loop with utils.reset."""
    from snntorch import utils

    torch.manual_seed(0)
    net = snn_net(reset_mechanism=reset).eval()
    with torch.no_grad():  # enough activity in every layer
        net.c2.weight.mul_(4.0)
        net.fc.weight.mul_(8.0)

    dep = snncc.compile(Steps(net, 5), torch.zeros(2, 1, 8, 8))
    fires = [n for n in dep.traced.nodes if n.op == "fire"]
    assert len(fires) == 3
    a = fires[0].attrs
    assert (a["D"], a["rounding"], a["leak"], a["leak_first"], a["reset"]) == \
        (1, "strict", 0.5, reset == "subtract", {"subtract": "subtract", "zero": "value", "none": "none"}[reset])
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 3
    own = own_spikes(net, x, ("l1", "l2", "l3"), utils.reset, steps=5)
    counts = dep.reference(x).counts
    for k, f in zip(("l1", "l2", "l3"), fires):
        assert torch.equal(counts[f.name].float(), own[k]), k
    assert own["l2"].sum() > 0 and own["l3"].sum() > 0
    assert dep.verify(x).ok
    assert torch.equal(dep.simulate(x, "exact").counts[fires[2].name], counts[fires[2].name])


# ---- old SpikingJelly `clock_driven` MultiStepLIFNode (Meta-SpikeFormer), written in its style -----


class Heaviside(torch.autograd.Function):
    """clock_driven's surrogate spike: forward (x >= 0).to(x), a sigmoid gradient."""

    @staticmethod
    def forward(ctx, x, alpha=4.0):
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x)

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        s = torch.sigmoid(ctx.alpha * x)
        return g * ctx.alpha * s * (1 - s), None


class MultiStepLIFNode(nn.Module):
    """spikingjelly.clock_driven.neuron.MultiStepLIFNode (torch backend) as Meta-SpikeFormer builds it:
    tau 2, decay_input, hard reset to v_reset = 0, spike when v - v_threshold >= 0."""

    def __init__(self, tau=2.0, v_threshold=1.0, v_reset=0.0, detach_reset=True):
        super().__init__()
        self.tau, self.v_threshold, self.v_reset, self.detach_reset = tau, v_threshold, v_reset, detach_reset
        self.v = v_reset

    def neuronal_charge(self, x):
        self.v = self.v + (x - (self.v - self.v_reset)) / self.tau

    def neuronal_fire(self):
        return Heaviside.apply(self.v - self.v_threshold)

    def neuronal_reset(self, spike):
        spike_d = spike.detach() if self.detach_reset else spike
        self.v = (1. - spike_d) * self.v + spike_d * self.v_reset

    def forward(self, x_seq):
        out = []
        for t in range(x_seq.shape[0]):
            self.neuronal_charge(x_seq[t])
            spike = self.neuronal_fire()
            self.neuronal_reset(spike)
            out.append(spike)
        return torch.stack(out)

    def reset(self):
        self.v = self.v_reset


@pytest.mark.parametrize("th", [1.0, 0.5])  # 0.5: Meta-SpikeFormer's attn_lif
def test_clock_driven_multistep_lif_node_equals_its_own_forward(th):
    """The loop unrolled by torch.export (v_t = v + (x[t] - v) / 2; spike = (v - th >= 0); v = (1 -
    spike) * v): one stateful binary fire with reset "value" (to 0), leak 1/2, on x / 2; counts
    equal the node's own forward per neuron, verify OK."""
    torch.manual_seed(0)
    m = SJNet(MultiStepLIFNode(v_threshold=th)).eval()
    dep = snncc.compile(m, torch.zeros(4, 2, 2, 8, 8), input_layout="TB")
    (fire,) = [n for n in dep.traced.nodes if n.op == "fire"]
    a = fire.attrs
    assert (a["D"], a["rounding"], a["reset"], a["leak"], a["stateful"]) == (1, "floor", "value", 0.5, True)
    x = sj_inputs(4.0)
    rep = dep.verify(x)
    assert rep.ok, rep.table()
    own = own_spikes(m, x, ("n1",), lambda mod: mod.n1.reset())["n1"]
    counts = dep.reference(x).counts[fire.name]
    assert torch.equal(counts.float(), own) and 0 < own.sum() < 4 * own.numel()
    assert torch.equal(dep.simulate(x, "exact").counts[fire.name], counts)


class _RepeatT(nn.Module):
    """Meta-SpikeFormer's shape: T made inside forward (`x.unsqueeze(0).repeat(T, ...)`), a stateful
    clock_driven node whose membrane survives a call until `reset()`, the head averaged over T."""

    def __init__(self, T=4):
        super().__init__()
        self.T = T
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.lif = MultiStepLIFNode()
        self.head = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        x = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        T, B = x.shape[:2]
        y = self.bn(self.conv(x.flatten(0, 1))).reshape(T, B, 4, 8, 8)
        s = self.lif(y)
        return self.head(s.flatten(2)).mean(0)


def test_verify_resets_a_stateful_module_between_calls():
    """A module whose neurons keep their membrane between calls (old SpikingJelly, no reset_net in
    forward) and make T inside forward: verify's PyTorch row runs it from a clean state every call
    (the float64 copy's probe run and each batch), so the row equals the graph; before, the probe's
    membranes leaked into the comparison (Meta-SpikeFormer: MISMATCH at the pytorch level only)."""
    torch.manual_seed(0)
    m = _RepeatT().eval()
    with torch.no_grad():
        m.bn.bias.uniform_(0.3, 0.8)  # a bias: zero input leaves the membranes nonzero
    dep = snncc.compile(m, torch.zeros(1, 2, 8, 8))
    x = torch.rand(3, 2, 8, 8, generator=torch.Generator().manual_seed(1)) * 2
    rep = dep.verify(x)
    assert rep.ok, rep.table()
    pt = [lv for lv in rep.levels if lv.level == "pytorch"][0]
    assert pt.max_logit_diff <= 1e-9 and pt.predictions_agree == 1.0
    m.lif.reset()
    with torch.no_grad():  # the user's own float32 run from a clean state gives the graph's output
        own = m(x.float()).double()
    assert torch.allclose(own, dep.reference(x).output, atol=1e-5)
