"""`snncc.cli.main(argv)` run in the test process and read as the installed `snncc` command's output,
for the tests that are not about the process itself (a fresh `snncc` costs a torch import, 2-3 CPU
s): the exit code, standard output, and standard error read at the file descriptors (C-level noise
counts), with the warnings shown under the console script's filters and the log records at WARNING
and above (which the script's logging.basicConfig prints) appended as the lines the script would
print. A plain function, so module-scoped fixtures can use it too (tests/conftest.py's snncc_main
fixture is the per-test form)."""

from __future__ import annotations

import io
import logging
import os
import sys
import tempfile
import warnings

# Python's own warning filters, what the console script starts with (pytest installs its own); with
# PYTHONWARNINGS=default every warning shows once per place, as on a user's terminal with that set.
PYTHON_FILTERS = [("default", None, DeprecationWarning, "__main__", 0), ("ignore", None, DeprecationWarning, None, 0),
                  ("ignore", None, PendingDeprecationWarning, None, 0), ("ignore", None, ImportWarning, None, 0),
                  ("ignore", None, ResourceWarning, None, 0)]
DEFAULT_FILTERS = [("default", None, Warning, None, 0)]


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(f"{record.name}: {record.getMessage()}\n")


def run_main(*argv, cwd=None, warnings_filter: str | None = None) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `snncc ARGV` run in this process from `cwd` (default: here);
    `warnings_filter="default"` shows warnings as PYTHONWARNINGS=default does."""
    from snncc.cli import main

    here, streams = os.getcwd(), (sys.stdout, sys.stderr)
    root, records = logging.getLogger(), _Records()
    level = root.level
    for s in streams:
        s.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
        os.dup2(fo.fileno(), 1)
        os.dup2(fe.fileno(), 2)
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", line_buffering=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", line_buffering=True)
        root.addHandler(records)
        root.setLevel(logging.WARNING)
        try:
            if cwd is not None:
                os.chdir(cwd)
            with warnings.catch_warnings(record=True) as shown:
                warnings.filters[:] = list(DEFAULT_FILTERS if warnings_filter == "default" else PYTHON_FILTERS)
                try:
                    code = main([str(a) for a in argv])
                except SystemExit as e:  # argparse
                    code = e.code
        finally:
            os.chdir(here)
            root.removeHandler(records)
            root.setLevel(level)
            sys.stdout.flush()
            sys.stderr.flush()
            sys.stdout, sys.stderr = streams
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read().decode(), fe.read().decode()
    err += "".join(f"snncc: warning: {w.message}\n" for w in shown) + "".join(records.lines)
    return code, out, err
