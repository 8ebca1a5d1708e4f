"""Which parts of the environment and command line a record may hold (docs/FORMAT.md section 7).

Values are recorded only for an allow-list of variables that shape a build (``PATH``, locale,
``TZ``, ``SOURCE_DATE_EPOCH``, ...); other variables are recorded by name only. A variable whose
name looks secret (:data:`SECRET_NAME`, or a name ending in ``PWD`` other than ``PWD`` and
``OLDPWD``) never has its value recorded anywhere, and such values (8 characters or longer) are
also masked wherever else they appear. Independently of the environment, credentials are masked
in recorded text: the password of a URL's user information, the value of ``--*pass*=``,
``--*token*=``, ``--*secret*=``, ``--*credential*=`` and ``--*api-key*=`` options (and of the
same options given as a separate next argument), and ``-pVALUE`` (MySQL style).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

SECRET_NAME = re.compile(r"TOKEN|SECRET|PASS|KEY|CREDENTIAL|AUTH|COOKIE|PRIVATE|PWD$", re.IGNORECASE)
#: Names that end in PWD but hold a directory, not a password.
_NOT_SECRET = frozenset({"PWD", "OLDPWD"})
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
    return name.upper() not in _NOT_SECRET and SECRET_NAME.search(name) is not None


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
    """``text`` with every secret value replaced by :data:`MASK`, and URL passwords masked."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    if "@" in text:
        text = re.sub(_URL_USERINFO, lambda m: f"{m.group(1)}:{MASK}@", text)
        text = re.sub(_HTTP_TOKEN_USER, lambda m: f"{m.group(1)}{MASK}@", text, flags=re.IGNORECASE)
    return text


# The patterns below are compiled on first use (by re's cache): a plain command (no '@', no
# option) never needs them, and compiling them was a millisecond of every capture's start-up.
#: ``scheme://user:password@``: the password part (up to the last '@' before the host's '/').
_URL_USERINFO = r"([A-Za-z][A-Za-z0-9+.-]*://[^/:@\s]*):[^/\s]*@"
#: ``http(s)://TOKEN@``: a user name alone, which over HTTP is how access tokens are usually passed.
_HTTP_TOKEN_USER = r"((?:git\+)?https?://)(?!<redacted>)[^/:@\s]+@"  # case-insensitive
#: An option whose value is a credential: ``--password``, ``--db-pass``, ``--api-token``, ``--client-secret``.
_SECRET_OPTION = r"--?[A-Za-z0-9_-]*(?:pass|token|secret|credential|api[-_]?key)[A-Za-z0-9_-]*"  # case-insensitive
#: Such options that name where a secret is, not the secret (their value is kept).
_WHERE_SUFFIX = r"[-_](?:file|path|env|dir|fd|stdin|cmd|command|helper)$"  # case-insensitive
#: ``-pVALUE`` words that are common options, not a password (compilers, find, patch, cp).
_P_WORDS = frozenset({
    "-pthread", "-pthreads", "-pipe", "-pie", "-pg", "-pedantic", "-pedantic-errors", "-print", "-print0",
    "-printf", "-prune", "-path", "-perm", "-preserve", "-parents", "-pass-exit-codes", "-param",
})


def mask_argv(argv: Sequence[str], secrets: Sequence[str]) -> list[str]:
    """The command line as recorded: :func:`mask` on each argument, then credential options masked.

    ``--opt=VALUE`` and ``--opt VALUE`` for a credential-named option (not a ``--no-`` flag, not one
    naming a file, path, variable or command) keep the option and lose the value; ``-pVALUE`` with
    at least 4 characters of value, other than a known option word, keeps only ``-p``.
    """
    out: list[str] = []
    hide_next = False
    for arg in argv:
        text = mask(arg, secrets)
        if hide_next:
            hide_next = False
            out.append(MASK)
            continue
        name, eq, _value = text.partition("=")
        if (text.startswith("--") or eq) and re.fullmatch(_SECRET_OPTION, name, re.IGNORECASE) \
                and not re.search(_WHERE_SUFFIX, name, re.IGNORECASE) \
                and not name.lower().startswith(("--no-", "--no_")):
            if eq:
                text = f"{name}={MASK}"
            elif name.startswith("--"):
                hide_next = True
        elif text.startswith("-p") and not text.startswith("--") and len(text) >= 6 and text not in _P_WORDS \
                and "=" not in text:
            text = f"-p{MASK}"
        out.append(text)
    return out
