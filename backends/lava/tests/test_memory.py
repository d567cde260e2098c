"""The loihi target refuses, before allocating, a model whose explicit synapse matrices would not
fit in memory (a past defect: E-SpikeFormer-5.1M at 224x224 used to allocate until the
machine killed it); the synapse count is exact on a hand-computed graph."""

from snncc_lava import network


def test_materialised_synapses_by_hand(conv_pool_linear):
    # conv: 3x6x6 outputs x (2 x 3 x 3) fan-in = 108 x 18 = 1944; pool: 3x3x3 outputs x 4 = 108;
    # linear over the last axis: 3x3x3 outputs x 3 inputs = 81
    assert network.materialised_synapses(conv_pool_linear) == 1944 + 108 + 81


def test_refused_before_allocating_when_it_cannot_fit(conv_pool_linear, monkeypatch):
    import snncc.resources as res

    g = conv_pool_linear
    assert network.memory_problems(g) == []
    monkeypatch.setattr(res, "available_bytes", lambda: 1000)
    (msg,) = network.memory_problems(g)
    assert msg.startswith("the Lava lowering stores 2,133 synapses as explicit sparse matrices (about 50.0 kB")
    assert "this machine has 1000 B available" in msg


def test_lava_simulation_refuses_before_building_when_matrices_do_not_fit(conv_pool_linear, monkeypatch):
    import pytest
    import torch

    import snncc.resources as res
    from snncc.errors import TargetError
    from snncc_lava.target import LoihiTarget

    monkeypatch.setattr(res, "available_bytes", lambda: 1000)
    x = torch.ones((1, 2, 6, 6))
    # Lava runs every projection as a matrix; the fixed-point integer model only those that are not one
    # kernel: f -> g is a sum pool then a linear, 108 + 81 synapses (the conv x -> f runs as a convolution)
    for run, n in ((lambda: LoihiTarget().simulate(conv_pool_linear, x), "2,133"),
                   (lambda: LoihiTarget().reference(conv_pool_linear, x, {"precision": "fixed"}), "189")):
        with pytest.raises(TargetError, match=f"stores {n} synapses as explicit sparse matrices"):
            run()


def test_fixed_or_netx_compile_says_why_it_needs_the_matrices(conv_pool_linear, monkeypatch):
    """check(): netx exports every explicit matrix and precision=fixed quantises those of the
    projections that are not one kernel, so a model whose matrices do not fit is refused with that
    reason and the way out."""
    import snncc.resources as res
    from snncc_lava.target import LoihiTarget

    monkeypatch.setattr(res, "available_bytes", lambda: 1000)
    t = LoihiTarget()
    assert t.check(conv_pool_linear, {}) == []  # float: mapping only
    for opts, why in (({"precision": "fixed"}, "precision=fixed quantises the projections that are not one kernel "
                                               "as explicit matrices, and the Lava lowering stores 189 synapses"),
                      ({"netx": True}, "netx=true exports the explicit synapse matrices, and the Lava lowering stores "
                                       "2,133 synapses")):
        (msg,) = t.check(conv_pool_linear, opts)
        assert msg.startswith(why) and "on a larger machine" in msg, msg
