"""What a FileStorage create costs, counted rather than timed (issue 10):
its fsyncs, in the order crash safety needs them, and the catalog reads
of the refreshes that run during creates (which must not grow with the
number of tenants)."""
import importlib
import os

import pytest
import ZODB
from ZODB.FileStorage import FileIterator
from ZODB.FileStorage import FileStorage

from multidb import glue

from helpers import fs_tenants
from helpers import root_dict
from test_catalog_changes import _CountingDict

# The module (ZODB.FileStorage's package attribute of that name is the
# class): FileStorage calls its fsync global at each commit.
fs_module = importlib.import_module('ZODB.FileStorage.FileStorage')


class _Fsyncs:
    """Every fsync of the process, as the path of the file or folder
    flushed: os.fsync (multidb's files) and FileStorage's own."""

    def __init__(self, monkeypatch):
        self.paths = []
        real = os.fsync

        def fsync(fd):
            self.paths.append(os.readlink(f'/proc/self/fd/{fd}'))
            return real(fd)
        monkeypatch.setattr(os, 'fsync', fsync)
        monkeypatch.setattr(fs_module, 'fsync', fsync)

    def take(self):
        paths, self.paths = self.paths, []
        return paths


@pytest.fixture
def made(tmp_path):
    c, t = fs_tenants(tmp_path)
    t.create('first')    # the catalog's first commit, the folder made
    yield c, t, str(tmp_path)
    c.close()


def _kinds(paths, folder):
    folder = os.path.realpath(folder)   # as /proc/self/fd names it
    tenants = os.path.join(folder, 'tenants')
    out = []
    for p in paths:
        if p == os.path.join(folder, 'catalog.fs'):
            out.append('catalog')
        elif p == tenants:
            out.append('folder')
        elif p.startswith(tenants + '/.acme.fs.multidb-id.') and \
                p.endswith('.multidb-tmp'):
            out.append('id')
        elif p == os.path.join(tenants, 'acme.fs'):
            out.append('data')
        else:
            out.append(p)
    return out


@pytest.mark.skipif(not os.path.isdir('/proc/self/fd'),
                    reason='needs /proc/self/fd')
def test_a_create_flushes_four_times_in_the_order_safety_needs(
        made, monkeypatch):
    c, t, folder = made
    fsyncs = _Fsyncs(monkeypatch)
    t.create('acme')
    # The id (before the data file exists: every data file carries its
    # id), the data file's root commit, the folder (the names of both),
    # and last the catalog's record: never a record without data.  Raw
    # ZODB's create has two (its root's commit and a commit of its own).
    assert _kinds(fsyncs.take(), folder) == ['id', 'data', 'folder',
                                            'catalog']
    assert root_dict(c, 'acme') == {}


@pytest.mark.skipif(not os.path.isdir('/proc/self/fd'),
                    reason='needs /proc/self/fd')
def test_a_create_with_init_flushes_its_data_before_the_record(
        made, monkeypatch):
    c, t, folder = made
    fsyncs = _Fsyncs(monkeypatch)
    t.create('acme', init=lambda root: root.update(v=1))
    kinds = _kinds(fsyncs.take(), folder)
    # The init's commit flushes the data file again, in the two-phase
    # commit, before the catalog (which finishes last).
    assert kinds == ['id', 'data', 'folder', 'data', 'catalog']
    assert root_dict(c, 'acme') == {'v': 1}


def test_a_failed_create_flushes_no_record(made, monkeypatch):
    c, t, folder = made
    fsyncs = _Fsyncs(monkeypatch)

    def init(root):
        raise ValueError('no')
    with pytest.raises(ValueError):
        t.create('acme', init=init)
    assert 'catalog' not in _kinds(fsyncs.take(), folder)
    assert 'acme' not in t
    assert not os.path.exists(os.path.join(folder, 'tenants', 'acme.fs'))


def _transactions(path):
    it = FileIterator(path)
    try:
        return [(t.user, t.description, t.extension,
                 [(r.oid, r.data) for r in t]) for t in it]
    finally:
        it.close()


def test_make_root_writes_what_zodb_db_writes(tmp_path):
    a, b = str(tmp_path / 'a.fs'), str(tmp_path / 'b.fs')
    ZODB.DB(FileStorage(a)).close()
    storage = FileStorage(b)
    assert glue.make_root(storage)
    tid = storage.lastTransaction()
    assert not glue.make_root(storage)       # there already
    db = ZODB.DB(storage)                    # finds it: commits nothing
    assert storage.lastTransaction() == tid
    with db.transaction() as conn:
        conn.root()['x'] = 1
    db.close()
    made = _transactions(b)
    assert made[0] == _transactions(a)[0]
    assert len(made) == 2
    assert root_dict_of(b) == {'x': 1}


def root_dict_of(path):
    db = ZODB.DB(FileStorage(path, read_only=True))
    try:
        with db.transaction() as conn:
            return dict(conn.root())
    finally:
        db.close()


def test_the_storage_is_complete_when_the_factory_returns(tmp_path):
    # Whoever opens a created tenant first, its root is committed and its
    # folder flushed before the storage is handed out.
    c, t = fs_tenants(tmp_path)
    try:
        rec = t.create('acme')
        opener = t.backend.factory(dict(rec.settings, path=str(
            tmp_path / 'tenants' / 'other.fs')), create=True)
        storage = opener()
        try:
            assert storage.lastTransaction() != b'\0' * 8
            assert len(storage) == 1
        finally:
            storage.close()
    finally:
        c.close()


def test_refreshes_during_creates_do_not_walk_every_tenant(tmp_path):
    # A refresh that finds the catalog changed reads the names changed
    # since it last looked.  The tenant being created is declared, and
    # held, without a record until its commit: that must not keep the
    # refresh from settling, or every refresh of every create compares
    # every declared tenant with its record (O(N) per create).
    c, t = fs_tenants(tmp_path)
    try:
        for i in range(30):
            t.create(f't{i:02d}')
        c.close()
        c, t = fs_tenants(tmp_path)
        assert t.load() == 30
        declared = t._declared = _CountingDict(t._declared)
        for i in range(10):
            t.create(f'n{i}')
            with c.transaction() as g:
                assert g.root(f't{i:02d}') == {}
        # The first refresh after load compares them all (it has seen no
        # serial yet); none after.
        assert declared.walks <= 1
        assert t._serial_seen is not None
    finally:
        c.close()


def test_a_refresh_in_the_middle_of_a_create_settles(tmp_path):
    # Another group refreshing while a create holds its name (no record
    # yet): the serial is marked seen, and the created tenant is known
    # once committed.
    c, t = fs_tenants(tmp_path)
    try:
        t.create('acme')
        seen = []

        def init(root):
            with c.transaction() as g:
                g.root('acme')['v'] = 1
            seen.append(t._serial_seen)
            root['w'] = 2
        t.create('beta', init=init)
        assert seen[0] is not None
        assert root_dict(c, 'beta') == {'w': 2}
        assert root_dict(c, 'acme') == {'v': 1}
        assert not t._declared['beta'].pending
    finally:
        c.close()
