"""Shared builders for the unit tests: a minimal valid step record, like ``capture._draft`` makes."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable

from asl_capture import dcbor
from asl_capture.chain import Head
from asl_capture.format import Host, Inputs, Log, Outputs, StepRecord


def digest(label: str) -> bytes:
    """A distinct, recognisable 32-byte digest."""
    return hashlib.sha256(label.encode()).digest()


def minimal_record(step: str = "step", *, run: int = 0) -> StepRecord:
    """A version-1 record with every required field; its chain fields are placeholders."""
    return StepRecord(
        chain=bytes(16), seq=0, prev=None,
        id=run.to_bytes(16, "big"),
        parent=None,
        step=step,
        argv=(step, "--flag"),
        cwd="/work",
        env={"PATH": "/usr/bin", "API_TOKEN": None},
        started=1_700_000_000_000_000_000 + run,
        finished=1_700_000_001_000_000_000 + run,
        exit=0,
        status="ok",
        inputs=Inputs(manifest=digest(f"in{run}"), entries=1, files=1),
        outputs=Outputs(manifest=digest(f"out{run}"), before=digest(f"before{run}"), changes=digest(f"changes{run}"),
                        entries=1, files=1, created=1, modified=0, deleted=0),
        stdout=Log(digest=digest(f"stdout{run}"), size=0),
        stderr=Log(digest=digest(f"stderr{run}"), size=0),
        host=Host(hostname="h", kernel="k", machine="x86_64", tool="asl-capture 0.1.0", python="3.11.2"),
    )


def full_record(seq: int = 0, prev: bytes | None = None, chain: bytes = b"C" * 16) -> StepRecord:
    """A complete record placed in a chain."""
    return minimal_record(run=seq).linked(chain=chain, seq=seq, prev=prev)


def full_body(seq: int = 0, prev: bytes | None = None, chain: bytes = b"C" * 16) -> dict[str, dcbor.Value]:
    """:func:`full_record` as its decoded CBOR map, for tests that break it field by field."""
    return full_record(seq, prev, chain).to_value()


def builder(step: str = "step", *, run: int = 0,
            seen: list[Head] | None = None, **changes: object) -> Callable[[Head], StepRecord]:
    """A ``build`` callback for :func:`asl_capture.chain.append`, optionally recording the heads it saw."""

    def build(head: Head) -> StepRecord:
        if seen is not None:
            seen.append(head)
        return dataclasses.replace(minimal_record(step, run=run), **changes)  # type: ignore[arg-type]

    return build
