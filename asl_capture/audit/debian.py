"""Check 6 of ``asl-verify iso``: Debian's own signatures and digests, offline.

The step that fetched packages recorded, as ``sources``, each ``InRelease`` file, each ``Packages``
index, each ``.deb`` and the archive keyring(s) apt trusted, and attached the bytes of all but the
``.deb`` files to its record. This check:

1. verifies each ``InRelease`` signature with Debian's own verifier, ``gpgv``, against the recorded
   keyring (or the keyrings the auditor passes with ``--debian-keyring``, reporting whether the
   recorded one is the same), and reads only the signed text ``gpgv`` outputs;
2. checks each index's SHA-256 against the one its signed ``InRelease`` lists for it;
3. checks each ``.deb``'s SHA-256 against the one its index lists for that file name.

OpenPGP is not parsed here. Without ``gpgv`` the check fails and says so (``sqv`` is not driven yet).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from asl_capture.audit.recorded import Recorded
from asl_capture.errors import UsageError, VerificationError
from asl_capture.frozen import frozen

MAX_KEYRING = 16 << 20
_ARMOR = re.compile(rb"-----BEGIN PGP PUBLIC KEY BLOCK-----\r?\n(.*?)-----END PGP PUBLIC KEY BLOCK-----", re.S)


@frozen
class _Source:
    seq: int
    uri: str
    kind: str
    sha256: bytes
    via: str | None


def _fail(message: str, seq: int | None) -> VerificationError:
    return VerificationError(message, check="debian", record=seq)


def dearmor(data: bytes) -> bytes:
    """Binary OpenPGP packets of an ASCII-armored key block (or ``data`` when it is not armored)."""
    import base64
    import binascii

    m = _ARMOR.search(data)
    if m is None:
        return data
    body = m.group(1).split(b"\n\n", 1)[-1] if b"\n\n" in m.group(1) else m.group(1)
    lines = [ln.strip() for ln in body.splitlines() if ln.strip() and not ln.startswith(b"=")]
    try:
        return base64.b64decode(b"".join(lines), validate=True)
    except (binascii.Error, ValueError):
        raise VerificationError("keyring: malformed ASCII armor", check="debian") from None


def _release_sha256(text: bytes) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    in_section = False
    for line in text.splitlines():
        if line.startswith(b"SHA256:"):
            in_section = True
            continue
        if in_section:
            if not line.startswith(b" "):
                in_section = False
                continue
            parts = line.split()
            if len(parts) == 3:
                try:
                    out[parts[2].decode()] = bytes.fromhex(parts[0].decode())
                except (ValueError, UnicodeDecodeError):
                    continue
    return out


_FILENAME = b"Filename: "
_SHA256 = re.compile(rb"^SHA256: ([0-9a-f]{64})$", re.M)


def _filenames(index: bytes) -> Iterator[tuple[int, int, bytes]]:
    """Each ``Filename: NAME`` line of ``index`` (NAME one word, the whole rest of the line): its start,
    its end and NAME. Found with ``bytes.find``, which is several times faster than a multi-line regex
    over an index of tens of megabytes."""
    line = b"\n" + _FILENAME
    # ``at``: where the line starts (after the newline ``find`` matched), -1 when there is no more
    at = 0 if index.startswith(_FILENAME) else (index.find(line) + 1 or -1)
    while at >= 0:
        begin = at + len(_FILENAME)
        end = index.find(b"\n", begin)
        end = len(index) if end < 0 else end
        name = index[begin:end]
        if name.split() == [name]:
            yield at, end, name
        at = index.find(line, end) + 1 or -1


def index_sha256(index: bytes, wanted: set[str]) -> dict[str, bytes | None]:
    """The SHA256 field of each stanza of ``index`` whose Filename is in ``wanted`` (one pass; a name
    listed twice with different digests maps to None, which no digest equals)."""
    out: dict[str, bytes | None] = {}
    for at, end, raw in _filenames(index):
        name = raw.decode("utf-8", "replace")
        if name not in wanted:
            continue
        start = index.rfind(b"\n\n", 0, at) + 1
        stop = index.find(b"\n\n", end)
        found = _SHA256.search(index, start, stop if stop >= 0 else len(index))
        digest = bytes.fromhex(found.group(1).decode()) if found else None
        out[name] = digest if name not in out or out[name] == digest else None
    return out


def _try_gpgv(inrelease: bytes, keyrings: list[Path], tmp: Path,
              tool: str) -> tuple[bytes, list[str]] | VerificationError:
    try:
        return _gpgv(inrelease, keyrings, tmp, tool)
    except VerificationError as exc:
        return exc


def _gpgv(inrelease: bytes, keyrings: list[Path], tmp: Path, tool: str) -> tuple[bytes, list[str]]:
    """Verify a clear-signed file with gpgv in the fresh directory ``tmp``; return the signed text and
    the signing key fingerprints."""
    tmp.mkdir(mode=0o700)
    signed = tmp / "InRelease"
    signed.write_bytes(inrelease)
    out = tmp / "signed.txt"
    if out.exists():
        out.unlink()
    home = tmp / "home"
    home.mkdir(mode=0o700, exist_ok=True)
    argv = [tool, "--homedir", str(home), "--status-fd", "1"]
    for ring in keyrings:
        argv += ["--keyring", str(ring)]
    argv += ["--output", str(out), str(signed)]
    try:
        done = subprocess.run(argv, capture_output=True, check=False, timeout=120,
                              env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VerificationError(f"gpgv could not run: {exc}", check="debian") from None
    status = done.stdout.decode("utf-8", "replace")
    fingerprints = [line.split()[2] for line in status.splitlines() if line.startswith("[GNUPG:] VALIDSIG ")]
    if done.returncode != 0 or not fingerprints or not out.is_file():
        reason = " ".join(line.split(" ", 1)[1] for line in status.splitlines()
                          if line.startswith("[GNUPG:] ") and ("BADSIG" in line or "NO_PUBKEY" in line
                                                                 or "ERRSIG" in line or "NODATA" in line))
        why = reason or done.stderr.decode(errors="replace").strip()[:200]
        raise VerificationError(f"gpgv rejects the signature ({why})", check="debian")
    return out.read_bytes(), fingerprints


def check_debian(recorded: Recorded, *, keyrings: tuple[Path, ...]) -> str:
    """Check 6 (see the module docstring).

    Raises:
        VerificationError: a signature, digest or stored object does not hold, or gpgv is missing.
        UsageError: an auditor's keyring cannot be read.
    """
    sources: list[_Source] = []
    attached: dict[int, set[bytes]] = {}
    for record in recorded.records:
        if not record.sources:
            continue
        attached[record.seq] = {a.digest for a in record.attached or ()}
        sources += [_Source(record.seq, s.uri, s.kind, s.sha256, s.via) for s in record.sources]
    releases = [s for s in sources if s.kind == "release"]
    indexes = [s for s in sources if s.kind == "index"]
    debs = [s for s in sources if s.kind == "deb"]
    rings = [s for s in sources if s.kind == "keyring"]
    if not releases or not indexes or not debs:
        raise _fail(f"the chain pins {len(releases)} InRelease file(s), {len(indexes)} index(es) and {len(debs)} "
                    f".deb(s): nothing to check Debian's signatures on", None)

    def stored(s: _Source, what: str) -> bytes:
        if s.sha256 not in attached.get(s.seq, set()):
            raise _fail(f"{what} {s.uri} (sha256 {s.sha256.hex()}) was not stored with the record", s.seq)
        return recorded.object(s.sha256, seq=s.seq, what=f"{what} {s.uri}")

    if not rings and not keyrings:
        raise _fail("no archive keyring was recorded; pass --debian-keyring to verify with one you trust", None)
    tool = shutil.which("gpgv")
    if tool is None:
        which = "sqv is installed but not supported yet" if shutil.which("sqv") else "neither gpgv nor sqv is installed"
        raise _fail(f"cannot check Debian's OpenPGP signatures: {which} (apt-get install gpgv)", None)
    with tempfile.TemporaryDirectory(prefix="asl-verify-debian-") as tmpname:
        tmp = Path(tmpname)
        ring_paths: list[Path] = []
        recorded_digests = set()
        for n, s in enumerate(rings):
            data = stored(s, "keyring")
            recorded_digests.add(hashlib.sha256(data).digest())
            path = tmp / f"recorded-{n}.gpg"
            path.write_bytes(dearmor(data))
            ring_paths.append(path)
        ring_note = f"the recorded keyring ({', '.join(os.path.basename(s.uri) for s in rings)})"
        if keyrings:
            ring_paths = []
            same = True
            for n, ring in enumerate(keyrings):
                try:
                    with open(ring, "rb") as handle:
                        data = handle.read(MAX_KEYRING + 1)
                except OSError as exc:
                    raise UsageError(f"{ring}: cannot read the keyring: {exc.strerror}") from None
                if len(data) > MAX_KEYRING:
                    raise UsageError(f"{ring}: larger than {MAX_KEYRING} bytes: not a keyring")
                same = same and hashlib.sha256(data).digest() in recorded_digests
                path = tmp / f"auditor-{n}.gpg"
                path.write_bytes(dearmor(data))
                ring_paths.append(path)
            ring_note = ("your keyring(s), identical to the recorded one" if same and rings else
                         "your keyring(s) (the recorded keyring differs: the build trusted another file)")
        signed: dict[str, bytes] = {}
        fingerprints: set[str] = set()
        unique = list({s.uri: s for s in releases}.values())
        jobs = [(s, stored(s, "InRelease"), tmp / f"release-{n}") for n, s in enumerate(unique)]
        with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), 8))) as pool:  # gpgv runs outside the GIL
            outcomes = list(pool.map(lambda job: _try_gpgv(job[1], ring_paths, job[2], tool), jobs))
        for (s, _data, _dir), outcome in zip(jobs, outcomes, strict=True):
            if isinstance(outcome, VerificationError):
                raise _fail(f"{s.uri}: {str(outcome).removeprefix('[debian] ')}", s.seq)
            signed[s.uri] = outcome[0]
            fingerprints.update(outcome[1])
    index_bytes: dict[str, bytes] = {}
    for s in indexes:
        if s.via is None or s.via not in signed:
            raise _fail(f"index {s.uri} names no verified InRelease (via {s.via})", s.seq)
        base = s.via[: -len("InRelease")]
        if not s.uri.startswith(base):
            raise _fail(f"index {s.uri} does not lie below {base}", s.seq)
        listed = _release_sha256(signed[s.via]).get(s.uri[len(base):])
        if listed != s.sha256:
            raise _fail(f"index {s.uri}: sha256 {s.sha256.hex()} is not the one its signed InRelease lists "
                        f"({listed.hex() if listed else 'not listed'})", s.seq)
        index_bytes[s.uri] = stored(s, "index")
    listings: dict[str, dict[str, bytes | None]] = {}
    for via, index in index_bytes.items():
        repo = via.split("dists/", 1)[0]
        listings[via] = index_sha256(index, {s.uri[len(repo):] for s in debs if s.via == via})
    for s in debs:
        if s.via not in index_bytes:
            raise _fail(f"package {s.uri} names no verified index (via {s.via})", s.seq)
        repo = s.via.split("dists/", 1)[0]
        if not s.uri.startswith(repo):
            raise _fail(f"package {s.uri} does not lie below the repository {repo}", s.seq)
        listed = listings[s.via].get(s.uri[len(repo):])
        if listed != s.sha256:
            raise _fail(f"package {s.uri}: sha256 {s.sha256.hex()} is not the one its index lists "
                        f"({listed.hex() if listed else 'not listed'})", s.seq)
    return (f"{len(signed)} InRelease signature(s) good (gpgv, {ring_note}; signing keys "
            f"{', '.join(sorted(f[-16:] for f in fingerprints))}), {len(indexes)} index digest(s) as the signed "
            f"InRelease lists, {len(debs)} .deb digest(s) as their index lists")
