"""What a record says about where a step ran: host, source checkout (``vcs``), pinned ``sources``."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path

from asl_capture import __version__, safeio
from asl_capture.errors import CaptureError
from asl_capture.format import Host, Source, Vcs

_HEX64 = re.compile(r"[0-9a-f]{64}")
_SOURCE_KEYS = frozenset({"uri", "sha256", "kind", "via", "name", "version", "size"})


def host_info() -> Host:
    """Hostname, kernel, machine, tool and Python version."""
    uname = os.uname()
    return Host(hostname=uname.nodename, kernel=uname.release, machine=uname.machine,
                tool=f"asl-capture {__version__}", python=platform.python_version())


def find_checkout(start: Path) -> Path | None:
    """The nearest directory at or above ``start`` holding ``.git``."""
    current = start.absolute()
    while True:
        if (current / ".git").exists():
            return current
        if current.parent == current:
            return None
        current = current.parent


def _git(checkout: Path, *args: str) -> str | None:
    # A step runs as the build user in a checkout root owns, where git refuses ("dubious ownership"):
    # a checkout of root's, or of this user's, is as trusted as this process, so it is named safe.
    try:
        owner = os.stat(checkout).st_uid
    except OSError:
        return None
    safe = ["-c", f"safe.directory={checkout}"] if owner in (0, os.geteuid()) else []
    try:
        done = subprocess.run(
            ["git", *safe, "-C", str(checkout), *args], capture_output=True, check=False, timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.decode("utf-8", "replace").strip() if done.returncode == 0 else None


def vcs_info(start: Path) -> Vcs | None:
    """Commit, tree and dirtiness of the git checkout holding ``start``, or None outside one."""
    checkout = find_checkout(start)
    if checkout is None:
        return None
    commit = _git(checkout, "rev-parse", "--verify", "HEAD")
    tree = _git(checkout, "rev-parse", "--verify", "HEAD^{tree}")
    status = _git(checkout, "status", "--porcelain")
    if commit is None or tree is None or status is None:
        return None
    return Vcs(commit=commit, tree=tree, dirty=bool(status))


#: A sources file (written by the step, so not trusted) larger than this is refused.
MAX_SOURCES_SIZE = 256 << 20


def read_sources(path: Path) -> tuple[Source, ...]:
    """Parse a step's sources file: JSON Lines of ``{"uri", "sha256", "kind", "via"?, ...}``.

    Raises:
        CaptureError: unreadable file or a malformed line (named by number).
    """
    import json  # only steps that declare sources need it: start-up stays small
    try:
        text = safeio.read_regular(path, limit=MAX_SOURCES_SIZE, what="sources file").decode("utf-8")
    except OSError as exc:
        raise CaptureError(f"{path}: cannot read sources file: {safeio.describe(exc)}") from None
    except UnicodeDecodeError as exc:
        raise CaptureError(f"{path}: cannot read sources file: {exc}") from None
    sources: list[Source] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CaptureError(f"{path}:{number}: not JSON: {exc.msg}") from None
        if not isinstance(obj, dict) or not {"uri", "sha256", "kind"} <= obj.keys() or obj.keys() - _SOURCE_KEYS:
            raise CaptureError(f"{path}:{number}: a source needs uri, sha256 and kind (optional: via, name, "
                               f"version, size) and nothing else")
        for key, value in obj.items():
            if key == "sha256":
                if not isinstance(value, str) or not _HEX64.fullmatch(value):
                    raise CaptureError(f"{path}:{number}: sha256 must be 64 lowercase hex digits")
            elif key == "size":
                if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 64:
                    raise CaptureError(f"{path}:{number}: size must be a non-negative integer")
            elif not isinstance(value, str):
                raise CaptureError(f"{path}:{number}: {key} must be a string")
        sources.append(Source(**{**obj, "sha256": bytes.fromhex(obj["sha256"])}))
    return tuple(sources)
