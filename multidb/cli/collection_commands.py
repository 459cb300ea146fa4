"""The commands on the configured collection and its databases, not
tenants: ``check-config``, ``health`` and ``demo``.
"""
import argparse
import functools
import os

from multidb.cli.arguments import _seconds
from multidb.cli.framework import FAILED
from multidb.cli.framework import OK
from multidb.cli.framework import UsageError
from multidb.cli.framework import command
from multidb.cli.framework import load_collection
from multidb.cli.output import _print_json
from multidb.cli.output import _table
from multidb.cli.output import _time


# -- check-config -------------------------------------------------------------

@command('check-config',
         help="load the configuration (opening nothing) and print the"
              " databases it declares")
def check_config(args: argparse.Namespace) -> int:
    collection = load_collection(args)
    try:
        configuration = collection.configuration
        if configuration is None:
            raise UsageError(
                f"{collection!r} was not loaded from configuration files"
                f" (its configuration is None): nothing to check")
        sources = configuration.sources
        template = configuration.tenant_template
        databases = [{'name': name, 'kind': s.kind, 'file': s.file,
                      'line': s.line} for name, s in sources.items()]
        tenants = None
        if template is not None:
            where = template.where
            tenants = dict(template.settings, file=where.file,
                           line=where.line)
        if args.json:
            _print_json({
                'files': configuration.files,
                'max_open': collection.max_open,
                'open_timeout': collection.open_timeout,
                'zeo_wait_timeout': configuration.zeo_wait_timeout,
                'databases': databases,
                'tenants': tenants,
            })
            return OK
        print(f"{len(databases)} database(s) from"
              f" {len(configuration.files)} file(s);"
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
            if action == 'archive' and tenants['archive_dir']:
                action += f" to {tenants['archive_dir']}"
            elif action == 'archive':
                action += (" (no archive-dir: expire refuses until one is"
                           " set)")
            print(f"  expire-action: {action}")
        return OK
    finally:
        collection.close()


# -- health -------------------------------------------------------------------

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
                 help="how long a database may take to answer, in"
                      " seconds or with a unit (3s, 500ms; default: 6)")),
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
             _time(r.last_transaction),
             '-' if r.in_use is None else str(r.in_use), r.error or '')
            for r in results]
    if rows:
        print(_table(rows, ('NAME', 'REACHABLE', 'LATENCY',
                            'LAST TRANSACTION', 'IN USE', 'ERROR')))
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
             default='./multidb-demo', metavar='DIR',
             help="where main.fs and customers.fs live"
                  " (default: ./multidb-demo, apart from the example"
                  " configuration's ./multidb-data)"))])
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
