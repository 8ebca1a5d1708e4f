"""``asl-verify show``: the records of a chain in human terms (and as JSON-ready values).

Times are UTC ISO 8601, digests hex, durations in seconds, sources counted by kind, the environment
as recorded (names whose values were withheld show ``(not recorded)``). Without trusted keys the
records are decoded but their signatures are not checked, and the caller says so.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asl_capture import chain, cose, dcbor, envpolicy, safeio
from asl_capture.errors import CborError, ChainError, UsageError, VerificationError
from asl_capture.format import StepRecord
from asl_capture.store import ProvenanceDir

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def load(directory: Path, trusted: dict[bytes, Ed25519PublicKey] | None) -> tuple[list[StepRecord], bool]:
    """The records of the chain, and whether they were verified (with ``trusted``) or only decoded.

    Raises:
        StoreError: no provenance directory or chain there.
        VerificationError: with ``trusted``, the chain does not verify; without, a record cannot be decoded.
    """
    if trusted is not None:
        from asl_capture.verify import verify_chain

        return list(verify_chain(directory, trusted).records), True
    prov = ProvenanceDir.existing(directory)
    try:
        scan = chain.read(prov.chain)
    except ChainError as exc:
        raise VerificationError(str(exc), check="decode") from None
    records: list[StepRecord] = []
    for index, item in enumerate(scan.items):
        try:
            records.append(StepRecord.from_cbor(cose.parse(item.value).payload))
        except (CborError, VerificationError) as exc:
            raise VerificationError(str(exc), check="decode", record=index) from None
    return records, False


def utc(ns: int) -> str:
    """Nanoseconds since the epoch as UTC ISO 8601 (milliseconds)."""
    moment = datetime.datetime.fromtimestamp(ns / 1e9, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def jsonable(value: dcbor.Value) -> Any:
    """CBOR values as JSON: byte strings as hex."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, dcbor.Tag):
        return {"tag": value.tag, "value": jsonable(value.value)}
    return value


def _kinds(record: StepRecord) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in record.sources or ():
        counts[s.kind] = counts.get(s.kind, 0) + 1
    return counts


def summary(record: StepRecord, seqs: dict[bytes, int]) -> dict[str, Any]:
    """One record as JSON-ready values in human terms."""
    b = record.to_value()
    out: dict[str, Any] = {
        "seq": record.seq, "step": jsonable(record.step), "status": record.status, "exit": record.exit,
        "id": record.id.hex(), "parent_seq": seqs.get(record.parent) if record.parent else None,
        "started": utc(record.started), "finished": utc(record.finished),
        "duration_s": round((record.finished - record.started) / 1e9, 3),
        "argv": jsonable(b["argv"]), "cwd": jsonable(b["cwd"]), "env": jsonable(b["env"]),
        "inputs": jsonable(b["inputs"]), "outputs": jsonable(b["outputs"]),
        "stdout": jsonable(b["stdout"]), "stderr": jsonable(b["stderr"]), "host": jsonable(b["host"]),
        "sources_by_kind": _kinds(record),
        "tools": [{"package": t.name, "version": t.version, "uri": t.uri, "sha256": t.sha256.hex()}
                  for t in record.sources or () if t.kind == "tool"],
        "attached": [{"path": os.fsdecode(a.path) if isinstance(a.path, bytes) else a.path, "sha256": a.digest.hex(),
                      "size": a.size} for a in record.attached or ()],
    }
    for key in ("vcs", "error", "signals", "user"):
        if key in b:
            out[key] = jsonable(b[key])
    sde = b.get("source_date_epoch")
    if isinstance(sde, int):
        out["source_date_epoch"] = {"value": sde, "utc": utc(sde * 10**9).replace(".000Z", "Z")}
    return out


def lines(s: dict[str, Any], *, full: bool) -> list[str]:
    """Human lines for one record summary; ``full`` adds the environment and every attachment."""
    parent = f", inside record {s['parent_seq']}" if s["parent_seq"] is not None else ""
    out = [f"record {s['seq']}: {s['step']}  {s['status']} (exit {s['exit']}){parent}",
           f"  when      {s['started']} .. {s['finished']} ({s['duration_s']:.3f} s)",
           f"  command   {' '.join(str(a) for a in s['argv'])}",
           f"  cwd       {s['cwd']}"]
    i, o = s["inputs"], s["outputs"]
    out.append(f"  inputs    {i.get('entries')} paths, {i.get('files')} files (manifest {i.get('manifest')})")
    out.append(f"  outputs   {o.get('entries')} paths, {o.get('files')} files; created {o.get('created')}, "
               f"modified {o.get('modified')}, deleted {o.get('deleted')} (manifest {o.get('manifest')})")
    out.append(f"  logs      stdout {s['stdout'].get('size')} bytes, stderr {s['stderr'].get('size')} bytes")
    if "user" in s:
        u = s["user"]
        root = "  (as root: the step could reach the key holder)" if u.get("uid") == 0 else ""
        out.append(f"  ran as    {u.get('name')} (uid {u.get('uid')}, gid {u.get('gid')}){root}")
    h = s["host"]
    out.append(f"  host      {h.get('hostname')}, {h.get('machine')}, kernel {h.get('kernel')}, {h.get('tool')}, "
               f"Python {h.get('python')}")
    if "source_date_epoch" in s:
        out.append(f"  SOURCE_DATE_EPOCH {s['source_date_epoch']['value']} ({s['source_date_epoch']['utc']})")
    if "vcs" in s:
        v = s["vcs"]
        out.append(f"  source    git commit {v.get('commit')} tree {v.get('tree')}"
                   f"{' (uncommitted changes)' if v.get('dirty') else ' (clean)'}")
    if s["sources_by_kind"]:
        counted = ", ".join(f"{n} {k}" for k, n in sorted(s["sources_by_kind"].items()))
        out.append(f"  sources   {sum(s['sources_by_kind'].values())} pinned: {counted}")
    if s["tools"]:
        # the builder step's pinned host tools (SLSA builder dependencies): package and version each
        out.append(f"  builder   {len(s['tools'])} tool packages: "
                   + ", ".join(f"{t['package']} {t['version']}" for t in s["tools"]))
        if full:
            out.extend(f"            {t['uri']} files sha256 {t['sha256']}" for t in s["tools"])
    if s["attached"]:
        out.append(f"  attached  {len(s['attached'])} file(s), "
                   f"{sum(a['size'] for a in s['attached'])} bytes stored as objects")
        if full:
            out.extend(f"            {a['path']} ({a['size']} bytes, sha256 {a['sha256']})" for a in s["attached"])
    if "error" in s:
        out.append(f"  error     {s['error']}")
    if full:
        out.append("  env")
        for name, value in sorted(s["env"].items()):
            out.append(f"    {name}={value}" if value is not None else f"    {name} (not recorded)")
    return out


#: A stored log is searched for credentials in pieces of this many bytes, each overlapping the next
#: by :data:`LOG_OVERLAP` so that a credential across two pieces is still found.
LOG_CHUNK = 1 << 20
LOG_OVERLAP = 4096


def log_warnings(directory: Path, record: StepRecord) -> list[str]:
    """A warning for each stored log (stdout, stderr) of ``record`` holding text that the masking
    rules (docs/FORMAT.md section 7) would have masked in a record field: logs are stored unchanged,
    so a step that printed a credential published it. The text itself is never repeated.

    A log that cannot be read is named too (``asl-verify chain`` says why).
    """
    prov = ProvenanceDir.existing(directory)
    out: list[str] = []
    for stream, log in (("stdout", record.stdout), ("stderr", record.stderr)):
        if log.size == 0:
            continue
        try:
            rule = _log_rule(prov.object_path(log.digest))
        except OSError as exc:
            out.append(f"record {record.seq}: its stored {stream} could not be searched for credentials: "
                       f"{safeio.describe(exc)}")
            continue
        if rule is not None:
            out.append(f"record {record.seq}: its stored {stream} holds text the masking rules would have masked "
                       f"({rule}); logs are stored unchanged: check it before publishing this chain")
    return out


def _log_rule(path: Path) -> str | None:
    fd, _size = safeio.open_regular(path, what="object")
    try:
        tail = b""
        while True:
            piece = os.read(fd, LOG_CHUNK)
            if not piece:
                return None
            rule = envpolicy.masking_rule((tail + piece).decode("utf-8", "replace"))
            if rule is not None:
                return rule
            tail = piece[-LOG_OVERLAP:]
    finally:
        os.close(fd)


def select(records: list[StepRecord], seq: int | None) -> list[StepRecord]:
    """All records, or the one with ``seq``.

    Raises:
        UsageError: no record has that seq.
    """
    if seq is None:
        return records
    if not 0 <= seq < len(records):
        raise UsageError(f"no record {seq}: the chain holds records 0..{len(records) - 1}")
    return [records[seq]]

