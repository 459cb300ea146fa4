"""The errors multidb raises.

There is one base class, :class:`MultiDBError`.  Every subclass also
inherits the built-in exception it means, so code written for plain ZODB
(which raises ``ValueError`` for a duplicate database name and ``KeyError``
for an unknown one) keeps catching what it caught before.  Each error keeps
the offending input as an attribute.
"""
import errno
import os

from transaction.interfaces import TransientError
from ZODB.POSException import InvalidObjectReference

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
    'TenantBehind',
    'RunExpired',
    'CrossTenantReference',
]


class MultiDBError(Exception):
    """The base of every error raised by multidb.

    Most subclasses only declare what they keep and say: ``fields``, the
    attributes their arguments are kept as (in the order of the
    arguments; a class attribute of the same name is the default), and
    ``message``, a ``str.format`` template over them.  A subclass whose
    message needs more writes its own ``__init__``."""

    fields = ()
    message = None
    # For the KeyError ones: the field that is the key (``args[0]``, as
    # for any KeyError), str() being the message (KeyError's own str()
    # shows only the key's repr).
    key = None
    # For the OSError ones: their errno (``args`` are errno and the
    # message, as for any OSError; str() is the message).
    code = None

    def __init__(self, *args, **kw):
        if self.message is None:
            super().__init__(*args)
            return
        if len(args) > len(self.fields):
            raise TypeError(f"{type(self).__name__} takes the arguments"
                            f" {self.fields}, not {args!r}")
        values = dict(zip(self.fields, args), **kw)
        for name in self.fields:
            setattr(self, name, values[name] if name in values
                    else getattr(type(self), name))
        text = self.message.format_map(
            {name: _shown(getattr(self, name)) for name in self.fields})
        self._text = text
        if self.key is not None:
            super().__init__(getattr(self, self.key))
        elif self.code is not None:
            super().__init__(self.code, text)
        else:
            super().__init__(text)

    def __str__(self):
        if self.message is not None:
            return self._text
        return super().__str__()


def _shown(value):
    # A path shows as its text, whatever its type (str or pathlib).
    return os.fspath(value) if isinstance(value, os.PathLike) else value


class InvalidName(MultiDBError, ValueError):
    """Raised when a database name is not acceptable; nothing was touched."""

    fields = ('name', 'reason')
    message = "invalid database name {name!r}: {reason}"


class InvalidInput(MultiDBError, ValueError):
    """Raised when a value given to multidb is not acceptable: a label, a
    duration, a time, an expiry, a dotted name (the rules are in
    ``multidb.inputs``); nothing was touched.  ``kind`` says what the
    value was meant to be, ``reason`` what is wrong with it."""

    fields = ('kind', 'value', 'reason')
    message = "bad {kind} {value!r}: {reason}"


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

    fields = ('name', 'reason')
    key = 'name'
    reason = 'is not in the collection'
    message = "database {name!r} {reason}"


class DatabaseInUse(MultiDBError, RuntimeError):
    """Raised when a database cannot be removed or closed because
    connections to it are open (a group is using it right now).

    Nothing was closed: the database and every group keep working.
    """

    fields = ('name', 'in_use')
    message = ("database {name!r} has {in_use} open connection(s); close the"
               " groups using it first")


class CollectionClosed(MultiDBError, RuntimeError):
    """Raised when a closed collection is used."""

    fields = ('collection',)
    message = "the collection {collection!r} is closed"


class GroupClosed(MultiDBError, RuntimeError):
    """Raised when a closed connection group is used."""

    fields = ('group',)
    message = "the connection group {group!r} is closed"


class GroupExists(MultiDBError, RuntimeError):
    """Raised when a second group is opened for a transaction manager
    that already has an open group in the same collection.

    One group per transaction manager: two would put two connections to
    the same database into one transaction.
    """

    fields = ('transaction_manager',)
    message = ("a connection group is already open for the transaction"
               " manager {transaction_manager!r}")


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

    fields = ('name', 'detail')
    message = ("database {name!r} is in use by another process ({detail}): a"
               " FileStorage serves one process; to share it, serve it with"
               " ZEO or keep it on PostgreSQL (RelStorage)")


class FileLimitReached(MultiDBError, OSError):
    """Raised when a database cannot open because the process is out of
    file descriptors, and no idle database could be closed to free some:
    the limit (``ulimit -n``) is too low for ``max_open`` and whatever
    else the process has open."""

    fields = ('name', 'open_count', 'max_open')
    code = errno.EMFILE
    message = ("cannot open database {name!r}: the process is out of file"
               " descriptors with {open_count} databases open"
               " (max_open={max_open}); raise the limit (ulimit -n) or"
               " lower max_open")


class TenantExists(MultiDBError, ValueError):
    """Raised when a tenant is created (cloned, restored) under a name that
    a tenant already has."""

    fields = ('name',)
    message = "tenant {name!r} already exists"


class NoSuchTenant(MultiDBError, KeyError):
    """Raised when a tenant name has no record in the catalog."""

    fields = ('name',)
    key = 'name'
    message = "no tenant {name!r} in the catalog"


class NoSuchSnapshot(MultiDBError, KeyError):
    """Raised when a tenant has no snapshot with the given id."""

    fields = ('name', 'snapshot_id')
    key = 'snapshot_id'
    message = "tenant {name!r} has no snapshot {snapshot_id!r}"


class CorruptArchive(MultiDBError, ValueError):
    """Raised when an archive is not a multidb archive, is truncated, or
    fails its checksum.  Nothing was restored."""

    fields = ('path', 'reason')
    message = "archive {path!r} is unusable: {reason}"


class ArchiveExists(MultiDBError, FileExistsError):
    """Raised when an archive would overwrite an existing file."""

    fields = ('path',)
    message = "archive {path!r} already exists"


class NotConfigured(MultiDBError, RuntimeError):
    """Raised when tenants are used on a collection that has no tenant
    template (no ``<tenants>`` section), or when an operation needs a
    setting that is not configured (``expire`` archiving without an
    ``archive-dir``); nothing was changed."""

    fields = ('what',)
    message = "{what}"


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

    fields = ('path', 'reason', 'oid', 'name')
    oid = name = None


class MissingStorage(MultiDBError, FileNotFoundError):
    """Raised when a tenant has a catalog record but its storage is gone
    (a file deleted, a database dropped outside multidb).  Nothing was
    created: only ``create`` and ``restore`` make storage, so missing
    data never looks like an empty tenant."""

    fields = ('name', 'where', 'detail')
    detail = 'does not exist'
    code = errno.ENOENT
    message = ("tenant {name!r} is in the catalog but its storage is"
               " missing: {where} {detail}; nothing was created (restore it"
               " from an archive or a snapshot, point the record at it with"
               " 'multidb relocate' if it moved, or drop the tenant)")


class StorageInTheWay(MultiDBError, FileExistsError):
    """Raised when a new tenant's storage would take the place of storage
    that multidb cannot prove is a leftover of its own (it carries no
    tenant id, or the id of a recorded tenant): it is not deleted."""

    fields = ('name', 'where', 'detail')
    code = errno.EEXIST
    message = ("cannot make tenant {name!r}: {where} exists and {detail};"
               " multidb deletes only leftovers it can prove are its own:"
               " move it away (or delete it) first")


class NotWritable(MultiDBError, PermissionError):
    """Raised before anything is changed when a tenant operation would
    have to write (or delete) where it may not: a read-only folder, a
    database the role may not drop."""

    fields = ('name', 'where', 'reason')
    code = errno.EACCES
    message = ("tenant {name!r}: {where} is not writable ({reason}); nothing"
               " was changed")


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


class UnknownServer(MultiDBError, KeyError):
    """Raised when a server name is not one of the ``<server>`` sections
    of the tenants' configuration (``create --server``, ``move --to``, a
    record naming a server the configuration lost); nothing was
    changed."""

    fields = ('server', 'known')
    key = 'server'
    message = ("no tenant server {server!r} is configured (configured:"
               " {known})")


class UnreadableRecord(MultiDBError, TypeError):
    """Raised when the catalog holds a record this version of multidb
    cannot read (ZODB made a Broken object of it: say, a newer version
    wrote it).  Nothing was declared from it."""

    fields = ('catalog', 'found')
    message = ("the catalog {catalog!r} holds a record this version of"
               " multidb cannot read ({found}): was it written by a newer"
               " version?")


class TenantBehind(MultiDBError, RuntimeError):
    """Raised by ``Tenants.check_generation`` when a tenant's data is at
    a generation older than the application's code accepts (its schema
    manager's ``minimum_generation``): run ``multidb evolve`` (or
    ``Tenants.evolve``) first.  Nothing was changed."""

    # (Not 'key': MultiDBError's own attribute.)
    fields = ('name', 'generations_key', 'generation', 'minimum')
    message = ("tenant {name!r} is at generation {generation} of"
               " {generations_key!r},"
               " older than the minimum {minimum}: evolve it first"
               " ('multidb evolve')")


class RunExpired(MultiDBError, ValueError):
    """Raised by ``Tenants.run_all`` before anything runs when it is
    asked to resume a run that started longer ago than the tenants keep
    the marks of finished runs (``mark_ttl``): resuming it could run the
    function again on tenants it finished.  Start a new run instead."""

    fields = ('run_id', 'started', 'ttl')
    message = ("run {run_id!r} started at {started}, longer ago than the"
               " {ttl} s its marks are kept: it cannot be resumed safely;"
               " start a new run")


class CrossTenantReference(MultiDBError, InvalidObjectReference):
    """Raised when a commit would store a reference from an object of one
    tenant's database into another tenant's database (tenants are
    isolated: ``Tenants(isolation=True)``, the default).  References into
    the configured, shared databases are allowed.  The transaction cannot
    commit; abort it."""

    fields = ('source', 'target', 'obj')
    message = ("a reference from tenant {source!r} into tenant {target!r}"
               " was refused ({obj} of {source!r} would refer to an object"
               " of {target!r}): tenants are isolated; refer only to the"
               " shared, configured databases")


class CannotWrite(MultiDBError, OSError):
    """Raised when a file that multidb writes for the caller (an exported
    configuration) cannot be written: ``path``, and ``error`` the
    ``OSError`` met.  Nothing was written at path (the old file, if any,
    is untouched)."""

    def __init__(self, path, error):
        self.path = path
        self.error = error
        super().__init__(
            getattr(error, 'errno', None) or errno.EIO,
            f"cannot write {os.fspath(path)}:"
            f" {getattr(error, 'strerror', None) or error}")

    def __str__(self):
        return self.args[1]
