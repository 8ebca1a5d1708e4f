#!/usr/bin/env python3
"""Build the ISO root: rootfs + trimmed kernel modules + overlay/ + the host runtime (stdlib only).

The host runtime is the Python package ``--package`` (``asl_host``) plus exactly the modules of
``--shared`` (``asl_capture``) that it imports, directly or through each other (:func:`import_closure`,
read from the sources with :mod:`ast`), so the image carries no build-tool code it never runs.

Refuses, with a one-line error and exit status 2, overlay entries that could escape the root:
absolute symlinks, relative symlinks whose target leaves the root (``..``), device nodes, fifos and
sockets. Modes are normalised (directories 0755, files 0755 when any execute bit is set in the
checkout, else 0644; owner root) so the umask of the checkout does not leak into the image.
``.keep`` files (which only make git keep empty directories) are not copied.
Merging resolves every path inside the target root, chroot-style: a symlink in the rootfs such as
``bin -> usr/bin`` is followed within the root, never on the build host.
"""

from __future__ import annotations

import argparse
import ast
import os
import posixpath
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

KEEP = ".keep"
_INSMOD = re.compile(r"^insmod (/.+\.ko(?:\.[a-z0-9]+)?)(?: [^/]*)?$")
_MAX_LINKS = 40


class OverlayError(Exception):
    """A one-line reason to refuse the overlay or the inputs."""


def _norm_mode(st_mode: int) -> int:
    if stat.S_ISDIR(st_mode):
        return 0o755
    return 0o755 if st_mode & 0o111 else 0o644


def _check_link(rel: str, target: str) -> None:
    if target.startswith("/"):
        raise OverlayError(f"overlay/{rel}: absolute symlink target {target!r} refused (use a relative one)")
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
    if joined == ".." or joined.startswith("../"):
        raise OverlayError(f"overlay/{rel}: symlink target {target!r} escapes the root")


def stage_overlay(src: Path, dest: Path) -> list[str]:
    """Copy ``src`` to ``dest`` with normalised modes, refusing unsafe entries; returns relative paths."""
    if not src.is_dir():
        raise OverlayError(f"{src}: overlay directory not found")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    os.chmod(dest, 0o755)  # noqa: S103 (image directory)
    done: list[str] = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, src)
        for name in sorted(dirnames + filenames):
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if ".." in rel.split(os.sep) or name in ("", ".", ".."):
                raise OverlayError(f"overlay/{rel}: path component '..' refused")
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            out = dest / rel
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(path)
                _check_link(rel, target)
                os.symlink(target, out)
                if name in dirnames:
                    dirnames.remove(name)  # never walk into a symlinked directory
            elif stat.S_ISDIR(st.st_mode):
                out.mkdir()
                os.chmod(out, 0o755)  # noqa: S103 (image directory)
            elif stat.S_ISREG(st.st_mode):
                if name == KEEP:
                    continue
                shutil.copyfile(path, out, follow_symlinks=False)
                os.chmod(out, _norm_mode(st.st_mode))
            else:
                kind = "device node" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "special file"
                raise OverlayError(f"overlay/{rel}: {kind} refused")
            done.append(rel)
    return done


#: Where the pinned trust goes in the image (relative to the root; asl_host.paths reads it there).
TRUST_DIR = "etc/asl-auth-host"
_TRUST_MAX = 64 * 1024


def stage_trust(staged: Path, roots: Path, policy_hash: Path) -> list[str]:
    """Put the pinned trust (root set, policy.hash) into the staged overlay; returns their paths.

    Raises:
        OverlayError: a file missing, not regular, too large, or ``policy.hash`` not one
            ``sha256:<64 hex>`` line.
    """
    out: list[str] = []
    for src, name in ((roots, "roots.cbor"), (policy_hash, "policy.hash")):
        try:
            st = os.lstat(src)
        except OSError as exc:
            raise OverlayError(f"trust: {src}: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode) or st.st_size > _TRUST_MAX or st.st_size == 0:
            raise OverlayError(f"trust: {src}: expected a regular file of at most {_TRUST_MAX} bytes")
        data = src.read_bytes()
        if name == "policy.hash":
            text = data.decode("ascii", "replace").strip()
            if len(text) != 71 or not text.startswith("sha256:") or any(c not in "0123456789abcdef" for c in text[7:]):
                raise OverlayError(f"trust: {src}: expected one line 'sha256:<64 hex>'")
        rel = f"{TRUST_DIR}/{name}"
        dest = staged / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists() and dest.read_bytes() == data:
            out.append(rel)
            continue
        dest.unlink(missing_ok=True)
        dest.write_bytes(data)
        os.chmod(dest, 0o644)
        out.append(rel)
    return out


def resolve_in_root(root: Path, rel: str) -> Path:
    """The host path of ``/rel`` inside ``root``, following symlinks inside the root only."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if candidate.is_symlink() and parts:  # intermediate component: follow it within the root
            hops += 1
            if hops > _MAX_LINKS:
                raise OverlayError(f"/{rel}: too many symlinks in the target root")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def merge(staged: Path, root: Path, rels: list[str], epoch: int) -> None:
    """Merge the staged overlay into ``root`` (files replace, directories merge)."""
    for rel in rels:
        src = staged / rel
        dst = resolve_in_root(root, rel)
        st = os.lstat(src)
        if stat.S_ISDIR(st.st_mode):
            if dst.is_symlink():
                dst = resolve_in_root(root, os.path.relpath(os.path.realpath(dst), os.path.realpath(root)))
            if not dst.is_dir():
                if dst.exists():
                    dst.unlink()
                dst.mkdir()
            os.chmod(dst, 0o755)  # noqa: S103 (image directory)
            continue
        if dst.is_symlink() or dst.is_file():
            dst.unlink()
        elif dst.is_dir():
            raise OverlayError(f"overlay/{rel}: would replace a directory of the root")
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copyfile(src, dst)
            os.chmod(dst, stat.S_IMODE(st.st_mode))
            os.chown(dst, 0, 0) if os.geteuid() == 0 else None
        os.utime(dst, (epoch, epoch), follow_symlinks=False)


def package_files(src: Path) -> list[Path]:
    """The files of the Python package ``src`` that are installed (no bytecode, no dot files), sorted.

    Raises:
        OverlayError: ``src`` is not a package, or holds something other than regular files.
    """
    if not (src / "__init__.py").is_file():
        raise OverlayError(f"{src}: not a Python package")
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith((".pyc", ".pyo")) or name.startswith("."):
                continue
            path = Path(dirpath) / name
            if not stat.S_ISREG(os.lstat(path).st_mode):
                raise OverlayError(f"{path}: only regular files are installed from the package")
            files.append(path)
    return files


def _module_file(shared: Path, module: str) -> Path | None:
    """The source file of ``module`` (``shared.a.b``) inside ``shared``, or None (a name, not a module)."""
    rel = module.split(".")[1:]
    base = shared.joinpath(*rel)
    for candidate in (base.with_suffix(".py") if rel else None, base / "__init__.py"):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _imported(path: Path, name: str) -> set[str]:
    """Modules of package ``name`` that the source file ``path`` imports (anywhere in the file)."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as exc:
        raise OverlayError(f"{path}: cannot parse: {exc.msg} (line {exc.lineno})") from None
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name == name or a.name.startswith(name + "."))
        elif (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
              and (node.module == name or node.module.startswith(name + "."))):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)  # submodules; names are dropped
    return found


def import_closure(package: Path, shared: Path) -> list[Path]:
    """The files of ``shared`` that ``package`` imports, transitively, with their packages' ``__init__``.

    Raises:
        OverlayError: a source cannot be parsed, or an imported module of ``shared`` does not exist.
    """
    name = shared.name
    todo = [f for f in package_files(package) if f.suffix == ".py"]
    needed: set[Path] = set()
    while todo:
        for module in sorted(_imported(todo.pop(), name)):
            parts = module.split(".")
            for depth in range(1, len(parts) + 1):
                prefix = ".".join(parts[:depth])
                found = _module_file(shared, prefix)
                if found is None:
                    if depth < len(parts):
                        raise OverlayError(f"{module}: imported by the host runtime but not in {shared}")
                    continue  # the last part names an attribute, not a module
                if found not in needed:
                    needed.add(found)
                    todo.append(found)
    return sorted(needed)


def install_files(files: list[Path], base: Path, root: Path, dest: str) -> int:
    """Copy ``files`` (below ``base``) byte-for-byte into ``root/dest/<base name>/...``; returns the count.

    The target package directory is replaced, so nothing from an earlier install remains.
    """
    target = resolve_in_root(root, posixpath.join(dest.strip("/"), base.name))
    if target.exists():
        shutil.rmtree(target)
    for path in files:
        out = target / path.relative_to(base)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out)
        os.chmod(out, 0o644)
    for dirpath, _dirs, _files in os.walk(target):
        os.chmod(dirpath, 0o755)  # noqa: S103 (image directory)
    return len(files)


def trim_modules(root: Path, modules: list[str]) -> list[str]:
    """Keep only ``modules`` and their dependencies; rerun depmod. Returns the load order (relative paths)."""
    kvers = sorted(os.listdir(root / "lib/modules"))
    if len(kvers) != 1:
        raise OverlayError(f"expected one kernel in {root}/lib/modules, found {kvers}")
    kver = kvers[0]
    base = root / "lib/modules" / kver
    order: list[str] = []
    for mod in modules:
        try:
            res = subprocess.run(["modprobe", "-d", str(root), "-S", kver, "--show-depends", mod],
                                 check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise OverlayError(f"module {mod}: modprobe --show-depends failed: {exc}") from None
        for line in res.stdout.splitlines():
            # "insmod /path/to/mod.ko [options]": the path may hold spaces (the build directory's)
            m = _INSMOD.match(line)
            if m:
                rel = os.path.relpath(m.group(1), base)
                if rel not in order:
                    order.append(rel)
    keep = set(order)
    kernel_dir = base / "kernel"
    for dirpath, _dirs, filenames in os.walk(kernel_dir):
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), base)
            if rel not in keep:
                os.unlink(os.path.join(dirpath, name))
    for dirpath, _dirs, _files in sorted(os.walk(kernel_dir), key=lambda t: -len(t[0])):
        if not os.listdir(dirpath):
            os.rmdir(dirpath)
    subprocess.run(["depmod", "-b", str(root), kver], check=True)
    (base / "asl-modules.load").write_text("".join(f"{r}\n" for r in order), encoding="utf-8")
    os.chmod(base / "asl-modules.load", 0o644)
    return order


def clamp(root: Path, epoch: int) -> None:
    """Every mtime under ``root`` (and root itself) to ``epoch``."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (epoch, epoch), follow_symlinks=False)
    os.utime(root, (epoch, epoch))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; exit 0 done, 2 refused or unusable input."""
    parser = argparse.ArgumentParser(description="build the ISO root")
    parser.add_argument("--rootfs", type=Path, required=True)
    parser.add_argument("--overlay", type=Path, required=True)
    parser.add_argument("--staged", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--package", type=Path, required=True)
    parser.add_argument("--shared", type=Path, required=True,
                        help="package whose modules --package imports (only those are installed)")
    parser.add_argument("--package-dest", required=True)
    parser.add_argument("--trust-roots", type=Path, required=True, help="the offline root set to pin")
    parser.add_argument("--trust-policy-hash", type=Path, required=True, help="the policy.hash to pin")
    parser.add_argument("--modules", required=True)
    parser.add_argument("--epoch", type=int, required=True)
    parser.add_argument("--stage-only", action="store_true", help="only validate and stage the overlay")
    args = parser.parse_args(argv)
    try:
        rels = stage_overlay(args.overlay, args.staged)
        rels += [r for r in stage_trust(args.staged, args.trust_roots, args.trust_policy_hash) if r not in rels]
        clamp(args.staged, args.epoch)
        if args.stage_only:
            return 0
        if args.out.exists():
            shutil.rmtree(args.out)
        subprocess.run(["cp", "-a", "--", str(args.rootfs), str(args.out)], check=True)
        order = trim_modules(args.out, args.modules.split())
        merge(args.staged, args.out, rels, args.epoch)
        files = install_files(package_files(args.package), args.package, args.out, args.package_dest)
        files += install_files(import_closure(args.package, args.shared), args.shared, args.out,
                               args.package_dest)
        clamp(args.out, args.epoch)
    except OverlayError as exc:
        sys.stderr.write(f"overlay: error: {exc}\n")
        return 2
    except (OSError, subprocess.CalledProcessError) as exc:
        sys.stderr.write(f"overlay: error: {exc}\n")
        return 2
    sys.stderr.write(f"overlay: {len(rels)} overlay paths, {files} package files, {len(order)} modules\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
