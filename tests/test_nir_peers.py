"""snncc's NIR exports in a peer's own reader: sinabs 3.1.3 `from_nir` loads the export
of a conv chain with a depthwise conv's groups written the way nir 1.0.4 and its readers need, the
NIR type check passes, and sinabs' network computes exactly snncc's deployed graph with the spike
cap lifted (sinabs reads a NIR IF as a multi-spike IAF: floor(v / theta) spikes per step)."""

import os
import subprocess
import sys

import nir
import pytest
import numpy as np
import torch

from nets import ConvChain, ResidualSepConv, randomize_bn
from snncc.frontend.loader import LoadedModel, trace
from snncc.interop.nir_io import from_nir, to_nir, write_nir
from snncc.ir.ops import MAX_D
from snncc.passes.manager import run_pipeline
from snncc.sim.reference import run


def deployed(model):
    torch.manual_seed(0)
    m = randomize_bn(model)
    return m, run_pipeline(trace(LoadedModel(m, None, tuple(m.input_shape))), "deploy").graph


def test_grouped_conv_is_written_as_an_equivalent_groups1_kernel_and_types_check(tmp_path):
    m, g = deployed(ResidualSepConv())
    dw = next(n for n in g.nodes if n.op == "conv" and n.attrs["groups"] > 1)
    ex = to_nir(g, "multispike")
    node = ex.graph.nodes[ex.names[dw.name]]
    C = dw.attrs["groups"]
    assert node.groups == 1 and node.weight.shape == (dw.params["weight"].shape[0], C) + dw.params["weight"].shape[2:]
    blocks = dw.params["weight"].shape[0] // C
    for o in range(node.weight.shape[0]):  # block diagonal: output o reads only its own group's inputs
        gi = o // blocks
        off = np.delete(node.weight[o], gi, axis=0)
        assert not np.any(off) and np.array_equal(node.weight[o, gi], dw.params["weight"][o, 0])
    assert ex.graph._check_types()
    assert any(s.startswith(f"grouped convolutions {dw.name} (groups={C})") for s in ex.lost)
    path = tmp_path / "r.nir"
    write_nir(g, str(path), "multispike")
    back = from_nir(nir.read(str(path)))  # snncc restores the groups
    assert back[dw.name].attrs["groups"] == C and np.array_equal(back[dw.name].params["weight"], dw.params["weight"])


def test_sinabs_runs_the_export_as_snncc_with_the_cap_lifted(tmp_path):
    import sinabs.layers as sl
    import sinabs.nir as sinabs_nir

    m, g = deployed(ConvChain())
    path = tmp_path / "c.nir"
    write_nir(g, str(path), "multispike")
    net = sinabs_nir.from_nir(nir.read(str(path)), batch_size=8, num_timesteps=1)
    seen = {}
    for name, mod in net.named_modules():
        if isinstance(mod, (sl.IAF, sl.IAFSqueeze)):
            mod.register_forward_hook(lambda mod, i, o, name=name: seen.__setitem__(name, o.detach().double()))
    x = torch.randn((8,) + tuple(m.input_shape), generator=torch.Generator().manual_seed(1)) * 2
    with torch.no_grad():
        out = net(x)
    out = out[0] if isinstance(out, tuple) else out
    uncapped = g.clone()
    for n in uncapped.neurons():
        n.attrs["D"] = MAX_D
    ref = run(uncapped, x.double())
    assert sorted(seen) == sorted(ref.counts)
    for k, c in ref.counts.items():
        assert torch.equal(seen[k].reshape(c.shape), c), k
    assert float((out.double() - ref.output).abs().max()) < 1e-5
    capped = run(g, x.double())
    assert any(not torch.equal(capped.counts[k], c) for k, c in ref.counts.items()), \
        "inputs never exceed D: the cap difference is untested"


def _block(W, b, th):
    return nir.NIRGraph(nodes={"i": nir.Input(input_type={"input": np.array([W.shape[1]])}),
                               "fc": nir.Affine(weight=W, bias=b), "lif": nir.LIF(
                                   tau=np.full(W.shape[0], 0.02), r=np.ones(W.shape[0]),
                                   v_leak=np.zeros(W.shape[0]), v_threshold=th),
                               "o": nir.Output(output_type={"output": np.array([W.shape[0]])})},
                        edges=[("i", "fc"), ("fc", "lif"), ("lif", "o")])


def test_nested_graphs_are_inlined_and_lif_approximation_is_reported(tmp_path):
    """A NIR file with sub-graphs (blocks, as other tools write them) imports like its flat form;
    its LIF neurons need --approximate-lif, and the CLI prints what the approximation changes."""
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    W1, b1, W2 = rng.normal(size=(6, 4)), rng.normal(size=6) * 0.2, rng.normal(size=(3, 6))
    th = np.full(6, 0.7)
    nested = nir.NIRGraph(nodes={"in": nir.Input(input_type={"input": np.array([4])}), "blk": _block(W1, b1, th),
                                 "head": nir.Affine(weight=W2, bias=np.zeros(3)),
                                 "out": nir.Output(output_type={"output": np.array([3])})},
                          edges=[("in", "blk"), ("blk", "head"), ("head", "out")])
    flat = nir.NIRGraph(nodes={"in": nir.Input(input_type={"input": np.array([4])}),
                               "blk.fc": nir.Affine(weight=W1, bias=b1),
                               "blk.lif": nir.IF(r=np.ones(6), v_threshold=th),
                               "head": nir.Affine(weight=W2, bias=np.zeros(3)),
                               "out": nir.Output(output_type={"output": np.array([3])})},
                        edges=[("in", "blk.fc"), ("blk.fc", "blk.lif"), ("blk.lif", "head"), ("head", "out")])
    a, b = from_nir(nested, T=3, approximate_lif=True), from_nir(flat, T=3)
    x = torch.as_tensor(rng.normal(size=(3, 5, 4)) * 2)
    ra, rb = run(a, x), run(b, x)
    assert sorted(ra.counts) == ["blk.lif"] and torch.equal(ra.counts["blk.lif"], rb.counts["blk.lif"])
    assert torch.equal(ra.output, rb.output)
    assert any("LIF imported as IF, leak dropped" in s for s in a.meta["nir_approximations"])
    path = tmp_path / "nested.nir"
    nir.write(str(path), nested)
    from cli_run import run_main

    code, _, err = run_main("compile", path, "-o", tmp_path / "a")  # the refusal: in this process
    assert code == 2 and "--nir-lif steps | euler:DT | exp:DT | approximate" in err
    exe = [sys.executable, "-m", "snncc.cli"]
    p = subprocess.run(exe + ["compile", str(path), "--approximate-lif", "-o", str(tmp_path / "a")],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "approximation: blk.lif: LIF imported as IF, leak dropped" in p.stdout


def test_norse_runs_the_export_as_snncc_with_one_spike_per_step(tmp_path):
    """norse 1.1.0 `from_nir` reads a NIR IF as its IAFCell (one spike per step, fires on v > v_th,
    resets to 0): one step per sample from a fresh state is snncc's deployed graph with D = 1.
    Its Flatten keeps NIR's start_dim without skipping the batch axis, so samples run one by one."""
    import norse.torch as nt  # installed by scripts/setup.sh (--no-deps)

    m, g = deployed(ConvChain())
    path = tmp_path / "c.nir"
    write_nir(g, str(path), "multispike")
    net = nt.from_nir(nir.read(str(path)))
    seen = {}
    for name, mod in net.named_modules():
        if type(mod).__name__ == "IAFCell":
            mod.register_forward_hook(lambda mod, i, o, name=name: seen.setdefault(name, []).append(o[0].detach()))
    x = torch.randn((8,) + tuple(m.input_shape), generator=torch.Generator().manual_seed(1)) * 2
    with torch.no_grad():
        outs = [net(x[i:i + 1].float())[0] for i in range(8)]
    one = g.clone()
    for n in one.neurons():
        n.attrs["D"] = 1
    ref = run(one, x.double())
    assert sorted(seen) == sorted(ref.counts)
    for k, c in ref.counts.items():
        assert torch.equal(torch.cat(seen[k]).double().reshape(c.shape), c), k
    assert float((torch.stack(outs).double().reshape(ref.output.shape) - ref.output).abs().max()) < 1e-5
    assert any(not torch.equal(run(g, x.double()).counts[k], c) for k, c in ref.counts.items()), \
        "no neuron fires twice: the D = 1 difference is untested"


class _MLP(torch.nn.Module):
    input_shape = (6,)

    def __init__(self):
        super().__init__()
        from nets import Fire

        self.l1, self.b1, self.n1, self.head = torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), Fire(4), torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.n1(self.b1(self.l1(x))))


def test_snntorch_reads_an_if_as_a_leaky_neuron_and_cannot_run_the_export(tmp_path):
    """snntorch 1.0.0 (installed --no-deps by scripts/setup.sh): docs/formats.md says its reader cannot
    run snncc's exports, and why; this holds it to that with the real reader. A NIR IF becomes
    `snn.Leaky` (a leaky neuron, not NIR's IF), whose (spikes, membrane) tuple its own graph feeds to
    the next Linear. When snntorch changes, this test says so."""
    import snntorch
    import snntorch.import_nir as snt_nir

    assert snntorch.__version__ == "1.0.0"
    m, g = deployed(_MLP())
    path = tmp_path / "mlp.nir"
    write_nir(g, str(path), "multispike")
    net = snt_nir.import_from_nir(nir.read(str(path)))
    kinds = {n: type(mod).__name__ for n, mod in net.named_modules() if n}
    (neuron,) = [n.name for n in g.neurons()]
    assert kinds[neuron] == "Leaky" and float(getattr(net, neuron).beta) < 1.0  # leaks: not an IF
    with pytest.raises(TypeError, match="must be Tensor, not tuple"):
        net(torch.randn(2, 6))


def _lif_graph(W1, b1, W2, th2):
    """in(4) -> Affine -> LIF(tau 3 steps, threshold 0.7) -> Affine -> LIF(tau 5, per-neuron thresholds)
    (Affine: sinabs' reader mis-wires a NIR Linear, "Multiple input nodes found")."""
    n1, n2 = W1.shape[0], W2.shape[0]
    lif = lambda n, tau, th: nir.LIF(tau=np.full(n, tau), r=np.ones(n), v_leak=np.zeros(n), v_threshold=th)  # noqa: E731
    return nir.NIRGraph(nodes={"in": nir.Input(input_type={"input": np.array([W1.shape[1]])}),
                               "fc1": nir.Affine(weight=W1, bias=b1), "lif1": lif(n1, 3.0, np.full(n1, 0.7)),
                               "fc2": nir.Affine(weight=W2, bias=np.zeros(n2)), "lif2": lif(n2, 5.0, th2),
                               "out": nir.Output(output_type={"output": np.array([n2])})},
                        edges=[("in", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "out")])


def test_sinabs_reads_nir_lif_as_snncc_imports_it_under_rule_steps(tmp_path):
    """sinabs 3.1.3 `from_nir` reads a NIR LIF as LIFSqueeze(tau_mem=tau, norm_input=False): v <-
    exp(-1/tau) v + I, multi-spike, reset by subtraction; `from_nir(lif="steps")` imports it as a
    stateful fire with leak exp(-1/tau) (per-neuron thresholds as an input scale), and the counts of
    every LIF over 6 steps equal sinabs' own network's with the cap lifted, as for IF."""
    import sinabs.layers as sl
    import sinabs.nir as sinabs_nir

    rng = np.random.default_rng(3)
    W1, b1, W2 = rng.normal(size=(6, 4)), rng.normal(size=6) * 0.2, rng.normal(size=(3, 6))
    th2 = np.array([0.5, 0.8, 1.1])
    path = tmp_path / "lif.nir"
    nir.write(str(path), _lif_graph(W1, b1, W2, th2))
    T, B = 6, 8
    g = from_nir(nir.read(str(path)), T=T, lif="steps")
    assert [round(n.attrs["leak"], 12) for n in g.neurons()] == [round(np.exp(-1 / 3), 12), round(np.exp(-1 / 5), 12)]
    assert g.meta["nir_lif"] == "steps"
    x = torch.as_tensor(rng.normal(size=(T, B, 4)) * 1.5)
    uncapped = g.clone()
    for n in uncapped.neurons():
        n.attrs["D"] = MAX_D
    ref = run(uncapped, x)
    net = sinabs_nir.from_nir(nir.read(str(path)), batch_size=B, num_timesteps=T)  # float32 layers
    seen = {}
    for name, mod in net.named_modules():
        if isinstance(mod, (sl.LIF, sl.LIFSqueeze)):
            mod.register_forward_hook(lambda mod, i, o, name=name: seen.__setitem__(name, o.detach().double()))
    with torch.no_grad():
        net(x.transpose(0, 1).reshape(B * T, 4).float())  # LIFSqueeze: (B * T, ...), each sample's steps together
    assert sorted(seen) == ["lif1", "lif2"]
    for k in ("lif1", "lif2"):
        own = seen[k].reshape(B, T, -1).sum(1)
        assert torch.equal(own, ref.counts[k]) and own.sum() > 0, k
    capped = run(g, x)
    assert any(not torch.equal(capped.counts[k], ref.counts[k]) for k in ("lif1", "lif2"))
    # the leak matters: the same graph read as IF counts otherwise
    approx = run(from_nir(nir.read(str(path)), T=T, lif="approximate"), x)
    assert not torch.equal(approx.counts["lif1"], capped.counts["lif1"])


def test_a_leaky_model_exports_as_nir_lif_that_sinabs_and_snncc_read_exactly(tmp_path):
    """A SpikingJelly LIFNode model (leak 0.75, D = 1, floor, beta 0), T = 4: exported as NIR LIF
    with tau = -1 / ln(0.75) timesteps; snncc reads it back exactly (metadata), and sinabs' own
    reader (LIFSqueeze, v <- exp(-1/tau) v + I) computes the same counts, cap lifted as for IF."""
    import sinabs.layers as sl
    import sinabs.nir as sinabs_nir
    import snncc
    from spikingjelly.activation_based import neuron as sjn
    from test_research_multistep import SJNet

    torch.manual_seed(0)
    node = sjn.LIFNode(tau=4.0, decay_input=False, v_reset=None, v_threshold=0.8, step_mode="m")
    g = snncc.compile(SJNet(node).eval(), torch.zeros(4, 2, 2, 8, 8), input_layout="TB").deployed
    (fire,) = g.neurons()
    assert (fire.attrs["leak"], fire.attrs["D"], fire.attrs["beta"]) == (0.75, 1, 0.0)
    path = tmp_path / "lif.nir"
    ex = write_nir(g, str(path))
    written = nir.read(str(path)).nodes[fire.name]
    assert isinstance(written, nir.LIF) and np.allclose(written.tau, -1 / np.log(0.75), rtol=1e-15, atol=0)
    assert any("NIR LIF with tau counted in timesteps" in s for s in ex.lost)
    T, B = 4, 5
    x = torch.rand(T, B, 2, 8, 8, generator=torch.Generator().manual_seed(3)).double() * 3
    ref = run(g, x)
    back = run(from_nir(nir.read(str(path))), x)
    assert back.counts.keys() == ref.counts.keys() and torch.equal(back.counts[fire.name], ref.counts[fire.name])
    assert torch.equal(back.output, ref.output)
    net = sinabs_nir.from_nir(nir.read(str(path)), batch_size=B, num_timesteps=T)
    seen = {}
    for name, mod in net.named_modules():
        if isinstance(mod, (sl.LIF, sl.LIFSqueeze)):
            mod.register_forward_hook(lambda mod, i, o, name=name: seen.__setitem__(name, o.detach().double()))
    with torch.no_grad():
        net(x.transpose(0, 1).reshape((B * T,) + tuple(x.shape[2:])).float())
    own = seen[fire.name].reshape((B, T) + tuple(fire.shape)).sum(1)
    uncapped = g.clone()
    uncapped[fire.name].attrs["D"] = MAX_D
    want = run(uncapped, x).counts[fire.name]
    assert torch.equal(own, want) and own.sum() > 0


# ---- the shipped examples through the installed command and each peer's own reader ---------------
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def _snncc(*args):
    """The installed `snncc` command (the console script beside this interpreter)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p and os.path.isdir(p)))
    exe = os.path.join(os.path.dirname(sys.executable), "snncc")
    return subprocess.run([exe, *args], env=env, capture_output=True, text=True, timeout=600)


def _export(tmp, model, *compile_args, installed_export=("binary",)):
    """compile MODEL the default way (target sim) into tmp/art with the installed command, then
    export-nir in both forms: the forms in `installed_export` with the installed command, the others
    with `snncc.cli.main` in this process (tests/cli_run.py: the same output, without a torch import
    per run); {form: (deployment, NirExport, stdout, path)}."""
    import snncc
    from cli_run import run_main

    art = str(tmp / "art")
    p = _snncc("compile", model, *compile_args, "-o", art)
    assert p.returncode == 0, p.stderr
    dep, out = snncc.load(art), {}
    for form in ("binary", "multispike"):
        path = str(tmp / f"{form}.nir")
        if form in installed_export:
            p = _snncc("export-nir", art, path, "--nir-form", form)
            code, stdout, stderr = p.returncode, p.stdout, p.stderr
        else:
            code, stdout, stderr = run_main("export-nir", art, path, "--nir-form", form)
        assert code == 0 and stderr == "", stderr
        ex = dep.export_nir(str(tmp / "api.nir"), form=form)  # the API writes the same file
        assert open(path, "rb").read() == open(str(tmp / "api.nir"), "rb").read()
        out[form] = (dep, ex, stdout, path)
    return out


@pytest.fixture(scope="module")
def events_nir(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("events"), os.path.join(EXAMPLES, "events/artifacts/speck_cnn.pt2"),
                   "--input-kind", "spike")


@pytest.fixture(scope="module")
def digits_nir(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("digits"), os.path.join(EXAMPLES, "digits/artifacts/digits_cnn.pt2"),
                   installed_export=())  # events_nir runs the installed export-nir


def _reader_counts(reader: str, path: str, x: torch.Tensor) -> dict:
    """Spike counts (B, ...) of every IF node of the NIR file, as the reader's own network computes
    them at one step per sample from a fresh state: sinabs 3.1.3 `from_nir` (its default MultiSpike,
    or with every IAF switched to its SingleSpike), norse 1.1 `from_nir` (one sample per call). The
    networks run in float64 (`.double()`), as snncc's reference does: in float32 a membrane that
    lands within float32 rounding of a threshold can fire otherwise (2 of 14k spikes of one layer
    on 12 event samples)."""
    import warnings

    warnings.simplefilter("ignore", DeprecationWarning)  # nirtorch.load
    seen, B = {}, x.shape[0]
    if reader.startswith("sinabs"):
        import sinabs.activation as sa
        import sinabs.layers as sl
        import sinabs.nir as sinabs_nir

        dtype = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)  # sinabs makes its membranes in the default dtype
        try:
            net = sinabs_nir.from_nir(nir.read(path), batch_size=B, num_timesteps=1).double()
            for name, mod in net.named_modules():
                if isinstance(mod, (sl.IAF, sl.IAFSqueeze)):
                    if reader == "sinabs-single":
                        mod.spike_fn = sa.SingleSpike
                    # its spike functions return float32 (whole numbers: exact) into float64 layers
                    mod.register_forward_hook(lambda mod, i, o, name=name: seen.setdefault(name, o.detach().double()))
            with torch.no_grad():
                net(x)
        finally:
            torch.set_default_dtype(dtype)
        return seen
    import norse.torch as nt

    net = nt.from_nir(nir.read(path)).double()
    for name, mod in net.named_modules():
        if type(mod).__name__ == "IAFCell":
            mod.register_forward_hook(lambda mod, i, o, name=name: seen.setdefault(name, []).append(
                o[0].detach() if o[0].dim() > 1 else o[0].detach()[None]))  # its Flatten drops the batch axis
    with torch.no_grad():
        for i in range(B):
            net(x[i:i + 1])
    return {k: torch.cat(v).double() for k, v in seen.items()}


def _uncapped(g):
    h = g.clone()
    for n in h.neurons():
        n.attrs["D"] = MAX_D
    return h


READERS = {"sinabs": "snncc's counts with the cap D lifted (MultiSpike: floor(v / theta))",
           "sinabs-single": "snncc's counts", "norse": "snncc's counts"}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_shipped_events_model_binary_export_is_computed_exactly_by_each_reader(events_nir, reader):
    """The shipped event model as a user exports it (`speck_cnn.pt2`, batch 1, one window per
    sample, D = 4, sum pools): in the binary form every IF layer's spike counts in the reader's own
    network, copies summed, equal snncc's deployed counts neuron for neuron (sinabs' default
    MultiSpike: with the cap lifted, as the export's notes say); the compact form gives single-spike
    readers snncc's network with D = 1, which differs."""
    dep, ex, out, path = events_nir["binary"]
    g = dep.deployed
    assert "- binary form: features_1 (D=4), features_4 (D=4), features_7 (D=4) are written as D" in out
    assert any(n.op == "pool" for n in g.nodes) and not any(type(v).__name__ == "SumPool2d"
                                                            for v in ex.graph.nodes.values())
    x = torch.as_tensor(np.load(os.path.join(EXAMPLES, "events/artifacts/events_test.npz"))["x_test"][:12, 0]).double()
    ref = run(_uncapped(g) if reader == "sinabs" else g, x)
    got = _reader_counts(reader, path, x)
    assert sorted(got) == sorted(ex.names[k] for k in ref.counts)
    for k, c in ref.counts.items():
        mine = ex.neuron_counts(k, got[ex.names[k]]).reshape(c.shape)
        assert torch.equal(mine, c) and c.sum() > 0, (k, float(mine.sum()), float(c.sum()))
    if reader != "sinabs":  # the compact form in the same reader: one spike per neuron and step
        got = _reader_counts(reader, events_nir["multispike"][3], x)
        one = g.clone()
        for n in one.neurons():
            n.attrs["D"] = 1
        d1 = run(one, x)
        assert all(torch.equal(got[k].reshape(c.shape), d1.counts[k]) for k, c in ref.counts.items())
        assert any(not torch.equal(d1.counts[k], c) for k, c in ref.counts.items())


@pytest.mark.parametrize("reader", sorted(READERS))
def test_shipped_digits_cnn_default_artefact_exports_and_each_reader_computes_it(digits_nir, reader):
    """The README's digits CNN compiled the default way (target sim: its residual streams relayed):
    export-nir re-lowers the streams to fan-in from the traced graph, writes depthwise convs as
    groups=1 kernels and the global mean as a ones-kernel conv, and chains the nodes so nirtorch's
    depth-first executor runs each after its inputs; the reader's own network then computes every
    layer's spike counts exactly (copies summed; sinabs' default MultiSpike with the cap lifted),
    and snncc reads its file back with the same output."""
    from snncc.compiler import fanin_deployed
    from snncc.interop.nir_io import load_nir

    dep, ex, out, path = digits_nir["binary"]
    assert any(n.op == "relay" for n in dep.deployed.nodes)
    assert "- residual streams: this artefact relays them" in out and "- execution order: " in out
    g, relowered = fanin_deployed(dep.traced, dep.deployed)
    assert relowered and not any(n.op == "relay" for n in g.nodes)
    assert any(n.op == "conv" and n.attrs["groups"] > 1 for n in g.nodes)
    assert all(getattr(v, "groups", 1) == 1 for v in ex.graph.nodes.values())
    assert not any(type(v).__name__ in ("SumPool2d", "AvgPool2d") or "." in k for k, v in ex.graph.nodes.items())
    data = np.load(os.path.join(EXAMPLES, "digits/artifacts/digits_test.npz"))
    x = torch.as_tensor(data["x_test"][:12]).double()
    ref = run(_uncapped(g) if reader == "sinabs" else g, x)
    got = _reader_counts(reader, path, x)
    assert sorted(got) == sorted(ex.names[k] for k in ref.counts) and len(got) == 13
    for k, c in ref.counts.items():
        mine = ex.neuron_counts(k, got[ex.names[k]]).reshape(c.shape)
        assert torch.equal(mine, c) and c.sum() > 0, (k, float(mine.sum()), float(c.sum()))
    if reader == "norse":
        own = run(dep.deployed, x)
        assert torch.equal(run(load_nir(path), x).output, own.output)
        assert torch.equal(run(g, x).output, own.output)  # the fan-in form computes what the artefact does


def test_snntorch_cannot_run_the_exports_and_says_why(events_nir, digits_nir, events_t4):
    """snntorch 1.0.0 with snncc's exports of the shipped models. From the file it loads neither:
    `nir.read` returns the nodes in name order and its importer (nirtorch's `nir_to_torch`) puts a
    node whose inputs are not built yet back in its queue at most 3 times. The graph in topological
    order (the export in memory) it loads now (no '.' in names, no SumPool2d) but still cannot run:
    a NIR IF becomes `snn.Leaky(beta=0.9)` (a leaky neuron), whose (spikes, membrane) tuple its
    graph feeds to the next layer. docs/formats.md's snntorch row says both."""
    import snntorch.import_nir as snt_nir

    for exports in (events_nir, digits_nir):
        dep, ex, _, path = exports["binary"]
        with pytest.raises(RecursionError, match="has been traversed multiple times"):
            snt_nir.import_from_nir(nir.read(path))
        net = snt_nir.import_from_nir(ex.graph)
        leaky = [m for m in net.modules() if type(m).__name__ == "Leaky"]
        assert len(leaky) == len(dep.deployed.neurons()) and all(float(m.beta) == pytest.approx(0.9) for m in leaky)
        with pytest.raises(TypeError, match=r"got \(tuple|not tuple"):  # the (spikes, membrane) tuple
            net(torch.zeros((2,) + tuple(dep.deployed.inputs[0].shape)))
    dep, ex, _ = events_t4  # the T = 4 export: the same failures (its start pulse adds 2 IFs; its graph hands a
    # conv one argument too many, or a neuron's tuple)
    e, path = ex["binary"]
    with pytest.raises(RecursionError, match="has been traversed multiple times"):
        snt_nir.import_from_nir(nir.read(path))
    net = snt_nir.import_from_nir(e.graph)
    assert len([m for m in net.modules() if type(m).__name__ == "Leaky"]) == len(dep.deployed.neurons()) + 2
    with pytest.raises(TypeError, match=r"got \(tuple|not tuple|takes 2 positional arguments but 3 were given"):
        net(torch.zeros((2,) + tuple(dep.deployed.inputs[0].shape)))


@pytest.fixture(scope="module")
def events_t4(tmp_path_factory):
    """The README's event model at T = 4 (stateful neurons carrying v - n theta across windows,
    beta = theta / 2), exported in both forms, and 12 test recordings (B, T, 2, 32, 32)."""
    import snncc

    tmp = tmp_path_factory.mktemp("t4")
    dep = snncc.compile(os.path.join(EXAMPLES, "events/artifacts/speck_cnn.pt"),
                        model_def="snncc.models.speck:speck_cnn", factory_kwargs={"size": "small"},
                        input_shape=(2, 32, 32), timesteps=4, input_kind="spike")
    assert dep.deployed.T == 4 and all(n.attrs["stateful"] and n.attrs["beta"] == 0.5 for n in dep.deployed.neurons())
    ex = {form: (dep.export_nir(str(tmp / f"{form}.nir"), form=form), str(tmp / f"{form}.nir"))
          for form in ("binary", "multispike")}
    x = torch.as_tensor(np.load(os.path.join(EXAMPLES, "events/artifacts/events_test.npz"))["x_test"][:12]).double()
    return dep, ex, x


def _sinabs_over_t(path: str, x: torch.Tensor, single: bool, clip: bool = True) -> dict:
    """sinabs 3.1.3's `from_nir` network run over all T steps of each sample in one call (its
    IAFSqueeze layers carry the membrane over the num_timesteps steps of a sample, (B*T, ...)
    batch-major); counts summed over T. clip=False lifts the membrane clip its reader sets
    (min_v_mem = -v_threshold), to show it is the whole difference."""
    import sinabs.activation as sa
    import sinabs.layers as sl
    import sinabs.nir as sinabs_nir

    B, T = x.shape[:2]
    seen = {}
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        net = sinabs_nir.from_nir(nir.read(path), batch_size=B, num_timesteps=T).double()
        for name, mod in net.named_modules():
            if isinstance(mod, (sl.IAF, sl.IAFSqueeze)):
                assert torch.equal(mod.min_v_mem.reshape(-1), -mod.spike_threshold.reshape(-1))
                if not clip:
                    mod.min_v_mem = None
                if single:
                    mod.spike_fn = sa.SingleSpike
                mod.register_forward_hook(lambda mod, i, o, name=name: seen.setdefault(name, o.detach().double()))
        with torch.no_grad():
            net(x.reshape((B * T,) + tuple(x.shape[2:])))
    finally:
        torch.set_default_dtype(dtype)
    return {k: v.reshape((B, T) + tuple(v.shape[1:])).sum(1) for k, v in seen.items()}


def test_stateful_t4_event_model_gets_its_initial_membranes_from_a_start_pulse(events_t4):
    """Stateful neurons over T = 4 windows: the binary form writes the D copies (their membranes
    stay {v + j theta} as a set from window to window) and adds the copies' k theta and beta once,
    at the first step, through the start pulse (NIR's IF has no initial membrane); the compact form
    gets beta the same way. snncc reads both files back exactly; the pulse fires once per sample."""
    from snncc.interop.nir_io import load_nir

    dep, ex, x = events_t4
    a = run(dep.deployed, x.transpose(0, 1))
    for form, (e, path) in ex.items():
        assert e.copies == ({"features_1": 4, "features_4": 4, "features_7": 4} if form == "binary" else {})
        note = next(s for s in e.lost if s.startswith("initial membranes: stateful features_1, features_4, features_7"))
        assert "clip at -v_threshold" in note and "norse 1.1's IAFCell resets to 0" in note
        assert not any("(metadata only)" in s for s in e.lost)
        b = run(load_nir(path), x.transpose(0, 1))
        assert b.counts["start"].sum() == x.shape[0] and b.counts["start"].numel() == x.shape[0]
        for k, c in a.counts.items():
            assert torch.equal(e.neuron_counts(k, b.counts[e.names[k]]), c) and c.sum() > 0, (form, k)
        assert torch.equal(a.output, b.output)


def test_sinabs_computes_the_t4_stateful_model_up_to_its_membrane_clip(events_t4):
    """sinabs 3.1.3's own reader on the T = 4 export (all 4 steps of a sample in one call): with
    SingleSpike the binary form's copies, summed, equal snncc's counts neuron for neuron on
    features_1 and features_4; on features_7 a few membranes drop below sinabs' clip at
    -v_threshold (-D theta for copies) and sinabs counts more there. With that clip lifted, every
    layer is exact: SingleSpike = snncc's counts; its default MultiSpike, either form = snncc's
    neuron with the cap D lifted. docs/formats.md's T > 1 row says this."""
    dep, ex, x = events_t4
    g = dep.deployed
    ref, unc = run(g, x.transpose(0, 1)), run(_uncapped(g), x.transpose(0, 1))
    e, path = ex["binary"]
    got = _sinabs_over_t(path, x, single=True)
    assert float(got["start"].sum()) == x.shape[0]
    mine = {k: e.neuron_counts(k, got[e.names[k]]).reshape(c.shape) for k, c in ref.counts.items()}
    assert torch.equal(mine["features_1"], ref.counts["features_1"])
    assert torch.equal(mine["features_4"], ref.counts["features_4"])
    off = mine["features_7"] != ref.counts["features_7"]
    assert 0 < int(off.sum()) <= 5 and bool((mine["features_7"][off] > ref.counts["features_7"][off]).all())
    for form, single, want in (("binary", True, ref), ("binary", False, unc), ("multispike", False, unc)):
        e, path = ex[form]
        got = _sinabs_over_t(path, x, single=single, clip=False)
        for k, c in want.counts.items():
            assert torch.equal(e.neuron_counts(k, got[e.names[k]]).reshape(c.shape), c) and c.sum() > 0, (form, k)


def test_norse_cannot_compute_stateful_neurons_and_says_why(events_t4):
    """norse 1.1's reader builds an IAFCell per IF: it resets to v_reset = 0 (the carried v - theta
    is lost) and fires on v > v_th, so even the start pulse stays silent; its counts on the T = 4
    export are far from snncc's. The export's note names both."""
    import norse.torch as nt

    dep, ex, x = events_t4
    e, path = ex["binary"]
    net = nt.from_nir(nir.read(path)).double()
    cells = {n: m for n, m in net.named_modules() if type(m).__name__ == "IAFCell"}
    assert cells and all(float(m.p.v_reset) == 0.0 for m in cells.values())
    seen = {}
    for name, mod in cells.items():
        mod.register_forward_hook(lambda mod, i, o, name=name: seen.setdefault(name, []).append(o[0].detach()))
    B, T = x.shape[:2]
    with torch.no_grad():
        for b in range(B):
            state = None
            for t in range(T):
                _, state = net(x[b:b + 1, t], state)
    got = {k: torch.stack(v).reshape((B, T) + tuple(v[0].shape[1:])).sum(1) for k, v in seen.items()}
    ref = run(dep.deployed, x.transpose(0, 1))
    assert float(got["start"].sum()) == 0.0
    assert all(float(e.neuron_counts(k, got[e.names[k]]).sum()) < 0.1 * float(c.sum()) for k, c in ref.counts.items())
