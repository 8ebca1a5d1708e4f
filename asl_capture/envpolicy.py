"""Which parts of the environment a record may hold.

Values are recorded only for an allow-list of variables that shape a build (``PATH``, locale,
``TZ``, ``SOURCE_DATE_EPOCH``, ...); other variables are recorded by name only. A variable whose
name contains TOKEN, SECRET, PASSWORD, PASSPHRASE, KEY, CREDENTIAL or AUTH never has its value
recorded anywhere, and such values (8 characters or longer) are also masked in the recorded
command line and working directory.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|KEY|CREDENTIAL|AUTH|COOKIE|PRIVATE",
                         re.IGNORECASE)
ALLOWED = frozenset({
    "PATH", "LANG", "LANGUAGE", "TZ", "SOURCE_DATE_EPOCH", "HOME", "USER", "LOGNAME", "SHELL", "TERM",
    "PWD", "TMPDIR", "UMASK", "PYTHONHASHSEED", "DEB_BUILD_OPTIONS", "DEBIAN_FRONTEND", "CI",
    "ASL_CAPTURE_DIR", "ASL_CAPTURE_PARENT", "ASL_CAPTURE_STEP",
})
ALLOWED_PREFIXES = ("LC_",)
MIN_MASKED_LENGTH = 8
MASK = "<redacted>"


def is_secret(name: str) -> bool:
    """True when a variable's value must never be recorded."""
    return SECRET_NAME.search(name) is not None


def recorded_env(environ: Mapping[str, str]) -> dict[str, str | None]:
    """The environment as a record holds it: allow-listed values, other names mapped to None."""
    result: dict[str, str | None] = {}
    for name, value in environ.items():
        allowed = name in ALLOWED or name.startswith(ALLOWED_PREFIXES)
        result[name] = value if allowed and not is_secret(name) else None
    return result


def secret_values(environ: Mapping[str, str]) -> list[str]:
    """Values of secret-named variables long enough to be masked wherever else they appear."""
    values = {v for k, v in environ.items() if is_secret(k) and len(v) >= MIN_MASKED_LENGTH}
    return sorted(values, key=len, reverse=True)


def mask(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every secret value replaced by :data:`MASK`."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text
