"""Environment policy: allow-listed values only, secret-named variables never valued, secrets masked."""

from __future__ import annotations

import pytest

from asl_capture import envpolicy
from asl_capture.envpolicy import ALLOWED, MASK, is_secret, mask, recorded_env, secret_values

SECRET_NAMES = [
    "GITHUB_TOKEN", "api_token", "AWS_SECRET_ACCESS_KEY", "DB_PASSWORD", "MYSQL_PASSWD", "ASL_KEY_PASSPHRASE",
    "SSH_PRIVATE_KEY", "GOOGLE_APPLICATION_CREDENTIALS", "NPM_AUTH", "Authorization", "SESSION_COOKIE",
    "ASL_CAPTURE_KEY", "signing_key_file", "LC_AUTH_TOKEN", "PRIVATE",
]


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_names_detected(name: str) -> None:
    assert is_secret(name)


@pytest.mark.parametrize("name", ["PATH", "LANG", "HOME", "SOURCE_DATE_EPOCH", "LC_ALL", "CC", "MAKEFLAGS"])
def test_ordinary_names_not_secret(name: str) -> None:
    assert not is_secret(name)


def test_no_allow_listed_name_is_secret() -> None:
    """Otherwise an allow-listed variable would silently lose its value."""
    assert [n for n in ALLOWED if is_secret(n)] == []


def test_recorded_env_values_only_for_allow_list() -> None:
    environ = {
        "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C", "LC_CTYPE": "en_US.UTF-8", "TZ": "UTC",
        "SOURCE_DATE_EPOCH": "1700000000", "CC": "gcc", "RANDOM_VAR": "value", "GITHUB_TOKEN": "ghp_abcdefgh123",
        "LC_AUTH_TOKEN": "should-not-appear", "my_password": "hunter2hunter2",
    }
    assert recorded_env(environ) == {
        "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C", "LC_CTYPE": "en_US.UTF-8", "TZ": "UTC",
        "SOURCE_DATE_EPOCH": "1700000000", "CC": None, "RANDOM_VAR": None, "GITHUB_TOKEN": None,
        "LC_AUTH_TOKEN": None, "my_password": None,
    }


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_names_never_get_values(name: str) -> None:
    value = "s3cr3t-value-" + name
    result = recorded_env({name: value, "PATH": "/bin"})
    assert result[name] is None
    assert value not in repr(result)


def test_secret_values_threshold_and_order() -> None:
    environ = {"A_TOKEN": "1234567", "B_TOKEN": "12345678", "C_SECRET": "abcdefghijkl", "PATH": "/long/enough/path",
               "D_KEY": "12345678"}
    assert secret_values(environ) == ["abcdefghijkl", "12345678"]  # longest first, duplicates once
    assert envpolicy.MIN_MASKED_LENGTH == 8


def test_mask_replaces_every_occurrence() -> None:
    secrets = secret_values({"API_TOKEN": "tok-12345678"})
    text = "curl -H 'Bearer tok-12345678' https://x/?t=tok-12345678"
    masked = mask(text, secrets)
    assert masked == f"curl -H 'Bearer {MASK}' https://x/?t={MASK}"
    assert "tok-12345678" not in masked
    assert mask("nothing secret here", secrets) == "nothing secret here"
    assert mask("anything", []) == "anything"


def test_mask_longest_secret_first() -> None:
    """A secret containing a shorter one is masked whole, leaving no fragment of the longer one."""
    secrets = secret_values({"A_TOKEN": "abcdefgh", "B_TOKEN": "abcdefgh-ijklmnop"})
    masked = mask("x=abcdefgh-ijklmnop y=abcdefgh", secrets)
    assert masked == f"x={MASK} y={MASK}"
    assert "ijklmnop" not in masked


def test_allow_listed_value_holding_a_secret_is_masked_as_capture_does() -> None:
    """``capture`` masks recorded values too: a secret copied into e.g. PATH does not leak."""
    environ = {"PATH": "/opt/hunter2hunter2/bin:/usr/bin", "DEPLOY_PASSWORD": "hunter2hunter2"}
    hidden = secret_values(environ)
    env = {k: (None if v is None else mask(v, hidden)) for k, v in recorded_env(environ).items()}
    assert env == {"PATH": f"/opt/{MASK}/bin:/usr/bin", "DEPLOY_PASSWORD": None}
    assert "hunter2hunter2" not in repr(env)


def test_short_secret_values_are_not_masked_but_still_not_recorded() -> None:
    environ = {"PIN_TOKEN": "1234", "PATH": "/1234/bin"}
    assert secret_values(environ) == []
    assert recorded_env(environ) == {"PIN_TOKEN": None, "PATH": "/1234/bin"}


# --- the masking rules (issue 25) ------------------------------------------------------------------

import re  # noqa: E402
import shlex  # noqa: E402
from pathlib import Path  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from asl_capture.envpolicy import RULES, mask_argv, masking_rule, secret_name  # noqa: E402
from tests.secretforms import FORMS, ORDINARY, form  # noqa: E402

CANARY = "cAnArY5ecr3t"
DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize("name", sorted(FORMS))
def test_every_form_is_masked_by_the_rules_alone(name: str) -> None:
    argv = form(name, CANARY)
    masked = mask_argv(argv, [])
    assert CANARY not in "\0".join(masked), masked
    assert len(masked) == len(argv) and MASK in "".join(masked)
    assert masking_rule("\0".join(argv)) is not None


@pytest.mark.parametrize("argv", ORDINARY, ids=lambda a: " ".join(a)[:40])
def test_ordinary_build_commands_are_recorded_unchanged(argv: list[str]) -> None:
    assert mask_argv(argv, []) == argv
    assert masking_rule("\0".join(argv)) is None


@pytest.mark.parametrize("name", ["--password", "--db-pass", "GITHUB_TOKEN", "//h/:_authToken", "--pw", "--key",
                                  "--access-key", "aws_secret_access_key", "password", "npmAuthToken", "MYSQL_PWD"])
def test_secret_names(name: str) -> None:
    assert secret_name(name)


@pytest.mark.parametrize("name", ["--passphrase-file", "--no-password", "--keyring", "--keyserver", "--keys",
                                  "--author", "StrictHostKeyChecking", "PasswordAuthentication", "SSH_KEY_PATH",
                                  "credential.helper", "PWD", "--passive", "--token-file"])
def test_names_that_are_not_secret(name: str) -> None:
    assert not secret_name(name)


def test_the_docs_list_exactly_the_rules_of_the_table() -> None:
    """docs/FORMAT.md section 7 and docs/SECURITY.md name every rule of RULES, in order, and no other."""
    names = [rule.name for rule in RULES]
    section = DOCS.joinpath("FORMAT.md").read_text().split("## 7.")[1].split("\n## 8.")[0]
    assert re.findall(r"^\| `([a-z0-9-]+)` \|", section, re.MULTILINE) == names
    security = DOCS.joinpath("SECURITY.md").read_text().split("### 3.5")[1].split("\n### ")[0]
    assert re.findall(r"`([a-z0-9-]+)`", security.split("Rules:")[1].split("\n\n")[0]) == names


_PLAIN = st.text(alphabet="bcfghijlmnoqrvxyz0123456789./_", min_size=1, max_size=12)
_WORDS = st.one_of(_PLAIN, st.sampled_from([w for argv in ORDINARY for w in argv]))


@settings(max_examples=300, deadline=None)
@given(before=st.lists(_WORDS, max_size=6), after=st.lists(_WORDS, max_size=6), name=st.sampled_from(sorted(FORMS)),
       canary=st.text(alphabet="ABCDEFGHJKLMNQRSTVWXYZ0123456789!%+~", min_size=8, max_size=24),
       script=st.booleans())
def test_property_no_canary_survives_in_a_generated_command_line(
        before: list[str], after: list[str], name: str, canary: str, script: bool) -> None:
    """A secret form anywhere in a command line of ordinary words, as arguments or as a ``sh -c``
    script, loses its canary; the ordinary words around it are kept as they were."""
    canary = "!Z" + canary  # never one of the ordinary words
    secret = form(name, canary)
    if script:
        argv = ["sh", "-c", shlex.join(before or [":"]) + " ; " + shlex.join(secret), *after]
    else:
        argv = [*before, *secret, *after]
    masked = mask_argv(argv, [])
    assert canary not in "\0".join(masked)
    assert len(masked) == len(argv)
    if not script:
        assert masked[:len(before)] == before


@settings(max_examples=200, deadline=None)
@given(st.lists(_WORDS, min_size=1, max_size=10))
def test_property_ordinary_words_are_never_masked(argv: list[str]) -> None:
    assert mask_argv(argv, []) == argv
