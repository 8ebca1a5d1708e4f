"""capture() as a library call: the progress lines a terminal sees for a long snapshot; what it stores."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from asl_capture import hashing
from asl_capture.capture import CaptureConfig, capture
from asl_capture.errors import AslError
from asl_capture.format import Manifest
from asl_capture.store import ObjectStore, ProvenanceDir
from tests.conftest import KeyPair


def _config(work: Path, keypair: KeyPair, tmp_path: Path, messages: list[str] | None) -> CaptureConfig:
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    return CaptureConfig(argv=("true",), environ=environ, cwd=work, provenance=tmp_path / "prov", key=keypair.key,
                         as_root=True,
                         progress=None if messages is None else messages.append)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_long_snapshot_reports_progress_and_ends_its_line(tmp_path: Path, keypair: KeyPair, workers: int,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hashing, "PROGRESS_AFTER", 0.0)  # every snapshot counts as long
    monkeypatch.setattr(hashing, "available_cpus", lambda: workers)
    work = tmp_path / "work"
    work.mkdir()
    for i in range(300):
        (work / f"f{i:03d}").write_bytes(os.urandom(100))
    messages: list[str] = []
    outcome = capture(_config(work, keypair, tmp_path, messages), notify=lambda _msg: None)
    assert outcome.exit_code == 0
    assert messages, "no progress for a snapshot past the deadline"
    assert all(m.startswith("asl-capture: hashed ") and m.count("\n") == m.endswith("\n") for m in messages)
    ended = [m for m in messages if m.endswith("\n")]
    # before and after the step (files this new are not cached): each snapshot ends its own line
    assert ended == ["asl-capture: hashed 300 files in 1 root(s)\n"] * 2
    assert messages[-1] == ended[-1]
    first_end = messages.index(ended[0])
    assert all(not m.endswith("\n") for m in messages[:first_end])


def test_no_progress_callback_no_lines_and_a_short_snapshot_stays_quiet(tmp_path: Path, keypair: KeyPair) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "a").write_bytes(b"x")
    messages: list[str] = []
    assert capture(_config(work, keypair, tmp_path, messages), notify=lambda _msg: None).exit_code == 0
    assert messages == []  # well under PROGRESS_AFTER
    assert capture(_config(work, keypair, tmp_path, None), notify=lambda _msg: None).exit_code == 0



def _manifest_or_none(data: bytes) -> Manifest | None:
    try:
        return Manifest.from_cbor(data)
    except AslError:
        return None


@pytest.mark.parametrize("changes", [False, True])
def test_each_distinct_manifest_is_stored_once_and_the_record_names_the_right_ones(
        tmp_path: Path, keypair: KeyPair, monkeypatch: pytest.MonkeyPatch, changes: bool) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "a").write_bytes(b"x")
    stored: list[bytes] = []
    real_put = ObjectStore.put

    def recording_put(self: ObjectStore, data: bytes) -> bytes:
        stored.append(data)
        return real_put(self, data)

    monkeypatch.setattr(ObjectStore, "put", recording_put)
    config = _config(work, keypair, tmp_path, None)
    if changes:
        config = dataclasses.replace(config, argv=("sh", "-c", "echo y > b"))
    record = capture(config, notify=lambda _msg: None).record
    manifests = [data for data in stored if _manifest_or_none(data) is not None]
    assert len(manifests) == len(set(manifests)) == (2 if changes else 1)
    store = ObjectStore(ProvenanceDir.create(tmp_path / "prov"))
    before = Manifest.from_cbor(store.read(record.outputs.before))
    after = Manifest.from_cbor(store.read(record.outputs.manifest))
    assert record.inputs.manifest == record.outputs.before
    assert [e.path for e in before.entries] == [b".", b"a"]
    assert [e.path for e in after.entries] == ([b".", b"a", b"b"] if changes else [b".", b"a"])
    assert (record.outputs.created, record.outputs.modified, record.outputs.deleted) == (int(changes), 0, 0)


def test_attach_refuses_a_file_swapped_for_a_fifo_after_listing_instead_of_hanging(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    from asl_capture.capture import attach
    from asl_capture.errors import CaptureError

    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a").write_bytes(b"a")
    (tree / "b").write_bytes(b"b")
    store = ObjectStore(ProvenanceDir.create(tmp_path / "prov"))
    real_put_fd = ObjectStore.put_fd

    def swap_then_put(self: ObjectStore, fd: int) -> tuple[bytes, int]:
        if (tree / "b").is_file():  # between the listing and b's open, b becomes a FIFO
            (tree / "b").unlink()
            os.mkfifo(tree / "b")
        return real_put_fd(self, fd)

    monkeypatch.setattr(ObjectStore, "put_fd", swap_then_put)

    def hung(_signum: int, _frame: object) -> None:
        raise TimeoutError("attach blocked on the FIFO")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        with pytest.raises(CaptureError, match=r"tree/b: cannot attach: attachment is not a regular file"):
            attach(store, tree, tmp_path)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
