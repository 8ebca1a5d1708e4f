"""The named chains and records in tests/assets/: each verification failure as a file.

``cases.json`` says, per case, what ``asl-verify chain`` must answer; the assets are regenerated
here and compared, so they cannot drift from their generator (tests/assets/make_assets.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from asl_capture import dcbor
from asl_capture.errors import FormatError, VerificationError
from asl_capture.format import StepRecord
from asl_capture.keys import load_trust
from asl_capture.verify import verify_chain
from tests.assets import make_assets
from tests.conftest import cli
from tests.unit.test_format_record import WRONG, FieldPath, name

ASSETS = Path(make_assets.__file__).resolve().parent
CASES: dict[str, dict[str, object]] = json.loads((ASSETS / "cases.json").read_text())
TRUSTED = ASSETS / "keys" / "trusted.pub"


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_assets_match_their_generator(tmp_path: Path) -> None:
    make_assets.generate(tmp_path)
    for part in ("chains", "records", "keys"):
        assert tree(tmp_path / part) == tree(ASSETS / part), f"tests/assets/{part} is stale: rerun make_assets"
    assert (tmp_path / "cases.json").read_text() == (ASSETS / "cases.json").read_text()
    assert set(CASES) == {p.name for p in (ASSETS / "chains").iterdir()}


def test_every_issue_shape_and_failure_has_an_asset() -> None:
    required = {"argv-not-text", "env-value-not-text", "host-empty", "inputs-without-counts", "sources-not-maps",
                "torn-tail", "untrusted-key", "records-cut-from-end", "good"}
    assert required <= set(CASES)
    checks = {str(c["check"]) for c in CASES.values() if c["check"] is not None}
    assert checks == {"decode", "signature", "payload", "linkage", "objects", "status"}


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ASL_")}


@pytest.mark.parametrize("name", sorted(CASES))
def test_verify_answers_each_case(name: str, env: dict[str, str]) -> None:
    expect = CASES[name]
    directory = ASSETS / "chains" / name
    result = cli("asl-verify", "chain", directory, "--trust", TRUSTED, "--json", env=env)
    assert result.returncode == expect["exit"], result.stderr
    report = json.loads(result.stdout)
    if expect["exit"] == 0:
        assert report["verdict"] == "verified" and report["error"] is None
        return
    error = report["error"]
    assert report["verdict"] == "failed"
    assert (error["check"], error["record"]) == (expect["check"], expect["record"])
    assert str(expect["message"]) in error["message"], error["message"]
    assert report["checks"][-1] == {"number": len(report["checks"]), "name": expect["check"], "ok": False,
                                    "detail": error["message"]}


@pytest.mark.parametrize("name", ["argv-not-text", "env-value-not-text", "host-empty", "inputs-without-counts",
                                  "sources-not-maps"])
def test_issue_shapes_named_by_record_and_field(name: str, env: dict[str, str]) -> None:
    """The text a user reads: exit 1, the record and the field (``record 1: argv[0]: expected text or bytes``)."""
    result = cli("asl-verify", "chain", ASSETS / "chains" / name, "--trust", TRUSTED, env=env)
    assert result.returncode == 1
    line = f"record 1: {CASES[name]['message']}"
    assert line in result.stdout.decode(), result.stdout
    assert result.stderr.decode().startswith("VerificationError: [payload] " + line)


def test_untrusted_key_is_refused_even_for_the_good_chain(env: dict[str, str]) -> None:
    result = cli("asl-verify", "chain", ASSETS / "chains" / "good", "--trust", ASSETS / "keys" / "other.pub",
                 env=env)
    assert result.returncode == 1
    assert b"[signature] record 0: signed by untrusted key id" in result.stderr


@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if c["check"] == "payload"))
def test_each_broken_record_alone(name: str) -> None:
    data = (ASSETS / "records" / f"{name}.cbor").read_bytes()
    with pytest.raises(FormatError) as info:
        StepRecord.from_cbor(data)
    assert str(info.value) == CASES[name]["message"] or str(CASES[name]["message"]) in str(info.value)


def test_good_record_alone() -> None:
    record = StepRecord.from_cbor((ASSETS / "records" / "good.cbor").read_bytes())
    assert record.step == "inner-b" and record.to_cbor() == (ASSETS / "records" / "good.cbor").read_bytes()


@pytest.mark.parametrize(("path", "value"), WRONG, ids=[f"{name(p)}={v!r}" for p, v in WRONG])
def test_every_forbidden_field_shape_fails_verify(path: FieldPath, value: dcbor.Value, tmp_path: Path) -> None:
    """Each shape of the unit table, in record 1 of the good chain signed by the trusted key: check 3
    fails naming record 1 and the field (the same verifier ``asl-verify chain`` runs, in-process)."""
    prov = make_assets.good()
    body = prov.values[1]
    body.update({"vcs": {"type": "git", "commit": "c", "tree": "t", "dirty": False}, "signals": [15], "error": "e",
                 "sources": [{"uri": "u", "sha256": bytes(32), "kind": "deb", "via": "v", "name": "n",
                              "version": "1", "size": 1}],
                 "attached": [{"path": "a", "digest": bytes(32), "size": 1}]})
    if path[0] in ("seq", "prev"):  # after linkage fills them in
        prov.late = lambda i, v: make_assets._set(v, path, value) if i == 1 else None
    else:
        make_assets._set(body, path, value)
    prov.write(tmp_path / "prov")
    with pytest.raises(VerificationError) as info:
        verify_chain(tmp_path / "prov", load_trust([TRUSTED]))
    assert (info.value.check, info.value.record) == ("payload", 1)
    assert f"record 1: {name(path)}: " in str(info.value)
