"""The tenant lifecycle: the ``Tenants`` class, and its create, clone and
drop.

See ``multidb.interfaces.ITenants``.  ``Tenants`` is assembled here from
one part per concern: the catalog, its records and the declarations of
tenants (``multidb.tenants.catalogio``), the locks of names
(``multidb.tenants.locks``), the copies of a tenant's data: snapshot,
revert, archive, restore (``multidb.tenants.copies``), and maintenance:
expire, repair, relocate (``multidb.tenants.maintenance``).  This module
has the rest: the settings, and create, clone and drop.

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
import datetime
import logging
import os
import threading
from typing import TYPE_CHECKING
from typing import Any
from typing import Callable
from typing import Dict
from typing import Iterable
from typing import Mapping
from typing import Optional
from typing import Union

import transaction
from zope.interface import implementer

from multidb.errors import DropIncomplete
from multidb.errors import ServerUnavailable
from multidb.errors import StorageInTheWay
from multidb.errors import TenantExists
from multidb.files import unlink_if_present
from multidb.inputs import check_labels
from multidb.inputs import resolve_dotted
from multidb.interfaces import INameResolver
from multidb.interfaces import ITenants
from multidb.names import check_tenant_name
from multidb.retry import AttemptWithBackoff
from multidb.retry import lost_connection
from multidb.tenants import archive as _archive
from multidb.tenants.catalog import TenantRecord
from multidb.tenants.catalog import now as _now
from multidb.tenants.catalog import tree as _tree
from multidb.tenants.catalogio import CatalogAccess
from multidb.tenants.catalogio import _committed_anyway
from multidb.tenants.catalogio import _same_tenant
from multidb.tenants.catalogio import _transient
from multidb.tenants.catalogio import attempting
from multidb.tenants.copies import Copies
from multidb.tenants.copies import new_snapshot_id  # noqa: F401 (public)
from multidb.tenants.crashpoints import _crash_test_join
from multidb.tenants.crashpoints import _crashpoint
from multidb.tenants.locks import NameLocks
from multidb.tenants.maintenance import Maintenance
from multidb.tenants.fleet import Fleet
from multidb.tenants.isolation import Isolation
from multidb.tenants.events import Events
from multidb.tenants.maintenance import _expiry
from multidb.tenants.moving import Moving
from multidb.tenants.packing import Packing
from multidb.tenants.stats import Stats

if TYPE_CHECKING:  # pragma: no cover
    from multidb.collection import Collection

log = logging.getLogger(__name__)

EXPIRE_ACTIONS = ('drop', 'archive')

# A progress callback (see ITenants): called with the bytes just copied.
_Progress = Optional[Callable[[int], Any]]
# When a tenant expires (see ITenants.create).
_Expiry = Union[datetime.datetime, datetime.timedelta, float, str, None]
# A tenant's labels: a dict, or an iterable of keys.
_Labels = Union[Mapping[str, str], Iterable[str], None]
# What create runs on a new tenant's root: a callable or its dotted name.
_Init = Union[Callable[[Any], Any], str, None]
# A file or folder path.
_Path = Union[str, 'os.PathLike[str]']


@implementer(ITenants, INameResolver)
class Tenants(CatalogAccess, NameLocks, Copies, Maintenance, Fleet,
              Stats, Packing, Isolation, Events, Moving):
    """See ``multidb.interfaces.ITenants``.

    collection: the collection; catalog: the name of its catalog database;
    backend: an ``IBackend`` (where new tenants go); db_kwargs: ``ZODB.DB``
    arguments for tenant databases; init: a callable ``init(root)`` or a
    dotted name, run on create; expire_action: 'archive' (the default:
    expire writes each expired tenant to an archive file in archive_dir,
    then drops it) or 'drop'; archive_dir: needed only when expire has a
    tenant to archive (``NotConfigured`` then, before anything is
    dropped); in_use_timeout: how long drop, revert and
    restore wait for groups using the tenant to close; archive_checksum:
    'crc32' or 'sha256'; archive_key: the secret that signs archives and
    checks the signature of those restored (bytes or str, at least 16
    bytes; None: the environment variable ``MULTIDB_ARCHIVE_KEY``, read
    at each archive and restore); archive_allow: what the pickles of a
    restored archive may name besides the defaults (see
    ``multidb.tenants.archive.PicklePolicy``); catalog_poll_interval: how
    often (seconds) a catalog whose storage does not push invalidations
    (RelStorage) is polled for changes (see ``refresh``); isolation:
    refuse (``CrossTenantReference``) a commit storing a reference from
    one tenant's database into another's; catalog_notify: a catalog on
    PostgreSQL NOTIFYs its commits (a trigger is installed in its
    database), and the process LISTENs, applying what another process
    did within moments (see ``multidb.tenants.events``); notify_commits:
    with that, tell the other processes of each commit to a tenant
    (their ``subscribe(commits=True)``).
    """

    def __init__(self, collection: 'Collection', *, catalog: str,
                 backend: Any,
                 db_kwargs: Optional[Dict[str, Any]] = None,
                 init: _Init = None, expire_action: str = 'archive',
                 archive_dir: Optional[_Path] = None,
                 in_use_timeout: float = 0,
                 archive_checksum: str = 'crc32',
                 archive_key: Union[bytes, str, None] = None,
                 archive_allow: Iterable[str] = (),
                 catalog_poll_interval: float = 1.0,
                 isolation: bool = True,
                 catalog_notify: bool = True,
                 notify_commits: bool = False) -> None:
        if expire_action not in EXPIRE_ACTIONS:
            raise ValueError(f"expire_action must be one of {EXPIRE_ACTIONS},"
                             f" not {expire_action!r}")
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
        # The transaction to catch up with / a catch-up is running (see
        # _changed_elsewhere).
        self._behind = None
        self._catching_up = False
        self._catcher = None           # the watcher's thread
        # Subscriptions (a tuple, replaced whole: read without the lock),
        # the serial of the last event told, the PostgreSQL listener.
        self._subscribers = ()
        self._event_serial = None
        self._listener = None
        self._commits = []             # (name, tid) for the watcher
        #: LISTEN for the commits of a catalog on PostgreSQL (see
        #: multidb.tenants.events).
        self.catalog_notify = catalog_notify
        #: Tell the other processes (LISTEN/NOTIFY, a catalog on
        #: PostgreSQL) of each commit this process makes to a tenant, for
        #: their commit subscribers.
        self.notify_commits = notify_commits
        if notify_commits:
            collection.commit_hooks.append(self._tenant_committed)
        self._caught_up = threading.Condition(self._lock)
        #: How long a refresh waits for a catch-up in progress before it
        #: reads the catalog itself, in seconds.
        self.catch_up_wait = 1.0
        #: How often refresh() polls a catalog whose storage does not push
        #: invalidations (RelStorage), in seconds.
        self.catalog_poll_interval = catalog_poll_interval
        self._loaded = False
        #: Refuse a commit that makes a reference from one tenant's
        #: database into another's (see multidb.tenants.isolation).
        self.isolation = isolation
        collection.set_resolver(self)
        collection.reference_checks.append(self._check_reference)
        collection.closing_hooks.append(self._end_catch_up)
        collection.close_hooks.append(self._stop_following)
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
                with attempting():
                    return attempt()
            except Exception as e:
                if not _transient(e):
                    raise
                error = e
            try:
                with attempting():
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

    def create(self, name: str, *, expires: _Expiry = None,
               labels: _Labels = None,
               init: _Init = None,
               server: Optional[str] = None) -> TenantRecord:
        """See ``ITenants.create``."""
        check_tenant_name(name, self._reserved())
        when = _now()
        expires = _expiry(expires, when)
        labels = check_labels(labels)
        init = init if init is not None else self.init
        if init is not None:
            init = resolve_dotted(init)
        backend = self.backend
        # One tenant id for every attempt: an attempt whose commit went
        # through although its connection was lost is known as ours.
        if server is None:
            settings = backend.settings_for(name)
        else:
            settings = self._server_set().settings_for(name, server)
        rec = TenantRecord(name=name, kind=backend.kind,
                           settings=settings, created=when,
                           modified=when, expires=expires, labels=labels)
        return self._attempts(
            'create', name, lambda: self._create(rec, init),
            lambda: self._committed(name, rec.settings),
            "the tenant was not created")

    def _create(self, rec, init):
        name, settings, backend = rec.name, rec.settings, self.backend
        with self._hold(name):
            # A catalog transaction of its own, not the one that commits
            # the record below: that one holds the catalog lock, which
            # the making of the storage (prepare: CREATE DATABASE on
            # PostgreSQL) must not hold, and the record must be read
            # before a leftover is cleared.
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
                        self._log_change(g, name)
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
            # Committed: nothing from here on may fail the create.  (No
            # longer a create in progress for refresh, see _publish.)
            self._publish(name)
            _crashpoint('create.committed')
        return rec

    def clone(self, source: str, name: str, *, expires: _Expiry = None,
              labels: _Labels = None,
              progress: _Progress = None) -> TenantRecord:
        """See ``ITenants.clone``."""
        check_tenant_name(name, self._reserved())
        when = _now()
        expires = _expiry(expires, when)
        labels = check_labels(labels) if labels is not None else None
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
                unlink_if_present(tmp)
                self._discard(name, settings)
                raise
            self._declare(rec)
        return rec

    def drop(self, name: str, *,
             archive_to: Optional[_Path] = None,
             progress: _Progress = None) -> TenantRecord:
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
