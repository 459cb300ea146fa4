"""The commands that look after every tenant at once: ``stats``,
``pack``, ``export-config`` and ``gc``.
"""
import argparse
import sys

from multidb.cli.arguments import _checked
from multidb.cli.arguments import _tenant_name
from multidb.cli.framework import FAILED
from multidb.cli.framework import OK
from multidb.cli.framework import UsageError
from multidb.cli.framework import _tenants
from multidb.cli.framework import command
from multidb.cli.framework import load_collection
from multidb.cli.output import _bytes
from multidb.cli.output import _print_json
from multidb.cli.output import _progress
from multidb.cli.output import _table
from multidb.cli.output import _time
from multidb.errors import InvalidInput
from multidb.tenants.packing import check_days
from multidb.tenants.packing import check_jobs
from multidb.tenants.stats import FULL_SORT_KEYS
from multidb.tenants.stats import SORT_KEYS
from multidb.tenants.stats import sort_stats


def _parse_jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InvalidInput('number of jobs', text,
                           'not a whole number') from None
    return check_jobs(value)


#: ``--days``: 0 or more days, fractions allowed (``0.5``).
_days = _checked(check_days)
#: ``-j``: 1 or more workers.
_jobs = _checked(_parse_jobs)

_NAMES = (('names',), dict(
    nargs='*', metavar='NAME', type=_tenant_name,
    help="the tenants (default: every tenant)"))


@command('stats', help="per tenant: size on disk, open in this process,"
                       " last opened, created; with --full also the"
                       " object count and the last transaction's time",
         arguments=[_NAMES,
                    (('--sort',), dict(
                        choices=list(SORT_KEYS), default='name',
                        help="the order: name (A to Z), or largest or"
                             " latest first (objects and last-transaction"
                             " need --full; default: name)")),
                    (('--full',), dict(
                        action='store_true',
                        help="read every tenant's storage for its object"
                             " count and last transaction (slow for many"
                             " or large tenants; without it nothing is"
                             " opened)"))])
def stats(args: argparse.Namespace) -> int:
    if args.sort in FULL_SORT_KEYS and not args.full:
        raise UsageError(f"--sort {args.sort} needs --full (the cheap"
                         f" numbers do not include it)")
    with _tenants(args) as tenants:
        rows = sort_stats(tenants.stats(args.names or None,
                                        full=args.full), args.sort)
    if args.json:
        _print_json([r.to_json() for r in rows])
        return OK
    header = ['NAME', 'SIZE', 'OPEN', 'LAST-OPENED', 'CREATED']
    if args.full:
        header += ['OBJECTS', 'LAST-TRANSACTION']
    errors = any(r.error for r in rows)
    if errors:
        header.append('ERROR')
    table = []
    for r in rows:
        row = [r.name, _bytes(r.size), 'yes' if r.open else 'no',
               _time(r.last_opened), _time(r.created)]
        if args.full:
            row += ['-' if r.objects is None else r.objects,
                    _time(r.last_transaction)]
        if errors:
            row.append(r.error or '-')
        table.append(tuple(row))
    if table:
        print(_table(table, tuple(header)))
    else:
        print("no tenants")
    return OK


@command('pack', help="pack tenants (default: every tenant) without"
                      " garbage collection, several at a time; prints"
                      " the bytes reclaimed",
         arguments=[_NAMES,
                    (('--days',), dict(
                        type=_days, default=0, metavar='N',
                        help="keep the history of the last N days"
                             " (default: 0, pack to now)")),
                    (('-j', '--jobs'), dict(
                        type=_jobs, default=1, metavar='N',
                        help="pack N tenants at a time (default: 1)"))])
def pack(args: argparse.Namespace) -> int:
    with _tenants(args) as tenants:
        total = len(args.names) if args.names else None
        with _progress(args, "pack", total, unit='tenant') as progress:
            results = tenants.pack(args.names or None, days=args.days,
                                   jobs=args.jobs, progress=progress)
    failed = [r for r in results if r.error]
    if args.json:
        _print_json([r.to_json() for r in results])
    elif not results:
        print("no tenants")
    else:
        print(_table([(r.name, _bytes(r.before), _bytes(r.after),
                       _bytes(r.reclaimed), r.error or 'packed')
                      for r in results],
                     ('NAME', 'BEFORE', 'AFTER', 'RECLAIMED', 'RESULT')))
        reclaimed = sum(r.reclaimed or 0 for r in results)
        print(f"{len(results) - len(failed)} packed, {len(failed)} failed,"
              f" {_bytes(reclaimed)} reclaimed (no garbage collection:"
              f" see 'multidb gc')")
    return FAILED if failed else OK


@command('export-config', help="write a plain ZODB configuration of every"
                               " database (configured ones and tenants)"
                               " for ZODB's own tools; no passwords unless"
                               " --with-secrets",
         arguments=[(('-o', '--output'), dict(
                        metavar='FILE',
                        help="write to FILE, atomically (default: print"
                             " it)")),
                    (('--with-secrets',), dict(
                        action='store_true',
                        help="write passwords too (the file is made"
                             " readable by its owner only)"))])
def export_config(args: argparse.Namespace) -> int:
    from multidb.exporting import export_config as export
    collection = load_collection(args)
    try:
        exported = export(collection, defines=args.defines,
                          with_secrets=args.with_secrets)
    finally:
        collection.close()
    if args.output:
        exported.write(args.output)
    if args.json:
        _print_json({'output': args.output,
                     'databases': exported.databases,
                     'redacted': exported.redacted,
                     'with_secrets': exported.with_secrets,
                     **({} if args.output else {'text': exported.text})})
        return OK
    if not args.output:
        sys.stdout.write(exported.text)
    else:
        print(f"wrote {len(exported.databases)} databases to"
              f" {args.output}")
    # Said where the operator looks, whether the text went to a file or
    # not.
    if exported.redacted:
        print(f"multidb: secrets left out ({len(exported.redacted)}):"
              f" give --with-secrets to write them", file=sys.stderr)
    elif exported.with_secrets:
        print("multidb: the configuration holds secrets: keep it private",
              file=sys.stderr)
    return OK


@command('gc', help="delete the objects no database's root reaches,"
                    " following references across databases"
                    " (zc.zodbdgc); 'multidb pack' then reclaims the"
                    " space.  Opens every database: stop the application"
                    " first (FileStorage)",
         arguments=[(('--days',), dict(
                        type=_days, default=1, metavar='N',
                        help="keep objects written in the last N days"
                             " (default: 1)")),
                    (('--ignore',), dict(
                        action='append', default=[], metavar='NAME',
                        help="do not follow references to database NAME"
                             " (one that is gone); repeatable"))])
def gc(args: argparse.Namespace) -> int:
    from multidb.exporting import collect_garbage
    if not args.config:
        raise UsageError("no configuration: give -C FILE or -C FOLDER")
    result = collect_garbage(args.config, defines=args.defines,
                             days=args.days, ignore=args.ignore)
    if args.json:
        _print_json(result.to_json())
        return OK
    rows = [(name, count) for name, count in result.deleted.items()
            if count]
    if rows:
        print(_table(rows, ('DATABASE', 'DELETED')))
    print(f"{result.total} objects deleted in"
          f" {len(result.deleted)} databases"
          + ("; 'multidb pack' reclaims their space" if result.total
             else ""))
    return OK
