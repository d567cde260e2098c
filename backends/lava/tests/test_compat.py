"""compat: lava-nc 0.10.0 imports on Python 3.11 through a checked in-memory rewrite of one module."""

from __future__ import annotations

import hashlib
import importlib.util
import sys

import pytest

from snncc.errors import TargetError
from snncc_lava import compat


def _installed_path() -> str:
    compat.install()
    return sys.modules[compat.MODULE].__file__


def test_install_patches_in_memory_only():
    compat.install()
    mod = sys.modules[compat.MODULE]
    assert isinstance(mod.__loader__, compat._PatchedLoader)
    # the shared-default bug is gone: every encoder gets its own ByteEncoder
    assert mod.CoreEncoder().x is not mod.CoreEncoder().x
    assert mod.CoreEncoder().x == mod.ByteEncoder(0, 0, 0)
    with open(mod.__file__, "rb") as f:  # site-packages untouched
        assert hashlib.sha256(f.read()).hexdigest() == compat.EXPECTED_SHA256
    compat.install()  # idempotent
    from lava.proc.dense.process import Dense  # noqa: F401  (a real lava import now works)


def test_patch_rewrites_exactly_the_eight_defaults():
    path = _installed_path()
    with open(path, "rb") as f:
        text = compat.patch_source(f.read(), path, "0.10.0")
    assert text.count("= field(default_factory=ByteEncoder)") == 8
    assert "= ByteEncoder()" not in text
    assert "from dataclasses import dataclass, InitVar, field\n" in text


def test_refuses_modified_file(tmp_path):
    path = _installed_path()
    copy = tmp_path / "var_model.py"
    with open(path, "rb") as f:
        copy.write_bytes(f.read() + b"# local edit\n")
    with pytest.raises(TargetError) as e:
        compat.patch_source(copy.read_bytes(), str(copy), "0.10.0")
    assert e.value.where == str(copy)
    assert "refusing to patch a modified lava.magma.compiler.var_model" in e.value.what


def test_refuses_modified_file_through_the_loader(tmp_path):
    path = _installed_path()
    copy = tmp_path / "var_model.py"
    with open(path, "rb") as f:
        copy.write_bytes(f.read().replace(b"ptr: int = 0", b"ptr: int = 1"))
    spec = importlib.util.spec_from_file_location("var_model_copy", str(copy),
                                                  loader=compat._PatchedLoader(str(copy)))
    module = importlib.util.module_from_spec(spec)
    with pytest.raises(TargetError, match="unexpected content"):
        spec.loader.exec_module(module)


def test_refuses_other_lava_version():
    path = _installed_path()
    with open(path, "rb") as f:
        source = f.read()
    with pytest.raises(TargetError, match=r"lava-nc 0\.9\.0 is installed; .* only verified for 0\.10\.0"):
        compat.patch_source(source, path, "0.9.0")


def test_refuses_file_the_rewrite_does_not_fit(monkeypatch):
    # right hash but a rewrite that no longer finds its 8 fields: still refused, never half-applied
    path = _installed_path()
    with open(path, "rb") as f:
        source = f.read()
    monkeypatch.setattr(compat, "EXPECTED_FIELDS", 9)
    with pytest.raises(TargetError, match="rewrote 8 ByteEncoder defaults, expected 9"):
        compat.patch_source(source, path, "0.10.0")


def test_lava_dl_imports_with_only_object_detection_stubbed():
    compat.install_lava_dl()
    from lava.lib.dl import netx, slayer

    assert netx.hdf5.Network.__module__ == "lava.lib.dl.netx.hdf5"  # the real reader
    assert isinstance(slayer.obd, compat._Unavailable) and "cv2" not in sys.modules
    assert slayer.neuron.cuba.Neuron.__module__ == "lava.lib.dl.slayer.neuron.cuba"  # the rest is real
    with pytest.raises(TargetError, match="YOLOBase is not available: snncc_lava.compat replaced"):
        slayer.obd.YOLOBase
    compat.install_lava_dl()  # idempotent


def test_lava_dl_refuses_other_version(monkeypatch):
    monkeypatch.delitem(sys.modules, compat.OBD_MODULE, raising=False)
    monkeypatch.setattr(compat, "version", lambda dist: "0.5.0" if dist == compat.LAVA_DL_DIST else "0.10.0")
    with pytest.raises(TargetError, match="lava-dl 0.5.0 is installed; the compatibility step is only verified for 0.6.0"):
        compat.install_lava_dl()
