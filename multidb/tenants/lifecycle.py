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
import gc
import importlib
import itertools
import logging
import os
import random
import threading
import time
import uuid

import transaction
from transaction._transaction import Status
from transaction.interfaces import TransientError
from zope.interface import implementer

from multidb.errors import CorruptArchive
from multidb.errors import DatabaseInUse
from multidb.errors import DropIncomplete
from multidb.errors import MultiDBError
from multidb.errors import NoSuchSnapshot
from multidb.errors import NoSuchTenant
from multidb.errors import ServerUnavailable
from multidb.errors import StorageInTheWay
from multidb.errors import TenantExists
from multidb.errors import UnknownDatabase
from multidb.glue import is_joined
from multidb.glue import pushes_invalidations
from multidb.interfaces import INameResolver
from multidb.interfaces import ITenants
from multidb.names import check_tenant_name
from multidb.retry import AttemptWithBackoff
from multidb.retry import lost_connection
from multidb.retry import retryable
from multidb.tenants import archive as _archive
from multidb.tenants.catalog import new_tenant_id
from multidb.tenants.catalog import public_settings
from multidb.tenants.catalog import TenantRecord
from multidb.tenants.catalog import Snapshot
from multidb.tenants.catalog import now as _now
from multidb.tenants.catalog import bump as _bump
from multidb.tenants.catalog import changes as _changes
from multidb.tenants.catalog import serial as _serial
from multidb.tenants.catalog import tree as _tree

log = logging.getLogger(__name__)

EXPIRE_ACTIONS = ('drop', 'archive')
# The lock files of FileStorageBackend.name_lock.
_LOCK_SUFFIX = '.multidb-lock'


def _crashpoint(step):
    # Fault injection for the kill -9 tests: MULTIDB_CRASH_AT=step makes
    # the process kill itself there, as a power cut would.
    if os.environ.get('MULTIDB_CRASH_AT') == step:
        import signal
        os.kill(os.getpid(), signal.SIGKILL)
    # And for the race tests: MULTIDB_PAUSE_AT=step stops there (as a slow
    # disk would) until a line comes on stdin.
    if os.environ.get('MULTIDB_PAUSE_AT') == step:
        import sys
        print(f'PAUSED {step}', flush=True)
        sys.stdin.readline()


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


def _transient(error):
    """Is error worth running the operation again?  See
    ``multidb.backends.retryable``."""
    return retryable(error)


def _retrying(method):
    """Retry a lifecycle operation that lost a catalog write to another
    process (ConflictError and other transient errors) or its connection
    to a server: each operation undoes what it made when it fails, so
    running it again is safe."""
    @functools.wraps(method)
    def retry(self, *args, **kw):
        policy = self._policy()
        for _ in policy:
            try:
                return method(self, *args, **kw)
            except Exception as e:
                if not _transient(e):
                    raise
                if policy.last:
                    if not lost_connection(e):
                        raise
                    # Said as such, not as the driver's error.
                    name = kw.get('name') or (args[0] if args else None)
                    if method.__name__ == 'restore':
                        name = (args[1] if len(args) > 1 else None) or \
                            os.fspath(args[0])
                    raise ServerUnavailable(
                        method.__name__, name, policy.attempts, e,
                        f"whether it took effect is unknown: see 'multidb"
                        f" show {name}' once the server is back") from e
                log.info("%s: attempt %d of %d failed with %s: retrying",
                         method.__name__, policy.attempt, policy.attempts,
                         type(e).__name__)
    return retry


def _committed_anyway(txn, error):
    """Did txn commit although error was raised?  A transaction's commit
    raises after it took effect when a synchronizer fails (ZODB's
    connections poll their storages for the next transaction then, and a
    lost PostgreSQL connection fails the poll).  The commit stands: the
    error is logged, and the operation goes on as committed."""
    if txn is not None and txn.status is Status.COMMITTED:
        log.warning("a commit took effect, then failed with %s: %s",
                    type(error).__name__, error)
        return True
    return False


def _same_tenant(a, b):
    """Are the storage settings a and b those of one tenant: the same
    tenant id (or both without one: records made before ids were
    kept)?"""
    return a.get('id') == b.get('id')


def new_snapshot_id(when):
    # Sortable by time, unique without coordination.
    return when.strftime('%Y%m%dT%H%M%S%fZ') + '-' + uuid.uuid4().hex[:6]


class _LockLost(TransientError):
    """The lock of an operation was lost (with its server connection) and
    what the operation made changed meanwhile: it starts over."""

    multidb_lost_connection = True


class _Opener:
    """A tenant's storage factory, as declared in the collection: it opens
    the recorded storage, and never makes one (a recorded tenant whose
    storage is gone raises MissingStorage), except for the create that
    makes the tenant, at its first open."""

    __slots__ = ('backend', 'settings', 'name', 'create', 'modified')

    def __init__(self, backend, rec, create=False):
        self.backend = backend
        self.settings = rec.settings
        self.name = rec.name
        self.create = create
        # The record's 'modified' when declared: another process that
        # replaces the data (revert, restore) changes it (see refresh).
        self.modified = rec.modified

    def __call__(self):
        storage = self.backend.factory(self.settings, name=self.name,
                                       create=self.create)()
        self.create = False
        return storage

    def __repr__(self):
        return (f"<tenant {self.name!r} at"
                f" {self.backend.describe(self.settings)}>")


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
    restore wait for groups using the tenant to close; archive_checksum:
    'crc32' or 'sha256'; archive_key: the secret that signs archives and
    checks the signature of those restored (bytes or str, at least 16
    bytes; None: the environment variable ``MULTIDB_ARCHIVE_KEY``, read
    at each archive and restore); archive_allow: what the pickles of a
    restored archive may name besides the defaults (see
    ``multidb.tenants.archive.PicklePolicy``); catalog_poll_interval: how
    often (seconds) a catalog whose storage does not push invalidations
    (RelStorage) is polled for changes (see ``refresh``).
    """

    def __init__(self, collection, *, catalog, backend, db_kwargs=None,
                 init=None, expire_action='drop', archive_dir=None,
                 in_use_timeout=0, archive_checksum='crc32',
                 archive_key=None, archive_allow=(),
                 catalog_poll_interval=1.0):
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
        # process (or its server connection), and the first pause between
        # two (doubled each time, up to max_backoff, less a random part:
        # processes that conflicted do not go on in step).  Processes
        # creating tenants at the same time conflict often: BTrees cannot
        # resolve two inserts past the end of one bucket.
        self.attempts = 10
        self.backoff = 0.02
        self.max_backoff = 1.0
        _archive._hasher(archive_checksum)   # refuse a bad name now
        self.archive_checksum = archive_checksum
        self.archive_key = archive_key
        self.archive_policy = _archive.PicklePolicy(archive_allow)
        self._lock = threading.Lock()
        self._catalog_lock = threading.Lock()   # see _catalog
        self._busy = {}          # name -> [lock, users]
        # Names this object declared -> their _Opener (which knows the
        # record's settings and 'modified' stamp: see refresh).
        self._declared = {}
        # What refresh() last saw: the catalog's serial, its database and
        # that storage's last transaction; when it read it.
        self._serial_seen = None
        self._catalog_db = None
        self._tid_seen = None
        self._pushes = False
        self._polled_at = 0.0
        #: How often refresh() polls a catalog whose storage does not push
        #: invalidations (RelStorage), in seconds.
        self.catalog_poll_interval = catalog_poll_interval
        self._loaded = False
        collection.set_resolver(self)
        # The catalog finishes last in a two-phase commit: a crash between
        # finishing a tenant and the catalog leaves data without a record,
        # which repair() deletes, never a record without data.
        collection.commit_last.add(catalog)

    def _policy(self):
        return AttemptWithBackoff(self.attempts, initial=self.backoff,
                                  maximum=self.max_backoff)

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
        txn = None
        try:
            with self._catalog_lock if write else contextlib.nullcontext(), \
                    self.collection.transaction(tm) as g:
                txn = tm.get()
                if write:
                    _crash_test_join(tm)
                yield _tree(g.root(self.catalog), create=True), g
        except Exception as e:
            if not _committed_anyway(txn, e):
                raise

    def _read(self, read):
        """read(tree) in a catalog transaction, run again when the catalog
        write of another process or a lost connection got in the way."""
        policy = self._policy()
        for _ in policy:
            try:
                with self._catalog() as (tree, _):
                    return read(tree)
            except Exception as e:
                if policy.last or not _transient(e):
                    raise

    def _record(self, name):
        return self._read(lambda tree: tree.get(name))

    def get(self, name):
        """See ``ITenants.get``."""
        rec = self._record(name)
        if rec is None:
            raise NoSuchTenant(name)
        return rec

    def list(self):
        """See ``ITenants.list``."""
        return list(self.records())

    def records(self, batch=1000):
        """See ``ITenants.records``."""
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch!r}")
        after = None
        while True:
            def read(tree, after=after):
                if tree is None:
                    return []
                items = tree.items() if after is None else \
                    tree.items(after, excludemin=True)
                return list(itertools.islice(items, batch))
            chunk = self._read(read)
            for _, rec in chunk:
                yield rec
            if len(chunk) < batch:
                return
            after = chunk[-1][0]

    def __contains__(self, name):
        return self._record(name) is not None

    def load(self):
        """Declare every tenant of the catalog in the collection (lazily:
        nothing is opened but the catalog).  The records are read a batch
        at a time: a process with 100,000 tenants never holds them all."""
        count = 0
        for rec in self.records():
            self._declare(rec)
            count += 1
        self._loaded = True
        return count

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
        this one declared it, or had its data replaced (revert, restore:
        a PostgreSQL tenant's database is swapped, its connections ended);
        the catalog says."""
        if name in self._busy:
            return False   # an operation of this process holds it
        try:
            rec = self._record(name)
        except Exception:
            log.debug("reading the record of %r failed", name,
                      exc_info=True)
            return False
        opener = self._declared.get(name)
        if rec is not None and (opener is None or (
                rec.modified == opener.modified and
                rec.settings == opener.settings)):
            return False
        # The catalog changed and this process has not looked (its
        # catalog is polled now and then): the next refresh reads it.
        self._tid_seen = None
        try:
            self._undeclare(name, timeout=0)
        except DatabaseInUse:
            # Another group holds the dead database: refresh() ends it.
            return True if rec is None else 'replaced'
        if rec is None:
            return True
        self._declare(rec)
        return 'replaced'

    def refresh(self, group, name):
        """See ``INameResolver.refresh``: bring the collection up to date
        with the catalog as group's transaction sees it: tenants dropped
        (by this or another process), or whose data another process
        replaced (revert, restore) or moved (relocate), are removed from
        the collection and from group, to be declared again on use.
        Tenants created elsewhere are declared on first use of their
        names.

        Cheap when nothing changed: no catalog connection is opened.  The
        catalog's storage says when it last committed (``lastTransaction``,
        which FileStorage and ZEO keep current in the process, ZEO from
        the invalidations its server pushes); only a change makes refresh
        read the catalog, and then only the names changed since it last
        looked (the catalog's change log).  A storage that does not push
        (RelStorage polls) is polled at most every
        ``catalog_poll_interval`` seconds: within that a tenant dropped
        elsewhere is found when its own storage fails (a dropped
        PostgreSQL database), one created elsewhere when its name is
        first asked for.

        A dropped tenant that another group still holds stays declared
        until a later refresh finds it idle (the change is not marked
        seen meanwhile); the group asking for it by name gets
        ``UnknownDatabase`` at once, never a connection to a database
        that is gone."""
        if name == self.catalog:
            return False   # asked again at the group's next use
        db = self.collection.peek(self.catalog)
        if db is None:
            db = self.collection[self.catalog]    # (re)opened
        # Read before the group's connection polls: a commit in between
        # makes the next refresh look again, never miss it.
        tid = db.storage.lastTransaction()
        if db is self._catalog_db and tid == self._tid_seen and (
                self._pushes or time.monotonic() - self._polled_at
                < self.catalog_poll_interval):
            return True
        root = group.get_connection(self.catalog).root()
        seen = _serial(root)
        before = self._serial_seen
        if seen == before:
            self._saw(db, tid, seen)
            return True
        tree = _tree(root)
        changed = None if before is None else _changes(root, before, seen)
        if changed is None:
            # Too far behind the log (or the first look): every declared
            # tenant is compared with its record.
            changed = list(self._declared)
        settled = True
        held = False
        for known in changed:
            opener = self._declared.get(known)
            if opener is None or known in self._busy:
                continue
            current = tree.get(known) if tree is not None else None
            # Still there, and its data where it was: nothing to do.  When
            # another process replaced its data (revert, restore) or moved
            # it (relocate), the open database would go on serving the
            # old data: closed, to be declared again on use.
            if current is not None and current.modified == opener.modified \
                    and current.settings == opener.settings:
                continue
            conn = group.connections.get(known)
            if conn is not None and not is_joined(conn):
                group.release(known)
            try:
                self._undeclare(known, timeout=0)
            except DatabaseInUse:
                # Another group still holds it: again at the next
                # refresh, whatever the counter says then.
                settled = False
                held = held or (known == name and current is None)
        if settled:
            self._saw(db, tid, seen)
        if held:
            raise UnknownDatabase(name, "no longer exists (dropped; a"
                                  " group still holds its connections)")
        return True

    def _saw(self, db, tid, serial):
        # What refresh() found.
        with self._lock:
            if self._serial_seen is None or serial >= self._serial_seen:
                self._serial_seen = serial
                self._catalog_db = db
                self._tid_seen = tid
                self._pushes = pushes_invalidations(db.storage)
                self._polled_at = time.monotonic()

    def _declare(self, rec, private=False, create=False):
        if rec.name in self.collection:
            return
        opener = _Opener(self.backend_for(rec), rec, create)
        self.collection.declare(
            rec.name, opener, origin=f'catalog {self.catalog!r}',
            private=private, dynamic=True, **self.db_kwargs)
        self._declared[rec.name] = opener

    def _undeclare(self, name, timeout=None):
        timeout = self.in_use_timeout if timeout is None else timeout
        try:
            self.collection.remove(name, timeout=timeout)
        except UnknownDatabase:
            pass
        self._declared.pop(name, None)

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
                self._sync_catalog()
                yield
        finally:
            for slot in acquired:
                slot[0].release()
            with self._lock:
                for name, slot in slots:
                    slot[1] -= 1
                    if not slot[1]:
                        del self._busy[name]

    def _sync_catalog(self):
        """Make the catalog reads that follow see every commit finished
        before now.  A ZEO client applies invalidations as they arrive, in
        a thread of its own: a process that takes a name's lock just
        released by another could read the catalog as it was before the
        other's commit (and take its tenant for a leftover).  A round trip
        to the server (ping) comes back after the invalidations sent
        before it.  Other storages read the current state at each
        transaction start."""
        storage = self.collection[self.catalog].storage
        try:
            from ZEO.ClientStorage import ClientStorage
        except ImportError:  # pragma: no cover (ZEO is a dependency)
            return
        if isinstance(storage, ClientStorage):
            storage.ping()

    # -- create, clone, drop --------------------------------------------

    def _attempts(self, operation, name, attempt, outcome, not_done):
        """Run attempt() until it succeeds, up to self.attempts times while
        it fails with a transient error (see _transient).  After each
        failure outcome() says whether the operation took effect after all
        (a commit that reached the catalog though the connection was lost
        before the answer came back): its result, returned as the
        operation's, or None.  When every attempt lost its connection,
        ServerUnavailable says so, with not_done (what did not happen) or
        that the state is unknown, when the server could not be asked."""
        policy = self._policy()
        for _ in policy:
            try:
                return attempt()
            except Exception as e:
                if not _transient(e):
                    raise
                error = e
            try:
                done = outcome()
                known = True
            except Exception:
                done, known = None, False
            if done is not None:
                log.info("%s of tenant %r: the commit went through although"
                         " %s was raised", operation, name,
                         type(error).__name__)
                return done
            if not policy.last:
                log.info("%s of tenant %r: attempt %d of %d failed (%s:"
                         " %s): retrying", operation, name, policy.attempt,
                         policy.attempts, type(error).__name__, error)
        if lost_connection(error):
            raise ServerUnavailable(
                operation, name, policy.attempts, error,
                not_done if known else
                f"whether it took effect is unknown: see 'multidb show"
                f" {name}' once the server is back") from error
        raise error

    def _check_lock(self, name, settings=None):
        """Before a commit: when the name's lock was lost (and taken
        again) during the operation, another process may have worked on
        the name meanwhile: what this operation made (the storage of
        settings) must still be there and its own, or the operation
        starts over."""
        if self.backend.check_lock(name) and settings is not None and \
                self.backend.identify(settings) != settings.get('id'):
            raise _LockLost(f"tenant {name!r}: the lock was lost during the"
                            f" operation, and what it made is gone")

    def _committed(self, name, settings):
        """The record of name if it is the tenant of settings (the same
        tenant id), else None."""
        current = self._record(name)
        if current is not None and _same_tenant(current.settings, settings):
            return current
        return None

    def _discard(self, name, settings):
        """Delete what a failed create (clone, restore) made for the new
        tenant of settings, unless its record was committed after all.
        When that cannot be told, or the deletion fails, the storage is
        left: it carries a tenant id that no record has, and repair (or
        the next create of the name) deletes it."""
        try:
            if self._committed(name, settings) is None:
                self.backend.destroy(settings)
        except Exception:
            log.warning("the storage of tenant %r at %s is left for repair",
                        name, self.backend.describe(settings),
                        exc_info=True)

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
        # One tenant id for every attempt: an attempt whose commit went
        # through although its connection was lost is known as ours.
        rec = TenantRecord(name=name, kind=backend.kind,
                           settings=backend.settings_for(name), created=when,
                           modified=when, expires=expires, labels=labels)
        return self._attempts(
            'create', name, lambda: self._create(rec, init),
            lambda: self._committed(name, rec.settings),
            "the tenant was not created")

    def _create(self, rec, init):
        name, settings, backend = rec.name, rec.settings, self.backend
        with self._hold(name):
            current = self._record(name)
            if current is not None:
                if _same_tenant(current.settings, settings):
                    return current   # an earlier attempt committed
                raise TenantExists(name)
            self._clear_leftover(name, settings)
            try:
                backend.prepare(settings)
                # Private until the record is committed: nobody else can
                # open (or write to) a tenant that does not exist yet.
                # The only declaration that may make the storage.
                self._declare(rec, private=True, create=True)
                _crashpoint('create.declared')
                tm = transaction.TransactionManager()
                txn = None
                try:
                    with self._catalog_lock, \
                            self.collection.transaction(tm) as g:
                        txn = tm.get()
                        _crash_test_join(tm)
                        root = g.root(name)       # makes the storage
                        _crashpoint('create.storage-made')
                        if init is not None:
                            init(root)
                        tree = _tree(g.root(self.catalog), create=True)
                        if name in tree:          # another process won
                            raise TenantExists(name)
                        tree[name] = rec
                        _bump(g.root(self.catalog), name)
                        # The lock must still be held as the record
                        # commits (PostgreSQL's is lost with its
                        # connection).
                        self._check_lock(name, settings)
                except Exception as e:
                    if not _committed_anyway(txn, e):
                        raise
            except BaseException:
                self._undeclare(name, timeout=0)
                self._discard(name, settings)
                raise
            # Committed: nothing from here on may fail the create.
            self.collection.publish(name)
            _crashpoint('create.committed')
        return rec

    def clone(self, source, name, *, expires=None, labels=None,
              progress=None):
        """See ``ITenants.clone``."""
        check_tenant_name(name, self._reserved())
        when = _now()
        expires = _expiry(expires, when)
        labels = _labels(labels) if labels is not None else None
        settings = self.backend.settings_for(name)   # see create
        return self._attempts(
            'clone', name,
            lambda: self._clone(source, name, settings, when, expires,
                                labels, progress),
            lambda: self._committed(name, settings),
            "the tenant was not created")

    def _clone(self, source, name, settings, when, expires, labels,
               progress):
        backend = self.backend
        with self._hold(source, name):
            src = self.get(source)
            current = self._record(name)
            if current is not None:
                if _same_tenant(current.settings, settings):
                    return current   # an earlier attempt committed
                raise TenantExists(name)
            self._clear_leftover(name, settings)
            rec = TenantRecord(
                name=name, kind=backend.kind, settings=settings,
                created=when, modified=when, expires=expires,
                labels=labels if labels is not None else dict(src.labels))
            tmp = backend.tmp_path(settings)
            try:
                self._dump(src, tmp, progress)
                _crashpoint('clone.copied')
                backend.load(settings, tmp)
                _crashpoint('clone.loaded')
                self._check_lock(name, settings)
                self._commit_record(rec, new=True)
            except BaseException:
                _unlink(tmp)
                self._discard(name, settings)
                raise
            self._declare(rec)
        return rec

    def drop(self, name, *, archive_to=None, progress=None):
        """See ``ITenants.drop``.

        What can be checked is checked before the record's removal is
        committed (the tenant's files or database may be deleted: see
        ``IBackend.check_destroy``), and nothing changes when that fails.
        Storage that cannot be deleted once the removal is committed makes
        a partial success, ``DropIncomplete`` (the tenant is dropped; what
        is left is for ``repair``)."""
        seen = {}   # the record being dropped; whether it was archived

        def attempt():
            with self._hold(name):
                rec = self.get(name)
                if 'rec' in seen and not _same_tenant(
                        rec.settings, seen['rec'].settings):
                    return seen['rec']   # dropped, and made again since
                seen['rec'] = rec
                backend = self.backend_for(rec)
                if archive_to is not None and 'archived' not in seen:
                    self._archive(rec, archive_to, progress)
                    seen['archived'] = True   # an attempt again: not twice
                backend.check_destroy(rec.settings, name)
                self._undeclare(name)   # DatabaseInUse: nothing changed
                _crashpoint('drop.closed')
                try:
                    # (The removal checks that the record is still rec.)
                    self._check_lock(name)
                    self._remove_record(rec)
                except BaseException:
                    self._redeclare(rec)
                    raise
                _crashpoint('drop.committed')
                self._destroy_dropped(rec)
            return rec

        def outcome():
            # The removal was committed although the connection was lost
            # (or another process dropped the tenant meanwhile).
            rec = seen.get('rec')
            if rec is None or self._committed(name, rec.settings) is not None:
                return None
            with self._hold(name):
                self._destroy_dropped(rec)
            return rec

        return self._attempts('drop', name, attempt, outcome,
                              "the tenant was not dropped")

    def _redeclare(self, rec):
        # A removal that failed: the tenant is back in the collection,
        # unless the removal went through after all.
        try:
            if self._committed(rec.name, rec.settings) is not None:
                self._declare(rec)
        except Exception:
            log.debug("tenant %r: not declared again", rec.name,
                      exc_info=True)

    def _destroy_dropped(self, rec):
        """Delete a dropped tenant's storage (retrying a lost connection);
        DropIncomplete when that fails: the tenant is dropped, and what is
        left carries an id no record has, which repair deletes."""
        backend = self.backend_for(rec)
        policy = self._policy()
        for _ in policy:
            try:
                backend.destroy(rec.settings)
                return
            except Exception as e:
                if policy.last or not _transient(e):
                    log.warning("tenant %r is dropped, but its storage at %s"
                                " is left for repair: %s", rec.name,
                                backend.describe(rec.settings), e)
                    raise DropIncomplete(rec, backend.describe(rec.settings),
                                         e) from e

    def _remove_record(self, rec):
        with self._catalog(write=True) as (tree, g):
            current = tree.get(rec.name)
            if current is None or not _same_tenant(current.settings,
                                                   rec.settings):
                raise NoSuchTenant(rec.name)
            del tree[rec.name]
            _bump(g.root(self.catalog), rec.name)

    def _commit_record(self, rec, new=False):
        with self._catalog(write=True) as (tree, g):
            if new and rec.name in tree:
                raise TenantExists(rec.name)
            tree[rec.name] = rec
            if new:
                _bump(g.root(self.catalog), rec.name)

    def _clear_leftover(self, name, settings):
        """Before a new tenant's storage is made (name has no record):
        delete what a crashed create, clone or restore left at its place,
        if that is provably a leftover: it carries a tenant id (which no
        record has, since name has none).  Storage without an id is not
        multidb's to delete: StorageInTheWay."""
        backend = self.backend
        where = backend.describe(settings)
        found = backend.identify(settings)
        if found is None:
            if backend.exists(settings):
                raise StorageInTheWay(name, where, "carries no tenant id")
            # Companions of no data file (an index, a lock file): what a
            # crash in a drop of old leaves; nothing else may use them.
            companions = getattr(backend, 'companions', None)
            if companions is not None and companions(settings):
                backend.destroy({k: v for k, v in settings.items()
                                 if k != 'id'})
            return
        leftover = dict(settings, id=found)
        if backend.is_locked(leftover):
            raise StorageInTheWay(name, where, "is held open by a process")
        if found != settings.get('id'):
            log.warning("deleting leftover storage (tenant id %s) at %s to"
                        " make tenant %r", found, where, name)
        backend.destroy(leftover)

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
            with src, _archive.create_tmp(dest) as out:
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

    def _snapshot(self, rec, label, progress=None, raw=None):
        """Snapshot rec's committed data; with raw, the file path, keep
        the bytes of that file as they are instead."""
        backend = self.backend_for(rec)
        when = _now()
        sid = new_snapshot_id(when)
        path = backend.snapshot_path(rec.settings, sid)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = _archive.tmp_name(path)
        try:
            if raw is None:
                size = self._dump(rec, tmp, progress)
            else:
                size = _copy_file(raw, tmp, progress)
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
            # A commit may take effect and still raise (the server's
            # answer lost): the file is deleted only when the catalog
            # shows that no record lists it.
            try:
                listed = self._snapshot_listed(rec.name, sid)
            except Exception:
                listed = None    # unknown: keep it; repair decides later
            if listed:
                log.warning("snapshot %s of %r was recorded although its"
                            " commit reported an error", sid, rec.name)
                return snap
            if listed is False:
                _unlink(path)
            raise
        return snap

    def _snapshot_listed(self, name, sid):
        current = self._record(name)
        return current is not None and \
            any(s.id == sid for s in current.snapshots)

    def _snapshot_or_keep(self, rec, label, progress=None):
        """The snapshot revert and restore take before they replace a
        tenant's data.  A tenant whose storage cannot be opened (a disk
        fault, an archive restored before restores were checked) cannot
        be snapshotted through its storage, and must still be repairable:
        the bytes of its file are kept aside instead, as they are, in a
        snapshot labelled 'unreadable state ...'."""
        try:
            return self._snapshot(rec, label, progress)
        except (MultiDBError, TransientError, OSError):
            # In use, locked by another process, out of descriptors or
            # disk: the storage is not broken, or its bytes cannot be
            # copied either.
            raise
        except Exception as e:
            raw = rec.settings.get('path') \
                if self.backend_for(rec).kind == 'filestorage' else None
            if raw is None or not os.path.isfile(raw):
                raise
            # str(e): a record holding e would hold the failed storage.
            log.warning("tenant %r cannot be read (%s); keeping its file"
                        " as it is before replacing its data", rec.name,
                        str(e))
        self._undeclare(rec.name)
        # A FileStorage whose open failed keeps its lock file until it is
        # collected: the tenant could not open again after the repair.
        gc.collect()
        return self._snapshot(rec, f'unreadable state {label}', progress,
                              raw=raw)

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
            before = self._snapshot_or_keep(
                rec, f'before revert to {snapshot_id}', progress)
            src = backend.snapshot_path(rec.settings, snapshot_id)
            tmp = backend.tmp_path(rec.settings)
            self._undeclare(name)
            try:
                _copy_file(src, tmp, progress)
                _crashpoint('revert.copied')
                backend.load(rec.settings, tmp)
                _crashpoint('revert.loaded')
                with self._catalog(write=True) as (tree, g):
                    current = tree[name]
                    tree[name] = current.replace(modified=_now())
                    # Other processes have the old data open: their next
                    # refresh closes it (see refresh).
                    _bump(g.root(self.catalog), name)
            finally:
                _unlink(tmp)
                self._declare(self.get(name))
        return before.id

    def _check_idle(self, name):
        if name in self.collection:
            self.collection.wait_idle(name, timeout=self.in_use_timeout)

    # -- archives ---------------------------------------------------------

    @property
    def archive_key(self):
        """The key that signs archives and checks restored ones, as given
        (bytes), or None: then the environment's ``MULTIDB_ARCHIVE_KEY``,
        if set, at each archive and restore."""
        return self._archive_key

    @archive_key.setter
    def archive_key(self, key):
        self._archive_key = None if key is None else _archive.check_key(key)

    def _key(self):
        if self._archive_key is not None:
            return self._archive_key
        return _archive.key_from_env()

    def archive(self, name, path, *, progress=None, checksum=None):
        """See ``ITenants.archive``."""
        if checksum is not None:
            _archive._hasher(checksum)
        self._key()   # a bad key in the environment: before anything
        with self._hold(name):
            return self._archive(self.get(name), path, progress, checksum)

    def _archive(self, rec, path, progress=None, checksum=None):
        backend = self.backend_for(rec)
        key = self._key()
        self._declare(rec)   # see _dump
        g = self.collection.group(transaction.TransactionManager())
        try:
            db = g.get_connection(rec.name).db()
            src, length = backend.open_data(db, rec.settings)
            with src:
                # Signed when a key is configured; the header's record
                # loses its credentials (write_archive).
                _archive.write_archive(
                    path, {'record': rec.to_json()}, src, length,
                    progress=progress,
                    checksum=checksum or self.archive_checksum, key=key)
        finally:
            g.close()
        return os.fspath(path)

    @_retrying
    def restore(self, path, name=None, *, replace=False, progress=None,
                trust_unsigned=False):
        """See ``ITenants.restore``.

        What it trusts: an archive signed with the archive key, or any
        archive whose checksum holds with trust_unsigned.  Whatever it
        trusts, the data must be a whole FileStorage whose pickles name
        only what ``self.archive_policy`` allows, checked before it
        replaces anything (``archive.check_filestorage``)."""
        header = _archive.read_header(path, verify=False)
        key = self._key()
        # Refused before anything is touched: an archive of unknown origin.
        _archive.check_origin(path, header, key, trust_unsigned)
        try:
            source = TenantRecord.from_json(
                _archive.tenant_record(path, header))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            if isinstance(e, CorruptArchive):
                raise
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
                # Checks the whole archive while extracting (checksum,
                # signature), then the data itself: raises CorruptArchive
                # before anything of the tenant is touched.
                _archive.extract(path, tmp, progress=progress, key=key,
                                 trust_unsigned=trust_unsigned)
                _crashpoint('restore.extracted')
                _archive.check_filestorage(tmp, self.archive_policy,
                                           archive=path)
                if existing is not None:
                    self._snapshot_or_keep(existing, 'before restore')
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
                        _bump(g.root(self.catalog), name)
                    else:
                        # Replacing restores the data; the tenant keeps
                        # its own record (labels, expiry, snapshots), so
                        # a crash once the data is in place is the new
                        # state already.
                        rec = current.replace(modified=_now())
                        _bump(g.root(self.catalog), name)   # see revert
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
            except DropIncomplete as e:
                entry['error'] = str(e)   # dropped; the rest is repair's
            except (DatabaseInUse, NoSuchTenant, OSError) as e:
                entry['action'] = 'skipped'
                entry['error'] = str(e)
            done.append(entry)
            if progress is not None:
                progress(1)
        return done

    def repair(self, *, dry_run=False):
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
        ``archive.stale_temp_files``)."""
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
                                backend.snapshot_path(rec.settings, sid)),
                        functools.partial(self._repair_snapshot, rec, sid)))
            missing = [s for s in rec.snapshots if not os.path.exists(
                backend.snapshot_path(rec.settings, s.id))]
            for s in missing:
                plan.append((finding(
                    'missing snapshot', rec.name,
                    backend.snapshot_path(rec.settings, s.id)), None))
            if rec.name in moved or place in stored:
                continue
            if not backend.exists(rec.settings):
                plan.append((finding('missing storage', rec.name,
                                     backend.describe(rec.settings)), None))

        stale = {}   # folder -> its stale temporary files
        for name, path in backend.stray_files():
            if path.endswith(_LOCK_SUFFIX):
                continue   # see repair: no finding, housekeeping
            if name is None and not path.startswith('postgresql:'):
                folder = os.path.dirname(path)
                if folder not in stale:
                    stale[folder] = set(_archive.stale_temp_files(folder))
                if path not in stale[folder]:
                    continue   # a live process's (or not multidb's)
            elif backend.stray_in_use(path):
                continue
            plan.append((finding('temporary file', name, path),
                         functools.partial(self._repair_stray, name, path)))
        if self.archive_dir:
            # expire writes archives there through temporary files.
            for path in _archive.stale_temp_files(self.archive_dir):
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
            if path not in _archive.stale_temp_files(folder):
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

    def relocate(self, names=None, *, dry_run=False):
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
                _bump(g.root(self.catalog), name)
            self._write(update)
        finally:
            self._redeclare(self._record(name) or rec)
        return dict(entry, action=action)

    def _write(self, change):
        """change(tree, group) in a catalog transaction, committed; run
        again on a conflict or a lost connection."""
        policy = self._policy()
        for _ in policy:
            try:
                with self._catalog(write=True) as (tree, g):
                    return change(tree, g)
            except Exception as e:
                if policy.last or not _transient(e):
                    raise


def _copy_file(src, dest, progress=None):
    """Copy the file src to the new file dest (a temporary name, locked
    while written) and flush it to disk; return its size."""
    with open(src, 'rb') as f, _archive.create_tmp(dest) as out:
        size = os.fstat(f.fileno()).st_size
        _archive.copy_range(f, out, size, None, progress)
        out.flush()
        os.fsync(out.fileno())
    return size


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
