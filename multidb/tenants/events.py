"""Following the catalog as it changes: applying what other processes
do at once, and telling the application.

A process learns of the catalog's changes at a request's refresh
(``CatalogAccess.refresh``).  Where the catalog's storage can tell of a
commit as it happens, a watcher thread per ``Tenants`` applies it
without waiting for a request: a tenant dropped elsewhere is closed here
within moments, one replaced is reopened on use.

- ZEO: the server pushes invalidations; the changed catalog objects are
  prefetched into the client cache (``glue.prefetch_changes``) and the
  watcher woken.
- PostgreSQL (RelStorage): a trigger NOTIFYs each commit, and a listener
  (``multidb.backends.pgnotify``) wakes the watcher.
- Any storage: this process's own lifecycle operations wake it after
  their catalog commit; with subscribers and a storage that tells
  nothing, it polls every ``catalog_poll_interval``.

Applications subscribe (``subscribe(callback, names)``) to tenant events:
``TenantEvent(name, kind, serial, record, tid)``, kind ``'created'``,
``'changed'`` (reverted, restored, relocated: its data was replaced or
moved) or ``'dropped'``, read from the catalog's change log in serial
order, one per name and wake-up (the state after the change: a tenant
created and dropped between two looks is one ``'dropped'``).  A watcher
too far behind the log gets one ``TenantEvent(None, 'resync', serial,
None)``: events were missed; read the catalog.  Never a silent gap.

``subscribe(..., commits=True)`` adds an event per commit to a tenant's
database, ``TenantEvent(name, 'committed', None, None, tid)``: this
process's commits, and, with the catalog on PostgreSQL, those of the
processes that send theirs (``notify_commits``, the ``<tenants>`` key
``notify-commits``: one NOTIFY per tenant commit).  Those messages are in
no log: when the listener was away, commit subscribers get one
``'commits-missed'`` event.
"""
import logging
import threading
import time
from typing import Any
from typing import Callable
from typing import Iterable
from typing import NamedTuple
from typing import Optional

import transaction

from multidb.glue import last_transaction
from multidb.glue import postgresql_dsn
from multidb.glue import prefetch_changes
from multidb.tenants.catalog import TenantRecord
from multidb.tenants.catalog import changes as _changes
from multidb.tenants.catalog import serial as _serial
from multidb.tenants.catalog import tree as _tree

log = logging.getLogger(__name__)

# _behind: poll the catalog now (PostgreSQL told, or this process
# committed), rather than wait for a ZEO transaction id.
_POLL = object()
# The kinds of commit events (subscribe(commits=True)).
_COMMIT_KINDS = frozenset(['committed', 'commits-missed'])
# The messages processes send each other about commits (pgnotify).
_COMMIT_MESSAGE = 'commit '


class TenantEvent(NamedTuple):
    """A change of the catalog (see ``ITenants.subscribe``)."""

    #: The tenant's name (None for 'resync').
    name: Optional[str]
    #: 'created', 'changed', 'dropped', or 'resync' (events were
    #: missed); with ``subscribe(commits=True)`` also 'committed' (a
    #: transaction committed to the tenant's database) and
    #: 'commits-missed' (the listener was away: commits may be missing).
    kind: str
    #: The serial of the change in the catalog's change log (None for
    #: commit events).
    serial: Optional[int]
    #: The tenant's record after the change (None when dropped).
    record: Optional[TenantRecord]
    #: The id of the catalog's last transaction when the change was read
    #: (the change's own when it came alone), or of the tenant's commit;
    #: its time is ``persistent.TimeStamp.TimeStamp(tid).timeTime()``.
    tid: Optional[bytes] = None


class Subscription:
    """What ``subscribe`` returns: ``close()`` ends it (idempotent)."""

    def __init__(self, tenants: Any, callback: Callable[[TenantEvent], Any],
                 names: Optional[Iterable[str]],
                 commits: bool = False) -> None:
        self._tenants = tenants
        self.callback = callback
        self.names = None if names is None else frozenset(names)
        self.commits = commits
        self.closed = False

    def wants(self, event: TenantEvent) -> bool:
        if event.kind in _COMMIT_KINDS and not self.commits:
            return False
        return self.names is None or event.name is None or \
            event.name in self.names

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._tenants._unsubscribe(self)

    def __enter__(self) -> 'Subscription':
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _kind(record):
    if record is None:
        return 'dropped'
    # A revert, restore or relocate stamps 'modified'; a create sets both.
    return 'created' if record.modified == record.created else 'changed'


class Events:
    """A mixin of ``Tenants``: the watcher and the subscriptions.  Needs
    ``collection``, ``catalog``, ``catalog_poll_interval``, ``refresh``,
    ``_lock``, ``_caught_up`` (a Condition on ``_lock``), ``_behind``,
    ``_catching_up``, ``_catcher``, ``_catalog_db``, ``_tid_seen``,
    ``_pushes``, ``_polled_at``, ``catch_up_wait``, ``_subscribers``,
    ``_event_serial`` and ``_listener``."""

    # -- subscriptions --------------------------------------------------

    def subscribe(self, callback: Callable[[TenantEvent], Any],
                  names: Optional[Iterable[str]] = None, *,
                  commits: bool = False) -> Subscription:
        """See ``ITenants.subscribe``."""
        sub = Subscription(self, callback, names, commits)
        if commits:
            with self._lock:
                if self._tenant_committed not in \
                        self.collection.commit_hooks:
                    self.collection.commit_hooks.append(
                        self._tenant_committed)
        tm = transaction.TransactionManager()
        # The events start from the catalog as it is now (read in a
        # transaction of its own); the refresh makes the catalog's
        # database known, and starts following it where it can tell.
        with self.collection.group(tm) as group:
            try:
                self.refresh(group, '')
                now = _serial(group.get_connection(self.catalog).root())
            finally:
                tm.abort()
        with self._lock:
            if not self._subscribers or self._event_serial is None:
                self._event_serial = now
            self._subscribers = self._subscribers + (sub,)
            self._start_watcher()
            self._caught_up.notify_all()   # its poll interval changed
        return sub

    def _unsubscribe(self, sub):
        with self._lock:
            self._subscribers = tuple(
                s for s in self._subscribers if s is not sub)

    # -- following the catalog's database -------------------------------

    def _follow(self, db):
        """Called (with _lock held) when db is the catalog's database
        newly seen: be told of its commits, where its storage can."""
        if prefetch_changes(db, self._changed_elsewhere):
            self._start_watcher()
            return
        dsn = postgresql_dsn(db.storage)
        if dsn is not None and self.catalog_notify:
            from multidb.backends.pgnotify import Listener
            if self._listener is not None:
                self._listener.close(timeout=0)
            self._listener = Listener(
                dsn, self._poll_now, name=self.catalog,
                on_message=self._message, on_reconnect=self._reconnected)
            self._start_watcher()

    # -- commits of tenants ----------------------------------------------

    def _tenant_committed(self, name, tid):
        # A commit hook of the collection (in the committing thread, the
        # commit done): queued for the watcher, and told to the other
        # processes when they listen.
        if name not in self._declared:
            return      # not a tenant
        self._queue_commit(name, tid)
        listener = self._listener
        if listener is not None and self.notify_commits:
            listener.send(f'{_COMMIT_MESSAGE}{name} {tid.hex()}')

    def _message(self, payload):
        # Another process's message (the listener's thread).
        if payload.startswith(_COMMIT_MESSAGE):
            try:
                name, tid = payload[len(_COMMIT_MESSAGE):].split()
                tid = bytes.fromhex(tid)
            except ValueError:
                log.warning("an unreadable message on the catalog's"
                            " channel: %r", payload[:100])
                return
            self._queue_commit(name, tid)

    def _reconnected(self):
        # Messages sent while the listener was away are lost: commit
        # subscribers are told, never left with a silent gap.
        self._queue_commit(None, None)

    def _queue_commit(self, name, tid):
        if not any(s.commits for s in self._subscribers):
            return
        with self._lock:
            self._commits.append((name, tid))
            self._caught_up.notify_all()

    def _end_catch_up(self):
        # The collection is closing (it refuses new groups, so no new
        # catch-up starts): one in progress is reading the catalog; it
        # ends before the catalog's database closes under it, where ZODB
        # would log every load it refuses.  Bounded, and never from the
        # watcher itself (a subscriber closing the collection).
        if threading.current_thread() is self._catcher:
            return
        with self._caught_up:
            self._caught_up.notify_all()
            if not self._caught_up.wait_for(lambda: not self._catching_up,
                                            timeout=self.catch_up_wait):
                log.warning("closing %r while catching up with catalog %r",
                            self.collection, self.catalog)

    def _stop_following(self):
        # The collection closed: the watcher ends now, not at its next
        # timeout, and the listener with it.
        with self._lock:
            listener, self._listener = self._listener, None
            self._caught_up.notify_all()
        if listener is not None:
            listener.close()

    def _start_watcher(self):
        # With _lock held.
        if self._catcher is None:
            self._catcher = threading.Thread(
                target=self._watch, daemon=True,
                name=f'multidb catalog {self.catalog!r}')
            self._catcher.start()

    def _poll_now(self):
        # PostgreSQL told of a commit, or this process made one.
        with self._lock:
            self._behind = _POLL
            self._caught_up.notify_all()

    def _changed_elsewhere(self, tid):
        # Another process committed tid to the catalog: ZEO's I/O thread
        # tells, and must not wait (nor start a thread: Thread.start()
        # waits for the new thread), so it only wakes the watcher.
        with self._lock:
            if self._behind is not _POLL:
                self._behind = tid
            self._caught_up.notify_all()

    def _wait_for_catch_up(self, db):
        # The watcher is applying what changed: waiting for it costs less
        # than doing the same work beside it.  True when it brought the
        # collection up to date with db's last transaction.
        with self._caught_up:
            self._caught_up.wait_for(lambda: not self._catching_up,
                                     timeout=self.catch_up_wait)
            return (db is self._catalog_db and
                    db.storage.lastTransaction() == self._tid_seen)

    def _wake_timeout(self):
        # With _lock held.  Subscribers of a catalog that tells nothing:
        # polled every catalog_poll_interval; else the timeout only lets
        # the watcher notice that the collection was closed.
        if self._subscribers and not self._pushes and self._listener is None:
            return max(self.catalog_poll_interval, 0.05)
        return 5.0

    def _watch(self):
        """The watcher: applies the catalog's changes as it is told of
        them (see the module's docstring), so that requests find the
        collection current without reading the catalog themselves, and
        tells subscribers.  A request that comes while it works waits for
        it (see refresh).  It ends with the collection."""
        while True:
            with self._lock:
                self._catching_up = False
                self._caught_up.notify_all()
                timed_out = not self._caught_up.wait_for(
                    lambda: self._behind is not None or self._commits or
                    self.collection.closed, timeout=self._wake_timeout())
                if self.collection.closed:
                    self._catcher = None
                    if self._listener is not None:
                        self._listener.close(timeout=0)
                        self._listener = None
                    return
                behind, db = self._behind, self._catalog_db
                commits, self._commits = self._commits, []
                if timed_out and self._subscribers and not self._pushes:
                    behind = _POLL
                if behind is None:
                    if not commits:
                        continue
                else:
                    self._behind = None
                    if behind is _POLL:
                        # refresh() reads the catalog, whatever the
                        # interval.
                        self._polled_at = float('-inf')
            # Subscribers are called with _catching_up off: a request
            # waits for the catalog's catch-up, never for a callback.
            if commits:
                self._tell([
                    TenantEvent(name, 'committed', None, None, tid)
                    if name is not None else
                    TenantEvent(None, 'commits-missed', None, None, None)
                    for name, tid in commits])
            if behind is None:
                continue
            with self._lock:
                self._catching_up = True
            if isinstance(behind, bytes) and db is not None:
                # ZEO tells of tid just before its lastTransaction() says
                # it: a refresh reading the catalog sooner would see the
                # state before tid.  (Microseconds; bounded in case the
                # connection drops meanwhile.)
                deadline = time.monotonic() + 30
                while db.storage.lastTransaction() < behind and \
                        not self.collection.closed and \
                        time.monotonic() < deadline:
                    time.sleep(0.0001)
            self._apply_and_tell()

    def _apply_and_tell(self):
        tm = transaction.TransactionManager()
        events = ()
        try:
            with self.collection.group(tm) as group:
                try:
                    self.refresh(group, '')
                    if self._subscribers:
                        events = self._read_events(group)
                finally:
                    tm.abort()
        except Exception:
            # Left to the next request's refresh, and the next wake-up.
            log.debug("catching up with catalog %r failed", self.catalog,
                      exc_info=True)
            return
        finally:
            with self._lock:
                self._catching_up = False
                self._caught_up.notify_all()
        self._tell(events)

    def _tell(self, events):
        for event in events:
            for sub in self._subscribers:
                if sub.closed or not sub.wants(event):
                    continue
                try:
                    sub.callback(event)
                except Exception:
                    log.exception("a subscriber of tenant events failed"
                                  " on %r", event)

    def _read_events(self, group):
        conn = group.get_connection(self.catalog)
        root = conn.root()
        tid = last_transaction(conn)
        now = _serial(root)
        last = self._event_serial
        self._event_serial = now
        if last is None or now <= last:
            return ()
        changed = _changes(root, last, now)
        if changed is None:
            return (TenantEvent(None, 'resync', now, None, tid),)
        tree = _tree(root)
        events = []
        for name, number in sorted(changed.items(), key=lambda i: i[1]):
            record = tree.get(name) if tree is not None else None
            events.append(
                TenantEvent(name, _kind(record), number, record, tid))
        return events
