"""The commands that run over many tenants: ``run`` (a function on each
tenant, resumable, exactly once per tenant) and ``evolve`` (bring each
tenant's data to the current generation of a schema manager).

Both exit 1 when any tenant failed (the others are done: a failure is
reported and the run goes on), 2 for bad input (a function, manager,
run id or label that cannot be used), before anything runs.
"""
import argparse
import functools

from multidb.cli.arguments import _checked
from multidb.cli.arguments import _label
from multidb.cli.arguments import _tenant_name
from multidb.cli.framework import FAILED
from multidb.cli.framework import OK
from multidb.cli.framework import UsageError
from multidb.cli.framework import _tenants
from multidb.cli.framework import command
from multidb.cli.output import _print_json
from multidb.cli.output import _progress
from multidb.cli.output import _table
from multidb.errors import InvalidInput
from multidb.errors import RunExpired
from multidb.inputs import check_dotted_name
from multidb.tenants.fleet import check_run_id


def _jobs(text: str) -> int:
    try:
        jobs = int(text)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise argparse.ArgumentTypeError(
            f"expected a number of worker processes, at least 1, not"
            f" {text!r}")
    return jobs


_SELECTION = [
    (('names',), dict(nargs='*', metavar='NAME', type=_tenant_name,
                      help="the tenants (default: every tenant)")),
    (('--label',), dict(type=_label, action='append', metavar='KEY[=VALUE]',
                        help="only the tenants with this label (any value"
                             " for a bare KEY); repeatable: all of them")),
    (('--state',), dict(action='append', metavar='STATE',
                        help="only the tenants in this state (active);"
                             " repeatable: any of them")),
    (('-j', '--jobs'), dict(type=_jobs, default=1, metavar='N',
                            help="worker processes (default 1: this one)")),
    (('--attempts',), dict(type=_jobs, default=3, metavar='N',
                           help="tries of a tenant's transaction that fails"
                                " with a transient error (default 3)")),
    (('--journal-dir',), dict(
        metavar='FOLDER',
        help="where the run's journal goes (default: $MULTIDB_RUN_DIR or"
             " ~/.local/state/multidb/runs)")),
]

_dotted = _checked(check_dotted_name)


def _selection(args):
    return dict(names=args.names or None, labels=args.label,
                states=args.state, jobs=args.jobs, attempts=args.attempts,
                journal_dir=args.journal_dir, loader=_loader(args))


def _loader(args):
    """For worker processes: load the collection as this command did
    (the same -C files and -D defines)."""
    from multidb.config import collectionFromFiles
    return functools.partial(collectionFromFiles, list(args.config),
                             defines=dict(args.defines))


def _report(args, report, extra=None) -> int:
    """Print a run's report; its exit code."""
    if args.json:
        _print_json(report.to_json())
    else:
        rows = [(n, 'done', (extra or _nothing)(report.details.get(n)))
                for n in report.done]
        rows += [(n, 'skipped', 'done before in this run')
                 for n in report.skipped]
        rows += [(n, 'failed', f"{e['type'].rpartition('.')[2]}:"
                               f" {e['message']}{_left(report, n)}")
                 for n, e in report.failed.items()]
        rows.sort()
        if rows:
            print(_table(rows, ('TENANT', 'STATUS', 'DETAIL')))
        print(f"run {report.run_id}: {len(report.done)} done,"
              f" {len(report.skipped)} skipped, {len(report.failed)}"
              f" failed")
    return FAILED if report.failed else OK


def _left(report, name):
    # An evolve's failed tenant: where it stays.
    detail = report.details.get(name) or {}
    if detail.get('generation') is None:
        return ''
    return f" (left at generation {detail['generation']})"


def _nothing(detail):
    if detail and 'result' in detail:
        return str(detail['result'])
    return '-'


@command('run', help="run a function on each tenant, each in its own"
                     " transaction, exactly once per run (resume a run"
                     " with its --run-id)",
         arguments=[(('func',), dict(
                        type=_dotted, metavar='MODULE:FUNC',
                        help="the function, func(group, name), by its"
                             " dotted name"))] + _SELECTION + [
                    (('--run-id',), dict(
                        type=_checked(check_run_id), metavar='ID',
                        help="resume the run of this id (default: a new"
                             " run, its id printed)"))])
def run(args: argparse.Namespace) -> int:
    with _tenants(args) as tenants:
        try:
            records = tenants.select(names=args.names or None,
                                     labels=args.label, states=args.state)
            from multidb.inputs import resolve_dotted
            resolve_dotted(args.func)
        except InvalidInput as e:
            raise UsageError(str(e)) from None
        from multidb.tenants.fleet import new_run_id
        run_id = args.run_id or new_run_id()
        if not args.json and args.run_id is None:
            print(f"run id {run_id} (resume with --run-id {run_id})",
                  flush=True)
        with _progress(args, "run", len(records), unit='tenant') as bar:
            try:
                report = tenants.run_all(args.func, run_id=run_id,
                                         progress=bar, **_selection(args))
            except (InvalidInput, RunExpired) as e:
                raise UsageError(str(e)) from None
    return _report(args, report)


def _generations(detail):
    if not detail or detail.get('generation') is None:
        return '-'
    if detail.get('from') == detail['generation']:
        return f"at generation {detail['generation']}"
    return f"generation {detail['from']} -> {detail['generation']}"


@command('evolve', help="bring each tenant's data to the current generation"
                        " of a schema manager (zope.generations), one"
                        " transaction per step",
         arguments=[(('--manager',), dict(
                        type=_dotted, metavar='MODULE:OBJ', required=True,
                        help="the schema manager (zope.generations'"
                             " ISchemaManager), by its dotted name")),
                    (('--key',), dict(
                        metavar='KEY',
                        help="the key its generation is kept under in"
                             " root['zope.generations'] (default: the"
                             " manager's package_name)"))] + _SELECTION)
def evolve(args: argparse.Namespace) -> int:
    with _tenants(args) as tenants:
        try:
            records = tenants.select(names=args.names or None,
                                     labels=args.label, states=args.state)
            from multidb.tenants.generations import manager_key
            from multidb.tenants.generations import resolve_manager
            manager = resolve_manager(args.manager)
            manager_key(manager, args.key)
        except InvalidInput as e:
            raise UsageError(str(e)) from None
        with _progress(args, "evolve", len(records), unit='tenant') as bar:
            report = tenants.evolve(manager=args.manager, key=args.key,
                                    progress=bar, **_selection(args))
    return _report(args, report, _generations)
