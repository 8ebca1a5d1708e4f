"""The builder's own tools, as pinned sources (SLSA's "builder dependencies").

The pipeline's first step (``builder``) records, for every host tool the later steps run, the Debian
package that provides it, its version and architecture, and a digest of the files it installed, so
a rebuilder can see whether their host runs the same tools (``asl-verify rebuild`` compares them).

A package's digest is the SHA-256 of the text ``"<sha256 hex>  <path>\\n"`` for each regular file
``dpkg-query -L`` lists for it (sorted by path; documentation under ``/usr/share/{doc,man,info,
locale,lintian}`` left out), which is ``sha256sum`` output over those files:
``dpkg-query -L PKG | sort | while read f; do [ -f "$f" ] && [ ! -L "$f" ] && sha256sum "$f"; done | sha256sum``
gives the same value (with the documentation filter applied). The project's own package is one
more row: its version and the digest of its source tree, computed the same way over its files.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from asl_capture import __version__
from asl_capture.errors import AslError
from asl_capture.hashing import sha256_path

#: What the pipeline runs on the host, by tool, as the Debian packages that provide it. A tuple of
#: alternatives is a choice: the first one installed is recorded.
TOOLS: tuple[tuple[str, tuple[str | tuple[str, ...], ...]], ...] = (
    ("mmdebstrap", ("mmdebstrap",)),
    ("apt", ("apt", "libapt-pkg6.0")),
    ("dpkg", ("dpkg", "tar")),
    ("squashfs-tools", ("squashfs-tools",)),
    ("xorriso", ("xorriso", "libisoburn1", "libisofs6", "libburn4")),
    ("grub", ("grub-common", "grub-pc-bin", "grub-efi-amd64-bin")),
    ("mtools", ("mtools",)),
    ("cpio", ("cpio",)),
    ("gzip", ("gzip",)),
    ("busybox", (("busybox-static", "busybox"),)),
    ("kmod", ("kmod",)),
    ("coreutils", ("coreutils", "findutils")),
    ("python3", ("python3", "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib",
                 "python3-yaml")),
)
_SKIP_PREFIXES = ("/usr/share/doc/", "/usr/share/man/", "/usr/share/info/", "/usr/share/locale/",
                  "/usr/share/lintian/")
SOURCE_KIND = "tool"


class BuilderError(AslError):
    """The host's package database cannot be read, or a tool's package is not installed."""


@dataclass(frozen=True)
class Tool:
    """One host package: what the record holds about it."""

    tool: str
    package: str
    version: str
    architecture: str
    sha256: str

    @property
    def uri(self) -> str:
        """``deb:PACKAGE=VERSION?arch=ARCH`` (for project rows: ``pkg:NAME=VERSION``)."""
        if self.architecture == "":
            return f"pkg:{self.package}={self.version}"
        return f"deb:{self.package}={self.version}?arch={self.architecture}"

    def source(self) -> dict[str, str]:
        """The row written to the step's sources file (``asl-capture --sources``)."""
        return {"uri": self.uri, "sha256": self.sha256, "kind": SOURCE_KIND, "name": self.package,
                "version": self.version, "via": f"tool:{self.tool}"}

    @classmethod
    def from_source(cls, row: Mapping[str, object]) -> Tool | None:
        """The tool a recorded source row names, or None when it is not a tool row."""
        if row.get("kind") != SOURCE_KIND:
            return None
        uri, name, version, via = row.get("uri"), row.get("name"), row.get("version"), row.get("via")
        digest = row.get("sha256")
        if not (isinstance(uri, str) and isinstance(name, str) and isinstance(version, str)
                and isinstance(via, str) and isinstance(digest, bytes | str)):
            return None
        arch = uri.partition("?arch=")[2] if uri.startswith("deb:") else ""
        hexdigest = digest.hex() if isinstance(digest, bytes) else digest
        return cls(tool=via.removeprefix("tool:"), package=name, version=version, architecture=arch,
                   sha256=hexdigest)


def files_digest(paths: Sequence[Path]) -> str:
    """SHA-256 of ``"<sha256>  <path>\\n"`` lines over the regular files of ``paths`` (sorted)."""
    outer = hashlib.sha256()
    for path in sorted(paths, key=os.fsencode):
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        outer.update(f"{sha256_path(path).hex()}  ".encode() + os.fsencode(path) + b"\n")
    return outer.hexdigest()


def _query(args: list[str]) -> str | None:
    try:
        done = subprocess.run(["dpkg-query", *args], capture_output=True, check=False, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuilderError(f"dpkg-query cannot run: {exc}") from None
    return done.stdout.decode("utf-8", "replace") if done.returncode == 0 else None


def package(tool: str, name: str) -> Tool | None:
    """The installed package ``name`` (None when it is not installed).

    Raises:
        BuilderError: dpkg-query cannot run.
    """
    status = _query(["-W", "-f", "${db:Status-Status}\t${Version}\t${Architecture}", name])
    if status is None:
        return None
    fields = status.split("\t")
    if len(fields) != 3 or fields[0] != "installed":
        return None
    listing = _query(["-L", name]) or ""
    files = [Path(line) for line in listing.splitlines()
             if line.startswith("/") and not line.startswith(_SKIP_PREFIXES)]
    return Tool(tool=tool, package=name, version=fields[1], architecture=fields[2], sha256=files_digest(files))


def host_tools() -> tuple[list[Tool], list[str]]:
    """Every tool package of :data:`TOOLS` on this host, and the packages that are missing.

    Raises:
        BuilderError: dpkg-query cannot run.
    """
    found: list[Tool] = []
    missing: list[str] = []
    for tool, packages in TOOLS:
        for choice in packages:
            names = choice if isinstance(choice, tuple) else (choice,)
            got = next((t for t in (package(tool, n) for n in names) if t is not None), None)
            if got is None:
                missing.append(" or ".join(names))
            else:
                found.append(got)
    return found, missing


def project_tool(package_dir: Path) -> Tool:
    """This project's package (the one the image installs): version and source tree digest."""
    files = [p for p in package_dir.rglob("*")
             if "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo") and p.is_file()]
    return Tool(tool="asl-capture", package="asl-capture", version=__version__, architecture="",
                sha256=files_digest(files))


@dataclass(frozen=True)
class ToolDifference:
    """A recorded tool the host does not have in the same version and files."""

    package: str
    recorded: str
    host: str

    def __str__(self) -> str:
        return f"{self.package}: recorded {self.recorded}, host {self.host}"


def compare(recorded: Sequence[Tool], host: Sequence[Tool]) -> list[ToolDifference]:
    """What differs between the recorded tools and the host's (by package; versions, then files)."""
    have = {t.package: t for t in host}
    out: list[ToolDifference] = []
    for rec in recorded:
        if rec.architecture == "":
            continue  # the project's own package comes from the checked-out source
        cur = have.get(rec.package)
        if cur is None:
            out.append(ToolDifference(rec.package, rec.version, "not installed"))
        elif cur.version != rec.version or cur.architecture != rec.architecture:
            out.append(ToolDifference(rec.package, f"{rec.version} ({rec.architecture})",
                                      f"{cur.version} ({cur.architecture})"))
        elif cur.sha256 != rec.sha256:
            out.append(ToolDifference(rec.package, f"{rec.version} files sha256:{rec.sha256[:16]}...",
                                      f"same version, files sha256:{cur.sha256[:16]}... (modified?)"))
    return out
