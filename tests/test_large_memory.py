"""What lets the 171.7M SDT-V3 model verify within 16 GB (benchmarks/bench_memory.py --large):
the reference executor reads a graph's float64 weights in place instead of copying them per
executor, and `verify.compare` lets each level's executors go before the next level runs.
Structural checks only; the memory itself is measured in the benchmark, not here."""

import gc
import os
import weakref

import numpy as np
import torch

import snncc.verify as V
from snncc.frontend.loader import load_model, trace
from snncc.passes.manager import run_pipeline
from snncc.sim.reference import Interpreter

ART = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "digits", "artifacts")


def _graphs():
    traced = trace(load_model(os.path.join(ART, "digits_former.pt2")))
    return traced, run_pipeline(traced, "fold").graph, run_pipeline(traced, "deploy").graph


def test_executor_reads_float64_weights_in_place():
    traced, _, _ = _graphs()
    arrays = [(n.name, k, v) for n in traced.nodes for k, v in n.params.items()
              if isinstance(v, np.ndarray) and v.dtype == np.float64 and v.size > 1]
    assert arrays  # the traced graph holds its weights as float64 arrays
    it = Interpreter(traced)
    for name, k, v in arrays:
        assert it._params[name][k].data_ptr() == v.ctypes.data, (name, k)  # no copy
    it32 = Interpreter(traced, torch.float32)  # another precision: its own converted copy
    name, k, v = arrays[0]
    assert it32._params[name][k].dtype == torch.float32 and it32._params[name][k].data_ptr() != v.ctypes.data


def test_compare_lets_each_level_go_before_the_next(monkeypatch):
    traced, folded, deployed = _graphs()
    with np.load(os.path.join(ART, "digits_test.npz")) as d:
        x = torch.as_tensor(d["x_test"][:4], dtype=torch.float64)
    forced, runs = [], []
    init = V._Forced.__init__

    def tracked_init(self, *a, **k):
        init(self, *a, **k)
        forced.append(weakref.ref(self))

    real_run = V.run

    def tracked_run(graph, *a, **k):
        gc.collect()
        runs.append([f() is None for f in forced])  # the earlier levels' forced executors are gone
        return real_run(graph, *a, **k)

    monkeypatch.setattr(V._Forced, "__init__", tracked_init)
    monkeypatch.setattr(V, "run", tracked_run)
    rep = V.compare(None, {"traced": traced, "folded": folded, "deployed": deployed}, x)
    assert rep.ok and len(forced) == 2
    assert runs == [[], [True]]  # folded runs first; the deployed level runs after folded's executor is freed


def test_a_pt2_is_verified_in_float64(tmp_path):
    """A `.pt2` program is compared in float64 like a module (a float64 copy of its module): in
    float32 a large model's spikes can sit on the other side of a rounding step (the 171.7M SDT-V3
    model: 0.018 on logits of 1.06, beyond the float32 tolerance)."""
    import snncc

    pt2 = os.path.join(ART, "digits_former.pt2")
    dep = snncc.compile(pt2)
    ep = torch.export.load(pt2)
    dtypes = {k: t.dtype for k, t in ep.state_dict.items()}
    assert torch.float32 in dtypes.values()
    rep = dep.verify(samples=4, model=ep)
    assert rep.eager_precision == "float64" and rep.tol == 1e-4 and rep.ok
    assert rep.levels[0].level == "pytorch" and rep.levels[0].max_logit_diff < 1e-9 * rep.logit_scale
    assert {k: t.dtype for k, t in ep.state_dict.items()} == dtypes  # the caller's program stays float32
