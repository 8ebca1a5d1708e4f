#!/usr/bin/env python3
"""Step 0, builder: write the host tools the pipeline runs as pinned sources (JSON Lines).

``buildertools.py --out FILE [--package DIR]``: one row per Debian package of
:data:`asl_capture.builder.TOOLS` (``{"uri": "deb:NAME=VERSION?arch=ARCH", "sha256", "kind": "tool",
"name", "version", "via": "tool:TOOL"}``) plus one for this project's package (``pkg:asl-capture=V``,
the digest of its source tree). ``build.sh`` runs it under ``asl-capture --sources FILE``, so the
step's signed record names them. A missing package is an error (exit 2): the build needs it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from asl_capture.builder import BuilderError, host_tools, project_tool


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; exit 0 written, 2 a tool package is missing or unreadable."""
    p = argparse.ArgumentParser(description="record the builder's tools")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--package", type=Path, default=Path("asl_capture"))
    a = p.parse_args(argv)
    try:
        tools, missing = host_tools()
    except BuilderError as exc:
        sys.stderr.write(f"builder: error: {exc}\n")
        return 2
    if missing:
        sys.stderr.write(f"builder: error: not installed: {', '.join(missing)} (run pipeline/install-deps.sh)\n")
        return 2
    tools.append(project_tool(a.package))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("".join(json.dumps(t.source(), sort_keys=True) + "\n" for t in tools), encoding="utf-8")
    sys.stderr.write("builder: " + ", ".join(f"{t.package} {t.version}" for t in tools) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
