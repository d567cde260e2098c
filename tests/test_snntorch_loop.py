"""snntorch's tutorial CSNN with its loop over T written in `forward` (`utils.reset(net)`, then
`for step in range(T): spk, mem = net(x)`; Leaky(beta, init_hidden=True), the last output=True),
exported with torch.export at batch 1 and compiled through the `snncc` command (the installed one
for the first model; `snncc.cli.main` in this process, read as the command's output, for the
tutorial's order and the refusal: a torch import less each): every Leaky's spike counts equal
snntorch's own forward, per neuron. The tutorial's first block
Conv -> MaxPool -> Leaky on the image pools the input's encoding (host domain: a current computed
from the image alone) and deploys; its second block's max pool of a current that depends on the
first Leaky's spikes is refused in one line naming that node."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

import snncc
import snncc.sim.reference
from cli_run import run_main
from snncc.ir.analysis import host_domain

snn = pytest.importorskip("snntorch")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SNNCC = os.path.join(os.path.dirname(sys.executable), "snncc")
T = 5


class CSNN(nn.Module):
    """Conv-[MaxPool]-Leaky, Conv-Leaky-MaxPool, Linear-Leaky(output=True), the loop over T in
    forward on a static image; `tutorial`: the tutorial's order Conv-MaxPool-Leaky in block 1;
    `second`: in block 2 too (snntorch tutorial 6's CSNN, layer for layer)."""

    def __init__(self, reset="subtract", tutorial=False, second=False):
        super().__init__()
        kw = {"init_hidden": True, "reset_mechanism": reset}
        layers = [nn.Conv2d(1, 4, 3, padding=1)] + ([nn.MaxPool2d(2)] if tutorial else [])
        layers += [snn.Leaky(beta=0.5, **kw), nn.Conv2d(4, 8, 3, padding=1)]
        block2 = [nn.MaxPool2d(2), snn.Leaky(beta=0.9, threshold=0.7, **kw)]  # the tutorial's order
        layers += block2 if second else block2[::-1]
        layers += [nn.Flatten(), nn.Linear(8 * (2 if tutorial else 4) ** 2, 3), snn.Leaky(beta=0.8, output=True, **kw)]
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


def build(reset="subtract", tutorial=False, second=False):
    # utils.reset resets every Leaky ever built (a class-level list): during an export those of
    # earlier models would be assigned the export's fake tensors
    snn.SpikingNeuron.instances.clear()
    torch.manual_seed(0)
    m = CSNN(reset, tutorial, second).eval()
    with torch.no_grad():  # enough activity in every layer
        for mod in m.net:
            if isinstance(mod, (nn.Conv2d, nn.Linear)) and mod is not m.net[0]:
                mod.weight.mul_(4.0)
    return m


def cli(*args, cwd, installed=True):
    """`snncc ARGS` run from `cwd`: (exit code, stdout, stderr); the installed command, or
    `snncc.cli.main` in this process (`installed=False`)."""
    if not installed:
        return run_main(*args, cwd=cwd)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "backends", "lava"),
                                                        os.path.join(ROOT, "backends", "speck")]),
           "OMP_NUM_THREADS": "1"}
    r = subprocess.run([SNNCC, *args], cwd=cwd, capture_output=True, text=True, env=env)
    return r.returncode, r.stdout, r.stderr


@pytest.mark.parametrize("reset,path,tutorial", [("subtract", "pt2", False), ("zero", "module", False),
                                                  ("subtract", "pt2", True)])
def test_tutorial_loop_in_forward(tmp_path, reset, path, tutorial):
    """pt2: exported at batch 1 -> `snncc compile m.pt2` -> `snncc verify` OK; module:
    `snncc.compile(model)` (the loop in forward is read through torch.export, not fx), verify OK.
    The three Leaky become stateful binary fires (strict `mem > threshold`; subtract: the threshold
    subtracted after the leak, leak_first, theta = threshold; zero: a reset to 0), and the compiled
    counts equal snntorch's own per neuron on seeded inputs. `tutorial`: block 1 is the tutorial's
    Conv -> MaxPool -> Leaky; the max pool stays a current on the image's encoding (host domain),
    the first Leaky's input current."""
    m = build(reset, tutorial)
    if path == "pt2":
        torch.export.save(torch.export.export(m, (torch.rand(1, 1, 8, 8),)), str(tmp_path / "m.pt2"))
        code, o, e = cli("compile", "m.pt2", "-o", "art", cwd=tmp_path, installed=not tutorial)
        assert code == 0, e
        code, o, e = cli("verify", "m.pt2", "art", cwd=tmp_path, installed=not tutorial)
        assert code == 0 and "verdict: OK" in o, o + e
        dep = snncc.load(str(tmp_path / "art"))
    else:
        dep = snncc.compile(m, torch.zeros(2, 1, 8, 8))
        x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(5)) * 3
        assert dep.verify(x).ok
    assert dep.deployed.T == T
    pools = [n for n in dep.deployed.nodes if n.op == "max_pool"]
    assert [n.kind for n in pools] == (["current", "spike"] if tutorial else ["spike"])
    if tutorial:
        assert pools[0].inputs == ["net_0"] and dep.deployed.users()[pools[0].name][0].name == "net_2"
        assert pools[0].name in host_domain(dep.deployed) and "net_2" not in host_domain(dep.deployed)
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


def test_tutorial_second_block_max_pool_of_a_current_is_refused_in_one_line(tmp_path):
    """snntorch tutorial 6's CSNN layer for layer (Conv-MaxPool-Leaky twice): block 1 pools the
    image's encoding and deploys; block 2's max pool reads a current that depends on the first
    Leaky's spikes: a max of currents before a stateful neuron does not commute with it. One line
    naming that node (net.4), exit 2, nothing written."""
    m = build(tutorial=True, second=True)
    torch.export.save(torch.export.export(m, (torch.rand(1, 1, 8, 8),)), str(tmp_path / "m.pt2"))
    code, _, e = cli("compile", "m.pt2", "-o", "art", cwd=tmp_path, installed=False)
    err = [line for line in e.splitlines() if line.startswith("snncc:")]
    assert code == 2 and len(err) == 1, e
    assert "'max_pool2d_1', module net.4 (MaxPool2d)" in err[0], err[0]
    assert "max pooling of a current is not deployable here" in err[0] and "depends on a neuron's spikes" in err[0]
    assert not (tmp_path / "art").exists()


def test_tutorial_first_block_in_the_simulators():
    """Conv -> MaxPool -> Leaky (block 1 of the tutorial): on the deployed graph the synchronous
    simulator and the event simulator (ideal policy) give the reference's counts per neuron,
    the max of the image's encoding computed as the host current of the first Leaky."""
    from snncc.sim import sync
    from snncc.sim.events import build_network, simulate

    dep = snncc.compile(torch.export.export(build(tutorial=True), (torch.rand(1, 1, 8, 8),))).deployed
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(7)) * 3
    ref = snncc.sim.reference.run(dep, x).counts
    fires = [n.name for n in dep.neurons()]
    assert all(ref[f].sum() > 0 for f in fires)
    got = sync.simulate(dep, x).counts
    net = build_network(dep)
    assert net.host_fed == ["net_2"] and list(net.max_pools) == ["net_5_max_pool2d_1"]
    ev = simulate(net, x, policy="ideal").counts  # greedy refuses snntorch's leak-first strict neuron
    for f in fires:
        assert torch.equal(torch.as_tensor(got[f]).double(), ref[f].double()), f
        assert torch.equal(torch.as_tensor(ev[f]).double(), ref[f].double()), f


@pytest.mark.parametrize("tutorial", [False, True])
def test_module_and_batch1_program_give_the_same_deployed_graph(tutorial):
    """`snncc.compile(module)` (traced at batch 2) and the program exported at batch 1: node for
    node the same deployed graph (`tutorial`: with block 1's max pool of the image's encoding);
    each fire is named after its Leaky."""
    from test_research_pt2 import _same_graph

    m = build(tutorial=tutorial)
    prog = snncc.compile(torch.export.export(m, (torch.rand(1, 1, 8, 8),)))
    mod = snncc.compile(build(tutorial=tutorial), torch.zeros(2, 1, 8, 8))
    _same_graph(prog.deployed, mod.deployed)
    assert [n.name for n in mod.deployed.neurons()] == [k.replace(".", "_") for k in
                                                         (f"net.{i}" for i in leakies(m))]
