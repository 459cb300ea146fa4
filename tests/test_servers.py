"""Tenants spread over several PostgreSQL servers: placement, move, a
server that is down.  Three real clusters on loopback ports stand in for
three hosts (the pg_servers fixture); the catalog is on the first.
"""
import json
import os
import queue
import subprocess
import sys
import uuid

import pytest
from persistent.mapping import PersistentMapping

import multidb
from multidb.config import collectionFromFiles
from servers import servers_config

pytestmark = pytest.mark.slow

MULTIDB = [sys.executable, '-m', 'multidb.cli']


def _conf(folder, servers, prefix, **options):
    """A configuration: the catalog on servers[0], tenants over all three
    (a, the template's own, is the main server)."""
    return servers_config(folder, servers, prefix, prefix[:-1] + 'catalog',
                          **options)


@pytest.fixture
def prefix(pg_servers):
    p = 's' + uuid.uuid4().hex[:6] + '_'
    pg_servers[0].sql(f'CREATE DATABASE "{p[:-1]}catalog"')
    yield p
    for pg in pg_servers:
        if pg.proc is None:
            pg.start()
        pg.drop_databases(p[:-1])


@pytest.fixture
def conf(tmp_path, pg_servers, prefix):
    return _conf(tmp_path, pg_servers, prefix)


def _dbs(pg, prefix):
    return sorted(n for (n,) in pg.sql('SELECT datname FROM pg_database')
                  if n.startswith(prefix) and 'template' not in n
                  and n != prefix[:-1] + 'catalog')


def _cli(conf, *argv, env=None, check=True):
    proc = subprocess.run(MULTIDB + ['-C', conf, *argv],
                          capture_output=True, text=True, env=env)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def _tenant_k(conf):
    """A collection of conf with tenant k on server a, k's n at 1."""
    c = collectionFromFiles([conf])
    try:
        c.tenants.create('k', server='a')
        with c.transaction() as g:
            g.root('k')['n'] = 1
    except BaseException:
        c.close()
        raise
    return c


def test_tenants_are_placed_over_the_servers(conf, pg_servers, prefix):
    c = collectionFromFiles([conf])
    try:
        t = c.tenants
        for i in range(6):
            t.create(f't{i}')
        where = {r.name: r.settings['server'] for r in t.list()}
        # Fewest tenants first: two on each, whatever the order.
        assert sorted(where.values()) == ['a', 'a', 'b', 'b', 'c', 'c']
        for pg, server in zip(pg_servers, 'abc'):
            assert _dbs(pg, prefix) == sorted(
                prefix + n for n, s in where.items() if s == server)
        rec = t.create('pinned', server='c')
        assert rec.settings['server'] == 'c'
        with pytest.raises(multidb.UnknownServer) as e:
            t.create('nowhere', server='d')
        assert "'d'" in str(e.value) and 'a, b, c' in str(e.value)
        assert 'nowhere' not in t
        with c.transaction() as g:
            for name in where:
                g.root(name)['v'] = name
        with c.transaction() as g:
            assert all(g.root(n)['v'] == n for n in where)
        status = {s['name']: s for s in t.servers()}
        assert status['c']['tenants'] == 3 and status['a']['main']
    finally:
        c.close()


def test_most_free_space_and_bad_configurations(tmp_path, pg_servers,
                                                prefix):
    conf = _conf(tmp_path, pg_servers, prefix, placement='most-free-space',
                 capacities={'a': '1GB', 'b': '10GB', 'c': '2GB'})
    c = collectionFromFiles([conf])
    try:
        assert c.tenants.create('big').settings['server'] == 'b'
    finally:
        c.close()
    # Most free space needs every capacity: the error names the server.
    conf = _conf(tmp_path, pg_servers, prefix, placement='most-free-space',
                 capacities={'a': '1GB', 'b': '10GB'})
    with pytest.raises(Exception) as e:
        collectionFromFiles([conf])
    assert 'c has none' in str(e.value)
    text = open(conf).read().replace('placement most-free-space',
                                     'placement fewest-tenants')
    for old, new, error in [
            ('<server b>', '<server c>', '<server c> is declared twice'),
            ('<server b>', '<server a>', "two tenant servers are named 'a'"),
            ('<server b>', '<server 2b>', "server name '2b'"),
            ('placement fewest-tenants', 'placement random',
             "placement must be one of")]:
        with open(conf, 'w') as f:
            f.write(text.replace(old, new))
        with pytest.raises(Exception) as e:
            collectionFromFiles([conf])
        assert error in str(e.value)
        assert 'servers.conf' in str(e.value)


@pytest.mark.parametrize('history', [False, True])
def test_move_keeps_the_data_and_drops_the_source(tmp_path, pg_servers,
                                                  prefix, history):
    conf = _conf(tmp_path, pg_servers, prefix, history=history)
    c = collectionFromFiles([conf])
    other = collectionFromFiles([conf])
    try:
        t = c.tenants
        t.create('acme', server='a')
        with c.transaction() as g:
            root = g.root('acme')
            # Persistent objects: their oids must not be given again on
            # the new server.
            root['items'] = {i: PersistentMapping(v='x' * 100, i=i)
                             for i in range(1000)}
            root['n'] = 1
        with other.transaction() as g:
            assert g.root('acme')['n'] == 1   # opened there, on a
        events = queue.Queue()
        other.tenants.subscribe(events.put, ['acme'])
        done = t.move('acme', 'c')
        # The other process is told at once (LISTEN/NOTIFY), with the
        # record that names the new server.
        event = events.get(timeout=5)
        assert (event.name, event.kind) == ('acme', 'changed')
        assert event.record.settings['server'] == 'c'
        assert done['from'] == 'a' and done['to'] == 'c'
        assert done['source_dropped'] and done['pause'] < 30
        assert t.get('acme').settings['server'] == 'c'
        assert _dbs(pg_servers[0], prefix) == []
        assert _dbs(pg_servers[2], prefix) == [prefix + 'acme']
        # The other process reads it from c, and both write to it.
        for coll in (other, c):
            with coll.transaction() as g:
                root = g.root('acme')
                assert len(root['items']) == 1000
                root['n'] += 1
                root[id(coll)] = PersistentMapping(k=1)   # new oids on c
        with c.transaction() as g:
            root = g.root('acme')
            assert root['n'] == 3
            assert [root['items'][i]['i'] for i in range(1000)] == \
                list(range(1000))
            assert [root[id(coll)]['k'] for coll in (other, c)] == [1, 1]
        # Moving it where it is, or somewhere unknown: refused.
        with pytest.raises(multidb.InvalidInput):
            t.move('acme', 'c')
        with pytest.raises(multidb.UnknownServer):
            t.move('acme', 'z')
        # And back.
        t.move('acme', 'b')
        with other.transaction() as g:
            assert g.root('acme')['n'] == 3
        assert _dbs(pg_servers[2], prefix) == []
    finally:
        other.close()
        c.close()


WRITER = r'''
import sys, time, transaction
from multidb.config import collectionFromFiles
conf, name, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
c = collectionFromFiles([conf])
done = 0
deadline = time.monotonic() + seconds
from BTrees.IOBTree import IOBTree
from persistent.mapping import PersistentMapping
def bump(g):
    root = g.root(name)
    n = root['n'] = root.get('n', 0) + 1
    if 'log' not in root:
        root['log'] = IOBTree()
    root['log'][n] = PersistentMapping(i=n)   # a new oid each time
gaps, last = [], time.monotonic()
while time.monotonic() < deadline:
    c.run(bump, attempts=200, backoff=0.01, max_backoff=0.1)
    done += 1
    now = time.monotonic()
    gaps.append(now - last)
    last = now
    print('READY', flush=True) if done == 20 else None
c.close()
print(done, max(gaps), flush=True)
'''


def test_a_move_under_writes_from_another_process(conf, pg_servers, prefix,
                                                  tmp_path):
    c = collectionFromFiles([conf])
    try:
        c.tenants.create('busy', server='a')
        writer = subprocess.Popen(
            [sys.executable, '-c', WRITER, conf, 'busy', '8'],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert writer.stdout.readline() == 'READY\n', writer.stderr.read()
        first = c.tenants.move('busy', 'b')
        second = c.tenants.move('busy', 'c')
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
        done, longest = out.split()
        with c.transaction() as g:
            # Every commit the writer saw succeed is there, once, and no
            # object was given an oid another has.
            root = g.root('busy')
            assert root['n'] == int(done)
            assert [root['log'][i]['i'] for i in range(1, int(done) + 1)] \
                == list(range(1, int(done) + 1))
        assert int(done) > 40
        assert first['source_dropped'] and second['source_dropped']
        assert [_dbs(pg, prefix) for pg in pg_servers] == [
            [], [], [prefix + 'busy']]
    finally:
        c.close()


@pytest.mark.parametrize('step', ['move.prepared', 'move.copied',
                                  'move.fenced', 'move.renamed',
                                  'move.committed'])
def test_a_move_killed_at_each_step_loses_nothing(conf, pg_servers, prefix,
                                                  step):
    _tenant_k(conf).close()
    env = dict(os.environ, MULTIDB_CRASH_AT=step)
    proc = _cli(conf, 'move', 'k', '--to', 'b', env=env, check=False)
    assert proc.returncode == -9, proc.stderr
    switched = step == 'move.committed'
    c = collectionFromFiles([conf])
    try:
        rec = c.tenants.get('k')
        assert rec.settings['server'] == ('b' if switched else 'a')
        # repair: the tenant takes writes again; what the move left on the
        # server the record does not name goes.
        findings = json.loads(_cli(conf, '--json', 'repair').stdout)
        assert all(not f["action"].startswith("failed") for f in findings), \
            findings
        with c.transaction() as g:
            g.root('k')['n'] += 1
        with c.transaction() as g:
            assert g.root('k')['n'] == 2
        here, there = (1, 0) if switched else (0, 1)
        assert _dbs(pg_servers[here], prefix) == [prefix + 'k']
        assert _dbs(pg_servers[there], prefix) == []
        # And the move can be made (again).
        target = 'c'
        c.tenants.move('k', target)
        with c.transaction() as g:
            assert g.root('k')['n'] == 2
    finally:
        c.close()


def test_a_killed_move_is_undone_by_the_next_move(conf, pg_servers, prefix):
    c = _tenant_k(conf)
    try:
        env = dict(os.environ, MULTIDB_CRASH_AT='move.renamed')
        assert _cli(conf, 'move', 'k', '--to', 'b', env=env,
                    check=False).returncode == -9
        # Fenced: a write fails (retryable), until the move is made again.
        with pytest.raises(Exception) as e:
            with c.transaction() as g:
                g.root('k')['n'] = 5
        assert 'being moved' in str(e.value)
        _cli(conf, 'move', 'k', '--to', 'b')
        with c.transaction() as g:
            assert g.root('k')['n'] == 1
            g.root('k')['n'] = 2
        assert c.tenants.get('k').settings['server'] == 'b'
        assert _dbs(pg_servers[0], prefix) == []
    finally:
        c.close()


def test_a_server_down_affects_only_its_tenants(conf, pg_servers, prefix):
    c = collectionFromFiles([conf])
    down = pg_servers[2]
    try:
        for server in 'abc':
            c.tenants.create('on' + server, server=server)
        with c.transaction() as g:
            for server in 'abc':
                g.root('on' + server)['v'] = server
        # Writers in other processes, to the tenants on a and b, while c
        # goes down: every commit they saw succeed is there.
        writers = [subprocess.Popen(
            [sys.executable, '-c', WRITER, conf, name, '4'],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for name in ('ona', 'onb')]
        for w in writers:
            assert w.stdout.readline() == 'READY\n', w.stderr.read()
        # Placement counts: c holds the fewest, and that is what the
        # placement knows (asked now, for an hour).
        backend = c.tenants.backend
        backend.placement_ttl = 3600
        for server in 'ab':
            for i in range(3):
                c.tenants.create(f'more{server}{i}', server=server)
        assert backend.place('probe') == 'c'
        down.stop()
        counts = []
        for w in writers:
            out, err = w.communicate(timeout=120)
            assert w.returncode == 0, err
            counts.append(int(out.split()[0]))
        with c.transaction() as g:
            assert [g.root(n)['n'] for n in ('ona', 'onb')] == counts
        for _ in range(20):
            with c.transaction() as g:
                assert g.root('ona')['v'] == 'a'
                assert g.root('onb')['v'] == 'b'
                g.root('onb')['w'] = 1
        health = {h.name: h for h in c.health(['ona', 'onb', 'onc'])}
        assert health['ona'].reachable and health['onb'].reachable
        assert not health['onc'].reachable
        status = {s['name']: s for s in c.tenants.servers()}
        assert not status['c']['reachable'] and status['a']['reachable']
        proc = _cli(conf, 'servers', check=False)
        assert proc.returncode == 1 and 'NO' in proc.stdout
        # A create placed on c, as the placement knew it, fails (nothing
        # is made); placement asks c again, and the next goes elsewhere.
        with pytest.raises(multidb.ServerUnavailable):
            c.tenants.create('new1')
        assert 'new1' not in c.tenants
        assert c.tenants.create('new2').settings['server'] in ('a', 'b')
    finally:
        if down.proc is None:
            down.start()
        c.close()
    c = collectionFromFiles([conf])
    try:
        with c.transaction() as g:
            assert g.root('onc')['v'] == 'c'
    finally:
        c.close()


def test_snapshots_follow_a_move_and_another_process_reverts(
        tmp_path, pg_servers, prefix):
    # The tenants' dsn is spelled differently on c: the snapshot folder
    # follows the database's name.
    conf = _conf(tmp_path, pg_servers, prefix)
    text = open(conf).read().replace(
        pg_servers[2].dsn(prefix + '{name}'),
        pg_servers[2].dsn(prefix + 'c_{name}'))
    with open(conf, 'w') as f:
        f.write(text)
    a = collectionFromFiles([conf])
    b = collectionFromFiles([conf])
    try:
        a.tenants.create('snap', server='a')
        with a.transaction() as g:
            g.root('snap')['n'] = 1
        first = a.tenants.snapshot('snap')
        with a.transaction() as g:
            g.root('snap')['n'] = 2
        a.tenants.move('snap', 'c')
        rec = b.tenants.get('snap')
        assert rec.settings['dbname'] == prefix + 'c_snap'
        assert [s.id for s in rec.snapshots] == [first]
        b.tenants.revert('snap', first)
        with a.transaction() as g:
            assert g.root('snap')['n'] == 1
        assert _dbs(pg_servers[2], prefix) == [prefix + 'c_snap']
        # Nothing for repair to find.
        assert json.loads(_cli(conf, '--json', 'repair').stdout) == []
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize('step,stopped', [('move.copied', 1),
                                          ('move.fenced', 0)])
def test_a_server_lost_during_a_move_loses_nothing(conf, pg_servers, prefix,
                                                   step, stopped):
    """The target lost while copying, or the source lost behind the
    fence: the move fails, the record names the source, and once the
    server is back (and repair ran) the tenant takes writes, with one
    database."""
    _tenant_k(conf).close()
    env = dict(os.environ, MULTIDB_PAUSE_AT=step)
    mover = subprocess.Popen(MULTIDB + ['-C', conf, 'move', 'k', '--to', 'b'],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    server = pg_servers[stopped]
    try:
        assert mover.stdout.readline() == f'PAUSED {step}\n'
        server.stop()
        out, err = mover.communicate('\n', timeout=120)
        assert mover.returncode == 1, (out, err)
    finally:
        if server.proc is None:
            server.start()
    _cli(conf, 'repair')
    c = collectionFromFiles([conf])
    try:
        assert c.tenants.get('k').settings['server'] == 'a'
        with c.transaction() as g:
            g.root('k')['n'] += 1
        with c.transaction() as g:
            assert g.root('k')['n'] == 2
        assert _dbs(pg_servers[0], prefix) == [prefix + 'k']
        assert _dbs(pg_servers[1], prefix) == []
    finally:
        c.close()


def test_a_database_whose_server_is_gone_still_closes(pg_servers, prefix,
                                                      caplog):
    """ZODB's Connection.open polls before it joins the transaction
    manager: when the poll fails (the server gone), plain ZODB leaves the
    connection half open, and DB.close() then fails on it (KeyError)
    before closing the storage."""
    import logging
    from relstorage.adapters.postgresql import PostgreSQLAdapter
    from relstorage.options import Options
    from relstorage.storage import RelStorage
    pg = pg_servers[2]
    pg.sql(f'CREATE DATABASE "{prefix}gone"')
    options = Options(keep_history=False)
    storages = []

    def factory():
        storages.append(RelStorage(PostgreSQLAdapter(
            dsn=pg.dsn(prefix + 'gone'), options=options), options=options))
        return storages[-1]
    coll = multidb.Collection()
    coll.declare('gone', factory)
    try:
        with coll.transaction() as g:
            g.root('gone')['v'] = 1
        pg.stop()
        for _ in range(3):
            with pytest.raises(Exception):
                with coll.transaction() as g:
                    g.root('gone')['v']
            assert not coll.health(['gone'])[0].reachable
        with caplog.at_level(logging.ERROR, logger='multidb'):
            coll.close()
        assert not [r for r in caplog.records
                    if r.name.startswith('multidb')], caplog.text
        assert storages and all(s._closed for s in storages)
    finally:
        coll.close()
        if pg.proc is None:
            pg.start()


def test_two_moves_at_once_and_what_is_in_the_way(conf, pg_servers, prefix):
    c = _tenant_k(conf)
    try:
        # Two processes move it at once: the name's lock puts them one
        # after the other; the second finds it there already.
        procs = [subprocess.Popen(
            MULTIDB + ['-C', conf, 'move', 'k', '--to', 'b'],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
        results = [p.communicate(timeout=120) + (p.returncode,)
                   for p in procs]
        codes = sorted(r[2] for r in results)
        assert codes == [0, 1], results
        assert any('is on it already' in r[1] for r in results), results
        with c.transaction() as g:
            assert g.root('k')['n'] == 1
        assert [_dbs(pg, prefix) for pg in pg_servers] == [
            [], [prefix + 'k'], []]
        # A database of that name on the target that is not provably the
        # tenant's: nothing is deleted, the move is refused.
        pg_servers[2].sql(f'CREATE DATABASE "{prefix}k"')
        with pytest.raises(multidb.StorageInTheWay, match='no tenant id'):
            c.tenants.move('k', 'c')
        pg_servers[2].sql(f'COMMENT ON DATABASE "{prefix}k" IS'
                          f" 'multidb-tenant-id:{'f' * 32}'")
        with pytest.raises(multidb.StorageInTheWay, match='another tenant'):
            c.tenants.move('k', 'c')
        assert _dbs(pg_servers[2], prefix) == [prefix + 'k']
        assert c.tenants.get('k').settings['server'] == 'b'
        with c.transaction() as g:
            g.root('k')['n'] = 2
    finally:
        c.close()


def test_no_password_reaches_records_or_output(tmp_path, pg_servers,
                                               prefix):
    conf = _conf(tmp_path, pg_servers, prefix)
    text = open(conf).read()
    b = pg_servers[1].dsn(prefix + '{name}')
    with open(conf, 'w') as f:
        f.write(text.replace(b, b + ' password=sekrit-pw'))
    c = collectionFromFiles([conf])
    try:
        c.tenants.create('p', server='b')
        c.tenants.move('p', 'c')
        c.tenants.move('p', 'b')
        assert 'sekrit' not in repr(c.tenants.get('p'))
    finally:
        c.close()
    for argv in (['--json', 'list'], ['servers'], ['--json', 'servers'],
                 ['show', 'p'], ['move', 'p', '--to', 'a']):
        proc = _cli(conf, *argv)
        assert 'sekrit' not in proc.stdout + proc.stderr, argv


def test_the_fence_refuses_at_the_vote(conf, pg_servers, prefix):
    """A transaction writing the tenant being moved and another database
    must fail whole: refused at tpc_finish (where RelStorage moves the
    data in), the other database, finishing first, would have committed,
    and each retry would apply its change again."""
    import threading
    # ZODB finishes a transaction's storages in the order of their
    # sortKey; RelStorage's holds its adapter's address, so the order of
    # two tenants is chance.  x is made to finish last (commit_last, as
    # the catalog does): the other tenant's tpc_finish comes first.
    servers = dict(zip('abc', pg_servers))
    src, dst = 'a', 'b'
    c = collectionFromFiles([conf])
    try:
        c.commit_last.add('x')
        t = c.tenants
        t.create('x', server=src)
        name = 'o0'
        t.create(name, server=dst)
        with c.transaction() as g:
            g.root(name)['n'] = 0
            g.root('x')['n'] = 0
            keys = {n: g.root(n)._p_jar.sortKey() for n in ('x', name)}
        assert keys[name] < keys['x'], keys
        other = name
        rec = t.get('x')
        mover = t.backend.mover(rec.settings,
                                t.backend.settings_on(rec.settings, dst))
        mover.prepare()
        mover.copy()
        mover.fence()
        threading.Timer(0.5, mover.abort).start()   # then it comes down

        def func(g):
            g.root('x')['n'] += 1
            g.root(other)['n'] += 1
        c.run(func, attempts=100, backoff=0.02, max_backoff=0.05)
        with c.transaction() as g:
            assert (g.root('x')['n'], g.root(other)['n']) == (1, 1)
        assert _dbs(servers[dst], prefix) == [prefix + other]
        assert prefix + 'x' in _dbs(servers[src], prefix)
    finally:
        c.close()


def test_one_server_spelled_twice_is_never_a_move_target(
        tmp_path, pg_servers, prefix):
    """Server b is server a's cluster, its dsn spelled another way: a
    move from a to b would 'copy' the tenant onto its own database and
    then drop the source, that very database.  Refused; and repair scans
    that cluster once (else the tenant's database, found again as b's,
    would be at a place no record names)."""
    conf = _conf(tmp_path, pg_servers, prefix)
    text = open(conf).read()
    b = pg_servers[1].dsn(prefix + '{name}')
    a_again = pg_servers[0].dsn(prefix + '{name}') + ' connect_timeout=7'
    with open(conf, 'w') as f:
        f.write(text.replace(b, a_again))
    c = _tenant_k(conf)
    try:
        with pytest.raises(multidb.InvalidInput, match="spelled another"):
            c.tenants.move('k', 'b')
        findings = c.tenants.repair()
        assert findings == [], findings
        with c.transaction() as g:
            assert g.root('k')['n'] == 1
        assert _dbs(pg_servers[0], prefix) == [prefix + 'k']
        # A real other server is not taken for the same.
        assert not c.tenants.backend.same_cluster('a', 'c')
    finally:
        c.close()
