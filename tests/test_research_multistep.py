"""Multi-step research code, written as its repositories write it (plain torch, not
snncc classes): input (B, T, C, H, W) transposed to (T, B, ...) inside `forward`, convs on
`x.flatten(0, 1)`, stateful IF neurons as Python loops over T (a `MultiStepIFNode` with `v`,
`v_threshold`, soft reset, a SpikeYOLO-style `round(clamp(v, 0, D))` with a straight-through
custom autograd Function, reset by a `reset_net`-like helper; an older-style `mem_update` loop
writing `output[i] = spike`), outputs averaged over T, and a tuple (logits, extras) returned.
SpikingJelly's own IFNode, LIFNode(decay_input=False) and ILIFNode are tested with the real
package; leaky loops (`mem = (mem_old - spike) * decay + x[i]`, decay < 1) compile to a fire with
that leak and equal the eager model bit for bit."""

import math

import numpy as np

import pytest
import torch
import torch.nn as nn

import snncc
from nets import randomize_bn
from snncc.errors import FrontendError


class Quant(torch.autograd.Function):
    """SpikeYOLO-style multi-bit spike: integer forward, straight-through backward in [0, D]."""

    @staticmethod
    def forward(ctx, i, lo, hi):
        ctx.save_for_backward(i)
        ctx.lo, ctx.hi = lo, hi
        return torch.round(torch.clamp(i, min=lo, max=hi))

    @staticmethod
    def backward(ctx, g):
        i, = ctx.saved_tensors
        g = g.clone()
        g[i < ctx.lo] = 0
        g[i > ctx.hi] = 0
        return g, None, None


class MultiStepIFNode(nn.Module):
    def __init__(self, v_threshold=1.0, D=4):
        super().__init__()
        self.v_threshold, self.D, self.v = v_threshold, D, 0.

    def forward(self, x_seq):
        out = []
        for t in range(x_seq.shape[0]):
            self.v = self.v + x_seq[t]
            spike = Quant.apply(self.v / self.v_threshold, 0, self.D)
            self.v = self.v - spike * self.v_threshold
            out.append(spike)
        return torch.stack(out)

    def reset(self):
        self.v = 0.


def reset_net(net):
    for m in net.modules():
        if hasattr(m, "reset"):
            m.reset()


class MemUpdate(nn.Module):
    """The older loop idiom: mem = (mem_old - spike) * decay + x[i]; output[i] = spike."""

    def __init__(self, decay=1.0, D=4):
        super().__init__()
        self.decay, self.D = decay, D

    def forward(self, x):
        spike = torch.zeros_like(x[0])
        output = torch.zeros_like(x)
        mem_old = 0
        for i in range(x.shape[0]):
            mem = (mem_old - spike.detach()) * self.decay + x[i] if i >= 1 else x[i]
            spike = Quant.apply(mem, 0, self.D)
            mem_old = mem.clone()
            output[i] = spike
        return output


class LeakyLoop(nn.Module):
    """The issue's leaky loop as written: mem = (mem_old - spike) * decay + x[t]; spike =
    round(clamp(mem, 0, D)); out[t] = spike, state started from zeros_like(x[0])."""

    def __init__(self, decay=0.5, D=4):
        super().__init__()
        self.decay, self.D = decay, D

    def forward(self, x):
        mem_old, spike, out = torch.zeros_like(x[0]), torch.zeros_like(x[0]), torch.zeros_like(x)
        for t in range(x.shape[0]):
            mem = (mem_old - spike) * self.decay + x[t]
            spike = Quant.apply(mem, 0, self.D)
            mem_old = mem
            out[t] = spike
        return out


class EventNet(nn.Module):
    def __init__(self, neuron):
        super().__init__()
        self.c1, self.b1, self.n1 = nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), neuron()
        self.c2, self.n2 = nn.Conv2d(4, 6, 3, stride=2, padding=1), neuron()
        self.head = nn.Linear(6, 3)

    def forward(self, x):  # (B, T, C, H, W)
        x = x.transpose(0, 1).contiguous()
        T, B = x.shape[:2]
        x = self.b1(self.c1(x.flatten(0, 1))).reshape(T, B, 4, 8, 8)
        s1 = self.n1(x) / 4
        x = self.c2(s1.flatten(0, 1))
        x = self.n2(x.view(T, B, 6, 4, 4))
        feat = x.flatten(3).mean(3)
        return self.head(feat).mean(0), {"rate": s1.mean(), "feat": feat}


def _counts_by_hand(model, x, names=("n1", "n2")):
    """Spike counts of the named neuron modules summed over T, from the eager model itself (hooks)."""
    got = {}
    hooks = [getattr(model, k).register_forward_hook(lambda m, i, o, k=k: got.__setitem__(k, o.sum(0)))
             for k in names]
    reset_net(model)
    with torch.no_grad():
        model(x.float())
    reset_net(model)
    for h in hooks:
        h.remove()
    return got


@pytest.mark.parametrize("neuron", [lambda: MultiStepIFNode(0.5), lambda: MemUpdate(1.0), lambda: MemUpdate(0.25),
                                    lambda: MemUpdate(0.3), lambda: LeakyLoop(0.5), lambda: MemUpdate(0.0),
                                    lambda: LeakyLoop(0.0)],
                         ids=["MultiStepIF", "mem_update", "leaky0.25", "leaky0.3", "issue_loop0.5",
                              "mem_update_decay0", "issue_loop_decay0"])
def test_bt_input_loop_neurons_tuple_output_compile_verify_simulate(neuron):
    torch.manual_seed(0)
    m = randomize_bn(EventNet(neuron))
    T = 4
    dep = snncc.compile(m, torch.zeros(2, T, 2, 8, 8), input_layout="BT")
    fires = [n for n in dep.traced.nodes if n.op == "fire"]
    decay = getattr(m.n1, "decay", 1.0)  # the loop's decay is the fire's leak, at every level
    # decay 0 keeps nothing between timesteps: a stateless fire (a fresh membrane every step)
    assert dep.traced.T == T and [n.attrs["stateful"] for n in fires] == [decay != 0] * 2
    leak = decay if decay else 1.0
    assert [n.attrs["leak"] for n in fires] == [leak, leak]
    assert [n.attrs["leak"] for n in dep.deployed.neurons()] == [leak, leak]
    assert dep.traced.meta["outputs_ignored"] == 2 and dep.traced.meta["input_layout"] == "BT"
    x = torch.rand(6, T, 2, 8, 8, generator=torch.Generator().manual_seed(1)) * (3 / decay ** 2 if decay else 12)
    rep = dep.verify(x)
    assert rep.ok and rep.levels[0].max_logit_diff < 1e-9, rep.table()
    ref = dep.reference(x)
    hand = _counts_by_hand(m, x)
    assert torch.equal(ref.counts["n1"].float(), hand["n1"]) and torch.equal(ref.counts["n2"].float(), hand["n2"])
    assert ref.counts["n1"].sum() > 0 and ref.counts["n2"].sum() > 0
    sim = dep.simulate(x, "exact")
    assert all(torch.equal(sim.counts[k], c) for k, c in ref.counts.items())
    # the time steps differ: the same input repeated gives other counts
    rep_x = x[:, :1].expand(-1, T, -1, -1, -1)
    assert not torch.equal(dep.reference(rep_x).counts["n1"], ref.counts["n1"])


def test_spikeyolo_ste_neuron_trains_and_traces():
    m = EventNet(lambda: MultiStepIFNode(1.0)).train()
    x = torch.rand(2, 3, 2, 8, 8, requires_grad=True)
    m(x)[0].sum().backward()
    reset_net(m)
    assert m.c1.weight.grad is not None and m.c1.weight.grad.abs().sum() > 0
    dep = snncc.compile(m.eval(), torch.zeros(2, 3, 2, 8, 8), input_layout="BT")
    assert dep.traced.T == 3 and isinstance(m.n1.v, float)  # tracing left no membrane behind


class SumLoop(nn.Module):
    """A loop neuron on several summed inputs: mem = (mem - spike) * decay + a[t] + b[t] + res[t]
    (res: a residual of another neuron's spikes), soft reset on the sum; with `syn`, b goes
    through a synaptic filter syn = syn * s + b[t] first (a second decay: not deployable)."""

    def __init__(self, decay=0.5, D=4, syn=None):
        super().__init__()
        self.decay, self.D, self.syn = decay, D, syn

    def forward(self, a, b, res):
        mem, spike, syn, out = 0., 0., 0., []
        for t in range(a.shape[0]):
            if self.syn is None:
                mem = (mem - spike) * self.decay + a[t] + b[t] + res[t]
            else:
                syn = syn * self.syn + b[t]
                mem = (mem - spike) * self.decay + a[t] + syn
            spike = Quant.apply(mem, 0, self.D)
            out.append(spike)
        return torch.stack(out)


class SumNet(nn.Module):
    """n1 (the issue's loop) -> c2; the input -> c3 (a shortcut); n2 sums c2, c3 and n1's spikes."""

    def __init__(self, decay=0.5, syn=None):
        super().__init__()
        self.c1, self.n1 = nn.Conv2d(2, 4, 3, padding=1), LeakyLoop(decay)
        self.c2, self.c3, self.n2 = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(2, 4, 1), SumLoop(decay, syn=syn)
        self.head = nn.Linear(4, 3)

    def forward(self, x):  # (T, B, C, H, W)
        T, B = x.shape[:2]
        s1 = self.n1(self.c1(x.flatten(0, 1)).reshape(T, B, 4, 8, 8))
        a = self.c2(s1.flatten(0, 1) / 4).reshape(T, B, 4, 8, 8)
        b = self.c3(x.flatten(0, 1)).reshape(T, B, 4, 8, 8)
        return self.head(self.n2(a, b, s1).flatten(3).mean(3)).mean(0)


@pytest.mark.parametrize("decay", [1.0, 0.5, 0.0])
def test_loop_neuron_on_summed_inputs_and_a_spike_residual_equals_the_eager_model(decay):
    """Several inputs summed in the membrane (two convs and a residual of spikes): one fire on
    their IR sum (an `add`; the spikes through a x1 `scale`, the synapse that makes them a
    current), leak = decay (decay 0: stateless), counts equal to the eager loop's, T = 4."""
    torch.manual_seed(0)
    m = SumNet(decay).eval()
    dep = snncc.compile(m, torch.zeros(4, 2, 2, 8, 8), input_layout="TB")
    n2 = dep.traced["n2"]
    assert (n2.attrs["stateful"], n2.attrs["leak"]) == (decay != 0, decay if decay else 1.0)
    total = dep.traced[n2.inputs[0]]
    assert total.op == "add" and [dep.traced[i].op for i in total.inputs] == ["conv", "conv", "scale"]
    assert dep.traced[total.inputs[2]].inputs == ["n1"]
    assert any(n.op == "scale" and n.inputs == ["n1"] for n in dep.deployed.nodes)  # kept: spikes -> current
    x = torch.rand(4, 5, 2, 8, 8, generator=torch.Generator().manual_seed(1)) * 3
    rep = dep.verify(x)
    assert rep.ok and rep.levels[0].max_logit_diff < 1e-9, rep.table()
    ref, hand = dep.reference(x), _counts_by_hand(m, x)
    assert all(torch.equal(ref.counts[k].float(), hand[k]) and hand[k].sum() > 0 for k in ("n1", "n2"))
    assert all(torch.equal(dep.simulate(x, "exact").counts[k], ref.counts[k]) for k in ("n1", "n2"))
    if decay:  # the residual is counted: without it n2 counts otherwise
        dep.traced[total.inputs[2]].params["factor"] = np.asarray(0.0)
        assert not torch.equal(snncc.sim.reference.run(dep.traced, x.double()).counts["n2"], ref.counts["n2"])


def test_loop_neuron_whose_inputs_decay_differently_is_refused_in_one_line():
    with pytest.raises(FrontendError) as e:
        snncc.compile(SumNet(0.5, syn=0.9).eval(), torch.zeros(4, 2, 2, 8, 8), input_layout="TB")
    line = e.value.one_line()
    assert "the inputs decay differently: at timestep 1 the step-0 value of input c3 weighs 1.4 of a fresh one, " \
           "of input c2 0.5" in line and "module n2" in line and "\n" not in line


class TwoInputs(nn.Module):
    """mem = (mem - spike) * 0.5 + a[t] + b[t - lag]; b pooled to (4, 1, 1) when `pool`."""

    def __init__(self, pool=False, lag=0):
        super().__init__()
        self.c1, self.c2, self.pool, self.lag = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(2, 4, 1), pool, lag
        self.head = nn.Linear(4, 3)

    def forward(self, x):  # (T, B, C, H, W)
        T, B = x.shape[:2]
        a, b = self.c1(x.flatten(0, 1)).reshape(T, B, 4, 8, 8), self.c2(x.flatten(0, 1))
        b = b.mean((2, 3), keepdim=True).reshape(T, B, 4, 1, 1) if self.pool else b.reshape(T, B, 4, 8, 8)
        mem, spike, out = 0., 0., []
        for t in range(T):
            mem = (mem - spike) * 0.5 + a[t] + b[max(t - self.lag, 0)]
            spike = Quant.apply(mem, 0, 4)
            out.append(spike)
        return self.head(torch.stack(out).flatten(3).mean(3)).mean(0)


@pytest.mark.parametrize("kw,msg", [
    ({"pool": True}, "the membrane sums inputs of shapes [(4, 1, 1), (4, 8, 8)] (sum inputs of one shape"),
    ({"lag": 1}, "an input enters the membrane with factor 0 at timestep 1 and 1 at timestep 0"),
])
def test_summed_loop_inputs_of_other_shapes_or_timesteps_are_refused_in_one_line(kw, msg):
    with pytest.raises(FrontendError) as e:
        snncc.compile(TwoInputs(**kw).eval(), torch.zeros(4, 2, 2, 8, 8), input_layout="TB")
    line = e.value.one_line()
    assert msg in line and "\n" not in line


@pytest.mark.parametrize("neuron,msg", [
    (lambda: MemUpdate(1.5), "the membrane's decay 1.5 per timestep is outside [0, 1]"),
])
def test_loops_that_are_not_sfa_if_are_refused_in_one_line(neuron, msg):
    with pytest.raises(FrontendError) as e:
        snncc.compile(EventNet(neuron).eval(), torch.zeros(2, 4, 2, 8, 8), input_layout="BT")
    line = e.value.one_line()
    assert msg in line and "\n" not in line


class LayerInLoop(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(2, 4, 3, padding=1)

    def forward(self, x):  # (T, B, C, H, W), a layer applied per step inside the loop
        return torch.stack([self.c(x[t]) for t in range(x.shape[0])]).mean(0).flatten(1)


def test_layer_inside_the_loop_is_one_layer_on_the_sequence():
    """The same conv on every x[t], stacked: one IR conv on the (T, B, ...) input (the snntorch
    idiom, time_loop.TimeLoop.layer); the output equals the module's."""
    m = LayerInLoop().eval()
    dep = snncc.compile(m, torch.zeros(4, 2, 2, 8, 8), input_layout="TB")
    assert [n.op for n in dep.deployed.nodes] == ["input", "conv", "reshape", "output"]
    x = torch.rand(4, 3, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(dep.reference(x).output, m.double()(x.double()), rtol=0, atol=1e-12)
    assert dep.verify(x.float()).ok


def test_a_layer_on_a_sum_of_steps_inside_the_loop_is_refused_in_one_line():
    class SumInLoop(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(2, 4, 3, padding=1)

        def forward(self, x):
            return torch.stack([self.c(x[t] + x[0]) for t in range(x.shape[0])]).mean(0).flatten(1)

    with pytest.raises(FrontendError) as e:
        snncc.compile(SumInLoop().eval(), torch.zeros(4, 2, 2, 8, 8), input_layout="TB")
    line = e.value.one_line()
    assert "conv of a sum (or a scaled copy) of the loop's values inside a loop over T" in line and "\n" not in line


def test_fx_front_end_refuses_a_multistep_model_in_one_line(tmp_path, capsys):
    """fx traces symbolically: a loop over x.shape[0] cannot unroll (torch.export's job)."""
    from snncc.cli import main

    with pytest.raises(FrontendError) as e:
        snncc.compile(EventNet(lambda: MultiStepIFNode(0.5)).eval(), torch.zeros(2, 3, 2, 8, 8), input_layout="BT",
                      frontend="fx")
    line = e.value.one_line()
    assert "model EventNet: input layout BT (the model takes the whole time sequence) with --frontend fx" in line
    assert "drop --frontend fx" in line and "\n" not in line
    (tmp_path / "net.py").write_text(MODEL_DEF)
    ns = {}
    exec(MODEL_DEF, ns)
    torch.save(ns["make"]().state_dict(), tmp_path / "net.pt")
    assert main(["compile", str(tmp_path / "net.pt"), "--model-def", f"{tmp_path / 'net.py'}:make", "--input-shape",
                 "2,8,8", "--timesteps", "3", "--input-layout", "BT", "--frontend", "fx",
                 "-o", str(tmp_path / "art")]) == 2
    err = capsys.readouterr().err
    assert "input layout BT" in err and not (tmp_path / "art").exists()


sj = pytest.importorskip("spikingjelly.activation_based.neuron", reason="spikingjelly (requirements-dev.txt)")


class SJNet(nn.Module):
    def __init__(self, node):
        super().__init__()
        self.c1, self.n1, self.head = nn.Conv2d(2, 4, 3, padding=1), node, nn.Linear(4, 3)

    def forward(self, x):  # SpikingJelly's own layout, (T, B, C, H, W)
        T, B = x.shape[:2]
        x = self.n1(self.c1(x.flatten(0, 1)).reshape(T, B, 4, 8, 8))
        return self.head(x.flatten(3).mean(3)).mean(0)


def _jelly_run(node, amp=3.0):
    """SJNet(node) compiled at T = 4 and verified on 5 seeded samples in [0, amp): (deployment, its fire node,
    x, the node's own counts on the conv's currents summed over T, from SpikingJelly's forward)."""
    from spikingjelly.activation_based import functional

    torch.manual_seed(0)
    m = SJNet(node).eval()
    dep = snncc.compile(m, torch.zeros(4, 2, 2, 8, 8), input_layout="TB")
    (fire,) = [n for n in dep.traced.nodes if n.op == "fire"]
    x = torch.rand(4, 5, 2, 8, 8, generator=torch.Generator().manual_seed(3)) * amp
    rep = dep.verify(x)
    assert rep.ok and rep.levels[0].max_logit_diff < 1e-9, rep.table()
    functional.reset_net(m)
    with torch.no_grad():
        own = m.n1(m.c1(x.float().flatten(0, 1)).reshape(4, 5, 4, 8, 8)).sum(0)
    functional.reset_net(m)
    return dep, fire, x, own


def test_spikingjelly_multistep_ifnode_with_multilevel_spikes():
    from spikingjelly.activation_based import neuron, surrogate

    dep, fire, x, hand = _jelly_run(neuron.IFNode(v_reset=None, surrogate_function=surrogate.MultiLevelSpikeCount(4),
                                                  step_mode="m"))
    assert fire.attrs["stateful"] and fire.attrs["beta"] == -1.0  # round(clamp(v - v_threshold, 0, D))
    assert torch.equal(dep.reference(x).counts[fire.name].float(), hand) and hand.sum() > 0


@pytest.mark.parametrize("th", [1.0, 0.7])
def test_spikingjelly_default_binary_multistep_ifnode(th):
    """IFNode(step_mode='m', v_reset=None) with its default heaviside surrogate runs as the fused
    op sj_if::forward; it is D = 1: spike when v >= v_threshold, subtract v_threshold."""
    from spikingjelly.activation_based import functional, neuron

    torch.manual_seed(0)
    m = SJNet(neuron.IFNode(v_threshold=th, v_reset=None, step_mode="m")).eval()
    dep = snncc.compile(m, torch.zeros(4, 2, 2, 8, 8), input_layout="TB")
    (fire,) = [n for n in dep.traced.nodes if n.op == "fire"]
    assert (fire.attrs["D"], fire.attrs["rounding"], fire.attrs["stateful"], fire.attrs["theta"]) == (1, "floor", True, th)
    x = torch.rand(4, 5, 2, 8, 8, generator=torch.Generator().manual_seed(3)) * 3
    assert dep.verify(x).ok
    functional.reset_net(m)
    with torch.no_grad():  # the real node on the conv's currents, spikes summed over T
        hand = m.n1(m.c1(x.float().flatten(0, 1)).reshape(4, 5, 4, 8, 8)).sum(0)
    functional.reset_net(m)
    counts = dep.reference(x).counts[fire.name]
    assert torch.equal(counts.float(), hand) and 0 < hand.sum() < 4 * hand.numel()  # some neurons fire twice+
    assert int(counts.max()) > 1 and torch.equal(dep.simulate(x, "exact").counts[fire.name], counts)


@pytest.mark.parametrize("make,msg", [
    (lambda n, s: n.ParametricLIFNode(step_mode="m"), "SpikingJelly ParametricLIFNode is a neuron without a deployed"),
    (lambda n, s: n.IFNode(surrogate_function=s.MultiLevelSpikeCount(4), step_mode="m"),
     "IFNode(v_reset=0.0) with a multi-level spike count resets to a value"),
    (lambda n, s: n.IFNode(v_reset=None, v_threshold=0.5, surrogate_function=s.MultiLevelSpikeCount(4), step_mode="m"),
     "IFNode(v_threshold=0.5) with MultiLevelSpikeCount fires round(h - v_threshold) spikes"),
    (lambda n, s: n.LIFNode(v_reset=None, v_threshold=2.0, surrogate_function=s.MultiLevelSpikeCount(4), step_mode="m"),
     "LIFNode(v_threshold=2) with MultiLevelSpikeCount fires round(h - v_threshold) spikes and subtracts"),
])
def test_spikingjelly_neurons_that_are_not_deployable_are_refused_in_one_line(make, msg):
    from spikingjelly.activation_based import neuron, surrogate

    with pytest.raises(FrontendError) as e:
        snncc.compile(SJNet(make(neuron, surrogate)).eval(), torch.zeros(4, 2, 2, 8, 8), input_layout="TB")
    line = e.value.one_line()
    assert msg in line and "module n1" in line and "\n" not in line


LEAKY_JELLY = {
    "ILIF": (lambda n, s: n.ILIFNode(step_mode="m"), (4, "half_even", 1.0, 0.25)),  # I-LIF's own defaults
    "ILIF_tau2_D3": (lambda n, s: n.ILIFNode(tau=2.0, v_threshold=0.7, surrogate_function=s.MultiLevelSpikeCount(3),
                                             step_mode="m"), (3, "half_even", 0.7, 0.5)),
    "LIF_binary": (lambda n, s: n.LIFNode(tau=4.0, decay_input=False, v_reset=None, v_threshold=0.8, step_mode="m"),
                   (1, "floor", 0.8, 0.75)),
    "LIF_multilevel": (lambda n, s: n.LIFNode(tau=2.0, decay_input=False, v_reset=None,
                                              surrogate_function=s.MultiLevelSpikeCount(4), step_mode="m"),
                       (4, "half_even", 1.0, 0.5)),
    # decay_input=True: h = v + (x - v) / tau, the same neuron on x / tau (SpikingJelly's default)
    "LIF_decay_input": (lambda n, s: n.LIFNode(tau=2.0, v_reset=None, v_threshold=0.6, step_mode="m"),
                        (1, "floor", 0.6, 0.5)),
    "LIF_decay_input_tau3": (lambda n, s: n.LIFNode(tau=3.0, decay_input=True, v_reset=None, v_threshold=0.4,
                                                    step_mode="m"), (1, "floor", 0.4, 1 - 1 / 3)),
    "LIF_decay_input_multilevel": (lambda n, s: n.LIFNode(tau=2.0, decay_input=True, v_reset=None,
                                                          surrogate_function=s.MultiLevelSpikeCount(4), step_mode="m"),
                                   (4, "half_even", 1.0, 0.5), 12.0),
}


@pytest.mark.parametrize("kind", list(LEAKY_JELLY))
def test_spikingjelly_leaky_multistep_nodes_equal_their_own_forward(kind):
    """ILIFNode (fused sj_ilif), LIFNode(v_reset=None) with a heaviside (fused sj_lif) or a
    MultiLevelSpikeCount surrogate (a Python loop): one stateful fire with leak 1 - 1/tau, on the
    input current times 1/tau when decay_input=True (an IR scale the deployed graph folds into
    the conv), whose counts equal SpikingJelly's own forward bit for bit, T = 4."""
    from spikingjelly.activation_based import neuron, surrogate

    make, (D, rounding, theta, leak), *amp = LEAKY_JELLY[kind]
    dep, fire, x, own = _jelly_run(make(neuron, surrogate), *amp)
    a = fire.attrs
    assert (a["D"], a["rounding"], a["theta"], a["leak"], a["stateful"]) == (D, rounding, theta, leak, True)
    counts = dep.reference(x).counts[fire.name]
    assert torch.equal(counts.float(), own) and own.sum() > 0
    assert torch.equal(dep.simulate(x, "exact").counts[fire.name], counts)
    src = dep.traced[fire.inputs[0]]
    if "decay_input" in kind:  # the input gain 1/tau = 1 - leak, folded into the conv at deployment
        assert src.op == "scale" and float(src.params["factor"]) == pytest.approx(1 - leak, rel=1e-15)
        assert "scale" not in {n.op for n in dep.deployed.nodes}
        src.params["factor"] = np.asarray(1.0)  # without it the counts differ
        assert not torch.equal(snncc.sim.reference.run(dep.traced, x.double()).counts[fire.name], counts)
        src.params["factor"] = np.asarray(1 - leak)
    else:
        assert src.op != "scale"
    # the leak matters: the same node without it counts otherwise
    fire.attrs["leak"] = 1.0
    assert not torch.equal(snncc.sim.reference.run(dep.traced, x.double()).counts[fire.name], counts)


@pytest.mark.parametrize("kind", ["ILIF", "LIF_decay_input"])
def test_spikingjelly_single_step_leaky_node_over_timesteps(kind):
    """ILIFNode / LIFNode(decay_input=True, v_reset=None) in single-step mode (one call per
    timestep, a MultiStep-style factory): the peer neuron with leak 1 - 1/tau; I-LIF with D =
    max_spike_count, round half to even; the LIF with D = 1 on the current times 1/tau."""
    from spikingjelly.activation_based import functional, neuron

    make, (D, rounding, gain) = {"ILIF": (lambda: neuron.ILIFNode(tau=2.0), (4, "half_even", 1.0)),
                                 "LIF_decay_input": (lambda: neuron.LIFNode(tau=4.0, v_reset=None, v_threshold=0.5),
                                                     (1, "floor", 0.25))}[kind]

    class Step(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.n, self.head = nn.Conv2d(2, 4, 3, padding=1), make(), nn.Linear(4, 3)

        def forward(self, x):
            return self.head(self.n(self.c(x)).mean((2, 3)))

    class MultiStep(nn.Module):
        def __init__(self):
            super().__init__()
            self.model, self.T = Step().eval(), 3

    torch.manual_seed(0)
    w = MultiStep()
    dep = snncc.compile(w, torch.zeros(2, 2, 8, 8))
    (fire,) = [n for n in dep.traced.nodes if n.op == "fire"]
    leak = 1 - 1 / w.model.n.tau
    assert dep.traced.T == 3 and (fire.attrs["D"], fire.attrs["rounding"], fire.attrs["leak"]) == (D, rounding, leak)
    src = dep.traced[fire.inputs[0]]
    assert (float(src.params["factor"]), src.op) == (gain, "scale") if gain != 1 else src.op != "scale"
    x = torch.rand(3, 5, 2, 8, 8, generator=torch.Generator().manual_seed(4)) * 3
    assert dep.verify(x).ok
    functional.reset_net(w.model)
    with torch.no_grad():
        own = sum(w.model.n(w.model.c(x[t].float())) for t in range(3))
    functional.reset_net(w.model)
    counts = dep.reference(x).counts[fire.name]
    assert torch.equal(counts.float(), own) and own.sum() > 0
    assert torch.equal(dep.simulate(x, "exact").counts[fire.name], counts)


MODEL_DEF = '''
import torch, torch.nn as nn

class Quant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, i, lo, hi):
        return torch.round(torch.clamp(i, lo, hi))

    @staticmethod
    def backward(ctx, g):
        return g, None, None

class Node(nn.Module):
    def __init__(self):
        super().__init__()
        self.v = 0.

    def forward(self, x_seq):
        out = []
        for t in range(x_seq.shape[0]):
            self.v = self.v + x_seq[t]
            s = Quant.apply(self.v, 0, 4)
            self.v = self.v - s
            out.append(s)
        return torch.stack(out)

    def reset(self):
        self.v = 0.

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c, self.n, self.head = nn.Conv2d(2, 4, 3, padding=1), Node(), nn.Linear(4, 3)

    def forward(self, x):
        x = x.permute(1, 0, 2, 3, 4)
        T, B = x.shape[:2]
        x = self.n(self.c(x.flatten(0, 1)).view(T, B, 4, 8, 8)) / 4
        return self.head(x.mean((3, 4))).mean(0), {"spikes": x}  # nested extras: not deployed

def make():
    return Net()
'''


def test_cli_compiles_a_bt_model_and_verifies_and_simulates_an_nt_data_file(tmp_path, capsys):
    import numpy as np

    from snncc.cli import main

    (tmp_path / "net.py").write_text(MODEL_DEF)
    torch.manual_seed(0)
    ns = {}
    exec(MODEL_DEF, ns)
    torch.save(ns["make"]().state_dict(), tmp_path / "net.pt")
    x = np.random.default_rng(0).uniform(0, 3, (5, 3, 2, 8, 8))  # (N, T, C, H, W), as the model takes it
    np.savez(tmp_path / "data.npz", x=x, y=np.arange(5) % 3)
    out = str(tmp_path / "art")
    assert main(["compile", str(tmp_path / "net.pt"), "--model-def", f"{tmp_path / 'net.py'}:make",
                 "--input-shape", "2,8,8", "--timesteps", "3", "--input-layout", "BT", "-o", out]) == 0
    assert main(["verify", str(tmp_path / "net.pt"), out, "--model-def", f"{tmp_path / 'net.py'}:make",
                 "--input-shape", "2,8,8", "--data", str(tmp_path / "data.npz")]) == 0  # layout, T: the artefact's
    o = capsys.readouterr().out
    assert "verdict: OK" in o and "samples: 5" in o
    assert main(["simulate", out, "--data", str(tmp_path / "data.npz")]) == 0
    dep = snncc.load(out)
    assert dep.deployed.meta["input_layout"] == "BT" and dep.deployed.T == 3
    ref = dep.reference(str(tmp_path / "data.npz"))
    assert torch.equal(ref.counts["n"], dep.reference(torch.as_tensor(x)).counts["n"])
    with pytest.raises(Exception) as e:  # no T, no layout: said in one line
        snncc.compile(str(tmp_path / "net.pt"), model_def=f"{tmp_path / 'net.py'}:make", input_shape=(2, 8, 8),
                      input_layout="BT")
    assert "needs the number of timesteps" in e.value.one_line()


def test_fx_front_end_also_compiles_the_first_of_a_tuple_output():
    from nets import ConvChain

    class WithExtras(ConvChain):
        def forward(self, x):
            y = super().forward(x)
            return y, {"mean_rate": x.mean()}  # an extra the compiler never sees

    torch.manual_seed(0)
    m = randomize_bn(WithExtras())
    dep = snncc.compile(m, torch.zeros(2, 2, 8, 8), frontend="fx")
    x = torch.randn(4, 2, 8, 8, generator=torch.Generator().manual_seed(0)) * 2
    rep = dep.verify(x)
    assert rep.ok and rep.levels[0].max_logit_diff < 1e-9, rep.table()


def test_bt_model_report_and_estimate_take_inputs_in_the_models_layout(tmp_path):
    torch.manual_seed(0)
    m = randomize_bn(EventNet(lambda: MultiStepIFNode(0.5)))
    dep = snncc.compile(m, torch.zeros(2, 3, 2, 8, 8), input_layout="BT")
    x = torch.rand(4, 3, 2, 8, 8, generator=torch.Generator().manual_seed(5)) * 3  # (N, T, ...)
    ref = dep.reference(x)
    est = dep.estimate(x)
    assert est.samples == 4
    for name, c in ref.counts.items():  # spikes per sample, from the same (N, T, ...) inputs
        assert est.population(name).spikes == pytest.approx(float(c.sum()) / 4, rel=1e-12) and c.sum() > 0
    dep.report(str(tmp_path / "rep"), x)
    assert (tmp_path / "rep" / "report.md").is_file()
