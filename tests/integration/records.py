"""Helpers for the integration tests: read a chain back independently of the verifier."""

from __future__ import annotations

import re
from pathlib import Path

from asl_capture import chain, cose, dcbor
from asl_capture.format import StepRecord
from asl_capture.keys import load_public

ONE_LINE_ERROR = re.compile(rb"\A[A-Z][A-Za-z]*Error: [^\n]+\n\Z")


def read_records(prov: Path, pub: Path) -> list[StepRecord]:
    """Every record of ``prov/chain.cbor``, each signature checked with ``pub`` (no torn tail allowed)."""
    scan = chain.read(prov / "chain.cbor")
    assert scan.torn is None, f"torn tail at {scan.torn}"
    key = load_public(pub)
    records = []
    for item in scan.items:
        msg = cose.parse(dcbor.decode(item.raw, tags=frozenset({cose.COSE_SIGN1_TAG})))
        records.append(StepRecord.from_cbor(cose.verify(msg, key)))
    return records


def object_bytes(prov: Path, digest: bytes) -> bytes:
    """The stored object with this SHA-256 (asserting it exists)."""
    name = digest.hex()
    path = prov / "objects" / "sha256" / name[:2] / name[2:]
    assert path.is_file(), f"object {name} missing"
    return path.read_bytes()


def assert_one_line_error(stderr: bytes, name: str | None = None) -> None:
    """stderr is exactly one ``ClassName: message`` line, without a traceback."""
    assert b"Traceback" not in stderr, stderr.decode(errors="replace")
    assert ONE_LINE_ERROR.match(stderr), stderr.decode(errors="replace")
    if name is not None:
        assert stderr.startswith(name.encode() + b": "), stderr.decode(errors="replace")
