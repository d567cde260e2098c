"""Spatial pyramid pooling (SpikeYOLO's SPPF, written here in our own words): a current `x`, three
chained max pools k=5 stride 1 pad 2 of it, `cat(x, y1, y2, y3)` along channels read by a stateless
SFA neuron. The neuron is monotone and per value, so it commutes with the pools and the placement:
snncc fires once on `x` and max-pools / places the spikes. Counts bit-exact against eager, through
the installed `snncc` on a `.pt2` exported at batch 1 (4-D and multi-step 5-D forms; the 5-D form's
`verify` runs `snncc.cli.main` in this process, tests/cli_run.py, read as the command's output: a
torch import less) and the module path; a max of currents before a stateful neuron is refused in
one line saying why."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import snncc
from cli_run import run_main
from nets import Fire, randomize_bn
from snncc.errors import SnnccError
from snncc.nn import SFANeuron

SNNCC = os.path.join(os.path.dirname(sys.executable), "snncc")


def _cli(*args):
    p = subprocess.run([SNNCC, *args], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def _conv_bn(ci, co, k=1):
    return nn.Sequential(nn.Conv2d(ci, co, k, padding=k // 2, bias=False), nn.BatchNorm2d(co))


class SPPF(nn.Module):
    """stem conv-BN -> neuron -> cv1 (1x1 conv-BN, the current x) -> y1..y3 chained max pools ->
    neuron(cat(x, y1, y2, y3)) -> cv2 (1x1 conv-BN). `multi_step`: (T, B, C, H, W) tensors, the
    pools and convs on x.flatten(0, 1) and reshaped back, the output averaged over T."""

    def __init__(self, multi_step=False, T=2):
        super().__init__()
        self.multi_step, self.T = multi_step, T
        self.stem, self.n0 = _conv_bn(2, 4, 3), Fire(4)
        self.cv1, self.m = _conv_bn(4, 2), nn.MaxPool2d(5, 1, 2)
        self.n1, self.cv2 = Fire(4), _conv_bn(8, 3)

    def forward(self, x):
        if not self.multi_step:
            x = self.cv1(self.n0(self.stem(x)))
            y1 = self.m(x)
            y2 = self.m(y1)
            y3 = self.m(y2)
            return self.cv2(self.n1(torch.cat((x, y1, y2, y3), 1)))
        x = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        T, B, _, H, W = x.shape
        x = self.stem(x.flatten(0, 1)).reshape(T, B, -1, H, W)
        x = self.cv1(self.n0(x).flatten(0, 1)).reshape(T, B, -1, H, W)
        y1 = self.m(x.flatten(0, 1)).reshape(T, B, -1, H, W)
        y2 = self.m(y1.flatten(0, 1)).reshape(T, B, -1, H, W)
        y3 = self.m(y2.flatten(0, 1)).reshape(T, B, -1, H, W)
        s = self.n1(torch.cat((x, y1, y2, y3), 2))
        return self.cv2(s.flatten(0, 1)).reshape(T, B, -1, H, W).mean(0)


def _model(multi_step=False, seed=0):
    torch.manual_seed(seed)
    m = randomize_bn(SPPF(multi_step), seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.Conv2d):
                mod.weight.mul_(2.5)
    return m.eval()


def _eager(m, x):
    got = {}
    hooks = [mod.register_forward_hook(lambda mod, i, o, k=k: got.__setitem__(k, o * mod.D))
             for k, mod in m.named_modules() if isinstance(mod, Fire)]
    with torch.no_grad():
        out = m.double()(x.double())
    m.float()
    for h in hooks:
        h.remove()
    return got, out


def _tree(f):
    """cat(s, mp(s), mp(mp(s)), mp(mp(mp(s)))) of spike counts `f`, the deployed semantics."""
    ys = [f]
    for _ in range(3):
        ys.append(F.max_pool2d(ys[-1], 5, 1, 2))
    return torch.cat(ys, 1)


@pytest.mark.parametrize("multi_step", [False, True], ids=["4d", "5d"])
def test_sppf_pt2_at_batch_1_through_the_installed_command_bit_exact(tmp_path, multi_step):
    m = _model(multi_step)
    path = str(tmp_path / "sppf.pt2")
    torch.export.save(torch.export.export(m, (torch.rand(1, 2, 8, 8),)), path)
    code, o, e = _cli("compile", path, "-o", str(tmp_path / "out"))
    assert code == 0, o + e
    code, o, e = (run_main if multi_step else _cli)("verify", path, str(tmp_path / "out"), "--samples", "2")
    assert code == 0 and "verdict: OK" in o, o + e
    dep = snncc.load(str(tmp_path / "out"))
    ops = [(n.op, n.shape) for n in dep.deployed.nodes]
    # one neuron on x (2 channels, not the 8 of the cat); three max pools of its spikes; the cat placed
    assert [op for op, _ in ops].count("fire") == 2 and [op for op, _ in ops].count("max_pool") == 3
    assert [s for op, s in ops if op == "max_pool"] == [(2, 8, 8)] * 3
    assert [s for op, s in ops if op == "fire"] == [(4, 8, 8), (2, 8, 8)]
    x = torch.rand(3, 2, 8, 8, generator=torch.Generator().manual_seed(1)) * 3
    ref, (eager, want) = dep.reference(x), _eager(m, x)
    fires = [n.name for n in dep.deployed.nodes if n.op == "fire"]
    assert dep.deployed.T == (2 if multi_step else 1)
    counts = {k: v.sum(0) if multi_step else v for k, v in eager.items()}  # 5-D: (T, B, ...) summed over T
    assert torch.equal(ref.counts[fires[0]], counts["n0"]) and counts["n0"].sum() > 0
    assert torch.equal(_tree(ref.counts[fires[1]]), counts["n1"]) and counts["n1"].sum() > 0
    assert not torch.equal(_tree(ref.counts[fires[1]])[:, 2:], counts["n1"][:, :2].repeat(1, 3, 1, 1))  # pools matter
    assert torch.allclose(ref.output.reshape(want.shape), want, rtol=0, atol=1e-9)
    mod = snncc.compile(m, torch.zeros(1, 2, 8, 8))  # the module path: the same deployed graph
    assert [(n.name, n.op, n.inputs, n.attrs) for n in mod.deployed.nodes] == \
        [(n.name, n.op, n.inputs, n.attrs) for n in dep.deployed.nodes]


class StatefulAfterPool(nn.Module):
    """[conv -> neuron ->] conv -> max pool of the current -> a stateful neuron (v = v + x, fires,
    subtracts). `spiking`: the pooled current depends on a neuron's spikes (else it is the input's
    encoding, host domain, and deploys)."""

    def __init__(self, spiking=True):
        super().__init__()
        self.pre = nn.Sequential(nn.Conv2d(2, 2, 1), SFANeuron(4)) if spiking else nn.Identity()
        self.c, self.p, self.n = nn.Conv2d(2, 4, 3, padding=1), nn.MaxPool2d(3, 1, 1), SFANeuron(4, stateful=True)

    def forward(self, x):
        return self.n(self.p(self.c(self.pre(x))))


def test_max_of_currents_before_a_stateful_neuron_is_refused_saying_why():
    """By hand: two positions with currents (0.4, 0) and (0, 0.4) over two steps; a stateful
    neuron after the max integrates (0.4, 0.4) and fires once at step 2 (0.8 rounds to 1); before
    the max neither position reaches 0.5, so the max of their spikes is 0: not exact, refused when
    the current depends on a neuron's spikes. On the input's encoding (no neuron before it) the max
    is host work and the stateful neuron reads it as its input current: it deploys, counts equal
    to the module's own."""
    with pytest.raises(SnnccError) as e:
        snncc.compile(StatefulAfterPool().eval(), torch.zeros(1, 2, 8, 8))
    line = e.value.one_line()
    assert "max pooling of a current before a stateful neuron is not deployable" in line and "node '" in line
    assert "the integral of a max is not the max of the integrals" in line and "\n" not in line, line
    torch.manual_seed(0)
    m = StatefulAfterPool(spiking=False).eval()
    dep = snncc.compile(m, torch.zeros(1, 2, 8, 8))
    assert [n.kind for n in dep.deployed.nodes if n.op == "max_pool"] == ["current"]
    x = torch.rand(3, 2, 8, 8, generator=torch.Generator().manual_seed(1)) * 3
    with torch.no_grad():
        want = m(x)
    assert want.sum() > 0 and torch.allclose(dep.reference(x).output.reshape(want.shape).float(), want, rtol=0, atol=1e-6)


class StepIF(nn.Module):
    """A multi-step IF node in SpikingJelly's style: `v = v + x[t]`, fire, subtract, over the steps."""

    def __init__(self, D=4):
        super().__init__()
        self.D, self.v = D, 0.

    def forward(self, x_seq):
        out = []
        for t in range(x_seq.shape[0]):
            self.v = self.v + x_seq[t]
            spike = torch.round(torch.clamp(self.v, 0, self.D))
            self.v = self.v - spike
            out.append(spike)
        self.v = 0.
        return torch.stack(out)


class PoolThenStepIF(nn.Module):
    """[conv -> stateless neuron ->] conv -> max pool of the current -> a multi-step IF loop.
    `spiking`: the pooled current depends on a neuron's spikes (else it is the input's encoding)."""

    def __init__(self, spiking=True):
        super().__init__()
        self.pre = nn.Sequential(nn.Conv2d(2, 2, 1), SFANeuron(4)) if spiking else nn.Identity()
        self.c, self.p, self.n = nn.Conv2d(2, 4, 3, padding=1), nn.MaxPool2d(3, 1, 1), StepIF()

    def forward(self, x):
        x = x.unsqueeze(0).repeat(2, 1, 1, 1, 1)
        T, B = x.shape[:2]
        u = self.p(self.c(self.pre(x.flatten(0, 1)))).reshape(T, B, 4, 8, 8)
        return self.n(u).mean(0).flatten(1)


def test_max_of_currents_before_a_spikingjelly_multi_step_node_is_refused_in_one_line(tmp_path):
    """Refused when the pooled current depends on a neuron's spikes; on the input's encoding (host
    domain) the loop neuron integrates the max as its input current: it deploys, output equal to
    the module's own."""
    m = PoolThenStepIF().eval()
    path = str(tmp_path / "sj.pt2")
    torch.export.save(torch.export.export(m, (torch.rand(1, 2, 8, 8),)), path)
    code, o, e = _cli("compile", path, "-o", str(tmp_path / "out"))
    assert code == 2 and "max pooling of a current" in e and "node '" in e and len(e.strip().splitlines()) == 1, o + e
    assert "before a stateful neuron is not deployable: the neuron carries its membrane over the T = 2 time steps " \
           "(leak 1), and the integral of a max is not the max of the integrals" in e, e
    torch.manual_seed(0)
    m = PoolThenStepIF(spiking=False).eval()
    dep = snncc.compile(torch.export.export(m, (torch.rand(1, 2, 8, 8),)))
    assert [n.kind for n in dep.deployed.nodes if n.op == "max_pool"] == ["current"] and dep.deployed.T == 2
    x = torch.rand(3, 2, 8, 8, generator=torch.Generator().manual_seed(1)) * 3
    with torch.no_grad():
        want = m(x)
    assert want.sum() > 0 and torch.allclose(dep.reference(x).output.reshape(want.shape).float(), want, rtol=0, atol=1e-6)
