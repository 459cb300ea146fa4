"""Collection.run (retries), Collection.health, ``multidb health`` and
the example configuration files."""
import glob
import json
import logging
import os
import threading
import time

import pytest
import transaction
from ZODB.MappingStorage import MappingStorage
from ZODB.POSException import ConflictError

import multidb
from multidb import cli
from multidb.config import collectionFromFile

CONFIG = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'config')


@pytest.fixture
def fs_coll(coll, fs_factory):
    coll.declare('a', fs_factory('a'))
    coll.declare('b', fs_factory('b'))
    return coll


# -- run ---------------------------------------------------------------------

def test_run_commits_and_returns(fs_coll):
    assert fs_coll.run(lambda g: g.root('a').setdefault('v', 1)) == 1
    with fs_coll.transaction() as g:
        assert g.root('a')['v'] == 1


def test_run_retries_a_real_conflict(fs_coll):
    # The first attempt reads, then another group commits to the same
    # object before ours commits: a real ConflictError.
    with fs_coll.transaction() as g:
        g.root('a')['n'] = 0
    tries = []

    def increment(group):
        root = group.root('a')
        n = root['n']
        tries.append(n)
        if len(tries) == 1:
            with fs_coll.transaction(transaction.TransactionManager()) as g2:
                g2.root('a')['n'] = 10
        root['n'] = n + 1
        return n + 1
    assert fs_coll.run(increment, backoff=0.001) == 11
    assert tries == [0, 10]
    with fs_coll.transaction() as g:
        assert g.root('a')['n'] == 11


def test_run_gives_up_after_attempts(fs_coll):
    calls = []

    def always(group):
        calls.append(1)
        group.root('a')['v'] = len(calls)
        raise ConflictError("again")
    with pytest.raises(ConflictError, match='again'):
        fs_coll.run(always, attempts=4, backoff=0.001)
    assert len(calls) == 4
    with fs_coll.transaction() as g:
        assert 'v' not in g.root('a')   # every attempt aborted


def test_run_does_not_retry_other_errors(fs_coll):
    calls = []

    def broken(group):
        calls.append(1)
        group.root('a')['v'] = 1
        raise KeyError('x')
    with pytest.raises(KeyError):
        fs_coll.run(broken)
    assert calls == [1]
    # The group is closed: the thread's manager takes a new one.
    fs_coll.group().close()


def test_run_retry_on(fs_coll):
    calls = []

    def flaky(group):
        calls.append(1)
        if len(calls) < 3:
            raise TimeoutError
        return 'done'
    assert fs_coll.run(flaky, retry_on=(TimeoutError,),
                       backoff=0.001) == 'done'


def test_run_backoff_grows_with_jitter(fs_coll, monkeypatch):
    import multidb.collection as mcoll
    slept = []
    monkeypatch.setattr(mcoll.time, 'sleep', slept.append)

    def conflict(group):
        raise ConflictError
    with pytest.raises(ConflictError):
        fs_coll.run(conflict, attempts=5, backoff=0.1, max_backoff=0.3)
    assert len(slept) == 4
    for got, cap in zip(slept, [0.1, 0.2, 0.3, 0.3]):
        assert cap / 2 <= got <= cap


class _Unlucky(Exception):
    pass


class _KnowsBetter:
    """A data manager whose should_retry() calls _Unlucky transient, as
    transaction's ISavepointDataManager may (transaction asks it through
    Transaction.isRetryableError)."""

    transaction_manager = None

    def should_retry(self, error):
        return isinstance(error, _Unlucky)

    def abort(self, txn):
        pass

    tpc_begin = commit = tpc_vote = tpc_finish = tpc_abort = abort

    def sortKey(self):
        return 'knows-better'


@pytest.mark.parametrize('thread_manager', [False, True])
def test_run_asks_data_managers_should_retry(fs_coll, thread_manager,
                                             caplog):
    tm = transaction.manager if thread_manager else \
        transaction.TransactionManager()
    calls = []

    def flaky(group):
        calls.append(1)
        group.root('a')['x'] = len(calls)
        tm.get().join(_KnowsBetter())
        if len(calls) < 3:
            raise _Unlucky
        return 'done'
    with caplog.at_level(logging.DEBUG, logger='multidb'):
        assert fs_coll.run(flaky, attempts=3, backoff=0,
                           transaction_manager=tm) == 'done'
    assert len(calls) == 3
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize('thread_manager', [False, True])
def test_run_other_error_logs_nothing(fs_coll, thread_manager, caplog):
    # It used to log an AttributeError (a private member of transaction's
    # managers that ThreadTransactionManager lacks) for every such error.
    tm = transaction.manager if thread_manager else \
        transaction.TransactionManager()

    def broken(group):
        raise ValueError('bad input')
    with caplog.at_level(logging.DEBUG, logger='multidb'):
        with pytest.raises(ValueError, match='bad input'):
            fs_coll.run(broken, transaction_manager=tm)
    assert caplog.records == []


def test_run_with_note_and_manager(fs_coll):
    tm = transaction.TransactionManager()

    def write(group):
        assert group.transaction_manager is tm
        group.root('a')['v'] = 1
    fs_coll.run(write, transaction_manager=tm, note='set v')
    info = fs_coll['a'].history(fs_coll['a'].open().root()._p_oid)
    assert info[0]['description'] == 'set v'


@pytest.mark.parametrize('attempts', [0, -1])
def test_run_bad_attempts(fs_coll, attempts):
    with pytest.raises(ValueError, match='attempts'):
        fs_coll.run(lambda g: None, attempts=attempts)


def test_run_in_threads_with_conflicts(fs_coll):
    # Threads incrementing one counter: every increment lands.
    with fs_coll.transaction() as g:
        g.root('a')['n'] = 0

    def increment(group):
        group.root('a')['n'] += 1

    def work():
        for _ in range(20):
            fs_coll.run(increment, attempts=50, backoff=0.001,
                        transaction_manager=transaction.TransactionManager())
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    with fs_coll.transaction() as g:
        assert g.root('a')['n'] == 80


# -- health ------------------------------------------------------------------

def test_health_of_configured_databases(fs_coll):
    fs_coll.run(lambda g: g.root('a').update(v=1))
    results = fs_coll.health()
    assert [r.name for r in results] == ['a', 'b']
    for r in results:
        assert r.reachable and r.error is None
        assert 0 <= r.latency < 5
        assert r.last_transaction is not None
    d = results[0].as_dict()
    assert d['name'] == 'a' and isinstance(d['last_transaction'], str)


def test_connections_in_use_per_database(fs_coll):
    # Groups' members and plain db.open() alike; the check's own
    # connection is not counted.
    assert fs_coll.connections_in_use() == {}     # nothing open yet
    tm = transaction.TransactionManager()
    g = fs_coll.group(tm)
    g.root('a')
    g.root('b')
    plain = fs_coll['a'].open(transaction.TransactionManager())
    assert fs_coll.group_of(tm) is g and fs_coll.group_of() is None
    assert fs_coll.connections_in_use() == {'a': 2, 'b': 1}
    assert {r.name: r.in_use for r in fs_coll.health()} == {'a': 2, 'b': 1}
    assert fs_coll.health()[0].as_dict()['in_use'] == 2
    plain.close()
    g.close()
    assert fs_coll.group_of(tm) is None
    assert fs_coll.connections_in_use() == {'a': 0, 'b': 0}
    assert [r.in_use for r in fs_coll.health()] == [0, 0]


def test_health_command_shows_connections_in_use(tmp_path, capsys):
    conf = tmp_path / 'c.conf'
    conf.write_text(f"""<multidb>
  <zodb one>
    <filestorage>
      path {tmp_path}/one.fs
    </filestorage>
  </zodb>
</multidb>
""")
    assert cli.main(['-C', str(conf), 'health']) == 0
    out = capsys.readouterr().out
    header, row = out.splitlines()[:2]
    assert header.split()[:7] == ['NAME', 'REACHABLE', 'LATENCY', 'LAST',
                                  'TRANSACTION', 'IN', 'USE']
    # A new process holds nothing: 0 in use.
    assert row.split()[0] == 'one' and row.split()[-1] == '0'


@pytest.mark.parametrize('count, batches', [(32, 1), (33, 2)])
def test_health_time_is_bounded_per_batch_of_32(coll, monkeypatch, count,
                                                batches):
    # Checks that never answer (a hung server): each batch of 32 waits
    # timeout, no longer; so 33 databases take two timeouts, not one.
    from multidb import health
    hung = threading.Event()
    monkeypatch.setattr(health, 'check',
                        lambda collection, name: hung.wait(30))
    names = [f'd{i}' for i in range(count)]
    for name in names:
        coll.declare(name, MappingStorage)
    start = time.monotonic()
    try:
        results = coll.health(timeout=0.3)
    finally:
        took = time.monotonic() - start
        hung.set()
    assert [r.name for r in results] == names
    assert {(r.reachable, r.error) for r in results} == {
        (False, 'no answer within 0.3 s')}
    # At least one timeout per batch, and less than one more.
    assert batches * 0.3 <= took < (batches + 1) * 0.3


def test_health_unknown_name_checks_nothing(fs_coll):
    with pytest.raises(multidb.UnknownDatabase):
        fs_coll.health(['a', 'nope'])
    assert not fs_coll.is_open('a')


def test_health_of_a_broken_database(coll, tmp_path):
    def broken():
        raise OSError("disk on fire")
    coll.declare('bad', broken)
    coll.add('mem', MappingStorage())
    bad, mem = coll.health()
    assert (bad.reachable, bad.error) == (False, 'OSError: disk on fire')
    assert mem.reachable


def test_health_reads_the_root_record_not_its_state(tmp_path, caplog):
    # A root referring into a database this collection does not declare
    # (another program's data, as `multidb demo` once left in the
    # example's main.fs) is reachable: a check reads the root's record
    # from the storage and never unpickles it.
    from functools import partial

    from persistent.mapping import PersistentMapping
    from ZODB.FileStorage import FileStorage
    path = str(tmp_path / 'main.fs')
    with multidb.Collection() as c:
        c.declare('main', partial(FileStorage, path))
        c.declare('other', partial(FileStorage, str(tmp_path / 'other.fs')))
        with c.transaction() as g:
            obj = PersistentMapping()
            g.get_connection('other').add(obj)
            g.root('main')['obj'] = obj
    with multidb.Collection() as c:
        c.declare('main', partial(FileStorage, path))
        [r] = c.health()
        assert (r.name, r.reachable, r.error) == ('main', True, None)
        assert r.last_transaction is not None
    assert not [rec for rec in caplog.records
                if rec.levelno >= logging.WARNING]


def test_health_error_names_the_cause():
    # An error that says nothing by itself is followed by its cause.
    from ZODB.POSException import StateLoadError

    from multidb.health import _error_text
    try:
        try:
            raise multidb.UnknownDatabase('customers')
        except KeyError as e:
            raise StateLoadError() from e
    except StateLoadError as e:
        error = e
    assert _error_text(error) == (
        "StateLoadError (UnknownDatabase: database 'customers' is not in"
        " the collection)")


def test_health_skips_tenants_unless_all(tmp_path):
    from multidb.backends.filestorage import FileStorageBackend
    c = multidb.Collection()
    c.add('catalog', MappingStorage())
    multidb.Tenants(c, catalog='catalog', backend=FileStorageBackend(
        str(tmp_path / '{name}.fs')))
    c.tenants.create('acme')
    c.close()
    c = multidb.Collection()
    c.add('catalog', MappingStorage())
    try:
        # (a new catalog in memory: check with a second tenant)
        multidb.Tenants(c, catalog='catalog', backend=FileStorageBackend(
            str(tmp_path / '{name}.fs')))
        c.tenants.create('bravo')
        assert [r.name for r in c.health()] == ['catalog']
        assert [r.name for r in c.health(all=True)] == ['catalog', 'bravo']
        assert [r.name for r in c.health(['bravo'])] == ['bravo']
    finally:
        c.close()


# -- the command -------------------------------------------------------------

def _config(tmp_path, body):
    path = tmp_path / 'h.conf'
    path.write_text(f"<multidb>\n{body}</multidb>\n")
    return str(path)


def _fs(name, tmp_path):
    return (f"  <zodb {name}>\n    <filestorage>\n"
            f"      path {tmp_path}/{name}.fs\n    </filestorage>\n"
            f"  </zodb>\n")


def test_cli_health_ok(tmp_path, capsys):
    conf = _config(tmp_path, _fs('main', tmp_path) + _fs('other', tmp_path))
    assert cli.main(['-C', conf, 'health']) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ['NAME', 'REACHABLE', 'LATENCY', 'LAST']
    assert out[1].split()[:2] == ['main', 'yes']
    assert out[-1] == '2 of 2 database(s) reachable'
    assert cli.main(['-C', conf, 'health', 'other', '--json']) == 0
    data = json.loads(capsys.readouterr().out)
    assert data['ok'] is True
    assert [d['name'] for d in data['databases']] == ['other']


def test_cli_health_unreachable(tmp_path, capsys):
    from servers import free_port
    conf = _config(tmp_path, "  zeo-wait-timeout 500ms\n"
                   + _fs('main', tmp_path) +
                   f"  <zodb gone>\n    <zeoclient>\n"
                   f"      server 127.0.0.1:{free_port()}\n"
                   f"    </zeoclient>\n  </zodb>\n")
    assert cli.main(['-C', conf, 'health', '--json']) == 1
    data = json.loads(capsys.readouterr().out)
    gone = data['databases'][1]
    assert (data['ok'], gone['name'], gone['reachable']) == (
        False, 'gone', False)
    assert 'ClientDisconnected' in gone['error']
    assert cli.main(['-C', conf, 'health', 'main']) == 0


def test_cli_health_unknown_name(tmp_path, capsys):
    conf = _config(tmp_path, _fs('main', tmp_path))
    assert cli.main(['-C', conf, 'health', 'nope']) == 1
    assert "database 'nope' is not in the collection" in \
        capsys.readouterr().err


@pytest.mark.parametrize('value', ['0', 'x', '-2'])
def test_cli_health_bad_timeout(tmp_path, capsys, value):
    conf = _config(tmp_path, _fs('main', tmp_path))
    assert cli.main(['-C', conf, 'health', '--timeout', value]) == 2


# -- the example configuration files -----------------------------------------

@pytest.mark.parametrize('path', sorted(
    glob.glob(os.path.join(CONFIG, '*.conf'))), ids=os.path.basename)
def test_example_config_loads(path, tmp_path):
    for sub in ('tenants', 'archive'):
        (tmp_path / sub).mkdir()
    c = collectionFromFile(path, defines={
        'data': str(tmp_path), 'dsn': 'host=127.0.0.1 user=x',
        'zeo': '127.0.0.1:1'})
    try:
        assert len(c) >= 1
        assert not any(c.is_open(name) for name in c)
    finally:
        c.close()


def test_failed_open_leaves_nothing_registered(coll, monkeypatch):
    # A pooled connection whose open fails (its server is gone, say) goes
    # back to its pool without staying a synchronizer of the transaction
    # manager: its next begin() would poll it again and fail.
    from multidb import glue
    coll.add('a', MappingStorage)
    tm = transaction.TransactionManager()
    with coll.transaction(tm) as g:
        g.root('a')['x'] = 1
    calls = []
    fail = [True]
    original = glue.Connection.newTransaction

    def new_transaction(conn, txn, sync=True):
        calls.append(conn)
        if fail[0] and txn is not None:
            fail[0] = False
            raise OSError('server gone')
        return original(conn, txn, sync)
    monkeypatch.setattr(glue.Connection, 'newTransaction', new_transaction)
    tm.begin()
    g = coll.group(tm)
    with pytest.raises(OSError, match='server gone'):
        g.root('a')
    assert g.connections == {}
    g.close()
    tm.abort()
    del calls[:]
    tm.begin()
    assert calls == []          # nobody registered any more
    tm.abort()
    # And Collection.run gets past it (begin() inside the retried part).
    fail[0] = True
    assert coll.run(lambda g: g.root('a')['x'], attempts=2, backoff=0,
                    retry_on=(OSError,), transaction_manager=tm) == 1
