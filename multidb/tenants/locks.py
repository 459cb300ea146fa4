"""Per-name serialization of the tenant lifecycle.

:class:`NameLocks`, a part of ``multidb.tenants.lifecycle.Tenants``:
``_hold`` serializes the operations on names within the process and,
through the backend's name locks, across processes, and keeps the
collection from re-declaring the names meanwhile; ``_check_lock`` makes
an operation start over when its lock was lost while it ran.
"""
import contextlib
import threading

from transaction.interfaces import TransientError

from multidb.errors import MultiDBError


class _LockLost(TransientError):
    """The lock of an operation was lost (with its server connection) and
    what the operation made changed meanwhile: it starts over."""

    multidb_lost_connection = True


def _says_no_tenant(error):
    # An error from below the tenants: the system's (OSError, not one of
    # multidb's own, which name what they are about), a ZEO server's
    # (ZEO's ServerException: the server's own error, a full disk's among
    # them, by class name and arguments) or PostgreSQL's lack of
    # resources (SQLSTATE class 53: a full disk ...).
    if isinstance(error, OSError):
        return not isinstance(error, MultiDBError)
    if type(error).__name__ == 'ServerException' and \
            type(error).__module__.startswith('ZEO.'):
        return True
    code = getattr(error, 'pgcode', None)
    return isinstance(code, str) and code.startswith('53')


def _name_the_tenants(error, names):
    # A full disk's error names no file, or a file the user never named
    # (or one on a server): say which tenants the operation was working
    # on (once; the CLI prints an error's notes).
    notes = getattr(error, '__notes__', ())
    if not any(note.startswith('tenant ') for note in notes):
        error.add_note('tenant ' + ', '.join(repr(n) for n in names))


class NameLocks:
    """The locks of names (see the module).

    A part of ``Tenants``: it uses ``backend``, ``collection``,
    ``catalog``, ``_lock`` and ``_busy``.
    """

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
                try:
                    yield
                except Exception as e:
                    if _says_no_tenant(e):
                        _name_the_tenants(e, [name for name, _ in slots])
                    raise
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
