"""The ``multidb`` command.

``main(args)`` parses, runs one subcommand and returns the exit code:
0 success, 1 the operation failed (a ``MultiDBError`` such as an unknown
or existing tenant or a corrupt archive, an ``OSError``, a ZODB error),
2 usage or configuration errors (argparse's, a bad option value or tenant
name, ZConfig's, no ``-C``, no ``<tenants>`` section), 3 a partial
success (the operation is done, something is left for ``repair``).  Errors print one
line, ``multidb: error: ...``, on stderr; ``--debug`` adds the traceback.

This package: here ``main()``, the parser made from the registered
subcommands and the handling of their errors; the framework (exit codes,
the registry, loading the configured collection) in
:mod:`multidb.cli.framework`; argument types and the global options in
:mod:`multidb.cli.arguments`; what is printed in :mod:`multidb.cli.output`;
the subcommands, by concern, in ``collection_commands``,
``tenant_commands``, ``copy_commands``, ``maintenance_commands`` and
``fleet_commands`` (registered in that order, the order of ``multidb
--help``).
"""
import argparse
import sys
import traceback
from typing import Optional
from typing import Sequence

import ZConfig

# The subcommands register themselves as they are imported.
from multidb.cli import collection_commands  # noqa: F401
from multidb.cli import tenant_commands  # noqa: F401
from multidb.cli import copy_commands  # noqa: F401
from multidb.cli import maintenance_commands  # noqa: F401
from multidb.cli import fleet_commands  # noqa: F401
from multidb.cli import fleet_maintenance_commands  # noqa: F401
from multidb.cli import server_commands  # noqa: F401
from multidb.cli.arguments import global_options
from multidb.cli.framework import COMMANDS
from multidb.cli.framework import FAILED
from multidb.cli.framework import INTERRUPTED
from multidb.cli.framework import OK
from multidb.cli.framework import PARTIAL
from multidb.cli.framework import USAGE
from multidb.cli.framework import Command
from multidb.cli.framework import UsageError
from multidb.cli.framework import command
from multidb.cli.framework import load_collection
from multidb.errors import InvalidName
from multidb.errors import NotConfigured

__all__ = [
    'main', 'make_parser', 'COMMANDS', 'Command', 'command', 'UsageError',
    'load_collection', 'OK', 'FAILED', 'USAGE', 'PARTIAL', 'INTERRUPTED',
]


class _ArgumentParser(argparse.ArgumentParser):

    def error(self, message):
        # One line like every other error; the usage is one --help away.
        self.exit(USAGE, f"multidb: error: {message}"
                         f" (see '{self.prog} --help')\n")


def make_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog='multidb',
        description="Manage a collection of named ZODB databases and"
                    " its tenants.",
        epilog="Exit codes: 0 success, 1 the operation failed, 2 usage or"
               " configuration error, 3 done but something is left for"
               " 'multidb repair'.",
        parents=[global_options('', None)])
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    sub.required = True
    after = global_options('_after', argparse.SUPPRESS)
    for cmd in COMMANDS.values():
        # A parser's parents come before its own arguments: the command's
        # arguments are a parent too, so that its --help lists them
        # first, then the global options.
        own = argparse.ArgumentParser(add_help=False)
        for flags, options in cmd.arguments:
            own.add_argument(*flags, **options)
        sub.add_parser(cmd.name, help=cmd.help, description=cmd.help,
                       parents=[own, after])
    return parser


def _parse(parser, argv):
    args = parser.parse_args(argv)
    args.config = (args.config or []) + getattr(args, 'config_after', [])
    defines = (args.define or []) + getattr(args, 'define_after', [])
    args.defines = dict(defines)
    args.json = bool(args.json)
    args.debug = bool(args.debug)
    if getattr(args, 'progress_after', None) is not None:
        args.progress = args.progress_after
    return args


def main(args: Optional[Sequence[str]] = None) -> int:
    """Run the ``multidb`` command; return its exit code."""
    parser = make_parser()
    try:
        ns = _parse(parser, args)
    except SystemExit as e:  # --help, or argparse's own usage error
        return e.code if isinstance(e.code, int) else USAGE
    try:
        return COMMANDS[ns.command].run(ns)
    except (ZConfig.ConfigurationError, UsageError, InvalidName,
            NotConfigured) as e:
        code = USAGE
        error = e
    except Exception as e:
        code = FAILED
        error = e
    except KeyboardInterrupt as e:
        code = INTERRUPTED
        error = e
    if ns.debug:
        traceback.print_exception(type(error), error, error.__traceback__)
    message = ' '.join(str(error).split())  # ZConfig's are multi-line
    if not message:
        message = type(error).__name__
    notes = getattr(error, '__notes__', None)
    if notes and not ns.debug:   # (the traceback printed them)
        message += ' (' + '; '.join(notes) + ')'
    print(f"multidb: error: {message}", file=sys.stderr)
    return code
