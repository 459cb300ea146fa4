"""Following the catalog as it changes: the watcher applies what another
process did without waiting for a request, and subscribers are told
(multidb.tenants.events).  Real FileStorage, a real ZEO server, a real
PostgreSQL cluster."""
import queue
import threading
import time

import pytest
import transaction

import multidb
from multidb.backends.relstorage import RelStorageBackend
from multidb.tenants import catalog
from multidb.tenants.events import TenantEvent
from helpers import fs_tenants
from test_catalog_changes import _zeo_pair


def _next(events, timeout=10):
    return events.get(timeout=timeout)


def _none(events, wait=0.3):
    with pytest.raises(queue.Empty):
        events.get(timeout=wait)


def test_own_changes_are_told(tmp_path):
    c, t = fs_tenants(tmp_path)
    events = queue.Queue()
    try:
        t.create('before')
        sub = t.subscribe(events.put)
        _none(events)                  # from now on only
        t.create('a')
        e = _next(events)
        assert (e.name, e.kind) == ('a', 'created')
        assert e.record.name == 'a' and e.serial > 0
        sid = t.snapshot('a')
        t.revert('a', sid)
        assert _next(events)[:2] == ('a', 'changed')
        t.drop('a')
        e = _next(events)
        assert (e.name, e.kind, e.record) == ('a', 'dropped', None)
        # Names: only those.
        only = queue.Queue()
        with t.subscribe(only.put, names=['b']):
            t.create('c')
            t.create('b')
            assert _next(only)[:2] == ('b', 'created')
            _none(only)
        assert [_next(events).name for _ in range(2)] == ['c', 'b']
        sub.close()
        sub.close()
        t.create('d')
        _none(events)
    finally:
        c.close()


def test_commits_of_tenants_are_told_when_asked(tmp_path):
    c, t = fs_tenants(tmp_path)
    commits, changes = queue.Queue(), queue.Queue()
    try:
        t.create('a')
        with t.subscribe(commits.put, commits=True), \
                t.subscribe(changes.put):
            with c.transaction() as g:
                g.root('a')['x'] = 1
            e = _next(commits)
            assert (e.name, e.kind) == ('a', 'committed')
            assert e.tid == c['a'].storage.lastTransaction()
            with c.transaction() as g:
                g.root('catalog')       # not a tenant: no event
            _none(commits)
            _none(changes)              # commits only when asked
            t.create('b')               # the catalog's change, told too
            assert _next(commits)[:2] == ('b', 'created')
            assert _next(changes)[:2] == ('b', 'created')
            _none(commits)
    finally:
        c.close()


def test_changes_of_another_process_on_zeo(zeo_server, tmp_path,
                                           monkeypatch):
    a, b = _zeo_pair(zeo_server, tmp_path)
    events = queue.Queue()
    try:
        b.tenants.subscribe(events.put)
        a.tenants.create('x')
        a.remove('x')
        start = time.monotonic()
        e = _next(events)
        assert (e.name, e.kind) == ('x', 'created')
        assert time.monotonic() - start < 1
        a.tenants.drop('x')
        assert _next(events)[:2] == ('x', 'dropped')
        # Too far behind the log: told so, never a silent gap.
        monkeypatch.setattr(catalog, 'LOG_KEEP', 2)
        gate = threading.Event()
        watch = b.tenants._apply_and_tell

        def late():                 # a watcher held up meanwhile
            gate.wait(10)
            watch()
        b.tenants._apply_and_tell = late
        for name in ('p', 'q', 'r', 's'):
            a.tenants.create(name)
        gate.set()
        e = _next(events)
        assert (e.name, e.kind, e.record) == (None, 'resync', None)
        # Creates committed after the watcher's read may follow, told as
        # such; nothing else.
        later = []
        while True:
            try:
                later.append(events.get(timeout=0.5))
            except queue.Empty:
                break
        assert all(x.kind == 'created' and x.name in {'p', 'q', 'r', 's'}
                   for x in later)
    finally:
        a.close()
        b.close()


def _pg_pair(postgres, pg_db, tmp_path, prefix, **kw):
    from test_relstorage import _rs_factory
    backend = RelStorageBackend(postgres.dsn(prefix + '{name}'),
                                template=prefix + 'template',
                                keep_history=False)
    made = []
    for _ in range(2):
        c = multidb.Collection()
        c.declare('catalog', _rs_factory(postgres, pg_db))
        t = multidb.Tenants(c, catalog='catalog', backend=backend, **kw)
        t.catalog_poll_interval = 3600   # only NOTIFY can tell, then
        made.append(c)
    return made


@pytest.fixture
def prefix(postgres):
    import uuid
    p = 'e' + uuid.uuid4().hex[:6] + '_'
    yield p
    postgres.drop_databases(p)


def test_postgresql_listen_notify(postgres, pg_db, tmp_path, prefix):
    a, b = _pg_pair(postgres, pg_db, tmp_path, prefix)
    events = queue.Queue()
    try:
        a.tenants.create('x', init=lambda root: root.update(v=1))
        with b.transaction() as g:
            assert g.root('x')['v'] == 1
        assert b.is_open('x')
        b.tenants.subscribe(events.put)
        assert b.tenants._listener.ready.wait(10)
        assert b.tenants._listener.connected
        # A drop in a: b closes x and forgets it within moments, with no
        # request (its poll interval is an hour).
        a.tenants.drop('x')
        start = time.monotonic()
        assert _next(events)[:2] == ('x', 'dropped')
        assert time.monotonic() - start < 1
        assert 'x' not in b
        with pytest.raises(multidb.UnknownDatabase):
            with b.transaction() as g:
                g.root('x')
        # The listening connection dies: the listener reconnects and
        # reads what was committed meanwhile.
        postgres.sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            f" WHERE datname = '{pg_db}' AND query LIKE 'LISTEN%'")
        a.tenants.create('y')
        e = _next(events)
        assert (e.name, e.kind) == ('y', 'created')
    finally:
        a.close()
        b.close()
    # Both listeners gone with their collections.
    deadline = time.monotonic() + 10
    while postgres.sql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname ="
            f" '{pg_db}' AND query LIKE 'LISTEN%'")[0][0]:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_postgresql_commits_of_another_process(postgres, pg_db, tmp_path,
                                               prefix):
    a, b = _pg_pair(postgres, pg_db, tmp_path, prefix, notify_commits=True)
    commits = queue.Queue()
    try:
        a.tenants.create('x')
        b.tenants.subscribe(commits.put, commits=True)
        assert b.tenants._listener.ready.wait(10)
        _ = a.tenants.get('x')
        with a.transaction() as g:
            g.root('x')['n'] = 1
        tid = a['x'].storage.lastTransaction()
        e = _next(commits)
        assert (e.name, e.kind, e.tid) == ('x', 'committed', tid)
        _none(commits)
        # The listener away: commits may be missed, and b is told so.
        postgres.sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            f" WHERE datname = '{pg_db}' AND query LIKE 'LISTEN%'")
        assert _next(commits)[:2] == (None, 'commits-missed')
        with a.transaction() as g:
            g.root('x')['n'] = 2
        e = _next(commits)
        assert (e.name, e.kind) == ('x', 'committed')
    finally:
        a.close()
        b.close()


def test_postgresql_role_that_may_not_make_the_trigger(postgres, pg_db,
                                                       tmp_path, prefix,
                                                       caplog):
    # The catalog made by its owner; a process connecting as a role that
    # may use the tables but not make the trigger polls instead, saying
    # so once.
    import logging
    from test_relstorage import _rs_factory
    owner, _ = _pg_pair(postgres, pg_db, tmp_path, prefix,
                        catalog_notify=False)
    try:
        owner.tenants.create('x')       # the catalog's tables made
    finally:
        owner.close()
    role = prefix + 'app'
    postgres.sql(f'CREATE ROLE "{role}" LOGIN')
    try:
        # What RelStorage needs (it checks its schema as it opens), not
        # the TRIGGER privilege.
        for grant in ('GRANT CREATE, USAGE ON SCHEMA public TO "{r}"',
                      'GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON'
                      ' ALL TABLES IN SCHEMA public TO "{r}"',
                      'GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "{r}"'):
            postgres.sql(grant.format(r=role), dbname=pg_db)
        backend = RelStorageBackend(postgres.dsn(prefix + '{name}'),
                                    template=prefix + 'template',
                                    keep_history=False)
        c = multidb.Collection()

        def catalog():
            dsn = postgres.dsn(pg_db).replace('user=postgres',
                                              f'user={role}')
            return RelStorageBackend(postgres.dsn('x_{name}'),
                                     keep_history=False)._open_relstorage(dsn)
        c.declare('catalog', catalog)
        t = multidb.Tenants(c, catalog='catalog', backend=backend)
        try:
            with caplog.at_level(logging.WARNING,
                                 logger='multidb.backends.pgnotify'):
                t.subscribe(lambda e: None)
                assert t._listener.ready.wait(10)
                time.sleep(0.3)
            assert not t._listener.connected
            assert caplog.text.count('cannot listen for changes') == 1
            assert 'found by polling instead' in caplog.text
            assert 'permission denied' in caplog.text
        finally:
            c.close()
    finally:
        postgres.sql(f'DROP OWNED BY "{role}"', dbname=pg_db)
        postgres.sql(f'DROP ROLE "{role}"')
