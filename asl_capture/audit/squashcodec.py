"""The squashfs compressors, each behind ``decompress(raw, limit)``: output longer than ``limit`` raises.

gzip (``zlib``) and xz (``lzma``) come from the standard library, zstd from the ``zstandard`` package
(imported only for a zstd image). Every problem raises :class:`~asl_capture.errors.ImageError`.
"""

from __future__ import annotations

import lzma
import zlib
from collections.abc import Callable
from typing import Protocol

from asl_capture.errors import ImageError

COMPRESSORS = {1: "gzip", 2: "lzma", 3: "lzo", 4: "xz", 5: "lz4", 6: "zstd"}


class _Stream(Protocol):
    @property
    def eof(self) -> bool: ...

    def decompress(self, data: bytes, max_length: int = ...) -> bytes: ...


def _bounded(make: Callable[[], _Stream], error: type[Exception], name: str) -> Callable[[bytes, int], bytes]:
    """``decompress(raw, limit)`` through a fresh streaming decompressor of the standard library."""
    def decompress(raw: bytes, limit: int) -> bytes:
        d = make()
        try:
            out = d.decompress(raw, limit + 1)
        except error as exc:
            raise ImageError(f"corrupt {name} block: {exc}") from None
        if len(out) > limit:
            raise ImageError(f"{name} block expands beyond {limit} bytes")
        if not d.eof:
            raise ImageError(f"truncated {name} block")
        return out
    return decompress


def decompressor(compressor: int) -> Callable[[bytes, int], bytes]:
    """``decompress(raw, limit)`` for the image's compressor; output longer than ``limit`` raises."""
    name = COMPRESSORS.get(compressor, f"#{compressor}")
    if name == "gzip":
        return _bounded(zlib.decompressobj, zlib.error, "gzip")
    if name == "xz":
        return _bounded(lambda: lzma.LZMADecompressor(format=lzma.FORMAT_XZ), lzma.LZMAError, "xz")
    if name == "zstd":
        try:
            import zstandard
        except ImportError:
            raise ImageError("the squashfs image is zstd-compressed: install the 'zstandard' Python package "
                             "(pip install zstandard, or Debian's python3-zstandard)") from None
        dctx = zstandard.ZstdDecompressor()

        def zstd(raw: bytes, limit: int) -> bytes:
            try:
                claimed = zstandard.frame_content_size(raw)
                if claimed > limit:
                    raise ImageError(f"zstd block claims {claimed} bytes, more than {limit}")
                out: bytes = dctx.decompress(raw, max_output_size=limit)
            except zstandard.ZstdError as exc:
                raise ImageError(f"corrupt zstd block: {exc}") from None
            if len(out) > limit:
                raise ImageError(f"zstd block expands beyond {limit} bytes")
            return out
        return zstd
    raise ImageError(f"squashfs compressor {name} is not supported (gzip, xz and zstd are)")


