"""The outcome of a numbered verification check, shared by ``asl-verify iso`` and ``asl-verify release``.

Both run every check (a failed one does not stop the later ones) and report them all; a failure is
raised as :class:`ChecksFailed`, named after the first failed check.
"""

from __future__ import annotations

from collections.abc import Sequence

from asl_capture.errors import VerificationError
from asl_capture.frozen import frozen


@frozen
class Check:
    """One numbered check's outcome (``record``: the chain record it names, if any)."""

    number: int
    name: str
    ok: bool
    detail: str
    record: int | None = None


def all_passed(checks: Sequence[Check], wanted: Sequence[str]) -> bool:
    """True when exactly the ``wanted`` checks ran, in order, and every one passed."""
    return [c.name for c in checks] == list(wanted) and all(c.ok for c in checks)


def failed(checks: Sequence[Check]) -> tuple[Check, ...]:
    """The checks that did not pass."""
    return tuple(c for c in checks if not c.ok)


class ChecksFailed(VerificationError):
    """At least one check failed; the message is the first failure's, with a count of the others."""

    def __init__(self, failures: Sequence[Check]) -> None:
        first = failures[0]
        more = len(failures) - 1
        super().__init__(first.detail + (f" (and {more} more failed check(s))" if more else ""), check=first.name,
                         record=first.record)
