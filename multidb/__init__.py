"""multidb: many named ZODB databases in one process.

The public names are re-exported here; everything else lives in
implementation modules.
"""
#: The collection of named databases (see ``ICollection``).
from multidb.collection import Collection
#: A group of connections sharing a transaction manager.
from multidb.group import ConnectionGroup
#: A stable stand-in for a database of a collection (Collection.handle).
from multidb.handles import DatabaseHandle
#: The tenant lifecycle of a collection (see ``ITenants``).
from multidb.tenants.lifecycle import Tenants
#: Tenants as FileStorage files.
from multidb.backends.filestorage import FileStorageBackend
#: Tenants as PostgreSQL databases (RelStorage: ``pip install
#: multidb[postgresql]``).
from multidb.backends.relstorage import RelStorageBackend
#: A tenant's catalog record, and one of its snapshots.
from multidb.tenants.catalog import TenantRecord
from multidb.tenants.catalog import Snapshot
#: What Collection.health() reports per database.
from multidb.health import DatabaseHealth
#: The errors: one base, each subclass also the built-in it means.
from multidb.errors import CollectionClosed
from multidb.errors import DatabaseInUse
from multidb.errors import DuplicateName
from multidb.errors import GroupClosed
from multidb.errors import GroupExists
from multidb.errors import InvalidName
from multidb.errors import InvalidInput
from multidb.errors import MultiDBError
from multidb.errors import TooManyOpen
from multidb.errors import FileLimitReached
from multidb.errors import DatabaseLocked
from multidb.errors import UnknownDatabase
from multidb.errors import TenantExists
from multidb.errors import NoSuchTenant
from multidb.errors import NoSuchSnapshot
from multidb.errors import CorruptArchive
from multidb.errors import UnsignedArchive
from multidb.errors import UnsafeArchive
from multidb.errors import ArchiveExists
from multidb.errors import NotConfigured
from multidb.errors import MissingStorage
from multidb.errors import StorageInTheWay
from multidb.errors import DropIncomplete
from multidb.errors import NotWritable
from multidb.errors import ServerUnavailable
from multidb.errors import UnknownServer
from multidb.errors import UnreadableRecord
from multidb.errors import TenantBehind
from multidb.errors import RunExpired
from multidb.errors import CrossTenantReference

__all__ = [
    'Collection',
    'ConnectionGroup',
    'DatabaseHandle',
    'Tenants',
    'FileStorageBackend',
    'RelStorageBackend',
    'TenantRecord',
    'Snapshot',
    'DatabaseHealth',
    'TenantExists',
    'NoSuchTenant',
    'NoSuchSnapshot',
    'CorruptArchive',
    'UnsignedArchive',
    'UnsafeArchive',
    'ArchiveExists',
    'NotConfigured',
    'MissingStorage',
    'StorageInTheWay',
    'DropIncomplete',
    'NotWritable',
    'ServerUnavailable',
    'UnknownServer',
    'UnreadableRecord',
    'TenantBehind',
    'RunExpired',
    'CrossTenantReference',
    'CollectionClosed',
    'DatabaseInUse',
    'DuplicateName',
    'GroupClosed',
    'GroupExists',
    'InvalidName',
    'InvalidInput',
    'MultiDBError',
    'TooManyOpen',
    'FileLimitReached',
    'DatabaseLocked',
    'UnknownDatabase',
]
