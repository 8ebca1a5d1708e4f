"""Capture one step: snapshot, run, snapshot, store, sign, append.

Everything that could stop a record from being written (the key, the provenance directory, a torn
chain tail, unreadable inputs) is checked *before* the command runs, so nothing runs unrecorded.
Once the command has run, a record is always appended, with status ``failed`` and an ``error``
when the capture itself hit a problem.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING

from asl_capture import envpolicy, gcpause, projectconfig, safeio
from asl_capture.agent import ENV_AGENT, AgentClient, Peer, SigningAgent, connect
from asl_capture.context import host_info, read_sources, vcs_info
from asl_capture.errors import AslError, CaptureError, CheckpointError, RecordWriteError, UsageError
from asl_capture.format import Attachment, Inputs, Log, Manifest, Outputs, RunAs, Source, StepRecord, Vcs, diff
from asl_capture.frozen import frozen
from asl_capture.hashing import Hasher
from asl_capture.keeper import ChainKeeper
from asl_capture.keys import ENV_KEY, ENV_PASSPHRASE_FILE, PASSPHRASE_ENV, Signer, ephemeral_signer, signing_key
from asl_capture.manifest import Excluder, label_for, snapshot
from asl_capture.projectconfig import ProjectConfig
from asl_capture.runner import RunResult, StoredLog, release_signals, run
from asl_capture.statcache import StatCache
from asl_capture.store import ObjectStore, ProvenanceDir, Store

if TYPE_CHECKING:
    from asl_capture.builduser import BuildUser

ENV_DIR = "ASL_CAPTURE_DIR"
ENV_PARENT = "ASL_CAPTURE_PARENT"
#: The user a root capture runs its command as, when neither --user nor --as-root is given
#: (``root`` keeps root, as --as-root does).
ENV_USER = "ASL_CAPTURE_USER"
#: Never handed to the captured command: it signs through the agent instead (agent.py).
KEY_ENV = (ENV_KEY, ENV_PASSPHRASE_FILE, PASSPHRASE_ENV)
EXIT_CANNOT_START = 127
EXIT_CAPTURE_FAILED = 125


@frozen
class CaptureConfig:
    """Everything one capture needs. Paths are as given; ``environ`` is the caller's environment."""

    argv: tuple[str, ...]
    environ: Mapping[str, str]
    cwd: Path
    step: str | None = None
    provenance: Path | None = None
    key: Path | None = None
    passphrase_file: Path | None = None
    ephemeral_key: bool = False
    inputs: tuple[Path, ...] = ()
    outputs: tuple[Path, ...] = ()
    excludes: tuple[str, ...] = ()
    root: Path | None = None
    sources_file: Path | None = None
    attach: tuple[Path, ...] = ()
    #: Who a root capture runs the command as: a user name or uid; None for $ASL_CAPTURE_USER, else
    #: the build user :data:`asl_capture.builduser.DEFAULT_USER`.
    user: str | None = None
    as_root: bool = False
    #: Directories the build user may write in (see :func:`asl_capture.builduser.grant`).
    writable: tuple[Path, ...] = ()
    forward_output: bool = True
    progress: Callable[[str], None] | None = field(default=None, compare=False)


@frozen
class CaptureOutcome:
    """What happened: the exit code ``asl-capture`` should return and the record appended."""

    exit_code: int
    record: StepRecord
    seq: int


def resolve_provenance(config: CaptureConfig, project: ProjectConfig) -> Path:
    """``--provenance``, else ``$ASL_CAPTURE_DIR``, else the project's, else ``./provenance``."""
    if config.provenance is not None:
        return config.provenance
    env_dir = config.environ.get(ENV_DIR)
    if env_dir:
        return Path(env_dir)
    return project.provenance if project.provenance is not None else config.cwd / "provenance"


def resolve_signer(config: CaptureConfig, notify: Callable[[str], None]) -> Signer | AgentClient:
    """The signer: ``--ephemeral-key``, ``--key``, the enclosing capture's agent (``$ASL_CAPTURE_AGENT``),
    ``$ASL_CAPTURE_KEY``, or the per-user development key, in this order (the key files as
    :func:`asl_capture.keys.signing_key` resolves them).

    Raises:
        UsageError: ``--ephemeral-key`` together with ``--key``.
        KeyFileError: the key cannot be created or loaded.
        AgentError: the enclosing capture's agent cannot be reached.
    """
    if config.ephemeral_key:
        if config.key is not None:
            raise UsageError("--ephemeral-key and --key exclude each other")
        return ephemeral_signer()
    agent_path = config.environ.get(ENV_AGENT)
    if config.key is None and agent_path:
        return connect(agent_path)
    source = signing_key(key=config.key, passphrase_file=config.passphrase_file, environ=config.environ,
                         cwd=config.cwd)
    if source.created is not None:
        notify(f"asl-capture: created development signing key {source.path} (key id {source.created.hex()}); "
               f"trust it with --trust {source.path.with_suffix('.pub')}")
    return source.load(config.environ)


def _abs(path: Path, cwd: Path) -> Path:
    return path if path.is_absolute() else cwd / path


def resolve_user(config: CaptureConfig, *, nested: bool, project: ProjectConfig | None = None) -> BuildUser | None:
    """Who the command runs as: None for this process's own user (not root, ``--as-root``, or a
    capture nested in a build, whose key holder decided), else the build user. The order:
    ``--user``/``--as-root``, ``$ASL_CAPTURE_USER``, the project's ``user``, ``asl-build``.

    Raises:
        UsageError: --user with --as-root, --user or --as-root in a nested capture, or an unknown user.
    """
    if config.user is not None and config.as_root:
        raise UsageError("--user and --as-root exclude each other")
    if nested:
        if config.user is not None or config.as_root:
            raise UsageError("--user and --as-root belong to the outermost capture, which holds the key; "
                             "a nested capture runs its command as the build's user")
        return None
    if os.geteuid() != 0:
        if config.user is not None:
            raise UsageError("--user needs asl-capture to run as root")
        return None
    if config.as_root:
        return None
    from asl_capture import builduser

    if config.user is not None:
        return builduser.resolve(config.user)
    name = config.environ.get(ENV_USER) or (project.user if project else None) or builduser.DEFAULT_USER
    if name == "root":  # $ASL_CAPTURE_USER=root or the project's user = "root": as --as-root
        return None
    return builduser.resolve(name)


def _user_environ(environ: Mapping[str, str], user: BuildUser | None) -> Mapping[str, str]:
    """The environment the command gets and the record states: the build user's home and name."""
    if user is None:
        return environ
    return {**environ, "HOME": user.home, "USER": user.name, "LOGNAME": user.name}


def _inside_holder(environ: Mapping[str, str], prov: ProvenanceDir) -> bool:
    """Whether this process runs inside a build whose key holder keeps the chain of ``prov``."""
    outer = environ.get(ENV_DIR)
    if not environ.get(ENV_AGENT) or not outer:
        return False
    try:
        return os.path.samefile(outer, prov.root)
    except OSError:
        return False


def _nested_cache(prov: ProvenanceDir, environ: Mapping[str, str]) -> Path | None:
    """Where a nested capture keeps its stat cache: its own user's cache directory, one file per
    chain (the provenance directory belongs to the key holder and is not written by steps)."""
    import hashlib

    base = environ.get("XDG_CACHE_HOME") or (os.path.join(environ["HOME"], ".cache") if environ.get("HOME") else "")
    if not base:
        return None
    directory = Path(base) / "asl-capture" / "statcache"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        return None
    return directory / hashlib.sha256(os.fsencode(os.path.realpath(prov.root))).hexdigest()[:32]


def capture(config: CaptureConfig, *, notify: Callable[[str], None]) -> CaptureOutcome:
    """Run ``config.argv`` under capture and append its signed record.

    Raises:
        UsageError, KeyFileError, StoreError, TornTailError, ChainError, SnapshotError: before the
            command runs (it is then not run at all).
        RecordWriteError: the command ran but its record could not be appended.
    """
    if not config.argv:
        raise UsageError("no command given after '--'")
    with gcpause.paused():  # snapshots, the stat cache and encoding allocate much and make no cycles
        return _capture(config, notify)


def _capture(config: CaptureConfig, notify: Callable[[str], None]) -> CaptureOutcome:
    cwd = config.cwd.absolute()
    project = projectconfig.load(cwd)
    prov_path = Path(os.path.abspath(_abs(resolve_provenance(config, project), cwd)))
    root = _abs(config.root, cwd) if config.root is not None else cwd
    if config.root is not None and not os.path.isdir(root):
        raise UsageError(f"{config.root}: --root is not an existing directory")
    declared = bool(config.inputs or config.outputs)
    in_roots = [_abs(p, cwd) for p in config.inputs] if declared else [root]
    out_roots = [_abs(p, cwd) for p in config.outputs] if declared else [root]
    excluder = Excluder(patterns=config.excludes + project.excludes,
                        absolute=_provenance_paths(prov_path, in_roots + out_roots))
    signer = resolve_signer(config, notify)
    nested = isinstance(signer, AgentClient)
    user = resolve_user(config, nested=nested, project=project)
    keeper: ChainKeeper | None = None
    spool = None
    if isinstance(signer, AgentClient):
        if os.path.realpath(signer.provenance) != os.path.realpath(prov_path):
            raise UsageError(f"a nested capture signs only for the enclosing build's chain ({signer.provenance}), "
                             f"not {prov_path}; pass --key to sign another chain with a key of its own")
        from asl_capture.spool import SpoolStore

        prov = ProvenanceDir(prov_path)  # the key holder's: this capture never writes it
        spool = SpoolStore(signer, prov)
        store: Store = spool
        cache_path = _nested_cache(prov, config.environ)
    else:
        prov = ProvenanceDir.create(prov_path)
        keeper = ChainKeeper.open(prov, signer, nested_in_holder=_inside_holder(config.environ, prov))
        store = ObjectStore(prov)
        cache_path = prov.statcache
    try:
        return _run_and_record(config, cwd, prov, signer, keeper, store, cache_path, user, project, excluder,
                               in_roots, out_roots)
    finally:
        if keeper is not None:
            keeper.close()
        if spool is not None:
            spool.close()


def _run_and_record(
    config: CaptureConfig, cwd: Path, prov: ProvenanceDir, signer: Signer | AgentClient, keeper: ChainKeeper | None,
    store: Store, cache_path: Path | None, user: BuildUser | None, project: ProjectConfig, excluder: Excluder,
    in_roots: list[Path], out_roots: list[Path],
) -> CaptureOutcome:
    for path in config.inputs:
        if not os.path.lexists(_abs(path, cwd)):
            raise CaptureError(f"{path}: declared input does not exist")
    cache = StatCache.load(cache_path) if cache_path is not None else StatCache()
    hasher = Hasher(cache=cache)

    def take(roots: list[Path]) -> Manifest:
        progress = _Progress(config.progress, len(roots)) if config.progress is not None else None
        taken: Manifest | None = None
        try:
            taken = snapshot(roots, base=cwd, excluder=excluder, hasher=hasher, missing_ok=True, progress=progress)
        finally:
            if progress is not None:
                progress.end(taken.files if taken is not None else None)
        return taken

    inputs = take(in_roots)
    outputs_before = inputs if in_roots == out_roots else take(out_roots)
    sources_stamp = _stamp(_abs(config.sources_file, cwd)) if config.sources_file else None
    vcs = vcs_info(cwd)

    parent = _parent(config.environ, prov)
    if isinstance(signer, AgentClient) and parent is None:
        raise UsageError(f"this capture signs through the enclosing build's agent but names no enclosing capture "
                         f"({ENV_PARENT} is missing or malformed); the command was not run")
    environ = _user_environ(config.environ, user)
    child_env = {k: v for k, v in environ.items() if k not in KEY_ENV}
    child_env[ENV_DIR] = str(prov.root)
    runas = _runas(user)
    before = _Before(prov=prov, signer=signer, keeper=keeper, store=store, cwd=cwd, take=take, inputs=inputs,
                     outputs_before=outputs_before, out_roots=out_roots, cache=cache, cache_path=cache_path,
                     sources_stamp=sources_stamp, vcs=vcs, run_id=keeper.own_id if keeper else bytes(16),
                     parent=parent, environ=environ, runas=runas)
    _check_encodable(config, before)
    if user is not None:
        from asl_capture import builduser

        if not builduser.reachable(str(cwd), user, need=1):
            raise UsageError(f"{cwd}: the build user {user.name} the command runs as cannot enter the working "
                             f"directory (a directory above it is private); build in a directory it can reach, "
                             f"or pass --as-root; the command was not run")
        for directory in (*project.writable, *config.writable):
            builduser.grant(_abs(directory, cwd), user)
    if isinstance(signer, AgentClient):
        assert parent is not None
        before = dataclasses.replace(before, run_id=signer.begin(parent))  # the key holder hands out ids
    child_env[ENV_PARENT] = before.run_id.hex()
    # A capture holding the key serves the chain to the captures nested in its command; one that
    # signs through an agent passes that agent on (ASL_CAPTURE_AGENT is inherited unchanged).
    agent = None
    if keeper is not None and isinstance(signer, Signer):
        agent = SigningAgent(keeper=keeper, kid=signer.kid, public=signer.public_raw(),
                             build_user=Peer(uid=user.uid, gid=user.gid) if user is not None else None)
    launcher: Path | None = None
    try:
        if user is not None:
            directory, own = _launcher(user)
            launcher = directory if own else None
            child_env["PATH"] = f"{directory / 'bin'}:{child_env.get('PATH', os.defpath)}"
        if agent is not None:
            child_env[ENV_AGENT] = agent.start()
        try:
            result = run(config.argv, env=child_env, cwd=cwd, store=store, forward_output=config.forward_output,
                         user=(user.uid, user.gid) if user is not None else None)
        finally:
            if agent is not None:  # nothing nested can be appended once the command has ended
                agent.close()
        try:
            return _record(config, before, result)
        except RecordWriteError:
            raise
        except AslError as exc:
            raise RecordWriteError(f"the command ran but its record could not be written: {exc}") from None
    finally:
        release_signals()
        if launcher is not None:
            import shutil

            shutil.rmtree(launcher, ignore_errors=True)


def _launcher(user: BuildUser) -> tuple[Path, bool]:
    """A directory holding ``bin/asl-capture`` for the build user (see :func:`builduser.make_launcher`)
    and whether it is this capture's own (to be removed after): one kept in root's ``/run`` and
    checked before each use serves every capture that needs no copy of the package.

    Raises:
        UsageError: it cannot be made.
    """
    import sys

    from asl_capture import builduser

    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    kept = builduser.kept_launcher(user, interpreter=sys.executable, package_parent=package_parent)
    if kept is not None:
        return kept, False
    import tempfile

    try:
        directory = Path(tempfile.mkdtemp(prefix="asl-launch-"))
    except OSError as exc:
        raise UsageError(f"cannot create the build user's launcher directory: {exc.strerror}") from None
    try:
        builduser.make_launcher(directory, user, interpreter=sys.executable, package_parent=package_parent)
    except BaseException:
        import shutil

        shutil.rmtree(directory, ignore_errors=True)
        raise
    return directory, True


def _runas(user: BuildUser | None) -> RunAs:
    if user is not None:
        return RunAs(uid=user.uid, gid=user.gid, name=user.name)
    import pwd

    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    return RunAs(uid=uid, gid=os.getegid(), name=name)


@frozen
class _Before:
    """What a capture knew before the command ran, for writing its record afterwards."""

    prov: ProvenanceDir
    signer: Signer | AgentClient
    keeper: ChainKeeper | None
    store: Store
    cwd: Path
    take: Callable[[list[Path]], Manifest]
    inputs: Manifest
    outputs_before: Manifest
    out_roots: list[Path]
    cache: StatCache
    cache_path: Path | None
    sources_stamp: tuple[int, int, int] | None
    vcs: Vcs | None
    run_id: bytes
    parent: bytes | None
    environ: Mapping[str, str]
    runas: RunAs


def _record(config: CaptureConfig, b: _Before, result: RunResult) -> CaptureOutcome:
    """After the command ran: snapshot outputs, store objects, sign and append the record."""
    cwd, store, inputs, outputs_before = b.cwd, b.store, b.inputs, b.outputs_before
    if result.store_error is not None:
        code = "never started" if result.returncode is None else f"exit {result.returncode}"
        raise RecordWriteError(f"the command ran ({code}) but nothing was recorded: {result.store_error}")
    errors: list[str] = []
    if result.start_error:
        errors.append(result.start_error)
    outputs_after = outputs_before
    try:
        outputs_after = b.take(b.out_roots)
        if outputs_after == outputs_before:  # unchanged: reuse its encoding rather than redo it
            outputs_after = outputs_before
    except AslError as exc:
        errors.append(f"output snapshot failed: {exc}")
    sources: tuple[Source, ...] | None = None
    if config.sources_file is not None:
        sources_path = _abs(config.sources_file, cwd)
        try:
            if _stamp(sources_path) in (None, b.sources_stamp):
                raise CaptureError(f"{config.sources_file}: sources file was not written by the step")
            sources = read_sources(sources_path)
        except AslError as exc:
            errors.append(str(exc))
    attached: list[Attachment] = []
    hidden = envpolicy.secret_values(config.environ)
    for path in config.attach:
        try:
            attached += attach(store, _abs(path, cwd), cwd, hide=lambda text: envpolicy.mask(text, hidden))
        except AslError as exc:
            errors.append(str(exc))
    if b.cache_path is not None:
        b.cache.save(b.cache_path)

    changes = diff(outputs_before, outputs_after)
    # A manifest that is the same object as another (inputs and outputs over the same roots, outputs
    # unchanged) is stored once: each put hashes it and re-reads the stored copy to check it.
    inputs_digest = store.put(inputs.encode())
    before_digest = inputs_digest if outputs_before is inputs else store.put(outputs_before.encode())
    after_digest = before_digest if outputs_after is outputs_before else store.put(outputs_after.encode())
    trees = (
        Inputs(manifest=inputs_digest, entries=len(inputs.entries), files=inputs.files),
        Outputs(manifest=after_digest, before=before_digest, changes=store.put(changes.encode()),
                entries=len(outputs_after.entries), files=outputs_after.files,
                created=len(changes.created), modified=len(changes.modified), deleted=len(changes.deleted)),
    )
    draft = _draft(config, b, result, errors, trees, sources)
    if isinstance(b.signer, Signer) and b.signer.path is None:  # --ephemeral-key: the auditor needs its key
        draft = dataclasses.replace(draft, ephemeral_key=b.signer.public_raw())
    if config.attach:
        draft = dataclasses.replace(draft, attached=tuple(attached))
    try:
        if isinstance(b.signer, AgentClient):
            record, _raw = b.signer.append(draft)
        else:
            assert b.keeper is not None
            found: list[str] = []

            def own(notes: tuple[str, ...]) -> StepRecord:
                found[:] = notes
                if not found:
                    return draft
                return _draft(config, b, result, errors + found, trees, sources, ephemeral_key=draft.ephemeral_key,
                              attached=draft.attached)

            record, _item = b.keeper.append_own(own)
            errors += found
    except CheckpointError as exc:
        raise RecordWriteError(str(exc)) from None
    except AslError as exc:
        raise RecordWriteError(f"the command ran but its record could not be appended: {exc}") from None
    return CaptureOutcome(exit_code=_exit_code(result, errors), record=record, seq=record.seq)


def attach(store: Store, path: Path, cwd: Path, *,
           hide: Callable[[str], str] = lambda text: envpolicy.mask(text, ())) -> list[Attachment]:
    """Store the bytes of ``path`` (a file, or every regular file under a directory, sorted; symlinks
    are not followed) as objects; return their ``{"path", "digest", "size"}`` entries for the record,
    each path as ``hide`` masks it.

    Raises:
        CaptureError: the path is missing, not a file or directory, or unreadable.
        StoreError: an object cannot be written.
    """
    files: list[Path] = []
    current = path  # what an error names
    try:
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames.sort()
                for name in sorted(filenames):
                    full = Path(dirpath, name)
                    if stat.S_ISREG(os.lstat(full).st_mode):
                        files.append(full)
        elif stat.S_ISREG(st.st_mode):
            files.append(path)
        else:
            raise CaptureError(f"{path}: --attach takes a regular file or a directory")
        out: list[Attachment] = []
        for full in files:  # opened as a regular file, not through a symlink, never blocking on a FIFO
            current = full
            fd, _size = safeio.open_regular(full, what="attachment")
            try:
                digest, size = store.put_fd(fd)  # streamed: an attachment may be larger than memory
            finally:
                os.close(fd)
            out.append(Attachment(path=_text(hide(os.fsdecode(label_for(full, cwd)))), digest=digest, size=size))
    except OSError as exc:
        raise CaptureError(f"{current}: cannot attach: {safeio.describe(exc)}") from None
    return out


def _provenance_paths(prov_root: Path, roots: list[Path]) -> frozenset[bytes]:
    """The paths under which a walk of ``roots`` would reach the provenance directory, to exclude it.

    A walk never follows symlinks below a root, but a root or the provenance path itself may go
    through one: the directory is then reached under another name, found here through real paths.

    Raises:
        UsageError: a snapshot root is the provenance directory or lies inside it.
    """
    real_prov = os.path.realpath(prov_root)
    paths = {os.fsencode(prov_root), os.fsencode(real_prov)}
    for root in roots:
        real_root = os.path.realpath(root)
        if real_root == real_prov or real_root.startswith(real_prov.rstrip("/") + "/"):
            raise UsageError(f"{root}: a snapshot root is inside the provenance directory {prov_root}; "
                             f"use a provenance directory outside the tree being captured, or beside it")
        if real_prov.startswith(real_root.rstrip("/") + "/"):
            paths.add(os.fsencode(os.path.abspath(root).rstrip("/") + real_prov[len(real_root.rstrip("/")):]))
    return frozenset(paths)


class _Progress:
    """Progress lines for one snapshot; the last one shown is ended with a newline."""

    def __init__(self, report: Callable[[str], None], roots: int) -> None:
        self.report = report
        self.roots = roots
        self.last: str | None = None

    def __call__(self, done: int) -> None:
        self.last = self._line(done)
        self.report(self.last)

    def end(self, files: int | None) -> None:
        """Finish the line (with the final count, when the snapshot completed), if one was shown,
        so that what comes next starts on a line of its own."""
        if self.last is not None:
            self.report((self.last if files is None else self._line(files)) + "\n")

    def _line(self, files: int) -> str:
        return f"asl-capture: hashed {files} files in {self.roots} root(s)"


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _parent(environ: Mapping[str, str], prov: ProvenanceDir) -> bytes | None:
    """The enclosing capture's id, when it records into the same provenance directory as this one:
    a parent in another chain could never be found by that chain's verifier."""
    outer = environ.get(ENV_DIR)
    try:
        if not outer or not os.path.samefile(outer, prov.root):
            return None
    except OSError:
        return None
    value = environ.get(ENV_PARENT, "")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return None
    return raw if len(raw) == 16 else None


def _status(result: RunResult, errors: list[str]) -> str:
    if result.signals or (result.returncode is not None and result.returncode < 0):
        return "interrupted"
    if errors or result.returncode != 0:
        return "failed"
    return "ok"


def _exit_code(result: RunResult, errors: list[str]) -> int:
    if result.returncode is None:
        return EXIT_CANNOT_START
    if result.returncode < 0:
        return 128 - result.returncode
    if result.returncode == 0 and errors:
        return EXIT_CAPTURE_FAILED
    return result.returncode


def _text(value: str) -> str | bytes:
    """Text as recorded: UTF-8 text, or raw bytes when it is not valid UTF-8 (``value`` comes from
    the OS, so undecodable bytes are surrogate escapes, which :func:`os.fsencode` turns back)."""
    raw = value.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def _draft(
    config: CaptureConfig, b: _Before, result: RunResult, errors: list[str], trees: tuple[Inputs, Outputs],
    sources: tuple[Source, ...] | None, *, ephemeral_key: bytes | None = None,
    attached: tuple[Attachment, ...] | None = None,
) -> StepRecord:
    """The record, with placeholder chain fields (:func:`chain.append` sets them under the lock).

    Every piece of text from outside (arguments, names, the environment, error messages) is
    recorded as UTF-8 text, or as bytes when it is not valid UTF-8, so it always encodes.
    """
    hidden = envpolicy.secret_values(b.environ)
    sde = b.environ.get("SOURCE_DATE_EPOCH", "")
    env: dict[str, str | bytes | None] = {}
    env_bytes: list[tuple[bytes, str | bytes | None]] = []
    for name, value in envpolicy.recorded_env(b.environ).items():
        shown = None if value is None else _text(envpolicy.mask(value, hidden))
        key = _text(name)
        if isinstance(key, str):
            env[key] = shown
        else:
            env_bytes.append((key, shown))
    return StepRecord(
        chain=bytes(16), seq=0, prev=None,
        id=b.run_id,
        parent=b.parent,
        step=_text(envpolicy.mask(config.step or os.path.basename(config.argv[0]) or config.argv[0], hidden)),
        argv=tuple(_text(a) for a in envpolicy.mask_argv(config.argv, hidden)),
        cwd=_text(envpolicy.mask(str(b.cwd), hidden)),
        env=env,
        started=result.started,
        finished=result.finished,
        exit=result.returncode if result.returncode is not None else EXIT_CANNOT_START,
        status=_status(result, errors),
        inputs=trees[0],
        outputs=trees[1],
        stdout=Log(digest=result.stdout.digest, size=result.stdout.size),
        stderr=Log(digest=result.stderr.digest, size=result.stderr.size),
        host=host_info(),
        source_date_epoch=int(sde) if sde.isdigit() else None,
        sources=None if sources is None else tuple(_masked_source(s, hidden) for s in sources),
        vcs=b.vcs,
        error=_text(envpolicy.mask("; ".join(errors), hidden)) if errors else None,
        signals=tuple(result.signals) if result.signals else None,
        env_bytes=tuple(sorted(env_bytes)) if env_bytes else None,
        ephemeral_key=ephemeral_key,
        attached=attached,
        user=b.runas,
    )


def _masked_source(source: Source, hidden: list[str]) -> Source:
    """A source as recorded: its text fields (``uri``, ``via``, ``name``, ``version``, ``kind``) masked."""
    def hide(text: str | None) -> str | None:
        return None if text is None else envpolicy.mask(text, hidden)

    return Source(uri=envpolicy.mask(source.uri, hidden), sha256=source.sha256,
                  kind=envpolicy.mask(source.kind, hidden), via=hide(source.via), name=hide(source.name),
                  version=hide(source.version), size=source.size)


def _check_encodable(config: CaptureConfig, b: _Before) -> None:
    """Build and encode the record this capture will write, with placeholder results, before the
    command runs: whatever cannot be recorded fails now, not after the step has had its effects.

    Raises:
        CaptureError: the record could not be encoded (names the reason).
    """
    placeholder = StoredLog(digest=bytes(32), size=0)
    result = RunResult(returncode=0, start_error=None, signals=(), stdout=placeholder, stderr=placeholder,
                       started=0, finished=0)
    trees = (Inputs(manifest=bytes(32), entries=0, files=0),
             Outputs(manifest=bytes(32), before=bytes(32), changes=bytes(32), entries=0, files=0, created=0,
                     modified=0, deleted=0))
    try:
        StepRecord.from_cbor(_draft(config, b, result, ["x"], trees, None).to_cbor())
    except (AslError, ValueError) as exc:  # UnicodeError is a ValueError
        raise CaptureError(f"the step's record could not be encoded, so the command was not run: {exc}") from None
