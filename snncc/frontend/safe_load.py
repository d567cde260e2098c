"""Reading model files that may come from anyone, without running code from them.

Owns `load_program` (a `torch.export` `.pt2` archive) and `load_checkpoint` (a `torch.save`
file). Without `--trust-pickle` no pickle is ever unpickled except by torch's weights-only
unpickler, which rebuilds tensors and plain containers and refuses every other global:

- a checkpoint is read with `torch.load(weights_only=True)`;
- a `.pt2` archive holds pickles of its own (sample inputs, pickled weights or constants, custom
  and opaque objects). `torch.export.load` retries a failed weights-only load with
  `weights_only=False` (`torch/_export/serde/serialize.py`, `deserialize_torch_artifact`) and
  unpickles custom/opaque constants with the full unpickler (`torch/export/pt2_archive/_package.py`).
  While snncc loads an archive, those entry points are replaced by weights-only ones that refuse
  anything else, and the refusal names the archive member that held the pickle.

A program that calls SpikingJelly 2's fused neuron ops (`torch.ops.sj_if` / `sj_lif` / `sj_ilif`)
gets them registered first (`register_jelly_ops`: only SpikingJelly's op modules are imported).
"""

from __future__ import annotations

import contextlib
import io
import pickle
import typing
import zipfile
import zlib

import torch

from snncc.errors import LoadError

_PICKLE_HINT = ("if it is a whole pickled module you trust, pass --trust-pickle; "
                "better: save a state_dict and pass --model-def")


class _Refused(Exception):
    """A pickle inside an archive that the weights-only unpickler rejects."""

    def __init__(self, data: bytes, why: str):
        super().__init__(why)
        self.data = data
        self.why = why


def _as_bytes(f) -> bytes:
    if isinstance(f, (bytes, bytearray)):
        return bytes(f)
    if isinstance(f, io.BytesIO):
        return f.getvalue()
    pos = f.tell()
    f.seek(0)
    data = f.read()
    f.seek(pos)
    return data


def _why(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:
        if "Unsupported global" in ln or "GLOBAL" in ln or "not an allowed global" in ln:
            return ln[:160]
    for i, ln in enumerate(lines):  # torch's weights-only failure: the reason follows this marker
        if "WeightsUnpickler error:" in ln:
            rest = ln.split("WeightsUnpickler error:", 1)[1].strip() or (lines[i + 1] if i + 1 < len(lines) else "")
            return rest[:160]
    return f"{e.__class__.__name__}: {lines[0][:160]}" if lines else e.__class__.__name__


@contextlib.contextmanager
def _weights_only_pickles():
    """Within this block every pickle torch.export touches goes through the weights-only unpickler."""
    real_load = torch.load

    def load(f, *args, **kwargs):
        kwargs["weights_only"] = True
        try:
            return real_load(f, *args, **kwargs)
        except Exception as e:
            raise _Refused(_as_bytes(f), _why(e)) from None

    def refuse_raw(data, *args, **kwargs):
        raise _Refused(bytes(data), "custom or opaque Python object (needs the full unpickler)")

    saved = [(torch, "load", torch.load), (torch.serialization, "load", torch.serialization.load),
             (pickle, "loads", pickle.loads), (torch._C, "_pickle_load_obj", getattr(torch._C, "_pickle_load_obj", None))]
    torch.load = load
    torch.serialization.load = load
    pickle.loads = refuse_raw
    torch._C._pickle_load_obj = refuse_raw
    try:
        yield
    finally:
        for mod, name, value in saved:
            if value is None:
                with contextlib.suppress(AttributeError):
                    delattr(mod, name)
            else:
                setattr(mod, name, value)


def _member_holding(path: str, data: bytes) -> str:
    """The archive member whose bytes are `data` (found by size and CRC), for the error line."""
    crc = zlib.crc32(data)
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.file_size == len(data) and info.CRC == crc:
                    return info.filename
    except (OSError, zipfile.BadZipFile):
        pass
    return "an inner pickle"


@contextlib.contextmanager
def _type_hints_once():
    """torch's program deserialiser calls `typing.get_type_hints` on the schema dataclass of every
    node, argument and tensor it decodes (tens of thousands of calls; a third of `torch.export.load`
    in the profile of an E-SpikeFormer .pt2). The hints of a class never change while it loads:
    answer each (class, namespace) once."""
    real = typing.get_type_hints
    memo: dict = {}

    def hints(obj, globalns=None, localns=None, include_extras=False):
        key = (obj, id(globalns), id(localns), include_extras)
        try:
            return memo[key]
        except KeyError:
            memo[key] = out = real(obj, globalns, localns, include_extras)
            return out
        except TypeError:  # unhashable object: not a schema class
            return real(obj, globalns, localns, include_extras)

    typing.get_type_hints = hints
    try:
        yield
    finally:
        typing.get_type_hints = real


# SpikingJelly 2's fused neuron ops, registered with torch only when their module is imported (a
# neuron's first run does it): op namespace -> the module that registers it, nothing else of SpikingJelly.
JELLY_OPS = {"sj_if": "spikingjelly._ops.if_", "sj_lif": "spikingjelly._ops.lif", "sj_ilif": "spikingjelly._ops.ilif"}


def _custom_op_namespaces(path: str) -> set[str]:
    """The `torch.ops.<namespace>` of SpikingJelly ops a program archive's graphs call (read from
    its models/*.json, never its weights)."""
    import re

    found: set[str] = set()
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if "/models/" in "/" + info.filename and info.filename.endswith(".json"):
                    found |= {m.decode() for m in re.findall(rb"torch\.ops\.(sj_\w+)\.", zf.read(info))}
    except (OSError, zipfile.BadZipFile):
        pass  # torch.export.load says what is wrong with the file
    return found


def register_jelly_ops(path: str) -> None:
    """Register the SpikingJelly fused ops a program calls before torch.export.load resolves
    them; one line when SpikingJelly is absent or the op is not one snncc reads."""
    import importlib

    for ns in sorted(_custom_op_namespaces(path)):
        mod = JELLY_OPS.get(ns)
        if mod is None:
            raise LoadError(f"the program calls SpikingJelly's fused op torch.ops.{ns}, a neuron snncc does not "
                            "read", where=path, hint=f"snncc reads {', '.join(sorted(JELLY_OPS))} (IFNode, LIFNode, "
                                                     "ILIFNode)")
        try:
            importlib.import_module(mod)
        except ImportError as e:
            raise LoadError(f"the program calls SpikingJelly's fused op torch.ops.{ns} and SpikingJelly is not "
                            f"installed ({_first_line(e)})", where=path,
                            hint="pip install spikingjelly (2.0), whose ops the program was exported with") from None


def load_program(path: str, trust_pickle: bool = False):
    """`torch.export.load(path)` with no code run from the archive's pickles (unless trusted)."""
    register_jelly_ops(path)
    try:
        # torch gets an open handle, not the name: its C++ reader cannot open a path holding bytes
        # that are not UTF-8 (any name the file system allows is fine here)
        with contextlib.nullcontext() if trust_pickle else _weights_only_pickles(), _type_hints_once(), \
                open(path, "rb") as f:
            return torch.export.load(f)
    except _Refused as r:
        member = _member_holding(path, r.data)
        raise LoadError(f"archive member {member} holds a pickle that is not plain tensors ({r.why}); "
                        f"snncc never unpickles it", where=path,
                        hint="re-export the program with torch.export.save from trusted code") from None
    except Exception as e:
        raise LoadError(f"not a readable torch.export program ({e.__class__.__name__}: {_first_line(e)})",
                        where=path) from None


def load_checkpoint(path: str, trust_pickle: bool = False):
    """`torch.load` of a checkpoint: weights-only unless the user trusts the file. A trusted pickled
    module finds its classes the way `python` run in the current folder would (the folder is on
    the import path while it loads)."""
    try:
        with open(path, "rb") as f:  # a handle, as for programs: any file name the file system allows
            if trust_pickle:
                with _cwd_importable():
                    return torch.load(f, map_location="cpu", weights_only=False)
            return torch.load(f, map_location="cpu", weights_only=True)
    except ModuleNotFoundError as e:
        raise LoadError(f"the pickled module's classes live in module {e.name!r}, which cannot be imported",
                        where=path, hint="run snncc from the folder that holds that module, or add it to "
                                         "PYTHONPATH") from None
    except Exception as e:  # a corrupt stream raises almost anything (UnpicklingError, EOFError, KeyError, ...)
        why = _why(e)
        if not trust_pickle and ("Unsupported global" in why or "GLOBAL" in why or "allowed global" in why):
            raise LoadError("file holds pickled objects, not just tensors", where=path, hint=_PICKLE_HINT) from None
        raise LoadError(f"not a readable checkpoint (corrupt, truncated or not a torch.save file: {why})",
                        where=path, hint="pass a state_dict saved with torch.save, a .pt2, .onnx or .nir file") from None


@contextlib.contextmanager
def _cwd_importable():
    import os
    import sys

    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0][:200] if s else e.__class__.__name__
