"""The completion's vector intrinsics. `kernels._block_mask`, the pass over one whole block of
`_burst_sample`: the flush (membranes + scratch, the scratch zeroed) and the mask of the neurons
not below their bound, equal bit for bit to the scalar loops' float64 additions and comparisons,
on float32 and float64 scratch, at offsets in larger arrays, with values on, just under and just
over the bound, a NaN membrane and bounds of -inf and NaN. `kernels._nonzero64`, the listing of
marked blocks 64 at a time, against numpy and, on a wide sparse population, against the
reference executor. `kernels._axpy`, the delivery's add of a run (64-byte vectors and a masked
last group), against numpy's float32 and float64 arithmetic for every length 0-40 at unaligned
offsets, nothing written outside the run. `kernels._speck_add`, the speck rule's add over a run,
likewise, with its flags."""

import numba
import numpy as np
import pytest

from snncc.sim.events import kernels

B = kernels.BURST_BLOCK


@numba.njit
def _call(vq, bq, acc, ba, loq, p, flush):
    return kernels._block_mask(vq, np.uint64(bq), acc, np.uint64(ba), loq, np.uint64(p), flush)


def _want(vq, bq, acc, ba, loq, p, flush):
    v = vq[bq:bq + B] + (acc[ba:ba + B].astype(np.float64) if flush else 0.0)
    bits = ~(v < loq[p:p + B])  # (not below: NaN on either side counts)
    return v, sum(1 << int(j) for j in np.flatnonzero(bits))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("flush", [True, False])
def test_block_mask_equals_the_scalar_rule(dtype, flush):
    rng = np.random.default_rng(3)
    for trial in range(20):
        bq, ba, p = (int(rng.integers(0, 40)) for _ in range(3))
        vq = rng.integers(-40, 40, 80) / 16.0
        acc = (rng.integers(-40, 40, 80) / 32.0).astype(dtype)
        loq = np.full(64, 1.0 - 1e-7)
        loq[p + 3] = -np.inf  # (theta <= 0: `complete_burst`'s silent test never skips it)
        loq[p + 4] = np.nan
        vq[bq + 5] = np.nan
        target = vq[bq + 6] + (float(acc[ba + 6]) if flush else 0.0)
        loq[p + 6] = target  # exactly on the bound: not below
        loq[p + 7] = np.nextafter(vq[bq + 7] + (float(acc[ba + 7]) if flush else 0.0), np.inf)  # one ulp over: below
        v_want, m_want = _want(vq, bq, acc, ba, loq, p, flush)
        v0, a0 = vq.copy(), acc.copy()
        got = _call(vq, bq, acc, ba, loq, p, flush)
        assert got == m_want, trial
        if flush:
            np.testing.assert_array_equal(vq[bq:bq + B], v_want)
            assert not acc[ba:ba + B].any()
        else:
            np.testing.assert_array_equal(vq, v0)
            np.testing.assert_array_equal(acc, a0)
        outside = np.ones(80, dtype=bool)
        outside[bq:bq + B] = False
        np.testing.assert_array_equal(vq[outside], v0[outside])  # nothing written outside the block
        outside = np.ones(80, dtype=bool)
        outside[ba:ba + B] = False
        np.testing.assert_array_equal(acc[outside], a0[outside])
        assert got >> 3 & 1 and got >> 4 & 1 and got >> 5 & 1 and got >> 6 & 1 and not got >> 7 & 1


@numba.njit
def _axpy(acc, t, w, wo, m, n):
    kernels._axpy(acc, np.uint64(t), w, np.uint64(wo), m, np.uint64(n))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_axpy_adds_a_run_with_the_loops_arithmetic(dtype):
    """Values with more bits than float32 keeps (so a different order or a fused multiply-add
    would show), every length from 0 to 40 (whole vectors and masked remainders) at offsets that
    are not multiples of a vector; the guard values around the run stay untouched. A mixed-type
    call (float64 scratch, float32 weights) takes numba's loop, with numba's promotion."""
    rng = np.random.default_rng(7)
    for n in range(41):
        t, wo = int(rng.integers(1, 20)), int(rng.integers(0, 20))
        acc = rng.standard_normal(n + 40).astype(dtype)
        w = rng.standard_normal(n + 40).astype(dtype)
        m = dtype(rng.standard_normal())
        want = acc.copy()
        want[t:t + n] = want[t:t + n] + w[wo:wo + n] * m  # (numpy: the same type's multiply, then add)
        _axpy(acc, t, w, wo, m, n)
        assert acc.tobytes() == want.tobytes(), n
    acc, w = np.zeros(20), np.full(20, 0.1, np.float32)
    _axpy(acc, 3, w, 0, 3.0, 5)
    assert acc[3:8].tolist() == [float(np.float32(0.1)) * 3.0] * 5 and not acc[:3].any() and not acc[8:].any()


@numba.njit
def _speck_add(vq, t, w, wo, cnt, n, th, vm):
    return kernels._speck_add(vq, np.uint64(t), w, np.uint64(wo), cnt, np.uint64(n), th, vm)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_speck_add_is_the_loops_arithmetic_and_flags(dtype):
    """`kernels._speck_add`, the speck rule's add over a run (64-byte groups and a masked last one):
    for every length 0-40 at offsets that are not multiples of a group, the membranes are
    max(v + w, vm) in the array's type, each counter one higher, the guard values around the run
    untouched, and the flags (bit 0: some sum >= th; bit 1: some sum < vm) those of the run's sums
    only: values just past the run (in the last group's masked lanes) that would set them do not.
    A float64 run with float32 weights takes numba's loop, with the same results."""
    rng = np.random.default_rng(11)
    th, vm = dtype(1.0), dtype(-2.0)
    seen = set()
    for n in range(41):
        for trial in range(3):
            t, wo = int(rng.integers(1, 20)), int(rng.integers(0, 20))
            vq = (rng.standard_normal(n + 40) * 1.3).astype(dtype)
            w = (rng.standard_normal(n + 40) * 0.7).astype(dtype)
            vq[t + n:] = 5.0  # (past the run: would read as at the threshold and, below, under vm)
            w[wo + n:] = -20.0
            cnt = rng.integers(0, 5, n + 40).astype(np.int32)
            v = vq[t:t + n] + w[wo:wo + n]
            want_v, want_c = vq.copy(), cnt.copy()
            want_v[t:t + n] = np.where(v > vm, v, vm)
            want_c[t:t + n] += 1
            flags = int(bool((v >= th).any())) | int(bool((v < vm).any())) << 1
            got = _speck_add(vq, t, w, wo, cnt, n, th, vm)
            assert got == flags and vq.tobytes() == want_v.tobytes() and np.array_equal(cnt, want_c), (n, trial)
            seen.add(flags)
    assert seen == {0, 1, 2, 3}
    for n in (5, 21):  # the last group's masked lanes read as 0: with th = -1 and vm = 1 they would set both flags
        vq, cnt = np.full(n + 9, -5.0, dtype), np.zeros(n + 9, np.int32)
        assert _speck_add(vq, 3, np.zeros(n + 9, dtype), 0, cnt, n, dtype(-1.0), dtype(-10.0)) == 0, n
        vq[:] = 5.0
        assert _speck_add(vq, 3, np.zeros(n + 9, dtype), 0, cnt, n, dtype(10.0), dtype(1.0)) == 0, n
    vq, cnt = np.zeros(12), np.zeros(12, np.int32)
    assert _speck_add(vq, 2, np.full(12, 0.1, np.float32), 0, cnt, 5, 0.1, -1.0) == 1  # float32(0.1) > 0.1
    assert vq[2:7].tolist() == [float(np.float32(0.1))] * 5 and cnt.tolist() == [0, 0] + [1] * 5 + [0] * 5


@numba.njit
def _nz(arr, idx):
    return kernels._nonzero64(arr, np.uint64(idx))


def test_nonzero64_sets_a_bit_per_nonzero_byte():
    rng = np.random.default_rng(4)
    for trial in range(30):
        a = (rng.random(200) < rng.random()).astype(np.uint8) * rng.integers(1, 256, 200).astype(np.uint8)
        i = int(rng.integers(0, 200 - 64 + 1))
        want = sum(1 << int(j) for j in np.flatnonzero(a[i:i + 64]))
        assert _nz(a, i) == want, trial


def test_sparse_wide_maps_list_their_marked_blocks_64_at_a_time(monkeypatch):
    """A first population of 16 x 32 x 30 neurons (960 blocks: `_burst_sample` lists its marked
    blocks 64 marks at a time, `_nonzero64`, where a span has 64 left, the rest one by one) under sparse input, and a
    silent sample: the chain run's counts equal the reference executor's neuron by neuron, and the
    step loop's."""
    import torch

    from snncc.sim.events import build_network
    from snncc.sim.reference import run
    from test_sim_events import _conv_pool_conv
    from test_sim_events_chain import _both, _equal

    g = _conv_pool_conv(7, (32, 30), (16, 4), (1.0, 1.5), (0.4, 0.5), T=3)
    for n in g.nodes:
        if "weight" in n.params:
            n.params["weight"] = np.round(n.params["weight"] * 64) / 64
    net = build_network(g)
    assert (net.offsets["A"][1] - net.offsets["A"][0]) // B == 960  # (15 words of 64 marks)
    gen = torch.Generator().manual_seed(9)
    x = torch.poisson(torch.full((3, 4, 2, 32, 30), 0.01), generator=gen).clamp(max=3).to(torch.float64)
    x[:, 2] = 0.0
    (fast, _, _), (slow, _, _) = _both(net, x, monkeypatch)
    _equal(fast, slow)
    ref = run(g, x)
    for k in ref.counts:
        assert torch.equal(fast.counts[k], ref.counts[k]), k
    assert int(fast.counts["A"].sum()) > 20 and int(fast.counts["A"][2].sum()) == 0
