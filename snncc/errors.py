"""The one error family of snncc: what failed, where, and what to do about it.

The CLI prints a `SnnccError` as a single line and exits with its `exit_code`; anything
else escaping is a bug and gets a traceback.
"""

from __future__ import annotations


class SnnccError(Exception):
    """A user-facing failure. `where` names the node, module path, file or field."""

    exit_code = 2

    def __init__(self, what: str, where: str | None = None, hint: str | None = None):
        self.what = what
        self.where = where
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        parts = []
        if self.where:
            where = str(self.where)
            # a path holding a newline or other control character would break the one line: quote it
            parts.append(f"{where!r}: " if any(not c.isprintable() for c in where) else f"{where}: ")
        parts.append(self.what)
        if self.hint:
            parts.append(f" ({self.hint})")
        return "".join(parts)


def first_line(e: Exception) -> str:
    """The first line of an exception raised by other code (at most 200 characters), or its class name."""
    s = str(e).strip()
    return s.splitlines()[0][:200] if s else e.__class__.__name__


class IRError(SnnccError):
    """An ill-formed or ill-typed graph."""


class FrontendError(SnnccError):
    """A model that cannot be traced or mapped to the spiking IR."""


class LoadError(SnnccError):
    """A model or artefact file that cannot be read."""


class ArtefactError(SnnccError):
    """An artefact folder or output file that cannot be written (or may not be replaced)."""


class PassError(SnnccError):
    """A pass whose precondition does not hold."""


class TargetError(SnnccError):
    """A model that the chosen target cannot hold, or a missing backend."""


class VerificationError(SnnccError):
    """Two levels of the compiled model disagree."""

    exit_code = 1


def name_list(names, limit: int = 8) -> str:
    """Node names for a message or a summary line: all of them when few, else the first `limit`
    and a count (a 1000-layer chain must not print 1000 names on one line)."""
    names = list(names)
    if len(names) <= limit:
        return ", ".join(names)
    return f"{', '.join(names[:limit])}, ... ({len(names)} in all)"
