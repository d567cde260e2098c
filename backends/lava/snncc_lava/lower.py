"""Lower a `Network` to Lava processes and run it in Loihi2SimCfg (floating_pt).

Processes: one `WindowBurstIF` per population; `Dense` per projection (`DelayDense` when the
projection needs a synaptic delay), with `num_message_bits=8` when neurons emit graded counts and
0 (binary spikes) in burst mode; a `RingBuffer` source (lava.proc.io.source) per population fed
by the host's encoding current; a `RingBuffer` sink (lava.proc.io.sink) on every population and
on the read-out projection. A batch is streamed through the pipeline one sample after another
(B * T windows in one run), so one compile serves the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from snncc.errors import SnnccError, TargetError
from snncc.ir.graph import Graph

from snncc_lava import compat
from snncc_lava.network import Network, build, host_currents

compat.install()

from lava.magma.core.run_conditions import RunSteps  # noqa: E402
from lava.magma.core.run_configs import Loihi2SimCfg  # noqa: E402
from lava.proc.dense.process import DelayDense, Dense  # noqa: E402
from lava.proc.io.sink import RingBuffer as Sink  # noqa: E402
from lava.proc.io.source import RingBuffer as Source  # noqa: E402

from snncc_lava.procs.process import WindowBurstIF  # noqa: E402

GRADED_BITS = 8  # enough for counts up to D = 255


@dataclass
class LavaResult:
    output: torch.Tensor  # (B, *out_shape), mean over T like the reference executor
    counts: dict[str, torch.Tensor]  # population -> (B, *shape) spikes summed over T
    steps: int  # Lava time steps run


def _batch(g: Graph, x) -> tuple[torch.Tensor, int]:
    """x as (B * T, *in_shape) in stream order (sample-major), and B."""
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(torch.float64)
    in_shape = g.inputs[0].shape
    if tuple(x.shape[-len(in_shape):]) != in_shape:
        raise SnnccError(f"input of shape {tuple(x.shape)} does not end in the graph's input shape {in_shape}")
    if x.dim() == len(in_shape) + 1:
        B = x.shape[0]
        return x.repeat_interleave(g.T, dim=0), B
    if x.dim() == len(in_shape) + 2:
        if x.shape[0] != g.T:
            raise SnnccError(f"input has {x.shape[0]} timesteps, graph expects T={g.T}")
        B = x.shape[1]
        return x.transpose(0, 1).reshape((B * g.T,) + in_shape), B
    raise SnnccError(f"input of rank {x.dim()} for per-sample shape {in_shape}")


def run_network(net: Network, x, emit: str = "burst") -> LavaResult:
    g = net.graph
    xs, B = _batch(g, x)
    K = xs.shape[0]  # windows streamed
    D = net.D
    steps = net.steps(K)
    procs: dict[str, WindowBurstIF] = {}
    sources, sinks = {}, {}
    for p in net.populations.values():
        procs[p.name] = WindowBurstIF(shape=(p.size,), D=D, theta=p.theta, beta=p.beta, bias=p.bias,
                                      const=p.const, start=p.start, windows=K, period=net.T,
                                      stateful=p.stateful, emit=emit, name=p.name)
        if p.host_input:
            cur = host_currents(net, p.name, xs).numpy()  # (K, N)
            data = np.zeros((p.size, steps))
            data[:, p.start + np.arange(K) * D] = cur.T  # first sub-step of each window
            sources[p.name] = Source(data=data)
            sources[p.name].s_out.connect(procs[p.name].a_in)
        sinks[p.name] = Sink(shape=(p.size,), buffer=steps)
        procs[p.name].s_out.connect(sinks[p.name].a_in)
    n_out = int(np.prod(net.output_shape))
    out_sink = Sink(shape=(n_out,), buffer=steps)
    bits = GRADED_BITS if emit == "graded" else 0
    for pr in net.projections:
        if pr.delay:
            syn = DelayDense(weights=pr.weight, delays=pr.delay * np.ones(pr.weight.shape, dtype=int),
                             num_message_bits=bits)
        else:
            syn = Dense(weights=pr.weight, num_message_bits=bits)
        procs[pr.source].s_out.connect(syn.s_in)
        syn.a_out.connect(out_sink.a_in if pr.target == "output" else procs[pr.target].a_in)
    anchor = next(iter(procs.values()))
    try:
        anchor.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="floating_pt"))
        spikes = {name: s.data.get() for name, s in sinks.items()}
        readout = out_sink.data.get()
    finally:
        anchor.stop()
    counts = {}
    for p in net.populations.values():
        # window w is emitted in steps start + (w+1)D + 1 .. start + (w+2)D (columns one less)
        per_window = spikes[p.name][:, p.start + D: p.start + D + K * D].reshape(p.size, K, D).sum(-1)  # (N, K)
        c = per_window.T.reshape((B, net.T) + p.shape).sum(1)
        counts[p.name] = torch.as_tensor(c)
    out_w = readout[:, net.output_start: net.output_start + K * D].reshape(n_out, K, D).sum(-1).T  # (K, N_out)
    out_w = out_w + net.output_const
    if net.output_host:
        out_w = out_w + host_currents(net, g.output.name, xs).numpy()
    out = torch.as_tensor(out_w.reshape((B, net.T) + tuple(net.output_shape)).mean(1))
    return LavaResult(out, counts, steps)


def simulate(graph: Graph, x, emit: str = "burst") -> LavaResult:
    """Run the deployed `graph` on batch x ((B, *in) or (T, B, *in)) in Lava floating_pt."""
    return run_network(build(graph), x, emit)
