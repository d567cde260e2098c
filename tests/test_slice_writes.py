"""Sources written into slices of a tensor of zeros (`y = torch.zeros(B, C, H, W); y[:, :c] = a;
y[:, c:] = b`, in place or, after torch's run_decompositions, as `slice_scatter`): a channel
placement, each source at its offset (IR `offset`s, as torch.cat), through `snncc` on a `.pt2`
exported at batch 1 (the installed command for the in-place kind; `snncc.cli.main` in this process,
read as the command's output, for the others and the refusal: a torch import less each), counts
equal the model's own per neuron; a write into a slice of an activation is refused in one line
naming the node."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

import snncc
from cli_run import run_main
from nets import Fire

SNNCC = os.path.join(os.path.dirname(sys.executable), "snncc")


def _snncc(*args, installed=False):
    """(exit code, stdout, stderr) of `snncc ARGS`: the installed command, or `snncc.cli.main` here."""
    if not installed:
        return run_main(*args)
    p = subprocess.run([SNNCC, *map(str, args)], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


class Placed(nn.Module):
    """a = na(conv_a x) into channels 0:3, b = nb(conv_b x) into 3:5 of zeros (and, `gap`, 3:4 of
    6 channels, leaving 4:6 zero); c = nc(conv_c y [+= conv_d x in place]); head."""

    def __init__(self, inplace_add=False, gap=False, into_activation=False):
        super().__init__()
        self.C = 6 if gap else 5
        self.a, self.b = nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(2, 1 if gap else 2, 3, padding=1)
        self.na, self.nb = Fire(4), Fire(4)
        self.c, self.d, self.nc = nn.Conv2d(self.C, 4, 3, padding=1), nn.Conv2d(2, 4, 1), Fire(4)
        self.head = nn.Linear(4, 3)
        self.inplace_add, self.gap, self.into_activation = inplace_add, gap, into_activation

    def forward(self, x):
        sa, sb = self.na(self.a(x)), self.nb(self.b(x))
        if self.into_activation:
            y = self.c(torch.cat([sa, sb], 1))
            y[:, :3] = sa  # overwrites part of a current: no placement
            return self.head(self.nc(y).mean((2, 3)))
        y = torch.zeros(x.shape[0], self.C, 8, 8, dtype=x.dtype)
        y[:, :3] = sa
        y[:, 3:4 if self.gap else 5] = sb
        z = self.c(y)
        if self.inplace_add:  # an in-place add a later reader sees through a view: torch's functionalisation
            v = z.view(z.shape)  # (run_decompositions) makes the program functional, slice writes become slice_scatter
            z.add_(self.d(x))
            z = v
        return self.head(self.nc(z).mean((2, 3)))


def counts(m, x):
    got = {}
    hooks = [getattr(m, k).register_forward_hook(lambda mod, i, o, k=k: got.__setitem__(k, o * mod.norm))
             for k in ("na", "nb", "nc")]
    with torch.no_grad():
        m(x)
    for h in hooks:
        h.remove()
    return got


@pytest.mark.parametrize("kind", ["inplace", "slice_scatter", "gap"])
def test_slices_of_zeros_are_a_channel_placement(tmp_path, kind):
    torch.manual_seed(0)
    m = Placed(inplace_add=kind == "slice_scatter", gap=kind == "gap").eval()
    with torch.no_grad():
        m.c.weight.mul_(3.0)
        m.c.bias.add_(1.0 if kind == "gap" else 0.0)  # two of six channels stay 0: nc still fires
    path = tmp_path / "m.pt2"
    ep = torch.export.export(m, (torch.zeros(1, 2, 8, 8),))
    torch.export.save(ep, str(path))
    from snncc.frontend.torch_export import normalise

    code = [n.target.__name__ for n in normalise(ep).graph.nodes if n.op == "call_function"]
    assert ("copy_.default" in code) == (kind != "slice_scatter")  # what the converter reads
    assert ("slice_scatter.default" in code) == (kind == "slice_scatter")
    out = tmp_path / "art"
    code, o, e = _snncc("compile", path, "-o", out, installed=kind == "inplace")
    assert code == 0, e
    code, o, e = _snncc("verify", path, out, "--samples", "2", installed=kind == "inplace")
    assert code == 0 and "verdict: OK" in o, o + e
    dep = snncc.load(str(out))
    offsets = [n for n in dep.traced.nodes if n.op == "offset"]
    assert [(n.attrs["at"], n.attrs["size"]) for n in offsets] == [(0, m.C), (3, m.C)]
    x = torch.rand(5, 2, 8, 8, generator=torch.Generator().manual_seed(1)) * 3
    want = counts(m.double(), x.double())
    ref = dep.reference(x)
    for k, c in want.items():
        assert c.sum() > 0 and torch.equal(ref.counts[k], c), k


def test_a_write_into_a_slice_of_an_activation_is_refused_in_one_line(tmp_path):
    m = Placed(into_activation=True).eval()
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(m, (torch.zeros(1, 2, 8, 8),)), str(path))
    code, _, e = _snncc("compile", path, "-o", tmp_path / "art")
    err = [line for line in e.splitlines() if line.startswith("snncc:")]
    assert code == 2 and len(err) == 1, e
    assert "'slice" in err[0] and "slicing an activation is not supported" in err[0]
    assert not (tmp_path / "art").exists()
