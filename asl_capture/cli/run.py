"""The one place where the command-line tools turn errors into messages and exit codes.

Every console script's ``main`` is :func:`main` around its click command. A command returns its
exit code (or None for 0) and raises :class:`~asl_capture.errors.AslError` for anything that went
wrong; here the error is shown as one line ``ClassName: message`` on stderr and the process exits
with the error class's :attr:`~asl_capture.errors.AslError.exit_code` (1 verification failed, 2
usage or unreadable input, or a tool's own documented code). A usage error (click's) exits 2; when
the command line asked for ``--json``, it is printed on stdout as a JSON verdict instead of text.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn, TypeVar

import click

from asl_capture import __version__
from asl_capture.errors import EXIT_USAGE, AslError

_F = TypeVar("_F", bound=Callable[..., object])
#: 128 + SIGINT, as a shell reports a command ended by Ctrl-C.
EXIT_INTERRUPTED = 130
CONTEXT = {"help_option_names": ["-h", "--help"]}


def version_option() -> Callable[[_F], _F]:
    """``--version`` for a command or group: prints ``PROG VERSION`` (PROG as :func:`main` names it)."""
    return click.version_option(__version__, "--version", message="%(prog)s %(version)s")


def group(*, epilog: str) -> Callable[[Callable[[], None]], click.Group]:
    """A tool's command group, with ``-h``, ``--version`` and the exit-status ``epilog``."""
    def make(function: Callable[[], None]) -> click.Group:
        return click.group(context_settings=CONTEXT, epilog=epilog)(version_option()(function))
    return make


def subcommand(parent: click.Group, name: str, *, epilog: str) -> Callable[[_F], click.Command]:
    """A subcommand of ``parent``, with ``-h``, ``--version`` and the exit-status ``epilog``."""
    def make(function: _F) -> click.Command:
        return parent.command(name, context_settings=CONTEXT, epilog=epilog)(version_option()(function))
    return make


def _json_usage_error(prog_name: str, exc: click.UsageError, schemas: dict[str, str], argv: list[str]) -> None:
    # the subcommand's schema: the first word naming one (click's error does not always carry it)
    command = next((arg for arg in argv if arg in schemas), "")
    schema = schemas.get(command, f"{prog_name}/error/1")
    out = {"schema": schema, "verdict": "error", "checks": [],
           "error": {"type": "UsageError", "message": exc.format_message(), "check": None, "record": None}}
    click.echo(json.dumps(out, indent=2, sort_keys=True))


def main(command: click.Command, *, prog_name: str, args: Sequence[str] | None = None,
         json_schemas: dict[str, str] | None = None) -> NoReturn:
    """Run ``command`` as the program ``prog_name`` and exit with its code.

    ``json_schemas`` maps a subcommand name to the schema its ``--json`` output names, so that a
    usage error of ``asl-verify chain --json`` is reported under the same schema.
    """
    argv = list(sys.argv[1:] if args is None else args)
    own = argv[: argv.index("--")] if "--" in argv else argv  # not the arguments of a command to run
    try:
        code = command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.UsageError as exc:
        if "--json" in own:
            _json_usage_error(prog_name, exc, json_schemas or {}, own)
        else:
            exc.show()
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:  # e.g. a file click could not open: unreadable input
        exc.show()
        sys.exit(EXIT_USAGE)
    except click.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except AslError as exc:
        click.echo(f"{type(exc).__name__}: {exc}", err=True)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
