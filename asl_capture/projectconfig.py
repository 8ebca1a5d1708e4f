"""Project defaults for ``asl-capture`` from ``[tool.asl-capture]`` in ``./pyproject.toml``.

So that a release engineer's plain ``asl-capture -- ./pipeline/build.sh`` writes where the project
wants (``provenance``) and leaves out its scratch trees (``exclude``). Command-line options and
``$ASL_CAPTURE_DIR`` take precedence over these values.
"""

from __future__ import annotations

from pathlib import Path

from asl_capture import safeio
from asl_capture.errors import UsageError
from asl_capture.frozen import frozen

#: A pyproject.toml larger than this is refused (it is read whole, before anything runs).
MAX_SIZE = 4 << 20
_KEYS = frozenset({"provenance", "exclude", "writable", "user"})


@frozen
class ProjectConfig:
    """Defaults read from the project's ``pyproject.toml``."""

    provenance: Path | None = None
    excludes: tuple[str, ...] = ()
    #: Directories (relative to the project) a step running as the build user may write in.
    writable: tuple[Path, ...] = ()
    #: Who a root capture of this project runs its command as (as ``--user``; ``root`` as ``--as-root``).
    user: str | None = None


def load(directory: Path) -> ProjectConfig:
    """The ``[tool.asl-capture]`` table of ``directory/pyproject.toml``, or empty defaults.

    Raises:
        UsageError: the file is not valid TOML or the table has unknown keys or wrong types.
    """
    path = directory / "pyproject.toml"
    try:
        text = safeio.read_regular(path, limit=MAX_SIZE, what="pyproject.toml", follow=True)
    except safeio.UnsafeFile as exc:
        raise UsageError(f"{path}: {exc.args[-1]}") from None
    except OSError:
        return ProjectConfig()
    if b"asl-capture]" not in text:  # skip parsing files that cannot hold the table
        return ProjectConfig()
    import tomllib

    try:
        data = tomllib.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None
    table = data.get("tool", {}).get("asl-capture")
    if table is None:
        return ProjectConfig()
    if not isinstance(table, dict) or table.keys() - _KEYS:
        raise UsageError(f"{path}: [tool.asl-capture] accepts only {', '.join(sorted(_KEYS))}")
    provenance = table.get("provenance")
    excludes = table.get("exclude", [])
    if provenance is not None and not isinstance(provenance, str):
        raise UsageError(f"{path}: [tool.asl-capture] provenance must be a string")
    if not isinstance(excludes, list) or not all(isinstance(e, str) for e in excludes):
        raise UsageError(f"{path}: [tool.asl-capture] exclude must be a list of strings")
    writable = table.get("writable", [])
    if not isinstance(writable, list) or not all(isinstance(w, str) and w for w in writable):
        raise UsageError(f"{path}: [tool.asl-capture] writable must be a list of directory names")
    user = table.get("user")
    if user is not None and (not isinstance(user, str) or not user):
        raise UsageError(f"{path}: [tool.asl-capture] user must be a user name")
    return ProjectConfig(provenance=Path(provenance) if provenance else None, excludes=tuple(excludes),
                         writable=tuple(directory / w for w in writable), user=user)
