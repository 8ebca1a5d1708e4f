"""Tree manifests: lstat walk, symlinks never followed, ordering, names, modes, excludes, diff, encoding."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from pathlib import Path

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asl_capture import dcbor
from asl_capture.errors import CborError, SnapshotError
from asl_capture.format import Entry, Manifest, diff
from asl_capture.hashing import Hasher
from asl_capture.manifest import Excluder, label_for, snapshot


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def write(path: Path, data: bytes = b"", mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


def paths(manifest: Manifest) -> list[bytes]:
    return [e.path for e in manifest.entries]


def snap(tree: Path, **kwargs: object) -> Manifest:
    return snapshot([tree], base=tree, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    write(root / "a.txt", b"alpha")
    write(root / "sub" / "b.bin", b"\x00\x01", mode=0o600)
    return root


def test_basic_entries(tree: Path) -> None:
    (tree / "sub").chmod(0o750)
    manifest = snap(tree)
    assert manifest.roots == (b".",)
    by = manifest.by_path()
    assert paths(manifest) == [b".", b"a.txt", b"sub", b"sub/b.bin"]
    assert by[b"."].kind == "d" and by[b"."].extra is None and by[b"."].size == 0
    assert by[b"a.txt"] == Entry(b"a.txt", "f", 0o644, 5, sha(b"alpha"))
    assert by[b"sub"] == Entry(b"sub", "d", 0o750, 0, None)
    assert by[b"sub/b.bin"] == Entry(b"sub/b.bin", "f", 0o600, 2, sha(b"\x00\x01"))
    assert manifest.files == 2


def test_modes_recorded_including_special_bits(tree: Path) -> None:
    write(tree / "setuid", b"x", mode=0o4755)
    write(tree / "ro", b"y", mode=0o444)
    (tree / "sticky").mkdir()
    (tree / "sticky").chmod(0o1777)
    by = snap(tree).by_path()
    assert by[b"setuid"].mode == 0o4755
    assert by[b"ro"].mode == 0o444
    assert by[b"sticky"].mode == 0o1777
    (tree / "ro").chmod(0o400)
    assert snap(tree).by_path()[b"ro"].mode == 0o400


def test_symlink_to_directory_outside_is_not_followed(tmp_path: Path, tree: Path) -> None:
    outside = tmp_path / "outside"
    write(outside / "secret.txt", b"do not read me")
    write(outside / "deeper" / "more.txt", b"nor me")
    (tree / "escape").symlink_to(outside)
    (tree / "rel").symlink_to("../outside/secret.txt")
    hasher = Hasher()
    manifest = snap(tree, hasher=hasher)
    by = manifest.by_path()
    assert by[b"escape"] == Entry(b"escape", "l", by[b"escape"].mode, len(os.fsencode(outside)), os.fsencode(outside))
    assert by[b"rel"].kind == "l" and by[b"rel"].extra == b"../outside/secret.txt"
    assert not any(p.startswith((b"escape/", b"rel/")) for p in paths(manifest))
    digests = {e.extra for e in manifest.entries if e.kind == "f"}
    assert sha(b"do not read me") not in digests and sha(b"nor me") not in digests
    assert hasher.cache.misses == 2  # only a.txt and sub/b.bin were hashed
    assert paths(manifest) == [b".", b"a.txt", b"escape", b"rel", b"sub", b"sub/b.bin"]


def test_root_that_is_a_symlink_is_recorded_not_followed(tmp_path: Path, tree: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(tree)
    manifest = snapshot([link], base=tmp_path)
    assert manifest.entries == (Entry(b"link", "l", manifest.entries[0].mode, len(os.fsencode(tree)),
                                      os.fsencode(tree)),)
    assert manifest.files == 0


def test_dangling_symlink(tree: Path) -> None:
    (tree / "dangling").symlink_to("no/such/target")
    by = snap(tree).by_path()
    assert by[b"dangling"].kind == "l"
    assert by[b"dangling"].extra == b"no/such/target"
    assert by[b"dangling"].size == len(b"no/such/target")


def test_entries_sorted_by_raw_bytes(tmp_path: Path) -> None:
    root = tmp_path / "t"
    names = ["a", "a-b", "a.c", "B", "Z", "_", "é", "ab"]
    for name in names:
        write(root / name, name.encode())
    (root / "dir").mkdir()
    write(root / "dir" / "z")
    write(root / "dir-x")
    os.close(os.open(os.path.join(os.fsencode(root), b"\xff\xfe"), os.O_CREAT | os.O_WRONLY, 0o644))
    manifest = snapshot([root], base=root)
    got = paths(manifest)
    assert got == sorted(got)
    assert got == [b".", b"B", b"Z", b"_", b"a", b"a-b", b"a.c", b"ab", b"dir", b"dir-x", b"dir/z",
                   "é".encode(), b"\xff\xfe"]


def test_non_utf8_file_names(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    raw_root = os.fsencode(root)
    bad_dir = os.path.join(raw_root, b"dir\xff")
    os.mkdir(bad_dir)
    fd = os.open(os.path.join(bad_dir, b"f\xc3\x28"), os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"content")
    os.close(fd)
    os.symlink(b"target\xfe", os.path.join(raw_root, b"link"))
    manifest = snapshot([root], base=root)
    by = manifest.by_path()
    assert by[b"dir\xff/f\xc3\x28"] == Entry(b"dir\xff/f\xc3\x28", "f", 0o644, 7, sha(b"content"))
    assert by[b"link"].extra == b"target\xfe"
    decoded = cbor2.loads(manifest.encode())
    entry_paths = [e[0] for e in decoded["entries"]]
    assert b"dir\xff/f\xc3\x28" in entry_paths  # kept as a byte string, not mangled
    assert "." in entry_paths  # valid UTF-8 stays text
    link = next(e for e in decoded["entries"] if e[0] == "link")
    assert link[4] == b"target\xfe"
    assert Manifest.from_cbor(manifest.encode()) == manifest


def test_exclude_globs(tree: Path) -> None:
    write(tree / "x.o", b"obj")
    write(tree / "sub" / "y.o", b"obj2")
    write(tree / "build" / "deep" / "keep.c", b"c")
    write(tree / "sub" / "tmp" / "t.c", b"t")
    manifest = snap(tree, excluder=Excluder(patterns=("*.o", "build", "sub/tmp")))
    assert paths(manifest) == [b".", b"a.txt", b"sub", b"sub/b.bin"]
    only_name = snap(tree, excluder=Excluder(patterns=("keep.c",)))
    assert b"build/deep" in paths(only_name) and b"build/deep/keep.c" not in paths(only_name)


def test_dot_git_always_excluded(tree: Path) -> None:
    write(tree / ".git" / "config", b"[core]")
    write(tree / "sub" / ".git", b"gitdir: elsewhere")
    write(tree / ".gitignore", b"*.o")
    write(tree / ".github" / "ci.yml", b"x")
    got = paths(snap(tree))
    assert got == [b".", b".github", b".github/ci.yml", b".gitignore", b"a.txt", b"sub", b"sub/b.bin"]
    got = paths(snap(tree, excluder=Excluder(patterns=("*.txt",))))
    assert b".git" not in got and b".git/config" not in got and b"a.txt" not in got


def test_absolute_excluded_path(tree: Path) -> None:
    prov = tree / "provenance"
    write(prov / "chain.cbor", b"chain")
    write(prov / "objects" / "x", b"obj")
    write(tree / "provenance2" / "kept", b"k")
    excluder = Excluder(absolute=frozenset({os.fsencode(prov)}))
    got = paths(snap(tree, excluder=excluder))
    assert not any(p.startswith(b"provenance/") or p == b"provenance" for p in got)
    assert b"provenance2/kept" in got


def test_missing_roots(tmp_path: Path, tree: Path) -> None:
    missing = tmp_path / "not-yet"
    manifest = snapshot([missing, tree / "a.txt"], base=tmp_path, missing_ok=True)
    assert manifest.roots == (b"not-yet", b"tree/a.txt")
    assert paths(manifest) == [b"tree/a.txt"]
    with pytest.raises(SnapshotError, match="cannot stat"):
        snapshot([missing], base=tmp_path)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    assert paths(snapshot([dangling], base=tmp_path, missing_ok=True)) == [b"dangling"]  # lexists, recorded


def test_root_labels(tmp_path: Path, tree: Path) -> None:
    assert label_for(tree, tree) == b"."
    assert label_for(tree / "sub", tree) == b"sub"
    assert label_for(tmp_path, tree) == os.fsencode(os.path.abspath(tmp_path))
    assert label_for(Path(str(tree) + "-sibling"), tree) == os.fsencode(str(tree) + "-sibling")
    manifest = snapshot([tree / "sub"], base=tmp_path / "elsewhere")
    assert manifest.roots == (os.fsencode(tree / "sub"),)
    assert paths(manifest)[0] == os.fsencode(tree / "sub")


def test_overlapping_roots_listed_once(tree: Path) -> None:
    manifest = snapshot([tree, tree / "sub", tree], base=tree)
    assert paths(manifest) == [b".", b"a.txt", b"sub", b"sub/b.bin"]
    assert manifest.roots == (b".", b"sub")


def test_fifo_recorded_and_not_opened(tree: Path) -> None:
    os.mkfifo(tree / "pipe", 0o640)
    result: list[Manifest] = []
    errors: list[BaseException] = []
    hasher = Hasher()

    def run() -> None:
        try:
            result.append(snap(tree, hasher=hasher))
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            errors.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "snapshot blocked on a FIFO"
    assert not errors
    entry = result[0].by_path()[b"pipe"]
    assert entry == Entry(b"pipe", "p", 0o640, 0, None)
    assert hasher.cache.misses == 2  # the FIFO was not hashed


def test_socket_recorded(tmp_path: Path) -> None:
    root = tmp_path / "s"
    root.mkdir()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(root / "sock"))
        entry = snapshot([root], base=root).by_path()[b"sock"]
    finally:
        sock.close()
    assert (entry.kind, entry.size, entry.extra) == ("s", 0, None)


def test_device_entry_encodes_rdev() -> None:
    entry = Entry(b"dev/null", "c", 0o666, 0, os.makedev(1, 3))
    manifest = Manifest(roots=(b"dev",), entries=(entry,))
    assert Manifest.from_cbor(manifest.encode()).entries == (entry,)
    assert cbor2.loads(manifest.encode())["entries"][0][4] == os.makedev(1, 3)


# ----------------------------------------------------------------------------------------------------
# encoding


def test_encode_is_deterministic_cbor_and_round_trips(tmp_path: Path, tree: Path) -> None:
    (tree / "link").symlink_to("a.txt")
    manifest = snap(tree)
    encoded = manifest.encode()
    value = cbor2.loads(encoded)
    assert set(value) == {"v", "roots", "entries"} and value["v"] == 1
    assert cbor2.dumps(value, canonical=True) == encoded
    assert dcbor.encode(dcbor.decode(encoded)) == encoded
    assert value["entries"][1] == ["a.txt", "f", 0o644, 5, sha(b"alpha")]
    assert manifest.digest == sha(encoded)
    again = Manifest.from_cbor(encoded)
    assert again == manifest
    assert again.encode() == encoded
    assert snap(tree).encode() == encoded  # same tree, same bytes


def test_manifest_digest_changes_with_content(tree: Path) -> None:
    before = snap(tree).digest
    write(tree / "a.txt", b"alphA")
    assert snap(tree).digest != before


@pytest.mark.parametrize("value", [
    [],
    {"v": 2, "roots": [], "entries": []},
    {"v": True, "roots": [], "entries": []},
    {"v": 1, "roots": [], "entries": [], "extra": 0},
    {"v": 1, "roots": []},
    {"v": 1, "roots": {}, "entries": []},
    {"v": 1, "roots": [1], "entries": []},
    {"v": 1, "roots": [], "entries": [["a", "f", 0o644, 1]]},
    {"v": 1, "roots": [], "entries": [["a", "x", 0o644, 1, None]]},
    {"v": 1, "roots": [], "entries": [["a", "f", "644", 1, None]]},
    {"v": 1, "roots": [], "entries": [["a", "f", 0o644, True, None]]},
    {"v": 1, "roots": [], "entries": [["a", "f", False, 1, None]]},
    {"v": 1, "roots": [], "entries": [["a", "l", 0o777, 1, None]]},
    {"v": 1, "roots": [], "entries": [["a", "f", 0o644, 1, "digest"]]},
    {"v": 1, "roots": [], "entries": [["a", "f", 0o644, 1, True]]},
    {"v": 1, "roots": [], "entries": [[5, "f", 0o644, 1, None]]},
    {"v": 1, "roots": [], "entries": ["a"]},
])
def test_from_cbor_rejects_malformed(value: dcbor.Value) -> None:
    with pytest.raises(CborError):
        Manifest.from_cbor(dcbor.encode(value))


def test_from_cbor_rejects_non_deterministic_bytes() -> None:
    with pytest.raises(CborError):
        Manifest.from_cbor(cbor2.dumps({"v": 1, "entries": [], "roots": []}))  # not in canonical order
    with pytest.raises(CborError):
        Manifest.from_cbor(dcbor.encode({"v": 1, "roots": [], "entries": []}) + b"\x00")


# ----------------------------------------------------------------------------------------------------
# diff


def test_diff_created_modified_deleted(tree: Path) -> None:
    write(tree / "gone.txt", b"bye")
    write(tree / "mode.sh", b"#!", mode=0o644)
    before = snap(tree)
    write(tree / "a.txt", b"ALPHA")
    (tree / "gone.txt").unlink()
    (tree / "mode.sh").chmod(0o755)
    write(tree / "new" / "n.txt", b"new")
    after = snap(tree)
    changes = diff(before, after)
    assert [e.path for e in changes.created] == [b"new", b"new/n.txt"]
    assert [e.path for e in changes.modified] == [b"a.txt", b"mode.sh"]  # a directory's mtime is not recorded
    assert changes.deleted == (b"gone.txt",)
    mode = next(e for e in changes.modified if e.path == b"mode.sh")
    assert mode.mode == 0o755
    new_mode = (tree / "new").stat().st_mode & 0o7777
    value = cbor2.loads(changes.encode())
    assert value == {
        "v": 1,
        "created": [["new", "d", new_mode, 0, None], ["new/n.txt", "f", 0o644, 3, sha(b"new")]],
        "modified": [e.to_value() for e in changes.modified],
        "deleted": ["gone.txt"],
    }
    assert cbor2.dumps(value, canonical=True) == changes.encode()


def test_diff_of_identical_manifests_is_empty(tree: Path) -> None:
    changes = diff(snap(tree), snap(tree))
    assert (changes.created, changes.modified, changes.deleted) == ((), (), ())


def test_diff_file_replaced_by_symlink(tree: Path) -> None:
    before = snap(tree)
    (tree / "a.txt").unlink()
    (tree / "a.txt").symlink_to("sub/b.bin")
    changes = diff(before, snap(tree))
    assert [(e.path, e.kind) for e in changes.modified] == [(b"a.txt", "l")]
    assert changes.created == () and changes.deleted == ()


# ----------------------------------------------------------------------------------------------------
# the encoder's fast path must give exactly the generic deterministic encoding

_entries = st.builds(  # the encoder's common shape: ASCII path of 24..255 bytes, size 256..65535
    Entry,
    path=st.text(alphabet="abc/._-", min_size=20, max_size=260).map(str.encode),
    kind=st.just("f"),
    mode=st.integers(0, 0o7777),
    size=st.integers(200, 70000),
    extra=st.binary(min_size=32, max_size=32),
) | st.builds(
    Entry,
    path=st.binary(min_size=1, max_size=300) | st.text(min_size=1, max_size=300).map(str.encode),
    kind=st.just("f"),
    mode=st.integers(0, 0o7777) | st.sampled_from([23, 24, 255, 256, 0o200, 0o644, 65535, 65536]),
    size=st.integers(0, 2**64 - 1) | st.sampled_from([0, 23, 24, 255, 256, 65535, 65536]),
    extra=st.binary(min_size=32, max_size=32),
) | st.builds(
    Entry,
    path=st.binary(min_size=1, max_size=40),
    kind=st.sampled_from(["d", "p", "s"]),
    mode=st.integers(0, 0o7777),
    size=st.just(0),
    extra=st.none(),
) | st.builds(
    Entry,
    path=st.binary(min_size=1, max_size=40),
    kind=st.just("l"),
    mode=st.just(0o777),
    size=st.integers(0, 300),
    extra=st.binary(max_size=300),
) | st.builds(
    Entry,
    path=st.binary(min_size=1, max_size=40),
    kind=st.sampled_from(["c", "b"]),
    mode=st.integers(0, 0o7777),
    size=st.just(0),
    extra=st.integers(0, 2**64 - 1),
)


def generic_encoding(manifest: Manifest) -> bytes:
    return dcbor.encode({
        "v": 1,
        "roots": [r.decode() if r.isascii() else r for r in manifest.roots],
        "entries": [e.to_value() for e in manifest.entries],
    })


@given(st.lists(_entries, max_size=8), st.lists(st.binary(max_size=20).filter(bytes.isascii), max_size=3))
@settings(max_examples=300, deadline=None, database=None)
def test_encode_equals_generic_deterministic_encoding(entries: list[Entry], roots: list[bytes]) -> None:
    manifest = Manifest(roots=tuple(sorted(set(roots))), entries=tuple(entries))
    assert manifest.encode() == generic_encoding(manifest)
    # as a snapshot makes them (sorted, one per path, permission bits only, a symlink's size its
    # target's length), the entries also parse back strictly
    made = {e.path: e._replace(mode=e.mode & 0o7777,
                               size=len(e.extra) if e.kind == "l" and isinstance(e.extra, bytes) else e.size)
            for e in entries}
    valid = Manifest(roots=manifest.roots, entries=tuple(made[p] for p in sorted(made)))
    assert valid.encode() == generic_encoding(valid)
    assert Manifest.from_cbor(valid.encode()) == valid


@pytest.mark.parametrize("mode", [0o200, 0o040, 0o030, 0o377, 0o400, 0o644])
def test_encode_of_common_file_shape_with_small_mode(tmp_path: Path, mode: int) -> None:
    """A 24..255-byte ASCII path, size 256..65535: the shape of most files in a build tree."""
    root = tmp_path / "t"
    name = "n" * 30
    write(root / name, b"x" * 300, mode=mode)
    manifest = snapshot([root], base=root)
    assert manifest.encode() == generic_encoding(manifest)
    assert Manifest.from_cbor(manifest.encode()).by_path()[name.encode()].mode == mode
