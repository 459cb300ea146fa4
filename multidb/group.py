"""Connection groups: one per transaction manager.

See :class:`multidb.interfaces.IConnectionGroup`.
"""
import logging

from zope.interface import implementer

from multidb.errors import GroupClosed
from multidb.glue import check_not_joined
from multidb.glue import is_joined
from multidb.interfaces import IConnectionGroup

log = logging.getLogger(__name__)


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
        # With a resolver (tenants), the group lets it bring the
        # collection up to date at the group's first use after each
        # transaction boundary (INameResolver.refresh), as a synchronizer
        # of its transaction manager.
        self._resolver = collection.resolver
        self._stale = False
        if self._resolver is not None:
            self._stale = True
            transaction_manager.registerSynch(self)

    def get_connection(self, name):
        """See :meth:`multidb.interfaces.IConnectionGroup.get_connection`.
        """
        if self._stale:
            self._stale = False   # before: refresh() uses the group too
            if not self._resolver.refresh(self, name):
                self._stale = True
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
        check_not_joined(conn, f"release database {name!r} from the group")
        del self.connections[name]
        conn.connections = {name: conn}
        conn.close()
        # The members that stay must not keep objects that refer to the
        # released connection's objects: they reload through whichever
        # connection the group gets next for that database.
        for other in self.connections.values():
            other.forget_references(name)

    def close(self):
        """See :meth:`multidb.interfaces.IConnectionGroup.close`."""
        if self.closed:
            return
        members = self.connections
        for conn in members.values():
            check_not_joined(conn, "close the group")
        self.closed = True
        self.connections = {}
        if self._resolver is not None:
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
    # collection has a resolver.

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
                is_joined(c) for c in self.connections.values()):
            self.transaction_manager.abort()
        self.close()

    def __repr__(self):
        state = 'closed' if self.closed else sorted(self.connections)
        return f"<multidb.ConnectionGroup {state} at {id(self):#x}>"
