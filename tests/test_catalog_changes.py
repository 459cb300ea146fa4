"""A process follows the catalog in O(changes), and a request costs no
catalog round trip when the catalog has not changed (issue "100,000
tenants")."""
import time

import pytest
import transaction
from ZODB.MappingStorage import MappingStorage

import multidb
from multidb.backends.filestorage import FileStorageBackend
from multidb.config import collectionFromString
from multidb.tenants import catalog

from helpers import root_dict
from helpers import tenants_config


@pytest.fixture
def tenants(tmp_path, monkeypatch, data):
    monkeypatch.chdir(tmp_path)   # ./data is the data fixture's folder
    c = collectionFromString(tenants_config('expire-action drop'))
    yield c.tenants
    c.close()


def test_steady_requests_do_not_open_the_catalog(tenants):
    c = tenants.collection
    tenants.create('acme', init=lambda root: root.update(v=1))
    with c.transaction() as g:     # the first after a change reads it
        assert g.root('acme')['v'] == 1
        assert 'catalog' in g.connections
    for _ in range(3):             # then nothing changed: not opened
        with c.transaction() as g:
            assert g.root('acme')['v'] == 1
            assert 'catalog' not in g.connections
    tenants.create('bravo')
    with c.transaction() as g:     # a change: read again, and seen
        assert 'catalog' in g.connections or g.root('acme')
        assert g.root('bravo') == {}
    tenants.drop('bravo')
    with c.transaction() as g:
        with pytest.raises(multidb.UnknownDatabase):
            g.root('bravo')


class _CountingDict(dict):
    """The declared tenants, counting how refresh() reads them."""

    def __init__(self, *a):
        super().__init__(*a)
        self.walks = 0
        self.gets = 0

    def __iter__(self):
        self.walks += 1
        return super().__iter__()

    def items(self):
        self.walks += 1
        return super().items()

    def get(self, *a):
        self.gets += 1
        return super().get(*a)


def _zeo_pair(zeo_server, tmp_path, catch_up=True):
    # Two collections on one catalog served by ZEO, as two processes
    # have; a MappingStorage 'main' for requests that touch no tenant.
    # catch_up=False: the second one applies the changes made elsewhere
    # only in its requests' refresh, never in the background (so that a
    # test sees what that refresh reads).
    host, port = zeo_server.address
    made = []
    for _ in range(2):
        c = collectionFromString(
            f"%import ZEO\n<multidb>\n  <zodb catalog>\n    <zeoclient>\n"
            f"      server {host}:{port}\n      storage catalog\n"
            f"    </zeoclient>\n  </zodb>\n  <zodb main>\n"
            f"    <mappingstorage/>\n  </zodb>\n</multidb>\n")
        multidb.Tenants(c, catalog='catalog', backend=FileStorageBackend(
            str(tmp_path / 't' / '{name}.fs')))
        made.append(c)
    if not catch_up:
        made[1].tenants._changed_elsewhere = lambda tid: None
    return made


def _wait_for_catalog(c, tid):
    # ZEO pushes invalidations asynchronously.
    storage = c['catalog'].storage
    deadline = time.monotonic() + 5
    while storage.lastTransaction() < tid and time.monotonic() < deadline:
        time.sleep(0.005)


def _last_tid(c):
    return c['catalog'].storage.lastTransaction()


def test_refresh_reads_only_what_changed(zeo_server, tmp_path):
    a, b = _zeo_pair(zeo_server, tmp_path, catch_up=False)
    try:
        for i in range(50):
            a.tenants.create(f't{i}')
        assert b.tenants.load() == 50
        with b.transaction() as g:
            g.root('main')
        declared = b.tenants._declared = _CountingDict(b.tenants._declared)
        a.tenants.drop('t7')
        a.tenants.drop('t8')
        a.tenants.create('new')
        _wait_for_catalog(b, _last_tid(a))
        with b.transaction() as g:
            g.root('main')
        # Three changes read, no walk over the 50 declared tenants.
        assert declared.walks == 0
        assert declared.gets == 3
        assert 't7' not in b and 't8' not in b and 't9' in b
        assert 'new' in b.tenants          # created elsewhere: known
        # Nothing changed since: refresh reads nothing at all.
        declared.gets = 0
        with b.transaction() as g:
            g.root('main')
            assert 'catalog' not in g.connections
        assert declared.gets == declared.walks == 0
    finally:
        a.close()
        b.close()


def test_process_behind_the_log_reads_the_whole_catalog(
        zeo_server, tmp_path, monkeypatch):
    monkeypatch.setattr(catalog, 'LOG_KEEP', 3)
    a, b = _zeo_pair(zeo_server, tmp_path, catch_up=False)
    try:
        for name in ('x', 'y', 'z'):
            a.tenants.create(name)
        assert b.tenants.load() == 3
        with b.transaction() as g:
            g.root('main')
        a.tenants.drop('x')
        for i in range(5):                 # the log forgets the drop
            a.tenants.create(f'n{i}')
        with a.transaction() as g:
            log = g.root('catalog')[catalog.CHANGES_KEY]
            assert len(log) == 3
        _wait_for_catalog(b, _last_tid(a))
        declared = b.tenants._declared = _CountingDict(b.tenants._declared)
        with b.transaction() as g:
            g.root('main')
        assert declared.walks == 1       # read everything once
        assert 'x' not in b and 'y' in b and 'z' in b
    finally:
        a.close()
        b.close()


def _until(condition, timeout=10):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the timeout"
        time.sleep(0.005)


def test_changes_elsewhere_are_applied_without_a_request(
        zeo_server, tmp_path):
    # A ZEO catalog: the server's invalidations make b apply a drop made
    # in a at once, in the background; b's next request reads nothing.
    a, b = _zeo_pair(zeo_server, tmp_path)
    try:
        for i in range(5):
            a.tenants.create(f't{i}')
        a.remove('t1')        # FileStorage: one process at a time
        with b.transaction() as g:
            g.root('t1')['x'] = 1
        b.tenants.load()
        assert b.is_open('t1')
        with b.transaction() as g:
            g.root('main')
        declared = b.tenants._declared = _CountingDict(b.tenants._declared)
        a.tenants.drop('t1')
        a.tenants.create('new')
        a.remove('new')
        # No request in b: its open database of t1 is closed, the name
        # gone, within moments.
        _until(lambda: 't1' not in b)
        assert 't2' in b
        _until(lambda: b.tenants._tid_seen == _last_tid(a))
        assert declared.walks == 0
        with b.transaction() as g:
            g.root('main')
            assert 'catalog' not in g.connections
        assert 'new' in b.tenants
        with b.transaction() as g:
            assert g.root('new') is not None
    finally:
        a.close()
        b.close()


def test_closing_lets_a_catch_up_in_progress_end(
        zeo_server, tmp_path, monkeypatch, caplog):
    # b catches up with a's create in the background; b is closed while
    # that catch-up reads the catalog (held there, between the catalog's
    # root and its change log).  Its databases close only once the
    # catch-up ended: ZODB logs no refused load ("Shouldn't load state
    # ... when the connection is closed"), and close() does not hang.
    import threading
    from multidb.tenants import catalogio
    a, b = _zeo_pair(zeo_server, tmp_path)
    reading = threading.Event()
    real_serial = catalogio._serial

    def slow_serial(root):
        if threading.current_thread() is b.tenants._catcher:
            reading.set()
            time.sleep(0.3)
        return real_serial(root)
    try:
        a.tenants.create('t0')
        b.tenants.load()
        with b.transaction() as g:
            g.root('main')
        monkeypatch.setattr(catalogio, '_serial', slow_serial)
        a.tenants.create('new')
        assert reading.wait(5), "b did not catch up in the background"
        caplog.clear()
        t0 = time.monotonic()
        b.close()
        assert time.monotonic() - t0 < b.tenants.catch_up_wait + 0.5
        assert not b.tenants._catching_up
        errors = [r for r in caplog.records if r.levelname in
                  ('ERROR', 'CRITICAL', 'WARNING')]
        assert errors == []
    finally:
        a.close()
        b.close()


def test_log_of_a_catalog_made_before_it(tenants):
    # A catalog written by a version without the log: the first change
    # starts it; processes read the whole catalog once.
    c = tenants.collection
    tenants.create('old')
    with c.transaction() as g:
        del g.root('catalog')[catalog.CHANGES_KEY]
    tenants._serial_seen = None
    tenants.create('new')
    with c.transaction() as g:
        assert list(g.root('catalog')[catalog.CHANGES_KEY].values()) == \
            ['new']
        assert g.root('old') == {} and g.root('new') == {}


def test_records_are_read_in_batches(tenants):
    names = [f'c{i:02d}' for i in range(7)]
    for name in reversed(names):
        tenants.create(name)
    assert [r.name for r in tenants.records(batch=3)] == names
    assert [r.name for r in tenants.list()] == names
    with pytest.raises(ValueError, match='batch'):
        next(tenants.records(batch=0))


def test_max_open_holds_with_tenants(tenants):
    # The catalog is not held by every request any more, and max_open is
    # a hard bound: never more databases open than max_open, whatever
    # threads do (sampled by a thread of its own).
    import threading
    c = tenants.collection
    c.max_open = 3
    for i in range(8):
        tenants.create(f't{i}', init=lambda root, i=i: root.update(v=i))
    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], c.open_count)

    errors = []

    def work(seed):
        try:
            for r in range(30):
                name = f't{(r * 5 + seed) % 8}'

                def read(g):
                    assert g.root(name)['v'] == int(name[1:])
                c.run(read, attempts=50, backoff=0.001)
        except Exception as e:
            errors.append(e)
    sampler = threading.Thread(target=sample)
    sampler.start()
    workers = [threading.Thread(target=work, args=(s,)) for s in range(3)]
    [w.start() for w in workers]
    [w.join() for w in workers]
    stop.set()
    sampler.join()
    assert errors == []
    assert 0 < peak[0] <= 3


def test_long_lived_group_refreshes_once_per_transaction(tenants):
    # A group kept across transactions (Zope keeps one per thread) has the
    # resolver refresh at its first use after each boundary, once: its
    # members tell it of boundaries (no synchronizer of its own).
    c = tenants.collection
    tenants.create('a')
    tenants.create('b')
    calls = []
    refresh = tenants.refresh

    def counting(group, name):
        calls.append(name)
        return refresh(group, name)
    tenants.refresh = counting
    tm = transaction.TransactionManager()
    g = c.group(tm)
    try:
        g.root('a')['v'] = 1
        g.root('b')
        g.get_connection('a')
        assert calls == ['a']
        tm.commit()
        g.root('b')
        g.root('a')
        assert calls == ['a', 'b']
        tm.abort()
        tm.begin()
        g.root('a')
        assert calls == ['a', 'b', 'a']
        for name in list(g.connections):   # the members it watched leave
            g.release(name)
        g.root('b')
        assert calls == ['a', 'b', 'a', 'b']
        tm.abort()
    finally:
        g.close()


def test_record_this_version_cannot_read_is_a_clear_error(tenants):
    # A record written by a newer multidb (its pickle names a function
    # this version does not have) loads as a ZODB Broken object.
    from ZODB.broken import Broken
    c = tenants.collection
    tenants.create('fine')
    with c.transaction() as g:
        tree = catalog.tree(g.root('catalog'))
        rec = tree['fine']
        tree['newer'] = Broken.__new__(
            type('load_record_v9', (Broken,), {'__module__':
                                               'multidb.tenants.catalog'}))
    with pytest.raises(multidb.UnreadableRecord,
                       match="cannot read .*load_record_v9.*newer version"):
        tenants.load()
    assert tenants.get('fine') == rec
