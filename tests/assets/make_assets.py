"""Regenerate ``tests/assets/``: named good and broken provenance chains and step records.

    python -m tests.assets.make_assets [--out DIR]      (default: tests/assets)

Every case is a provenance directory ``chains/<case>/`` (``chain.cbor``, ``checkpoint.cose``,
``objects/``); a case whose payload breaks docs/FORMAT.md section 5 also has its record alone as
``records/<case>.cbor``. ``cases.json`` says what ``asl-verify chain`` must answer for each: exit
code, failed check, record number and the field named in the message. The output is deterministic
(Ed25519 signatures are), so ``tests/unit/test_assets.py`` regenerates it and compares.

TEST-ONLY KEYS: both signing keys are derived from the fixed, public seeds below; only their public
halves are written (``keys/*.pub``). Anyone can sign with them: never trust them outside these tests.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from asl_capture import cose, dcbor
from asl_capture.format import (
    CHECKPOINT_CONTENT_TYPE,
    STEP_CONTENT_TYPE,
    Changes,
    Checkpoint,
    Entry,
    Host,
    Inputs,
    Log,
    Manifest,
    Outputs,
    StepRecord,
)

HERE = Path(__file__).resolve().parent
TRUSTED = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"asl-capture TEST-ONLY key: trusted").digest())
OTHER = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"asl-capture TEST-ONLY key: other").digest())
CHAIN_ID = bytes.fromhex("a51c" * 8)
Value = dict[str, dcbor.Value]


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def manifest(*entries: Entry) -> Manifest:
    return Manifest(roots=(b".",), entries=entries)


_DIR = Entry(b".", "d", 0o755, 0, None)
_SRC = Entry(b"src.txt", "f", 0o644, 4, sha(b"src\n"))
_OUT = Entry(b"out.txt", "f", 0o644, 4, sha(b"out\n"))


@dataclass
class Provenance:
    """A provenance directory being made: record values (tampered freely), objects, how to sign."""

    values: list[Value]
    objects: dict[bytes, bytes] = field(default_factory=dict)
    keys: dict[int, Ed25519PrivateKey] = field(default_factory=dict)
    content_types: dict[int, str] = field(default_factory=dict)
    #: called with (index, value) after ``prev`` is set and before signing: tampering that must
    #: survive linkage (a wrong prev, another chain id)
    late: Callable[[int, Value], None] = lambda _i, _v: None
    checkpoint: Callable[[list[bytes]], bytes | None] | None = None
    items: list[bytes] = field(default_factory=list)

    def put(self, data: bytes) -> bytes:
        self.objects[sha(data)] = data
        return sha(data)

    def seal(self) -> list[bytes]:
        """Sign every record in order, each linked to the previous item's bytes."""
        self.items = []
        for index, original in enumerate(self.values):
            value = copy.deepcopy(original)
            value["seq"] = index
            value["prev"] = sha(self.items[-1]) if self.items else None
            self.late(index, value)
            payload = dcbor.encode(value)
            key = self.keys.get(index, TRUSTED)
            ctype = self.content_types.get(index, STEP_CONTENT_TYPE)
            self.items.append(cose.sign(payload, key, content_type=ctype))
        return self.items

    def write(self, out: Path, *, chain_bytes: bytes | None = None) -> None:
        items = self.items or self.seal()
        out.mkdir(parents=True)
        (out / "chain.cbor").write_bytes(b"".join(items) if chain_bytes is None else chain_bytes)
        made = self.checkpoint(items) if self.checkpoint is not None else default_checkpoint(items)
        if made is not None:
            (out / "checkpoint.cose").write_bytes(made)
        for digest, data in sorted(self.objects.items()):
            path = out / "objects" / "sha256" / digest.hex()[:2] / digest.hex()[2:]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


def checkpoint_for(items: list[bytes], seq: int, *, key: Ed25519PrivateKey = TRUSTED,
                   payload: bytes | None = None) -> bytes:
    body = Checkpoint(chain=CHAIN_ID, seq=seq, digest=sha(items[seq])).to_cbor() if payload is None else payload
    return cose.sign(body, key, content_type=CHECKPOINT_CONTENT_TYPE)


def default_checkpoint(items: list[bytes]) -> bytes | None:
    return checkpoint_for(items, len(items) - 1) if items else None


def good() -> Provenance:
    """Three records: two inner steps of a session, then the session's own record."""
    prov = Provenance(values=[])
    empty_log, hello = prov.put(b""), prov.put(b"hello\n")
    before, after = manifest(_DIR), manifest(_DIR, _OUT)
    changes = Changes(created=(_OUT,), modified=(), deleted=())
    inputs = Inputs(manifest=prov.put(manifest(_DIR, _SRC).encode()), entries=2, files=1)
    outputs = Outputs(manifest=prov.put(after.encode()), before=prov.put(before.encode()),
                      changes=prov.put(changes.encode()), entries=2, files=1, created=1, modified=0, deleted=0)
    unchanged = Outputs(manifest=prov.put(before.encode()), before=prov.put(before.encode()),
                        changes=prov.put(Changes(created=(), modified=(), deleted=()).encode()),
                        entries=1, files=0, created=0, modified=0, deleted=0)
    host = Host(hostname="builder", kernel="6.1.0", machine="x86_64", tool="asl-capture 0.1.0", python="3.11.2")
    session = bytes.fromhex("5e55" * 8)

    def record(seq: int, step: str, run: bytes, parent: bytes | None, outs: Outputs, stdout: bytes) -> Value:
        return StepRecord(
            chain=CHAIN_ID, seq=seq, prev=None, id=run, parent=parent, step=step, argv=(step, "--flag"),
            cwd="/build", env={"PATH": "/usr/bin:/bin", "API_TOKEN": None}, started=1_700_000_000_000_000_000 + seq,
            finished=1_700_000_001_000_000_000 + seq, exit=0, status="ok", inputs=inputs, outputs=outs,
            stdout=Log(digest=stdout, size=6 if stdout == hello else 0), stderr=Log(digest=empty_log, size=0),
            host=host, source_date_epoch=1_700_000_000,
        ).to_value()

    prov.values = [
        record(0, "inner-a", bytes.fromhex("a0" * 16), session, outputs, hello),
        record(1, "inner-b", bytes.fromhex("b1" * 16), session, unchanged, empty_log),
        record(2, "session", session, None, unchanged, empty_log),
    ]
    return prov


@dataclass(frozen=True)
class Expect:
    """What ``asl-verify chain`` must answer for a case."""

    exit: int
    check: str | None
    record: int | None
    #: text the message must contain (the field and what is wrong with it)
    message: str


CASES: dict[str, tuple[Callable[[Path], None], Expect]] = {}


def case(name: str, expect: Expect) -> Callable[[Callable[[Path], None]], Callable[[Path], None]]:
    def register(make: Callable[[Path], None]) -> Callable[[Path], None]:
        CASES[name] = (make, expect)
        return make
    return register


@case("good", Expect(0, None, None, "VERIFIED"))
def _good(out: Path) -> None:
    good().write(out)


# --- check 3, payload: a field breaking FORMAT.md section 5, signed by the trusted key -------------

#: case name -> (field path in record 1, bad value, text the message must contain)
PAYLOAD: dict[str, tuple[tuple[str | int, ...], dcbor.Value, str]] = {
    "argv-not-text": (("argv",), [1, None], "argv[0]: expected text or bytes, found uint"),
    "env-value-not-text": (("env",), {"A": 5}, "env.A: expected text or bytes, found uint"),
    "host-empty": (("host",), {}, "host.hostname: missing"),
    "inputs-without-counts": (("inputs",), {"manifest": sha(b"x")}, "inputs.entries: missing"),
    "sources-not-maps": (("sources",), ["x"], "sources[0]: expected a map, found text"),
    "version-2": (("v",), 2, "v: version 2 is not 1"),
    "unknown-field": (("note",), "hi", "note: unknown field"),
    "status-unknown": (("status",), "success", "status: 'success' is not one of ok, failed, interrupted"),
    "cwd-utf8-as-bytes": (("cwd",), b"/build", "cwd: bytes that are valid UTF-8 must be recorded as text"),
    "seq-negative": (("seq",), -1, "seq: expected uint, found negative int"),
    "prev-short": (("prev",), b"\x00" * 31, "prev: expected 32 bytes, found 31"),
    "parent-short": (("parent",), b"\x00" * 15, "parent: expected 16 bytes, found 15"),
    "stdout-size-negative": (("stdout", "size"), -6, "stdout.size: expected uint, found negative int"),
    "outputs-digest-short": (("outputs", "changes"), b"\x00" * 3, "outputs.changes: expected 32 bytes, found 3"),
    "host-python-null": (("host", "python"), None, "host.python: expected text, found null"),
    "vcs-not-git": (("vcs",), {"type": "hg", "commit": "c", "tree": "t", "dirty": False},
                    "vcs.type: 'hg' is not one of git"),
    "signals-negative": (("signals",), [-15], "signals[0]: expected uint, found negative int"),
    "source-digest-hex": (("sources",), [{"uri": "u", "sha256": "ab" * 32, "kind": "deb"}],
                          "sources[0].sha256: expected 32 bytes, found text"),
    "error-not-text": (("error",), ["x"], "error: expected text or bytes, found array"),
}


def _set(value: Value, path: tuple[str | int, ...], bad: dcbor.Value) -> None:
    target: dcbor.Value = value
    for part in path[:-1]:
        target = target[part]  # type: ignore[index]
    target[path[-1]] = bad  # type: ignore[index]


def _payload_case(name: str, path: tuple[str | int, ...], bad: dcbor.Value) -> Callable[[Path], None]:
    def make(out: Path) -> None:
        prov = good()
        if path[0] == "seq" or path[0] == "prev":  # set after linkage, so that this field is what is wrong
            prov.late = lambda i, v: _set(v, path, bad) if i == 1 else None
        else:
            _set(prov.values[1], path, bad)
        prov.write(out)
        records = out.parent.parent / "records"
        records.mkdir(exist_ok=True)
        payload = cose.parse(dcbor.decode(prov.items[1], tags=cose.COSE_TAGS)).payload
        (records / f"{name}.cbor").write_bytes(payload)
    return make


for _name, (_path, _bad, _text) in PAYLOAD.items():
    CASES[_name] = (_payload_case(_name, _path, _bad), Expect(1, "payload", 1, _text))


# --- check 1, decode ---------------------------------------------------------------------------------

@case("torn-tail", Expect(1, "decode", 3, "torn tail of 40 bytes"))
def _torn(out: Path) -> None:
    prov = good()
    items = prov.seal()
    prov.write(out, chain_bytes=b"".join(items) + items[2][:40])


@case("not-cose", Expect(1, "decode", 1, "item is not a tagged COSE_Sign1"))
def _not_cose(out: Path) -> None:
    prov = good()
    items = prov.seal()
    prov.write(out, chain_bytes=items[0] + dcbor.encode(prov.values[1]) + items[2])


@case("empty-chain", Expect(1, "decode", None, "chain is empty"))
def _empty(out: Path) -> None:
    prov = good()
    prov.checkpoint = lambda _items: None
    prov.write(out, chain_bytes=b"")


# --- check 2, signature ------------------------------------------------------------------------------

@case("untrusted-key", Expect(1, "signature", 1, "signed by untrusted key id"))
def _untrusted(out: Path) -> None:
    prov = good()
    prov.keys[1] = OTHER
    prov.write(out)


@case("bad-signature", Expect(1, "signature", 2, "Ed25519 signature does not verify"))
def _bad_signature(out: Path) -> None:
    prov = good()
    items = prov.seal()
    items[2] = items[2][:-1] + bytes([items[2][-1] ^ 1])
    prov.write(out)


@case("checkpoint-content-type-on-record", Expect(1, "signature", 0, "is not a step record"))
def _record_ctype(out: Path) -> None:
    prov = good()
    prov.content_types[0] = CHECKPOINT_CONTENT_TYPE
    prov.write(out)


# --- check 4, linkage --------------------------------------------------------------------------------

@case("record-removed", Expect(1, "linkage", 1, "seq is 2, expected 1"))
def _removed(out: Path) -> None:
    prov = good()
    items = prov.seal()
    prov.write(out, chain_bytes=items[0] + items[2])


@case("prev-mismatch", Expect(1, "linkage", 2, "prev does not match"))
def _prev(out: Path) -> None:
    prov = good()
    prov.late = lambda i, v: v.update(prev=sha(b"elsewhere")) if i == 2 else None
    prov.write(out)


@case("other-chain-id", Expect(1, "linkage", 1, "chain id"))
def _other_chain(out: Path) -> None:
    prov = good()
    prov.values[1]["chain"] = bytes(16)
    prov.write(out)


@case("records-cut-from-end", Expect(1, "linkage", None, "vouches for seq 2 but the chain ends at seq 1"))
def _cut(out: Path) -> None:
    prov = good()
    items = prov.seal()
    prov.write(out, chain_bytes=items[0] + items[1])


@case("checkpoint-missing", Expect(1, "linkage", None, "no signed checkpoint"))
def _checkpoint_missing(out: Path) -> None:
    prov = good()
    prov.checkpoint = lambda _items: None
    prov.write(out)


@case("checkpoint-untrusted", Expect(1, "linkage", None, "checkpoint.cose: signed by untrusted key id"))
def _checkpoint_untrusted(out: Path) -> None:
    prov = good()
    prov.checkpoint = lambda items: checkpoint_for(items, 2, key=OTHER)
    prov.write(out)


@case("checkpoint-seq-not-uint", Expect(1, "linkage", None, "seq: expected uint, found text"))
def _checkpoint_payload(out: Path) -> None:
    prov = good()
    bad = dcbor.encode({"v": 1, "chain": CHAIN_ID, "seq": "2", "digest": sha(b"x")})
    prov.checkpoint = lambda items: checkpoint_for(items, 2, payload=bad)
    prov.write(out)


@case("checkpoint-wrong-digest", Expect(1, "linkage", None, "digest of record 1 differs"))
def _checkpoint_digest(out: Path) -> None:
    prov = good()
    bad = Checkpoint(chain=CHAIN_ID, seq=1, digest=sha(b"x")).to_cbor()
    prov.checkpoint = lambda items: checkpoint_for(items, 1, payload=bad)
    prov.write(out)


# --- check 5, objects --------------------------------------------------------------------------------

@case("object-missing", Expect(1, "objects", 0, "stdout.digest: object"))
def _object_missing(out: Path) -> None:
    prov = good()
    del prov.objects[sha(b"hello\n")]
    prov.write(out)


@case("object-corrupt", Expect(1, "objects", 0, "does not match its digest"))
def _object_corrupt(out: Path) -> None:
    prov = good()
    prov.objects[sha(b"hello\n")] = b"HELLO\n"
    prov.write(out)


def _with_inputs(prov: Provenance, data: bytes, entries: int = 2, files: int = 1) -> None:
    digest = prov.put(data)
    for value in prov.values:
        value["inputs"] = {"manifest": digest, "entries": entries, "files": files}


@case("manifest-bad-kind", Expect(1, "objects", 0, "inputs.manifest: not a version-1 tree manifest: "
                                                   "entries[1][1]: 'x' is not one of"))
def _manifest_kind(out: Path) -> None:
    prov = good()
    value = manifest(_DIR, _SRC).to_value()
    value["entries"][1][1] = "x"  # type: ignore[index]
    _with_inputs(prov, dcbor.encode(value))
    prov.write(out)


@case("manifest-unsorted", Expect(1, "objects", 0, "entries[1]: paths not sorted"))
def _manifest_unsorted(out: Path) -> None:
    prov = good()
    _with_inputs(prov, manifest(_SRC, _DIR).encode())
    prov.write(out)


@case("manifest-symlink-size", Expect(1, "objects", 0, "entries[1][3]: size 9 is not the target's length 6"))
def _manifest_link(out: Path) -> None:
    prov = good()
    _with_inputs(prov, manifest(_DIR, Entry(b"link", "l", 0o777, 9, b"target")).encode(), files=0)
    prov.write(out)


@case("manifest-count-mismatch", Expect(1, "objects", 0, "inputs: entries 5, files 1, but the manifest lists 2"))
def _manifest_count(out: Path) -> None:
    prov = good()
    _with_inputs(prov, manifest(_DIR, _SRC).encode(), entries=5)
    prov.write(out)


@case("changes-count-mismatch", Expect(1, "objects", 0, "outputs: created 0, modified 0, deleted 0, "
                                                        "but the change list has 1, 0, 0"))
def _changes_count(out: Path) -> None:
    prov = good()
    prov.values[0]["outputs"]["created"] = 0  # type: ignore[index,call-overload]
    prov.write(out)


@case("changes-not-a-change-list", Expect(1, "objects", 0, "outputs.changes: not a version-1 change list"))
def _changes_bad(out: Path) -> None:
    prov = good()
    _set(prov.values[0], ("outputs", "changes"), prov.values[0]["outputs"]["manifest"])  # type: ignore[index,call-overload]
    prov.write(out)


# --- check 6, status ---------------------------------------------------------------------------------

@case("step-failed", Expect(1, "status", 1, "step 'inner-b' is failed (exit 2)"))
def _failed(out: Path) -> None:
    prov = good()
    prov.values[1].update(status="failed", exit=2)
    prov.write(out)


@case("session-unfinished", Expect(1, "status", 0, "never finished"))
def _unfinished(out: Path) -> None:
    prov = good()
    prov.values = prov.values[:2]
    prov.write(out)


@case("duplicate-id", Expect(1, "status", 1, "repeats record 0"))
def _duplicate(out: Path) -> None:
    prov = good()
    prov.values[1]["id"] = prov.values[0]["id"]
    prov.write(out)


def public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def generate(out: Path) -> None:
    """Write every case, the expectations and the public keys under ``out``."""
    for sub in ("chains", "records", "keys"):
        shutil.rmtree(out / sub, ignore_errors=True)
    (out / "keys").mkdir(parents=True)
    (out / "keys" / "trusted.pub").write_bytes(public_pem(TRUSTED))
    (out / "keys" / "other.pub").write_bytes(public_pem(OTHER))
    (out / "records").mkdir()
    for name, (make, _expect) in sorted(CASES.items()):
        make(out / "chains" / name)
    expectations = {name: expect.__dict__ for name, (_make, expect) in sorted(CASES.items())}
    (out / "cases.json").write_text(json.dumps(expectations, indent=1, sort_keys=True) + "\n")
    (out / "records" / "good.cbor").write_bytes(dcbor.encode(good().values[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=HERE)
    generate(parser.parse_args().out)


if __name__ == "__main__":
    main()
