"""snntorch's tutorial CSNN with its loop over T written in `forward` (`utils.reset(net)`, then
`for step in range(T): spk, mem = net(x)`; Leaky(beta, init_hidden=True), the last output=True),
exported with torch.export at batch 1 and compiled through the installed `snncc` command: every
Leaky's spike counts equal snntorch's own forward, per neuron; the tutorial's max pool of a
current before a Leaky is refused in one line naming the node."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

import snncc

snn = pytest.importorskip("snntorch")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SNNCC = os.path.join(os.path.dirname(sys.executable), "snncc")
T = 5


class CSNN(nn.Module):
    """Conv-[MaxPool]-Leaky, Conv-Leaky-[MaxPool], Linear-Leaky(output=True), the loop over T in
    forward on a static image; `tutorial`: the tutorial's order Conv-MaxPool-Leaky in layer 1."""

    def __init__(self, reset="subtract", tutorial=False):
        super().__init__()
        kw = {"init_hidden": True, "reset_mechanism": reset}
        layers = [nn.Conv2d(1, 4, 3, padding=1)] + ([nn.MaxPool2d(2)] if tutorial else [])
        layers += [snn.Leaky(beta=0.5, **kw), nn.Conv2d(4, 8, 3, padding=1), snn.Leaky(beta=0.9, threshold=0.7, **kw),
                   nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * (2 if tutorial else 4) ** 2, 3),
                   snn.Leaky(beta=0.8, output=True, **kw)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        from snntorch import utils

        utils.reset(self.net)
        spk_rec = []
        for step in range(T):
            spk, mem = self.net(x)
            spk_rec.append(spk)
        return torch.stack(spk_rec).sum(0)  # the prediction: spike counts over T


def f32(v: float) -> float:
    return float(torch.tensor(v, dtype=torch.float32))


def leakies(m):
    return [k for k, v in m.net.named_children() if isinstance(v, snn.Leaky)]


def own_counts(m, x) -> dict:
    """Each Leaky's spikes summed over T, from snntorch's own forward (hooks on every call)."""
    own, hooks = {}, []
    for k in leakies(m):
        def keep(mod, i, o, k=k):
            o = o[0] if isinstance(o, tuple) else o
            own[k] = own.get(k, 0) + o
        hooks.append(getattr(m.net, k).register_forward_hook(keep))
    with torch.no_grad():
        m(x)
    for h in hooks:
        h.remove()
    return own


def build(reset="subtract", tutorial=False):
    # utils.reset resets every Leaky ever built (a class-level list): during an export those of
    # earlier models would be assigned the export's fake tensors
    snn.SpikingNeuron.instances.clear()
    torch.manual_seed(0)
    m = CSNN(reset, tutorial).eval()
    with torch.no_grad():  # enough activity in every layer
        for mod in m.net:
            if isinstance(mod, (nn.Conv2d, nn.Linear)) and mod is not m.net[0]:
                mod.weight.mul_(4.0)
    return m


def cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "backends", "lava"),
                                                        os.path.join(ROOT, "backends", "speck")]),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([SNNCC, *args], cwd=cwd, capture_output=True, text=True, env=env)


@pytest.mark.parametrize("reset,path", [("subtract", "pt2"), ("zero", "module")])
def test_tutorial_loop_in_forward(tmp_path, reset, path):
    """pt2: exported at batch 1 -> `snncc compile m.pt2` -> `snncc verify` OK; module:
    `snncc.compile(model)` (the loop in forward is read through torch.export, not fx), verify OK.
    The three Leaky become stateful binary fires (strict `mem > threshold`; subtract: the threshold
    subtracted after the leak, leak_first, theta = threshold; zero: a reset to 0), and the compiled
    counts equal snntorch's own per neuron on seeded inputs."""
    m = build(reset)
    if path == "pt2":
        torch.export.save(torch.export.export(m, (torch.rand(1, 1, 8, 8),)), str(tmp_path / "m.pt2"))
        r = cli("compile", "m.pt2", "-o", "art", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        r = cli("verify", "m.pt2", "art", cwd=tmp_path)
        assert r.returncode == 0 and "verdict: OK" in r.stdout, r.stdout + r.stderr
        dep = snncc.load(str(tmp_path / "art"))
    else:
        dep = snncc.compile(m, torch.zeros(2, 1, 8, 8))
        x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(5)) * 3
        assert dep.verify(x).ok
    assert dep.deployed.T == T
    fires = [n for n in dep.traced.nodes if n.op == "fire"]
    assert len(fires) == 3
    a = fires[1].attrs
    if reset == "subtract":
        assert (a["rounding"], a["leak"], a["leak_first"], a["reset"], a["theta"], a["beta"]) == \
            ("strict", f32(0.9), True, "subtract", f32(0.7), 0.0)  # snntorch keeps them in float32
    else:
        assert (a["rounding"], a["leak"], a["reset"]) == ("strict", f32(0.9), "value")
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 3
    own = own_counts(m, x)
    counts = dep.reference(x).counts
    for k, f in zip(leakies(m), fires):
        assert torch.equal(counts[f.name].float(), own[k].reshape(counts[f.name].shape)), k
    assert all(own[k].sum() > 0 for k in own), {k: float(v.sum()) for k, v in own.items()}
    with torch.no_grad():
        assert torch.equal(dep.reference(x).output.float(), m(x))  # the counts of the last Leaky


def test_tutorial_max_pool_of_a_current_is_refused_in_one_line(tmp_path):
    """Conv -> MaxPool -> Leaky (the tutorial's order): a max of currents before a stateful
    neuron does not commute with it; one line naming the node, exit 2, nothing written."""
    m = build(tutorial=True)
    torch.export.save(torch.export.export(m, (torch.rand(1, 1, 8, 8),)), str(tmp_path / "m.pt2"))
    r = cli("compile", "m.pt2", "-o", "art", cwd=tmp_path)
    err = [line for line in r.stderr.splitlines() if line.startswith("snncc:")]
    assert r.returncode == 2 and len(err) == 1, r.stderr
    assert "'max_pool2d'" in err[0] and "max pooling of a current is not deployable" in err[0]
    assert not (tmp_path / "art").exists()


def test_module_and_batch1_program_give_the_same_deployed_graph():
    """`snncc.compile(module)` (traced at batch 2) and the program exported at batch 1: node for
    node the same deployed graph; each fire is named after its Leaky."""
    from test_research_pt2 import _same_graph

    m = build()
    prog = snncc.compile(torch.export.export(m, (torch.rand(1, 1, 8, 8),)))
    mod = snncc.compile(build(), torch.zeros(2, 1, 8, 8))
    _same_graph(prog.deployed, mod.deployed)
    assert [n.name for n in mod.deployed.neurons()] == [k.replace(".", "_") for k in
                                                         (f"net.{i}" for i in leakies(m))]
