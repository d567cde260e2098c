"""Fallback front end: `torch.fx.symbolic_trace` with SFA neurons as leaf modules.

Used for models `torch.export` cannot take, and for stateful (multi-timestep) neurons, whose
membrane lives across calls and is recognised by module class rather than by pattern.
"""

from __future__ import annotations

import operator

import contextlib
import io
import logging

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.passes.shape_prop import ShapeProp

from snncc.errors import FrontendError
from snncc.frontend import peers
from snncc.frontend.calls import Call, where
from snncc.frontend.convert import Converter, needed_nodes, neuron_module_classes, output_heads
from snncc.ir.graph import Graph
from snncc.ir.ops import CURRENT


def is_neuron_module(m: nn.Module) -> bool:
    return type(m).__name__ in neuron_module_classes() and hasattr(m, "D")


class _LeafTracer(fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return is_neuron_module(m) or peers.is_peer_module(m) or super().is_leaf_module(m, qualname)


def _dropout(x, training) -> Call:
    """F.dropout is the identity only with training=False (its default is True: random)."""
    return Call("dropout_training", (), {}) if training else Call("identity", (x,), {})


def _module_call(m: nn.Module, args: tuple, name: str = "") -> Call:
    x = args[0]
    peer = peers.module_call(m, x, name)
    if peer is not None:
        return peer
    if is_neuron_module(m):
        norm = m.norm if getattr(m, "norm", None) is not None else m.D
        return Call("neuron", (x, m.D, norm, getattr(m, "rounding", "half_even"), getattr(m, "stateful", False)), {})
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        return Call("conv", (x, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups), {})
    if isinstance(m, nn.Linear):
        return Call("linear", (x, m.weight, m.bias), {})
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return Call("batchnorm", (x, m.weight, m.bias, m.running_mean, m.running_var, m.eps), {})
    if isinstance(m, nn.AvgPool2d):
        return Call("pool", (x, m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad,
                             m.divisor_override), {})
    if isinstance(m, nn.AdaptiveAvgPool2d):
        return Call("adaptive_pool", (x, m.output_size), {})
    if isinstance(m, nn.MaxPool2d):
        return Call("max_pool", (x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode), {})
    if isinstance(m, nn.Flatten):
        return Call("reshape", (x,), {})
    if isinstance(m, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity)):
        return Call("identity", (x,), {})  # dropout in eval
    if isinstance(m, (nn.ZeroPad2d, nn.ConstantPad2d)):
        return Call("pad", (x, m.padding, "constant", getattr(m, "value", 0.0)), {})
    if isinstance(m, nn.Upsample) and m.mode == "nearest":
        return Call("upsample", (x,), {})
    if isinstance(m, nn.Upsample):
        return Call("bilinear", (x, bool(m.align_corners)), {}) if m.mode == "bilinear" else \
            Call("interpolate", (x, m.mode), {})
    return Call(f"module {type(m).__name__}", (), {})


_FUNCTIONS = {
    operator.add: lambda a, b: Call("add", (a, b), {}),
    torch.add: lambda a, b, alpha=1: Call("add", (a, b), {"alpha": alpha}),
    operator.mul: lambda a, b: Call("mul", (a, b), {}),
    torch.mul: lambda a, b: Call("mul", (a, b), {}),
    operator.truediv: lambda a, b: Call("div", (a, b), {}),
    operator.matmul: lambda a, b: Call("matmul", (a, b), {}),
    torch.matmul: lambda a, b: Call("matmul", (a, b), {}),
    torch.flatten: lambda x, *a, **k: Call("reshape", (x,), {}),
    torch.reshape: lambda x, *a, **k: Call("reshape", (x,), {}),
    torch.mean: lambda x, dim=None, keepdim=False: Call("mean", (x, dim, keepdim), {}),
    torch.transpose: lambda x, d0, d1: Call("transpose", (x, d0, d1), {}),
    torch.permute: lambda x, dims: Call("permute", (x, dims), {}),
    torch.clamp: lambda x, min=None, max=None: Call("clamp", (x, min, max), {}),
    torch.round: lambda x: Call("round", (x,), {}),
    torch.floor: lambda x: Call("floor", (x,), {}),
    F.avg_pool2d: lambda x, *a, **k: Call("pool", (x, *a), k),
    F.adaptive_avg_pool2d: lambda x, size: Call("adaptive_pool", (x, size), {}),
    F.max_pool2d: lambda x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False: (
        Call("max_pool", (x, kernel_size, stride, padding, dilation, ceil_mode), {})),
    F.interpolate: lambda x, size=None, scale_factor=None, mode="nearest", *a, **k: (
        Call("upsample", (x,), {}) if mode in ("nearest", "nearest-exact") else
        Call("bilinear", (x, bool(k.get("align_corners") or (a[0] if a else False))), {}) if mode == "bilinear" else
        Call("interpolate", (x, mode), {})),
    F.dropout: lambda x, p=0.5, training=True, *a, **k: _dropout(x, training),
    F.dropout2d: lambda x, p=0.5, training=True, *a, **k: _dropout(x, training),
    torch.cat: lambda xs, dim=0: Call("cat", (xs, dim), {}),
    F.pad: lambda x, pad, mode="constant", value=None: Call("pad", (x, pad, mode, value), {}),
}

_METHODS = {
    "flatten": lambda x, *a, **k: Call("reshape", (x,), {}),
    "reshape": lambda x, *a, **k: Call("reshape", (x,), {}),
    "view": lambda x, *a, **k: Call("reshape", (x,), {}),
    "unsqueeze": lambda x, *a, **k: Call("reshape", (x,), {}),
    "squeeze": lambda x, *a, **k: Call("reshape", (x,), {}),
    "contiguous": lambda x: Call("identity", (x,), {}),
    "transpose": lambda x, d0, d1: Call("transpose", (x, d0, d1), {}),
    "permute": lambda x, *dims: Call("permute", (x, list(dims[0]) if len(dims) == 1 and isinstance(dims[0], (list, tuple)) else list(dims)), {}),
    "mean": lambda x, dim=None, keepdim=False: Call("mean", (x, dim, keepdim), {}),
    "sum": lambda x, dim=None, keepdim=False: Call("sum", (x, dim, keepdim), {}),
    "clamp": lambda x, min=None, max=None: Call("clamp", (x, min, max), {}),
    "round": lambda x: Call("round", (x,), {}),
    "floor": lambda x: Call("floor", (x,), {}),
    "__add__": lambda a, b: Call("add", (a, b), {}),
    "add": lambda a, b: Call("add", (a, b), {}),
    "mul": lambda a, b: Call("mul", (a, b), {}),
    "div": lambda a, b: Call("div", (a, b), {}),
    "matmul": lambda a, b: Call("matmul", (a, b), {}),
}


_PYTHON_OPS = {operator.getitem, operator.floordiv, operator.sub, int}


class FxConverter(peers.PeerOps, Converter):
    def c_shape(self, fxn, x, dim=None):
        """x.shape / x.size(): the concrete batched shape recorded by shape propagation."""
        shape = tuple(int(s) for s in fxn.args[0].meta["tensor_meta"].shape)
        return shape if dim is None else shape[dim]

    def emit(self, fxn, call):
        # Python arithmetic on shape numbers first: operator.mul/add on ints is not a tensor op.
        if call.op in ("mul", "add") and not any(self.is_tensor(a) for a in call.args):
            fn = operator.mul if call.op == "mul" else operator.add
            self.values[fxn] = fn(*call.args)
            return
        super().emit(fxn, call)

    def __init__(self, gm: fx.GraphModule, **kw):
        super().__init__(**kw)
        self.gm = gm

    def canon(self, n: fx.Node) -> Call:
        if n.op == "call_module":
            return _module_call(self.gm.get_submodule(n.target), n.args, f"module {n.target}")
        if n.op == "call_function":
            if n.target in _PYTHON_OPS:
                return Call("python", (n.target, *n.args), {})
            if n.target is getattr and n.args[1] == "shape":
                return Call("shape", (n.args[0],), {})
            fn = _FUNCTIONS.get(n.target)
            if fn is None:
                return Call(getattr(n.target, "__name__", str(n.target)), (), {})
            return fn(*n.args, **n.kwargs)
        if n.op == "call_method":
            if n.target == "size":
                return Call("shape", (n.args[0], *n.args[1:]), {})
            fn = _METHODS.get(n.target)
            if fn is None:
                return Call(f"method {n.target}", (), {})
            return fn(*n.args, **n.kwargs)
        if n.op == "get_attr":
            return Call("get_attr", (), {})
        raise FrontendError(f"unsupported fx node kind {n.op}", where=where(n))

    def resolve(self, call: Call) -> Call:
        def r(a):
            if isinstance(a, fx.Node):
                return self.values[a]
            if isinstance(a, (list, tuple)):
                return type(a)(r(x) for x in a)
            return a

        return Call(call.op, tuple(r(a) for a in call.args), {k: r(v) for k, v in call.kwargs.items()})


def from_module_fx(model: nn.Module, example: torch.Tensor, input_kind: str = CURRENT, T: int = 1) -> Graph:
    model = model.eval()
    try:
        graph = _LeafTracer().trace(model)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        raise FrontendError(f"torch.fx.symbolic_trace failed: {msg}", where=type(model).__name__,
                            hint="try the default torch.export front end") from None
    gm = fx.GraphModule(model, graph)
    try:  # ShapeProp prints the traceback of a failing node itself: keep it for --debug only
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()) as printed:
            ShapeProp(gm).propagate(example)
    except Exception as e:
        logging.getLogger(__name__).debug("%s", printed.getvalue())
        cause = e.__cause__ or e
        msg = str(cause).strip().splitlines()[0][:200] if str(cause).strip() else cause.__class__.__name__
        raise FrontendError(f"the model does not run on a per-sample input of shape {tuple(example.shape[1:])} "
                            f"({cause.__class__.__name__}: {msg})", where=type(model).__name__,
                            hint="check --input-shape (per sample, without the batch axis)") from None
    _reset_neurons(model)
    conv = FxConverter(gm, input_kind=input_kind, root=model)
    heads = output_heads(next(n for n in gm.graph.nodes if n.op == "output").args[0])
    keep = needed_nodes(gm.graph.nodes, heads) if all(isinstance(h, fx.Node) for h in heads) else None
    conv.live = keep
    for n in gm.graph.nodes:
        if keep is not None and n.op.startswith("call") and n not in keep:
            continue  # computed only for the model's other outputs
        if n.op == "placeholder":
            if conv.batch is not None:
                raise FrontendError("model takes more than one input", where=where(n))
            conv.input(n, tuple(int(s) for s in n.meta["tensor_meta"].shape))
        elif n.op == "get_attr":
            conv.values[n] = _get_attr(gm, n.target)
        elif n.op == "output":
            vals = []
            for h in heads:  # convert.output_heads
                v = conv.values.get(h)
                while isinstance(v, tuple) and v:  # a leaf returning (spikes, membrane), e.g. snntorch output=True
                    v = v[0]
                vals.append(v)
            conv.outputs(n, vals, [None] * len(heads))
        else:
            if n in conv._consumed:
                continue
            if n.op in ("call_function", "call_method") and conv.fold_constant(n):
                continue
            conv.emit(n, conv.resolve(conv.canon(n)))
    g = conv.graph
    g.T = T
    g.meta["frontend"] = "torch.fx"
    return g


def _get_attr(gm, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _reset_neurons(model: nn.Module) -> None:
    """Shape propagation ran the model once; clear any membrane a stateful neuron kept."""
    for m in model.modules():
        if is_neuron_module(m) and hasattr(m, "reset_state"):
            m.reset_state()
        elif is_neuron_module(m) and hasattr(m, "reset"):  # snncc.nn.SFANeuron (stateful)
            m.reset()
        elif peers.is_peer_module(m) and hasattr(m, "reset_mem"):  # snntorch
            m.reset_mem()
        elif peers.is_peer_module(m) and hasattr(m, "reset_states"):  # sinabs
            m.reset_states()
        elif peers.is_peer_module(m) and hasattr(m, "reset"):  # SpikingJelly
            m.reset()
