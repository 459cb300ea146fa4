"""The copies of a tenant's data: snapshots, revert, archives and
restore.

:class:`Copies`, a part of ``multidb.tenants.lifecycle.Tenants``.  Its
operations are run again when they lose a catalog write to another
process or their connection to a server (:func:`_retrying`).
"""
import datetime
import functools
import gc
import logging
import os
import uuid
from typing import Any
from typing import Callable
from typing import List
from typing import Optional
from typing import Union

import transaction
from transaction.interfaces import TransientError

from multidb.errors import CorruptArchive
from multidb.errors import MultiDBError
from multidb.errors import NoSuchSnapshot
from multidb.errors import NoSuchTenant
from multidb.errors import ServerUnavailable
from multidb.errors import TenantExists
from multidb.files import copy_file
from multidb.files import copy_to_new
from multidb.files import move_into_place
from multidb.files import tmp_name
from multidb.files import unlink_if_present
from multidb.names import check_tenant_name
from multidb.retry import lost_connection
from multidb.tenants import archive as _archive
from multidb.tenants.catalog import Snapshot
from multidb.tenants.catalog import TenantRecord
from multidb.tenants.catalog import now as _now
from multidb.tenants.catalogio import _transient
from multidb.tenants.catalogio import attempting
from multidb.tenants.crashpoints import _crashpoint

# One logger for the whole lifecycle, whichever module logs.
log = logging.getLogger('multidb.tenants.lifecycle')

# A progress callback (see ITenants): called with the bytes just copied.
_Progress = Optional[Callable[[int], Any]]
# A file path.
_Path = Union[str, 'os.PathLike[str]']


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
                with attempting():
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


def new_snapshot_id(when: datetime.datetime) -> str:
    # Sortable by time, unique without coordination.
    return when.strftime('%Y%m%dT%H%M%S%fZ') + '-' + uuid.uuid4().hex[:6]


def _unmake(folder, made):
    # A snapshot that failed (a full disk, say) leaves no snapshots folder
    # it made: removed when it is still empty (the name's lock keeps
    # other snapshots of the tenant out meanwhile).
    if made:
        try:
            os.rmdir(folder)
        except OSError:
            pass     # not empty, or gone


class Copies:
    """Snapshots, revert, archives and restore (see the module).

    A part of ``Tenants``: it uses the catalog and declarations of
    ``CatalogAccess``, the name locks of ``NameLocks`` and
    ``_clear_leftover`` of ``Tenants`` (restore makes a tenant as create
    does).
    """

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
            with src:
                return copy_to_new(src, length, dest, progress)
        finally:
            g.close()

    @_retrying
    def snapshot(self, name: str, label: Optional[str] = None, *,
                 progress: _Progress = None) -> str:
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
        folder = os.path.dirname(path)
        made = not os.path.isdir(folder)
        os.makedirs(folder, exist_ok=True)
        tmp = tmp_name(path)
        try:
            if raw is None:
                size = self._dump(rec, tmp, progress)
            else:
                size = copy_file(raw, tmp, progress)
            # The folder too is flushed: the catalog lists the snapshot
            # next, and must never list a file a crash can take back.
            move_into_place(tmp, path)
            # Where the backend keeps it (a snapshot database), before
            # the catalog lists it.
            backend.keep_snapshot(rec.settings, sid, path)
        except BaseException:
            unlink_if_present(tmp)
            try:
                backend.remove_snapshot(rec.settings, sid)
            except Exception:
                log.warning("snapshot %s of %r is left for repair", sid,
                            rec.name, exc_info=True)
            _unmake(folder, made)
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
                backend.remove_snapshot(rec.settings, sid)
                _unmake(folder, made)
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

    def snapshots(self, name: str) -> List[Snapshot]:
        """See ``ITenants.snapshots``."""
        return list(self.get(name).snapshots)

    @_retrying
    def revert(self, name: str, snapshot_id: str, *,
               progress: _Progress = None) -> str:
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
            tmp = backend.tmp_path(rec.settings)
            self._undeclare(name)
            try:
                backend.copy_snapshot(rec.settings, snapshot_id, tmp,
                                      progress)
                _crashpoint('revert.copied')
                backend.load(rec.settings, tmp)
                _crashpoint('revert.loaded')
                with self._catalog(write=True) as (tree, g):
                    current = tree[name]
                    tree[name] = current.replace(modified=_now())
                    # Other processes have the old data open: their next
                    # refresh closes it (see refresh).
                    self._log_change(g, name)
            finally:
                unlink_if_present(tmp)
                self._declare(self.get(name))
        return before.id

    def _check_idle(self, name):
        if name in self.collection:
            self.collection.wait_idle(name, timeout=self.in_use_timeout)

    # -- archives ---------------------------------------------------------

    @property
    def archive_key(self) -> Optional[bytes]:
        """The key that signs archives and checks restored ones, as given
        (bytes), or None: then the environment's ``MULTIDB_ARCHIVE_KEY``,
        if set, at each archive and restore."""
        return self._archive_key

    @archive_key.setter
    def archive_key(self, key: Union[bytes, str, None]) -> None:
        self._archive_key = None if key is None else _archive.check_key(key)

    def _key(self):
        if self._archive_key is not None:
            return self._archive_key
        return _archive.key_from_env()

    def archive(self, name: str, path: _Path, *,
                progress: _Progress = None,
                checksum: Optional[str] = None) -> str:
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
    def restore(self, path: _Path, name: Optional[str] = None, *,
                replace: bool = False, progress: _Progress = None,
                trust_unsigned: bool = False) -> TenantRecord:
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
                unlink_if_present(tmp)
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
                        self._log_change(g, name)
                    else:
                        # Replacing restores the data; the tenant keeps
                        # its own record (labels, expiry, snapshots), so
                        # a crash once the data is in place is the new
                        # state already.
                        rec = current.replace(modified=_now())
                        self._log_change(g, name)   # see revert
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
