"""The maintenance commands: ``expire``, ``repair``, ``relocate`` and
``check-references``.
"""
import argparse
import datetime

from multidb.cli.arguments import _tenant_name
from multidb.cli.arguments import _timestamp
from multidb.cli.framework import FAILED
from multidb.cli.framework import OK
from multidb.cli.framework import _tenants
from multidb.cli.framework import command
from multidb.cli.output import _print_json
from multidb.cli.output import _progress
from multidb.cli.output import _table
from multidb.cli.output import _time


@command('expire', help="drop or archive (as configured) the tenants past"
                        " their expiry",
         arguments=[(('--now',), dict(
             type=_timestamp, metavar='WHEN',
             help="the time to compare expiries with, an ISO 8601 date or"
                  " date and time (2030-01-31, 2030-01-31T12:00Z; UTC unless"
                  " it says otherwise; default: now)"))])
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


@command('check-references',
         help="find objects of a tenant's database that refer to another"
              " tenant's database (isolation refuses new ones); exit code"
              " 1 when any is found",
         arguments=[(('names',), dict(
             nargs='*', metavar='NAME', type=_tenant_name,
             help="the tenants to read (default: every tenant)"))])
def check_references(args: argparse.Namespace) -> int:
    with _tenants(args) as tenants:
        found = list(tenants.check_references(args.names or None))
    if args.json:
        _print_json(found)
    elif not found:
        print("no tenant refers to another tenant")
    else:
        print(_table([(f['tenant'], f['oid'], ', '.join(f['targets']))
                      for f in found], ('TENANT', 'OID', 'REFERS TO')))
    return FAILED if found else OK
