"""Issue 25: no canary secret anywhere under the provenance directory, whatever form it is passed in,
through a real ``asl-capture`` run; the step's output stays byte-exact; ``asl-verify show`` warns."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shlex
from pathlib import Path

from tests.conftest import KeyPair, cli
from tests.integration.records import object_bytes, read_records
from tests.secretforms import FORMS, form


def _canary(tag: str) -> str:
    return f"cn{tag}{secrets.token_hex(8)}"


def _leaks(root: Path, canaries: dict[str, str]) -> list[tuple[str, str]]:
    """(file, form) for every canary found in the raw bytes of any file under ``root`` (or hex-encoded)."""
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            data = Path(dirpath, name).read_bytes()
            for what, canary in canaries.items():
                if canary.encode() in data or canary.encode().hex().encode() in data:
                    found.append((str(Path(dirpath, name).relative_to(root)), what))
    return found


def test_no_canary_of_any_form_reaches_the_provenance_directory(
        cli_env: dict[str, str], keypair: KeyPair, tmp_path: Path) -> None:
    canaries: dict[str, str] = {}
    argv_words: list[str] = []
    script: list[str] = []
    for i, name in enumerate(sorted(FORMS)):
        canaries[f"argv:{name}"] = a = _canary(f"a{i:02d}")
        canaries[f"script:{name}"] = s = _canary(f"s{i:02d}")
        argv_words += form(name, a)
        script.append(shlex.join(form(name, s)))
    for what in ("cwd", "env", "envname", "step", "uri", "via", "version", "link", "link2", "attach", "error"):
        canaries[what] = _canary(what)
    work = tmp_path / f"password={canaries['cwd']}"
    (work / "tree").mkdir(parents=True)
    (work / "tree" / "link").symlink_to(f"https://u:{canaries['link']}@mirror.example.org/x")
    (work / "tree" / "link2").symlink_to(f"/srv/x?access_token={canaries['link2']}")
    source = {"uri": f"https://u:{canaries['uri']}@mirror.example.org/pool/a.deb", "sha256": "00" * 32,
              "kind": "deb", "via": f"git+https://{canaries['via']}@h/r",
              "version": f"1 password={canaries['version']}"}
    (work / "sources.src").write_text(json.dumps(source) + "\n")
    attached = work / f"token={canaries['attach']}.txt"
    attached.write_text("attached\n")
    # the step: ':' ignores every script form, one line of output, the sources file copied into place
    body = " ; ".join(f": {line}" for line in script) + " ; cp sources.src sources.jsonl ; printf 'out\\n'"
    env = {**cli_env, "CI": f"https://u:{canaries['env']}@ci.example.org/x", "FOO_TOKEN": canaries["envname"]}
    result = cli("asl-capture", "--step", f"publish --token={canaries['step']}", "--input", "tree",
                 "--output", "tree", "--sources", "sources.jsonl", "--attach", attached.name,
                 "--attach", f"secret={canaries['error']}/missing",
                 "--", "sh", "-c", body, "sh", *argv_words, env=env, cwd=work)
    assert result.returncode == 125, result.stderr  # the missing attachment: a failed capture, still recorded
    assert result.stdout == b"out\n"
    prov = Path(cli_env["ASL_CAPTURE_DIR"])
    (record,) = read_records(prov, keypair.pub)
    assert _leaks(prov, canaries) == []
    # each place really held its text, masked: the grep above is not vacuous
    assert len(record.argv) == 4 + len(argv_words) and str(record.argv).count("<redacted>") >= 2 * len(FORMS)
    assert record.step == "publish --token=<redacted>"
    assert record.env["CI"] == "https://u:<redacted>@ci.example.org/x" and record.env["FOO_TOKEN"] is None
    assert record.sources is not None and record.sources[0].uri == "https://u:<redacted>@mirror.example.org/pool/a.deb"
    assert record.attached is not None and record.attached[0].path == "token=<redacted>"
    assert isinstance(record.error, str) and "<redacted>" in record.error
    assert isinstance(record.cwd, str) and record.cwd.endswith("/password=<redacted>")
    target = b"https://u:<redacted>@mirror.example.org/x"
    hits = [p for p in prov.rglob("*") if p.is_file() and target in p.read_bytes()]
    assert hits, "the symlink target is recorded, masked, in a tree manifest"
    # the step's output is stored byte-exact
    assert record.stdout.digest == hashlib.sha256(b"out\n").digest()
    assert object_bytes(prov, record.stdout.digest) == b"out\n"


def test_show_warns_about_a_credential_in_a_stored_log_and_keeps_it_byte_exact(
        cli_env: dict[str, str], keypair: KeyPair, tmp_path: Path) -> None:
    printed = b"curl -H 'Authorization: Bearer tok-in-the-log'\n"
    ok = cli("asl-capture", "--", "true", env=cli_env, cwd=tmp_path)
    leaky = cli("asl-capture", "--", "printf", "%s", printed.decode(), env=cli_env, cwd=tmp_path)
    assert ok.returncode == 0 and leaky.returncode == 0, leaky.stderr
    prov = Path(cli_env["ASL_CAPTURE_DIR"])
    records = read_records(prov, keypair.pub)
    assert object_bytes(prov, records[1].stdout.digest) == printed
    shown = cli("asl-verify", "show", prov, "--trust", keypair.pub, env=cli_env)
    assert shown.returncode == 0, shown.stderr
    warnings = [line for line in shown.stderr.decode().splitlines() if "warning" in line]
    assert warnings == ["asl-verify: warning: record 1: its stored stdout holds text the masking rules would have "
                        "masked (http-header); logs are stored unchanged: check it before publishing this chain"]
    assert b"tok-in-the-log" not in shown.stderr
    clean = cli("asl-verify", "show", prov, "0", env=cli_env)
    assert clean.returncode == 0 and b"warning: record" not in clean.stderr
