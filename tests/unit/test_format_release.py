"""RELEASE.cbor's payload: round trip, and every wrong field refused by name."""

from __future__ import annotations

import copy

import pytest

from asl_capture import dcbor
from asl_capture.errors import FormatError
from asl_capture.format import BuildKey, ReleaseFile, ReleaseManifest, Surface
from tests.unit.bodies import digest


@pytest.fixture(autouse=True)
def _both_parser_paths(parser_path: str) -> str:
    """Every test here runs with the interpreted and with the compiled parsers (conftest.py)."""
    return parser_path


def manifest() -> ReleaseManifest:
    return ReleaseManifest(
        name="asl-auth-host", version="1.2.3", iso_name="a.iso", iso_sha256=digest("iso"), iso_size=7,
        image=digest("image"), chain=b"C" * 16, head_seq=4, head_digest=digest("head"), source_date_epoch=1_700_000_000,
        build_keys=(BuildKey(kid=digest("kid"), public=b"P" * 32, ephemeral=True),),
        files=(ReleaseFile(path="a.iso", sha256=digest("iso"), size=7),),
        compat=Surface(record_format=1, layout={"bin": "d"}, config={"version": "int"}))


def test_round_trip() -> None:
    value = manifest()
    assert ReleaseManifest.from_cbor(value.to_cbor()) == value
    assert value.to_value()["v"] == 1


def mutate(path: tuple[str | int, ...], new: dcbor.Value) -> dict[str, dcbor.Value]:
    body = copy.deepcopy(manifest().to_value())
    target: dcbor.Value = body
    for part in path[:-1]:
        target = target[part]  # type: ignore[index]
    target[path[-1]] = new  # type: ignore[index]
    return body


@pytest.mark.parametrize(("path", "value", "field"), [
    (("v",), 2, "v"), (("name",), 1, "name"), (("iso", "sha256"), b"x", "iso.sha256"),
    (("iso", "size"), -1, "iso.size"), (("chain",), b"C" * 15, "chain"), (("head", "seq"), "4", "head.seq"),
    (("build_keys", 0, "public"), b"P" * 31, "build_keys[0].public"),
    (("build_keys", 0, "ephemeral"), 1, "build_keys[0].ephemeral"), (("files", 0), ["a.iso"], "files[0]"),
    (("files", 0, 1), b"", "files[0][1]"), (("compat", "layout", "bin"), 1, "compat.layout.bin"),
    (("compat", "record_format"), None, "compat.record_format"),
])
def test_wrong_fields_are_named(path: tuple[str | int, ...], value: dcbor.Value, field: str) -> None:
    with pytest.raises(FormatError) as info:
        ReleaseManifest.from_cbor(dcbor.encode(mutate(path, value)))
    assert info.value.field == field


def test_unknown_and_missing_fields_are_refused() -> None:
    body = manifest().to_value()
    with pytest.raises(FormatError, match="extra"):
        ReleaseManifest.from_value({**body, "extra": 1})
    del body["compat"]
    with pytest.raises(FormatError, match="compat"):
        ReleaseManifest.from_value(body)
