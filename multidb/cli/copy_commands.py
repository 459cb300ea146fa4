"""The commands that copy a tenant's data: ``snapshot``, ``snapshots``,
``revert``, ``archive`` and ``restore``.
"""
import argparse
import os

from multidb.cli.arguments import _NAME
from multidb.cli.framework import OK
from multidb.cli.framework import _tenants
from multidb.cli.framework import command
from multidb.cli.output import _bytes
from multidb.cli.output import _print_json
from multidb.cli.output import _progress
from multidb.cli.output import _size_of
from multidb.cli.output import _table
from multidb.cli.output import _time


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
