"""The durable source store: files by digest, checked on every read."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from asl_capture.sourcestore import SourceStore, SourceStoreError, default_root, file_sha256, index_dir


def _file(path: Path, data: bytes) -> tuple[Path, str]:
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_put_then_get_by_digest(tmp_path: Path) -> None:
    src, digest = _file(tmp_path / "a.deb", b"package bytes")
    store = SourceStore(tmp_path / "store")
    kept = store.put(src, digest)
    assert kept == tmp_path / "store" / digest and kept.read_bytes() == b"package bytes"
    assert store.get(digest) == kept
    assert store.missing([digest, "0" * 64]) == ["0" * 64]


def test_put_refuses_bytes_that_do_not_match(tmp_path: Path) -> None:
    src, _digest = _file(tmp_path / "a.deb", b"package bytes")
    with pytest.raises(SourceStoreError, match="expected"):
        SourceStore(tmp_path / "store").put(src, "1" * 64)
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").iterdir())


def test_a_damaged_entry_is_reported_and_replaced(tmp_path: Path) -> None:
    src, digest = _file(tmp_path / "a.deb", b"package bytes")
    store = SourceStore(tmp_path / "store")
    kept = store.put(src, digest)
    os.unlink(kept)
    kept.write_bytes(b"tampered")
    with pytest.raises(SourceStoreError, match="damaged store entry"):
        store.get(digest)
    assert store.missing([digest]) == [digest]
    store.put(src, digest)
    assert store.get(digest) == kept


def test_a_symlink_in_the_store_is_not_followed(tmp_path: Path) -> None:
    src, digest = _file(tmp_path / "a.deb", b"package bytes")
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / digest).symlink_to(src)
    with pytest.raises(SourceStoreError, match="cannot open"):
        SourceStore(tmp_path / "store").get(digest)


def test_names_must_be_digests(tmp_path: Path) -> None:
    with pytest.raises(SourceStoreError, match="not a sha256"):
        SourceStore(tmp_path).path("../../etc/passwd")


def test_index_dir_hashes_regular_files_only(tmp_path: Path) -> None:
    _src, digest = _file(tmp_path / "x_1_amd64.deb", b"deb")
    (tmp_path / "link.deb").symlink_to(tmp_path / "x_1_amd64.deb")
    (tmp_path / ".partial.deb").write_bytes(b"half")
    assert index_dir(tmp_path, "*.deb") == {digest: tmp_path / "x_1_amd64.deb"}
    assert file_sha256(tmp_path / "x_1_amd64.deb") == digest


def test_default_root_follows_xdg_cache_home() -> None:
    assert default_root({"XDG_CACHE_HOME": "/c", "HOME": "/h"}) == Path("/c/asl-capture/sha256")
    assert default_root({"HOME": "/h"}) == Path("/h/.cache/asl-capture/sha256")
