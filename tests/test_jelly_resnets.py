"""SpikingJelly 2.0's own ResNets (`sew_resnet18(cnf="ADD")`, `spiking_resnet18`, IFNode defaults:
hard reset to 0, multi-step) exported at batch 1 as SpikingJelly users run them: input (T, 1, C, H, W),
output (T, 1, classes) averaged outside the model. Through `snncc compile` and `snncc verify` with
no flags: the layout is read from the program's input, the output is deployed as its mean over T,
`out += identity` (in place, on a fresh value) is made out of place without inlining the fused
neuron op, and verify finds the deployed graph bit-exact with the traced model (the installed
command for the SEW ResNet; for the spiking ResNet `snncc.cli.main` in this process, read as the
command's output by tests/cli_run.py: two torch imports less, the same compile and verify).

torchvision is imported by these SpikingJelly modules only for `load_state_dict_from_url`
(pretrained weights, never used here); the CPU build of torch cannot load PyPI's torchvision
(built against CUDA torch), so `torch.hub`'s function of the same name stands in for that import."""

import os
import subprocess
import sys
import types

import pytest
import torch

from cli_run import run_main

SNNCC = os.path.join(os.path.dirname(sys.executable), "snncc")


@pytest.fixture
def jelly_resnets(monkeypatch):
    utils = types.ModuleType("torchvision.models.utils")
    utils.load_state_dict_from_url = torch.hub.load_state_dict_from_url
    for name in ("torchvision", "torchvision.models"):
        monkeypatch.setitem(sys.modules, name, sys.modules.get(name) or types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "torchvision.models.utils", utils)
    from spikingjelly.activation_based import neuron
    from spikingjelly.activation_based.model import sew_resnet, spiking_resnet

    return {"sew": lambda: sew_resnet.sew_resnet18(cnf="ADD", spiking_neuron=neuron.IFNode, num_classes=10),
            "spiking": lambda: spiking_resnet.spiking_resnet18(spiking_neuron=neuron.IFNode, num_classes=10)}


def _cli(*args):
    return subprocess.run([SNNCC, *map(str, args)], capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("which", ["sew", "spiking"])
def test_spikingjelly_resnet18_program_at_batch_1_compiles_and_verifies_bit_exact(which, jelly_resnets, tmp_path):
    from spikingjelly.activation_based import functional, neuron

    torch.manual_seed(0)
    net = jelly_resnets[which]()
    functional.set_step_mode(net, "m")
    assert all(m.v_reset == 0.0 for m in net.modules() if isinstance(m, neuron.IFNode))  # hard reset
    for m in net.modules():  # trained-like statistics, so that every layer fires
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.8, 1.5)
            m.bias.data.uniform_(0.1, 0.5)
    net.eval()
    T, x1 = 2, torch.rand(2, 1, 3, 32, 32)
    with torch.no_grad():
        assert net(x1).shape == (T, 1, 10)  # multi-step output: (T, B, classes)
    functional.reset_net(net)
    pt2, out = tmp_path / f"{which}.pt2", tmp_path / "out"
    torch.export.save(torch.export.export(net, (x1,)), str(pt2))

    if which == "sew":
        r = _cli("compile", pt2, "-o", out)
        code, o, e = r.returncode, r.stdout, r.stderr
    else:
        code, o, e = run_main("compile", pt2, "-o", out)
    assert code == 0, e
    assert "input layout TB read from the program's input (2, 1, 3, 32, 32)" in o, o
    assert "the model's output keeps the time axis (T, B, ...): deployed as its mean over T" in o, o
    if which == "sew":
        r = _cli("verify", pt2, out, "--samples", "2")
        code, o, e = r.returncode, r.stdout, r.stderr
    else:
        code, o, e = run_main("verify", pt2, out, "--samples", "2")
    assert code == 0 and "verdict: OK" in o, o + e
    rows = {ln.split()[0]: ln.split() for ln in o.splitlines() if ln.split()}
    assert rows["deployed"][1:3] == ["0", "0"], o  # logits and spike counts: bit-exact
    assert rows["pytorch"][4] == "100.0%", o

    import snncc

    dep = snncc.load(str(out))
    fires = [n for n in dep.deployed.nodes if n.op == "fire"]
    assert fires and all(n.attrs.get("reset", "subtract") == "value" for n in fires), \
        {n.attrs.get("reset") for n in fires}
    x = torch.rand(T, 3, 3, 32, 32)  # the model's own layout: (T, B, ...)
    with torch.no_grad():
        want = net(x).mean(0)
    functional.reset_net(net)
    got = dep.simulate(x).output
    assert torch.allclose(got.float(), want, atol=1e-4), (got.float() - want).abs().max()


def test_in_place_add_on_a_fresh_value_keeps_the_fused_neuron_op():
    """`out += identity` after a conv: out of place on a copy of the program; an in-place op whose
    mutation a later reader could see (the mutated conv output read again) is left to torch."""
    from snncc.frontend.torch_export import normalise

    class M(torch.nn.Module):
        def __init__(self, reread):
            super().__init__()
            self.c, self.reread = torch.nn.Conv2d(2, 2, 1), reread

        def forward(self, x):
            y = self.c(x)
            z = y.view(-1)
            y += x
            return z * 2 if self.reread else y

    for reread, left in ((False, "add.Tensor"), (True, None)):
        ep = torch.export.export(M(reread).eval(), (torch.rand(1, 2, 3, 3),))
        targets = lambda p: {str(n.target) for n in p.graph.nodes if n.op == "call_function"}  # noqa: E731
        new = normalise(ep)
        assert "aten.add_.Tensor" in targets(ep)  # the caller's program is not changed
        assert "aten.add_.Tensor" not in targets(new)
        if left:
            assert f"aten.{left}" in targets(new) and new is not ep
            x = torch.rand(1, 2, 3, 3)
            assert torch.equal(new.module()(x), ep.module()(x))
