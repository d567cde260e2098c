"""Compiled (numba) delivery kernels of the event-driven simulator: the per-synapse hot loops.

Owns `FlatTables` (every source's CSR address table concatenated into one, so one kernel call
serves a whole step whatever its sources), `deliver_ideal` (burst events with multiplicity into an
order-independent sum), `deliver_sequential` (greedy/speck: events one after another, every
synapse updating its neuron and firing it by the policy's rule at once) and `compile_seconds`
(JIT time, reported by the benchmarks and never counted as throughput), plus the dense sweeps of
a timestep (`init_state`, `start_timestep`, `first_update`, `first_update_hot` (speck, channel-last:
only the neurons listed at their threshold), `complete_burst` (with the bursts' counts, event ids
and peak)) and the compiled bookkeeping around the kernels (the input read, a timestep's or a chain run's
whole input: `input_spikes`, `input_rows_count`, `input_rows_fill`; `event_rows`,
`_ideal_events`, `zeros`, `clear`; a greedy/speck step's `_sample_order`, `_records_by_key`, `emit_spikes`:
counting sorts and one pass, linear in the step's events). All of it runs without the GIL: with
the batch split over threads (`runner._simulate_split`) only the Python between the calls is
serial.

Kernels per case: `_sequential_speck_cl` / `_sequential_greedy_cl` (no SSC gates, the runner's
default for greedy/speck: `ChannelLast` membranes and int32 contribution counters in
channel-last order, each event's targets as gap-free runs, a SIMD add-and-compare pass per run
and the scalar firing rule only where a neuron reaches its bound), `_sequential_speck` /
`_sequential_greedy` (no SSC gates: the policy fixed at compile time, unsigned flat indexing;
used when a speck lower bound is not below its threshold or a run's bound is not one value), `_sequential` (gated tables, either policy), `_ideal`
(gated tables), `_ideal_runs` (ungated tables, the common case: `RunTables`, channel-last runs of
targets added as contiguous SIMD loops from shared weight blocks and address patterns, samples on
numba's threads, each sample's scratch flushed into the membranes right after its events; the
per-target sums are those of `_ideal`, term for term in the same order; accumulated in float32
when `RunTables.f32_exact` proves every product and partial sum exact: weights on a float32 grid
2^-exp and integer multiplicities with sum |w| x mult below 2^24 quanta per target, so the float32
sums are the float64 ones). On a plain network (`IdealQ`) the ideal policy keeps its membranes and
counts channel-last for the whole run: the flush is a contiguous add, a completion sweeps
contiguously with a SIMD prescan per block (`complete_burst_q`), and a delivery that completes its
target population fires it per sample right after that sample's flush, in cache. Per population
and sample the runner keeps whether a neuron that can fire is at or above its bound (dirty): a
clean sample's completion is skipped, or visits only the blocks its delivery marked as it wrote
them (their membranes requested from memory as they are marked). The delivery scratch is one
sample's per thread (in L2, where a batch-sized one was not), and the firing parameters are kept
once per distinct block of 16 neurons (`IdealQ.blocks`: a convolution's map has a few). The spike
counts of bursts and greedy/speck spikes (megabytes per batch, out of cache between timesteps) are
updated with their cache lines prefetched well ahead (`_prefetch`).

The kernels *are* the per-event semantics the runner documents (`snncc.sim.events.runner`): a
plain loop over the step's events in order and over each event's synapses, in float64 with the
same IEEE operations as the per-event Python oracle of tests/test_sim_events.py (or float32 where
that is provably the same value, above; numba does not
contract `v - n*theta` into a fused multiply-add unless fastmath is on; it is off). Each event's
synapses are one contiguous slice of the tables (`indptr[a]:indptr[a+1]`), read front to back.

Centre-spiked SSC: a gated table's entries carry their gate site (`gate >= 0`); entries of
closed gates are dropped and a slot's open entries of one event (adjacent, `first` marks the
start of each (address, slot) group) are summed, in table order, into one update.

Compiled with `cache=True` (the machine code is kept in `__pycache__` next to this file, or in
numba's user-wide cache); the first call in a fresh process loads it or, without a cache, compiles
it (a few seconds). Where neither place can be written (a read-only install and an unwritable
HOME) the kernels compile in memory for each process instead, with one warning (`_njit`).
`first_use` tells a front end, before a run, that the cache holds none of them yet (the CLI says
so as progress). A chain run (`_ideal_chain`) counts each step's synaptic ops and cycle-counter
ticks (`_cycles`, x86 only) for the benchmarks' per-layer table.
"""

from __future__ import annotations

import os
import platform
import time

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from snncc.errors import SnnccError

_UNCACHED: list[str] = []  # kernels compiled in memory: numba found nowhere to write its cache


def _njit(**options):
    """`numba.njit(cache=True, **options)`, or without the on-disk cache when numba has nowhere to
    write it (it raises "cannot cache function" when the function is decorated)."""
    def decorate(fn):
        try:
            return numba.njit(cache=True, **options)(fn)
        except RuntimeError as e:
            if "cannot cache" not in str(e):
                raise
            if not _UNCACHED:
                import warnings

                warnings.warn("numba cannot write its kernel cache here (read-only install and HOME; set "
                              "NUMBA_CACHE_DIR to a writable folder to keep it): the event simulator's kernels are "
                              "compiled in memory for each run", stacklevel=2)
            _UNCACHED.append(fn.__name__)
            return numba.njit(cache=False, **options)(fn)

    return decorate


def first_use() -> str | None:
    """The folder numba caches these kernels in when it holds none of them yet (the first event run
    with this installation compiles them: 20-60 s, `compile_seconds`; later runs load them in
    about a second), else None (also where numba caches nothing: `_njit`'s warning says so). A
    front end shows it as progress before a run; no effect on the run."""
    import glob

    try:
        folder = _ideal_chain._cache._cache_path  # (numba's FunctionCache: every kernel of this file shares it)
    except AttributeError:
        return None
    return None if glob.glob(os.path.join(glob.escape(folder), "kernels.*.nbi")) else folder


@intrinsic
def _prefetch(typingctx, arr, idx):
    """A hint to the CPU to load the cache line of arr[idx] (LLVM's `llvm.prefetch`: for writing,
    high locality; no effect on any value). `_burst_sample` issues it for the spike count of the
    burst `BURST_PREFETCH` bursts ahead: at sparse rates a population's bursts lie pages apart in
    a batch's counts (megabytes, out of cache by the next timestep), and every burst waited for
    memory at its count (measured: about 0.3 us per burst on sinabs64's first conv at rate 0.01,
    more than its whole delivery); with the loads in flight for many bursts at once the waits overlap.
    Likewise a greedy/speck step's spike counts (`emit_spikes`)."""
    return types.void(arr, types.uint64), _prefetch_codegen(1)


@intrinsic
def _prefetch_read(typingctx, arr, idx):
    """`_prefetch` for reading (LLVM's `llvm.prefetch` with rw = 0): for tables every thread reads,
    whose lines a prefetch for writing would take from the other cores."""
    return types.void(arr, types.uint64), _prefetch_codegen(0)


def _prefetch_codegen(rw: int):
    """The code of `_prefetch` (rw = 1: for writing) and `_prefetch_read` (rw = 0): `llvm.prefetch`
    of arr[idx]'s line, high locality, data cache."""
    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(builder.gep(ary.data, [args[1]]), i8p), i32(rw), i32(3), i32(1)])
        return context.get_dummy_value()

    return codegen


BURST_PREFETCH = 32  # spikes ahead whose count (`_burst_sample`, `emit_spikes`) is prefetched


@intrinsic
def _lowest_bit(typingctx, x):
    """The index of the lowest set bit of the uint64 x, x != 0 (LLVM's `llvm.cttz`: one instruction)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i64, [i64, ir.IntType(1)]),
                                            "llvm.cttz.i64")
        return builder.call(fn, [args[0], ir.IntType(1)(1)])

    return sig, codegen


@intrinsic
def _take(typingctx, counter):
    """counter[0], then counter[0] + 1, in one atomic step (LLVM's sequentially consistent
    `atomicrmw add`): threads that share `counter` (int64) each take distinct values. The chain
    runs take their samples so (`_ideal_chain`, `_speck_chain`: take = [next, end, the samples in
    the order to take them], `runner._take_order`)."""
    sig = types.int64(counter)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.atomic_rmw("add", ary.data, ir.Constant(ir.IntType(64), 1), "seq_cst")

    return sig, codegen


@intrinsic
def _block_mask(typingctx, vq, bq, acc, ba, loq, p, flush):
    """One whole block of `_burst_sample` (BURST_BLOCK neurons, membranes vq[bq:], scratch acc[ba:],
    bounds loq[p:]) in one vector pass: where `flush`, v = vq + acc stored into vq and acc zeroed
    (float32 scratch widened to float64 first, as numba's mixed addition does); returns the mask of
    the neurons not below their bound, bit j set where not (v[j] < loq[j]) (LLVM's `fcmp uge`: a
    NaN bound or membrane counts as not below, as the scalar test). The same float64 additions and
    comparisons as the scalar loops, so the same values. Those loops have a trip count LLVM does
    not know: it vectorised them 32 wide, never taken for 16 neurons, and ran a 4-wide remainder
    (15.6 cycle-counter ticks per block in cache, with the second pass for the mask; this: 9.5)."""
    sig = types.uint64(vq, types.uint64, acc, types.uint64, loq, types.uint64, types.boolean)

    def codegen(context, builder, signature, args):
        vq_t, _, acc_t, _, loq_t, _, _ = signature.args
        V = context.make_array(vq_t)(context, builder, args[0])
        A = context.make_array(acc_t)(context, builder, args[2])
        L = context.make_array(loq_t)(context, builder, args[4])
        d = ir.VectorType(ir.DoubleType(), BURST_BLOCK)
        vp = builder.bitcast(builder.gep(V.data, [args[1]]), d.as_pointer())
        v = builder.load(vp, align=8)
        with builder.if_else(args[6]) as (then, otherwise):
            with then:
                if acc_t.dtype == types.float32:
                    f = ir.VectorType(ir.FloatType(), BURST_BLOCK)
                    ap = builder.bitcast(builder.gep(A.data, [args[3]]), f.as_pointer())
                    a = builder.fpext(builder.load(ap, align=4), d)
                    builder.store(ir.Constant(f, None), ap, align=4)
                else:
                    ap = builder.bitcast(builder.gep(A.data, [args[3]]), d.as_pointer())
                    a = builder.load(ap, align=8)
                    builder.store(ir.Constant(d, None), ap, align=8)
                flushed = builder.fadd(v, a)
                builder.store(flushed, vp, align=8)
                from_then = builder.block
            with otherwise:
                from_else = builder.block
        val = builder.phi(d)
        val.add_incoming(flushed, from_then)
        val.add_incoming(v, from_else)
        bound = builder.load(builder.bitcast(builder.gep(L.data, [args[5]]), d.as_pointer()), align=8)
        mask = builder.fcmp_unordered(">=", val, bound)
        return builder.zext(builder.bitcast(mask, ir.IntType(BURST_BLOCK)), ir.IntType(64))

    return sig, codegen


def _splat(builder, x, typ):
    """The LLVM vector `typ` with every lane x."""
    i32 = ir.IntType(32)
    u = builder.insert_element(ir.Constant(typ, ir.Undefined), x, i32(0))
    return builder.shuffle_vector(u, ir.Constant(typ, ir.Undefined), ir.Constant(ir.VectorType(i32, typ.count),
                                                                                 [0] * typ.count))


def _groups(builder, n, nl: int, name: str):
    """The blocks of a loop over a run of n values in groups of nl lanes from its start, entered:
    (full, the entry block, loop, tail, rest, done). `loop` runs the full groups (from the entry
    where n >= nl), `tail` follows them (or the entry) and goes to `rest` for the last n - full
    lanes (`_masked`) or to `done`. `_axpy_vec` and `_speck_add_vec` are such loops."""
    i64 = ir.IntType(64)
    full = builder.and_(n, i64(2 ** 64 - nl))
    pre = builder.block
    loop, tail, rest, done = (builder.append_basic_block(f"{name}.{b}") for b in ("loop", "tail", "rest", "done"))
    builder.cbranch(builder.icmp_unsigned("==", full, i64(0)), tail, loop)
    return full, pre, loop, tail, rest, done


def _masked(builder, vt, left):
    """(llvm.masked.load, llvm.masked.store) for vectors `vt` and the mask of lanes j < left."""
    i32, nl = ir.IntType(32), vt.count
    iv, bt, vp = ir.VectorType(ir.IntType(64), nl), ir.VectorType(ir.IntType(1), nl), vt.as_pointer()
    el = vt.element
    bits = el.width if isinstance(el, ir.IntType) else 32 if isinstance(el, ir.FloatType) else 64
    sfx = f"v{nl}{'i' if isinstance(el, ir.IntType) else 'f'}{bits}.p0"
    load = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vt, [vp, i32, bt, vt]),
                                          "llvm.masked.load." + sfx)
    store = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [vt, vp, i32, bt]),
                                           "llvm.masked.store." + sfx)
    return load, store, builder.icmp_unsigned("<", ir.Constant(iv, list(range(nl))), _splat(builder, left, iv))


def _axpy(acc, t, w, wo, m, n):
    """acc[t + i] += w[wo + i] * m for i < n (indices in bounds, t and wo uint64): the runs' add of
    `_runs_sample`. Where acc, w and m are one float type, `_axpy_vec`; else numba's loop
    (`_axpy_loop`, which this runs when called from Python)."""
    _axpy_loop.py_func(acc, t, w, wo, m, n)


@overload(_axpy, jit_options={"nogil": True})
def _axpy_overload(acc, t, w, wo, m, n):
    f = acc.dtype
    if f in (types.float32, types.float64) and w.dtype == f and m == f:
        return lambda acc, t, w, wo, m, n: _axpy_vec(acc, t, w, wo, m, n)
    return lambda acc, t, w, wo, m, n: _axpy_loop(acc, t, w, wo, m, n)


@numba.njit(inline="always")
def _axpy_loop(acc, t, w, wo, m, n):
    for i in range(n):
        acc[t + i] += w[wo + i] * m


@intrinsic
def _axpy_vec(typingctx, acc, t, w, wo, m, n):
    """`_axpy` for float32 or float64 acc, w and m: a 64-byte vector (16 or 8 lanes) at a time, the
    last partial group by a masked load and store (nothing outside the n values is read or
    written). The same multiply and add per element as numba's loop, so the same values. LLVM
    vectorised that loop four vectors per iteration (64 float32 lanes), never taken for a first
    conv's runs of 48 float32 values, which went 8 lanes at a time with a test for overlap first."""
    f = acc.dtype
    if not (isinstance(acc, types.Array) and f in (types.float32, types.float64) and isinstance(w, types.Array)
            and w.dtype == f and m == f):
        return None
    sig = types.void(acc, types.uint64, w, types.uint64, m, types.uint64)
    nl = 16 if f == types.float32 else 8

    def codegen(context, builder, signature, args):
        A = context.make_array(signature.args[0])(context, builder, args[0])
        W = context.make_array(signature.args[2])(context, builder, args[2])
        i64, i32 = ir.IntType(64), ir.IntType(32)
        vt = ir.VectorType(ir.FloatType() if nl == 16 else ir.DoubleType(), nl)
        vp = vt.as_pointer()
        esz = 4 if nl == 16 else 8
        mv = _splat(builder, args[4], vt)
        n, t0, w0 = args[5], args[1], args[3]
        full, pre, loop, tail, rest, done = _groups(builder, n, nl, "axpy")
        builder.position_at_end(loop)
        i = builder.phi(i64)
        i.add_incoming(i64(0), pre)
        ap = builder.bitcast(builder.gep(A.data, [builder.add(t0, i)]), vp)
        wp = builder.bitcast(builder.gep(W.data, [builder.add(w0, i)]), vp)
        builder.store(builder.fadd(builder.load(ap, align=esz), builder.fmul(builder.load(wp, align=esz), mv)), ap,
                      align=esz)
        i2 = builder.add(i, i64(nl))
        i.add_incoming(i2, loop)
        builder.cbranch(builder.icmp_unsigned("<", i2, full), loop, tail)
        builder.position_at_end(tail)
        left = builder.sub(n, full)
        builder.cbranch(builder.icmp_unsigned("==", left, i64(0)), done, rest)
        builder.position_at_end(rest)  # lanes j < n - full
        mload, mstore, mask = _masked(builder, vt, left)
        ap = builder.bitcast(builder.gep(A.data, [builder.add(t0, full)]), vp)
        wp = builder.bitcast(builder.gep(W.data, [builder.add(w0, full)]), vp)
        zero = ir.Constant(vt, None)
        av = builder.call(mload, [ap, i32(esz), mask, zero])
        wv = builder.call(mload, [wp, i32(esz), mask, zero])
        builder.call(mstore, [builder.fadd(av, builder.fmul(wv, mv)), ap, i32(esz), mask])
        builder.branch(done)
        builder.position_at_end(done)
        return context.get_dummy_value()

    return sig, codegen


def _speck_add(vq, t, w, wo, cnt, n, th, vm):
    """The speck rule's add over one run (`_speck_sample`): for i < n, v = vq[t + i] + w[wo + i],
    cnt[t + i] += 1, vq[t + i] = v if v > vm else vm; returns bit 0 set where some v >= th and bit
    1 where some v < vm. `_speck_add_vec` where vq and w are one float type and cnt int32, else
    numba's loop (`_speck_add_loop`, which this runs when called from Python)."""
    return _speck_add_loop.py_func(vq, t, w, wo, cnt, n, th, vm)


@overload(_speck_add, jit_options={"nogil": True}, inline="always")
def _speck_add_overload(vq, t, w, wo, cnt, n, th, vm):
    f = vq.dtype
    if f in (types.float32, types.float64) and w.dtype == f and cnt.dtype == types.int32 and th == f and vm == f:
        return lambda vq, t, w, wo, cnt, n, th, vm: _speck_add_vec(vq, t, w, wo, cnt, n, th, vm)
    return lambda vq, t, w, wo, cnt, n, th, vm: _speck_add_loop(vq, t, w, wo, cnt, n, th, vm)


@numba.njit(inline="always")
def _speck_add_loop(vq, t, w, wo, cnt, n, th, vm):
    hit = False
    low = False
    for i in range(n):
        v = vq[t + i] + w[wo + i]
        cnt[t + i] += 1
        hit |= v >= th
        low |= v < vm
        vq[t + i] = v if v > vm else vm  # v >= th > vm keeps v: no spike test here
    return np.uint64(hit) | (np.uint64(low) << np.uint64(1))


@intrinsic
def _speck_add_vec(typingctx, vq, t, w, wo, cnt, n, th, vm):
    """`_speck_add` for float32 or float64 vq and w and int32 cnt: a 64-byte group of membranes (16
    or 8 lanes) at a time from the run's start, the last partial group by masked loads and stores
    (nothing outside the n values read or written). The same add, compares and select per neuron
    as numba's loop, so the same values."""
    f = vq.dtype
    if not (isinstance(vq, types.Array) and f in (types.float32, types.float64) and isinstance(w, types.Array)
            and w.dtype == f and isinstance(cnt, types.Array) and cnt.dtype == types.int32 and th == f and vm == f):
        return None
    sig = types.uint64(vq, types.uint64, w, types.uint64, cnt, types.uint64, th, vm)
    nl = 16 if f == types.float32 else 8

    def codegen(context, builder, signature, args):
        V = context.make_array(signature.args[0])(context, builder, args[0])
        W = context.make_array(signature.args[2])(context, builder, args[2])
        K = context.make_array(signature.args[4])(context, builder, args[4])
        i64, i32, i1 = ir.IntType(64), ir.IntType(32), ir.IntType(1)
        esz = 4 if nl == 16 else 8
        vt = ir.VectorType(ir.FloatType() if nl == 16 else ir.DoubleType(), nl)
        kt, bt = ir.VectorType(i32, nl), ir.VectorType(i1, nl)
        vp, kp = vt.as_pointer(), kt.as_pointer()
        thv, vmv = _splat(builder, args[6], vt), _splat(builder, args[7], vt)
        one = ir.Constant(kt, [1] * nl)
        t0, w0, n = args[1], args[3], args[5]
        nob = ir.Constant(bt, [0] * nl)
        full, pre, loop, tail, rest, done = _groups(builder, n, nl, "speck")

        def group(vv, wv, kv):  # the new membranes, counters, and the group's (hit, low) lanes
            v = builder.fadd(vv, wv)
            return (builder.select(builder.fcmp_ordered(">", v, vmv), v, vmv), builder.add(kv, one),
                    builder.fcmp_ordered(">=", v, thv), builder.fcmp_ordered("<", v, vmv))

        def flags(*incoming):  # the (hit, low) lane vectors where blocks meet: ((hit, low), from block), ...
            a, b = builder.phi(bt), builder.phi(bt)
            for (x, y), blk in incoming:
                a.add_incoming(x, blk)
                b.add_incoming(y, blk)
            return a, b

        builder.position_at_end(loop)
        i = builder.phi(i64)
        i.add_incoming(i64(0), pre)
        h, lo = flags(((nob, nob), pre))
        ap = builder.bitcast(builder.gep(V.data, [builder.add(t0, i)]), vp)
        wp = builder.bitcast(builder.gep(W.data, [builder.add(w0, i)]), vp)
        cp = builder.bitcast(builder.gep(K.data, [builder.add(t0, i)]), kp)
        r, k, hv, lv = group(builder.load(ap, align=esz), builder.load(wp, align=esz), builder.load(cp, align=4))
        builder.store(r, ap, align=esz)
        builder.store(k, cp, align=4)
        h2, lo2 = builder.or_(h, hv), builder.or_(lo, lv)
        i2 = builder.add(i, i64(nl))
        i.add_incoming(i2, loop)
        h.add_incoming(h2, loop)
        lo.add_incoming(lo2, loop)
        builder.cbranch(builder.icmp_unsigned("<", i2, full), loop, tail)
        builder.position_at_end(tail)
        ht, lt = flags(((nob, nob), pre), ((h2, lo2), loop))
        left = builder.sub(n, full)
        builder.cbranch(builder.icmp_unsigned("==", left, i64(0)), done, rest)
        builder.position_at_end(rest)  # lanes j < n - full
        mload, mstore, mask = _masked(builder, vt, left)
        kload, kstore, _ = _masked(builder, kt, left)
        ap = builder.bitcast(builder.gep(V.data, [builder.add(t0, full)]), vp)
        wp = builder.bitcast(builder.gep(W.data, [builder.add(w0, full)]), vp)
        cp = builder.bitcast(builder.gep(K.data, [builder.add(t0, full)]), kp)
        zv, zk = ir.Constant(vt, None), ir.Constant(kt, None)
        r, k, hv, lv = group(builder.call(mload, [ap, i32(esz), mask, zv]),
                             builder.call(mload, [wp, i32(esz), mask, zv]), builder.call(kload, [cp, i32(4), mask, zk]))
        builder.call(mstore, [r, ap, i32(esz), mask])
        builder.call(kstore, [k, cp, i32(4), mask])
        h3, lo3 = builder.or_(ht, builder.and_(hv, mask)), builder.or_(lt, builder.and_(lv, mask))
        builder.branch(done)
        builder.position_at_end(done)
        hf, lf = flags(((ht, lt), tail), ((h3, lo3), rest))
        ib = ir.IntType(nl)
        hb = builder.zext(builder.icmp_unsigned("!=", builder.bitcast(hf, ib), ir.Constant(ib, 0)), i64)
        lb = builder.zext(builder.icmp_unsigned("!=", builder.bitcast(lf, ib), ir.Constant(ib, 0)), i64)
        return builder.or_(hb, builder.shl(lb, i64(1)))

    return sig, codegen


@intrinsic
def _nonzero64(typingctx, arr, idx):
    """Bit j set where arr[idx + j] != 0, for j < 64 (a uint8, float32 or float64 arr, 64 entries
    from idx in bounds): one vector compare (LLVM `icmp ne` on <64 x i8>, or `fcmp une` on floats:
    a NaN reads as nonzero). `_burst_sample` lists its marked blocks so, `input_rows_fill` an
    input's nonzero entries."""
    if not (isinstance(arr, types.Array) and arr.dtype in (types.uint8, types.float32, types.float64)):
        return None
    sig = types.uint64(arr, types.uint64)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        dt = signature.args[0].dtype
        if dt == types.uint8:
            vt = ir.VectorType(ir.IntType(8), 64)
            v = builder.load(builder.bitcast(builder.gep(ary.data, [args[1]]), vt.as_pointer()), align=1)
            return builder.bitcast(builder.icmp_unsigned("!=", v, ir.Constant(vt, None)), ir.IntType(64))
        vt = ir.VectorType(ir.FloatType() if dt == types.float32 else ir.DoubleType(), 64)
        v = builder.load(builder.bitcast(builder.gep(ary.data, [args[1]]), vt.as_pointer()),
                         align=4 if dt == types.float32 else 8)
        return builder.bitcast(builder.fcmp_unordered("!=", v, ir.Constant(vt, None)), ir.IntType(64))

    return sig, codegen


_CYCLE_COUNTER = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


@intrinsic
def _cycles(typingctx):
    """The CPU's cycle counter (x86's constant-rate `rdtsc`, through LLVM's `llvm.readcyclecounter`),
    for the chain run's per-step profile (`_ideal_chain`); 0 on other machines, where reading it
    may trap in user mode. No effect on any value."""
    sig = types.uint64()

    def codegen(context, builder, signature, args):
        if not _CYCLE_COUNTER:
            return ir.Constant(ir.IntType(64), 0)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(64), []),
                                            "llvm.readcyclecounter")
        return builder.call(fn, [])

    return sig, codegen


@_njit(nogil=True)
def _zeros(n, like):
    return np.zeros(n, like.dtype)


@_njit(nogil=True)
def clear(a):
    """a[:] = 0 in compiled code without the GIL (a kept array of a run, `Scratch.kept`)."""
    for i in range(a.size):
        a[i] = 0


def zeros(n: int, dtype=np.float64) -> np.ndarray:
    """np.zeros(n, dtype) filled in compiled code without the GIL: a run's state arrays (batch x
    slots, megabytes) are allocated per run, and with the batch split over threads a numpy
    memset held the GIL while the other thread waited for it."""
    return _zeros(n, np.zeros(0, dtype))


def grid_exponent(*arrays) -> int | None:
    """The smallest e in [0, 40) such that every finite value of `arrays` is a float32 number and a
    multiple of 2^-e, or None."""
    v = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])
    v = v[np.isfinite(v)]
    if not np.array_equal(v.astype(np.float32).astype(np.float64), v):
        return None
    return next((e for e in range(40) if np.array_equal(np.floor(v * 2.0 ** e), v * 2.0 ** e)), None)


class FlatTables:
    """Every source table of an `EventNetwork` in one CSR: source i's address a is row
    `base[i] + a`. `gate` is -1 for ungated entries; `first[j]` is True where entry j starts a
    new (address, slot) group (always True in ungated tables)."""

    def __init__(self, net):
        tabs = list(net.tables.values())
        self.names = list(net.tables)
        sizes = np.array([t.n for t in tabs], dtype=np.int64)
        self.base = np.r_[0, np.cumsum(sizes)[:-1]].astype(np.int64) if tabs else np.zeros(0, np.int64)
        nnz = np.array([t.indptr[-1] for t in tabs], dtype=np.int64)
        eoff = np.r_[0, np.cumsum(nnz)[:-1]].astype(np.int64)
        self.indptr = np.concatenate([t.indptr[:-1] + o for t, o in zip(tabs, eoff)] +
                                     [np.array([int(nnz.sum())], dtype=np.int64)]).astype(np.int64)
        self.slots = np.concatenate([t.slots for t in tabs] + [np.zeros(0, np.int64)]).astype(np.int64)
        self.slots32 = self.slots.astype(np.int32)  # half the bytes streamed per synapse
        self.weights = np.concatenate([t.weights for t in tabs] + [np.zeros(0)]).astype(np.float64)
        gate, first = [], []
        for t in tabs:
            if t.gate is None:
                gate.append(np.full(t.slots.size, -1, dtype=np.int64))
                first.append(np.ones(t.slots.size, dtype=np.bool_))
            else:
                gate.append(t.gate.astype(np.int64))
                grp = t.group
                first.append(np.r_[True, grp[1:] != grp[:-1]] if grp.size else np.zeros(0, np.bool_))
        self.gate = np.concatenate(gate + [np.zeros(0, np.int64)])
        self.first = np.concatenate(first + [np.zeros(0, np.bool_)])
        self.gated = bool((self.gate >= 0).any())
        # per source, the slot range its synapses reach (the ideal kernel flushes that range)
        self.lo = np.array([int(t.slots.min()) if t.slots.size else 0 for t in tabs], dtype=np.int64)
        self.hi = np.array([int(t.slots.max()) + 1 if t.slots.size else 0 for t in tabs], dtype=np.int64)

        self.n_slots = net.n_slots
        self._shapes = [(net.offsets[c][0], net.graph[c].shape) for c in net.consumers]
        self._runs = {}

    def rows(self, src: str, a: np.ndarray) -> np.ndarray:
        return self.base[self.names.index(src)] + a

    def runs(self, gap: int | None = None) -> "RunTables":
        """The ungated tables as contiguous runs in channel-last slot order (built on first use).
        `gap=0`: runs of the table's own entries only, no +0.0 fill (the sequential kernels, where a
        filled target would count as an update)."""
        gap = RunTables.GAP if gap is None else gap
        if gap not in self._runs:
            self._runs[gap] = RunTables(self, gap)
        return self._runs[gap]


class RunTables:
    """The flat tables for SIMD delivery: slots renumbered channel-last within each population
    (`pos[slot]`: a (C, *sites) population's slot c * sites + p becomes p * C + c, so one source
    address's targets at one site, all output channels, are adjacent), each address's entries
    sorted by that number and cut into runs of consecutive targets (gaps of up to `GAP` missing
    targets, zero weights dropped from the tables, filled with +0.0: adding it changes no sum),
    identical weight blocks stored once (`weights`), and each address's runs stored as a shared
    *pattern* (`pat[a]`: run offsets relative to the address's first target `base[a]`, lengths,
    weight offsets in `ptr[p]:ptr[p + 1]`): a conv's addresses away from the border all share one
    pattern per input channel, so the tables stay in cache. Every target of an address gets the
    same weight as in the flat tables (or +0.0) and targets are distinct within an address, so per
    target the same terms are summed in the same (event) order as the flat kernel."""

    GAP = 4

    def __init__(self, flat: FlatTables, gap: int = GAP):
        pos = np.arange(flat.n_slots, dtype=np.int64)
        for lo, sh in flat._shapes:
            if len(sh) >= 2 and sh[0] > 1:
                C, sites = int(sh[0]), int(np.prod(sh[1:]))
                i = np.arange(C * sites)
                pos[lo + i] = lo + (i % sites) * C + i // sites
        self.pos = pos
        # the renumbered segments, covering [0, n_slots) in order: (first slot, channels C, sites);
        # C = 1 where the numbering is the identity (the flush transposes a segment tile by tile)
        segs, at = [], 0
        for lo, sh in sorted(flat._shapes, key=lambda x: x[0]):
            C, sites = (int(sh[0]), int(np.prod(sh[1:]))) if len(sh) >= 2 and sh[0] > 1 else (1, int(np.prod(sh)))
            if lo > at:
                segs.append((at, 1, lo - at))
            if C * sites:
                segs.append((lo, C, sites))
            at = max(at, lo + C * sites)
        if at < flat.n_slots:
            segs.append((at, 1, flat.n_slots - at))
        self.seg = np.array(segs, dtype=np.int64).reshape(-1, 3)
        self.inv = np.empty_like(pos)
        self.inv[pos] = np.arange(pos.size)
        q = pos[flat.slots]
        starts = np.zeros(flat.n_slots + 1, dtype=np.bool_)  # a run never crosses into another population
        starts[[lo for lo, _ in flat._shapes]] = True
        rptr, start, length, woff, w = _cut_runs(flat.indptr, q, flat.weights, gap, starts)
        woff, self.weights = _dedup_blocks(length, woff, w)
        self.pat, self.base, self.ptr, self.rel, self.length, self.woff = _patterns(rptr, start, length, woff)
        self.n_runs = int(rptr[-1])
        # synapses per pattern, where every address of a pattern has as many (`_runs_sample` counts a
        # step's synaptic ops from the patterns it reads anyway; else from `indptr`, a cache miss per
        # event where consecutive events' rows lie far apart): None where a gap-filled run hides a
        # difference
        per_row = np.diff(flat.indptr).astype(np.int64)
        patsyn = np.zeros(int(self.ptr.size) - 1, dtype=np.int64)
        patsyn[self.pat] = per_row
        self.patsyn = patsyn if np.array_equal(patsyn[self.pat], per_row) else None
        # float32 where it is exact: every weight a float32 multiple of 2^-exp, and (checked per
        # delivery, `f32_exact`) every partial sum of a target below 2^24 quanta: each product and
        # sum is then exact in float32, hence the very float64 value (the same terms, no rounding)
        w = self.weights
        self.exp = grid_exponent(w)
        self.weights32 = w.astype(np.float32) if self.exp is not None else None
        # per source: the largest sum of |weights| into one target (one delivery adds each source
        # address at most once per target: an ideal batch holds a (sample, address) at most once)
        rb = np.r_[flat.base, flat.indptr.size - 1].astype(np.int64)
        eb = flat.indptr[rb]
        aw = np.abs(flat.weights)
        self.in_abs = np.array([float(np.bincount(flat.slots[a:b], aw[a:b]).max()) if b > a else 0.0
                                for a, b in zip(eb[:-1], eb[1:])]) if self.exp is not None else None

    def uniform(self, per_q: np.ndarray) -> bool:
        """Whether `per_q` (one value per channel-last slot) is one value over every run of every
        address: at once where it is constant within every population (runs never cross one), else
        run by run."""
        brk = np.r_[0, np.cumsum(per_q[1:] != per_q[:-1])]  # value changes up to each q
        lo = self.seg[:, 0]
        hi = lo + self.seg[:, 1] * self.seg[:, 2]
        if np.array_equal(brk[np.maximum(hi - 1, lo)], brk[lo]):
            return True
        if "_run_q" not in self.__dict__:  # every (address, run): first and last q
            per = self.ptr[self.pat + 1] - self.ptr[self.pat]
            a = np.repeat(np.arange(self.pat.size), per)
            r = np.repeat(self.ptr[self.pat] - np.cumsum(per) + per, per) + np.arange(int(per.sum()))
            q0 = self.base[a] + self.rel[r]
            self._run_q = (q0, q0 + self.length[r] - 1)
        q0, q1 = self._run_q
        return bool(np.array_equal(brk[q0], brk[q1]))

    def weights_f64_or_f32(self) -> np.ndarray:
        """The weights as float32 where every one is a float32 value (converted back they are the
        same float64 numbers, so every sum is the same), else float64: half the bytes per synapse."""
        if "_w_seq" not in self.__dict__:
            w32 = self.weights.astype(np.float32)
            self._w_seq = w32 if np.array_equal(w32.astype(np.float64), self.weights) else self.weights
        return self._w_seq

    def f32_exact(self, src: int, max_mult: float) -> bool:
        """Whether source `src`'s delivery with integer multiplicities up to `max_mult` is exact in float32."""
        return self.exp is not None and self.in_abs[src] * max_mult * 2.0 ** self.exp < 2.0 ** 24


@_njit()
def _cut_runs(indptr, q, weights, gap, starts):
    """Per address: entries sorted by q, cut into runs of consecutive q or within `gap` missing
    targets (filled with +0.0 weights), a new run wherever `starts[q]` (a population's first slot).
    Returns (run indptr per address, run start q, run length,
    run weight offset, the run weights)."""
    n = indptr.size - 1
    cap = q.size + 16
    w = np.empty(cap)
    rstart = np.empty(q.size, dtype=np.int64)
    rlen = np.empty(q.size, dtype=np.int64)
    woff = np.empty(q.size, dtype=np.int64)
    rptr = np.zeros(n + 1, dtype=np.int64)
    nr = jw = 0
    for a in range(n):
        j0, j1 = indptr[a], indptr[a + 1]
        key = np.sort(q[j0:j1] * 4294967296 + np.arange(j1 - j0))  # q major, entry order kept
        prev = -(1 << 62)
        for i in range(key.size):
            qi = key[i] >> 32
            d = qi - prev
            join = d >= 1 and d <= gap + 1 and not starts[qi]
            fillz = d - 1 if join else 0
            if jw + fillz + 1 > cap:
                cap = 2 * cap + fillz + 1
                w2 = np.empty(cap)
                for t in range(jw):  # a loop: a slice assignment compiles numba's shape-mismatch error (seconds)
                    w2[t] = w[t]
                w = w2
            if join:
                for _ in range(fillz):
                    w[jw] = 0.0
                    jw += 1
                rlen[nr - 1] += d
            else:
                rstart[nr] = qi
                rlen[nr] = 1
                woff[nr] = jw
                nr += 1
            w[jw] = weights[j0 + (key[i] & 4294967295)]
            jw += 1
            prev = qi
        rptr[a + 1] = nr
    return rptr, rstart[:nr].copy(), rlen[:nr].copy(), woff[:nr].copy(), w[:jw].copy()


@_njit()
def _intern(ptr, vals):
    """Equal sequences stored once: sequence i is vals[ptr[i]:ptr[i + 1]] (int64 or float64 bits
    as uint64). Returns (id per sequence, index of each id's first sequence), by a hash table
    whose candidates are compared value by value (no collision can merge unequal sequences)."""
    n = ptr.size - 1
    size = 1
    while size < 2 * n + 2:
        size *= 2
    table = np.full(size, -1, dtype=np.int64)  # -> a representative sequence
    ids = np.empty(n, dtype=np.int64)
    reps = np.empty(n, dtype=np.int64)
    nid = 0
    for i in range(n):
        j0, j1 = ptr[i], ptr[i + 1]
        h = np.uint64(1469598103934665603) ^ np.uint64(j1 - j0)
        for j in range(j0, j1):
            h = (h ^ np.uint64(vals[j])) * np.uint64(1099511628211)
        slot = np.int64(h & np.uint64(size - 1))
        while True:
            rep = table[slot]
            if rep < 0:
                table[slot] = i
                ids[i] = nid
                reps[nid] = i
                nid += 1
                break
            k0 = ptr[rep]
            same = ptr[rep + 1] - k0 == j1 - j0
            if same:
                for j in range(j1 - j0):
                    if vals[k0 + j] != vals[j0 + j]:
                        same = False
                        break
            if same:
                ids[i] = ids[rep]
                break
            slot = (slot + 1) & (size - 1)
    return ids, reps[:nid].copy()


def _spans(ptr: np.ndarray, reps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the sequences `reps` (CSR `ptr`) concatenated, and their new CSR pointer."""
    lens = ptr[reps + 1] - ptr[reps]
    new = np.r_[0, np.cumsum(lens)].astype(np.int64)
    return np.repeat(ptr[reps] - new[:-1], lens) + np.arange(new[-1], dtype=np.int64), new


def _dedup_blocks(rlen: np.ndarray, woff: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Equal weight blocks (runs are consecutive in w) stored once: (new offsets, weights)."""
    ptr = np.r_[woff, woff[-1] + rlen[-1]].astype(np.int64) if rlen.size else np.zeros(1, np.int64)
    ids, reps = _intern(ptr, w.view(np.uint64))
    pos, new = _spans(ptr, reps)
    return new[ids], w[pos]


def _patterns(rptr: np.ndarray, start: np.ndarray, length: np.ndarray, woff: np.ndarray):
    """Each address's runs relative to its first run's start, equal run lists stored once.
    Returns (pattern per address, base per address, pattern indptr, offsets, lengths, weight offsets)."""
    n = rptr.size - 1
    has = rptr[1:] > rptr[:-1]
    base = np.zeros(n, dtype=np.int64)
    base[has] = start[rptr[:-1][has]]
    rel = start - np.repeat(base, np.diff(rptr))
    triples = np.stack([rel, length, woff], 1).ravel().astype(np.int64)
    ids, reps = _intern(3 * rptr, triples)
    pos, ptr = _spans(rptr, reps)
    return ids, base, ptr, rel[pos], length[pos], woff[pos]


# columns of the per-neuron state row: what a synapse's update reads or writes, in one row; the
# spike count k (read only when a neuron reaches its threshold) is a separate array, theta per
# slot (small, stays in cache). Widths: ideal 1 (membranes), greedy/speck without SSC gates 2
# (membrane, rank stamp; cap and lower bound per slot), with gates 3 (+ lower bound per neuron).
V_, RS_, VMIN_ = range(3)
N_STATE = 3
RANK_LIMIT = float(2 ** 26)  # RS_ = step * RANK_LIMIT + contributions so far: exact below 2^52


@_njit(nogil=True)
def _ideal(indptr, slots, weights, gate, first, gated, gopen, rows, samples, mult, S, acc, graded):
    """acc[g] += (sum of an event's open group weights) * mult, in event then table order, into a
    zero scratch. Returns synops (contributions times multiplicity; `graded`: mult is a relay's
    value carried by one message, so one synaptic op per contribution)."""
    synops = 0
    for e in range(rows.size):
        a = rows[e]
        b = samples[e]
        off = b * S
        m = mult[e]
        mi = 1 if graded else int(m)
        j = indptr[a]
        end = indptr[a + 1]
        if not gated:
            synops += mi * (end - j)
            uoff = np.uint64(off)  # unsigned index: no negative-index fix-up per synapse
            for jj in range(j, end):
                acc[uoff + np.uint64(slots[jj])] += weights[jj] * m
            continue
        while j < end:  # one (address, slot) group: its open entries summed into one update
            g = off + slots[j]
            w = 0.0
            any_open = False
            while True:
                gs = gate[j]
                if gs < 0 or gopen[b, gs]:
                    w = weights[j] if not any_open else w + weights[j]
                    any_open = True
                j += 1
                if j >= end or first[j]:
                    break
            if any_open:
                acc[g] += w * m
                synops += mi
    return synops


_NO_SYN = np.zeros(0, dtype=np.int64)  # (`_runs_sample` counts no synaptic ops)


@_njit(nogil=True, parallel=True)
def _ideal_runs(pat, base, ptr, rel, length, woff, weights, rows, first, mult, S, acc, marks, state, seg, q_order, lo,
                hi, divide, burst):
    """acc[q] += w * mult for every run of every event (`RunTables`), the events of sample b
    (positions first[b]:first[b+1], in step order) on one thread: samples are independent, so the
    sums per target are those of the sequential loop. The inner loop is a contiguous SIMD add.
    Then the sample's scratch is flushed into its membranes while it is in cache (`_flush_span`)
    over the channel-last span the sample's runs wrote (runs are sorted by q: an event's first run
    starts its span, its last run ends it; a sample without events has nothing to flush). The span
    is that of the channel-last targets written, not the source's slot range renumbered: a source
    reaching some channels of a population (one input of a concatenation) writes sites across all
    of it (flushing the slot range once left such sums behind for a later step).
    The scratch `acc` is one sample's slots per thread (`Scratch.runs_scratch`: S values at thread id
    x S, all zeros between samples), not the batch's: a sample's deliveries and its flush stay in
    L2 (a batch-sized scratch, sinabs64's 6.8 MB in float32, missed the cache at every first
    write of a line). `q_order`: the membranes are in channel-last order too (`IdealQ`), so the
    flush is one contiguous add, and where hi > lo this delivery completes the population in q
    [lo, hi): each sample's bursts are fired right after its flush, while its membranes are in
    cache (`complete_burst_q`'s rule and outputs; `burst` holds its per-q arrays, counts and
    scratch, `_burst_args`). A sample whose population is clean (`dirty[b]` False: no neuron that
    can fire is at its bound `loq`, see `complete_burst_q`) and whose delivery wrote less than half
    of it is flushed and fired block by block over the blocks its runs wrote only: the delivery
    marks each block it writes (`marks`, one byte per `BURST_BLOCK` neurons, per thread, all zeros
    between samples) and requests the block's membranes from memory as it marks it (`_prefetch`:
    at sparse rates they lie far apart and were each a wait of a cache miss in the flush); any
    other neuron got no input and stays below its bound, where the rule changes nothing. A dirty
    sample is flushed and swept whole."""
    vq = state.ravel()  # a view: the runner's state is C-contiguous
    for b in numba.prange(first.size - 1):
        tid = numba.get_thread_id()
        _runs_sample(pat, base, ptr, rel, length, woff, weights, rows, first[b], first[b + 1], mult, S, acc,
                     tid * S, marks, tid * (S // BURST_BLOCK + 1), vq, state, seg, q_order, lo, hi, divide, b,
                     b * (hi - lo), burst, _NO_SYN)


@_njit(nogil=True)
def _runs_sample(pat, base, ptr, rel, length, woff, weights, rows, e0, e1, mult, S, acc, aoff, marks, moff, vq,
                 state, seg, q_order, lo, hi, divide, b, o, burst, patsyn):
    """`_ideal_runs` for sample b: its events e0:e1 into its scratch at `aoff` (marks at `moff`),
    flushed into its membranes (vq, the raveled `state`, from b x S) and, where hi > lo, its
    completion (`_burst_sample`, its bursts at out_g/out_n[o:]). Also the per-sample step of
    `_ideal_chain`, which runs a sample's whole run on one thread. Returns the events' synaptic
    ops (synapses x multiplicity) from `patsyn` (`RunTables.patsyn`; empty: 0, not counted)."""
    bpat, thq, loq, fireq, capq, inv, counts, out_g, out_n, fired, spikes, dirty = burst
    nblk = (hi - lo + BURST_BLOCK - 1) // BURST_BLOCK
    off = b * S
    qlo = S
    qhi = 0
    wrote = 0  # targets written (with repeats): a delivery of over half the population sweeps it whole
    mark = hi > lo and not dirty[b]  # (off while a run leaves [lo, hi): checked, not assumed)
    marked = False  # whether any block was marked (none: no marks to clear)
    syn = 0
    if patsyn.size > 0:  # the synaptic ops first, and the synapses: where they are over half the
        # population the delivery is dense from its start (the run lengths it writes are at least
        # the synapses), swept whole with no block marked (marking until the half was reached cost
        # 10-22% of the delivery ticks into sinabs64's convs at rate 0.01, 5% of a run)
        w = 0
        for e in range(e0, e1):
            ps = patsyn[pat[rows[e]]]
            w += ps
            syn += ps * np.int64(mult[e])
        if 2 * w >= hi - lo:
            mark = False
    for e in range(e0, e1):
        a = rows[e]
        m = mult[e]
        if e + 8 < e1:  # the rows of the event 8 ahead requested (`_prefetch_read`): each event's
            # lookups (row, pattern, runs, scratch) form a chain, and a source's `base` and `pat`
            # (8 bytes per address) are out of cache by the step's next timestep; conv2's step
            # 16-23% fewer ticks at rates 0.005-0.02 on sinabs64 (16 ahead: no better)
            _prefetch_read(base, np.uint64(rows[e + 8]))
            _prefetch_read(pat, np.uint64(rows[e + 8]))
        p = pat[a]
        r0, r1 = ptr[p], ptr[p + 1]
        if r1 == r0:
            continue
        qlo = min(qlo, base[a] + rel[r0])
        qhi = max(qhi, base[a] + rel[r1 - 1] + length[r1 - 1])
        t0 = aoff + base[a]
        for r in range(r0, r1):
            # unsigned indices: numba emits no negative-index fix-ups, and LLVM vectorises
            t = np.uint64(t0 + rel[r])
            wo = np.uint64(woff[r])
            wrote += length[r]
            _axpy(acc, t, weights, wo, m, np.uint64(length[r]))
            if mark:
                qs = base[a] + rel[r] - lo
                if qs < 0 or qs + length[r] > hi - lo:
                    mark = False
                    continue
                for k in range(qs // BURST_BLOCK, (qs + length[r] - 1) // BURST_BLOCK + 1):
                    if marks[moff + k] == 0:
                        marks[moff + k] = 1
                        marked = True
                        qb = np.uint64(off + lo + k * BURST_BLOCK)
                        _prefetch(vq, qb)
                        _prefetch(vq, qb + np.uint64(BURST_BLOCK // 2))
        if mark and 2 * wrote >= hi - lo:  # a dense delivery: swept whole, no more marks
            mark = False
    touched = mark and 2 * wrote < hi - lo
    if marked and not touched:  # marks set but not used: cleared
        for k in range((max(qlo, lo) - lo) // BURST_BLOCK, min(nblk, (min(qhi, hi) - lo + BURST_BLOCK - 1)
                                                                  // BURST_BLOCK)):
            marks[moff + k] = 0
    # a whole sweep of the population whose delivery stayed inside it flushes each block as it visits
    # it (`_block_mask`: one pass over the membranes where a flush and then a sweep made two; a block
    # the delivery did not reach adds its scratch's zeros)
    fused = q_order and hi > lo and not touched and qlo >= lo and qhi <= hi
    if qhi > qlo and not touched and not fused:
        if q_order:
            _flush_q(acc, vq, aoff, off, qlo, qhi)
        else:
            _flush_span(acc, state, aoff, off, qlo, qhi, seg)
    if hi > lo:  # (the per-sample totals are stored by the callee: numba's parfor pass drops a
        # store in the loop body into an array it cannot see alias an argument, as one from `burst`)
        _burst_sample(vq, bpat, thq, loq, fireq, capq, inv, lo, hi, divide, b, o, S, counts, out_g, out_n,
                      fired, spikes, dirty, acc, aoff, marks, moff, qlo, qhi, touched, touched or fused)
    return syn


@_njit(nogil=True)
def _ideal_chain(take, tid, T, B, S, runs, weights32, inputs, steps, blocks, start, state, counts, dirty, scratch,
                 out_pos, out_sum, stats, fired, spikes):
    """A whole ideal run of a chain network (`runner._chain_schedule`: the input completes one
    population, whose bursts complete the next, ..., the last source delivering into the output
    without completing anything), every sample's T timesteps on one thread (samples are
    independent; this call runs on the calling thread, its scratch at `tid`, the samples it takes
    from the shared `take` = [next, end, samples in order] (`_take`: one at a time, the most input
    events first, until none is left: `runner._take_order`), and
    `runner._run_chain` makes one call per thread: a plain function, where a parallel loop over
    the samples compiled its whole body a second time, 20 s more of JIT): per timestep the start
    (`_start_sample`, the populations' clean/dirty flags as `runner._Run._start_flags` sets them), then each step's events through `_runs_sample` (the
    delivery and fused completion `_ideal_runs` runs per sample), its bursts the next step's
    events, then the output membranes added into out_sum. The same per-sample operations, in the
    same order, as the runner's timestep loop over `deliver_ideal` calls, so the same values:
    a step's delivery is summed in float32 where `RunTables.f32_exact` holds for the sample's
    largest multiplicity (exact in any order, so equal to float64), else in float64 in ascending
    address order (the order `deliver_ideal` sorts a float64 batch into). The sample's membranes
    and scratch stay in its thread's cache across the whole run (no Python between steps).
    runs: (pat, base, ptr, rel, length, woff, weights, seg, indptr, patsyn (empty: the synaptic ops
    from indptr), pat_q, base_q (pat and base with the rows of every later step's source in q
    order: its bursts come in q order, and a burst is then its row with no lookup in `inv`, the
    rows of consecutive bursts adjacent; where qrows), qrows); inputs: (rows, mult, first),
    sample b's events of timestep t at first[t * B + b]:first[t * B + b + 1]; steps: (row base of
    the step's source, lo, hi (hi == lo: no completion), divide, population index, in_abs of the
    source (< 0: never float32), float32 scale 2^exp, offset of its block tables, (nsteps, pops)
    consumers fed); blocks: (bpat, thq, loq, fireq, capq) of every completing step, concatenated;
    start: (sets, val) for t = 0, (reset, touched q, sets, val) for t > 0, betaq, constq, inv and
    init0, the membranes t = 0 leaves (it resets every slot: beta + const, `runner._run_chain`); scratch per thread
    (acc64, acc32, marks, out_g, out_n, rows, mult, mult32); stats: (synops, spikes and peak per
    sample and step, (T, steps, B) whether a step had events, cycles per sample and step and, in the
    last column, of the sample's whole run: `_cycles`, the profile `runner._run_chain` keeps)."""
    pat, base, ptr, rel, length, woff, weights, seg, indptr, patsyn, pat_q, base_q, qrows = runs
    count = patsyn.size == 0  # (else `_runs_sample` counts them)
    in_rows, in_mult, in_first = inputs
    s_base, s_lo, s_hi, s_div, s_pop, s_abs, scale, s_bp, s_fed = steps
    bpat_all, thq, loq, fireq, capq = blocks
    sets0, val0, reset1, touch1, sets1, val1, betaq, constq, inv, init0 = start
    binv = inv[:0] if qrows else inv  # (the bursts' addresses: q order (empty: no lookup), or slot order)
    init_zero = not np.any(init0.view(np.uint64))
    acc64, acc32, marks, out_g, out_n, rbuf, mbuf, m32buf = scratch
    syn_st, spk, peak, nonempty, cyc = stats
    vq = state.ravel()  # a view: the runner's state is C-contiguous, one column
    nsteps = s_base.size
    npop = dirty.shape[0]
    nok = np.zeros(0)
    aoff = tid * S
    moff = tid * (S // BURST_BLOCK + 1)
    while True:  # the samples not yet taken, one at a time, until take[1], in take[2:]'s order
        i = _take(take)
        if i >= take[1]:
            break
        b = take[2 + i]
        off = b * S
        c_run = _cycles()
        for t in range(T):
            if t == 0:  # every slot reset: the membranes are init0 = beta + const
                u = np.uint64(off)
                if init_zero:  # (all +0.0 bits: a fill that reads nothing)
                    for q in range(np.uint64(S)):
                        vq[u + q] = 0.0
                else:
                    for q in range(np.uint64(S)):
                        vq[u + q] = init0[q]
                for p in range(npop):
                    if sets0[p]:
                        dirty[p, b] = val0[p]
            else:
                _start_sample(vq, np.uint64(1), nok, betaq, constq, reset1, np.uint64(off), S, touch1, False)
                for p in range(npop):
                    if sets1[p]:
                        dirty[p, b] = val1[p]
            for s in range(nsteps):
                c_step = _cycles()
                if s == 0:  # the input's events of (t, b)
                    e0, e1 = in_first[t * B + b], in_first[t * B + b + 1]
                    n = e1 - e0
                    for i in range(n):
                        rbuf[aoff + i] = in_rows[e0 + i]
                        mbuf[aoff + i] = in_mult[e0 + i]
                else:  # the previous step's bursts (ids aoff + address), as rows of this step's source
                    n = fired[b]
                    for i in range(n):
                        rbuf[aoff + i] = s_base[s] + out_g[aoff + i] - aoff
                        mbuf[aoff + i] = out_n[aoff + i]
                nonempty[t, s, b] = n > 0
                mmax = 0.0
                syn = 0
                for i in range(aoff, aoff + n):
                    if count:
                        r = rbuf[i]
                        syn += (indptr[r + 1] - indptr[r]) * np.int64(mbuf[i])
                    mmax = max(mmax, mbuf[i])
                lo, hi = s_lo[s], s_hi[s]
                pd = dirty[max(s_pop[s], 0)]
                bp = bpat_all[s_bp[s]:s_bp[s + 1]]
                burst = (bp, thq, loq, fireq, capq, binv, counts, out_g, out_n, fired, spikes, pd)
                if s_abs[s] >= 0.0 and s_abs[s] * mmax * scale < 2.0 ** 24:
                    for i in range(aoff, aoff + n):
                        m32buf[i] = mbuf[i]
                    syn += _runs_sample(pat_q, base_q, ptr, rel, length, woff, weights32, rbuf, aoff, aoff + n,
                                        m32buf, S, acc32, aoff, marks, moff, vq, state, seg, True, lo, hi, s_div[s], b,
                                        aoff, burst, patsyn)
                else:
                    if qrows and s > 0:  # float64: the rows in slot order, summed in ascending order as the loop does
                        plo = s_lo[s - 1]
                        for i in range(aoff, aoff + n):
                            rbuf[i] = s_base[s] + inv[plo + rbuf[i] - s_base[s]] - plo
                    srt = True
                    for i in range(aoff + 1, aoff + n):
                        srt &= rbuf[i] > rbuf[i - 1]
                    if not srt:
                        o = np.argsort(rbuf[aoff:aoff + n])
                        r2 = rbuf[aoff:aoff + n][o]
                        m2 = mbuf[aoff:aoff + n][o]
                        rbuf[aoff:aoff + n] = r2
                        mbuf[aoff:aoff + n] = m2
                    syn += _runs_sample(pat, base, ptr, rel, length, woff, weights, rbuf, aoff, aoff + n, mbuf, S,
                                        acc64, aoff, marks, moff, vq, state, seg, True, lo, hi, s_div[s], b, aoff,
                                        burst, patsyn)
                syn_st[b, s] += syn
                if hi > lo:
                    spk[b, s] += spikes[b]
                    peak[b, s] = max(peak[b, s], spikes[b])
                else:  # a delivery that completes nothing: its consumers' membranes changed
                    fired[b] = 0
                    for p in range(npop):
                        if s_fed[s, p]:
                            dirty[p, b] = True
                cyc[b, s] += _cycles() - c_step
            for i in range(out_pos.size):
                out_sum[b, i] += vq[off + out_pos[i]]
        cyc[b, nsteps] += _cycles() - c_run


@_njit(nogil=True)
def _flush_q(acc, vq, aoff, off, qlo, qhi):
    """vq[off + q] += acc[aoff + q], acc[aoff + q] = 0 over [qlo, qhi): a sample's membranes at
    `off` and its scratch at `aoff` (`_ideal_runs`), both in channel-last order (`IdealQ`), one
    SIMD sweep (adding a zero scratch value leaves a membrane's value)."""
    uo, ua = np.uint64(off), np.uint64(aoff)
    for q in range(np.uint64(qlo), np.uint64(qhi)):
        vq[uo + q] += acc[ua + q]
        acc[ua + q] = 0.0


FLUSH_TILE = 64  # sites per tile of the transposing flush: C x 64 scratch values stay in L1


@_njit(nogil=True)
def _flush_span(acc, state, aoff, off, qlo, qhi, seg):
    """V[slot] += acc[q] and acc[q] = 0 for the channel-last targets q in [qlo, qhi) of the sample
    at `off`, its scratch at `aoff` (one addition per target, so the order of the sweep changes no value). Per segment
    (`RunTables.seg`) the (sites, C) scratch is transposed into the (C, sites) membranes a tile of
    sites at a time: the scratch reads stay in L1 and the membrane writes are contiguous runs (a
    scattered write per target, channel by channel, missed the cache on every one)."""
    st = state.ravel()  # a view: the runner's state is C-contiguous
    w = np.uint64(state.shape[1])
    uoff = np.uint64(off)
    ua = np.uint64(aoff)
    for i in range(seg.shape[0]):
        lo, C, sites = seg[i, 0], seg[i, 1], seg[i, 2]
        hi = lo + C * sites
        if hi <= qlo or lo >= qhi:
            continue
        if C == 1:
            for q in range(np.uint64(max(lo, qlo)), np.uint64(min(hi, qhi))):
                v = acc[ua + q]
                if v != 0.0:
                    st[(uoff + q) * w] += v
                    acc[ua + q] = 0.0
            continue
        s0 = (max(lo, qlo) - lo) // C
        s1 = (min(hi, qhi) - lo + C - 1) // C
        for p0 in range(s0, s1, FLUSH_TILE):
            p1 = min(p0 + FLUSH_TILE, s1)
            for c in range(C):
                qa = ua + np.uint64(lo + p0 * C + c)
                ga = (uoff + np.uint64(lo + c * sites + p0)) * w
                for j in range(np.uint64(p1 - p0)):
                    q = qa + j * np.uint64(C)
                    v = acc[q]
                    if v != 0.0:
                        st[ga + j * w] += v
                        acc[q] = 0.0


@_njit(nogil=True)
def _flush(state, acc, lo, hi, B, S):
    """V[g] += acc[g] over the slots [lo, hi) of every sample, scratch back to 0. A target that
    got no contribution has acc 0 and V + 0 = V, so every slot of the range is flushed in one
    sequential sweep (the same sums as adding only the touched targets)."""
    for b in range(B):
        for s in range(lo, hi):
            g = b * S + s
            a = acc[g]
            if a != 0.0:
                state[g, V_] += a
                acc[g] = 0.0


@_njit(nogil=True)
def _sequential(indptr, slots, weights, gate, first, gated, gopen, rows, samples, S, clock, state, k, theta, cap,
                speck, step, em_rank, em_slot, em_key, em_n):
    """Events in order (row, sample), each synapse in table order: V[g] += w, then the firing
    rule (greedy: floor(V / theta) spikes up to the cap; speck: one if V >= theta and below the
    cap, then the lower bound). Emitted spikes are recorded as (rank of the contribution at g in
    this step, g, key = clock + event position, n). Returns (synops, records)."""
    synops = 0
    ne = 0
    base = float(step) * RANK_LIMIT
    for e in range(rows.size):
        a = rows[e]
        b = samples[e]
        off = b * S
        j = indptr[a]
        end = indptr[a + 1]
        while j < end:
            s = slots[j]
            g = off + s
            if not gated:
                w = weights[j]
                j += 1
            else:
                w = 0.0
                any_open = False
                while True:
                    gs = gate[j]
                    if gs < 0 or gopen[b, gs]:
                        w = weights[j] if not any_open else w + weights[j]
                        any_open = True
                    j += 1
                    if j >= end or first[j]:
                        break
                if not any_open:
                    continue
            synops += 1
            v = state[g, V_] + w
            rs = state[g, RS_]
            r = rs - base if rs >= base else 0.0  # contributions to g earlier in this step
            state[g, RS_] = base + r + 1.0
            # a neuron that may not fire has cap 0 and vmin -inf: n = 0, V = v
            th = theta[s]
            if speck:
                vm = state[g, VMIN_]
                if v < th:  # the common case: no spike, one predictable branch
                    state[g, V_] = v if v > vm else vm
                    continue
                n = 1.0 if k[g] < cap[g] else 0.0
                v = v - n * th
                state[g, V_] = v if v > vm else vm
            else:
                # n = floor(v / theta) without the division where its floor is sure: below
                # theta(1 - 1e-7) it is <= 0, in theta[1 + 1e-7, 2 - 2e-7) it is 1 (the products'
                # rounding is far inside those margins)
                if v < th * 0.9999999 and th > 0.0:  # the common case: no spike
                    state[g, V_] = v
                    continue
                if th > 0.0 and v >= th * 1.0000001 and v < th * 1.9999998:
                    n = 1.0
                else:
                    f = np.floor(v / th)
                    n = f if f > 0.0 else 0.0
                room = cap[g] - k[g]
                n = room if room < n else n
                state[g, V_] = v - n * th
            if n != 0.0:
                k[g] += n
                em_rank[ne] = int(r)
                em_slot[ne] = g
                em_key[ne] = clock + e
                em_n[ne] = n
                ne += 1
    return synops, ne


# The two plain kernels (no SSC gates): the same rules as `_sequential` with the policy fixed at
# compile time, unsigned flat indexing (numba then emits no negative-index fix-ups) and 16-byte rows
# (membrane at 2g, rank stamp at 2g+1; cap and lower bound per slot), which about halves the time
# per synapse.
@_njit(nogil=True)
def _sequential_speck(indptr, slots, weights, rows, samples, S, clock, state, k, theta, cap, vmin, step,
                      em_rank, em_slot, em_key, em_n):
    synops = 0
    ne = 0
    base = float(step) * RANK_LIMIT
    st = state.ravel()
    one, two = np.uint64(1), np.uint64(2)
    for e in range(rows.size):
        a = rows[e]
        off = np.uint64(samples[e] * S)
        j0 = indptr[a]
        end = indptr[a + 1]
        synops += end - j0
        for j in range(j0, end):
            s = np.uint64(slots[j])
            g2 = (off + s) * two
            v = st[g2] + weights[j]
            rs = st[g2 + one]
            r = rs - base if rs >= base else 0.0
            st[g2 + one] = base + r + 1.0
            th = theta[s]
            vm = vmin[s]
            if v < th:
                st[g2] = v if v > vm else vm
                continue
            g = off + s
            n = 1.0 if k[g] < cap[s] else 0.0
            v = v - n * th
            st[g2] = v if v > vm else vm
            if n != 0.0:
                k[g] += n
                em_rank[ne] = int(r)
                em_slot[ne] = g
                em_key[ne] = clock + e
                em_n[ne] = n
                ne += 1
    return synops, ne


@_njit(nogil=True)
def _sequential_greedy(indptr, slots, weights, rows, samples, S, clock, state, k, theta, cap, lo, mid, hi, step,
                       em_rank, em_slot, em_key, em_n):
    """lo / mid / hi per slot: `greedy_bounds(theta)` (where floor(v / theta) is sure without a
    division: <= 0 below lo, 1 in [mid, hi))."""
    synops = 0
    ne = 0
    base = float(step) * RANK_LIMIT
    st = state.ravel()
    one, two = np.uint64(1), np.uint64(2)
    for e in range(rows.size):
        a = rows[e]
        off = np.uint64(samples[e] * S)
        j0 = indptr[a]
        end = indptr[a + 1]
        synops += end - j0
        for j in range(j0, end):
            s = np.uint64(slots[j])
            g2 = (off + s) * two
            v = st[g2] + weights[j]
            rs = st[g2 + one]
            r = rs - base if rs >= base else 0.0
            st[g2 + one] = base + r + 1.0
            if v < lo[s]:  # floor(v / theta) <= 0: no spike, no division
                st[g2] = v
                continue
            th = theta[s]
            if v >= mid[s] and v < hi[s]:
                n = 1.0
            else:
                f = np.floor(v / th)
                n = f if f > 0.0 else 0.0
            g = off + s
            room = cap[s] - k[g]
            n = room if room < n else n
            st[g2] = v - n * th
            if n != 0.0:
                k[g] += n
                em_rank[ne] = int(r)
                em_slot[ne] = g
                em_key[ne] = clock + e
                em_n[ne] = n
                ne += 1
    return synops, ne


# The channel-last sequential kernels (greedy/speck without SSC gates, `ChannelLast`): membranes
# `vq` and per-step contribution counters `cnt` in channel-last order (q = RunTables.pos[slot] per
# sample), an event's targets walked as the gap-free runs of `FlatTables.runs(0)` (every target of a
# run is one table entry: the same updates as the flat kernels, in q order within an event; targets
# of an event are distinct, so every neuron sees the same contributions in the same order with the
# same ranks). A run lies inside one population (`_cut_runs` cuts at population starts) and
# `ChannelLast` checks that its bound (theta, lower bound) is one value over every run, so the SIMD
# pass reads it once per run. Per run a branch-free SIMD pass adds the weights (float32 copies
# where every weight is a float32 value: the same float64 sums), counts the contribution and stores
# the membrane (the no-spike value, or the raw sum where the neuron reaches the policy's bound: for
# speck max(v, v_min) is both, as v_min < theta);
# only a run with a neuron at the bound takes the scalar pass, which applies the firing rule to
# exactly those (every target of the run was updated by this event, and a no-spike store stays
# below the bound: speck requires v_min < theta, checked by the runner) with the very float64
# operations of `_sequential_speck` / `_sequential_greedy`. A neuron's rank is its counter before
# the contribution. The events must come sample by sample (`deliver_sequential` sorts them so):
# at the end of a sample's events its counters are zeroed (`_zero_counters`: the runs again, or the
# span of q its runs wrote; the next step starts from 0 with no per-synapse step stamp to compare). The speck kernel lists every
# neuron it leaves at or above its threshold (`hot`, once each: `mark`), the only ones a first
# update without reset or constant current can fire (`first_update_hot`).
@_njit(nogil=True)
def _zero_counters(pat, base, ptr, rel, length, rows, e0, e1, off, cnt, qlo, qhi, wrote):
    """The channel-last kernels' contribution counters of one sample (at `off`) back to zero after
    its events e0:e1 of a step, which wrote `wrote` counters (with repeats) within [qlo, qhi): where
    that is under half the span, run by run over the events' runs again (they were just written, in
    cache), else the span in one sweep (a sparse step's span of a large map is mostly untouched and
    out of cache)."""
    if 2 * wrote >= qhi - qlo:
        for q in range(np.uint64(qlo), np.uint64(qhi)):
            cnt[off + q] = 0
        return
    for e in range(e0, e1):
        a = rows[e]
        p = pat[a]
        for r in range(ptr[p], ptr[p + 1]):
            t = off + np.uint64(base[a] + rel[r])
            for i in range(np.uint64(length[r])):
                cnt[t + i] = 0


@_njit(nogil=True)
def _at_or_above(vq, t, c0, c1, bound):
    """Bit i - c0 set where vq[t + i] is not below `bound` (NaN too), for i in [c0, c1), at most 64:
    the neurons of a run at or above their bound, whose rule the channel-last kernels then apply
    lowest bit first (`_lowest_bit`), in a loop over these neurons only."""
    bits = np.uint64(0)
    for i in range(c0, c1):
        bits |= np.uint64(not (vq[t + i] < bound)) << (i - c0)
    return bits


@_njit(nogil=True)
def _sequential_speck_cl(pat, base, ptr, rel, length, woff, weights, inv, rows, samples, S, clock, vq, cnt, k,
                         thq, vmq, capq, em_rank, em_slot, em_key, em_n, hot, mark, nhot, counters, guard):
    """The speck rule over channel-last runs (`deliver_sequential`), sample by sample
    (`_speck_sample`), its records' neurons as global slots. `guard` (vq's dtype): [0] the
    limit of a float32 run (`speck_f32_limit`; inf in float64), [1] set to 1 where a sum fell below
    its lower bound or a membrane at or above its threshold reached the limit."""
    synops = 0
    ne = 0
    limit = guard[0]
    off_grid = False
    n_ev = rows.size
    e0 = 0
    while e0 < n_ev:
        b = samples[e0]
        e1 = e0
        while e1 < n_ev and samples[e1] == b:
            e1 += 1
        n0 = ne
        syn, ne, grid = _speck_sample(pat, base, ptr, rel, length, woff, weights, rows, e0, e1, b, S, clock, vq, cnt,
                                      k, thq, vmq, capq, em_rank, em_slot, em_key, ne, hot, mark, nhot, counters,
                                      limit)
        synops += syn
        off_grid |= grid
        off = b * S
        for i in range(n0, ne):  # (q -> global slot; one spike per record)
            em_slot[i] = off + inv[em_slot[i] - off]
            em_n[i] = 1.0
        e0 = e1
    if off_grid:
        guard[1] = 1.0
    return synops, ne


@_njit(nogil=True)
def _speck_sample(pat, base, ptr, rel, length, woff, weights, rows, e0, e1, b, S, key0, vq, cnt, k, thq, vmq, capq,
                  em_rank, em_q, em_key, ne, hot, mark, nhot, counters, limit):
    """The speck rule for sample b's events e0:e1 (in that order) over channel-last runs: its
    spikes as records from index `ne` on, one per spike (a speck update fires at most once): the
    neuron's rank (contributions before this one in the step), its global q (b x S + q) and key0 +
    the event's index; the neurons it leaves at or above their threshold join the sample's list
    (`hot[b x S:]`, `nhot[b]`, once each: `mark`). Its counters are zero again on return
    (`_zero_counters`). Shared by the step kernel (`_sequential_speck_cl`) and the chain run
    (`_speck_chain`). Returns (synaptic ops, records, whether a sum fell below its lower bound
    or a membrane at or above its threshold reached `limit`)."""
    synops = 0
    off_grid = False
    off = np.uint64(b * S)
    hb = b * S
    qlo = S
    qhi = 0
    for e in range(e0, e1):
        a = rows[e]
        if e + 8 < e1:  # (as `_runs_sample`)
            _prefetch_read(base, np.uint64(rows[e + 8]))
            _prefetch_read(pat, np.uint64(rows[e + 8]))
        p = pat[a]
        r0, r1 = ptr[p], ptr[p + 1]
        if r1 == r0:
            continue
        qlo = min(qlo, base[a] + rel[r0])
        qhi = max(qhi, base[a] + rel[r1 - 1] + length[r1 - 1])
        for r in range(r0, r1):
            q0 = np.uint64(base[a] + rel[r])
            t = off + q0
            wo = np.uint64(woff[r])
            nl = length[r]
            synops += nl
            L = np.uint64(nl)
            th = thq[q0]
            vm = vmq[q0]
            fl = _speck_add(vq, t, weights, wo, cnt, L, th, vm)
            hit = (fl & np.uint64(1)) != 0
            off_grid |= (fl & np.uint64(2)) != 0
            if not hit:
                continue
            # the neurons at or above the threshold, as bits, visited lowest first (each neuron's
            # rule reads and writes its own membrane only, so the mask taken before the loop is
            # the one the loop's tests would find): a loop that branched on every neuron of a
            # hit run mispredicted on the few at the threshold; 7% less time per sinabs64 run
            # at rate 0.02, on 1 thread and on 2 (alternated in one process)
            for c0 in range(np.uint64(0), L, np.uint64(64)):
                c1 = min(c0 + np.uint64(64), L)
                bits = _at_or_above(vq, t, c0, c1, th)
                while bits:
                    i = c0 + _lowest_bit(bits)
                    bits &= bits - np.uint64(1)
                    v = vq[t + i]
                    off_grid |= v >= limit  # (a float32 run's thresholds are at most its limit)
                    # (without `counters` every cap is inf or 0: k < cap is cap > 0, and k is not kept)
                    fire = k[t + i] < capq[q0 + i] if counters else capq[q0 + i] > 0.0
                    if fire:  # (in vq's dtype: a float32 run computes in float32)
                        v = v - th
                        v = v if v > vm else vm
                    vq[t + i] = v
                    if v >= th and mark[t + i] == 0:  # still at the threshold: `first_update_hot`'s list
                        mark[t + i] = 1
                        hot[hb + nhot[b]] = t + i
                        nhot[b] += 1
                    if fire:
                        if counters:
                            k[t + i] += 1.0
                        em_rank[ne] = cnt[t + i] - 1
                        em_q[ne] = t + i
                        em_key[ne] = key0 + e
                        ne += 1
    _zero_counters(pat, base, ptr, rel, length, rows, e0, e1, off, cnt, qlo, qhi, synops)
    return synops, ne, off_grid


@_njit(nogil=True)
def _speck_chain(take, T, B, S, runs, weights, inputs, steps, start, params, vq, cnt, k, counts, hot, mark, nhot,
                 out_pos, out_sum, stats, guard, counters):
    """A whole speck run of a chain network (`runner._chain_schedule`; `runner._run_speck_chain`)
    for the samples it takes from `take` (as `_ideal_chain`), each sample's T timesteps at once
    (samples are independent): per timestep
    the start (`_start_sample`), the first update (`_first_update_sample`: its full sweep at t = 0,
    the sample's list of neurons at their threshold and the touched ones after), then per step the
    speck rule over its events (`_speck_sample`), and the output membranes added into out_sum. The
    runner's layer order, step by step, in its per-sample event order: the input's spikes in burst
    order (spike j of every address, ascending address, for j = 0, 1, ...); a later source's events
    its first update's spikes in slot order, then the step before's spikes by (event, rank, slot)
    (what `deliver_sequential`'s records sorted by key give with `sample_major`). So every neuron
    sees the same contributions in the same order: the same counts, membranes and records.
    runs: (pat, base, ptr, rel, length, woff, synapses per pattern, pat_q, base_q (every later
    source's rows in q order, where qrows), qrows, inv (q -> slot), pos (slot -> q)); inputs:
    (rows, counts, first) as `_ideal_chain` reads them; steps: (row base of the step's source, q
    range [lo, hi) of the population it feeds, hi == lo for the output); start: (reset and touched
    q at t = 0, the same for t > 0, betaq, constq, init0: the membranes t = 0 leaves (every slot
    reset: beta + const in vq's dtype), quiet0: whether the first update then does nothing (every
    neuron that can fire strictly between its lower bound and its threshold: the start is a copy
    of init0 and the full sweep is skipped, about 10% of a sinabs64 run at rate 0.01)); params: (thq, vmq, the delivery's cap per q,
    the first update's cap per q, fireq, the first update's lower bound per q). Counts per global
    q; stats: (synops per sample and step, spikes and peak per sample and step of the population
    it feeds, (T, steps, B) whether a step had events); `counters`: the window caps are finite, so
    the counters k are kept and zeroed at every timestep's start (the runner's `_zero_k`)."""
    pat, base, ptr, rel, length, woff, patlen, pat_q, base_q, qrows, inv, pos = runs
    rp = pat_q if qrows else pat  # (source 0's rows are the same in both)
    rb = base_q if qrows else base
    in_rows, in_mult, in_first = inputs
    s_base, s_lo, s_hi = steps
    reset0, touch0, reset1, touch1, betaq, constq, init0, quiet0 = start
    thq, vmq, capf, capq, fireq, vminq = params
    syn_st, spk, peak, nonempty = stats
    nst = s_base.size
    limit = guard[0]
    off_grid = False
    rows = np.empty(1024, dtype=np.int64)
    er, eq, ek = np.empty(1024, dtype=np.int64), np.empty(1024, dtype=np.int64), np.empty(1024, dtype=np.int64)
    sk = np.empty(1024, dtype=np.int64)
    fg, fn, fs = np.empty(S, dtype=np.int64), np.empty(S), np.empty(S, dtype=np.int64)
    while not (limit < np.inf and guard[1] != 0.0):  # the samples not yet taken, one at a time, until
        # take[1], in take[2:]'s order. A float32 run (a finite `limit`) stops taking samples once any
        # thread's sample left the grid: the run is done again in float64 (`runner._simulate`), and
        # each finished sample leaves its state (counters, lists) as a whole run would (the rest of a
        # DVS-like batch's float32 run was half its time). A float64 run's flag (a membrane clipped
        # to its lower bound) stops nothing.
        i = _take(take)
        if i >= take[1]:
            break
        b = take[2 + i]
        off = b * S
        for t in range(T):
            if t == 0 and quiet0:  # every membrane init0 = beta + const, where the first update does nothing
                u = np.uint64(off)
                for q in range(np.uint64(S)):
                    vq[u + q] = init0[q]
                if counters:
                    for q in range(np.uint64(S)):
                        k[u + q] = 0.0
                for i in range(nhot[b]):  # (the sample's list: empty, as the full sweep leaves it)
                    mark[hot[off + i]] = 0
                nhot[b] = 0
                nf = 0
            else:
                if t == 0:
                    _start_sample(vq, np.uint64(1), k, betaq, constq, reset0, np.uint64(off), S, touch0, counters)
                else:
                    _start_sample(vq, np.uint64(1), k, betaq, constq, reset1, np.uint64(off), S, touch1, counters)
                nf = _first_update_sample(vq, k, thq, fireq, capq, vminq, b, S, fg, fn, 0, hot, mark, nhot, touch1,
                                          t == 0)
            for i in range(nf):
                counts[fg[i]] += 1.0
                fs[i] = inv[fg[i] - off]
            fs[:nf].sort()  # (the first update's spikes in slot order)
            nrec = 0
            for s in range(nst):
                n = 0
                if s == 0:  # the input's spikes of (t, b) in burst order
                    e0, e1 = in_first[t * B + b], in_first[t * B + b + 1]
                    tot = 0
                    mm = 0
                    for i in range(e0, e1):
                        c = np.int64(in_mult[i])
                        tot += c
                        mm = max(mm, c)
                    if tot > rows.size:
                        rows = np.empty(2 * tot, dtype=np.int64)
                    for j in range(mm):
                        for i in range(e0, e1):
                            if in_mult[i] > j:
                                rows[n] = in_rows[i]
                                n += 1
                else:  # the first update's spikes of the population step s - 1 fed, then that step's
                    plo, phi = s_lo[s - 1], s_hi[s - 1]
                    if nf + nrec > rows.size:
                        rows = np.empty(2 * (nf + nrec), dtype=np.int64)
                    for i in range(nf):
                        sl = fs[i]
                        if sl >= plo and sl < phi:
                            rows[n] = s_base[s] + (pos[sl] if qrows else sl) - plo
                            n += 1
                    nfu = n
                    for r in range(nrec):
                        q = eq[r] - off
                        rows[n] = s_base[s] + (q if qrows else inv[q]) - plo
                        n += 1
                    spk[b, s - 1] += n
                    peak[b, s - 1] = max(peak[b, s - 1], max(nfu, nrec))
                nonempty[t, s, b] = n > 0
                nrec = 0
                if n == 0:
                    continue
                bound = 0  # (a record per synapse at most)
                for i in range(n):
                    bound += patlen[rp[rows[i]]]
                if bound > er.size:
                    er, eq = np.empty(2 * bound, dtype=np.int64), np.empty(2 * bound, dtype=np.int64)
                    ek, sk = np.empty(2 * bound, dtype=np.int64), np.empty(2 * bound, dtype=np.int64)
                syn, nrec, grid = _speck_sample(rp, rb, ptr, rel, length, woff, weights, rows, 0, n, b, S, 0, vq, cnt, k,
                                                thq, vmq, capf, er, eq, ek, 0, hot, mark, nhot, counters, limit)
                syn_st[b, s] += syn
                off_grid |= grid
                # the records (in event order) by (event, rank, slot): an event's few by insertion
                for j in range(nrec):
                    if j + BURST_PREFETCH < nrec:  # (the count and slot of a record well ahead: `_prefetch`)
                        ga = np.uint64(eq[j + BURST_PREFETCH])
                        _prefetch(counts, ga)
                        _prefetch(inv, ga - np.uint64(off))
                    g = eq[j]
                    counts[g] += 1.0
                    v = er[j] * S + inv[g - off]
                    e = ek[j]
                    m = j
                    while m > 0 and ek[m - 1] == e and sk[m - 1] > v:
                        sk[m] = sk[m - 1]
                        eq[m] = eq[m - 1]
                        m -= 1
                    sk[m] = v
                    eq[m] = g
            for i in range(out_pos.size):
                out_sum[b, i] += vq[off + out_pos[i]]
        if off_grid:
            guard[1] = 1.0


@_njit(nogil=True)
def _sequential_greedy_cl(pat, base, ptr, rel, length, woff, weights, inv, rows, samples, S, clock, vq, cnt, k,
                          loq, thq, capq, midq, hiq, em_rank, em_slot, em_key, em_n):
    """The greedy rule over channel-last runs (`deliver_sequential`): a SIMD add-and-compare pass per
    run against the run's lower bound `loq` (one value per run), then the rule (`greedy_bounds`:
    one spike between mid and hi, else floor(v / theta), at most the cap's room) for the neurons at
    or above it only."""
    synops = 0
    ne = 0
    n_ev = rows.size
    e0 = 0
    while e0 < n_ev:
        b = samples[e0]
        e1 = e0
        while e1 < n_ev and samples[e1] == b:
            e1 += 1
        off = np.uint64(b * S)
        qlo = S
        qhi = 0
        syn0 = synops
        for e in range(e0, e1):
            a = rows[e]
            if e + 8 < e1:  # (as `_runs_sample`)
                _prefetch_read(base, np.uint64(rows[e + 8]))
                _prefetch_read(pat, np.uint64(rows[e + 8]))
            p = pat[a]
            r0, r1 = ptr[p], ptr[p + 1]
            if r1 == r0:
                continue
            qlo = min(qlo, base[a] + rel[r0])
            qhi = max(qhi, base[a] + rel[r1 - 1] + length[r1 - 1])
            for r in range(r0, r1):
                q0 = np.uint64(base[a] + rel[r])
                t = off + q0
                wo = np.uint64(woff[r])
                nl = length[r]
                synops += nl
                L = np.uint64(nl)
                bound = loq[q0]
                hit = False
                for i in range(L):
                    v = vq[t + i] + weights[wo + i]
                    cnt[t + i] += 1
                    hit |= v >= bound
                    vq[t + i] = v
                if not hit:
                    continue
                # the neurons at or above the bound, as bits, lowest first (as `_sequential_speck_cl`:
                # each neuron's rule reads and writes its own membrane only)
                for c0 in range(np.uint64(0), L, np.uint64(64)):
                    c1 = min(c0 + np.uint64(64), L)
                    bits = _at_or_above(vq, t, c0, c1, bound)
                    while bits:
                        i = c0 + _lowest_bit(bits)
                        bits &= bits - np.uint64(1)
                        v = vq[t + i]
                        qi = q0 + i
                        th = thq[qi]
                        if v >= midq[qi] and v < hiq[qi]:
                            n = 1.0
                        else:
                            f = np.floor(v / th)
                            n = f if f > 0.0 else 0.0
                        room = capq[qi] - k[t + i]
                        n = room if room < n else n
                        vq[t + i] = v - n * th
                        if n != 0.0:
                            k[t + i] += n
                            em_rank[ne] = cnt[t + i] - 1
                            em_slot[ne] = off + np.uint64(inv[qi])
                            em_key[ne] = clock + e
                            em_n[ne] = n
                            ne += 1
        _zero_counters(pat, base, ptr, rel, length, rows, e0, e1, off, cnt, qlo, qhi, synops - syn0)
        e0 = e1
    return synops, ne


@_njit(nogil=True)
def _transpose(src, sw, dst, dw, seg, B, S, to_q):
    """Membranes between slot order (column 0 of `state` rows, width sw / dw) and channel-last order,
    per sample and segment (`RunTables.seg`), tile by tile (`FLUSH_TILE` sites): to_q reads slots and
    writes q, else the reverse. A copy: no value changes."""
    fs = src.ravel()
    fd = dst.ravel()
    for b in range(B):
        off = b * S
        for i in range(seg.shape[0]):
            lo, C, sites = seg[i, 0], seg[i, 1], seg[i, 2]
            if C == 1:
                for x in range(lo, lo + sites):
                    fd[(off + x) * dw] = fs[(off + x) * sw]
                continue
            for p0 in range(0, sites, FLUSH_TILE):
                p1 = min(p0 + FLUSH_TILE, sites)
                for c in range(C):
                    for p in range(p0, p1):
                        sl = off + lo + c * sites + p
                        ql = off + lo + p * C + c
                        if to_q:
                            fd[ql * dw] = fs[sl * sw]
                        else:
                            fd[sl * dw] = fs[ql * sw]


class ChannelLast:
    """The channel-last state of a greedy/speck run without SSC gates: membranes `vq` and
    contribution counters `cnt` (int32, zero between steps) per (sample, q), the per-q bounds of the
    SIMD pass, and which copy of the membranes is current (`q_current`; the runner starts a run
    with it set: its membranes are in `vq`, which the first timestep's start writes whole; `state`
    is not initialised). The runner's
    slot-order code (timestep start with a leak, host currents or disabled slots) reads `state`;
    `to_q` / `to_slots` transpose at those step boundaries. `uniform`: every run's bound is one value (the kernels read it once per run); the
    runner takes the flat kernels where it is not (static SSC masks disabling part of a population).
    `cache`: a dict the caller keeps for its runs with the same batch size and per-slot parameters
    (the runner: per network, batch size and policy parameters), holding the per-q copies of the
    parameters (`slot_params`, `per_q` included) for the next such run: they are read-only, and
    built anew they cost milliseconds per run (sinabs64, batch 16: about 3 ms of CPU)."""

    def __init__(self, flat: FlatTables, B: int, S: int, speck: bool, theta, vmin, lo, scratch: "Scratch",
                 cache: dict | None = None, f32: tuple[float, int] | None = None):
        self.rt = flat.runs(0)
        self.B, self.S = B, S
        self.cache = c = {} if cache is None else cache
        # `f32` (speck: `speck_f32_limit`'s bound and grid): membranes, thresholds and lower bounds
        # in float32; exact while `guard` (kept by the speck kernel) shows no membrane at the bound
        # and none clipped (the runner runs again in float64 where one was)
        self.f32 = f32 is not None
        dt = np.float32 if self.f32 else np.float64
        self.guard = np.array([f32[0] if self.f32 else np.inf, 0.0], dtype=dt)
        # kept by the run's scratch for the next run: the membranes need no zeros (a first
        # timestep's start writes every one), the counters are zero between steps
        self.vq = scratch.kept("vq", (B * S,), dt)
        self.cnt = scratch.zeroed("cnt", B * S, np.int32)
        key = ("static", self.f32)
        if key not in c:  # (built whole, then published at once: the batch split's threads share it)
            inv = self.rt.inv
            thq, vmq, loq = (np.ascontiguousarray(a[inv], dtype=dt) for a in (theta, vmin, lo))
            if self.f32:
                thq, vmq = f32_bounds(thq, vmq, f32[1], f32[0])
            c.setdefault(key, (inv.astype(np.int64), thq, vmq, loq, {}, self.rt.weights_f64_or_f32(),
                               all(self.rt.uniform(x) for x in ((thq, vmq) if speck else (loq,)))))
        self.inv, self.thq, self.vmq, self.loq, self._per_q, self.weights, self.uniform = c[key]
        # speck: the neurons at or above their threshold (`first_update_hot`; valid once a full
        # first update in q order has listed them)
        n_hot = B * S if speck else 0
        self.hot, self.mark = scratch.kept("hot", (n_hot,), np.int64), scratch.kept("mark", (n_hot,), np.uint8)
        clear(self.mark)
        self.nhot = np.zeros(B, np.int64)  # (per sample: its list at hot[b x S:])
        self.hot_valid = False
        self.q_current = False  # vq holds the membranes (state's column is stale)

    def slot_params(self, beta, const, fire_slot, cap, vmin) -> None:
        """Per-q copies of the per-slot parameters of a timestep's start and first update (run in
        q order while the membranes are there: `start_timestep` / `first_update` on `vq`)."""
        c, inv = self.cache, self.inv
        if "slot_params" not in c:
            c.setdefault("slot_params", tuple(np.ascontiguousarray(a[inv], dtype=np.float64)
                                              for a in (beta, const, cap, vmin)) + (np.tile(fire_slot[inv], self.B),))
        self.betaq, self.constq, self.capq, self.vminq, self.fireq = c["slot_params"]
        self._kq = None

    @property
    def kq(self) -> np.ndarray:
        """Slot-order counters of a first update run in slot order (allocated on first use)."""
        if self._kq is None:
            self._kq = zeros(self.B * self.S)
        return self._kq

    def per_q(self, per_slot: np.ndarray) -> np.ndarray:
        """A per-slot parameter in q order (kept for the run: the kernels' scalar pass reads it
        next to the membranes instead of at the slot, a cache miss per spike)."""
        hit = self._per_q.get(id(per_slot))
        if hit is None or hit[0] is not per_slot:
            hit = self._per_q[id(per_slot)] = (per_slot, np.ascontiguousarray(per_slot[self.inv], dtype=np.float64))
        return hit[1]

    def to_q(self, state) -> None:
        if not self.q_current:
            _transpose(state, state.shape[1], self.vq, 1, self.rt.seg, self.B, self.S, True)
            self.q_current = True

    def to_slots(self, state) -> None:
        if self.q_current:
            _transpose(self.vq, 1, state, state.shape[1], self.rt.seg, self.B, self.S, False)
            self.q_current = False


def speck_f32_limit(weights, theta, vmins, beta, const, can_fire) -> tuple[float, int] | None:
    """The bound and grid of a float32 speck run (`ChannelLast.f32`): (L = 2^23 quanta, e) where
    every weight, threshold and reset value lies on the grid 2^-e (`grid_exponent`) below L, every
    neuron that can fire has a positive threshold, none has a constant current and every finite
    lower bound (`vmins`, per slot) is at most 0 and at most its reset value; else None (float64).
    The speck rule adds a weight, clips at a lower bound or subtracts a positive threshold from a
    membrane at or above it (leaving at least 0). In float32 the lower bounds are rounded up to the
    grid and raised to -L (-inf too), the thresholds lowered to L (only those of neurons that cannot
    fire reach it), and the kernel flags (`guard[1]`) a sum below its lower bound or a membrane at
    or above L: a run without a flag stored only membranes of the grid in [-L, L), so each sum of
    one and a weight (below 2^24 quanta) and each difference was exact in float32, every
    comparison read as in float64 (for a value of the grid, below a bound is below it rounded up
    to the grid), and the run computed the very values of a float64 one. The runner runs a flagged
    run again in float64 (Speck's lower bound, -2^15 chip units, is off the grid in general: a
    membrane clipped there is not a float32 value)."""
    theta = np.asarray(theta, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    fire = np.asarray(can_fire, dtype=bool)
    if np.any(np.asarray(const) != 0.0) or not np.all(theta[fire] > 0.0):
        return None
    for vm in vmins:
        vm = np.asarray(vm, dtype=np.float64)
        fin = np.isfinite(vm)
        if np.any(vm[fin] > 0.0) or np.any(vm[fin] > beta[fin]):
            return None
    e = grid_exponent(weights, theta[fire], beta)
    if e is None:
        return None
    limit = 2.0 ** (23 - e)
    if any(np.any(np.abs(np.asarray(a, dtype=np.float64)) >= limit) for a in (weights, theta[fire], beta)):
        return None
    return limit, e


def f32_bounds(thq: np.ndarray, vmq: np.ndarray, e: int, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """A float32 speck run's thresholds (at most `limit`) and lower bounds (rounded up to the grid
    2^-e, at least -limit; -inf too), float32 (`speck_f32_limit`)."""
    vm = np.asarray(vmq, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        vm = np.where(np.isfinite(vm), np.ceil(vm * 2.0 ** e) / 2.0 ** e, vm)
    return (np.minimum(np.asarray(thq, dtype=np.float64), limit).astype(np.float32),
            np.maximum(vm, -limit).astype(np.float32))


@_njit(nogil=True)
def init_state(state, cap_g, cap, vmin, fireable, B, S):
    """Every (sample, slot) row: membrane and counters 0, cap / lower bound of its slot (0 / -inf
    for a neuron that may not fire, so the sequential kernel never fires it). A one-column state
    (the ideal policy: membranes only) gets the membranes."""
    w = state.shape[1]
    for b in range(B):
        for s in range(S):
            g = b * S + s
            state[g, V_] = 0.0
            if w > RS_:
                state[g, RS_] = 0.0
            if w > VMIN_:
                state[g, VMIN_] = vmin[s] if fireable[s] else -np.inf
            cap_g[g] = cap[s] if fireable[s] else 0.0


def start_timestep(state, k, beta, const, reset, B, S, slots, zero_k):
    """A timestep's start: membranes of non-stateful (or all, at t = 0) neurons back to beta, then
    the constant current, over the slots `slots` (the runner passes those reset or with a nonzero
    constant: any other membrane is V + 0.0, its value); spike counters k to 0 when `zero_k` (the
    greedy/speck windows; the ideal policy keeps no counters). Samples on numba's threads; one
    sample (a recording of `snncc.sim.event_streams`, run by run) on the calling thread: starting
    a parallel region costs milliseconds of CPU, the sweep of one sample microseconds."""
    if B == 1:
        _start_sample(state.ravel(), np.uint64(state.shape[1]), k, beta, const, reset, np.uint64(0), S, slots, zero_k)
    else:
        _start_timestep_batch(state, k, beta, const, reset, B, S, slots, zero_k)


@_njit(nogil=True)
def _start_sample(st, w, k, beta, const, reset, off, S, slots, zero_k):
    """`start_timestep` of the sample whose slots start at `off` (`st`: the state, raveled; `w`: its width).
    Where `slots` is every slot (a first timestep's start: they are sorted and distinct, so slot i
    is slots[i]) the sweep reads no index and, on one-column membranes, is a SIMD loop."""
    if slots.size == S and w == 1:
        for s in range(np.uint64(S)):
            v = beta[s] if reset[s] else st[off + s]
            st[off + s] = v + const[s]
        if zero_k:
            for s in range(np.uint64(S)):
                k[off + s] = 0.0
        return
    for i in range(slots.size):
        s = np.uint64(slots[i])
        g = off + s
        v = beta[s] if reset[s] else st[g * w]
        st[g * w] = v + const[s]
    if zero_k:
        for s in range(np.uint64(S)):
            k[off + s] = 0.0


@_njit(nogil=True, parallel=True)
def _start_timestep_batch(state, k, beta, const, reset, B, S, slots, zero_k):
    st = state.ravel()  # a view: the runner's state is C-contiguous
    w = np.uint64(state.shape[1])
    for b in numba.prange(B):
        _start_sample(st, w, k, beta, const, reset, np.uint64(b * S), S, slots, zero_k)


@_njit(nogil=True)
def first_update(state, k, theta, fireable, cap, vmin, speck, B, S, out_g, out_n):
    """greedy/speck: the constant (+ host) current as every neuron's first update; fired
    (slot, n) written to out_g/out_n in slot order. Returns how many. A neuron below its threshold
    (speck), or below theta(1 - 1e-7) where floor(v / theta) <= 0 (greedy), fires nothing: only
    speck's lower bound is applied, and nothing else is written (most neurons, most timesteps)."""
    ne = 0
    for b in range(B):
        for s in range(S):
            g = b * S + s
            v = state[g, V_]
            th = theta[s]
            if speck and v < th:
                if v <= vmin[s] and fireable[g]:
                    state[g, V_] = vmin[s]
                continue
            if not speck and v < th * 0.9999999 and th > 0.0:
                continue
            if not fireable[g]:
                continue
            if speck:
                n = 1.0 if (v >= th and cap[s] > 0.0) else 0.0
                v = v - n * th
                state[g, V_] = v if v > vmin[s] else vmin[s]
            else:
                f = np.floor(v / th)
                n = min(max(f, 0.0), cap[s])
                state[g, V_] = v - n * th
            k[g] += n
            if n > 0.0:
                out_g[ne] = g
                out_n[ne] = n
                ne += 1
    return ne


@_njit(nogil=True)
def first_update_hot(vq, k, thq, fireq, capq, vminq, B, S, out_g, out_n, hot, mark, nhot, touched, full):
    """speck, channel-last (`ChannelLast`): `first_update`'s speck rule on the membranes in q order,
    sample by sample (`_first_update_sample`). Fired (b * S + q, n) in out_g/out_n (any order).
    Returns how many fired."""
    ne = 0
    for b in range(B):
        ne = _first_update_sample(vq, k, thq, fireq, capq, vminq, b, S, out_g, out_n, ne, hot, mark, nhot, touched,
                                  full)
    return ne


@_njit(nogil=True)
def _first_update_sample(vq, k, thq, fireq, capq, vminq, b, S, out_g, out_n, ne, hot, mark, nhot, touched, full):
    """`first_update_hot` for sample b: the rule over every neuron of the sample (`full`) or only
    over its listed ones (`hot[b x S:]`, `nhot[b]`: every neuron at or above its threshold is
    listed, by `_speck_sample` and by this sweep) and those whose membrane the timestep's start set
    (`touched`: q positions). Any other neuron is below its threshold and at or above its lower
    bound (every store clips at it), where the rule changes nothing. The full sweep first tests a
    block of `BURST_BLOCK` neurons at once (SIMD) for one not strictly between its lower bound and
    its threshold, and skips a block with none (the rule changes nothing there): the sweep of a
    sample's membranes after a first timestep's start costs a vector compare per block. Fired
    (b * S + q, n) in out_g/out_n from `ne` on; the neurons left at or above their threshold form
    the sample's new list (written over the old one in place: candidate i adds at most one entry,
    at an index <= i, after it is read). Returns ne plus how many fired."""
    hb = b * S
    m = nhot[b]
    if not full:  # the candidates: the list plus the touched neurons, each once
        for i in range(touched.size):
            g = hb + touched[i]
            if mark[g] == 0:
                mark[g] = 1
                hot[hb + m] = g
                m += 1
    for i in range(m):
        mark[hot[hb + i]] = 0
    nhot[b] = 0
    if full:  # in q order, block by block
        off = np.uint64(hb)
        for q0 in range(0, S, BURST_BLOCK):
            q1 = min(q0 + BURST_BLOCK, S)
            quiet = True
            for q in range(np.uint64(q0), np.uint64(q1)):  # (unsigned, no short circuit: SIMD)
                v = vq[off + q]
                quiet &= (v < thq[q]) & (v > vminq[q])
            if not quiet:
                for q in range(q0, q1):
                    ne = _first_hot(vq, k, thq, fireq, capq, vminq, hb + q, q, out_g, out_n, hot, mark, nhot, hb, b,
                                     ne)
        return ne
    for i in range(m):
        g = hot[hb + i]
        ne = _first_hot(vq, k, thq, fireq, capq, vminq, g, g - hb, out_g, out_n, hot, mark, nhot, hb, b, ne)
    return ne


@numba.njit(inline="always")
def _first_hot(vq, k, thq, fireq, capq, vminq, g, s, out_g, out_n, hot, mark, nhot, hb, b, ne):
    """`first_update_hot`'s rule for neuron g (q position s in its sample b, whose list starts at hb); returns the count of
    fired neurons in out_g/out_n, ne plus one where it fires."""
    v = vq[g]
    th = thq[s]
    if v < th:
        if v <= vminq[s] and fireq[g]:
            vq[g] = vminq[s]
        return ne
    if not fireq[g]:
        return ne
    n = 1.0 if capq[s] > 0.0 else 0.0
    v = v - n * th
    v = v if v > vminq[s] else vminq[s]
    vq[g] = v
    k[g] += n
    if n > 0.0:
        out_g[ne] = g
        out_n[ne] = n
        ne += 1
    if v >= th and mark[g] == 0:
        mark[g] = 1
        hot[hb + nhot[b]] = g
        nhot[b] += 1
    return ne


@_njit(nogil=True, parallel=True)
def complete_burst(state, theta, firing, cap, lo, hi, divide, B, S, counts, out_g, out_n):
    """ideal: a population's input is complete: n = clip(floor(V / theta), 0, D) for its slots
    [lo, hi) of every sample (V itself when theta is 1: no division), V -= n theta, counts += n.
    Returns the bursts as the population's events: (ids, n) in sample then slot order (id = sample
    x (hi - lo) + slot - lo), the spikes in all and the most one sample fired. Samples are swept on
    numba's threads, each into its own part of the scratch out_g/out_n, then packed into new arrays
    (all of it compiled: no per-spike numpy work holds the GIL)."""
    st = state.ravel()  # a view: the runner's state is C-contiguous
    w = np.uint64(state.shape[1])
    width = hi - lo
    fired = np.zeros(B, dtype=np.int64)
    spikes = np.zeros(B)
    for b in numba.prange(B):
        off = np.uint64(b * S)
        o = b * width
        ne = 0
        tot = 0.0
        for s in range(np.uint64(lo), np.uint64(hi)):
            g = off + s
            v = st[g * w]
            th = theta[s]
            if v < th * 0.9999999 and th > 0.0:  # floor(v / theta) <= 0: silent, V unchanged
                continue
            u = v / th if divide else v
            n = min(max(np.floor(u), 0.0), cap[s])
            if not firing[s]:
                n = 0.0
            st[g * w] = v - n * th
            if n > 0.0:
                counts[g] += n
                out_g[o + ne] = o + np.int64(s) - lo
                out_n[o + ne] = n
                ne += 1
                tot += n
        fired[b] = ne
        spikes[b] = tot
    return _packed(fired, spikes, out_g, out_n, width, B)


BURST_BLOCK = 16  # neurons per block of `complete_burst_q`'s SIMD prescan


@_njit(nogil=True, parallel=True)
def complete_burst_q(vq, bpat, thq, loq, fireq, capq, inv, lo, hi, divide, B, S, counts, out_g, out_n, dirty):
    """`complete_burst` on membranes in channel-last order (`IdealQ`): the same rule and float64
    operations per neuron, q in [lo, hi) (a population's q range is its slot range). A block of
    `BURST_BLOCK` neurons is first tested at once (SIMD) for a membrane not below its bound
    `loq` (theta(1 - 1e-7), -inf where theta <= 0: `complete_burst`'s silent test); a block
    with none is skipped, so the sweep costs a vector compare per block where activity is sparse.
    The parameters are per block pattern (`IdealQ.blocks`: block k's at bpat[k] in thq, loq,
    fireq, capq), a few blocks' worth for a convolution's channel-last map, which stay in L1
    (per-neuron arrays, 2 MB on sinabs64's first map, missed the cache at every block visited).
    `dirty` (per sample, in and out): False where the population is clean, every neuron that can
    fire (fireq, cap > 0) below its bound; such a sample is not swept (the rule would change
    nothing), and every swept sample's flag is set to whether a neuron that can fire is left at
    or above its bound (a burst capped at D, a rounding of v / theta). The runner keeps the flags
    per population across steps and timesteps (`runner._Run.dirty`) and sets them wherever a
    membrane changes outside these kernels (a timestep's start, a delivery that does not complete
    its population).
    `counts` are in q order too (next to the membranes: a count in slot order was a cache miss
    per burst, a channel-last block's slots lying a map apart; the runner moves them to slot order
    once per run, `counts_out`); the events (ids sample x (hi - lo) + slot - lo) come
    in sample then q order (the runner sorts them into slot order where a delivery's float64 sums
    could depend on the order: `deliver_ideal`)."""
    width = hi - lo
    fired = np.zeros(B, dtype=np.int64)
    spikes = np.zeros(B)
    nomarks = np.zeros(0, dtype=np.uint8)  # (every block is visited: no marks)
    for b in numba.prange(B):
        if dirty[b]:
            _burst_sample(vq, bpat, thq, loq, fireq, capq, inv, lo, hi, divide, b, b * width, S, counts, out_g,
                          out_n, fired, spikes, dirty, vq, 0, nomarks, 0, 0, 0, False, False)
    return _packed(fired, spikes, out_g, out_n, width, B)


@_njit(nogil=True)
def _mask_pass(vq, off, acc, ua, lo, bpat, loq, ks, nk, touched, k_first, whole, flush, marks, moff, hot, counts):
    """`_burst_sample`'s first pass: for each of its nk blocks (ks[i] where `touched`, with its mark
    cleared, else k_first + i) that is whole (k < whole), the flush and the mask (`_block_mask`);
    a block with a neuron at or above its bound is listed in `hot` as k | mask << 48, in the same
    order (hot may be ks itself: entry i is written after it is read), and its spike counts' cache
    line (16 float32 counts) requested (`_prefetch`; a block that does not fire requests the
    population's first line, with no branch): the bursts' counts are added after the rule, and
    on sinabs64's first conv this took 3-7% off its step. Returns how many."""
    nh = 0
    for i in range(nk):
        k = ks[i] if touched else k_first + i
        if k >= whole:
            break
        q0 = np.uint64(lo + k * BURST_BLOCK)
        if touched:
            marks[np.uint64(moff + k)] = 0
        fire = _block_mask(vq, off + q0, acc, ua + q0, loq, np.uint64(bpat[np.uint64(k)]), flush)
        _prefetch(counts, off + (q0 if fire else np.uint64(lo)))
        hot[nh] = np.int64(k) | np.int64(fire << np.uint64(48))  # (kept where fire != 0: no branch,
        nh += fire != 0  # which mispredicted at a third of the blocks hot)
    return nh


@_njit(nogil=True)
def _burst_sample(vq, bpat, thq, loq, fireq, capq, inv, lo, hi, divide, b, o, S, counts, out_g, out_n, fired,
                  spikes, dirty, acc, aoff, marks, moff, qlo, qhi, touched, flush):
    """`complete_burst_q` for sample b (its events from out_g/out_n[o], ids o + slot - lo, or o + q - lo
    where `inv` is empty: a chain run whose next step reads its source's rows in q order): its bursts
    and spikes into fired[b], spikes[b], and into dirty[b] whether a neuron that can fire is left
    at or above its bound. The parameters of block k are those of its pattern, at bpat[k] in
    thq, loq, fireq and capq (`IdealQ.blocks`). `touched` (a clean sample, `_ideal_runs`): only the blocks overlapping
    the delivery's span [qlo, qhi) that its runs marked (`marks` from `moff`, block k of the
    population at moff + k, set back to 0 here) are visited; `flush` (with `touched`, or a whole sweep
    whose delivery stayed inside [lo, hi)): each visited block is flushed into the membranes
    (vq += acc from `aoff`, acc = 0: `_flush_q`'s addition) before the rule."""
    off = np.uint64(b * S)
    ne = 0
    tot = 0.0
    left = False
    k_first, k_end = 0, (hi - lo + BURST_BLOCK - 1) // BURST_BLOCK
    if touched:  # the blocks (aligned at lo) overlapping the span
        k_first = (max(qlo, lo) - lo) // BURST_BLOCK
        k_end = min(k_end, (min(qhi, hi) - lo + BURST_BLOCK - 1) // BURST_BLOCK)
    ua = np.uint64(aoff)
    nk = max(k_end - k_first, 0)
    ks = np.empty(nk if touched else 0, dtype=np.int64)
    if touched:  # the marked blocks, listed in q order by a branch-free scan of the marks (an unmarked
        # block has no input: every membrane stays below its bound). Skipping them in the loop below
        # cost about 47 cycles each, a sparse first conv's ~3,400 per sample and timestep: most of its call
        # 64 marks at a time by one vector compare (`_nonzero64`), its set bits listed lowest first
        nk = 0
        k0 = k_first
        while k0 + 64 <= k_end:
            bits = _nonzero64(marks, np.uint64(moff + k0))
            while bits:
                ks[nk] = k0 + np.int64(_lowest_bit(bits))
                nk += 1
                bits &= bits - np.uint64(1)
            k0 += 64
        for k in range(k0, k_end):
            ks[nk] = k
            nk += 1 if marks[moff + k] != 0 else 0
    # two passes. 1: each whole block's flush and mask (`_mask_pass`), the blocks with a neuron at or
    # above its bound listed in `hot` with their masks, with no branch on the mask; a partial last
    # block (a population not a multiple of BURST_BLOCK) by the scalar loops. 2: the rule on the
    # listed neurons. One loop did both and branched per block on its mask, which mispredicted at
    # sparse rates (a third of a first conv's visited blocks fire at rate 0.01): the two passes
    # took 38% fewer ticks than that loop on 667 blocks with 299 firing neurons, and 22-25% off the
    # first conv's step on sinabs64 (rates 0.005-0.05); a neuron below its bound is silent,
    # floor(v / theta) <= 0, V unchanged
    whole = (hi - lo) // BURST_BLOCK  # blocks k < whole are whole
    part = nk > 0 and (ks[nk - 1] if touched else k_first + nk - 1) == whole  # (read before `hot` overwrites ks)
    hot = ks if touched else np.empty(nk, dtype=np.int64)
    nh = _mask_pass(vq, off, acc, ua, lo, bpat, loq, ks, nk, touched, k_first, whole, flush, marks, moff, hot, counts)
    if part:  # the partial block
        k = whole
        q0 = lo + k * BURST_BLOCK
        nq = np.uint64(hi - q0)
        bq = off + np.uint64(q0)
        ba = ua + np.uint64(q0)
        p = np.uint64(bpat[k])
        if touched:
            marks[moff + k] = 0
        hit = False
        if flush:
            for j in range(nq):  # the flush and the prescan in one pass
                v = vq[bq + j] + acc[ba + j]
                vq[bq + j] = v
                acc[ba + j] = 0.0
                hit |= not (v < loq[p + j])
        else:
            for j in range(nq):
                hit |= not (vq[bq + j] < loq[p + j])
        fire = np.uint64(0)
        if hit:
            for j in range(nq):
                fire |= np.uint64(not (vq[bq + j] < loq[p + j])) << np.uint64(j)
        if fire:
            hot[nh] = np.int64(k) | np.int64(fire << np.uint64(48))
            nh += 1
    # pass 2: the rule for the neurons at or above their bound, in q order
    for i in range(nh):
        k = hot[i] & 0xFFFFFFFFFFFF
        fire = np.uint64(hot[i]) >> np.uint64(48)
        q0 = lo + k * BURST_BLOCK
        bq = off + np.uint64(q0)  # the block's membranes at vq[bq + j]
        p = np.uint64(bpat[k])  # its parameters at thq[p + j], ...
        while fire:
            j = _lowest_bit(fire)
            fire &= fire - np.uint64(1)
            v = vq[bq + j]
            th = thq[p + j]
            u = v / th if divide else v
            n = min(max(np.floor(u), 0.0), capq[p + j])
            if not fireq[p + j]:
                n = 0.0
            v = v - n * th
            vq[bq + j] = v
            left |= fireq[p + j] and capq[p + j] > 0.0 and not (v < loq[p + j])
            if n > 0.0:
                q = np.int64(q0) + np.int64(j)
                out_g[o + ne] = q  # (the burst's q for now: its count and event id below)
                out_n[o + ne] = n
                ne += 1
                tot += n
    slots = inv.size > 0  # (an empty `inv`: the events' addresses stay in q order, no lookup)
    for i in range(o, o + ne):  # the counts, with their cache lines requested well ahead (`_prefetch`)
        if i + BURST_PREFETCH < o + ne:
            qa = np.uint64(out_g[i + BURST_PREFETCH])
            _prefetch(counts, off + qa)
            if slots:
                _prefetch(inv, qa)
        q = out_g[i]
        counts[off + np.uint64(q)] += out_n[i]
        out_g[i] = o + (inv[q] if slots else q) - lo
    fired[b] = ne
    spikes[b] = tot
    dirty[b] = left


@_njit(nogil=True)
def counts_out(countsq, pos, lo, b0, b1, S, dst, C):
    """dst[b, i] = countsq[b * S + pos[lo + i]] for a population's slots lo + i and the samples
    b0 <= b < b1 (the counts of a run in q order, `IdealQ`, read out in slot order into the result's
    (B, neurons) array), each count read set back to 0: the scratch's counts are all zeros again
    for the next run. `C`: the population's channels where it is one channel-last segment
    (`RunTables.seg`: slot c x sites + p at q = p x C + c), read a tile of `FLUSH_TILE` sites at a
    time (the tile's counts stay in L1, the result is written in contiguous runs, the tile zeroed
    in one sweep: a read per count C counts apart missed the cache on every one); else (C = 1 or
    any other layout) count by count. A plain function the runner calls on its own threads, a
    range of samples each (`runner._read_counts`): as a parallel loop it left OpenMP's threads
    spinning into the next call, which on 2 cores slowed that call's input read from 1 ms to 4."""
    n = dst.shape[1]
    if C > 1 and n % C == 0:
        sites = n // C
        for b in range(b0, b1):
            base = np.uint64(b * S + lo)
            for p0 in range(0, sites, FLUSH_TILE):
                p1 = min(p0 + FLUSH_TILE, sites)
                for c in range(C):
                    for j in range(p0, p1):
                        dst[b, c * sites + j] = countsq[base + np.uint64(j * C + c)]
                for q in range(base + np.uint64(p0 * C), base + np.uint64(p1 * C)):
                    countsq[q] = 0.0
        return
    for b in range(b0, b1):
        off = b * S
        for i in range(n):
            g = off + pos[lo + i]
            dst[b, i] = countsq[g]
            countsq[g] = 0.0


@_njit(nogil=True)
def _packed(fired, spikes, out_g, out_n, width, B):
    """The bursts of `complete_burst(_q)`, per sample in its part of out_g/out_n, packed into new
    arrays: (ids, n, spikes in all, the most one sample fired)."""
    ne = 0
    for b in range(B):
        ne += fired[b]
    ids = np.empty(ne, dtype=np.int64)
    ns = np.empty(ne)
    ne = 0
    events = 0.0
    peak = 0.0
    for b in range(B):
        for i in range(b * width, b * width + fired[b]):
            ids[ne] = out_g[i]
            ns[ne] = out_n[i]
            ne += 1
        events += spikes[b]
        peak = max(peak, spikes[b])
    return ids, ns, events, peak


class IdealQ:
    """The ideal policy's membranes in channel-last order (`RunTables.pos` of the delivery runs),
    for a run without SSC gates, relays, max pools, host currents, leaks, disabled slots or
    neuron kinds beyond the soft-reset one (the runner checks): the runs' scratch is flushed by a
    contiguous add (`_flush_q`) and a population's completion sweeps its membranes contiguously
    (`complete_burst_q`), where slot order took a transposing flush per sample and delivery. Holds
    the per-q parameters (built once per network: `of`); the counts are kept in q order too (in
    the run's `Scratch`) and read out per population in slot order at the run's end (`counts_out`)."""

    def __init__(self, flat: FlatTables, theta, fire_slot, cap, beta, const):
        self.rt = rt = flat.runs()
        inv = rt.inv
        self.inv = inv.astype(np.int64)
        theta = np.asarray(theta, dtype=np.float64)
        # the firing parameters per slot, taken per population in q order by `blocks`
        self._firing = (theta, greedy_bounds(theta)[0], np.asarray(fire_slot, dtype=np.float64),
                        np.asarray(cap, dtype=np.float64))
        self.betaq = np.ascontiguousarray(beta[inv], dtype=np.float64)
        self.constq = np.ascontiguousarray(const[inv], dtype=np.float64)
        self._blocks = {}

    def blocks(self, lo: int, hi: int):
        """The firing parameters of the population in q [lo, hi) per block of `BURST_BLOCK`
        neurons (aligned at lo), equal blocks stored once: (bpat, thq, loq, fireq, capq), block k's
        parameters at bpat[k] + j (j < BURST_BLOCK) in the four tables. A convolution's channel-last
        map repeats its C channels' parameters site after site, so it has at most C blocks of them
        (one where C is 16, two where it is 32), which stay in cache however far apart the blocks
        a sparse delivery fires are. Built once per population (kept)."""
        hit = self._blocks.get((lo, hi))
        if hit is None:
            B = BURST_BLOCK
            n = hi - lo
            nb = -(-n // B)
            slots = self.inv[lo:hi]  # the population's slots in q order
            cols = [np.pad(a[slots], (0, nb * B - n)) for a in self._firing]  # (the padding is never read)
            rows = np.ascontiguousarray(np.stack([c.reshape(nb, B) for c in cols], 1).reshape(nb, 4 * B))
            ids, reps = _intern(np.arange(nb + 1, dtype=np.int64) * 4 * B, rows.view(np.uint64).ravel())
            t = rows[reps].reshape(-1, 4, B)
            thq, loq, fireq, capq = (np.ascontiguousarray(t[:, i]).ravel() for i in range(4))
            hit = self._blocks[(lo, hi)] = (ids * B, thq, loq, fireq != 0.0, capq)
        return hit

    @staticmethod
    def of(net, theta, fire_slot, cap) -> "IdealQ":
        """The network's `IdealQ` (kept with its flat tables in `net.derived`: the same for every run)."""
        hit = net.derived.get("ideal_q")
        if hit is None:
            hit = net.derived["ideal_q"] = IdealQ(net.derived["flat"], theta, fire_slot, cap, net.beta, net.const)
        return hit


# ---- a sequential step's bookkeeping around the kernels (compiled: linear in the events) ----------
@_njit(nogil=True)
def _sample_order(samples):
    """The stable order of `samples` (a counting sort), or an empty array where they are already
    non-decreasing."""
    n = samples.size
    done = True
    B = 0
    for i in range(n):
        if i and samples[i] < samples[i - 1]:
            done = False
        B = max(B, samples[i] + 1)
    if done:
        return np.zeros(0, dtype=np.int64)
    return _counting_order(samples, B)


@_njit(nogil=True)
def _counting_order(key, m):
    """The stable order of `key` (values in 0..m-1): a counting sort, linear in key.size + m."""
    start = np.zeros(m + 1, dtype=np.int64)
    for i in range(key.size):
        start[key[i] + 1] += 1
    for b in range(m):
        start[b + 1] += start[b]
    o = np.empty(key.size, dtype=np.int64)
    for i in range(key.size):
        b = key[i]
        o[start[b]] = i
        start[b] += 1
    return o


@_njit(nogil=True)
def _records_by_key(em_rank, em_slot, em_key, em_n, ne, o_s, clock, n_ev, S_all):
    """The kernel's records (made sample by sample, `em_key` = clock + index in that order) as
    (slots, n, keys) ordered by (step position of the event, rank, global slot): keys mapped back
    to step positions through `o_s` (empty: the identity), a counting sort by position, and within
    one event's records (a few neurons, one record per neuron) an insertion sort by (rank, slot).
    Records already in position order (the kernel walks a step's events in order: so whenever
    `o_s` is empty, checked) skip the counting sort and keep their keys."""
    ordered = o_s.size == 0  # keys in record order are then the positions (checked)
    for i in range(1, ne if ordered else 0):
        if em_key[i] < em_key[i - 1]:
            ordered = False
            break
    pos = idx = np.empty(0, dtype=np.int64)  # ordered: a record's key is its position's
    if not ordered:
        pos = np.empty(ne, dtype=np.int64)
        for i in range(ne):
            e = em_key[i] - clock
            pos[i] = o_s[e] if o_s.size else e
        idx = _counting_order(pos, n_ev)
    slots = np.empty(ne, dtype=np.int64)
    n = np.empty(ne)
    key = np.empty(ne, dtype=np.int64)
    sk = np.empty(ne, dtype=np.int64)  # (rank, slot) as one key
    for j in range(ne):  # in position order; an event's records (few: one per neuron) by insertion
        i = idx[j] if not ordered else j
        k = em_key[i] if ordered else clock + pos[i]
        v = em_rank[i] * S_all + em_slot[i]
        m = j
        while m > 0 and key[m - 1] == k and sk[m - 1] > v:
            sk[m] = sk[m - 1]
            slots[m] = slots[m - 1]
            n[m] = n[m - 1]
            m -= 1
        sk[m] = v
        slots[m] = em_slot[i]
        n[m] = em_n[i]
        key[j] = k  # (the records moved are of the same key)
    return slots, n, key


@numba.njit(inline="always")
def _sample_of(g, S):
    """g // S for 0 <= g < 2^52 by a float64 product and one correction (no integer division)."""
    b = np.int64(np.float64(g) * (1.0 / S))
    if b * S > g:
        b -= 1
    elif (b + 1) * S <= g:
        b += 1
    return b


@_njit(nogil=True)
def emit_spikes(g, n, key, S, slot_pop, pop_lo, pop_size, B, counts):
    """A greedy/speck step's spikes (global slots g, counts n, keys, in pool order) as events per
    consumer population: counts[g] += n; per population (ascending) its events, one per spike, as
    global ids (sample x population size + address) and keys in the given order; returns (ids,
    keys, start of each population's events, spikes per population, the largest number of spikes
    one sample emitted per population). The sample and population of a spike are those of the last
    one unless it lies outside their ranges (spikes come grouped by both: one division and one
    population lookup per change); where every spike is one event of a single population (a speck
    step: one spike per update) the first pass's ids are the events, in order (no second pass)."""
    n_pop = pop_lo.size
    start = np.zeros(n_pop + 1, dtype=np.int64)
    per = np.zeros((n_pop, B))
    pop = np.empty(g.size, dtype=np.int64)  # each spike's population and id, kept for the second pass
    gid = np.empty(g.size, dtype=np.int64)  # (a second slot_pop lookup missed the cache per spike)
    glo, ghi, b = 0, 0, 0  # the global slots of sample b
    plo, phi, p = 0, 0, 0  # the slots of population p
    whole, p0 = True, -1  # every spike n == 1, all of population p0
    for i in range(g.size):
        if i + BURST_PREFETCH < g.size:  # a spike's count lies far from the last one's (`_prefetch`)
            _prefetch(counts, np.uint64(g[i + BURST_PREFETCH]))
        if n[i] <= 0.0:
            whole = False
            continue
        gi = g[i]
        if gi < glo or gi >= ghi:
            b = _sample_of(gi, S)
            glo = b * S
            ghi = glo + S
        s = gi - glo
        if s < plo or s >= phi:
            p = slot_pop[s]
            plo = pop_lo[p]
            phi = plo + pop_size[p]
        if p != p0:
            whole &= p0 < 0
            p0 = p
        whole &= n[i] == 1.0
        pop[i] = p
        gid[i] = b * pop_size[p] + (s - plo)
        counts[gi] += n[i]
        start[p + 1] += np.int64(n[i])
        per[p, b] += n[i]
    for p in range(n_pop):
        start[p + 1] += start[p]
    peak = np.zeros(n_pop)
    for p in range(n_pop):
        for b in range(B):
            peak[p] = max(peak[p], per[p, b])
    if whole:
        return gid, key.copy(), start, peak
    fill = start[:-1].copy()
    ids = np.empty(start[-1], dtype=np.int64)
    keys = np.empty(start[-1], dtype=np.int64)
    for i in range(g.size):
        if n[i] <= 0.0:
            continue
        p = pop[i]
        a = gid[i]
        for _ in range(np.int64(n[i])):
            ids[fill[p]] = a
            keys[fill[p]] = key[i]
            fill[p] += 1
    return ids, keys, start, peak


@_njit(nogil=True)
def synapse_bound(indptr, rows):
    """The synapses of a step's events (an upper bound on the spikes a sequential kernel records)."""
    t = 0
    for i in range(rows.size):
        t += indptr[rows[i] + 1] - indptr[rows[i]]
    return t


def greedy_bounds(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per slot (lo, mid, hi) = theta x (1 - 1e-7, 1 + 1e-7, 2 - 2e-7) for theta > 0 (the same
    products `_sequential` computes inline); (-inf, inf, inf) otherwise: always divide."""
    pos = theta > 0
    return (np.where(pos, theta * 0.9999999, -np.inf), np.where(pos, theta * 1.0000001, np.inf),
            np.where(pos, theta * 1.9999998, np.inf))


class Scratch:
    """Work arrays kept across the steps of one run (grown when a step needs more)."""

    def __init__(self, n_global: int):
        self._acc = None  # the float64 scratch of the ideal policy's gated deliveries (`_ideal`)
        self.n_global = n_global
        self._runs = {}  # `_ideal_runs`' per-thread scratch and block marks (`runs_scratch`)
        self._counts_q = {}  # `IdealQ`'s spike counts (q order) by dtype, zeroed as a run's result reads them
        self.stamp = 0
        self.cap = 0
        self.em_rank = self.em_slot = self.em_key = self.em_n = None
        self.out_g = self.out_n = None  # per-neuron outputs of first_update / complete_burst
        self._kept = {}  # run-sized arrays of any content, by name (`kept`)

    def kept(self, name: str, shape, dtype=np.float64) -> np.ndarray:
        """A run-sized array kept for the next run of this size, its content whatever the last run
        left: for arrays a run writes before it reads (the membranes, which a first timestep's start
        sets) or clears itself (`clear`). With several such arrays alive at once, a fresh
        allocation of megabytes is mapped anew by the allocator and faulted in page by page on its
        first write (measured: about 5 ms per 13.6 MB array, sinabs64's batch of 16, against 0.5 ms
        to clear a kept one)."""
        a = self._kept.get(name)
        if a is None or a.shape != tuple(shape) or a.dtype != dtype:
            a = self._kept[name] = np.empty(shape, dtype=dtype)
        return a

    def zeroed(self, name: str, n: int, dtype=np.float64) -> np.ndarray:
        """A run-sized array of zeros kept for the next run, which a run leaves all zeros again
        (as the delivery scratch: `ChannelLast.cnt`, zero between steps)."""
        a = self._kept.get(name)
        if a is None or a.size != n or a.dtype != dtype:
            a = self._kept[name] = zeros(n, dtype)
        return a

    def counters(self, n: int) -> np.ndarray:
        """The greedy/speck window counters k (n float64), kept for the next run: zeros when new,
        else the non-negative spike counts the last run left (every writer adds n >= 0). A run whose
        caps are finite zeroes them at every timestep's start (`start_timestep`'s zero_k); one whose
        caps are all inf or 0 (speck) only compares k < cap, which any finite k >= 0 passes exactly
        as k = 0 does, so it takes them as they are."""
        a = self._kept.get("k")
        if a is None or a.size != n:
            a = self._kept["k"] = zeros(n)
        return a

    def acc(self) -> np.ndarray:
        if self._acc is None:
            self._acc = zeros(self.n_global)
        return self._acc

    def runs_scratch(self, S: int, dtype) -> tuple[np.ndarray, np.ndarray]:
        """`_ideal_runs`' scratch: one sample's S slots per numba thread (float32 for exact
        deliveries, `RunTables.f32_exact`, else float64) and its block marks (S // BURST_BLOCK + 1
        bytes per thread), all zeros between calls. For as many threads as numba runs now (a
        thread's id picks its part)."""
        n = numba.get_num_threads()
        key = np.dtype(dtype).char
        acc, marks = self._runs.get(key, (None, None))
        if acc is None or acc.size < n * S:
            acc = zeros(n * S, dtype)
            marks = np.zeros(n * (S // BURST_BLOCK + 1), dtype=np.uint8)
            self._runs[key] = acc, marks
        return acc, marks

    def counts_q(self, dtype=np.float64) -> np.ndarray:
        """A run's spike counts per (sample, q) (`IdealQ`) or per (sample, slot), all zeros at a
        run's start (a run that ends normally reads them out and zeroes them: `counts_out`, or a
        copy and `clear`); float32 for a chain run (`runner._run_chain`, which checks they stay exact)."""
        key = np.dtype(dtype).char
        if self._counts_q.get(key) is None:
            self._counts_q[key] = zeros(self.n_global, dtype)
        return self._counts_q[key]

    def next_stamp(self) -> int:
        self.stamp += 1
        return self.stamp

    def records(self, bound: int):
        if bound > self.cap or self.em_rank is None:  # typed arrays even for a step with no synapses
            # (a source read by max pools only has an empty table)
            self.cap = max(bound, 2 * self.cap, 1024)
            self.em_rank = np.empty(self.cap, dtype=np.int64)
            self.em_slot = np.empty(self.cap, dtype=np.int64)
            self.em_key = np.empty(self.cap, dtype=np.int64)
            self.em_n = np.empty(self.cap, dtype=np.float64)
        return self.em_rank, self.em_slot, self.em_key, self.em_n


def input_spikes(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """A timestep's spike input, a float64 or float32 (B, *shape) array: the global ids (sample x n +
    address, ascending) and counts of its nonzero entries, and whether any is not a finite
    non-negative integer (`input_rows_count`, `input_rows_fill` on its B rows; read in place
    where each row's entries are contiguous, `input_rows_view`)."""
    B = x.shape[0]
    if B == 0 or x.size == 0:  # (nothing to read: no view of an empty buffer)
        return np.zeros(0, dtype=np.int64), np.zeros(0), False
    flat, st, sb, n = input_rows_view([x], True)
    cnt = np.zeros(B + 1, dtype=np.int64)
    input_rows_count(flat, st, sb, B, n, 0, B, cnt)
    first = np.cumsum(cnt)
    gid, m = np.empty(first[-1], dtype=np.int64), np.empty(first[-1])
    bad = input_rows_fill(flat, st, sb, B, n, 0, n, 0, B, first, gid, m)
    return gid, m, bad


@_njit(nogil=True)
def input_rows_count(flat, st, sb, B, n, r0, r1, cnt):
    """cnt[r + 1] = the nonzero entries of row r = t x B + b (n entries at flat[t x st + b x sb:]),
    rows r0:r1 (a SIMD count): the first pass of an input read (`input_rows_fill`)."""
    for r in range(r0, r1):
        t = r // B
        o = np.uint64(t * st + (r - t * B) * sb)
        c = 0
        for a in range(np.uint64(n)):
            c += flat[o + a] != 0.0
        cnt[r + 1] = c


@_njit(nogil=True)
def input_rows_fill(flat, st, sb, B, n, row_base, per_sample, r0, r1, first, rows, mult):
    """Rows r0:r1's nonzero entries (`input_rows_count`) as ids row_base + b x per_sample + address
    (ascending: a chain run's table rows with per_sample 0, a timestep's global ids with n) and
    counts at rows/mult[first[r]:first[r + 1]]; whether any is not a finite non-negative integer.
    64 entries at a time: one vector compare gives their nonzero entries as bits (`_nonzero64`),
    read lowest first (a block of 16 read entry by entry wherever it held a nonzero branched on
    every entry: 1.56 ms for sinabs64's 1M input entries at rate 0.05, 0.2 ms so)."""
    bad = False
    for r in range(r0, r1):
        t = r // B
        b = r - t * B
        o = np.uint64(t * st + b * sb)
        j = first[r]
        rb = row_base + b * per_sample
        a0 = 0
        while a0 + 64 <= n:
            bits = _nonzero64(flat, o + np.uint64(a0))
            while bits:
                a = a0 + np.int64(_lowest_bit(bits))
                bits &= bits - np.uint64(1)
                v = flat[o + np.uint64(a)]
                rows[j] = rb + a
                mult[j] = v
                j += 1
                bad |= not (v >= 0.0 and v < np.inf and v == np.floor(v))  # NaN fails all three
            a0 += 64
        for a in range(a0, n):
            v = flat[o + np.uint64(a)]
            if v != 0.0:
                rows[j] = rb + a
                mult[j] = v
                j += 1
                bad |= not (v >= 0.0 and v < np.inf and v == np.floor(v))
    return bad


def input_rows_view(xs: list[np.ndarray], one_buffer: bool) -> tuple[np.ndarray, int, int, int]:
    """Inputs, one float64 or float32 (B, *shape) array per timestep, as one flat array and
    the strides (in entries) of a timestep and of a sample, and the entries per row, for
    `input_rows_count` / `input_rows_fill`: a view where the arrays are views of one buffer
    (`one_buffer`: the caller knows) at uniform strides with each row's entries contiguous (the
    runner's (T, B, ...) and (B*T, ...) layouts: no copy), else a contiguous copy."""
    T, B = len(xs), xs[0].shape[0]
    x2 = [x.reshape(B, -1) for x in xs]
    n, it = x2[0].shape[1], x2[0].itemsize
    ptr = [a.__array_interface__["data"][0] for a in x2]
    sb = x2[0].strides[0] if B > 1 else n * it
    st = ptr[1] - ptr[0] if T > 1 else B * n * it
    if n and B and one_buffer and all(a.strides[1] == it and (B == 1 or a.strides[0] == sb) and a.dtype == x2[0].dtype
                                      for a in x2) and sb >= 0 and st >= 0 and sb % it == 0 and st % it == 0 \
            and all(ptr[t] - ptr[0] == t * st for t in range(T)):
        size = (T - 1) * (st // it) + (B - 1) * (sb // it) + n
        return np.lib.stride_tricks.as_strided(x2[0], shape=(size,), strides=(it,), writeable=False), \
            st // it, sb // it, n
    return np.ascontiguousarray(np.stack(x2)).reshape(-1), B * n, n, n


@_njit(nogil=True)
def event_rows(gid, n_src, row_base, posn, rows, samples):
    """rows[posn[i]] = row_base + address, samples[posn[i]] = sample of the global id gid[i]
    (sample x n_src + address): a step's events from one source at their positions in the step."""
    for i in range(gid.size):
        b = gid[i] // n_src
        rows[posn[i]] = row_base + gid[i] - b * n_src
        samples[posn[i]] = b


@_njit(nogil=True)
def _ideal_events(gid, n_src, row_base, mult, indptr, B, graded):
    """A batch's burst events (global ids sample x n_src + address, multiplicities) as the run
    kernel takes them: rows of the flat tables and multiplicities in sample order (stable: a
    counting sort where the ids are not in sample order already), the start of every sample's
    events (`first`, B + 1), the synaptic ops (contributions x multiplicity; `graded`: one per
    contribution) and the largest multiplicity."""
    n = gid.size
    first = np.zeros(B + 1, dtype=np.int64)
    sample = np.empty(n, dtype=np.int64)
    done = True
    b = 0
    lo, hi = 0, n_src  # the ids of sample b: one division per change of sample
    for i in range(n):
        g = gid[i]
        if g < lo or g >= hi:
            if g < lo:
                done = False
            b = g // n_src
            lo = b * n_src
            hi = lo + n_src
        sample[i] = b
        first[b + 1] += 1
    for b in range(B):
        first[b + 1] += first[b]
    rows = np.empty(n, dtype=np.int64)
    ms = np.empty(n)
    fill = first[:-1].copy()
    syn = 0
    mmax = 0.0
    for i in range(n):
        g = gid[i]
        b = sample[i]
        j = i if done else fill[b]
        fill[b] += 1
        r = row_base + g - b * n_src
        m = mult[i]
        rows[j] = r
        ms[j] = m
        per = indptr[r + 1] - indptr[r]
        syn += per if graded else per * np.int64(m)
        mmax = max(mmax, m)
    return rows, ms, first, syn, mmax


def _burst_args(burst, B: int):
    """`_ideal_runs`' completion arguments: (lo, hi, divide, arrays) from `burst` = (IdealQ, lo, hi,
    divide, counts, out_g, out_n), or an empty range (no completion) with typed empty arrays."""
    if burst is None:
        e, i = np.zeros(0), np.zeros(0, dtype=np.int64)
        return 0, 0, False, (i, e, e, np.zeros(0, dtype=np.bool_), e, i, e, i, e, i, e, np.zeros(B, dtype=np.bool_))
    q, lo, hi, divide, counts, out_g, out_n, dirty = burst
    return lo, hi, divide, (*q.blocks(lo, hi), q.inv, counts, out_g, out_n, np.zeros(B, dtype=np.int64),
                            np.zeros(B), dirty)


def deliver_ideal(flat: FlatTables, gopen, src: int, gid, n_src: int, mult, B, S, state, scratch: Scratch,
                  graded: bool = False, q_order: bool = False, burst=None):
    """Burst events of one batch from source `src` (global ids sample x n_src + address, their
    multiplicities) into the membranes (state[:, V_]) as one sum per neuron; returns synaptic ops
    (contributions times multiplicity; `graded`: a relay's messages, whose mult is a value: one op
    per contribution). `q_order`: the membranes are in channel-last order (`IdealQ`). The events
    are summed in the batch's order; where the sums are exact (`RunTables.f32_exact`: every
    partial sum in any order) that order changes no value, and otherwise the events are taken in
    ascending ids (sample, then address), the order every ideal batch had before `IdealQ`'s
    completions came in q order. `burst` (q order, a batch of events with every sample's events
    present): this delivery completes a population (IdealQ, its q range lo, hi, divide, counts,
    out_g, out_n, its per-sample clean/dirty flags, `complete_burst_q`): returns (synops,
    `complete_burst_q`'s result), fired in the same kernel."""
    if burst is None and gid.size == 0:
        return 0
    row_base = int(flat.base[src])
    if not flat.gated:
        rt = flat.runs()
        lo, hi, divide, arrays = _burst_args(burst, B)
        mult = np.asarray(mult, dtype=np.float64)
        rows_s, mult_s, first, syn, mmax = _ideal_events(gid, n_src, row_base, mult, flat.indptr, B, graded)
        if not graded and rt.f32_exact(src, mmax):  # integer counts, every sum exact in float32
            _ideal_runs(rt.pat, rt.base, rt.ptr, rt.rel, rt.length, rt.woff, rt.weights32, rows_s, first,
                        mult_s.astype(np.float32), S, *scratch.runs_scratch(S, np.float32), state, rt.seg, q_order,
                        lo, hi, divide, arrays)
        else:
            if gid.size > 1 and not (gid[1:] > gid[:-1]).all():
                o = np.argsort(gid, kind="stable")
                rows_s, mult_s, first, syn, mmax = _ideal_events(gid[o], n_src, row_base, mult[o], flat.indptr, B,
                                                                 graded)
            _ideal_runs(rt.pat, rt.base, rt.ptr, rt.rel, rt.length, rt.woff, rt.weights, rows_s, first, mult_s, S,
                        *scratch.runs_scratch(S, np.float64), state, rt.seg, q_order, lo, hi, divide, arrays)
        if burst is None:
            return int(syn)
        return int(syn), _packed(arrays[9], arrays[10], arrays[7], arrays[8], hi - lo, B)
    samples, a = np.divmod(gid, n_src)
    syn = _ideal(flat.indptr, flat.slots32, flat.weights, flat.gate, flat.first, flat.gated, gopen,
                 row_base + a, samples, mult, S, scratch.acc(), graded)
    _flush(state, scratch.acc(), int(flat.lo[src]), int(flat.hi[src]), B, S)
    return syn


def deliver_sequential(flat: FlatTables, gopen, rows, samples, S, clock, state, k, theta, cap, speck: bool,
                       scratch: Scratch, cap_slot=None, vmin_slot=None, bounds=None, cl=None, by_key: bool = False,
                       counters: bool = True, sample_major: bool = False):
    """Events in step order (rows, samples). Returns (synops, slots, n, keys) of the spikes fired,
    ordered by (rank of the contribution at its neuron, global slot), or with `by_key` by (key,
    rank, global slot) (what a stable sort by key of the former gives: the layer and interleaved
    orders sort a source's events so). A 2-column `state` (no SSC gates) takes the plain kernels
    with the cap and lower bound per slot (`cap_slot`, `vmin_slot`); a 3-column one the general
    kernel (per neuron `cap`, lower bound in the row). `cl`: a `ChannelLast` state for the 2-column
    case (the SIMD run kernels; `state`'s membranes are then stale until `cl.to_slots`, and the
    window counters `k` are in q order, next to the membranes). `counters=False` (speck, every cap
    inf or 0: no window counter is ever compared) lets the channel-last speck kernel skip `k`, a
    cache miss per spike. `sample_major` (with `by_key`; a run that records no trace): the keys are
    clock + the event's index in the order the kernel took the events (sample by sample, each
    sample's in step order) instead of its step position, so the spikes come out ordered by (sample,
    key, rank, global slot) with no sort back to step positions: per sample the same events in the
    same order as by key (samples are independent), and a next step in that order needs no
    reordering by sample (`_sample_order` finds it sorted)."""
    er, es, ek, en = scratch.records(synapse_bound(flat.indptr, rows))
    step = scratch.next_stamp()
    # samples are independent and a neuron belongs to one sample, so the kernel may take the events
    # sample by sample (each sample's events in step order: every neuron sees its contributions in
    # the same order, with the same ranks); one sample's membranes then stay in cache. The records'
    # keys are mapped back to the step positions below.
    o_s = _sample_order(samples)
    if o_s.size:
        rows, samples = rows[o_s], samples[o_s]
    if rows.size >= RANK_LIMIT or step >= RANK_LIMIT:
        raise SnnccError(f"event step too large for the rank bookkeeping ({rows.size} events, step {step})",
                         where="snncc.sim.events.kernels", hint="use a smaller chunk or fewer samples per run")
    if state.shape[1] > VMIN_:
        syn, ne = _sequential(flat.indptr, flat.slots32, flat.weights, flat.gate, flat.first, flat.gated, gopen,
                              rows, samples, S, clock, state, k, theta, cap, speck, step, er, es, ek, en)
    elif cl is not None:  # channel-last SIMD runs (the membranes move to q order once per timestep)
        cl.to_q(state)
        rt = cl.rt
        if speck:
            syn, ne = _sequential_speck_cl(rt.pat, rt.base, rt.ptr, rt.rel, rt.length, rt.woff, cl.weights, cl.inv,
                                           rows, samples, S, clock, cl.vq, cl.cnt, k, cl.thq, cl.vmq, cl.per_q(cap_slot),
                                           er, es, ek, en, cl.hot, cl.mark, cl.nhot, counters, cl.guard)
        else:
            syn, ne = _sequential_greedy_cl(rt.pat, rt.base, rt.ptr, rt.rel, rt.length, rt.woff, cl.weights, cl.inv,
                                            rows, samples, S, clock, cl.vq, cl.cnt, k, cl.loq, cl.thq,
                                            cl.per_q(cap_slot), cl.per_q(bounds[1]), cl.per_q(bounds[2]), er, es, ek, en)
    elif speck:
        syn, ne = _sequential_speck(flat.indptr, flat.slots32, flat.weights, rows, samples, S, clock, state, k,
                                    theta, cap_slot, vmin_slot, step, er, es, ek, en)
    else:
        syn, ne = _sequential_greedy(flat.indptr, flat.slots32, flat.weights, rows, samples, S, clock, state, k,
                                     theta, cap_slot, *bounds, step, er, es, ek, en)
    if ne == 0:
        z = np.zeros(0, dtype=np.int64)
        return syn, z, np.zeros(0), z
    if by_key:
        return (syn, *_records_by_key(er, es, ek, en, ne, o_s[:0] if sample_major else o_s, clock, rows.size,
                                      state.shape[0]))
    if o_s.size:
        ek[:ne] = clock + o_s[ek[:ne] - clock]
    slots_, rank = es[:ne], er[:ne]
    o = np.argsort(rank * state.shape[0] + slots_, kind="stable")  # by (rank, slot): one int64 key
    return syn, slots_[o], en[:ne][o], ek[:ne][o]


def compile_seconds() -> float:
    """Wall time of the first call of every kernel in this process (JIT compile, or loading the
    cached machine code) on a one-synapse network."""
    t0 = time.perf_counter()
    i1 = np.array([0, 1], dtype=np.int64)
    z = np.zeros(1, dtype=np.int64)
    z32 = z.astype(np.int32)
    f = np.ones(1)
    gate, first = np.full(1, -1, dtype=np.int64), np.ones(1, dtype=np.bool_)
    gopen = np.zeros((1, 1), dtype=np.bool_)
    rec = lambda: (np.zeros(2, np.int64), np.zeros(2, np.int64), np.zeros(2, np.int64), np.zeros(2))  # noqa: E731
    for gated in (False, True):
        _ideal(i1, z32, f, gate, first, gated, gopen, z, z, f, 1, np.zeros(1), False)
        for speck in (False, True):
            _sequential(i1, z32, f, gate, first, gated, gopen, z, z, 1, 0, np.zeros((1, N_STATE)), np.zeros(1), f,
                        f, speck, 1, *rec())
    _flush(np.zeros((1, 1)), np.zeros(1), 0, 1, 1, 1)
    seg = np.array([[0, 1, 1]], dtype=np.int64)
    f32 = f.astype(np.float32)
    for q_order in (False, True):
        lo, hi, divide, arrays = _burst_args(None, 1)
        marks = np.zeros(1, np.uint8)
        _ideal_runs(z, z, i1, z, i1[1:], z, f, z, i1, f, 1, np.zeros(1), marks, np.zeros((1, 1)), seg, q_order, lo,
                    hi, divide, arrays)
        _ideal_runs(z, z, i1, z, i1[1:], z, f32, z, i1, f32, 1, np.zeros(1, np.float32), marks, np.zeros((1, 1)),
                    seg, q_order, lo, hi, divide, arrays)
    b1 = np.ones(1, dtype=np.bool_)
    nth = numba.get_num_threads()  # (a thread's scratch is at its id x S)
    f_, i_ = lambda: np.zeros(nth), lambda: np.zeros(nth, np.int64)  # noqa: E731
    _ideal_chain(np.array([0, 1, 0]), 0, 1, 1, 1, (z, z, i1, z, i1[1:], z, f, seg, i1, z, z, z, False), f32, (z, f, i1),
                 (z, z, i1[1:], b1, z, f, 1.0, i1, np.zeros((1, 1), np.bool_)),
                 (z, f, f, b1, f), (b1, b1, b1, z, b1, b1, f, f, z, f), np.zeros((1, 1)), np.zeros(1, np.float32),
                 np.zeros((1, 1), np.bool_), (f_(), f_().astype(np.float32), np.zeros(nth, np.uint8), i_(), f_(), i_(),
                                             f_(), f_().astype(np.float32)),
                 z, np.zeros((1, 1)), (np.zeros((1, 1), np.int64), np.zeros((1, 1)), np.zeros((1, 1)),
                                           np.zeros((1, 1, 1), np.bool_), np.zeros((1, 2), np.uint64)),
                 z.copy(), np.zeros(1))
    _intern(i1, z.view(np.uint64))
    _cut_runs(i1, z, f, 4, np.ones(2, dtype=np.bool_))
    _sequential_speck(i1, z32, f, z, z, 1, 0, np.zeros((1, 2)), np.zeros(1), f, f, f, 1, *rec())
    _sequential_greedy(i1, z32, f, z, z, 1, 0, np.zeros((1, 2)), np.zeros(1), f, f, *greedy_bounds(f), 1, *rec())
    c32 = np.zeros(1, dtype=np.int32)
    for w in (f, f.astype(np.float32)):
        for counters in (False, True):
            _sequential_speck_cl(z, z, i1, z, i1[1:], z, w, z, z, z, 1, 0, np.zeros(1), c32, np.zeros(1), f, f, f,
                                 *rec(), z.copy(), np.zeros(1, np.uint8), z.copy(), counters, np.zeros(2))
        _sequential_greedy_cl(z, z, i1, z, i1[1:], z, w, z, z, z, 1, 0, np.zeros(1), c32, np.zeros(1), f, f, f, f, f,
                              *rec())
    for counters in (False, True):  # a float32 speck run (`ChannelLast.f32`)
        _sequential_speck_cl(z, z, i1, z, i1[1:], z, f32, z, z, z, 1, 0, np.zeros(1, np.float32), c32, np.zeros(1),
                             f32, f32, f, *rec(), z.copy(), np.zeros(1, np.uint8), z.copy(), counters,
                             np.zeros(2, np.float32))
    for w, dt in ((f, np.float64), (f32, np.float64), (f32, np.float32)):  # a speck chain run (`_speck_chain`)
        v1 = np.zeros(1, dt)
        _speck_chain(np.array([0, 1, 0]), 1, 1, 1, (z, z, i1, z, i1[1:], z, z, z, z, False, z, z), w, (z, f, i1), (z, z, z),
                     (b1, z, b1, z, f, f, v1, False), (v1 + 1, v1, f, f, b1, f), v1.copy(), c32.copy(), np.zeros(1),
                     np.zeros(1),
                     z.copy(), np.zeros(1, np.uint8), z.copy(), z, np.zeros((1, 1)),
                     (np.zeros((1, 1), np.int64), np.zeros((1, 1), np.int64), np.zeros((1, 1), np.int64),
                      np.zeros((1, 1, 1), np.bool_)), np.zeros(2, dt), False)
    _sample_order(z)
    event_rows(z, 1, 0, z, z.copy(), z.copy())
    input_spikes(np.zeros((1, 1)))
    input_spikes(np.zeros((2, 2))[:, :1])
    input_spikes(np.zeros((2, 2), dtype=np.float32))
    for a in (f.copy(), np.zeros(1, np.uint8), z.copy(), np.zeros(1, np.int32)):
        clear(a)
    for like in (f, f.astype(np.float32), z, c32):
        _zeros(1, like)
    for graded in (False, True):
        _ideal_events(z, 1, 0, f, i1, 1, graded)
    _records_by_key(z, z, z, f, 1, z, 0, 1, 1)
    for C in (1, 2):
        for cdt in (np.float64, np.float32):  # (a chain run's counts are float32)
            counts_out(np.zeros(2, cdt), np.arange(2), 0, 0, 1, 2, np.zeros((1, 2)), C)  # (pos: one per slot)
    emit_spikes(z, f, z, 1, z, z, i1[1:], 1, np.zeros(1))
    synapse_bound(i1, z)
    _transpose(np.zeros((1, 2)), 2, np.zeros(1), 1, seg, 1, 1, True)
    _transpose(np.zeros(1), 1, np.zeros((1, 2)), 2, seg, 1, 1, False)
    for w in (1, 2, N_STATE):
        st = np.zeros((1, w))
        init_state(st, np.zeros(1), f, f, b1, 1, 1)
        start_timestep(st, np.zeros(1), f, f, b1, 1, 1, z, True)
        _start_timestep_batch(st, np.zeros(1), f, f, b1, 1, 1, z, True)
        first_update(st, np.zeros(1), f, b1, f, f, True, 1, 1, z.copy(), np.zeros(1))
    st32 = np.zeros((1, 1), np.float32)
    start_timestep(st32, np.zeros(1), f, f, b1, 1, 1, z, False)
    _start_timestep_batch(st32, np.zeros(1), f, f, b1, 1, 1, z, False)
    for full in (True, False):
        for vq, thq in ((np.zeros(1), f), (np.zeros(1, np.float32), f32)):
            first_update_hot(vq, np.zeros(1), thq, b1, f, f, 1, 1, z.copy(), np.zeros(1), z.copy(),
                             np.zeros(1, np.uint8), z.copy(), z, full)
        complete_burst(st, f, b1, f, 0, 1, True, 1, 1, np.zeros(1), z.copy(), np.zeros(1))
        complete_burst_q(np.zeros(1), z, f, f, b1, f, z, 0, 1, full, 1, 1, np.zeros(1), z.copy(), np.zeros(1),
                         b1.copy())
    return time.perf_counter() - t0


__all__ = ["FlatTables", "Scratch", "deliver_ideal", "deliver_sequential", "compile_seconds"]
