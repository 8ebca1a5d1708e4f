"""Shared builders for the unit tests: a minimal valid step-record body, like ``capture._body`` makes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from asl_capture import dcbor
from asl_capture.chain import Head


def digest(label: str) -> bytes:
    """A distinct, recognisable 32-byte digest."""
    return hashlib.sha256(label.encode()).digest()


def minimal_body(step: str = "step", *, run: int = 0) -> dict[str, dcbor.Value]:
    """Every required field of a version-1 record except the chain fields (``chain``, ``seq``, ``prev``)."""
    return {
        "v": 1,
        "id": run.to_bytes(16, "big"),
        "parent": None,
        "step": step,
        "argv": [step, "--flag"],
        "cwd": "/work",
        "env": {"PATH": "/usr/bin", "API_TOKEN": None},
        "started": 1_700_000_000_000_000_000 + run,
        "finished": 1_700_000_001_000_000_000 + run,
        "exit": 0,
        "status": "ok",
        "inputs": {"manifest": digest(f"in{run}"), "entries": 1, "files": 1},
        "outputs": {
            "manifest": digest(f"out{run}"), "before": digest(f"before{run}"), "changes": digest(f"changes{run}"),
            "entries": 1, "files": 1, "created": 1, "modified": 0, "deleted": 0,
        },
        "stdout": {"digest": digest(f"stdout{run}"), "size": 0},
        "stderr": {"digest": digest(f"stderr{run}"), "size": 0},
        "host": {"hostname": "h", "kernel": "k", "machine": "x86_64", "tool": "asl-capture 0.1.0"},
    }


def full_body(seq: int = 0, prev: bytes | None = None, chain: bytes = b"C" * 16) -> dict[str, dcbor.Value]:
    """A complete record body, chain fields included."""
    body = minimal_body(run=seq)
    body.update({"chain": chain, "seq": seq, "prev": prev})
    return body


def builder(step: str = "step", *, run: int = 0,
            seen: list[Head] | None = None) -> Callable[[Head], dict[str, dcbor.Value]]:
    """A ``build`` callback for :func:`asl_capture.chain.append`, optionally recording the heads it saw."""

    def build(head: Head) -> dict[str, dcbor.Value]:
        if seen is not None:
            seen.append(head)
        return minimal_body(step, run=run)

    return build
