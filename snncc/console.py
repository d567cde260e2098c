"""The `snncc` console script: the process around `snncc.cli` (signals, standard output, exit codes).

It imports nothing heavy before its handlers are in place, so Ctrl-C while torch is still
importing ends with one line and exit 130, SIGTERM with one line and exit 143 (a `SystemExit`
that unwinds through worker pools, which end their processes on the way out), a reader that
closes the pipe early (`snncc inspect out | head`) ends quietly as Unix tools do (exit 141, the
shell's code for SIGPIPE), and a full device behind standard output is one `snncc: error:` line
(exit 2). `snncc.cli.main(argv)` stays the in-process entry point that tests and scripts call.
"""

from __future__ import annotations

import errno
import os
import signal
import sys

INTERRUPTED = 130  # 128 + SIGINT
BROKEN_PIPE = 141  # 128 + SIGPIPE
TERMINATED = 143  # 128 + SIGTERM


def _on_sigterm(signum, frame):
    raise SystemExit(TERMINATED)


def _stdout_to_devnull() -> None:
    """Point fd 1 at /dev/null so the interpreter's final flush of buffered output cannot fail."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError, AttributeError):
        pass


def _stdout_failed(e: OSError) -> int:
    """Exit code for a failed write to standard output: quiet on a closed pipe, one line when full."""
    if isinstance(e, BrokenPipeError) or e.errno == errno.EPIPE or not isinstance(e.filename, str):
        _stdout_to_devnull()
    if isinstance(e, BrokenPipeError) or e.errno == errno.EPIPE:
        return BROKEN_PIPE
    where = e.filename if isinstance(e.filename, str) else "standard output"
    print(f"snncc: error: {where!r}: {e.strerror or e} (free space there, or write elsewhere)", file=sys.stderr)
    return 2


def main() -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        from snncc import cli

        code = cli.main()
        sys.stdout.flush()
        return code
    except KeyboardInterrupt:
        print("snncc: interrupted", file=sys.stderr)
        return INTERRUPTED
    except SystemExit as e:
        if e.code == TERMINATED:
            print("snncc: terminated", file=sys.stderr)
        raise
    except OSError as e:
        if e.errno in (errno.EPIPE, errno.ENOSPC):
            return _stdout_failed(e)
        raise


def run() -> None:
    sys.exit(main())
