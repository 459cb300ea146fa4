"""Errors, not crashes: tenant operations facing read-only folders, lost
PostgreSQL connections and another process creating the same names.

Each case runs against the real thing: folders whose permissions refuse
a write (root's override of permissions is dropped for the command), a
ZEO server shared by two processes, PostgreSQL backends terminated by
``pg_terminate_backend`` while the operations run.
"""
import ctypes
import io
import contextlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import psycopg2
import pytest

import multidb
from helpers import fs_tenants
from helpers import root_dict
from helpers import tenants_config
from helpers import tree
from multidb import cli
from multidb.backends.relstorage import RelStorageBackend

CONFIG = tenants_config('expire-action drop')


@pytest.fixture
def conf(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'app.conf').write_text(CONFIG)
    return tmp_path / 'app.conf'


def _main(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(['-C', 'app.conf'] + list(argv))
    return code, out.getvalue(), err.getvalue()


def _as_unprivileged():
    # Root writes where permissions say no: the command runs without the
    # capabilities that let it (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH),
    # as any other user would.
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:   # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), 'prctl(PR_CAPBSET_DROP)')


def _command(*argv):
    """The command in a process without the right to ignore permissions:
    (code, stdout, stderr)."""
    proc = subprocess.run(
        [sys.executable, '-m', 'multidb.cli', '-C', 'app.conf', *argv],
        capture_output=True, text=True, timeout=120,
        preexec_fn=_as_unprivileged)
    return proc.returncode, proc.stdout, proc.stderr


_files = tree


@pytest.mark.slow
@pytest.mark.parametrize('readonly', ['tenants', 'snapshots'])
def test_drop_in_a_read_only_folder_changes_nothing(conf, readonly):
    # What can be checked is checked before the record's removal is
    # committed: nothing changes, and the message says what is read-only.
    assert _main('create', 'acme')[0] == 0
    assert _main('snapshot', 'acme')[0] == 0
    tenants = conf.parent / 'data' / 'tenants'
    folder = tenants if readonly == 'tenants' else tenants / \
        'acme.fs.snapshots'
    before = _files(tenants)
    folder.chmod(0o555)
    try:
        code, out, err = _command('drop', 'acme')
        assert code == 1, (out, err)
        assert err.startswith('multidb: error: ')
        assert 'Permission denied' in err and str(folder) in err
        assert 'nothing was changed' in err
        assert _files(tenants) == before
        code, out, err = _command('show', 'acme')
        assert code == 0, err
    finally:
        folder.chmod(0o755)
    assert _main('drop', 'acme')[0] == 0
    assert _files(tenants) == []


def test_drop_that_cannot_delete_after_its_commit_is_a_partial_success(
        conf, monkeypatch):
    # The deletion fails after the removal is committed (here a fault
    # injected into it): the tenant is dropped, which the command says,
    # with exit code 3 and what is left for repair.
    from multidb.backends.filestorage import FileStorageBackend
    assert _main('create', 'acme')[0] == 0
    real = FileStorageBackend.destroy

    def failing(self, settings):
        raise PermissionError(13, 'Permission denied', settings['path'])
    monkeypatch.setattr(FileStorageBackend, 'destroy', failing)
    code, out, err = _main('drop', 'acme')
    assert code == cli.PARTIAL == 3
    assert out == "dropped tenant 'acme'\n"
    assert err.startswith("multidb: warning: tenant 'acme' is dropped (its"
                          " record is removed), but its storage was not"
                          " deleted")
    assert "left for 'multidb repair'" in err and 'acme.fs' in err
    assert _main('show', 'acme')[0] == 1
    monkeypatch.setattr(FileStorageBackend, 'destroy', real)
    code, out, err = _main('--json', 'repair')
    assert [(f['kind'], f['name'], f['action'])
            for f in json.loads(out)] == [('leftover', 'acme', 'deleted')]
    assert _files(conf.parent / 'data' / 'tenants') == []


def test_drop_incomplete_from_python(tmp_path, monkeypatch):
    from multidb.backends.filestorage import FileStorageBackend
    c, t = fs_tenants(tmp_path, expire_action='drop')
    try:
        t.create('old', expires=0)
        monkeypatch.setattr(FileStorageBackend, 'destroy',
                            lambda self, s: 1 / 0)
        with pytest.raises(multidb.DropIncomplete) as exc:
            t.drop('old')
        assert exc.value.record.name == 'old'
        assert isinstance(exc.value, OSError)
        assert 'old' not in t
        t.create('older', expires=0)
        done = t.expire()
        # Dropped: expire says so, and what is left.
        assert [(d['name'], d['action']) for d in done] == [
            ('older', 'drop')]
        assert 'left for' in done[0]['error']
    finally:
        c.close()


# -- two processes creating the same names, catalog on ZEO --------------------

RACER = textwrap.dedent('''
    import json, random, sys
    import multidb
    from ZEO.ClientStorage import ClientStorage
    me, folder, host, port, count, seed = sys.argv[1:7]
    c = multidb.Collection()
    c.declare('catalog', lambda: ClientStorage(
        (host, int(port)), storage='catalog', wait_timeout=30))
    t = multidb.Tenants(c, catalog='catalog',
                        backend=multidb.FileStorageBackend(
                            folder + '/{name}.fs'))
    out = {'created': [], 'exists': [], 'errors': []}
    print('READY', flush=True)
    sys.stdin.readline()
    # Each in its own order: the two meet on names at every stage of a
    # create, and commit to the same buckets of the catalog.
    order = list(range(int(count)))
    random.Random(seed).shuffle(order)
    for i in order:
        name = f'shared{i}'
        try:
            t.create(name, init=lambda root: root.update(by=me))
            out['created'].append(name)
        except multidb.TenantExists:
            out['exists'].append(name)
        except Exception as e:
            import traceback
            traceback.print_exc()
            out['errors'].append(f'{name}: {type(e).__name__}: {e}')
    c.close()
    print('RESULT', json.dumps(out), flush=True)
''')


@pytest.mark.parametrize('seed', [1, 2, 3])
def test_two_processes_create_the_same_names_on_zeo(zeo_server, tmp_path,
                                                    seed):
    count = 40
    host, port = zeo_server.address
    folder = tmp_path / 'tenants'
    procs = []
    try:
        for me in ('p', 'q'):
            procs.append(subprocess.Popen(
                [sys.executable, '-c', RACER, me, str(folder), host,
                 str(port), str(count), f'{me}{seed}'],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True))
        for proc in procs:
            assert proc.stdout.readline() == 'READY\n', proc.stderr.read()
        for proc in procs:
            proc.stdin.write('GO\n')
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
            line = [x for x in out.splitlines() if x.startswith('RESULT ')]
            assert line, (out, err)
            results.append(json.loads(line[0][len('RESULT '):]))
            results[-1]['stderr'] = err
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    p, q = results
    assert p['errors'] == [] and q['errors'] == [], p['stderr'] + q['stderr']
    names = {f'shared{i}' for i in range(count)}
    # Exactly one creation per name; TenantExists only for a tenant that
    # exists, made by the other.
    assert set(p['created']) | set(q['created']) == names
    assert not set(p['created']) & set(q['created'])
    assert set(p['exists']) == set(q['created'])
    assert set(q['exists']) == set(p['created'])
    from ZEO.ClientStorage import ClientStorage
    c = multidb.Collection()
    c.declare('catalog', lambda: ClientStorage(
        zeo_server.address, storage='catalog', wait_timeout=30))
    t = multidb.Tenants(c, catalog='catalog',
                        backend=multidb.FileStorageBackend(
                            str(folder / '{name}.fs')))
    try:
        assert {r.name for r in t.list()} == names
        for who, result in (('p', p), ('q', q)):
            for name in result['created']:
                assert root_dict(c, name) == {'by': who}, name
        assert t.repair() == []
    finally:
        c.close()


# -- PostgreSQL backends terminated while the operations run -------------------

class Terminator(threading.Thread):
    """Every interval seconds, terminates backends of the given databases
    (and the admin connections, on 'postgres'): all of them, or one idle
    one picked at random (a connection lost between two statements, as a
    server restart, a network cut or an idle timeout does it)."""

    def __init__(self, postgres, prefix, catalog, mode, interval=0.05):
        super().__init__(daemon=True)
        self.dsn = postgres.dsn()
        self.prefix = prefix
        self.catalog = catalog
        self.limit = None if mode == 'all' else 1
        self.state = '%' if mode == 'all' else 'idle%'
        self.interval = interval
        self.stop = threading.Event()
        self.killed = 0

    def run(self):
        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                while not self.stop.wait(self.interval):
                    cur.execute(
                        "SELECT count(pg_terminate_backend(pid)) FROM"
                        " (SELECT pid FROM pg_stat_activity"
                        "  WHERE pid <> pg_backend_pid()"
                        "  AND backend_type = 'client backend'"
                        "  AND state LIKE %s"
                        "  AND (datname LIKE %s OR datname = %s"
                        "  OR datname = 'postgres')"
                        "  ORDER BY random() LIMIT %s) AS victims",
                        (self.state, self.prefix + '%', self.catalog,
                         self.limit))
                    self.killed += cur.fetchone()[0]
        finally:
            conn.close()


def _expected(error):
    # What an operation may raise under the storm: an error that says what
    # happened, never the driver's own.
    return isinstance(error, multidb.MultiDBError) and not isinstance(
        error, (psycopg2.Error,))


@pytest.mark.parametrize('mode', ['idle', 'all'])
def test_operations_while_backends_are_terminated(postgres, pg_db, tmp_path,
                                                  mode):
    # Every 50 ms one idle backend of ours, or all of them, is
    # terminated.  Each operation either succeeds, or says what happened
    # (ServerUnavailable: whether the tenant was made or dropped); never
    # the driver's own error, never an error after its commit.
    prefix = 'k' + uuid.uuid4().hex[:6] + '_'
    backend = RelStorageBackend(postgres.dsn(prefix + '{name}'),
                                template=prefix + 'template',
                                snapshot_dir=str(tmp_path / 'snapshots'),
                                keep_history=False)
    backend.ensure_template()
    c = multidb.Collection()
    c.declare('catalog', lambda: backend._open_relstorage(
        postgres.dsn(pg_db)))
    t = multidb.Tenants(c, catalog='catalog', backend=backend)
    t.attempts = 8
    outcomes = []   # (operation, source, target, result, error)
    value = {'base': 'base'}   # what each tenant's root['v'] must be
    killer = Terminator(postgres, prefix, pg_db, mode)

    def run(op, source, target, call):
        try:
            outcomes.append((op, source, target, call(), None))
        except Exception as e:
            assert _expected(e), (op, source, target, repr(e))
            outcomes.append((op, source, target, None, e))

    try:
        # Before the storm: the catalog's schema, and a tenant to
        # snapshot, clone and drop during it.
        t.create('base', init=lambda root: root.update(v='base'))
        killer.start()
        deadline = time.monotonic() + 20
        k = 0
        while time.monotonic() < deadline and k < 6:
            a, b, x = f'a{k}', f'b{k}', f'x{k}'
            value.update({a: a, b: a, x: 'base'})
            run('create', a, a, lambda: t.create(
                a, init=lambda root: root.update(v=a)))
            run('snapshot', a, a, lambda: t.snapshot(a))
            run('snapshot', 'base', 'base', lambda: t.snapshot('base'))
            run('clone', a, b, lambda: t.clone(a, b))
            run('clone', 'base', x, lambda: t.clone('base', x))
            run('drop', a, a, lambda: t.drop(a))
            run('drop', x, x, lambda: t.drop(x))
            k += 1
    finally:
        killer.stop.set()
        killer.join(10)
    try:
        assert killer.killed > 20
        done = {(op, target) for op, source, target, result, e in outcomes
                if e is None}
        # The operations reported truthfully: what succeeded is there (or
        # was dropped since), what failed saying it did not happen is not.
        names = {r.name: r for r in t.list()}
        for op, source, target, result, error in outcomes:
            said_not = isinstance(error, multidb.ServerUnavailable) and (
                'was not created' in str(error) or
                'was not dropped' in str(error))
            if op in ('create', 'clone'):
                if error is None:
                    assert result.name == target
                    assert target in names or ('drop', target) in done
                elif said_not:
                    assert target not in names
            elif op == 'drop':
                if error is None:
                    assert target not in names
                elif said_not:
                    assert target in names
            elif op == 'snapshot' and error is None:
                if target in names:
                    assert result in [s.id for s in names[target].snapshots]
        if mode == 'idle':
            assert done, outcomes   # some got through
        # Every tenant left opens and holds its data, and its snapshots'
        # files are there; repair deletes only leftovers, then finds
        # nothing.
        assert 'base' in names
        # No recorded snapshot without its file (a snapshot whose catalog
        # commit went through although the commit raised keeps its file).
        lost = {backend.snapshot_path(rec.settings, s.id)
                for rec in names.values() for s in rec.snapshots
                if not os.path.exists(backend.snapshot_path(rec.settings,
                                                            s.id))}
        assert not lost

        def check():
            for name, rec in names.items():
                assert root_dict(t, name) == {'v': value[name]}, name
        check()
        for f in t.repair():
            assert f['kind'] in ('leftover', 'temporary file'), f
            assert f['action'] == 'deleted', f
        assert t.repair() == []
        check()
    finally:
        c.close()
        postgres.drop_databases(prefix)


def test_what_is_a_lost_connection():
    from ZODB.POSException import ConflictError
    from multidb.retry import lost_connection
    from multidb.retry import retryable
    lost = psycopg2.OperationalError('server closed the connection'
                                     ' unexpectedly')
    assert lost_connection(lost) and retryable(lost)
    assert lost_connection(psycopg2.InterfaceError('connection already'
                                                   ' closed'))
    for text in ['FATAL:  password authentication failed for user "x"',
                 'FATAL:  database "t_x" does not exist']:
        error = psycopg2.OperationalError(text)
        assert not lost_connection(error) and not retryable(error)
    assert retryable(ConflictError()) and not lost_connection(
        ConflictError())
    assert not retryable(ValueError('x'))
    wrapped = RuntimeError('commit lock')
    wrapped.__cause__ = lost
    assert lost_connection(wrapped)


def test_a_zeo_server_gone_is_server_unavailable(zeo_server, tmp_path):
    # The catalog's ZEO server is gone: a create tries its attempts, then
    # says so (ServerUnavailable, naming the tenant and what did not
    # happen), not with ZEO's ClientDisconnected.
    from multidb.backends.filestorage import FileStorageBackend
    from multidb.config import collectionFromString
    host, port = zeo_server.address
    c = collectionFromString(
        f"%import ZEO\n<multidb>\n  zeo-wait-timeout 200ms\n"
        f"  <zodb catalog>\n    <zeoclient>\n      server {host}:{port}\n"
        f"      storage catalog\n    </zeoclient>\n  </zodb>\n</multidb>\n")
    t = multidb.Tenants(c, catalog='catalog', backend=FileStorageBackend(
        str(tmp_path / 'tenants' / '{name}.fs')))
    t.attempts, t.backoff = 3, 0.01
    try:
        t.create('a')
        zeo_server.stop()
        with pytest.raises(multidb.ServerUnavailable) as info:
            t.create('b')
        assert "tenant 'b'" in str(info.value)
        assert 'was not created' in str(info.value)
        assert not (tmp_path / 'tenants' / 'b.fs').exists()
    finally:
        c.close()


@pytest.fixture
def own_pg():
    """A PostgreSQL cluster of the test's own (it is stopped), with a
    database catalog."""
    from servers import PostgreSQL
    pg = PostgreSQL()
    try:
        pg.start()
        pg.sql('CREATE DATABASE catalog')
        yield pg
    finally:
        pg.close()


def test_a_server_gone_costs_attempts_not_attempts_squared(
        own_pg, tmp_path, monkeypatch):
    # The PostgreSQL server is gone.  A create retries its attempts, and
    # after each one asks the catalog whether it took effect anyway; that
    # question (and every catalog read or write inside an attempt) is
    # asked once, not with retries of its own: those multiplied, and a
    # create took attempts x attempts backoffs (35 s instead of 3.5 with
    # the default ten attempts).
    pg = own_pg
    c = multidb.Collection()
    c.declare('catalog', lambda: RelStorageBackend(
        pg.dsn('x_{name}'), keep_history=False)._open_relstorage(
            pg.dsn('catalog')))
    t = multidb.Tenants(c, catalog='catalog', backend=RelStorageBackend(
        pg.dsn('t_{name}'), template='t_template',
        snapshot_dir=str(tmp_path / 'snapshots'), keep_history=False))
    t.attempts, t.backoff = 4, 0.01
    try:
        t.create('a')
        pg.stop()
        opened = []
        catalog = t._catalog

        def counting(*args, **kw):
            opened.append(args)
            return catalog(*args, **kw)
        monkeypatch.setattr(t, '_catalog', counting)
        with pytest.raises(multidb.ServerUnavailable) as info:
            t.create('b')
        assert "tenant 'b'" in str(info.value)
        # At most one catalog transaction per attempt and one per
        # question after it.
        assert 0 < len(opened) <= 2 * t.attempts, len(opened)
    finally:
        c.close()
