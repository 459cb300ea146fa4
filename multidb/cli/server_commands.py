"""The commands of tenants on several servers: servers, move.
"""
import argparse

from multidb.cli.arguments import _NAME
from multidb.cli.framework import FAILED
from multidb.cli.framework import OK
from multidb.cli.framework import _tenants
from multidb.cli.framework import command
from multidb.cli.output import _bytes
from multidb.cli.output import _print_json
from multidb.cli.output import _table


@command('servers', help="the tenant servers: reachable, tenants, size"
                         " (exit 1 when one cannot be reached)")
def servers(args: argparse.Namespace) -> int:
    with _tenants(args) as tenants:
        status = tenants.servers()
    if args.json:
        _print_json(status)
    else:
        rows = [(s['name'] + (' (main)' if s['main'] else ''), s['where'],
                 'yes' if s['reachable'] else 'NO',
                 '-' if s['tenants'] is None else s['tenants'],
                 _bytes(s['bytes']), _bytes(s['capacity']),
                 s['error'] or '')
                for s in status]
        print(_table(rows, ('SERVER', 'WHERE', 'REACHABLE', 'TENANTS',
                            'SIZE', 'CAPACITY', 'ERROR')))
    return OK if all(s['reachable'] for s in status) else FAILED


@command('move', help="move a tenant to another server (writes pause only"
                      " for the final switch)",
         arguments=[(('name',), _NAME),
                    (('--to',), dict(metavar='SERVER', required=True,
                                     help="the server to move it to"))])
def move(args: argparse.Namespace) -> int:
    with _tenants(args) as tenants:
        done = tenants.move(args.name, args.to)
    if args.json:
        _print_json(done)
    else:
        left = '' if done['source_dropped'] else \
            ' (the old database is left for repair)'
        print(f"moved tenant {done['name']!r} from server {done['from']!r}"
              f" to {done['to']!r}: {_bytes(done['bytes'])}, writes paused"
              f" {done['pause'] * 1000:.0f} ms{left}")
    return OK
