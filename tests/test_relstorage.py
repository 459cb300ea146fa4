"""Tenants on PostgreSQL through RelStorage, on a real server started by
the test run (see conftest.postgres)."""
import functools
import os
import uuid

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
        fs.restore(arc)
        assert _root(fs, 'acme') == {'v': 'from postgres'}
        _set(fs, 'acme', v='from filestorage')
        fs.archive('acme', tmp_path / 'fs.multidb')
    finally:
        c.close()
    tenants.restore(tmp_path / 'fs.multidb', replace=True)
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
        tenants.restore(arc, 'other')
    with pytest.raises(multidb.CorruptArchive):
        tenants.restore(arc, replace=True)
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
    postgres.sql(f'CREATE DATABASE "{prefix}ghost" TEMPLATE'
                 f' "{prefix}template"')
    postgres.sql(f'CREATE DATABASE "{prefix}acme~new123"')
    found = {(f['kind'], f['name']) for f in tenants.repair()}
    assert ('leftover', 'ghost') in found
    assert ('temporary file', None) in found
    names = _dbnames(postgres)
    assert prefix + 'ghost' not in names and prefix + 'acme~new123' \
        not in names and prefix + 'acme' in names
    assert tenants.repair() == []


def test_expire_on_postgresql(tenants, postgres, prefix):
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
