"""The tenant lifecycle: create, clone, drop, snapshot, revert, archive,
restore, expire, repair.

See ``multidb.interfaces.ITenants``.

Crash safety rests on three rules:

- The catalog is the truth: a tenant exists once its record is committed.
  Data is made first and the record committed last (the catalog sorts last
  in a two-phase commit); a drop commits the record's removal first and
  deletes data after.  A crash in between leaves storage with no record, a
  leftover that ``repair()`` finds and deletes, never a record without
  data.
- Files are written under a temporary name and renamed into place.
- Operations on one name are serialized in the process, and the collection
  does not re-declare a name while an operation holds it.
"""
import contextlib
import functools
import datetime
import importlib
import logging
import os
import random
import threading
import time
import uuid

import transaction
from transaction.interfaces import TransientError
from zope.interface import implementer

from multidb.errors import DatabaseInUse
from multidb.errors import NoSuchSnapshot
from multidb.errors import NoSuchTenant
from multidb.errors import TenantExists
from multidb.errors import UnknownDatabase
from multidb.glue import is_joined
from multidb.interfaces import INameResolver
from multidb.interfaces import ITenants
from multidb.names import check_tenant_name
from multidb.retry import AttemptWithBackoff
from multidb.tenants import archive as _archive
from multidb.tenants.catalog import TenantRecord
from multidb.tenants.catalog import Snapshot
from multidb.tenants.catalog import now as _now
from multidb.tenants.catalog import bump as _bump
from multidb.tenants.catalog import serial as _serial
from multidb.tenants.catalog import tree as _tree

log = logging.getLogger(__name__)

EXPIRE_ACTIONS = ('drop', 'archive')


def _crashpoint(step):
    # Fault injection for the kill -9 tests: MULTIDB_CRASH_AT=step makes
    # the process kill itself there, as a power cut would.
    if os.environ.get('MULTIDB_CRASH_AT') == step:
        import signal
        os.kill(os.getpid(), signal.SIGKILL)


class _CrashBeforeCatalogFinish:
    """A data manager for the kill -9 tests: joined to a transaction that
    writes the catalog, it kills the process after the tenants' storages
    finished their commit and before the catalog does (its sort key falls
    between theirs and the catalog's, see Tenants.__init__)."""

    transaction_manager = None

    def sortKey(self):
        return '\x7f'

    def tpc_finish(self, txn):
        _crashpoint('catalog.tpc_finish')

    def abort(self, txn):
        pass

    tpc_begin = commit = tpc_vote = tpc_abort = abort


def _crash_test_join(tm):
    if os.environ.get('MULTIDB_CRASH_AT') == 'catalog.tpc_finish':
        tm.get().join(_CrashBeforeCatalogFinish())


def resolve_dotted(name):
    """The object a dotted name ``package.module.attr`` (or
    ``package.module:attr``) names; raises ValueError saying what failed."""
    if callable(name):
        return name
    modname, sep, attr = name.replace(':', '.').rpartition('.')
    if not sep or not modname:
        raise ValueError(f"{name!r} is not a dotted name (module.attribute)")
    try:
        return getattr(importlib.import_module(modname), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot import {name!r}: {e}") from None


def _expiry(expires, now):
    if expires is None or isinstance(expires, datetime.datetime):
        if expires is not None and expires.tzinfo is None:
            expires = expires.replace(tzinfo=datetime.timezone.utc)
        return expires
    if isinstance(expires, datetime.timedelta):
        return now + expires
    if isinstance(expires, (int, float)) and not isinstance(expires, bool):
        return now + datetime.timedelta(seconds=expires)
    raise TypeError(f"expires must be a datetime, a timedelta or seconds,"
                    f" not {expires!r}")


def _labels(labels):
    if labels is None:
        return {}
    if isinstance(labels, dict):
        items = labels.items()
    else:
        items = [(lab, '') for lab in labels]
    out = {}
    for k, v in items:
        if not isinstance(k, str) or not k or not isinstance(v, str):
            raise ValueError(f"labels are non-empty strings with string"
                             f" values, not {k!r}: {v!r}")
        out[k] = v
    return out


def _retrying(method):
    """Retry a lifecycle operation that lost a catalog write to another
    process (ConflictError and other transient errors): each operation
    undoes what it made when it fails, so running it again is safe."""
    @functools.wraps(method)
    def retry(self, *args, **kw):
        policy = AttemptWithBackoff(self.attempts, initial=0.01,
                                    maximum=0.5)
        for _ in policy:
            try:
                return method(self, *args, **kw)
            except TransientError:
                if policy.last:
                    raise
    return retry


def new_snapshot_id(when):
    # Sortable by time, unique without coordination.
    return when.strftime('%Y%m%dT%H%M%S%fZ') + '-' + uuid.uuid4().hex[:6]


class _Reserved:
    """The names a tenant may not take: the catalog's and those of the
    collection's other databases.  Asked one name at a time, so a create
    costs no walk over every declared name."""

    __slots__ = ('_tenants',)

    def __init__(self, tenants):
        self._tenants = tenants

    def __contains__(self, name):
        t = self._tenants
        return name == t.catalog or (name in t.collection and
                                     name not in t._declared)


@implementer(ITenants, INameResolver)
class Tenants:
    """See ``multidb.interfaces.ITenants``.

    collection: the collection; catalog: the name of its catalog database;
    backend: an ``IBackend`` (where new tenants go); db_kwargs: ``ZODB.DB``
    arguments for tenant databases; init: a callable ``init(root)`` or a
    dotted name, run on create; expire_action: 'drop' or 'archive', with
    archive_dir for the latter; in_use_timeout: how long drop, revert and
    restore wait for groups using the tenant to close.
    """

    def __init__(self, collection, *, catalog, backend, db_kwargs=None,
                 init=None, expire_action='drop', archive_dir=None,
                 in_use_timeout=0, archive_checksum='crc32'):
        if expire_action not in EXPIRE_ACTIONS:
            raise ValueError(f"expire_action must be one of {EXPIRE_ACTIONS},"
                             f" not {expire_action!r}")
        if expire_action == 'archive' and not archive_dir:
            raise ValueError("expire_action 'archive' needs an archive_dir")
        self.collection = collection
        self.catalog = catalog
        self.backend = backend
        self.db_kwargs = dict(db_kwargs or {})
        self.init = init
        self.expire_action = expire_action
        self.archive_dir = archive_dir
        self.in_use_timeout = in_use_timeout
        # Tries of an operation that loses a catalog write to another
        # process.
        self.attempts = 5
        _archive._hasher(archive_checksum)   # refuse a bad name now
        self.archive_checksum = archive_checksum
        self._lock = threading.Lock()
        self._catalog_lock = threading.Lock()   # see _catalog
        self._busy = {}          # name -> [lock, users]
        self._declared = set()   # names this object declared
        self._serial_seen = None  # the catalog serial refresh() last saw
        self._loaded = False
        collection.set_resolver(self)
        # The catalog finishes last in a two-phase commit: a crash between
        # finishing a tenant and the catalog leaves data without a record,
        # which repair() deletes, never a record without data.
        collection.commit_last.add(catalog)

    def __repr__(self):
        return (f"<multidb.Tenants catalog={self.catalog!r}"
                f" backend={self.backend!r}>")

    # -- the catalog -----------------------------------------------------

    @contextlib.contextmanager
    def _catalog(self, write=False):
        """A transaction on the catalog alone, in a manager of its own so
        the application's transaction is never touched."""
        # Writers take turns: commits of two threads to one bucket of the
        # catalog's tree (different names) raise ConflictError otherwise.
        tm = transaction.TransactionManager()
        with self._catalog_lock if write else contextlib.nullcontext(), \
                self.collection.transaction(tm) as g:
            if write:
                _crash_test_join(tm)
            yield _tree(g.root(self.catalog), create=True), g

    def _record(self, name):
        with self._catalog() as (tree, _):
            return tree.get(name)

    def get(self, name):
        """See ``ITenants.get``."""
        rec = self._record(name)
        if rec is None:
            raise NoSuchTenant(name)
        return rec

    def list(self):
        """See ``ITenants.list``."""
        with self._catalog() as (tree, _):
            return list(tree.values())

    def __contains__(self, name):
        return self._record(name) is not None

    def load(self):
        """Declare every tenant of the catalog in the collection (lazily:
        nothing is opened but the catalog)."""
        records = self.list()
        for rec in records:
            self._declare(rec)
        self._loaded = True
        return len(records)

    # -- INameResolver: how the collection asks about tenants ------------

    def declare_all(self):
        """See ``INameResolver.declare_all``."""
        self.load()

    def resolve(self, name):
        """See ``INameResolver.resolve``: declare name if the catalog has
        it."""
        if name in self._busy or name == self.catalog:
            return False
        try:
            rec = self._record(name)
        except UnknownDatabase:
            return False
        if rec is None:
            return False
        self._declare(rec)
        return True

    def open_failed(self, name, error):
        """See ``INameResolver.open_failed``: a tenant whose storage
        cannot be opened may have been dropped by another process since
        this one declared it; the catalog says."""
        if name in self._busy:
            return False   # an operation of this process holds it
        try:
            rec = self._record(name)
        except Exception:
            log.debug("reading the record of %r failed", name,
                      exc_info=True)
            return False
        if rec is not None:
            return False
        try:
            self._undeclare(name, timeout=0)
        except DatabaseInUse:
            pass   # another group holds the dead database: refresh() ends it
        return True

    def refresh(self, group, name):
        """See ``INameResolver.refresh``: bring the collection up to date
        with the catalog as group's transaction sees it: tenants dropped
        (by this or another process) are removed from the collection and
        from group.  Cheap when nothing came or went: one counter is
        compared.  Tenants created elsewhere are declared on first use of
        their names.

        A dropped tenant that another group still holds stays declared
        until a later refresh finds it idle (the counter is not marked
        seen meanwhile); the group asking for it by name gets
        ``UnknownDatabase`` at once, never a connection to a database
        that is gone."""
        if name == self.catalog:
            return False   # asked again at the group's next use
        root = group.get_connection(self.catalog).root()
        seen = _serial(root)
        if seen == self._serial_seen:
            return True
        tree = _tree(root)
        names = set(tree.keys()) if tree is not None else set()
        settled = True
        held = False
        for gone in list(self._declared):
            if gone not in names and gone not in self._busy:
                conn = group.connections.get(gone)
                if conn is not None and not is_joined(conn):
                    group.release(gone)
                try:
                    self._undeclare(gone, timeout=0)
                except DatabaseInUse:
                    # Another group still holds it: again at the next
                    # refresh, whatever the counter says then.
                    settled = False
                    held = held or gone == name
        if settled:
            self._serial_seen = seen
        if held:
            raise UnknownDatabase(name, "no longer exists (dropped; a"
                                  " group still holds its connections)")
        return True

    def _declare(self, rec, private=False):
        if rec.name in self.collection:
            return
        self.collection.declare(
            rec.name, self.backend_for(rec).factory(rec.settings),
            origin=f'catalog {self.catalog!r}', private=private, dynamic=True,
            **self.db_kwargs)
        self._declared.add(rec.name)

    def _undeclare(self, name, timeout=None):
        timeout = self.in_use_timeout if timeout is None else timeout
        try:
            self.collection.remove(name, timeout=timeout)
        except UnknownDatabase:
            pass
        self._declared.discard(name)

    def backend_for(self, rec):
        """The backend for an existing record (its own kind)."""
        if rec.kind != self.backend.kind:
            raise ValueError(f"tenant {rec.name!r} is on {rec.kind!r}; this"
                             f" collection's tenants are on"
                             f" {self.backend.kind!r}")
        return self.backend

    def _reserved(self):
        return _Reserved(self)

    # -- per-name serialization -------------------------------------------

    @contextlib.contextmanager
    def _hold(self, *names):
        """Serialize lifecycle operations on names within the process, and
        keep the collection from re-declaring them meanwhile."""
        slots = []
        with self._lock:
            for name in sorted(set(names)):
                slot = self._busy.setdefault(name, [threading.Lock(), 0])
                slot[1] += 1
                slots.append((name, slot))
        acquired = []
        try:
            with contextlib.ExitStack() as stack:
                for name, slot in slots:
                    slot[0].acquire()
                    acquired.append(slot)
                # And across processes, where the backend is shared.
                for name, _ in slots:
                    stack.enter_context(self.backend.name_lock(name))
                yield
        finally:
            for slot in acquired:
                slot[0].release()
            with self._lock:
                for name, slot in slots:
                    slot[1] -= 1
                    if not slot[1]:
                        del self._busy[name]

    # -- create, clone, drop --------------------------------------------

    @_retrying
    def create(self, name, *, expires=None, labels=None, init=None):
        """See ``ITenants.create``."""
        check_tenant_name(name, self._reserved())
        when = _now()
        expires = _expiry(expires, when)
        labels = _labels(labels)
        init = init if init is not None else self.init
        if init is not None:
            init = resolve_dotted(init)
        backend = self.backend
        settings = backend.settings_for(name)
        with self._hold(name):
            if self._record(name) is not None:
                raise TenantExists(name)
            self._clear_leftover(name, settings)
            rec = TenantRecord(name=name, kind=backend.kind,
                               settings=settings, created=when,
                               modified=when, expires=expires,
                               labels=labels)
            backend.prepare(settings)
            # Private until the record is committed: nobody else can open
            # (or write to) a tenant that does not exist yet.
            self._declare(rec, private=True)
            try:
                _crashpoint('create.declared')
                tm = transaction.TransactionManager()
                with self._catalog_lock, \
                        self.collection.transaction(tm) as g:
                    _crash_test_join(tm)
                    root = g.root(name)       # makes the storage
                    _crashpoint('create.storage-made')
                    if init is not None:
                        init(root)
                    tree = _tree(g.root(self.catalog), create=True)
                    if name in tree:          # another process won
                        raise TenantExists(name)
                    tree[name] = rec
                    _bump(g.root(self.catalog))
                self.collection.publish(name)
                _crashpoint('create.committed')
            except BaseException:
                self._undeclare(name, timeout=0)
                if self._record(name) is None:
                    backend.destroy(settings)
                raise
        return rec

    @_retrying
    def clone(self, source, name, *, expires=None, labels=None,
              progress=None):
        """See ``ITenants.clone``."""
        check_tenant_name(name, self._reserved())
        when = _now()
        expires = _expiry(expires, when)
        with self._hold(source, name):
            src = self.get(source)
            if self._record(name) is not None:
                raise TenantExists(name)
            backend = self.backend
            settings = backend.settings_for(name)
            self._clear_leftover(name, settings)
            tmp = backend.tmp_path(settings)
            try:
                self._dump(src, tmp, progress)
                _crashpoint('clone.copied')
                backend.load(settings, tmp)
            except BaseException:
                _unlink(tmp)
                backend.destroy(settings)
                raise
            _crashpoint('clone.loaded')
            rec = TenantRecord(
                name=name, kind=backend.kind, settings=settings,
                created=when, modified=when, expires=expires,
                labels=_labels(labels) if labels is not None
                else dict(src.labels))
            try:
                self._commit_record(rec, new=True)
            except BaseException:
                backend.destroy(settings)
                raise
            self._declare(rec)
        return rec

    def drop(self, name, *, archive_to=None, progress=None):
        """See ``ITenants.drop``."""
        with self._hold(name):
            rec = self.get(name)
            if archive_to is not None:
                self._archive(rec, archive_to, progress)
            self._undeclare(name)   # DatabaseInUse: nothing changed
            _crashpoint('drop.closed')
            try:
                # Only the commit is retried: the archive is written.
                _retrying(Tenants._remove_record)(self, name)
            except BaseException:
                self._declare(rec)
                raise
            _crashpoint('drop.committed')
            self.backend_for(rec).destroy(rec.settings)
        return rec

    def _remove_record(self, name):
        with self._catalog(write=True) as (tree, g):
            if tree.get(name) is None:
                raise NoSuchTenant(name)
            del tree[name]
            _bump(g.root(self.catalog))

    def _commit_record(self, rec, new=False):
        with self._catalog(write=True) as (tree, g):
            if new and rec.name in tree:
                raise TenantExists(rec.name)
            tree[rec.name] = rec
            if new:
                _bump(g.root(self.catalog))

    def _clear_leftover(self, name, settings):
        # Storage with no record is what a crashed create, clone or restore
        # leaves: delete it, unless a process holds it open.
        backend = self.backend
        if backend.exists(settings):
            if backend.is_locked(settings):
                raise TenantExists(name)
            log.warning("deleting leftover storage of tenant %r at %s",
                        name, backend.describe(settings))
            backend.destroy(settings)

    # -- snapshots ----------------------------------------------------

    def _dump(self, rec, dest, progress=None):
        """Copy a tenant's committed data (FileStorage format) to the new
        file dest; the tenant may be in use meanwhile."""
        backend = self.backend_for(rec)
        # Under _hold the collection does not resolve the name itself.
        self._declare(rec)
        g = self.collection.group(transaction.TransactionManager())
        try:
            # A group connection pins the database open while we copy.
            db = g.get_connection(rec.name).db()
            src, length = backend.open_data(db, rec.settings)
            with src, open(dest, 'xb') as out:
                _archive.copy_range(src, out, length, None, progress)
                out.flush()
                os.fsync(out.fileno())
            return length
        finally:
            g.close()

    @_retrying
    def snapshot(self, name, label=None, *, progress=None):
        """See ``ITenants.snapshot``."""
        with self._hold(name):
            return self._snapshot(self.get(name), label, progress).id

    def _snapshot(self, rec, label, progress=None):
        backend = self.backend_for(rec)
        when = _now()
        sid = new_snapshot_id(when)
        path = backend.snapshot_path(rec.settings, sid)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = _archive.tmp_name(path)
        try:
            size = self._dump(rec, tmp, progress)
            os.rename(tmp, path)
        except BaseException:
            _unlink(tmp)
            raise
        _crashpoint('snapshot.written')
        snap = Snapshot(id=sid, created=when, size=size, label=label)
        try:
            with self._catalog(write=True) as (tree, g):
                current = tree.get(rec.name)
                if current is None:
                    raise NoSuchTenant(rec.name)
                tree[rec.name] = current.replace(
                    snapshots=current.snapshots + (snap,))
        except BaseException:
            _unlink(path)
            raise
        return snap

    def snapshots(self, name):
        """See ``ITenants.snapshots``."""
        return list(self.get(name).snapshots)

    @_retrying
    def revert(self, name, snapshot_id, *, progress=None):
        """See ``ITenants.revert``."""
        with self._hold(name):
            rec = self.get(name)
            if rec.snapshot(snapshot_id) is None:
                raise NoSuchSnapshot(name, snapshot_id)
            backend = self.backend_for(rec)
            # Refuse before doing anything if a group is using the tenant.
            self._check_idle(name)
            before = self._snapshot(
                rec, f'before revert to {snapshot_id}', progress)
            src = backend.snapshot_path(rec.settings, snapshot_id)
            tmp = backend.tmp_path(rec.settings)
            self._undeclare(name)
            try:
                with open(src, 'rb') as f, open(tmp, 'xb') as out:
                    _archive.copy_range(f, out, os.fstat(f.fileno()).st_size,
                                        None, progress)
                    out.flush()
                    os.fsync(out.fileno())
                _crashpoint('revert.copied')
                backend.load(rec.settings, tmp)
                _crashpoint('revert.loaded')
                with self._catalog(write=True) as (tree, g):
                    current = tree[name]
                    tree[name] = current.replace(modified=_now())
            finally:
                _unlink(tmp)
                self._declare(self.get(name))
        return before.id

    def _check_idle(self, name):
        if name in self.collection:
            self.collection.wait_idle(name, timeout=self.in_use_timeout)

    # -- archives ---------------------------------------------------------

    def archive(self, name, path, *, progress=None, checksum=None):
        """See ``ITenants.archive``."""
        if checksum is not None:
            _archive._hasher(checksum)
        with self._hold(name):
            return self._archive(self.get(name), path, progress, checksum)

    def _archive(self, rec, path, progress=None, checksum=None):
        backend = self.backend_for(rec)
        self._declare(rec)   # see _dump
        g = self.collection.group(transaction.TransactionManager())
        try:
            db = g.get_connection(rec.name).db()
            src, length = backend.open_data(db, rec.settings)
            with src:
                _archive.write_archive(
                    path, {'record': rec.to_json()}, src, length,
                    progress=progress,
                    checksum=checksum or self.archive_checksum)
        finally:
            g.close()
        return os.fspath(path)

    @_retrying
    def restore(self, path, name=None, *, replace=False, progress=None):
        """See ``ITenants.restore``."""
        header = _archive.read_header(path, verify=False)
        try:
            source = TenantRecord.from_json(header['record'])
        except (ValueError, KeyError, TypeError) as e:
            from multidb.errors import CorruptArchive
            raise CorruptArchive(path, f"bad tenant record ({e})") from None
        name = source.name if name is None else name
        check_tenant_name(name, self._reserved())
        backend = self.backend
        settings = backend.settings_for(name)
        with self._hold(name):
            existing = self._record(name)
            if existing is not None and not replace:
                raise TenantExists(name)
            if existing is not None:
                self._check_idle(name)
            else:
                self._clear_leftover(name, settings)
            tmp = backend.tmp_path(settings)
            try:
                # Checks the whole archive while extracting; raises
                # CorruptArchive before anything of the tenant is touched.
                _archive.extract(path, tmp, progress=progress)
                _crashpoint('restore.extracted')
                if existing is not None:
                    self._snapshot(existing, 'before restore')
                    self._undeclare(name)
                    settings = existing.settings
                backend.load(settings, tmp)
            finally:
                _unlink(tmp)
            _crashpoint('restore.loaded')
            try:
                with self._catalog(write=True) as (tree, g):
                    current = tree.get(name)
                    if existing is None and current is not None:
                        raise TenantExists(name)   # another process won
                    if current is None:
                        rec = TenantRecord(
                            name=name, kind=backend.kind, settings=settings,
                            created=source.created, modified=_now(),
                            expires=source.expires, labels=source.labels)
                        _bump(g.root(self.catalog))
                    else:
                        # Replacing restores the data; the tenant keeps
                        # its own record (labels, expiry, snapshots), so
                        # a crash once the data is in place is the new
                        # state already.
                        rec = current.replace(modified=_now())
                    tree[name] = rec
            except BaseException:
                if existing is None:
                    backend.destroy(settings)
                raise
            finally:
                if existing is not None:
                    self._declare(self.get(name))
            self._declare(rec)
        return rec

    # -- expiry and repair -----------------------------------------------

    def expire(self, now=None, *, progress=None):
        """See ``ITenants.expire``."""
        when = _expiry(now, _now()) if now is not None else _now()
        done = []
        for rec in self.list():
            if not rec.expired(when):
                continue
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
            except (DatabaseInUse, NoSuchTenant, OSError) as e:
                entry['action'] = 'skipped'
                entry['error'] = str(e)
            done.append(entry)
            if progress is not None:
                progress(1)
        return done

    def repair(self, *, dry_run=False):
        """See ``ITenants.repair``."""
        records = {r.name: r for r in self.list()}
        findings = []
        backend = self.backend
        for name, settings in backend.scan():
            rec = records.get(name)
            if rec is not None and rec.settings == settings:
                continue
            if name in self._busy:
                continue
            if backend.is_locked(settings):
                findings.append({'kind': 'leftover', 'name': name,
                                 'path': backend.describe(settings),
                                 'action': 'skipped (in use)'})
                continue
            findings.append({'kind': 'leftover', 'name': name,
                             'path': backend.describe(settings),
                             'action': 'kept' if dry_run else 'deleted'})
            if not dry_run:
                backend.destroy(settings)
        for rec in records.values():
            if rec.kind != backend.kind:
                continue
            known = {s.id for s in rec.snapshots}
            for sid in backend.snapshot_ids(rec.settings):
                if sid not in known:
                    findings.append({
                        'kind': 'stray snapshot', 'name': rec.name,
                        'path': backend.snapshot_path(rec.settings, sid),
                        'action': 'kept' if dry_run else 'deleted'})
                    if not dry_run:
                        backend.remove_snapshot(rec.settings, sid)
            for s in rec.snapshots:
                p = backend.snapshot_path(rec.settings, s.id)
                if not os.path.exists(p):
                    findings.append({'kind': 'missing snapshot',
                                     'name': rec.name, 'path': p,
                                     'action': 'reported'})
            if not backend.exists(rec.settings):
                findings.append({'kind': 'missing storage', 'name': rec.name,
                                 'path': backend.describe(rec.settings),
                                 'action': 'reported'})
        for path in backend.stray_files():
            findings.append({'kind': 'temporary file', 'name': None,
                             'path': path,
                             'action': 'kept' if dry_run else 'deleted'})
            if not dry_run:
                backend.remove_stray(path)
        return findings


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
