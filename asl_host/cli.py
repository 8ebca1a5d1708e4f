"""The one error path of the host's command-line tools: ``prog: ClassName: message``, exit code by class."""

from __future__ import annotations

import sys
from collections.abc import Callable

from asl_host.errors import EXIT_USAGE, HostError


def run(prog: str, body: Callable[[], int]) -> int:
    """Call ``body``; a :class:`HostError` becomes one line on stderr and its class's exit code,
    an ``OSError`` not already turned into one becomes exit 2."""
    try:
        return body()
    except HostError as exc:
        print(f"{prog}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{prog}: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
