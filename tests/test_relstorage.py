"""Tenants on PostgreSQL through RelStorage, on a real server started by
the test run (see conftest.postgres)."""
import functools
import os
import time
import uuid

import psycopg2
import pytest
import transaction
from ZODB.FileStorage import FileStorage

import multidb
from helpers import root_dict
from helpers import update_root
from multidb.backends.relstorage import RelStorageBackend


def _dbnames(postgres):
    return {r[0] for r in postgres.sql('SELECT datname FROM pg_database')}


@pytest.fixture
def prefix():
    return 't' + uuid.uuid4().hex[:6] + '_'


@pytest.fixture
def backend(postgres, prefix, tmp_path):
    b = RelStorageBackend(postgres.dsn(prefix + '{name}'),
                          template=prefix + 'template',
                          snapshot_dir=str(tmp_path / 'snapshots'),
                          keep_history=False)
    yield b
    for name in _dbnames(postgres):
        if name.startswith(prefix):
            postgres.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _rs_factory(postgres, dbname):
    def make():
        return RelStorageBackend(postgres.dsn('x_{name}'),
                                 keep_history=False)._open_relstorage(
                                     postgres.dsn(dbname))
    return make


@pytest.fixture
def tenants(postgres, backend, pg_db):
    """Tenants on PostgreSQL with the catalog on PostgreSQL too."""
    c = multidb.Collection()
    c.declare('catalog', _rs_factory(postgres, pg_db))
    t = multidb.Tenants(c, catalog='catalog', backend=backend)
    yield t
    c.close()


_root = root_dict
_set = update_root


def test_create_is_create_database_from_template(tenants, postgres, prefix):
    rec = tenants.create('acme', init=lambda root: root.update(v=1))
    assert rec.settings['dbname'] == prefix + 'acme'
    assert rec.settings['keep_history'] is False
    names = _dbnames(postgres)
    assert prefix + 'acme' in names and prefix + 'template' in names
    assert _root(tenants, 'acme') == {'v': 1}
    # The template has no connection left: a second create works at once.
    tenants.create('bravo')
    assert _root(tenants, 'bravo') == {}


def test_drop_is_drop_database(tenants, postgres, prefix):
    tenants.create('acme')
    _set(tenants, 'acme', v=1)
    tenants.drop('acme')
    assert prefix + 'acme' not in _dbnames(postgres)
    assert 'acme' not in tenants


def test_sql_in_a_name_never_reaches_the_server(postgres, prefix, tmp_path):
    # The admin connection points at a closed port: a query would fail
    # with OperationalError, not InvalidName.
    dead = RelStorageBackend(postgres.dsn(prefix + '{name}'),
                             admin_dsn='host=127.0.0.1 port=1 dbname=x',
                             snapshot_dir=str(tmp_path))
    c = multidb.Collection()
    c.declare('catalog', functools.partial(FileStorage,
                                           str(tmp_path / 'c.fs')))
    t = multidb.Tenants(c, catalog='catalog', backend=dead)
    before = _dbnames(postgres)
    for name in ['x"; DROP DATABASE postgres; --', "x'; DROP TABLE t; --",
                 'x;drop', 'x" OR "1"="1']:
        with pytest.raises(multidb.InvalidName):
            t.create(name)
    assert _dbnames(postgres) == before and 'postgres' in before
    c.close()


def test_name_too_long_for_postgresql(tenants):
    with pytest.raises(multidb.InvalidName, match='63 bytes'):
        tenants.create('a' * 60)


def test_clone_snapshot_revert(tenants):
    tenants.create('acme')
    _set(tenants, 'acme', v=1)
    sid = tenants.snapshot('acme', 'one')
    _set(tenants, 'acme', v=2)
    tenants.clone('acme', 'copy')
    assert _root(tenants, 'copy') == {'v': 2}
    undo = tenants.revert('acme', sid)
    assert _root(tenants, 'acme') == {'v': 1}
    tenants.revert('acme', undo)
    assert _root(tenants, 'acme') == {'v': 2}


def test_archive_restore_across_storage_kinds(tenants, tmp_path):
    # PostgreSQL -> archive -> FileStorage -> archive -> PostgreSQL
    tenants.create('acme')
    _set(tenants, 'acme', v='from postgres')
    arc = tmp_path / 'pg.multidb'
    tenants.archive('acme', arc)
    c = multidb.Collection()
    c.declare('catalog', functools.partial(FileStorage,
                                           str(tmp_path / 'cat.fs')))
    fs = multidb.Tenants(c, catalog='catalog',
                         backend=multidb.FileStorageBackend(
                             str(tmp_path / 'fs' / '{name}.fs')))
    try:
        fs.restore(arc, trust_unsigned=True)
        assert _root(fs, 'acme') == {'v': 'from postgres'}
        _set(fs, 'acme', v='from filestorage')
        fs.archive('acme', tmp_path / 'fs.multidb')
    finally:
        c.close()
    tenants.restore(tmp_path / 'fs.multidb', replace=True,
                    trust_unsigned=True)
    assert _root(tenants, 'acme') == {'v': 'from filestorage'}


def test_restore_corrupt_archive_touches_nothing(tenants, tmp_path, postgres,
                                                 prefix):
    tenants.create('acme')
    _set(tenants, 'acme', v=1)
    arc = tmp_path / 'a.multidb'
    tenants.archive('acme', arc)
    raw = arc.read_bytes()
    arc.write_bytes(raw[:-10])
    before = _dbnames(postgres)
    with pytest.raises(multidb.CorruptArchive):
        tenants.restore(arc, 'other', trust_unsigned=True)
    with pytest.raises(multidb.CorruptArchive):
        tenants.restore(arc, replace=True, trust_unsigned=True)
    assert _dbnames(postgres) == before
    assert _root(tenants, 'acme') == {'v': 1}


def test_history_preserving(postgres, prefix, tmp_path, pg_db):
    b = RelStorageBackend(postgres.dsn(prefix + '{name}'),
                          template=prefix + 'hp',
                          snapshot_dir=str(tmp_path), keep_history=True)
    c = multidb.Collection()
    c.declare('catalog', _rs_factory(postgres, pg_db))
    t = multidb.Tenants(c, catalog='catalog', backend=b)
    try:
        rec = t.create('acme')
        assert rec.settings['keep_history'] is True
        _set(t, 'acme', v=1)
        _set(t, 'acme', v=2)
        with c.transaction() as g:
            storage = g.get_connection('acme')._storage
            assert len(storage.history(b'\0' * 8, size=10)) >= 3
    finally:
        c.close()
        for name in _dbnames(postgres):
            if name.startswith(prefix):
                postgres.sql(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_repair_drops_leftover_databases(tenants, postgres, prefix, backend):
    tenants.create('acme')
    # A crashed create's database (it carries a tenant id, no record has
    # it), a crashed load's temporary database, and a database of the
    # tenants' name pattern that multidb did not make (no id): kept.
    backend.prepare(backend.settings_for('ghost'))
    postgres.sql(f'CREATE DATABASE "{prefix}acme~new123"')
    postgres.sql(f'CREATE DATABASE "{prefix}other" TEMPLATE'
                 f' "{prefix}template"')
    found = {(f['kind'], f['name'], f['action']) for f in tenants.repair()}
    assert found == {
        ('leftover', 'ghost', 'deleted'),
        ('temporary file', 'acme', 'deleted'),
        ('unidentified storage', 'other',
         "kept (no tenant id: not provably multidb's)")}
    names = _dbnames(postgres)
    assert prefix + 'ghost' not in names and prefix + 'acme~new123' \
        not in names and prefix + 'acme' in names
    assert prefix + 'other' in names
    assert [f['kind'] for f in tenants.repair()] == ['unidentified storage']


def test_expire_on_postgresql(tenants, postgres, prefix):
    tenants.expire_action = 'drop'
    tenants.create('old', expires=0)
    done = tenants.expire()
    assert done[0]['name'] == 'old' and done[0]['action'] == 'drop'
    assert prefix + 'old' not in _dbnames(postgres)


def test_dropped_elsewhere_seen_at_next_boundary(tenants, postgres, pg_db,
                                                 backend):
    # A second collection on the same catalog, as another process has.
    tenants.create('acme')
    other = multidb.Collection()
    other.declare('catalog', _rs_factory(postgres, pg_db))
    t2 = multidb.Tenants(other, catalog='catalog', backend=backend)
    try:
        tm = transaction.TransactionManager()
        g = other.group(tm)
        tm.begin()
        assert g.root('acme') == {}       # declared from the catalog
        tm.commit()
        g.release('acme')
        tenants.drop('acme')
        tm.begin()                        # the next boundary
        with pytest.raises(multidb.UnknownDatabase):
            g.get_connection('acme')
        tm.abort()
        g.close()
        assert 'acme' not in other
        tenants.create('bravo')           # created elsewhere: seen on use
        with other.transaction() as g2:
            assert g2.root('bravo') == {}
        assert 'bravo' in t2
    finally:
        other.close()


# -- tenants dropped by another process ---------------------------------
# ``tenants`` plays process A; a second collection on the same catalog
# plays process B.

def _second(postgres, pg_db, backend, notify=True, **kw):
    # notify=False: this process learns of the catalog's changes only by
    # reading it (its refresh, a failed open), never by LISTEN/NOTIFY.
    other = multidb.Collection(**kw)
    other.declare('catalog', _rs_factory(postgres, pg_db))
    return other, multidb.Tenants(other, catalog='catalog', backend=backend,
                                  catalog_notify=notify)


def _get_in_new_transaction(coll, *names):
    """Open names in that order in a new group and transaction."""
    with coll.transaction() as g:
        for name in names:
            g.get_connection(name)


@pytest.mark.parametrize('state', ['declared', 'evicted'])
def test_dropped_elsewhere_before_it_opens(tenants, postgres, pg_db,
                                           backend, state):
    # B knows x but has it closed, and its transaction has read the
    # catalog (listing x) already; A drops x (record, then database); B
    # opens x.  The open fails in RelStorage with psycopg2's
    # OperationalError ("database ... does not exist"): B re-reads the
    # catalog (Tenants.open_failed) and raises UnknownDatabase instead.
    tenants.create('x')
    tenants.create('y')
    # Not told by NOTIFY: the drop is found by the failed open.
    other, t2 = _second(postgres, pg_db, backend, notify=False,
                        max_open=2 if state == 'evicted' else None)
    try:
        if state == 'declared':
            assert t2.load() == 2            # declared, nothing opened
        else:
            _set(other, 'x', v=1)
            assert _root(other, 'y') == {}   # max_open=2: evicts x
            assert other.settle(30)
        assert 'x' in other and not other.is_open('x')
        tm = transaction.TransactionManager()
        g = other.group(tm)
        try:
            tm.begin()
            assert g.root('y') == {}         # the catalog lists x here
            tenants.drop('x')
            with pytest.raises(multidb.UnknownDatabase) as exc:
                g.get_connection('x')
            # The open failed with psycopg2's error, which the backend
            # tells apart from a tenant's missing database only by asking
            # the server: the collection's resolver asks the catalog.
            assert isinstance(exc.value.__cause__, multidb.MissingStorage)
            assert isinstance(exc.value.__cause__.__cause__,
                              psycopg2.OperationalError)
            assert exc.value.name == 'x'
            assert 'x' not in other and 'x' not in g.connections
            assert g.root('y') == {}         # the transaction goes on
        finally:
            tm.abort()
            g.close()
        with pytest.raises(multidb.UnknownDatabase):
            _get_in_new_transaction(other, 'x')
        assert 'x' not in other and 'x' not in t2
        assert _root(other, 'y') == {}
    finally:
        other.close()


@pytest.mark.parametrize('order', [('x',), ('y', 'x')])
def test_open_tenant_dropped_elsewhere_between_transactions(
        tenants, postgres, pg_db, backend, order):
    # B has x open, a connection in its pool (whose PostgreSQL session
    # the drop's DROP DATABASE ... WITH (FORCE) ends).  B's next
    # transaction reads the catalog first: x is gone, never empty.
    tenants.create('x', init=lambda root: root.update(v=1))
    tenants.create('y')
    other, _ = _second(postgres, pg_db, backend)
    try:
        assert _root(other, 'x') == {'v': 1}
        assert other.is_open('x')
        tenants.drop('x')
        with pytest.raises(multidb.UnknownDatabase):
            _get_in_new_transaction(other, *order)
        assert 'x' not in other
        assert _root(other, 'y') == {}
        tenants.create('x')                  # a new tenant of that name
        assert _root(other, 'x') == {}
    finally:
        other.close()


def test_open_tenant_dropped_elsewhere_between_refresh_and_open(
        tenants, postgres, pg_db, backend):
    # As above, but B's transaction read the catalog (listing x) before A
    # dropped x: B's pooled connection to x fails as it polls, and goes
    # back to its pool; B re-reads the catalog (Tenants.open_failed).
    tenants.create('x')
    tenants.create('y')
    other, _ = _second(postgres, pg_db, backend, notify=False)
    tm = transaction.TransactionManager()
    g = other.group(tm)
    try:
        assert _root(other, 'x') == {}
        assert other.is_open('x')
        tm.begin()
        assert g.root('y') == {}
        tenants.drop('x')
        with pytest.raises(multidb.UnknownDatabase) as exc:
            g.get_connection('x')
        assert isinstance(exc.value.__cause__, psycopg2.OperationalError)
        assert 'x' not in other and 'x' not in g.connections
        assert g.root('y') == {}
    finally:
        tm.abort()
        g.close()
    try:
        with pytest.raises(multidb.UnknownDatabase):
            _get_in_new_transaction(other, 'x')
        assert _root(other, 'y') == {}
    finally:
        other.close()


def test_tenant_dropped_elsewhere_while_a_group_holds_it(
        tenants, postgres, pg_db, backend):
    # B's group g1 is in a transaction on x when A drops x.  Another
    # group of B asking for x gets UnknownDatabase at once (x cannot
    # leave B's collection while g1 holds it), and x leaves at the first
    # transaction of B after g1 let go of it.
    tenants.create('x', init=lambda root: root.update(v=1))
    tenants.create('y')
    other, _ = _second(postgres, pg_db, backend)
    tm1 = transaction.TransactionManager()
    g1 = other.group(tm1)
    try:
        tm1.begin()
        assert g1.root('x') == {'v': 1}
        tenants.drop('x')
        with pytest.raises(multidb.UnknownDatabase):
            _get_in_new_transaction(other, 'x')
        _get_in_new_transaction(other, 'y')    # g1 holds x still
        with pytest.raises(multidb.UnknownDatabase):
            _get_in_new_transaction(other, 'x')
        g1.release('x')      # see the next test for g1's own boundary
        tm1.abort()
        _get_in_new_transaction(other, 'y')
        assert 'x' not in other
        with pytest.raises(multidb.UnknownDatabase):
            _get_in_new_transaction(other, 'y', 'x')
        assert _root(other, 'y') == {}
    finally:
        tm1.abort()
        g1.close()
        other.close()


def test_group_holding_a_tenant_dropped_elsewhere_next_transaction(
        tenants, postgres, pg_db, backend):
    # ZODB's Connection.afterCompletion and newTransaction poll every
    # member of the group at a transaction boundary: the member of a
    # dropped tenant used to raise the driver's error there.
    tenants.create('x')
    other, _ = _second(postgres, pg_db, backend)
    tm1 = transaction.TransactionManager()
    g1 = other.group(tm1)
    try:
        tm1.begin()
        assert g1.root('x') == {}
        tenants.drop('x')
        tm1.abort()
        tm1.begin()
        with pytest.raises(multidb.UnknownDatabase):
            g1.get_connection('x')
    finally:
        try:
            tm1.abort()
        finally:
            g1.close()
            other.close()


# B polls its catalog (on PostgreSQL, which pushes nothing) at most once
# per catalog_poll_interval (0: at every transaction).  A tenant dropped
# elsewhere is seen through its own database (dropped), one created
# elsewhere by asking the catalog about an unknown name, both at once,
# whatever the interval; data replaced elsewhere (revert, restore: RelStorage
# reconnects to the new database without a word) once it has passed.

@pytest.mark.parametrize('interval', [0, 3600])
@pytest.mark.parametrize('how', ['drop', 'revert', 'restore'])
def test_changes_elsewhere_are_seen(tenants, postgres, pg_db, backend,
                                    tmp_path, how, interval):
    # A changes x while B has it open: B's next transaction sees it, not
    # what its open database (and RelStorage's cache, keyed by transaction
    # ids a new database does not have) still holds.
    tenants.create('x', init=lambda root: root.update(v=1))
    sid = tenants.snapshot('x')
    archive = tmp_path / 'x.multidb'
    tenants.archive('x', archive)
    other, t2 = _second(postgres, pg_db, backend)
    t2.catalog_poll_interval = interval
    try:
        with tenants.collection.transaction() as g:
            g.root('x')['v'] = 2
        assert _root(other, 'x') == {'v': 2}
        with other.transaction() as g:
            assert g.root('x')['v'] == 2
            # Steady, with an interval: the catalog is not polled.
            assert ('catalog' in g.connections) == (interval == 0)
        tenants.create('y')                     # created elsewhere
        assert _root(other, 'y') == {}
        if how == 'drop':
            tenants.drop('x')
            with pytest.raises(multidb.UnknownDatabase):
                _root(other, 'x')
            assert 'x' not in other
            return
        if how == 'revert':
            tenants.revert('x', sid)
        else:
            tenants.restore(archive, replace=True, trust_unsigned=True)
        assert _root(tenants, 'x') == {'v': 1}
        if interval:
            t2.catalog_poll_interval = 0.2
            time.sleep(0.25)                    # the interval has passed
        assert _root(other, 'x') == {'v': 1}
    finally:
        other.close()


# -- snapshots kept on the server (snapshot_database) -------------------------

def _snapdb(prefix):
    # Not spelled as a tenant's database (prefix + name): refused.
    return 'snapshots_' + prefix


@pytest.fixture
def snapdb(postgres, prefix):
    yield _snapdb(prefix)
    postgres.sql(f'DROP DATABASE IF EXISTS "{_snapdb(prefix)}" WITH (FORCE)')


def test_snapshot_database_name_is_checked(postgres, prefix, tmp_path):
    def make(name):
        return RelStorageBackend(postgres.dsn(prefix + '{name}'),
                                 template='tpl_' + prefix,
                                 snapshot_dir=str(tmp_path),
                                 snapshot_database=name)
    for name, why in [(prefix + 'snaps', "spelled as a tenant's database"),
                      ('tpl_' + prefix, "the tenants' template"),
                      ('', 'not a PostgreSQL database name')]:
        with pytest.raises(ValueError, match=why):
            make(name)
    assert make(_snapdb(prefix)).snapshot_database == _snapdb(prefix)


def _host(postgres, pg_db, prefix, folder):
    """A process on a host of its own: its own local folder, the shared
    cluster (catalog, tenants, snapshot database)."""
    folder.mkdir(exist_ok=True)
    backend = RelStorageBackend(postgres.dsn(prefix + '{name}'),
                                template=prefix + 'template',
                                snapshot_dir=str(folder),
                                snapshot_database=_snapdb(prefix),
                                keep_history=False)
    c = multidb.Collection()
    c.declare('catalog', _rs_factory(postgres, pg_db))
    return c, multidb.Tenants(c, catalog='catalog', backend=backend)


def _files(folder):
    return sorted(p.name for p in folder.rglob('*') if p.is_file())


def test_snapshot_on_one_host_reverted_on_another(postgres, pg_db, prefix,
                                                  backend, tmp_path, snapdb):
    a, ta = _host(postgres, pg_db, prefix, tmp_path / 'host-a')
    b, tb = _host(postgres, pg_db, prefix, tmp_path / 'host-b')
    try:
        ta.create('x', init=lambda root: root.update(v=1))
        sid = ta.snapshot('x', 'before the change')
        assert _files(tmp_path / 'host-a') == []     # on the server
        _set(a, 'x', v=2)
        a.remove('x')
        # The other host lists it and reverts to it.
        assert [s.id for s in tb.snapshots('x')] == [sid]
        assert tb.backend.has_snapshot(tb.get('x').settings, sid)
        undo = tb.revert('x', sid)
        assert _root(b, 'x') == {'v': 1}
        assert _files(tmp_path / 'host-b') == []
        # The snapshot the revert took first is on the server too.
        assert {s.id for s in ta.snapshots('x')} == {sid, undo}
        b.remove('x')
        ta.revert('x', undo)
        assert _root(a, 'x') == {'v': 2}
    finally:
        a.close()
        b.close()


def test_snapshot_database_repair_and_drop(postgres, pg_db, prefix,
                                           backend, tmp_path, snapdb):
    a, ta = _host(postgres, pg_db, prefix, tmp_path / 'host-a')
    try:
        ta.create('x', init=lambda root: root.update(v=1))
        sid = ta.snapshot('x')
        settings = ta.get('x').settings
        store = ta.backend
        # A snapshot stored with no record (a crash before the catalog
        # listed it): repair finds it on the server and deletes it.
        stray = tmp_path / 'stray.fs'
        store.copy_snapshot(settings, sid, str(stray))
        store.keep_snapshot(settings, 'stray-snapshot-id', str(stray))
        assert not stray.exists()
        found = ta.repair(dry_run=True)
        assert [(f['kind'], f['path']) for f in found] == [
            ('stray snapshot',
             f"postgresql:{snapdb}/{settings['dbname']}/stray-snapshot-id")]
        ta.repair()
        assert store.snapshot_ids(settings) == [sid]
        # Stored incompletely: refused, the tenant's data untouched.
        postgres.sql('DELETE FROM multidb_snapshot_part WHERE part = 0',
                     dbname=snapdb)
        _set(a, 'x', v=2)
        with pytest.raises(multidb.MissingStorage,
                           match='stored incompletely'):
            ta.revert('x', sid)
        assert _root(a, 'x') == {'v': 2}
        # Missing altogether: repair reports it.
        postgres.sql('DELETE FROM multidb_snapshot', dbname=snapdb)
        kinds = [f['kind'] for f in ta.repair(dry_run=True)]
        assert 'missing snapshot' in kinds
        # A drop deletes its snapshots on the server.
        ta.snapshot('x')
        assert postgres.sql('SELECT count(*) FROM multidb_snapshot',
                            dbname=snapdb)[0][0] >= 1
        ta.drop('x')
        assert postgres.sql(
            'SELECT (SELECT count(*) FROM multidb_snapshot) +'
            ' (SELECT count(*) FROM multidb_snapshot_part)',
            dbname=snapdb)[0][0] == 0
        # A drop that died before deleting them leaves snapshots of a
        # tenant that has no record: repair finds them on the server.
        ta.create('y')
        sid = ta.snapshot('y')
        rec = ta.get('y')
        postgres.sql(f"UPDATE multidb_snapshot SET tenant = 'gone'"
                     f" WHERE snapshot_id = '{sid}'", dbname=snapdb)
        postgres.sql(f"UPDATE multidb_snapshot_part SET tenant = 'gone'"
                     f" WHERE snapshot_id = '{sid}'", dbname=snapdb)
        found = [f for f in ta.repair() if f['kind'] == 'stray snapshot']
        assert [(f['name'], f['action']) for f in found] == [
            ('y', 'deleted')]
        assert 'gone' in found[0]['path']
        assert postgres.sql('SELECT count(*) FROM multidb_snapshot_part',
                            dbname=snapdb)[0][0] == 0
        assert rec.settings['id'] != 'gone'
    finally:
        a.close()
