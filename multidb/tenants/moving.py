"""Moving a tenant to another server: ``Tenants.move``.

:class:`Moving`, a part of ``multidb.tenants.lifecycle.Tenants``.  The
backend must be a server set (``<server>`` sections: see
``multidb.backends.servers``); the storage's steps are
``multidb.backends.pgmove.Move``, and this module adds the catalog's: the
record's switch, under the name's lock, and what the other processes see.

Writes to the tenant pause only for the last step: from the fence
(writes to the source fail with a serialization failure, which
``Collection.run``, the WSGI middleware and pyramid_tm retry) to the
record's switch, which every process sharing the catalog applies at once
(LISTEN/NOTIFY, ZEO invalidations) or at its next transaction (polling):
a retried write then goes to the target.
"""
import logging
import time
from typing import Any
from typing import Dict

from multidb.errors import DatabaseInUse
from multidb.errors import InvalidInput
from multidb.errors import NoSuchTenant
from multidb.errors import NotConfigured
from multidb.errors import StorageInTheWay
from multidb.interfaces import IServerSet
from multidb.tenants.catalog import now as _now
from multidb.tenants.catalogio import _same_tenant
from multidb.tenants.crashpoints import _crashpoint

log = logging.getLogger('multidb.tenants.lifecycle')


class Moving:
    """``move`` (see the module).  A part of ``Tenants``."""

    #: Catch-ups before the fence: each copies what was committed during
    #: the one before, so the last one (behind the fence) is short.
    move_catch_ups = 3
    #: How long the source's database waits, after the switch, for the
    #: processes connected to it to leave before it is dropped (their
    #: sessions are ended then), in seconds.
    move_grace = 10.0

    def servers(self):
        """The tenant servers' status (see ``ServerSet.status``); on a
        backend of one server, NotConfigured."""
        return self._server_set().status()

    def _server_set(self):
        backend = self.backend
        if not IServerSet.providedBy(backend):
            raise NotConfigured(
                "this collection's tenants are on one server: moving them"
                " needs <server> sections in <tenants> (PostgreSQL)")
        return backend

    def move(self, name: str, to: str) -> Dict[str, Any]:
        """Move tenant name to the server to; returns what was done:
        name, from, to (servers), bytes (the target's size), pause (the
        seconds during which writes were refused), catch_up (transactions
        copied behind the fence), seconds (the whole move)."""
        backend = self._server_set()
        backend.check_server(to)
        started = time.monotonic()
        with self._hold(name):
            rec = self.get(name)
            source = rec.settings
            here = backend.server_of(source)
            if here == to:
                raise InvalidInput('server', to,
                                   f"tenant {name!r} is on it already")
            if backend.same_cluster(here, to):
                # The target "copy" would be the tenant's own database,
                # and the source's drop would delete it.
                raise InvalidInput('server', to,
                                   f"is the PostgreSQL server of {here!r}"
                                   f" (where tenant {name!r} is), its dsn"
                                   f" spelled another way")
            # What a move that died left: the fence comes down (the
            # record names this database: it holds every write).
            backend.unfence(source)
            target = backend.settings_on(source, to)
            self._clear_move_leftover(name, target)
            mover = backend.mover(source, target)
            switched = False
            try:
                mover.prepare()
                _crashpoint('move.prepared')
                mover.copy()
                for _ in range(self.move_catch_ups):
                    if not mover.catch_up():
                        break
                _crashpoint('move.copied')
                fenced_at = time.monotonic()
                mover.fence()
                _crashpoint('move.fenced')
                behind = mover.finish()
                _crashpoint('move.renamed')
                self._check_lock(name, source)
                new = self._switch(rec, target)
                switched = True
                pause = time.monotonic() - fenced_at
            except BaseException:
                if not switched and self._committed_at(name, target):
                    switched = True   # the commit went through after all
                if not switched:
                    try:
                        mover.abort()
                    except Exception:
                        log.warning("move of tenant %r: undoing it failed;"
                                    " run multidb repair", name,
                                    exc_info=True)
                    raise
                pause = time.monotonic() - fenced_at
                behind = None
            _crashpoint('move.committed')
            # Every process reopens it from the target (this one now, or
            # at its next refresh when a group of its own holds it).
            try:
                self._undeclare(name, timeout=0)
            except DatabaseInUse:
                pass
            else:
                self._redeclare(new)
            try:
                mover.committed()
                dropped = mover.drop_source(self.move_grace)
            except Exception as e:
                dropped = False
                log.warning("tenant %r is moved to server %r, but its old"
                            " database %s is left for repair: %s", name, to,
                            backend.describe(source), e)
        log.info("tenant %r moved from server %r to %r: writes paused"
                 " %.3f s", name, here, to, pause)
        return {'name': name, 'from': here, 'to': to,
                'bytes': backend.size(target), 'pause': pause,
                'catch_up': behind, 'source_dropped': dropped,
                'seconds': time.monotonic() - started}

    def _switch(self, rec, target):
        """Commit the record's switch to target (the same tenant, its
        snapshots and labels kept)."""
        modified = _now()

        def update(tree, g):
            current = tree.get(rec.name)
            if current is None or not _same_tenant(current.settings,
                                                   rec.settings) or \
                    not self.backend.same_place(current.settings,
                                                rec.settings):
                raise NoSuchTenant(rec.name)
            new = current.replace(settings=dict(target), modified=modified)
            tree[rec.name] = new
            self._log_change(g, rec.name)
            return new
        return self._write(update)

    def _committed_at(self, name, target):
        try:
            current = self._record(name)
        except Exception:
            return False
        return current is not None and _same_tenant(
            current.settings, target) and \
            self.backend.same_place(current.settings, target)

    def _clear_move_leftover(self, name, target):
        """The target's place: a copy of this very tenant (its id; the
        record names another place) that a move which died, or a move
        away whose old database was not dropped, left there goes; its
        snapshots are the tenant's and stay.  Anything else there is in
        the way (another tenant's id may be a live record's: nothing is
        deleted that is not provably this tenant's)."""
        backend = self.backend
        where = backend.describe(target)
        found = backend.identify(target)
        if found is None:
            if backend.exists(target):
                raise StorageInTheWay(name, where, "carries no tenant id")
            return
        if found != target.get('id'):
            raise StorageInTheWay(name, where,
                                  f"carries another tenant id ({found}):"
                                  f" see multidb repair")
        if backend.is_locked(target):
            raise StorageInTheWay(name, where, "is held open by a process")
        log.warning("dropping the copy of tenant %r left at %s", name, where)
        backend.drop_copy(target)
