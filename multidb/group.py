"""Connection groups: one per transaction manager.

See :class:`multidb.interfaces.IConnectionGroup`.
"""
import logging

from ZODB.POSException import ConnectionStateError
from zope.interface import implementer

from multidb.errors import GroupClosed
from multidb.interfaces import IConnectionGroup

log = logging.getLogger(__name__)


def _check_not_joined(conn, what):
    # ZODB.Connection keeps _needs_to_join False exactly while it is
    # joined to a transaction (it has changes); close() refuses then.
    if not conn._needs_to_join:
        raise ConnectionStateError(
            f"cannot {what}: its connection to database"
            f" {conn._db.database_name!r} has changes in the current"
            f" transaction (commit or abort first)")


@implementer(IConnectionGroup)
class ConnectionGroup:
    """See :class:`multidb.interfaces.IConnectionGroup`.

    Made by :meth:`multidb.Collection.group`.
    """

    def __init__(self, collection, transaction_manager):
        self._collection = collection
        self.transaction_manager = transaction_manager
        # The members share this very dict as their ``connections``, so
        # plain ZODB's Connection.get_connection() on any member finds the
        # group's members and adds new ones here.
        self.connections = {}
        self.closed = False
        # With tenants, the group checks the catalog at its first use after
        # each transaction boundary (see Tenants.refresh), as a
        # synchronizer of its transaction manager.
        self._tenants = collection._tenants
        self._stale = False
        if self._tenants is not None:
            self._stale = True
            transaction_manager.registerSynch(self)

    def get_connection(self, name):
        """See :meth:`multidb.interfaces.IConnectionGroup.get_connection`.
        """
        if self._stale and name != self._tenants.catalog:
            self._stale = False
            self._tenants.refresh(self)
        conn = self.connections.get(name)
        if conn is not None:
            return conn
        if self.closed:
            raise GroupClosed(self)
        conn = self._collection._open_connection(
            name, self.transaction_manager, bool(self.connections))
        conn.connections = self.connections
        self.connections[name] = conn
        return conn

    def root(self, name):
        """See :meth:`multidb.interfaces.IConnectionGroup.root`."""
        return self.get_connection(name).root()

    def release(self, name):
        """See :meth:`multidb.interfaces.IConnectionGroup.release`."""
        conn = self.connections.get(name)
        if conn is None:
            return
        _check_not_joined(conn, f"release database {name!r} from the group")
        del self.connections[name]
        conn.connections = {name: conn}
        conn.close()

    def close(self):
        """See :meth:`multidb.interfaces.IConnectionGroup.close`."""
        if self.closed:
            return
        members = self.connections
        for conn in members.values():
            _check_not_joined(conn, "close the group")
        self.closed = True
        self.connections = {}
        if self._tenants is not None:
            self.transaction_manager.unregisterSynch(self)
        try:
            for name, conn in members.items():
                # Detached first, so that each member goes back to its own
                # database's pool alone (plain ZODB would keep the others
                # attached to the first one closed).
                conn.connections = {name: conn}
                try:
                    conn.close()
                except Exception:
                    log.exception("closing the connection to %r failed",
                                  name)
        finally:
            members.clear()
            self._collection._forget_group(self)

    # ISynchronizer, registered with the transaction manager when the
    # collection has tenants.

    def beforeCompletion(self, transaction):
        pass

    def afterCompletion(self, transaction):
        self._stale = True

    def newTransaction(self, transaction):
        self._stale = True

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and any(
                not c._needs_to_join for c in self.connections.values()):
            self.transaction_manager.abort()
        self.close()

    def __repr__(self):
        state = 'closed' if self.closed else sorted(self.connections)
        return f"<multidb.ConnectionGroup {state} at {id(self):#x}>"
