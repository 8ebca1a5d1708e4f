"""Compare a recorded tree with what an image holds, path by path, naming every difference."""

from __future__ import annotations

import os

from asl_capture.frozen import frozen

SHOWN = 8


@frozen
class Seen:
    """One path as found in an image (or recorded): the fields both sides can state."""

    kind: str
    mode: int
    size: int
    digest: bytes | None = None
    target: bytes | None = None
    rdev: tuple[int, int] | None = None
    owner: tuple[int, int] | None = None


_KIND_NAMES = {"f": "file", "d": "directory", "l": "symlink", "c": "char device", "b": "block device",
               "p": "fifo", "s": "socket"}


def _show(path: bytes) -> str:
    return "/" + os.fsdecode(path) if path != b"." else "/"


def differences(recorded: dict[bytes, Seen], found: dict[bytes, Seen], *, hashed: bool = True) -> list[str]:
    """Each path missing, extra or different, one line each, sorted by path. With ``hashed`` False,
    digests are not compared (they are compared later, once metadata agrees)."""
    problems: list[tuple[bytes, str]] = []
    for path in recorded.keys() - found.keys():
        problems.append((path, f"{_show(path)}: recorded ({_KIND_NAMES[recorded[path].kind]}) but missing"))
    for path in found.keys() - recorded.keys():
        problems.append((path, f"{_show(path)}: present ({_KIND_NAMES[found[path].kind]}) but not recorded"))
    for path in recorded.keys() & found.keys():
        problem = difference(recorded[path], found[path], hashed=hashed)
        if problem:
            problems.append((path, f"{_show(path)}: {problem}"))
    return [text for _p, text in sorted(problems)]


def difference(want: Seen, got: Seen, *, hashed: bool = True) -> str | None:
    """What differs between a recorded and a found path, or None."""
    if want.kind != got.kind:
        return f"recorded as {_KIND_NAMES[want.kind]}, is a {_KIND_NAMES[got.kind]}"
    if want.mode != got.mode:
        return f"mode {want.mode:04o} recorded, {got.mode:04o} found"
    if want.owner is not None and got.owner is not None and want.owner != got.owner:
        return f"owner {want.owner[0]}:{want.owner[1]} recorded, {got.owner[0]}:{got.owner[1]} found"
    if want.size != got.size:
        return f"size {want.size} recorded, {got.size} found"
    if want.target != got.target:
        return f"symlink target {want.target!r} recorded, {got.target!r} found"
    if want.rdev != got.rdev:
        return f"device {want.rdev} recorded, {got.rdev} found"
    if hashed and want.digest != got.digest:
        return (f"content differs: sha256 {want.digest.hex() if want.digest else '-'} recorded, "
                f"{got.digest.hex() if got.digest else '-'} found")
    return None


def summary(problems: list[str], what: str) -> str:
    """One line: how many problems, the first few named."""
    shown = "; ".join(problems[:SHOWN])
    more = f"; and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
    return f"{len(problems)} difference(s) in {what}: {shown}{more}"
