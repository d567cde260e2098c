"""reparam: structural re-parameterisation, a chain of linear ops with no neuron between them
becomes one exact synaptic projection (docs/design.md §9, RepVGG style).

Requires: a typed graph. Fuses, until nothing changes, in float64:
- a conv followed (as its only user) by a per-channel affine (batchnorm on the channel axis, a
  per-channel or scalar scale), a constant `pad`, or another conv;
- a per-channel or scalar scale (on a (C, H, W) value) whose only user is a conv (the factor goes
  onto the conv's input channels);
- a linear followed by a linear, a batchnorm on its last axis or a scale;
- an add whose inputs include convs read by nothing else that share one input and one stride (sums of
  branches on the same spikes): one conv with the kernels aligned on their centres;
- a per-channel affine after a sum of convs read by nothing else (branches on different inputs):
  into every branch's weights, its shift into the first branch's bias.
A pad after a conv is only a conv of the zero-padded input when the border holds what that conv
gives on zeros (its bias: BNAndPadLayer fills BN(0) = the folded conv's bias) and the conv reads
nothing but padding there (stride 1, padding >= kernel - 1 on that axis); a conv's own zero padding
after another conv is the same rule with value 0. When that fails the chain is left as it is and the
reason is logged; a `pad` that is left is refused (no target runs it).
Changes: each fused chain becomes one conv/linear named after the chain's last node, with the
finest group structure its connectivity allows; the report lists every fusion with its synapses and
multiply-accumulates before and after (a fused kernel can have more synapses than the chain).
Preserves: the reference executor's output (up to float rounding).

Each op's part in these rules is its `Fusion` cell in the op registry's "reparam" column (what
fuses after a conv or a linear, before a conv, the rule a node of the op starts, whether it must
fuse); an op the pass leaves as it is has a refusal there saying so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from snncc.errors import PassError
from snncc.estimate.plan import dense_macs
from snncc.ir import registry
from snncc.ir.graph import Graph, Node
from snncc.ir.ops import BOUNDARY_OPS, SPIKE, RuleError, conv_shape
from snncc.passes.base import PassResult, batchnorm_affine, channel_factor, single_user

_TOL = {"rtol": 1e-6, "atol": 1e-7}  # a border value read back from the model's float32 parameters


class _Refused(Exception):
    """This pair does not fuse exactly; the message says why."""


class _Conv:
    """A 2-d conv as float64 data: W (O, I/groups, kh, kw), groups, bias (O,), stride, padding.
    Composing two convs of equal groups stays grouped (a depthwise chain stays depthwise); other
    compositions expand to one dense kernel, the size of the fused result."""

    def __init__(self, n: Node):
        a = n.attrs
        w = n.params["weight"]
        if w.ndim != 4 or any(d != 1 for d in a["dilation"]):
            raise _Refused(f"{n.name} is not an undilated conv2d")
        self.W = np.asarray(w, dtype=np.float64)
        self.groups = a["groups"]
        self.bias = np.array(n.params["bias"], dtype=np.float64) if "bias" in n.params else np.zeros(w.shape[0])
        self.stride = tuple(a["stride"])
        self.padding = tuple(a["padding"])

    @property
    def cin(self) -> int:
        return self.W.shape[1] * self.groups

    def ungrouped(self) -> "_Conv":
        """The same conv with groups = 1 (zeros outside the groups' blocks)."""
        o, ig = self.W.shape[:2]
        K = np.zeros((o, self.cin) + self.W.shape[2:])
        K[np.arange(o)[:, None], _in_index(o, ig, self.groups)] = self.W
        self.W, self.groups = K, 1
        return self

    def pad_after(self, pads: tuple, value: np.ndarray, what: str) -> None:
        """Absorb a border `value` of `pads` (top, bottom, left, right) around this conv's output."""
        t, b, l, r = pads
        if t != b or l != r:
            raise _Refused(f"{what} is asymmetric {pads}")
        kh, kw = self.W.shape[2:]
        for extra, p, k, s in ((t, self.padding[0], kh, self.stride[0]), (l, self.padding[1], kw, self.stride[1])):
            if extra and s != 1:
                raise _Refused(f"{what} follows a conv of stride {s}")
            if extra and p < k - 1:
                raise _Refused(f"{what}: a {kh}x{kw} conv with padding {self.padding} reads the input next to "
                               f"the border, so its border is not a conv of the zero-padded input")
        if (t or l) and not np.allclose(value, self.bias, **_TOL):
            c = int(np.argmax(np.abs(value - self.bias)))
            raise _Refused(f"{what} holds {value[c]:.6g} on channel {c} where a conv of the zero-padded input "
                           f"gives the bias {self.bias[c]:.6g}")
        self.padding = (self.padding[0] + t, self.padding[1] + l)

    def then_conv(self, nxt: "_Conv", what: str) -> None:
        """Compose with the conv `nxt` that reads this one's output (correlation: the fused kernel at
        offset s1 * j + t is the sum of nxt's tap j times this conv's tap t)."""
        ph, pw = nxt.padding
        if ph or pw:
            self.pad_after((ph, ph, pw, pw), np.zeros_like(self.bias), f"the zero padding of {what}")
        sh, sw = self.stride
        kh, kw = self.W.shape[2:]
        k2h, k2w = nxt.W.shape[2:]
        size = (sh * (k2h - 1) + kh, sw * (k2w - 1) + kw)

        def taps():
            for j in range(k2h):
                for i in range(k2w):
                    yield j, i, (..., slice(sh * j, sh * j + kh), slice(sw * i, sw * i + kw))

        if self.groups != nxt.groups and (_channelwise(nxt) or _channelwise(self)):
            # a depthwise side scales the other side's kernels channel by channel: no dense product
            if _channelwise(nxt):
                self.ungrouped()
                K = np.zeros(self.W.shape[:2] + size)
                for j, i, at in taps():
                    K[at] += nxt.W[:, 0, j, i][:, None, None, None] * self.W
            else:
                nxt.ungrouped()
                K = np.zeros(nxt.W.shape[:2] + size)
                for j, i, at in taps():
                    K[at] += nxt.W[:, :, j, i][:, :, None, None] * self.W[:, 0][None]
                self.groups = 1
            self.bias = _bias_through(nxt, self.bias)
            self.W = K
            self.stride = (sh * nxt.stride[0], sw * nxt.stride[1])
            return
        if self.groups != nxt.groups:
            self.ungrouped(), nxt.ungrouped()
        g = self.groups
        o1, ig = self.W.shape[:2]
        o2 = nxt.W.shape[0]
        W1m = self.W.reshape(g, o1 // g, -1)  # (g, m, i kh kw): one batched matrix product per tap of nxt
        W2 = nxt.W.reshape(g, o2 // g, o1 // g, k2h, k2w)
        K = np.zeros((g, o2 // g, ig) + size)
        for j, i, at in taps():
            K[at] += np.matmul(W2[..., j, i], W1m).reshape(g, o2 // g, ig, kh, kw)
        self.bias = _bias_through(nxt, self.bias)
        self.W = K.reshape((o2, ig) + size)
        self.stride = (sh * nxt.stride[0], sw * nxt.stride[1])

    def affine_after(self, a: np.ndarray, b: np.ndarray) -> None:
        self.W = self.W * a.reshape(-1, 1, 1, 1)
        self.bias = self.bias * a + b

    def scale_before(self, f: np.ndarray) -> None:
        """A per-channel factor on the input: each output channel's kernel takes its group's factors."""
        o, ig = self.W.shape[:2]
        self.W = self.W * f[_in_index(o, ig, self.groups)][:, :, None, None]

    def write(self, n: Node, src: str) -> None:
        """Store as node `n` reading `src`, with the finest groups its nonzero weights allow (a weight
        that is zero connects nothing, so dropping it is exact)."""
        o, ig = self.W.shape[:2]
        cin = self.cin
        mask = np.zeros((o, cin), dtype=bool)
        mask[np.arange(o)[:, None], _in_index(o, ig, self.groups)] = np.any(self.W != 0, axis=(2, 3))
        g = next(g for g in range(math.gcd(o, cin), 0, -1) if g % self.groups == 0 and o % g == 0
                 and cin % g == 0 and not np.any(mask & ((np.arange(o)[:, None] // (o // g))
                                                         != (np.arange(cin)[None, :] // (cin // g)))))
        if g != self.groups:
            full = np.zeros((o, cin) + self.W.shape[2:])
            full[np.arange(o)[:, None], _in_index(o, ig, self.groups)] = self.W
            self.W = full[np.arange(o)[:, None], _in_index(o, cin // g, g)]
            self.groups = g
        n.inputs = [src]
        n.op = "conv"
        n.attrs = {"stride": self.stride, "padding": self.padding, "dilation": (1, 1), "groups": self.groups}
        n.params = {"weight": self.W, "bias": self.bias}


def _channelwise(c: _Conv) -> bool:
    """Depthwise with one output per input channel: a kernel per channel, nothing mixed."""
    return c.groups == c.cin == c.W.shape[0]


def _bias_through(nxt: _Conv, bias: np.ndarray) -> np.ndarray:
    """nxt's output on an input that is `bias` per channel everywhere (its bias included)."""
    g = nxt.groups
    o2, ig = nxt.W.shape[:2]
    return np.einsum("gom,gm->go", nxt.W.sum(axis=(2, 3)).reshape(g, o2 // g, ig), bias.reshape(g, ig)).reshape(-1) \
        + nxt.bias


def _in_index(o: int, ig: int, groups: int) -> np.ndarray:
    """(O, I/groups): the input channel each weight column of each output channel reads."""
    return (np.arange(o) // (o // groups))[:, None] * ig + np.arange(ig)[None, :]


def _per_channel(g: Graph, n: Node, axis: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(a, b) if node `n` is y = a x + b per channel along `axis` of its input (its op's `affine`)."""
    f = _fusion(n).affine
    return f(n, axis) if f is not None else None


def _affine_batchnorm(n: Node, axis: int) -> tuple[np.ndarray, np.ndarray] | None:
    if n.attrs["axis"] % len(n.shape) == axis % len(n.shape):
        return batchnorm_affine(n)
    return None


def _affine_scale(n: Node, axis: int) -> tuple[np.ndarray, np.ndarray] | None:
    vec = channel_factor(n.params["factor"], n.shape, axis)
    return None if vec is None else (vec, np.zeros_like(vec))


def _chain_cost(g: Graph, names: list[str]) -> tuple[int, int]:
    """(synapses, MACs) of ops: synaptic ops reading spikes carry synapses, the rest cost MACs."""
    syn = macs = 0
    for nm in names:
        n = g[nm]
        if not n.spec.synaptic:
            continue
        if all(g[i].kind == SPIKE for i in n.inputs):
            syn += dense_macs(g, n)
        else:
            macs += dense_macs(g, n)
    return syn, macs


def reparam(graph: Graph) -> PassResult:
    g = graph.clone()
    members: dict[str, list[str]] = {}  # fused node -> the original nodes it replaces
    cost0: dict[str, tuple[int, int]] = {}  # original node -> (synapses, MACs), in the input graph
    for n in g.nodes:
        cost0[n.name] = _chain_cost(g, [n.name])
    refused: dict[str, str] = {}
    notes: list[str] = []  # affine ops distributed over the branches of a sum
    changed = True
    while changed:
        changed = False
        users = g.users()
        for n in list(g.nodes):
            try:
                done = _fuse_at(g, n, users, members, notes)
            except _Refused as e:
                refused[n.name] = str(e)
                continue
            if done:
                refused.pop(n.name, None)
                changed = True
                break
    fused = []
    changes = list(notes)
    for name, parts in members.items():
        if name not in g:
            continue
        before = [sum(cost0[p][i] for p in parts if p in cost0) for i in (0, 1)]
        after = _chain_cost(g, [name])
        src = g[name].inputs[0]
        neurons = math.prod(g[src].shape)
        fused.append({"node": name, "chain": parts, "synapses_before": before[0], "macs_before": before[1],
                      "synapses_after": after[0], "macs_after": after[1],
                      "fanout_before": before[0] / neurons, "fanout_after": after[0] / neurons})
        changes.append(f"fused {' -> '.join(parts)} into one {_describe(g[name])} {name}: "
                       f"{before[0]} synapses + {before[1]} MACs before, "
                       f"{after[0]} synapses + {after[1]} MACs after")
    for name, why in refused.items():
        if name in g:
            changes.append(f"not fused at {name}: {why}")
    left = [n for n in g.nodes if _fusion(n).must_fuse]
    if left:
        p = left[0]
        prod = g[p.inputs[0]].name
        why = next((refused[k] for k in (prod, p.name) if k in refused), None)
        why = why or f"its input {prod} ({g[prod].op}) is not a conv chain whose output it pads"
        raise PassError(f"constant padding {p.name} does not fuse into a synaptic projection: {why}",
                        where="reparam", hint="pad a conv+BatchNorm output with BN(0) per channel (BNAndPadLayer) "
                                              "before a conv with padding 0, or use the conv's own padding")
    return PassResult(g.verify(), changes, {"fused": fused} if fused else {})


def _describe(n: Node) -> str:
    if n.op == "conv":
        k = n.params["weight"].shape[2:]
        return f"{'x'.join(map(str, k))} conv" + (f" (groups {n.attrs['groups']})" if n.attrs["groups"] != 1 else "")
    return n.op


def _record(members: dict, keep: str, *gone: str) -> None:
    parts = []
    for nm in gone + (keep,):
        parts += members.pop(nm, [nm])
    members[keep] = parts


def _fuse_at(g: Graph, n: Node, users: dict, members: dict, notes: list) -> bool:
    """Apply the fusion rule a node of n's op starts (its `Fusion.at`); True if the graph changed."""
    at = _fusion(n).at
    return at(g, n, users, members, notes) if at is not None else False


def _conv_then(g: Graph, n: Node, users: dict, members: dict, notes: list) -> bool:
    """A conv and its only user, when the user's op fuses after a conv (`Fusion.after_conv`)."""
    u = single_user(g, n.name, users)
    after = _fusion(u).after_conv if u is not None else None
    if after is None:
        return False
    c = _Conv(n)
    if not after(g, c, u):
        return False
    c.write(u, n.inputs[0])
    g.remove(n.name)
    _record(members, u.name, n.name)
    return True


def _after_conv_conv(g: Graph, c: _Conv, u: Node) -> bool:
    c.then_conv(_Conv(u), u.name)
    return True


def _after_conv_pad(g: Graph, c: _Conv, u: Node) -> bool:
    c.pad_after(u.attrs["pads"], u.params.get("value", np.zeros(u.shape[0])), f"the border of {u.name}")
    return True


def _after_conv_affine(g: Graph, c: _Conv, u: Node) -> bool:
    ab = _per_channel(g, u, 0)
    if ab is None:
        return False
    c.affine_after(*ab)
    return True


def _scale_then_conv(g: Graph, n: Node, users: dict, members: dict, notes: list) -> bool:
    """A per-channel or scalar factor on a (C, H, W) value read only by a conv: onto its input channels."""
    u = single_user(g, n.name, users)
    if u is None or not _fusion(u).reads_channels or len(n.shape) != 3:
        return False
    vec = channel_factor(n.params["factor"], n.shape, 0)
    if vec is None:
        return False
    c = _Conv(u)
    c.scale_before(vec)
    c.write(u, n.inputs[0])
    g.remove(n.name)
    _record(members, u.name, n.name)
    return True


def _linear_then(g: Graph, n: Node, users: dict, members: dict, notes: list) -> bool:
    """A linear and its only user, when the user's op fuses after a linear (`Fusion.after_linear`)."""
    u = single_user(g, n.name, users)
    after = _fusion(u).after_linear if u is not None else None
    if after is None:
        return False
    w, b = n.params["weight"], n.params.get("bias", np.zeros(n.params["weight"].shape[0]))
    wb = after(g, u, w, b)
    if wb is None:
        return False
    u.op, u.attrs, u.inputs, u.params = "linear", {}, [n.inputs[0]], {"weight": wb[0], "bias": wb[1]}
    g.remove(n.name)
    _record(members, u.name, n.name)
    return True


def _after_linear_linear(g: Graph, u: Node, w: np.ndarray, b: np.ndarray):
    w2, b2 = u.params["weight"], u.params.get("bias", np.zeros(u.params["weight"].shape[0]))
    return w2 @ w, w2 @ b + b2


def _after_linear_affine(g: Graph, u: Node, w: np.ndarray, b: np.ndarray):
    ab = _per_channel(g, u, len(u.shape) - 1)
    if ab is None:
        return None
    return w * ab[0][:, None], b * ab[0] + ab[1]


def _sum_rules(g: Graph, n: Node, users: dict, members: dict, notes: list) -> bool:
    return _merge_sum(g, n, users, members) or _affine_into_branches(g, n, users, notes)


def _affine_into_branches(g: Graph, add: Node, users: dict, notes: list) -> bool:
    """a * (conv_1(s_1) + conv_2(s_2) + ...) + b after a sum of convs read by nothing else (different
    inputs or strides): the factor goes into every branch, the shift into the first one's bias."""
    u = single_user(g, add.name, users)
    convs = [g[i] for i in add.inputs]
    if u is None or _fusion(u).affine is None or len(set(add.inputs)) != len(add.inputs) or not all(
            _fusion(c).reads_channels and single_user(g, c.name, users) is add for c in convs):
        return False
    ab = _per_channel(g, u, 0)
    if ab is None:
        return False
    for k, c in enumerate(convs):
        conv = _Conv(c)
        conv.affine_after(ab[0], ab[1] if k == 0 else np.zeros_like(ab[1]))
        conv.write(c, c.inputs[0])
    g.replace_uses(u.name, add.name)
    g.remove(u.name)
    notes.append(f"folded {u.name} into the branches {', '.join(c.name for c in convs)} of {add.name}")
    return True


def _merge_sum(g: Graph, add: Node, users: dict, members: dict) -> bool:
    """conv_a(s) + conv_b(s) + ... -> one conv whose kernel is the sum of the kernels aligned on the
    output site they read (offsets -padding .. -padding + k - 1), zero padding kept exact."""
    by_src: dict[tuple, list[Node]] = {}
    for i in dict.fromkeys(add.inputs):
        c = g[i]
        if _fusion(c).reads_channels and add.inputs.count(i) == 1 and single_user(g, i, users) is add:
            try:
                _Conv(c)
            except _Refused:
                continue
            by_src.setdefault((c.inputs[0], c.attrs["stride"]), []).append(c)
    for (src, stride), convs in by_src.items():
        if len(convs) < 2:
            continue
        cs = [_Conv(c) for c in convs]
        if len({c.groups for c in cs}) > 1:
            cs = [c.ungrouped() for c in cs]
        lo = [min(-c.padding[a] for c in cs) for a in (0, 1)]
        hi = [max(-c.padding[a] + c.W.shape[2 + a] - 1 for c in cs) for a in (0, 1)]
        K = np.zeros(cs[0].W.shape[:2] + (hi[0] - lo[0] + 1, hi[1] - lo[1] + 1))
        for c in cs:
            oh, ow = -c.padding[0] - lo[0], -c.padding[1] - lo[1]
            K[:, :, oh:oh + c.W.shape[2], ow:ow + c.W.shape[3]] += c.W
        m = cs[0]
        m.W, m.padding = K, (-lo[0], -lo[1])
        m.bias = sum(c.bias for c in cs)
        keep = convs[0]
        m.write(keep, src)
        try:
            same = conv_shape([g[src].shape], keep.attrs, keep.params) == add.shape
        except RuleError:
            same = False
        if not same:  # the aligned kernels read different windows: not one conv
            raise _Refused(f"{', '.join(c.name for c in convs)} read windows that do not align on one output site")
        for c in convs[1:]:
            add.inputs.remove(c.name)
            g.remove(c.name)
        _record(members, keep.name, *[c.name for c in convs[1:]])
        if len(add.inputs) == 1:
            g.replace_uses(add.name, keep.name)
            g.remove(add.name)
            members[keep.name] = members.pop(keep.name) + [add.name]
        return True
    return False


# ---- the op registry's "reparam" column: each op's part in the fusion rules ----------------------
registry.column("reparam", "rewrite", "structural re-parameterisation (passes/reparam): what fuses into one "
                "synaptic projection", "snncc.passes.reparam")


@dataclass(frozen=True)
class Fusion:
    """An op's part in reparam's rules: `at(g, n, users, members, notes)` the rule a node of the op
    starts; `after_conv(g, conv, u)` / `after_linear(g, u, w, b)` folds a node of the op that is the
    only user of a conv / linear (False / None: not this one); `affine(n, axis)` (a, b) when the
    node is y = a x + b per channel along `axis`; `reads_channels`: a 2-d conv (`_Conv`), so a
    factor on its input channels, a sum of its kind or a per-channel affine after it fold into its
    kernel; `must_fuse`: no target runs the op, so one left after the pass is refused."""

    at: Callable | None = None
    after_conv: Callable | None = None
    after_linear: Callable | None = None
    affine: Callable | None = None
    reads_channels: bool = False
    must_fuse: bool = False


_LEFT_AS_IT_IS = Fusion()


def _fusion(n: Node) -> Fusion:
    """The op's cell; an op the pass leaves as it is (a refusal in its column) takes part in no rule."""
    c = registry.cell(n.op, "reparam")
    if c is not None and c.refused:
        return _LEFT_AS_IT_IS
    return registry.lookup(n.op, "reparam", where=f"node {n.name}")


_HERE = "snncc.passes.reparam"
registry.implement("conv", Fusion(at=_conv_then, after_conv=_after_conv_conv, reads_channels=True), rewrite="reparam",
                   where=f"{_HERE}._Conv (composes with a conv, a per-channel affine or a constant border after it)")
registry.implement("linear", Fusion(at=_linear_then, after_linear=_after_linear_linear), rewrite="reparam",
                   where=f"{_HERE}._linear_then (composes with a linear or a per-channel affine after it)")
registry.implement("batchnorm", Fusion(after_conv=_after_conv_affine, after_linear=_after_linear_affine,
                                       affine=_affine_batchnorm), rewrite="reparam",
                   where=f"{_HERE} (a per-channel affine: into the conv or linear before it)")
registry.implement("scale", Fusion(at=_scale_then_conv, after_conv=_after_conv_affine,
                                   after_linear=_after_linear_affine, affine=_affine_scale), rewrite="reparam",
                   where=f"{_HERE} (a per-channel or scalar factor: into the conv or linear around it)")
registry.implement("pad", Fusion(after_conv=_after_conv_pad, must_fuse=True), rewrite="reparam",
                   where=f"{_HERE}._Conv.pad_after (a constant border: the conv's padding)")
registry.implement("add", Fusion(at=_sum_rules), rewrite="reparam",
                   where=f"{_HERE}._merge_sum, _affine_into_branches (sums of convs)")
registry.refuse("pool", "max_pool", "mean", "upsample", "bilinear", "offset", "reshape", "permute", "spike_product",
                rewrite="reparam", why="left as it is: not a conv, linear or per-channel affine, so no fusion starts "
                                       "or ends at it")
registry.refuse(*BOUNDARY_OPS, rewrite="reparam",
                why="a graph end or a population: no fusion crosses it")
