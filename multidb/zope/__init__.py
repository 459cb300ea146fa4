"""Zope 6: Zope's databases from a collection (see ``docs/zope.rst``).

In ``zope.conf``, ``%import multidb`` and one ``<multidb-zope NAME>``
section holding Zope's ``<zodb_db>`` sections (``multidb/zope.xml``).
Zope builds its database table (``Zope2.Startup.datatypes.DBTab``) from
its database sections by name, one factory per section, before any of
them is opened; that table is what Zope opens its root database with and
what ``Products.ZODBMountPoint`` finds mounted databases through
(``getConfiguration().dbtab``).  The section's datatype,
:class:`ZopeCollection`, is Zope's factory for that one name: when Zope
first opens it (its root database, at startup), it plugs the collection
into the table through the table's own data, so that Zope's code looks
every name and mount path up in the collection from then on:

- ``db_factories``: one factory per database of the collection
  (:class:`MountedDatabase`), tenants included, found when asked for;
- ``mount_paths``: every ``mount-point`` of the ``<zodb_db>`` sections,
  and the tenants' mount paths (``tenant-mount-point``);
- ``databases``: the collection's ``databases`` mapping.

A tenant is mounted by a :class:`multidb.zope.folder.TenantsFolder`, made
at startup above the tenants' mount paths, which hands Zope a
``MountedObject`` for any tenant of the collection, one created since
Zope started included.

:func:`collectionFromZopeConf` loads the databases of an existing
``zope.conf`` (classic ``<zodb_db>`` sections, or one ``<multidb-zope>``)
into a collection, as Zope itself reads the file.

ZConfig imports this module when it loads multidb's component (any
``%import multidb``): it imports nothing of Zope until Zope uses it.
"""
import threading
from typing import Any
from typing import Optional

import ZConfig

from multidb.collection import Collection
from multidb.config import MultiDB
from multidb.config import _build
from multidb.config import _database_name
from multidb.errors import InvalidName
from multidb.errors import NotConfigured
from multidb.names import check_tenant_name
from multidb.sources import _error

__all__ = [
    'ZopeCollection',
    'MountedDatabase',
    'TenantMountPoint',
    'collection',
    'collectionFromZopeConf',
    'mount',
    'tenant_mount_point',
]

#: The placeholder of ``tenant-mount-point``.
PLACEHOLDER = '{name}'

# The keys of Zope's <zodb_db> that are not ZODB.DB keyword arguments
# (as attributes of the section).
_ZOPE_KEYS = frozenset(['mount_points', 'connection_class',
                        'container_class'])


# -- the tenants' mount point --------------------------------------------------

class TenantMountPoint:
    """A parsed ``tenant-mount-point``: ``container`` is the virtual path
    of the folder above the tenants (``/tenants``), ``real`` the path
    pattern in a tenant's database (``/tenants/{name}``)."""

    def __init__(self, container: str, real: str):
        self.container = container
        self.real = real

    def path(self, name: str) -> str:
        """The virtual mount path of tenant name."""
        return f"{self.container}/{name}"

    def name(self, path: str) -> Optional[str]:
        """The tenant name a virtual mount path names, or None."""
        head, sep, name = path.rpartition('/')
        if head != self.container or not sep or not name:
            return None
        try:
            check_tenant_name(name)
        except InvalidName:
            return None
        return name

    def real_path(self, name: str) -> str:
        return self.real.replace(PLACEHOLDER, name)

    def __repr__(self):
        return f"<TenantMountPoint {self.container}/{PLACEHOLDER}>"


def _pattern(value: str, what: str) -> str:
    if not value.startswith('/'):
        raise ValueError(f"the {what} {value!r} must begin with a slash")
    if not value.endswith('/' + PLACEHOLDER) or \
            value.count(PLACEHOLDER) != 1:
        raise ValueError(f"the {what} {value!r} must end with"
                         f" /{PLACEHOLDER}, the only placeholder")
    if '~' in value:
        raise ValueError(f"the {what} {value!r}: a real root (~) is not"
                         f" supported for tenants")
    return value


def tenant_mount_point(value: str) -> TenantMountPoint:
    """The datatype of ``tenant-mount-point``: ``/path/{name}`` or
    ``/virtual/{name}:/real/{name}``."""
    virtual, sep, real = value.partition(':')
    virtual = _pattern(virtual.strip(), 'tenant mount point')
    real = _pattern(real.strip(), 'real path') if sep else virtual
    container = virtual[:-len('/' + PLACEHOLDER)]
    if not container:
        raise ValueError(f"the tenant mount point {value!r} needs a folder"
                         f" above {PLACEHOLDER}, such as /tenants/"
                         f"{PLACEHOLDER}")
    return TenantMountPoint(container, real)


def mount(value: str) -> tuple:
    """The datatype of ``mount``: ``NAME PATH``, PATH a ``mount-point``
    (``/virtual`` or ``/virtual:/real``); (name, virtual path, real root,
    real path)."""
    parts = value.split()
    if len(parts) != 2:
        raise ValueError(f"mount {value!r}: give a database name and a"
                         f" mount point, such as 'main /'")
    name, point = parts
    if not point.startswith('/'):
        raise ValueError(f"mount point {point!r} is invalid: mount points"
                         f" must begin with a slash")
    # Zope's own parsing of mount-point (ZopeDatabase.computeMountPaths).
    real_root = None
    virtual, sep, real = point.partition(':')
    if not sep:
        real = virtual
    elif real.startswith('~'):
        real_root, _, real = real[1:].partition('/')
    return (name, virtual, real_root, real)


# -- Zope's <zodb_db> as multidb's loader reads a <zodb> ---------------------

class _ZODBSection:
    """A ``<zodb_db>`` section less Zope's own keys, with Zope's class
    factory by default (as ``Zope2.Startup.datatypes.ZopeDatabase``
    opens it)."""

    def __init__(self, section: Any):
        self._section = section

    def getSectionAttributes(self):
        return [a for a in self._section.getSectionAttributes()
                if a not in _ZOPE_KEYS]

    @property
    def class_factory(self):
        factory = self._section.class_factory
        if factory is None:
            factory = _zope_class_factory()
        return factory

    def __getattr__(self, name):
        return getattr(self._section, name)


class _ZODBDatabase:
    """A ``<zodb_db>`` section's datatype as multidb's loader reads a
    ``<zodb>`` one (``name``, ``config``)."""

    def __init__(self, database: Any):
        self.database = database
        self.name = database.name
        self.config = _ZODBSection(database.config)


def _zope_class_factory():
    from Zope2.App.ClassFactory import ClassFactory
    return ClassFactory


def _is_zope_database(database: Any) -> bool:
    return hasattr(database, 'computeMountPaths')


def _declarable(database: Any) -> Any:
    """database (a section datatype in a ZODB.database multisection) as
    multidb's loader takes it; ZConfig's error for what it cannot."""
    if isinstance(database, ZopeCollection):
        raise _error(f"<multidb-zope {database.name}> cannot hold"
                     f" another one", database.config)
    if not _is_zope_database(database):
        return database
    if database.config.connection_class is not None:
        raise _error(f"database {database.name!r}: connection-class is"
                     f" not supported in a collection (its databases use"
                     f" multidb's connection class)", database.config)
    return _ZODBDatabase(database)


def _mount_points(section: Any, databases: list) -> dict:
    """virtual path -> (database name, real root, real path, container
    class) of Zope's databases, as ZopeDatabase.getMountParams says, and
    of the section's ``mount`` keys."""
    mounts = {}

    def add(virtual, params, name, where):
        if virtual in mounts:
            raise _error(f"mount point {virtual!r} is given to databases"
                         f" {mounts[virtual][0]!r} and {name!r}", where)
        mounts[virtual] = (name,) + params

    names = set()
    for database in databases:
        if not _is_zope_database(database):
            names.add(_database_name(database))
            continue
        name = database.config.database_name or database.name
        names.add(name)
        for virtual, _, _ in database.computeMountPaths():
            add(virtual, database.getMountParams(virtual), name,
                database.config)
    for name, virtual, real_root, real in section.mounts or ():
        if name not in names:
            raise _error(f"mount {name} {virtual}: no database {name!r}"
                         f" in this section", section)
        # ZopeDatabase's default container for a mount below the root.
        container = None if virtual == '/' else 'OFS.Folder.Folder'
        add(virtual, (real_root, real, container), name, section)
    return mounts


# -- the section ------------------------------------------------------------------

class ZopeCollection(MultiDB):
    """The ``<multidb-zope>`` section: a ``<multidb>`` section that Zope's
    database table takes for one of its factories (``getName``,
    ``getVirtualMountPaths``, ``getMountParams``, ``open``).

    ``collection`` is built on first use (declaring, opening nothing);
    Zope's first ``open`` plugs it into Zope's table (see the module).
    """

    def __init__(self, section: Any):
        super().__init__(section)
        self.name: str = section.getSectionName()
        self.zope_databases: list = list(section.databases)
        self.databases = [_declarable(d) for d in self.zope_databases]
        self.mounts: dict = _mount_points(section, self.zope_databases)
        if '/' not in self.mounts:
            raise _error(f"<multidb-zope {self.name}> needs Zope's root"
                         f" database: a <zodb_db> with mount-point /, or"
                         f" mount NAME /", section)
        self.tenant_mount: Optional[TenantMountPoint] = \
            section.tenant_mount_point
        if self.tenant_mount is not None and self.tenants is None:
            raise _error("tenant-mount-point needs a <tenants> template",
                         section)
        self.tenant_container_class: str = section.tenant_container_class
        self._collection: Optional[Collection] = None
        self._lock = threading.Lock()

    @property
    def collection(self) -> Collection:
        """The collection (built once, on first use)."""
        with self._lock:
            if self._collection is None:
                self._collection = self.make_collection()
            return self._collection

    def make_collection(self, files: Any = ()) -> Collection:
        """A new collection of the section's databases (none opened);
        files: the configuration files it was read from."""
        if self.tenants is not None:
            # Zope's class factory for the tenants too, unless set.
            self.tenants.db_kwargs.setdefault('class_factory',
                                              _zope_class_factory())
        return _build(self, [], list(files))

    def open(self, database_name: Optional[str] = None,
             databases: Any = None) -> Any:
        """Without arguments (``MultiDB.open``): a new collection.

        As Zope's factory (``DBTab.getDatabase`` calls it with the
        section's name, at startup): plug the collection into Zope's
        table, then return Zope's root database."""
        if database_name is None and databases is None:
            return self.make_collection()
        _plug_into_zope(self)
        return self.collection[self.mounts['/'][0]]

    # -- Zope's database factory API (ZopeDatabase's) ------------------------

    def getName(self) -> str:
        return self.name

    def getVirtualMountPaths(self) -> list:
        # Zope checks them against other sections' mount points.
        return list(self.mounts)

    def getMountParams(self, mount_path: str) -> tuple:
        return MountedDatabase(self, self.mount_name(mount_path)) \
            .getMountParams(mount_path)

    # -- lookups ------------------------------------------------------------

    def mount_name(self, mount_path: str) -> Optional[str]:
        """The database name mounted at a virtual path, or None."""
        mount = self.mounts.get(mount_path)
        if mount is not None:
            return mount[0]
        if self.tenant_mount is not None:
            return self.tenant_mount.name(mount_path)
        return None

    def is_tenant(self, name: str) -> bool:
        try:
            tenants = self.collection.tenants
        except NotConfigured:
            return False
        return tenants.is_tenant(name)

    def __repr__(self):
        return f"<multidb-zope {self.name}>"


class MountedDatabase:
    """Zope's factory of one database of the collection (the API of
    ``Zope2.Startup.datatypes.ZopeDatabase`` that Zope's table and
    ``Products.ZODBMountPoint`` use)."""

    def __init__(self, owner: ZopeCollection, name: str):
        self.owner = owner
        self.name = name

    def getName(self) -> str:
        return self.name

    def getVirtualMountPaths(self) -> list:
        return [path for path, mount in self.owner.mounts.items()
                if mount[0] == self.name]

    def getMountParams(self, mount_path: str) -> tuple:
        """(real_root, real_path, container_class) of a virtual path."""
        mount = self.owner.mounts.get(mount_path)
        if mount is not None and mount[0] == self.name:
            return mount[1:]
        tenant_mount = self.owner.tenant_mount
        if tenant_mount is not None and \
                tenant_mount.name(mount_path) == self.name:
            return (None, tenant_mount.real_path(self.name),
                    self.owner.tenant_container_class)
        raise LookupError(f"nothing is mounted at {mount_path!r} from"
                          f" database {self.name!r}")

    def open(self, database_name: Optional[str] = None,
             databases: Any = None) -> Any:
        return self.owner.collection[self.name]

    def __repr__(self):
        return f"<MountedDatabase {self.name!r} of {self.owner!r}>"


# -- Zope's table, looking names up in the collection ----------------------------

class _Factories:
    """``DBTab.db_factories``: name -> factory, for every database of
    the collection (tenants when asked for by name)."""

    def __init__(self, owner: ZopeCollection):
        self.owner = owner

    def __contains__(self, name):
        return name in self.owner.collection or self.owner.is_tenant(name)

    def __getitem__(self, name):
        if name not in self:
            raise KeyError(name)
        return MountedDatabase(self.owner, name)

    def get(self, name, default=None):
        return self[name] if name in self else default

    def keys(self):
        # The configured databases (listing never reads the catalog).
        collection = self.owner.collection
        sources = getattr(collection.configuration, 'sources', None)
        return list(sources if sources is not None else collection)

    def __iter__(self):
        return iter(self.keys())

    def __len__(self):
        return len(self.keys())

    def values(self):
        return [self[name] for name in self.keys()]

    def items(self):
        return [(name, self[name]) for name in self.keys()]


class _MountPaths:
    """``DBTab.mount_paths``: virtual path -> database name; tenants'
    paths are found by ``get`` (``listMountPaths`` lists the others)."""

    def __init__(self, owner: ZopeCollection):
        self.owner = owner

    def get(self, path, default=None):
        name = self.owner.mount_name(path)
        return default if name is None else name

    def __getitem__(self, path):
        name = self.owner.mount_name(path)
        if name is None:
            raise KeyError(path)
        return name

    def __contains__(self, path):
        return self.owner.mount_name(path) is not None

    def keys(self):
        return list(self.owner.mounts)

    def __iter__(self):
        return iter(self.keys())

    def __len__(self):
        return len(self.owner.mounts)

    def items(self):
        return [(path, mount[0]) for path, mount in
                self.owner.mounts.items()]


_plug_lock = threading.Lock()


def _dbtab():
    from App.config import getConfiguration
    return getattr(getConfiguration(), 'dbtab', None)


def _plug_into_zope(owner: ZopeCollection) -> None:
    """Make Zope's table (``getConfiguration().dbtab``, which holds owner
    as a factory) look everything up in owner's collection."""
    with _plug_lock:
        dbtab = _dbtab()
        if dbtab is None:
            return
        factories = dbtab.db_factories
        if isinstance(factories, _Factories):
            return
        if factories.get(owner.name) is not owner:
            return   # not Zope's table of this configuration
        others = sorted(name for name in factories if name != owner.name)
        if others:
            raise ZConfig.ConfigurationError(
                f"the database sections {', '.join(others)} are outside"
                f" <multidb-zope {owner.name}>: move them inside it, so"
                f" that Zope reaches them through the collection")
        collection = owner.collection
        dbtab.db_factories = _Factories(owner)
        dbtab.mount_paths = _MountPaths(owner)
        dbtab.databases = collection.databases
        if owner.tenant_mount is not None:
            _subscribe()


# -- startup: the tenants' folder ---------------------------------------------------

_subscribed = False


def _subscribe():
    global _subscribed
    if _subscribed:
        return
    import zope.component
    from zope.processlifetime import IDatabaseOpenedWithRoot
    zope.component.provideHandler(_make_tenants_folder,
                                  (IDatabaseOpenedWithRoot,))
    _subscribed = True


def _make_tenants_folder(event):
    """At Zope's startup (``DatabaseOpenedWithRoot``): make the folders
    down to the tenants' folder, when missing."""
    owner = _owner()
    if owner is None or owner.tenant_mount is None:
        return
    from multidb.zope.folder import ensure_tenants_folder
    ensure_tenants_folder(event.database, owner.tenant_mount.container)


def _owner() -> Optional[ZopeCollection]:
    dbtab = _dbtab()
    factories = getattr(dbtab, 'db_factories', None)
    if isinstance(factories, _Factories):
        return factories.owner
    for factory in (factories or {}).values():
        if isinstance(factory, ZopeCollection):
            return factory
    return None


def collection() -> Collection:
    """The collection of the running Zope (``<multidb-zope>`` in its
    ``zope.conf``); ``NotConfigured`` when it has none."""
    owner = _owner()
    if owner is None:
        raise NotConfigured("Zope's configuration has no <multidb-zope>"
                            " section")
    return owner.collection


# -- an existing zope.conf ------------------------------------------------------

def collectionFromZopeConf(path: str) -> Collection:
    """A collection of the databases of a ``zope.conf``, read as Zope
    reads it (Zope's schema, so the whole file is checked): its
    ``<multidb-zope>`` section, or else its ``<zodb_db>`` sections (each
    named after its section, as Zope names them; ``mount-point`` and
    Zope's other keys are Zope's business).  Opens nothing."""
    from Zope2.Startup.options import ZopeWSGIOptions
    configroot = ZopeWSGIOptions(configfile=path)().configroot
    databases = list(configroot.databases or ())
    for database in databases:
        if isinstance(database, ZopeCollection):
            if len(databases) > 1:
                raise _error(f"the database sections outside"
                             f" <multidb-zope {database.name}> must move"
                             f" inside it", database.config)
            return database.make_collection([path])
    return _build(None, [_declarable(d) for d in databases], [path])

