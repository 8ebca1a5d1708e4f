"""A step's sources file: what it took from outside the build, validated line by line."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from asl_capture.context import read_sources
from asl_capture.errors import CaptureError
from asl_capture.format import Source

SHA = hashlib.sha256(b"pkg").hexdigest()


def test_sources_parse_with_digests_as_bytes_and_blank_lines_ignored(tmp_path: Path) -> None:
    f = tmp_path / "sources.jsonl"
    f.write_text(f'{{"uri": "http://deb/x.deb", "sha256": "{SHA}", "kind": "deb", "via": "idx", "size": 3}}\n'
                 f'\n   \n{{"uri": "file:///y", "sha256": "{SHA}", "kind": "file", "name": "y", "version": "1"}}\n')
    assert read_sources(f) == (
        Source(uri="http://deb/x.deb", sha256=bytes.fromhex(SHA), kind="deb", via="idx", size=3),
        Source(uri="file:///y", sha256=bytes.fromhex(SHA), kind="file", name="y", version="1"),
    )


@pytest.mark.parametrize(("line", "message"), [
    ("not json", r":2: not JSON"),
    ("[1, 2]", r":2: a source needs uri, sha256 and kind"),
    (f'{{"uri": "u", "sha256": "{SHA}"}}', r":2: a source needs uri, sha256 and kind"),
    (f'{{"uri": "u", "sha256": "{SHA}", "kind": "k", "extra": 1}}', r":2: a source needs uri"),
    ('{"uri": "u", "sha256": "ABC", "kind": "k"}', r":2: sha256 must be 64 lowercase hex digits"),
    (f'{{"uri": "u", "sha256": "{SHA.upper()}", "kind": "k"}}', r":2: sha256 must be 64 lowercase hex"),
    (f'{{"uri": "u", "sha256": "{SHA}", "kind": "k", "size": -1}}', r":2: size must be a non-negative integer"),
    (f'{{"uri": "u", "sha256": "{SHA}", "kind": "k", "size": true}}', r":2: size must be a non-negative"),
    (f'{{"uri": 7, "sha256": "{SHA}", "kind": "k"}}', r":2: uri must be a string"),
])
def test_a_bad_line_is_named_by_number(tmp_path: Path, line: str, message: str) -> None:
    f = tmp_path / "sources.jsonl"
    f.write_text(f'{{"uri": "u", "sha256": "{SHA}", "kind": "k"}}\n{line}\n')
    with pytest.raises(CaptureError, match=message):
        read_sources(f)


def test_unreadable_or_non_utf8_sources_file(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match=r"cannot read sources file"):
        read_sources(tmp_path / "absent.jsonl")
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"uri": "caf\xe9"}\n')
    with pytest.raises(CaptureError, match=r"cannot read sources file"):
        read_sources(bad)
