"""Max pooling of spikes in the event simulator (snncc.sim.events.runner: per timestep window, an
output spikes as the max of its window's input counts rises): by hand, against the reference
executor on overlapping windows, a SEW-ResNet stem through `snncc simulate --schedule event`, and
the refusals that stay."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from snncc.errors import SnnccError
from snncc.ir import Graph, Node
from snncc.sim import reference
from snncc.sim.events import ORDERS, build_network, simulate


def _conv1(name, src, c=1, w=1.0):
    return Node(name, "conv", [src], {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1)},
                {"weight": np.full((c, c, 1, 1), w) * np.eye(c)[:, :, None, None]})


def hand_graph():
    """spike input (1, 4, 4), counts up to 3 -> max_pool 2x2 s2 -> conv 1x1 (weight 1) -> fire
    (theta 1, D 3, stateless): each fire neuron counts its window's max -> reshape -> linear -> output."""
    g = Graph([Node("x", "input", [], {"shape": (1, 4, 4), "kind": "spike"}),
               Node("mp", "max_pool", ["x"], {"kernel": (2, 2), "stride": (2, 2)}),
               _conv1("w", "mp"),
               Node("f", "fire", ["w"], {"D": 3, "stateful": False, "rounding": "floor"}),
               Node("flat", "reshape", ["f"], {"shape": (4,)}),
               Node("g", "linear", ["flat"], {}, {"weight": np.array([[1.0, 10.0, 100.0, 1000.0]])}),
               Node("o", "output", ["g"])]).infer()
    g.T = 2
    return g


def hand_input():
    x = torch.zeros(2, 1, 1, 4, 4, dtype=torch.float64)  # (T, B, C, H, W)
    x[0, 0, 0] = torch.tensor([[1., 0., 0., 2.],
                               [0., 1., 0., 0.],
                               [0., 0., 3., 1.],
                               [1., 0., 0., 0.]])
    x[1, 0, 0, 0, 0] = x[1, 0, 0, 1, 1] = 1.0  # two spikes in one window: one output spike (an OR)
    return x


@pytest.mark.parametrize("policy", ["ideal", "greedy"])
@pytest.mark.parametrize("order", ORDERS)
def test_max_pool_by_hand_equals_reference(policy, order):
    """Windows (top-left, top-right, bottom-left, bottom-right): t=0 max(1,0,0,1)=1, max(0,2,0,0)=2,
    max(0,0,1,0)=1, max(3,1,0,0)=3 (a sum pool would give 2, 2, 1, 4); t=1 max(1,1,0,0)=1 in the
    top-left only. Counts over T: 2, 2, 1, 3; output (2 + 20 + 100 + 3000) / 2 = 1561; the pool
    emits 7 + 1 = 8 events for the input's 9 + 2."""
    g, x = hand_graph(), hand_input()
    want = torch.tensor([[[[2., 2.], [1., 3.]]]], dtype=torch.float64)
    ref = reference.run(g, x)
    assert torch.equal(ref.counts["f"].double(), want) and float(ref.output) == 1561.0
    r = simulate(g, x, policy=policy, order=order, chunk=3, seed=1)
    assert torch.equal(r.counts["f"].double(), want)
    assert float(r.output) == 1561.0
    assert r.events["mp"] == 8 and r.events["x"] == 11 and r.events["f"] == 8


@pytest.mark.parametrize("policy", ["ideal", "greedy"])
def test_max_pool_through_a_layout_of_the_spikes(policy):
    """The hand graph's input flat (16,), reshaped to (1, 4, 4) and transposed (H <-> W) before the
    pool: the pool maps through the permutation of addresses; the top-right and bottom-left windows
    swap: counts 2, 1, 2, 3 (output (2 + 10 + 200 + 3000) / 2 = 1606)."""
    g0 = hand_graph()
    g = Graph([Node("x", "input", [], {"shape": (16,), "kind": "spike"}),
               Node("r", "reshape", ["x"], {"shape": (1, 4, 4)}),
               Node("t", "permute", ["r"], {"dims": (0, 2, 1)}),
               Node("mp", "max_pool", ["t"], {"kernel": (2, 2), "stride": (2, 2)})]
              + [n.clone() for n in g0.nodes if n.name not in ("x", "mp")]).infer()
    g.T = 2
    x = hand_input().reshape(2, 1, 16)
    want = torch.tensor([[[[2., 1.], [2., 3.]]]], dtype=torch.float64)
    ref = reference.run(g, x)
    assert torch.equal(ref.counts["f"].double(), want) and float(ref.output) == 1606.0
    r = simulate(g, x, policy=policy)
    assert torch.equal(r.counts["f"].double(), want) and float(r.output) == 1606.0


def stem_graph(seed, T, D=2):
    """A SEW-ResNet stem on spikes: spike input (2, 8, 8) -> conv 3x3 -> fire (D, soft reset,
    stateful) -> max_pool 3x3 s2 p1 (overlapping windows, padding) -> conv 3x3 -> fire -> max_pool
    2x2 of that -> linear -> output, random weights."""
    rng = np.random.default_rng(seed)

    def conv(name, src, ci, co):
        return Node(name, "conv", [src], {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1)},
                    {"weight": rng.normal(0.0, 0.5, (co, ci, 3, 3)), "bias": rng.normal(0.0, 0.2, co)})

    g = Graph([Node("x", "input", [], {"shape": (2, 8, 8), "kind": "spike"}),
               conv("c1", "x", 2, 3),
               Node("f1", "fire", ["c1"], {"D": D, "stateful": True, "rounding": "floor"}),
               Node("mp1", "max_pool", ["f1"], {"kernel": (3, 3), "stride": (2, 2), "padding": (1, 1)}),
               conv("c2", "mp1", 3, 4),
               Node("f2", "fire", ["c2"], {"D": D, "stateful": True, "rounding": "floor"}),
               Node("mp2", "max_pool", ["f2"], {"kernel": (2, 2), "stride": (2, 2)}),
               Node("flat", "reshape", ["mp2"], {"shape": (16,)}),
               Node("fc", "linear", ["flat"], {}, {"weight": rng.normal(0, 1, (3, 16))}),
               Node("o", "output", ["fc"])]).infer()
    g.T = T
    return g


def _spikes(seed, T, B, D=2):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, D + 1, (T, B, 2, 8, 8)).astype(np.float64))


@pytest.mark.parametrize("order", ORDERS)
def test_ideal_overlapping_windows_equal_reference_bit_exact(order):
    """T = 3 stateful populations between two max pools (one with overlapping windows and padding):
    every count equals the reference executor's, in every event order (the output up to float association)."""
    g = stem_graph(0, T=3)
    x = _spikes(1, 3, 4)
    ref = reference.run(g, x)
    assert all(ref.counts[f].sum() > 0 for f in ("f1", "f2"))
    r = simulate(build_network(g), x, policy="ideal", order=order, chunk=50, seed=2)
    for f in ("f1", "f2"):
        assert torch.equal(r.counts[f], ref.counts[f]), f
    assert torch.allclose(r.output, ref.output, rtol=0, atol=1e-12)  # the same terms, another association
    assert len({tuple(o.tolist()) for o in ref.output}) == 4  # the samples differ (not saturated)
    # per timestep a window's max: over T at least the max of the window's totals
    assert r.events["mp1"] >= int(F.max_pool2d(r.counts["f1"].double(), 3, 2, 1).sum()) > 0


@pytest.mark.parametrize("order", ORDERS)
def test_greedy_pool_events_are_the_window_max_of_the_runs_own_counts(order):
    """greedy (one window per timestep, T = 1, spike by spike in emission order): each pool emits
    exactly the max over its windows of the counts its input population fired in that run."""
    g = stem_graph(3, T=1, D=3)
    x = _spikes(4, 1, 3, D=3)
    r = simulate(g, x, policy="greedy", order=order, chunk=7, seed=5)
    assert r.events["mp1"] == int(F.max_pool2d(r.counts["f1"].double(), 3, 2, 1).sum()) > 0
    assert r.events["mp2"] == int(F.max_pool2d(r.counts["f2"].double(), 2, 2).sum()) > 0


def test_refusals_name_the_node():
    g = stem_graph(0, T=1)
    with pytest.raises(SnnccError) as e:
        simulate(g, _spikes(1, 1, 1), policy="speck")
    assert e.value.one_line().startswith("node mp1: the speck policy models the chip, which pools spikes by summing")
    with pytest.raises(SnnccError) as e:
        build_network(g, masks="centre")
    assert "node mp1: centre-spiked SSC in the event simulator gates convs on (sum-)pooled spike maps" \
        in e.value.one_line()


def test_sew_max_pool_stem_through_simulate_schedule_event(tmp_path):
    """The user's path: SpikingJelly 2.0's IFNode (hard reset) SEW model with its max-pool stem,
    exported at batch 1, compiled, then the installed `snncc simulate --schedule event`: spike counts ==
    the integer model (exit 0); and the API's event counts equal the reference count for count."""
    import snncc
    from binary_kinds import cli, export, sew
    from snncc.cli import main

    pt2, art = tmp_path / "m.pt2", tmp_path / "art"
    export(lambda: sew("max"), pt2)
    assert main(["compile", str(pt2), "-o", str(art)]) == 0  # in process (the command's code) ...
    r = cli("simulate", art, "--schedule", "event", "--samples", "2")  # ... and the installed command
    assert r.returncode == 0, r.stdout + r.stderr
    assert "spike counts == reference" in r.stdout, r.stdout
    dep = snncc.load(str(art))
    assert "max_pool" in {n.op for n in dep.deployed.nodes}
    x = torch.rand(3, 1, 2, 8, 8, generator=torch.Generator().manual_seed(0)) * 2
    ref, ev = dep.reference(x), dep.simulate(x, schedule="event")
    assert set(ev.counts) == set(ref.counts)
    for k, c in ref.counts.items():
        assert torch.equal(ev.counts[k], c), k
    assert all(c.sum() > 0 for c in ref.counts.values())


def test_sppf_chained_max_pools_event_counts_equal_reference():
    """SpikeYOLO's SPPF (tests/test_sppf.py, multi-step, T = 2): three chained 5x5 max pools of one
    population's spikes, concatenated with it into the output conv; the event simulator's output
    equals the reference's (up to float association) and every pool emits events each timestep."""
    import snncc
    from test_sppf import _model

    dep = snncc.compile(_model(multi_step=True), torch.zeros(1, 2, 8, 8))
    pools = [n.name for n in dep.deployed.nodes if n.op == "max_pool"]
    assert len(pools) == 3 and dep.deployed.T == 2
    x = torch.rand(3, 2, 8, 8, generator=torch.Generator().manual_seed(1)) * 3
    ref, ev = dep.reference(x), dep.simulate(x, schedule="event")
    for k, c in ref.counts.items():
        assert torch.equal(ev.counts[k], c), k
    assert torch.allclose(ev.output, ref.output, rtol=0, atol=1e-9)
    assert all(ev.events[p] > 0 for p in pools)
    # the pools count the maxima of the previous stage per timestep: monotone along the chain
    assert ev.events[pools[0]] <= ev.events[pools[1]] <= ev.events[pools[2]]
