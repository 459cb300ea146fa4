"""The ``multidb`` command.

``main(args)`` parses, runs one subcommand and returns the exit code:
0 success, 1 the operation failed, 2 usage or configuration errors.
A subcommand is one function registered with :func:`command`; it gets
the parsed arguments and returns an exit code.  Those that need the
configured collection call :func:`load_collection`.
"""
import argparse
import functools
import json
import os
import sys
import traceback
from typing import Callable
from typing import NamedTuple
from typing import Optional
from typing import Sequence

import ZConfig

#: Exit codes.
OK, FAILED, USAGE = 0, 1, 2


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


def load_collection(args: argparse.Namespace):
    """The collection that ``-C`` (and ``-D``) configure; nothing opened."""
    from multidb.config import collectionFromFiles
    if not args.config:
        raise UsageError("no configuration: give -C FILE or -C FOLDER")
    return collectionFromFiles(args.config, defines=args.defines)


def _define(text: str) -> tuple:
    name, sep, value = text.partition('=')
    if not sep or not name:
        raise argparse.ArgumentTypeError(
            f"expected NAME=VALUE, not {text!r}")
    return name, value


def _global_options(parser: argparse.ArgumentParser, suffix: str,
                    default) -> None:
    # Given twice: before the subcommand (the documented place) and after
    # it, where operators also type them; the second set must not reset
    # what the first set.
    parser.add_argument(
        '-C', '--config', action='append', metavar='FILE',
        dest='config' + suffix, default=default,
        help="a configuration file, or a folder of *.conf files;"
             " repeatable, composed in order")
    parser.add_argument(
        '-D', '--define', action='append', metavar='NAME=VALUE',
        type=_define, dest='define' + suffix, default=default,
        help="set a %%define of the configuration (wins over the"
             " file's own); repeatable")
    parser.add_argument(
        '--json', action='store_true', default=default,
        help="print machine-readable JSON")
    parser.add_argument(
        '--debug', action='store_true', default=default,
        help="print the traceback of an error")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='multidb',
        description="Manage a collection of named ZODB databases.")
    _global_options(parser, '', None)
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    sub.required = True
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        for flags, options in cmd.arguments:
            p.add_argument(*flags, **options)
        _global_options(p, '_after', argparse.SUPPRESS)
    return parser


def _parse(parser, argv):
    args = parser.parse_args(argv)
    args.config = (args.config or []) + getattr(args, 'config_after', [])
    defines = (args.define or []) + getattr(args, 'define_after', [])
    args.defines = dict(defines)
    args.json = bool(args.json)
    args.debug = bool(args.debug)
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
    except (ZConfig.ConfigurationError, UsageError) as e:
        code = USAGE
        error = e
    except Exception as e:
        code = FAILED
        error = e
    if ns.debug:
        traceback.print_exception(type(error), error, error.__traceback__)
    message = ' '.join(str(error).split())  # ZConfig's are multi-line
    print(f"multidb: error: {message}", file=sys.stderr)
    return code


def _print_json(data) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


def _table(rows: list, header: tuple) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows])
              for i in range(len(header))]
    lines = ['  '.join(str(v).ljust(w) for v, w in zip(row, widths))
             .rstrip() for row in [header, *rows]]
    return '\n'.join(lines)


# -- check-config -------------------------------------------------------------

@command('check-config',
         help="load the configuration (opening nothing) and print the"
              " databases it declares")
def check_config(args: argparse.Namespace) -> int:
    collection = load_collection(args)
    try:
        sources = collection.config_sources
        template = collection.tenant_template
        databases = [{'name': name, 'kind': s.kind, 'file': s.file,
                      'line': s.line} for name, s in sources.items()]
        tenants = None
        if template is not None:
            where = template.where
            tenants = dict(template.settings, file=where.file,
                           line=where.line)
        if args.json:
            _print_json({
                'files': collection.config_files,
                'max_open': collection.max_open,
                'open_timeout': collection.open_timeout,
                'databases': databases,
                'tenants': tenants,
            })
            return OK
        print(f"{len(databases)} database(s) from"
              f" {len(collection.config_files)} file(s);"
              f" max-open {collection.max_open},"
              f" open-timeout {collection.open_timeout:g}s")
        if databases:
            print()
            print(_table([(d['name'], d['kind'], f"{d['file']}:{d['line']}")
                          for d in databases],
                         ('NAME', 'KIND', 'SOURCE')))
        print()
        if tenants is None:
            print("tenants: none (no <tenants> section)")
        else:
            print(f"tenants: {tenants['kind']} at {template.where}")
            print(f"  {{name}} in: {', '.join(tenants['placeholders'])}"
                  if tenants['placeholders'] else "  {name}: not used")
            print(f"  catalog: {tenants['catalog']}")
            print(f"  init: {tenants['init'] or '-'}")
            action = tenants['expire_action']
            if action == 'archive':
                action += f" to {tenants['archive_dir']}"
            print(f"  expire-action: {action}")
        return OK
    finally:
        collection.close()


# -- demo ---------------------------------------------------------------------

@command('demo',
         help="one transaction across two FileStorage databases, with a"
              " cross-database reference; run it again to see the data"
              " persist",
         arguments=[(('--dir',), dict(
             default='./multidb-data', metavar='DIR',
             help="where main.fs and customers.fs live"
                  " (default: ./multidb-data)"))])
def demo(args: argparse.Namespace) -> int:
    from persistent.mapping import PersistentMapping
    from ZODB.FileStorage import FileStorage

    from multidb import Collection

    os.makedirs(args.dir, exist_ok=True)
    paths = {name: os.path.join(args.dir, f'{name}.fs')
             for name in ('main', 'customers')}
    with Collection() as collection:
        for name, path in paths.items():
            collection.declare(name, functools.partial(FileStorage, path))
        with collection.transaction() as group:
            main, customers = group.root('main'), group.root('customers')
            previous = main.get('latest_customer')
            previous = previous['name'] if previous is not None else None
            run = main.get('runs', 0) + 1
            customer = PersistentMapping(name=f'customer-{run}', run=run)
            # Stored in customers.fs: added there before main refers to
            # it, or ZODB would store it with main's root.
            group.get_connection('customers').add(customer)
            customers[customer['name']] = customer
            main['runs'] = run
            main['latest_customer'] = customer  # a cross-database reference
            count = len(customers)
        result = {
            'dir': os.path.abspath(args.dir),
            'run': run,
            'customers': count,
            'latest_customer': f'customer-{run}',
            'previous_customer': previous,
            'files': {name: os.path.getsize(path)
                      for name, path in paths.items()},
        }
    if args.json:
        _print_json(result)
        return OK
    print(f"multidb demo in {result['dir']}")
    print(f"  committed one transaction across 'main' and 'customers'"
          f" (run {run})")
    print(f"  main.fs:      runs = {run}, latest_customer -> a"
          f" cross-database reference to customers['customer-{run}']")
    print(f"  customers.fs: {count} customer(s)")
    if previous is not None:
        print(f"  read back through main's reference: the previous run"
              f" stored {previous!r}")
    else:
        print("  first run: run the demo again to see the counter persist")
    return OK


if __name__ == '__main__':
    sys.exit(main())
