"""The ``multidb`` command.

``main(args)`` parses, runs one subcommand and returns the exit code:
0 success, 1 the operation failed (a ``MultiDBError`` such as an unknown
or existing tenant or a corrupt archive, an ``OSError``, a ZODB error),
2 usage or configuration errors (argparse's, a bad option value or tenant
name, ZConfig's, no ``-C``, no ``<tenants>`` section), 3 a partial
success (the operation is done, something is left for ``repair``).  Errors print one
line, ``multidb: error: ...``, on stderr; ``--debug`` adds the traceback.

A subcommand is one function registered with :func:`command`; it gets
the parsed arguments and returns an exit code.  Those that need the
configured collection call :func:`load_collection` (the tenant commands
go through :func:`_tenants`, which closes the collection on every path).
"""
import argparse
import contextlib
import datetime
import functools
import itertools
import json
import os
import re
import sys
import traceback
from typing import Callable
from typing import NamedTuple
from typing import Optional
from typing import Sequence

import ZConfig

from multidb.errors import InvalidName
from multidb.errors import NotConfigured

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
    made = set()
    while True:
        try:
            return collectionFromFiles(args.config, defines=args.defines)
        except ZConfig.DataConversionError as e:
            # ZODB's storage paths are ``existing-dirpath``: ZConfig
            # reports one missing folder per load, with the path as the
            # value.  Anything else is a real configuration error.
            folder = _missing_folder(e) if make_folders else None
            if folder is None or folder in made:
                raise
            os.makedirs(folder, exist_ok=True)
            made.add(folder)


def _missing_folder(error):
    value = error.value
    if not isinstance(value, str) or 'does not exist' not in str(
            error.exception):
        return None
    folder = os.path.dirname(os.path.expanduser(value))
    if not folder or os.path.isdir(folder):
        return None
    return folder


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
    parser.add_argument(
        '--progress', action=argparse.BooleanOptionalAction,
        dest='progress' + suffix, default=default,
        help="show a progress bar on stderr for long operations"
             " (default: only when stderr is a terminal)")


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
               " 'multidb repair'.")
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
    print(f"multidb: error: {message}", file=sys.stderr)
    return code


def _print_json(data) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


def _widths(rows: list, header: tuple) -> list:
    return [max(len(str(r[i])) for r in [header, *rows])
            for i in range(len(header))]


def _table(rows: list, header: Optional[tuple],
           widths: Optional[list] = None) -> str:
    """rows under header (None: no header line), in columns of widths
    (default: the widest cells)."""
    top = [] if header is None else [header]
    if widths is None:
        widths = _widths(rows, header)
    lines = ['  '.join(str(v).ljust(w) for v, w in zip(row, widths))
             .rstrip() for row in [*top, *rows]]
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
                'zeo_wait_timeout': collection.zeo_wait_timeout,
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


# -- health -------------------------------------------------------------------

def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1
    if not value > 0:
        raise argparse.ArgumentTypeError(
            f"expected a positive number of seconds, not {text!r}")
    return value


@command('health',
         help="check that databases are reachable: latency and last"
              " transaction of each; exit 1 when any is unreachable",
         arguments=[
             (('names',), dict(
                 nargs='*', metavar='NAME',
                 help="the databases to check (default: every configured"
                      " database that is not a tenant)")),
             (('--all',), dict(
                 action='store_true', dest='all_tenants',
                 help="check every catalogued tenant too")),
             (('--timeout',), dict(
                 type=_seconds, default=None, metavar='SECONDS',
                 help="how long a database may take to answer"
                      " (default: 6)")),
         ])
def health(args: argparse.Namespace) -> int:
    collection = load_collection(args)
    try:
        results = collection.health(args.names or None,
                                    timeout=args.timeout,
                                    all=args.all_tenants)
    finally:
        collection.close()
    ok = all(r.reachable for r in results)
    if args.json:
        _print_json({'ok': ok, 'databases': [r.as_dict() for r in results]})
        return OK if ok else FAILED
    rows = [(r.name, 'yes' if r.reachable else 'NO',
             '-' if r.latency is None else f"{r.latency * 1000:.1f} ms",
             _time(r.last_transaction), r.error or '')
            for r in results]
    if rows:
        print(_table(rows, ('NAME', 'REACHABLE', 'LATENCY',
                            'LAST TRANSACTION', 'ERROR')))
    unreachable = sum(not r.reachable for r in results)
    print(f"{len(results) - unreachable} of {len(results)} database(s)"
          f" reachable")
    return OK if ok else FAILED


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

    from multidb.collection import Collection

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


# -- tenants: argument types --------------------------------------------------
# Option values are checked while parsing, before the configuration is
# loaded: a bad value is a usage error (exit 2) and touches nothing.

_DURATION = re.compile(r'(\d+)([smhd])\Z')
_UNITS = {'s': 'seconds', 'm': 'minutes', 'h': 'hours', 'd': 'days'}
_LABEL_KEY = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.:/-]{0,62}\Z')


def _tenant_name(text: str) -> str:
    from multidb.names import check_tenant_name
    try:
        return check_tenant_name(text)
    except InvalidName as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _timestamp(text: str) -> datetime.datetime:
    """An ISO date or date and time; UTC unless it says otherwise."""
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO date or date and time (2030-01-31,"
            f" 2030-01-31T12:00Z), not {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when


def _expires(text: str):
    """``--expires``: a duration from now (``30d``, ``12h``, ``90m``,
    ``3600s``) or an ISO date or date and time."""
    m = _DURATION.match(text.strip())
    if m:
        amount = int(m.group(1))
        if not amount:
            raise argparse.ArgumentTypeError(
                f"a duration must be positive, not {text!r}")
        try:
            return datetime.timedelta(**{_UNITS[m.group(2)]: amount})
        except OverflowError:
            raise argparse.ArgumentTypeError(
                f"duration {text!r} is too long") from None
    if text[:1].isdigit() and not re.match(r'\d{4}-', text):
        raise argparse.ArgumentTypeError(
            f"bad duration {text!r}: write a number and one of s, m, h, d"
            f" (30d, 12h, 90m, 3600s)")
    try:
        return _timestamp(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a duration (30d, 12h, 90m, 3600s) or an ISO date"
            f" or date and time (2030-01-31, 2030-01-31T12:00Z),"
            f" not {text!r}") from None


def _label(text: str) -> tuple:
    """``--label``: ``key=value`` or a bare ``key`` (an empty value)."""
    key, _, value = text.partition('=')
    if not _LABEL_KEY.match(key):
        raise argparse.ArgumentTypeError(
            f"bad label {text!r}: the key is 1 to 63 ASCII letters, digits"
            f" or '_.:/-', starting with a letter or digit")
    if any(not c.isprintable() for c in value):
        raise argparse.ArgumentTypeError(
            f"bad label {text!r}: the value has a control character")
    return key, value


def _labels(pairs) -> Optional[dict]:
    if pairs is None:
        return None
    labels = {}
    for key, value in pairs:
        if key in labels:
            raise UsageError(f"label {key!r} is given twice")
        labels[key] = value
    return labels


_NAME = dict(type=_tenant_name, metavar='NAME')
_EXPIRES = (('--expires',), dict(
    type=_expires, metavar='WHEN',
    help="when the tenant expires: a duration from now (30d, 12h, 90m,"
         " 3600s) or an ISO date or date and time (UTC unless it says"
         " otherwise)"))
_LABEL = (('--label',), dict(
    type=_label, action='append', metavar='KEY[=VALUE]',
    help="a label of the tenant; repeatable"))


# -- tenants: running and printing --------------------------------------------

@contextlib.contextmanager
def _tenants(args: argparse.Namespace, *, make_folders=False):
    """The configured collection's tenants; the collection is closed on
    every path."""
    collection = load_collection(args, make_folders=make_folders)
    try:
        yield collection.tenants   # NotConfigured without <tenants>
    finally:
        collection.close()


@contextlib.contextmanager
def _progress(args, what: str, total=None, unit='B'):
    """A ``progress`` callback drawing a bar on stderr, or None when the
    bar is off (stderr not a terminal, unless ``--progress``)."""
    show = args.progress
    if show is None:
        show = sys.stderr.isatty()
    if not show:
        yield None
        return
    from tqdm import tqdm
    bar = tqdm(total=total, desc=what, unit=unit, file=sys.stderr,
               unit_scale=unit == 'B', unit_divisor=1024,
               dynamic_ncols=True)
    try:
        yield bar.update
    finally:
        bar.close()


def _size_of(rec) -> Optional[int]:
    # For the bar's total only: None (an open-ended bar) when unknown.
    path = rec.settings.get('path')
    try:
        return os.path.getsize(path) if path else None
    except OSError:
        return None


def _time(t) -> str:
    if t is None:
        return '-'
    return t.astimezone(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def _bytes(n) -> str:
    if n is None:
        return '-'
    for unit in ('B', 'KiB', 'MiB', 'GiB'):
        if n < 1024 or unit == 'GiB':
            return f"{n} {unit}" if unit == 'B' else f"{n:.1f} {unit}"
        n /= 1024


def _show_labels(labels: dict) -> str:
    return ','.join(f"{k}={v}" if v else k
                    for k, v in sorted(labels.items())) or '-'


def _where(rec) -> str:
    from multidb.tenants.catalog import public_settings
    # Never a password (records made before they were kept out may hold
    # one); the tenant id has a line of its own (show).
    settings = {k: v for k, v in public_settings(rec.settings).items()
                if k not in ('kind', 'id')}
    if list(settings) == ['path']:
        return settings['path']
    return ' '.join(f"{k}={v}" for k, v in settings.items())


# -- tenants: the commands ----------------------------------------------------

@command('list', help="list the tenants")
def list_(args: argparse.Namespace) -> int:
    # Streamed, a batch of records at a time (sorted by name, as the
    # catalog keeps them): 100,000 tenants are never in memory at once.
    with _tenants(args) as tenants:
        records = tenants.records(batch=_LIST_BATCH)
        if args.json:
            _stream_json(r.to_json() for r in records)
            return OK
        header = ('NAME', 'STATE', 'CREATED', 'EXPIRES', 'SNAPSHOTS',
                  'LABELS')
        widths = None
        for chunk in _chunks(records, _LIST_BATCH):
            rows = [(r.name, r.state, _time(r.created), _time(r.expires),
                     len(r.snapshots), _show_labels(r.labels))
                    for r in chunk]
            if widths is None:
                # The first batch sets the columns; a longer cell later
                # pushes its own row only.
                widths = _widths(rows, header)
                print(_table([], header, widths))
            print(_table(rows, None, widths))
        if widths is None:
            print("no tenants")
    return OK


_LIST_BATCH = 1000


def _chunks(iterable, size):
    it = iter(iterable)
    while True:
        chunk = list(itertools.islice(it, size))
        if not chunk:
            return
        yield chunk


def _stream_json(items) -> None:
    """Print a JSON array of items as _print_json would, one item at a
    time."""
    out = sys.stdout
    first = True
    for item in items:
        text = json.dumps(item, indent=2, sort_keys=False)
        out.write(('[\n' if first else ',\n')
                  + '\n'.join('  ' + line for line in text.split('\n')))
        first = False
    out.write('[]\n' if first else '\n]\n')
    out.flush()


@command('show', help="show one tenant's record",
         arguments=[(('name',), _NAME)])
def show(args: argparse.Namespace) -> int:
    with _tenants(args) as tenants:
        rec = tenants.get(args.name)
    if args.json:
        _print_json(rec.to_json())
        return OK
    _print_record(rec)
    return OK


def _print_record(rec) -> None:
    print(f"tenant {rec.name!r}")
    for key, value in [
            ('state', rec.state),
            ('storage', f"{rec.kind} {_where(rec)}"),
            ('id', rec.settings.get('id') or '-'),
            ('created', _time(rec.created)),
            ('modified', _time(rec.modified)),
            ('expires', _time(rec.expires) if rec.expires else 'never'),
            ('labels', _show_labels(rec.labels)),
            ('snapshots', len(rec.snapshots))]:
        print(f"  {key + ':':<10} {value}")


@command('create', help="create a tenant from the <tenants> template",
         arguments=[(('name',), _NAME), _EXPIRES, _LABEL,
                    (('--exist-ok',), dict(
                        action='store_true',
                        help="succeed, changing nothing, when the tenant"
                             " exists already"))])
def create(args: argparse.Namespace) -> int:
    from multidb.errors import TenantExists
    labels = _labels(args.label)
    existed = False
    with _tenants(args, make_folders=True) as tenants:
        try:
            rec = tenants.create(args.name, expires=args.expires,
                                 labels=labels)
        except TenantExists:
            if not args.exist_ok:
                raise
            rec, existed = tenants.get(args.name), True
    if args.json:
        _print_json(rec.to_json())
    elif existed:
        print(f"tenant {rec.name!r} exists already (unchanged)")
    else:
        expires = f", expires {_time(rec.expires)}" if rec.expires else ''
        print(f"created tenant {rec.name!r} at {_where(rec)}{expires}")
    return OK


@command('clone', help="create a tenant with a copy of another's data",
         arguments=[(('source',), dict(_NAME, metavar='SOURCE')),
                    (('name',), _NAME), _EXPIRES, _LABEL])
def clone(args: argparse.Namespace) -> int:
    labels = _labels(args.label)
    with _tenants(args) as tenants:
        source = tenants.get(args.source)
        with _progress(args, f"clone {args.source}",
                       _size_of(source)) as progress:
            rec = tenants.clone(args.source, args.name, expires=args.expires,
                                labels=labels, progress=progress)
    if args.json:
        _print_json(rec.to_json())
    else:
        print(f"cloned tenant {args.source!r} to {rec.name!r} at"
              f" {_where(rec)}")
    return OK


@command('drop', help="drop a tenant and delete its data",
         arguments=[(('name',), _NAME),
                    (('--archive-to',), dict(
                        metavar='FILE',
                        help="archive the tenant to FILE first (a new"
                             " file); nothing is dropped if that fails"))])
def drop(args: argparse.Namespace) -> int:
    from multidb.errors import DropIncomplete
    left = None
    with _tenants(args) as tenants:
        bar = contextlib.nullcontext()
        if args.archive_to is not None:
            bar = _progress(args, f"archive {args.name}",
                            _size_of(tenants.get(args.name)))
        with bar as progress:
            try:
                rec = tenants.drop(args.name, archive_to=args.archive_to,
                                   progress=progress)
            except DropIncomplete as e:
                # Dropped (the record is gone): a partial success, said
                # as such, with what is left for repair.
                rec, left = e.record, e
    archive = None if args.archive_to is None else os.path.abspath(
        args.archive_to)
    if args.json:
        _print_json({'dropped': rec.name, 'archive': archive,
                     'record': rec.to_json(),
                     'left': None if left is None else left.left,
                     'error': None if left is None else str(left.error)})
    else:
        kept = f" (archived to {archive})" if archive else ''
        print(f"dropped tenant {rec.name!r}{kept}")
        if left is not None:
            print(f"multidb: warning: {left}", file=sys.stderr)
    return OK if left is None else PARTIAL


@command('snapshot', help="take a point-in-time copy of a tenant",
         arguments=[(('name',), _NAME),
                    (('--label',), dict(
                        metavar='TEXT', help="a note kept with the"
                                             " snapshot"))])
def snapshot(args: argparse.Namespace) -> int:
    with _tenants(args) as tenants:
        with _progress(args, f"snapshot {args.name}",
                       _size_of(tenants.get(args.name))) as progress:
            sid = tenants.snapshot(args.name, args.label, progress=progress)
        snap = tenants.get(args.name).snapshot(sid)
    if args.json:
        _print_json(dict(tenant=args.name, **snap.to_json()))
    else:
        print(f"snapshot {sid} of tenant {args.name!r}"
              f" ({_bytes(snap.size)})")
    return OK


@command('snapshots', help="list a tenant's snapshots",
         arguments=[(('name',), _NAME)])
def snapshots(args: argparse.Namespace) -> int:
    with _tenants(args) as tenants:
        snaps = tenants.snapshots(args.name)
    if args.json:
        _print_json([s.to_json() for s in snaps])
        return OK
    if not snaps:
        print(f"tenant {args.name!r} has no snapshots")
        return OK
    print(_table([(s.id, _time(s.created), _bytes(s.size), s.label or '-')
                  for s in snaps], ('ID', 'CREATED', 'SIZE', 'LABEL')))
    return OK


@command('revert', help="put a tenant back to a snapshot (the current"
                        " state is snapshotted first)",
         arguments=[(('name',), _NAME),
                    (('id',), dict(metavar='ID', help="a snapshot id, as"
                                   " 'multidb snapshots NAME' lists"))])
def revert(args: argparse.Namespace) -> int:
    from multidb.errors import NoSuchSnapshot
    with _tenants(args) as tenants:
        rec = tenants.get(args.name)
        snap = rec.snapshot(args.id)
        if snap is None:
            raise NoSuchSnapshot(args.name, args.id)
        total = (_size_of(rec) or 0) + snap.size
        with _progress(args, f"revert {args.name}", total) as progress:
            before = tenants.revert(args.name, args.id, progress=progress)
    if args.json:
        _print_json({'tenant': args.name, 'reverted_to': args.id,
                     'before': before})
    else:
        print(f"reverted tenant {args.name!r} to snapshot {args.id};"
              f" undo with: multidb revert {args.name} {before}")
    return OK


@command('archive', help="write a tenant to one portable archive file"
                        " (signed when an archive key is configured)",
         arguments=[(('name',), _NAME),
                    (('file',), dict(metavar='FILE',
                                     help="the archive, a new file"))])
def archive(args: argparse.Namespace) -> int:
    with _tenants(args) as tenants:
        with _progress(args, f"archive {args.name}",
                       _size_of(tenants.get(args.name))) as progress:
            path = tenants.archive(args.name, args.file, progress=progress)
    path = os.path.abspath(path)
    size = os.path.getsize(path)
    if args.json:
        from multidb.tenants.archive import read_header
        signed = read_header(path, verify=False).get('signature') is not None
        _print_json({'tenant': args.name, 'archive': path, 'size': size,
                     'signed': signed})
    else:
        print(f"archived tenant {args.name!r} to {path} ({_bytes(size)})")
    return OK


@command('restore', help="make a tenant from an archive file",
         arguments=[(('file',), dict(metavar='FILE')),
                    (('name',), dict(_NAME, nargs='?',
                                     help="the tenant's name (default:"
                                          " the archived tenant's)")),
                    (('--replace',), dict(
                        action='store_true',
                        help="replace an existing tenant (its current"
                             " state is snapshotted first)")),
                    (('--trust-unsigned',), dict(
                        action='store_true',
                        help="restore an archive that is not signed (or"
                             " whose signature no configured key can"
                             " check), because you know where it comes"
                             " from: its data is pickles, which can run"
                             " code; what they name is checked all the"
                             " same"))])
def restore(args: argparse.Namespace) -> int:
    try:
        total = os.path.getsize(args.file)
    except OSError:
        total = None   # restore itself says what is wrong
    with _tenants(args, make_folders=True) as tenants:
        with _progress(args, f"restore {args.name or args.file}",
                       total) as progress:
            rec = tenants.restore(args.file, args.name,
                                  replace=args.replace, progress=progress,
                                  trust_unsigned=args.trust_unsigned)
    if args.json:
        _print_json(rec.to_json())
    else:
        print(f"restored tenant {rec.name!r} from {args.file}")
    return OK


@command('expire', help="drop or archive (as configured) the tenants past"
                        " their expiry",
         arguments=[(('--now',), dict(
             type=_timestamp, metavar='WHEN',
             help="the time to compare expiries with, an ISO date or date"
                  " and time (default: now)"))])
def expire(args: argparse.Namespace) -> int:
    with _tenants(args) as tenants:
        when = args.now or datetime.datetime.now(datetime.timezone.utc)
        due = sum(1 for r in tenants.list() if r.expired(when))
        with _progress(args, "expire", due, unit='tenant') as progress:
            done = tenants.expire(when, progress=progress)
    if args.json:
        _print_json(done)
        return OK
    if not done:
        print(f"no tenant expired by {_time(when)}")
        return OK
    print(_table([(d['name'], d['action'], d['archive'] or d['error'] or '-')
                  for d in done], ('NAME', 'ACTION', 'DETAIL')))
    # Skipped tenants are reported, not failures: a later run retries.
    return OK


@command('repair', help="find (and delete) storage that provably belongs"
                        " to no catalog record, stray snapshots and"
                        " temporary files; report missing and moved"
                        " storage",
         arguments=[(('--dry-run',), dict(
             action='store_true',
             help="report what would be done, change nothing"))])
def repair(args: argparse.Namespace) -> int:
    with _tenants(args) as tenants:
        findings = tenants.repair(dry_run=args.dry_run)
    if args.json:
        _print_json(findings)
        return OK
    if not findings:
        print("nothing to repair")
        return OK
    print(_table([(f['kind'], f['name'] or '-', f['path'], f['action'])
                  for f in findings], ('FOUND', 'TENANT', 'PATH', 'ACTION')))
    return OK


@command('relocate', help="point tenant records at their storage as the"
                          " configuration spells its place now (a moved"
                          " folder, a dsn written another way), give old"
                          " records their tenant id, drop recorded"
                          " credentials; moves and deletes nothing",
         arguments=[(('names',), dict(
                        nargs='*', metavar='NAME', type=_tenant_name,
                        help="the tenants (default: every tenant)")),
                    (('--dry-run',), dict(
                        action='store_true',
                        help="report what would be done, change nothing"))])
def relocate(args: argparse.Namespace) -> int:
    with _tenants(args) as tenants:
        done = tenants.relocate(args.names or None, dry_run=args.dry_run)
    if args.json:
        _print_json(done)
    elif not done:
        print("nothing to relocate")
    else:
        print(_table([(d['name'], d['from'], d['to'], d['action'])
                      for d in done], ('TENANT', 'FROM', 'TO', 'ACTION')))
    # Refused tenants are reported; the records of the others changed.
    return FAILED if any(d['action'].startswith('refused')
                         for d in done) else OK


if __name__ == '__main__':
    sys.exit(main())
