"""The one place where the command-line tools turn errors into messages and exit codes.

Every console script is a :class:`ToolCommand` or :class:`ToolGroup` (made by :func:`command`,
:func:`group` and :func:`subcommand`), whose ``main`` is :func:`_run`. A command returns its exit
code (or None for 0) and raises :class:`~asl_capture.errors.AslError` for anything that went
wrong; here the error is shown as one line ``ClassName: message`` on stderr and the process exits
with the error class's :attr:`~asl_capture.errors.AslError.exit_code` (1 verification failed, 2
usage or unreadable input, or a tool's own documented code). A usage error (click's) exits 2; when
the command line asked for ``--json``, it is printed on stdout as a JSON verdict instead of text.
Every command and group has ``-h``/``--help`` and ``--version``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

import click

from asl_capture import __version__
from asl_capture.cli import ensure_std_fds
from asl_capture.errors import EXIT_USAGE, AslError

_F = TypeVar("_F", bound=Callable[..., Any])
#: 128 + SIGINT, as a shell reports a command ended by Ctrl-C.
EXIT_INTERRUPTED = 130
CONTEXT = {"help_option_names": ["-h", "--help"]}


def _json_usage_error(prog_name: str, exc: click.UsageError, schemas: dict[str, str], argv: list[str]) -> None:
    import json  # only here: asl-capture's start-up does not pay for it

    # the subcommand's schema: the first word naming one (click's error does not always carry it)
    command = next((arg for arg in argv if arg in schemas), "")
    out = {"schema": schemas.get(command, f"{prog_name}/error/1"), "verdict": "error", "checks": [],
           "error": {"type": "UsageError", "message": exc.format_message(), "check": None, "record": None}}
    click.echo(json.dumps(out, indent=2, sort_keys=True))


def _run(command: click.Command, args: Sequence[str] | None, prog_name: str | None,
         json_schemas: dict[str, str], **extra: Any) -> NoReturn:
    """Run ``command`` and exit: with the code it returns, or the one its error's class names."""
    ensure_std_fds()
    argv = list(sys.argv[1:] if args is None else args)
    own = argv[: argv.index("--")] if "--" in argv else argv  # not the arguments of a command to run
    name = prog_name or command.name or "command"
    try:
        code = click.Command.main(command, args=argv, prog_name=name, standalone_mode=False, **extra)
    except click.UsageError as exc:
        if "--json" in own:
            _json_usage_error(name, exc, json_schemas, own)
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


class ToolCommand(click.Command):
    """A console script's command whose errors go through :func:`_run`."""

    json_schemas: dict[str, str] = {}  # noqa: RUF012 - read only

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> NoReturn:
        _run(self, args, prog_name, self.json_schemas, **extra)


class ToolGroup(click.Group):
    """A console script's command group whose errors go through :func:`_run`; ``json_schemas`` maps
    a subcommand to the schema its ``--json`` output names (its usage errors are reported under it).

    ``lazy`` maps a subcommand's name to ``"module:attribute"``: the module is imported only when that
    subcommand is run or listed, so that one subcommand's start-up does not pay for the others'.
    """

    json_schemas: dict[str, str] = {}  # noqa: RUF012 - read only
    lazy: dict[str, str] = {}  # noqa: RUF012 - read only

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            module, _, attribute = self.lazy[cmd_name].partition(":")
            loaded = getattr(importlib.import_module(module), attribute)
            if not isinstance(loaded, click.Command) or loaded.name != cmd_name:
                raise TypeError(f"{self.lazy[cmd_name]} is not the command {cmd_name!r}")
            self.add_command(loaded)
        return super().get_command(ctx, cmd_name)

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> NoReturn:
        _run(self, args, prog_name, self.json_schemas, **extra)


def version_option() -> Callable[[_F], _F]:
    """``--version``: prints ``PROG VERSION``."""
    return click.version_option(__version__, "--version", message="%(prog)s %(version)s")


def command(*, epilog: str, **settings: Any) -> Callable[[Callable[..., Any]], ToolCommand]:
    """A tool that is a single command (``settings`` add to its context settings)."""
    def make(function: Callable[..., Any]) -> ToolCommand:
        made = click.command(cls=ToolCommand, context_settings={**CONTEXT, **settings}, epilog=epilog)
        return made(version_option()(function))
    return make


def group(*, epilog: str, json_schemas: dict[str, str] | None = None,
          lazy: dict[str, str] | None = None) -> Callable[[Callable[[], None]], ToolGroup]:
    """A tool's command group, with the exit-status ``epilog``, the schemas of its ``--json`` output and
    the subcommands it imports only when used (see :class:`ToolGroup`)."""
    def make(function: Callable[[], None]) -> ToolGroup:
        made = click.group(cls=ToolGroup, context_settings=CONTEXT, epilog=epilog)(version_option()(function))
        made.json_schemas = dict(json_schemas or {})
        made.lazy = dict(lazy or {})
        return made
    return make


def subcommand(parent: click.Group, name: str, *, epilog: str) -> Callable[[_F], click.Command]:
    """A subcommand of ``parent``, with ``-h``, ``--version`` and the exit-status ``epilog``."""
    def make(function: _F) -> click.Command:
        return parent.command(name, context_settings=CONTEXT, epilog=epilog)(version_option()(function))
    return make
