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


@pytest.mark.slow
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


def test_max_open_is_a_hard_bound_for_a_group_holding_databases(small):
    # A group holding databases does not wait for a slot (groups doing
    # the same would wait for each other): TooManyOpen at once, naming
    # the database; it never goes beyond max_open.
    tm = transaction.TransactionManager()
    g = small.group(tm)
    for i in range(3):
        g.root(f'd{i}')['v'] = i
    t0 = time.monotonic()
    with pytest.raises(multidb.TooManyOpen,
                       match="'d3'.*holds connections") as e:
        g.root('d3')
    assert time.monotonic() - t0 < 0.4 and e.value.timeout is None
    assert small.open_count == 3 and not small.is_open('d3')
    # The same through plain ZODB's get_connection on a member.
    with pytest.raises(multidb.TooManyOpen, match="'d4'"):
        g.get_connection('d0').get_connection('d4')
    assert small.open_count == 3
    tm.commit()
    g.close()
    with small.transaction() as g:   # room again once the group closed
        g.root('d3')
    assert small.open_count <= 3


def test_too_many_open_is_retried_by_run(small):
    # TooManyOpen is transient: run() closes the group's connections and
    # tries again, until the other group is done.
    from transaction.interfaces import TransientError
    assert issubclass(multidb.TooManyOpen, TransientError)
    held = small.group(transaction.TransactionManager())
    held.root('d0')
    held.root('d1')
    tries = []
    timer = threading.Timer(0.2, held.close)

    def work(g):
        tries.append(1)
        g.root('d2')
        if len(tries) == 1:
            timer.start()
        g.root('d3')['ok'] = len(tries)   # no slot until held closes
        return len(tries)

    done = small.run(work, attempts=20, backoff=0.05, max_backoff=0.1)
    timer.join()
    assert done == len(tries) > 1
    with small.transaction() as g:
        assert g.root('d3')['ok'] == done


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


@pytest.mark.slow
def test_remove_waits_for_a_close_in_another_thread(small, tmp_path):
    from ZODB.FileStorage import FileStorage
    # The thread that needs a slot closes the evicted database itself; a
    # slow close (a big index to write) in one thread keeps the database
    # in the closing state long enough for remove() in another to meet it.
    really_close = small._really_close
    closing = threading.Event()

    def slow_close(db):
        closing.set()
        time.sleep(0.3)
        really_close(db)
    for i in range(3):
        with small.transaction() as g:
            g.root(f'd{i}')['v'] = i
    small._really_close = slow_close

    def evict_d0():
        with small.transaction(transaction.TransactionManager()) as g:
            g.root('d3')['v'] = 3
    t = threading.Thread(target=evict_d0)
    t.start()
    assert closing.wait(5)
    assert not small.is_open('d0')
    small.remove('d0')
    # remove() returned: the file is closed and unlocked, so it can be
    # opened again at once (a LockError if remove did not wait).
    FileStorage(str(tmp_path / 'd0.fs')).close()
    t.join()
    assert 'd0' not in small and small.open_count == 3


def test_close_closes_every_file(fs_factory, tmp_path):
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
