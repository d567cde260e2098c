"""Front end for ONNX: a model as `torch.onnx.export` writes it (TorchScript exporter, opset 13-20)
mapped onto the spiking IR.

SFA neurons are recognised by pattern, as in the fx front ends: `Clip(x, 0, D) -> Round (-> Div
Norm | Mul 1/Norm)` or `Clip -> Add 0.5 -> Floor (-> Div)`. Every other op is reduced to the same
canonical calls the fx front ends use and handed to `convert.Converter`, so the IR nodes, their
attributes and shape checks are the ones `torch.export` models get. Shape arithmetic the exporter
leaves in the graph (`Shape -> Slice -> Concat -> Reshape`) is folded to constants with
`onnx.reference`, using the static shapes the IR infers. Unsupported ops fail naming the ONNX node.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from snncc.errors import FrontendError, LoadError
from snncc.frontend.convert import Converter
from snncc.ir.graph import Graph
from snncc.ir.ops import CURRENT, takes_operand
from snncc.passes.base import out_channel_axis

# Ops evaluated in numpy when all their inputs are constants (shape arithmetic, constant tensors).
_FOLDABLE = {"Constant", "ConstantOfShape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Cast",
             "Reshape", "Mul", "Div", "Add", "Sub", "Range", "Transpose", "Identity", "Sqrt", "Reciprocal",
             "Neg", "Expand", "Equal", "Where", "Floor", "Ceil", "ReduceProd", "Flatten"}
# Ops whose IR node is named after the module that produced them (like conv/linear under torch.export).
_MODULE_OPS = {"Conv", "Gemm", "MatMul", "BatchNormalization", "Clip"}


@dataclass
class _Val:
    shape: tuple


@dataclass
class _Ref:
    """Stands in for an fx node where the shared Converter asks for one (naming, batch checks)."""

    name: str
    meta: dict = field(default_factory=dict)
    op: str = "call_function"
    target: str = ""


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _key(node) -> tuple | None:
    """Identity of an ONNX node (protobuf hands out fresh wrappers, so `is` does not work)."""
    return None if node is None else tuple(node.output)


def _where(node) -> str:
    return f"ONNX node {node.name or '<unnamed>'!r} ({node.op_type})"


def _base_name(node) -> str:
    parts = [p for p in (node.name or node.op_type).strip("/").split("/") if p]
    if not parts:
        return node.op_type.lower()
    if len(parts) >= 2:
        return parts[-2] if node.op_type in _MODULE_OPS else f"{parts[-2]}.{parts[-1].lower()}"
    return parts[-1].lower()


class OnnxConverter:
    """Walks an ONNX graph in order. `values` maps an ONNX tensor name to an IR node name (activation)
    or a numpy array (constant)."""

    def __init__(self, model, input_kind: str = CURRENT, source: str = ""):
        from onnx import numpy_helper

        self.model = model
        self.source = source or "ONNX model"
        self.conv = Converter(input_kind=input_kind)
        self.values: dict[str, object] = {}
        self.consumers: dict[str, list] = {}
        self.consumed: set[tuple] = set()  # nodes by their output names
        g = model.graph
        for init in g.initializer:
            self.values[init.name] = numpy_helper.to_array(init).astype(np.float64) \
                if numpy_helper.to_array(init).dtype.kind == "f" else numpy_helper.to_array(init)
        for n in g.node:
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(n)
        self.graph_outputs = {o.name for o in g.output}
        for n in g.node:  # neuron patterns look ahead at constants defined later in the list
            if n.op_type == "Constant":
                self.fold(n, [])

    # ---- helpers ------------------------------------------------------------------------
    def is_tensor(self, name: str) -> bool:
        return isinstance(self.values.get(name), str)

    def val(self, node, i: int):
        if i >= len(node.input) or not node.input[i]:
            return None
        name = node.input[i]
        if name not in self.values:
            raise FrontendError(f"input {name!r} is not produced by an earlier node", where=_where(node))
        return self.values[name]

    def const(self, node, i: int, what: str) -> np.ndarray | None:
        v = self.val(node, i)
        if v is None:
            return None
        if isinstance(v, str):
            raise FrontendError(f"expected a constant {what}, got an activation tensor", where=_where(node),
                                hint="only initializers and constants may be used here")
        return np.asarray(v)

    def batched(self, ir_name: str) -> tuple:
        return (self.conv.batch,) + tuple(self.conv.graph[ir_name].shape)

    def only_consumer(self, tensor: str):
        cs = self.consumers.get(tensor, [])
        if len(cs) != 1 or tensor in self.graph_outputs:
            return None
        return cs[0]

    def ref(self, node, out_shape: tuple | None = None) -> _Ref:
        r = _Ref(_base_name(node))
        if out_shape is not None:
            r.meta["val"] = _Val(tuple(out_shape))
        return r

    @staticmethod
    def t(a):
        """Constants go to the Converter as torch tensors (scalars as floats), like fx constants."""
        if a is None:
            return None
        a = np.asarray(a, dtype=np.float64)
        return float(a) if a.ndim == 0 else torch.from_numpy(a.copy())

    # ---- the walk ---------------------------------------------------------------------------
    def build(self) -> Graph:
        g = self.model.graph
        inits = {i.name for i in g.initializer}
        user_inputs = [i for i in g.input if i.name not in inits]
        if len(user_inputs) != 1:
            raise FrontendError(f"model takes {len(user_inputs)} inputs; snncc compiles single-input models",
                                where=self.source)
        inp = user_inputs[0]
        shape = onnx_input_shape(inp, self.source)
        self.conv.input(None, shape)
        self.values[inp.name] = "input"
        for node in g.node:
            if _key(node) in self.consumed:
                continue
            try:
                self.emit(node)
            except FrontendError as e:
                if e.where and e.where.startswith("ONNX node"):
                    raise
                raise FrontendError(e.what, where=_where(node), hint=e.hint) from None
        if len(g.output) != 1:
            raise FrontendError(f"model returns {len(g.output)} outputs; snncc compiles single-output models",
                                where=self.source)
        out = g.output[0].name
        if not self.is_tensor(out):
            raise FrontendError("model output is not computed from the input", where=self.source)
        self.conv.add(None, "output", [self.values[out]], base="output")
        graph = self.conv.graph
        graph.meta["frontend"] = "onnx"
        return graph

    def emit(self, node) -> None:
        ins = [self.val(node, i) for i in range(len(node.input))]
        if node.op_type == "Shape":
            x = ins[0]
            shape = np.asarray(self.batched(x) if isinstance(x, str) else np.shape(x), dtype=np.int64)
            a = _attrs(node)
            self.values[node.output[0]] = shape[a.get("start", 0):a.get("end", len(shape))]
            return
        if node.op_type in _FOLDABLE and not any(isinstance(v, str) for v in ins):
            self.fold(node, ins)
            return
        handler = getattr(self, f"o_{node.op_type}", None)
        if handler is None:
            raise FrontendError(f"unsupported ONNX op {node.op_type}", where=_where(node),
                                hint="snncc maps Conv, Gemm/MatMul(+Add bias), BatchNormalization, Add, Mul/Div by "
                                     "constants, ReduceMean/GlobalAveragePool, AveragePool, Reshape/Flatten/"
                                     "Transpose, MatMul of spikes, Concat, Resize (nearest), Identity/Dropout and "
                                     "Clip->Round neurons")
        out = handler(node, *ins)
        self.values[node.output[0]] = out

    def fold(self, node, ins) -> None:
        from onnx.reference import ReferenceEvaluator

        feeds = {}
        for name, v in zip(node.input, ins):
            if name:
                arr = np.asarray(v)
                feeds[name] = arr.astype(np.float32) if arr.dtype == np.float64 else arr
        try:
            outs = ReferenceEvaluator(node).run(None, feeds)
        except Exception as e:
            raise FrontendError(f"cannot evaluate constant {node.op_type} ({e.__class__.__name__}: {e})",
                                where=_where(node)) from None
        for name, o in zip(node.output, outs):
            o = np.asarray(o)
            self.values[name] = o.astype(np.float64) if o.dtype.kind == "f" else o

    def layout_shape(self, node, x: str, ins) -> tuple:
        """Batched output shape of a layout op, by running it on zeros of the input's shape."""
        from onnx.reference import ReferenceEvaluator

        feeds = {node.input[0]: np.zeros(self.batched(x), dtype=np.float32)}
        for name, v in zip(node.input[1:], ins[1:]):
            if name:
                feeds[name] = np.asarray(v)
        try:
            return tuple(int(s) for s in ReferenceEvaluator(node).run(None, feeds)[0].shape)
        except Exception as e:
            raise FrontendError(f"cannot compute the output shape ({e.__class__.__name__}: {e})",
                                where=_where(node)) from None

    # ---- ops -----------------------------------------------------------------------------------
    def o_Identity(self, node, x, *rest):
        return x

    o_Dropout = o_Identity

    def o_Cast(self, node, x, *rest):
        if _attrs(node).get("to") not in (1, 10, 11, 16):  # float, float16, double, bfloat16
            raise FrontendError("cast of an activation to a non-float type", where=_where(node))
        return x

    def o_Conv(self, node, x, w, b=None):
        a = _attrs(node)
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID"):
            raise FrontendError(f"auto_pad={a['auto_pad']!r} is not supported", where=_where(node),
                                hint="export with explicit padding")
        w = self.const(node, 1, "conv weight")
        nd = w.ndim - 2
        pads = list(a.get("pads", [0] * (2 * nd)))
        if pads[:nd] != pads[nd:]:
            raise FrontendError(f"asymmetric padding {pads}", where=_where(node), hint="use symmetric padding")
        bias = self.const(node, 2, "conv bias")
        return self.conv.c_conv(self.ref(node), x, self.t(w), self.t(bias), list(a.get("strides", [1] * nd)),
                                pads[:nd], list(a.get("dilations", [1] * nd)), int(a.get("group", 1)))

    def o_Gemm(self, node, x, *_):
        a = _attrs(node)
        if a.get("transA", 0):
            raise FrontendError("Gemm with transA=1 (activation transposed)", where=_where(node))
        if not isinstance(x, str):
            raise FrontendError("Gemm whose first operand is a constant", where=_where(node))
        w = self.const(node, 1, "Gemm weight")
        w = (w if a.get("transB", 0) else w.T) * float(a.get("alpha", 1.0))
        c = self.const(node, 2, "Gemm bias")
        bias = None
        if c is not None:
            c = np.broadcast_to(c * float(a.get("beta", 1.0)), (1, w.shape[0]))
            bias = c[0]
        return self.conv.c_linear(self.ref(node), x, self.t(w), self.t(bias))

    def o_MatMul(self, node, a, b):
        if isinstance(a, str) and isinstance(b, str):
            return self.spike_product(node, a, b)
        if isinstance(a, str):
            w = self.const(node, 1, "matrix")
            if w.ndim != 2:
                raise FrontendError(f"MatMul with a constant of rank {w.ndim}", where=_where(node))
            return self.conv.c_linear(self.ref(node), a, self.t(w.T), None)
        raise FrontendError("MatMul of a constant by an activation is not supported", where=_where(node),
                            hint="write it as activation @ weight")

    def spike_product(self, node, a: str, b: str) -> str:
        # Fuse (a b) c and a (b c) into one three-operand product when the inner one has no other
        # user: its integer result is never materialised on chip (same rule as the fx front ends).
        g = self.conv.graph
        for inner, tensor, other, order in ((a, node.input[0], b, "left"), (b, node.input[1], a, "right")):
            n = g[inner]
            if takes_operand(n) and _key(self.only_consumer(tensor)) == _key(node):
                ins = n.inputs + [other] if order == "left" else [other] + n.inputs
                g.remove(inner)
                return self.conv.add(self.ref(node), n.op, ins, {"order": order})
        return self.conv.add(self.ref(node), "spike_product", [a, b], {"order": "left"})

    def o_Add(self, node, a, b):
        if isinstance(a, str) and isinstance(b, str):
            return self.conv.c_add(self.ref(node), a, b)
        x, c, ti = (a, b, 0) if isinstance(a, str) else (b, a, 1)
        if self.fold_bias(node, x, node.input[ti], np.asarray(c)):
            return x
        raise FrontendError("adding a constant to an activation is not supported outside a layer bias",
                            where=_where(node), hint="express constants as a conv/linear bias")

    def fold_bias(self, node, x: str, tensor: str, c: np.ndarray) -> bool:
        """MatMul + Add(bias), as the exporter writes nn.Linear on 3-d input: move c into the layer."""
        n = self.conv.graph[x]
        axis = out_channel_axis(n)  # its "out_channels" cell: None without weights per output channel
        if axis is None or "bias" in n.params or _key(self.only_consumer(tensor)) != _key(node):
            return False
        co = n.params["weight"].shape[0]
        full = self.batched(x)
        try:
            bc = np.broadcast_to(c, full[1:]) if c.ndim < len(full) else np.broadcast_to(c, full)[0]
        except ValueError:
            return False
        vec = np.moveaxis(bc, axis, 0).reshape(co, -1)
        if not np.all(vec == vec[:, :1]):
            return False
        n.params["bias"] = vec[:, 0].astype(np.float64).copy()
        self.conv.graph.infer()
        return True

    def o_Sub(self, node, a, b):
        if isinstance(a, str) and isinstance(b, str):
            neg = self.conv.add(self.ref(node), "scale", [b], {}, {"factor": np.asarray(-1.0)},
                                base=f"{_base_name(node)}_neg")
            return self.conv.c_add(self.ref(node), a, neg)
        raise FrontendError("subtracting a constant from an activation is not supported", where=_where(node))

    def o_Mul(self, node, a, b):
        return self.conv.c_mul(self.ref(node), a if isinstance(a, str) else self.t(a),
                               b if isinstance(b, str) else self.t(b))

    def o_Div(self, node, a, b):
        return self.conv.c_div(self.ref(node), a if isinstance(a, str) else self.t(a),
                               b if isinstance(b, str) else self.t(b))

    def o_BatchNormalization(self, node, x, *_):
        a = _attrs(node)
        if a.get("training_mode", 0):
            raise FrontendError("BatchNormalization in training mode", where=_where(node),
                                hint="export the model in eval() mode")
        if len(node.output) > 1 and any(node.output[1:]):
            raise FrontendError("BatchNormalization with running-statistics outputs", where=_where(node))
        w, b, m, v = (self.const(node, i, k) for i, k in ((1, "scale"), (2, "bias"), (3, "mean"), (4, "var")))
        return self.conv.c_batchnorm(self.ref(node), x, self.t(w), self.t(b), self.t(m), self.t(v),
                                     float(a.get("epsilon", 1e-5)))

    def _axes(self, node, ins):
        a = _attrs(node)
        axes = a.get("axes")
        if axes is None and len(ins) > 1 and ins[1] is not None:
            axes = [int(i) for i in np.asarray(self.const(node, 1, "axes")).reshape(-1)]
        if axes is None or len(axes) == 0:
            if a.get("noop_with_empty_axes", 0):
                return None, a
            raise FrontendError("reduction over all axes includes the batch axis", where=_where(node))
        return list(axes), a

    def o_ReduceMean(self, node, x, *rest):
        axes, a = self._axes(node, (x, *rest))
        if axes is None:
            return x
        return self.conv.c_mean(self.ref(node), x, axes, bool(a.get("keepdims", 1)))

    def o_ReduceSum(self, node, x, *rest):
        axes, a = self._axes(node, (x, *rest))
        if axes is None:
            return x
        return self.conv.c_sum(_Ref(_base_name(node)), x, axes, bool(a.get("keepdims", 1)))

    def o_GlobalAveragePool(self, node, x):
        if len(self.conv.graph[x].shape) != 3:
            raise FrontendError("GlobalAveragePool on a non-image tensor", where=_where(node))
        return self.conv.c_adaptive_pool(self.ref(node), x, (1, 1))

    def o_AveragePool(self, node, x):
        a = _attrs(node)
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID"):
            raise FrontendError(f"auto_pad={a['auto_pad']!r} is not supported", where=_where(node))
        k = list(a["kernel_shape"])
        pads = list(a.get("pads", [0] * 2 * len(k)))
        if pads[:len(k)] != pads[len(k):]:
            raise FrontendError(f"asymmetric padding {pads}", where=_where(node))
        return self.conv.c_pool(self.ref(node), x, k, list(a.get("strides", [1] * len(k))), pads[:len(k)],
                                bool(a.get("ceil_mode", 0)), bool(a.get("count_include_pad", 0)))

    def _layout(self, node, x, *ins):
        if not isinstance(x, str):
            raise FrontendError("layout op on a constant", where=_where(node))
        shape = self.layout_shape(node, x, (x, *ins))
        return self.conv.c_reshape(self.ref(node, shape), x)

    o_Reshape = o_Flatten = o_Squeeze = o_Unsqueeze = _layout

    def o_Transpose(self, node, x):
        perm = _attrs(node).get("perm")
        rank = len(self.conv.graph[x].shape) + 1
        perm = list(perm) if perm is not None else list(reversed(range(rank)))
        return self.conv.c_permute(self.ref(node), x, perm)

    def o_Concat(self, node, *xs):
        """Concat of activations (torch.cat): each placed at its offset along the axis (Converter.c_cat)."""
        if not all(isinstance(x, str) for x in xs):
            raise FrontendError("Concat of an activation with a constant", where=_where(node),
                                hint="concatenate activations only (a constant block is a bias of the next layer)")
        axis = int(_attrs(node).get("axis", 0))
        return self.conv.c_cat(self.ref(node), list(xs), axis)

    def o_Resize(self, node, x, *ins):
        """Resize in mode "nearest" by integer factors of (H, W): the IR `upsample` (a 0/1 fan-out),
        checked exactly by running the node on a map of distinct values (every coordinate mode and
        rounding the exporters write must repeat each pixel). Mode "linear" of (H, W): the IR
        `bilinear` whose weights (align_corners False or True) reproduce the node on a random map;
        other modes (cubic, other coordinate transformations) are refused."""
        from onnx.reference import ReferenceEvaluator

        mode = _attrs(node).get("mode", b"nearest")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        if not isinstance(x, str):
            raise FrontendError("Resize of a constant", where=_where(node))
        full = self.layout_shape(node, x, (x, *ins))
        src = self.batched(x)
        if mode == "linear" and len(src) == 4 and full[:2] == src[:2]:
            return self._resize_linear(node, x, ins, src, full)
        if mode != "nearest":
            raise FrontendError(f"Resize mode {mode!r} is not deployable: only 'nearest' (a 0/1 fan-out) and "
                                "'linear' of (H, W) (bilinear, fixed weights) are", where=_where(node),
                                hint="use F.interpolate(..., mode='bilinear') or mode='nearest'")
        if len(src) != 4 or full[:2] != src[:2] or full[2] % src[2] or full[3] % src[3]:
            raise FrontendError(f"Resize {src[1:]} -> {full[1:]} is not nearest upsampling of (H, W) by integer "
                                "factors", where=_where(node), hint="use scale_factor=2 (or any integer)")
        probe = np.arange(float(np.prod(src[1:])), dtype=np.float32).reshape((1,) + tuple(src[1:]))
        feeds = {node.input[0]: probe}
        for name, v in zip(node.input[1:], ins):
            if name:
                feeds[name] = np.asarray(v) if not (np.asarray(v).ndim == 1 and np.asarray(v).size == 4 and
                                                    np.asarray(v).dtype.kind == "i") else \
                    np.asarray([1, *np.asarray(v)[1:]], dtype=np.asarray(v).dtype)  # sizes: batch 1
        got = ReferenceEvaluator(node).run(None, feeds)[0]
        want = probe.repeat(full[2] // src[2], 2).repeat(full[3] // src[3], 3)
        if got.shape != want.shape or not np.array_equal(got, want):
            raise FrontendError("Resize (nearest) does not repeat each pixel (its coordinate transformation "
                                "picks other neighbours)", where=_where(node),
                                hint="export F.interpolate(..., mode='nearest') with an integer scale_factor")
        return self.conv.c_upsample(self.ref(node, full), x)

    def _resize_linear(self, node, x, ins, src, full):
        from onnx.reference import ReferenceEvaluator

        from snncc.ir.ops import bilinear_weights

        probe = np.random.default_rng(0).random((1,) + tuple(src[1:])).astype(np.float32)
        feeds = {node.input[0]: probe}
        for name, v in zip(node.input[1:], ins):
            if name:
                v = np.asarray(v)
                feeds[name] = v if not (v.ndim == 1 and v.size == 4 and v.dtype.kind == "i") else \
                    np.asarray([1, *v[1:]], dtype=v.dtype)  # sizes: batch 1
        got = ReferenceEvaluator(node).run(None, feeds)[0].astype(np.float64)
        for ac in (False, True):
            want = np.einsum("bchw,Hh,Ww->bcHW", probe.astype(np.float64), bilinear_weights(src[2], full[2], ac),
                             bilinear_weights(src[3], full[3], ac))
            if got.shape == want.shape and np.allclose(got, want, rtol=0, atol=1e-5):
                return self.conv.c_bilinear(self.ref(node, full), x, ac)
        raise FrontendError("Resize (linear) is not torch's bilinear interpolation with align_corners False or "
                            "True (another coordinate transformation or size rule)", where=_where(node),
                            hint="export F.interpolate(..., mode='bilinear') with size= or an integer scale_factor")

    # ---- neurons ------------------------------------------------------------------------------
    def o_Clip(self, node, x, *bounds):
        a = _attrs(node)
        lo = bounds[0] if len(bounds) > 0 and bounds[0] is not None else a.get("min")
        hi = bounds[1] if len(bounds) > 1 and bounds[1] is not None else a.get("max")
        if isinstance(lo, str) or isinstance(hi, str):
            raise FrontendError("Clip with activation bounds", where=_where(node))
        lo = None if lo is None else float(np.asarray(lo))
        hi = None if hi is None else float(np.asarray(hi))
        if not (lo == 0 and hi is not None and hi.is_integer() and hi >= 1):
            raise FrontendError(f"Clip({lo}, {hi}) is not an SFA neuron (expected Clip(x, 0, D) with integer D)",
                                where=_where(node), hint="SFA neurons are Round(Clip(x, 0, D)) / Norm")
        chain = []
        nxt = self.only_consumer(node.output[0])
        rounding = None
        if nxt is not None and nxt.op_type == "Round":
            rounding, chain = "half_even", [nxt]
        elif nxt is not None and nxt.op_type == "Add":
            other = [self.values.get(i) for i in nxt.input if i != node.output[0]]
            fl = self.only_consumer(nxt.output[0])
            if (len(other) == 1 and not isinstance(other[0], str) and np.size(other[0]) == 1
                    and float(np.asarray(other[0]).reshape(-1)[0]) == 0.5 and fl is not None
                    and fl.op_type == "Floor"):
                rounding, chain = "half_up", [nxt, fl]
        if rounding is None:
            raise FrontendError("Clip(x, 0, D) is not followed by Round or (Add 0.5, Floor)", where=_where(node),
                                hint="SFA neurons are Round(Clip(x, 0, D)) / Norm")
        norm = 1.0
        last = chain[-1]
        nd = self.only_consumer(last.output[0])
        if nd is not None and nd.op_type in ("Div", "Mul") and nd.input[0] == last.output[0]:
            c = self.values.get(nd.input[1])
            if not isinstance(c, str) and c is not None and np.size(c) == 1:
                c = float(np.asarray(c).reshape(-1)[0])
                if nd.op_type == "Div" and c != 0:
                    norm, chain = c, chain + [nd]
                elif nd.op_type == "Mul" and c > 0:
                    norm, chain = 1.0 / c, chain + [nd]
        for n in chain:
            self.consumed.add(_key(n))
        out = self.conv.add(self.ref(node), "fire", [x],
                            {"D": int(hi), "norm": float(norm), "rounding": rounding, "stateful": False},
                            base=_base_name(node))
        self.values[chain[-1].output[0]] = out
        return out

    def o_Round(self, node, *a):
        raise FrontendError("Round outside an SFA neuron pattern", where=_where(node),
                            hint="SFA neurons are Round(Clip(x, 0, D)) / Norm")

    def o_Floor(self, node, *a):
        raise FrontendError("Floor outside an SFA neuron pattern", where=_where(node),
                            hint="SFA neurons are Floor(Clip(x, 0, D) + 0.5) / Norm")


def onnx_input_shape(inp, source: str) -> tuple:
    """Batched static input shape; a symbolic batch axis counts as 1."""
    dims = inp.type.tensor_type.shape.dim
    shape = []
    for i, d in enumerate(dims):
        if d.HasField("dim_value") and d.dim_value > 0:
            shape.append(int(d.dim_value))
        elif i == 0:
            shape.append(1)
        else:
            raise LoadError(f"input {inp.name!r} has a symbolic size on axis {i}", where=source,
                            hint="export with a static per-sample shape")
    if len(shape) < 2:
        raise LoadError(f"input {inp.name!r} of rank {len(shape)}: expected (batch, *per-sample shape)",
                        where=source)
    return tuple(shape)


def from_onnx(model, input_kind: str = CURRENT, source: str = "") -> Graph:
    """Convert an `onnx.ModelProto` with one input and one output to the IR (traced level)."""
    return OnnxConverter(model, input_kind=input_kind, source=source).build()


OPSETS = (13, 20)  # the operator sets whose Clip/Round/Conv/... semantics the converter was checked against


def load_onnx(path: str):
    """Read and check an ONNX file; LoadError for anything unreadable."""
    import onnx

    try:
        model = onnx.load(path)
    except Exception as e:  # protobuf DecodeError, truncated external data, ...
        raise LoadError(f"not a readable ONNX model ({e.__class__.__name__}: {_first_line(e)})", where=path) from None
    default = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not default or not OPSETS[0] <= default[0] <= OPSETS[1]:
        raise LoadError(f"ONNX opset {default[0] if default else 'missing'}: snncc reads the standard operators of "
                        f"opsets {OPSETS[0]}-{OPSETS[1]}", where=path,
                        hint=f"export with torch.onnx.export(..., opset_version={OPSETS[1]})")
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise LoadError(f"invalid ONNX model ({e.__class__.__name__}: {_first_line(e)})", where=path) from None
    g = model.graph
    inits = {i.name for i in g.initializer}
    user_inputs = [i for i in g.input if i.name not in inits]
    if len(user_inputs) != 1:
        raise LoadError(f"model takes {len(user_inputs)} inputs; snncc compiles single-input models", where=path)
    return model, onnx_input_shape(user_inputs[0], path)


class OnnxRunner:
    """Runs the ONNX model with onnxruntime on any batch size (exports often have a static batch)."""

    def __init__(self, model):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.name = inp.name
        self.b0 = inp.shape[0] if isinstance(inp.shape[0], int) else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = np.asarray(x.detach().cpu().numpy(), dtype=np.float32)
        if self.b0 is None:
            return torch.from_numpy(self.session.run(None, {self.name: x})[0])
        outs = []
        for i in range(0, x.shape[0], self.b0):
            chunk = x[i:i + self.b0]
            n = chunk.shape[0]
            if n < self.b0:
                chunk = np.concatenate([chunk, np.zeros((self.b0 - n,) + chunk.shape[1:], np.float32)])
            outs.append(self.session.run(None, {self.name: chunk})[0][:n])
        return torch.from_numpy(np.concatenate(outs))


def _first_line(e: Exception) -> str:
    s = str(e).strip()
    return s.splitlines()[0][:200] if s else e.__class__.__name__
