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
