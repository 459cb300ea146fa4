"""The errors multidb raises.

There is one base class, :class:`MultiDBError`.  Every subclass also
inherits the built-in exception it means, so code written for plain ZODB
(which raises ``ValueError`` for a duplicate database name and ``KeyError``
for an unknown one) keeps catching what it caught before.  Each error keeps
the offending input as an attribute.
"""
import errno

from transaction.interfaces import TransientError

__all__ = [
    'MultiDBError',
    'FileLimitReached',
    'DatabaseLocked',
    'InvalidName',
    'InvalidInput',
    'DuplicateName',
    'UnknownDatabase',
    'DatabaseInUse',
    'CollectionClosed',
    'GroupClosed',
    'GroupExists',
    'TooManyOpen',
    'TenantExists',
    'NoSuchTenant',
    'NoSuchSnapshot',
    'CorruptArchive',
    'ArchiveExists',
    'NotConfigured',
    'UnsignedArchive',
    'UnsafeArchive',
]


class MultiDBError(Exception):
    """The base of every error raised by multidb."""


class InvalidName(MultiDBError, ValueError):
    """Raised when a database name is not acceptable; nothing was touched."""

    def __init__(self, name, reason):
        self.name = name
        self.reason = reason
        super().__init__(f"invalid database name {name!r}: {reason}")


class InvalidInput(MultiDBError, ValueError):
    """Raised when a value given to multidb is not acceptable: a label, a
    duration, a time, an expiry, a dotted name (the rules are in
    ``multidb.inputs``); nothing was touched.  ``kind`` says what the
    value was meant to be, ``reason`` what is wrong with it."""

    def __init__(self, kind, value, reason):
        self.kind = kind
        self.value = value
        self.reason = reason
        super().__init__(f"bad {kind} {value!r}: {reason}")


class DuplicateName(MultiDBError, ValueError):
    """Raised when a database name is already in the collection.

    Raised by ``add`` and ``declare`` before anything is opened.
    """

    def __init__(self, name, where=None):
        self.name = name
        self.where = where
        msg = f"database {name!r} is already in the collection"
        if where:
            msg += f" ({where})"
        super().__init__(msg)


class UnknownDatabase(MultiDBError, KeyError):
    """Raised when a name is not in the collection (a ``KeyError``)."""

    def __init__(self, name, reason='is not in the collection'):
        self.name = name
        self.reason = reason
        super().__init__(name)

    def __str__(self):
        # KeyError's own __str__ shows only repr(name); say what is wrong.
        return f"database {self.name!r} {self.reason}"


class DatabaseInUse(MultiDBError, RuntimeError):
    """Raised when a database cannot be removed or closed because
    connections to it are open (a group is using it right now).

    Nothing was closed: the database and every group keep working.
    """

    def __init__(self, name, in_use):
        self.name = name
        self.in_use = in_use
        super().__init__(
            f"database {name!r} has {in_use} open connection(s);"
            " close the groups using it first")


class CollectionClosed(MultiDBError, RuntimeError):
    """Raised when a closed collection is used."""

    def __init__(self, collection):
        self.collection = collection
        super().__init__(f"the collection {collection!r} is closed")


class GroupClosed(MultiDBError, RuntimeError):
    """Raised when a closed connection group is used."""

    def __init__(self, group):
        self.group = group
        super().__init__(f"the connection group {group!r} is closed")


class GroupExists(MultiDBError, RuntimeError):
    """Raised when a second group is opened for a transaction manager
    that already has an open group in the same collection.

    One group per transaction manager: two would put two connections to
    the same database into one transaction.
    """

    def __init__(self, transaction_manager):
        self.transaction_manager = transaction_manager
        super().__init__(
            f"a connection group is already open for the transaction"
            f" manager {transaction_manager!r}")


class TooManyOpen(MultiDBError, RuntimeError, TransientError):
    """Raised when a database must be opened, ``max_open`` databases are
    open, and every one of them is in use: for the collection's
    ``open_timeout`` when the caller holds no connection, at once when it
    does (groups that each hold databases and wait for one more would wait
    for each other).  ``timeout`` is None in the second case.

    ``max_open`` is a hard bound.  The error is a
    ``transaction.interfaces.TransientError``: ``Collection.run`` (and
    any retrying transaction runner) closes the group's connections and
    tries again."""

    def __init__(self, name, max_open, timeout):
        self.name = name
        self.max_open = max_open
        self.timeout = timeout
        if timeout is None:
            why = ("are in use, and the caller holds connections already"
                   " (waiting could wait for ever for groups waiting for"
                   " it)")
        else:
            why = f"stayed in use for {timeout} s"
        super().__init__(
            f"cannot open database {name!r}: all {max_open} open databases"
            f" (max_open) {why}")


class DatabaseLocked(MultiDBError, RuntimeError):
    """Raised when a database cannot open because another process holds
    its storage (a FileStorage's lock file): one process at a time may
    use a FileStorage; processes that share a database reach it through a
    ZEO server or keep it on PostgreSQL (RelStorage)."""

    def __init__(self, name, detail):
        self.name = name
        self.detail = detail
        super().__init__(
            f"database {name!r} is in use by another process ({detail}):"
            f" a FileStorage serves one process; to share it, serve it"
            f" with ZEO or keep it on PostgreSQL (RelStorage)")


class FileLimitReached(MultiDBError, OSError):
    """Raised when a database cannot open because the process is out of
    file descriptors, and no idle database could be closed to free some:
    the limit (``ulimit -n``) is too low for ``max_open`` and whatever
    else the process has open."""

    def __init__(self, name, open_count, max_open):
        self.name = name
        self.open_count = open_count
        self.max_open = max_open
        super().__init__(
            errno.EMFILE,
            f"cannot open database {name!r}: the process is out of file"
            f" descriptors with {open_count} databases open"
            f" (max_open={max_open}); raise the limit (ulimit -n) or lower"
            f" max_open")

    def __str__(self):
        return self.args[1]


class TenantExists(MultiDBError, ValueError):
    """Raised when a tenant is created (cloned, restored) under a name that
    a tenant already has."""

    def __init__(self, name):
        self.name = name
        super().__init__(f"tenant {name!r} already exists")


class NoSuchTenant(MultiDBError, KeyError):
    """Raised when a tenant name has no record in the catalog."""

    def __init__(self, name):
        self.name = name
        super().__init__(name)

    def __str__(self):
        return f"no tenant {self.name!r} in the catalog"


class NoSuchSnapshot(MultiDBError, KeyError):
    """Raised when a tenant has no snapshot with the given id."""

    def __init__(self, name, snapshot_id):
        self.name = name
        self.snapshot_id = snapshot_id
        super().__init__(snapshot_id)

    def __str__(self):
        return f"tenant {self.name!r} has no snapshot {self.snapshot_id!r}"


class CorruptArchive(MultiDBError, ValueError):
    """Raised when an archive is not a multidb archive, is truncated, or
    fails its checksum.  Nothing was restored."""

    def __init__(self, path, reason):
        self.path = path
        self.reason = reason
        super().__init__(f"archive {str(path)!r} is unusable: {reason}")


class ArchiveExists(MultiDBError, FileExistsError):
    """Raised when an archive would overwrite an existing file."""

    def __init__(self, path):
        self.path = path
        super().__init__(f"archive {str(path)!r} already exists")


class NotConfigured(MultiDBError, RuntimeError):
    """Raised when tenants are used on a collection that has no tenant
    template (no ``<tenants>`` section), or when an operation needs a
    setting that is not configured (``expire`` archiving without an
    ``archive-dir``); nothing was changed."""

    def __init__(self, what):
        self.what = what
        super().__init__(what)


class UnsignedArchive(CorruptArchive):
    """Raised when an archive's origin cannot be checked: it carries no
    signature, or no archive key is configured to check the one it
    carries, and the caller did not say it trusts the archive
    (``trust_unsigned``).  Nothing was restored."""


class UnsafeArchive(CorruptArchive):
    """Raised when an archive's data would run code that no policy
    allows: a pickle names a global (a function or class, which
    unpickling calls) outside the allowed modules.  ``oid`` is the record
    (None for a transaction's extension) and ``name`` the global's
    ``module.name``.  Nothing was restored, and nothing was unpickled."""

    def __init__(self, path, reason, oid=None, name=None):
        self.oid = oid
        self.name = name
        super().__init__(path, reason)


class MissingStorage(MultiDBError, FileNotFoundError):
    """Raised when a tenant has a catalog record but its storage is gone
    (a file deleted, a database dropped outside multidb).  Nothing was
    created: only ``create`` and ``restore`` make storage, so missing
    data never looks like an empty tenant."""

    def __init__(self, name, where, detail='does not exist'):
        self.name = name
        self.where = where
        self.detail = detail
        super().__init__(
            errno.ENOENT,
            f"tenant {name!r} is in the catalog but its storage is missing:"
            f" {where} {detail}; nothing was created (restore it from an"
            f" archive or a snapshot, point the record at it with"
            f" 'multidb relocate' if it moved, or drop the tenant)")

    def __str__(self):
        return self.args[1]


class StorageInTheWay(MultiDBError, FileExistsError):
    """Raised when a new tenant's storage would take the place of storage
    that multidb cannot prove is a leftover of its own (it carries no
    tenant id, or the id of a recorded tenant): it is not deleted."""

    def __init__(self, name, where, detail):
        self.name = name
        self.where = where
        self.detail = detail
        super().__init__(
            errno.EEXIST,
            f"cannot make tenant {name!r}: {where} exists and {detail};"
            f" multidb deletes only leftovers it can prove are its own:"
            f" move it away (or delete it) first")

    def __str__(self):
        return self.args[1]


class NotWritable(MultiDBError, PermissionError):
    """Raised before anything is changed when a tenant operation would
    have to write (or delete) where it may not: a read-only folder, a
    database the role may not drop."""

    def __init__(self, name, where, reason):
        self.name = name
        self.where = where
        self.reason = reason
        super().__init__(
            errno.EACCES,
            f"tenant {name!r}: {where} is not writable ({reason}); nothing"
            f" was changed")

    def __str__(self):
        return self.args[1]


class DropIncomplete(MultiDBError, OSError):
    """Raised by ``drop`` when the tenant is dropped (its record is
    removed: the tenant no longer exists) but some of its storage could
    not be deleted: a partial success.  ``left`` names what is left, which
    ``repair`` deletes; ``record`` is the dropped tenant's record."""

    def __init__(self, record, left, error):
        self.record = record
        self.name = record.name
        self.left = left
        self.error = error
        super().__init__(
            getattr(error, 'errno', None) or errno.EIO,
            f"tenant {record.name!r} is dropped (its record is removed),"
            f" but its storage was not deleted ({error}); left for"
            f" 'multidb repair': {left}")

    def __str__(self):
        return self.args[1]


class ServerUnavailable(MultiDBError, ConnectionError):
    """Raised when a tenant operation lost its connection to a database
    server at every attempt.  ``outcome`` says what state the tenant is
    in (checked after the last attempt, when the server allowed it)."""

    def __init__(self, operation, name, attempts, error, outcome):
        self.operation = operation
        self.name = name
        self.attempts = attempts
        self.error = error
        self.outcome = outcome
        detail = ' '.join(str(error).split()) or type(error).__name__
        super().__init__(
            f"{operation} of tenant {name!r} failed: the database server"
            f" connection was lost at each of {attempts} attempt(s) (last:"
            f" {type(error).__name__}: {detail}); {outcome}")


class UnreadableRecord(MultiDBError, TypeError):
    """Raised when the catalog holds a record this version of multidb
    cannot read (ZODB made a Broken object of it: say, a newer version
    wrote it).  Nothing was declared from it."""

    def __init__(self, catalog, found):
        self.catalog = catalog
        self.found = found
        super().__init__(
            f"the catalog {catalog!r} holds a record this version of"
            f" multidb cannot read ({found}): was it written by a newer"
            f" version?")
