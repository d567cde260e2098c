"""Compiled artefact folders: written atomically (temporary folder, then rename) and
deterministically (byte-identical for the same model), with a manifest of content hashes and
versions that `read` checks.

Layout: `manifest.json`, `ir.json` + `ir.npz` (deployed normal form), `traced.json` +
`traced.npz` (the model as traced, for `verify`), `report.md`, and whatever files the target adds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
import ctypes
import fcntl
import hashlib
import json
import os
import platform
import shutil
import tempfile

import numpy as np

from snncc.errors import ArtefactError, LoadError, SnnccError
from snncc.ir import serialize
from snncc.ir.graph import Graph
from snncc.version import __version__

MANIFEST = "manifest.json"
SCHEMA = 1


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def versions(extra: dict | None = None) -> dict:
    import torch  # here, not at the top: reading (and refusing) an artefact never imports torch

    v = {"snncc": __version__, "torch": torch.__version__.split("+")[0], "numpy": np.__version__,
         "python": platform.python_version()}
    v.update(extra or {})
    return v


def write(out: str, files: dict[str, bytes], manifest: dict, protect: tuple[str, ...] = ()) -> None:
    """Write `files` (relative name -> bytes) plus a manifest into folder `out`, atomically.

    `out` may not exist yet, be an empty folder, or be an earlier snncc artefact (a manifest that
    lists every file in it): only then is it replaced. Anything else is refused, so snncc never
    deletes what it did not write; nor does it replace a folder holding one of `protect` (the input
    model). Concurrent writers of one `out` take turns (a lock on the parent folder): the result is
    one complete artefact. A killed writer leaves a hidden `.snncc-tmp-<pid>-*` folder, never a
    partial `out`; the next write into the same parent removes it once that process is gone.
    """
    out = os.path.abspath(out)
    parent = os.path.dirname(out)
    _check_replaceable(out, protect)
    try:
        os.makedirs(parent, exist_ok=True)
        with _locked(parent):
            _refuse_unless_replaceable(out)
            _remove_stale_tmp(parent)
            tmp = tempfile.mkdtemp(prefix=f"{_TMP}{os.getpid()}-", dir=parent)
            try:
                os.chmod(tmp, created_mode(folder=True))  # mkdtemp makes 0700: the user's umask instead
                _fill(tmp, files, manifest)
                if os.path.isdir(out):
                    _swap(tmp, out)  # tmp now holds the old artefact
                    shutil.rmtree(tmp)
                else:
                    os.replace(tmp, out)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    except OSError as e:
        raise _cannot_write(e, out) from None


_TMP = ".snncc-tmp-"
_PROBE = ".snncc-probe-"  # check_writable's trial folder (never a write's: killed-writer tests look for _TMP)


def _cannot_write(e: OSError, out: str) -> ArtefactError:
    return ArtefactError(f"cannot write the artefact ({e.strerror or e.__class__.__name__}"
                         f"{': ' + e.filename if isinstance(e.filename, str) and e.filename != out else ''})",
                         where=out, hint="choose a writable -o")


def created_mode(folder: bool = False) -> int:
    """The mode a new file (0666) or folder (0777) gets under the process's umask, as any tool's
    output: what snncc's atomic writes (temporary file or folder, then rename) set explicitly."""
    mask = os.umask(0o022)
    os.umask(mask)
    return (0o777 if folder else 0o666) & ~mask


def check_writable(out: str, protect: tuple[str, ...] = ()) -> None:
    """Refuse now (before any work) an `out` that `write` would refuse: one holding a `protect`
    path, an existing file, a folder that is not a replaceable snncc artefact, or an existing parent
    folder in which `write` cannot make its temporary folder (tried here: a `.snncc-probe-<pid>-*`
    folder made and removed at once; the refusal is the line `write` would give). A parent that does
    not exist yet is `write`'s to make, and its refusals."""
    out = os.path.abspath(out)
    _check_replaceable(out, protect)
    parent = os.path.dirname(out)
    if os.path.isdir(parent):
        try:
            os.rmdir(tempfile.mkdtemp(prefix=f"{_PROBE}{os.getpid()}-", dir=parent))
        except OSError as e:  # (named by the folder the user gave, not by the trial folder's name)
            raise ArtefactError(f"cannot write the artefact (cannot make a folder in {parent}: "
                                f"{e.strerror or e.__class__.__name__})", where=out,
                                hint="choose a writable -o") from None


def _check_replaceable(out: str, protect: tuple[str, ...]) -> None:
    for p in protect:
        if p and _inside(os.path.abspath(p), out):
            raise ArtefactError("this folder holds the input model; snncc would replace it", where=out,
                                hint="choose an -o that does not contain the model file")
    _refuse_unless_replaceable(out)


def _inside(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:
        return False


def _refuse_unless_replaceable(out: str) -> None:
    if not os.path.lexists(out):
        return
    if os.path.islink(out) or not os.path.isdir(out):
        raise ArtefactError("exists and is not a folder", where=out, hint="choose another -o")
    entries = _tree(out)
    if not entries:
        return
    try:
        listed = set(read_manifest(out).get("files") or {}) | {MANIFEST}
    except SnnccError:
        raise ArtefactError("folder exists and is not an snncc artefact; snncc never deletes files it did not "
                            "write", where=out, hint="choose a new -o, or empty the folder yourself") from None
    extra = sorted(e for e in entries if e not in listed)
    if extra:
        raise ArtefactError(f"artefact folder holds files snncc did not write ({', '.join(extra[:3])}"
                            f"{', ...' if len(extra) > 3 else ''}); it is not replaced", where=out,
                            hint="move those files out, or choose a new -o")


def _tree(folder: str) -> list[str]:
    """Every file and empty folder below `folder`, as relative paths (links count as files)."""
    out = []
    for root, dirs, names in os.walk(folder):
        rel = os.path.relpath(root, folder)
        for d in list(dirs):
            if os.path.islink(os.path.join(root, d)):
                dirs.remove(d)
                names.append(d)
        for n in names:
            out.append(os.path.normpath(os.path.join(rel, n)))
        if not names and not dirs and rel != ".":
            out.append(rel + os.sep)
    return out


def _fill(tmp: str, files: dict[str, bytes], manifest: dict) -> None:
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
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def _locked(folder: str):
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _swap(a: str, b: str) -> None:
    """Exchange two folders atomically (Linux renameat2 RENAME_EXCHANGE); two renames elsewhere."""
    libc = _libc()
    if libc is not None:
        AT_FDCWD, RENAME_EXCHANGE = -100, 2
        if libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
            return
    side = a + ".old"
    os.replace(b, side)
    os.replace(a, b)
    os.replace(side, a)


def _libc():
    try:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.renameat2  # glibc >= 2.28
        return lib
    except (OSError, AttributeError):
        return None


def _remove_stale_tmp(parent: str) -> None:
    """Remove `.snncc-tmp-<pid>-*` folders of writers that no longer run (killed mid-write), and
    `.snncc-probe-<pid>-*` folders of check_writable's killed between making and removing one."""
    for name in os.listdir(parent):
        prefix = next((p for p in (_TMP, _PROBE) if name.startswith(p)), None)
        if prefix is None:
            continue
        pid = name[len(prefix):].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        stale = os.path.join(parent, name)
        if os.path.isdir(stale) and not os.path.islink(stale):
            shutil.rmtree(stale, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.remove(stale)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_text(path: str, text: str) -> None:
    """Write one text file atomically."""
    write_bytes(path, text.encode())


def read_manifest(out: str) -> dict:
    path = os.path.join(out, MANIFEST)
    if not os.path.isdir(out):
        raise LoadError("not an snncc artefact folder" if os.path.exists(out) else "folder not found", where=out,
                        hint="pass the folder written by snncc compile -o")
    if not os.path.isfile(path):
        raise LoadError("not an snncc artefact (no manifest.json)", where=out, hint="compile a model with snncc compile")
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise LoadError(f"manifest is not valid JSON ({e.__class__.__name__})", where=path,
                        hint="recompile the model") from None
    except OSError as e:
        raise LoadError(f"cannot read ({e.strerror})", where=path) from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise LoadError(f"artefact schema {doc.get('schema') if isinstance(doc, dict) else '?'}, this snncc reads {SCHEMA}",
                        where=path, hint="recompile with this snncc")
    _check_manifest(doc, path)
    return doc


def _check_manifest(doc: dict, path: str) -> None:
    """The manifest's own schema: every field snncc reads has the type it expects."""
    def bad(field, what):
        raise LoadError(f"field {field!r} {what}", where=path, hint="recompile the model")

    files = doc.get("files")
    if not isinstance(files, dict):
        bad("files", "must be an object of file name -> {sha256, bytes}")
    for name, e in files.items():
        if (not isinstance(e, dict) or not isinstance(e.get("sha256"), str) or len(e["sha256"]) != 64
                or not isinstance(e.get("bytes"), int) or isinstance(e.get("bytes"), bool) or e["bytes"] < 0):
            bad(f"files.{name}", "must be an object {sha256: 64 hex digits, bytes: integer}")
        if os.path.isabs(name) or ".." in name.split("/") or name == MANIFEST or "\\" in name:
            bad(f"files.{name}", "must be a relative path inside the artefact")
    if "target_options" in doc and not isinstance(doc["target_options"], dict):
        bad("target_options", "must be an object")
    for field, kind in (("target", str), ("input_kind", str)):
        if field in doc and not isinstance(doc[field], kind):
            bad(field, f"must be a {kind.__name__}")
    if "input_shape" in doc:
        shp = doc["input_shape"]
        if not (isinstance(shp, list) and shp and all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                                      for v in shp)):
            bad("input_shape", "must be a list of positive integers")
    if "T" in doc and not (isinstance(doc["T"], int) and not isinstance(doc["T"], bool) and doc["T"] >= 1):
        bad("T", "must be a positive integer")


def read_file(out: str, name: str, manifest: dict | None = None) -> bytes:
    manifest = manifest or read_manifest(out)
    entry = manifest.get("files", {}).get(name)
    if entry is None:
        raise LoadError(f"artefact has no {name}", where=out, hint="recompile the model")
    path = os.path.join(out, name)
    try:
        size = os.path.getsize(path)
        if size != entry["bytes"]:
            raise LoadError(f"size {size} differs from the manifest's {entry['bytes']} (file changed or corrupt)",
                            where=path, hint="recompile the model")
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise LoadError(f"cannot read ({e.strerror})", where=path) from None
    if sha256(data) != entry["sha256"]:
        raise LoadError("content hash differs from the manifest (file changed or corrupt)", where=path,
                        hint="recompile the model")
    return data


GRAPH_FILES = ("traced.json", "traced.npz", "ir.json", "ir.npz")


class ArtefactFiles(Mapping):
    """A loaded artefact's files by name: the graph files' bytes (the largest: the 171.7M model's
    weights) are read again, hash-checked, only when asked for (`Deployment.save`), since the graphs
    are already decoded from them; every other file was read and hash-checked at load."""

    def __init__(self, out: str, manifest: dict, read: dict[str, bytes]):
        self._out, self._manifest, self._read = out, manifest, read

    def __getitem__(self, name: str) -> bytes:
        if name not in self._manifest["files"]:
            raise KeyError(name)
        if name not in self._read:
            return read_file(self._out, name, self._manifest)
        return self._read[name]

    def __iter__(self):
        return iter(self._manifest["files"])

    def __len__(self) -> int:
        return len(self._manifest["files"])


def read_artefact(out: str) -> tuple[str, Graph, Graph, dict, Mapping[str, bytes]]:
    """Everything `api.load` makes a Deployment of: (target, traced graph, deployed graph, manifest
    body, files), every file hash-checked; numpy only, so a refused artefact costs no torch import.
    The graph files are read once, into the graphs (`ArtefactFiles`)."""
    manifest = read_manifest(out)
    read = {name: read_file(out, name, manifest) for name in manifest["files"] if name not in GRAPH_FILES}
    body = {k: v for k, v in manifest.items() if k not in ("schema", "files")}
    traced, deployed = read_graphs(out, ("traced", "ir"))  # one copy of the shared weights
    return manifest.get("target", "sim"), traced, deployed, body, ArtefactFiles(out, manifest, read)


def read_graph(out: str, stem: str = "ir") -> Graph:
    return read_graphs(out, (stem,))[0]


def read_graphs(out: str, stems: tuple[str, ...]) -> list[Graph]:
    """Graphs of one artefact (e.g. ("traced", "ir")), every file hash-checked against the manifest;
    arrays the graphs share (the deployed graph reads the traced model's weights) are read and
    decoded once and shared in memory."""
    m = read_manifest(out)
    archives: dict = {}
    graphs = []
    for stem in stems:
        source = os.path.join(out, f"{stem}.json")
        g = serialize.loads(read_file(out, f"{stem}.json", m), read_file(out, f"{stem}.npz", m), source=source,
                            other=lambda name: read_file(out, name, m), archives=archives, file=f"{stem}.npz")
        if "input_shape" in m and list(g.inputs[0].shape) != m["input_shape"]:
            raise LoadError(f"graph input shape {g.inputs[0].shape} disagrees with the manifest's input_shape "
                            f"{tuple(m['input_shape'])}", where=source, hint="recompile the model")
        if "T" in m and g.T != m["T"]:
            raise LoadError(f"graph T = {g.T} disagrees with the manifest's T = {m['T']}", where=source,
                            hint="recompile the model")
        graphs.append(g)
    return graphs


def write_set(files: dict[str, bytes]) -> None:
    """Write several output files that belong together (a report's markdown, HTML and plots) with
    `write_bytes`, under a lock on each folder they go to: two concurrent writers of the same set
    take turns, so the folder never holds a mix of the two (the last writer's set wins whole)."""
    folders = sorted({os.path.dirname(os.path.abspath(p)) for p in files})
    with contextlib.ExitStack() as stack:
        for folder in folders:
            try:
                os.makedirs(folder, exist_ok=True)
                stack.enter_context(_locked(folder))
            except OSError as e:
                raise ArtefactError(f"cannot write here ({e.strerror or e.__class__.__name__})", where=folder,
                                    hint="choose a writable place") from None
        for path, data in files.items():
            write_bytes(path, data)


def write_bytes(path: str, data: bytes) -> None:
    """Write one output file (a report, JSON, markdown, plot, NIR file): the one writer of them all.

    - a regular file, or a name that does not exist yet: written atomically (a temporary file in the
      same folder, then renamed over it), with the mode the user's umask gives a new file (an
      existing file keeps its mode);
    - a symbolic link: the file it points to is written that way; the link stays a link;
    - a character device, pipe or socket (`/dev/stdout`, `/dev/null`, a named pipe): written straight
      through, never replaced;
    - a folder, or a place that cannot be written: refused in one line, nothing written;
    - a full file system: one line, and no partial or temporary file is left behind.
    """
    import stat

    shown = path
    path = os.path.abspath(path)
    try:
        try:
            st = os.stat(path)  # follows links: /dev/stdout is the pipe or terminal behind it
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise ArtefactError("is a folder, expected a file name", where=shown, hint="name a file to write")
        if st is not None and not stat.S_ISREG(st.st_mode):
            with open(path, "wb") as f:
                f.write(data)
            return
        if os.path.islink(path):
            path = os.path.realpath(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{_TMP}{os.getpid()}-", dir=os.path.dirname(path))
        try:
            os.fchmod(fd, stat.S_IMODE(st.st_mode) if st is not None else created_mode())  # not mkstemp's 0600
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
    except OSError as e:
        import errno

        if e.errno == errno.ENOSPC:
            raise ArtefactError("no space left on the device; nothing was written", where=shown,
                                hint="free space there, or write elsewhere") from None
        raise ArtefactError(f"cannot write ({e.strerror or e.__class__.__name__})", where=shown,
                            hint="choose a writable path") from None
