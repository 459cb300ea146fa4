"""The contracts of multidb.

Implementations live in private modules; their docstrings point back here.
"""
from zope.interface import Attribute
from zope.interface import Interface


class ICollection(Interface):
    """A collection of named ZODB databases sharing one ``databases``
    mapping.

    Names are declared (a storage factory, opened on first use) or added
    (opened now).  Every database of the collection gets the same
    ``databases`` mapping, so plain ZODB code (``db.databases``,
    ``Connection.get_connection``, cross-database references) works
    unchanged, and opens declared databases as a side effect.

    The collection reads like a mapping of name to ``ZODB.DB``:
    ``name in c``, ``len(c)``, ``iter(c)`` cover declared and open names;
    ``c[name]`` opens a declared database.
    """

    databases = Attribute(
        "The mapping handed as ``databases=`` to every ZODB.DB of the "
        "collection.  Reading a declared name opens that database.")

    max_open = Attribute(
        "The most databases open at once; the least recently used idle "
        "one is closed (in the background) to make room.")

    def add(name, storage, **db_kwargs):
        """Open a database now under ``name`` and return the ``ZODB.DB``.

        ``storage`` is a storage object or a zero-argument callable that
        returns one.  The name is checked under the collection's lock
        before anything is opened: a duplicate raises ``DuplicateName``
        and the factory is never called.  A database added with a storage
        object (not a factory) cannot be reopened, so it is never evicted.
        """

    def declare(name, factory, **db_kwargs):
        """Declare a database to be opened on first use.

        ``factory`` is a zero-argument callable returning a storage.
        Nothing is opened.  Raises ``DuplicateName`` for a known name.
        """

    def remove(name, timeout=0):
        """Close the database if open and forget the name.

        Raises ``UnknownDatabase`` for an unknown name.  When connections
        to the database are open (a group is using it), waits up to
        ``timeout`` seconds for them to close, then raises
        ``DatabaseInUse`` having changed nothing.  Pooled connections of
        other databases are never touched.
        """

    def group(transaction_manager=None):
        """Return a new ``IConnectionGroup``; nothing is opened yet.

        ``None`` means the calling thread's default transaction manager.
        Raises ``GroupExists`` when a group is already open for the
        transaction manager.
        """

    def transaction(transaction_manager=None):
        """A context manager: a new group in a new transaction, committed
        on success, aborted on an exception, closed in both cases."""

    def close():
        """Close every open database and forget every name.  Idempotent.
        """

    def __getitem__(name):
        """Return the ``ZODB.DB`` for name, opening it if declared.

        Raises ``UnknownDatabase`` (a ``KeyError``) for an unknown name.
        """

    def __contains__(name):
        """Is the name declared or open?"""

    def __len__():
        """The number of names, declared and open."""

    def __iter__():
        """Iterate over the names, declared and open."""


class IConnectionGroup(Interface):
    """Connections to databases of one collection, sharing one
    transaction manager, so that a commit is one two-phase commit across
    every database the group touched.

    ``Connection.get_connection(name)`` on any member returns the group's
    member for that name.  On close, every member goes back to its own
    database's pool.
    """

    transaction_manager = Attribute("The transaction manager of every member")

    connections = Attribute(
        "The mapping of database name to the member ``Connection``; it is "
        "the very ``connections`` mapping the members share.")

    def get_connection(name):
        """Return the member connection for ``name``, opening it (and the
        database, if declared) on first use.

        Raises ``UnknownDatabase`` for an unknown name and ``GroupClosed``
        on a closed group.
        """

    def root(name):
        """Return the root object of database ``name``."""

    def release(name):
        """Send the member for ``name`` back to its database's pool.

        Members take part in every transaction boundary of the group
        (each one polls for invalidations), so a long-lived group that has
        touched many databases can let go of the ones it no longer needs.
        Raises ``ConnectionStateError`` when the member has changes in the
        current transaction.
        """

    def close():
        """Return every member to its own database's pool.  Idempotent.

        Raises ``ZODB.POSException.ConnectionStateError`` naming the
        database, and closes nothing, when a member has uncommitted
        changes.
        """
