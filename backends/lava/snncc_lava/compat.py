"""Checked compatibility shim that lets lava-nc 0.10.0 import on Python 3.11 (docs/design.md §5).

lava-nc 0.10.0 (the last release) declares Python < 3.11. On 3.11 importing it fails in
`lava/magma/compiler/var_model.py`, whose dataclasses default fields to a shared `ByteEncoder()`
instance; 3.11 rejects such mutable defaults. Instead of editing site-packages, `install()` puts a
finder on `sys.meta_path` that, for that one module only, reads the installed source, checks that
the distribution is exactly lava-nc 0.10.0 and that the file's sha256 is the one this shim was
written against, rewrites the defaults to `field(default_factory=ByteEncoder)` in memory and
executes the rewritten source as the module. Anything unexpected (another version, a modified
file, a rewrite that does not apply) is a `TargetError`, never a silent change. On Python < 3.11
nothing is patched.

`install_lava_dl()` does the same for lava-dl 0.6.0 (netx's reader, which the tests use to run
snncc's netx files): its `slayer` package imports an object-detection package that needs OpenCV
and torchvision (unused by netx; PyPI's torchvision does not load beside CPU torch), so that one
package is replaced by a module that refuses any use, after checking the version and the hash of
the importing file.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import re
import sys
import types
from importlib.metadata import PackageNotFoundError, version

from snncc.errors import TargetError

LAVA_DIST = "lava-nc"
LAVA_VERSION = "0.10.0"
MODULE = "lava.magma.compiler.var_model"
# sha256 of lava/magma/compiler/var_model.py as shipped in the lava-nc 0.10.0 wheel.
EXPECTED_SHA256 = "3b8acb73dc3ff38d159065aa0339b90f371f99f162e68d10a3117afbd916afa8"
# the three encoder dataclasses hold 8 such fields
EXPECTED_FIELDS = 8

_IMPORT_OLD = "from dataclasses import dataclass, InitVar\n"
_IMPORT_NEW = "from dataclasses import dataclass, InitVar, field\n"
_FIELD = re.compile(r"^(\s+\w+: ByteEncoder) = ByteEncoder\(\)$", re.M)

HINT = f"run backends/lava/install.sh (installs {LAVA_DIST}=={LAVA_VERSION} unmodified)"


def lava_version() -> str:
    try:
        return version(LAVA_DIST)
    except PackageNotFoundError:
        raise TargetError(f"{LAVA_DIST} is not installed; the Loihi target runs its networks in Lava",
                          where="snncc_lava", hint=HINT) from None


def patch_source(source: bytes, path: str, dist_version: str | None = None) -> str:
    """Check `source` (the bytes of var_model.py at `path`) and return the rewritten text.

    Raises TargetError naming the file when the version or the hash is not the expected one."""
    dist_version = lava_version() if dist_version is None else dist_version
    if dist_version != LAVA_VERSION:
        raise TargetError(f"{LAVA_DIST} {dist_version} is installed; the Python 3.11 compatibility patch "
                          f"is only verified for {LAVA_VERSION}", where=path, hint=HINT)
    digest = hashlib.sha256(source).hexdigest()
    if digest != EXPECTED_SHA256:
        raise TargetError(f"unexpected content (sha256 {digest[:16]}..., expected {EXPECTED_SHA256[:16]}...); "
                          f"refusing to patch a modified {MODULE}", where=path,
                          hint=f"reinstall {LAVA_DIST}=={LAVA_VERSION} without local edits: " + HINT)
    text = source.decode("utf-8")
    if text.count(_IMPORT_OLD) != 1:
        raise TargetError("dataclasses import line not found; cannot apply the patch", where=path, hint=HINT)
    text = text.replace(_IMPORT_OLD, _IMPORT_NEW)
    text, n = _FIELD.subn(r"\1 = field(default_factory=ByteEncoder)", text)
    if n != EXPECTED_FIELDS:
        raise TargetError(f"rewrote {n} ByteEncoder defaults, expected {EXPECTED_FIELDS}", where=path, hint=HINT)
    return text


class _PatchedLoader(importlib.abc.Loader):
    def __init__(self, path: str):
        self.path = path

    def create_module(self, spec):
        return None  # default module creation

    def exec_module(self, module):
        with open(self.path, "rb") as f:
            source = f.read()
        text = patch_source(source, self.path)
        module.__file__ = self.path
        exec(compile(text, self.path, "exec", dont_inherit=True), module.__dict__)


class VarModelFinder(importlib.abc.MetaPathFinder):
    """Finds the one lava module that needs the rewrite; every other import passes through."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            raise TargetError(f"cannot locate the source of {MODULE}", where="sys.path", hint=HINT)
        return importlib.util.spec_from_file_location(fullname, spec.origin, loader=_PatchedLoader(spec.origin))


def needed() -> bool:
    return sys.version_info >= (3, 11)


def install() -> None:
    """Make `import lava...` work; call before the first lava import. Idempotent."""
    if not needed():
        return
    mod = sys.modules.get(MODULE)
    if mod is not None:
        if not isinstance(getattr(mod, "__loader__", None), _PatchedLoader):
            raise TargetError(f"{MODULE} was imported before snncc_lava.compat.install()", where=MODULE,
                              hint="import snncc_lava before any lava module")
        return
    lava_version()
    if not any(isinstance(f, VarModelFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, VarModelFinder())
    importlib.import_module(MODULE)  # fail here, with the checked message, rather than deep inside lava
    _import_lava_runtime()


def _import_lava_runtime() -> None:
    """Lava's message infrastructure calls `multiprocessing.set_start_method('fork')` at import,
    which raises once anything in the process (tqdm's lock, a DataLoader) has fixed the start
    method. Fork is what Lava needs and Linux's default: accept an already-chosen 'fork', and
    refuse any other method with a clear message."""
    import multiprocessing as mp

    name = "lava.magma.runtime.message_infrastructure.multiprocessing"
    if name in sys.modules:
        return
    chosen = mp.get_start_method(allow_none=True)
    if chosen is None:
        importlib.import_module(name)
        return
    if chosen != "fork":
        raise TargetError(f"multiprocessing start method is {chosen!r}; Lava needs 'fork'",
                          where="multiprocessing", hint="do not set another start method before running Lava")
    original = mp.set_start_method

    def keep_fork(method, force=False):
        if method != "fork":
            original(method, force)

    mp.set_start_method = keep_fork
    try:
        importlib.import_module(name)
    finally:
        mp.set_start_method = original


# --------------------------------------------------------------------------------------------
# lava-dl (netx reader), used by the tests that load snncc's netx files with netx's own reader

LAVA_DL_DIST = "lava-dl"
LAVA_DL_VERSION = "0.6.0"
OBD_MODULE = "lava.lib.dl.slayer.object_detection"
# sha256 of lava/lib/dl/slayer/__init__.py in the lava-dl 0.6.0 wheel: the one file that imports
# object_detection (as `obd`); nothing else in slayer or netx does (checked in the wheel).
SLAYER_INIT_SHA256 = "24e528906eaff4e5af61b73e291b59e3d7fb6bad49b28841d247ad7318d953fd"
LAVA_DL_HINT = (f"pip install --no-deps --ignore-requires-python {LAVA_DL_DIST}=={LAVA_DL_VERSION} "
                "(scripts/setup.sh does)")


class _Unavailable(types.ModuleType):
    """Stands in for lava-dl's YOLO object-detection package (slayer.obd), which imports cv2 and
    torchvision at import time; snncc never uses it. Any attribute access says so."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise TargetError(f"{OBD_MODULE}.{name} is not available: snncc_lava.compat replaced the "
                          "object-detection package (it needs cv2 and a torchvision build matching CPU torch)",
                          where=OBD_MODULE)


def install_lava_dl() -> None:
    """Make `import lava.lib.dl.netx` work on Python 3.11 with CPU torch. Idempotent.

    lava-dl 0.6.0 declares Python < 3.11 and torch < 2.4 (installed with --no-deps; netx and
    slayer's neuron modules run on torch 2.13). `lava.lib.dl.slayer` imports its object-detection
    package at import time, which needs OpenCV and torchvision: PyPI's torchvision wheels are CUDA
    builds that do not load beside CPU torch. This puts an empty module (`_Unavailable`) in
    `sys.modules` for that one package after checking that lava-dl is exactly 0.6.0 and that the
    importing file is the one this shim was written against; anything else is a TargetError."""
    install()
    if isinstance(sys.modules.get(OBD_MODULE), _Unavailable):
        return
    try:
        v = version(LAVA_DL_DIST)
    except PackageNotFoundError:
        raise TargetError(f"{LAVA_DL_DIST} is not installed", where="snncc_lava.compat", hint=LAVA_DL_HINT) from None
    if v != LAVA_DL_VERSION:
        raise TargetError(f"{LAVA_DL_DIST} {v} is installed; the compatibility step is only verified for "
                          f"{LAVA_DL_VERSION}", where="snncc_lava.compat", hint=LAVA_DL_HINT)
    if OBD_MODULE in sys.modules or "lava.lib.dl.slayer" in sys.modules:
        raise TargetError("lava.lib.dl.slayer was imported before snncc_lava.compat.install_lava_dl()",
                          where=OBD_MODULE, hint="call install_lava_dl() before importing lava.lib.dl")
    spec = importlib.util.find_spec("lava.lib.dl.slayer")
    if spec is None or spec.origin is None:
        raise TargetError("cannot locate lava.lib.dl.slayer", where="sys.path", hint=LAVA_DL_HINT)
    with open(spec.origin, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != SLAYER_INIT_SHA256:
        raise TargetError(f"unexpected content (sha256 {digest[:16]}...); refusing to stub its imports",
                          where=spec.origin, hint=LAVA_DL_HINT)
    stub = _Unavailable(OBD_MODULE)
    stub.__file__ = None
    sys.modules[OBD_MODULE] = stub
