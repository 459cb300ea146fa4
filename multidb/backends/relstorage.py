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

A schema per tenant (one database, ``search_path``) does not work with
RelStorage 4.3: its schema installer checks its stored procedures
without regard to the search path and fails with "Could not get version
information after installing the stored procedures".
"""
import contextlib
import functools
import glob
import os
import re
import shutil
import threading
import uuid

from zope.interface import implementer

from multidb.errors import InvalidName
from multidb.errors import NotConfigured
from multidb.interfaces import IBackend
from multidb.tenants.archive import tmp_name

PLACEHOLDER = '{name}'
# PostgreSQL truncates identifiers longer than this, silently.
MAX_IDENTIFIER = 63
# Temporary databases carry a character no tenant name has.
_TEMP_MARK = '~'


def _psycopg2():
    try:
        import psycopg2
        import psycopg2.extensions
        import psycopg2.sql
    except ImportError:  # pragma: no cover (the test extra has it)
        raise NotConfigured("tenants on PostgreSQL need psycopg2: pip install"
                            " psycopg2-binary") from None
    return psycopg2


def dsn_with(dsn, **changes):
    """dsn with keys replaced, e.g. dbname."""
    pg = _psycopg2()
    params = pg.extensions.parse_dsn(dsn)
    params.update(changes)
    return pg.extensions.make_dsn(**params)


@implementer(IBackend)
class RelStorageBackend:
    """dsn: the libpq connection string of a tenant, with ``{name}`` in
    its dbname (e.g. ``host=db user=app dbname=tenant_{name}``);
    admin_dsn: a connection for CREATE and DROP DATABASE (default: dsn with
    dbname=postgres); template: the template database's name; options:
    RelStorage options (``keep_history`` ...); snapshot_dir: the local
    folder of snapshot files."""

    kind = 'relstorage'

    def __init__(self, dsn, *, admin_dsn=None, template=None,
                 snapshot_dir=None, **options):
        pg = _psycopg2()
        if dsn.count(PLACEHOLDER) != 1:
            raise ValueError(f"the tenant dsn {dsn!r} must contain"
                             f" {PLACEHOLDER} exactly once")
        probe = pg.extensions.parse_dsn(dsn.replace(PLACEHOLDER, 'x'))
        dbname = probe.get('dbname', '')
        if 'x' not in dbname:
            raise ValueError(f"the tenant dsn {dsn!r} must hold {PLACEHOLDER}"
                             f" in its dbname")
        self.dsn = dsn
        # Tenant names are lowercase: an uppercase marker cannot clash.
        self._prefix, self._suffix = pg.extensions.parse_dsn(
            dsn.replace(PLACEHOLDER, 'MULTIDBNAME'))['dbname'].split(
                'MULTIDBNAME')
        self.admin_dsn = admin_dsn or dsn_with(
            dsn.replace(PLACEHOLDER, 'x'), dbname='postgres')
        self.options = dict(options)
        self.keep_history = bool(self.options.get('keep_history', True))
        self.template = template or (
            'multidb_template_' + ('hp' if self.keep_history else 'hf'))
        self.snapshot_dir = snapshot_dir
        self._template_lock = threading.Lock()
        # The admin connection of the operation this thread runs, if any
        # (see name_lock).
        self._local = threading.local()
        self._template_ready = False

    def __repr__(self):
        return (f"<RelStorageBackend {self._prefix}{PLACEHOLDER}"
                f"{self._suffix}>")

    # -- SQL ----------------------------------------------------------------

    def _admin(self, *statements, params=None, fetch=False):
        """Run statements on the admin connection, each in autocommit
        (CREATE and DROP DATABASE refuse transaction blocks)."""
        held = getattr(self._local, 'conn', None)
        conn = held or _psycopg2().connect(self.admin_dsn)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                rows = None
                for stmt in statements:
                    cur.execute(stmt, params)
                    if fetch:
                        rows = cur.fetchall()
                return rows
        finally:
            if conn is not held:
                conn.close()

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

    def _open_relstorage(self, dsn):
        from relstorage.adapters.postgresql import PostgreSQLAdapter
        from relstorage.options import Options
        from relstorage.storage import RelStorage
        options = Options(**self.options)
        return RelStorage(PostgreSQLAdapter(dsn=dsn, options=options),
                          options=options)

    def ensure_template(self):
        """Make the template database, with RelStorage's schema, once."""
        with self._template_lock:
            if self._template_ready:
                return
            if not self._database_exists(self.template):
                tmp = self.template + _TEMP_MARK + uuid.uuid4().hex[:8]
                self._admin(self._sql('CREATE DATABASE {}', tmp))
                try:
                    # RelStorage lays down its schema in an empty database.
                    self._open_relstorage(self._dsn_for_db(tmp)).close()
                    self._admin(self._sql('ALTER DATABASE {} RENAME TO {}',
                                          tmp, self.template))
                except BaseException:
                    self._admin(self._sql(
                        'DROP DATABASE IF EXISTS {} WITH (FORCE)', tmp))
                    raise
            self._template_ready = True

    def _dsn_for_db(self, dbname):
        return dsn_with(self.dsn.replace(PLACEHOLDER, 'x'), dbname=dbname)

    @contextlib.contextmanager
    def name_lock(self, name):
        """Serialize lifecycle operations on one tenant name across
        processes: a PostgreSQL advisory lock, held by a connection of its
        own for the operation (released by the server if we die)."""
        if getattr(self._local, 'conn', None) is not None:
            # Nested (clone holds two names): one connection holds both.
            conn, outer = self._local.conn, True
        else:
            conn, outer = _psycopg2().connect(self.admin_dsn), False
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute('SELECT pg_advisory_lock(hashtext(%s))',
                            ('multidb:' + self._prefix + name,))
            # The operation's own admin statements use this connection:
            # two connects fewer per create.
            self._local.conn = conn
            yield
        finally:
            if outer:
                with conn.cursor() as cur:
                    cur.execute('SELECT pg_advisory_unlock(hashtext(%s))',
                                ('multidb:' + self._prefix + name,))
            else:
                self._local.conn = None
                conn.close()

    # -- settings and factories --------------------------------------------

    def settings_for(self, name):
        dbname = self._prefix + name + self._suffix
        if len(dbname.encode('utf-8')) > MAX_IDENTIFIER:
            raise InvalidName(name, f"the database name {dbname!r} would be"
                                    f" longer than PostgreSQL's"
                                    f" {MAX_IDENTIFIER} bytes")
        return {'kind': self.kind, 'dbname': dbname,
                'dsn': self.dsn.replace(PLACEHOLDER, name),
                'keep_history': self.keep_history}

    def factory(self, settings):
        return functools.partial(self._open_relstorage, settings['dsn'])

    def describe(self, settings):
        return f"postgresql database {settings['dbname']!r}"

    def exists(self, settings):
        return self._database_exists(settings['dbname'])

    # -- making and destroying -----------------------------------------------

    def prepare(self, settings):
        """CREATE DATABASE from the template (which holds the schema)."""
        self.ensure_template()
        self._admin(self._sql('CREATE DATABASE {} TEMPLATE {}',
                              settings['dbname'], self.template))

    def destroy(self, settings):
        self._admin(self._sql('DROP DATABASE IF EXISTS {} WITH (FORCE)',
                              settings['dbname']))
        d = self._snapshot_folder(settings, create=False)
        if d:
            shutil.rmtree(d, ignore_errors=True)

    def is_locked(self, settings):
        return bool(self._admin(
            'SELECT 1 FROM pg_stat_activity WHERE datname = %s',
            params=(settings['dbname'],), fetch=True))

    def scan(self):
        rows = self._admin(
            'SELECT datname FROM pg_database WHERE NOT datistemplate',
            fetch=True)
        pat = re.compile(re.escape(self._prefix) + r'([a-z][a-z0-9_-]*)' +
                         re.escape(self._suffix) + r'\Z')
        for (dbname,) in rows:
            m = pat.match(dbname)
            if m and dbname != self.template:
                name = m.group(1)
                yield name, {'kind': self.kind, 'dbname': dbname,
                             'dsn': self.dsn.replace(PLACEHOLDER, name),
                             'keep_history': self.keep_history}

    def stray_files(self):
        found = []
        if self.snapshot_dir:
            found = glob.glob(os.path.join(glob.escape(self.snapshot_dir),
                                           '**', '.*.multidb-tmp'),
                              recursive=True)
        # Temporary databases of a crashed load or template creation.
        rows = self._admin('SELECT datname FROM pg_database WHERE datname'
                           ' LIKE %s', params=(f'%{_TEMP_MARK}%',),
                           fetch=True)
        for (dbname,) in rows:
            if dbname.startswith((self._prefix, self.template)):
                found.append(f'postgresql:{dbname}')
        return found

    def remove_stray(self, path):
        if path.startswith('postgresql:'):
            self._admin(self._sql('DROP DATABASE IF EXISTS {} WITH (FORCE)',
                                  path[len('postgresql:'):]))
        else:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    # -- data in and out, in FileStorage format ------------------------------

    def open_data(self, db, settings):
        """Copy the committed data into a temporary FileStorage file and
        return it open (already unlinked) with its length."""
        from ZODB.FileStorage import FileStorage
        folder = self._snapshot_folder(settings)
        tmp = tmp_name(os.path.join(folder, 'dump.fs'))
        fs = FileStorage(tmp, create=True)
        # A storage instance of its own, polled now: the database's main
        # instance reads the snapshot of its last poll, maybe long ago.
        source = db.storage.new_instance()
        try:
            source.poll_invalidations()
            fs.copyTransactionsFrom(source)
        finally:
            source.release()
            fs.close()
        try:
            f = open(tmp, 'rb')
            return f, os.fstat(f.fileno()).st_size
        finally:
            for p in (tmp, tmp + '.index', tmp + '.lock', tmp + '.tmp'):
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass

    def load(self, settings, fs_path, progress=None):
        """Fill a new database from the FileStorage file and swap it in."""
        from ZODB.FileStorage import FileStorage
        self.ensure_template()
        dbname = settings['dbname']
        new = dbname + _TEMP_MARK + 'new' + uuid.uuid4().hex[:6]
        old = dbname + _TEMP_MARK + 'old' + uuid.uuid4().hex[:6]
        self._admin(self._sql('CREATE DATABASE {} TEMPLATE {}', new,
                              self.template))
        try:
            storage = self._open_relstorage(self._dsn_for_db(new))
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
            self._admin(self._sql('DROP DATABASE IF EXISTS {} WITH (FORCE)',
                                  new))
            raise
        if exists:
            self._admin(self._sql('DROP DATABASE IF EXISTS {} WITH (FORCE)',
                                  old))
        try:
            os.unlink(fs_path)
        except FileNotFoundError:
            pass

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

    def snapshot_path(self, settings, snapshot_id):
        return os.path.join(self._snapshot_folder(settings),
                            snapshot_id + '.fs')

    def snapshot_ids(self, settings):
        d = self._snapshot_folder(settings, create=False)
        if not d or not os.path.isdir(d):
            return []
        return [n[:-3] for n in os.listdir(d) if n.endswith('.fs')]

    def remove_snapshot(self, settings, snapshot_id):
        try:
            os.unlink(self.snapshot_path(settings, snapshot_id))
        except FileNotFoundError:
            pass

    def tmp_path(self, settings):
        return tmp_name(os.path.join(self._snapshot_folder(settings),
                                     'load.fs'))
