"""The checkpoint, the tree manifest and change list, and the build manifest: typed and strict."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable

import pytest

from asl_capture import dcbor
from asl_capture.errors import FormatError
from asl_capture.format import (
    BuildManifest,
    BuildSource,
    Changes,
    Checkpoint,
    Entry,
    Manifest,
    SystemTree,
    TreeDigest,
)


@pytest.fixture(autouse=True)
def _both_parser_paths(parser_path: str) -> str:
    """Every test here runs with the interpreted and with the compiled parsers (conftest.py)."""
    return parser_path


def sha(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def build_manifest() -> BuildManifest:
    return BuildManifest(
        name="asl-auth-host", version="1.0.0", source_date_epoch=1_700_000_000, kernel="6.1.0-28-amd64",
        sources=(BuildSource("deb", "pool/main/a/a.deb", sha("a")),
                 BuildSource("release", "dists/x/InRelease", sha("r"))),
        overlay=TreeDigest(manifest=sha("o"), paths=3), system=SystemTree(manifest=sha("s"), paths=9, files=5),
        files={"live/vmlinuz": sha("k")},
    )


def test_build_manifest_round_trip_and_identity() -> None:
    doc = build_manifest()
    data = doc.to_cbor()
    assert BuildManifest.from_cbor(data) == doc
    assert doc.identity == f"sha256:{hashlib.sha256(data).hexdigest()}"
    value = doc.to_value()
    assert value["sources_digest"] == hashlib.sha256(dcbor.encode(value["sources"])).digest()
    assert value["v"] == 1


@pytest.mark.parametrize(("change", "message"), [
    (lambda v: v.update(sources=list(reversed(v["sources"]))), "sources[1]: sources not sorted or repeated"),
    (lambda v: v.update(sources_digest=sha("x")), "sources_digest: is not the SHA-256 of the encoded sources"),
    (lambda v: v.pop("sources_digest"), "sources_digest: missing"),
    (lambda v: v.pop("kernel"), "kernel: missing"),
    (lambda v: v.update(extra=1), "extra: unknown field"),
    (lambda v: v["files"].update({"live/initrd.img": "hex"}), "files.live/initrd.img: expected 32 bytes, found text"),
    (lambda v: v["overlay"].update(paths=-1), "overlay.paths: expected uint, found negative int"),
    (lambda v: v["system"].pop("files"), "system.files: missing"),
    (lambda v: v["sources"][0].append("x"), "sources[0]: expected an array of 3, found 4 item(s)"),
    (lambda v: v.update(v=2), "v: version 2 is not 1"),
], ids=["unsorted", "digest", "no-digest", "no-kernel", "extra", "files", "overlay", "system", "source", "version"])
def test_build_manifest_strict(change: object, message: str) -> None:
    value = build_manifest().to_value()
    change(value)  # type: ignore[operator]
    with pytest.raises(FormatError) as info:
        BuildManifest.from_value(value)
    assert str(info.value) == message


def test_checkpoint_round_trip_and_strict() -> None:
    point = Checkpoint(chain=b"c" * 16, seq=4, digest=sha("d"))
    assert Checkpoint.from_cbor(point.to_cbor()) == point
    assert point.to_value() == {"v": 1, "chain": b"c" * 16, "seq": 4, "digest": sha("d")}
    cases: list[tuple[str, dcbor.Value, str]] = [("seq", True, "seq: expected uint, found bool"),
                                ("chain", b"c", "chain: expected 16 bytes, found 1"),
                                ("digest", None, "digest: expected 32 bytes, found null"),
                                ("v", 0, "v: version 0 is not 1")]
    for field, bad, message in cases:
        with pytest.raises(FormatError) as info:
            Checkpoint.from_value({**point.to_value(), field: bad})
        assert str(info.value) == message


ENTRIES = (Entry(b".", "d", 0o755, 0, None), Entry(b"a", "f", 0o644, 1, sha("a")), Entry(b"l", "l", 0o777, 1, b"a"),
           Entry(b"tty", "c", 0o620, 0, 1024), Entry(b"\xff", "p", 0o600, 0, None))


def test_manifest_and_changes_round_trip() -> None:
    manifest = Manifest(roots=(b".",), entries=ENTRIES)
    assert Manifest.from_cbor(manifest.encode()) == manifest
    changes = Changes(created=ENTRIES[1:3], modified=(ENTRIES[3],), deleted=(b"gone", b"\xfe"))
    assert Changes.from_cbor(changes.encode()) == changes


@pytest.mark.parametrize(("index", "value", "message"), [
    (1, ["a", "f", 0o644, 1, b"short"], "entries[1][4]: expected 32 bytes, found 5"),
    (1, ["a", "f", 0o10644, 1, sha("a")], "entries[1][2]: mode 10644 has bits outside the permission bits 7777"),
    (1, ["a", "x", 0, 0, None], "entries[1][1]: 'x' is not one of f, d, l, c, b, p, s"),
    (2, ["l", "l", 0o777, 1, 5], "entries[2][4]: expected text or bytes, found uint"),
    (2, ["l", "l", 0o777, 2, "a"], "entries[2][3]: size 2 is not the target's length 1"),
    (3, ["tty", "c", 0o620, 0, None], "entries[3][4]: expected uint, found null"),
    (4, [b"\xff", "p", 0o600, 3, None], "entries[4][3]: size of a 'p' entry must be 0, found 3"),
    (4, [b"\xff", "p", 0o600, 0, b""], "entries[4][4]: expected null, found bytes"),
    (4, [b"zz", "p", 0o600, 0, None], "entries[4][0]: bytes that are valid UTF-8 must be recorded as text"),
    (0, ["z", "d", 0o755, 0, None], "entries[1]: paths not sorted by their bytes or repeated"),
    (1, [".", "d", 0o755, 0, None], "entries[1]: paths not sorted by their bytes or repeated"),
    (1, ["a", "f", 0o644, 1], "entries[1]: expected an array of 5, found 4 item(s)"),
])
def test_manifest_entry_strict(index: int, value: list[dcbor.Value], message: str) -> None:
    doc = Manifest(roots=(b".",), entries=ENTRIES).to_value()
    doc["entries"][index] = value  # type: ignore[index]
    with pytest.raises(FormatError) as info:
        Manifest.from_value(doc)
    assert str(info.value) == message


def test_changes_strict() -> None:
    with pytest.raises(FormatError, match=r"^deleted\[0\]: expected text or bytes, found uint$"):
        Changes.from_value({"v": 1, "created": [], "modified": [], "deleted": [1]})
    with pytest.raises(FormatError, match=r"^created: missing$"):
        Changes.from_value({"v": 1, "modified": [], "deleted": []})


def test_entry_fast_path_agrees_with_the_checked_one() -> None:
    """Entry.from_value takes the common valid shapes without naming items: every value, valid or not,
    must get what the item-by-item check gives."""
    parts: list[list[dcbor.Value]] = [
        ["a", "é", b"\xff", b"a", 1, None],
        ["f", "d", "l", "c", "p", "x", b"f", None],
        [0, 0o644, 0o7777, 0o10000, -1, True, "0"],
        [0, 1, 32, (1 << 64) - 1, 1 << 64, -1, False],
        [sha("a"), b"short", None, "a", 5, True, b"a" * 33],
    ]

    def outcome(parse: Callable[[dcbor.Value, str], Entry], value: dcbor.Value) -> object:
        try:
            return parse(value, "e")
        except FormatError as exc:
            return str(exc)

    values: list[dcbor.Value] = [list(items) for items in itertools.product(*parts)]
    values += [["a", "f", 0o644, 1], ["a", "f", 0o644, 1, sha("a"), None], "x", None]
    for value in values:
        assert outcome(Entry.from_value, value) == outcome(Entry._checked, value), value


def test_every_exported_name_is_found_where_the_package_says() -> None:
    """``asl_capture.format`` lists its names twice (for type checkers, and for the lazy import that
    keeps start-up cheap): the two lists must agree, and each name must resolve."""
    import asl_capture.format as package

    assert set(package.__all__) == set(package._MODULES)
    for name in package.__all__:
        assert getattr(package, name) is getattr(
            __import__(f"asl_capture.format.{package._MODULES[name]}", fromlist=[name]), name)
