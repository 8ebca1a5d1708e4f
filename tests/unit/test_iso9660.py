"""The ISO 9660 / Rock Ridge reader against images made by xorriso, cross-checked with pycdlib, and hostile ones."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from asl_capture.audit.iso9660 import IsoImage
from asl_capture.errors import ImageError

pytestmark = pytest.mark.skipif(shutil.which("xorriso") is None, reason="needs xorriso")


def _make(tmp: Path) -> tuple[Path, dict[str, bytes]]:
    src = tmp / "src"
    files = {
        "README.txt": b"hello iso\n",
        "boot/grub/grub.cfg": b"set timeout=1\n",
        "live/big.bin": os.urandom(3 << 20),
        "a/b/c/d/e/f/g/h/i/deep-file-with-a-long-name.dat": b"deep\n",
        "empty": b"",
    }
    for rel, data in files.items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o644)
    (src / "README.txt").chmod(0o755)
    (src / "live" / "link").symlink_to("../boot/grub/grub.cfg")
    iso = tmp / "test.iso"
    subprocess.run(["xorriso", "-outdev", str(iso), "-map", str(src), "/"], check=True, capture_output=True)
    return iso, files


def _walk(iso: Path) -> tuple[IsoImage, dict[bytes, object], int]:
    fd = os.open(iso, os.O_RDONLY)
    image = IsoImage(fd, name=iso.name)
    return image, {n.path: n for n in image.walk()}, fd


def test_walk_names_modes_links_and_digests(tmp_path: Path) -> None:
    iso, files = _make(tmp_path)
    image, nodes, fd = _walk(iso)
    try:
        for rel, data in files.items():
            node = nodes[rel.encode()]
            assert node.kind == "f" and node.size == len(data), rel  # type: ignore[attr-defined]
            assert image.extent_digest(node) == hashlib.sha256(data).digest(), rel  # type: ignore[arg-type]
        assert nodes[b"README.txt"].mode == 0o755  # type: ignore[attr-defined]
        assert nodes[b"boot/grub/grub.cfg"].mode == 0o644  # type: ignore[attr-defined]
        link = nodes[b"live/link"]
        assert link.kind == "l" and link.target == b"../boot/grub/grub.cfg"  # type: ignore[attr-defined]
        assert nodes[b"a/b/c/d/e/f/g/h/i"].kind == "d"  # type: ignore[attr-defined]
    finally:
        os.close(fd)


def test_agrees_with_pycdlib(tmp_path: Path) -> None:
    """An independent reader lists the same Rock Ridge paths."""
    pycdlib = pytest.importorskip("pycdlib")
    iso, _files = _make(tmp_path)
    reader = pycdlib.PyCdlib()
    reader.open(str(iso))
    theirs: set[str] = set()
    try:
        for dirname, dirlist, filelist in reader.walk(rr_path="/"):
            for name in dirlist + filelist:
                theirs.add(f"{dirname.rstrip('/')}/{name}".lstrip("/"))
    finally:
        reader.close()
    _image, nodes, fd = _walk(iso)
    os.close(fd)
    assert {os.fsdecode(p) for p in nodes if p != b"."} == theirs


def test_not_an_iso(tmp_path: Path) -> None:
    bad = tmp_path / "not.iso"
    bad.write_bytes(b"\0" * (1 << 20))
    fd = os.open(bad, os.O_RDONLY)
    try:
        with pytest.raises(ImageError, match="not an ISO 9660 image"):
            IsoImage(fd, name="not.iso")
    finally:
        os.close(fd)


def test_too_small(tmp_path: Path) -> None:
    bad = tmp_path / "tiny.iso"
    bad.write_bytes(b"x" * 100)
    fd = os.open(bad, os.O_RDONLY)
    try:
        with pytest.raises(ImageError, match="too small"):
            IsoImage(fd)
    finally:
        os.close(fd)


def test_truncated_iso_names_the_file(tmp_path: Path) -> None:
    iso, _files = _make(tmp_path)
    data = iso.read_bytes()
    iso.write_bytes(data[: len(data) - (2 << 20)])
    fd = os.open(iso, os.O_RDONLY)
    try:
        with pytest.raises(ImageError, match="truncated"):
            IsoImage(fd, name="cut.iso").walk()
    finally:
        os.close(fd)


def test_corrupt_directory_extent_is_refused(tmp_path: Path) -> None:
    """A root directory record that claims a huge extent is refused, not read."""
    iso, _files = _make(tmp_path)
    data = bytearray(iso.read_bytes())
    pvd = 16 * 2048
    data[pvd + 156 + 10:pvd + 156 + 14] = (0x7FFFFFFF).to_bytes(4, "little")
    iso.write_bytes(bytes(data))
    fd = os.open(iso, os.O_RDONLY)
    try:
        with pytest.raises(ImageError, match=r"refused|past the end"):
            IsoImage(fd).walk()
    finally:
        os.close(fd)
