"""The maintenance of tenants: expire, repair and relocate.

:class:`Maintenance`, a part of ``multidb.tenants.lifecycle.Tenants``:
expiry (the tenants past it are archived and dropped, or dropped), repair (storage
that provably belongs to no record is deleted) and relocation (records
are pointed at their storage as the configuration spells its place now).
"""
import contextlib
import datetime
import functools
import logging
import os
from typing import Any
from typing import Callable
from typing import Dict
from typing import Iterable
from typing import List
from typing import Optional
from typing import Union

from multidb.errors import DatabaseInUse
from multidb.errors import DropIncomplete
from multidb.errors import NoSuchTenant
from multidb.errors import NotConfigured
from multidb.files import stale_temp_files
from multidb.inputs import expiry as _expiry
from multidb.tenants.catalog import new_tenant_id
from multidb.tenants.catalog import now as _now
from multidb.tenants.catalog import public_settings
from multidb.tenants.catalogio import _same_tenant

# One logger for the whole lifecycle, whichever module logs.
log = logging.getLogger('multidb.tenants.lifecycle')

# The lock files of FileStorageBackend.name_lock.
_LOCK_SUFFIX = '.multidb-lock'
# A progress callback (see ITenants): expire calls it with 1 per tenant.
_Progress = Optional[Callable[[int], Any]]


class Maintenance:
    """Expire, repair and relocate (see the module).

    A part of ``Tenants``: it uses the catalog and declarations of
    ``CatalogAccess``, the name locks of ``NameLocks`` and ``drop`` of
    ``Tenants``.
    """

    # -- expiry -----------------------------------------------------------

    def expire(self, now: Union[datetime.datetime, datetime.timedelta,
                                float, str, None] = None, *,
               progress: _Progress = None) -> List[Dict[str, Any]]:
        """See ``ITenants.expire``."""
        when = _expiry(now, _now()) if now is not None else _now()
        due = [rec for rec in self.list() if rec.expired(when)]
        if due and self.expire_action == 'archive' and not self.archive_dir:
            # Asked only now: a configuration without archive-dir is
            # valid until expire has a tenant to archive.
            names = ', '.join(repr(rec.name) for rec in due[:5])
            more = ', ...' if len(due) > 5 else ''
            raise NotConfigured(
                f"expire-action 'archive' needs an archive folder and none"
                f" is configured (archive-dir in the <tenants> section,"
                f" archive_dir= of Tenants): {len(due)} expired tenant(s)"
                f" ({names}{more}) left as they are, nothing dropped; set"
                f" one, or expire-action drop")
        done = []
        for rec in due:
            entry = {'name': rec.name, 'action': self.expire_action,
                     'archive': None, 'error': None}
            try:
                if self.expire_action == 'archive':
                    os.makedirs(self.archive_dir, exist_ok=True)
                    entry['archive'] = os.path.join(
                        self.archive_dir,
                        f"{rec.name}-{when.strftime('%Y%m%dT%H%M%SZ')}"
                        f".multidb")
                self.drop(rec.name, archive_to=entry['archive'])
            except DropIncomplete as e:
                entry['error'] = str(e)   # dropped; the rest is repair's
            except (DatabaseInUse, NoSuchTenant, OSError) as e:
                entry['action'] = 'skipped'
                entry['error'] = str(e)
            done.append(entry)
            if progress is not None:
                progress(1)
        return done

    # -- repair -----------------------------------------------------------

    def repair(self, *, dry_run: bool = False) -> List[Dict[str, Any]]:
        """See ``ITenants.repair``.

        It plans first and acts after, so that a dry run reports what the
        real run does (``'would delete'`` where the real run says
        ``'deleted'``).  Storage is deleted only when it provably belongs
        to no record: it carries a tenant id that no record has (every
        storage multidb makes carries one from the moment it has its
        place), or it is FileStorage companions without a data file (nor
        id) at a place no record points to.  Storage is recognised by its
        id, or by its place however the configuration spells it (folders
        through symbolic links; the database name on the configured
        server), never by comparing settings.  Storage without an id that
        no record points to is reported, never deleted.

        Each deletion takes the name's lock, as the lifecycle operations
        do, and looks again at the catalog and the storage: an operation
        in progress in another process (between making a storage and
        committing its record) is waited for, and what it made is then
        recorded and kept.  Temporary files no name's lock covers are
        deleted only when no process holds them (see
        ``files.stale_temp_files``)."""
        plan = self._repair_plan()
        findings = []
        for finding, act in plan:
            if act is not None:
                if dry_run:
                    finding['action'] = 'would delete'
                else:
                    try:
                        finding['action'] = act()
                    except Exception as e:
                        log.warning("repair: %s %s: %s", finding['kind'],
                                    finding['path'], e)
                        finding['action'] = f'failed: {e}'
            findings.append(finding)
        if not dry_run:
            # Lock files a killed process left (each name's lock makes and
            # deletes its own): harmless, the next holder reuses one, so
            # no finding; those nobody holds go.
            for name, path in self.backend.stray_files():
                if path.endswith(_LOCK_SUFFIX) and \
                        not self.backend.stray_in_use(path):
                    self.backend.remove_stray(path)
        return findings

    def _repair_plan(self):
        """[(finding, act)]: act() deletes what the finding is about and
        returns the action done; None when nothing is to be deleted."""
        backend = self.backend
        records = [r for r in self.list() if r.kind == backend.kind]
        by_id = {r.settings['id']: r for r in records
                 if r.settings.get('id')}
        by_place = {backend.place_key(r.settings): r for r in records}
        plan = []
        stored = set()   # places found with data
        moved = {}       # record name -> where its storage was found

        def finding(kind, name, path, action='reported'):
            return {'kind': kind, 'name': name, 'path': path,
                    'action': action}

        reserved = self._reserved()
        for name, found in backend.scan():
            if name in reserved:
                # The collection's own database (a catalog beside the
                # tenants' files): not a tenant, not repair's.
                continue
            place = backend.place_key(found)
            present = found.pop('present', True)
            if present:
                stored.add(place)
            where = backend.describe(found)
            tid = found.get('id')
            owner = by_id.get(tid) if tid else None
            at_place = by_place.get(place)
            move = found.pop('move', None)
            if move is not None and owner is not None:
                # What a move between servers that died left (see
                # multidb.tenants.moving): undone or finished.
                plan.append((finding('unfinished move', owner.name, where),
                             functools.partial(self._repair_move, owner.name,
                                               found, move)))
                continue
            if owner is not None:
                if backend.place_key(owner.settings) != place:
                    # Its record points elsewhere: a folder moved, a
                    # configuration changed.  relocate says so to the
                    # record; nothing is deleted.
                    moved.setdefault(owner.name, where)
                    plan.append((finding(
                        'moved storage', owner.name, where,
                        f"kept (tenant {owner.name!r} is recorded at"
                        f" {backend.describe(owner.settings)}: see"
                        f" 'multidb relocate')"), None))
                continue
            if at_place is not None:
                if tid and at_place.settings.get('id'):
                    plan.append((finding(
                        'foreign storage', at_place.name, where,
                        f"kept (tenant id {tid}, not the record's"
                        f" {at_place.settings['id']})"), None))
                continue   # its record's (made before tenant ids)
            if tid is None and present:
                plan.append((finding(
                    'unidentified storage', name, where,
                    "kept (no tenant id: not provably multidb's)"), None))
                continue
            if backend.is_locked(found):
                plan.append((finding('leftover', name, where,
                                     'skipped (in use)'), None))
                continue
            plan.append((finding('leftover', name, where),
                         functools.partial(self._repair_leftover, name,
                                           found, present)))

        for rec in records:
            place = backend.place_key(rec.settings)
            for sid in backend.snapshot_ids(rec.settings):
                if rec.snapshot(sid) is None:
                    plan.append((
                        finding('stray snapshot', rec.name,
                                backend.describe_snapshot(rec.settings,
                                                          sid)),
                        functools.partial(self._repair_snapshot, rec, sid)))
            missing = [s for s in rec.snapshots
                       if not backend.has_snapshot(rec.settings, s.id)]
            for s in missing:
                plan.append((finding(
                    'missing snapshot', rec.name,
                    backend.describe_snapshot(rec.settings, s.id)), None))
            if rec.name in moved or place in stored:
                continue
            if not backend.exists(rec.settings):
                plan.append((finding('missing storage', rec.name,
                                     backend.describe(rec.settings)), None))

        # Snapshots kept on a server (a snapshot database) whose tenant
        # has no record: a drop that died before deleting them.
        stored_snapshots = getattr(backend, 'stored_snapshots', None)
        if stored_snapshots is not None:
            old_keys = {f"dbname:{r.settings.get('dbname')}"
                        for r in records if not r.settings.get('id')}
            for row in stored_snapshots():
                if row['key'] in by_id or row['key'] in old_keys:
                    continue
                plan.append((finding(
                    'stray snapshot', row['name'],
                    f"{row['dbname']}/{row['snapshot_id']} (tenant id"
                    f" {row['key']}, no record)"),
                    functools.partial(self._repair_stored_snapshot, row)))

        stale = {}   # folder -> its stale temporary files
        for name, path in backend.stray_files():
            if path.endswith(_LOCK_SUFFIX):
                continue   # see repair: no finding, housekeeping
            if name is None and not path.startswith('postgresql:'):
                folder = os.path.dirname(path)
                if folder not in stale:
                    stale[folder] = set(stale_temp_files(folder))
                if path not in stale[folder]:
                    continue   # a live process's (or not multidb's)
            elif backend.stray_in_use(path):
                continue
            plan.append((finding('temporary file', name, path),
                         functools.partial(self._repair_stray, name, path)))
        if self.archive_dir:
            # expire writes archives there through temporary files.
            for path in stale_temp_files(self.archive_dir):
                plan.append((finding('temporary file', None, path),
                             functools.partial(self._repair_stray, None,
                                               path)))
        return plan

    def _repair_leftover(self, name, found, present):
        backend = self.backend
        with self._hold(name):
            # Again under the lock: an operation that held it may have
            # committed its record since the plan was made.
            rec = self._record(name)
            tid = found.get('id')
            if rec is not None and rec.kind == backend.kind and (
                    (tid is not None and rec.settings.get('id') == tid) or
                    backend.same_place(rec.settings, found)):
                return 'kept (recorded meanwhile)'
            if backend.identify(found) != tid or \
                    backend.exists(found) != present:
                return 'kept (changed meanwhile)'
            if backend.is_locked(found):
                return 'skipped (in use)'
            log.warning("repair: deleting leftover storage %s (tenant id"
                        " %s, no record)", backend.describe(found), tid)
            backend.destroy(found)
        return 'deleted'

    def _repair_move(self, name, found, move):
        """Under the name's lock (a move in progress holds it): the
        database the record names takes writes again (the fence of a
        move that did not switch it comes down) or loses its target mark
        (the move switched it); a copy at another place, carrying the
        tenant's id and the move's mark, is dropped."""
        backend = self.backend
        with self._hold(name):
            rec = self._record(name)
            if rec is None or rec.settings.get('id') != found.get('id'):
                return 'kept (changed meanwhile)'
            if backend.move_state(found) != move:
                return 'kept (changed meanwhile)'
            if backend.same_place(rec.settings, found):
                if move['role'] == 'source':
                    backend.unfence(rec.settings)   # (found has no dsn)
                    return 'unfenced (the move did not finish)'
                backend.clear_move_mark(found)
                return 'kept (the move finished)'
            log.warning("repair: dropping %s, left by move %s of tenant %r"
                        " (the record names %s)", backend.describe(found),
                        move['move'], name, backend.describe(rec.settings))
            backend.drop_copy(found)
        return 'deleted'

    def _repair_stored_snapshot(self, row):
        with self._hold(row['name']):
            rec = self._record(row['name'])
            if rec is not None and rec.settings.get('id') == row['key']:
                return 'kept (recorded meanwhile)'
            self.backend.remove_stored_snapshot(row['key'],
                                                row['snapshot_id'])
        return 'deleted'

    def _repair_snapshot(self, rec, sid):
        backend = self.backend
        with self._hold(rec.name):
            current = self._record(rec.name)
            if current is not None and (
                    current.snapshot(sid) is not None or
                    not _same_tenant(current.settings, rec.settings)):
                return 'kept (recorded meanwhile)'
            backend.remove_snapshot(rec.settings, sid)
        return 'deleted'

    def _repair_stray(self, name, path):
        lock = contextlib.nullcontext()
        if name is not None:
            # What the name's operations write: none runs while we hold
            # its lock.
            lock = self._hold(name)
        elif name is None and not path.startswith('postgresql:'):
            # Checked again: deleted only if no process holds it.
            folder = os.path.dirname(path)
            if path not in stale_temp_files(folder):
                return 'kept (in use)'
        is_file = not path.startswith('postgresql:')
        with lock:
            if is_file and not os.path.lexists(path):
                # The operation that wrote it was running: it used it.
                return 'none (gone meanwhile)'
            self.backend.remove_stray(path)
        if is_file and os.path.exists(path):
            return 'kept (in use)'
        return 'deleted'

    # -- relocation -------------------------------------------------------

    def relocate(self, names: Optional[Iterable[str]] = None, *,
                 dry_run: bool = False) -> List[Dict[str, Any]]:
        """Apply the current configuration to the records, deliberately
        (repair never does): each record is pointed at its storage as the
        configuration spells its place now (a folder moved or reached
        through another path, a dsn written another way), records made
        before tenant ids get their id (stored with the storage too), and
        recorded dsns lose their credentials.

        A record changes only when the storage at its configured place is
        provably the tenant's: it carries the tenant's id, or (a record
        without an id) it is the very storage the record points to.
        Nothing is moved or deleted.  names: the tenants to look at
        (default: all).  Returns one dict per tenant whose record changes
        or cannot: name, from, to, action (``'relocated'``,
        ``'identified'``, ``'would relocate'``, ``'would identify'`` or
        ``'refused: ...'``)."""
        backend = self.backend
        if names is None:
            names = [r.name for r in self.list() if r.kind == backend.kind]
        results = []
        for name in names:
            with (contextlib.nullcontext() if dry_run else self._hold(name)):
                entry = self._relocate(name, dry_run)
            if entry is not None:
                results.append(entry)
        return results

    def _relocate(self, name, dry_run):
        backend = self.backend
        rec = self.get(name)
        backend = self.backend_for(rec)
        old = rec.settings
        new = backend.relocated(old, name)
        tid = old.get('id')
        entry = {'name': name, 'from': backend.describe(old),
                 'to': backend.describe(new)}
        if tid is not None:
            at_new = backend.identify(new)
            if at_new != tid:
                if at_new is not None:
                    why = f"{entry['to']} holds another tenant's storage"
                elif backend.exists(new):
                    why = f"{entry['to']} holds storage without a tenant id"
                elif backend.identify(old) == tid:
                    why = (f"the storage is still at {entry['from']}; the"
                           f" configuration points at {entry['to']}, where"
                           f" there is none")
                else:
                    why = "no storage carries the tenant's id"
                return dict(entry, action=f'refused: {why}')
            if public_settings(old) == new and old == new:
                return None   # as configured already
            action = 'relocated'
        else:
            if not (backend.exists(old) and backend.same_place(old, new)):
                why = ("its storage is not where the configuration points"
                       " (and it has no tenant id to prove one is its)")
                return dict(entry, action=f'refused: {why}')
            new['id'] = new_tenant_id()
            action = 'identified'
        if dry_run:
            return dict(entry, action={'relocated': 'would relocate',
                                       'identified': 'would identify'}[
                                           action])
        try:
            self._undeclare(name)
        except DatabaseInUse as e:
            return dict(entry, action=f'refused: {e}')
        try:
            if action == 'identified':
                backend.mark(new)
            settings = dict(new)

            def update(tree, g):
                current = tree.get(name)
                if current is None or not _same_tenant(current.settings,
                                                       old):
                    raise NoSuchTenant(name)
                tree[name] = current.replace(settings=settings)
                # Other processes reopen it from where it is now.
                self._log_change(g, name)
            self._write(update)
        finally:
            self._redeclare(self._record(name) or rec)
        return dict(entry, action=action)
