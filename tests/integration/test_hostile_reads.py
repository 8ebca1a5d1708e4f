"""Issue 13 items 4-6 and the zero-filled tail of item 12: a tiny hostile provenance directory can
neither hang the verifier nor blow up its memory or time, and deep nesting verifies."""

from __future__ import annotations

import dataclasses
import functools
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asl_capture import chain, dcbor
from asl_capture.format import Changes, Inputs, Log, Manifest, Outputs, StepRecord
from asl_capture.keys import load_signer
from asl_capture.store import ObjectStore, ProvenanceDir
from tests.conftest import KeyPair, cli
from tests.integration.records import assert_one_line_error
from tests.unit.bodies import full_record

MEMORY_LIMIT = 1 << 30  # 1 GiB of address space: far above what verifying these needs, far below the old cost


def _limited(argv: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    """Run with at most :data:`MEMORY_LIMIT` of address space; a hang fails the test by timeout."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    return subprocess.run(argv, env=env, capture_output=True, timeout=timeout, check=False,
                          preexec_fn=limit)


def _verify(prov: Path, pub: Path, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return _limited([sys.executable, "-m", "asl_capture.cli.verify", "chain", str(prov), "--trust", str(pub)], env)


def _one(cli_env: dict[str, str], tmp_path: Path) -> Path:
    prov = Path(cli_env["ASL_CAPTURE_DIR"])
    assert cli("asl-capture", "--", "sh", "-c", "echo hello", env=cli_env, cwd=tmp_path).returncode == 0
    return prov


def _log_object(prov: Path) -> Path:
    return sorted(p for p in (prov / "objects").rglob("*") if p.is_file())[0]


@pytest.mark.parametrize("kind", ["fifo", "symlink-to-dev-zero", "directory"])
def test_a_hostile_object_fails_verify_at_once(cli_env: dict[str, str], keypair: KeyPair, tmp_path: Path,
                                               kind: str) -> None:
    prov = _one(cli_env, tmp_path)
    obj = _log_object(prov)
    obj.chmod(0o644)
    obj.unlink()
    if kind == "fifo":
        os.mkfifo(obj)
    elif kind == "directory":
        obj.mkdir()
    else:
        obj.symlink_to("/dev/zero")
    start = time.monotonic()
    result = _verify(prov, keypair.pub, cli_env)
    assert result.returncode == 1, result.stderr
    assert_one_line_error(result.stderr, "VerificationError")
    assert b"[objects]" in result.stderr
    assert time.monotonic() - start < 30


@pytest.mark.parametrize("kind", ["fifo", "symlink-to-dev-zero", "sparse-8g"])
def test_a_hostile_checkpoint_fails_verify_at_once(cli_env: dict[str, str], keypair: KeyPair, tmp_path: Path,
                                                   kind: str) -> None:
    prov = _one(cli_env, tmp_path)
    checkpoint = prov / "checkpoint.cose"
    checkpoint.unlink()
    if kind == "fifo":
        os.mkfifo(checkpoint)
    elif kind == "symlink-to-dev-zero":
        checkpoint.symlink_to("/dev/zero")
    else:
        with open(checkpoint, "wb") as handle:
            handle.truncate(8 << 30)
    result = _verify(prov, keypair.pub, cli_env)
    assert result.returncode == 1, result.stderr
    assert_one_line_error(result.stderr, "VerificationError")
    assert b"checkpoint.cose" in result.stderr


@pytest.mark.parametrize("kind", ["fifo", "symlink-to-dev-zero"])
def test_a_hostile_chain_file_is_refused_not_followed(cli_env: dict[str, str], keypair: KeyPair,
                                                      tmp_path: Path, kind: str) -> None:
    prov = _one(cli_env, tmp_path)
    (prov / "chain.cbor").unlink()
    if kind == "fifo":
        os.mkfifo(prov / "chain.cbor")
    else:
        (prov / "chain.cbor").symlink_to("/dev/zero")
    result = _verify(prov, keypair.pub, cli_env)
    assert result.returncode in (1, 2), result.stderr
    assert b"Traceback" not in result.stderr
    capture = _limited([sys.executable, "-m", "asl_capture.cli.capture", "--", "true"], cli_env)
    assert capture.returncode == 2
    assert_one_line_error(capture.stderr, "ChainError")


def test_a_sparse_zero_chain_costs_bounded_memory_and_is_a_zero_filled_tail(
        cli_env: dict[str, str], keypair: KeyPair, tmp_path: Path) -> None:
    prov = _one(cli_env, tmp_path)
    whole = (prov / "chain.cbor").read_bytes()
    with open(prov / "chain.cbor", "ab") as handle:
        handle.truncate(len(whole) + (20 << 20))  # 20 MB of zeros after the record (sparse)
    verify = _verify(prov, keypair.pub, cli_env)
    assert verify.returncode == 1
    assert_one_line_error(verify.stderr, "VerificationError")
    assert b"zero-filled" in verify.stderr
    capture = _limited([sys.executable, "-m", "asl_capture.cli.capture", "--", "true"], cli_env)
    assert capture.returncode == 2
    assert_one_line_error(capture.stderr, "TornTailError")
    assert b"zero-filled tail of 20971520 bytes" in capture.stderr and b"after 1 whole record(s)" in capture.stderr
    repair = _limited([sys.executable, "-m", "asl_capture.cli.chain", "repair", str(prov)], cli_env)
    assert repair.returncode == 0, repair.stderr
    assert b"truncated 20971520 zero byte(s)" in repair.stdout and b"after 1 whole record(s)" in repair.stdout
    assert (prov / "chain.cbor").read_bytes() == whole
    assert cli("asl-capture", "--", "true", env=cli_env, cwd=tmp_path).returncode == 0
    assert _verify(prov, keypair.pub, cli_env).returncode == 0


def test_the_search_after_a_torn_item_is_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each candidate start after a torn item is looked at in constant time, never decoded whole."""
    calls = 0
    real = dcbor.decode_item

    def counting(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(dcbor, "decode_item", counting)
    # a torn item, then 200,000 starts of messages that each claim a long payload and never end
    candidate = b"\xd2\x84\x40\xa0\x5a\x00\x10\x00\x00"
    data = b"\xd2\x84\x5a\x7f\xff\xff\xff" + candidate * 200_000
    start = time.monotonic()
    scan = chain.split(data)
    assert scan.torn == (0, len(data)) and scan.items == ()
    assert calls <= 2
    assert time.monotonic() - start < 10


def _same(record: StepRecord, _head: chain.Head) -> StepRecord:
    return record


def test_nesting_deeper_than_the_recursion_limit_verifies(keypair: KeyPair, tmp_path: Path) -> None:
    depth = max(1500, sys.getrecursionlimit() + 200)
    prov = ProvenanceDir.create(tmp_path / "prov")
    empty = ObjectStore(prov).put(b"")
    tree = ObjectStore(prov).put(Manifest(roots=(), entries=()).encode())
    changes = ObjectStore(prov).put(Changes(created=(), modified=(), deleted=()).encode())
    signer = load_signer(keypair.key)
    ids = [n.to_bytes(16, "big") for n in range(1, depth + 1)]
    template = full_record()
    for n in range(depth):  # innermost first: record n's parent is record n+1
        record = dataclasses.replace(
            template, id=ids[n], parent=ids[n + 1] if n + 1 < depth else None,
            inputs=Inputs(manifest=tree, entries=0, files=0),
            outputs=Outputs(manifest=tree, before=tree, changes=changes, entries=0, files=0, created=0,
                            modified=0, deleted=0),
            stdout=Log(digest=empty, size=0), stderr=Log(digest=empty, size=0))
        chain.append(prov, signer, functools.partial(_same, record), new_chain_id=lambda: b"C" * 16)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for extra in ([], ["--json"]):
        result = subprocess.run([sys.executable, "-m", "asl_capture.cli.verify", "chain", str(prov.root), "--trust",
                                 str(keypair.pub), *extra], env=env, capture_output=True, timeout=300, check=False)
        assert result.returncode == 0, result.stderr[-2000:]
        assert b"Traceback" not in result.stderr


def test_siblings_a_fifo_pyproject_a_zero_sources_file_and_a_zero_passphrase_file(
        cli_env: dict[str, str], keypair: KeyPair, tmp_path: Path) -> None:
    """The same class outside the provenance directory: files read before or after the step."""
    work = tmp_path / "work"
    work.mkdir()
    os.mkfifo(work / "pyproject.toml")
    capture = [sys.executable, "-m", "asl_capture.cli.capture"]
    fifo = subprocess.run([*capture, "--", "true"], env=cli_env, cwd=work, capture_output=True, timeout=60,
                          check=False)
    assert fifo.returncode == 2
    assert_one_line_error(fifo.stderr, "UsageError")
    (work / "pyproject.toml").unlink()
    zero = subprocess.run([*capture, "--sources", "src.jsonl", "--", "ln", "-s", "/dev/zero", "src.jsonl"],
                          env=cli_env, cwd=work, capture_output=True, timeout=60, check=False)
    assert zero.returncode == 125, zero.stderr
    assert b"sources file" in zero.stderr and b"Traceback" not in zero.stderr
    passphrase = _limited([*capture, "--passphrase-file", "/dev/zero", "--", "true"], cli_env)
    assert passphrase.returncode == 2
    assert_one_line_error(passphrase.stderr, "KeyFileError")
