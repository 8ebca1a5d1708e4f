"""``asl-verify rebuild``: build the ISO again from its record and compare the bytes.

From the provenance directory: the recorded commit and tree (the steps' ``vcs``), the
``SOURCE_DATE_EPOCH``, every Debian source with its digest (the rootfs step's ``sources``) and the
builder's tools (the builder step's ``sources``). The rebuild

1. clones the source repository into a scratch directory and checks out the recorded commit,
   refusing a build that was made from a dirty tree, a commit the repository lacks, or a checkout
   whose tree differs from the recorded one;
2. lays out a local mirror (``copy:`` URI) of exactly the recorded InRelease, Packages and ``.deb``
   files, each taken by digest from the durable source store or a directory of ``.deb`` files, and
   fetched from its recorded URI only when it is missing (and checked against its digest); a file
   that is nowhere is an error naming the package (exit 2);
3. compares the host's build tools with the recorded ones (a warning, or an error with
   ``strict_builder``);
4. runs ``pipeline/build.sh`` under ``asl-capture`` (an ephemeral key) with the recorded epoch and
   the checked-out image configuration (only the mirror and the caches point into the scratch
   directory; none of them reaches the image);
5. compares the ISO digests; on a mismatch :mod:`asl_capture.rebuildreport` names what differs.

The caller's environment passes through (umask, TZ, locale, HOME...: the image must not depend on
them) except ``ASL_*`` variables and ``SOURCE_DATE_EPOCH``, which the record decides.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from asl_capture import builder, chain, cose
from asl_capture.errors import AslError, CborError, UsageError, VerificationError
from asl_capture.format import Source, StepRecord
from asl_capture.sourcestore import SourceStore, SourceStoreError, default_root, file_sha256, index_dir
from asl_capture.store import ProvenanceDir

_ARCHIVE_PATH = re.compile(r"/((?:dists|pool)/[^?#]*)$")
FETCH_TIMEOUT = 30.0
Notify = Callable[[str], None]


class RebuildError(AslError):
    """The rebuild cannot run: unusable record, source, package or build (exit 2)."""


class SourceMissingError(RebuildError):
    """A recorded Debian source is in no store and cannot be fetched (exit 2)."""


class BuilderMismatchError(VerificationError):
    """The host's build tools differ from the recorded ones (with ``--strict-builder``; exit 1)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, check="builder")


class RebuildMismatchError(VerificationError):
    """The rebuilt ISO differs from the one given (exit 1); ``report`` says what differs."""

    def __init__(self, message: str, report: list[str]) -> None:
        super().__init__(message, check="rebuild")
        self.report = report


@dataclass(frozen=True)
class RebuildConfig:
    """What ``asl-verify rebuild`` was asked to do."""

    provenance: Path
    iso: Path
    source: str
    environ: Mapping[str, str]
    debs: Path | None = None
    work: Path | None = None
    strict_builder: bool = False
    fetch: bool = True
    records: tuple[StepRecord, ...] | None = None  # already verified (``--trust``); else read here
    notify: Notify = field(default=lambda _line: None, compare=False)


@dataclass(frozen=True)
class Plan:
    """What the record says the rebuild needs."""

    commit: str
    tree: str
    epoch: int
    sources: tuple[tuple[str, str, str], ...]  # (kind, archive path, sha256 hex)
    tools: tuple[builder.Tool, ...]
    iso_label: str
    iso_sha256: str
    steps: dict[str, StepRecord]


@dataclass(frozen=True)
class Outcome:
    """A successful rebuild: the matching digest and the times."""

    iso_sha256: str
    image_identity: str | None
    build_seconds: float
    total_seconds: float
    builder_differences: tuple[str, ...]
    work: Path


def read_records(directory: Path) -> list[StepRecord]:
    """The step records of a provenance directory, parsed but not signature-checked.

    Raises:
        RebuildError: the chain cannot be read or a record cannot be parsed.
    """
    try:
        prov = ProvenanceDir.existing(directory)
        scan = chain.read(prov.chain)
        records = [StepRecord.from_cbor(cose.parse(item.value).payload) for item in scan.items]
    except (CborError, VerificationError, AslError) as exc:
        raise RebuildError(f"{directory}: cannot read the record: {exc}") from None
    if not records:
        raise RebuildError(f"{directory}: the chain holds no record")
    return records


def _rows(record: StepRecord) -> tuple[Source, ...]:
    """The record's ``sources`` (none when absent)."""
    return record.sources or ()


def _last_build(records: list[StepRecord]) -> dict[str, StepRecord]:
    """The steps that made the last ISO, by name: the last successful ``iso`` record and, before it,
    the last record of every other step (a partial re-run, ``ASL_STEPS="overlay iso"``, builds on
    the rootfs of an earlier session).

    Raises:
        RebuildError: no successful iso step, or no rootfs or overlay step before it.
    """
    iso_index = next((i for i in range(len(records) - 1, -1, -1)
                      if records[i].step == "iso" and records[i].status == "ok"), None)
    if iso_index is None:
        raise RebuildError("the record holds no successful iso step: nothing to rebuild")
    steps: dict[str, StepRecord] = {}
    for record in records[: iso_index + 1]:
        if isinstance(record.step, str):  # a step name that is not UTF-8 is none of the pipeline's
            steps[record.step] = record
    for name in ("rootfs", "overlay"):
        if name not in steps:
            raise RebuildError(f"the record has no {name} step before its last iso step")
    return steps


def plan(records: list[StepRecord], *, iso_sha256: str, read_manifest: Callable[[bytes], list[tuple[str, str]]],
         ) -> Plan:
    """What to rebuild, from the records of one build.

    ``read_manifest(digest)`` returns ``(path, sha256 hex)`` of the files of a stored manifest.

    Raises:
        RebuildError: the record lacks what a rebuild needs, or was made from a dirty tree.
        VerificationError: the ISO given is not the one the record names.
    """
    steps = _last_build(records)
    rootfs = steps["rootfs"]
    vcs = rootfs.vcs
    if vcs is None:
        raise RebuildError("the rootfs step records no git commit (built outside a git checkout): cannot rebuild")
    if vcs.dirty:
        raise RebuildError(f"the build was made from a dirty tree at commit {vcs.commit}: its source is "
                           f"not in any commit, so it cannot be rebuilt")
    epoch = rootfs.source_date_epoch
    if epoch is None:
        raise RebuildError("the rootfs step records no SOURCE_DATE_EPOCH")
    sources: list[tuple[str, str, str]] = []
    for row in _rows(rootfs):
        if row.kind not in ("release", "index", "deb"):
            continue
        m = _ARCHIVE_PATH.search(row.uri)
        if m is None or ".." in m.group(1).split("/"):
            raise RebuildError(f"recorded source {row.uri!r} has no dists/ or pool/ path")
        sources.append((row.kind, m.group(1), row.sha256.hex()))
    if not any(k == "deb" for k, _p, _d in sources):
        raise RebuildError("the rootfs step records no Debian packages (sources): cannot rebuild")
    tools: list[builder.Tool] = []
    if "builder" in steps:
        for row in _rows(steps["builder"]):
            tool = builder.Tool.from_source(row.to_value())
            if tool is not None:
                tools.append(tool)
    isos = [(p, d) for p, d in read_manifest(steps["iso"].outputs.manifest) if p.endswith(".iso")]
    if len(isos) != 1:
        raise RebuildError(f"the iso step's outputs hold {len(isos)} .iso files, expected one")
    label, recorded = isos[0]
    if recorded != iso_sha256:
        raise VerificationError(f"the ISO given (sha256 {iso_sha256}) is not the one the record names "
                                f"({label}, sha256 {recorded})", check="rebuild")
    return Plan(commit=vcs.commit, tree=vcs.tree, epoch=epoch, sources=tuple(sorted(set(sources))),
                tools=tuple(tools), iso_label=label, iso_sha256=recorded, steps=steps)


def _git(args: list[str], *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["GIT_NO_REPLACE_OBJECTS"] = "1"  # the objects the commit id names, never substitutes
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GIT_CONFIG_NOSYSTEM"] = "1"  # no user or system setting (autocrlf, filters...) rewrites the files
    env["GIT_CONFIG_GLOBAL"] = os.devnull
    try:
        return subprocess.run(["git", "-c", "core.autocrlf=false", "-c", "core.eol=lf", *args], cwd=cwd, env=env,
                              capture_output=True, text=True, check=False, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RebuildError(f"git cannot run: {exc}") from None


def checkout(source: str, p: Plan, dest: Path) -> None:
    """Clone ``source`` into ``dest`` at the recorded commit, checking the tree.

    Raises:
        RebuildError: the clone fails, the commit is missing, or its tree differs from the record.
    """
    res = _git(["clone", "--quiet", "--no-checkout", "--no-hardlinks", source, str(dest)])
    if res.returncode != 0:
        raise RebuildError(f"cannot clone {source}: {res.stderr.strip().splitlines()[-1:] or res.returncode}")
    res = _git(["-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", p.commit], cwd=dest)
    if res.returncode != 0:
        raise RebuildError(f"{source} does not hold the recorded commit {p.commit}")
    tree = _git(["rev-parse", "--verify", "HEAD^{tree}"], cwd=dest).stdout.strip()
    if tree != p.tree:
        raise RebuildError(f"commit {p.commit} in {source} has tree {tree}, the record says {p.tree}")
    status = _git(["status", "--porcelain", "--untracked-files=all"], cwd=dest)
    if status.returncode != 0 or status.stdout.strip():
        raise RebuildError(f"the checkout of {p.commit} is not clean: {status.stdout.strip()[:200]}")


def _package_name(archive_path: str) -> str:
    name = archive_path.rsplit("/", 1)[-1].removesuffix(".deb")
    parts = name.split("_")
    return f"{parts[0]} {parts[1]} ({parts[2]})" if len(parts) == 3 else name


def _fetch(uri: str, digest: str, store: SourceStore) -> Path:
    """Download ``uri`` into ``store`` if its bytes have ``digest``. Raises RebuildError otherwise."""
    if not uri.startswith(("http://", "https://")):
        raise RebuildError(f"{uri}: not an http(s) URI")
    try:
        store.root.mkdir(parents=True, exist_ok=True)
        tmp_dir = Path(tempfile.mkdtemp(prefix=".fetch-", dir=store.root))
    except OSError as exc:
        raise RebuildError(f"{store.root}: cannot write: {exc.strerror}") from None
    tmp = tmp_dir / "download"
    try:
        h = hashlib.sha256()
        with urllib.request.urlopen(uri, timeout=FETCH_TIMEOUT) as resp, tmp.open("wb") as out:  # noqa: S310
            while chunk := resp.read(1 << 20):
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != digest:
            raise RebuildError(f"{uri}: fetched bytes have sha256 {h.hexdigest()}, the record says {digest}")
        return store.put(tmp, digest)
    except (OSError, urllib.error.URLError, ValueError) as exc:
        raise RebuildError(f"{uri}: cannot fetch: {getattr(exc, 'reason', exc)}") from None
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def lay_out_mirror(p: Plan, mirror: Path, *, stores: list[SourceStore], debs: dict[str, Path],
                   uris: dict[str, str], fetch: bool, notify: Notify) -> tuple[int, int]:
    """Hard-link (or copy) every recorded source into ``mirror`` at its archive path.

    Returns (files laid out, files fetched).

    Raises:
        SourceMissingError: a recorded file is in no store and cannot be fetched (names the package).
    """
    fetched = 0
    missing: list[tuple[str, str, str]] = []
    found: dict[str, Path] = {}
    for kind, path, digest in p.sources:
        src = debs.get(digest)
        for store in stores:
            if src is not None:
                break
            try:
                src = store.get(digest)
            except SourceStoreError as exc:
                notify(f"asl-verify rebuild: warning: {exc}")
        if src is None:
            missing.append((kind, path, digest))
        else:
            found[path] = src
    for kind, path, digest in missing:
        what = f"package {_package_name(path)}" if kind == "deb" else f"{kind} {path}"
        uri = uris.get(path)
        if not fetch or uri is None:
            raise SourceMissingError(f"{what} (sha256 {digest}) is not in the source store"
                                     f"{'' if fetch else ' and fetching is off'}")
        try:
            found[path] = _fetch(uri, digest, stores[0])
        except RebuildError as exc:
            raise SourceMissingError(f"{what} (sha256 {digest}) is not in the source store and cannot be "
                                     f"fetched: {exc}") from None
        fetched += 1
    for path, src in found.items():
        dest = mirror / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dest)
        except OSError:
            shutil.copyfile(src, dest)
    return len(found), fetched


def _recorded_uris(p: Plan) -> dict[str, str]:
    out: dict[str, str] = {}
    for row in _rows(p.steps["rootfs"]):
        m = _ARCHIVE_PATH.search(row.uri)
        if m is not None:
            out[m.group(1)] = row.uri
    return out


def write_config(src: Path, dest: Path, *, mirror: Path, cache: Path, store: Path) -> None:
    """The checked-out image.yaml with only the mirror and the caches pointing into the scratch tree.

    Raises:
        RebuildError: the configuration cannot be read.
    """
    import yaml

    try:
        data = yaml.safe_load(src.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RebuildError(f"{src}: cannot read the image configuration: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("paths"), dict):
        raise RebuildError(f"{src}: not an image configuration")
    uri = "copy:" + urllib.parse.quote(str(mirror))  # apt splits sources.list lines at spaces
    data["mirror"] = uri
    data["security_mirror"] = uri
    data["paths"]["cache"] = str(cache)
    data["paths"]["store"] = str(store)
    dest.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def check_builder(p: Plan, *, strict: bool, notify: Notify) -> tuple[str, ...]:
    """Compare the host's tools with the recorded ones; returns the differences (as text).

    Raises:
        BuilderMismatchError: with ``strict``, when any differs or no builder record exists.
    """
    if not p.tools:
        msg = "the record names no builder tools (no builder step): the host's tools are not checked"
        if strict:
            raise BuilderMismatchError(msg)
        notify(f"asl-verify rebuild: warning: {msg}")
        return (msg,)
    host, _missing = builder.host_tools()
    diffs = tuple(str(d) for d in builder.compare(p.tools, host))
    if diffs:
        text = "; ".join(diffs)
        if strict:
            raise BuilderMismatchError(f"host build tools differ from the recorded ones: {text}")
        notify(f"asl-verify rebuild: warning: host build tools differ from the recorded ones: {text}")
    return diffs


def build_env(environ: Mapping[str, str], *, epoch: int, config: Path, key: Path) -> dict[str, str]:
    """The caller's environment without ``ASL_*`` and ``SOURCE_DATE_EPOCH``, plus what the record sets."""
    env = {k: v for k, v in environ.items() if not k.startswith("ASL_") and k != "SOURCE_DATE_EPOCH"}
    env.update({
        "SOURCE_DATE_EPOCH": str(epoch),
        "ASL_IMAGE_CONFIG": str(config),
        "ASL_APT_CHECK_VALID_UNTIL": "0",
        "ASL_CAPTURE_KEY": str(key),
        "ASL_CAPTURE": f"{sys.executable} -m asl_capture.cli.capture",
        "ASL_PYTHON": env.get("ASL_PYTHON", "python3"),
    })
    return env


def run_build(src: Path, env: dict[str, str], log: Path) -> float:
    """``asl-capture -- ./pipeline/build.sh`` in ``src``; returns its wall time.

    Raises:
        RebuildError: the build fails (the message points at the log).
    """
    t0 = time.monotonic()
    with log.open("wb") as out:
        try:
            # as the recorded build ran: the pipeline's steps run as root (records before the build
            # user existed say nothing of it; this tree's pyproject.toml says user = "root")
            res = subprocess.run([sys.executable, "-m", "asl_capture.cli.capture", "--as-root", "--",
                                  "./pipeline/build.sh"],
                                 cwd=src, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
        except OSError as exc:
            raise RebuildError(f"cannot run the build: {exc}") from None
    seconds = time.monotonic() - t0
    if res.returncode != 0:
        tail = log.read_bytes()[-1500:].decode("utf-8", "replace").strip().splitlines()[-5:]
        raise RebuildError(f"the rebuild failed (exit {res.returncode}; log {log}): " + " | ".join(tail))
    return seconds


def image_identity(isofs: Path) -> str | None:
    """``sha256:<hex>`` of the rebuilt ``/asl/build-manifest.cbor`` (the image identity), if present."""
    path = isofs / "asl" / "build-manifest.cbor"
    return f"sha256:{file_sha256(path)}" if path.is_file() else None


def work_prefix(src: Path) -> str:
    """``paths.work`` of the checked-out image configuration (default ``out/work``)."""
    import yaml

    try:
        data = yaml.safe_load((src / "pipeline" / "image.yaml").read_text(encoding="utf-8"))
        return str(data["paths"]["work"]).strip("/")
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return "out/work"


def manifest_reader(directory: Path) -> Callable[[bytes], list[tuple[str, str]]]:
    """``digest -> [(path, sha256 hex)]`` of the files of a manifest stored in ``directory``."""
    from asl_capture.format import Manifest
    from asl_capture.store import ObjectStore

    store = ObjectStore(ProvenanceDir.existing(directory))

    def read(digest: bytes) -> list[tuple[str, str]]:
        try:
            m = Manifest.from_cbor(store.read(digest))
        except AslError as exc:
            raise RebuildError(f"{directory}: {exc}") from None
        return [(os.fsdecode(e.path), e.extra.hex()) for e in m.entries if e.kind == "f" and isinstance(e.extra, bytes)]

    return read


def rebuild(config: RebuildConfig) -> Outcome:
    """Rebuild and compare (see the module docstring).

    Raises:
        RebuildError, SourceMissingError: the rebuild cannot run (exit 2).
        BuilderMismatchError: with ``strict_builder``, the host's tools differ (exit 1).
        RebuildMismatchError: the rebuilt ISO differs; its ``report`` names what (exit 1).
        VerificationError: the ISO given is not the recorded one (exit 1).
    """
    t_start = time.monotonic()
    notify = config.notify
    records = list(config.records) if config.records is not None else read_records(config.provenance)
    try:
        iso_sha = file_sha256(config.iso)
    except SourceStoreError as exc:
        raise UsageError(f"--iso: {exc}") from None
    p = plan(records, iso_sha256=iso_sha, read_manifest=manifest_reader(config.provenance))
    notify(f"asl-verify rebuild: commit {p.commit} (tree {p.tree}), SOURCE_DATE_EPOCH {p.epoch}, "
           f"{len(p.sources)} Debian sources, {len(p.tools)} builder packages")
    diffs = check_builder(p, strict=config.strict_builder, notify=notify)

    work = (config.work if config.work is not None else Path(tempfile.mkdtemp(prefix="asl-rebuild-"))).absolute()
    work.mkdir(parents=True, exist_ok=True)
    src = work / "src"
    if src.exists() or (work / "mirror").exists():
        raise UsageError(f"--work {work} is not empty (src/ or mirror/ exists): give a fresh directory")
    stores: list[SourceStore] = []
    debs: dict[str, Path] = {}
    if config.debs is not None:
        if not config.debs.is_dir():
            raise UsageError(f"--debs {config.debs}: not a directory")
        stores.append(SourceStore(config.debs))
        debs = index_dir(config.debs, "*.deb")
    else:
        stores.append(SourceStore(default_root(config.environ)))
    try:
        laid, fetched = lay_out_mirror(p, work / "mirror", stores=stores, debs=debs, uris=_recorded_uris(p),
                                       fetch=config.fetch, notify=notify)
    except SourceStoreError as exc:
        raise RebuildError(str(exc)) from None
    notify(f"asl-verify rebuild: {laid} sources laid out in {work / 'mirror'} ({fetched} fetched)")
    checkout(config.source, p, src)
    notify(f"asl-verify rebuild: checked out {p.commit} in {src}")
    write_config(src / "pipeline" / "image.yaml", work / "image.yaml", mirror=work / "mirror",
                 cache=work / "debs", store=work / "store")
    from asl_capture.keys import generate

    key, _pub, _kid = generate("rebuild", directory=work / "key")
    env = build_env(config.environ, epoch=p.epoch, config=work / "image.yaml", key=key)
    notify(f"asl-verify rebuild: building (log {work / 'build.log'})")
    seconds = run_build(src, env, work / "build.log")
    key.unlink()
    rebuilt = src / p.iso_label
    try:
        rebuilt_sha = file_sha256(rebuilt)
    except SourceStoreError as exc:
        raise RebuildError(f"the rebuild wrote no ISO at {p.iso_label}: {exc}") from None
    prefix = work_prefix(src)
    if rebuilt_sha != p.iso_sha256:
        from asl_capture.rebuildreport import report

        lines = report(original=(config.provenance, config.iso, p.steps),
                       rebuilt=(src / "out" / "provenance", rebuilt),
                       work=work, prefix=prefix, read_records=read_records, last_build=_last_build)
        raise RebuildMismatchError(f"the rebuilt ISO has sha256 {rebuilt_sha}, the ISO given has {p.iso_sha256}",
                                   lines)
    return Outcome(iso_sha256=rebuilt_sha, image_identity=image_identity(src / prefix / "isofs"),
                   build_seconds=seconds, total_seconds=time.monotonic() - t_start,
                   builder_differences=diffs, work=work)

