"""Thin command-line front ends: parse, call one core function, map errors to exit codes, print."""

from __future__ import annotations

import io
import os
import sys


def ensure_std_fds() -> None:
    """Open ``/dev/null`` on any of descriptors 0, 1 and 2 that the caller left closed.

    Otherwise the first file a tool opens takes that number: a capture run with ``>&-`` would
    write its log into its own temporary object, and messages meant for stderr would land in a
    file. Called first by every console entry point (in :func:`asl_capture.cli.run._run`).
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)
            if opened != fd:  # a lower descriptor was free too: it is handled in its own turn
                os.dup2(opened, fd)
                os.close(opened)
    # Python sets sys.stdout/sys.stderr to None when the descriptor was closed at start-up
    if sys.stdout is None:
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
    if sys.stderr is None:
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True,
                                      errors="backslashreplace")
