"""Connection groups: one per transaction manager.

See :class:`multidb.interfaces.IConnectionGroup`.
"""
import logging
from typing import TYPE_CHECKING
from typing import Any

from ZODB.POSException import ConnectionStateError
from zope.interface import implementer

from multidb.errors import GroupClosed
from multidb.glue import check_not_joined
from multidb.glue import close_unit
from multidb.glue import is_joined
from multidb.interfaces import IConnectionGroup

if TYPE_CHECKING:  # pragma: no cover
    from ZODB.Connection import Connection

log = logging.getLogger(__name__)


# A group refreshed, whose first member is not open yet (see _fresh).
_UNPROBED = ('', None, 0)


@implementer(IConnectionGroup)
class ConnectionGroup:
    """See :class:`multidb.interfaces.IConnectionGroup`.

    Made by :meth:`multidb.Collection.group`.
    """

    # Slots: a group is made and dropped on every request; attribute
    # access on its hot path (get_connection, close) is measurably cheaper.
    __slots__ = ('_collection', 'transaction_manager', 'connections',
                 'closed', '_resolver', '_probe', '_refreshing', 'opened_at',
                 '_leak_finalizer', '__weakref__')

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
        # transaction boundary (INameResolver.refresh).  It knows a
        # boundary passed from one of its members, which ZODB tells of
        # each (glue.Connection.boundaries): no synchronizer of its own to
        # register and unregister with the transaction manager on every
        # request.  _probe: (name, member, its count at the refresh), or
        # None (refresh at the next use).
        self._resolver = collection._resolver
        self._probe = None
        self._refreshing = False
        #: Where the group was opened (a formatted stack), when the
        #: collection tracks groups (``track_groups``); else None.
        self.opened_at = None
        self._leak_finalizer = None

    def get_connection(self, name: str) -> 'Connection':
        """See :meth:`multidb.interfaces.IConnectionGroup.get_connection`.
        """
        resolver = self._resolver
        if resolver is not None:
            # Has the resolver refreshed since the last transaction
            # boundary?  (Inline, as the refresh below: this runs on every
            # request.)
            probe = self._probe
            if probe is not _UNPROBED and not self._refreshing and (
                    probe is None or
                    self.connections.get(probe[0]) is not probe[1] or
                    probe[1].boundaries != probe[2]):
                self._refreshing = True   # refresh() uses the group too
                try:
                    done = resolver.refresh(self, name)
                finally:
                    self._refreshing = False
                probe = None
                if done:
                    # Fresh until a boundary passes: the first member
                    # (now, or the first opened) counts them.
                    probe = _UNPROBED
                    for other, member in self.connections.items():
                        probe = (other, member, member.boundaries)
                        break
                self._probe = probe
        conn = self.connections.get(name)
        if conn is not None:
            return conn
        if self.closed:
            raise GroupClosed(self)
        # Added to self.connections, which it shares with the other
        # members (so plain ZODB's get_connection on any member finds
        # them), with the partners it brings back (see glue.Connection).
        conn = self._collection._open_connection(
            name, self.transaction_manager, self.connections)
        if self._probe is _UNPROBED:
            self._probe = (name, conn, conn.boundaries)
        return conn

    def root(self, name: str) -> Any:
        """See :meth:`multidb.interfaces.IConnectionGroup.root`."""
        return self.get_connection(name).root()

    def release(self, name: str) -> None:
        """See :meth:`multidb.interfaces.IConnectionGroup.release`."""
        conn = self.connections.get(name)
        if conn is None:
            return
        check_not_joined(conn, f"release database {name!r} from the group")
        # The members that stay ghostify their objects referring into the
        # released database (below): refused when one of them has changes
        # it would lose.
        for other, member in self.connections.items():
            if other != name and is_joined(member) and \
                    member.refers_to(name):
                raise ConnectionStateError(
                    f"cannot release database {name!r} from the group: the"
                    f" group's connection to database {other!r} has"
                    f" changes in the current transaction and objects"
                    f" referring to {name!r} (commit or abort first)")
        del self.connections[name]
        conn.connections = {name: conn}
        conn.close()
        # The members that stay must not keep objects that refer to the
        # released connection's objects: they reload through whichever
        # connection the group gets next for that database.
        for other in self.connections.values():
            other.forget_references(name)

    def close(self) -> None:
        """See :meth:`multidb.interfaces.IConnectionGroup.close`."""
        if self.closed:
            return
        members = self.connections
        for conn in members.values():
            check_not_joined(conn, "close the group")
        self.closed = True
        self._probe = None
        try:
            if members:
                # Each member goes back to its own database's pool alone
                # (and the mapping is emptied).
                close_unit(members)
        finally:
            members.clear()
            self._collection._forget_group(self)

    def __enter__(self) -> 'ConnectionGroup':
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None and any(
                is_joined(c) for c in self.connections.values()):
            self.transaction_manager.abort()
        self.close()

    def __repr__(self):
        state = 'closed' if self.closed else sorted(self.connections)
        return f"<multidb.ConnectionGroup {state} at {id(self):#x}>"
