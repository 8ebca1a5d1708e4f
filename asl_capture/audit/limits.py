"""How much of an untrusted image a reader may take in: names, paths, and the sizes a record gives.

Time and memory of reading an image follow from the recorded image, never from what the image claims:
a walk stops with an :class:`~asl_capture.errors.ImageError` at the first name, path or path count
beyond these bounds, and a file's block list is read only when its claimed size is the recorded one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from asl_capture.frozen import frozen

#: A name is at most NAME_MAX bytes (what a Linux file system can hold); a path at most PATH_MAX unless
#: the record knows a longer one.
MAX_NAME = 255
MAX_PATH = 4096
#: Paths and their total bytes read from an image when no record bounds them.
MAX_PATHS = 1_000_000
MAX_PATH_BYTES = 64 << 20


@frozen
class Limits:
    """What a walk may read: paths (count, length, total bytes), and, when a record is known, the
    recorded size of each regular file: a file's block list is read only when its claimed size is the
    recorded one (``sizes``), so no claimed size leads to work the record does not account for."""

    max_paths: int = MAX_PATHS
    max_path: int = MAX_PATH
    max_path_bytes: int = MAX_PATH_BYTES
    sizes: Mapping[bytes, int] | None = None

    @classmethod
    def from_record(cls, sizes: Mapping[bytes, int], paths: Sequence[bytes]) -> Limits:
        """Bounds following from a recorded tree: twice its paths and path bytes (room to name what an
        image adds), a path no longer than the recorded longest or PATH_MAX."""
        longest = max((len(p) for p in paths), default=0)
        total = sum(len(p) for p in paths)
        return cls(max_paths=2 * len(paths) + 1024, max_path=max(MAX_PATH, longest),
                   max_path_bytes=2 * total + (1 << 20), sizes=sizes)
