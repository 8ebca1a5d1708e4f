"""``asl-verify iso`` on the ISO the pipeline builds (slow): it verifies without root or image tools, and
each kind of tampering fails naming what changed.

One build per session (``pipeline_build``). ISO rewrites use xorriso; squashfs changes repack the
recorded tree with mksquashfs and the step's own options; chain changes re-sign the build's records
with its key (a builder who lies), so that the check under test, not the signature, has to catch it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from asl_capture import chain, dcbor
from asl_capture.format import Entry, Manifest, StepRecord
from asl_capture.keys import load_signer
from asl_capture.store import ObjectStore, ProvenanceDir
from tests.conftest import NOBODY, unprivileged_python
from tests.integration.pipeline_fixtures import REPO, Build, pipeline_build, tools_missing
from tests.integration.records import read_records

__all__ = ["pipeline_build"]

TOOLS = ["mmdebstrap", "mksquashfs", "grub-mkrescue", "xorriso", "mformat", "gpgv"]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(tools_missing(TOOLS)), reason=f"needs {TOOLS} (pipeline/install-deps.sh)"),
]
ISO_MODULE = "asl_capture.cli.verify"


@dataclass(frozen=True)
class Verdict:
    code: int
    stdout: str
    stderr: str

    def line(self, number: int) -> str:
        prefix = f"  {number}. "
        found = [ln for ln in self.stdout.splitlines() if ln.startswith(prefix)]
        assert found, self.stdout + self.stderr
        return found[0]


def verify(iso: Path, prov: Path, trust: Path, *extra: str, env: dict[str, str] | None = None,
           python: Sequence[str] = (sys.executable,)) -> Verdict:
    full = dict(env if env is not None else os.environ)
    full.setdefault("PYTHONPATH", str(REPO))
    done = subprocess.run([*python, "-m", ISO_MODULE, "iso", str(iso), "--provenance", str(prov),
                           "--trust", str(trust), *extra], capture_output=True, text=True, env=full, cwd="/",
                          timeout=900, check=False)
    assert "Traceback" not in done.stderr, done.stderr
    return Verdict(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def built(pipeline_build: Build) -> Build:
    if pipeline_build.trust is None:
        pytest.skip("reused build without ASL_TEST_REPO_TRUST: no trust key")
    return pipeline_build


@pytest.fixture(scope="module")
def shared_dir() -> Iterator[Path]:
    """A world-readable scratch directory (the non-root run must reach its files)."""
    path = Path(tempfile.mkdtemp(prefix="asl-verify-iso-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_verifies_without_root_or_image_tools(built: Build, shared_dir: Path) -> None:
    """Full verification passes as an unprivileged user whose PATH has python and gpgv only."""
    assert built.trust is not None
    work = shared_dir / "auditor"
    work.mkdir()
    subprocess.run(["cp", "-a", str(built.iso), str(built.provenance), str(built.trust), str(work)], check=True)
    bin_dir = work / "bin"
    bin_dir.mkdir()
    os.symlink(shutil.which("gpgv") or "/usr/bin/gpgv", bin_dir / "gpgv")
    python, extra = unprivileged_python(shared_dir / "lib")
    env = {"PATH": str(bin_dir), "HOME": str(work), "LC_ALL": "C.UTF-8", **extra}
    if os.geteuid() == 0:
        subprocess.run(["chmod", "-R", "a+rX", str(work)], check=True)
    probe = subprocess.run([*python, "-c", "import shutil, os; print(os.geteuid(), "
                            "shutil.which('xorriso'), shutil.which('unsquashfs'))"], env=env, capture_output=True,
                           text=True, check=True)
    assert probe.stdout.split() == [str(NOBODY) if os.geteuid() == 0 else str(os.geteuid()), "None", "None"]
    v = verify(work / built.iso.name, work / "provenance", work / built.trust.name, env=env, python=python)
    assert v.code == 0, v.stdout + v.stderr
    for n in range(1, 8):
        assert " ok " in v.line(n), v.line(n)
    assert "VERIFIED" in v.stdout
    identity = [ln for ln in v.stdout.splitlines() if ln.startswith("image identity: sha256:")]
    assert len(identity) == 1 and len(identity[0].split(":")[-1].strip()) == 64
    quick = verify(work / built.iso.name, work / "provenance", work / built.trust.name, "--quick", "--json",
                   env=env, python=python)
    doc = json.loads(quick.stdout)
    assert quick.code == 0 and doc["verdict"] == "verified" and [c["number"] for c in doc["checks"]] == [1, 2, 3, 7]
    assert doc["image_identity"] == identity[0].split(": ", 1)[1]


def _rewrite(iso: Path, out: Path, *commands: str) -> Path:
    subprocess.run(["xorriso", "-indev", str(iso), "-outdev", str(out), "-boot_image", "any", "keep", *commands],
                   check=True, capture_output=True)
    return out


@pytest.mark.parametrize(("name", "commands", "named"), [
    ("changed", ("-update", "{tmp}/grub.cfg", "/boot/grub/grub.cfg"), "/boot/grub/grub.cfg: "),
    ("added", ("-map", "{tmp}/grub.cfg", "/extra.txt"), "/extra.txt: present"),
    ("removed", ("-rm", "/asl/image-id", "--"), "/asl/image-id: recorded"),
])
def test_iso_rewritten_fails_naming_the_path(built: Build, tmp_path: Path, name: str, commands: tuple[str, ...],
                                             named: str) -> None:
    cfg = tmp_path / "grub.cfg"
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(built.iso), "-extract", "/boot/grub/grub.cfg",
                    str(cfg)], check=True, capture_output=True)
    cfg.chmod(0o644)
    cfg.write_bytes(cfg.read_bytes().replace(b"timeout=", b"timeout=9"))
    bad = _rewrite(built.iso, tmp_path / f"{name}.iso", *(c.format(tmp=tmp_path) for c in commands))
    assert built.trust is not None
    v = verify(bad, built.provenance, built.trust, "--quick")
    assert v.code == 1
    assert "FAIL" in v.line(2) and "another build, or changed bytes" in v.line(2)
    assert "FAIL" in v.line(3) and named in v.line(3), v.line(3)


def _repack(built: Build, tmp_path: Path, edit: Callable[[Path], list[str]]) -> Path:
    """The ISO with live/system.squashfs rebuilt from the recorded tree after ``edit`` (mksquashfs options
    as the iso step uses them; ``edit`` may return extra mksquashfs arguments)."""
    tree = tmp_path / "isoroot"
    subprocess.run(["cp", "-a", str(built.repo / "out/work/isoroot"), str(tree)], check=True)
    extra = edit(tree)
    records = read_records(built.provenance, built.trust) if built.trust else []
    epoch = next(r.source_date_epoch for r in records if r.step == "iso")
    comp = "xz"
    contents = (built.repo / "out/work/iso-contents.cbor").read_bytes()
    doc = dcbor.decode(contents)
    squashfs = doc.get("squashfs") if isinstance(doc, dict) else None
    if isinstance(squashfs, dict):
        comp = str(squashfs["compression"])
    img = tmp_path / "system.squashfs"
    subprocess.run(["mksquashfs", str(tree), str(img), "-noappend", "-no-progress", "-comp", comp, "-mkfs-time",
                    str(epoch), "-all-time", str(epoch), *extra], check=True, capture_output=True,
                   env={k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"})
    shutil.rmtree(tree)
    return _rewrite(built.iso, tmp_path / "repacked.iso", "-update", str(img), "/live/system.squashfs")


def test_squashfs_byte_changed_fails_naming_the_path(built: Build, tmp_path: Path) -> None:
    def edit(tree: Path) -> list[str]:
        target = tree / "etc/hostname"
        data = bytearray(target.read_bytes())
        data[0] ^= 0x01
        target.write_bytes(bytes(data))
        os.utime(target, (0, 0))
        return []

    bad = _repack(built, tmp_path, edit)
    assert built.trust is not None
    v = verify(bad, built.provenance, built.trust)
    assert v.code == 1
    assert "FAIL" in v.line(4) and "/etc/hostname: content differs" in v.line(4), v.line(4)


def test_squashfs_mode_bit_changed_fails_naming_the_path(built: Build, tmp_path: Path) -> None:
    bad = _repack(built, tmp_path, lambda _tree: ["-p", "usr/bin/su m 0755 0 0"])
    assert built.trust is not None
    v = verify(bad, built.provenance, built.trust)
    assert v.code == 1
    assert "FAIL" in v.line(4) and "/usr/bin/su: mode 4755 recorded, 0755 found" in v.line(4), v.line(4)
    assert " ok " in v.line(5) and " ok " in v.line(6)


def _forge(built: Build, dest: Path, change: Callable[[list[dict[str, dcbor.Value]], ObjectStore], None]) -> Path:
    """A provenance directory holding the build's records after ``change``, re-signed with the build's key."""
    assert built.trust is not None
    records = [r.to_value() for r in read_records(built.provenance, built.trust)]
    (dest / "objects").mkdir(parents=True)
    subprocess.run(["cp", "-al", str(built.provenance / "objects/sha256"), str(dest / "objects/")], check=True)
    prov = ProvenanceDir.create(dest)
    store = ObjectStore(prov)
    change(records, store)
    signer = load_signer(built.trust.with_suffix(".key"))
    for body in records:
        draft = StepRecord.from_value({**body, "chain": bytes(16), "seq": 0, "prev": None})

        def build(_head: chain.Head, d: StepRecord = draft) -> StepRecord:
            return d

        chain.append(prov, signer, build, new_chain_id=lambda: os.urandom(16))
    return dest


def _step(records: list[dict[str, dcbor.Value]], name: str) -> dict[str, dcbor.Value]:
    return next(r for r in records if r["step"] == name)


def test_iso_of_another_build_and_deleted_object_and_removed_record(built: Build, tmp_path: Path) -> None:
    assert built.trust is not None
    other = _forge(built, tmp_path / "other", lambda records, _store: None)  # same steps, another chain id
    assert verify(built.iso, other, built.trust, "--quick").code == 0  # the forge itself is faithful
    fake_iso = tmp_path / "another.iso"
    shutil.copyfile(built.iso, fake_iso)
    with fake_iso.open("r+b") as f:
        f.seek(40 * 2048)
        f.write(b"another build")
    v = verify(fake_iso, built.provenance, built.trust, "--quick")
    assert v.code == 1 and "FAIL" in v.line(2) and "another build" in v.line(2)
    # a deleted object: the chain itself fails (check 1), nothing else is compared
    prov = tmp_path / "deleted"
    subprocess.run(["cp", "-a", str(built.provenance), str(prov)], check=True)
    iso_rec = next(r for r in read_records(prov, built.trust) if r.step == "iso")
    victim = (iso_rec.attached or ())[0].digest.hex()
    (prov / "objects/sha256" / victim[:2] / victim[2:]).unlink()
    v = verify(built.iso, prov, built.trust)
    assert v.code == 1 and "FAIL" in v.line(1) and victim in v.line(1) and "not checked" in v.line(2)
    # a removed record
    prov2 = tmp_path / "removed"
    subprocess.run(["cp", "-a", str(built.provenance), str(prov2)], check=True)
    scan = chain.read(prov2 / "chain.cbor")
    data = (prov2 / "chain.cbor").read_bytes()
    second = scan.items[1]
    (prov2 / "chain.cbor").write_bytes(data[:second.offset] + data[second.offset + len(second.raw):])
    v = verify(built.iso, prov2, built.trust)
    assert v.code == 1 and "FAIL" in v.line(1) and "record 1" in v.line(1) and "removed" in v.line(1)


def test_step_input_nobody_produced_fails_naming_it(built: Build, tmp_path: Path) -> None:
    def change(records: list[dict[str, dcbor.Value]], store: ObjectStore) -> None:
        iso = _step(records, "iso")
        inputs = iso["inputs"]
        assert isinstance(inputs, dict) and isinstance(inputs["manifest"], bytes)
        manifest = Manifest.from_cbor(store.read(inputs["manifest"]))
        sneaky = Entry(b"out/work/sneaky.bin", "f", 0o644, 3, bytes(32))
        entries = tuple(sorted((*manifest.entries, sneaky), key=lambda e: e.path))
        inputs["manifest"] = store.put(Manifest(roots=manifest.roots, entries=entries).encode())
        inputs["entries"], inputs["files"] = len(entries), sum(1 for e in entries if e.kind == "f")

    prov = _forge(built, tmp_path / "sneaky", change)
    assert built.trust is not None
    v = verify(built.iso, prov, built.trust)
    assert v.code == 1
    assert "FAIL" in v.line(5) and "out/work/sneaky.bin: produced by no earlier step" in v.line(5), v.line(5)


def _rootfs_sources(records: list[dict[str, dcbor.Value]]) -> list[dict[str, dcbor.Value]]:
    sources = _step(records, "rootfs")["sources"]
    assert isinstance(sources, list)
    return [s for s in sources if isinstance(s, dict)]


def test_altered_inrelease_fails_naming_it(built: Build, tmp_path: Path) -> None:
    altered: list[str] = []

    def change(records: list[dict[str, dcbor.Value]], store: ObjectStore) -> None:
        rootfs = _step(records, "rootfs")
        release = next(s for s in _rootfs_sources(records) if s["kind"] == "release")
        old = release["sha256"]
        assert isinstance(old, bytes)
        data = store.read(old).replace(b"Suite: ", b"Suite: x", 1)
        release["sha256"] = new = store.put(data)
        attached = rootfs["attached"]
        assert isinstance(attached, list)
        for item in attached:
            if isinstance(item, dict) and item["digest"] == old:
                item["digest"], item["size"] = new, len(data)
        altered.append(str(release["uri"]))

    prov = _forge(built, tmp_path / "inrelease", change)
    assert built.trust is not None
    v = verify(built.iso, prov, built.trust)
    assert v.code == 1
    assert "FAIL" in v.line(6) and altered[0] in v.line(6) and "gpgv rejects" in v.line(6), v.line(6)


def test_deb_digest_its_index_does_not_list_fails_naming_it(built: Build, tmp_path: Path) -> None:
    named: list[str] = []

    def change(records: list[dict[str, dcbor.Value]], _store: ObjectStore) -> None:
        deb = next(s for s in _rootfs_sources(records) if s["kind"] == "deb")
        deb["sha256"] = bytes(32)
        named.append(str(deb["uri"]))

    prov = _forge(built, tmp_path / "deb", change)
    assert built.trust is not None
    v = verify(built.iso, prov, built.trust)
    assert v.code == 1
    assert "FAIL" in v.line(6) and named[0] in v.line(6) and "is not the one its index lists" in v.line(6)


def test_graph_of_the_real_build(built: Build, tmp_path: Path) -> None:
    assert built.trust is not None
    out = tmp_path / "build.dot"
    v = verify(built.iso, built.provenance, built.trust, "--quick", "--graph", str(out))
    assert v.code == 0, v.stdout + v.stderr
    text = out.read_text()
    assert text.startswith("digraph build {")
    for step in ("rootfs", "overlay", "bootloader", "iso"):
        assert f'"{step}\\nrecord' in text
    if shutil.which("dot"):
        svg = tmp_path / "build.svg"
        assert verify(built.iso, built.provenance, built.trust, "--quick", "--graph", str(svg)).code == 0
        assert b"<svg" in svg.read_bytes()
