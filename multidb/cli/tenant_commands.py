"""The commands that list, show, create, clone and drop tenants.
"""
import argparse
import contextlib
import itertools
import os
import sys
from typing import Optional

from multidb.cli.arguments import _EXPIRES
from multidb.cli.arguments import _LABEL
from multidb.cli.arguments import _NAME
from multidb.cli.framework import OK
from multidb.cli.framework import PARTIAL
from multidb.cli.framework import UsageError
from multidb.cli.framework import _tenants
from multidb.cli.framework import command
from multidb.cli.output import _print_json
from multidb.cli.output import _progress
from multidb.cli.output import _size_of
from multidb.cli.output import _stream_json
from multidb.cli.output import _table
from multidb.cli.output import _time
from multidb.cli.output import _widths


# -- labels and records -------------------------------------------------------

def _labels(pairs) -> Optional[dict]:
    if pairs is None:
        return None
    labels = {}
    for key, value in pairs:
        if key in labels:
            raise UsageError(f"label {key!r} is given twice")
        labels[key] = value
    return labels


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


# -- the commands -------------------------------------------------------------

@command('list', help="list the tenants",
         arguments=[(('--generations',), dict(
             metavar='MODULE:OBJ',
             help="also show each tenant's data generation for this"
                  " schema manager (see 'evolve'); opens every tenant"))])
def list_(args: argparse.Namespace) -> int:
    # Streamed, a batch of records at a time (sorted by name, as the
    # catalog keeps them): 100,000 tenants are never in memory at once.
    with _tenants(args) as tenants:
        generation = _generation_reader(tenants, args.generations)
        records = tenants.records(batch=_LIST_BATCH)
        if args.json:
            _stream_json(dict(r.to_json(), generation=generation(r.name))
                         if args.generations else r.to_json()
                         for r in records)
            return OK
        header = ('NAME', 'STATE', 'CREATED', 'EXPIRES', 'SNAPSHOTS',
                  'LABELS') + (('GENERATION',) if args.generations else ())
        widths = None
        for chunk in _chunks(records, _LIST_BATCH):
            rows = [(r.name, r.state, _time(r.created), _time(r.expires),
                     len(r.snapshots), _show_labels(r.labels))
                    + ((_shown(generation(r.name)),) if args.generations
                       else ())
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


def _generation_reader(tenants, manager):
    """generation(name): a tenant's generation for the schema manager
    named (each read opens the tenant, in a transaction of its own)."""
    if manager is None:
        return None
    from multidb.errors import InvalidInput
    from multidb.tenants.generations import generation_of
    from multidb.tenants.generations import manager_key
    from multidb.tenants.generations import resolve_manager
    try:
        key = manager_key(resolve_manager(manager))
    except InvalidInput as e:
        raise UsageError(str(e)) from None

    def generation(name):
        # One unreadable tenant (its storage missing) does not end the
        # list: its generation shows as '?'.
        try:
            with tenants.collection.transaction() as g:
                return generation_of(g.root(name), key)
        except Exception:
            return '?'
    return generation


def _shown(generation):
    return '-' if generation is None else generation


def _chunks(iterable, size):
    it = iter(iterable)
    while True:
        chunk = list(itertools.islice(it, size))
        if not chunk:
            return
        yield chunk


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
                             " exists already")),
                    (('--server',), dict(
                        metavar='SERVER',
                        help="the tenant server to make it on (<server>"
                             " sections; default: the placement's"
                             " choice)"))])
def create(args: argparse.Namespace) -> int:
    from multidb.errors import TenantExists
    labels = _labels(args.label)
    existed = False
    with _tenants(args, make_folders=True) as tenants:
        try:
            rec = tenants.create(args.name, expires=args.expires,
                                 labels=labels, server=args.server)
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
