"""Stable database handles: what a collection hands to registries that
keep a database object for the life of the process.

See :meth:`multidb.interfaces.ICollection.handle`.

A collection closes idle databases (``max_open``) and reopens them on
use, as new ``ZODB.DB`` objects.  Code that keeps a database object (a
``zope.component`` ``IDatabase`` utility, Zope's database table, a web
framework's registry) would be left with a closed one.  A handle stays:
every use goes to the database open under its name at that moment
(opening it if it was closed), and what is set through it (activity
monitor, cache and pool sizes) is kept for every later opening.
"""
import logging
from typing import Any
from typing import Iterable
from typing import List
from typing import Optional

from ZODB.interfaces import IDatabase
from zope.interface import implementer

log = logging.getLogger(__name__)


@implementer(IDatabase)
class DatabaseHandle:
    """See :meth:`multidb.interfaces.ICollection.handle`.

    Attributes and methods of ``ZODB.DB`` are those of the database open
    under the name when they are used (``handle.open()``,
    ``handle.storage``, ``handle.pack()``, ``handle.setCacheSize(...)``).
    """

    def __init__(self, collection: Any, name: str) -> None:
        # Set through __dict__: the class's own attributes, not forwarded.
        self.__dict__['_collection'] = collection
        self.__dict__['_name'] = name

    @property
    def database_name(self) -> str:
        return self._name

    @database_name.setter
    def database_name(self, name: str) -> None:
        # zope.app.appsetup's multi_database() sets the name it was given.
        if name != self._name:
            raise ValueError(
                f"cannot rename database {self._name!r} of"
                f" {self._collection!r} to {name!r}")

    @property
    def databases(self) -> Any:
        """The collection's mapping (``ICollection.databases``)."""
        return self._collection.databases

    @databases.setter
    def databases(self, mapping: Any) -> None:
        # multi_database() gives every database it opens a new dict of
        # its own, then fills it.  The collection's databases share the
        # collection's mapping, which cross-database references need
        # (and which holds every declared name, opened or not): that one
        # is kept; the caller's dict still lists what it registered.
        if mapping is not self._collection.databases:
            log.debug("database %r keeps the databases mapping of %r",
                      self._name, self._collection)

    def open(self, *args: Any, **kw: Any) -> Any:
        """A connection of the database open now (see ``ZODB.DB.open``)."""
        return self._collection[self._name].open(*args, **kw)

    def close(self) -> None:
        """Remove the name from the collection (as ``db.close()`` of a
        collection's database does); the handle is unusable afterwards."""
        self._collection.remove(self._name)

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith('__'):
            raise AttributeError(attribute)
        return getattr(self._collection[self._name], attribute)

    def __setattr__(self, attribute: str, value: Any) -> None:
        if attribute in type(self).__dict__ or \
                attribute == '__provides__':
            # The properties above; zope.interface's directlyProvides.
            object.__setattr__(self, attribute, value)
            return
        raise AttributeError(
            f"cannot set {attribute!r} on the handle of database"
            f" {self._name!r}: it would be lost when the database is"
            f" reopened (use the database's set... methods)")

    def __repr__(self) -> str:
        return (f"<multidb.DatabaseHandle {self._name!r} of"
                f" {self._collection!r}>")


class HandleFactory:
    """A database factory in the shape of ZODB's configuration factories
    (``name``, ``open()``) whose ``open()`` returns the collection's
    handle of one name: what ``zope.app.appsetup.multi_database`` takes."""

    def __init__(self, collection: Any, name: str) -> None:
        self.collection = collection
        self.name = name

    def open(self, databases: Optional[Any] = None) -> DatabaseHandle:
        return self.collection.handle(self.name)

    def __repr__(self) -> str:
        return f"<multidb.HandleFactory {self.name!r}>"


def handle_factories(collection: Any,
                     names: Optional[Iterable[str]] = None
                     ) -> List[HandleFactory]:
    """One ``HandleFactory`` per name (default: every name the collection
    declares now, in its order)."""
    if names is None:
        names = list(collection)
    return [HandleFactory(collection, name) for name in names]
