"""Moving a tenant's database from one PostgreSQL server to another.

``Move`` does the storage's part of ``Tenants.move``; the catalog's part
(the record's switch, under the name's lock) is the caller's.  The steps:

1. ``prepare``: a new database on the target server, under a temporary
   name, from the tenant's template, carrying the tenant's id and a mark
   (table ``multidb_move``: this move's id, role ``target``).
2. ``copy``: the source's data, through RelStorage's
   ``copyTransactionsFrom``, while the tenant keeps serving; then
   ``catch_up`` copies what was committed meanwhile (the transactions
   after the last one copied, through the storage iterator), as often as
   it likes.
3. ``fence``: writes to the source stop.  A trigger on the source's
   object tables refuses every write with SQLSTATE 40001 (a serialization
   failure: what a retried transaction expects), installed in one
   transaction with a mark (role ``source``); the trigger's creation
   waits for the writers that were committing.  From here on the source
   holds its final state.  Reads go on.
4. ``finish``: the last ``catch_up``, then the target database takes its
   final name.  The caller commits the record's switch to the target,
   then ``drop_source``.

Nothing is lost whoever dies at any step, because the catalog is the
truth and every step can be undone or redone from what the databases
carry:

- Before the record's switch commits, the record names the source, which
  holds every write (the fence only refuses them).  ``abort`` (or
  ``repair``, or the next move) drops the target's copy (it carries this
  tenant's id and the target mark) and takes the fence down.  A process
  killed while fenced leaves the tenant read-only until then: writes fail
  with the fence's error, which says so.
- After it, the record names the target, whose copy is complete (the
  last catch-up ran after the fence); the source is a leftover carrying
  the tenant's id and the source mark, which ``drop_source`` (or repair)
  drops.

Identifiers are quoted by psycopg2's ``sql.Identifier``.
"""
import logging
import os
import shutil
import tempfile
import time
import uuid
from typing import Any
from typing import Dict
from typing import Mapping
from typing import Optional

log = logging.getLogger(__name__)

MARK_TABLE = 'multidb_move'
FENCE = 'multidb_move_fence'
# The tables RelStorage writes a commit to (those that exist are fenced).
_WRITTEN = ('object_state', 'blob_chunk', 'transaction', 'current_object')

_Settings = Mapping[str, Any]


def _pg():
    from multidb.backends.relstorage import _psycopg2
    return _psycopg2()


def _connect(backend, settings, dbname=None):
    from multidb.backends.relstorage import dsn_with
    dsn = backend.tenant_dsn(settings)
    if dbname is not None:
        dsn = dsn_with(dsn, dbname=dbname)
    return _pg().connect(dsn)


def move_state(backend: Any, settings: _Settings,
               dbname: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """The mark of a move in the tenant's database (dbname: another
    database of the same server): ``{'move', 'role', 'peer', 'state'}``,
    or None (no mark, or no such database)."""
    pg = _pg()
    try:
        conn = _connect(backend, settings, dbname)
    except pg.OperationalError:
        if not backend.database_exists(dbname or settings['dbname']):
            return None
        raise
    try:
        with conn, conn.cursor() as cur:
            cur.execute('SELECT to_regclass(%s)', (MARK_TABLE,))
            if cur.fetchone()[0] is None:
                return None
            cur.execute(_sql('SELECT move_id, role, peer, state FROM {}',
                             MARK_TABLE))
            row = cur.fetchone()
    finally:
        conn.close()
    if row is None:
        return None
    return dict(zip(('move', 'role', 'peer', 'state'), row))


def unfence(backend: Any, settings: _Settings) -> bool:
    """Take down a fence (and the source mark) that a move which did not
    switch the record left on the tenant's database: it takes writes
    again.  True if there was one."""
    state = move_state(backend, settings)
    if state is None or state['role'] != 'source':
        return False
    conn = _connect(backend, settings)
    try:
        with conn, conn.cursor() as cur:
            for table in _existing(cur, _WRITTEN):
                cur.execute(_sql('DROP TRIGGER IF EXISTS {} ON {}', FENCE,
                                 table))
            cur.execute(_sql('DROP FUNCTION IF EXISTS {}()', FENCE))
            cur.execute(_sql('DROP TABLE IF EXISTS {}', MARK_TABLE))
    finally:
        conn.close()
    log.warning("tenant database %s takes writes again (the fence of move"
                " %s is down)", settings['dbname'], state['move'])
    return True


def _sql(text, *names):
    sql = _pg().sql
    return sql.SQL(text).format(*[sql.Identifier(n) for n in names])


def _existing(cur, tables):
    found = []
    for table in tables:
        cur.execute('SELECT to_regclass(%s)', (table,))
        if cur.fetchone()[0] is not None:
            found.append(table)
    return found


def _mark(cur, move_id, role, peer, state):
    cur.execute(_sql('CREATE TABLE IF NOT EXISTS {} (move_id text, role'
                     ' text, peer text, state text)', MARK_TABLE))
    cur.execute(_sql('DELETE FROM {}', MARK_TABLE))
    cur.execute(_sql('INSERT INTO {} VALUES (%s, %s, %s, %s)', MARK_TABLE),
                (move_id, role, peer, state))


class Move:
    """The storage's part of moving one tenant (see the module's
    docstring).  src/dst: the ``RelStorageBackend`` of each server;
    source/target: the tenant's settings there (target from
    ``ServerSet.settings_on``)."""

    def __init__(self, src: Any, source: _Settings, dst: Any,
                 target: _Settings, move_id: Optional[str] = None) -> None:
        self.src, self.source = src, dict(source)
        self.dst, self.target = dst, dict(target)
        self.id = move_id or uuid.uuid4().hex
        self.tmp = dst.temp_name(target['dbname'], 'mov')
        self.renamed = False
        self.fenced = False
        self.copied = 0            # the last tid copied (an int)
        self._from = self._to = None
        self._base = None

    def __repr__(self):
        return (f"<Move {self.id} {self.source['dbname']} ->"
                f" {self.target['dbname']}>")

    @property
    def _peer(self):
        return self.target.get('server') or ''

    # -- steps ------------------------------------------------------------

    def prepare(self) -> None:
        """The target's database, under its temporary name, marked."""
        dst, target = self.dst, self.target
        template = dst.ensure_template(
            target.get('keep_history', dst.keep_history),
            target.get('template'))
        dst.admin(_sql('CREATE DATABASE {} TEMPLATE {}', self.tmp, template),
                  dst.comment(self.tmp, dst.id_comment(target['id'])))
        try:
            conn = _connect(dst, target, self.tmp)
            try:
                with conn, conn.cursor() as cur:
                    _mark(cur, self.id, 'target',
                          self.source.get('server') or '', 'copying')
            finally:
                conn.close()
        except BaseException:
            dst.drop_quietly(self.tmp)
            raise

    def _open(self):
        from ZODB.utils import u64
        if self._from is None:
            self._base = self.src.open_storage(self.source)
            self._from = self._base.new_instance()
            self._to = self.dst.open_storage(self.target, dbname=self.tmp)
            self._from.poll_invalidations()
            self.copied = u64(self._from.lastTransaction())
        return self._from, self._to

    def copy(self) -> None:
        """Copy what the source holds now (RelStorage's
        ``copyTransactionsFrom``: the current records, in bulk, for a
        history-free source)."""
        source, target = self._open()
        target.copyTransactionsFrom(source)

    def catch_up(self) -> int:
        """Copy the transactions committed to the source since the last
        copy; returns how many."""
        from ZODB.utils import p64
        from ZODB.utils import u64
        source, target = self._open()
        source.poll_invalidations()
        last = u64(source.lastTransaction())
        if last <= self.copied:
            return 0
        count = copy_since(source, target, p64(self.copied + 1), p64(last))
        self.copied = last
        return count

    def fence(self, lock_timeout: float = 60.0) -> None:
        """Writes to the source stop (see the module's docstring)."""
        conn = _connect(self.src, self.source)
        try:
            with conn, conn.cursor() as cur:
                cur.execute("SELECT set_config('lock_timeout', %s, true)",
                            (f'{int(lock_timeout * 1000)}ms',))
                _mark(cur, self.id, 'source', self._peer, 'fenced')
                cur.execute(_pg().sql.SQL(
                    "CREATE OR REPLACE FUNCTION {}() RETURNS trigger"
                    " LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION"
                    " 'multidb: this tenant database is being moved"
                    " (move %) to server %; open it again from the"
                    " catalog (if no move is running, run multidb"
                    " repair)', {}, {} USING ERRCODE = '40001'; END $$"
                ).format(_pg().sql.Identifier(FENCE),
                         _pg().sql.Literal(self.id),
                         _pg().sql.Literal(self._peer)))
                for table in _existing(cur, _WRITTEN):
                    cur.execute(_sql(
                        'CREATE TRIGGER {} BEFORE INSERT OR UPDATE OR'
                        ' DELETE ON {} FOR EACH STATEMENT EXECUTE'
                        ' FUNCTION {}()', FENCE, table, FENCE))
        finally:
            conn.close()
        self.fenced = True

    def finish(self) -> int:
        """After the fence: the last catch-up, then the target's database
        takes its final name.  Returns the transactions caught up."""
        if not self.fenced:
            raise RuntimeError("finish() before fence()")
        count = self.catch_up()
        self.close()
        self.dst.admin(_sql('ALTER DATABASE {} RENAME TO {}', self.tmp,
                            self.target['dbname']))
        self.renamed = True
        return count

    def committed(self) -> None:
        """After the record's switch: the target's mark goes (the
        database is the tenant's now)."""
        conn = _connect(self.dst, self.target)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(_sql('DROP TABLE IF EXISTS {}', MARK_TABLE))
        finally:
            conn.close()

    def drop_source(self, grace: float = 10.0) -> bool:
        """Drop the source's database, once proved to be this move's
        leftover (the tenant's id and this move's source mark): after
        the processes connected to it left, or grace seconds (then their
        sessions are ended).  False when it is not provably ours (kept,
        with a warning)."""
        state = move_state(self.src, self.source)
        if state is None or state['move'] != self.id or \
                state['role'] != 'source' or \
                self.src.identify(self.source) != self.source.get('id'):
            log.warning("the source database %s of move %s is not"
                        " provably the move's: kept", self.source['dbname'],
                        self.id)
            return False
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and \
                self.src.is_locked(self.source):
            time.sleep(0.05)
        self.src.destroy(self.source)
        return True

    def abort(self) -> None:
        """Undo a move whose record was not switched: the target's copy
        goes (only one carrying this move's mark), the fence comes
        down."""
        self.close()
        for dbname in (self.tmp, self.target['dbname']):
            try:
                state = move_state(self.dst, self.target, dbname)
            except Exception:
                log.warning("move %s: the copy %s on the target server"
                            " is left for repair", self.id, dbname,
                            exc_info=True)
                continue
            if state is not None and state['move'] == self.id and \
                    state['role'] == 'target':
                self.dst.drop_quietly(dbname)
        if self.fenced:
            unfence(self.src, self.source)
            self.fenced = False

    def close(self) -> None:
        for storage, how in ((self._from, 'release'), (self._to, 'close'),
                             (self._base, 'close')):
            if storage is not None:
                try:
                    getattr(storage, how)()
                except Exception:
                    log.debug("move %s: closing %r", self.id, storage,
                              exc_info=True)
        self._from = self._to = self._base = None


def copy_since(source: Any, target: Any, start: bytes,
               stop: bytes) -> int:
    """Copy source's transactions from start to stop (tids) into target,
    as ZODB's own copy loop does (``restore`` keeps each transaction's
    id), blobs included; returns how many."""
    from ZODB.blob import is_blob_record
    count = 0
    found = source.iterator(start, stop)
    try:
        for txn in found:
            target.tpc_begin(txn, txn.tid, txn.status)
            blobs = []
            try:
                for r in txn:
                    if r.data and is_blob_record(r.data):
                        # restoreBlob takes the file it is given.
                        fd, tmp = tempfile.mkstemp(suffix='.blob')
                        os.close(fd)
                        shutil.copyfile(source.loadBlob(r.oid, r.tid), tmp)
                        blobs.append(tmp)
                        target.restoreBlob(r.oid, r.tid, r.data, tmp,
                                           r.data_txn, txn)
                    else:
                        target.restore(r.oid, r.tid, r.data, '',
                                       r.data_txn, txn)
                target.tpc_vote(txn)
                target.tpc_finish(txn)
            except BaseException:
                target.tpc_abort(txn)
                raise
            finally:
                for tmp in blobs:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
            count += 1
    finally:
        close = getattr(found, 'close', None)
        if close is not None:
            close()
    return count
