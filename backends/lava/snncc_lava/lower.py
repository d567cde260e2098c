"""Lower a `Network` to Lava processes and run it in Loihi2SimCfg (floating_pt or fixed_pt).

Processes: one `WindowBurstIF` per population; one Lava `Sparse` per projection (`DelaySparse`
when it needs a synaptic delay; a delay beyond 63 steps first passes identity DelaySparse relays),
CSR weights with `num_message_bits=8` when the source emits graded counts (graded mode, spike
products, relays) and 0 (binary spikes) in burst mode; a `RingBuffer` source (lava.proc.io.source)
per population fed by the host's encoding current, or one for a spike-kind input (count c of a
window -> spikes in its first c emission sub-steps; graded: one message); a `SpikeProduct` per
spike product (attention), its operand populations wired straight into it, its graded output
through a Sparse (8 message bits) like any population; per max pool of spikes (`network.MaxPool`)
Lava's own `LIF` (u and v decayed to zero each step, fires on any input) behind a DelaySparse
sum pool of delay D (fixed_pt: mantissa 2, vth 1); `Recorder`s (procs/process.py, up to 64
inputs each) observing every population's s_out and the read-out synapses' a_out. A batch is
streamed through the pipeline one sample after another (B * T windows in one run), so one
compile serves the whole batch.

Why Sparse and not Dense or Conv: the projection of a population is its whole current tree
composed into one matrix (conv + pool + mean + scale + shortcut adds, several convs summed),
which is rarely exactly one Lava Conv; the matrices are 0.2%-12% dense, and Lava's Dense model
computes `weights[:, s].sum` over a dense (N_tgt, N_src) float64 array per step (the digits CNN
took 390 s for 20 digits with Dense, 6 s with Sparse). Lava 0.10's DelaySparse model rebuilds
its delay-split weight matrix every step; `procs.models` selects Lava's model with that matrix
cached (exception_proc_model_map). One synapse process per projection rather than one per target
population: Lava 0.10 refuses concatenated ports at compile time ("ConcatPorts are not yet
supported"), so projections from different sources cannot share one synapse's input port.

Read-out: the Recorders sum what the populations actually sent (counts per sample) and what the
read-out synapses delivered (per window) and hand everything over in one message through an
external pipe at the last step; RingBuffer sinks read with Var.get() cost one channel message
per element in Lava 0.10 (~80 us each; 70 s for 2 digits of the digits CNN).

fixed_pt: the same processes with the integers of a `fixed.QNetwork`, selected with
`Loihi2SimCfg(select_tag="fixed_pt")`: Sparse/DelaySparse take the 8-bit mantissas (a one-kernel
projection's matrix composed from its quantised kernel, `fixed.QProjection.weight`) with
`weight_exp`, `num_weight_bits=8`, `sign_mode=MIXED` (so lava never re-derives the sign mode from
the values; clip_weights/truncate_weights leave even mantissas in [-256, 254] unchanged), the host
RingBuffers carry int32 activations (spike inputs: int32 spikes), WindowBurstIF and SpikeProduct
run their fixed_pt models. With weight_bits=16 a projection is two Sparse processes from the same
source into the same input port (its high mantissas at weight_exp e, its low ones at e - 8), which
Lava's InPort sums. Counts must equal `fixed.simulate_fixed` exactly.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from snncc.errors import SnnccError, TargetError
from snncc.ir.graph import Graph

from snncc_lava import compat
from snncc_lava.fixed import QNetwork, dequantize_output, host_activation, quantize, stored_choices
from snncc_lava.network import (Network, batch_stream, build, graded_problems, host_currents, relay_delays,
                                spike_input_counts)

compat.install()

from lava.magma.core.run_conditions import RunSteps  # noqa: E402
from lava.magma.core.run_configs import Loihi2SimCfg  # noqa: E402
from lava.proc.io.source import RingBuffer as Source  # noqa: E402
from lava.proc.lif.process import LIF  # noqa: E402
from lava.proc.sparse.process import DelaySparse, Sparse  # noqa: E402
from lava.utils.weightutils import SignMode  # noqa: E402

from snncc_lava.procs.models import PyDelaySparseModelBitAccCached, PyDelaySparseModelFloatCached  # noqa: E402
from snncc_lava.procs.process import MAX_RECORDER_INPUTS, Recorder, SpikeProduct, WindowBurstIF  # noqa: E402

GRADED_BITS = 8  # enough for counts up to D = 255
RELAY_BITS = 24  # a relay's graded payload: Loihi 2's widest graded spike (floating_pt: any nonzero value)
# Messages each Lava channel buffers. Lava's default (64) sizes every channel's shared memory for 64
# messages; processes advance in lock step (one message per port per step), so two are enough, and
# the run needs 32x less of /dev/shm (64 MB in a default container).
CHANNEL_SIZE = 2
SHM_PAGE = 4096


@dataclass
class LavaResult:
    output: torch.Tensor  # (B, *out_shape), mean over T like the reference executor
    counts: dict[str, torch.Tensor]  # population -> (B, *shape) spikes summed over T
    steps: int  # Lava time steps run
    readout: np.ndarray | None = None  # fixed_pt: (B, T, N_out) integer read-out per window
    processes: int = 0  # Lava processes in the run
    relays: dict = None  # relay -> (B, *shape) sum over T of the values it sent (floating_pt)
    pooled: dict = None  # max pool -> (B, *shape) spikes its OR neurons sent, summed over T


def _sparse(w, delay: int, bits: int, fixed: dict | None):
    kw = {"num_message_bits": bits, **(fixed or {})}
    if delay:
        d = w.copy().astype(np.int64)
        d.data[:] = delay
        return DelaySparse(weights=w, delays=d, **kw)
    return Sparse(weights=w, **kw)


def synapse(w, delay: int, bits: int, fixed: dict | None = None) -> list:
    """One projection as Lava processes, source side first: Sparse (DelaySparse when it needs a
    synaptic delay); a delay beyond MAX_DELAY first passes identity DelaySparse relays (weight 1;
    fixed_pt: mantissa 2 with weight_exp -1, exact), whose graded output the next hop reads with
    8 message bits."""
    hops, last = relay_delays(delay)
    chain = []
    for d in hops:
        n = w.shape[1]
        eye = sp.identity(n, format="csr", dtype=np.int32 if fixed else np.float64)
        fx = None
        if fixed:
            eye = eye * 2
            fx = {"weight_exp": -1, "num_weight_bits": 8, "sign_mode": SignMode.MIXED}
        chain.append(_sparse(eye, d, bits, fx))
        bits = GRADED_BITS
    chain.append(_sparse(w, last, bits, fixed))
    for a, b in zip(chain, chain[1:]):
        a.a_out.connect(b.s_in)
    return chain


def shared_memory_bytes(exe) -> int:
    """Bytes of shared memory Lava's runtime maps for `exe`'s channels: each channel (between
    processes, to the runtime services, and a port's external pipe to this Python process) holds
    `size` messages of its port's shape and dtype, in whole pages."""
    chans = []
    for b in list(exe.channel_builders or []) + list(exe.sync_channel_builders or []):
        pi = getattr(b, "src_port_initializer", None) or b.port_initializer
        chans.append((pi.shape, pi.d_type, pi.size))
    for proc, builder in (exe.proc_builders or {}).items():  # a port read from Python (the Recorder's)
        for name, pi in getattr(builder, "py_ports", {}).items():
            port = getattr(proc, name)
            if getattr(port, "external_pipe_flag", False):
                chans.append((pi.shape, pi.d_type, port.external_pipe_buffer_size))
    total = 0
    for shape, dtype, size in chans:
        n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize * int(size)
        total += -(-n // SHM_PAGE) * SHM_PAGE
    return total


def check_shared_memory(exe, samples: int, where: str = "/dev/shm") -> None:
    """Refuse a run whose channels do not fit in `where`'s free space. Lava does not check: a
    process that writes past a full /dev/shm dies of SIGBUS and the runtime waits for it forever."""
    need = shared_memory_bytes(exe)
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return  # no /dev/shm to measure (not Linux): Lava's SharedMemory finds its own place
    if need > free:
        raise TargetError(f"this Lava run maps {need / 2**20:.1f} MiB of shared memory for "
                          f"{len(exe.channel_builders or [])} channels ({samples} samples); {where} has "
                          f"{free / 2**20:.1f} MiB free", where=where,
                          hint="run fewer samples at once (--samples), or give the machine more shared memory "
                               "(a container: docker run --shm-size=1g)")


_PROC_MODELS: dict = {}  # process class -> the ProcessModel classes Lava's compiler finds for it


@contextlib.contextmanager
def models_found_once_per_class():
    """While Lava compiles: its compiler (0.10, `ProcGroupDiGraphs._find_proc_models`) finds a
    process's models by re-executing every module of the process's package directories, once per
    process (digits_former's 115 processes: about 2 CPU s of a compile). What it finds depends only
    on the process class (the models are resolved to the imported classes), so it is looked up once
    per class and reused: the same models, the same executable. Lava is left as it was afterwards."""
    from lava.magma.compiler.compiler_graphs import ProcGroupDiGraphs

    find = ProcGroupDiGraphs.__dict__["_find_proc_models"]

    def once(proc):
        cls = type(proc)
        if cls not in _PROC_MODELS:
            _PROC_MODELS[cls] = find.__func__(proc)
        return list(_PROC_MODELS[cls])

    ProcGroupDiGraphs._find_proc_models = staticmethod(once)
    try:
        yield
    finally:
        ProcGroupDiGraphs._find_proc_models = find


def run_network(net: Network, x, emit: str = "burst", qnet: QNetwork | None = None,
                currents: dict | None = None) -> LavaResult:
    """Run `net` on x in Lava: floating_pt, or fixed_pt with the integers of `qnet` (a quantisation
    of the same `net`): Sparse with int8 mantissas + weight_exp (sign_mode MIXED), WindowBurstIF and
    SpikeProduct fixed_pt, int32 RingBuffers, the host activation of `fixed.host_activation`.
    `currents`: population -> (K, N) host currents in stream order, instead of the encoding
    currents of x (a sub-graph's boundary inputs, `part`)."""
    g = net.graph
    if net.pools and graded_problems(g, emit):
        raise TargetError(graded_problems(g, emit)[0], where="loihi option emit")
    xs, B = batch_stream(g, x)
    K = xs.shape[0]  # windows streamed
    D = net.D
    steps = net.steps(K)
    fixed = qnet is not None
    dtype = np.int32 if fixed else np.float64
    procs: dict = {}
    n_procs = 0
    for p in net.populations.values():
        fx = None
        if fixed:
            q = qnet.populations[p.name]
            fx = {"vth": q.vth, "bias_mant": q.bias_mant, "bias_exp": q.bias_exp, "v_init": q.v_init,
                  "leak_mant": q.leak_mant}
        procs[p.name] = WindowBurstIF(shape=(p.size,), D=D, theta=p.theta, beta=p.beta, bias=p.bias,
                                      const=p.const, start=p.start, windows=K, period=net.T,
                                      stateful=p.stateful, emit=emit, fixed=fx, relay=p.relay, leak=p.leak,
                                      reset=p.reset, strict=p.strict, cap=p.D, name=p.name)
        n_procs += 1
        if p.host_input:
            cur = currents[p.name] if currents is not None else host_currents(net, p.name, xs).numpy()  # (K, N)
            if fixed:
                cur = host_activation(qnet.populations[p.name], cur)[0]
            data = np.zeros((p.size, steps), dtype)
            data[:, p.start + np.arange(K) * D] = cur.T  # first sub-step of each window
            src = Source(data=data)
            src.s_out.connect(procs[p.name].a_in)
            n_procs += 1
    si = net.spike_input
    if si is not None:  # the host's bursts, scheduled like a level-0 population's emission
        c = spike_input_counts(net, xs, emit)  # (K, N_in)
        data = np.zeros((si.size, steps), dtype)
        base = si.start + (np.arange(K) + 1) * D  # column of the first emission sub-step of window w
        if emit == "graded":
            data[:, base] = c.T
        else:
            for j in range(D):
                data[:, base + j] = (c > j).T
        procs[si.name] = Source(data=data)
        n_procs += 1
    for mp in net.pools.values():  # max pools: a sum-pool synapse (delay D) into LIF neurons that fire on any input
        if fixed:  # a spike is 2 << 6 = 128 membrane units against vth 1 << 6; u, v decay fully each step
            orn = LIF(shape=(mp.size,), du=4095, dv=4095, vth=1, bias_mant=0, bias_exp=0, name=mp.name)
            w = sp.csr_matrix((np.full(mp.weight.nnz, 2, np.int32), mp.weight.indices, mp.weight.indptr),
                              shape=mp.weight.shape)
            fx = {"weight_exp": 0, "num_weight_bits": 8, "sign_mode": SignMode.MIXED}
        else:
            orn = LIF(shape=(mp.size,), du=1.0, dv=1.0, vth=0.5, bias_mant=0.0, name=mp.name)
            w, fx = mp.weight, None
        chain = synapse(w, D, 0, fx)
        procs[mp.source].s_out.connect(chain[0].s_in)
        chain[-1].a_out.connect(orn.a_in)
        procs[mp.name] = orn
        n_procs += 1 + len(chain)
    for pp in net.products.values():  # operands arrive unsynapsed; the product is a graded source
        ops = [(o.index, o.shape, net.populations[o.source].start, net.populations[o.source].size)
               for o in pp.operands]
        procs[pp.name] = SpikeProduct(shape=(pp.size,), operands=ops, order=pp.order, scale=pp.scale,
                                      D=D, windows=K, name=pp.name)
        n_procs += 1
        for i, o in enumerate(pp.operands):
            procs[o.source].s_out.connect(getattr(procs[pp.name], f"a_in{i}"))
    bits = GRADED_BITS if emit == "graded" else 0
    out_syn = []
    for i, pr in enumerate(net.projections):
        w, fx = pr.weight, None
        if fixed:
            qp = qnet.projections[i]
            w = qp.weight
            fx = {"weight_exp": int(qp.exp), "num_weight_bits": 8, "sign_mode": SignMode.MIXED}
        src_bits = (GRADED_BITS if pr.source in net.products
                    else RELAY_BITS if pr.source in net.populations and net.populations[pr.source].relay else bits)
        groups = [(w, fx)]
        if fixed and qp.low is not None:  # weight_bits=16: a second Sparse into the same port (summed there)
            groups.append((qp.low.weight, {**fx, "weight_exp": int(qp.low.exp)}))
        for w, fx in groups:
            chain = synapse(w, pr.delay, src_bits, fx)
            n_procs += len(chain)
            procs[pr.source].s_out.connect(chain[0].s_in)
            syn = chain[-1]
            if pr.target == "output":
                out_syn.append(syn)
            else:
                syn.a_out.connect(procs[pr.target].a_in)
    # read-out: Recorders observe every population's s_out (counts summed per sample) and the
    # read-out synapses' a_out (summed per window), MAX_RECORDER_INPUTS inputs each
    inputs = [(p.name, procs[p.name].s_out, p.size, p.start + D + 1, net.T)
              for p in list(net.populations.values()) + list(net.pools.values())]
    n_out = int(np.prod(net.output_shape))
    if out_syn:
        inputs.append(("output", [s.a_out for s in out_syn], n_out, net.output_start + 1, 1))
    recorders = []
    for k in range(0, len(inputs), MAX_RECORDER_INPUTS):
        chunk = inputs[k: k + MAX_RECORDER_INPUTS]
        rec = Recorder(sizes=[c[2] for c in chunk], firsts=[c[3] for c in chunk], bins=[c[4] for c in chunk],
                       windows=K, D=D, last=steps, name=f"recorder{len(recorders)}")
        n_procs += 1
        for i, (_, ports, *_rest) in enumerate(chunk):
            for port in ports if isinstance(ports, list) else [ports]:
                port.connect(getattr(rec, f"in{i}"))
        recorders.append((rec, chunk))
    anchor = next(iter(procs.values()))
    rows = {}
    try:
        delay_model = PyDelaySparseModelBitAccCached if fixed else PyDelaySparseModelFloatCached
        with models_found_once_per_class():
            exe = anchor.compile(Loihi2SimCfg(select_tag="fixed_pt" if fixed else "floating_pt",
                                              exception_proc_model_map={DelaySparse: delay_model}),
                                 {"pypy_channel_size": CHANNEL_SIZE})
        check_shared_memory(exe, B)
        anchor.create_runtime(executable=exe)
        anchor.run(condition=RunSteps(num_steps=steps))
        for rec, chunk in recorders:
            for (name, *_), arr in zip(chunk, rec.split(rec.receive())):
                rows[name] = arr
    finally:
        anchor.stop()
    counts = {}
    relays = {}
    for p in net.populations.values():
        c = rows[p.name].reshape((B,) + p.shape)
        if p.relay:  # the sum of its graded messages, not spikes (fixed_pt: payloads in activation units)
            relays[p.name] = torch.as_tensor(np.rint(c).astype(np.int64) if fixed else c)
            continue
        counts[p.name] = torch.as_tensor(np.rint(c).astype(np.int64) if fixed else c)
    pooled = {mp.name: torch.as_tensor(np.rint(rows[mp.name]).astype(np.int64).reshape((B,) + mp.shape))
              for mp in net.pools.values()}
    out_w = rows.get("output", np.zeros((K, n_out)))  # (K, N_out)
    if fixed:
        out_int = np.rint(out_w).astype(np.int64)
        out_w = dequantize_output(qnet, out_int, xs)
    else:
        out_w = out_w + net.output_const
        if net.output_host:
            out_w = out_w + host_currents(net, g.output.name, xs).numpy()
    out = torch.as_tensor(out_w.reshape((B, net.T) + tuple(net.output_shape)).mean(1))
    res = LavaResult(out, counts, steps, processes=n_procs, relays=relays, pooled=pooled)
    if fixed:
        res.readout = out_int.reshape(B, net.T, n_out)
    return res


def simulate(graph: Graph, x, emit: str = "burst", precision: str = "float") -> LavaResult:
    """Run the deployed `graph` on batch x ((B, *in) or (T, B, *in)) in Lava: floating_pt, or
    fixed_pt (precision="fixed") on `fixed.quantize(build(graph))` with the scaling choices stored in
    the graph (`fixed.stored_choices`: a calibrated compile's)."""
    net = build(graph)
    if precision == "float":
        return run_network(net, x, emit)
    if precision == "fixed":
        return run_network(net, x, emit, quantize(net, choices=stored_choices(graph)))
    raise SnnccError(f"unknown precision {precision!r} (float or fixed)")
