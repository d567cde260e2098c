"""Loading user models from disk and tracing them to the IR.

Accepted inputs (docs/design.md §1, §9):
- a `torch.export` program file (`.pt2`),
- a `state_dict` checkpoint plus `--model-def path/to/file.py:factory` or `package.module:factory`
  (with `--factory-kwargs` JSON),
- a pickled whole module, only with `--trust-pickle` (default loads use `weights_only=True`),
- an ONNX model (`.onnx`, see `onnx_frontend`), a NIR graph (`.nir`, see `snncc.interop.nir_io`).
A factory may return a `MultiStep`-style wrapper (attributes `model` and `T`): the single-step
model is compiled with `T` timesteps.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from dataclasses import dataclass

import torch
import torch.nn as nn

from snncc.errors import FrontendError, LoadError, first_line as _first_line
from snncc.frontend.convert import output_heads, pack_outputs
from snncc.frontend.safe_load import load_checkpoint, load_program
from snncc.ir.graph import Graph
from snncc.ir.ops import CURRENT


@dataclass
class LoadedModel:
    module: nn.Module | None  # the eager model (None for a bare .pt2 program)
    program: "torch.export.ExportedProgram | None"
    input_shape: tuple[int, ...]  # per sample
    T: int = 1
    source: str = ""
    onnx: object = None  # an onnx.ModelProto (.onnx files; module and program are None)
    nir: object = None  # an imported NIR graph as snncc IR (.nir files)
    layout: str = ""  # "TB" / "BT": the module takes (T, B, *shape) / (B, T, *shape) at once (multi-step code)
    output_time_axis: int | None = None  # the model returns (T, B, ...) / (B, T, ...): deployed as its mean over T
    program_module: object = None  # the program run as this module (verify: a float64 copy), fed the input's dtype

    def eager(self, x: torch.Tensor) -> torch.Tensor:
        """Run the original model on (B, *shape) or (T, B, *shape) input, averaging over T."""
        with torch.no_grad():
            if self.onnx is not None:
                if getattr(self, "_onnx_runner", None) is None:
                    from snncc.frontend.onnx_frontend import OnnxRunner

                    self._onnx_runner = OnnxRunner(self.onnx)
                return self._onnx_runner(x)
            if self.nir is not None:  # a NIR file has no other executable form than its IR
                from snncc.sim.reference import run

                return run(self.nir, x.double()).output
            if self.module is None and not self.layout:
                return _run_program(self.program, x, time_axis=self.output_time_axis, fn=self.program_module)
            if self.layout:  # the model takes the whole sequence; x is (B, ...) repeated, or (T, B, ...)
                xs = x if x.dim() == len(self.input_shape) + 2 else x.unsqueeze(0).expand(self.T, *x.shape)
                if self.module is None:
                    return _run_program(self.program, xs.transpose(0, 1) if self.layout == "BT" else xs,
                                        batch_axis=self.layout.index("B"), time_axis=self.output_time_axis,
                                        fn=self.program_module)
                reset_memory(self.module)
                out = model_output(self.module(xs.transpose(0, 1) if self.layout == "BT" else xs),
                                   self.output_time_axis)
                reset_memory(self.module)
                return out
            if self.T > 1:
                from snncc.frontend.fx_trace import _reset_neurons

                _reset_neurons(self.module)
                xs = list(x) if x.dim() == len(self.input_shape) + 2 else [x] * self.T
                out = sum(model_output(self.module(xt), self.output_time_axis) for xt in xs) / len(xs)
                _reset_neurons(self.module)
                return out
            reset_memory(self.module)  # a module that makes T inside forward keeps its membranes between calls
            out = model_output(self.module(x), self.output_time_axis)
            reset_memory(self.module)
            return out


    def set_layout(self, layout: str, T: int | None = None) -> None:
        """The model takes (T, B, *shape) ("TB") or (B, T, *shape) ("BT") at once. A program's input
        shape is fixed at export: its T and per-step shape come from it (a `T` given must agree)."""
        self.layout = layout
        if self.program is not None and layout:
            full = _program_input_shape(self.program, self.source or "program", whole=True)
            if len(full) < 3:
                raise LoadError(f"the program's input {full} has no time axis for input layout {layout}",
                                where=self.source or "program", hint="drop --input-layout")
            own = full[layout.index("T")]
            if T not in (None, 1, own):
                raise LoadError(f"--timesteps {T} differs from the program's time axis {own} (input {full}, layout "
                                f"{layout})", where=self.source or "program",
                                hint=f"drop --timesteps or pass --timesteps {own}")
            self.T, self.input_shape = own, tuple(full[2:])
        elif T is not None:
            self.T = T


def _run_program(ep, x: torch.Tensor, batch_axis: int = 0, time_axis: int | None = None, fn=None) -> torch.Tensor:
    """Run an exported program on any batch size: programs are often exported with a static batch
    (on `batch_axis` of its input; its output is batch-first once averaged over `time_axis`).
    `fn`: the program's module to run instead (a float64 copy, fed x in x's own dtype)."""
    users = list(ep.graph_signature.user_inputs)
    node = next(n for n in ep.graph.nodes if n.op == "placeholder" and n.name == users[0])
    b0 = int(node.meta["val"].shape[batch_axis])
    dtype = node.meta["val"].dtype if fn is None else x.dtype
    fn = ep.module() if fn is None else fn
    outs = []
    for i in range(0, x.shape[batch_axis], b0):
        chunk = x.narrow(batch_axis, i, min(b0, x.shape[batch_axis] - i)).to(dtype)
        n = chunk.shape[batch_axis]
        if n < b0:
            pad = list(chunk.shape)
            pad[batch_axis] = b0 - n
            chunk = torch.cat([chunk, chunk.new_zeros(pad)], dim=batch_axis)
        outs.append(model_output(fn(chunk), time_axis)[:n])
    return torch.cat(outs)


def model_output(out, time_axis: int | None = None):
    """What the deployed graph computes of a model's output (`convert.output_heads`): its several
    outputs packed into one (B, N) tensor, or the prediction of (logits, extras...); an output
    that keeps the time axis (multi-step code returning (T, B, ...)) is its mean over T."""
    heads = output_heads(out)
    if time_axis is not None:
        heads = [h.mean(time_axis) for h in heads]
    return pack_outputs(heads)


def reset_memory(model: nn.Module) -> None:
    """Clear the membranes a multi-step model keeps between calls, as SpikingJelly's
    `functional.reset_net` does: every submodule with a `reset()` method and state (`v`,
    `_memories`, or snncc's own neurons)."""
    for m in model.modules():
        if callable(getattr(m, "reset", None)) and (hasattr(m, "v") or hasattr(m, "_memories")):
            m.reset()


def parse_shape(text: str | None, what: str = "--input-shape") -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError:
        raise LoadError(f"{what} must be comma-separated integers like 1,8,8, got {text!r}") from None
    if not shape or any(s <= 0 for s in shape):
        raise LoadError(f"{what} must be positive integers, got {text!r}")
    return shape


def load_factory(spec: str, kwargs: dict | None = None) -> nn.Module:
    """`path/to/file.py:factory` or `package.module:factory` -> factory(**kwargs)."""
    if ":" not in spec:
        raise LoadError(f"--model-def {spec!r} must look like file.py:factory or package.module:factory")
    mod_part, fn_name = spec.rsplit(":", 1)
    try:
        if mod_part.endswith(".py") or os.sep in mod_part:
            if not os.path.exists(mod_part):
                raise LoadError("file not found", where=mod_part)
            ms = importlib.util.spec_from_file_location(f"_snncc_model_def_{abs(hash(mod_part))}", mod_part)
            module = importlib.util.module_from_spec(ms)
            folder = os.path.dirname(os.path.abspath(mod_part))
            if folder not in sys.path:  # its sibling modules import as when the file runs as a script
                sys.path.insert(0, folder)
            ms.loader.exec_module(module)
        else:
            module = importlib.import_module(mod_part)
    except LoadError:
        raise
    except SystemExit as e:
        raise LoadError(f"importing the model definition called sys.exit({e.code!r})", where=mod_part) from None
    except Exception as e:
        raise LoadError(f"cannot import model definition ({e.__class__.__name__}: {_first_line(e)})",
                        where=mod_part) from None
    fn = getattr(module, fn_name, None)
    if fn is None:
        raise LoadError(f"no factory named {fn_name!r}", where=mod_part)
    if not callable(fn):
        raise LoadError(f"{fn_name} is a {type(fn).__name__}, not a factory", where=mod_part)
    try:
        model = fn(**(kwargs or {}))
    except SystemExit as e:
        raise LoadError(f"factory called sys.exit({e.code!r})", where=spec,
                        hint="a factory must return an nn.Module") from None
    except Exception as e:  # the user's own code: report what it raised, in one line
        raise LoadError(f"factory raised {e.__class__.__name__}: {_first_line(e)}", where=spec,
                        hint="check --factory-kwargs") from None
    if not isinstance(model, nn.Module):
        raise LoadError(f"factory returned a {type(model).__name__}, not a torch.nn.Module", where=spec,
                        hint="the factory must build and return the model")
    return model


def parse_kwargs(text: str | None) -> dict:
    if not text:
        return {}
    try:
        kw = json.loads(text)
    except ValueError as e:
        raise LoadError(f"--factory-kwargs is not JSON: {e}") from None
    if not isinstance(kw, dict):
        raise LoadError("--factory-kwargs must be a JSON object like '{\"D\": 4}'")
    return kw


def _unwrap(model: nn.Module) -> tuple[nn.Module, int]:
    if hasattr(model, "model") and hasattr(model, "T") and isinstance(getattr(model, "model"), nn.Module):
        return model.model, int(model.T)
    from snncc.frontend.peers import declared_timesteps

    return model, declared_timesteps(model) or 1


def load_model(path: str, model_def: str | None = None, factory_kwargs: dict | None = None, trust_pickle: bool = False,
               input_shape: tuple[int, ...] | None = None, approximate_lif: bool = False, nir_lif: str = "",
               layout: str = "", timesteps: int | None = None) -> LoadedModel:
    """`layout`: the model takes (B, T, *shape) / (T, B, *shape); `input_shape` is then the per-step
    shape, for a program as for a module (a program's T is its input's, `timesteps` must agree)."""
    if not os.path.exists(path):
        raise LoadError("file not found", where=path)
    if os.path.isdir(path):
        raise LoadError("is a folder, expected a model file (.pt2 program, state_dict .pt, or pickled module)",
                        where=path, hint="to inspect a compiled artefact use `snncc inspect OUT`")
    if path.endswith(".onnx"):
        from snncc.frontend.onnx_frontend import load_onnx

        model, shape = load_onnx(path)
        if input_shape is not None and tuple(input_shape) != shape[1:]:
            raise LoadError(f"--input-shape {input_shape} differs from the model's input {shape[1:]}", where=path)
        return LoadedModel(None, None, shape[1:], 1, path, onnx=model)
    if path.endswith(".nir"):
        from snncc.interop.nir_io import load_nir

        g = load_nir(path, approximate_lif=approximate_lif, lif=nir_lif)
        if input_shape is not None and tuple(input_shape) != g.inputs[0].shape:
            raise LoadError(f"--input-shape {input_shape} differs from the graph's input {g.inputs[0].shape}",
                            where=path)
        return LoadedModel(None, None, g.inputs[0].shape, g.T, path, nir=g)
    if path.endswith(".pt2") and model_def is None:
        ep = load_program(path, trust_pickle)
        loaded = LoadedModel(None, ep, _program_input_shape(ep, path), 1, path)
        loaded.set_layout(layout, timesteps)
        if input_shape is not None and tuple(input_shape) != loaded.input_shape:
            per = f" per timestep (input {_program_input_shape(ep, path, whole=True)}, layout {layout})" if layout else ""
            raise LoadError(f"--input-shape {input_shape} differs from the program's input {loaded.input_shape}{per}",
                            where=path)
        return loaded
    obj = load_checkpoint(path, trust_pickle)
    if isinstance(obj, nn.Module):
        model, T = _unwrap(obj)
    elif isinstance(obj, dict):
        if model_def is None:
            raise LoadError("checkpoint is a state_dict; snncc needs the model definition", where=path,
                            hint="pass --model-def file.py:factory (and --factory-kwargs)")
        model, T = _unwrap(load_factory(model_def, factory_kwargs))
        sd = obj["state_dict"] if isinstance(obj.get("state_dict"), dict) else obj
        try:
            model.load_state_dict(sd)
        except RuntimeError as e:
            raise LoadError(f"state_dict does not fit the model: {_first_line(e)}", where=path,
                            hint="check --model-def and --factory-kwargs") from None
    else:
        raise LoadError(f"checkpoint holds a {type(obj).__name__}, expected a state_dict or a module", where=path)
    if input_shape is None:
        shape = getattr(model, "input_shape", None)
        if shape is None:
            raise LoadError("the input shape is unknown", where=path, hint="pass --input-shape C,H,W")
        input_shape = tuple(shape)
    return LoadedModel(model.eval(), None, tuple(input_shape), T, path, layout=layout)


def _timesteps(g: Graph, loaded: LoadedModel) -> int:
    """T of the traced graph: the model's own time axis (it repeats its input over T) or the
    wrapper's / checkpoint's T; both at once must agree."""
    own = g.meta.get("model_T")
    if own and loaded.T > 1 and own != loaded.T:
        raise FrontendError(f"the model repeats its input over T = {own} but is compiled with T = {loaded.T}",
                            where=loaded.source or "model", hint="drop --timesteps or the MultiStep wrapper")
    return int(own or loaded.T)


def _warn_stateless_steps(g: Graph, loaded: LoadedModel) -> None:
    """A single-step program run over T > 1 timesteps (`--timesteps`) whose neurons keep no state
    in the program: torch.export keeps none of a module's Python attributes, so a membrane the
    module carried from one call to the next is not in it, and the neurons deploy stateless (each
    timestep starts from the initial membrane). One warning, naming what deploys them stateful."""
    fires = g.neurons()
    if g.T > 1 and not loaded.layout and not g.meta.get("model_T") and fires and \
            not any(n.attrs.get("stateful") for n in fires):
        import warnings

        warnings.warn(f"{loaded.source or 'the program'}: the program is one timestep and holds no neuron state (a "
                      f"membrane a module keeps between calls is not exported), so its {len(fires)} neuron layers "
                      f"deploy stateless over T = {g.T}: every timestep starts from the initial membrane. A model "
                      f"whose neurons carry their membrane across timesteps deploys as trained from its module or "
                      f"state_dict (--model-def), or from a program of the whole sequence (--input-layout)",
                      stacklevel=2)


def _program_input_shape(ep, path, whole: bool = False) -> tuple[int, ...]:
    """The program's per-sample input shape (its whole input shape with `whole`)."""
    users = list(ep.graph_signature.user_inputs)
    if len(users) != 1:
        raise LoadError(f"program takes {len(users)} inputs; snncc compiles single-input models", where=path)
    for n in ep.graph.nodes:
        if n.op == "placeholder" and n.name == users[0]:
            return tuple(int(s) for s in n.meta["val"].shape[0 if whole else 1:])
    raise LoadError("program input not found", where=path)


def _as_time_major(loaded: LoadedModel, input_kind: str, error: FrontendError) -> Graph:
    """A program exported at batch 1 whose input is (T, 1, ...) with T > 1 and no --input-layout:
    axis 0 cannot be the batch of a batch-1 export, so it is read again as multi-step code taking
    (T, B, ...) at once (SpikingJelly's step mode "m"); `error` (the batch-first reading's) is raised
    when that fails too, with the flag to try."""
    from snncc.frontend.torch_export import from_exported

    full = _program_input_shape(loaded.program, loaded.source or "program", whole=True)
    if loaded.layout or len(full) < 3 or full[1] != 1 or full[0] == 1:
        raise error
    was = (loaded.layout, loaded.T, loaded.input_shape)
    try:
        loaded.set_layout("TB")
        g = from_exported(loaded.program, input_kind=input_kind, source=loaded.source, layout="TB", T=loaded.T)
    except FrontendError:
        loaded.layout, loaded.T, loaded.input_shape = was
        if "--input-layout TB" in (error.hint or ""):
            raise error from None
        raise FrontendError(error.what, where=error.where,
                            hint=(error.hint + "; " if error.hint else "") + "if the model takes (T, B, ...) at once, "
                                 "pass --input-layout TB") from None
    g.meta["input_layout_inferred"] = f"{tuple(full)}"
    return g


def trace(loaded: LoadedModel, frontend: str = "auto", input_kind: str = CURRENT, batch: int = 2) -> Graph:
    """Trace a loaded model to the IR: torch.export first, fx symbolic_trace as the fallback."""
    from snncc.frontend.fx_trace import from_module_fx
    from snncc.frontend.torch_export import export_module, from_exported

    if loaded.onnx is not None:
        from snncc.frontend.onnx_frontend import from_onnx

        g = from_onnx(loaded.onnx, input_kind=input_kind, source=loaded.source)
    elif loaded.nir is not None:
        g = loaded.nir.clone()
        g.inputs[0].attrs["kind"] = input_kind
        g.infer()
    elif loaded.program is not None:
        try:
            g = from_exported(loaded.program, input_kind=input_kind, source=loaded.source, layout=loaded.layout,
                              T=loaded.T)
        except FrontendError as e:
            g = _as_time_major(loaded, input_kind, e)
        g.T = _timesteps(g, loaded)
        _warn_stateless_steps(g, loaded)
    else:
        from snncc.resources import require, tensor_bytes

        require(tensor_bytes((batch,) + tuple(loaded.input_shape), 4) * 4,
                f"tracing on an example input of shape {tuple(loaded.input_shape)}", where="--input-shape",
                hint="check the per-sample input shape")
        from snncc.frontend.peers import check_jelly, trace_batch

        check_jelly(loaded.module)
        b = trace_batch(loaded.module, batch)
        lead = {"": (b,), "TB": (loaded.T, b), "BT": (b, loaded.T)}[loaded.layout]
        example = torch.zeros(lead + tuple(loaded.input_shape))
        stateful = any(getattr(m, "stateful", False) for m in loaded.module.modules())
        from snncc.frontend.peers import has_peer_neurons

        stateful = stateful or has_peer_neurons(loaded.module)  # peers' neurons: the fx front end
        if stateful and frontend == "auto" and not loaded.layout and loaded.T == 1:
            from snncc.frontend.peers import loops_in_forward

            stateful = not loops_in_forward(loaded.module, example)  # a loop over T in forward: torch.export
            reset_memory(loaded.module)
            if not stateful:
                from snncc.frontend.peers import fresh_state

                fresh_state(loaded.module)
        if loaded.layout and (frontend == "fx" or frontend == "auto" and stateful):
            why = "--frontend fx" if frontend == "fx" else "its single-step stateful neurons (read by the fx front end)"
            raise FrontendError(f"input layout {loaded.layout} (the model takes the whole time sequence) with {why}: "
                                "fx traces one timestep per call and cannot unroll the model's loop over T (symbolic "
                                "tracing does not know x.shape)", where=f"model {type(loaded.module).__name__}",
                                hint="use the default torch.export front end (drop --frontend fx), or single-step "
                                     "neurons without --input-layout")
        if frontend == "export" or (frontend == "auto" and not stateful):
            failed = None
            try:
                ep = export_module(loaded.module, example)
            except FrontendError as e:
                if frontend == "export" or loaded.layout:
                    raise
                ep, failed = None, e  # torch.export could not trace it: fall back to symbolic_trace
            finally:
                reset_memory(loaded.module)  # tracing ran the model once: no membrane may survive it
            if ep is not None:
                g = from_exported(ep, input_kind=input_kind, source=loaded.source, layout=loaded.layout,
                                  T=loaded.T)
            else:
                try:
                    g = from_module_fx(loaded.module, example, input_kind=input_kind)
                except FrontendError as e:  # the first failure is the one to fix: say both
                    raise FrontendError(f"{failed.what}; the fx fallback failed too: {e.what}", where=failed.where,
                                        hint="make the model traceable by torch.export (torch.export.export(model."
                                             "eval(), (x,)) shows the full error)") from None
        elif frontend in ("fx", "auto"):
            g = from_module_fx(loaded.module, example, input_kind=input_kind)
        else:
            raise FrontendError(f"unknown front end {frontend!r}", hint="use auto, export or fx")
        g.T = _timesteps(g, loaded)
    loaded.output_time_axis = g.meta.get("output_time_axis")
    # a file's name, or a label as given (an in-memory model named "speck_cnn (examples/events)")
    src = loaded.source or ""
    src = os.path.basename(src) if os.path.isfile(src) else src
    # a file name may hold bytes that are not UTF-8: the artefact's text files show them escaped
    g.meta["source"] = src.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return g.verify()
