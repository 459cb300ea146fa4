import functools
import threading
import time

import pytest
import transaction
from persistent.mapping import PersistentMapping
from ZODB.FileStorage import FileStorage
from ZODB.MappingStorage import MappingStorage

import multidb


def _settle(c):
    # Evicted databases close in the background; wait until they have.
    assert c.settle(10)


@pytest.fixture
def small(fs_factory):
    c = multidb.Collection(max_open=3, open_timeout=0.5)
    for i in range(10):
        c.declare(f'd{i}', fs_factory(f'd{i}'))
    yield c
    c.close()


def test_at_most_max_open_open(small):
    for i in range(10):
        with small.transaction() as g:
            g.root(f'd{i}')['v'] = i
        assert small.open_count <= 3
    _settle(small)
    assert sum(small.is_open(n) for n in small) <= 3
    # the most recently used one stays open
    assert small.is_open('d9') and not small.is_open('d0')


def test_reopened_after_eviction_keeps_data_and_xrefs(small):
    with small.transaction() as g:
        obj = PersistentMapping(v='in d1')
        g.get_connection('d1').add(obj)
        g.root('d1')['obj'] = obj
        g.root('d0')['ref'] = obj
    for i in range(2, 10):  # evict d0 and d1
        with small.transaction() as g:
            g.root(f'd{i}')
    _settle(small)
    assert not small.is_open('d0') and not small.is_open('d1')
    with small.transaction() as g:
        ref = g.root('d0')['ref']     # opens d0; loading ref opens d1
        assert ref['v'] == 'in d1'
        assert ref._p_jar is g.get_connection('d1')
        assert ref is g.root('d1')['obj']


def test_db_in_use_is_not_evicted(small):
    tm = transaction.TransactionManager()
    g = small.group(tm)
    g.root('d0')['held'] = 1
    for i in range(1, 10):
        with small.transaction() as other:
            other.root(f'd{i}')
    assert small.is_open('d0')
    tm.commit()
    g.close()


def test_too_many_open_when_all_in_use(small):
    g = small.group(transaction.TransactionManager())
    for i in range(3):
        g.root(f'd{i}')
    t0 = time.monotonic()
    with pytest.raises(multidb.TooManyOpen, match="'d3'.*3 open"):
        small['d3']  # holds nothing: waits for a slot, then gives up
    assert time.monotonic() - t0 >= 0.4
    with pytest.raises(multidb.TooManyOpen):
        with small.transaction() as other:
            other.root('d3')
    assert not small.is_open('d3')
    g.close()
    with small.transaction() as g2:  # slots are free again
        g2.root('d3')


def test_group_holding_databases_may_exceed_max_open(small):
    # Waiting here could deadlock with other groups doing the same.
    tm = transaction.TransactionManager()
    g = small.group(tm)
    for i in range(5):
        g.root(f'd{i}')['v'] = i
    assert small.open_count == 5
    tm.commit()
    g.close()
    with small.transaction() as g:  # back under max_open once idle
        g.root('d9')
    _settle(small)
    assert small.open_count <= 3


def test_waiting_opener_gets_a_slot_when_a_group_closes(small):
    small.open_timeout = 10
    held = small.group(transaction.TransactionManager())
    for i in range(3):
        held.root(f'd{i}')
    threading.Timer(0.2, held.close).start()
    with small.transaction() as g:
        g.root('d5')['ok'] = 1  # waits for held to close, then evicts


def test_stale_db_object_forwards_open(small):
    db = small['d0']
    for i in range(1, 10):
        with small.transaction() as g:
            g.root(f'd{i}')
    _settle(small)
    assert not small.is_open('d0') and 'storage' not in vars(db)
    conn = db.open()   # forwards to the reopened database
    assert conn.db() is small['d0'] and conn.db() is not db
    conn.root()['x'] = 1
    transaction.commit()
    conn.close()


def test_stale_db_object_after_remove(small):
    db = small['d0']
    small.remove('d0')
    with pytest.raises(multidb.UnknownDatabase, match='was removed'):
        db.open()


def test_in_memory_databases_are_never_evicted(fs_factory):
    with multidb.Collection(max_open=2) as c:
        c.add('mem', MappingStorage)
        for i in range(5):
            c.declare(f'f{i}', fs_factory(f'f{i}'))
        with c.transaction() as g:
            g.root('mem')['x'] = 1
        for i in range(5):
            with c.transaction() as g:
                g.root(f'f{i}')
        _settle(c)
        assert c.is_open('mem')
        with c.transaction() as g:
            assert g.root('mem')['x'] == 1


def test_remove_waits_for_background_close(small, tmp_path):
    from ZODB.FileStorage import FileStorage
    # A slow closer (a big index to write): evicted databases stay in the
    # closing state long enough for remove() to meet them.
    really_close = small._really_close

    def slow_close(db):
        time.sleep(0.05)
        really_close(db)
    small._really_close = slow_close
    for i in range(10):
        with small.transaction() as g:
            g.root(f'd{i}')['v'] = i
    assert small.open_count > small.max_open - small._slack   # closing
    for i in range(10):
        small.remove(f'd{i}')
        # remove() returned: the file is closed and unlocked, so it can
        # be opened again at once (a LockError if remove did not wait).
        FileStorage(str(tmp_path / f'd{i}.fs')).close()
    assert len(small) == 0


def test_close_drains_the_closer(fs_factory, tmp_path):
    from ZODB.FileStorage import FileStorage
    c = multidb.Collection(max_open=1)
    for i in range(5):
        c.declare(f'd{i}', fs_factory(f'd{i}'))
        with c.transaction() as g:
            g.root(f'd{i}')['v'] = i
    c.close()
    for i in range(5):  # every file closed and unlocked
        FileStorage(str(tmp_path / f'd{i}.fs')).close()


def test_evicting_a_database_that_wrote_nothing_keeps_its_index(small,
                                                                 tmp_path):
    # Closing a FileStorage rewrites its index file; an evicted database
    # that was only read has a current index already: not rewritten.
    index = tmp_path / 'd0.fs.index'
    with small.transaction() as g:
        g.root('d0')['v'] = 1
    small.remove('d0')                       # closed: index written
    small.declare('d0', functools.partial(FileStorage,
                                          str(tmp_path / 'd0.fs')))
    before = index.stat()
    with small.transaction() as g:
        assert g.root('d0')['v'] == 1        # read only
    small.remove('d0')
    after = index.stat()
    assert (after.st_ino, after.st_mtime_ns) == \
        (before.st_ino, before.st_mtime_ns)
    # A database that wrote gets its index rewritten, and it is right.
    small.declare('d0', functools.partial(FileStorage,
                                          str(tmp_path / 'd0.fs')))
    with small.transaction() as g:
        g.root('d0')['v'] = 2
    small.remove('d0')
    assert index.stat().st_ino != after.st_ino
    fs = FileStorage(str(tmp_path / 'd0.fs'), read_only=True)
    try:
        import ZODB
        db = ZODB.DB(fs)
        with db.transaction() as conn:
            assert conn.root()['v'] == 2
        db.close()
    finally:
        fs.close()
