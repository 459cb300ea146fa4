"""The datatypes of the ``<zodburi>`` and ``<tenants>`` sections.

``ZODBURIDatabase`` is a database given as a URI.  ``TenantTemplate`` is
how a tenant's database is made: its checks (placeholders, storage,
catalog) and the backend, by storage kind, that makes tenants' storages
from it (``multidb.backends``).  Here too is what building a collection reads from any
``<zodb>``-like section: its ``ZODB.DB`` keyword arguments and its
storage kind.
"""
import string
from typing import Any
from typing import Mapping
from typing import Optional

import ZODB
from ZConfig.matcher import SectionValue

from multidb.backends import backend_class
from multidb.collection import Collection
from multidb.sources import Source
from multidb.sources import _error
from multidb.sources import _source

#: The one placeholder of a tenants template, written ``{name}``.
PLACEHOLDER = 'name'

# Database keys of <zodb> whose ZODB.DB keyword has another name.
_DB_KWARG_NAMES = {'allow_implicit_cross_references': 'xrefs'}
# Section attributes that are not keyword arguments of ZODB.DB.
_NOT_DB_KWARGS = frozenset([
    'storage', 'database_name',
    # <tenants>
    'catalog', 'init', 'expire_action', 'archive_dir', 'archive_checksum',
    'archive_key_file', 'archive_allow', 'catalog_poll_interval',
    'isolation', 'catalog_notify', 'notify_commits',
    'snapshot_dir', 'snapshot_database', 'admin_dsn', 'template_database',
    'servers', 'server_name', 'server_capacity', 'placement',
])
# Storages that keep nothing outside the process: tenants may share a
# template without a placeholder.
_IN_MEMORY_KINDS = frozenset(['mappingstorage', 'demostorage'])


def _db_kwargs(section: SectionValue) -> dict:
    """The ZODB.DB keyword arguments of a <zodb>-like section, as
    ZODB.config.ZODBDatabase.open passes them."""
    kwargs = {}
    for attr in section.getSectionAttributes():
        if attr in _NOT_DB_KWARGS:
            continue
        value = getattr(section, attr)
        # None means "not set": ZODB.DB's own default applies.
        if value is not None:
            kwargs[_DB_KWARG_NAMES.get(attr, attr)] = value
    return kwargs


def _storage_kind(storage: Any) -> str:
    config = getattr(storage, 'config', storage)
    if isinstance(config, SectionValue):
        return config.getSectionType()
    return type(storage).__name__.lower()


class ZODBURIDatabase:
    """The ``<zodburi>`` section: a database from a URI.

    Like ZODB's ``<zodb>`` datatype, it has ``name``, ``config`` and
    ``open(databases=None)``, so ``ZODB.config`` can use it too after
    ``%import multidb``.
    """

    def __init__(self, section: SectionValue):
        self.config = section
        self.name = section.getSectionName()
        self.uri = section.uri

    @property
    def database_name(self) -> str:
        return (self.config.database_name or self.uri.database_name
                or self.name or '')

    def open(self, databases: Optional[dict] = None) -> ZODB.DB:
        storage = self.uri.factory()
        try:
            return ZODB.DB(storage, database_name=self.database_name,
                           databases=databases, **self.uri.db_kwargs)
        except BaseException:
            storage.close()
            raise


class TenantTemplate:
    """The ``<tenants>`` section: how a tenant's database is made.

    ``kind`` is the storage section's type (``filestorage``,
    ``relstorage``, ...), ``db_kwargs`` the ``ZODB.DB`` keyword
    arguments, ``catalog``, ``init``, ``expire_action`` and
    ``archive_dir`` the settings, ``placeholders`` the keys that hold
    ``{name}``, ``where`` the section's place (``file:line``) and
    ``backend`` the backend of the storage kind, built from the template
    (``multidb.backends``) once the configuration is checked.
    """

    def __init__(self, section: SectionValue):
        self.config = section
        self.storage = section.storage
        self.kind = _storage_kind(section.storage) if section.storage \
            else ''
        self.db_kwargs = _db_kwargs(section)
        self.catalog: str = section.catalog
        self.init: Optional[str] = section.init
        self.expire_action: str = section.expire_action
        self.archive_dir: Optional[str] = section.archive_dir
        self.archive_checksum: str = section.archive_checksum
        self.catalog_poll_interval: float = section.catalog_poll_interval
        self.isolation: bool = section.isolation
        self.catalog_notify: bool = section.catalog_notify
        self.notify_commits: bool = section.notify_commits
        self.archive_key_file: Optional[str] = section.archive_key_file
        self.archive_allow: list = [
            entry for line in section.archive_allow or () for entry in line]
        self.snapshot_dir: Optional[str] = section.snapshot_dir
        self.snapshot_database: Optional[str] = section.snapshot_database
        self.admin_dsn: Optional[str] = section.admin_dsn
        self.template_database: Optional[str] = section.template_database
        # More PostgreSQL servers (multidb.backends.servers).
        self.servers: list = list(section.servers or ())
        self.server_name: str = section.server_name
        self.server_capacity: Optional[int] = section.server_capacity
        self.placement: str = section.placement
        self.placeholders: list = []
        self.backend: Any = None

    @property
    def where(self) -> Source:
        return _source(self.config, self.kind)

    @property
    def settings(self) -> dict:
        """The parsed settings, for display."""
        return {
            'kind': self.kind,
            'catalog': self.catalog,
            'init': self.init,
            'expire_action': self.expire_action,
            'archive_dir': self.archive_dir,
            # Where the key is, never the key.
            'archive_key_file': self.archive_key_file,
            'archive_allow': list(self.archive_allow),
            'placeholders': list(self.placeholders),
            'db_kwargs': dict(self.db_kwargs),
        }

    def __repr__(self):
        return f"<TenantTemplate {self.kind} at {self.where}>"

    def _check(self, declared: Mapping[str, Any]) -> None:
        section = self.config
        if section.database_name:
            raise _error("a tenants template cannot have a database-name:"
                         " each tenant's database is named after the"
                         " tenant", section)
        if self.storage is None:
            raise _error("the tenants template has no storage section"
                         " (<filestorage>, <relstorage>, ...)", section)
        formatter = string.Formatter()
        for key, text in _strings(self.storage, self.kind):
            try:
                fields = list(formatter.parse(text))
            except ValueError as e:
                raise _error(f"bad placeholder in {key} {text!r}: {e}"
                             f" (write {{{{ and }}}} for literal braces)",
                             section) from None
            for _, field, spec, conversion in fields:
                if field is None:
                    continue
                if field != PLACEHOLDER or spec or conversion:
                    raise _error(
                        f"unknown placeholder {{{field}"
                        f"{'!' + conversion if conversion else ''}"
                        f"{':' + spec if spec else ''}}} in {key}"
                        f" {text!r}: the only placeholder is"
                        f" {{{PLACEHOLDER}}}", section)
                if key not in self.placeholders:
                    self.placeholders.append(key)
        if not self.placeholders and not _in_memory(self.storage):
            raise _error(f"the tenants template's storage has no"
                         f" {{{PLACEHOLDER}}} placeholder: every tenant"
                         f" would share one storage", section)
        # expire-action archive without archive-dir is valid: expire
        # refuses (NotConfigured) when it has a tenant to archive.
        if self.catalog not in declared:
            known = ', '.join(sorted(declared)) or 'none'
            raise _error(f"the catalog database {self.catalog!r} of the"
                         f" tenants template is not declared (declared:"
                         f" {known})", section)
        # The backend of the storage kind, from the template; what it
        # cannot honour is an error here, never dropped.
        try:
            self.backend = backend_class(self.kind).from_template(self)
        except ValueError as e:
            raise _error(str(e), section) from None

    def make_tenants(self, collection: Collection):
        """Set up ``collection.tenants`` from this template, with the
        backend made when it was checked (opens nothing)."""
        from multidb.tenants.lifecycle import Tenants
        return Tenants(collection, catalog=self.catalog, backend=self.backend,
                       db_kwargs=self.db_kwargs, init=self.init,
                       expire_action=self.expire_action,
                       archive_dir=self.archive_dir,
                       archive_checksum=self.archive_checksum,
                       archive_key=self._archive_key(),
                       archive_allow=self.archive_allow,
                       catalog_poll_interval=self.catalog_poll_interval,
                       isolation=self.isolation,
                       catalog_notify=self.catalog_notify,
                       notify_commits=self.notify_commits)

    def _archive_key(self) -> Optional[bytes]:
        # Read again here: the datatype checked it at load, and the key is
        # kept by the Tenants alone (not in the template, not displayed).
        if self.archive_key_file is None:
            return None
        from multidb.tenants.archive import key_from_file
        return key_from_file(self.archive_key_file)


def _strings(value: Any, path: str):
    """Yield (key, text) for every text value below a storage section."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item, path)
    elif isinstance(value, SectionValue):
        for attr in value.getSectionAttributes():
            sub = getattr(value, attr)
            key = attr.replace('_', '-')
            if isinstance(sub, SectionValue) or isinstance(
                    getattr(sub, 'config', None), SectionValue):
                key = _storage_kind(sub)
            yield from _strings(sub, f"{path} {key}" if path else key)
    elif isinstance(getattr(value, 'config', None), SectionValue):
        yield from _strings(value.config, path)


def _in_memory(storage: Any) -> bool:
    config = getattr(storage, 'config', storage)
    if _storage_kind(storage) not in _IN_MEMORY_KINDS:
        return False
    return all(_in_memory(s) for s in getattr(config, 'factories', ()))
