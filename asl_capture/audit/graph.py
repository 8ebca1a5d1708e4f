"""The step/artifact graph of a verified chain, as Graphviz DOT (and SVG through ``dot`` when installed).

Nodes: each step (a box: name, record seq, duration), each root a step read or wrote (an ellipse:
the path, its entries), each group of pinned sources (a note: how many, by kind). Edges: artifact ->
step for inputs, step -> artifact for outputs, sources -> step.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from asl_capture.audit.recorded import Recorded
from asl_capture.errors import UsageError


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def dot(recorded: Recorded) -> str:
    """The graph as DOT text (deterministic for a given chain)."""
    lines = ["digraph build {", "  rankdir=LR;", '  node [fontname="Helvetica", fontsize=10];',
             '  edge [color="#555555"];']
    artifacts: dict[bytes, str] = {}

    def artifact(label: bytes, entries: int) -> str:
        if label not in artifacts:
            ident = f"a{len(artifacts)}"
            artifacts[label] = ident
            lines.append(f"  {ident} [shape=ellipse, style=filled, fillcolor=\"#eef4ff\", "
                         f"label={_quote(os.fsdecode(label) + f' ({entries} entries)')}];")
        return artifacts[label]

    for seq in recorded.steps():
        record = recorded.records[seq]
        seconds = (record.finished - record.started) / 1e9
        step = f"s{seq}"
        name = record.step if isinstance(record.step, str) else record.step.decode("utf-8", "backslashreplace")
        label = _quote(f"{name}\nrecord {seq}, {seconds:.1f} s, {record.status}")
        lines.append(f"  {step} [shape=box, style=\"rounded,filled\", fillcolor=\"#fff3d6\", label={label}];")
        inputs = recorded.inputs(seq)
        outputs = recorded.outputs(seq)
        for root in inputs.roots:
            count = sum(1 for e in inputs.entries if e.path == root or e.path.startswith(root + b"/"))
            lines.append(f"  {artifact(root, count)} -> {step};")
        for root in outputs.roots:
            count = sum(1 for e in outputs.entries if e.path == root or e.path.startswith(root + b"/"))
            lines.append(f"  {step} -> {artifact(root, count)};")
        if record.sources:
            kinds: dict[str, int] = {}
            for s in record.sources:
                kinds[s.kind] = kinds.get(s.kind, 0) + 1
            text = "pinned sources\\n" + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
            lines.append(f"  src{seq} [shape=note, style=filled, fillcolor=\"#e8f6e8\", label=\"{text}\"];")
            lines.append(f"  src{seq} -> {step};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write(recorded: Recorded, path: Path) -> str:
    """Write the graph to ``path``: SVG when it ends in ``.svg`` (needs Graphviz ``dot``), else DOT.
    Returns what was written ("svg" or "dot").

    Raises:
        UsageError: SVG asked for without ``dot`` installed, or the file cannot be written.
    """
    text = dot(recorded)
    try:
        if path.suffix.lower() == ".svg":
            tool = shutil.which("dot")
            if tool is None:
                raise UsageError(f"{path}: SVG needs Graphviz 'dot' (apt-get install graphviz); "
                                 f"name the file .dot to get DOT text")
            done = subprocess.run([tool, "-Tsvg"], input=text.encode(), capture_output=True, check=False,
                                  timeout=120)
            if done.returncode != 0:
                raise UsageError(f"dot failed: {done.stderr.decode(errors='replace').strip()[:200]}")
            path.write_bytes(done.stdout)
            return "svg"
        path.write_text(text, encoding="utf-8")
        return "dot"
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"{path}: cannot write the graph: {exc}") from None
