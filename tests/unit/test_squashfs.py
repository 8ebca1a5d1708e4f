"""The squashfs reader against images made by the real mksquashfs (gzip, xz, zstd), and hostile ones."""

from __future__ import annotations

import hashlib
import lzma
import os
import re
import shutil
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from asl_capture.audit import squashfs
from asl_capture.audit.squashfs import SUPERBLOCK, SquashImage
from asl_capture.errors import ImageError

pytestmark = pytest.mark.skipif(shutil.which("mksquashfs") is None, reason="needs mksquashfs (squashfs-tools)")


def _tree(root: Path) -> dict[str, bytes]:
    """A small tree: empty, small, multi-block and sparse-ish files, a symlink, directories, a setuid file."""
    files = {
        "empty": b"",
        "small.txt": b"hello squashfs\n",
        "dir/big.bin": bytes(range(256)) * 2000,  # 512000 bytes: several 128 KiB blocks + a tail
        "dir/zeros": bytes(300000),
        "dir/sub/deep.txt": "é unicode\n".encode(),
        "setuid-tool": b"#!/bin/sh\n",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o644)
    (root / "setuid-tool").chmod(0o4755)
    (root / "dir").chmod(0o2775)
    (root / "link").symlink_to("dir/sub/deep.txt")
    os.mkfifo(root / "fifo")
    return files


def _make(tmp: Path, comp: str, *extra: str) -> tuple[Path, dict[str, bytes]]:
    src = tmp / "src"
    files = _tree(src)
    img = tmp / f"img-{comp}.sqfs"
    pseudo = tmp / "pseudo"
    pseudo.write_text("dev d 755 0 0\ndev/null c 666 0 0 1 3\ndev/sda b 660 0 6 8 0\nowned f 640 1000 42 echo hi\n")
    subprocess.run(["mksquashfs", str(src), str(img), "-noappend", "-no-progress", "-quiet", "-comp", comp,
                    "-pf", str(pseudo), *extra], check=True, capture_output=True)
    files["owned"] = b"hi\n"
    return img, files


def _open(img: Path) -> tuple[int, SquashImage]:
    fd = os.open(img, os.O_RDONLY)
    return fd, SquashImage(fd, name=img.name)


def _compressors() -> list[str]:
    comps = ["gzip", "xz"]
    try:
        import zstandard  # noqa: F401
        comps.append("zstd")
    except ImportError:
        pass
    return comps


@pytest.mark.parametrize("comp", _compressors())
def test_walk_and_digests_match_the_tree(tmp_path: Path, comp: str) -> None:
    img, files = _make(tmp_path, comp)
    fd, sq = _open(img)
    try:
        nodes = {n.path: n for n in sq.walk()}
        assert sq.compression == comp
        for rel, data in files.items():
            node = nodes[rel.encode()]
            assert node.kind == "f" and node.size == len(data) and node.data is not None
            assert sq.file_digest(node.data) == hashlib.sha256(data).digest(), rel
        assert nodes[b"setuid-tool"].mode == 0o4755
        assert nodes[b"dir"].mode == 0o2775 and nodes[b"dir"].kind == "d"
        assert nodes[b"link"].kind == "l" and nodes[b"link"].target == b"dir/sub/deep.txt"
        assert nodes[b"link"].size == len(b"dir/sub/deep.txt")
        assert nodes[b"fifo"].kind == "p"
        assert (nodes[b"dev/null"].kind, nodes[b"dev/null"].rdev, nodes[b"dev/null"].mode) == ("c", (1, 3), 0o666)
        assert (nodes[b"dev/sda"].kind, nodes[b"dev/sda"].rdev, nodes[b"dev/sda"].gid) == ("b", (8, 0), 6)
        assert (nodes[b"owned"].uid, nodes[b"owned"].gid, nodes[b"owned"].mode) == (1000, 42, 0o640)
        assert nodes[b"."].kind == "d"
    finally:
        os.close(fd)


def test_agrees_with_unsquashfs_listing(tmp_path: Path) -> None:
    """An independent reader (unsquashfs -lln) lists the same paths, modes, owners and link targets."""
    img, _files = _make(tmp_path, "gzip")
    listing = subprocess.run(["unsquashfs", "-lln", "-d", "", str(img)], capture_output=True, text=True,
                             check=True).stdout
    theirs: dict[str, tuple[str, str]] = {}
    for line in listing.splitlines():
        m = re.match(r"^([-dlcbps]\S+) (\d+/\d+) .* \d\d:\d\d (.*)$", line)
        if m is None:
            continue
        name = m.group(3).split(" -> ")[0].lstrip("/") or "."
        theirs[name] = (m.group(1), m.group(2))
    fd, sq = _open(img)
    try:
        ours = {os.fsdecode(n.path): n for n in sq.walk()}
    finally:
        os.close(fd)
    assert set(ours) == set(theirs)
    for name, node in ours.items():
        perms, owner = theirs[name]
        assert owner == f"{node.uid}/{node.gid}", name
        assert perms[0] == {"f": "-"}.get(node.kind, node.kind), name


def test_reads_an_image_at_an_offset(tmp_path: Path) -> None:
    img, files = _make(tmp_path, "gzip")
    wrapped = tmp_path / "wrapped"
    wrapped.write_bytes(b"x" * 4096 + img.read_bytes() + b"y" * 100)
    fd = os.open(wrapped, os.O_RDONLY)
    try:
        sq = SquashImage(fd, offset=4096, length=img.stat().st_size)
        node = next(n for n in sq.walk() if n.path == b"small.txt")
        assert node.data is not None and sq.file_digest(node.data) == hashlib.sha256(files["small.txt"]).digest()
    finally:
        os.close(fd)


def _error(img: Path) -> str:
    fd = os.open(img, os.O_RDONLY)
    try:
        with pytest.raises(ImageError) as info:
            sq = SquashImage(fd, name="bad")
            for n in sq.walk():
                if n.data is not None:
                    sq.file_digest(n.data)
        return str(info.value)
    finally:
        os.close(fd)


def test_not_a_squashfs(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\0" * 4096)
    assert "bad magic" in _error(bad)


def test_truncated_image(tmp_path: Path) -> None:
    img, _ = _make(tmp_path, "xz")
    data = img.read_bytes()
    img.write_bytes(data[: len(data) // 2])
    assert "truncated" in _error(img)


def test_absurd_header_is_refused_not_allocated(tmp_path: Path) -> None:
    img, _ = _make(tmp_path, "gzip")
    data = bytearray(img.read_bytes())
    fields = list(SUPERBLOCK.unpack_from(data, 0))
    fields[3] = 1 << 30  # block size: 1 GiB
    SUPERBLOCK.pack_into(data, 0, *fields)
    img.write_bytes(bytes(data))
    assert "absurd block size" in _error(img)
    fields[3], fields[1] = 131072, 0xFFFFFFFF  # inode count: 4 billion
    SUPERBLOCK.pack_into(data, 0, *fields)
    img.write_bytes(bytes(data))
    assert "absurd inode count" in _error(img)


def test_broken_data_block_names_the_problem(tmp_path: Path) -> None:
    img, files = _make(tmp_path, "xz", "-no-fragments")
    data = bytearray(img.read_bytes())
    # the first data block starts right after the superblock (no compressor options for defaults)
    pos = SUPERBLOCK.size + 200
    data[pos:pos + 16] = b"\xff" * 16
    img.write_bytes(bytes(data))
    message = _error(img)
    assert "xz" in message or "block" in message, message
    del files


def test_a_file_whose_blocks_lie_outside_is_refused(tmp_path: Path) -> None:
    img, _ = _make(tmp_path, "gzip")
    fd, sq = _open(img)
    try:
        node = next(n for n in sq.walk() if n.path == b"dir/big.bin")
        assert node.data is not None
        moved = node.data._replace(start=sq.length - 10)
        with pytest.raises(ImageError, match="past the end"):
            sq.file_digest(moved)
    finally:
        os.close(fd)



@pytest.mark.parametrize(("number", "name", "compress"), [
    (1, "gzip", zlib.compress),
    (4, "xz", lambda data: lzma.compress(data, format=lzma.FORMAT_XZ)),
])
def test_block_decompression_is_bounded_and_whole(number: int, name: str, compress: Callable[[bytes], bytes]) -> None:
    """A block that expands past its limit, is cut short or is corrupt is refused, naming the compressor."""
    decompress = squashfs._decompressor(number)
    block = compress(b"squash" * 100)
    assert decompress(block, 600) == b"squash" * 100
    with pytest.raises(ImageError, match=f"{name} block expands beyond 599 bytes"):
        decompress(block, 599)
    with pytest.raises(ImageError, match=f"truncated {name} block"):
        decompress(block[: len(block) // 2], 600)
    with pytest.raises(ImageError, match=f"corrupt {name} block"):
        decompress(b"\x00" * 8 + block, 600)
