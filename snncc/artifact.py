"""Compiled artefact folders: written atomically (temporary folder, then rename) and
deterministically (byte-identical for the same model), with a manifest of content hashes and
versions that `read` checks.

Layout: `manifest.json`, `ir.json` + `ir.npz` (deployed normal form), `traced.json` +
`traced.npz` (the model as traced, for `verify`), `report.md`, and whatever files the target adds.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile

import numpy as np
import torch

import snncc
from snncc.errors import LoadError
from snncc.ir import serialize
from snncc.ir.graph import Graph

MANIFEST = "manifest.json"
SCHEMA = 1


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def versions(extra: dict | None = None) -> dict:
    v = {"snncc": snncc.__version__, "torch": torch.__version__.split("+")[0], "numpy": np.__version__,
         "python": platform.python_version()}
    v.update(extra or {})
    return v


def write(out: str, files: dict[str, bytes], manifest: dict) -> None:
    """Write `files` (relative name -> bytes) plus a manifest into folder `out`, atomically."""
    out = os.path.abspath(out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    if os.path.exists(out) and not os.path.isdir(out):
        raise LoadError("exists and is not a folder", where=out, hint="choose another -o")
    tmp = tempfile.mkdtemp(prefix=".snncc-tmp-", dir=parent)
    try:
        entries = {}
        for name in sorted(files):
            path = os.path.join(tmp, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(files[name])
            entries[name] = {"sha256": sha256(files[name]), "bytes": len(files[name])}
        doc = dict(manifest)
        doc["schema"] = SCHEMA
        doc["files"] = entries
        with open(os.path.join(tmp, MANIFEST), "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.write("\n")
        if os.path.exists(out):
            old = tempfile.mkdtemp(prefix=".snncc-old-", dir=parent)
            os.rmdir(old)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text(path: str, text: str) -> None:
    """Write one text file atomically."""
    write_bytes(path, text.encode())


def read_manifest(out: str) -> dict:
    path = os.path.join(out, MANIFEST)
    if not os.path.isfile(path):
        raise LoadError("not an snncc artefact (no manifest.json)", where=out, hint="compile a model with snncc compile")
    try:
        with open(path) as f:
            doc = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise LoadError(f"manifest is not valid JSON ({e})", where=path) from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise LoadError(f"artefact schema {doc.get('schema') if isinstance(doc, dict) else '?'}, this snncc reads {SCHEMA}",
                        where=path, hint="recompile with this snncc")
    return doc


def read_file(out: str, name: str, manifest: dict | None = None) -> bytes:
    manifest = manifest or read_manifest(out)
    entry = manifest.get("files", {}).get(name)
    if entry is None:
        raise LoadError(f"artefact has no {name}", where=out)
    path = os.path.join(out, name)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise LoadError(f"cannot read ({e.strerror})", where=path) from None
    if sha256(data) != entry["sha256"]:
        raise LoadError("content hash differs from the manifest (file changed or corrupt)", where=path,
                        hint="recompile the model")
    return data


def read_graph(out: str, stem: str = "ir") -> Graph:
    m = read_manifest(out)
    return serialize.loads(read_file(out, f"{stem}.json", m), read_file(out, f"{stem}.npz", m),
                           source=os.path.join(out, f"{stem}.json"))


def write_bytes(path: str, data: bytes) -> None:
    """Write one binary file atomically (temporary file in the same folder, then rename)."""
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".snncc-tmp-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
