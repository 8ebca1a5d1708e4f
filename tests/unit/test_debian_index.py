"""Reading .deb digests out of a Debian Packages index (asl_capture.audit.debian.index_sha256)."""

from __future__ import annotations

import random
import re

import pytest

from asl_capture.audit.debian import index_sha256

A, B, C = "a" * 64, "b" * 64, "c" * 64


def stanza(name: str, digest: str | None, *, filename_line: str | None = None) -> str:
    lines = ["Package: p", "Version: 1"]
    lines.append(filename_line if filename_line is not None else f"Filename: {name}")
    if digest is not None:
        lines.append(f"SHA256: {digest}")
    lines.append("Description: x\n Filename: pool/fake_1_all.deb\n SHA256: " + C)
    return "\n".join(lines)


def reference(index: bytes, wanted: set[str]) -> dict[str, bytes | None]:
    """The rule, written as the multi-line regular expressions it used to be."""
    out: dict[str, bytes | None] = {}
    for m in re.finditer(rb"^Filename: (\S+)$", index, re.M):
        name = m.group(1).decode("utf-8", "replace")
        if name not in wanted:
            continue
        start = index.rfind(b"\n\n", 0, m.start()) + 1
        end = index.find(b"\n\n", m.end())
        found = re.compile(rb"^SHA256: ([0-9a-f]{64})$", re.M).search(index, start, end if end >= 0 else len(index))
        digest = bytes.fromhex(found.group(1).decode()) if found else None
        out[name] = digest if name not in out or out[name] == digest else None
    return out


def test_digests_by_filename() -> None:
    index = "\n\n".join([stanza("pool/a_1_all.deb", A), stanza("pool/b_1_all.deb", B),
                         stanza("pool/c_1_all.deb", None), stanza("pool/d_1_all.deb", C)]).encode() + b"\n"
    wanted = {"pool/a_1_all.deb", "pool/b_1_all.deb", "pool/c_1_all.deb", "pool/fake_1_all.deb", "pool/x.deb"}
    assert index_sha256(index, wanted) == {"pool/a_1_all.deb": bytes.fromhex(A), "pool/b_1_all.deb": bytes.fromhex(B),
                                           "pool/c_1_all.deb": None}


def test_a_name_listed_twice_with_two_digests_matches_nothing() -> None:
    index = "\n\n".join([stanza("pool/a.deb", A), stanza("pool/a.deb", A), stanza("pool/b.deb", A),
                         stanza("pool/b.deb", B)]).encode()
    assert index_sha256(index, {"pool/a.deb", "pool/b.deb"}) == {"pool/a.deb": bytes.fromhex(A), "pool/b.deb": None}


@pytest.mark.parametrize("line", ["Filename: pool/a.deb ", "Filename:  pool/a.deb", "Filename: pool/a.deb\r",
                                  "Filename: pool/a.deb x", "Filename: ", " Filename: pool/a.deb",
                                  "XFilename: pool/a.deb", "filename: pool/a.deb"])
def test_only_a_whole_filename_line_counts(line: str) -> None:
    index = stanza("pool/a.deb", A, filename_line=line).encode()
    assert index_sha256(index, {"pool/a.deb"}) == reference(index, {"pool/a.deb"}) == {}


def test_same_answer_as_the_regular_expressions_on_random_indices() -> None:
    rng = random.Random(7)
    names = [f"pool/p{n}_1_all.deb" for n in range(12)]
    lines = [*(f"Filename: {n}" for n in names), *(f"SHA256: {d}" for d in (A, B, C)), "", "", "Filename: ",
             " Filename: pool/p1_1_all.deb", "Filename: pool/p2_1_all.deb ", "SHA256: " + "d" * 63, "Package: q"]
    for _ in range(400):
        index = "\n".join(rng.choice(lines) for _ in range(rng.randrange(0, 30))).encode()
        if rng.random() < 0.3:
            index = index.lstrip(b"\n")
        wanted = set(rng.sample(names, 6))
        assert index_sha256(index, wanted) == reference(index, wanted), index
