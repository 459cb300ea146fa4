"""Collections from ZConfig files.

A configuration declares databases; loading it opens nothing.  The
sections are ZODB's own (``<zodb>`` with any storage section) plus those
of ``multidb/component.xml``: ``<multidb>`` (collection settings and
databases), ``<tenants>`` (the template of tenant databases) and
``<zodburi>`` (a database given as a URI).  Several files compose as if
each were ``%include``-d after the previous one, so a ``%define`` of the
first file holds in the later ones.

Every error is a ``ZConfig.ConfigurationError`` naming file and line.
Key datatypes raise ``ValueError`` and ZConfig adds the location; checks
spanning sections (duplicate names, the tenants template, the catalog)
run after parsing, before the collection is made, and use the start line
of each section, which :class:`_Loader` records as it parses.
"""
import functools
import os
import re
import string
import urllib.request
from io import StringIO
from typing import Any
from typing import Callable
from typing import Iterable
from typing import Mapping
from typing import NamedTuple
from typing import Optional

import ZConfig
import ZConfig.cfgparser
import ZConfig.loader
import ZODB
import ZODB.config
import zodburi as _zodburi
from ZConfig.matcher import SectionValue

from multidb.collection import Collection
from multidb.errors import DuplicateName
from multidb.names import check_tenant_name

__all__ = [
    'collectionFromString',
    'collectionFromFile',
    'collectionFromFiles',
    'config_files',
    'DuplicateDeclaration',
    'Source',
    'TenantTemplate',
    'PLACEHOLDER',
    'UNNAMED',
]

#: The one placeholder of a tenants template, written ``{name}``.
PLACEHOLDER = 'name'

#: The name of a database whose section has neither a name nor a
#: ``database-name``.  ZODB.config calls it ``''``, which a collection
#: refuses; ``'unnamed'`` is what ``ZODB.DB`` and zodburi call it.
UNNAMED = 'unnamed'

SCHEMA_PATH = os.path.join(os.path.dirname(__file__), 'schema.xml')

# Database keys of <zodb> whose ZODB.DB keyword has another name.
_DB_KWARG_NAMES = {'allow_implicit_cross_references': 'xrefs'}
# Section attributes that are not keyword arguments of ZODB.DB.
_NOT_DB_KWARGS = frozenset([
    'storage', 'database_name',
    # <tenants>
    'catalog', 'init', 'expire_action', 'archive_dir', 'archive_checksum',
    'archive_key_file', 'archive_allow', 'catalog_poll_interval',
    'snapshot_dir', 'admin_dsn', 'template_database',
])
# Storage kinds of the zodburi schemes; other schemes show as themselves.
_URI_KINDS = {
    'file': 'filestorage', 'memory': 'mappingstorage', 'zeo': 'zeoclient',
    'demo': 'demostorage', 'postgres': 'relstorage', 'mysql': 'relstorage',
    'oracle': 'relstorage', 'sqlite': 'relstorage',
}
# Storages that keep nothing outside the process: tenants may share a
# template without a placeholder.
_IN_MEMORY_KINDS = frozenset(['mappingstorage', 'demostorage'])


class DuplicateDeclaration(ZConfig.DataConversionError, DuplicateName):
    """Raised when two sections declare the same database name (or a
    configuration has two ``<multidb>`` or ``<tenants>`` sections), in one
    file or across composed files.  Raised before anything is opened.

    ``name`` is the name, ``first`` and ``second`` the two places
    (``file:line``); ``url`` and ``lineno`` are those of the second.
    """

    # A DataConversionError, because ZConfig's parser lets that one
    # through with its own position; any other ConfigurationError raised
    # while a section ends is re-raised at the section's last line.

    def __init__(self, message: str, name: str, first: 'Source',
                 second: 'Source'):
        ZConfig.DataConversionError.__init__(
            self, ValueError(message), name,
            (second.line, None, second.url))
        self.name = name
        self.where = str(first)
        self.first = first
        self.second = second


class Source(NamedTuple):
    """Where a section starts: its file (``<string>`` for text), line and
    the kind of storage it declares."""

    file: str
    line: int
    kind: str = ''
    url: Optional[str] = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@functools.lru_cache(maxsize=256)
def _display(url: Optional[str]) -> str:
    if not url:
        return '<string>'
    if url.startswith('file://'):
        return urllib.request.url2pathname(url[7:])
    return url


def _source(section: SectionValue, kind: str = '') -> Source:
    # Sections parsed by another loader (an application's own schema
    # importing multidb) have no recorded position.
    url, line = getattr(section.getSectionMatcher(), 'multidb_where',
                        (None, 0))[:2]
    return Source(_display(url), line, kind, url)


def _error(message: str, section: SectionValue) -> ZConfig.ConfigurationError:
    url, line = getattr(section.getSectionMatcher(), 'multidb_where',
                        (None, None))[:2]
    return ZConfig.ConfigurationSyntaxError(message, url, line)


# -- key datatypes ----------------------------------------------------------

def max_open(value: str) -> Optional[int]:
    """``max-open``: a positive integer, or ``auto`` (None: the
    collection's default)."""
    if value.strip().lower() == 'auto':
        return None
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"max-open must be a positive integer or 'auto',"
                         f" not {value!r}") from None
    if n < 1:
        raise ValueError(f"max-open must be a positive integer or 'auto',"
                         f" not {value!r}")
    return n


_SECONDS = re.compile(r'(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\Z')
_UNIT_SECONDS = {'ms': 0.001, 's': 1, 'm': 60, 'h': 3600, None: 1}


def seconds(value: str) -> float:
    """A positive duration in seconds: a number, decimals allowed, with
    an optional unit ``ms``, ``s``, ``m`` or ``h`` (``1.5s``, ``500ms``).
    """
    m = _SECONDS.match(value.strip().lower())
    result = float(m.group(1)) * _UNIT_SECONDS[m.group(2)] if m else 0
    if not result > 0:
        raise ValueError(f"expected a positive duration such as 5s, 1.5s"
                         f" or 500ms, not {value!r}")
    return result


def expire_action(value: str) -> str:
    """``expire-action``: ``drop`` or ``archive``."""
    v = value.strip().lower()
    if v not in ('drop', 'archive'):
        raise ValueError(f"expire-action must be 'drop' or 'archive', not"
                         f" {value!r}")
    return v


def archive_checksum(value: str) -> str:
    """``archive-checksum``: crc32 or sha256."""
    from multidb.tenants.archive import CHECKSUMS
    v = value.strip().lower()
    if v not in CHECKSUMS:
        raise ValueError(f"archive-checksum must be one of"
                         f" {', '.join(CHECKSUMS)}, not {value!r}")
    return v


def archive_key_file(value: str) -> str:
    """``archive-key-file``: the path (``~`` expanded) of a file holding
    the archive key, read now so that a missing file or a short key is a
    configuration error with its line.  The key stays out of every
    message."""
    from multidb.tenants.archive import key_from_file
    path = os.path.expanduser(value.strip())
    if not path:
        raise ValueError("archive-key-file must not be empty")
    try:
        key_from_file(path)
    except OSError as e:
        raise ValueError(f"cannot read the archive key file {path}:"
                         f" {e.strerror or e}") from None
    return path


def archive_allow(value: str) -> list:
    """``archive-allow``: modules (``package.module``) and single globals
    (``package.module:Name``) the pickles of restored archives may name,
    separated by spaces."""
    from multidb.tenants.archive import PicklePolicy
    entries = value.split()
    PicklePolicy(entries)   # refuse a bad or dangerous entry now
    return entries


def archive_dir(value: str) -> str:
    """``archive-dir``: a folder path (``~`` expanded), made on the first
    archive, so that a fresh data folder needs no ``mkdir``."""
    v = os.path.expanduser(value.strip())
    if not v:
        raise ValueError("archive-dir must not be empty")
    return v


class ResolvedURI:
    """A zodburi URI resolved when the configuration was loaded."""

    __slots__ = ('uri', 'factory', 'db_kwargs', 'database_name', 'kind')

    def __init__(self, uri, factory, db_kwargs, database_name, kind):
        self.uri = uri
        self.factory = factory
        self.db_kwargs = db_kwargs
        self.database_name = database_name
        self.kind = kind

    def __repr__(self):
        return f"<ResolvedURI {self.uri!r}>"


def zodburi(value: str) -> ResolvedURI:
    """``uri``: resolve with zodburi (which makes a factory and opens
    nothing), turning its errors into ValueError so ZConfig names the
    line."""
    uri = value.strip()
    scheme = uri.split(':', 1)[0] if ':' in uri else ''
    try:
        factory, dbkw = _zodburi.resolve_uri(uri)
    except _zodburi.NoResolverForScheme:
        raise ValueError(f"no zodburi resolver for the scheme {scheme!r}"
                         f" of {uri!r}") from None
    except (KeyError, ValueError, TypeError, ZConfig.ConfigurationError) \
            as e:
        # KeyError: UnknownDatabaseKeywords, or zconfig:// naming no
        # section; ConfigurationError: a bad file behind zconfig://.
        reason = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise ValueError(f"bad zodburi URI {uri!r}: {reason}") from None
    name = dbkw.pop('database_name', UNNAMED)
    return ResolvedURI(uri, factory, dbkw,
                       None if name == UNNAMED else name,
                       _URI_KINDS.get(scheme, scheme))


# -- section datatypes ------------------------------------------------------

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
    ``{name}`` and ``where`` the section's place (``file:line``).
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
        self.archive_key_file: Optional[str] = section.archive_key_file
        self.archive_allow: list = [
            entry for line in section.archive_allow or () for entry in line]
        self.snapshot_dir: Optional[str] = section.snapshot_dir
        self.admin_dsn: Optional[str] = section.admin_dsn
        self.template_database: Optional[str] = section.template_database
        self.placeholders: list = []

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
        if self.kind == 'filestorage':
            fs = self.storage.config
            for key in ('blob_dir', 'create', 'read_only'):
                if getattr(fs, key, None):
                    raise _error(
                        f"the tenants template's filestorage cannot set"
                        f" {key.replace('_', '-')}: tenants are created,"
                        f" written, snapshotted and archived as single"
                        f" files", section)
            if '{' in os.path.dirname(fs.path):
                raise _error("the tenants template's filestorage path must"
                             " hold {name} in its file name, not in a"
                             " folder", section)
        if self.expire_action == 'archive' and not self.archive_dir:
            raise _error("expire-action archive needs an archive-dir"
                         " (or set expire-action drop)", section)
        if self.catalog not in declared:
            known = ', '.join(sorted(declared)) or 'none'
            raise _error(f"the catalog database {self.catalog!r} of the"
                         f" tenants template is not declared (declared:"
                         f" {known})", section)

    def make_tenants(self, collection: Collection):
        """Set up ``collection.tenants`` from this template (opens
        nothing).  Storage kinds without a lifecycle backend get none."""
        from multidb.backends import backend_from_template
        from multidb.tenants.lifecycle import Tenants
        backend = backend_from_template(self)
        if backend is None:
            return None
        return Tenants(collection, catalog=self.catalog, backend=backend,
                       db_kwargs=self.db_kwargs, init=self.init,
                       expire_action=self.expire_action,
                       archive_dir=self.archive_dir,
                       archive_checksum=self.archive_checksum,
                       archive_key=self._archive_key(),
                       archive_allow=self.archive_allow,
                       catalog_poll_interval=self.catalog_poll_interval)

    def _archive_key(self) -> Optional[bytes]:
        # Read again here: the datatype checked it at load, and the key is
        # kept by the Tenants alone (not in the template, not displayed).
        if self.archive_key_file is None:
            return None
        from multidb.tenants.archive import key_from_file
        return key_from_file(self.archive_key_file)

    def storage_factory(self, name: str) -> Callable[[], Any]:
        """A zero-argument factory of tenant ``name``'s storage (nothing
        is opened until it is called)."""
        # The name goes into a path or a database name: only names of
        # the tenant policy, checked before anything is made.
        check_tenant_name(name)
        return _substitute(self.storage, name).open


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


def _substitute(value: Any, name: str) -> Any:
    # A copy of the section tree with {name} replaced, rebuilt through
    # each section's own datatype, so that every storage type works.
    if isinstance(value, str):
        if '{' in value or '}' in value:
            return value.format(**{PLACEHOLDER: name})
        return value
    if type(value) in (list, tuple):
        return type(value)(_substitute(v, name) for v in value)
    if isinstance(value, SectionValue):
        values = {attr: _substitute(getattr(value, attr), name)
                  for attr in value.getSectionAttributes()}
        return SectionValue(values, value.getSectionName(),
                            value.getSectionMatcher())
    config = getattr(value, 'config', None)
    if isinstance(config, SectionValue):
        return config.getSectionDefinition().datatype(
            _substitute(config, name))
    return value


class MultiDB:
    """The ``<multidb>`` section: ``open()`` makes the collection, with
    every database declared and none opened."""

    def __init__(self, section: SectionValue):
        self.config = section
        self.max_open: Optional[int] = section.max_open
        self.open_timeout: float = section.open_timeout
        self.zeo_wait_timeout: float = section.zeo_wait_timeout
        self.databases: list = section.databases
        self.tenants: Optional[TenantTemplate] = section.tenants

    def open(self) -> Collection:
        return _build(self, [], [])


# -- ZEO clients ------------------------------------------------------------

#: The ``zeo-wait-timeout`` of a configuration without ``<multidb>``
#: section, in seconds (see multidb.xml for the reasons).
DEFAULT_ZEO_WAIT_TIMEOUT = 5.0
# ZEO's own default wait_timeout: ClientStorage's, and the default of
# the wait-timeout key of ZEO's <clientstorage>.
_ZEO_DEFAULT_WAIT = 30


def _open_zeoclient(config: SectionValue, wait_timeout: float):
    """ZODB.config.ZEOClient.open with a wait_timeout, which ZODB's
    ``<zeoclient>`` section has no key for (ZEO then waits 30 s)."""
    from ZEO.ClientStorage import ClientStorage
    options = {}
    for key in ('blob_cache_size', 'blob_cache_size_check',
                'client_label'):
        if getattr(config, key) is not None:
            options[key] = getattr(config, key)
    return ClientStorage(
        [server.address for server in config.server],
        blob_dir=config.blob_dir, shared_blob_dir=config.shared_blob_dir,
        storage=config.storage, cache_size=config.cache_size,
        name=config.name, client=config.client, var=config.var,
        min_disconnect_poll=config.min_disconnect_poll,
        max_disconnect_poll=config.max_disconnect_poll,
        wait=config.wait, read_only=config.read_only,
        read_only_fallback=config.read_only_fallback,
        drop_cache_rather_verify=config.drop_cache_rather_verify,
        username=config.username, password=config.password,
        realm=config.realm, wait_timeout=wait_timeout, **options)


class _Override:
    """A section's values with some replaced (for ZEO's own datatype)."""

    def __init__(self, config: SectionValue, **values):
        self.__config = config
        self.__dict__.update(values)

    def __getattr__(self, name):
        return getattr(self.__config, name)


def _open_clientstorage(storage: Any, wait_timeout: float):
    return type(storage)(
        _Override(storage.config, wait_timeout=wait_timeout)).open()


def _zeo_factory(database: Any, factory: Callable, kind: str,
                 wait_timeout: float) -> Callable:
    """factory, made to use the collection's wait_timeout if it is a ZEO
    client that does not set its own (see multidb.xml)."""
    if isinstance(database, ZODBURIDatabase):
        uri = database.uri.uri
        if kind != 'zeoclient' or 'wait_timeout=' in uri:
            return factory
        sep = '&' if '?' in uri else '?'
        return _zodburi.resolve_uri(
            f"{uri}{sep}wait_timeout={wait_timeout:g}")[0]
    storage = database.config.storage
    if kind == 'zeoclient' and isinstance(storage, ZODB.config.ZEOClient):
        return functools.partial(_open_zeoclient, storage.config,
                                 wait_timeout)
    if kind == 'clientstorage' and getattr(
            storage.config, 'wait_timeout', None) == _ZEO_DEFAULT_WAIT:
        return functools.partial(_open_clientstorage, storage,
                                 wait_timeout)
    return factory


# -- building the collection ------------------------------------------------

def _order(database: Any) -> int:
    return getattr(database.config.getSectionMatcher(), 'multidb_where',
                   (None, 0, 0))[2]


def _database_name(database: Any) -> str:
    if isinstance(database, ZODBURIDatabase):
        name = database.database_name
    else:
        # ZODB.config.ZODBDatabase.open's own rule.
        name = database.config.database_name or database.name or ''
    return name or UNNAMED


def _declaration(database: Any):
    """(name, factory, db_kwargs, kind) of a ZODB.database section."""
    name = _database_name(database)
    if isinstance(database, ZODBURIDatabase):
        key, uri = database.config.database_name, database.uri
        if key and uri.database_name and key != uri.database_name:
            raise _error(f"database-name {key!r} contradicts the"
                         f" database_name {uri.database_name!r} of the URI"
                         f" {uri.uri!r}", database.config)
        return (name, database.uri.factory, dict(database.uri.db_kwargs),
                database.uri.kind)
    section = database.config
    if getattr(section, 'storage', None) is None:
        raise _error(f"database {name!r} has no storage section"
                     f" (<filestorage>, <mappingstorage>, ...)", section)
    return (name, section.storage.open, _db_kwargs(section),
            _storage_kind(section.storage))


def _build(multidb: Optional[MultiDB], databases: list,
           files: list) -> Collection:
    """Check everything, then make the collection."""
    every = list(databases)
    if multidb is not None:
        every.extend(multidb.databases)
    every.sort(key=_order)
    wait_timeout = (multidb.zeo_wait_timeout if multidb is not None
                    else DEFAULT_ZEO_WAIT_TIMEOUT)
    declared = {}
    for database in every:
        name, factory, db_kwargs, kind = _declaration(database)
        factory = _zeo_factory(database, factory, kind, wait_timeout)
        source = _source(database.config, kind)
        first = declared.get(name)
        if first is not None:
            if name == UNNAMED and not database.config.database_name:
                message = (f"two databases have no name, at {first[0]}"
                           f" and at {source}: give each a section name"
                           f" or a database-name")
            else:
                message = (f"database name {name!r} is declared twice:"
                           f" at {first[0]} and at {source}")
            raise DuplicateDeclaration(message, name, first[0], source)
        declared[name] = (source, factory, db_kwargs)
    template = multidb.tenants if multidb is not None else None
    if template is not None:
        template._check(declared)
    kwargs = {}
    if multidb is not None:
        kwargs = {'max_open': multidb.max_open,
                  'open_timeout': multidb.open_timeout}
    collection = Collection(**kwargs)
    for name, (source, factory, db_kwargs) in declared.items():
        collection.declare(name, factory, origin=str(source), **db_kwargs)
    # Attributes of this collection only: the core knows nothing of files.
    collection.config_sources = {
        name: source for name, (source, _, _) in declared.items()}
    collection.config_files = list(files)
    collection.tenant_template = template
    collection.zeo_wait_timeout = wait_timeout
    if template is not None:
        template.make_tenants(collection)
    return collection


# -- loading ----------------------------------------------------------------

class _Parser(ZConfig.cfgparser.ZConfigParser):

    __slots__ = ()

    def handle_define(self, section, rest):
        # A define given by the caller (a test, ``multidb -D``) wins over
        # the file's own, as a command-line override would.
        parts = rest.split(None, 1)
        if parts and parts[0].lower() in self.context.overrides:
            return
        super().handle_define(section, rest)

    def replace(self, text):
        # ZConfig raises a bad '$' construct without any position.
        try:
            return super().replace(text)
        except ZConfig.SubstitutionSyntaxError as e:
            raise ZConfig.ConfigurationSyntaxError(
                e.message, self.url, self.lineno) from None


class _Loader(ZConfig.loader.ConfigLoader):
    """A ConfigLoader that records where each section starts and that
    can parse several files into one configuration."""

    def __init__(self, schema, defines: Optional[Mapping[str, str]] = None):
        super().__init__(schema)
        self.overrides = {k.lower(): v for k, v in (defines or {}).items()}
        # Shared by every file: composed files see earlier %defines.
        self.defines = dict(self.overrides)
        self._parsers = []
        self._count = 0
        # (id of container matcher, key) -> where the first section is.
        self._seen = {}

    def _parse_resource(self, matcher, resource, defines=None):
        parser = _Parser(resource, self,
                         self.defines if defines is None else defines)
        self._parsers.append(parser)
        try:
            parser.parse(matcher)
        finally:
            self._parsers.pop()

    def startSection(self, parent, type_, name):
        matcher = super().startSection(parent, type_, name)
        parser = self._parsers[-1]
        self._count += 1
        matcher.multidb_where = (parser.url, parser.lineno, self._count)
        return matcher

    def endSection(self, parent, type_, name, matcher):
        # Two sections that ZConfig would refuse with the second's last
        # line only: name both places.
        info = parent.type.getsectioninfo(type_, name)
        if name:
            key, what = ('name', name), f"<{type_} {name}>"
        elif not info.ismulti():
            key, what = ('type', type_), f"<{type_}>"
        else:
            key = None
        if key is not None:
            here = matcher.multidb_where
            first = self._seen.setdefault((id(parent), key), here)
            if first is not here:
                first, here = (Source(_display(w[0]), w[1], type_, w[0])
                               for w in (first, here))
                raise DuplicateDeclaration(
                    f"{what} is declared twice: at {first} and at {here}",
                    name or f"<{type_}>", first, here)
        super().endSection(parent, type_, name, matcher)

    def includeConfiguration(self, section, url, defines):
        # ZConfig reports an unreadable %include by the missing file's
        # URL alone; report the line of the %include.
        parser = self._parsers[-1]
        url = self.normalizeURL(url)
        try:
            resource = self.openResource(url)
        except ZConfig.ConfigurationError as e:
            raise ZConfig.ConfigurationSyntaxError(
                f"cannot %include: {e.message}", parser.url,
                parser.lineno) from None
        with resource:
            self._parse_resource(section, resource, defines)

    def load(self, sources: Iterable) -> SectionValue:
        """Parse URLs (or resources) into one configuration."""
        matcher = self.createSchemaMatcher()
        for source in sources:
            if isinstance(source, str):
                source = self.openResource(source)
            with source as resource:
                self._parse_resource(matcher, resource)
        return matcher.finish()


_schema = None


def _get_schema():
    global _schema
    if _schema is None:
        _schema = ZConfig.loadSchema(SCHEMA_PATH)
    return _schema


def config_files(paths: Iterable[str]) -> list:
    """The files that ``paths`` name, in composition order: each file as
    given, each folder's ``*.conf`` files sorted by name; a file named
    twice counts once."""
    files = []
    seen = set()
    for path in paths:
        path = os.fspath(path)
        if os.path.isdir(path):
            found = sorted(
                os.path.join(path, f) for f in os.listdir(path)
                if f.endswith('.conf') and not f.startswith('.')
                and os.path.isfile(os.path.join(path, f)))
        elif os.path.exists(path):
            found = [path]
        else:
            raise ZConfig.ConfigurationError(
                f"no such configuration file or folder: {path}",
                _url(path))
        for f in found:
            real = os.path.realpath(f)
            if real not in seen:
                seen.add(real)
                files.append(f)
    return files


def _url(path: str) -> str:
    return 'file://' + urllib.request.pathname2url(os.path.abspath(path))


def _load(sources: list, files: list,
          defines: Optional[Mapping[str, str]]) -> Collection:
    loader = _Loader(_get_schema(), defines)
    try:
        config = loader.load(sources)
    except ZConfig.ConfigurationError as e:
        # ZConfig sets url and lineno on some errors (an unknown key)
        # whose str() shows neither.
        lineno = getattr(e, 'lineno', None)
        if lineno is None or lineno < 0 or f"line {lineno}" in str(e):
            raise
        raise ZConfig.ConfigurationSyntaxError(
            e.message, e.url, lineno) from None
    return _build(config.multidb, config.databases, files)


def collectionFromString(text: str, *,
                         defines: Optional[Mapping[str, str]] = None
                         ) -> Collection:
    """A collection from configuration text (errors name line only).

    ``defines`` set ZConfig substitution variables (``$data``) and win
    over the text's own ``%define`` of the same name.
    """
    return _load([ZConfig.loader.Resource(StringIO(text), None)], [],
                 defines)


def collectionFromFile(path: str, *,
                       defines: Optional[Mapping[str, str]] = None
                       ) -> Collection:
    """A collection from one configuration file (see
    :func:`collectionFromFiles`)."""
    return collectionFromFiles([path], defines=defines)


def collectionFromFiles(paths: Iterable[str], *,
                        defines: Optional[Mapping[str, str]] = None
                        ) -> Collection:
    """A collection from files and folders of ``*.conf`` files.

    They compose in the order of :func:`config_files`, as if each file
    were ``%include``-d after the previous one.  Every database is
    declared, none is opened.  The collection gets four attributes:
    ``config_sources`` (name -> :class:`Source`), ``config_files``,
    ``tenant_template`` (a :class:`TenantTemplate` or None) and
    ``zeo_wait_timeout`` (seconds, see ``zeo-wait-timeout``).
    """
    files = config_files(paths)
    if not files:
        raise ZConfig.ConfigurationError(
            "no configuration files (the folders hold no *.conf file)")
    return _load([_url(f) for f in files], files, defines)
