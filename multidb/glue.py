"""ZODB glue: the one module that touches private members of ZODB, of
``transaction`` and of RelStorage.

Everything else in multidb uses public APIs only, so a new ZODB release is
audited here.  What is used, and why:

- ``Connection._needs_to_join``: False exactly while a connection is
  joined to a transaction (has changes); ZODB's own ``close()`` checks it.
- ``Connection._cache``: to ghostify the objects that hold cross-database
  references when a connection leaves its group (see ``Connection``).
- ``Connection._store_objects``: the writer's loop, to know which object
  is being stored when the writer resolves a cross-database reference.
- ``ZODB._compat.PersistentUnpickler``: to list the references of a
  pickle that holds a persistent weak reference into another database
  (the writer makes those without asking for a connection).
- ``DB._lock``, ``DB.pool``, ``DB.historical_pool``: how many connections
  are handed out, and popping a pooled one (``DB.open`` would also run a
  cache GC of every idle connection on the hot path).
- ``DB._returnToPool``: to wake callers waiting for a connection.
- ``TransactionManager._txn``: whether a manager has a transaction at all.
- ``storage._adapter.driver.disconnected_exceptions`` (RelStorage): the
  driver's exceptions for a lost server connection; ``storage._adapter.
  _dsn``: the connection string of a catalog on PostgreSQL, to LISTEN.
- ``FileStorage._pos``, ``_lock``, ``_is_read_only``, ``_save_index``: the
  committed length of a FileStorage file, and skipping the rewrite of an
  index that is current when a database that wrote nothing closes.
- ``DB._mvcc_storage``: the receiver of a ZEO client's invalidations,
  which ``prefetch_changes`` forwards to after warming the client cache.
- What ``ZODB.DB`` commits when it opens a storage without a root (its
  description, the root's class): ``make_root`` commits the same through
  the storage API, so that a new tenant's file is complete, and flushed,
  before its folder is (see ``multidb.backends.filestorage``).
"""
import logging
import weakref
from io import BytesIO

import ZODB
from ZODB.utils import p64
from ZODB.utils import u64
from ZODB._compat import PersistentUnpickler
from ZODB.Connection import Connection as _ZConnection
from ZODB.POSException import ConnectionStateError

log = logging.getLogger(__name__)


def is_joined(conn):
    """Has conn changes in the current transaction?"""
    # ZODB keeps _needs_to_join False exactly while the connection is
    # joined to a transaction; close() refuses then.
    return not conn._needs_to_join


def check_not_joined(conn, what):
    """Raise ConnectionStateError when conn has uncommitted changes."""
    if not conn._needs_to_join:
        raise ConnectionStateError(
            f"cannot {what}: its connection to database"
            f" {conn._db.database_name!r} has changes in the current"
            f" transaction (commit or abort first)")


def has_transaction(tm):
    """Does the transaction manager tm hold a transaction now?

    True when unsure (a manager of another kind): the caller then ends
    whatever there is."""
    return getattr(tm, '_txn', True) is not None


def disconnected_exceptions(storage):
    """The exceptions meaning "lost the server" for a RelStorage storage
    (its driver lists them); () for any other storage."""
    driver = getattr(getattr(storage, '_adapter', None), 'driver', None)
    return tuple(getattr(driver, 'disconnected_exceptions', ()) or ())


def pushes_invalidations(storage):
    """Does storage's ``lastTransaction()`` follow every commit, in this
    process, without a poll?  Yes for storages that no other process
    writes (FileStorage locks its file; MappingStorage and DemoStorage live
    in the process) and for ZEO clients (their server pushes
    invalidations).  No for RelStorage, which polls, and for storages not
    known here."""
    from ZODB.DemoStorage import DemoStorage
    from ZODB.FileStorage import FileStorage
    from ZODB.MappingStorage import MappingStorage
    kinds = (FileStorage, MappingStorage, DemoStorage)
    try:
        from ZEO.ClientStorage import ClientStorage
        kinds += (ClientStorage,)
    except ImportError:  # pragma: no cover (ZEO is a dependency)
        pass
    return isinstance(storage, kinds)


class _PrefetchingReceiver:
    """Stands between a ZEO client storage and the database that receives
    its invalidations (ZODB's MVCC adapter): passes each invalidation on,
    then asks the server for the objects' new states, so they are in the
    client's cache by the time a connection loads them.

    Called in ZEO's I/O thread: ``prefetch`` only schedules the loads
    there (it does not wait), and a load that a connection starts
    meanwhile joins the one in flight (ZEO collapses them)."""

    def __init__(self, receiver, storage, on_change):
        self._receiver = receiver
        self._storage = storage
        self._on_change = on_change

    def invalidate(self, tid, oids):
        self._receiver.invalidate(tid, oids)
        if self._on_change is not None:
            try:
                self._on_change(tid)
            except Exception:
                log.exception("the change callback of %r failed",
                              self._storage)
        try:
            # The states as of tid, under the key a connection polling
            # after tid loads with (before tid + 1).
            self._storage.prefetch(
                list(oids), p64(u64(tid) + 1))
        except Exception:  # disconnected: loaded on demand instead
            log.debug("prefetching objects changed in %r failed",
                      self._storage, exc_info=True)

    def __getattr__(self, name):
        return getattr(self._receiver, name)


def prefetch_changes(db, on_change=None):
    """When db's storage is a ZEO client, load the objects that other
    clients change as soon as the server tells of the change, off the
    caller's path: the next transaction reading them (the tenant catalog,
    after a create elsewhere) finds them in the client cache instead of
    waiting for a round trip to the server.  on_change(tid), if given, is
    called for each such transaction (in ZEO's I/O thread: it must not
    block or use the storage; the storage's ``lastTransaction()`` reaches
    tid just after).  Returns whether it applies (False for any other
    storage); once per database."""
    try:
        from ZEO.ClientStorage import ClientStorage
    except ImportError:  # pragma: no cover (ZEO is a dependency)
        return False
    storage = db.storage
    if not isinstance(storage, ClientStorage):
        return False
    receiver = db._mvcc_storage
    if getattr(db, '_multidb_prefetching', False):
        return True
    # registerDB (public storage API) names the one invalidation
    # receiver; the MVCC adapter registered itself so.
    storage.registerDB(_PrefetchingReceiver(receiver, storage, on_change))
    db._multidb_prefetching = True
    return True


def postgresql_dsn(storage):
    """The libpq connection string a RelStorage storage on PostgreSQL
    connects with (its adapter keeps it), or None for any other
    storage.  It may hold a password: never show it."""
    adapter = getattr(storage, '_adapter', None)
    if adapter is None or \
            type(adapter).__module__.split('.')[:4] != \
            ['relstorage', 'adapters', 'postgresql', 'adapter']:
        return None
    return getattr(adapter, '_dsn', None)


def pool_lock(db):
    """The lock guarding db's connection pools (ZODB's DB.open takes it)."""
    return db._lock


def connections_in_use(db, locked=False):
    """How many connections of db are handed out (popped from a pool and
    not given back), opened or about to be.  locked: the caller holds
    pool_lock(db).

    The pools keep weak references to handed-out connections, so one
    dropped without being closed stops counting once it is collected.
    """
    if not locked:
        with db._lock:
            return connections_in_use(db, True)
    n = len(db.pool.all) - len(db.pool.available)
    for pool in db.historical_pool.pools.values():
        n += len(pool.all) - len(pool.available)
    return n


# A persistent weak reference is pickled as the persistent id
# ['w', (oid, database_name)]; its 'w' is written literally at least once,
# as BINUNICODE (protocol 3, ZODB's) or SHORT_BINUNICODE (4 and later).
# Only pickles holding it are parsed (ZODB's referencesf does the same).
_WEAKREF_MARKS = (b'X\x01\x00\x00\x00w', b'\x8c\x01w')


def _weakref_databases(pickle):
    """The databases named by persistent weak references in pickle."""
    refs = []
    u = PersistentUnpickler(None, refs.append, BytesIO(pickle))
    u.noload()
    u.noload()
    return {ref[1][1] for ref in refs
            if isinstance(ref, list) and ref and ref[0] == 'w'
            and len(ref[1]) > 1}


def referenced_databases(pickle):
    """The other databases that a stored record (an object's pickle)
    refers to: the database names of its cross-database references,
    strong (``'m'``, ``'n'``) and weak (``'w'``).  Read without loading
    any class."""
    refs = []
    u = PersistentUnpickler(None, refs.append, BytesIO(pickle))
    u.noload()
    u.noload()
    names = set()
    for ref in refs:
        if not isinstance(ref, list) or len(ref) < 2:
            continue
        kind, args = ref[0], ref[1]
        if kind in ('m', 'n') and args:
            names.add(args[0])
        elif kind == 'w' and len(args) > 1:
            names.add(args[1])
    return names


class _Holding:
    """Wraps the ObjectWriter of Connection._store_objects: tells the
    connection which object is being stored (see Connection)."""

    __slots__ = ('_conn', '_writer')

    def __init__(self, conn, writer):
        self._conn = conn
        self._writer = writer

    def __iter__(self):
        conn = self._conn
        for obj in self._writer:
            conn._xref_holder = obj
            yield obj

    def serialize(self, obj):
        conn = self._conn
        conn._storing = True
        try:
            p = self._writer.serialize(obj)
        finally:
            conn._storing = False
        # Cross-database references ask the connection for the other
        # database's (see Connection.get_connection); weak ones do not.
        if _WEAKREF_MARKS[0] in p or _WEAKREF_MARKS[1] in p:
            for name in _weakref_databases(p):
                if name != conn._db.database_name:
                    conn._reference_stored(name, obj)
                    conn._note_xref(name, obj)
        return p


class _AnyHolder:
    """Stands for "some object of this connection" (see
    Connection.get_connection): its oid is _ANY."""
    _p_oid = _ANY = object()


_ANY_HOLDER = _AnyHolder()
_ANY = _AnyHolder._p_oid


#: How many other databases' connections a connection leaving its group
#: may find again at its next open (see Connection): bounds what an open
#: costs, whatever the connection's cache refers to.
REUNITE_LIMIT = 4


class Connection(_ZConnection):
    """A ZODB connection that never keeps other databases' connections,
    and never lets its cache point into a connection it cannot use.

    Plain ZODB closes the secondary connections of a group together with
    the primary and keeps them attached to it in the primary's pool
    ("pinned"), so that cached objects of the primary that refer to
    objects of another database (cross-database references) find the same
    secondary connection when the primary is reused.  The price: pooled
    connections of ``a`` pin connections and caches of every database they
    ever touched, beyond those databases' pool sizes, and break when one
    of those databases is closed.

    Here each member goes back to its own database's pool alone, and the
    invariant that pinning kept is kept another way.  The connection
    records which of its objects hold references into which other
    database, as its reader resolves them (loading state) and as its
    writer makes them (storing).  When it leaves its group it remembers,
    weakly, the connections those references point into (its partners, at
    most ``REUNITE_LIMIT``).  At its next open, a partner that is idle in
    its own pool is taken back into the new group (as plain ZODB would
    have), so the cache stays valid; the objects referring into any other
    database are ghosts from then on, and load again through the
    connections of the new group.  A partner is never held while idle:
    its database stays evictable, and its pool stays its own.  When a
    database leaves a group (``ConnectionGroup.release``), the members
    that stay ghostify their objects referring into it.
    """

    # The object whose state is being loaded or stored; a cross-database
    # reference resolved meanwhile is held by it.
    _xref_holder = None
    # database name -> oids of this connection's objects whose state
    # refers to objects of that database.
    _xrefs = None
    # database name -> weak reference to the connection of that database
    # that this connection's references point into (set on close).
    _partners = None
    # True while the writer pickles an object's state (see _Holding).
    _storing = False
    # Transaction boundaries this connection has seen (ZODB calls
    # newTransaction at each begin and after each commit or abort): its
    # group compares it to know when a transaction ended, without a
    # synchronizer of its own (see ConnectionGroup.get_connection).
    boundaries = 0

    # -- recording --------------------------------------------------------

    def setstate(self, obj):
        outer = self._xref_holder
        self._xref_holder = obj
        try:
            return super().setstate(obj)
        finally:
            self._xref_holder = outer

    def _store_objects(self, writer, transaction):
        outer = self._xref_holder
        try:
            return super()._store_objects(_Holding(self, writer), transaction)
        finally:
            self._xref_holder = outer

    def get_connection(self, database_name):
        conn = self.connections.get(database_name)
        if conn is None:
            if self.before is None:
                # Into this connection's unit (its group), as ZODB does,
                # but as one member: see open_member.
                conn = open_member(self._db.databases[database_name],
                                   self.transaction_manager,
                                   self.connections)
            else:
                conn = super().get_connection(database_name)
        holder = self._xref_holder
        if conn is not self:
            if holder is not None:
                if self._storing:
                    # The writer resolves a reference from holder into
                    # database_name: the owner may refuse it.
                    self._reference_stored(database_name, holder)
                self._note_xref(database_name, holder)
            elif self.before is None and self._keeps_asked(database_name):
                # Application code asked (a Zope mount point): what it
                # takes from the other database may be kept by any object
                # here (a volatile attribute).  Remembered as a partner
                # like the references; if it cannot be found again,
                # every object is ghostified (see forget_references).
                self._note_xref(database_name, _ANY_HOLDER)
        return conn

    def _keeps_asked(self, database_name):
        # Only the owner's configured databases: a mount point names one
        # for good.  Tenants are many, reached per request (a mount made
        # for the request): as partners they would hold a connection of
        # every tenant this connection ever served, against max_open.
        owner = getattr(self._db, '_owner', None)
        return owner is None or owner._configured(database_name)

    def _reference_stored(self, database_name, holder):
        owner = getattr(self._db, '_owner', None)
        if owner is not None:
            owner._reference_made(self._db.database_name, database_name,
                                  holder)

    def _note_xref(self, database_name, holder):
        xrefs = self._xrefs
        if xrefs is None:
            xrefs = self._xrefs = {}
        oids = xrefs.get(database_name)
        if oids is None:
            oids = xrefs[database_name] = set()
        oids.add(holder._p_oid)

    def refers_to(self, database_name):
        """Do objects of this connection refer to objects of
        database_name (as far as loading and storing them showed)?"""
        return bool(self._xrefs and self._xrefs.get(database_name))

    def forget_references(self, database_name=None):
        """Ghostify this connection's objects that refer to objects of
        database_name (None: of any other database)."""
        xrefs = self._xrefs
        if not xrefs:
            return
        if database_name is None:
            oids = set().union(*xrefs.values())
            xrefs.clear()
        else:
            oids = xrefs.pop(database_name, None)
            if not oids:
                return
        # An object also holding references into a database still in the
        # group is ghostified too; it reloads through that same member.
        if _ANY in oids:
            # Which objects keep what application code took from that
            # database is not known: all of them are ghostified.
            self._cache.minimize()
            oids = [oid for oid in oids if oid is not _ANY]
        self._cache.invalidate(list(oids))

    # -- ordering in two-phase commit -------------------------------------

    def tpc_finish(self, transaction):
        super().tpc_finish(transaction)
        owner = getattr(self._db, '_owner', None)
        if owner is not None and owner.commit_hooks:
            # The transaction id this connection's commit got.
            owner._committed(self._db.database_name,
                             self._storage.lastTransaction())

    def sortKey(self):
        key = super().sortKey()
        owner = getattr(self._db, '_owner', None)
        if owner is not None and \
                self._db.database_name in owner.commit_last:
            # '\x7f' sorts after the keys of every storage ZODB knows
            # (file names, addresses, dsns): finished last.
            return '\x7f' + key
        return key

    # -- a database gone elsewhere ----------------------------------------

    def newTransaction(self, transaction, sync=True):
        if transaction is not None:
            self.boundaries += 1
        try:
            # (Not super(): this runs at every boundary and every open.)
            _ZConnection.newTransaction(self, transaction, sync)
        except Exception as e:
            # At a transaction boundary (transaction given: not open()'s
            # own call, whose failure the opener reports) every member
            # polls its storage; a database dropped by another process
            # (a tenant) fails there with its driver's error, before the
            # group can tell anybody.  Its owner asks the layer above:
            # when the database is gone, there is nothing to poll, and
            # the group drops the member at its next use.
            owner = getattr(self._db, '_owner', None)
            if transaction is None or owner is None or \
                    not owner._member_failed(self, e):
                raise
            log.info("database %r is gone: not polled",
                     self._db.database_name)

    # -- opening: finding the partners again ------------------------------

    def open(self, transaction_manager=None, delegate=True):
        # Never ZODB's delegation: this connection has no attached
        # secondaries of its own; its connections mapping may be its
        # group's (see Collection._open_connection), whose members are
        # open already.
        try:
            _ZConnection.open(self, transaction_manager, False)
        except BaseException:
            _abandon_open(self)
            raise
        partners = self._partners
        if partners:
            self._partners = None
            self._reunite(partners)

    def _reunite(self, partners):
        connections = self.connections
        for name, ref in partners.items():
            partner = ref()
            current = connections.get(name)
            if current is not None and current is partner:
                continue
            if current is None and partner is not None and \
                    _reclaim(partner):
                try:
                    open_into(partner, self.transaction_manager,
                              connections)
                    continue
                except Exception:
                    # (A server gone, say.)  The new group reaches the
                    # database later, through its own means.
                    log.warning("reopening the connection to %r failed",
                                name, exc_info=True)
            self.forget_references(name)

    # -- closing ------------------------------------------------------------

    def close(self, primary=True):
        if primary and len(self.connections) > 1:
            # Check every member first, so that a refusal closes nothing.
            for c in self.connections.values():
                if not c._needs_to_join:
                    raise ConnectionStateError(
                        f"cannot close the connection: its connection to"
                        f" database {c._db.database_name!r} is joined to a"
                        f" transaction (commit or abort first)")
            close_unit(self.connections, first=self)
            return
        if self._needs_to_join:
            # (When joined, ZODB's close() below refuses.)
            self._leave(self.connections if primary else {})
        super().close(primary)

    def _leave(self, unit):
        # Going back to the pool alone.  What the cache refers to in other
        # databases belongs to the connections of unit: remember them, to
        # be found again at the next open if they are idle then; forget
        # (ghostify) what refers to any other connection.
        xrefs = self._xrefs
        partners = None
        if xrefs:
            for name in list(xrefs):
                partner = unit.get(name)
                if partner is not None and partner is not self and \
                        partner.before is None and \
                        (partners is None or len(partners) < REUNITE_LIMIT):
                    if partners is None:
                        partners = {}
                    partners[name] = weakref.ref(partner)
                else:
                    self.forget_references(name)
        self._partners = partners


def close_unit(connections, first=None):
    """Close the connections of one group (sharing the mapping
    connections, none joined to a transaction), each into its own
    database's pool; first (a member) first."""
    if len(connections) == 1:
        # The common case (a request on one database), without the rest.
        [(name, conn)] = connections.items()
        if conn._xrefs:
            conn._leave(connections)
        else:
            conn._partners = None
        conn.connections = {name: conn}
        connections.clear()
        _ZConnection.close(conn)
        return
    members = list(connections.items())
    if first is not None:
        members.sort(key=lambda item: item[1] is not first)
    for name, conn in members:
        if conn._xrefs:
            conn._leave(connections)
        else:
            conn._partners = None
    for name, conn in members:
        # Detached first, so that each member goes back to its own
        # database's pool alone (plain ZODB would keep the others attached
        # to the first one closed).
        conn.connections = {name: conn}
    # The group (if any) lists none of them any more: plain ZODB code that
    # closes one member closes the group's connections, not just some.
    connections.clear()
    for name, conn in members:
        try:
            _ZConnection.close(conn)
        except Exception:
            log.exception("closing the connection to %r failed", name)


def take_connection(db, valid=None):
    """A connection of db taken from its pool, or a new one (as ZODB's
    DB.open makes it), not opened yet; it counts as in use.  valid: a
    callable valid(db) asked under the pool's lock; when it says no, None
    is returned and nothing taken."""
    with db._lock:
        if valid is not None and not valid(db):
            return None
        conn = db.pool.pop()
        if conn is None:
            db.pool.push(db.klass(db, db._cache_size, None,
                                  db._cache_size_bytes))
            conn = db.pool.pop()
        return conn


def _abandon_open(conn):
    # ZODB's open joins the transaction manager and polls the storage
    # (newTransaction), in an order that depends on whether a transaction
    # is active; a poll that fails (a server gone) leaves the connection
    # half open: out of the pool for good, maybe still a synchronizer of
    # the manager (whose next begin() would poll it and fail again), and
    # DB.close() fails on it (unregisterSynch from a manager it never
    # joined: KeyError) before closing the storage.  Back to its pool,
    # joined to no manager.  (Not through close(): its callbacks would
    # count a connection handed out that never was.)
    tm = conn.transaction_manager
    if tm is not None:
        try:
            tm.unregisterSynch(conn)
        except KeyError:
            pass   # the poll failed before it joined
    conn.transaction_manager = None
    if conn.opened is not None:
        conn._db._returnToPool(conn)


def open_into(conn, transaction_manager, connections):
    """Open conn (taken from its pool) as a member of the group whose
    members share the mapping connections.  On failure conn goes back to
    its pool and the mapping is as it was."""
    name = conn._db.database_name
    connections[name] = conn
    conn.connections = connections
    try:
        conn.open(transaction_manager)
    except BaseException:
        if connections.get(name) is conn:
            del connections[name]
        conn.connections = {name: conn}
        if conn.opened is not None:
            # (glue.Connection.open puts itself back: see _abandon_open.)
            _abandon_open(conn)
        raise
    return conn


def open_member(db, transaction_manager, connections):
    """A connection of db, opened as a member of the group whose members
    share the mapping connections (plain ZODB's get_connection, for a
    database of a collection or adopted by one)."""
    owner = getattr(db, '_owner', None)
    if owner is not None:
        return owner._open_connection(db.database_name, transaction_manager,
                                      connections)
    return open_into(take_connection(db), transaction_manager, connections)


def _reclaim(conn):
    """Take conn out of its database's pool, if it is idle there: True if
    it was (it then counts as in use).  Through the database's owner when
    it has one, which checks that the database is still the open one."""
    db = conn._db
    owner = getattr(db, '_owner', None)
    if owner is not None:
        return owner._reclaim(conn)
    return pop_specific(db, conn)


def pop_specific(db, conn, valid=None):
    """Pop conn from db's pool of available connections; False if it is
    not there (in use, discarded, or the database closed), or if
    valid(db), asked under the pool's lock, says no."""
    with db._lock:
        if valid is not None and not valid(db):
            return False
        available = db.pool.available
        for i, (_, c) in enumerate(available):
            if c is conn:
                del available[i]
                return True
    return False


class DB(ZODB.DB):
    """A ``ZODB.DB`` that belongs to an owner (a collection).

    ``open()`` keeps working on a database the owner has evicted (it
    forwards to the reopened one), and ``close()`` removes the name from
    the owner instead of leaving a dead database in ``databases``.

    The owner provides ``commit_last`` (a container of names),
    ``_pin_db(db) -> (token, db)``, ``_unpin(token)``, ``_close_db(db)``
    and ``_connection_returned(db)``.
    """

    klass = Connection
    _owner = None
    _entry = None

    def open(self, transaction_manager=None, at=None, before=None):
        owner = self._owner
        if owner is None:
            # Still inside ZODB.DB.__init__ (its root check), or detached.
            return ZODB.DB.open(self, transaction_manager, at, before)
        token, db = owner._pin_db(self)
        try:
            return ZODB.DB.open(db, transaction_manager, at, before)
        finally:
            owner._unpin(token)

    def close(self):
        owner = self._owner
        if owner is None:
            return ZODB.DB.close(self)
        owner._close_db(self)

    def really_close(self):
        """Close the database itself (the owner's part of close())."""
        close_database(self)

    def _returnToPool(self, connection):
        ZODB.DB._returnToPool(self, connection)
        owner = self._owner
        if owner is not None:
            owner._connection_returned(self)


#: The setters of ZODB.DB whose values a collection keeps for a
#: database's next openings (see Collection._setting_made): what an
#: application or a framework (zope.app.appsetup's activity monitor) sets
#: on a database survives its eviction.
KEPT_SETTINGS = (
    'setActivityMonitor', 'setCacheSize', 'setCacheSizeBytes',
    'setHistoricalCacheSize', 'setHistoricalCacheSizeBytes',
    'setPoolSize', 'setHistoricalPoolSize', 'setHistoricalTimeout')


def _kept_setter(name):
    plain = getattr(ZODB.DB, name)

    def setter(self, value):
        plain(self, value)
        owner = self._owner
        if owner is not None:
            owner._setting_made(self, name, value)
    setter.__name__ = setter.__qualname__ = name
    setter.__doc__ = plain.__doc__
    return setter


for _name in KEPT_SETTINGS:
    setattr(DB, _name, _kept_setter(_name))
del _name


def apply_settings(db, settings):
    """Apply kept settings (name -> value, see KEPT_SETTINGS) to db, a
    database just opened, without recording them again."""
    for name, value in settings.items():
        getattr(ZODB.DB, name)(db, value)


def after_close(db, callback):
    """Call callback() after a plain ``ZODB.DB``'s close() (its own
    close() replaces itself with a no-op, so this runs once)."""
    close = db.close

    def closing():
        close()
        callback()
    db.close = closing


def adopt(db):
    """Make a plain ``ZODB.DB`` (one built with ``databases=`` a
    collection's mapping) open connections that keep cross-database
    references right when they return to their pools alone.  Called as
    the database registers its name, before it opens any connection."""
    db.klass = Connection


def last_transaction(conn):
    """The id of the last transaction conn's view of its storage has
    (``Connection._storage``: RelStorage's per-connection view, polled at
    the connection's transaction start)."""
    return conn._storage.lastTransaction()


def make_root(storage):
    """Commit the root object (oid 0, an empty PersistentMapping) to
    storage, a new one without it, as ``ZODB.DB`` does when it opens such
    a storage: a transaction of its own, with the same description and
    the same pickle.  ``ZODB.DB`` then finds the root and commits
    nothing.  Through the storage API (tpc_begin, store, tpc_vote,
    tpc_finish): a FileStorage flushes its file to disk (fsync) in
    tpc_finish, before this returns, as in ZODB.DB's commit.  Returns
    whether the root was made (False: the storage has one)."""
    from persistent.mapping import PersistentMapping
    from ZODB.Connection import TransactionMetaData
    from ZODB.POSException import POSKeyError
    from ZODB.serialize import ObjectWriter
    from ZODB.utils import z64
    try:
        storage.load(z64)
        return False
    except POSKeyError:
        pass
    root = PersistentMapping()
    data = ObjectWriter().serialize(root)
    txn = TransactionMetaData(description='initial database creation')
    storage.tpc_begin(txn)
    try:
        storage.store(z64, z64, data, '', txn)
        storage.tpc_vote(txn)
    except BaseException:
        storage.tpc_abort(txn)
        raise
    storage.tpc_finish(txn)
    return True


def filestorage_committed_length(storage):
    """How many bytes of a FileStorage's file hold committed transactions.

    FileStorage appends whole transactions and moves ``_pos`` past one only
    once it is written (under ``_lock``): everything before it is a
    consistent state, whatever commits meanwhile."""
    with storage._lock:
        return storage._pos


def close_database(db):
    """Close a ZODB database whose connections are idle.

    A FileStorage rewrites its whole index file on close, which costs in
    proportion to its objects, even when nothing was written since it
    opened (an evicted database that was only read).  When the index file
    already describes the data up to its end (the position it starts with
    equals ``FileStorage._pos``), that rewrite is skipped.  The index file
    is read where FileStorage.close() saves its index, after it closed
    its other files: looking at it earlier would hold one descriptor more
    than an open FileStorage does."""
    storage = db.storage
    from ZODB.FileStorage import FileStorage
    if isinstance(storage, FileStorage) and not storage._is_read_only:
        save = storage._save_index

        def save_if_stale():
            if not _index_is_current(storage):
                save()
        storage._save_index = save_if_stale
    ZODB.DB.close(db)


def _index_is_current(storage):
    try:
        with open(storage.__name__ + '.index', 'rb') as f:
            # fsIndex.save pickles the position first, then the index.
            pos = PersistentUnpickler(None, None, f).load()
    except Exception:
        return False
    return isinstance(pos, int) and pos == storage._pos
