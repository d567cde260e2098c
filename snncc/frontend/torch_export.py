"""Front end for `torch.export`: an `ExportedProgram` (ATen-level fx graph) to the spiking IR.

`torch.export` is tried first because research code calls `int()` on shapes, which breaks
`torch.fx.symbolic_trace`. Parameters and buffers come from the program's state dict and
constants; the single user input becomes the IR input node.
"""

from __future__ import annotations

import operator
import warnings

import torch
import torch.fx as fx
import torch.utils._pytree as pytree
from torch.export.graph_signature import InputKind

from snncc.errors import FrontendError, first_line
from snncc.frontend import peers
from snncc.frontend.calls import Call, where
from snncc.frontend.convert import Converter, needed_nodes, output_heads
from snncc.ir.graph import Graph
from snncc.ir.ops import CURRENT

aten = torch.ops.aten


def _conv(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    return Call("conv", (x, w, b, stride, padding, dilation, groups), {})


def _convolution(x, w, b, stride, padding, dilation, transposed, output_padding, groups):
    if transposed:
        return Call("transposed_conv", (), {})
    return _conv(x, w, b, stride, padding, dilation, groups)


def _bn(x, w, b, mean, var, training=False, momentum=0.1, eps=1e-5, *rest):
    if training:
        return Call("batchnorm_training", (), {})
    return Call("batchnorm", (x, w, b, mean, var, eps), {})


def _bn_legit(x, w, b, mean, var, momentum, eps):
    return Call("batchnorm", (x, w, b, mean, var, eps), {})


def _dropout(x, train):
    """Dropout in eval is the identity; in training it is random (the export was made in train mode)."""
    return Call("dropout_training", (), {}) if train else Call("identity", (x,), {})


def _getitem(x, i):
    return Call("identity", (x,), {}) if i == 0 else Call("batchnorm_stat", (), {})


# ATen overload packet -> function building the canonical call from the node's args.
ATEN_MAP = {
    aten.conv1d: _conv,
    aten.conv2d: _conv,
    aten.convolution: _convolution,
    aten.linear: lambda x, w, b=None: Call("linear", (x, w, b), {}),
    aten.batch_norm: _bn,
    aten._native_batch_norm_legit_no_training: _bn_legit,
    aten.add: lambda a, b, alpha=1: Call("add", (a, b), {"alpha": alpha}),
    aten.mul: lambda a, b: Call("mul", (a, b), {}),
    aten.div: lambda a, b, rounding_mode=None: Call("div" if rounding_mode is None else "int_div", (a, b), {}),
    aten.matmul: lambda a, b: Call("matmul", (a, b), {}),
    aten.bmm: lambda a, b: Call("matmul", (a, b), {}),
    aten.mm: lambda a, b: Call("matmul", (a, b), {}),
    aten.mean: lambda x, dims=None, keepdim=False, dtype=None: Call("mean", (x, dims, keepdim), {}),
    aten.sum: lambda x, dims=None, keepdim=False, dtype=None: Call("sum", (x, dims, keepdim), {}),
    aten.avg_pool2d: lambda x, *a: Call("pool", (x, *a), {}),
    aten.adaptive_avg_pool2d: lambda x, size: Call("adaptive_pool", (x, size), {}),
    aten.flatten: lambda x, *a: Call("reshape", (x,), {}),
    aten.view: lambda x, *a: Call("reshape", (x,), {}),
    aten.reshape: lambda x, *a: Call("reshape", (x,), {}),
    aten._unsafe_view: lambda x, *a: Call("reshape", (x,), {}),  # a reshape after functionalisation
    aten.unsqueeze: lambda x, dim: Call("unsqueeze", (x, dim), {}),
    aten.squeeze: lambda x, dims=None: Call("squeeze", (x, dims), {}),
    aten.unflatten: lambda x, *a: Call("reshape", (x,), {}),
    aten.permute: lambda x, dims: Call("permute", (x, dims), {}),
    aten.repeat: lambda x, repeats: Call("repeat", (x, repeats), {}),
    aten.pad: lambda x, pad, mode="constant", value=None: Call("pad", (x, pad, mode, value), {}),
    aten.constant_pad_nd: lambda x, pad, value=0: Call("pad", (x, pad, "constant", value), {}),
    aten.slice: lambda x, dim=0, start=None, end=None, step=1: Call("slice", (x, dim, start, end, step), {}),
    aten.copy_: lambda dst, src, non_blocking=False: Call("copy_", (dst, src), {}),
    aten.max_pool2d: lambda x, *a, **k: Call("max_pool", (x, *a), k),
    aten.max_pool2d_with_indices: lambda x, *a, **k: Call("max_pool", (x, *a), k),
    aten.expand: lambda x, size, implicit=False: Call("expand", (x, size), {}),
    aten.transpose: lambda x, d0, d1: Call("transpose", (x, d0, d1), {}),
    aten.t: lambda x: Call("transpose", (x, -1, -2), {}),
    aten.contiguous: lambda x, *a, **k: Call("identity", (x,), {}),
    aten.clone: lambda x, *a, **k: Call("identity", (x,), {}),
    aten.alias: lambda x, *a, **k: Call("identity", (x,), {}),
    aten.detach: lambda x, *a, **k: Call("identity", (x,), {}),
    aten.dropout: lambda x, p=0.5, train=False: _dropout(x, train),
    aten.feature_dropout: lambda x, p=0.5, train=False: _dropout(x, train),
    aten.alpha_dropout: lambda x, p=0.5, train=False: _dropout(x, train),
    aten.feature_alpha_dropout: lambda x, p=0.5, train=False: _dropout(x, train),
    aten.upsample_nearest2d: lambda x, *a, **k: Call("upsample", (x,), {}),
    aten.upsample_nearest3d: lambda x, *a, **k: Call("upsample", (x,), {}),  # of (T, B, C, H, W): C kept
    aten._upsample_nearest_exact2d: lambda x, *a, **k: Call("upsample", (x,), {}),  # equal at integer factors
    aten.cat: lambda xs, dim=0: Call("cat", (xs, dim), {}),
    aten.clamp: lambda x, lo=None, hi=None: Call("clamp", (x, lo, hi), {}),
    aten.round: lambda x, **k: Call("round", (x,), {}),
    aten.floor: lambda x: Call("floor", (x,), {}),
    # an unrolled loop over timesteps (frontend/time_loop.py)
    aten.select: lambda x, dim, index: Call("select", (x, dim, index), {}),
    aten.unbind: lambda x, dim=0: Call("unbind", (x, dim), {}),
    aten.stack: lambda xs, dim=0: Call("stack", (xs, dim), {}),
    aten.zeros_like: lambda x, *a, **k: Call("like", (x, 0.0), {}),
    aten.full_like: lambda x, v, *a, **k: Call("like", (x, v), {}),
    aten.sub: lambda a, b, alpha=1: Call("sub", (a, b), {"alpha": alpha}),
    # a binary spike written as a comparison, `(v - th >= 0).to(v)` (surrogate heavisides)
    aten.ge: lambda a, b: Call("compare", (a, b, False), {}),
    aten.gt: lambda a, b: Call("compare", (a, b, True), {}),
    aten.to: lambda x, *a, **k: Call("identity", (x,), {}),
    aten._to_copy: lambda x, *a, **k: Call("identity", (x,), {}),  # `.to()` after run_decompositions
    # sources written into slices of a tensor of zeros (convert.Placement)
    aten.zeros: lambda size, *a, **k: Call("zeros", (size,), {}),
    aten.new_zeros: lambda x, size, *a, **k: Call("zeros", (size,), {}),
    aten.copy: lambda dst, src, non_blocking=False: Call("copy", (dst, src), {}),
    aten.slice_scatter: lambda base, src, dim=0, start=None, end=None, step=1:
        Call("slice_scatter", (base, src, dim, start, end, step), {}),
    # (x, output_size, align_corners, scales...) in both overloads
    aten.index_put: lambda base, indices, values, accumulate=False:
        Call("index_put", (base, list(indices), values, accumulate), {}),
    aten.index_put_: lambda base, indices, values, accumulate=False:
        Call("index_put", (base, list(indices), values, accumulate), {}),
    aten.upsample_bilinear2d: lambda x, size=None, align_corners=False, *a, **k:
        Call("bilinear", (x, align_corners), {}),
    aten._upsample_bilinear2d_aa: lambda x, *a, **k: Call("interpolate", (x, "bilinear with antialias=True"), {}),
    aten.upsample_bicubic2d: lambda x, *a, **k: Call("interpolate", (x, "bicubic"), {}),
    aten.rsub: lambda a, b, alpha=1: Call("rsub", (a, b), {"alpha": alpha}),
}


# SpikingJelly 2's fused multi-step neuron ops -> (TimeLoop method, leading arguments it reads)
JELLY_FUSED = {"sj_if::forward": ("jelly_if", 4),  # x, v, threshold, reset
               "sj_lif::forward": ("jelly_lif", 6),  # x, v, tau, decay_input, threshold, reset
               "sj_ilif::forward": ("jelly_ilif", 7)}  # x, v, tau, count, lower, upper, threshold


class ExportConverter(peers.PeerOps, Converter):
    def canon(self, n: fx.Node) -> Call:
        if n.target is operator.getitem:
            if isinstance(self.values.get(n.args[0]), (tuple, list)):
                return Call("item", n.args, {})  # one timestep of an unbind
            return _getitem(*n.args)
        packet = getattr(n.target, "overloadpacket", None)
        fused = JELLY_FUSED.get(getattr(packet, "_qualified_op_name", ""))
        if fused is not None:  # SpikingJelly 2's fused multi-step nodes (time_loop.TimeLoop.jelly_*)
            return Call(fused[0], tuple(self._arg(a) for a in n.args[:fused[1]]), {})
        fn = ATEN_MAP.get(packet)
        if fn is None:
            name = getattr(n.target, "__name__", str(n.target))
            return Call(f"aten.{name}", (), {})
        return fn(*[self._arg(a) for a in n.args], **{k: self._arg(v) for k, v in n.kwargs.items()})

    def _arg(self, a):
        if isinstance(a, fx.Node):
            return a
        if isinstance(a, (list, tuple)):
            return type(a)(self._arg(x) for x in a)
        return a

    def resolve(self, call: Call) -> Call:
        def r(a):
            if isinstance(a, fx.Node):
                if a not in self.values:
                    raise FrontendError(f"value of {a.name} is not available")
                return self.values[a]
            if isinstance(a, (list, tuple)):
                return type(a)(r(x) for x in a)
            return a

        return Call(call.op, tuple(r(a) for a in call.args), {k: r(v) for k, v in call.kwargs.items()})


def _training_op(n: fx.Node) -> str | None:
    """What of a node only runs so in training mode (BatchNorm on batch statistics, active dropout)."""
    if n.op != "call_function":
        return None
    name = getattr(getattr(n.target, "overloadpacket", None), "__name__", "")
    if name == "batch_norm" and len(n.args) > 5 and n.args[5] is True or name in (
            "_native_batch_norm_legit", "_native_batch_norm_legit_functional", "native_batch_norm"):
        return "BatchNorm uses the batch's statistics"
    if name in ("dropout", "feature_dropout") and (len(n.args) > 2 and n.args[2] is True or n.kwargs.get("train")):
        return "dropout is active"
    return None


_VIEWS = {"view", "_unsafe_view", "reshape", "select", "slice", "unflatten", "flatten", "permute", "transpose", "t",
          "unsqueeze", "squeeze", "expand", "as_strided", "alias", "detach", "unbind", "split", "chunk", "narrow",
          "movedim", "view_as", "expand_as", "diagonal", "unfold", "getitem"}


def _functional_where_unaliased(ep: torch.export.ExportedProgram, inplace: list[fx.Node]):
    """In-place ops whose mutation nobody can observe made out of place on a copy of the program:
    no value sharing the mutated tensor's storage (its views, the tensor they view) is read after
    the op except through the op's own result (`out += identity` on a fresh conv output). torch's
    functionalisation (`run_decompositions`) is left for the rest: it also inlines custom ops such
    as SpikingJelly's fused neurons, which the converter reads whole. Returns (program, in-place
    ops left)."""
    order = {n: i for i, n in enumerate(ep.graph.nodes)}

    def op_name(n):
        return getattr(getattr(n.target, "overloadpacket", None), "__name__", getattr(n.target, "__name__", ""))

    def base(n):
        while n.op == "call_function" and op_name(n) in _VIEWS and n.args and isinstance(n.args[0], fx.Node):
            n = n.args[0]
        return n

    def aliases(root):
        out, stack = {root}, [root]
        while stack:
            for u in stack.pop().users:
                if u.op == "call_function" and op_name(u) in _VIEWS and u.args and u.args[0] in out | {root} \
                        and u not in out:
                    out.add(u)
                    stack.append(u)
        return out

    safe = []
    for n in inplace:
        a = n.args[0] if n.args and isinstance(n.args[0], fx.Node) else None
        fn = getattr(aten, op_name(n)[:-1], None)
        fn = getattr(fn, n.target._overloadname, None) if fn is not None else None
        if a is None or fn is None or base(a).op != "call_function":
            continue  # the input itself, a parameter or a buffer is mutated: observable
        same = aliases(base(a))
        if any(order[u] > order[n] for v in same for u in v.users if u is not n and u not in same):
            continue
        safe.append((n, fn))
    if not safe:
        return ep, inplace
    import copy

    with warnings.catch_warnings():  # torch's own deprecation notices while it copies its tree specs
        warnings.simplefilter("ignore")
        ep = copy.deepcopy(ep)  # the caller's program stays as it was
    names = {n.name: fn for n, fn in safe}
    for n in ep.graph.nodes:
        if n.name in names:
            n.target = names[n.name]
    ep.graph_module.recompile()
    return ep, [n for n in inplace if n.name not in names]


def normalise(ep: torch.export.ExportedProgram, source: str = "") -> torch.export.ExportedProgram:
    """The program as the converter reads it: exported in eval mode (else one line saying so), and
    in-place ATen ops (`x.round_()`, `out += identity`) made functional by torch's own
    functionalisation. An element copy into a view (a padded border filled, `out[t] = spike`)
    stays as the converter reads it."""
    for n in ep.graph.nodes:
        why = _training_op(n)
        if why is not None:
            raise FrontendError(f"the model was exported in training mode ({why})", where=source or where(n),
                                hint="call model.eval() before torch.export")
    inplace = [n for n in ep.graph.nodes if n.op == "call_function" and
               getattr(getattr(n.target, "overloadpacket", None), "__name__", "").endswith("_") and
               n.target.overloadpacket is not aten.copy_]
    if not inplace:
        return ep
    ep, inplace = _functional_where_unaliased(ep, inplace)
    if not inplace:
        return ep
    try:
        with warnings.catch_warnings():  # torch's own deprecation notices while it retraces
            warnings.simplefilter("ignore")
            return ep.run_decompositions({})
    except Exception as e:
        raise FrontendError(f"torch could not make the in-place op {inplace[0].name} functional ({first_line(e)})",
                            where=where(inplace[0]), hint="write it out of place (x = x.round() for x.round_())") \
            from None


def from_exported(ep: torch.export.ExportedProgram, input_kind: str = CURRENT, source: str = "",
                  layout: str = "", T: int = 1) -> Graph:
    """Convert an exported program with one tensor input. A model returning a flat tuple or list
    of tensors deploys them all (`Converter.outputs`); one returning (logits, extras...) with
    nested extras is compiled for its first output (`convert.output_heads`). `layout` "TB" / "BT": the model takes its
    input with a time axis of length T first / second (multi-step research code). A program holding a
    peer's layer that only its module carries (`peers.exported_refusal`) is refused in one line
    pointing to the module path."""
    hit = peers.exported_refusal(ep.graph.nodes)
    if hit is not None:
        n, msg, hint = hit
        raise FrontendError(msg, where=source or where(n), hint=hint)
    ep = normalise(ep, source)
    conv = ExportConverter(input_kind=input_kind)
    sig = ep.graph_signature
    state = dict(ep.state_dict)
    consts = dict(getattr(ep, "constants", {}) or {})
    p2 = dict(sig.inputs_to_parameters)
    b2 = dict(sig.inputs_to_buffers)
    c2 = dict(getattr(sig, "inputs_to_lifted_tensor_constants", {}) or {})
    # the user input's placeholder by its position among the program's inputs: torch's retrace
    # of an in-place op (`normalise`) renames a placeholder called `input` (nn.Sequential's and
    # many research models' argument) to `input_1` and leaves the signature's name as it was
    placeholders = [n.name for n in ep.graph.find_nodes(op="placeholder")]  # (in graph order)
    user_inputs = [name for name, spec in zip(placeholders, sig.input_specs) if spec.kind == InputKind.USER_INPUT]
    if len(user_inputs) != 1:
        raise FrontendError(f"model takes {len(user_inputs)} tensor inputs; snncc compiles single-input models",
                            where=source or "exported program")
    if layout:
        conv.layout, conv.T = layout, int(T)
    out_node = next(n for n in ep.graph.nodes if n.op == "output")
    outs = out_node.args[0]
    outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
    spec = getattr(getattr(ep, "call_spec", None), "out_spec", None)
    heads = output_heads(pytree.tree_unflatten(outs, spec) if spec is not None and spec.num_leaves == len(outs)
                         else outs[0] if outs else None)
    for h in heads:
        if not isinstance(h, fx.Node):
            raise FrontendError("a deployed output of the model is not a tensor", where=source or "exported program")
    keep = needed_nodes(ep.graph.nodes, heads)
    conv.live = keep
    for n in ep.graph.nodes:
        if n.op == "call_function" and n not in keep:
            continue  # computed only for the model's other outputs (or not at all)
        if n.op == "placeholder":
            if n.name in p2:
                conv.values[n] = state[p2[n.name]]
            elif n.name in b2:
                key = b2[n.name]
                conv.values[n] = state[key] if key in state else consts[key]
            elif n.name in c2:
                conv.values[n] = consts[c2[n.name]]
            elif n.name in user_inputs:
                val = n.meta.get("val")
                conv.input(n, tuple(int(s) for s in val.shape))
            else:
                raise FrontendError(f"unexpected graph input {n.name}", where=source)
        elif n.op == "call_function":
            if n in conv._consumed or conv.fold_constant(n):
                continue
            call = conv.canon(n)
            conv.emit(n, conv.resolve(call))
        elif n.op == "output":
            conv.outputs(n, [conv.values[h] for h in heads], heads)
        else:
            raise FrontendError(f"unsupported fx node kind {n.op}", where=where(n))
    g = conv.graph
    g.meta["frontend"] = "torch.export"
    if len(outs) > len(heads):
        g.meta["outputs_ignored"] = len(outs) - len(heads)  # the model's extras: its first output is the prediction
    if layout:
        g.meta["input_layout"] = layout
    if conv.T:
        g.T = conv.T
        g.meta["model_T"] = conv.T  # the model adds its own time axis (repeat over T)
    return g


def export_module(model: torch.nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    try:
        return torch.export.export(model.eval(), (example,), strict=False)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        raise FrontendError(f"torch.export failed: {msg}", where=type(model).__name__,
                            hint="retry with --frontend fx (symbolic_trace with SFA neurons as leaves)") from None
