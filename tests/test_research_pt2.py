"""Research code through the front door: a `.pt2` exported at batch 1 (`torch.export.save(
torch.export.export(model.eval(), (x,)), path)`, the way people export) through the installed
`snncc compile` / `snncc verify`, against the same module through `snncc.compile(module)`.

The models are written the way the BICLab repositories write them (plain torch, not snncc
classes): a time axis added by `x.unsqueeze(0).repeat(T, 1, 1, 1, 1)` (T may be 1), an event
input (B, T, C, H, W) transposed inside `forward`, convs on `x.flatten(0, 1)`, a single-step
SpikingJelly-style node applied to the whole (T, B, ...) tensor whose membrane starts at the
float `0.` and whose reset is dead after the step, the spike divided by D after the node,
in-place ops (`out += shortcut`, `x.round_()`), and the prediction averaged over T.

Every model family here is compiled from its batch-1 `.pt2` by the installed command (the product's
main path): RepeatT at T = 3 (T = 1 compiles in this process), EventBT, LeadingOne's kept axis (its
reduced twin compiles in this process) and BNOfSum. The refusals and listings, which vary only what
the library says, and those second compiles of a family run `snncc.cli.main` in this process (the
`snncc_main` fixture: a fresh process costs a torch import each), and the event model's program is
exported once for the module."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

import snncc
from nets import randomize_bn
from test_research_multistep import Quant, _counts_by_hand, reset_net  # the repositories' spike, reset_net

SNNCC = os.path.join(os.path.dirname(sys.executable), "snncc")


class MultiSpikeNorm(nn.Module):
    def __init__(self, D=4):
        super().__init__()
        self.D = D

    def forward(self, x):
        return Quant.apply(x, 0, self.D) / self.D


class QIFNode(nn.Module):
    """A single-step SpikingJelly-style IF node: `v` starts at the float 0. and the reset's
    result is only read by the next call (none, after `reset`)."""

    def __init__(self, D=4, v_threshold=1.0):
        super().__init__()
        self.D, self.v_threshold, self.v = D, v_threshold, 0.

    def forward(self, x):
        self.v = self.v + x
        spike = Quant.apply(self.v, 0, self.D)
        self.v = self.v - spike * self.v_threshold
        return spike

    def reset(self):
        self.v = 0.


class RepeatT(nn.Module):
    """Classification-large style: T from repeat, tokens (T, B, C, N), a residual of currents
    added in place, the head averaged over T."""

    def __init__(self, T=2, C=8):
        super().__init__()
        self.T = T
        self.stem, self.bn0 = nn.Conv2d(3, C, 3, stride=2, padding=1), nn.BatchNorm2d(C)
        self.lif1 = MultiSpikeNorm()
        self.c1, self.bn1 = nn.Conv1d(C, C, 1), nn.BatchNorm1d(C)
        self.c2, self.bn2 = nn.Conv1d(C, C, 1), nn.BatchNorm1d(C)
        self.lif2 = MultiSpikeNorm()
        self.head = nn.Linear(C, 5)

    def forward(self, x):
        x = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        T, B = x.shape[:2]
        x = self.bn0(self.stem(x.flatten(0, 1)))
        x = x.reshape(T, B, *x.shape[1:]).flatten(3)  # (T, B, C, N)
        s = self.lif1(x)
        out = self.bn1(self.c1(s.flatten(0, 1))).reshape(T, B, -1, x.shape[-1])
        out += self.bn2(self.c2(s.flatten(0, 1))).reshape(T, B, -1, x.shape[-1])
        s = self.lif2(out)
        return self.head(s.mean(3)).mean(0)


class EventBT(nn.Module):
    """HAR-DVS style: (B, T, 2, H, W) transposed inside forward, QIFNode on the whole (T, B, ...)
    tensor, / D after it, and an in-place rounded neuron."""

    def __init__(self, C=6):
        super().__init__()
        self.c1, self.bn1 = nn.Conv2d(2, C, 3, padding=1), nn.BatchNorm2d(C)
        self.lif = QIFNode()
        self.c2, self.bn2 = nn.Conv2d(C, C, 3, stride=2, padding=1), nn.BatchNorm2d(C)
        self.head = nn.Linear(C, 4)

    def forward(self, x):
        x = x.transpose(0, 1).contiguous()
        T, B = x.shape[:2]
        x = self.bn1(self.c1(x.flatten(0, 1))).reshape(T, B, -1, 8, 8)
        s = self.lif(x) / 4
        y = self.bn2(self.c2(s.flatten(0, 1))).reshape(T, B, -1, 16)  # (T*B, C, 4, 4) -> (T, B, C, N)
        y = torch.clamp(y, 0, 4).round_() / 4
        return self.head(y.mean(3)).mean(0)


def _same_graph(a, b):
    """Two IR graphs node for node: names, ops, inputs, attributes, shapes, parameters bit for bit."""
    assert a.T == b.T and [n.name for n in a.nodes] == [n.name for n in b.nodes]
    for m, n in zip(a.nodes, b.nodes):
        assert (m.op, m.inputs, m.shape, m.kind) == (n.op, n.inputs, n.shape, n.kind), m.name
        assert m.attrs.keys() == n.attrs.keys() and all(
            np.array_equal(np.asarray(m.attrs[k]), np.asarray(n.attrs[k])) for k in m.attrs), m.name
        assert m.params.keys() == n.params.keys() and all(
            np.array_equal(m.params[k], n.params[k]) for k in m.params), m.name


def _cli(*args):
    """The installed command, as a user runs it: (exit code, stdout, stderr)."""
    p = subprocess.run([SNNCC, *map(str, args)], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def _export(model, x1, path):
    reset_net(model)
    torch.export.save(torch.export.export(model.eval(), (x1,)), str(path))
    reset_net(model)


def _event_model():
    torch.manual_seed(0)
    return randomize_bn(EventBT())


@pytest.fixture(scope="module")
def event_pt2(tmp_path_factory):
    """`_event_model()` exported at batch 1 ((1, 3, 2, 8, 8), layout BT), once for the module: the
    program every EventBT test reads (the export does not depend on the sample's values)."""
    pt2 = tmp_path_factory.mktemp("event") / "ev.pt2"
    _export(_event_model(), torch.zeros(1, 3, 2, 8, 8), pt2)
    return pt2


def _both(model, x, tmp_path, main, flags=(), pt2=None, installed=True, **api):
    """The module through the API and its batch-1 .pt2 (exported here unless given) through
    `snncc compile` (the installed command, or `main` in this process when not `installed`): the
    same deployed graph, and `snncc verify` OK (in this process: LeadingOne's test runs the
    installed verify). Returns the module's deployment."""
    dep = snncc.compile(model, x[:2], **api)
    if pt2 is None:
        pt2 = tmp_path / "m.pt2"
        _export(model, x[:1], pt2)
    out = tmp_path / "out"
    code, o, e = (_cli if installed else main)("compile", pt2, *flags, "-o", out)
    assert code == 0, e
    dep.save(str(tmp_path / "module"))  # both as written to disk (a 0-d factor is stored with shape (1,))
    _same_graph(snncc.load(str(out)).deployed, snncc.load(str(tmp_path / "module")).deployed)
    code, o, e = main("verify", pt2, out, "--samples", "2")
    assert code == 0 and "verdict: OK" in o, o + e
    return dep


def _hooked_counts(model, x, names, D=4):
    """Spike counts (summed over T) of the named neuron modules, from the eager model itself
    (a MultiSpikeNorm's output is count / D)."""
    got = _counts_by_hand(model, x, names)
    return {k: v * D if isinstance(getattr(model, k), MultiSpikeNorm) else v for k, v in got.items()}


@pytest.mark.parametrize("T", [1, 3])
def test_batch1_program_that_repeats_over_time_compiles_like_the_module(T, tmp_path, snncc_main):
    torch.manual_seed(0)
    m = randomize_bn(RepeatT(T=T))
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2
    dep = _both(m, x, tmp_path, snncc_main, installed=T == 3)  # T = 1: in this process
    assert dep.deployed.T == T
    rep = dep.verify(x)
    assert rep.ok and rep.levels[0].max_logit_diff < 1e-9, rep.table()
    ref = dep.reference(x)
    hand = _hooked_counts(m, x, ("lif1", "lif2"))
    for k in ("lif1", "lif2"):
        assert torch.equal(ref.counts[k].float(), hand[k]) and ref.counts[k].sum() > 0
    sim = dep.simulate(x, "exact")
    assert all(torch.equal(sim.counts[k], c) for k, c in ref.counts.items())


def test_batch1_program_with_a_bt_event_input_and_spikingjelly_idioms(tmp_path, event_pt2, snncc_main):
    m = _event_model()
    x = torch.rand(4, 3, 2, 8, 8, generator=torch.Generator().manual_seed(2)) * 3  # (B, T, C, H, W)
    dep = _both(m, x, tmp_path, snncc_main, ("--input-layout", "BT", "--timesteps", "3", "--input-shape", "2,8,8"),
                pt2=event_pt2, input_layout="BT")
    fires = [n for n in dep.traced.nodes if n.op == "fire"]
    # `0. + x` is x, the dead reset does not keep `/ 4` out of the neuron, round_ is round
    assert [(n.attrs["D"], n.attrs["norm"]) for n in fires] == [(4, 4.0), (4, 4.0)]
    assert not [n for n in dep.traced.nodes if n.op in ("add", "scale")]
    rep = dep.verify(x)
    assert rep.ok and rep.levels[0].max_logit_diff < 1e-9, rep.table()
    ref = dep.reference(x)
    hand = _hooked_counts(m, x, ("lif",))
    assert torch.equal(ref.counts["lif"].float(), hand["lif"]) and hand["lif"].sum() > 0
    sim = dep.simulate(x, "exact")
    assert all(torch.equal(sim.counts[k], c) for k, c in ref.counts.items())


def test_program_layout_flags_are_checked_against_the_program_in_one_line(tmp_path, event_pt2, snncc_main):
    """The refusals and the compile in this process (the installed compile of this program:
    test_batch1_program_with_a_bt_event_input_and_spikingjelly_idioms)."""
    pt2 = event_pt2
    out = tmp_path / "o"
    for flags, msg in [((), "permutation moves the batch axis (a model taking (B, T, ...) input: pass --input-layout "
                            "BT --timesteps 3 and the per-step --input-shape 2,8,8"),
                       (("--input-layout", "BT", "--timesteps", "4"), "--timesteps 4 differs from the program's time "
                                                                      "axis 3 (input (1, 3, 2, 8, 8), layout BT)"),
                       (("--input-layout", "BT", "--input-shape", "3,2,8,8"), "--input-shape (3, 2, 8, 8) differs "
                                                                               "from the program's input (2, 8, 8) "
                                                                               "per timestep")]:
        code, o, e = snncc_main("compile", pt2, *flags, "-o", out)
        assert code == 2 and len(e.strip().splitlines()) == 1 and msg in e, e
        assert not out.exists()
    code, o, e = snncc_main("compile", pt2, "--input-layout", "BT", "-o", out)  # T and the shape: the program's
    assert code == 0, e
    assert snncc.load(str(out)).deployed.T == 3


def test_program_exported_in_training_mode_says_call_eval(tmp_path, snncc_main):
    m = RepeatT(T=2).train()
    pt2 = tmp_path / "train.pt2"
    torch.export.save(torch.export.export(m, (torch.zeros(1, 3, 8, 8),)), str(pt2))
    code, o, e = snncc_main("compile", pt2, "-o", tmp_path / "o")
    assert code == 2 and e.strip() == (f"snncc: error: {pt2}: the model was exported in training mode (BatchNorm "
                                       "uses the batch's statistics) (call model.eval() before torch.export)")


class LeadingOne(nn.Module):
    """x.unsqueeze(0) without a repeat: a leading axis of size 1, reduced by `mean(0)`."""

    def __init__(self, reduce=True):
        super().__init__()
        self.reduce = reduce
        self.c, self.bn, self.lif, self.head = nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), MultiSpikeNorm(), \
            nn.Linear(4, 3)

    def forward(self, x):
        x = x.unsqueeze(0)
        x = self.lif(self.bn(self.c(x.flatten(0, 1))).unsqueeze(0))
        y = self.head(x.flatten(3).mean(3))
        return y.mean(0) if self.reduce else y


def test_an_output_with_a_leading_axis_of_one_deploys_as_its_squeeze(tmp_path, snncc_main):
    """(1, B, ...) from `x.unsqueeze(0)` is multi-step code at T = 1 (was refused with a hint to
    squeeze it in the model): deployed as the value without that axis, like `y.mean(0)`."""
    x = torch.randn(4, 2, 8, 8, generator=torch.Generator().manual_seed(3)) * 2
    torch.manual_seed(0)
    kept = randomize_bn(LeadingOne(reduce=False))
    pt2 = tmp_path / "one.pt2"
    _export(kept, torch.zeros(1, 2, 8, 8), pt2)
    code, o, e = _cli("compile", pt2, "-o", tmp_path / "o")
    assert code == 0 and "keeps an axis of size 1 (1, B, ...) (multi-step code at T = 1): deployed without it " \
                         "(x.squeeze(0))" in o, o + e
    code, o, e = _cli("verify", pt2, tmp_path / "o", "--samples", "2")
    assert code == 0 and "verdict: OK" in o, o + e
    dep = snncc.load(str(tmp_path / "o"))
    with torch.no_grad():
        eager = kept.double()(x.double())
    assert eager.shape == (1, 4, 3) and torch.allclose(dep.reference(x).output, eager[0], rtol=0, atol=1e-9)
    torch.manual_seed(0)
    m = randomize_bn(LeadingOne(reduce=True))  # reduced in the model: the same deployed graph
    reduced = _both(m, x, tmp_path, snncc_main, installed=False)  # the kept axis compiled installed, above
    assert reduced.deployed.T == 1 and reduced.verify(x).ok
    assert [(n.op, n.inputs) for n in reduced.deployed.nodes] == [(n.op, n.inputs) for n in dep.deployed.nodes]


class InputNamedInput(nn.Module):
    """`forward(self, input)` (nn.Sequential's and much research code's argument name) with an
    in-place op: torch's retrace of the in-place op renames the placeholder `input` to `input_1`."""

    def __init__(self):
        super().__init__()
        self.fc, self.head = nn.Linear(6, 5), nn.Linear(5, 3)

    def forward(self, input):  # noqa: A002 (the name is the point)
        y = self.fc(input)
        y.clamp_(0, 4)
        return self.head(y.round() / 4)


def test_program_whose_input_is_named_input_with_an_in_place_op(tmp_path, snncc_main):
    """It was refused as "unexpected graph input input_1"; the user input is now found by its
    position in the program's signature: compiled, verified OK, and the same deployed graph as
    the module's, parameter for parameter."""
    torch.manual_seed(2)
    m = InputNamedInput().eval()
    pt2 = tmp_path / "named.pt2"
    _export(m, torch.zeros(1, 6), pt2)
    code, o, e = snncc_main("compile", pt2, "-o", tmp_path / "o")
    assert code == 0, o + e
    code, o, e = snncc_main("verify", pt2, tmp_path / "o", "--samples", "8")
    assert code == 0 and "verdict: OK" in o, o + e
    _same_graph(snncc.load(str(tmp_path / "o")).deployed, snncc.compile(m, torch.zeros(1, 6)).deployed)


def test_fx_fallback_does_not_hide_the_export_error():
    class Opaque(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(2, 4, 3, padding=1)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: neither torch.export nor symbolic_trace takes it
                return self.c(x).mean((2, 3))
            return self.c(x).mean((2, 3))

    with pytest.raises(snncc.errors.FrontendError) as e:
        snncc.compile(Opaque(), torch.zeros(2, 2, 8, 8))
    line = e.value.one_line()
    assert line.startswith("Opaque: torch.export failed: ") and "the fx fallback failed too: " in line
    assert "retry with --frontend fx" not in line and "\n" not in line


class BNOfSum(nn.Module):
    def __init__(self):
        super().__init__()
        self.c0, self.lif0 = nn.Conv2d(2, 4, 3, padding=1), MultiSpikeNorm()
        self.ca, self.cb, self.bn, self.lif = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), \
            MultiSpikeNorm()
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        s = self.lif0(self.c0(x))
        return self.head(self.lif(self.bn(self.ca(s) + self.cb(s))).mean((2, 3)))


def test_batchnorm_of_a_sum_of_convs_compiles_and_verifies(tmp_path, snncc_main):
    """bn(conv_a(s) + conv_b(s)) goes into both branches (reparam) and the sum becomes one conv:
    the batch-1 program compiles spike-driven (the installed command) and verifies (in this
    process); it was refused as 'run the fold pipeline first' (internal)."""
    pt2 = tmp_path / "bnsum.pt2"
    _export(randomize_bn(BNOfSum()), torch.zeros(1, 2, 8, 8), pt2)
    code, o, e = _cli("compile", pt2, "-o", tmp_path / "o")
    assert code == 0, e
    code, o, e = snncc_main("verify", pt2, tmp_path / "o", "--samples", "2")
    assert code == 0 and "verdict: OK" in o, o + e


@pytest.mark.parametrize("factory", ["digits_cnn", "digits_former"])
def test_shipped_examples_exported_at_batch_1_give_the_modules_deployed_graph(factory, tmp_path):
    from examples.digits import models

    torch.manual_seed(0)
    m = randomize_bn(getattr(models, factory)())
    x = torch.rand(2, 1, 8, 8)
    snncc.compile(m, x).save(str(tmp_path / "module"))
    snncc.compile(torch.export.export(m.eval(), (x[:1],))).save(str(tmp_path / "program"))
    _same_graph(snncc.load(str(tmp_path / "program")).deployed, snncc.load(str(tmp_path / "module")).deployed)


def test_inspect_takes_the_layout_flags_like_compile(tmp_path, event_pt2, snncc_main):
    """`snncc inspect m.pt2 --input-layout BT --timesteps 3` lists the graph `compile` traces with
    the same flags (without them: the same one-line refusal, with the hint to pass them; a T that
    is not the program's: one line). The listing of the program through the installed command, the
    rest in this process."""
    pt2 = event_pt2
    code, o, e = snncc_main("inspect", pt2)
    assert code == 2 and len(e.strip().splitlines()) == 1 and "pass --input-layout BT --timesteps 3" in e, e
    code, o, e = snncc_main("inspect", pt2, "--input-layout", "BT", "--timesteps", "4")
    assert code == 2 and "--timesteps 4 differs from the program's time axis 3" in e, e
    code, listed, e = _cli("inspect", pt2, "--input-layout", "BT", "--timesteps", "3")
    assert code == 0, e
    out = tmp_path / "o"
    assert snncc_main("compile", pt2, "--input-layout", "BT", "--timesteps", "3", "-o", out)[0] == 0
    code, art, e = snncc_main("inspect", out, "--level", "traced")
    assert code == 0 and art.splitlines()[0].startswith("# artefact") and listed == "".join(
        art.splitlines(keepends=True)[1:]) and "fire" in listed
