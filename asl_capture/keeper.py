"""The key holder's copy of the chain: the one source of truth for its head while a build runs.

The outermost capture (the one holding the key) takes the chain's append lock when it starts and
keeps it until its own record is written; every record of the build, nested ones included, is
linked, signed and appended here, never by the process that asks for it. The keeper remembers the
exact bytes of the chain as it found it and of every record and checkpoint it signed since, so it
knows what ``chain.cbor`` and ``checkpoint.cose`` must hold at every moment.

Before each append and when the build ends it compares the files with that copy. A chain a build
step wiped, cut, rewrote or extended (or replaced by a symlink or a directory) is moved aside as
evidence (``altered-<ns>/``), the chain and checkpoint are written back from memory, and the fact is
kept as a note that the outermost record carries as its error (status ``failed``): nothing
completed is lost, and ``asl-verify chain`` refuses the chain, naming that record.

Nested captures are admitted in two steps (:meth:`ChainKeeper.begin`, then
:meth:`ChainKeeper.append_nested`): the keeper hands out every run id itself, so an id is never
seen twice, a ``parent`` must be a capture that is still running, and each begun capture appends at
most one record.
"""

from __future__ import annotations

import errno
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

from asl_capture import chain, safeio
from asl_capture.chain import Head, Item
from asl_capture.cose import MessageSigner
from asl_capture.errors import AgentError, ChainError, UsageError
from asl_capture.format import StepRecord
from asl_capture.store import ProvenanceDir, fsync_dir

#: The files the keeper holds a copy of, by their name in the provenance directory.
_CHAIN, _CHECKPOINT = "chain.cbor", "checkpoint.cose"


def _read_file(path: Path, limit: int) -> bytes | None:
    """The bytes of a regular file of at most ``limit`` bytes; None when it is missing.

    Raises:
        OSError: it is not a regular file, a symlink, larger than ``limit`` or unreadable.
    """
    try:
        return safeio.read_regular(path, limit=limit, what=path.name)
    except FileNotFoundError:
        return None


class ChainKeeper:
    """Holds the chain of ``prov`` for one build; see the module docstring.

    Use :meth:`open`; call :meth:`close` when the build's record is written (or on failure).
    """

    def __init__(self, *, prov: ProvenanceDir, signer: MessageSigner, lock_fd: int, base: bytes,
                 checkpoint: bytes | None, head: Head) -> None:
        self.prov = prov
        self._signer = signer
        self._lock_fd = lock_fd
        self._expected = bytearray(base)
        self._checkpoint = checkpoint
        self._head = head
        self._mutex = threading.Lock()
        self._seen: set[bytes] = set()
        self._running: dict[bytes, bytes | None] = {}
        self._notes: list[str] = []
        self._stamps: tuple[tuple[int, ...] | None, ...] = ()
        self.own_id = self._new_id(parent=None)

    @classmethod
    def open(cls, prov: ProvenanceDir, signer: MessageSigner, *, nested_in_holder: bool = False) -> ChainKeeper:
        """Take the chain's lock (waiting for another capture holding it) and read the chain.

        ``nested_in_holder``: this capture runs inside a build whose key holder keeps this very
        chain (it would wait for its own ancestor forever), so a held lock is refused at once.

        Raises:
            UsageError: ``nested_in_holder`` and the lock is held.
            TornTailError: the chain ends with a partial record.
            ChainError: the chain or its lock cannot be opened or read.
        """
        try:
            lock_fd = chain.lock(prov, wait=not nested_in_holder)
        except BlockingIOError:
            raise UsageError(f"{prov.root}: the enclosing capture holds this chain and signs its nested steps; "
                             f"drop --key/--ephemeral-key to sign through it, or record into another "
                             f"provenance directory") from None
        try:
            fd = chain.open_for_append(prov)
            try:
                head = chain.head_of(prov, fd)
                chain.complete_interrupted(prov, head)  # a crash between a record and its checkpoint
                base = os.pread(fd, head.end, 0) if head.end else b""
            finally:
                os.close(fd)
            try:
                checkpoint = _read_file(prov.checkpoint, chain.CHECKPOINT_LIMIT)
            except OSError as exc:
                raise ChainError(f"{prov.checkpoint}: cannot read checkpoint: {safeio.describe(exc)}") from None
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(prov=prov, signer=signer, lock_fd=lock_fd, base=base, checkpoint=checkpoint, head=head)

    def close(self) -> None:
        """Release the chain's lock (idempotent)."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # --- nested captures -------------------------------------------------------------------------------

    def _new_id(self, *, parent: bytes | None) -> bytes:
        while True:
            run_id = secrets.token_bytes(16)
            if run_id not in self._seen:
                self._seen.add(run_id)
                self._running[run_id] = parent
                return run_id

    def begin(self, parent: bytes) -> bytes:
        """Admit a nested capture whose enclosing capture is ``parent``; return its new run id.

        Raises:
            AgentError: ``parent`` is not a capture of this build that is still running.
        """
        with self._mutex:
            if parent not in self._running:
                raise AgentError(f"refused: parent {parent.hex()} is not a capture of this build that is still running")
            return self._new_id(parent=parent)

    def _unfinished_note(self) -> list[str]:
        """A note naming the nested captures that began but appended no record (killed, or still running)."""
        ids = [run_id for run_id in self._running if run_id != self.own_id]
        if not ids:
            return []
        shown = ", ".join(i.hex() for i in ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
        return [f"{len(ids)} nested capture(s) of this build began but appended no record (ids {shown}): "
                f"a step ran unrecorded, or was still running when the build ended"]

    def append_nested(self, draft: StepRecord, *, present: Callable[[bytes], bool]) -> tuple[StepRecord, Item]:
        """Append the record of a nested capture that :meth:`begin` admitted; its chain fields are
        ignored (set here). ``present`` tells whether an object the record names is in the store.

        Raises:
            AgentError: the record is not of a running nested capture of this build, names a build
                key, or names an object that is not stored.
            ChainError, CheckpointError: as :func:`asl_capture.chain.append_at`.
        """
        if draft.ephemeral_key is not None:
            raise AgentError("refused: a nested record cannot name a build key")
        missing = [d.hex() for d in _objects_of(draft) if not present(d)]
        if missing:
            raise AgentError(f"refused: the record names object(s) that were not stored: {', '.join(missing[:3])}")
        with self._mutex:
            if draft.id == self.own_id or draft.id not in self._running:
                raise AgentError(f"refused: record id {draft.id.hex()} is not a nested capture of this build that "
                                 f"is still running (ids are handed out once, by the key holder)")
            if draft.parent is None or self._running[draft.id] != draft.parent:
                raise AgentError("refused: the record's parent is not the capture that began it")
            result = self._append(draft)
            del self._running[draft.id]
            return result

    def append_own(self, build: Callable[[tuple[str, ...]], StepRecord]) -> tuple[StepRecord, Item]:
        """Append the key holder's own record, ``build(notes)`` where ``notes`` names every alteration
        of the chain found during the build and the nested captures that never appended (the record
        should fail when there is any).

        Raises:
            ChainError, CheckpointError, FormatError: as :func:`asl_capture.chain.append_at`.
        """
        with self._mutex:
            self._check(full=True)
            draft = build(tuple(self._notes + self._unfinished_note()))
            if draft.id != self.own_id:
                raise ChainError("the key holder's record must carry its own run id")
            result = self._append(draft, checked=True)
            self._running.pop(self.own_id, None)
            return result

    # --- the chain -------------------------------------------------------------------------------------

    def _append(self, draft: StepRecord, *, checked: bool = False) -> tuple[StepRecord, Item]:
        if not checked:
            self._check()
        fd = chain.open_for_append(self.prov)
        try:
            if os.fstat(fd).st_size != len(self._expected):  # changed since the check: once more
                os.close(fd)
                fd = -1
                self._check()
                fd = chain.open_for_append(self.prov)
            record, item, checkpoint = chain.append_at(self.prov, fd, self._head, self._signer, draft,
                                                       new_chain_id=lambda: secrets.token_bytes(16))
        finally:
            if fd >= 0:
                os.close(fd)
        self._expected += item.raw
        self._head = chain.head_after(item)
        self._stamps = self._stamp()
        if checkpoint is None:  # the record is durable; the checkpoint on disk is still the previous one
            raise chain.checkpoint_failed(self.prov, record)
        self._checkpoint = checkpoint
        return record, item

    def _stamp(self) -> tuple[tuple[int, ...] | None, ...]:
        """What the kernel says of the two files (inode, size, mtime, ctime): a write to either, a
        rename or a new file over it changes it; only root setting the clock could put it back."""
        stamps: list[tuple[int, ...] | None] = []
        for path in (self.prov.chain, self.prov.checkpoint):
            try:
                st = os.lstat(path)
            except OSError:
                stamps.append(None)
                continue
            stamps.append((st.st_dev, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        return tuple(stamps)

    def _check(self, *, full: bool = False) -> None:
        """Compare the files with the copy (restoring them if they differ). Before a nested append,
        files whose kernel stamp has not moved since the last comparison or write are taken as
        unchanged, so a long chain is not re-read for every step; ``full`` (the end of the build)
        always compares every byte."""
        if not full and self._stamps and self._stamp() == self._stamps:
            return
        self._compare()
        self._stamps = self._stamp()

    def _compare(self) -> None:
        expected = bytes(self._expected)
        chain_state = self._state(_CHAIN, expected, len(expected))
        checkpoint_state = self._state(_CHECKPOINT, self._checkpoint, chain.CHECKPOINT_LIMIT)
        if chain_state is None and checkpoint_state is None:
            return
        evidence = self._set_aside([name for name, state in ((_CHAIN, chain_state), (_CHECKPOINT, checkpoint_state))
                                    if state is not None])
        self._put_back(_CHAIN, expected, mode=0o644)
        if self._checkpoint is not None:
            self._put_back(_CHECKPOINT, self._checkpoint, mode=0o644)
        parts = [f"{self.prov.root / name} {state}" for name, state in
                 ((_CHAIN, chain_state), (_CHECKPOINT, checkpoint_state)) if state is not None]
        self._notes.append(f"{'; '.join(parts)}, while the build ran; restored from the key holder's copy "
                           f"(the altered files are kept in {evidence})")
        chain.forget_head(self.prov)

    def _state(self, name: str, expected: bytes | None, limit: int) -> str | None:
        """None when ``name`` holds exactly ``expected`` (absent when that is None), else what changed."""
        path = self.prov.root / name
        try:
            actual = _read_file(path, limit)
        except OSError as exc:
            return f"was replaced ({safeio.describe(exc)})"
        if actual == expected:
            return None
        if expected is None:
            return "was created by someone else"
        if actual is None:
            return "was removed" + (self._records_from(0) if name == _CHAIN else "")
        if name != _CHAIN:
            return "was changed"
        return _describe(actual, expected, self._records_from)

    def _records_from(self, offset: int) -> str:
        """``: records seq A-B affected``: those of the copy at or after byte ``offset``."""
        first = _seq_at(bytes(self._expected), offset)
        last = self._head.next_seq - 1
        if first is None or last < 0:
            return ""
        return f" (record seq {first} affected)" if first == last else f" (records seq {first}-{last} affected)"

    def _set_aside(self, names: list[str]) -> Path:
        """Move the altered files, whatever they are now (file, symlink, directory), into a fresh
        ``altered-<ns>/`` directory of the provenance directory.

        Raises:
            ChainError: they cannot be moved.
        """
        for attempt in range(100):
            evidence = self.prov.root / f"altered-{time.time_ns()}{'' if attempt == 0 else f'.{attempt}'}"
            try:
                os.mkdir(evidence, 0o755)
                break
            except FileExistsError:
                continue
            except OSError as exc:
                raise ChainError(f"{evidence}: cannot keep the altered chain: {exc.strerror}") from None
        else:
            raise ChainError(f"{self.prov.root}: cannot keep the altered chain: too many altered-* directories")
        for name in names:
            try:
                os.rename(self.prov.root / name, evidence / name)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise ChainError(f"{self.prov.root / name}: cannot keep the altered file: {exc.strerror}") from None
        return evidence

    def _put_back(self, name: str, data: bytes, *, mode: int) -> None:
        path = self.prov.root / name
        try:
            safeio.replace_atomically(path, data, mode=mode)
            fsync_dir(self.prov.root)
        except OSError as exc:
            if exc.errno == errno.EISDIR:
                raise ChainError(f"{path}: cannot restore the chain: a directory is in its place") from None
            raise ChainError(f"{path}: cannot restore the chain: {exc.strerror}") from None


def _seq_at(data: bytes, offset: int) -> int | None:
    """The seq of the record of ``data`` (whole items) that holds byte ``offset``, if any."""
    try:
        scan = chain.split(data, name="copy")
    except ChainError:
        return None
    for item in scan.items:
        if offset < item.offset + len(item.raw):
            return chain.head_after(item).next_seq - 1
    return None


def _describe(actual: bytes, expected: bytes, records_from: Callable[[int], str]) -> str:
    """What happened to the chain: cut, extended, or rewritten (and from which record on)."""
    common = 0
    limit = min(len(actual), len(expected))
    step = 1 << 16
    while common < limit and actual[common:common + step] == expected[common:common + step]:
        common += min(step, limit - common)
    while common < limit and actual[common] == expected[common]:
        common += 1
    if common == len(expected):
        return f"was extended by {len(actual) - len(expected)} byte(s) this build did not sign"
    if common == len(actual):
        return f"was cut to {len(actual)} of its {len(expected)} bytes" + records_from(common)
    return f"was rewritten from byte {common} on" + records_from(common)


def _objects_of(record: StepRecord) -> list[bytes]:
    """Every object digest a record names."""
    digests = [record.inputs.manifest, record.outputs.manifest, record.outputs.before, record.outputs.changes]
    for log in (record.stdout, record.stderr):
        if log.size or log.digest != bytes(32):
            digests.append(log.digest)
    digests += [a.digest for a in record.attached or ()]
    return digests
