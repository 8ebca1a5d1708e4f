"""The signed checkpoint's payload (docs/FORMAT.md section 4.1), shared by the writer and the verifier."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from asl_capture import dcbor
from asl_capture.format import _check as c
from asl_capture.format.constants import CHECKPOINT_VERSION
from asl_capture.format.record import CHAIN_ID_SIZE
from asl_capture.frozen import frozen


@frozen
class Checkpoint(c.Struct):
    """``{"v": 1, "chain", "seq", "digest"}``: record ``seq`` of chain ``chain`` has SHA-256 ``digest``."""

    chain: bytes
    seq: int
    digest: bytes

    VERSION: ClassVar[int | None] = CHECKPOINT_VERSION
    FIELDS: ClassVar[Mapping[str, c.Check]] = {"chain": c.sized(CHAIN_ID_SIZE), "seq": c.uint, "digest": c.digest}

    def to_cbor(self) -> bytes:
        """The deterministic CBOR of :meth:`to_value` (the payload that is signed)."""
        return dcbor.encode(self.to_value())

    @classmethod
    def from_cbor(cls, data: bytes) -> Checkpoint:
        """Decode and check a checkpoint payload.

        Raises:
            CborError: not deterministic CBOR, or (as :class:`FormatError`) not a version-1 checkpoint.
        """
        return cls.from_value(dcbor.decode(data))
