"""Snapshots: the tree manifest (:class:`asl_capture.format.Manifest`) of roots, from an ``lstat`` walk.

Symlinks are never followed and nothing outside the roots is read. Paths are relative to the
capture's base directory (``/``-separated) or absolute when a root lies outside it.
"""

from __future__ import annotations

import fnmatch
import functools
import operator
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from asl_capture import gcpause
from asl_capture.format.tree import Entry, Manifest
from asl_capture.frozen import frozen
from asl_capture.hashing import Hasher
from asl_capture.scan import Row, Skip, scan


def label_for(root: Path, base: Path) -> bytes:
    """How a root is named in a manifest: relative to ``base`` when inside it, else absolute."""
    absolute = os.path.abspath(root)
    base_abs = os.path.abspath(base)
    if absolute == base_abs:
        return b"."
    if absolute.startswith(base_abs.rstrip("/") + "/"):
        return os.fsencode(os.path.relpath(absolute, base_abs))
    return os.fsencode(absolute)


@frozen
class Excluder:
    """Which paths a snapshot skips, each with its subtree: those a glob pattern matches (by label
    or name) and the ``absolute`` paths. The walk (``scan.py``) also always skips ``.git``."""

    patterns: tuple[str, ...] = ()
    absolute: frozenset[bytes] = frozenset()

    def matches(self, abs_path: bytes, label: bytes, name: bytes) -> bool:
        """True when a glob pattern matches the path's label or name."""
        if not self.patterns:
            return False
        text_label, text_name = os.fsdecode(label), os.fsdecode(name)
        return any(fnmatch.fnmatchcase(text_label, p) or fnmatch.fnmatchcase(text_name, p) for p in self.patterns)


def snapshot(
    roots: Sequence[Path],
    *,
    base: Path | None = None,
    excluder: Excluder | None = None,
    hasher: Hasher | None = None,
    progress: Callable[[int], None] | None = None,
    missing_ok: bool = False,
) -> Manifest:
    """Walk ``roots`` with ``lstat`` and return their manifest, hashing regular files.

    With ``missing_ok``, a root that does not exist contributes no entries (an output not made yet).

    Raises:
        SnapshotError: a root or path cannot be read, or a file changed while being hashed.
    """
    with gcpause.paused():
        return _snapshot(roots, base if base is not None else Path.cwd(),
                         excluder if excluder is not None else Excluder(),
                         hasher if hasher is not None else Hasher(), progress, missing_ok)


def _snapshot(roots: Sequence[Path], base: Path, excluder: Excluder, hasher: Hasher,
              progress: Callable[[int], None] | None, missing_ok: bool) -> Manifest:
    labels: list[bytes] = []
    pairs: list[tuple[bytes, bytes]] = []
    for root in roots:
        label = label_for(root, base)
        labels.append(label)
        if missing_ok and not os.path.lexists(root):
            continue
        pairs.append((os.fsencode(os.path.abspath(root)), label))
    skip = Skip(excluder.absolute, excluder.matches if excluder.patterns else None)
    rows, misses = scan(pairs, skip=skip, cache=hasher.cache, workers=hasher.workers)
    if misses:
        known = sum(1 for row in rows if row[1] == "f") if progress is not None else 0
        digests = hasher.hash_files([(abs_path, identity) for _label, abs_path, identity in misses],
                                    progress=progress, done=known)
        rows.extend((label, "f", identity[5] & 0o7777, identity[2], digest)
                    for (label, _abs_path, identity), digest in zip(misses, digests, strict=True))
    if len(pairs) > 1:  # roots may overlap: one row per label
        rows = list({row[0]: row for row in rows}.values())
    rows.sort(key=_LABEL)
    return Manifest(roots=tuple(sorted(set(labels))), entries=tuple(map(_AS_ENTRY, rows)),
                    exclude=tuple(dict.fromkeys(excluder.patterns)))


_LABEL = operator.itemgetter(0)
#: A row as an :class:`Entry` without the per-call overhead of ``Entry._make`` (same object).
_AS_ENTRY: Callable[[Row], Entry] = functools.partial(tuple.__new__, Entry)
