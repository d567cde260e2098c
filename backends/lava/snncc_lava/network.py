"""The Lava network of a deployed graph, as plain numpy/scipy data (no Lava import): populations,
projections (sparse weight matrices with delays), host-side encoding currents or a spike input,
spike products and the read-out.

Lowering rule (docs/design.md §2, §3, §5). Every neuron population is one `WindowBurstIF` process on a flat
(N,) shape. Its input current tree (synaptic normal form) is affine in each leaf source, so the
projection from a spiking source is a matrix: `tree_matrices` composes the tree's ops as scipy
sparse matrices (the per-op address maps of `snncc.sim.events.op_matrix`: convs, pools, means,
linears, layer scales and layouts; adds summed) into one CSR (N_consumer, N_source) matrix per
source, and the constant is the tree applied to zeros. A projection whose share of the tree is one
kernel (`KernelPath`: layouts, adds, one conv/linear, means after a linear or 1x1 conv) also keeps
that kernel; `build(g, explicit=False)` skips its matrix (the fixed-point quantisation and integer
model work on kernels; only Lava needs the matrices). A leaf that is the real-valued input (the
encoding layer) stays on the host: its current is computed there and streamed in through a
RingBuffer (no synapse, no delay). A spike-kind input is a `SpikeInput` source instead: the host
streams its per-window counts as bursts, scheduled like a level-0 population, so its consumers
read it through ordinary synapses.

Schedule (the exact T x D schedule, one window of D sub-steps per training timestep, samples of
a batch streamed one after another): a population of level l (0 when it is fed by the host
only, else 1 + the deepest spiking source; a spike input is level 0) integrates window w during
time steps [start + w D + 1, start + (w + 1) D] with start = l (D + 1), and emits during window
w + 1. A synapse process adds one step, so the next level starts D + 1 steps later; a projection
from a shallower source gets a synaptic delay of (l - l_src - 1)(D + 1) steps to land in the same
window (`relay_delays` splits delays beyond Loihi 2's 63 into identity relay hops). The graph
output is read through a final projection into the read-out, summed per window.

Max pools of spikes (the `max_pool` op, `MaxPool`): in the burst schedule the max of a window's
counts is a per-sub-step OR of the bursts, so a max pool is a sum-pool synapse (delay D) into
stateless Lava LIF neurons that fire on any input, a spike source one level after the one it pools.
Graded emission sends a count in one message: refused (`graded_problems`).

Relays (residual-stream accumulators, the `relay` op): a `WindowBurstIF` in relay mode, at its
level like a neuron: it integrates its window (host current, graded relay input, branch spikes,
its constant) and sends the value unchanged as one graded message (no threshold, no clip) in the
first sub-step of its emission window; its projections carry graded payloads (RELAY_BITS).

Spike products (attention, docs/design.md §2.6). A `spike_product` node is a graded source of its own: a
`SpikeProduct` process receives the spike trains of its 2-3 operand populations directly (no
synapse), accumulates each operand's window counts, gathers them into the operand tensors with
index maps (the reshape/permute layout ops between the population and the product, evaluated on
an arange in numpy at build time) and, on the last sub-step of the operands' emission window,
sends the integer product (a @ b, (a @ b) @ c or a @ (b @ c) per head, `product`; times the
node's scale in floating_pt, raw in fixed_pt where the scale is folded into the weights) as one
graded message. It sits at the level of its deepest operand (operands from shallower levels
are buffered by window inside the process), so the projection from the product to its consumer is
an ordinary synapse (the tree's matrix with respect to the product: layouts, scales, linears)
whose one-step delay lands the message on the consumer's last integration sub-step.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import scipy.sparse as sp
import torch

from snncc.errors import SnnccError, TargetError
from snncc.ir import registry
from snncc.ir.graph import Graph, Node
from snncc.ir.ops import neuron_features, neuron_model

# the neuron models (snncc.ir.ops.neuron_features) WindowBurstIF runs beyond the soft reset
LAVA_NEURON_FEATURES = ("hard reset", "no reset", "leak before reset", "strict comparison")
from snncc.sim.events import op_matrix  # per-op sparse address maps, shared with the event simulator
from snncc.sim.reference import Interpreter
from snncc.sim.sync import window_length

LAYOUT_OPS = ("reshape", "permute")
MAX_DELAY = 63  # Loihi 2's 6-bit synaptic delay (lava's DelaySparse fixed_pt model checks it)


def loihi_op(n: Node):
    """The Loihi lowering's behaviour of `n`'s op: its `snncc_lava.ops.LoihiOp` cell in the op
    registry's "loihi" column (one line naming the node when the lowering refuses the op)."""
    return registry.lookup(n.op, "loihi", where=f"node {n.name}")


# ---- one-kernel projections: each op's rule (`KernelRule`, its LoihiOp's `kernel`) ---------------
@dataclass
class _KernelState:
    op: Node | None = None  # the weighted op so far
    factor: float = 1.0
    fa: int | None = None  # the axis holding the weighted op's output features (-1: mixed with positions)
    channel: np.ndarray | None = None


@dataclass(frozen=True)
class KernelRule:
    """One op's part in a projection that is one kernel (`KernelPath`): `step(state, node, in_shape)`
    updates the path's state (False: the path is no longer one kernel); `apply(node, x, k, B)` runs
    the op on a batch with kernel `k` in place of its weight (None: passes x through); `matrix(g,
    node, kernel)` is its sparse map with that kernel (None: folded into the kernel)."""

    step: Callable
    apply: Callable | None = None
    matrix: Callable | None = None


def _step_weighted(features: Callable) -> Callable:
    def step(st: _KernelState, n: Node, in_shape: tuple) -> bool:
        if st.op is not None:
            return False
        st.op, st.fa = n, features(n)
        return True
    return step


def _step_mean(st: _KernelState, n: Node, in_shape: tuple) -> bool:
    dims = sorted(d % len(in_shape) for d in n.attrs["dims"])
    if st.op is not None:  # a mean after the kernel sums its outputs over positions: one kernel
        # entry per synapse only for a linear / 1x1 conv and never over its output features
        if st.fa == -1 or st.fa in dims or math.prod(np.shape(st.op.params["weight"])[2:]) != 1:
            return False
        if not n.attrs.get("keepdim", False):
            st.fa -= sum(d < st.fa for d in dims)
    st.factor /= math.prod(in_shape[d] for d in dims)
    return True


def _step_permute(st: _KernelState, n: Node, in_shape: tuple) -> bool:
    if st.fa is not None and st.fa >= 0:
        st.fa = list(n.attrs["dims"]).index(st.fa)
    return True


def _step_reshape(st: _KernelState, n: Node, in_shape: tuple) -> bool:
    if st.fa is not None and st.fa >= 0:
        out = tuple(n.shape)
        if st.fa == 0 and out[:1] == in_shape[:1]:
            st.fa = 0
        elif st.fa == len(in_shape) - 1 and out[-1:] == in_shape[-1:]:
            st.fa = len(out) - 1
        else:
            st.fa = -1  # features mixed with positions: a later mean cannot be checked
    return True


def _step_scale(st: _KernelState, n: Node, in_shape: tuple) -> bool:
    """Scalar, or per output feature of the op (a layer scale): folded into the kernel."""
    f = np.asarray(n.params["factor"], np.float64)
    if f.size == 1:
        st.factor *= float(f.reshape(-1)[0])
        return True
    shape = (1,) * (len(n.shape) - f.ndim) + f.shape
    fa = st.fa
    if st.op is None or fa is None or fa < 0 or len(shape) != len(n.shape) or shape[fa] != n.shape[fa] \
            or any(d != 1 for i, d in enumerate(shape) if i != fa):
        return False
    f = f.reshape(-1)
    st.channel = f if st.channel is None else st.channel * f
    return True


def _step_pass(st: _KernelState, n: Node, in_shape: tuple) -> bool:  # an add passes this source's share
    return True


def _apply_conv(n: Node, x, k, B: int):
    import torch.nn.functional as F

    a = n.attrs
    fn = F.conv2d if k.dim() == 4 else F.conv1d
    return fn(x, k, None, a["stride"], a["padding"], a["dilation"], a["groups"])


def _apply_linear(n: Node, x, k, B: int):
    import torch.nn.functional as F

    return F.linear(x, k)


def _matrix_weighted(g: Graph, n: Node, kernel: np.ndarray) -> sp.csr_matrix:
    return op_matrix(g, dataclasses.replace(n, params={**n.params, "weight": np.asarray(kernel, np.float64)}))


def _matrix_sum(g: Graph, n: Node, kernel: np.ndarray) -> sp.csr_matrix:  # a mean as a sum
    A = op_matrix(g, n).copy()
    A.data[:] = 1.0
    return A


def _matrix_layout(g: Graph, n: Node, kernel: np.ndarray) -> sp.csr_matrix:
    return op_matrix(g, n)


KERNEL_RULES = {
    "conv": KernelRule(_step_weighted(lambda n: 0), _apply_conv, _matrix_weighted),
    "linear": KernelRule(_step_weighted(lambda n: len(n.shape) - 1), _apply_linear, _matrix_weighted),
    "mean": KernelRule(_step_mean, lambda n, x, k, B: x.sum(dim=tuple(d + 1 for d in n.attrs["dims"]),
                                                            keepdim=n.attrs["keepdim"]), _matrix_sum),
    "reshape": KernelRule(_step_reshape, lambda n, x, k, B: x.reshape(B, *n.attrs["shape"]), _matrix_layout),
    "permute": KernelRule(_step_permute, lambda n, x, k, B: x.permute(0, *(d + 1 for d in n.attrs["dims"])),
                          _matrix_layout),
    "scale": KernelRule(_step_scale),
    "add": KernelRule(_step_pass),
}  # op -> its rule in a one-kernel projection (snncc_lava.ops registers it as the LoihiOp's `kernel`)


@dataclass
class KernelPath:
    """A projection that is one kernel: the chain of IR ops from its source to the consumer's
    current holds at most one weighted op (conv or linear), the rest are layouts (reshape,
    permute), adds (which pass this source's share through), scales (scalar, or per output
    feature after the op: a layer scale, folded into the kernel) and means after a linear or a
    1x1 conv; so every synapse of the composed matrix is one kernel entry times `factor` (the 1/count
    of the means), and the projection is that kernel (a scalar when there is no weighted op).
    `apply` runs the projection with any kernel, with convolutions (means as sums); `matrix`
    composes it explicitly (what Lava's Sparse takes). Quantisation works on the kernel
    (`snncc_lava.fixed`), never on the matrix."""
    leaf_shape: tuple
    chain: list[Node]  # the ops from the leaf to the consumer's input, graph order
    op: Node | None  # the weighted op of the chain (None: layouts only)
    factor: float  # product of the 1/count of the means and the scalar scales on the chain
    channel: np.ndarray | None = None  # per-output-feature factor of the scales after the op (layer scale)

    def kernel(self) -> np.ndarray:
        """The float kernel per unit of source spike: the weighted op's weight x factor (x the
        per-output-feature scale, folded on the weight's first axis), or the scalar factor."""
        if self.op is None:
            return np.array(self.factor, np.float64)
        w = np.asarray(self.op.params["weight"], np.float64)
        if self.channel is not None:
            w = w * self.channel.reshape((-1,) + (1,) * (w.ndim - 1))
        return w * self.factor if self.factor != 1.0 else w

    def apply(self, s: np.ndarray, kernel: np.ndarray) -> np.ndarray:
        """(B, N_source) -> (B, N_target) float64: the chain with `kernel` in place of the weight (no
        bias), means as sums; exact for integer kernels and inputs while sums stay below 2**53."""
        B = s.shape[0]
        x = torch.as_tensor(np.asarray(s, np.float64)).reshape((B,) + tuple(self.leaf_shape))
        k = torch.as_tensor(np.asarray(kernel, np.float64))
        for n in self.chain:
            rule = loihi_op(n).kernel
            if rule.apply is not None:
                x = rule.apply(n, x, k, B)
        if self.op is None:
            x = x * k
        return x.reshape(B, -1).numpy()

    def matrix(self, g: Graph, kernel: np.ndarray) -> sp.csr_matrix:
        """The explicit (N_target, N_source) matrix of the chain with `kernel` (means as sums):
        every entry is one kernel entry."""
        m = sp.identity(math.prod(self.leaf_shape), format="csr", dtype=np.float64)
        for n in self.chain:
            rule = loihi_op(n).kernel
            if rule.matrix is None:  # adds, and scales (folded into the kernel)
                continue
            m = (rule.matrix(g, n, kernel) @ m).tocsr()
        if self.op is None:
            m = m * float(kernel)
        m = m.tocsr()
        m.sum_duplicates()
        m.eliminate_zeros()
        return m


def kernel_path(g: Graph, tree: list[Node], leaf: str, root: str) -> KernelPath | None:
    """The `KernelPath` of `leaf` in a consumer's `tree` (graph order), or None when its share of
    the current is not one kernel (two weighted ops, pools, scales, branches, a mean after a
    spatial kernel): such a projection keeps an explicit matrix."""
    on, chain, prev = {leaf}, [], leaf
    for n in tree:
        k = sum(i in on for i in n.inputs)
        if k == 0:
            continue
        if k > 1 or prev not in n.inputs:
            return None
        on.add(n.name)
        chain.append(n)
        prev = n.name
    if prev != root:
        return None
    st = _KernelState()
    for n in chain:  # each op's KernelRule; an op without one (pools, upsampling, ...) is no kernel
        rule = loihi_op(n).kernel
        if rule is None or not rule.step(st, n, tuple(g[n.inputs[0]].shape)):
            return None
    return KernelPath(tuple(g[leaf].shape), chain, st.op, st.factor, st.channel)


@dataclass
class Projection:
    source: str  # a population name
    target: str  # a population name or "output"
    weight: sp.csr_matrix | None  # (N_target, N_source) float64, explicit zeros removed (None: kernel only)
    delay: int = 0  # extra synaptic delay in time steps (0: the synapse's own one step)
    nodes: list[str] = field(default_factory=list)  # IR nodes folded into this matrix
    kernel: KernelPath | None = None  # the projection as one kernel, where it is one

    def matrix(self, g: Graph) -> sp.csr_matrix:
        """The explicit float matrix (built from the kernel when the network was built without it)."""
        return self.weight if self.weight is not None else self.kernel.matrix(g, self.kernel.kernel())


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
    D: int  # at most D spikes per window (its own D; the window has Network.D sub-steps, the largest)
    theta: float
    beta: float
    bias: np.ndarray  # (size,)
    const: np.ndarray  # (size,) constant current of the tree (zero after bias_to_current)
    stateful: bool
    level: int
    start: int
    host_input: bool  # fed by an encoding current from the host
    relay: bool = False  # a residual-stream relay: sends its window value as one graded message
    leak: float = 1.0  # factor of the carried residual between windows (snncc.sim.reference.carry)
    reset: str = "subtract"  # "subtract", "value" (set to beta where it fired), "leak_first" (snntorch's order), "none"
    strict: bool = False  # fires on v > k theta (IR rounding "strict")

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass
class SpikeInput:
    """A graph input of kind spike: per window, the host streams the count c of every input neuron
    as a binary burst (spikes in the first c sub-steps; one graded message of payload c in graded
    mode) from a RingBuffer, scheduled as a level-0 population (start 0: window w is sent during
    steps (w + 1) D + 1 .. (w + 2) D) so it reaches its consumers through ordinary synapses."""
    name: str
    shape: tuple
    level: int = 0
    start: int = 0

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass
class MaxPool:
    """A max pool of burst spikes (the IR's `max_pool` on a spike path), as an OR population.

    In the burst schedule a source with count c spikes on the first c sub-steps of its emission
    window, so at sub-step j the OR over a pool window of (c_i > j) is (max_i c_i > j): the max of
    the counts is a per-sub-step OR. The pool is a sum over its window (`weight`: (N, N_source) 0/1,
    the sum-pool address map composed with the layouts between source and pool) into stateless
    neurons that fire when their input is positive: Lava's own LIF with u and v reset every step
    (floating_pt: du = dv = 1, vth 0.5; fixed_pt: du = dv = 4095, weights of mantissa 2, vth 1, so a
    spike is 128 membrane units against a threshold of 64, exact for windows of fewer than 2080 inputs,
    `fixed.OR_MAX_WINDOW`). It
    emits max(c) spikes in the same sub-steps one step later; the pool synapse's extra delay of D
    steps lands that burst on the emission window of the next level, so the pool is a spike source
    of level `level` = its source's + 1, like a population (binary spikes, D = 1, alike). A graded
    message carries the whole count in one message, which a synapse sums: no OR, refused
    (`graded_problems`)."""
    name: str
    shape: tuple
    source: str  # the spike source it pools: a population, the spike input or another max pool
    weight: sp.csr_matrix  # (N, N_source) float64 ones: the members of each pool window
    level: int
    start: int

    @property
    def size(self) -> int:
        return math.prod(self.shape)


def max_pool_matrix(g: Graph, n: Node) -> tuple[str, sp.csr_matrix]:
    """The spike source a max_pool node reads (through layout ops) and its (N, N_source) 0/1 window
    membership: the sum-pool address map composed with the layouts."""
    tree, leaves = tree_nodes(g, n, products=True)
    if len(leaves) != 1:  # the op's kind rule makes its input a spike path: layouts of one source
        raise TargetError(f"max pooling of {', '.join(leaves)}: a max pool reads one spike source",
                          where=f"node {n.name}")
    src = leaves[0]
    lay = tree_matrices(g, n)[src]
    a = n.attrs
    pool = Node(n.name, "pool", list(n.inputs), {"mode": "sum", "kernel": a["kernel"], "stride": a["stride"],
                                                 "padding": a["padding"]}, shape=tuple(n.shape), kind=n.kind)
    w = (op_matrix(g, pool) @ lay).tocsr().astype(np.float64)
    w.sum_duplicates()
    w.eliminate_zeros()
    return src, w


def pool_nodes(g: Graph) -> list[Node]:
    """The max pools of spikes of `g` (graph order): each is a `MaxPool` of the network. A max pool
    of a current (host domain: the input's encoding) is part of the host current (`host_currents`)."""
    return [n for n in g.nodes if loihi_op(n).or_pool and n.kind == "spike"]


def graded_problems(g: Graph, emit: str) -> list[str]:
    """Max pools graded emission cannot run, one line each."""
    if emit != "graded":
        return []
    return [f"node {n.name}: max pooling of spikes with emit=graded; one graded message carries a window's whole "
            f"count and synapses sum messages, so the pool's max is lost (burst emission makes it a per-sub-step "
            f"OR); compile with emit=burst" for n in pool_nodes(g)]


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
    spike_input: SpikeInput | None = None
    pools: dict[str, MaxPool] = field(default_factory=dict)  # max pools of spikes (OR populations)

    def source_size(self, name: str) -> int:
        """Neurons of a projection's source (population, max pool, spike product or spike input)."""
        for d in (self.populations, self.pools, self.products):
            if name in d:
                return d[name].size
        return self.spike_input.size

    def steps(self, windows: int) -> int:
        """Time steps that run `windows` windows through every level and the read-out."""
        return self.output_start + windows * self.D + 1


def tree_nodes(g: Graph, consumer: Node, products: bool = False) -> tuple[list[Node], list[str]]:
    """The consumer's input tree (current ops and spike layout ops, graph order) and its leaves
    (fire, relay, input or max_pool nodes, the spike sources; with `products`, spike_product nodes are leaves too: graded sources
    computed by their own process, their operand paths are not part of the tree)."""
    names: set[str] = set()
    leaves: list[str] = []
    stack = [consumer.inputs[0]]
    while stack:
        name = stack.pop()
        n = g[name]
        op = loihi_op(n)
        host_max = n.spec.host_only and n.kind != "spike"  # a max of the input's encoding: in the host's tree
        if (op.leaf and not host_max) or (products and op.product):
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


def tree_matrices(g: Graph, consumer: Node, only: set | None = None) -> dict[str, sp.csr_matrix]:
    """The linear part of the consumer's tree with respect to each spiking leaf (fire, spike input,
    spike product), as sparse (N_consumer, N_leaf) float64 matrices: the tree's ops composed as
    sparse matrices with the per-op address maps of `snncc.sim.events` (`op_matrix`: conv, pool,
    linear, mean, scale, reshape, permute), adds summed. The real-valued input leaf is left out (its
    current is computed on the host). Entries that compose to exactly 0 are dropped."""
    tree, leaves = tree_nodes(g, consumer, products=True)
    host = {n.name for n in g.inputs if n.kind != "spike"}
    vals: dict[str, dict[str, sp.csr_matrix | None]] = {}
    for leaf in leaves:
        vals[leaf] = {} if leaf in host or (only is not None and leaf not in only) else {leaf: None}  # None: identity

    def eye(leaf):
        return sp.identity(math.prod(g[leaf].shape), format="csr")

    for n in tree:
        if loihi_op(n).merge:
            acc: dict = {}
            for i in n.inputs:
                for leaf, m in vals[i].items():
                    m = eye(leaf) if m is None else m
                    acc[leaf] = acc[leaf] + m if leaf in acc else m
            vals[n.name] = acc
        elif not vals[n.inputs[0]]:
            vals[n.name] = {}  # the host's encoding alone (a max of it has no matrix)
        else:
            A = op_matrix(g, n)
            vals[n.name] = {leaf: A if m is None else (A @ m).tocsr() for leaf, m in vals[n.inputs[0]].items()}
    out = {}
    for leaf, m in vals[consumer.inputs[0]].items():
        m = (eye(leaf) if m is None else m).tocsr().astype(np.float64)
        m.sum_duplicates()
        m.eliminate_zeros()
        out[leaf] = m
    return out


def operand_path(g: Graph, name: str) -> tuple[str, list[Node]]:
    """The population (fire) an operand of a spike product reads and the layout ops in between
    (graph order); ('', ops) when the path reaches anything else."""
    path = []
    n = g[name]
    while n.op in LAYOUT_OPS:
        path.append(n)
        n = g[n.inputs[0]]
    return (n.name if loihi_op(n).neuron else ""), path[::-1]


def operand_index(g: Graph, name: str) -> Operand:
    """Index map of one operand: the layout ops applied to arange over the source population."""
    src, path = operand_path(g, name)
    interp = Interpreter(g, torch.float64)
    size = math.prod(g[src].shape)
    v = torch.arange(size, dtype=torch.float64).reshape((1,) + g[src].shape)
    for n in path:
        v = getattr(interp, f"op_{n.op}")(n, v)
    return Operand(src, v.reshape(-1).numpy().astype(np.int64), tuple(g[name].shape))


def _check_product(g: Graph, n: Node) -> list[str]:
    return [f"node {n.name}: spike_product operand {i} is not a neuron population (through reshape/permute "
            f"only); the SpikeProduct process reads populations" for i in n.inputs if not operand_path(g, i)[0]]


def _check_fire(g: Graph, n: Node) -> list[str]:
    a = n.attrs
    if a["norm"] != 1.0 or a["rounding"] not in ("floor", "strict"):
        return [f"node {n.name}: fire with norm={a['norm']} rounding={a['rounding']}; "
                f"the graph is not in synaptic normal form (run the deploy pipeline)"]
    missing = [f for f in neuron_features(a) if f not in LAVA_NEURON_FEATURES]
    if missing:
        return [f"node {n.name}: neuron {neuron_model(a)}; snncc's Lava neuron (WindowBurstIF) "
                f"subtracts theta per spike (before or after the leak) or resets to beta: its "
                f"{' and '.join(missing)} are not implemented"]
    return []


def unsupported(g: Graph) -> list[str]:
    """Rules the deployed graph breaks for this lowering, one line each, naming the node."""
    out = []
    if len(g.inputs) != 1:
        out.append(f"graph has {len(g.inputs)} inputs; the Lava lowering takes exactly one")
    for n in g.nodes:
        c = registry.cell(n.op, "loihi")
        if c is None or c.refused:
            out.append(f"node {n.name}: {n.op}: " + (c.why if c else "no Loihi lowering registered (snncc_lava.ops)"))
        elif c.impl.check is not None:
            out += c.impl.check(g, n)
    if not g.neurons():
        out.append("graph has no neuron population")
    return out


BYTES_PER_SYNAPSE = 24  # building a scipy sparse matrix: COO int64 row + col + float64 value per entry


def _synapses_conv(g: Graph, n: Node) -> int:
    return int(np.prod(n.shape)) * int(np.prod(n.params["weight"].shape[1:]))


def _synapses_linear(g: Graph, n: Node) -> int:
    return int(np.prod(n.shape)) * int(n.params["weight"].shape[1])


def _synapses_pool(g: Graph, n: Node) -> int:
    return int(np.prod(n.shape)) * int(np.prod(n.attrs["kernel"]))


def _synapses_out(g: Graph, n: Node) -> int:  # one per output (nearest upsampling)
    return int(np.prod(n.shape))


def _synapses_bilinear(g: Graph, n: Node) -> int:  # at most 2 x 2 taps per output
    return 4 * int(np.prod(n.shape))


def _synapses_in(g: Graph, n: Node) -> int:  # one per input (offset, mean)
    return int(np.prod(g[n.inputs[0]].shape))


def materialised_synapses(g: Graph, nodes=None) -> int:
    """Synapses this lowering stores explicitly (sparse matrices, one entry per connection): every
    conv, linear and pooling op of the current trees by its fan-in, an upper bound of the
    composed matrices' entries. Lava's CPU processes hold them as CSR, so this grows with the
    maps' size: 224x224 E-SpikeFormer needs tens of GB (the chip mapping, `mapping`, costs
    convolutions as shared kernels instead and never builds these matrices)."""
    total = 0
    for n in g.nodes if nodes is None else nodes:
        count = loihi_op(n).synapses
        if count is not None:
            total += count(g, n)
    if nodes is None:  # the max pools' sum-pool synapses (their windows: leaves, never inside a tree)
        total += sum(int(np.prod(n.shape)) * int(np.prod(n.attrs["kernel"])) for n in pool_nodes(g))
    return total


def matrix_form_nodes(g: Graph) -> list[Node]:
    """The current-tree nodes on the paths of the projections that are not one kernel
    (`kernel_path` None): what a kernel-form build (`build(g, explicit=False)`) still composes
    into explicit matrices (their ops' fan-in, `materialised_synapses`, bounds the entries)."""
    host = {n.name for n in g.inputs if n.kind != "spike"}
    out: dict[str, Node] = {}
    for c in g.nodes:
        if not loihi_op(c).consumer:
            continue
        tree, leaves = tree_nodes(g, c, products=True)
        for leaf in leaves:
            if leaf in host or kernel_path(g, tree, leaf, c.inputs[0]) is not None:
                continue
            on = {leaf}
            for n in tree:  # graph order: the nodes this leaf's share passes through
                if any(i in on for i in n.inputs):
                    on.add(n.name)
                    out[n.name] = n
    return list(out.values())


def memory_problems(g: Graph, nodes=None) -> list[str]:
    """Refuse before allocating: the explicit synapse matrices must fit in the memory available
    (of the whole graph, or of the current-tree `nodes` of a sub-graph, `part`)."""
    from snncc.resources import available_bytes, fmt_bytes

    syn = materialised_synapses(g, nodes)
    need, have = syn * BYTES_PER_SYNAPSE, available_bytes()
    if need > have:
        return [f"the Lava lowering stores {syn:,} synapses as explicit sparse matrices (about {fmt_bytes(need)} "
                f"while building); this machine has {fmt_bytes(have)} available"]
    return []


def _bias_and_const(n: Node, host: bool, ev: TreeEvaluator) -> tuple[np.ndarray, np.ndarray]:
    size = math.prod(n.shape)
    bias = n.params.get("bias")
    bias = np.zeros(size) if bias is None else np.broadcast_to(bias, n.shape).reshape(-1).astype(np.float64)
    const = np.zeros(size) if host else ev.constant(n)  # host currents carry the constant
    return bias, const


def _relay_population(n: Node, D: int, level: int, host: bool, ev: TreeEvaluator) -> Population:
    bias, const = _bias_and_const(n, host, ev)
    return Population(n.name, n.shape, int(n.attrs["D"]), 1.0, 0.0, bias, const, False, level, level * (D + 1), host,
                      relay=True)


def _fire_population(n: Node, D: int, level: int, host: bool, ev: TreeEvaluator) -> Population:
    """`D`: the network's window (sub-steps); the population fires at most its own D per window."""
    bias, const = _bias_and_const(n, host, ev)
    return Population(n.name, n.shape, int(n.attrs["D"]), float(n.attrs["theta"]), float(n.attrs["beta"]), bias,
                      const, bool(n.attrs["stateful"]), level, level * (D + 1), host, leak=float(n.attrs["leak"]),
                      reset="leak_first" if n.attrs["leak_first"] else n.attrs["reset"],
                      strict=n.attrs["rounding"] == "strict")


def population(n: Node, D: int, level: int, host: bool, ev: TreeEvaluator) -> Population:
    """The population of fire or relay node n at `level` (its op's registered builder); `host`: its
    current (constant included) is streamed in from the host, else the tree's constant is the
    population's own."""
    return loihi_op(n).population(n, D, level, host, ev)


def build(g: Graph, explicit: bool = True) -> Network:
    """The network of deployed graph `g`. `explicit=False`: projections that are one kernel
    (`KernelPath`) get no matrix (weight None), so a model at 224x224 builds in little memory;
    only the others are composed explicitly."""
    problems = unsupported(g)
    if problems:
        raise TargetError(problems[0], where="loihi target",
                          hint=f"{len(problems)} violation(s); see `snncc compile --target loihi` check output")
    D = window_length(g)  # one clock: populations with a smaller D fire at most their own D per window
    ev = TreeEvaluator(g)
    pops: dict[str, Population] = {}
    projs: list[Projection] = []
    in_node = g.inputs[0]
    spike_in = SpikeInput(in_node.name, tuple(in_node.shape)) if in_node.kind == "spike" else None
    host_name = None if spike_in else in_node.name

    prods: dict[str, ProductSource] = {}
    pools: dict[str, MaxPool] = {}

    def source_level(s: str) -> int:
        if s in pops:
            return pops[s].level
        if s in pools:
            return pools[s].level
        if spike_in is not None and s == spike_in.name:
            return spike_in.level
        n = g[s]  # a spike product: a graded source at the level of its deepest operand
        ops = [operand_index(g, i) for i in n.inputs]
        lv = max(pops[o.source].level for o in ops)
        prods[s] = ProductSource(s, tuple(n.shape), ops, n.attrs["order"], float(n.attrs["scale"]),
                                 lv, lv * (D + 1))
        return lv

    def wire(consumer: Node):
        tree, leaves = tree_nodes(g, consumer, products=True)
        host = host_name in leaves
        spikes = [s for s in leaves if s != host_name]
        levels = {s: source_level(s) for s in spikes}
        level = 1 + max(levels.values(), default=-1)
        paths = {s: kernel_path(g, tree, s, consumer.inputs[0]) for s in spikes}
        need = set(spikes) if explicit else {s for s in spikes if paths[s] is None}
        mats = tree_matrices(g, consumer, need) if need else {}
        out = []
        for s in spikes:
            out.append(Projection(s, consumer.name if loihi_op(consumer).population else "output",
                                  mats.get(s), (level - levels[s] - 1) * (D + 1), [n.name for n in tree], paths[s]))
        return host, level, out

    pooling = {n.name for n in pool_nodes(g)}
    for n in g.nodes:
        if n.name in pooling:  # an OR population one level after its source (MaxPool)
            src, w = max_pool_matrix(g, n)
            lv = source_level(src) + 1
            pools[n.name] = MaxPool(n.name, tuple(n.shape), src, w, lv, lv * (D + 1))
            continue
        if loihi_op(n).population is None:
            continue
        host, level, p = wire(n)
        pops[n.name] = population(n, D, level, host, ev)
        projs += p
    out = g.output
    host, level, p = wire(out)
    projs += p
    return Network(g, D, g.T, pops, projs, out.shape, np.zeros(math.prod(out.shape)) if host else ev.constant(out),
                   host, level * (D + 1), prods, spike_in, pools)


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


def product(xs: list[np.ndarray], order: str) -> np.ndarray:
    """a @ b, (a @ b) @ c ('left') or a @ (b @ c) ('right'): the spike product of operand tensors
    (any leading batch dimensions), as the SpikeProduct models and `fixed.simulate_fixed` compute it."""
    if len(xs) == 2:
        return xs[0] @ xs[1]
    if order == "right":
        return xs[0] @ (xs[1] @ xs[2])
    return (xs[0] @ xs[1]) @ xs[2]


def spike_input_counts(net: Network, xs: torch.Tensor, emit: str) -> np.ndarray:
    """The per-window counts (K, N_in) int64 the host streams for a spike-kind input: x must hold
    non-negative integers, at most D in burst mode (a burst fits one window) and 255 graded."""
    c = xs.reshape(xs.shape[0], -1).numpy()
    top = net.D if emit == "burst" else 255
    bad = (c < 0) | (c > top) | (c != np.floor(c))
    if bad.any():
        raise SnnccError(f"spike input {net.spike_input.name} holds {c[bad][0]!r}; a spike input carries "
                         f"integer counts in [0, {top}] per timestep ({emit} emission)",
                         where=f"input {net.spike_input.name}")
    return c.astype(np.int64)


def relay_delays(delay: int) -> tuple[list[int], int]:
    """Split a synaptic delay into identity relay hops of MAX_DELAY (Loihi 2's 6-bit delay) and
    the projection's own delay: every hop adds its one step, so r relays take 64 r of the delay."""
    hops = []
    while delay > MAX_DELAY:
        hops.append(MAX_DELAY)
        delay -= MAX_DELAY + 1
    return hops, delay
