"""The Lava network of a deployed graph, as plain numpy data (no Lava import): populations,
projections (dense weight matrices with delays), host-side encoding currents and the read-out.

Lowering rule (DESIGN 2, 3, 5). Every neuron population is one `WindowBurstIF` process on a flat
(N,) shape. Its input current tree (synaptic normal form) is affine in each leaf source, so the
projection from a spiking source is the matrix obtained by applying the tree to the identity
basis of that source (convs, pools, means, layer scales and layouts all flattened into one dense
matrix), and the constant is the tree applied to zeros. A leaf that is the real-valued input
(the encoding layer) stays on the host: its current is computed there and streamed in through a
RingBuffer (no synapse, no delay).

Schedule (the exact T x D schedule, one window of D sub-steps per training timestep, samples of
a batch streamed one after another): a population of level l (0 when it is fed by the host
only, else 1 + the deepest spiking source) integrates window w during time steps
[start + w D + 1, start + (w + 1) D] with start = l (D + 1), and emits during window w + 1. A
synapse process adds one step, so the next level starts D + 1 steps later; a projection from a
shallower source gets a synaptic delay of (l - l_src - 1)(D + 1) steps to land in the same window.
The graph output is read through a final projection into a sink, summed per window.

Spike products (attention, DESIGN 6). A `spike_product` node is a graded source of its own: a
`SpikeProduct` process receives the spike trains of its 2-3 operand populations directly (no
synapse), accumulates each operand's window counts, gathers them into the operand tensors with
index maps (the reshape/permute layout ops between the population and the product, evaluated on
an arange in numpy at build time) and, on the last sub-step of the operands' emission window,
sends the integer product (a @ b, (a @ b) @ c or a @ (b @ c) per head, times the node's scale) as
one graded message. It sits at the level of its deepest operand (operands from shallower levels
are buffered by window inside the process), so the projection from the product to its consumer is
an ordinary Dense (the tree applied to the product's identity basis: layouts, scales, linears)
whose one-step delay lands the message on the consumer's last integration sub-step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from snncc.errors import SnnccError, TargetError
from snncc.ir.graph import Graph, Node
from snncc.sim.reference import Interpreter

LAYOUT_OPS = ("reshape", "permute")


@dataclass
class Projection:
    source: str  # a population name
    target: str  # a population name or "output"
    weight: np.ndarray  # (N_target, N_source) float64
    delay: int = 0  # extra synaptic delay in time steps (0: the synapse's own one step)
    nodes: list[str] = field(default_factory=list)  # IR nodes folded into this matrix


@dataclass
class Operand:
    source: str  # a population name
    index: np.ndarray  # (size,) int64: element of the operand tensor -> flat neuron of `source`
    shape: tuple  # operand tensor shape (heads..., rows, cols)


@dataclass
class ProductSource:
    name: str  # the spike_product node
    shape: tuple  # product shape (per sample)
    operands: list[Operand]
    order: str  # 'left' (ab)c | 'right' a(bc)
    scale: float
    level: int  # deepest operand level: the product of window w is sent at step start + (w + 2) D
    start: int

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass
class Population:
    name: str
    shape: tuple  # IR shape (per sample); the process is flat (size,)
    D: int
    theta: float
    beta: float
    bias: np.ndarray  # (size,)
    const: np.ndarray  # (size,) constant current of the tree (zero after bias_to_current)
    stateful: bool
    level: int
    start: int
    host_input: bool  # fed by an encoding current from the host

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass
class Network:
    graph: Graph
    D: int
    T: int
    populations: dict[str, Population]
    projections: list[Projection]
    output_shape: tuple
    output_const: np.ndarray  # (N_out,)
    output_host: bool  # the output tree reads the real-valued input directly
    output_start: int
    products: dict[str, ProductSource] = field(default_factory=dict)

    def steps(self, windows: int) -> int:
        """Time steps that run `windows` windows through every level and the read-out."""
        return self.output_start + windows * self.D + 1


def tree_nodes(g: Graph, consumer: Node, products: bool = False) -> tuple[list[Node], list[str]]:
    """The consumer's input tree (current ops and spike layout ops, graph order) and its leaves
    (fire or input nodes; with `products`, spike_product nodes are leaves too: graded sources
    computed by their own process, their operand paths are not part of the tree)."""
    names: set[str] = set()
    leaves: list[str] = []
    stack = [consumer.inputs[0]]
    while stack:
        name = stack.pop()
        n = g[name]
        if n.op in ("fire", "input") or (products and n.op == "spike_product"):
            if name not in leaves:
                leaves.append(name)
            continue
        if name in names:
            continue
        if n.kind == "spike" and n.op not in LAYOUT_OPS:
            raise TargetError(f"unexpected {n.op} on a spike path", where=f"node {n.name}")
        names.add(name)
        stack.extend(n.inputs)
    order = {n.name: i for i, n in enumerate(g.nodes)}
    return [n for n in g.nodes if n.name in names], sorted(leaves, key=order.__getitem__)


class TreeEvaluator:
    """Applies a consumer's tree to given leaf values with the reference executor's own ops."""

    def __init__(self, g: Graph):
        self.g = g
        self.interp = Interpreter(g, torch.float64)

    def __call__(self, consumer: Node, values: dict[str, torch.Tensor], batch: int) -> torch.Tensor:
        tree, leaves = tree_nodes(self.g, consumer, products=True)
        env = {}
        for leaf in leaves:
            v = values.get(leaf)
            env[leaf] = v if v is not None else torch.zeros((batch,) + self.g[leaf].shape, dtype=torch.float64)
        for n in tree:
            env[n.name] = getattr(self.interp, f"op_{n.op}")(n, *[env[i] for i in n.inputs])
        root = consumer.inputs[0]
        return env[root].reshape(batch, -1)

    def matrix(self, consumer: Node, leaf: str) -> np.ndarray:
        """(N_consumer, N_leaf) linear part of the tree with respect to `leaf`."""
        shape = self.g[leaf].shape
        size = math.prod(shape)
        basis = torch.eye(size, dtype=torch.float64).reshape((size,) + shape)
        y = self(consumer, {leaf: basis}, size)
        y0 = self(consumer, {}, 1)
        return (y - y0).T.contiguous().numpy()

    def constant(self, consumer: Node) -> np.ndarray:
        return self(consumer, {}, 1)[0].numpy()


def operand_path(g: Graph, name: str) -> tuple[str, list[Node]]:
    """The population (fire) an operand of a spike product reads and the layout ops in between
    (graph order); ('', ops) when the path reaches anything else."""
    path = []
    n = g[name]
    while n.op in LAYOUT_OPS:
        path.append(n)
        n = g[n.inputs[0]]
    return (n.name if n.op == "fire" else ""), path[::-1]


def operand_index(g: Graph, name: str) -> Operand:
    """Index map of one operand: the layout ops applied to arange over the source population."""
    src, path = operand_path(g, name)
    interp = Interpreter(g, torch.float64)
    size = math.prod(g[src].shape)
    v = torch.arange(size, dtype=torch.float64).reshape((1,) + g[src].shape)
    for n in path:
        v = getattr(interp, f"op_{n.op}")(n, v)
    return Operand(src, v.reshape(-1).numpy().astype(np.int64), tuple(g[name].shape))


def unsupported(g: Graph) -> list[str]:
    """Rules the deployed graph breaks for this lowering, one line each, naming the node."""
    out = []
    if len(g.inputs) != 1:
        out.append(f"graph has {len(g.inputs)} inputs; the Lava lowering takes exactly one")
    for n in g.nodes:
        if n.op == "spike_product":
            for i in n.inputs:
                if not operand_path(g, i)[0]:
                    out.append(f"node {n.name}: spike_product operand {i} is not a neuron population "
                               f"(through reshape/permute only); the SpikeProduct process reads populations")
        elif n.op == "batchnorm":
            out.append(f"node {n.name}: batchnorm is not folded; run the deploy pipeline first")
        elif n.op == "fire":
            a = n.attrs
            if a["norm"] != 1.0 or a["rounding"] != "floor":
                out.append(f"node {n.name}: fire with norm={a['norm']} rounding={a['rounding']}; "
                           f"the graph is not in synaptic normal form (run the deploy pipeline)")
        elif n.op == "input" and n.attrs["kind"] != "current":
            out.append(f"node {n.name}: spike-kind graph input is not supported yet (only encoding currents)")
    Ds = {n.attrs["D"] for n in g.neurons()}
    if len(Ds) > 1:
        out.append(f"populations use different window lengths D {sorted(Ds)}; one D per network is supported")
    if not g.neurons():
        out.append("graph has no neuron population")
    return out


def build(g: Graph) -> Network:
    problems = unsupported(g)
    if problems:
        raise TargetError(problems[0], where="loihi target",
                          hint=f"{len(problems)} violation(s); see `snncc compile --target loihi` check output")
    D = g.neurons()[0].attrs["D"]
    ev = TreeEvaluator(g)
    pops: dict[str, Population] = {}
    projs: list[Projection] = []
    in_name = g.inputs[0].name

    prods: dict[str, ProductSource] = {}

    def source_level(s: str) -> int:
        if s in pops:
            return pops[s].level
        n = g[s]  # a spike product: a graded source at the level of its deepest operand
        ops = [operand_index(g, i) for i in n.inputs]
        lv = max(pops[o.source].level for o in ops)
        prods[s] = ProductSource(s, tuple(n.shape), ops, n.attrs["order"], float(n.attrs["scale"]),
                                 lv, lv * (D + 1))
        return lv

    def wire(consumer: Node):
        tree, leaves = tree_nodes(g, consumer, products=True)
        host = in_name in leaves
        spikes = [s for s in leaves if s != in_name]
        levels = {s: source_level(s) for s in spikes}
        level = 1 + max(levels.values(), default=-1)
        out = []
        for s in spikes:
            out.append(Projection(s, consumer.name if consumer.op == "fire" else "output",
                                  ev.matrix(consumer, s), (level - levels[s] - 1) * (D + 1),
                                  [n.name for n in tree]))
        return host, level, out

    for n in g.nodes:
        if n.op != "fire":
            continue
        host, level, p = wire(n)
        size = math.prod(n.shape)
        bias = n.params.get("bias")
        bias = np.zeros(size) if bias is None else np.broadcast_to(bias, n.shape).reshape(-1).astype(np.float64)
        const = np.zeros(size) if host else ev.constant(n)  # host currents carry the constant
        pops[n.name] = Population(n.name, n.shape, D, float(n.attrs["theta"]), float(n.attrs["beta"]), bias,
                                  const, bool(n.attrs["stateful"]), level, level * (D + 1), host)
        projs += p
    out = g.output
    host, level, p = wire(out)
    projs += p
    return Network(g, D, g.T, pops, projs, out.shape, np.zeros(math.prod(out.shape)) if host else ev.constant(out),
                   host, level * (D + 1), prods)


def host_currents(net: Network, consumer: str, x: torch.Tensor) -> torch.Tensor:
    """Encoding current (B, N) of `consumer` for input x (B, *in_shape): its tree applied to x with
    every spiking source at zero (the constant included)."""
    g = net.graph
    return TreeEvaluator(g)(g[consumer], {g.inputs[0].name: x}, x.shape[0])


def batch_stream(g: Graph, x) -> tuple[torch.Tensor, int]:
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
