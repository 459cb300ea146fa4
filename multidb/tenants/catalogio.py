"""The catalog as the tenant lifecycle reads and writes it, and the
tenants it declares in the collection.

:class:`CatalogAccess`, a part of ``multidb.tenants.lifecycle.Tenants``:
transactions on the catalog alone, record reads and writes (each run
again when the catalog write of another process or a lost connection got
in the way), the declarations of tenants in the collection, and the
``INameResolver`` callbacks through which the collection asks about
tenants (``resolve``, ``open_failed``, ``refresh``, ``declare_all``).
"""
import contextlib
import contextvars
import itertools
import logging
import threading
import time
from typing import TYPE_CHECKING
from typing import Any
from typing import Iterable
from typing import Iterator
from typing import List
from typing import Union

import transaction
from transaction._transaction import Status

from multidb.errors import DatabaseInUse
from multidb.errors import NoSuchTenant
from multidb.errors import TenantExists
from multidb.errors import UnknownDatabase
from multidb.glue import is_joined
from multidb.glue import pushes_invalidations
from multidb.retry import retryable
from multidb.tenants.catalog import bump as _bump
from multidb.tenants.catalog import changes as _changes
from multidb.tenants.catalog import serial as _serial
from multidb.errors import UnreadableRecord
from multidb.tenants.catalog import TenantRecord
from multidb.tenants.catalog import tree as _tree
from multidb.tenants.crashpoints import _crash_test_join

if TYPE_CHECKING:  # pragma: no cover
    from multidb.group import ConnectionGroup

# One logger for the whole lifecycle, whichever module logs.
log = logging.getLogger('multidb.tenants.lifecycle')


def _transient(error):
    """Is error worth running the operation again?  See
    ``multidb.backends.retryable``."""
    return retryable(error)


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


class _Opener:
    """A tenant's storage factory, as declared in the collection: it opens
    the recorded storage, and never makes one (a recorded tenant whose
    storage is gone raises MissingStorage), except for the create that
    makes the tenant, at its first open."""

    __slots__ = ('backend', 'settings', 'name', 'create', 'modified',
                 'pending')

    def __init__(self, backend, rec, create=False):
        self.backend = backend
        self.settings = rec.settings
        self.name = rec.name
        self.create = create
        # The record's 'modified' when declared: another process that
        # replaces the data (revert, restore) changes it (see refresh).
        self.modified = rec.modified
        # Declared by the create that makes the tenant, whose record is
        # not committed yet (see refresh; cleared by _publish).
        self.pending = create

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


# Set while a lifecycle operation runs its attempts (Tenants._attempts,
# copies' _retrying): the operation retries the whole attempt, so a
# catalog read or write inside it is tried once.  Retried there too, the
# retries would multiply: a create against a server that is gone took
# attempts x attempts backoffs (35 s instead of 3.5 with the default
# ten).
_ATTEMPTING = contextvars.ContextVar('multidb_attempting', default=False)


@contextlib.contextmanager
def attempting():
    """Within: catalog reads and writes are tried once (the caller
    retries)."""
    token = _ATTEMPTING.set(True)
    try:
        yield
    finally:
        _ATTEMPTING.reset(token)


class CatalogAccess:
    """The catalog and the declarations of tenants (see the module).

    A part of ``Tenants``: it uses the attributes that
    ``Tenants.__init__`` sets (``collection``, ``catalog``, ``backend``,
    the locks, ``_busy`` and ``_declared``) and its ``_policy()``.
    """

    # The origin of every tenant's declaration (made once: see _declare).
    _origin = None

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
        write of another process or a lost connection got in the way
        (once only inside an operation's own attempts: see
        ``attempting``)."""
        if _ATTEMPTING.get():
            with self._catalog() as (tree, _):
                return read(tree)
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

    def get(self, name: str) -> TenantRecord:
        """See ``ITenants.get``."""
        rec = self._record(name)
        if rec is None:
            raise NoSuchTenant(name)
        return rec

    def list(self) -> List[TenantRecord]:
        """See ``ITenants.list``."""
        return list(self.records())

    def records(self, batch: int = 1000) -> Iterator[TenantRecord]:
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

    def __contains__(self, name: object) -> bool:
        return self._record(name) is not None

    def load(self) -> int:
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

    def declare_all(self) -> None:
        """See ``INameResolver.declare_all``."""
        self.load()

    def is_tenant(self, name: str) -> bool:
        """See ``ITenants.is_tenant``."""
        if name in self._declared:
            return True
        if name in self.collection:
            return False   # the catalog, or a configured database
        return self.resolve(name)

    def resolve(self, name: str) -> bool:
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

    def open_failed(self, name: str,
                    error: BaseException) -> Union[bool, str]:
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

    def refresh(self, group: 'ConnectionGroup', name: str) -> bool:
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
        if self._catching_up and \
                threading.current_thread() is not self._catcher and \
                self._wait_for_catch_up(db):
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
            if opener is None:
                continue
            current = tree.get(known) if tree is not None else None
            # Still there, and its data where it was: nothing to do.  When
            # another process replaced its data (revert, restore) or moved
            # it (relocate, move), the open database would go on serving
            # the old data: closed, to be declared again on use.
            if current is not None and current.modified == opener.modified \
                    and current.settings == opener.settings:
                continue
            if known in self._busy:
                if current is None and opener.pending:
                    # This process's create of the name, its record not
                    # committed yet: nothing to look at again (its
                    # commit is a change of its own).  Not settling here
                    # would make every refresh during every create
                    # compare every declared tenant with its record.
                    continue
                # An operation of this process holds the name (and
                # declares it again when done); looked at again at the
                # next refresh, whatever the counter says then.
                settled = False
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

    def _named_records(self, names: Iterable[str]) -> List[TenantRecord]:
        """The records of names (sorted, once each); ``NoSuchTenant`` for
        the first name the catalog does not have."""
        records = []
        for name in sorted(set(names)):
            rec = self._record(name)
            if rec is None:
                raise NoSuchTenant(name)
            records.append(rec)
        return records

    def _log_change(self, group, name):
        """Log a change of name's record in the catalog, in group's
        transaction (see catalog.bump); once it commits, this process's
        watcher tells the subscribers."""
        _bump(group.root(self.catalog), name)
        if self._subscribers:
            group.transaction_manager.get().addAfterCommitHook(
                self._change_committed)

    def _change_committed(self, ok):
        if ok:
            self._poll_now()

    def _saw(self, db, tid, serial):
        # What refresh() found.
        with self._lock:
            if self._serial_seen is None or serial >= self._serial_seen:
                self._serial_seen = serial
                if db is not self._catalog_db:
                    self._pushes = pushes_invalidations(db.storage)
                    # Told of commits made elsewhere (ZEO, PostgreSQL):
                    # applied as they happen (see multidb.tenants.events).
                    self._follow(db)
                self._catalog_db = db
                self._tid_seen = tid
                self._polled_at = time.monotonic()

    def _declare(self, rec, private=False, create=False):
        if not isinstance(rec, TenantRecord):
            # A record this version cannot read: ZODB makes a Broken
            # object of a class (or function) it cannot import, say one a
            # newer multidb wrote.
            raise UnreadableRecord(
                self.catalog,
                f"{type(rec).__module__}.{type(rec).__name__}")
        if rec.name in self.collection:
            return
        origin = self._origin
        if origin is None:
            # One string for every tenant (100,000 of them).
            origin = self._origin = f'catalog {self.catalog!r}'
        opener = _Opener(self.backend_for(rec), rec, create)
        self.collection.declare(
            rec.name, opener, origin=origin,
            private=private, dynamic=True, **self.db_kwargs)
        self._declared[rec.name] = opener

    def _publish(self, name):
        """The record of the tenant name, just created, is committed: its
        declaration is no longer a create in progress (see refresh), and
        every group may open it."""
        opener = self._declared.get(name)
        if opener is not None:
            opener.pending = False
        self.collection.publish(name)

    def _undeclare(self, name, timeout=None):
        timeout = self.in_use_timeout if timeout is None else timeout
        try:
            self.collection.remove(name, timeout=timeout)
        except UnknownDatabase:
            pass
        self._declared.pop(name, None)

    def backend_for(self, rec: TenantRecord) -> Any:
        """The backend for an existing record (its own kind)."""
        if rec.kind != self.backend.kind:
            raise ValueError(f"tenant {rec.name!r} is on {rec.kind!r}; this"
                             f" collection's tenants are on"
                             f" {self.backend.kind!r}")
        return self.backend

    def _reserved(self):
        return _Reserved(self)

    # -- record writes, and what an operation committed ------------------

    def _committed(self, name, settings):
        """The record of name if it is the tenant of settings (the same
        tenant id), else None."""
        current = self._record(name)
        if current is not None and _same_tenant(current.settings, settings):
            return current
        return None

    def _redeclare(self, rec):
        # A removal that failed: the tenant is back in the collection,
        # unless the removal went through after all.
        try:
            if self._committed(rec.name, rec.settings) is not None:
                self._declare(rec)
        except Exception:
            log.debug("tenant %r: not declared again", rec.name,
                      exc_info=True)

    def _remove_record(self, rec):
        with self._catalog(write=True) as (tree, g):
            current = tree.get(rec.name)
            if current is None or not _same_tenant(current.settings,
                                                   rec.settings):
                raise NoSuchTenant(rec.name)
            del tree[rec.name]
            self._log_change(g, rec.name)

    def _commit_record(self, rec, new=False):
        with self._catalog(write=True) as (tree, g):
            if new and rec.name in tree:
                raise TenantExists(rec.name)
            tree[rec.name] = rec
            if new:
                self._log_change(g, rec.name)

    def _write(self, change):
        """change(tree, group) in a catalog transaction, committed; run
        again on a conflict or a lost connection (once only inside an
        operation's own attempts: see ``attempting``)."""
        if _ATTEMPTING.get():
            with self._catalog(write=True) as (tree, g):
                return change(tree, g)
        policy = self._policy()
        for _ in policy:
            try:
                with self._catalog(write=True) as (tree, g):
                    return change(tree, g)
            except Exception as e:
                if policy.last or not _transient(e):
                    raise
