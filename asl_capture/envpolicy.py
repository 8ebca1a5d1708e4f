"""Which parts of the environment and command line a record may hold (docs/FORMAT.md section 7).

Values are recorded only for an allow-list of variables that shape a build (``PATH``, locale,
``TZ``, ``SOURCE_DATE_EPOCH``, ...); other variables are recorded by name only. A variable whose
name looks secret (:data:`SECRET_NAME`, or a name ending in ``PWD`` other than ``PWD`` and
``OLDPWD``) never has its value recorded anywhere, and such values (8 characters or longer) are
also masked wherever else they appear. Independently of the environment, credentials are masked
in every recorded text by the one table :data:`RULES` (mirrored in docs/FORMAT.md section 7):
URL passwords and token users, HTTP authorization headers, secret-named ``NAME=VALUE`` pairs and
options, ``user:password`` options, the password arguments of well-known tools. A command line is
masked as one text (:func:`mask_argv`), so the rules see both separate arguments and the words of
a ``sh -c`` script string.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

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


class Rule(NamedTuple):
    """One masking rule: where ``pattern`` matches, its group ``v`` becomes :data:`MASK`.

    ``check`` says when a match is really a secret: ``"name"`` when its group ``n`` is a
    secret-looking name (:func:`secret_name`), ``"p-word"`` when ``-p`` and group ``v`` are not a
    common option (:data:`P_WORDS`), ``""`` always.
    """

    name: str
    pattern: str
    check: str = ""


# Pieces of the patterns. Arguments of a command line are joined with NUL (which no argument can
# hold), so "a separator" is white space or NUL and "one argument's rest" stops at NUL.
_SEP = r"[\s\0]"
_START = r"(?<![^\s\0'\"(;&|`])"  # the start of a word: after a separator, a quote, ( ; & | `
_START_KEY = r"(?<![^\s\0'\"(;&|`/?,])"  # the start of a key: also after / ? , (URL queries, mount options)
_WORD = r"""(?:"[^"\0]*"|'[^'\0]*'|[^\s\0'";&|])+"""  # a word (quoted parts included) up to ; & |

#: A secret-looking option, variable or key name: what it holds is masked (docs/FORMAT.md section 7).
_SECRET_WORD = (r"(?i:pass(?!ive|wordauthentication)|pwd|pw(?![a-z])|token|secret|credential"
                r"|auth(?!or|entication|methods?)|cookie|private"
                r"|key(?!ring|server|id|map|board|word|code|s\b|checking|algorithms|types?\b|authentication))")
#: A name holding a secret word (before :func:`secret_name` judges its last part): only such names
#: match, so an ordinary ``--opt value`` or ``key=value`` never hides a secret one after it.
_SNAME = r"-{0,2}(?:[A-Za-z_/][\w.:/@-]*?)?" + _SECRET_WORD + r"[\w.-]*"

#: The masking rules, applied in this order by :func:`mask` (docs/FORMAT.md section 7 is this table).
RULES: tuple[Rule, ...] = (
    # scheme://user:PASSWORD@host: the password may hold '/' (up to the last '@' of the word)
    Rule("url-password", r"[A-Za-z][A-Za-z0-9+.-]*://[^/:@\s\0'\"]*:(?P<v>(?!<redacted>@)[^\s\0'\"]*)@"),
    # http(s)://TOKEN@host: a user name alone, how access tokens are passed over HTTP
    Rule("url-token-user", r"(?i:(?:git\+)?https?)://(?P<v>(?!<redacted>@)[^/:@\s\0'\"]+)@"),
    # Authorization: Bearer X, Proxy-Authorization, X-API-Key, Cookie, ...: the rest of the header
    Rule("http-header", r"(?i:(?<![\w-])(?:proxy-)?authorization|(?<![\w-])(?:x-)?api-?key|(?<![\w-])x-[\w-]*token"
                        r"|(?<![\w-])private-token|(?<![\w-])(?:set-)?cookie)[ \t]*:[ \t]*(?P<v>[^\0\n'\"]+)"),
    # NAME=VALUE or --NAME=VALUE as a whole argument, NAME secret-named: the rest of the argument (up to a
    # shell operator ' ; ', ' && ', ' | ' or a newline, where a script string goes on)
    Rule("secret-assignment-argument", r"(?:^|(?<=\0))(?P<n>" + _SNAME + r")=(?P<v>(?:(?![ \t]*(?:;|&&|\|\|?)[ \t]"
                                       r"|\n)[^\0])+)", "name"),
    # the same inside a text (a script string, a conninfo "host=h password=V", a URL query
    # "?access_token=V", mount options "-o user=u,password=V"): the word after '='
    # 'NAME=VALUE' or "--NAME=VALUE" quoted whole inside a script string: everything up to the closing quote
    Rule("quoted-secret-assignment", r"(?P<q>['\"])(?P<n>" + _SNAME + r")=(?P<v>[^'\"\0]+)(?P=q)", "name"),
    Rule("secret-assignment", _START_KEY + r"(?P<n>" + _SNAME + r")=(?P<v>" + _WORD + r")", "name"),
    # --NAME VALUE, a secret-named long option and the next word
    Rule("secret-option", _START + r"(?P<n>--" + _SNAME + r")" + _SEP + r"+(?P<v>(?!<redacted>)" + _WORD + r")",
         "name"),
    # -u user:PASSWORD, --user user:PASSWORD, --proxy-user=user:PASSWORD (curl, wget, ...)
    Rule("user-password-option", _START + r"(?:-u|-U|--user|--proxy-user|--http-user)(?:" + _SEP + r"+|=)?"
                                 r"['\"]?[^\s\0'\":]*:(?P<v>(?!<redacted>)" + _WORD + r")"),
    # sshpass -p PASSWORD, docker/podman/helm ... login ... -p PASSWORD
    Rule("login-p-option", r"(?<![\w-])(?:sshpass|login)(?:" + _SEP + r"+(?!-p" + _SEP + r")[^\s\0;|&]+)*?"
                           + _SEP + r"+-p" + _SEP + r"+(?P<v>(?!<redacted>)" + _WORD + r")"),
    # aws configure set aws_secret_access_key V, npm/yarn/git config [set] NAME V: a secret-named NAME's value
    Rule("config-set", r"(?<![\w-])(?:config|configure)" + _SEP + r"+(?:set" + _SEP + r"+)?(?:--?[\w-]+" + _SEP
                       + r"+)*?(?P<n>" + _SNAME + r")" + _SEP + r"+(?P<v>(?!<redacted>)" + _WORD + r")", "name"),
    # -pPASSWORD (MySQL), 4 or more characters glued to -p, not a common option word
    Rule("p-glued", _START + r"-p(?P<v>(?!<redacted>)[^\s\0'\"=]{4,}+)(?!=)", "p-word"),
)

#: Such names that say where a secret is, or what kind, not the secret itself (their value is kept).
_WHERE_SUFFIX = (r"(?i:[-_.](?:file|path|env|dir|fd|stdin|cmd|command|helper|type|method|mode|url|uri|id|name"
                 r"|length|size|bits|format|algorithm|alg))$")
#: ``-pVALUE`` words that are common options, not a password (compilers, find, patch, cp, xorriso).
P_WORDS = frozenset({
    "-pthread", "-pthreads", "-pipe", "-pie", "-pg", "-pedantic", "-pedantic-errors", "-print", "-print0",
    "-printf", "-prune", "-path", "-perm", "-preserve", "-parents", "-pass-exit-codes", "-param",
    "-padding", "-publisher", "-preparer", "-partition_offset", "-partition_hd_cyl", "-partition_sec_hd",
    "-partition_cyl_align", "-part_like_isohybrid", "-pathspecs", "-path-list", "-print-size",
    "-protective-msdos-label", "-prep-boot-part", "-pkt", "-pretty", "-posix", "-progress", "-pass",
})
#: Lower-case strings one of which every rule's match holds: text without any is returned at once,
#: and an ordinary command line (``make -j2``) never compiles a pattern.
_TRIGGERS = ("pass", "pwd", "pw", "token", "secret", "credential", "key", "auth", "cookie", "private",
             "://", "--user", "--proxy-user", "--http-user",
             " -p", "\0-p", "'-p", '"-p', "\t-p", " -u", "\0-u", "'-u", '"-u', "\t-u")


def _triggered(text: str) -> bool:
    """True when ``text`` holds a trigger (a ``-p``/``-u`` only at the start of a word, so that a
    ``PATH`` of ``.../python-build/...`` compiles nothing)."""
    lowered = text.lower()
    return lowered.startswith(("-p", "-u")) or any(t in lowered for t in _TRIGGERS)


def secret_name(name: str) -> bool:
    """True when an option, variable or key name looks secret: the value given to it is masked.

    The name's last part (after ``/``, ``:`` or ``.``: ``//host/:_authToken``,
    ``remote.x.password``) decides; ``--no-`` flags and names ending in a where-suffix
    (``--passphrase-file``, ``SSH_KEY_PATH``) are not secret.
    """
    bare = name.lstrip("-")
    last = re.split(r"[/:.]", bare)[-1]
    if name.startswith("--no-") or name.startswith("--no_") or name.upper() in _NOT_SECRET:
        return False
    return re.search(_SECRET_WORD, last) is not None and re.search(_WHERE_SUFFIX, last) is None


def _redact(match: re.Match[str], check: str) -> str:
    if check == "name" and not secret_name(match.group("n")):
        return match.group(0)
    if check == "p-word" and "-p" + match.group("v") in P_WORDS:
        return match.group(0)
    start, end = match.start("v") - match.start(), match.end("v") - match.start()
    whole = match.group(0)
    return whole[:start] + MASK + whole[end:]


def mask(text: str, secrets: Sequence[str]) -> str:
    """``text`` as recorded: every ``secrets`` value (longest first) and every :data:`RULES` match
    replaced by :data:`MASK`. The one masking function of every text a record or its objects hold."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    if not _triggered(text):
        return text
    for rule in RULES:
        check = rule.check
        text = _compiled(rule).sub(functools.partial(_redact, check=check), text)
    return text


def _compiled(rule: Rule) -> re.Pattern[str]:
    """The rule's pattern, compiled on first use (by re's cache): a capture whose texts hold no
    trigger never compiles one, which keeps ``asl-capture -- true`` start-up as it was."""
    return re.compile(rule.pattern)


def masking_rule(text: str) -> str | None:
    """The name of the first :data:`RULES` rule that would mask something in ``text``, or None
    (``asl-verify show`` warns with it about stored logs, which are never masked)."""
    if not _triggered(text):
        return None
    for rule in RULES:
        for match in _compiled(rule).finditer(text):
            if _redact(match, rule.check) != match.group(0):
                return rule.name
    return None


def mask_argv(argv: Sequence[str], secrets: Sequence[str]) -> list[str]:
    """The command line as recorded: the arguments masked as one text joined by NUL, so that a rule
    sees an option and its separate value, and the words of a ``sh -c`` script, alike."""
    return mask("\0".join(argv), secrets).split("\0")
