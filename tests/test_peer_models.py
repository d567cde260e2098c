"""Models written with peers' layers compile directly (snncc/frontend/peers.py): a sinabs network
(nn.Conv2d / nn.Linear + IAFSqueeze with MaxSpike or MultiSpike, MembraneSubtract, SumPool2d) and a
SpikingJelly one (IFNode, soft reset) give, population by population, the same spike counts in
snncc's deployed graph (for every target) as in the peer's own forward pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import snncc
from snncc.errors import FrontendError
from snncc.sim import reference

import sinabs.layers as sl
from sinabs.activation import MaxSpike, MembraneReset, MembraneSubtract, MultiSpike

T, B = 3, 4


def sinabs_net(first=None, last=None, T=T):
    iaf = lambda fn, th=1.0: sl.IAFSqueeze(num_timesteps=T, spike_fn=fn, reset_fn=MembraneSubtract(),  # noqa: E731
                                            spike_threshold=torch.tensor(th))
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), iaf(first or MaxSpike(4), 0.75), sl.SumPool2d(2),
                      nn.Conv2d(4, 6, 3, padding=1), iaf(MaxSpike(4)),
                      nn.Flatten(), nn.Linear(6 * 4 * 4, 5, bias=False), iaf(last or MaxSpike(4), 0.5))
    with torch.no_grad():
        for mod in m:
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                mod.weight.mul_(3.0)
    return m


def peer_counts(m, x):
    """Spike counts of every IAFSqueeze in sinabs' own forward over (B, T, ...) input (its squeezed
    layout, batch-major (B*T, ...)), summed over T."""
    counts = {}
    hooks = [mod.register_forward_hook(lambda mod, i, o, k=k: counts.__setitem__(k, o.detach()))
             for k, mod in m.named_modules() if isinstance(mod, sl.IAFSqueeze)]
    for mod in m.modules():
        if hasattr(mod, "reset_states"):
            mod.reset_states()
    with torch.no_grad():
        m(x.flatten(0, 1))
    for h in hooks:
        h.remove()
    return {k: v.reshape(B, T, *v.shape[1:]).sum(1).double() for k, v in counts.items()}


def assert_counts(dep, x, peer):
    ref = reference.run(dep.deployed, x.transpose(0, 1), torch.float64)
    assert set(ref.counts) == set(peer)
    for k, v in peer.items():
        assert torch.equal(ref.counts[k].double(), v), k
    assert all(v.sum() > 0 for v in peer.values())  # every layer fires: the comparison is not vacuous
    return ref


@pytest.mark.parametrize("first,last", [(None, None), (MultiSpike, MultiSpike)], ids=["MaxSpike", "MultiSpike"])
def test_sinabs_network_counts_equal_sinabs_forward(first, last):
    m = sinabs_net(first, last)
    x = torch.randint(0, 3, (B, T, 2, 8, 8)).float()
    peer = peer_counts(m, x)
    dep = snncc.compile(m, torch.zeros(1, 2, 8, 8), target="sim", input_kind="spike", timesteps=T)
    fires = {n.name: n for n in dep.traced.nodes if n.op == "fire"}
    # the peer's neurons enter the IR as stateful floor neurons: sinabs' MultiSpike truncates
    assert {k: (n.attrs["D"], n.attrs["rounding"], n.attrs["stateful"]) for k, n in fires.items()} == {
        "1": (32768 if first else 4, "floor", True), "4": (4, "floor", True), "7": (32768 if last else 4, "floor", True)}
    assert [fires[k].attrs["theta"] for k in ("1", "4", "7")] == [0.75, 1.0, 0.5]
    assert_counts(dep, x, peer)


@pytest.mark.parametrize("target", ["speck", "loihi"])
def test_sinabs_network_compiles_for_chip_targets(target):
    m = sinabs_net()
    x = torch.randint(0, 3, (B, T, 2, 8, 8)).float()
    peer = peer_counts(m, x)
    dep = snncc.compile(m, torch.zeros(1, 2, 8, 8), target=target, input_kind="spike", timesteps=T)
    assert dep.manifest["target"] == target
    assert_counts(dep, x, peer)


def test_sinabs_refusals():
    bad = nn.Sequential(nn.Conv2d(1, 2, 3), sl.IAFSqueeze(num_timesteps=1, reset_fn=MembraneReset()))
    with pytest.raises(FrontendError, match=r"module 1: reset_fn MembraneReset\(reset_value=0.0\): snncc's neuron subtracts"):
        snncc.compile(bad, torch.zeros(1, 1, 5, 5), input_kind="spike")
    bad = nn.Sequential(nn.Conv2d(1, 2, 3), sl.IAFSqueeze(num_timesteps=1, min_v_mem=-1.0))
    with pytest.raises(FrontendError, match="module 1: min_v_mem=-1.0: a lower membrane bound is not modelled"):
        snncc.compile(bad, torch.zeros(1, 1, 5, 5), input_kind="spike")
    bad = nn.Sequential(nn.Linear(4, 2), sl.IAF())
    with pytest.raises(FrontendError, match="module 1: sinabs IAF: snncc reads IAFSqueeze"):
        snncc.compile(bad, torch.zeros(1, 4), input_kind="spike")


def test_spikingjelly_network_counts_equal_its_forward():
    from spikingjelly.activation_based import functional, neuron

    torch.manual_seed(1)
    m = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), neuron.IFNode(v_threshold=0.5, v_reset=None),
                      nn.Flatten(), nn.Linear(4 * 6 * 6, 5), neuron.IFNode(v_reset=None))
    with torch.no_grad():
        m[0].weight.mul_(2.0)
        m[3].weight.mul_(4.0)
    x = torch.randint(0, 2, (B, T, 2, 6, 6)).float()
    counts = {"1": 0, "4": 0}
    hooks = [m[int(k)].register_forward_hook(lambda mod, i, o, k=k: counts.__setitem__(k, counts[k] + o.double()))
             for k in counts]
    functional.reset_net(m)
    with torch.no_grad():
        for t in range(T):
            m(x[:, t])
    for h in hooks:
        h.remove()
    dep = snncc.compile(m, torch.zeros(1, 2, 6, 6), target="sim", input_kind="spike", timesteps=T)
    fires = {n.name: n.attrs for n in dep.traced.nodes if n.op == "fire"}
    assert {k: (a["D"], a["theta"], a["rounding"], a["stateful"]) for k, a in fires.items()} == {
        "1": (1, 0.5, "floor", True), "4": (1, 1.0, "floor", True)}
    assert_counts(dep, x, counts)
    hard = nn.Sequential(nn.Linear(4, 2), neuron.IFNode())  # v_reset=0.0: a hard reset (tests/test_binary_neurons.py)
    (f,) = [n for n in snncc.compile(hard, torch.zeros(1, 4), input_kind="spike").traced.nodes if n.op == "fire"]
    assert (f.attrs["reset"], f.attrs["beta"]) == ("value", 0.0)
    from spikingjelly.activation_based import surrogate

    multi = nn.Sequential(nn.Linear(4, 2), neuron.IFNode(v_reset=None, surrogate_function=surrogate.MultiLevelSpikeCount(4)))
    with pytest.raises(FrontendError, match=r"module 1: IFNode with MultiLevelSpikeCount in single-step mode"):
        snncc.compile(multi, torch.zeros(1, 4), input_kind="spike")
    with pytest.raises(FrontendError, match="module 1: SpikingJelly ParametricLIFNode is a neuron without a deployed"):
        snncc.compile(nn.Sequential(nn.Linear(4, 2), neuron.ParametricLIFNode()), torch.zeros(1, 4), input_kind="spike")


@pytest.mark.parametrize("decay_input", [False, True])
def test_spikingjelly_single_step_lif_node_counts_equal_its_forward(decay_input):
    """LIFNode(v_reset=None) called once per timestep: h = v - v/tau + x (decay_input=False) or
    h = v + (x - v)/tau (True), one spike when h >= v_threshold, v = h - spike * v_threshold: the
    peer neuron with leak 1 - 1/tau, on the input current times 1/tau when the input decays too."""
    from spikingjelly.activation_based import functional, neuron

    B, T = 3, 4
    torch.manual_seed(2)
    m = nn.Sequential(nn.Linear(6, 5), neuron.LIFNode(tau=2.0, decay_input=decay_input, v_reset=None, v_threshold=0.5))
    with torch.no_grad():
        m[0].weight.mul_(3.0)
    x = torch.randint(0, 2, (B, T, 6)).float()
    counts = {"1": 0}
    h = m[1].register_forward_hook(lambda mod, i, o: counts.__setitem__("1", counts["1"] + o.double()))
    functional.reset_net(m)
    with torch.no_grad():
        for t in range(T):
            m(x[:, t])
    h.remove()
    functional.reset_net(m)
    dep = snncc.compile(m, torch.zeros(1, 6), target="sim", input_kind="spike", timesteps=T)
    (a,) = [n.attrs for n in dep.traced.nodes if n.op == "fire"]
    assert (a["D"], a["theta"], a["rounding"], a["stateful"], a["leak"]) == (1, 0.5, "floor", True, 0.5)
    scales = [float(n.params["factor"]) for n in dep.traced.nodes if n.op == "scale"]
    assert scales == ([0.5] if decay_input else [])  # the input's 1/tau
    assert_counts(dep, x, counts)


def test_sinabs_model_compiles_from_the_command_line(tmp_path):
    """A sinabs factory + state_dict through the CLI, for Speck, like any torch model."""
    import subprocess
    import sys

    (tmp_path / "peer_net.py").write_text(
        "import torch, torch.nn as nn\n"
        "from sinabs.layers import IAFSqueeze, SumPool2d\n"
        "from sinabs.activation import MaxSpike, MembraneSubtract\n"
        "def make(T=3):\n"
        "    iaf = lambda: IAFSqueeze(num_timesteps=T, spike_fn=MaxSpike(4), reset_fn=MembraneSubtract())\n"
        "    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), iaf(), SumPool2d(2),\n"
        "                         nn.Conv2d(4, 5, 4, bias=False), iaf())\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import peer_net
        torch.manual_seed(0)
        m = peer_net.make()
    finally:
        sys.path.remove(str(tmp_path))
    torch.save(m.state_dict(), tmp_path / "w.pt")
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "snncc.cli", "compile", str(tmp_path / "w.pt"), "--model-def",
                        f"{tmp_path / 'peer_net.py'}:make", "--input-shape", "2,8,8", "--input-kind", "spike",
                        "--timesteps", "3", "--target", "speck", "-o", str(out)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    g = snncc.load(str(out)).deployed
    assert [(n.name, n.attrs["D"], n.attrs["stateful"]) for n in g.nodes if n.op == "fire"] == [("1", 4, True), ("4", 4, True)]


def test_sinabs_program_is_refused_in_one_line_pointing_to_the_module_path(tmp_path, snncc_main):
    """A sinabs network exported with torch.export (at B*T = 1 sample x T: its squeezed layers take
    no batch of 1) has no neuron left to read, only its membrane state unrolled over the batch:
    `snncc compile` says so in one line naming the layer and the way that works (the state_dict
    with --model-def, test above), exit 2, nothing written."""
    import warnings

    m = sinabs_net().eval()
    pt2 = tmp_path / "sinabs.pt2"
    with warnings.catch_warnings():  # (torch's note on sinabs' firing_rate attributes)
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(m, (torch.zeros(T, 2, 8, 8),)), str(pt2))
    out = tmp_path / "out"
    code, o, e = snncc_main("compile", pt2, "--input-kind", "spike", "-o", out)
    assert code == 2 and not out.exists()
    assert e.strip() == (f"snncc: error: {pt2}: sinabs IAFSqueeze layer '1' in a torch.export program: the export "
                         "unrolls its membrane state over the (B*T, ...) batch, which snncc reads from the sinabs "
                         "module, not from a .pt2 (save model.state_dict() and compile it with --model-def "
                         "file.py:factory --input-kind spike (T from num_timesteps), or call snncc.compile(model, "
                         "example) in Python)")
