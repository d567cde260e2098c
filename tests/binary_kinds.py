"""Small binary-spike models of each kind the field trains, for the backend tests
(backends/lava/tests/test_binary_kinds.py, backends/speck/tests/test_speck_binary_kinds.py): a
SEW-ResNet built from SpikingJelly 2.0's own IFNode and SEW BasicBlock (hard reset, ADD
shortcut, max-pool or avg-pool stem), a snntorch CSNN (Leaky, the loop over T in forward,
the threshold subtracted after the leak) and a Meta-SpikeFormer-style model in the old
`clock_driven` idiom (MultiStepLIFNode tau 2, decay_input, hard reset; `x.unsqueeze(0).repeat(T, ...)`,
a membrane shortcut, the attention LIF's threshold 0.5); each exported at batch 1 with the command
line's help (`export`)."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import torch
import torch.nn as nn

from test_binary_neurons import MultiStepLIFNode

SNNCC = os.path.join(os.path.dirname(sys.executable), "snncc")
T = 3


def cli(*args):
    return subprocess.run([SNNCC, *map(str, args)], capture_output=True, text=True, timeout=900)


def _no_torchvision():
    """SpikingJelly's model zoo imports torchvision only for `load_state_dict_from_url` (pretrained
    weights, unused); the CPU torch here cannot load PyPI's torchvision (tests/test_jelly_resnets.py)."""
    utils = types.ModuleType("torchvision.models.utils")
    utils.load_state_dict_from_url = torch.hub.load_state_dict_from_url
    for name in ("torchvision", "torchvision.models"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules.setdefault("torchvision.models.utils", utils)


def _trained_bn(m):
    for mod in m.modules():  # trained-like statistics, so that every layer fires
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
            mod.weight.data.uniform_(0.8, 1.5)
            mod.bias.data.uniform_(0.1, 0.5)


def sew(pool="max", shortcut=True, blocks=1):
    """SpikingJelly 2.0: conv-BN-IFNode-pool stem, one SEW BasicBlock (cnf ADD: spikes + spikes),
    a stride-2 conv-IFNode (the ADD feeds its synapses), a linear head; multi-step, (T, B, 2, 8, 8). `pool=None`:
    a stem without pooling (the ADD sums two binary spike maps: a Speck merge). `blocks=n`: n SEW blocks in a row
    (block_0, block_1, ...). `shortcut=False`: the block's two conv-BN-IFNode without the ADD (a plain spiking
    CNN of the same nodes)."""
    _no_torchvision()
    from spikingjelly.activation_based import functional, layer, neuron
    from spikingjelly.activation_based.model import sew_resnet

    class Sew(nn.Module):
        def __init__(self):
            super().__init__()
            pools = {"max": [layer.MaxPool2d(2)], "avg": [layer.AvgPool2d(2)], None: []}[pool]
            self.stem = nn.Sequential(layer.Conv2d(2, 4, 3, padding=1, bias=False), layer.BatchNorm2d(4),
                                      neuron.IFNode(), *pools)
            if shortcut:
                sew_blocks = [sew_resnet.BasicBlock(4, 4, cnf="ADD", spiking_neuron=neuron.IFNode)
                              for _ in range(blocks)]
                self.block = sew_blocks[0] if blocks == 1 else nn.Sequential(*sew_blocks)
            else:
                self.block = nn.Sequential(layer.Conv2d(4, 4, 3, padding=1, bias=False), layer.BatchNorm2d(4),
                                           neuron.IFNode(), layer.Conv2d(4, 4, 3, padding=1, bias=False),
                                           layer.BatchNorm2d(4), neuron.IFNode())
            self.down = nn.Sequential(layer.Conv2d(4, 4, 3, stride=2, padding=1, bias=False), neuron.IFNode())
            side = 2 if pool else 4  # the stride-2 conv's map
            self.flat, self.fc = layer.Flatten(), layer.Linear(4 * side * side, 3, bias=False)

        def forward(self, x):
            return self.fc(self.flat(self.down(self.block(self.stem(x)))))

    torch.manual_seed(0)
    m = Sew()
    functional.set_step_mode(m, "m")
    _trained_bn(m)
    if not shortcut:  # enough activity on sparse spike input (Speck)
        with torch.no_grad():
            for c in (m.block[0], m.block[3], m.down[0]):
                c.weight.mul_(3.0)
    return m.eval(), torch.rand(T, 1, 2, 8, 8), lambda: functional.reset_net(m)


def snntorch_csnn():
    """snntorch 1.0 tutorial-style CSNN without the pools: Conv-Leaky, Conv(stride 2)-Leaky,
    Linear-Leaky(output=True), init_hidden, `utils.reset` then the loop over T in forward."""
    import snntorch as snn
    from snntorch import utils

    class CSNN(nn.Module):
        def __init__(self):
            super().__init__()
            kw = {"init_hidden": True}
            self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), snn.Leaky(beta=0.5, **kw),
                                     nn.Conv2d(4, 4, 3, stride=2, padding=1), snn.Leaky(beta=0.9, threshold=0.7, **kw),
                                     nn.Flatten(), nn.Linear(4 * 4 * 4, 3), snn.Leaky(beta=0.8, output=True, **kw))

        def forward(self, x):
            utils.reset(self.net)
            rec = []
            for _ in range(T):
                spk, _mem = self.net(x)
                rec.append(spk)
            return torch.stack(rec).sum(0)

    snn.SpikingNeuron.instances.clear()  # utils.reset's class-level list (tests/test_snntorch_loop.py)
    torch.manual_seed(0)
    m = CSNN()
    with torch.no_grad():
        m.net[2].weight.mul_(4.0)
        m.net[5].weight.mul_(4.0)
    return m.eval(), torch.rand(1, 1, 8, 8) * 2, lambda: None


def snntorch_tutorial():
    """snntorch tutorial 6's first block as written, Conv -> MaxPool -> Leaky (the max pool of the
    image's encoding: host work), then Conv-Leaky-MaxPool, Linear-Leaky(output=True): the model of
    tests/test_snntorch_loop.py (`build(tutorial=True)`, T = 5)."""
    from test_snntorch_loop import build

    return build(tutorial=True), torch.rand(1, 1, 8, 8) * 3, lambda: None


def spikeformer():
    """Meta-SpikeFormer's idiom, small: the static image repeated over T, conv-BN stem applied to
    the time-flattened tensor, MultiStepLIFNode (clock_driven: tau 2, decay_input, hard reset),
    a conv-BN block added to the membrane stream (x = x + conv_bn(lif(x))), the attention LIF's
    threshold 0.5, a mean-pooled linear head averaged over T."""

    class ConvBN(nn.Sequential):
        def __init__(self, cin, cout):
            super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):  # (T, B, C, H, W) -> the same, the conv on T*B frames
            t, b = x.shape[:2]
            y = super().forward(x.flatten(0, 1))
            return y.reshape(t, b, *y.shape[1:])

    class Former(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = ConvBN(2, 4)
            self.lif1, self.conv = MultiStepLIFNode(), ConvBN(4, 4)
            self.attn_lif = MultiStepLIFNode(v_threshold=0.5)
            self.head = nn.Linear(4, 3)

        def forward(self, x):
            x = x.unsqueeze(0).repeat(T, 1, 1, 1, 1)
            x = self.stem(x)
            x = x + self.conv(self.lif1(x))
            x = self.attn_lif(x)
            return self.head(x.flatten(3).mean(3)).mean(0)

        def reset(self):
            self.lif1.reset()
            self.attn_lif.reset()

    torch.manual_seed(0)
    m = Former()
    _trained_bn(m)
    with torch.no_grad():
        m.stem[0].weight.mul_(3.0)
    m.eval()
    return m, torch.rand(1, 2, 8, 8) * 2, m.reset


KINDS = {"sew": lambda: sew("avg"), "snntorch": snntorch_csnn, "spikeformer": spikeformer}


def export(make, path):
    """Export the model at batch 1 to `path` (.pt2); returns the model and its reset function."""
    m, x, reset = make()
    torch.export.save(torch.export.export(m, (x,)), str(path))
    reset()
    return m, reset
