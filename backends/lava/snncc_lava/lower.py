"""Lower a `Network` to Lava processes and run it in Loihi2SimCfg (floating_pt or fixed_pt).

Processes: one `WindowBurstIF` per population; `Dense` per projection (`DelayDense` when the
projection needs a synaptic delay), with `num_message_bits=8` when neurons emit graded counts and
0 (binary spikes) in burst mode; a `RingBuffer` source (lava.proc.io.source) per population fed
by the host's encoding current; a `SpikeProduct` per spike product (attention; floating_pt only),
its operand populations wired straight into it, its graded output through a Dense (8 message bits)
like any population; a `RingBuffer` sink (lava.proc.io.sink) on every population and
on the read-out projection. A batch is streamed through the pipeline one sample after another
(B * T windows in one run), so one compile serves the whole batch.

fixed_pt: the same processes with the integers of a `fixed.QNetwork`, selected with
`Loihi2SimCfg(select_tag="fixed_pt")`: Dense/DelayDense take the 8-bit mantissas with
`weight_exp`, `num_weight_bits=8`, `sign_mode=MIXED` (so lava never re-derives the sign mode from
the values), the host RingBuffers carry int32 activations and WindowBurstIF runs its fixed_pt
model. Counts must equal `fixed.simulate_fixed` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from snncc.errors import SnnccError, TargetError
from snncc.ir.graph import Graph

from snncc_lava import compat
from snncc_lava.fixed import QNetwork, dequantize_output, host_activation, quantize
from snncc_lava.network import Network, batch_stream, build, host_currents

compat.install()

from lava.magma.core.run_conditions import RunSteps  # noqa: E402
from lava.magma.core.run_configs import Loihi2SimCfg  # noqa: E402
from lava.proc.dense.process import DelayDense, Dense  # noqa: E402
from lava.proc.io.sink import RingBuffer as Sink  # noqa: E402
from lava.proc.io.source import RingBuffer as Source  # noqa: E402
from lava.utils.weightutils import SignMode  # noqa: E402

from snncc_lava.procs.process import SpikeProduct, WindowBurstIF  # noqa: E402

GRADED_BITS = 8  # enough for counts up to D = 255


@dataclass
class LavaResult:
    output: torch.Tensor  # (B, *out_shape), mean over T like the reference executor
    counts: dict[str, torch.Tensor]  # population -> (B, *shape) spikes summed over T
    steps: int  # Lava time steps run
    readout: np.ndarray | None = None  # fixed_pt: (B, T, N_out) integer read-out per window


def run_network(net: Network, x, emit: str = "burst", qnet: QNetwork | None = None) -> LavaResult:
    """Run `net` on x in Lava: floating_pt, or fixed_pt with the integers of `qnet` (a quantisation
    of the same `net`): Dense with int8 mantissas + weight_exp (sign_mode MIXED), WindowBurstIF
    fixed_pt, int32 RingBuffers, the host activation of `fixed.host_activation`."""
    g = net.graph
    xs, B = batch_stream(g, x)
    K = xs.shape[0]  # windows streamed
    D = net.D
    steps = net.steps(K)
    fixed = qnet is not None
    procs: dict[str, WindowBurstIF] = {}
    sources, sinks = {}, {}
    for p in net.populations.values():
        fx = None
        if fixed:
            q = qnet.populations[p.name]
            fx = {"vth": q.vth, "bias_mant": q.bias_mant, "bias_exp": q.bias_exp, "v_init": q.v_init}
        procs[p.name] = WindowBurstIF(shape=(p.size,), D=D, theta=p.theta, beta=p.beta, bias=p.bias,
                                      const=p.const, start=p.start, windows=K, period=net.T,
                                      stateful=p.stateful, emit=emit, fixed=fx, name=p.name)
        if p.host_input:
            cur = host_currents(net, p.name, xs).numpy()  # (K, N)
            if fixed:
                cur = host_activation(qnet.populations[p.name], cur)[0]
            data = np.zeros((p.size, steps), np.int32 if fixed else np.float64)
            data[:, p.start + np.arange(K) * D] = cur.T  # first sub-step of each window
            sources[p.name] = Source(data=data)
            sources[p.name].s_out.connect(procs[p.name].a_in)
        sinks[p.name] = Sink(shape=(p.size,), buffer=steps)
        procs[p.name].s_out.connect(sinks[p.name].a_in)
    if fixed and net.products:
        raise TargetError(f"node {next(iter(net.products))}: spike_product has no fixed_pt model yet",
                          where="loihi precision=fixed", hint="use precision='float'")
    for pp in net.products.values():  # operands arrive unsynapsed; the product is a graded source
        ops = [(o.index, o.shape, net.populations[o.source].start, net.populations[o.source].size)
               for o in pp.operands]
        procs[pp.name] = SpikeProduct(shape=(pp.size,), operands=ops, order=pp.order, scale=pp.scale,
                                      D=D, windows=K, name=pp.name)
        for i, o in enumerate(pp.operands):
            procs[o.source].s_out.connect(getattr(procs[pp.name], f"a_in{i}"))
    n_out = int(np.prod(net.output_shape))
    out_sink = Sink(shape=(n_out,), buffer=steps)
    bits = GRADED_BITS if emit == "graded" else 0
    for i, pr in enumerate(net.projections):
        kw = {"num_message_bits": GRADED_BITS if pr.source in net.products else bits}
        w = pr.weight
        if fixed:
            qp = qnet.projections[i]
            w = qp.weight
            kw.update(weight_exp=int(qp.exp), num_weight_bits=8, sign_mode=SignMode.MIXED)
        if pr.delay:
            syn = DelayDense(weights=w, delays=pr.delay * np.ones(w.shape, dtype=int), **kw)
        else:
            syn = Dense(weights=w, **kw)
        procs[pr.source].s_out.connect(syn.s_in)
        syn.a_out.connect(out_sink.a_in if pr.target == "output" else procs[pr.target].a_in)
    anchor = next(iter(procs.values()))
    try:
        anchor.run(condition=RunSteps(num_steps=steps),
                   run_cfg=Loihi2SimCfg(select_tag="fixed_pt" if fixed else "floating_pt"))
        spikes = {name: s.data.get() for name, s in sinks.items()}
        readout = out_sink.data.get()
    finally:
        anchor.stop()
    counts = {}
    for p in net.populations.values():
        # window w is emitted in steps start + (w+1)D + 1 .. start + (w+2)D (columns one less)
        per_window = spikes[p.name][:, p.start + D: p.start + D + K * D].reshape(p.size, K, D).sum(-1)  # (N, K)
        c = per_window.T.reshape((B, net.T) + p.shape).sum(1)
        counts[p.name] = torch.as_tensor(np.rint(c).astype(np.int64) if fixed else c)
    out_w = readout[:, net.output_start: net.output_start + K * D].reshape(n_out, K, D).sum(-1).T  # (K, N_out)
    if fixed:
        out_int = np.rint(out_w).astype(np.int64)
        out_w = dequantize_output(qnet, out_int, xs)
    else:
        out_w = out_w + net.output_const
        if net.output_host:
            out_w = out_w + host_currents(net, g.output.name, xs).numpy()
    out = torch.as_tensor(out_w.reshape((B, net.T) + tuple(net.output_shape)).mean(1))
    res = LavaResult(out, counts, steps)
    if fixed:
        res.readout = out_int.reshape(B, net.T, n_out)
    return res


def simulate(graph: Graph, x, emit: str = "burst", precision: str = "float") -> LavaResult:
    """Run the deployed `graph` on batch x ((B, *in) or (T, B, *in)) in Lava: floating_pt, or
    fixed_pt (precision="fixed") on `fixed.quantize(build(graph))`."""
    net = build(graph)
    if precision == "float":
        return run_network(net, x, emit)
    if precision == "fixed":
        return run_network(net, x, emit, quantize(net))
    raise SnnccError(f"unknown precision {precision!r} (float or fixed)")
