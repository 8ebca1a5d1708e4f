"""``asl-verify iso``: prove an ISO back to its signed build record, offline, without root.

Seven numbered checks (``docs/AUDIT.md`` says what each proves and what it cannot):

1. ``chain``: the provenance chain verifies as ``asl-verify chain`` does, every step ``ok``;
2. ``iso-digest``: the ISO's SHA-256 equals the output the chain recorded for it;
3. ``iso-files``: every path of the ISO, read directly from the image, is the recorded ISO tree plus
   what the ISO tool added (recorded by the ``iso`` step itself), same bytes, and the system area;
4. ``squashfs``: the system image, read in place, equals the recorded system tree: type, mode,
   owner, size, digest, symlink target, device numbers;
5. ``closure``: every input of every step is an earlier output, a pinned source or a file of the
   source tree the build started from; exclusions are reported;
6. ``debian``: the recorded InRelease files verify (gpgv/sqv) against the recorded keyring, each
   Packages index and each ``.deb`` digest is the one listed by the signed index above it;
7. ``build-manifest``: ``/asl/build-manifest.cbor`` in the ISO equals what the chain recorded.

``--quick`` runs 1, 2, 3 and 7. A failed check does not stop the later ones (each names what it
found, so an auditor sees every difference), except that nothing is compared with a chain that
does not verify. :func:`verify_iso` raises :class:`IsoVerificationError` (a VerificationError
carrying the whole report) when any check failed and returns the :class:`IsoReport` otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from asl_capture.audit import checks
from asl_capture.audit.recorded import Recorded
from asl_capture.errors import AslError, ImageError, VerificationError
from asl_capture.format import Manifest
from asl_capture.parallel import Pending, start_shards
from asl_capture.verdict import Check, ChecksFailed, all_passed, failed
from asl_capture.verify import ChainReport, verify_chain

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

CHECKS = ("chain", "iso-digest", "iso-files", "squashfs", "closure", "debian", "build-manifest")
QUICK = ("chain", "iso-digest", "iso-files", "build-manifest")
JSON_SCHEMA = "asl-verify/iso/1"


@dataclass(frozen=True)
class IsoReport:
    """The verdict on one ISO: every check run, the ISO's digest and the image identity."""

    iso: Path
    provenance: Path
    sha256: bytes | None
    image_identity: bytes | None
    chain: ChainReport | None
    checks: tuple[Check, ...]
    quick: bool
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return all_passed(self.checks, QUICK if self.quick else CHECKS)

    @property
    def failures(self) -> tuple[Check, ...]:
        return failed(self.checks)


class IsoVerificationError(ChecksFailed):
    """At least one check failed; ``report`` holds them all."""

    def __init__(self, report: IsoReport) -> None:
        super().__init__(report.failures)
        self.report = report


@dataclass(frozen=True)
class IsoOptions:
    """Options of :func:`verify_iso` beyond the ISO, provenance and trust."""

    quick: bool = False
    debian_keyrings: tuple[Path, ...] = ()
    workers: int | None = None


Log = Callable[[Check], None]

#: Check 6 as a forked helper found it: ("ok", detail, "", None), ("failed", message, check, record),
#: or ("again", "", "", None) for anything else (this process then runs the check itself).
_Outcome = tuple[str, str, str, int | None]
_AGAIN: _Outcome = ("again", "", "", None)


@dataclass
class _State:
    """What the checks share while they run."""

    iso: Path
    recorded: Recorded | None = None
    iso_seq: int | None = None
    iso_label: bytes | None = None
    sha256: bytes | None = None
    identity: bytes | None = None
    image: checks.IsoRead | None = None
    prefetch: checks.SquashPrefetch | None = None
    debian: Pending[_Outcome] | None = None
    notes: list[str] = field(default_factory=list)


def verify_iso(
    iso: Path,
    provenance: Path,
    trusted: dict[bytes, Ed25519PublicKey],
    *,
    options: IsoOptions | None = None,
    log: Log | None = None,
) -> IsoReport:
    """Verify ``iso`` against the chain in ``provenance`` signed by ``trusted`` keys.

    ``log(check)`` is called as each check finishes, in order.

    Raises:
        ImageError: the ISO cannot be opened at all (missing, not a regular file).
        StoreError: the provenance directory or its chain is missing.
        IsoVerificationError: a check failed (the report names every failure).
    """
    opts = options if options is not None else IsoOptions()
    emit: Log = log if log is not None else (lambda _c: None)
    wanted = QUICK if opts.quick else CHECKS
    state = _State(iso=iso)
    fd = _open(iso)
    done: list[Check] = []
    # the system image is hashed by helper processes while checks 1-3 run (it needs no record to be read)
    state.prefetch = None if opts.quick else checks.SquashPrefetch.start(fd, workers=opts.workers)
    try:
        chain_report: ChainReport | None = None
        for name in wanted:
            number = CHECKS.index(name) + 1
            try:
                if name == "chain":
                    manifests: dict[bytes, Manifest] = {}
                    chain_report = verify_chain(provenance, trusted, manifests=manifests)
                    state.recorded = Recorded(provenance, chain_report, manifests)
                    if "debian" in wanted:  # its gpgv runs and index reads overlap checks 2-5
                        state.debian = _start_debian(state.recorded, opts.debian_keyrings)
                    detail = (f"{len(chain_report.records)} records signed by {len(chain_report.kids)} trusted "
                              f"key(s), every step ok, head seq {chain_report.head_seq}")
                elif state.recorded is None:
                    raise VerificationError("not checked: the chain did not verify", check=name)
                else:
                    detail = _run(name, fd, state, opts)
                check = Check(number, name, True, detail)
            except VerificationError as exc:
                check = Check(number, name, False, _message(exc), exc.record)
            except ImageError as exc:
                check = Check(number, name, False, f"{iso}: {exc}")
            done.append(check)
            emit(check)
            if name == "chain" and not check.ok and chain_report is None:
                for rest in wanted[1:]:
                    skipped = Check(CHECKS.index(rest) + 1, rest, False, "not checked: the chain did not verify")
                    done.append(skipped)
                    emit(skipped)
                break
    finally:
        if state.prefetch is not None:
            state.prefetch.pending.cancel()
        if state.debian is not None:
            state.debian.cancel()
        os.close(fd)
    report = IsoReport(iso=iso, provenance=provenance, sha256=state.sha256, image_identity=state.identity,
                       chain=chain_report, checks=tuple(done), quick=opts.quick, notes=tuple(state.notes))
    if not report.ok:
        raise IsoVerificationError(report)
    return report


def _message(exc: VerificationError) -> str:
    """The error's message without the ``[check] record N:`` prefix (the Check carries those)."""
    text = str(exc)
    for prefix in (f"[{exc.check}] " if exc.check else "", f"record {exc.record}: " if exc.record is not None else ""):
        if prefix and text.startswith(prefix):
            text = text[len(prefix):]
    return text


def _open(iso: Path) -> int:
    try:
        fd = os.open(iso, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise ImageError(f"{iso}: cannot open the ISO: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ImageError(f"{iso}: not a regular file")
    return fd


def _run(name: str, fd: int, state: _State, opts: IsoOptions) -> str:
    recorded = state.recorded
    assert recorded is not None
    if name == "iso-digest":
        return _iso_digest(fd, state, recorded)
    if name == "closure":
        from asl_capture.audit.closure import check_closure

        detail, notes = check_closure(recorded)
        state.notes.extend(notes)
        return detail
    if name == "debian":
        return _finish_debian(state, recorded, opts.debian_keyrings)
    if state.iso_seq is None or state.iso_label is None:
        raise VerificationError("not checked: the chain records no ISO", check=name)
    if name == "iso-files":
        state.image = checks.read_iso(fd, str(state.iso), recorded, state.iso_seq, state.iso_label)
        return checks.check_iso_files(state.image)
    if state.image is None:
        raise VerificationError("not checked: the ISO's files could not be read", check=name)
    if name == "build-manifest":
        detail, state.identity = checks.check_build_manifest(state.image, recorded)
        return detail
    if name == "squashfs":
        return checks.check_squashfs(state.image, recorded, workers=opts.workers, prefetch=state.prefetch)
    raise AssertionError(name)


def _iso_digest(fd: int, state: _State, recorded: Recorded) -> str:
    h = hashlib.sha256()
    size = 0
    pos = 0
    while True:
        try:
            chunk = os.pread(fd, 8 << 20, pos)
        except OSError as exc:
            raise ImageError(f"cannot read: {exc.strerror}") from None
        if not chunk:
            break
        h.update(chunk)
        pos += len(chunk)
        size += len(chunk)
    digest = h.digest()
    state.sha256 = digest
    seq, entry = recorded.find_iso(str(state.iso), digest)
    state.iso_seq, state.iso_label = seq, entry.path
    step = recorded.records[seq].step
    if entry.extra != digest:
        extra = entry.extra if isinstance(entry.extra, bytes) else b""
        raise VerificationError(
            f"sha256 {digest.hex()} ({size} bytes) is not the {os.fsdecode(entry.path)} that step {step!r} "
            f"recorded (sha256 {extra.hex()}, {entry.size} bytes): another build, or changed bytes",
            check="iso-digest", record=seq)
    return f"sha256 {digest.hex()} = output {os.fsdecode(entry.path)} of step {step!r} (record {seq})"


def _debian_outcome(recorded: Recorded, keyrings: tuple[Path, ...]) -> _Outcome:
    from asl_capture.audit.debian import check_debian

    try:
        return ("ok", check_debian(recorded, keyrings=keyrings), "", None)
    except VerificationError as exc:
        return ("failed", _message(exc), exc.check, exc.record)
    except AslError:
        return _AGAIN


def _start_debian(recorded: Recorded, keyrings: tuple[Path, ...]) -> Pending[_Outcome]:
    """Check 6 started in a forked helper (it needs only the verified chain)."""
    return start_shards([0], lambda _: _debian_outcome(recorded, keyrings))


def _finish_debian(state: _State, recorded: Recorded, keyrings: tuple[Path, ...]) -> str:
    """Check 6's detail, from the helper when it answered, else checked here (a helper is never
    needed for the verdict)."""
    kind, text, check, record = _AGAIN
    if state.debian is not None:
        pending, state.debian = state.debian, None
        with contextlib.suppress(ImageError):  # the helper died: checked here below
            kind, text, check, record = pending.collect()[0]
    if kind == "ok":
        return text
    if kind == "failed":
        raise VerificationError(text, check=check, record=record)
    from asl_capture.audit.debian import check_debian

    return check_debian(recorded, keyrings=keyrings)
