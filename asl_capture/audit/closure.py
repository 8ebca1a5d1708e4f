"""Check 5 of ``asl-verify iso``: every input of every step has an origin the chain vouches for.

Steps are the records nothing nests under, in chain order. An input path is closed when it equals
(type, mode, size, digest or target) the latest earlier step's output at that path, or, when no step
produced it, the entry of the *source snapshot*: the inputs manifest of the session record (the outer
``asl-capture -- ./pipeline/build.sh``) that encloses the steps, i.e. the checkout as the build found
it. What a step takes from outside the build (Debian packages) is not a file input: it is listed in
the record's ``sources`` and checked by check 6. A path an earlier step deleted is no longer an
output. Exclusion patterns recorded in manifests are reported, never silently applied.
"""

from __future__ import annotations

import os

from asl_capture.audit.compare import SHOWN
from asl_capture.audit.recorded import Recorded
from asl_capture.errors import VerificationError
from asl_capture.format import Entry, Manifest


def _under(path: bytes, roots: tuple[bytes, ...]) -> bool:
    return any(path == r or path.startswith(r.rstrip(b"/") + b"/") or r == b"." for r in roots)


def could_exclude(pattern: str, roots: tuple[bytes, ...]) -> bool:
    """Whether an exclusion pattern can have left anything under ``roots`` out of a snapshot. Patterns
    match a path's label or its name (``manifest.Excluder``): a literal pattern with a ``/`` matches one
    label only, so it excluded nothing unless that label lies at or under a root; any other pattern
    may have (what it hid is not in the manifest to say otherwise)."""
    if any(ch in pattern for ch in "*?[") or "/" not in pattern:
        return True
    label = os.fsencode(pattern.rstrip("/"))
    return any(root in (b".", label) or label.startswith(root.rstrip(b"/") + b"/") for root in roots)


def _session(recorded: Recorded, seq: int) -> int | None:
    """The top-level record enclosing step ``seq`` (None when the step ran on its own)."""
    by_id = {r.id: r.seq for r in recorded.records}
    current = recorded.records[seq]
    top: int | None = None
    while current.parent is not None and current.parent in by_id:
        top = by_id[current.parent]
        current = recorded.records[top]
    return top


def _describe(e: Entry) -> str:
    if e.kind == "f" and isinstance(e.extra, bytes):
        return f"file of {e.size} bytes, sha256 {e.extra.hex()[:16]}..., mode {e.mode:04o}"
    if e.kind == "l" and isinstance(e.extra, bytes):
        return f"symlink to {os.fsdecode(e.extra)!r}"
    return f"{e.kind} mode {e.mode:04o}"


def check_closure(recorded: Recorded) -> tuple[str, list[str]]:
    """Check 5. Returns the detail line and notes (the source snapshot's commit, exclusions).

    Raises:
        VerificationError: an input has no origin, or differs from the output or source it should be.
    """
    steps = recorded.steps()
    produced: dict[bytes, tuple[int, Entry]] = {}
    problems: list[str] = []
    notes: list[str] = []
    sources_seen: dict[int, Manifest] = {}
    counts = {"output": 0, "source": 0}
    first_problem_seq: int | None = None
    excluded: list[str] = []
    for seq in steps:
        record = recorded.records[seq]
        session = _session(recorded, seq)
        snapshot: dict[bytes, Entry] = {}
        if session is not None:
            if session not in sources_seen:
                sources_seen[session] = recorded.inputs(session)
                vcs = recorded.records[session].vcs
                if vcs is not None:
                    state = "with uncommitted changes" if vcs.dirty else "clean"
                    notes.append(f"source snapshot: record {session} ({len(sources_seen[session].entries)} paths), "
                                 f"git commit {vcs.commit} ({state})")
                else:
                    notes.append(f"source snapshot: record {session} ({len(sources_seen[session].entries)} paths); "
                                 f"no git checkout recorded, so it is tied to no commit")
            snapshot = sources_seen[session].by_path()
        for e in recorded.inputs(seq).entries:
            origin = produced.get(e.path)
            where = f"step {record.step!r} (record {seq}) input {os.fsdecode(e.path)}"
            if origin is not None:
                if origin[1] != e:
                    problems.append(f"{where}: is {_describe(e)}, but step "
                                    f"{recorded.records[origin[0]].step!r} (record {origin[0]}) produced "
                                    f"{_describe(origin[1])}")
                    first_problem_seq = first_problem_seq if first_problem_seq is not None else seq
                else:
                    counts["output"] += 1
                continue
            source = snapshot.get(e.path)
            if source is None:
                why = "" if session is not None else " (the step ran outside a recorded session: no source snapshot)"
                problems.append(f"{where}: produced by no earlier step and not in the source snapshot{why}")
                first_problem_seq = first_problem_seq if first_problem_seq is not None else seq
            elif source != e:
                problems.append(f"{where}: is {_describe(e)}, but the source snapshot has {_describe(source)}")
                first_problem_seq = first_problem_seq if first_problem_seq is not None else seq
            else:
                counts["source"] += 1
        for label, manifest in (("inputs", recorded.inputs(seq)), ("outputs", recorded.outputs(seq))):
            patterns = [p for p in manifest.exclude if could_exclude(p, manifest.roots)]
            if patterns:
                excluded.append(f"step {record.step!r} (record {seq}) excluded paths matching "
                                f"{', '.join(repr(p) for p in patterns)} from its {label}: those paths are not "
                                f"recorded, so nothing here vouches for them")
        after = recorded.outputs(seq)
        for path in [p for p in produced if _under(p, after.roots)]:
            del produced[path]
        for e in after.entries:
            produced[e.path] = (seq, e)
    if problems:
        shown = "; ".join(problems[:SHOWN]) + (f"; and {len(problems) - SHOWN} more" if len(problems) > SHOWN else "")
        raise VerificationError(f"{len(problems)} input(s) without a recorded origin: {shown}", check="closure",
                                record=first_problem_seq)
    notes.extend(f"exclusions: {line}" for line in excluded)
    for session, manifest in sources_seen.items():
        session_patterns = manifest.exclude
        if session_patterns:
            notes.append(f"exclusions: the source snapshot (record {session}) left out paths matching "
                         f"{', '.join(repr(p) for p in session_patterns)}")
        else:
            notes.append(f"exclusions: none for the source snapshot (record {session})")
    if not excluded:
        notes.append("exclusions: no step's snapshot can have excluded anything (patterns they record match no "
                     "path under their roots)")
    return (f"{len(steps)} steps: {counts['output']} input paths are earlier steps' outputs, {counts['source']} "
            f"are the source snapshot's, none without an origin; Debian packages are pinned sources (check 6)"), notes
