"""The collection as a plain ZODB configuration, for ZODB's own tools;
garbage collection across databases with zc.zodbdgc.

:func:`export_config` writes one ``<zodb NAME>`` section per database of
the collection, with ``database-name NAME``: every configured database,
with the storage section it is configured with, and every tenant of the
catalog, with the storage section its backend opens it with
(``IBackend.storage_config``).  ``ZODB.config.databaseFromFile`` reads
the result and opens every database in one ``databases`` mapping, so
cross-database references resolve as they do in the application; so do
``zc.zodbdgc`` (``multi-zodb-gc``) and other tools built on it.

The configured databases are written as their files spell them, defines
substituted, read again by a loader that records each line as it parses
(the sections' datatypes keep converted values, which do not always
write back as text).  A ``path`` or ``blob-dir`` is made absolute, so
the file works from any folder.

Secrets (passwords in a PostgreSQL dsn or a URI, ``password`` keys) are
left out unless asked for (``with_secrets``); the file's header says
what was left out: libpq's passfile or ``PGPASSWORD`` supply them then.

:func:`collect_garbage` runs ``zc.zodbdgc`` over that configuration:
an object is garbage when no root of any database reaches it, following
references across databases, and only then is it deleted (packing one
database with garbage collection would delete what only other databases
reference: see ``multidb.tenants.packing``).
"""
import concurrent.futures
import dataclasses
import os
import re
import tempfile
import urllib.parse
from typing import Any
from typing import Dict
from typing import List
from typing import Mapping
from typing import Optional
from typing import Sequence

from ZConfig.cfgparser import _keyvalue_rx

from multidb.config import _Loader
from multidb.config import _Parser
from multidb.config import _get_schema
from multidb.config import _url
from multidb.config import collectionFromFiles
from multidb.errors import CannotWrite
from multidb.errors import DatabaseLocked
from multidb.errors import MissingStorage
from multidb.errors import NotConfigured
from multidb.files import replacing
from multidb.tenants.catalog import SECRET_DSN_KEYS
from multidb.tenants.catalog import strip_credentials

#: The keys of ZODB's ``<zodb>`` section (ZODB/component.xml): those of
#: a ``<tenants>`` template that go to every tenant's section.
ZODB_DB_KEYS = frozenset([
    'cache-size', 'cache-size-bytes', 'historical-pool-size',
    'historical-cache-size', 'historical-cache-size-bytes',
    'historical-timeout', 'large-record-size', 'pool-size', 'pool-timeout',
    'allow-implicit-cross-references'])
# Keys whose value is a secret, in any storage section (RelStorage's
# <mysql> says passwd).
_SECRET_KEYS = frozenset(SECRET_DSN_KEYS + ('passwd',))
# Keys holding a file or folder: made absolute.
_PATH_KEYS = frozenset(['path', 'blob-dir'])
# Section types that ZODB's schema does not know without an %import.
_IMPORTS_OF_TYPES = {'zodburi': 'multidb', 'relstorage': 'relstorage',
                     'clientstorage': 'ZEO'}
# A ZConfig section name (lowercased by ZConfig; database-name keeps the
# case).
_SECTION_NAME = re.compile(r'[^\s()<>/]+\Z')


@dataclasses.dataclass(frozen=True)
class Export:
    """An exported configuration: its ``text``, the names of its
    databases (configured ones first, then the tenants), and what was
    left out (``redacted``: one line per secret, naming its database)."""

    text: str
    databases: List[str]
    redacted: List[str]
    with_secrets: bool

    def write(self, path: str) -> None:
        """Write the text to path, atomically (a crash leaves the old
        file or the new); private to its owner when it holds secrets.
        Raises ``CannotWrite`` (an ``OSError``) naming path."""
        try:
            with replacing(path, exclusive=False) as f:
                if self.with_secrets:
                    # Before the secrets are in it.
                    os.fchmod(f.fileno(), 0o600)
                f.write(self.text.encode('utf-8'))
        except OSError as e:
            raise CannotWrite(path, e) from None


# -- reading the configuration as written ------------------------------------

class _Node:
    """A section as written: its type, name, where it starts, and its
    items in order: ('key', key, value) or ('section', _Node)."""

    __slots__ = ('type', 'name', 'url', 'line', 'items')

    def __init__(self, type_, name, url, line):
        self.type = type_
        self.name = name
        self.url = url
        self.line = line
        self.items = []

    def keys(self):
        return [(item[1], item[2]) for item in self.items
                if item[0] == 'key']

    def sections(self):
        return [item[1] for item in self.items if item[0] == 'section']


class _RecordingParser(_Parser):
    """multidb's parser, telling the loader every key (after
    substitution) and ``%import``."""

    __slots__ = ()

    def handle_key_value(self, section, rest):
        m = _keyvalue_rx.match(rest)
        if m:
            key, value = m.group('key', 'value')
            self.context._key(key.lower(),
                              self.replace(value) if value else '')
        super().handle_key_value(section, rest)

    def handle_import(self, section, rest):
        self.context.imports.append(self.replace(rest.strip()))
        super().handle_import(section, rest)


class _RecordingLoader(_Loader):
    """multidb's loader, recording the sections as written (a tree of
    ``_Node``) while it parses."""

    parser_class = _RecordingParser

    def __init__(self, schema, defines=None):
        super().__init__(schema, defines)
        self.root = _Node(None, None, None, 0)
        self._stack = [self.root]
        self.imports: List[str] = []

    def startSection(self, parent, type_, name):
        matcher = super().startSection(parent, type_, name)
        url, line, _ = matcher.multidb_where
        node = _Node(type_, name, url, line)
        self._stack[-1].items.append(('section', node))
        self._stack.append(node)
        return matcher

    def endSection(self, parent, type_, name, matcher):
        super().endSection(parent, type_, name, matcher)
        self._stack.pop()

    def _key(self, key, value):
        self._stack[-1].items.append(('key', key, value))


def _written(files: Sequence[str], defines: Optional[Mapping[str, str]]):
    """(database nodes by (url, line), tenants node or None, imports) of
    the configuration files as written."""
    loader = _RecordingLoader(_get_schema(), defines)
    loader.load([_url(f) for f in files])
    databases = {}
    tenants = None
    for node in loader.root.sections():
        inner = node.sections() if node.type == 'multidb' else [node]
        for sub in inner:
            if sub.type == 'tenants':
                tenants = sub
            else:
                databases[(sub.url, sub.line)] = sub
    return databases, tenants, loader.imports


# -- writing -----------------------------------------------------------------

def _redact_uri(value):
    # scheme://user:password@host/...: the password goes.
    try:
        parts = urllib.parse.urlsplit(value)
    except ValueError:
        return value
    if not parts.netloc or parts.password is None:
        return value
    host = parts.netloc.rsplit('@', 1)[1]
    user = parts.username or ''
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}@{host}"))


def _section_lines(node: _Node, indent: str, name: str,
                   redacted: List[str], with_secrets: bool,
                   skip=frozenset()) -> List[str]:
    """The lines of node as written, secrets left out unless
    with_secrets (noted in redacted, naming the database name)."""
    head = f"{indent}<{node.type}{' ' + node.name if node.name else ''}>"
    lines = [head]
    for item in node.items:
        if item[0] == 'section':
            lines += _section_lines(item[1], indent + '  ', name, redacted,
                                    with_secrets)
            continue
        _, key, value = item
        if key in skip:
            continue
        if not with_secrets:
            if key in _SECRET_KEYS:
                redacted.append(f"database {name!r}: its {key} key")
                continue
            if key == 'dsn':
                clean = strip_credentials(value)
                if clean != value:
                    redacted.append(f"database {name!r}: the password"
                                    f" of its dsn")
                value = clean
            elif '://' in value:
                clean = _redact_uri(value)
                if clean != value:
                    redacted.append(f"database {name!r}: the password"
                                    f" of its {key}")
                value = clean
        if key in _PATH_KEYS and value:
            value = os.path.abspath(os.path.expanduser(value))
        lines.append(f"{indent}  {key} {value}".rstrip())
    lines.append(f"{indent}</{node.type}>")
    return lines


def _open_tag(kind: str, name: str) -> str:
    section = name.lower() if _SECTION_NAME.match(name) else ''
    return f"<{kind}{' ' + section if section else ''}>"


def export_config(collection: Any, *,
                  defines: Optional[Mapping[str, str]] = None,
                  with_secrets: bool = False) -> Export:
    """The collection as a ZODB configuration (see the module).

    collection: one loaded from configuration files (its
    ``configuration.files``), which are read again with defines (those
    the collection was loaded with: ``multidb -D``).  Reads the catalog
    (a batch of records at a time), opens no tenant.  Raises
    ``NotConfigured`` for a collection built in code."""
    configuration = getattr(collection, 'configuration', None)
    if configuration is None or not configuration.files:
        raise NotConfigured("export-config needs a collection loaded from"
                            " configuration files (its configured"
                            " databases are written as the files spell"
                            " them)")
    nodes, tenants_node, imports = _written(configuration.files, defines)
    redacted: List[str] = []
    names: List[str] = []
    blocks: List[str] = []
    kinds = set()
    for name, source in configuration.sources.items():
        node = nodes.get((source.url, source.line))
        if node is None:  # pragma: no cover (the files changed meanwhile)
            raise NotConfigured(f"database {name!r}: its section at"
                                f" {source} is not where it was")
        lines = _section_lines(node, '', name, redacted, with_secrets,
                               skip={'database-name'})
        lines[0] = _open_tag(node.type, name)
        lines.insert(1, f"  database-name {name}")
        kinds.add(node.type)
        kinds.update(_types(node))
        names.append(name)
        blocks.append('\n'.join(lines))
    tenants = None
    try:
        tenants = collection.tenants
    except NotConfigured:
        pass
    if tenants is not None:
        template_keys = [] if tenants_node is None else [
            (k, v) for k, v in tenants_node.keys() if k in ZODB_DB_KEYS]
        for rec in tenants.records():
            # ValueError for a record of another storage kind: a database
            # is never left out.
            backend = tenants.backend_for(rec)
            storage = backend.storage_config(rec.settings,
                                             secrets=with_secrets)
            if not with_secrets and storage != backend.storage_config(
                    rec.settings, secrets=True):
                redacted.append(f"database {rec.name!r}: the password of"
                                f" its dsn")
            kinds.add(rec.kind)
            lines = [_open_tag('zodb', rec.name),
                     f"  database-name {rec.name}"]
            lines += [f"  {k} {v}" for k, v in template_keys]
            lines += ['  ' + line for line in storage.split('\n')]
            lines.append('</zodb>')
            names.append(rec.name)
            blocks.append('\n'.join(lines))
    wanted = [i for i in imports if i != 'multidb']
    for kind in sorted(kinds):
        package = _IMPORTS_OF_TYPES.get(kind)
        if package and package not in wanted:
            wanted.append(package)
    header = [
        "# A ZODB configuration written by 'multidb export-config' from",
        *(f"#   {f}" for f in configuration.files),
        f"# {len(names)} databases, one section each: the configured"
        f" ones, then the tenants.",
    ]
    if with_secrets:
        header.append("# Written with --with-secrets: any password is in"
                      " it; keep it private.")
    elif redacted:
        header.append("# Secrets left out (libpq's passfile or PGPASSWORD"
                      " must supply them; --with-secrets writes them):")
        header += [f"#   {line}" for line in redacted]
    else:
        header.append("# It holds no secrets.")
    text = '\n'.join(header + [f"%import {p}" for p in wanted]
                     + [''] + ['\n\n'.join(blocks)]) + '\n'
    return Export(text, names, redacted, with_secrets)


def _types(node):
    for sub in node.sections():
        yield sub.type
        yield from _types(sub)


# -- garbage collection across databases -------------------------------------

@dataclasses.dataclass(frozen=True)
class GarbageCollection:
    """What ``collect_garbage`` deleted: database name -> the number of
    objects deleted there (every database of the collection, 0 for
    most), and the databases it looked at."""

    deleted: Dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.deleted.values())

    def to_json(self) -> Dict[str, Any]:
        return {'deleted': dict(self.deleted), 'total': self.total}


def collect_garbage(paths: Sequence[str], *,
                    defines: Optional[Mapping[str, str]] = None,
                    days: float = 1,
                    ignore: Sequence[str] = ()) -> GarbageCollection:
    """Delete the objects that no database's root reaches, following
    references across databases, with zc.zodbdgc (the ``gc`` extra),
    over the configuration that ``export_config`` writes for the
    collection of the configuration files paths.

    Objects written in the last ``days`` days are kept (and what they
    reference).  ``ignore``: names of databases whose references are not
    followed (a database that is gone: zc.zodbdgc stops at a reference to
    a database it does not know).  The deleted objects' space comes back
    at the next pack (``multidb pack``).

    Every database is opened for writing by this process for the run: a
    FileStorage must not be open elsewhere (stop the application, or
    serve the databases with ZEO), else ``DatabaseLocked`` (naming its
    file), and nothing is deleted; so is nothing when a tenant's storage
    is missing (``MissingStorage``: the run would make it, empty).
    Returns a ``GarbageCollection``."""
    import zc.lockfile
    try:
        import zc.zodbdgc
    except ImportError:  # pragma: no cover (the test extra has it)
        raise NotConfigured("multidb gc needs zc.zodbdgc: pip install"
                            " 'multidb[gc]'") from None
    from multidb.tenants.packing import check_days
    days = check_days(days)
    collection = collectionFromFiles(paths, defines=defines)
    try:
        _check_tenants_exist(collection)
        export = export_config(collection, defines=defines,
                               with_secrets=True)
    finally:
        # Closed before the collection runs: it opens every storage.
        collection.close()
    fd, conf = tempfile.mkstemp(prefix='.multidb-gc-', suffix='.conf')
    try:
        with os.fdopen(fd, 'w') as f:   # mkstemp: private to the owner
            f.write(export.text)
        # In a thread of its own: zc.zodbdgc commits its deletions
        # through the thread's default transaction manager, and must not
        # end a transaction the caller has open.
        with concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix='multidb-gc') as pool:
            bad = pool.submit(zc.zodbdgc.gc, conf, days, tuple(ignore),
                              ptid=_ptid(days), return_bad=True).result()
    except zc.lockfile.LockError as e:
        # A FileStorage open in another process (or in this one).
        m = re.search(r"lock '(.*)\.lock'", str(e))
        raise DatabaseLocked(m.group(1) if m else '?', str(e)) from None
    finally:
        os.unlink(conf)
    deleted = {name: 0 for name in export.databases}
    for name, _ in bad or ():
        deleted[name] = deleted.get(name, 0) + 1
    return GarbageCollection(deleted)


def _check_tenants_exist(collection: Any) -> None:
    """Raise MissingStorage for a tenant whose storage is gone: ZODB's
    ``<filestorage>`` makes a missing file, and the collection would look
    at an empty tenant, not at missing data."""
    try:
        tenants = collection.tenants
    except NotConfigured:
        return
    for rec in tenants.records():
        backend = tenants.backend_for(rec)
        if not backend.exists(rec.settings):
            raise MissingStorage(rec.name, backend.describe(rec.settings))


def _ptid(days: float) -> bytes:
    # The transaction id days ago: what is younger is not garbage.
    import time
    from persistent.TimeStamp import TimeStamp
    # To the microsecond: zc.zodbdgc's own rounds down to the second,
    # and would leave out what this second committed.
    t = time.time() - 86400 * days
    g = time.gmtime(t)
    return TimeStamp(*g[:5], g.tm_sec + t % 1).raw()
