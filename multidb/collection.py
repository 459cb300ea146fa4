"""The collection: named ZODB databases sharing one ``databases`` mapping.

See :class:`multidb.interfaces.ICollection`.
"""
import collections
import errno
import gc
import inspect
import logging
import os
import threading
import time
import traceback
import weakref
from typing import TYPE_CHECKING
from typing import Any
from typing import Callable
from typing import ContextManager
from typing import Dict
from typing import Iterable
from typing import Iterator
from typing import List
from typing import Optional
from typing import TypeVar

import transaction
import zc.lockfile
import ZODB
from ZODB.DemoStorage import DemoStorage
from ZODB.MappingStorage import MappingStorage
from zope.interface import implementer

from multidb import glue

from multidb.errors import CollectionClosed
from multidb.errors import DatabaseInUse
from multidb.errors import DatabaseLocked
from multidb.errors import DuplicateName
from multidb.errors import FileLimitReached
from multidb.errors import GroupExists
from multidb.errors import InvalidName
from multidb.errors import NotConfigured
from multidb.errors import TooManyOpen
from multidb.errors import UnknownDatabase
from multidb.group import ConnectionGroup
from multidb.handles import DatabaseHandle
from multidb.interfaces import ICollection
from multidb.interfaces import ITenants
from multidb.retry import AttemptWithBackoff

if TYPE_CHECKING:  # pragma: no cover
    from multidb.health import DatabaseHealth

_T = TypeVar('_T')

try:
    import resource
except ImportError:  # pragma: no cover (not POSIX)
    resource = None

log = logging.getLogger(__name__)

#: File descriptors held by one open FileStorage (data, lock, tmp, index
#: writer); the default ``max_open`` is derived from it.
FDS_PER_DATABASE = 4

# Entry states.  An entry moves CLOSED -> OPENING -> OPEN -> CLOSING ->
# CLOSED; OPENING and CLOSING happen outside the collection's lock, and
# anybody else wanting the entry waits for them to end.
CLOSED = 'closed'
OPENING = 'opening'
OPEN = 'open'
CLOSING = 'closing'

# Storages whose data lives in this process only: closing one loses it,
# so a database on one is never evicted.
_IN_MEMORY = (MappingStorage, DemoStorage)


def _holds_no_files(storage):
    """A storage that uses no file descriptor (a MappingStorage, or a
    DemoStorage over such): it does not count against max_open."""
    if isinstance(storage, MappingStorage):
        return True
    if isinstance(storage, DemoStorage):
        return _holds_no_files(storage.base) and \
            _holds_no_files(storage.changes)
    return False

# The keyword arguments of ZODB.DB that the collection sets itself.
_RESERVED_KWARGS = ('database_name', 'databases')
# The ones it accepts for the database (the rest would go to the storage).
_DB_KWARGS = frozenset(
    p.name for p in inspect.signature(ZODB.DB.__init__).parameters.values()
    if p.kind is p.POSITIONAL_OR_KEYWORD) - {'self', 'storage'}


def default_max_open():
    """The default ``max_open``: three quarters of the soft limit on file
    descriptors, at four per database, leaving a quarter of the limit to
    the rest of the process."""
    soft = 1024
    if resource is not None:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft == resource.RLIM_INFINITY or soft > 1 << 20:
            soft = 1 << 20
    return max(1, soft * 3 // 4 // FDS_PER_DATABASE)


def check_name(name):
    """The collection's own rule: any string, as in ZODB (whose own tests
    name a database ``''``).

    (Tenant names follow a stricter policy, see :mod:`multidb.names`.)
    """
    if not isinstance(name, str):
        raise InvalidName(name, f"a database name must be a str, not"
                                f" {type(name).__name__}")


class _Entry:
    """What the collection knows about one name."""

    # Slots: a process may declare 100,000 of these.
    __slots__ = ('name', 'factory', 'db_kwargs', 'db', 'state', 'pins',
                 'origin', 'evictable', 'counted', 'owner', 'dynamic',
                 'used', 'settings')

    def __init__(self, name, factory, db_kwargs, origin=None, dynamic=False):
        self.name = name
        # None when the database was added with a storage object: it
        # cannot be reopened, so it is never evicted.
        self.factory = factory
        self.db_kwargs = db_kwargs
        self.db = None
        self.state = CLOSED
        # Callers between "got the DB" and "its connection is open": the
        # window in which the database looks idle but must not be evicted.
        self.pins = 0
        # Where the name was declared (a config file and line), for errors.
        self.origin = origin
        # Set when opened: can a reopen bring the same data back?
        self.evictable = False
        # Set when opened: does it count against max_open (hold files)?
        self.counted = True
        # While a database is declared private (a tenant being created),
        # only the declaring thread may open it (its ident); everybody
        # else sees no such database.
        self.owner = None
        # Declared at run time (by a resolver), not configured.
        self.dynamic = dynamic
        # Set by every use, cleared by the eviction scan (see _evict): a
        # use costs no lock and no reordering.
        self.used = False
        # What was set on the database after it opened (its activity
        # monitor, cache and pool sizes: glue.KEPT_SETTINGS), applied
        # again when it is reopened after an eviction; None: nothing.
        self.settings = None

    def serves(self, db):
        # Is db this name's open database?  (Asked under db's pool lock.)
        return self.state is OPEN and self.db is db


def _abort(tm):
    # An abort can fail too (RelStorage polls its lost server after it):
    # the error that made us abort is the one to report.
    try:
        tm.abort()
    except Exception:
        log.warning("aborting the transaction failed", exc_info=True)


def _current(tm):
    # The manager's transaction, or None (an explicit manager whose
    # begin() failed has none).
    try:
        return tm.get()
    except Exception:
        return None


def _group_leaked(description, connections, stack):
    # A tracked group was garbage-collected while open (track_groups).
    log.warning("%s was garbage-collected without being closed, holding"
                " %s; it was made at:\n%s", description,
                sorted(connections) or 'no connection', stack)


class _Databases(collections.abc.MutableMapping):
    """The ``databases`` mapping every database of a collection shares.

    Plain ZODB reads it by name (``Connection.get_connection``, loading a
    cross-database reference): reading a declared name opens it.  Its keys
    are every name, declared or open; ``values()`` and ``items()`` would
    open every database, so prefer the collection's own methods.
    """

    __slots__ = ('_collection',)

    def __init__(self, collection):
        self._collection = collection

    def __getitem__(self, name):
        # Plain ZODB reads it from a connection it holds.
        return self._collection._acquire(name, holding=True).db

    def __contains__(self, name):
        return name in self._collection._entries

    def __iter__(self):
        return iter(list(self._collection._entries))

    def __len__(self):
        return len(self._collection._entries)

    def __setitem__(self, name, db):
        # ZODB.DB(..., databases=c.databases) registers itself here.
        self._collection._register_external(name, db)

    def __delitem__(self, name):
        self._collection.remove(name)

    def __repr__(self):
        return f"<databases of {self._collection!r}>"


class _Transaction:
    """Collection.transaction(): a group in a transaction, committed on
    success, aborted on an exception, closed in both cases.  (A class, not
    a generator: it is on every request's path.)"""

    __slots__ = ('group',)

    def __init__(self, group):
        self.group = group

    def __enter__(self):
        group = self.group
        tm = group.transaction_manager
        try:
            if getattr(tm, 'explicit', False):
                tm.begin()
            elif glue.has_transaction(tm):
                # End a leftover transaction: its changes are not ours to
                # commit.  The new transaction
                # starts as the first connection opens, as in ZODB's own
                # DB.transaction(); begin() would make every connection
                # opened afterwards poll its storage twice.
                tm.abort()
        except BaseException:
            group.close()
            raise
        return group

    def __exit__(self, exc_type, exc, tb):
        group = self.group
        tm = group.transaction_manager
        try:
            if exc_type is not None:
                tm.abort()
                return False
            try:
                tm.commit()
            except BaseException:
                tm.abort()
                raise
        finally:
            group.close()
        return False


@implementer(ICollection)
class Collection:
    """See :class:`multidb.interfaces.ICollection`.

    ``max_open``: the most databases open at once (default: from the
    file-descriptor limit, see :func:`default_max_open`).
    ``open_timeout``: how long opening a database waits for a slot when
    ``max_open`` databases are all in use, before ``TooManyOpen``.
    ``track_groups``: remember where each group was made, and log (a
    warning) a group garbage-collected while still open, with that stack;
    default: whether the environment variable ``MULTIDB_TRACK_GROUPS`` is
    set (not empty, not ``0``).  Off, it costs nothing.
    """

    def __init__(self, *, max_open: Optional[int] = None,
                 open_timeout: float = 30.0,
                 track_groups: Optional[bool] = None) -> None:
        if track_groups is None:
            track_groups = os.environ.get('MULTIDB_TRACK_GROUPS', '') \
                not in ('', '0')
        self.track_groups = bool(track_groups)
        if max_open is None:
            max_open = default_max_open()
        if not isinstance(max_open, int) or max_open < 1:
            raise ValueError(f"max_open must be a positive int, not"
                             f" {max_open!r}")
        self.max_open = max_open
        self.open_timeout = open_timeout
        # One plain lock guards the maps below; nothing slow runs under it
        # (opening and closing storages happen outside it), except
        # remove(), which closes under it so the name cannot be re-added
        # while its storage is still locked.  A request's hot path (a
        # pooled connection of an open database) does not take it: it
        # takes the database's own pool lock, as ZODB's DB.open does, and
        # the state changes that would race with it (an eviction or
        # removal claiming the database) happen under that lock too.
        self._cond = threading.Condition(threading.Lock())
        self._waiters = 0
        self._entries = {}                      # name -> _Entry
        self._open = collections.OrderedDict()  # LRU first
        self._opening = 0
        self._closing = 0
        self._uncounted = 0  # open databases holding no files
        self._groups = {}   # transaction manager -> weakref to its group
        self._closed = False
        #: Names of databases whose connections finish last in a two-phase
        #: commit (see ICollection.commit_last).
        self.commit_last = set()
        #: Called for each cross-database reference a commit stores (see
        #: ICollection.reference_checks).
        self.reference_checks = []
        #: Called, without arguments, when close() begins, before the
        #: databases close (see ICollection.closing_hooks).
        self.closing_hooks = []
        #: Called, without arguments, once the collection is closed (see
        #: ICollection.close_hooks).
        self.close_hooks = []
        #: Called with (name, tid) after each commit to a database of the
        #: collection made in this process (see ICollection.commit_hooks).
        self.commit_hooks = []
        # name -> its DatabaseHandle, while somebody holds it.
        self._handles = weakref.WeakValueDictionary()
        self._resolver = None
        self.databases = _Databases(self)
        #: What the collection was loaded from (a
        #: ``multidb.config.Configuration``), None when built in code (see
        #: ICollection.configuration): set by ``multidb.config``, never
        #: read here.
        self.configuration = None

    # -- mapping -----------------------------------------------------------

    def __getitem__(self, name: str) -> ZODB.DB:
        return self._acquire(name).db

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def get(self, name: str, default: Any = None) -> Any:
        """``c[name]``, or default for an unknown name."""
        try:
            return self[name]
        except UnknownDatabase:
            return default

    def is_open(self, name: str) -> bool:
        """Is the database open right now?  (Never opens it.)"""
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownDatabase(name)
        return entry.state is OPEN

    def peek(self, name: str) -> Optional[ZODB.DB]:
        """The database of name if it is open right now, else None: never
        opens, waits or pins (the database may be evicted at once), for
        a quick look at an open database (its storage's last
        transaction)."""
        entry = self._entries.get(name)
        if entry is None or entry.state is not OPEN:
            return None
        return entry.db

    @property
    def closed(self) -> bool:
        """See :attr:`multidb.interfaces.ICollection.closed`."""
        return self._closed

    @property
    def open_count(self) -> int:
        """How many databases count against max_open: open, being opened
        or being closed, except those holding no files (in memory)."""
        return self._used()

    def _used(self):
        return (len(self._open) - self._uncounted + self._opening
                + self._closing)

    def __repr__(self):
        state = 'closed' if self._closed else f'{len(self._open)} open'
        return (f"<multidb.Collection of {len(self._entries)} databases,"
                f" {state}, at {id(self):#x}>")

    # -- declare, add, remove ----------------------------------------------

    def declare(self, name: str, factory: Callable[[], Any], *,
                origin: Optional[str] = None, private: bool = False,
                dynamic: bool = False, **db_kwargs: Any) -> None:
        """See :meth:`multidb.interfaces.ICollection.declare`."""
        check_name(name)
        if not callable(factory):
            raise TypeError(f"the factory of database {name!r} must be a"
                            f" zero-argument callable returning a storage,"
                            f" not {factory!r}")
        entry = _Entry(name, factory, self._check_kwargs(name, db_kwargs),
                       origin, dynamic)
        if private:
            entry.owner = threading.get_ident()
        with self._cond:
            self._check_not_closed()
            self._wait_unsettled(name)
            if name in self._entries:
                raise DuplicateName(name, self._entries[name].origin)
            self._entries[name] = entry

    def add(self, name: str, storage: Any, **db_kwargs: Any) -> ZODB.DB:
        """See :meth:`multidb.interfaces.ICollection.add`."""
        check_name(name)
        factory = storage if callable(storage) else None
        entry = _Entry(name, factory, self._check_kwargs(name, db_kwargs))
        with self._cond:
            self._check_not_closed()
            self._wait_unsettled(name)
            if name in self._entries:
                raise DuplicateName(name, self._entries[name].origin)
            # The name is reserved before anything is opened: a second
            # add() of it fails now, and a factory is never called twice.
            self._entries[name] = entry
            entry.state = OPENING  # others wait while we make room
            try:
                self._make_room(name)
            except BaseException:
                del self._entries[name]
                self._cond.notify_all()
                raise
            self._opening += 1
        return self._finish_open(entry, storage, adding=True).db

    def remove(self, name: str, timeout: float = 0) -> None:
        """See :meth:`multidb.interfaces.ICollection.remove`."""
        self._remove(name, timeout, None)

    def _remove(self, name, timeout, expect):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                entry = self._entries.get(name)
                if entry is None or (expect is not None
                                     and entry is not expect):
                    if expect is not None:
                        return  # the database is already gone
                    raise UnknownDatabase(name)
                if entry.state is OPENING or entry.state is CLOSING:
                    self._wait(0.05)
                    continue
                if entry.state is OPEN:
                    busy = self._claim(entry)
                    if busy:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            raise DatabaseInUse(name, busy)
                        self._wait(min(remaining, 0.05))
                        continue
                    self._drop_open(entry)
                del self._entries[name]
                db, entry.db, entry.state = entry.db, None, CLOSED
                if db is not None:
                    # Under the lock: see __init__.
                    self._really_close(db)
                self._cond.notify_all()
                return

    def publish(self, name: str) -> None:
        """See :meth:`multidb.interfaces.ICollection.publish`."""
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownDatabase(name)
        entry.owner = None

    def _close_db(self, db):
        # db.close() by application code: the name goes, so it can be
        # reused; a database already evicted or removed is left alone.
        # (No lock: remove() closes under it, and plain ZODB databases
        # call back here from their close.)
        entry = self._entries.get(db.database_name)
        if entry is not None and entry.db is db:
            self._remove(entry.name, 0, entry)

    def _register_external(self, name, db):
        # A ZODB.DB built by plain ZODB code with databases=c.databases.
        check_name(name)
        entry = _Entry(name, None, None)
        with self._cond:
            self._check_not_closed()
            if name in self._entries:
                raise DuplicateName(name, self._entries[name].origin)
            entry.db = db
            entry.state = OPEN
            entry.counted = not _holds_no_files(db.storage)
            glue.adopt(db)
            self._entries[name] = entry
            self._add_open(entry)
        # Its close() is plain ZODB's: the name goes with it, as for the
        # collection's own databases.
        glue.after_close(db, lambda: self._forget_external(entry))

    def _forget_external(self, entry):
        # After a plain ZODB.DB closed itself (whatever its connections).
        # Without the lock when called back from remove() or close(),
        # which hold it or cleared the entries already.
        if self._entries.get(entry.name) is not entry:
            return
        with self._cond:
            if self._entries.get(entry.name) is entry:
                del self._entries[entry.name]
                if entry.state is OPEN:
                    self._drop_open(entry)
                entry.state, entry.db = CLOSED, None
                self._cond.notify_all()

    def close(self) -> None:
        """See :meth:`multidb.interfaces.ICollection.close`."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            entries = list(self._entries.values())
            self._entries.clear()
            self._open.clear()
            self._uncounted = 0
            self._groups.clear()
            self._cond.notify_all()
        # New groups are refused from here on; a layer above lets its own
        # work in progress end before the databases close under it.
        for hook in self.closing_hooks:
            try:
                hook()
            except Exception:
                log.exception("a closing hook of %r failed", self)
        for entry in entries:
            db, entry.db = entry.db, None
            if db is not None and entry.state is OPEN:
                entry.state = CLOSED
                try:
                    self._really_close(db)
                except Exception:
                    log.exception("closing database %r failed", entry.name)
        for hook in self.close_hooks:
            try:
                hook()
            except Exception:
                log.exception("a close hook of %r failed", self)

    def __enter__(self) -> 'Collection':
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- the layer above: a name resolver ------------------------------------

    @property
    def resolver(self) -> Any:
        """See :attr:`multidb.interfaces.ICollection.resolver`."""
        return self._resolver

    def set_resolver(self, resolver: Any) -> None:
        """See :meth:`multidb.interfaces.ICollection.set_resolver`."""
        if self._resolver is not None:
            raise ValueError(f"{self!r} has a resolver already:"
                             f" {self._resolver!r}")
        self._resolver = resolver

    @property
    def tenants(self) -> Any:
        """The tenant lifecycle (``multidb.interfaces.ITenants``), when
        the collection's resolver is one: set up by a ``<tenants>``
        configuration section or by constructing
        ``multidb.Tenants(collection, ...)``."""
        if not ITenants.providedBy(self._resolver):
            raise NotConfigured(
                f"{self!r} has no tenants: configure a <tenants> section"
                f" or make a multidb.Tenants for it")
        return self._resolver

    # -- groups -------------------------------------------------------------

    def group(self, transaction_manager: Any = None) -> ConnectionGroup:
        """See :meth:`multidb.interfaces.ICollection.group`."""
        if transaction_manager is None:
            # The calling thread's own manager, as ZODB's DB.open() does,
            # so close() can unregister from another thread.
            transaction_manager = transaction.manager.manager
        if self._closed:
            raise CollectionClosed(self)
        # No lock: a transaction manager belongs to one thread at a time
        # (ZODB's own rule), so no two threads race on one key, and dict
        # operations are atomic.
        groups = self._groups
        ref = groups.get(transaction_manager)
        if ref is not None:
            other = ref()
            if other is not None and not other.closed:
                raise GroupExists(transaction_manager)
        group = ConnectionGroup(self, transaction_manager)
        groups[transaction_manager] = weakref.ref(group)
        if self.track_groups:
            # Not the group itself: the finalizer must not keep it alive.
            stack = group.opened_at = ''.join(traceback.format_stack()[:-1])
            group._leak_finalizer = weakref.finalize(
                group, _group_leaked, repr(group), group.connections, stack)
        return group

    def group_of(self, transaction_manager: Any = None
                 ) -> Optional[ConnectionGroup]:
        """See :meth:`multidb.interfaces.ICollection.group_of`."""
        if transaction_manager is None:
            transaction_manager = transaction.manager.manager
        ref = self._groups.get(transaction_manager)
        group = ref() if ref is not None else None
        if group is None or group.closed:
            return None
        return group

    def connections_in_use(self) -> Dict[str, int]:
        """See :meth:`multidb.interfaces.ICollection.connections_in_use`."""
        counts = {}
        for name, entry in list(self._entries.items()):
            db = entry.db
            if db is not None and entry.state is OPEN:
                counts[name] = glue.connections_in_use(db)
        return counts

    def _forget_group(self, group):
        finalizer = group._leak_finalizer
        if finalizer is not None:
            finalizer.detach()
        tm = group.transaction_manager
        ref = self._groups.get(tm)
        if ref is not None:
            other = ref()
            if other is group or other is None:
                self._groups.pop(tm, None)

    def transaction(self, transaction_manager: Any = None
                    ) -> ContextManager[ConnectionGroup]:
        """See :meth:`multidb.interfaces.ICollection.transaction`."""
        return _Transaction(self.group(transaction_manager))

    def run(self, func: Callable[[ConnectionGroup], _T], *,
            attempts: int = 3, backoff: float = 0.1,
            max_backoff: float = 5.0, retry_on: Iterable[type] = (),
            transaction_manager: Any = None,
            note: Optional[str] = None) -> _T:
        """See :meth:`multidb.interfaces.ICollection.run`."""
        policy = AttemptWithBackoff(attempts, initial=backoff,
                                    maximum=max_backoff)
        for attempt in policy:
            group = self.group(transaction_manager)
            tm = group.transaction_manager
            try:
                try:
                    # (begin() polls whatever its synchronizers are: a
                    # lost server may fail it too.)
                    txn = tm.begin()
                    if note:
                        txn.note(note)
                    result = func(group)
                    tm.commit()
                    return result
                except Exception as e:
                    # Asked before the abort, which forgets the data
                    # managers whose should_retry() may know better
                    # (transaction's own TransactionManager.run does the
                    # same).
                    retry = not policy.last and self._transient(
                        e, _current(tm), group, retry_on)
                    _abort(tm)
                    if not retry:
                        raise
                    log.info("attempt %d of %d failed with %s: retrying",
                             attempt, attempts, type(e).__name__)
                except BaseException:
                    _abort(tm)
                    raise
            finally:
                group.close()

    def _transient(self, error, txn, group, retry_on):
        """Is error worth another attempt?  See ICollection.run."""
        if isinstance(error, tuple(retry_on)):
            return True
        # TransientError, and what the transaction's data managers say
        # (their should_retry).
        if txn is not None and txn.isRetryableError(error):
            return True
        # RelStorage raises its driver's own exceptions for a lost server
        # connection (psycopg2's OperationalError, InterfaceError), and
        # lists them: ask the storages of the group, then of every open
        # database (the error may come from opening one).
        storages = [c.db().storage for c in group.connections.values()]
        with self._cond:
            storages.extend(e.db.storage for e in self._open.values())
        for storage in storages:
            lost = glue.disconnected_exceptions(storage)
            if lost and isinstance(error, lost):
                return True
        return False

    # -- health -------------------------------------------------------------

    def health(self, names: Optional[Iterable[str]] = None, *,
               timeout: Optional[float] = None,
               all: bool = False) -> List['DatabaseHealth']:
        """See :meth:`multidb.interfaces.ICollection.health`."""
        from multidb import health
        if timeout is None:
            timeout = health.DEFAULT_TIMEOUT
        self._check_not_closed()
        resolver = self._resolver
        if names is not None:
            names = list(names)
            for name in names:
                # Never declares a name the collection does not know, but
                # one its resolver knows (a tenant another process
                # created) is known.
                if name not in self._entries and not (
                        resolver is not None and resolver.resolve(name)):
                    raise UnknownDatabase(name)
        else:
            if all and resolver is not None:
                try:
                    resolver.declare_all()
                except Exception:
                    # The resolver's own database's line reports it.
                    log.debug("declaring every name failed", exc_info=True)
            names = [name for name, entry in list(self._entries.items())
                     if entry.owner is None and (all or not entry.dynamic)]
        return health.check_all(self, names, timeout)

    # -- opening, pinning, eviction ----------------------------------------

    @staticmethod
    def _check_kwargs(name, db_kwargs):
        # Checked now, not when the database opens: ZODB.DB would take an
        # unknown keyword for its storage and fail with a bare assertion.
        for key in db_kwargs:
            if key in _RESERVED_KWARGS:
                raise TypeError(f"database {name!r}: {key!r} is set by the"
                                f" collection and cannot be given")
            if key not in _DB_KWARGS:
                raise TypeError(f"database {name!r}: {key!r} is not an"
                                f" argument of ZODB.DB")
        return db_kwargs or None

    def _check_not_closed(self):
        if self._closed:
            raise CollectionClosed(self)

    def _wait(self, timeout):
        # With the lock held.  Waiters are also woken by connections going
        # back to a pool (DB._returnToPool) and by evictions ending.
        self._waiters += 1
        try:
            self._cond.wait(timeout)
        finally:
            self._waiters -= 1

    def _wait_unsettled(self, name):
        entry = self._entries.get(name)
        while entry is not None and entry.state is CLOSING:
            self._wait(0.05)
            entry = self._entries.get(name)

    def _acquire(self, name, pin=False, holding=False):
        """Return the entry of name, open; pinned if asked.

        holding: the caller holds connections already (see _make_room).
        """
        with self._cond:
            entry = self._entries.get(name)
            if entry is not None and entry.state is OPEN and \
                    entry.owner is None:
                entry.used = True
                if pin:
                    entry.pins += 1
                return entry
        return self._acquire_slow(name, pin, holding)

    def _acquire_slow(self, name, pin, holding, retry=True):
        resolver = self._resolver
        if resolver is not None and name not in self._entries:
            resolver.resolve(name)   # declares it, if it exists
        with self._cond:
            while True:
                self._check_not_closed()
                entry = self._entries.get(name)
                if entry is None or (entry.owner is not None and
                                     entry.owner != threading.get_ident()):
                    raise UnknownDatabase(name)
                if entry.state is OPEN:
                    entry.used = True
                    if pin:
                        entry.pins += 1
                    return entry
                if entry.state is CLOSED:
                    self._make_room(name, holding)
                    # _make_room may have let the lock go: look again.
                    if entry.state is CLOSED and \
                            self._entries.get(name) is entry:
                        entry.state = OPENING
                        self._opening += 1
                        break
                    continue
                self._wait(0.05)  # opening or closing elsewhere
        try:
            return self._finish_open(entry, None, pin)
        except Exception as e:
            if self._gone(entry, e, retry):
                return self._acquire_slow(name, pin, holding, retry=False)
            raise

    def _gone(self, entry, error, retry):
        """Opening entry's database failed with error: a dynamic name
        may have gone elsewhere (another process dropped the tenant, and
        its storage with it): the resolver knows, and the caller gets
        UnknownDatabase, not the storage's error.  True: the data behind
        the name was replaced and the name declared again; the caller
        tries once more (when retry)."""
        resolver = self._resolver
        if not entry.dynamic or resolver is None:
            return False
        verdict = resolver.open_failed(entry.name, error)
        if verdict == 'replaced':
            if not retry or self._entries.get(entry.name) is entry:
                return False   # still the old one (in use elsewhere)
            return True
        if verdict:
            raise UnknownDatabase(entry.name, "no longer exists") from error
        return False

    def _finish_open(self, entry, storage, pin=False, adding=False):
        # Outside the lock, with entry OPENING and counted in _opening.
        try:
            made = entry.factory is not None
            if made:
                storage = self._make_storage(entry)
            try:
                db = glue.DB(storage, database_name=entry.name,
                        # Not our mapping: ZODB.DB.__init__ refuses a name
                        # already in it, and ours holds every declared name.
                        databases={},
                        **(entry.db_kwargs or {}))
            except BaseException:
                if made:
                    storage.close()
                raise
        except BaseException:
            with self._cond:
                self._opening -= 1
                entry.state = CLOSED
                if adding and self._entries.get(entry.name) is entry:
                    # A failed add() leaves the collection as it was; a
                    # declared database stays declared, to be retried.
                    del self._entries[entry.name]
                self._cond.notify_all()
            raise
        db.databases = self.databases
        if entry.settings:
            glue.apply_settings(db, entry.settings)
        entry.evictable = made and not isinstance(storage, _IN_MEMORY)
        entry.counted = not _holds_no_files(storage)
        db._entry = entry
        db._owner = self
        with self._cond:
            self._opening -= 1
            self._cond.notify_all()
            if self._closed:
                entry.state = CLOSED
                closed = True
            else:
                closed = False
                entry.db = db
                entry.state = OPEN
                self._add_open(entry)
                if pin:
                    entry.pins += 1
        if closed:
            self._really_close(db)
            raise CollectionClosed(self)
        return entry

    def _make_storage(self, entry):
        # Outside the lock.  Out of file descriptors (other files of the
        # process, a limit lowered after max_open was set): close an idle
        # database and try once more, then say what is wrong.
        for attempt in (1, 2):
            try:
                return entry.factory()
            except zc.lockfile.LockError as e:
                # FileStorage serves one process at a time.
                raise DatabaseLocked(entry.name, str(e)) from None
            except OSError as e:
                if e.errno not in (errno.EMFILE, errno.ENFILE):
                    raise
            # A factory that failed half-way holds descriptors until its
            # garbage is collected (FileStorage keeps its lock file).
            gc.collect()
            if attempt == 2 or not self._shed_one():
                break
        raise FileLimitReached(entry.name, self.open_count, self.max_open)

    def _shed_one(self):
        """Close one idle database now; True if one was closed."""
        with self._cond:
            victims = self._evict(1)
            if victims:
                self._close_evicted(victims)
            return bool(victims)

    def _pin_db(self, db):
        """For DB.open(): pin db, or the reopened database of its name
        when db was evicted."""
        entry = db._entry
        with self._cond:
            if entry.db is db and entry.state is OPEN:
                entry.pins += 1
                entry.used = True
                return entry, db
            if self._entries.get(entry.name) is not entry:
                raise UnknownDatabase(entry.name,
                                      "was removed from the collection")
        entry = self._acquire(entry.name, pin=True)
        return entry, entry.db

    def _open_connection(self, name, transaction_manager, connections,
                         retry=True):
        """Open a connection of name's database as a member of a group
        (whose members share the mapping connections; it is added there).

        The hot path takes no lock of the collection: the database's own
        pool lock (which ZODB's DB.open takes too) covers looking at the
        entry's state and taking a connection, and an eviction or removal
        claims the database under that same lock (see _claim), so a
        database is never closed under a connection taken here.  ZODB's
        DB.open also garbage-collects the caches of idle pooled
        connections on every call; here that happens when a connection
        goes back to the pool (ZODB's repush trims the pool).
        """
        conn = None
        entry = self._entries.get(name)
        if entry is not None and entry.owner is None:
            db = entry.db
            if db is not None and entry.state is OPEN:
                conn = glue.take_connection(db, entry.serves)
                if conn is not None:
                    entry.used = True
        if conn is None:
            entry = self._acquire(name, pin=True,
                                  holding=bool(connections))
            try:
                conn = glue.take_connection(entry.db)
            finally:
                self._unpin(entry)
        try:
            return glue.open_into(conn, transaction_manager, connections)
        except Exception as e:
            # A pooled connection polls its storage as it opens: a tenant
            # dropped (or replaced) by another process fails here.
            if self._gone(entry, e, retry):
                return self._open_connection(name, transaction_manager,
                                             connections, retry=False)
            raise

    def _member_failed(self, conn, error):
        """For glue: conn's storage failed at a transaction boundary; is
        its database gone (a dynamic one its resolver no longer knows)?"""
        db = conn.db()
        entry = self._entries.get(db.database_name)
        resolver = self._resolver
        return (entry is not None and entry.dynamic and entry.db is db and
                resolver is not None and
                resolver.open_failed(db.database_name, error))

    def _setting_made(self, db, name, value):
        """For glue: name(value) (a setter of glue.KEPT_SETTINGS) was
        called on db: kept for the database's next openings, and passed
        on to the open one when db is an evicted predecessor."""
        entry = db._entry
        if entry is None or self._entries.get(entry.name) is not entry:
            return
        settings = entry.settings
        if settings is None:
            settings = entry.settings = {}
        settings[name] = value
        current = entry.db
        if current is not None and current is not db:
            glue.apply_settings(current, {name: value})

    def handle(self, name: str) -> 'DatabaseHandle':
        """See :meth:`multidb.interfaces.ICollection.handle`."""
        if name not in self._entries:
            resolver = self._resolver
            if resolver is None or not resolver.resolve(name):
                raise UnknownDatabase(name)
        handle = self._handles.get(name)
        if handle is None:
            handle = self._handles[name] = DatabaseHandle(self, name)
        return handle

    def _configured(self, name):
        """For glue: is name a database declared by configuration or code
        (not by a resolver at run time, as tenants are)?"""
        entry = self._entries.get(name)
        return entry is not None and not entry.dynamic

    def _committed(self, name, tid):
        """For glue: this process committed tid to database name."""
        for hook in self.commit_hooks:
            try:
                hook(name, tid)
            except Exception:
                # The commit is done: a hook's failure cannot undo it.
                log.exception("a commit hook of %r failed", self)

    def _reference_made(self, source, target, obj):
        """For glue: a commit stores a reference from obj, of database
        source, into database target."""
        for check in self.reference_checks:
            check(source, target, obj)

    def _reclaim(self, conn):
        """For glue: take conn out of its database's pool if it is idle
        there and its database is still the open one of its name."""
        db = conn.db()
        entry = self._entries.get(db.database_name)
        if entry is None or entry.owner is not None:
            return False
        if not glue.pop_specific(db, conn, entry.serves):
            return False
        entry.used = True
        return True

    def _unpin(self, entry):
        with self._cond:
            entry.pins -= 1
            if self._waiters:
                self._cond.notify_all()

    def _connection_returned(self, db):
        # A connection went back to db's pool (glue.DB._returnToPool):
        # wake whoever waits for one (remove(), an opener waiting for a
        # slot).
        if self._waiters:
            with self._cond:
                self._cond.notify_all()

    def _add_open(self, entry):
        # With the lock held.
        entry.used = False
        self._open[entry.name] = entry
        if not entry.counted:
            self._uncounted += 1

    def _drop_open(self, entry):
        # With the lock held.
        del self._open[entry.name]
        if not entry.counted:
            self._uncounted -= 1

    def _claim(self, entry):
        """With the lock held, for an OPEN entry: mark it CLOSING if
        nothing uses it (return 0), else return how many use it.  Under
        the database's pool lock, so that the hot path of
        _open_connection either took its connection before (and the
        database is in use) or sees the new state (and takes the slow
        path)."""
        db = entry.db
        with glue.pool_lock(db):
            busy = entry.pins + glue.connections_in_use(db, locked=True)
            if not busy:
                entry.state = CLOSING
            return busy

    def wait_idle(self, name: str, timeout: float = 0) -> None:
        """See :meth:`multidb.interfaces.ICollection.wait_idle`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                entry = self._entries.get(name)
                if entry is None:
                    raise UnknownDatabase(name)
                if entry.state is not OPEN:
                    return
                busy = entry.pins + glue.connections_in_use(entry.db)
                if not busy:
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DatabaseInUse(name, busy)
                self._wait(min(remaining, 0.05))

    def settle(self, timeout: Optional[float] = None) -> bool:
        """See :meth:`multidb.interfaces.ICollection.settle`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._opening or self._closing:
                if deadline is None:
                    self._wait(0.05)
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._wait(min(0.05, remaining))
            return True

    def _make_room(self, name, holding=False):
        """With the lock held: return once one more database may open.

        ``max_open`` is a hard bound: databases being opened or closed
        count.  When the collection is full, the caller closes the least
        recently used idle database itself (outside the lock: nobody waits
        for a closer thread, and the slot is free before the open that
        needs it).

        When every open database is in use, a caller holding nothing waits
        up to ``open_timeout`` for one to fall idle.  A caller that holds
        connections already (a group with members, plain ZODB's
        get_connection on a member) waits only while databases are being
        opened or closed elsewhere: groups that each hold databases and
        wait for one more would wait for each other.  Both then get
        ``TooManyOpen``, which is transient: ``run()`` closes the group's
        connections and tries again.
        """
        deadline = None
        while True:
            self._check_not_closed()
            used = self._used()
            if used < self.max_open:
                return
            victims = self._evict(used + 1 - self.max_open)
            if victims:
                self._close_evicted(victims)
                continue
            now = time.monotonic()
            if deadline is None:
                deadline = now + self.open_timeout
            if now >= deadline or (holding and not self._opening
                                   and not self._closing):
                raise TooManyOpen(name, self.max_open,
                                  None if holding else self.open_timeout)
            self._wait(min(0.05, deadline - now))

    def _evict(self, count):
        """With the lock held: claim up to count idle databases, least
        recently used first, and return them (CLOSING, counted in
        _closing); the caller closes them with _close_evicted.

        The order is a clock (second chance): a database used since the
        scan last passed it goes to the back of the queue instead.  Uses
        only set a flag, so the hot path never reorders under a lock."""
        victims = []
        spared = []
        for entry in self._open.values():
            if not entry.evictable:
                continue
            if entry.used:
                entry.used = False
                spared.append(entry)
                continue
            if not self._claim(entry):
                victims.append(entry)
                if len(victims) >= count:
                    break
        for entry in spared:
            self._open.move_to_end(entry.name)
        if len(victims) < count:
            # Every database was used since the last scan: the least
            # recently spared ones go first.
            for entry in spared:
                if len(victims) >= count:
                    break
                if entry.state is OPEN and not self._claim(entry):
                    victims.append(entry)
        for entry in victims:
            self._drop_open(entry)
            self._closing += 1
        return victims

    def _close_evicted(self, victims):
        """With the lock held: close databases claimed by _evict, letting
        the lock go meanwhile (closing a storage is slow)."""
        dbs = [entry.db for entry in victims]
        self._cond.release()
        try:
            for entry, db in zip(victims, dbs):
                try:
                    self._really_close(db)
                except Exception:
                    log.exception("closing evicted database %r failed",
                                  entry.name)
        finally:
            self._cond.acquire()
            for entry in victims:
                self._closing -= 1
                if entry.state is CLOSING:
                    entry.db, entry.state = None, CLOSED
            self._cond.notify_all()

    @staticmethod
    def _really_close(db):
        if isinstance(db, glue.DB):
            db.really_close()
        else:
            db.close()   # plain ZODB's: closing twice does nothing
