#!/usr/bin/env python3
"""Debian sources for the rootfs step (stdlib only).

``aptsources.py mirrors --suites "bookworm bookworm-updates" --components main [--mirror URI
--security-mirror URI]`` prints one mmdebstrap mirror line per suite (``deb [signed-by=..] URI SUITE
COMPONENTS``). Without ``--mirror`` the URIs come from this machine's apt sources
(``/etc/apt/sources.list``, ``/etc/apt/sources.list.d/*.list`` and ``*.sources``), so no mirror host
name is ever written into the repository.

``aptsources.py pinned --root DIR --archives DIR [--cache DIR --store DIR] --out FILE`` runs inside
the rootfs step after the packages are installed (apt lists still present) and writes the pinned
sources as JSON Lines: every installed ``.deb`` with its SHA-256 as listed in the Packages index
(checked against the file apt installed, in ``--archives``), each Packages index with its SHA-256 as
listed in InRelease (checked against the downloaded file), and each InRelease file with its own
SHA-256. With ``--store``, every one of those files is also kept in the durable source store
(``STORE/<sha256 hex>``, see :mod:`asl_capture.sourcestore`), and with ``--cache`` each ``.deb`` in the flat
package cache that the next build copies into apt's archive directory. Each keyring apt trusted (the
``signed-by`` files of ``--mirrors``) is listed too (``kind`` ``keyring``), and with ``--save DIR`` the
InRelease, Packages and keyring files are copied into DIR, which the rootfs step attaches to its
record (``asl-capture --attach``) so that ``asl-verify iso`` checks Debian's signatures offline.

Errors: one line on stderr, exit status 2 (bad configuration) or 1 (a digest does not match).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

APT_DIR = Path(os.environ.get("ASL_APT_DIR", "/etc/apt"))


class SourcesError(Exception):
    """A one-line problem with the apt sources or the pinned digests."""

    code = 2


class DigestMismatch(SourcesError):
    """A downloaded file does not match the digest its signed index lists."""

    code = 1


@dataclass(frozen=True)
class Entry:
    """One ``deb`` source: URI, suites, components and the keyring that signs it."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None


def _one_line(path: Path) -> list[Entry]:
    out: list[Entry] = []
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        opts: dict[str, str] = {}
        m = re.match(r"^(\S+)\s+\[([^\]]*)\]\s+(.*)$", line)
        if m:
            kind, optstr, rest = m.group(1), m.group(2), m.group(3)
            for item in optstr.split():
                if "=" in item:
                    k, v = item.split("=", 1)
                    opts[k.lower()] = v
        else:
            kind, _, rest = line.partition(" ")
        if kind != "deb":
            continue
        fields = rest.split()
        if len(fields) < 2:
            continue
        out.append(Entry(fields[0].rstrip("/"), (fields[1],), tuple(fields[2:]), opts.get("signed-by")))
    return out


def _deb822(path: Path) -> list[Entry]:
    out: list[Entry] = []
    text = path.read_text(encoding="utf-8", errors="replace")
    for para in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for raw in para.splitlines():
            if raw.startswith("#"):
                continue
            if raw[:1] in (" ", "\t") and key:
                fields[key] += "\n" + raw.strip()
                continue
            if ":" in raw:
                key, _, value = raw.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        signed = fields.get("signed-by")
        if signed is not None and "\n" in signed:
            signed = None  # an inline key block: let apt's default keyrings decide
        for uri in fields.get("uris", "").split():
            out.append(Entry(uri.rstrip("/"), tuple(fields.get("suites", "").split()),
                             tuple(fields.get("components", "").split()), signed))
    return out


def host_entries(apt_dir: Path = APT_DIR) -> list[Entry]:
    """Every enabled ``deb`` entry of the machine's apt sources, in apt's reading order."""
    entries: list[Entry] = []
    main = apt_dir / "sources.list"
    if main.is_file():
        entries += _one_line(main)
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.name.endswith(".list"):
                entries += _one_line(path)
            elif path.name.endswith(".sources"):
                entries += _deb822(path)
    return entries


def mirror_lines(suites: list[str], components: list[str], mirror: str | None,
                 security_mirror: str | None, apt_dir: Path = APT_DIR) -> list[str]:
    """mmdebstrap mirror arguments for ``suites``. Raises SourcesError when the base suite has no source."""
    comps = " ".join(components)
    lines: list[str] = []
    if mirror:
        for suite in suites:
            uri = security_mirror if suite.endswith("-security") and security_mirror else mirror
            lines.append(f"deb {uri.rstrip('/')} {suite} {comps}")
        return lines
    entries = host_entries(apt_dir)
    for i, suite in enumerate(suites):
        match = next((e for e in entries if suite in e.suites and set(components) <= set(e.components)), None)
        if match is None:
            if i == 0:
                raise SourcesError(
                    f"no apt source for suite {suite} ({comps}) in {apt_dir}; set mirror in image.yaml")
            sys.stderr.write(f"aptsources: warning: no apt source for {suite}; building without it\n")
            continue
        opt = f"[signed-by={match.signed_by}] " if match.signed_by and Path(match.signed_by).is_file() else ""
        lines.append(f"deb {opt}{match.uri} {suite} {comps}")
    return lines


def _sha256_file(path: Path) -> str:
    from asl_capture.hashing import sha256_path  # PYTHONPATH = the repository (rootfs.sh), as for sourcestore

    return sha256_path(path).hex()


def _stanzas(text: str) -> list[dict[str, str]]:
    out = []
    for para in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in para.splitlines():
            if line[:1] in (" ", "\t") or ":" not in line:
                continue
            k, _, v = line.partition(":")
            fields[k] = v.strip()
        if fields:
            out.append(fields)
    return out


def _release_sha256(text: str) -> dict[str, str]:
    """``{path: sha256}`` from the SHA256 section of a (clear-signed) Release file."""
    out: dict[str, str] = {}
    in_section = False
    for line in text.splitlines():
        if line.startswith("SHA256:"):
            in_section = True
            continue
        if in_section:
            if not line.startswith(" "):
                in_section = False
                continue
            parts = line.split()
            if len(parts) == 3:
                out[parts[2]] = parts[0]
    return out


def _save(path: Path, save: Path | None, name: str) -> None:
    """Copy ``path`` to ``save/name`` (the step attaches that directory: the bytes become provenance objects)."""
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        (save / name).write_bytes(path.read_bytes())


def keyrings(mirrors: Path | None, root: Path) -> list[Path]:
    """The keyrings apt trusted: each ``signed-by`` of the mirror lines, else the root's trusted.gpg.d."""
    found: list[Path] = []
    if mirrors is not None:
        for line in mirrors.read_text(encoding="utf-8").splitlines():
            m = re.search(r"signed-by=([^\s\]]+)", line)
            if m and Path(m.group(1)) not in found:
                found.append(Path(m.group(1)))
    if not found:
        parts = root / "etc/apt/trusted.gpg.d"
        found = sorted(p for p in parts.iterdir() if p.suffix in (".gpg", ".asc")) if parts.is_dir() else []
        if (root / "etc/apt/trusted.gpg").is_file():
            found.append(root / "etc/apt/trusted.gpg")
    for path in found:
        if not path.is_file():
            raise SourcesError(f"keyring {path} (signed-by of the mirror lines) not found")
    return found


def pinned(root: Path, archives: Path, *, store: Path | None = None, cache: Path | None = None,
           save: Path | None = None, mirrors: Path | None = None) -> list[dict[str, str]]:
    """The pinned sources of an installed root whose apt lists are still present.

    ``archives`` holds the ``.deb`` files apt installed; they, the InRelease files and the Packages
    indexes are kept in ``store`` by digest, and the ``.deb`` files in the flat ``cache``.

    Raises:
        SourcesError: the lists or the package database cannot be read.
        DigestMismatch: a file does not match the digest its signed index lists.
    """
    fmt = "$(URI)\t$(FILENAME)\t$(METAKEY)\t$(BASE_URI)\t$(REPO_URI)\t$(CREATED_BY)"
    try:
        targets = subprocess.run(["chroot", str(root), "apt-get", "indextargets", "--format", fmt],
                                 check=True, capture_output=True, text=True).stdout
        installed = subprocess.run(
            ["chroot", str(root), "dpkg-query", "-W", "-f", "${Package}\t${Version}\t${Architecture}\n"],
            check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SourcesError(f"cannot query apt/dpkg in {root}: {exc}") from None
    wanted = {tuple(line.split("\t")) for line in installed.splitlines() if line}
    cached: dict[str, Path] = {}
    if archives.is_dir():
        for deb in sorted(archives.glob("*.deb")):
            cached[_sha256_file(deb)] = deb
    keep: dict[str, Path] = {}
    records: list[dict[str, str]] = []
    found: dict[tuple[str, ...], dict[str, str]] = {}
    for line in sorted(targets.splitlines()):
        uri, filename, metakey, base_uri, repo_uri, created_by = line.split("\t")
        if created_by != "Packages":
            continue
        local = root / filename.lstrip("/")
        inrelease = local.with_name(local.name[: -len(metakey.replace("/", "_"))] + "InRelease")
        if not local.is_file() or not inrelease.is_file():
            raise SourcesError(f"missing apt list {local.name} or {inrelease.name} under {root}")
        rel_text = inrelease.read_text(encoding="utf-8", errors="replace")
        rel_uri = base_uri + "InRelease"
        rel_digest = _sha256_file(inrelease)
        records.append({"uri": rel_uri, "sha256": rel_digest, "kind": "release"})
        listed = _release_sha256(rel_text).get(metakey)
        actual = _sha256_file(local)
        if listed != actual:
            raise DigestMismatch(f"{uri}: sha256 {actual} but InRelease lists {listed}")
        keep[rel_digest] = inrelease
        keep[actual] = local
        _save(inrelease, save, inrelease.name)
        _save(local, save, local.name)
        records.append({"uri": uri, "sha256": actual, "kind": "index", "via": rel_uri})
        for st in _stanzas(local.read_text(encoding="utf-8", errors="replace")):
            key = (st.get("Package", ""), st.get("Version", ""), st.get("Architecture", ""))
            if key in wanted and key not in found:
                digest = st.get("SHA256", "").lower()
                if cached and digest not in cached:
                    continue  # listed here too, but the file apt fetched came from another index
                found[key] = {"uri": repo_uri + st["Filename"], "sha256": digest, "kind": "deb", "via": uri}
                if digest in cached:
                    keep[digest] = cached[digest]
    missing = sorted(wanted - set(found))
    if missing:
        raise SourcesError(f"installed but not found in any index with a matching cached .deb: "
                           f"{' '.join('='.join(k[:2]) for k in missing[:5])}")
    records += sorted(found.values(), key=lambda r: r["uri"])
    for ring in keyrings(mirrors, root):
        records.append({"uri": ring.absolute().as_uri(), "sha256": _sha256_file(ring), "kind": "keyring"})
        _save(ring, save, "keyring_" + ring.name)
    if store is not None:
        from asl_capture.sourcestore import SourceStore  # PYTHONPATH = the repository (rootfs.sh)

        kept = SourceStore(store)
        for digest, path in sorted(keep.items()):
            kept.put(path, digest)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        for digest in sorted(r["sha256"] for r in found.values()):
            kept_deb = cached.get(digest)
            if kept_deb is None:
                continue
            dest = cache / kept_deb.name
            if not dest.is_file() or _sha256_file(dest) != digest:
                _copy_atomic(kept_deb, dest)
    unique: dict[str, dict[str, str]] = {}
    for r in records:
        unique.setdefault(r["uri"], r)
    return list(unique.values())


def _copy_atomic(src: Path, dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description="Debian sources for the rootfs step")
    sub = parser.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("mirrors")
    m.add_argument("--suites", required=True)
    m.add_argument("--components", required=True)
    m.add_argument("--mirror", default="")
    m.add_argument("--security-mirror", default="")
    p = sub.add_parser("pinned")
    p.add_argument("--root", required=True, type=Path)
    p.add_argument("--archives", required=True, type=Path)
    p.add_argument("--cache", type=Path)
    p.add_argument("--store", type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--save", type=Path, help="copy InRelease, Packages and keyrings here")
    p.add_argument("--mirrors", type=Path, help="the mirror lines given to mmdebstrap (for signed-by)")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "mirrors":
            for line in mirror_lines(args.suites.split(), args.components.split(),
                                     args.mirror or None, args.security_mirror or None):
                sys.stdout.write(line + "\n")
        else:
            rows = pinned(args.root, args.archives, store=args.store, cache=args.cache, save=args.save,
                          mirrors=args.mirrors)
            args.out.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows), encoding="utf-8")
            debs = sum(1 for r in rows if r["kind"] == "deb")
            sys.stderr.write(f"aptsources: {len(rows)} pinned sources ({debs} packages) -> {args.out}\n")
    except SourcesError as exc:
        sys.stderr.write(f"aptsources: {exc}\n")
        return exc.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
