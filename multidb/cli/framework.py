"""The command framework: exit codes, the registry of subcommands and
the configured collection they load.

A subcommand is one function registered with :func:`command`; it gets
the parsed arguments and returns an exit code.  Those that need the
configured collection call :func:`load_collection` (the tenant commands
go through :func:`_tenants`, which closes the collection on every path).
"""
import argparse
import contextlib
from typing import Callable
from typing import NamedTuple
from typing import Sequence

from multidb.interfaces import ITenants

#: Exit codes (130: interrupted, as a shell reports Ctrl-C; 3: done, but
#: something is left for ``repair``).
OK, FAILED, USAGE, PARTIAL, INTERRUPTED = 0, 1, 2, 3, 130


class Command(NamedTuple):
    name: str
    help: str
    run: Callable[[argparse.Namespace], int]
    arguments: tuple


#: The subcommands, by name, in the order they were registered.
COMMANDS: dict = {}


def command(name: str, help: str, arguments: Sequence = ()):
    """Register a subcommand: ``arguments`` is a sequence of
    ``(flags, options)`` pairs for ``ArgumentParser.add_argument``."""
    def register(run):
        COMMANDS[name] = Command(name, help, run, tuple(arguments))
        return run
    return register


class UsageError(Exception):
    """A subcommand was called wrongly (exit 2)."""


def load_collection(args: argparse.Namespace, *, make_folders=False):
    """The collection that ``-C`` (and ``-D``) configure; nothing opened.

    With ``make_folders``, the missing folders of the storage paths the
    configuration names are made (the commands that create tenants use
    it, so that a fresh data folder needs no ``mkdir``)."""
    from multidb.config import collectionFromFiles
    if not args.config:
        raise UsageError("no configuration: give -C FILE or -C FOLDER")
    collection = collectionFromFiles(args.config, defines=args.defines,
                                     make_folders=make_folders)
    resolver = collection.resolver
    if ITenants.providedBy(resolver):
        # A command lives for one operation (health, list, create ...):
        # no listener for the catalog's notifications (a connection, a
        # thread) to start.
        resolver.catalog_notify = False
    return collection


@contextlib.contextmanager
def _tenants(args: argparse.Namespace, *, make_folders=False):
    """The configured collection's tenants; the collection is closed on
    every path."""
    collection = load_collection(args, make_folders=make_folders)
    try:
        yield collection.tenants   # NotConfigured without <tenants>
    finally:
        collection.close()
