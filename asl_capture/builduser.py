"""The unprivileged user a root capture runs its command as (issue 23).

Build steps run code from the internet, often as root. A step running as root could read the key
holder's memory (``/proc/PID/mem``: ``CAP_SYS_PTRACE`` ignores ``PR_SET_DUMPABLE``), its
environment and the key file, and rewrite the provenance directory. So ``asl-capture``, run as
root, runs the command as the build user ``asl-build`` by default (``--user NAME`` for another,
``--as-root`` to keep root, which the record then states): a process of another, unprivileged user
gets ``EACCES`` for all of those. Root-only work inside a step (chroot, mmdebstrap) happens in user
namespaces, for which the build user is given a range of subordinate ids (``/etc/subuid``,
``/etc/subgid``).

The default user is created on first use (``useradd --system``, home ``/var/lib/asl-build``, no
login shell) with a 65,536-id subordinate range after every range already given out.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

from asl_capture.errors import UsageError
from asl_capture.frozen import frozen

DEFAULT_USER = "asl-build"
DEFAULT_HOME = Path("/var/lib/asl-build")
SUBID_COUNT = 65536
_SUBID_FLOOR = 100000


@frozen
class BuildUser:
    """Who the command runs as: name, uid, primary gid and home directory."""

    name: str
    uid: int
    gid: int
    home: str


def _entry(name: str) -> BuildUser | None:
    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except (KeyError, ValueError):
        return None
    return BuildUser(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid, home=entry.pw_dir)


def resolve(name: str) -> BuildUser:
    """The user ``name`` (a name or a uid); the default user is created when it does not exist.

    Raises:
        UsageError: the user does not exist (and is not the default), is root, or cannot be created.
    """
    user = _entry(name)
    if user is None and name == DEFAULT_USER:
        _create_default()
        user = _entry(name)
    if user is None:
        raise UsageError(f"--user {name}: no such user")
    if user.uid == 0:
        raise UsageError(f"--user {name}: that is root; use --as-root to run the command as root")
    return user


def _run(argv: list[str]) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, check=False, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"cannot create the build user {DEFAULT_USER} ({argv[0]}: {exc}); create it, or pass "
                         f"--user NAME or --as-root") from None
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise UsageError(f"cannot create the build user {DEFAULT_USER}: {argv[0]} failed"
                         f"{': ' + reason[-1] if reason else ''}; create it, or pass --user NAME or --as-root")


def next_subid_range(path: Path) -> int:
    """The first id after every range given out in ``path`` (``/etc/subuid`` format), at least 100000."""
    start = _SUBID_FLOOR
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return start
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            start = max(start, int(parts[1]) + int(parts[2]))
    return start


def _create_default() -> None:
    if not os.path.exists(DEFAULT_HOME.parent):
        os.makedirs(DEFAULT_HOME.parent, 0o755, exist_ok=True)
    _run(["useradd", "--system", "--user-group", "--home-dir", str(DEFAULT_HOME), "--create-home",
          "--shell", "/usr/sbin/nologin", "--comment", "asl-capture build steps", DEFAULT_USER])
    first = max(next_subid_range(Path("/etc/subuid")), next_subid_range(Path("/etc/subgid")))
    span = f"{first}-{first + SUBID_COUNT - 1}"
    _run(["usermod", "--add-subuids", span, "--add-subgids", span, DEFAULT_USER])


def grant(directory: Path, user: BuildUser) -> None:
    """Let ``user`` create entries in ``directory`` (made if missing) without removing or renaming
    anyone else's: group ``user``'s, mode 3775 (setgid, sticky). Only that directory is changed.

    Raises:
        UsageError: it cannot be made or changed.
    """
    try:
        os.makedirs(directory, 0o755, exist_ok=True)
        st = os.lstat(directory)
        if not (st.st_mode & 0o170000 == 0o040000):
            raise UsageError(f"{directory}: a writable directory for the build user is not a directory")
        if st.st_uid != user.uid:
            os.chown(directory, -1, user.gid, follow_symlinks=False)
            os.chmod(directory, (st.st_mode & 0o7777) | 0o3770 | 0o005)  # noqa: S103 - the build user's group
    except OSError as exc:
        raise UsageError(f"{directory}: cannot make it writable for the build user: {exc.strerror}") from None


def reachable(path: str, user: BuildUser, *, need: int) -> bool:
    """Whether ``user`` (uid, primary group) can reach ``path`` through its directories and has the
    permission bits ``need`` (4 read, 1 execute, combined) on it; symlinks in ``path`` resolved."""
    real = os.path.realpath(path)
    parts = real.split("/")
    try:
        for depth in range(1, len(parts)):
            directory = "/".join(parts[:depth]) or "/"
            if not _allowed(os.stat(directory), user, 1):
                return False
        return _allowed(os.stat(real), user, need)
    except OSError:
        return False


def _allowed(st: os.stat_result, user: BuildUser, need: int) -> bool:
    if st.st_uid == user.uid:
        bits = st.st_mode >> 6
    elif st.st_gid == user.gid:
        bits = st.st_mode >> 3
    else:
        bits = st.st_mode
    return bits & need == need


def make_launcher(directory: Path, user: BuildUser, *, interpreter: str, package_parent: str) -> Path:
    """Write ``directory/bin/asl-capture`` for ``user``'s processes and return ``directory/bin``.

    Nested captures run as the build user, who may not reach the interpreter or the package that
    runs this capture (a Python under ``/root``): the launcher uses ``interpreter`` when the user can
    execute it, else Debian's ``/usr/bin/python3``, and this package where the user can read it, else
    a copy of it in ``directory/lib``.

    Raises:
        UsageError: no usable interpreter, or the launcher cannot be written.
    """
    import shutil

    python = _interpreter(interpreter, user)
    lib = package_parent
    try:
        if not reachable(os.path.join(package_parent, "asl_capture", "__init__.py"), user, need=4):
            lib = str(directory / "lib")
            shutil.copytree(os.path.join(package_parent, "asl_capture"), os.path.join(lib, "asl_capture"),
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            for root, dirs, files in os.walk(lib):
                for name in dirs:
                    os.chmod(os.path.join(root, name), 0o755)  # noqa: S103 - program code, no secret
                for name in files:
                    os.chmod(os.path.join(root, name), 0o644)
        bin_dir = directory / "bin"
        bin_dir.mkdir(mode=0o755)
        script = bin_dir / "asl-capture"
        script.write_text(_script(python, lib), encoding="utf-8")
        os.chmod(script, 0o755)  # noqa: S103 - a launcher every step may run
        os.chmod(directory, 0o755)  # noqa: S103
    except OSError as exc:
        raise UsageError(f"{directory}: cannot write the build user's asl-capture launcher: {exc.strerror}") from None
    return bin_dir


def _interpreter(interpreter: str, user: BuildUser) -> str:
    """``interpreter`` when ``user`` can run it, else Debian's ``/usr/bin/python3``.

    Raises:
        UsageError: the user can run neither.
    """
    python = interpreter if reachable(interpreter, user, need=5) else "/usr/bin/python3"
    if not reachable(python, user, need=5):
        raise UsageError(f"the build user {user.name} can run neither {interpreter} nor /usr/bin/python3, so the "
                         f"captures nested in the command cannot start; use --as-root or install python3")
    return python


def _script(python: str, lib: str) -> str:
    quote = "'\\''"
    return ("#!/bin/sh\n# asl-capture for the steps of a build (written by the capture that runs them)\n"
            f"PYTHONPATH='{lib.replace(chr(39), quote)}'${{PYTHONPATH:+:$PYTHONPATH}} "
            f"exec '{python.replace(chr(39), quote)}' -m asl_capture.cli.capture \"$@\"\n")


#: Where launchers that need no copy of the package are kept between captures (root's, 0755).
KEPT = Path("/run/asl-capture")


def kept_launcher(user: BuildUser, *, interpreter: str, package_parent: str) -> Path | None:
    """The kept launcher directory for this interpreter, package and user (made on first use), or
    None when the package must be copied or ``/run`` cannot hold it. A kept launcher is used only
    when it and its directories are root's, not writable by others, and say exactly what they should.
    """
    import hashlib

    if os.geteuid() != 0 or not reachable(os.path.join(package_parent, "asl_capture", "__init__.py"), user, need=4):
        return None
    python = _interpreter(interpreter, user)
    text = _script(python, package_parent)
    name = hashlib.sha256(f"{user.uid}:{user.gid}\0{text}".encode("utf-8", "surrogateescape")).hexdigest()[:24]
    directory = KEPT / name
    script = directory / "bin" / "asl-capture"
    try:
        if _safe(KEPT) and _safe(directory) and _safe(script.parent) and _safe(script, text=text):
            return directory
        os.makedirs(KEPT, 0o755, exist_ok=True)
        if not _safe(KEPT):
            return None
        import shutil
        import tempfile

        fresh = Path(tempfile.mkdtemp(prefix=".new-", dir=KEPT))
        try:
            make_launcher(fresh, user, interpreter=interpreter, package_parent=package_parent)
            os.rename(fresh, directory)
        except OSError:
            shutil.rmtree(fresh, ignore_errors=True)
            if _safe(directory) and _safe(script.parent) and _safe(script, text=text):  # another capture won
                return directory
            return None
        except UsageError:
            shutil.rmtree(fresh, ignore_errors=True)
            raise
    except OSError:
        return None
    return directory


def _safe(path: Path, *, text: str | None = None) -> bool:
    """Root's, not a symlink, writable by root only; a file saying exactly ``text`` when given."""
    try:
        st = os.lstat(path)
        if st.st_uid != 0 or st.st_mode & 0o022 or (os.path.islink(path)):
            return False
        if text is None:
            return os.path.isdir(path)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            return os.read(fd, len(text) + 1) == text.encode("utf-8", "surrogateescape")
        finally:
            os.close(fd)
    except OSError:
        return False
