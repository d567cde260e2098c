"""SpikeYOLO's `mem_update` neuron at T > 1 through the front door: a `.pt2` exported at batch 1
through the installed `snncc compile` / `snncc verify`, and the module through `snncc.compile`.

`mem_update` (BICLab/SpikeYOLO, written here in our own words) carries a membrane over the T
timesteps of a (T, B, ...) tensor in a Python loop: `mem = (mem_old - spike) * decay + x[t]`
(decay 0.25; `mem = x[0]` at t = 0), `spike = round(clamp(mem, 0, D))` (D = 4, no division by D),
`output[t] = spike` into `torch.zeros_like(x)`. That is the deployed neuron of docs/design.md §2.2
exactly: a stateful `fire` with soft reset by theta = 1, D = 4, leak = decay (the residual
`mem - spike` decays, also where the clamp cut the count and where the membrane is negative), and
`round` made `floor` by beta = 1/2 (ties counted by verify). The time axis comes from
`x.unsqueeze(0).repeat(T, 1, 1, 1, 1)` (`MS_GetT`); the prediction averages T away (`MS_CancelT`).
Both T compile through the installed command; T = 2 verifies through it too, T = 4 runs
`snncc.cli.main` in this process (tests/cli_run.py, read as the command's output): a torch import less.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import snncc
from nets import randomize_bn
from snncc.errors import SnnccError
from test_research_multistep import Quant
from cli_run import run_main
from test_research_pt2 import _cli, _export, _same_graph

DECAY, D = 0.25, 4


class MemUpdate(nn.Module):
    """The loop as SpikeYOLO writes it (detach, clone, a membrane that starts at the int 0)."""

    def forward(self, x):
        spike = torch.zeros_like(x[0]).to(x.device)
        output = torch.zeros_like(x)
        mem_old = 0
        for i in range(x.shape[0]):
            mem = (mem_old - spike.detach()) * DECAY + x[i] if i >= 1 else x[i]
            spike = Quant.apply(mem, 0, D)
            mem_old = mem.clone()
            output[i] = spike
        return output


class Block(nn.Module):
    """MS_GetT, then conv -> BN -> mem_update twice (1x1 convs: counts worked out by hand)."""

    def __init__(self, T):
        super().__init__()
        self.T = T
        self.c1, self.b1, self.n1 = nn.Conv2d(3, 3, 1, bias=False), nn.BatchNorm2d(3), MemUpdate()
        self.c2, self.b2, self.n2 = nn.Conv2d(3, 1, 1, bias=False), nn.BatchNorm2d(1), MemUpdate()
        with torch.no_grad():
            self.c1.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.c2.weight.copy_(torch.tensor([0.3, 1.2, 0.0]).view(1, 3, 1, 1))
            # b1: (x - 0.1) * 2 / sqrt(4 + eps) + 0.2 = x + 0.1 up to 3e-6; b2 the identity up to 5e-6
            self.b1.running_mean.fill_(0.1), self.b1.running_var.fill_(4.0), self.b1.weight.fill_(2.0)
            self.b1.bias.fill_(0.2)

    def forward(self, x):
        x = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        T, B = x.shape[:2]
        x = self.b1(self.c1(x.flatten(0, 1))).reshape(T, B, 3, 1, 1)
        s = self.n1(x)
        y = self.b2(self.c2(s.flatten(0, 1))).reshape(T, B, 1, 1, 1)
        return self.n2(y).flatten(2).mean(0)


# currents after b1 (4.6, 0.45, 0.3) at every step (repeated input):
#   n1[0] = 4, 4, 4, 4: mem 4.6 -> clamp 4; then 0.6 * 0.25 + 4.6 = 4.75, 4.7875, 4.796875 (clamped)
#   n1[1] = 0, 1, 0, 1: mem 0.45, 0.5625, (0.5625 - 1) * 0.25 + 0.45 = 0.340625, 0.53515625
#   n1[2] = 0, 0, 0, 0: mem 0.3, 0.375, 0.39375, 0.3984375 (integrate-and-fire, leak 1: 0, 1, 0, 0)
# n2's current 0.3 n1[0] + 1.2 n1[1] = 1.2, 2.4, 1.2, 2.4:
#   mem 1.2 -> 1; 0.2 * 0.25 + 2.4 = 2.45 -> 2; 0.45 * 0.25 + 1.2 = 1.3125 -> 1; 0.3125 * 0.25 + 2.4 -> 2
# (without the leak: 1, 3, 1, 2 = 7; stateless: 1 per step = 4)
HAND = {2: ([8, 1, 0], [3]), 4: ([16, 2, 0], [6])}


def _eager_counts(model, x, names):
    """Spike counts of the named mem_update modules summed over T, from the eager model (hooks)."""
    got = {}
    hooks = [model.get_submodule(k).register_forward_hook(lambda m, i, o, k=k: got.__setitem__(k, o.sum(0)))
             for k in names]
    with torch.no_grad():
        model(x.float())
    for h in hooks:
        h.remove()
    return got


@pytest.mark.parametrize("T", [2, 4])
def test_mem_update_block_pt2_at_batch_1_through_the_installed_command(T, tmp_path):
    m = Block(T).eval()
    x = torch.tensor([4.5, 0.35, 0.2]).view(1, 3, 1, 1)
    assert m(x).item() == sum(HAND[T][1]) / T  # the eager model agrees with the hand count
    pt2, out = tmp_path / "block.pt2", tmp_path / "out"
    _export(m, x, pt2)
    code, o, e = _cli("compile", pt2, "-o", out)
    assert code == 0, e
    code, o, e = (_cli if T == 2 else run_main)("verify", pt2, out, "--samples", "2")
    assert code == 0 and "verdict: OK" in o, o + e
    rows = {r.split()[0]: r.split() for r in o.splitlines() if r.split()[:1] in (["traced"], ["deployed"])}
    assert rows["traced"][2] == rows["deployed"][2] == "0"  # count diffs
    dep = snncc.load(str(out))
    fires = [n for n in dep.traced.nodes if n.op == "fire"]
    assert dep.deployed.T == T and [n.name for n in fires] == ["n1", "n2"]
    assert all((n.attrs["stateful"], n.attrs["leak"], n.attrs["D"], n.attrs["norm"], n.attrs["reset"])
               == (True, DECAY, D, 1.0, "subtract") for n in fires)
    ref, sim = dep.reference(x), dep.simulate(x, "exact")
    n1, n2 = HAND[T]
    assert ref.counts["n1"].flatten().tolist() == n1 and ref.counts["n2"].flatten().tolist() == n2
    assert all(torch.equal(sim.counts[k], c) for k, c in ref.counts.items())
    # the module through the API: the same deployed graph
    snncc.compile(m, x.repeat(2, 1, 1, 1)).save(str(tmp_path / "module"))
    _same_graph(snncc.load(str(out)).deployed, snncc.load(str(tmp_path / "module")).deployed)


def test_mem_update_leak_is_refused_by_speck_in_one_line():
    with pytest.raises(SnnccError) as e:
        snncc.compile(Block(4).eval(), torch.zeros(2, 3, 1, 1), target="speck")
    line = e.value.one_line()
    assert "layer n1: leaky neuron (leak 0.25 per timestep) over T=4 timesteps; Speck's IAF membrane has no leak" \
        in line and "\n" not in line


class BNPad(nn.Module):
    """BatchNorm whose output is padded with BN(0) per channel (SpikeYOLO's BNAndPadLayer)."""

    def __init__(self, c, p=1):
        super().__init__()
        self.bn, self.p = nn.BatchNorm2d(c), p

    def forward(self, x):
        bn = self.bn
        y = F.pad(bn(x), [self.p] * 4)
        fill = (bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)).view(1, -1, 1, 1)
        p = self.p
        y[:, :, :p, :], y[:, :, -p:, :], y[:, :, :, :p], y[:, :, :, -p:] = fill, fill, fill, fill
        return y


def rep_conv(ci, co):
    """conv1x1 -> BN-and-pad -> depthwise 3x3 (pad 0) -> conv1x1 -> BN (SpikeYOLO's RepConv)."""
    return nn.Sequential(nn.Conv2d(ci, ci, 1, bias=False), BNPad(ci), nn.Conv2d(ci, ci, 3, groups=ci, bias=False),
                         nn.Conv2d(ci, co, 1, bias=False), nn.BatchNorm2d(co))


class Spiked(nn.Module):
    """mem_update -> layer on x.flatten(0, 1) -> BN, back to (T, B, ...) (MS_StandardConv's order)."""

    def __init__(self, layer, co, stride=1):
        super().__init__()
        self.lif, self.layer, self.bn, self.stride = MemUpdate(), layer, nn.BatchNorm2d(co), stride

    def forward(self, x):
        T, B, _, H, W = x.shape
        y = self.bn(self.layer(self.lif(x).flatten(0, 1)))
        return y.reshape(T, B, -1, H // self.stride, W // self.stride)


class Backbone(nn.Module):
    """MS_GetT, the encoding conv, a conv block (separable convs, RepConvs, two membrane
    shortcuts), a strided MS_StandardConv, a last mem_update, mean over space and T, a head."""

    def __init__(self, T, C=4):
        super().__init__()
        self.T = T
        self.enc, self.enc_bn = nn.Conv2d(3, C, 3, 2, 1), nn.BatchNorm2d(C)
        self.pw1 = Spiked(nn.Conv2d(C, 2 * C, 1, bias=False), 2 * C)
        self.dw = Spiked(nn.Conv2d(2 * C, 2 * C, 3, padding=1, groups=2 * C, bias=False), 2 * C)
        self.pw2 = Spiked(nn.Sequential(BNPad(2 * C), nn.Conv2d(2 * C, C, 1, bias=False),
                                        nn.Conv2d(C, C, 3, groups=C, bias=False)), C)
        self.mlp1, self.mlp2 = Spiked(rep_conv(C, 2 * C), 2 * C), Spiked(rep_conv(2 * C, C), C)
        self.down = Spiked(nn.Conv2d(C, 6, 3, 2, 1, bias=False), 6, stride=2)
        self.lif, self.head = MemUpdate(), nn.Linear(6, 5)

    def forward(self, x):
        x = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        T, B = x.shape[:2]
        x = self.enc(x.flatten(0, 1))
        x = self.enc_bn(x).reshape(T, B, *x.shape[1:]).contiguous()
        x = self.pw2(self.dw(self.pw1(x))) + x
        x = self.mlp2(self.mlp1(x)) + x
        s = self.lif(self.down(x))
        return self.head(s.flatten(3).mean(3).mean(0))


LIFS = ("pw1.lif", "dw.lif", "pw2.lif", "mlp1.lif", "mlp2.lif", "down.lif", "lif")


def test_spikeyolo_like_backbone_at_t4_program_and_module_agree_with_eager():
    """Seven mem_updates at T = 4 (on membrane shortcuts, after re-parameterised RepConvs): the
    batch-1 program and the module give one deployed graph, every fire stateful with leak 0.25,
    verify OK, and the reference counts equal the eager model's bit for bit (not those of the
    same network with decay 1)."""
    torch.manual_seed(0)
    m = randomize_bn(Backbone(4))
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2
    dep = snncc.compile(torch.export.export(m, (x[:1],)))
    _same_graph(dep.deployed, snncc.compile(m, x[:2]).deployed)
    fires = [n for n in dep.traced.nodes if n.op == "fire"]
    assert len(fires) == 7 and all((n.attrs["stateful"], n.attrs["leak"]) == (True, DECAY) for n in fires)
    rep = dep.verify(x)
    assert rep.ok and all(lv.count_mismatches == 0 for lv in rep.levels[1:]), rep.table()
    ref = dep.reference(x)
    eager = _eager_counts(m, x, LIFS)
    names = {k: k.replace(".", "_") for k in LIFS}
    assert all(torch.equal(ref.counts[names[k]].float(), eager[k]) and eager[k].sum() > 0 for k in LIFS)
    global DECAY
    DECAY, leak1 = 1.0, DECAY
    try:
        assert any(not torch.equal(_eager_counts(m, x, LIFS)[k], eager[k]) for k in LIFS)
    finally:
        DECAY = leak1


class SpikeConv(nn.Module):
    """mem_update -> 1x1 conv -> BN on (T, B, C, H, W) (SpikeYOLO's SpikeConv)."""

    def __init__(self, ci, co):
        super().__init__()
        self.lif, self.conv, self.bn = MemUpdate(), nn.Conv2d(ci, co, 1, bias=False), nn.BatchNorm2d(co)

    def forward(self, x):
        T, B, _, H, W = x.shape
        return self.bn(self.conv(self.lif(x).flatten(0, 1))).reshape(T, B, -1, H, W)


class SPPFNet(nn.Module):
    """SpikeYOLO's SpikeSPPF between MS_GetT and MS_CancelT: three 5x5 max pools of cv1's BN
    output (currents), concatenated with it along channels and read by cv2's mem_update."""

    def __init__(self, T):
        super().__init__()
        self.T = T
        self.enc, self.enc_bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.cv1, self.cv2, self.m = SpikeConv(8, 4), SpikeConv(16, 8), nn.MaxPool2d(5, 1, 2)
        self.lif = MemUpdate()

    def forward(self, x):
        x = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        T, B = x.shape[:2]
        x = self.cv1(self.enc_bn(self.enc(x.flatten(0, 1))).reshape(T, B, 8, 8, 8))
        y1 = self.m(x.flatten(0, 1)).reshape(T, B, -1, 8, 8)
        y2 = self.m(y1.flatten(0, 1)).reshape(T, B, -1, 8, 8)
        y3 = self.m(y2.flatten(0, 1)).reshape(T, B, -1, 8, 8)
        x = self.cv2(torch.cat((x, y1, y2, y3), 2))
        return self.lif(x).flatten(3).mean(3).mean(0)


def test_sppf_read_by_mem_update_deploys_at_t1_and_is_refused_at_t2_in_one_line():
    """At T = 1 (SpikeYOLO's shipped configuration, `MS_GetT [3, 1]`) mem_update keeps nothing
    between steps: a stateless fire, which commutes with the max pools and the cat, so it fires
    once on cv1's current and its spikes are pooled (it was refused: the loop read the held-back
    max as a tensor). At T = 2 the membrane carries over the steps: refused in one line."""
    torch.manual_seed(0)
    m = randomize_bn(SPPFNet(1))
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 2
    dep = snncc.compile(torch.export.export(m, (x[:1],)))
    _same_graph(dep.deployed, snncc.compile(m, x[:2]).deployed)
    t = {n.name: n for n in dep.traced.nodes}
    assert [n.name for n in dep.traced.nodes if n.op == "fire"] == ["cv1_lif", "cv2_lif", "lif"]
    assert not any(n.attrs["stateful"] for n in dep.traced.nodes if n.op == "fire")
    assert [t[n].op for n in ("cv2_lif_max_pool", "cv2_lif_max_pool_max_pool", "cv2_lif_cat")] == \
        ["max_pool", "max_pool", "add"]
    rep = dep.verify(x)
    assert rep.ok and all(lv.count_mismatches == 0 for lv in rep.levels[1:]), rep.table()
    ref, eager = dep.reference(x), _eager_counts(m, x, ("cv1.lif", "cv2.lif", "lif"))
    assert torch.equal(ref.counts["cv1_lif"].float(), eager["cv1.lif"])
    assert torch.equal(ref.counts["cv2_lif"].float(), eager["cv2.lif"][:, :4])  # its spikes before the pools
    assert torch.equal(ref.counts["lif"].float(), eager["lif"]) and eager["lif"].sum() > 0
    with pytest.raises(SnnccError) as e:
        snncc.compile(torch.export.export(randomize_bn(SPPFNet(2)), (x[:1],)))
    line = e.value.one_line()
    assert "max pooling of a current before a stateful neuron is not deployable: the neuron carries its membrane " \
           "over the T = 2 time steps (leak 0.25), and the integral of a max is not the max of the integrals" in line
    assert "(max-pool the neuron's spikes (conv-bn-neuron-maxpool), or compile at T = 1)" in line and "\n" not in line
