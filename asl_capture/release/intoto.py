"""The in-toto Statement v1 with an SLSA Provenance v1 predicate, built from the verified chain.

The mapping, field by field, is documented in ``docs/RELEASE.md`` section 5. Everything here comes
from records whose signatures were verified; nothing is taken from the environment of the publisher.
"""

from __future__ import annotations

import json
import time
from typing import Any

from asl_capture.format import StepRecord

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
#: Our SLSA buildType: how to read externalParameters / internalParameters (docs/RELEASE.md section 5).
BUILD_TYPE = "urn:asl-capture:buildtype:pipeline:v1"
BUILDER_ID_PREFIX = "urn:asl-capture:builder:key:"


def _rfc3339(ns: int) -> str:
    seconds, rest = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest // 1000:06d}Z"


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "backslashreplace")


def _dependencies(records: tuple[StepRecord, ...]) -> list[dict[str, Any]]:
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        if record.vcs is not None:
            seen.setdefault(("vcs", record.vcs.commit), {
                "name": "source", "digest": {"gitCommit": record.vcs.commit},
                "annotations": {"tree": record.vcs.tree, "dirty": record.vcs.dirty}})
        for source in record.sources or ():
            dep: dict[str, Any] = {"uri": source.uri, "digest": {"sha256": source.sha256.hex()}}
            if source.name is not None:
                dep["name"] = source.name
            notes: dict[str, Any] = {"kind": source.kind}
            for key, value in (("version", source.version), ("via", source.via), ("size", source.size)):
                if value is not None:
                    notes[key] = value
            dep["annotations"] = notes
            seen.setdefault((source.uri, source.sha256.hex()), dep)
    return [seen[k] for k in sorted(seen)]


def statement(
    *, iso_name: str, iso_sha256: bytes, records: tuple[StepRecord, ...], head_seq: int, head_digest: bytes,
    build_kids: tuple[bytes, ...], image: bytes, name: str, version: str, byproducts: list[tuple[str, bytes]],
) -> dict[str, Any]:
    """The in-toto Statement v1 for the ISO (see ``docs/RELEASE.md`` for the mapping)."""
    outer = records[-1]  # the head: the outermost capture of the build (verification made sure it is top-level)
    recorded_env = {k: _text(v) for k, v in outer.env.items() if v is not None}
    external: dict[str, Any] = {
        "argv": [_text(a) for a in outer.argv],
        "step": _text(outer.step),
        "image": {"name": name, "version": version},
    }
    if outer.vcs is not None:
        external["source"] = outer.vcs.to_value()
    internal: dict[str, Any] = {
        "chain": records[0].chain.hex(),
        "head": {"seq": head_seq, "sha256": head_digest.hex()},
        "env": recorded_env,
        "steps": [{"seq": r.seq, "step": _text(r.step), "id": r.id.hex(), "status": r.status} for r in records],
    }
    if outer.source_date_epoch is not None:
        internal["sourceDateEpoch"] = outer.source_date_epoch
    predicate: dict[str, Any] = {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": external,
            "internalParameters": internal,
            "resolvedDependencies": _dependencies(records),
        },
        "runDetails": {
            "builder": {
                "id": BUILDER_ID_PREFIX + ",".join(k.hex() for k in build_kids),
                "version": {"asl-capture": outer.host.tool},
            },
            "metadata": {
                "invocationId": outer.id.hex(),
                "startedOn": _rfc3339(outer.started),
                "finishedOn": _rfc3339(outer.finished),
            },
            "byproducts": [{"name": "asl/build-manifest.cbor", "digest": {"sha256": image.hex()}}]
            + [{"name": n, "digest": {"sha256": d.hex()}} for n, d in byproducts],
        },
    }
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": iso_name, "digest": {"sha256": iso_sha256.hex()}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }


def statement_bytes(value: dict[str, Any]) -> bytes:
    """The statement's serialized JSON (sorted keys, compact, UTF-8): the DSSE payload."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
