"""The provenance directory and its content-addressed object store."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from asl_capture.errors import StoreError
from asl_capture.store import ObjectStore, ProvenanceDir


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    return ObjectStore(ProvenanceDir.create(tmp_path / "prov"))


def overwrite(path: Path, data: bytes) -> None:
    path.chmod(0o644)
    path.write_bytes(data)


def test_layout(tmp_path: Path) -> None:
    prov = ProvenanceDir.create(tmp_path / "p")
    assert prov.root == tmp_path / "p"
    assert (prov.chain, prov.lock, prov.head, prov.statcache) == (
        tmp_path / "p" / "chain.cbor", tmp_path / "p" / "chain.lock", tmp_path / "p" / "head",
        tmp_path / "p" / "statcache")
    assert prov.objects == tmp_path / "p" / "objects" / "sha256"
    assert prov.objects.is_dir()
    digest = bytes(range(32))
    assert prov.object_path(digest) == prov.objects / "00" / digest.hex()[2:]
    assert len(prov.object_path(digest).name) == 62


def test_put_is_content_addressed(store: ObjectStore) -> None:
    data = b"some log output\n"
    digest = store.put(data)
    assert digest == hashlib.sha256(data).digest()
    path = store.prov.objects / digest.hex()[:2] / digest.hex()[2:]
    assert path.read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert store.read(digest) == data
    assert store.check(digest) is None
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]


def test_put_is_idempotent(store: ObjectStore) -> None:
    first = store.put(b"same")
    path = store.prov.object_path(first)
    inode = path.stat().st_ino
    assert store.put(b"same") == first
    assert path.stat().st_ino == inode  # not rewritten
    files = [p for p in store.prov.objects.rglob("*") if p.is_file()]
    assert files == [path]
    other = store.put(b"different")
    assert other != first
    assert sorted(p for p in store.prov.objects.rglob("*") if p.is_file()) == sorted(
        [path, store.prov.object_path(other)])


def test_put_empty_object(store: ObjectStore) -> None:
    digest = store.put(b"")
    assert digest.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert store.read(digest) == b""


def test_put_replaces_a_truncated_object(store: ObjectStore) -> None:
    digest = store.put(b"0123456789")
    overwrite(store.prov.object_path(digest), b"01234")
    assert store.check(digest) is not None
    assert store.put(b"0123456789") == digest
    assert store.read(digest) == b"0123456789"


def test_read_detects_tampering(store: ObjectStore) -> None:
    digest = store.put(b"original bytes")
    overwrite(store.prov.object_path(digest), b"Original bytes")
    with pytest.raises(StoreError, match="does not match its digest") as info:
        store.read(digest)
    assert digest.hex() in str(info.value)


def test_read_missing(store: ObjectStore) -> None:
    digest = hashlib.sha256(b"never stored").digest()
    with pytest.raises(StoreError, match="missing or unreadable"):
        store.read(digest)


def test_check_reports_missing_and_mismatch(store: ObjectStore) -> None:
    good = store.put(b"good")
    bad = store.put(b"bad!")
    overwrite(store.prov.object_path(bad), b"BAD!")
    missing = hashlib.sha256(b"absent").digest()
    assert store.check(good) is None
    problem = store.check(bad)
    assert problem is not None and "does not match its digest" in problem and bad.hex() in problem
    problem = store.check(missing)
    assert problem is not None and "missing" in problem and missing.hex() in problem


def test_check_streams_large_objects(store: ObjectStore) -> None:
    data = os.urandom(3 * (1 << 20) + 17)
    digest = store.put(data)
    assert store.check(digest) is None
    raw = bytearray(data)
    raw[-1] ^= 1
    overwrite(store.prov.object_path(digest), bytes(raw))
    assert store.check(digest) is not None


def test_new_temp_and_adopt(store: ObjectStore) -> None:
    fd, tmp = store.new_temp()
    with os.fdopen(fd, "wb") as handle:
        handle.write(b"streamed")
    digest = hashlib.sha256(b"streamed").digest()
    store.adopt(tmp, digest)
    assert not tmp.exists()
    assert store.read(digest) == b"streamed"
    assert stat.S_IMODE(store.prov.object_path(digest).stat().st_mode) == 0o444
    fd, tmp2 = store.new_temp()
    os.close(fd)
    tmp2.write_bytes(b"streamed")
    store.adopt(tmp2, digest)  # already present: the duplicate is dropped
    assert not tmp2.exists()
    assert store.read(digest) == b"streamed"


def test_create_existing_directory_and_nested(tmp_path: Path) -> None:
    first = ProvenanceDir.create(tmp_path / "a" / "b")
    again = ProvenanceDir.create(tmp_path / "a" / "b")
    assert first == again
    assert (tmp_path / "a" / "b" / "objects" / "sha256").is_dir()


def test_create_normalises_the_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The root is compared with walked paths (the capture excludes it): it must be absolute and normal."""
    (tmp_path / "x").mkdir()
    prov = ProvenanceDir.create(tmp_path / "x" / ".." / "prov")
    assert prov.root == tmp_path / "prov"
    assert str(prov.root) == os.path.abspath(tmp_path / "prov")
    monkeypatch.chdir(tmp_path)
    assert ProvenanceDir.create(Path("prov")).root == tmp_path / "prov"
    (tmp_path / "prov" / "chain.cbor").write_bytes(b"")
    assert ProvenanceDir.existing(Path("x/../prov")).root == tmp_path / "prov"


def test_create_on_a_file_path(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_bytes(b"not a directory")
    with pytest.raises(StoreError, match="exists and is not a directory"):
        ProvenanceDir.create(target)
    assert target.read_bytes() == b"not a directory"
    with pytest.raises(StoreError, match="cannot create provenance directory"):
        ProvenanceDir.create(target / "below")


def test_existing_on_an_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match=r"no chain\.cbor"):
        ProvenanceDir.existing(tmp_path / "empty")
    assert list((tmp_path / "empty").iterdir()) == []  # opening for reading creates nothing


def test_existing_missing_or_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such provenance directory"):
        ProvenanceDir.existing(tmp_path / "missing")
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(StoreError, match=r"f: is a file, not a provenance directory$"):
        ProvenanceDir.existing(tmp_path / "f")
    (tmp_path / "d" / "chain.cbor").mkdir(parents=True)
    with pytest.raises(StoreError, match=r"no chain\.cbor"):
        ProvenanceDir.existing(tmp_path / "d")


def test_existing_with_a_chain(tmp_path: Path) -> None:
    prov = ProvenanceDir.create(tmp_path / "p")
    prov.chain.write_bytes(b"")
    assert ProvenanceDir.existing(tmp_path / "p") == prov


def test_put_replaces_a_damaged_copy_of_the_same_size(tmp_path: Path) -> None:
    store = ObjectStore(ProvenanceDir.create(tmp_path / "p"))
    digest = store.put(b"manifest bytes")
    path = store.prov.object_path(digest)
    path.chmod(0o644)
    path.write_bytes(b"MANIFEST BYTES")  # same size, wrong content
    assert store.check(digest) is not None
    assert store.put(b"manifest bytes") == digest
    assert store.check(digest) is None and store.read(digest) == b"manifest bytes"


def test_adopt_replaces_a_damaged_object_and_keeps_an_intact_one(store: ObjectStore) -> None:
    """Issue 13 item 9: an existing object was kept by adopt() even when its bytes were damaged."""
    data = b"log bytes\n" * 100
    digest = hashlib.sha256(data).digest()
    assert store.put(data) == digest
    target = store.prov.object_path(digest)
    target.chmod(0o644)
    target.write_bytes(b"damaged")
    fd, tmp = store.new_temp()
    os.write(fd, data)
    os.close(fd)
    store.adopt(tmp, digest)
    assert target.read_bytes() == data and not tmp.exists()
    fd, tmp = store.new_temp()
    os.write(fd, data)
    os.close(fd)
    before = target.stat().st_ino
    store.adopt(tmp, digest)
    assert target.stat().st_ino == before and not tmp.exists()


def test_a_failed_put_leaves_no_temporary_file(store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from asl_capture import safeio

    def full(fd: int, data: bytes) -> None:
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(safeio, "write_all", full)
    with pytest.raises(StoreError, match="No space left on device"):
        store.put(b"x" * 10_000)
    assert [p for p in store.prov.objects.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("size", [0, 1, (1 << 20) - 1, 1 << 20, 3 * (1 << 20) + 7])
def test_put_fd_streams_from_the_position_to_the_end(store: ObjectStore, tmp_path: Path, size: int) -> None:
    data = os.urandom(size + 5)
    source = tmp_path / "source"
    source.write_bytes(data)
    fd = os.open(source, os.O_RDONLY)
    try:
        os.lseek(fd, 5, os.SEEK_SET)
        digest, stored = store.put_fd(fd)
    finally:
        os.close(fd)
    assert (digest, stored) == (hashlib.sha256(data[5:]).digest(), size)
    assert store.read(digest) == data[5:]
    assert not [p for p in store.prov.objects.rglob(".*")]  # no temporary file left


def test_put_fd_keeps_an_intact_copy_and_leaves_nothing_on_a_read_error(store: ObjectStore,
                                                                        tmp_path: Path) -> None:
    digest = store.put(b"same")
    path = store.prov.object_path(digest)
    before = os.stat(path).st_ino
    source = tmp_path / "source"
    source.write_bytes(b"same")
    with open(source, "rb") as handle:
        assert store.put_fd(handle.fileno()) == (digest, 4)
    assert os.stat(path).st_ino == before
    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)  # read() of a directory: EISDIR
    try:
        with pytest.raises(StoreError, match="cannot store object: Is a directory"):
            store.put_fd(directory)
    finally:
        os.close(directory)
    assert not [p for p in store.prov.objects.rglob(".*")]
