"""The signed checkpoint's payload (docs/FORMAT.md section 4.1), shared by the writer and the verifier."""

from __future__ import annotations

from dataclasses import dataclass

from asl_capture import dcbor
from asl_capture.dcbor import Value
from asl_capture.format import _check as c
from asl_capture.format.constants import CHECKPOINT_VERSION
from asl_capture.format.record import CHAIN_ID_SIZE


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """``{"v": 1, "chain", "seq", "digest"}``: record ``seq`` of chain ``chain`` has SHA-256 ``digest``."""

    chain: bytes
    seq: int
    digest: bytes

    def to_value(self) -> dict[str, Value]:
        return {"v": CHECKPOINT_VERSION, "chain": self.chain, "seq": self.seq, "digest": self.digest}

    def to_cbor(self) -> bytes:
        """The deterministic CBOR of :meth:`to_value` (the payload that is signed)."""
        return dcbor.encode(self.to_value())

    @classmethod
    def from_value(cls, value: Value) -> Checkpoint:
        """Check a decoded checkpoint.

        Raises:
            FormatError: names the offending field.
        """
        body = c.fields(value, "", ("v", "chain", "seq", "digest"))
        c.version(body["v"], "v", CHECKPOINT_VERSION)
        return cls(chain=c.bstr(body["chain"], "chain", CHAIN_ID_SIZE), seq=c.uint(body["seq"], "seq"),
                   digest=c.digest(body["digest"], "digest"))

    @classmethod
    def from_cbor(cls, data: bytes) -> Checkpoint:
        """Decode and check a checkpoint payload.

        Raises:
            CborError: not deterministic CBOR, or (as :class:`FormatError`) not a version-1 checkpoint.
        """
        return cls.from_value(dcbor.decode(data))
