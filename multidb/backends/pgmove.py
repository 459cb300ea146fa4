"""Moving a tenant's database from one PostgreSQL server to another.

``Move`` does the storage's part of ``Tenants.move``; the catalog's part
(the record's switch, under the name's lock) is the caller's.  The steps:

1. ``prepare``: a new database on the target server, under a temporary
   name, from the tenant's template, carrying the tenant's id and a mark
   (in its comment, after the id: ``move:ID target``).
2. ``copy``: the source's data, through RelStorage's
   ``copyTransactionsFrom``, while the tenant keeps serving; then
   ``catch_up`` copies what was committed meanwhile (the transactions
   after the last one copied, through the storage iterator), as often as
   it likes.
3. ``fence``: writes to the source stop, refused at their vote with
   SQLSTATE 40001 (a serialization failure: what a retried transaction
   expects), so that a transaction over several databases fails whole:
   RelStorage's vote function is renamed and one that refuses stands in
   its place; the writes already voted are waited for; a trigger on the
   object tables then refuses anything else.  The mark (``move:ID
   source``, in the comment) goes first.  From here on the source holds
   its final state.  Reads go on.
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

FENCE = 'multidb_move_fence'
# The tables RelStorage writes a commit to (those that exist are fenced).
_WRITTEN = ('object_state', 'blob_chunk', 'transaction', 'current_object')

_Settings = Mapping[str, Any]


def _pg():
    # (The backend that runs a move has imported it.)
    import psycopg2
    import psycopg2.sql
    return psycopg2


def _connect(backend, settings):
    return _pg().connect(backend.tenant_dsn(settings))


def move_state(backend: Any, settings: _Settings,
               dbname: Optional[str] = None) -> Optional[Dict[str, str]]:
    """The mark of a move in the comment of the tenant's database
    (dbname: another database of the same server): ``{'move', 'role'}``,
    or None (no mark, or no such database)."""
    return backend.move_mark(dbname or settings['dbname'])


def _set_mark(backend, dbname, tenant_id, move_id=None, role=None):
    text = backend.id_comment(tenant_id)
    if move_id is not None:
        text += f' move:{move_id} {role}'
    backend.admin(backend.comment(dbname, text))


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
            _restore_vote(cur)
    finally:
        conn.close()
    # The mark last: a crash before leaves it, and this runs again.
    _set_mark(backend, settings['dbname'], settings['id'])
    log.warning("tenant database %s takes writes again (the fence of move"
                " %s is down)", settings['dbname'], state['move'])
    return True


# RelStorage's function that a commit calls at its vote, and the name the
# fence gives it meanwhile.
_VOTE = 'lock_objects_and_detect_conflicts'
_VOTE_KEPT = 'multidb_moved_' + _VOTE


def _functions(cur, name):
    cur.execute(
        'SELECT p.oid::regprocedure::text,'
        ' pg_get_function_arguments(p.oid), pg_get_function_result(p.oid)'
        ' FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace'
        ' WHERE p.proname = %s AND n.nspname = current_schema()', (name,))
    return cur.fetchall()


def _replace_vote(cur, message):
    """RelStorage's vote function renamed, and one that refuses in its
    place (in the caller's transaction)."""
    sql = _pg().sql
    if _functions(cur, _VOTE_KEPT):
        return   # fenced already (a move that died, run again)
    found = _functions(cur, _VOTE)
    if len(found) != 1:
        raise RuntimeError(
            f"cannot fence the tenant database: RelStorage's function"
            f" {_VOTE} is not there once ({len(found)} found)")
    signature, arguments, result = found[0]
    # (The catalog's own spelling of the signature and the types.)
    cur.execute(sql.SQL('ALTER FUNCTION {} RENAME TO {}').format(
        sql.SQL(signature), sql.Identifier(_VOTE_KEPT)))
    cur.execute(sql.SQL(
        'CREATE FUNCTION {}({}) RETURNS {} LANGUAGE plpgsql AS'
        ' $$ BEGIN {} END $$').format(
            sql.Identifier(_VOTE), sql.SQL(arguments), sql.SQL(result),
            message))


def _restore_vote(cur):
    """Undo _replace_vote (what of it is there)."""
    sql = _pg().sql
    kept = _functions(cur, _VOTE_KEPT)
    if not kept:
        return
    for signature, _, _ in _functions(cur, _VOTE):
        cur.execute(sql.SQL('DROP FUNCTION {}').format(sql.SQL(signature)))
    cur.execute(sql.SQL('ALTER FUNCTION {} RENAME TO {}').format(
        sql.SQL(kept[0][0]), sql.Identifier(_VOTE)))


def _drain(cur, since, timeout):
    """Wait for the transactions that were writing to the database when
    the fence went up (since) to end: those that voted commit, the others
    find the fence and abort.  A writing transaction has a transaction id
    (RelStorage fills its temporary tables first); a reading one (a load
    connection's long snapshot) has none and is not waited for."""
    deadline = time.monotonic() + timeout
    while True:
        cur.execute(
            'SELECT count(*) FROM pg_stat_activity WHERE datname ='
            ' current_database() AND pid <> pg_backend_pid() AND'
            ' backend_xid IS NOT NULL AND xact_start <= %s', (since,))
        if not cur.fetchone()[0]:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the transactions writing to the tenant's database did"
                f" not end within {timeout:g} s of the fence")
        time.sleep(0.005)


class _Block:
    """One transaction on an autocommit connection."""

    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        self.conn.autocommit = False
        return self

    def __exit__(self, kind, value, tb):
        try:
            if kind is None:
                self.conn.commit()
            else:
                self.conn.rollback()
        finally:
            self.conn.autocommit = True


def clear_mark(backend: Any, settings: _Settings) -> None:
    """The target mark of a move whose record switched: the database is
    the tenant's."""
    _set_mark(backend, settings['dbname'], settings['id'])


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
        try:
            dst.admin(_sql('CREATE DATABASE {} TEMPLATE {}', self.tmp,
                           template))
            _set_mark(dst, self.tmp, target['id'], self.id, 'target')
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

    def fence(self, timeout: float = 60.0) -> None:
        """Writes to the source stop (see the module's docstring).

        A write must fail at its vote, never after: in a transaction over
        several databases, a failure in the second phase comes after the
        others committed.  RelStorage locks a transaction's objects at
        the vote in its function ``lock_objects_and_detect_conflicts``
        (and moves the data in at tpc_finish): the fence renames it and
        puts in its place one, of the same signature, that refuses.  Then
        it waits for the transactions that were already writing (voted,
        or about to find the fence) to end, and only then adds the
        trigger that refuses any write to the object tables, a backstop.
        The mark first: a crash at any point leaves a mark that repair
        (unfence) clears, and unfence undoes each part that is there."""
        _set_mark(self.src, self.source['dbname'], self.source['id'],
                  self.id, 'source')
        self.fenced = True
        sql = _pg().sql
        message = sql.SQL(
            "RAISE EXCEPTION 'multidb: this tenant database is being"
            " moved (move %) to server %; open it again from the catalog"
            " (if no move is running, run multidb repair)', {}, {} USING"
            " ERRCODE = '40001';").format(sql.Literal(self.id),
                                          sql.Literal(self._peer))
        conn = _connect(self.src, self.source)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SET lock_timeout = %s",
                            (f'{int(timeout * 1000)}ms',))
                with _Block(conn):
                    _replace_vote(cur, message)
                cur.execute('SELECT clock_timestamp()')
                fenced_at = cur.fetchone()[0]
                _drain(cur, fenced_at, timeout)
                with _Block(conn):
                    cur.execute(sql.SQL(
                        "CREATE OR REPLACE FUNCTION {}() RETURNS trigger"
                        " LANGUAGE plpgsql AS $$ BEGIN {} END $$").format(
                            sql.Identifier(FENCE), message))
                    for table in _existing(cur, _WRITTEN):
                        cur.execute(_sql(
                            'CREATE TRIGGER {} BEFORE INSERT OR UPDATE OR'
                            ' DELETE ON {} FOR EACH STATEMENT EXECUTE'
                            ' FUNCTION {}()', FENCE, table, FENCE))
        finally:
            conn.close()

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
        clear_mark(self.dst, self.target)
        # Snapshot files follow the database's name (when the servers'
        # dsns name it differently).
        old = self.src.snapshot_folder(self.source)
        new = self.dst.snapshot_folder(self.target)
        if old and new and old != new and os.path.isdir(old) and \
                not os.path.exists(new):
            os.rename(old, new)

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
        # The database only: the snapshots are the tenant's (kept by the
        # main server, or in the snapshot folder, moved by committed()).
        return self.src.drop_database(self.source)

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
