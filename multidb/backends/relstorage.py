"""Tenants as PostgreSQL databases, through RelStorage.

See ``multidb.interfaces.IBackend``.

Each tenant is a database of its own, ``CREATE DATABASE <prefix><name>
TEMPLATE <template>``, the template being a database that already holds
RelStorage's schema (made on first use, and never connected to while
copied: PostgreSQL refuses to copy a template anybody is connected to).
Identifiers are quoted by psycopg2's ``sql.Identifier``, never formatted
into SQL.  Snapshots are FileStorage files in a local folder; a load
(revert, restore) fills a new database and swaps it in with two renames in
one transaction, so a crash leaves the old data or the new.

A tenant's database carries its tenant id in its comment (``COMMENT ON
DATABASE``, kept across renames, not copied by ``CREATE DATABASE ...
TEMPLATE``), set before the database takes its final name: ``repair``
knows a database by that id, whatever the configuration's dsn looks like.
Records hold the dsn without its password: the configuration's (or
libpq's passfile, ``PGPASSWORD``) is used at each connection.

A schema per tenant (one database, ``search_path``) does not work with
RelStorage 4.3: its schema installer checks its stored procedures
without regard to the search path and fails with "Could not get version
information after installing the stored procedures".
"""
import contextlib
import functools
import os
import re
import threading
import uuid
from typing import TYPE_CHECKING
from typing import Any
from typing import BinaryIO
from typing import Callable
from typing import Dict
from typing import Iterator
from typing import List
from typing import Mapping
from typing import Optional
from typing import Sequence
from typing import Tuple

from zope.interface import implementer

from multidb.errors import InvalidName
from multidb.errors import MissingStorage
from multidb.errors import NotConfigured
from multidb.errors import NotWritable
from multidb.errors import StorageInTheWay
from multidb.files import copy_file
from multidb.files import rmtree_if_present
from multidb.files import tmp_name
from multidb.files import unlink_if_present
from multidb.interfaces import IBackend
from multidb.retry import lost_connection
from multidb.tenants.catalog import SECRET_DSN_KEYS
from multidb.tenants.catalog import is_tenant_id
from multidb.tenants.catalog import new_tenant_id
from multidb.tenants.catalog import strip_credentials

if TYPE_CHECKING:  # pragma: no cover
    from ZODB.DB import DB

PLACEHOLDER = '{name}'
# PostgreSQL truncates identifiers longer than this, silently.
MAX_IDENTIFIER = 63
# Temporary databases carry a character no tenant name has.
_TEMP_MARK = '~'
# What a temporary database's name adds to the tenant's: '~', a kind of
# three letters and six hex digits.  A tenant's database name leaves room
# for it, so that a temporary name is never truncated (and always says
# whose it is).
_TEMP_LENGTH = 10
# The comment of a tenant's database: this and its tenant id.
_ID_MARK = 'multidb-tenant-id:'
# The comment of a template database: this and its kind (hf or hp).
_TEMPLATE_MARK = 'multidb-template:'
# Temporary files of snapshots, dumps and loads (and FileStorage's own
# companions of those it opens).
_TMP_RE = re.compile(r'\A\..+\.\d+\.multidb-tmp'
                     r'(?:\.(?:index|lock|tmp|old|pack))?\Z')
# A tenant's storage settings, as recorded (see IBackend).
_Settings = Mapping[str, Any]


def _psycopg2():
    try:
        import psycopg2
        import psycopg2.extensions
        import psycopg2.sql
    except ImportError:  # pragma: no cover (the test extra has it)
        raise NotConfigured("tenants on PostgreSQL need psycopg2: pip install"
                            " psycopg2-binary") from None
    return psycopg2


def dsn_with(dsn: str, **changes: Any) -> str:
    """dsn with keys replaced, e.g. dbname."""
    pg = _psycopg2()
    params = pg.extensions.parse_dsn(dsn)
    params.update(changes)
    return pg.extensions.make_dsn(**params)


# Snapshots kept in a snapshot database: rows of this many bytes.
_SNAPSHOT_CHUNK = 8 * 1024 * 1024


@implementer(IBackend)
class RelStorageBackend:
    """dsn: the libpq connection string of a tenant, with ``{name}`` in
    its dbname (e.g. ``host=db user=app dbname=tenant_{name}``);
    admin_dsn: a connection for CREATE and DROP DATABASE (default: dsn with
    dbname=postgres); template: the template database's name; options:
    RelStorage options (``keep_history`` ...); snapshot_dir: the local
    folder of snapshot files (and of the files that clones and restores
    go through); snapshot_database: keep snapshots on the server instead,
    in that database of the tenants' cluster (made on first use), so that
    every host lists and reverts to them; snapshot_dir then only stages
    them."""

    kind = 'relstorage'

    def __init__(self, dsn: str, *, admin_dsn: Optional[str] = None,
                 template: Optional[str] = None,
                 snapshot_dir: Optional[str] = None,
                 snapshot_database: Optional[str] = None,
                 **options: Any) -> None:
        pg = _psycopg2()
        if dsn.count(PLACEHOLDER) != 1:
            raise ValueError(f"the tenant dsn {strip_credentials(dsn)!r}"
                             f" must contain {PLACEHOLDER} exactly once")
        probe = pg.extensions.parse_dsn(dsn.replace(PLACEHOLDER, 'x'))
        dbname = probe.get('dbname', '')
        if 'x' not in dbname:
            raise ValueError(f"the tenant dsn {strip_credentials(dsn)!r}"
                             f" must hold {PLACEHOLDER} in its dbname")
        self.dsn = dsn
        # The secrets of the configured dsn: added at each connection to a
        # recorded dsn, which holds none.
        self._secrets = {k: probe[k] for k in SECRET_DSN_KEYS if k in probe}
        # Tenant names are lowercase: an uppercase marker cannot clash.
        self._prefix, self._suffix = pg.extensions.parse_dsn(
            dsn.replace(PLACEHOLDER, 'MULTIDBNAME'))['dbname'].split(
                'MULTIDBNAME')
        self.admin_dsn = admin_dsn or dsn_with(
            dsn.replace(PLACEHOLDER, 'x'), dbname='postgres')
        self.options = dict(options)
        self.keep_history = bool(self.options.get('keep_history', True))
        self._explicit_template = template
        self.template = self.template_for(self.keep_history)
        self.snapshot_dir = snapshot_dir
        self.snapshot_database = snapshot_database
        self._snapshot_store_ready = False
        #: The backend whose snapshot database keeps this one's snapshots
        #: (another server's, in a ServerSet: see multidb.backends.servers).
        self.snapshot_owner = self
        self._template_lock = threading.Lock()
        # The admin connection of the operation this thread runs, if any,
        # and the advisory locks it holds (see name_lock).
        self._local = threading.local()
        self._templates_ready = set()
        self._name_re = re.compile(re.escape(self._prefix) +
                                   r'([a-z][a-z0-9_-]*)' +
                                   re.escape(self._suffix) + r'\Z')
        if snapshot_database is not None:
            self._check_snapshot_database(snapshot_database)

    def __repr__(self):
        return (f"<RelStorageBackend {self._prefix}{PLACEHOLDER}"
                f"{self._suffix}>")

    @classmethod
    def from_template(cls, template: Any) -> 'RelStorageBackend':
        """The backend of a ``<tenants>`` template whose storage is a
        ``<relstorage>`` (a ``multidb.sections.TenantTemplate``): the
        dsn of its ``<postgresql>`` adapter is the dsn template, and
        RelStorage's options (its own reading of the section, the
        adapter's driver included) go to each tenant's storage, with the
        template's admin-dsn, template-database and snapshot-dir.
        ``ValueError`` naming what cannot be honoured: another adapter
        than PostgreSQL, a storage ``name`` (each tenant's storage is
        named after its database)."""
        from relstorage.options import Options
        config = template.storage.config
        adapter = config.adapter
        kind = adapter.config.getSectionType()
        if kind != 'postgresql':
            raise ValueError(
                f"the tenants template's relstorage has a <{kind}> adapter:"
                f" tenants on RelStorage need <postgresql>")
        if config.name is not None:
            raise ValueError(
                "the tenants template's relstorage cannot set name: each"
                " tenant's storage is named after its database")
        # RelStorage's own reading of its section (RelStorageFactory.open
        # hoists the adapter's driver too), less what is per storage.
        options = Options.copy_valid_options(config).__dict__
        options['driver'] = adapter.config.driver
        options = {k: v for k, v in options.items()
                   if k not in ('adapter', 'name')
                   and v != getattr(Options, k, object())}
        try:
            main = cls(adapter.config.dsn, admin_dsn=template.admin_dsn,
                       template=template.template_database,
                       snapshot_dir=template.snapshot_dir,
                       snapshot_database=getattr(
                           template, 'snapshot_database', None),
                       **options)
        except ValueError as e:
            raise ValueError(f"the tenants template's relstorage: {e}") \
                from None
        sections = getattr(template, 'servers', None) or ()
        if not sections:
            return main
        return cls._server_set(template, main, sections, options)

    @classmethod
    def _server_set(cls, template, main, sections, options):
        # <server NAME> sections: a ServerSet (multidb.backends.servers).
        from multidb.backends.servers import ServerSet
        main_name = template.server_name
        servers = {_server_name(main_name, 'server-name'): main}
        capacities = {}
        if template.server_capacity is not None:
            capacities[main_name] = template.server_capacity
        for section in sections:
            name = _server_name(section.getSectionName(), '<server>')
            if name in servers:
                raise ValueError(f"two tenant servers are named {name!r}"
                                 f" (the template's own is"
                                 f" {main_name!r}: server-name)")
            try:
                servers[name] = cls(
                    section.dsn, admin_dsn=section.admin_dsn,
                    template=template.template_database,
                    snapshot_dir=template.snapshot_dir, **options)
            except ValueError as e:
                raise ValueError(f"<server {name}>: {e}") from None
            if section.capacity is not None:
                capacities[name] = section.capacity
        try:
            return ServerSet(servers, main=main_name,
                             placement=template.placement,
                             capacities=capacities)
        except ValueError as e:
            raise ValueError(f"the tenants' servers: {e}") from None

    def template_for(self, keep_history: bool) -> str:
        """The template database of tenants of that kind: the configured
        one for the configured kind; for the other kind (tenants made
        before keep-history changed), the default name, or the configured
        name with _hp or _hf."""
        keep_history = bool(keep_history)
        kind = 'hp' if keep_history else 'hf'
        if self._explicit_template is None:
            return 'multidb_template_' + kind
        if keep_history == self.keep_history:
            return self._explicit_template
        return f'{self._explicit_template}_{kind}'

    def _templates(self):
        return {self.template_for(True), self.template_for(False)}

    # -- SQL ----------------------------------------------------------------

    def _admin(self, *statements, params=None, fetch=False):
        """Run statements on an admin connection of their own, each in
        autocommit (CREATE and DROP DATABASE refuse transaction blocks).

        Not on the connection that holds the operation's lock: that one
        sits idle while data is copied, and a connection lost while idle
        (a server restart, an idle timeout) must not fail the statement
        that happens to come next; check_lock finds it out."""
        conn = _psycopg2().connect(self.admin_dsn)
        try:
            return self._execute(conn, statements, params, fetch)
        finally:
            conn.close()

    @staticmethod
    def _execute(conn, statements, params, fetch):
        conn.autocommit = True
        with conn.cursor() as cur:
            rows = None
            for stmt in statements:
                cur.execute(stmt, params)
                if fetch:
                    rows = cur.fetchall()
            return rows

    @staticmethod
    def _ident(name):
        return _psycopg2().sql.Identifier(name)

    def _sql(self, text, *names):
        sql = _psycopg2().sql
        return sql.SQL(text).format(*[sql.Identifier(n) for n in names])

    def _database_exists(self, dbname):
        return bool(self._admin(
            'SELECT 1 FROM pg_database WHERE datname = %s',
            params=(dbname,), fetch=True))

    def _with_secrets(self, dsn):
        # A recorded dsn holds no password: the configuration's, if it has
        # one (else libpq's passfile or PGPASSWORD).
        if not self._secrets:
            return dsn
        pg = _psycopg2()
        params = pg.extensions.parse_dsn(dsn)
        for key, value in self._secrets.items():
            params.setdefault(key, value)
        return pg.extensions.make_dsn(**params)

    def _options(self, keep_history=None, **changes):
        from relstorage.options import Options
        options = dict(self.options, **changes)
        if keep_history is not None:
            options['keep_history'] = bool(keep_history)
        return Options(**options)

    def _open_relstorage(self, dsn, options=None):
        from relstorage.adapters.postgresql import PostgreSQLAdapter
        from relstorage.storage import RelStorage
        options = options if options is not None else self._options()
        return RelStorage(PostgreSQLAdapter(dsn=dsn, options=options),
                          options=options)

    def ensure_template(self, keep_history: Optional[bool] = None,
                        template: Optional[str] = None) -> str:
        """Make the template database of tenants of that kind (default:
        the configured kind), with RelStorage's schema, once, and return
        its name (template, or the configured one of the kind); processes
        take turns (an advisory lock), so two never race to make it."""
        if keep_history is None:
            keep_history = self.keep_history
        template = template or self.template_for(keep_history)
        with self._template_lock:
            if template in self._templates_ready:
                return template
            with self._advisory_lock('multidb-template:' + template):
                if not self._database_exists(template):
                    tmp = self._temp_name(template, 'mak')
                    try:
                        # Known as a template by what it is (repair).
                        self._admin(
                            self._sql('CREATE DATABASE {}', tmp),
                            self._comment(tmp, _TEMPLATE_MARK + (
                                'hp' if keep_history else 'hf')))
                        # RelStorage lays down its schema in an empty
                        # database.
                        self._open_relstorage(
                            self._dsn_for_db(tmp),
                            self._options(keep_history)).close()
                        self._admin(self._sql(
                            'ALTER DATABASE {} RENAME TO {}', tmp, template))
                    except BaseException:
                        self._drop_quietly(tmp)
                        raise
            self._templates_ready.add(template)
        return template

    def _dsn_for_db(self, dbname):
        return dsn_with(self.dsn.replace(PLACEHOLDER, 'x'), dbname=dbname)

    @staticmethod
    def _temp_name(dbname, kind):
        return dbname + _TEMP_MARK + kind + uuid.uuid4().hex[:6]

    def _drop_quietly(self, dbname):
        # Cleaning up after a failure: a failure here leaves a temporary
        # database that repair drops; the first error is the one to see.
        try:
            self._admin(self._sql('DROP DATABASE IF EXISTS {} WITH (FORCE)',
                                  dbname))
        except Exception:
            pass

    # -- for moves between servers (multidb.backends.pgmove) ---------------

    def admin(self, *statements: Any, params: Any = None,
              fetch: bool = False) -> Any:
        """Run statements on an admin connection (see _admin)."""
        return self._admin(*statements, params=params, fetch=fetch)

    def database_exists(self, dbname: str) -> bool:
        return self._database_exists(dbname)

    def temp_name(self, dbname: str, kind: str) -> str:
        """A temporary database name of dbname (repair knows it)."""
        return self._temp_name(dbname, kind)

    def drop_quietly(self, dbname: str) -> None:
        self._drop_quietly(dbname)

    def comment(self, dbname: str, text: str) -> Any:
        """The statement setting dbname's comment."""
        return self._comment(dbname, text)

    @staticmethod
    def id_comment(tenant_id: str) -> str:
        """The comment that says a database is the tenant's."""
        return _ID_MARK + tenant_id

    def tenant_dsn(self, settings: _Settings) -> str:
        """The tenant's recorded dsn with the configured secrets."""
        return self._with_secrets(settings['dsn'])

    def open_storage(self, settings: _Settings,
                     dbname: Optional[str] = None) -> Any:
        """A RelStorage of the tenant's database (dbname: another
        database of this server, of the same kind), never making a
        schema."""
        dsn = self.tenant_dsn(settings)
        if dbname is not None:
            dsn = dsn_with(dsn, dbname=dbname)
        return self._open_relstorage(dsn, self._options(
            settings.get('keep_history', self.keep_history),
            create_schema=False))

    def snapshot_folder(self, settings: _Settings) -> Optional[str]:
        """The local folder of the tenant's snapshot files (made by
        nothing here), or None without a snapshot-dir."""
        return self._snapshot_folder(settings, create=False)

    def same_cluster(self, other: 'RelStorageBackend') -> bool:
        """Is other's server this one's, however its dsn is spelled (a
        host name or an address, another port option ...)?  Proved, not
        guessed: an advisory lock of a random key, taken here, is looked
        for in other's server's lock table."""
        key = uuid.uuid4().int >> 66   # positive, below 2**62
        conn = _psycopg2().connect(self.admin_dsn)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute('SELECT pg_advisory_lock(%s)', (key,))
            rows = other._admin(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                " AND objsubid = 1 AND ((classid::bigint << 32) |"
                " objid::bigint) = %s", params=(key,), fetch=True)
            return bool(rows[0][0])
        finally:
            conn.close()

    def move_mark(self, dbname: str) -> Optional[Dict[str, str]]:
        """The mark of a move between servers in dbname's comment (see
        parse_move), or None (no mark, no such database)."""
        rows = self._admin(
            'SELECT shobj_description(oid, %s) FROM pg_database'
            ' WHERE datname = %s', params=('pg_database', dbname),
            fetch=True)
        return parse_move(rows[0][0]) if rows else None

    def name_of(self, dbname: str) -> str:
        """The tenant name of a tenant database's name."""
        return self._name_of(dbname)

    def describe_server(self) -> str:
        """Where the server is: host and port of the admin dsn."""
        params = _psycopg2().extensions.parse_dsn(self.admin_dsn)
        return (f"{params.get('host', 'localhost')}:"
                f"{params.get('port', '5432')}")

    def usage(self, sizes: bool = True) -> Tuple[int, Optional[int]]:
        """(tenant databases, their total size in bytes) on the server:
        the databases named as a tenant's that carry a tenant id.  The
        size (a walk of every database's files) only with sizes, else
        None."""
        rows = self._admin(
            'SELECT datname, shobj_description(oid, %s),'
            + (' pg_database_size(oid)' if sizes else ' 0') +
            ' FROM pg_database WHERE NOT datistemplate',
            params=('pg_database',), fetch=True)
        count = size = 0
        for dbname, comment, bytes_ in rows:
            # Those named as tenants' that carry a tenant id.
            if self._name_re.match(dbname) and _parse_id(comment):
                count += 1
                size += int(bytes_)
        return count, (size if sizes else None)

    # -- locks ------------------------------------------------------------

    @contextlib.contextmanager
    def _advisory_lock(self, key):
        """A PostgreSQL advisory lock on key, held by a connection of its
        own (released by the server if we die)."""
        conn = _psycopg2().connect(self.admin_dsn)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute('SELECT pg_advisory_lock(hashtext(%s))', (key,))
            yield
        finally:
            conn.close()

    @contextlib.contextmanager
    def name_lock(self, name: str) -> Iterator[None]:
        """Serialize lifecycle operations on one tenant name across
        processes: a PostgreSQL advisory lock, held by a connection of its
        own for the operation (released by the server if we die, or if
        the connection is lost: see check_lock)."""
        local = self._local
        key = 'multidb:' + self._prefix + name
        if not getattr(local, 'keys', None):
            local.conn, local.keys, local.lost = None, [key], False
            try:
                local.conn = self._lock_connection([key])
                yield
            finally:
                conn, local.conn, local.keys = local.conn, None, []
                if conn is not None:
                    conn.close()
            return
        # Nested (clone holds two names): one connection holds both.
        local.keys.append(key)
        try:
            try:
                if local.conn is None:
                    raise _psycopg2().InterfaceError(
                        'connection already closed')
                self._lock_on(local.conn, [key])
            except Exception as e:
                if local.conn is not None and not (
                        local.conn.closed or lost_connection(e)):
                    raise
                self._relock()
            yield
        finally:
            local.keys.remove(key)
            conn = local.conn
            if conn is not None and not conn.closed:
                try:
                    with conn.cursor() as cur:
                        cur.execute('SELECT pg_advisory_unlock(hashtext(%s))',
                                    (key,))
                except Exception:
                    pass   # the session is gone, and its locks with it

    def _lock_connection(self, keys):
        conn = _psycopg2().connect(self.admin_dsn)
        try:
            conn.autocommit = True
            self._lock_on(conn, keys)
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _lock_on(conn, keys):
        with conn.cursor() as cur:
            for key in keys:
                cur.execute('SELECT pg_advisory_lock(hashtext(%s))', (key,))

    def _relock(self):
        """Take this thread's advisory locks again on a new connection
        (waiting for whoever took them meanwhile); say so (local.lost)."""
        local = self._local
        local.lost = True
        old, local.conn = local.conn, None
        try:
            old.close()
        except Exception:
            pass
        local.conn = self._lock_connection(local.keys)

    def check_lock(self, name: str) -> bool:
        """Before a commit: is the operation's lock still held?  False
        when it was held all along; True when its connection was lost
        (and the server released it) since the operation began: the lock
        is taken again (waiting for whoever took it meanwhile), and the
        operation must check that what it made is still there and its
        own before it commits.  Raises a lost connection's error when the
        lock cannot be taken again."""
        local = self._local
        if not getattr(local, 'keys', None):
            return False   # no operation holds a lock in this thread
        conn = local.conn
        try:
            if conn is None:
                raise _psycopg2().InterfaceError('connection already closed')
            with conn.cursor() as cur:
                cur.execute('SELECT 1')
        except Exception as e:
            if conn is not None and not (conn.closed or lost_connection(e)):
                raise
            self._relock()
        lost, local.lost = local.lost, False
        return lost

    # -- settings and factories --------------------------------------------

    def settings_for(self, name: str) -> Dict[str, Any]:
        """A new tenant's settings: its database, the dsn without secrets,
        its kind (history or not) and a new tenant id."""
        dbname = self._prefix + name + self._suffix
        limit = MAX_IDENTIFIER - _TEMP_LENGTH
        if len(dbname.encode('utf-8')) > limit:
            raise InvalidName(name, f"the database name {dbname!r} would be"
                                    f" longer than {limit} bytes"
                                    f" (PostgreSQL's {MAX_IDENTIFIER} bytes,"
                                    f" less {_TEMP_LENGTH} for multidb's"
                                    f" temporary names)")
        return {'kind': self.kind, 'dbname': dbname,
                'dsn': strip_credentials(self.dsn.replace(PLACEHOLDER, name)),
                'keep_history': self.keep_history,
                'template': self.template,
                'id': new_tenant_id()}

    def relocated(self, record_settings: _Settings,
                  name: str) -> Dict[str, Any]:
        """The settings of the current configuration for the recorded
        tenant name: the dsn as configured now (without secrets), its own
        id and kind."""
        new = self.settings_for(name)
        for key in ('keep_history', 'template'):
            if key in record_settings:
                new[key] = record_settings[key]
            else:
                del new[key]
        if 'id' in record_settings:
            new['id'] = record_settings['id']
        else:
            del new['id']
        return new

    def factory(self, settings: _Settings, *, name: Optional[str] = None,
                create: bool = False) -> Callable[[], Any]:
        """Opens the tenant's database, as recorded (its dsn and kind);
        never makes a schema unless create (a database dropped and made
        again empty must not look like an empty tenant)."""
        return functools.partial(self._open_tenant, dict(settings), name,
                                 create)

    def _open_tenant(self, settings, name, create):
        options = self._options(
            settings.get('keep_history', self.keep_history),
            **({} if create else {'create_schema': False}))
        try:
            return self._open_relstorage(
                self._with_secrets(settings['dsn']), options)
        except Exception as e:
            try:
                detail = self._missing(settings)
            except Exception:
                detail = None   # the server is away: the error says so
            if detail is None:
                raise
            raise MissingStorage(name or settings['dbname'],
                                 self.describe(settings), detail) from e

    def _missing(self, settings):
        # Why the tenant's database is not the tenant's, or None.
        rows = self._admin(
            'SELECT shobj_description(oid, %s) FROM pg_database'
            ' WHERE datname = %s', params=('pg_database', settings['dbname']),
            fetch=True)
        if not rows:
            return 'does not exist'
        tid = settings.get('id')
        found = _parse_id(rows[0][0])
        if tid is not None and found != tid:
            return ('is not the tenant\'s: it carries '
                    + ('no tenant id' if found is None
                       else f'the id of another tenant ({found})'))
        return None

    def describe(self, settings: _Settings) -> str:
        return f"postgresql database {settings['dbname']!r}"

    def exists(self, settings: _Settings) -> bool:
        return self._database_exists(settings['dbname'])

    def identify(self, settings: _Settings) -> Optional[str]:
        """The tenant id in the comment of settings' database, or None."""
        rows = self._admin(
            'SELECT shobj_description(oid, %s) FROM pg_database'
            ' WHERE datname = %s', params=('pg_database', settings['dbname']),
            fetch=True)
        return _parse_id(rows[0][0]) if rows else None

    def same_place(self, a: _Settings, b: _Settings) -> bool:
        """Do a and b name the same database (on the configured server:
        a dsn's spelling says nothing)?"""
        return a['dbname'] == b['dbname']

    def place_key(self, settings: _Settings) -> str:
        return settings['dbname']

    # -- making and destroying -----------------------------------------------

    def prepare(self, settings: _Settings) -> None:
        """CREATE DATABASE from the template (which holds the schema),
        under a temporary name, marked with the tenant id, then renamed:
        the tenant's database carries its id from the moment it has its
        name."""
        keep_history = settings.get('keep_history', self.keep_history)
        template = self.ensure_template(keep_history,
                                        settings.get('template'))
        dbname = settings['dbname']
        tid = settings.get('id')
        if tid is None:   # a tenant recorded before ids were kept
            self._admin(self._sql('CREATE DATABASE {} TEMPLATE {}', dbname,
                                  template))
            return
        tmp = self._temp_name(dbname, 'mak')
        try:
            # One connection, three statements, each its own transaction.
            self._admin(
                self._sql('CREATE DATABASE {} TEMPLATE {}', tmp, template),
                self._comment(tmp, _ID_MARK + tid),
                self._sql('ALTER DATABASE {} RENAME TO {}', tmp, dbname))
        except BaseException:
            self._drop_quietly(tmp)
            raise

    def mark(self, settings: _Settings) -> None:
        """Store settings' tenant id with the database (relocate gives
        records made before ids were kept their id)."""
        self._mark(settings['dbname'], settings['id'])

    def _mark(self, dbname, tid):
        self._admin(self._comment(dbname, _ID_MARK + tid))

    @staticmethod
    def _comment(dbname, text):
        sql = _psycopg2().sql
        return sql.SQL('COMMENT ON DATABASE {} IS {}').format(
            sql.Identifier(dbname), sql.Literal(text))

    def check_destroy(self, settings: _Settings,
                      name: Optional[str] = None) -> None:
        """Raise NotWritable when the admin role could not drop the
        tenant's database, or its snapshot folder is not writable (checked
        before a drop commits)."""
        rows = self._admin(
            'SELECT pg_has_role(current_user, datdba, %s) OR (SELECT'
            ' rolsuper FROM pg_roles WHERE rolname = current_user)'
            ' FROM pg_database WHERE datname = %s',
            params=('MEMBER', settings['dbname']), fetch=True)
        if rows and not rows[0][0]:
            raise NotWritable(name or settings['dbname'],
                              self.describe(settings),
                              "the admin role neither owns it nor is a"
                              " superuser")
        d = self._snapshot_folder(settings, create=False)
        if d and os.path.isdir(d) and not os.access(d, os.W_OK | os.X_OK):
            raise NotWritable(name or settings['dbname'], d,
                              "Permission denied")

    def destroy(self, settings: _Settings) -> None:
        """Drop the tenant's database and delete its snapshots.

        With an id in settings, only a database carrying that id is
        dropped: another tenant's database of that name is left alone, and
        one carrying no id raises StorageInTheWay.  Without one (a record
        made before ids were kept), the database of that name is
        dropped."""
        if not self.drop_database(settings):
            return   # another tenant's now: not ours to drop
        d = self._snapshot_folder(settings, create=False)
        if d:
            rmtree_if_present(d)
        if self.snapshot_database:
            key = self._snapshot_key(settings)
            self._snapshot_sql(
                'DELETE FROM multidb_snapshot_part WHERE tenant = %s;'
                ' DELETE FROM multidb_snapshot WHERE tenant = %s',
                params=(key, key))

    def drop_database(self, settings: _Settings) -> bool:
        """Drop the tenant's database, not its snapshots (see destroy):
        a copy that a move left.  False when the database there carries
        another tenant's id (left alone)."""
        dbname = settings['dbname']
        tid = settings.get('id')
        if tid is not None:
            rows = self._admin(
                'SELECT shobj_description(oid, %s) FROM pg_database'
                ' WHERE datname = %s', params=('pg_database', dbname),
                fetch=True)
            if rows:
                found = _parse_id(rows[0][0])
                if found is None:
                    raise StorageInTheWay(self._name_of(dbname),
                                          self.describe(settings),
                                          "carries no tenant id")
                if found != tid:
                    return False
        self._admin(self._sql('DROP DATABASE IF EXISTS {} WITH (FORCE)',
                              dbname))
        return True

    def _name_of(self, dbname):
        m = self._name_re.match(dbname)
        return m.group(1) if m else dbname

    def is_locked(self, settings: _Settings) -> bool:
        return bool(self._admin(
            'SELECT 1 FROM pg_stat_activity WHERE datname = %s',
            params=(settings['dbname'],), fetch=True))

    def scan(self) -> Iterator[Tuple[str, Dict[str, Any]]]:
        """Yield (name, settings) for every tenant database of the server
        (with the id in its comment, if any), and for snapshot folders
        left without their database."""
        rows = self._admin(
            'SELECT datname, shobj_description(oid, %s) FROM pg_database'
            ' WHERE NOT datistemplate', params=('pg_database',), fetch=True)
        templates = self._templates()
        seen = set()
        for dbname, comment in sorted(rows):
            m = self._name_re.match(dbname)
            if comment and comment.startswith(_TEMPLATE_MARK):
                seen.add(dbname)
                continue   # a template (of either kind), not a tenant
            if dbname == self.snapshot_database:
                continue   # the snapshots' database, not a tenant
            if m and dbname not in templates:
                seen.add(dbname)
                settings = {'kind': self.kind, 'dbname': dbname,
                            'present': True}
                tid = _parse_id(comment)
                if tid is not None:
                    settings['id'] = tid
                move = parse_move(comment)
                if move is not None:
                    settings['move'] = move   # see Maintenance.repair
                yield m.group(1), settings
        if self.snapshot_dir and os.path.isdir(self.snapshot_dir):
            for dbname in sorted(os.listdir(self.snapshot_dir)):
                m = self._name_re.match(dbname)
                if m and dbname not in seen and os.path.isdir(
                        os.path.join(self.snapshot_dir, dbname)):
                    yield m.group(1), {'kind': self.kind, 'dbname': dbname,
                                       'present': False}

    def stray_files(self) -> List[Tuple[Optional[str], str]]:
        """What multidb may have left behind, as (tenant name or None,
        path): temporary files of the snapshot folder, and temporary
        databases (``postgresql:<name>``) of a crashed create, load or
        template creation."""
        found = []
        if self.snapshot_dir:
            for dirpath, dirs, files in os.walk(self.snapshot_dir):
                dirs.sort()
                m = self._name_re.match(os.path.basename(dirpath)) \
                    if dirpath != self.snapshot_dir else None
                for f in sorted(files):
                    if _TMP_RE.match(f):
                        found.append((m.group(1) if m else None,
                                      os.path.join(dirpath, f)))
        rows = self._admin(
            'SELECT datname, shobj_description(oid, %s) FROM pg_database'
            ' WHERE datname LIKE %s', params=('pg_database', f'%{_TEMP_MARK}%'),
            fetch=True)
        for dbname, comment in sorted(rows):
            if self._template_temp(dbname, comment):
                found.append((None, f'postgresql:{dbname}'))
                continue
            m = self._name_re.match(dbname.split(_TEMP_MARK, 1)[0])
            if m:
                found.append((m.group(1), f'postgresql:{dbname}'))
        return found

    def _template_temp(self, dbname, comment):
        # A template being made (or whose making crashed): its comment
        # says so, or its name (a crash before the comment).
        return bool(comment and comment.startswith(_TEMPLATE_MARK)) or \
            dbname.split(_TEMP_MARK, 1)[0] in self._templates()

    def stray_in_use(self, path: str) -> bool:
        """A temporary database of a template being made: its maker holds
        the template's lock (see remove_stray)."""
        return False

    def remove_stray(self, path: str) -> None:
        if path.startswith('postgresql:'):
            dbname = path[len('postgresql:'):]
            base = dbname.split(_TEMP_MARK, 1)[0]
            lock = contextlib.nullcontext()
            rows = self._admin(
                'SELECT shobj_description(oid, %s) FROM pg_database'
                ' WHERE datname = %s', params=('pg_database', dbname),
                fetch=True)
            if rows and self._template_temp(dbname, rows[0][0]):
                # Being made right now, maybe: its maker holds this lock.
                lock = self._advisory_lock('multidb-template:' + base)
            with lock:
                self._admin(self._sql(
                    'DROP DATABASE IF EXISTS {} WITH (FORCE)', dbname))
        else:
            unlink_if_present(path)

    # -- statistics, packing and export -----------------------------------

    def size(self, settings: _Settings) -> Optional[int]:
        """The database's size on the server (``pg_database_size``), or
        None when it does not exist.  Snapshots are not counted."""
        rows = self._admin(
            'SELECT pg_database_size(oid) FROM pg_database'
            ' WHERE datname = %s', params=(settings['dbname'],), fetch=True)
        return int(rows[0][0]) if rows else None

    def sizes(self, many: Sequence[_Settings]) -> List[Optional[int]]:
        """``size`` of each settings of many, in order, in one query (a
        dashboard asks for thousands)."""
        if not many:
            return []
        rows = self._admin(
            'SELECT datname, pg_database_size(oid) FROM pg_database'
            ' WHERE datname = ANY(%s)',
            params=([s['dbname'] for s in many],), fetch=True)
        found = {name: int(size) for name, size in rows}
        return [found.get(s['dbname']) for s in many]

    def last_opened(self, settings: _Settings) -> Optional[float]:
        """Not recorded: PostgreSQL keeps no time of a database's last
        connection (and recording one would cost a write per open)."""
        return None

    def contents(self, settings: _Settings,
                 db: Optional['DB'] = None) -> Tuple[int, bytes]:
        """(object count, last transaction id), counted in SQL on the
        tenant's database (RelStorage's own ``len()`` is the planner's
        estimate).  db is not needed."""
        from ZODB.utils import p64
        keep_history = settings.get('keep_history', self.keep_history)
        if keep_history:
            queries = ('SELECT count(*) FROM current_object',
                       'SELECT max(tid) FROM transaction')
        else:
            queries = ('SELECT count(*) FROM object_state',
                       'SELECT max(tid) FROM object_state')
        pg = _psycopg2()
        try:
            conn = pg.connect(self._with_secrets(settings['dsn']))
        except pg.OperationalError as e:
            detail = self._missing(settings)
            if detail is None:
                raise
            raise MissingStorage(self._name_of(settings['dbname']),
                                 self.describe(settings), detail) from e
        try:
            conn.set_session(readonly=True)
            with conn.cursor() as cur:
                cur.execute(queries[0])
                count = cur.fetchone()[0]
                cur.execute(queries[1])
                tid = cur.fetchone()[0]
            conn.rollback()
        finally:
            conn.close()
        return int(count), p64(tid or 0)

    def pack(self, settings: _Settings, db: Optional['DB'], t: float, *,
             gc: bool = False) -> None:
        """Pack the tenant's database to time t (seconds since the epoch),
        with garbage collection only when gc, through a storage instance
        of its own (RelStorage takes its ``pack-gc`` from its options, so
        the instance serving the application keeps the template's);
        processes using the tenant meanwhile are not disturbed.  db is
        not needed."""
        from ZODB.serialize import referencesf
        options = self._options(
            settings.get('keep_history', self.keep_history),
            create_schema=False, pack_gc=gc)
        storage = self._open_relstorage(
            self._with_secrets(settings['dsn']), options)
        try:
            storage.pack(t, referencesf)
        finally:
            storage.close()

    def storage_config(self, settings: _Settings, *,
                       secrets: bool = False) -> str:
        """The ZConfig storage section (RelStorage's ``<relstorage>``,
        after ``%import relstorage``) that opens the tenant's database as
        multidb opens it (never making a schema).  The dsn holds no
        password unless secrets (then the configured one is added)."""
        dsn = settings['dsn']
        dsn = self._with_secrets(dsn) if secrets else strip_credentials(dsn)
        options = dict(self.options, keep_history=settings.get(
            'keep_history', self.keep_history), create_schema=False)
        driver = options.pop('driver', None)
        lines = ['<relstorage>']
        for key, value in sorted(options.items()):
            if value is None or isinstance(value, (dict, list, tuple)):
                continue
            if isinstance(value, bool):
                value = 'true' if value else 'false'
            lines.append(f"  {key.replace('_', '-')} {value}")
        lines.append('  <postgresql>')
        if driver:
            lines.append(f'    driver {driver}')
        lines.append(f'    dsn {dsn}')
        lines += ['  </postgresql>', '</relstorage>']
        return '\n'.join(lines)

    # -- data in and out, in FileStorage format ------------------------------

    def open_data(self, db: 'DB',
                  settings: _Settings) -> Tuple[BinaryIO, int]:
        """Copy the committed data into a temporary FileStorage file and
        return it open (already unlinked) with its length."""
        from ZODB.FileStorage import FileStorage
        folder = self._snapshot_folder(settings)
        tmp = tmp_name(os.path.join(folder, 'dump.fs'))
        fs = FileStorage(tmp, create=True)
        # A storage instance of its own, polled now: the database's main
        # instance reads the snapshot of its last poll, maybe long ago.
        try:
            source = db.storage.new_instance()
            try:
                source.poll_invalidations()
                fs.copyTransactionsFrom(source)
            finally:
                source.release()
        finally:
            fs.close()
        try:
            f = open(tmp, 'rb')
            return f, os.fstat(f.fileno()).st_size
        finally:
            for p in (tmp, tmp + '.index', tmp + '.lock', tmp + '.tmp'):
                unlink_if_present(p)

    def load(self, settings: _Settings, fs_path: str,
             progress: Optional[Callable[[int], Any]] = None) -> None:
        """Fill a new database from the FileStorage file and swap it in;
        the new database carries the tenant's id before it has its
        name."""
        from ZODB.FileStorage import FileStorage
        keep_history = settings.get('keep_history', self.keep_history)
        # The tenant's own template (of its kind), whatever the
        # configuration says now.
        template = self.ensure_template(keep_history,
                                        settings.get('template'))
        dbname = settings['dbname']
        new = self._temp_name(dbname, 'new')
        old = self._temp_name(dbname, 'old')
        marks = () if settings.get('id') is None else (
            self._comment(new, _ID_MARK + settings['id']),)
        try:
            self._admin(self._sql('CREATE DATABASE {} TEMPLATE {}', new,
                                  template), *marks)
            storage = self._open_relstorage(self._dsn_for_db(new),
                                            self._options(keep_history))
            try:
                src = FileStorage(fs_path, read_only=True)
                try:
                    storage.copyTransactionsFrom(src)
                finally:
                    src.close()
            finally:
                storage.close()
            exists = self._database_exists(dbname)
            pg = _psycopg2()
            conn = pg.connect(self.admin_dsn)
            try:
                with conn.cursor() as cur:
                    if exists:
                        # Nobody may be connected to a database renamed.
                        cur.execute('SELECT pg_terminate_backend(pid) FROM'
                                    ' pg_stat_activity WHERE datname = %s',
                                    (dbname,))
                        cur.execute(self._sql(
                            'ALTER DATABASE {} RENAME TO {}', dbname, old))
                    cur.execute(self._sql('ALTER DATABASE {} RENAME TO {}',
                                          new, dbname))
                conn.commit()   # both renames, or neither
            finally:
                conn.close()
        except BaseException:
            self._drop_quietly(new)
            raise
        if exists:
            # A failure here leaves a temporary database for repair.
            self._drop_quietly(old)
        unlink_if_present(fs_path)

    def _snapshot_folder(self, settings, create=True):
        if not self.snapshot_dir:
            if not create:
                return None
            raise NotConfigured("tenants on PostgreSQL need a snapshot-dir"
                                " (a local folder) for snapshots, clones and"
                                " restores")
        d = os.path.join(self.snapshot_dir, settings['dbname'])
        if create:
            os.makedirs(d, exist_ok=True)
        return d

    def snapshot_path(self, settings: _Settings, snapshot_id: str) -> str:
        return os.path.join(self._snapshot_folder(settings),
                            snapshot_id + '.fs')

    def snapshot_ids(self, settings: _Settings) -> List[str]:
        """The snapshot ids found on disk (files named as multidb names
        snapshots; anything else there is not multidb's)."""
        from multidb.backends.filestorage import SNAPSHOT_FILE
        d = self._snapshot_folder(settings, create=False)
        found = set(self._snapshot_ids_stored(settings))
        if d and os.path.isdir(d):
            # With a snapshot database, a file here is one staged but not
            # stored (a crash in between): found too, for repair.
            found.update(n[:-3] for n in os.listdir(d)
                         if SNAPSHOT_FILE.match(n))
        return sorted(found)

    def remove_snapshot(self, settings: _Settings,
                        snapshot_id: str) -> None:
        unlink_if_present(self.snapshot_path(settings, snapshot_id))
        if self.snapshot_database:
            self._snapshot_sql(
                'DELETE FROM multidb_snapshot_part WHERE tenant = %s AND'
                ' snapshot_id = %s; DELETE FROM multidb_snapshot WHERE'
                ' tenant = %s AND snapshot_id = %s',
                params=(self._snapshot_key(settings), snapshot_id) * 2)

    # -- snapshots kept on the server (snapshot_database) ------------------

    def keep_snapshot(self, settings: _Settings, snapshot_id: str,
                      path: str) -> None:
        """With a snapshot_database, store the snapshot file at path (its
        snapshot_path, complete) there, in one transaction, then delete
        the local file: from then on every host reaches it.  Else the
        local file is where it is kept."""
        if not self.snapshot_database:
            return
        key = self._snapshot_key(settings)
        conn = self._snapshot_connection()
        try:
            with conn, conn.cursor() as cur, open(path, 'rb') as f:
                # Again under the same id (a retried snapshot): replaced.
                cur.execute('DELETE FROM multidb_snapshot_part WHERE'
                            ' tenant = %s AND snapshot_id = %s',
                            (key, snapshot_id))
                size = part = 0
                while True:
                    chunk = f.read(_SNAPSHOT_CHUNK)
                    if not chunk:
                        break
                    cur.execute(
                        'INSERT INTO multidb_snapshot_part (tenant,'
                        ' snapshot_id, part, data) VALUES (%s, %s, %s, %s)',
                        (key, snapshot_id, part,
                         _psycopg2().Binary(chunk)))
                    part += 1
                    size += len(chunk)
                cur.execute(
                    'INSERT INTO multidb_snapshot (tenant, snapshot_id,'
                    ' dbname, size, parts) VALUES (%s, %s, %s, %s, %s)'
                    ' ON CONFLICT (tenant, snapshot_id) DO UPDATE SET'
                    ' size = EXCLUDED.size, parts = EXCLUDED.parts',
                    (key, snapshot_id, settings['dbname'], size, part))
        finally:
            conn.close()
        unlink_if_present(path)

    def has_snapshot(self, settings: _Settings, snapshot_id: str) -> bool:
        if not self.snapshot_database:
            return os.path.exists(self.snapshot_path(settings, snapshot_id))
        return bool(self._snapshot_sql(
            'SELECT 1 FROM multidb_snapshot WHERE tenant = %s AND'
            ' snapshot_id = %s',
            params=(self._snapshot_key(settings), snapshot_id), fetch=True))

    def describe_snapshot(self, settings: _Settings,
                          snapshot_id: str) -> str:
        if not self.snapshot_database:
            return self.snapshot_path(settings, snapshot_id)
        return (f"postgresql:{self.snapshot_database}/{settings['dbname']}/"
                f"{snapshot_id}")

    def copy_snapshot(self, settings: _Settings, snapshot_id: str,
                      dest: str, progress: Any = None) -> int:
        """Copy the snapshot to the new file dest (fetched from the
        snapshot database, when snapshots are kept there); return its
        size.  A snapshot stored incompletely is refused."""
        if not self.snapshot_database:
            return copy_file(self.snapshot_path(settings, snapshot_id), dest,
                             progress)
        key = self._snapshot_key(settings)
        conn = self._snapshot_connection()
        made = False     # dest is ours to delete only once we made it
        try:
            with conn:
                with conn.cursor() as cur:
                    cur.execute('SELECT size, parts FROM multidb_snapshot'
                                ' WHERE tenant = %s AND snapshot_id = %s',
                                (key, snapshot_id))
                    row = cur.fetchone()
                if row is None:
                    raise MissingStorage(
                        self._name_of(settings['dbname']),
                        self.describe_snapshot(settings, snapshot_id))
                size, parts = row
                # A server-side cursor: one chunk in memory at a time.
                with conn.cursor(name='multidb_snapshot') as cur, \
                        open(dest, 'xb') as f:
                    made = True
                    cur.itersize = 1
                    cur.execute(
                        'SELECT part, data FROM multidb_snapshot_part WHERE'
                        ' tenant = %s AND snapshot_id = %s ORDER BY part',
                        (key, snapshot_id))
                    done = expected = 0
                    for part, data in cur:
                        if part != expected:
                            break
                        f.write(data)
                        done += len(data)
                        expected += 1
                        if progress is not None:
                            progress(len(data))
                    if expected != parts or done != size:
                        raise MissingStorage(
                            self._name_of(settings['dbname']),
                            self.describe_snapshot(settings, snapshot_id),
                            f"stored incompletely ({done} of {size} bytes)")
            return size
        except BaseException:
            if made:
                unlink_if_present(dest)
            raise
        finally:
            conn.close()

    def stored_snapshots(self) -> List[Dict[str, str]]:
        """Every snapshot the snapshot database keeps (none without
        one), for repair: dicts of key (the tenant id, or 'dbname:...'
        for records made before ids), snapshot_id, dbname and name (the
        tenant's, from the database's name)."""
        if not self.snapshot_database:
            return []
        rows = self._snapshot_sql(
            'SELECT tenant, snapshot_id, dbname FROM multidb_snapshot'
            ' ORDER BY dbname, snapshot_id', fetch=True)
        return [{'key': key, 'snapshot_id': sid, 'dbname': dbname,
                 'name': self._name_of(dbname)}
                for key, sid, dbname in rows]

    def remove_stored_snapshot(self, key: str, snapshot_id: str) -> None:
        """Delete one snapshot of the snapshot database by its key (see
        stored_snapshots)."""
        self._snapshot_sql(
            'DELETE FROM multidb_snapshot_part WHERE tenant = %s AND'
            ' snapshot_id = %s; DELETE FROM multidb_snapshot WHERE'
            ' tenant = %s AND snapshot_id = %s',
            params=(key, snapshot_id) * 2)

    def _check_snapshot_database(self, dbname):
        # Its tables must never land in a tenant's database or a
        # template (a tenant's drop, or a create from the template,
        # would take the snapshots with it).
        problem = None
        if not dbname or len(dbname) > 63 or '\x00' in dbname:
            problem = "is not a PostgreSQL database name"
        elif self._name_re.match(dbname):
            problem = ("is spelled as a tenant's database"
                       f" ({self._prefix}NAME{self._suffix})")
        elif dbname in self._templates():
            problem = "is the tenants' template"
        if problem:
            raise ValueError(f"the snapshot database {dbname!r} {problem}")

    def _snapshot_key(self, settings):
        # The tenant's id (another tenant of the same name later has
        # another); records made before ids were kept: the database.
        return settings.get('id') or f"dbname:{settings['dbname']}"

    def _snapshot_ids_stored(self, settings):
        if not self.snapshot_database:
            return []
        return [row[0] for row in self._snapshot_sql(
            'SELECT snapshot_id FROM multidb_snapshot WHERE tenant = %s'
            ' ORDER BY snapshot_id', params=(self._snapshot_key(settings),),
            fetch=True)]

    def _snapshot_sql(self, statement, params=None, fetch=False):
        conn = self._snapshot_connection()
        try:
            with conn, conn.cursor() as cur:
                cur.execute(statement, params)
                return cur.fetchall() if fetch else None
        finally:
            conn.close()

    def _snapshot_connection(self):
        """A connection to the snapshot database, made (with its tables)
        on first use."""
        if self.snapshot_owner is not self:
            return self.snapshot_owner._snapshot_connection()
        pg = _psycopg2()
        if not self._snapshot_store_ready:
            if not self._database_exists(self.snapshot_database):
                try:
                    self._admin(self._sql('CREATE DATABASE {}',
                                          self.snapshot_database))
                except pg.errors.DuplicateDatabase:
                    pass    # another process made it meanwhile
        conn = pg.connect(dsn_with(self.admin_dsn,
                                   dbname=self.snapshot_database))
        if not self._snapshot_store_ready:
            try:
                with conn, conn.cursor() as cur:
                    cur.execute(
                        "SELECT pg_advisory_xact_lock("
                        "hashtext('multidb_snapshot'));"
                        "CREATE TABLE IF NOT EXISTS multidb_snapshot ("
                        " tenant text, snapshot_id text, dbname text,"
                        " size bigint, parts integer,"
                        " PRIMARY KEY (tenant, snapshot_id));"
                        "CREATE TABLE IF NOT EXISTS multidb_snapshot_part ("
                        " tenant text, snapshot_id text, part integer,"
                        " data bytea,"
                        " PRIMARY KEY (tenant, snapshot_id, part))")
            except BaseException:
                conn.close()
                raise
            self._snapshot_store_ready = True
        return conn

    def tmp_path(self, settings: _Settings) -> str:
        return tmp_name(os.path.join(self._snapshot_folder(settings),
                                     'load.fs'))


_SERVER_NAME = re.compile(r'[a-z][a-z0-9_-]{0,62}\Z')


def _server_name(name, where):
    if not name or not _SERVER_NAME.match(name):
        raise ValueError(f"the server name {name!r} ({where}) must be"
                         f" lowercase letters, digits, '_' and '-',"
                         f" starting with a letter")
    return name


def _parse_id(comment):
    # 'multidb-tenant-id:ID', and a move's mark after it (parse_move).
    if comment and comment.startswith(_ID_MARK):
        words = comment[len(_ID_MARK):].split()
        if words and is_tenant_id(words[0]):
            return words[0]
    return None


def parse_move(comment: Optional[str]) -> Optional[Dict[str, str]]:
    """The mark a move between servers sets after the tenant id in a
    database's comment, ``move:ID source`` or ``move:ID target`` (see
    multidb.backends.pgmove): ``{'move': ID, 'role': ...}``, or None."""
    if _parse_id(comment) is None:
        return None
    words = comment[len(_ID_MARK):].split()
    if len(words) == 3 and words[1].startswith('move:') and \
            words[2] in ('source', 'target'):
        return {'move': words[1][len('move:'):], 'role': words[2]}
    return None
