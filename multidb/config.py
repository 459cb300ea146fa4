"""Collections from ZConfig files.

A configuration declares databases; loading it opens nothing.  The
sections are ZODB's own (``<zodb>`` with any storage section) plus those
of ``multidb/component.xml``: ``<multidb>`` (collection settings and
databases), ``<tenants>`` (the template of tenant databases) and
``<zodburi>`` (a database given as a URI).  Several files compose as if
each were ``%include``-d after the previous one, so a ``%define`` of the
first file holds in the later ones.

The path of a ``<tenants>`` template's storage is a template, not a
path that exists: ZConfig's ``existing-dirpath`` keys (the ``path`` of
``<filestorage>``) do not require their folder below ``<tenants>``, which
the backend makes when a tenant is created.  Elsewhere they keep ZConfig's
rule, unless the caller asks for the folders to be made
(``make_folders``).

Every error is a ``ZConfig.ConfigurationError`` naming file and line.
Key datatypes raise ``ValueError`` and ZConfig adds the location; checks
spanning sections (duplicate names, the tenants template, the catalog)
run after parsing, before the collection is made, and use the start line
of each section, which :class:`_Loader` records as it parses.

This module loads files and builds the collection (the ``<multidb>``
section's datatype is :class:`MultiDB`, whose ``open()`` builds it).  The
rest has a module of its own, whose public names are public here too:
key datatypes in :mod:`multidb.datatypes`, the ``<zodburi>`` and
``<tenants>`` sections in :mod:`multidb.sections`, section positions in
:mod:`multidb.sources`, ZEO clients in :mod:`multidb.zeoconfig`.
"""
import copy
import dataclasses
import os
import urllib.request
from io import StringIO
from typing import Any
from typing import Iterable
from typing import Mapping
from typing import Optional

import ZConfig
import ZConfig.cfgparser
import ZConfig.datatypes
import ZConfig.loader
from ZConfig.matcher import SectionValue

from multidb.collection import Collection
from multidb.datatypes import UNNAMED
from multidb.errors import DuplicateName
from multidb.sections import PLACEHOLDER
from multidb.sections import TenantTemplate
from multidb.sections import ZODBURIDatabase
from multidb.sections import _db_kwargs
from multidb.sections import _storage_kind
from multidb.sources import Source
from multidb.sources import _display
from multidb.sources import _error
from multidb.sources import _source
from multidb.zeoconfig import DEFAULT_ZEO_WAIT_TIMEOUT
from multidb.zeoconfig import _zeo_factory

__all__ = [
    'collectionFromString',
    'collectionFromFile',
    'collectionFromFiles',
    'config_files',
    'Configuration',
    'DuplicateDeclaration',
    'Source',
    'TenantTemplate',
    'PLACEHOLDER',
    'UNNAMED',
]

SCHEMA_PATH = os.path.join(os.path.dirname(__file__), 'schema.xml')


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


@dataclasses.dataclass(frozen=True)
class Configuration:
    """What a collection was loaded from: its ``configuration``
    attribute (see ``multidb.interfaces.ICollection.configuration``),
    which is None for a collection built in code."""

    #: The files read, in composition order (empty for a string).
    files: list
    #: Database name -> :class:`Source` (file, line, storage kind), in
    #: declaration order.
    sources: dict
    #: The ``<tenants>`` section (a :class:`TenantTemplate`), or None.
    tenant_template: Optional[TenantTemplate]
    #: Seconds a ZEO client waits for its server (``zeo-wait-timeout``).
    zeo_wait_timeout: float


class MultiDB:
    """The ``<multidb>`` section: ``open()`` makes the collection, with
    every database declared and none opened."""

    def __init__(self, section: SectionValue):
        self.config = section
        self.max_open: Optional[int] = section.max_open
        self.open_timeout: float = section.open_timeout
        self.zeo_wait_timeout: float = section.zeo_wait_timeout
        if not self.zeo_wait_timeout > 0:
            # The key's datatype, .duration, allows 0 (open-timeout 0:
            # no wait); a ZEO client that waits 0 s never connects.
            raise _error("zeo-wait-timeout must be a positive duration,"
                         " not 0", section)
        self.databases: list = section.databases
        self.tenants: Optional[TenantTemplate] = section.tenants

    def open(self) -> Collection:
        return _build(self, [], [])


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
    # The core never reads it: it knows nothing of files.
    collection.configuration = Configuration(
        files=list(files),
        sources={name: source
                 for name, (source, _, _) in declared.items()},
        tenant_template=template,
        zeo_wait_timeout=wait_timeout)
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


class _PathsType:
    """A section type whose ``existing-dirpath`` keys convert with
    another datatype; everything else is the type's own (the matcher of a
    section reads its type through this)."""

    def __init__(self, section_type, datatype):
        self._type = section_type
        existing = ZConfig.datatypes.existing_dirpath
        self._children = []
        for key, info in section_type:
            if not info.issection() and info.datatype is existing:
                info = copy.copy(info)
                info.datatype = datatype
            self._children.append((key, info))

    def __getattr__(self, name):
        return getattr(self._type, name)

    def __iter__(self):
        return iter(self._children)

    def __len__(self):
        return len(self._children)

    def __getitem__(self, index):
        return self._children[index]


def _template_path(value: str) -> str:
    # existing-dirpath, less the folder's existence.
    return os.path.expanduser(value)


class _Loader(ZConfig.loader.ConfigLoader):
    """A ConfigLoader that records where each section starts and that
    can parse several files into one configuration."""

    def __init__(self, schema, defines: Optional[Mapping[str, str]] = None,
                 make_folders: bool = False):
        super().__init__(schema)
        # The missing folders of storage paths, to make once the
        # configuration is found good (with make_folders).
        self.make_folders = make_folders
        self.folders: list = []
        self.overrides = {k.lower(): v for k, v in (defines or {}).items()}
        # Shared by every file: composed files see earlier %defines.
        self.defines = dict(self.overrides)
        self._parsers = []
        self._count = 0
        # (id of container matcher, key) -> where the first section is.
        self._seen = {}

    # The parser of each file (multidb.exporting records the lines).
    parser_class = _Parser

    def _parse_resource(self, matcher, resource, defines=None):
        parser = self.parser_class(
            resource, self, self.defines if defines is None else defines)
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
        # The sections below <tenants> are a template: a path there need
        # not have its folder yet.
        if getattr(parent, 'multidb_template', False) or \
                getattr(parent.type, 'name', None) == 'tenants':
            matcher.multidb_template = True
            matcher.type = _PathsType(matcher.type, _template_path)
        elif self.make_folders:
            matcher.type = _PathsType(matcher.type, self._folder_path)
        return matcher

    def _folder_path(self, value: str) -> str:
        # existing-dirpath, a missing folder recorded to be made.
        path = os.path.expanduser(value)
        folder = os.path.dirname(path)
        if folder and not os.path.isdir(folder):
            self.folders.append(folder)
        return path

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
          defines: Optional[Mapping[str, str]],
          make_folders: bool = False) -> Collection:
    loader = _Loader(_get_schema(), defines, make_folders)
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
    collection = _build(config.multidb, config.databases, files)
    for folder in loader.folders:
        os.makedirs(folder, exist_ok=True)
    return collection


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
                        defines: Optional[Mapping[str, str]] = None,
                        make_folders: bool = False) -> Collection:
    """A collection from files and folders of ``*.conf`` files.

    They compose in the order of :func:`config_files`, as if each file
    were ``%include``-d after the previous one.  Every database is
    declared, none is opened.  The collection's ``configuration`` is a
    :class:`Configuration`: the files, each database's :class:`Source`,
    the :class:`TenantTemplate` (or None) and ``zeo_wait_timeout``.

    The folder of a storage path must exist (ZConfig's
    ``existing-dirpath``), except below ``<tenants>``; with
    ``make_folders`` the missing ones are made instead, once the
    configuration is found good (the commands that create tenants use
    it, so that a fresh data folder needs no ``mkdir``).
    """
    files = config_files(paths)
    if not files:
        raise ZConfig.ConfigurationError(
            "no configuration files (the folders hold no *.conf file)")
    return _load([_url(f) for f in files], files, defines, make_folders)
