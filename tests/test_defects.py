"""ZODB's multi-database defects, each shown on plain ZODB and fixed by
multidb.  The ``test_plain_*`` tests assert the defect as ZODB 6 has it:
they prove that the matching ``test_fixed_*`` test would fail on plain
ZODB."""
import functools
import logging
import os
import subprocess
import sys
import textwrap
import threading

import pytest
import transaction
import ZODB
import zc.lockfile
from ZODB.FileStorage import FileStorage
from ZODB.MappingStorage import MappingStorage
from ZODB.POSException import ConnectionStateError

import multidb


# -- 1. No lock: two threads adding the same name both succeed ------------

class _SlowContains(dict):
    # Widens the window between ZODB's "name in databases" check and its
    # "databases[name] = db", as a thread switch there would.
    def __contains__(self, key):
        r = dict.__contains__(self, key)
        threading.Event().wait(0.05)
        return r


def test_plain_concurrent_adds_both_succeed():
    databases = _SlowContains()
    made = []

    def add():
        made.append(ZODB.DB(MappingStorage(), databases=databases,
                            database_name='x'))
    threads = [threading.Thread(target=add) for _ in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(made) == 2          # both "succeeded"...
    assert len(databases) == 1     # ...and the mapping kept one
    [db.close() for db in made]


def test_fixed_concurrent_adds_one_wins(coll):
    calls, results = [], []
    barrier = threading.Barrier(8)

    def factory():
        calls.append(1)
        threading.Event().wait(0.05)
        return MappingStorage()

    def add():
        barrier.wait()
        try:
            results.append(coll.add('x', factory))
        except multidb.DuplicateName as e:
            results.append(e)
    threads = [threading.Thread(target=add) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    dbs = [r for r in results if not isinstance(r, Exception)]
    assert len(dbs) == 1 and len(calls) == 1
    assert sum(isinstance(r, multidb.DuplicateName) for r in results) == 7
    assert coll['x'] is dbs[0]


# -- 2. The duplicate check runs after the storage is opened --------------

def test_plain_duplicate_leaves_storage_open_and_locked(tmp_path):
    databases = {}
    first = ZODB.DB(MappingStorage(), databases=databases, database_name='dup')
    path = str(tmp_path / 'x.fs')
    with pytest.raises(ValueError):
        ZODB.DB(path, databases=databases, database_name='dup')
    with pytest.raises(zc.lockfile.LockError):
        FileStorage(path)  # still open, still locked
    first.close()


def test_fixed_duplicate_opens_nothing(coll, tmp_path):
    coll.add('dup', MappingStorage)
    path = str(tmp_path / 'x.fs')
    with pytest.raises(multidb.DuplicateName, match="'dup'"):
        coll.add('dup', functools.partial(FileStorage, path))
    assert not os.path.exists(path)
    with pytest.raises(multidb.DuplicateName):
        coll.declare('dup', functools.partial(FileStorage, path))
    assert sorted(coll) == ['dup']


# -- 3. A closed DB stays in the mapping: the name can never be reused ----

def test_plain_closed_db_keeps_its_name():
    databases = {}
    ZODB.DB(MappingStorage(), databases=databases, database_name='a').close()
    assert 'a' in databases
    with pytest.raises(ValueError):
        ZODB.DB(MappingStorage(), databases=databases, database_name='a')


def test_fixed_closed_db_frees_its_name(coll):
    db = coll.add('a', MappingStorage)
    db.close()
    assert 'a' not in coll and 'a' not in coll.databases
    db2 = coll.add('a', MappingStorage)
    coll.remove('a')
    assert 'storage' not in vars(db2)
    coll.add('a', MappingStorage)


# -- 4. Closing one DB breaks the others ----------------------------------

def _plain_pair():
    databases = {}
    a = ZODB.DB(MappingStorage(), databases=databases, database_name='a')
    b = ZODB.DB(MappingStorage(), databases=databases, database_name='b')
    return a, b


def test_plain_close_aborts_other_databases_pending_changes():
    a, b = _plain_pair()
    tm = transaction.TransactionManager()
    conn = a.open(tm)
    conn.get_connection('b')
    root = conn.root()
    root['x'] = 1  # pending change in a
    assert root._p_changed
    b.close()
    assert not root._p_changed  # a's change was aborted...
    tm.commit()
    other = a.open(transaction.TransactionManager())
    assert 'x' not in other.root()  # ...and never reaches the database
    a.close()


def test_plain_close_breaks_pooled_connections_of_others():
    a, b = _plain_pair()
    conn = a.open()
    conn.get_connection('b')
    conn.close()  # pooled: a's connection still holds b's
    b.close()
    with pytest.raises(AttributeError, match="'NoneType'"):
        a.open()


def test_fixed_close_in_use_refused_nothing_aborted(coll):
    coll.add('a', MappingStorage)
    b = coll.add('b', MappingStorage)
    tm = transaction.TransactionManager()
    g = coll.group(tm)
    g.get_connection('b')
    g.root('a')['x'] = 1
    with pytest.raises(multidb.DatabaseInUse, match="'b' has 1 open"):
        b.close()
    with pytest.raises(multidb.DatabaseInUse):
        coll.remove('b')
    assert g.root('a')['x'] == 1
    tm.commit()
    g.close()
    coll.remove('b')
    with coll.transaction() as g:
        assert g.root('a')['x'] == 1


def test_fixed_remove_other_db_keeps_pending_changes(coll):
    coll.add('a', MappingStorage)
    coll.add('b', MappingStorage)
    tm = transaction.TransactionManager()
    g = coll.group(tm)
    g.root('a')['x'] = 1
    coll.remove('b')  # the group never touched b
    tm.commit()
    g.close()
    with coll.transaction() as g:
        assert g.root('a')['x'] == 1


def test_fixed_pooled_connections_survive_removal(coll):
    a = coll.add('a', MappingStorage)
    coll.add('b', MappingStorage)
    with coll.transaction() as g:  # a and b both touched, then pooled
        g.root('a')['x'] = 1
        g.root('b')['y'] = 2
    conn = a.open()                # plain ZODB use of a pooled primary
    conn.get_connection('b')
    conn.close()
    coll.remove('b')
    conn = a.open()
    assert conn.root()['x'] == 1 and conn.connections == {'a': conn}
    conn.close()
    with coll.transaction() as g:
        assert g.root('a')['x'] == 1


def test_fixed_remove_waits_for_group_with_timeout(coll):
    coll.add('a', MappingStorage)
    g = coll.group()
    g.get_connection('a')
    threading.Timer(0.2, g.close).start()
    coll.remove('a', timeout=5)  # waits for the group to close
    assert 'a' not in coll and g.closed


# -- 5. Secondary connections stay pinned to pooled primaries -------------

def _eight_concurrent(open_primary):
    # Eight threads each hold a connection to a and one to b at once.
    barrier = threading.Barrier(8)
    conns = []

    def work():
        primary, close = open_primary()
        primary.get_connection('b').root()
        conns.append(primary)
        barrier.wait()
        close()
    threads = [threading.Thread(target=work) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return conns


def test_plain_secondaries_pinned_beyond_pool_size(caplog):
    databases = {}
    a = ZODB.DB(MappingStorage(), databases=databases, database_name='a')
    b = ZODB.DB(MappingStorage(), databases=databases, database_name='b',
                pool_size=3)

    def open_primary():
        c = a.open(transaction.TransactionManager())
        return c, c.close
    conns = _eight_concurrent(open_primary)
    # Eight pooled a-connections each still hold a b-connection and its
    # cache; b's pool never got them back.
    assert all(len(c.connections) == 2 for c in conns)
    assert len(b.pool.available) == 0 and len(b.pool.all) == 8
    a.close()
    b.close()


def test_fixed_secondaries_return_to_their_pool(coll):
    coll.add('a', MappingStorage)
    b = coll.add('b', MappingStorage, pool_size=3)

    def open_primary():
        g = coll.group(transaction.TransactionManager())
        return g.get_connection('a'), g.close
    _eight_concurrent(open_primary)
    a = coll['a']
    assert all(c.connections == {'a': c} for _, c in a.pool.available)
    assert len(b.pool.available) == 3 and len(b.pool.all) == 3


def test_fixed_plain_zodb_use_also_unpins(coll):
    # Plain ZODB API on collection databases: db.open + get_connection.
    a = coll.add('a', MappingStorage)
    b = coll.add('b', MappingStorage, pool_size=3)

    def open_primary():
        c = a.open(transaction.TransactionManager())
        return c, c.close
    conns = _eight_concurrent(open_primary)
    assert all(c.connections == {'a': c} for c in conns)
    assert len(b.pool.available) == 3


# -- 6. Four descriptors per FileStorage; nothing closes idle databases --

_FD_SCRIPT = textwrap.dedent('''
    import functools, os, resource, sys, transaction
    import ZODB
    from ZODB.FileStorage import FileStorage
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    d, mode = sys.argv[1], sys.argv[2]
    n = 150
    peak = 0
    if mode == 'plain':
        dbs = []
        try:
            for i in range(n):
                dbs.append(ZODB.DB(os.path.join(d, f'{i}.fs')))
        except OSError as e:
            print('FAILED', len(dbs), e.errno)
            sys.exit(0)
    else:
        import multidb
        c = multidb.Collection()
        for i in range(n):
            c.declare(f'db{i}', functools.partial(
                FileStorage, os.path.join(d, f'{i}.fs')))
        for rnd in range(2):
            for i in range(n):
                with c.transaction() as g:
                    g.root(f'db{i}')['n'] = g.root(f'db{i}').get('n', 0) + 1
                peak = max(peak, len(os.listdir('/proc/self/fd')))
        for i in range(n):
            with c.transaction() as g:
                assert g.root(f'db{i}')['n'] == 2
        print('OK', c.max_open, peak)
        c.close()
''')


def _run_fd_script(tmp_path, mode):
    out = subprocess.run([sys.executable, '-c', _FD_SCRIPT, str(tmp_path),
                          mode], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_plain_runs_out_of_file_descriptors(tmp_path):
    word, opened, errno = _run_fd_script(tmp_path, 'plain')
    assert word == 'FAILED' and int(errno) == 24  # EMFILE
    assert int(opened) < 150


@pytest.mark.slow
def test_fixed_max_open_keeps_within_fd_limit(tmp_path):
    word, max_open, peak = _run_fd_script(tmp_path, 'multidb')
    assert word == 'OK'
    assert int(max_open) * 4 <= 256 * 3 // 4 + 3
    assert int(peak) < 256
