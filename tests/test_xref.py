"""Cross-database references stay right when connections go back to their
own pools (issue: "Connection groups lose writes made through
cross-database references").

Database ``one``'s root holds ``y``; ``y.z`` is an object of database
``two``.  Plain ZODB keeps this right by pinning the connection of ``two``
to the pooled connection of ``one``; multidb returns each connection to its
own pool and ghostifies the objects that hold such references instead.
Every test here failed on multidb 0.1.0.dev0 before that fix;
``test_tests_fail_without_the_fix`` shows that they still can.
"""
import functools
import random
import threading
import time

import pytest
import transaction
from persistent import Persistent
from persistent.mapping import PersistentMapping
from ZODB.FileStorage import FileStorage
from ZODB.POSException import ConflictError

import multidb
from multidb import glue


class Z(Persistent):
    note = None
    count = 0


class Y(Persistent):
    z = None


@pytest.fixture
def two_dbs(tmp_path):
    c = multidb.Collection(max_open=8, open_timeout=5)
    for name in ('one', 'two'):
        c.declare(name, functools.partial(FileStorage,
                                          str(tmp_path / f'{name}.fs')))
    with c.transaction() as g:
        y = g.root('one')['y'] = Y()
        y.z = Z()
        g.get_connection('two').add(y.z)
        g.root('two')['z'] = y.z
    yield c
    c.close()


def note_of(c, tm=None):
    """The note of z read from database two alone, in a fresh group."""
    tm = tm or transaction.TransactionManager()
    with c.transaction(tm) as g:
        return g.root('two')['z'].note


# -- the sequences of the issue, through groups ---------------------------

def test_write_through_reference_after_group_closed(two_dbs):
    c = two_dbs
    with c.transaction() as g:
        g.root('one')['y'].z.note = 'A'
    assert note_of(c) == 'A'


def test_write_joins_our_transaction_not_another_groups(two_dbs):
    c = two_dbs
    # Another group holds a connection of two (say, the pooled one).
    other_tm = transaction.TransactionManager()
    other = c.group(other_tm)
    other.root('two')
    try:
        with c.transaction() as g:
            z = g.root('one')['y'].z
            z.note = 'B'
            # z belongs to this transaction's connection of two.
            assert z._p_jar is g.get_connection('two')
    finally:
        other_tm.abort()
        other.close()
    assert note_of(c) == 'B'


def test_ghost_reference_loads(two_dbs):
    c = two_dbs
    with c.transaction() as g:
        z = g.root('one')['y'].z
        z._p_deactivate()
    with c.transaction() as g:
        z = g.root('one')['y'].z
        assert z.note is None        # loads through this group's two
        z.note = 'C'
    assert note_of(c) == 'C'


def test_reference_loaded_not_stored(two_dbs, tmp_path):
    # y comes from the storage (the reader resolves the reference), not
    # from the commit that made it (the writer).
    c = two_dbs
    c.close()
    c = multidb.Collection()
    for name in ('one', 'two'):
        c.declare(name, functools.partial(FileStorage,
                                          str(tmp_path / f'{name}.fs')))
    try:
        for note in ('D1', 'D2', 'D3'):
            with c.transaction() as g:
                g.root('one')['y'].z.note = note
            assert note_of(c) == note
    finally:
        c.close()


def test_reference_made_in_a_later_transaction(two_dbs):
    c = two_dbs
    with c.transaction() as g:
        y2 = g.root('one')['y2'] = Y()
        y2.z = g.root('two')['z']
    with c.transaction() as g:
        g.root('one')['y2'].z.note = 'E'
    assert note_of(c) == 'E'


def test_savepoints_through_references(two_dbs):
    c = two_dbs
    with c.transaction() as g:
        y = g.root('one')['y']
        y.z.note = 'kept'
        sp = g.transaction_manager.savepoint()
        y.z.note = 'rolled back'
        y.z = Z()                    # a new object of... one (implicit)
        sp.rollback()
        assert y.z.note == 'kept'
    assert note_of(c) == 'kept'
    with c.transaction() as g:
        y = g.root('one')['y']
        g.transaction_manager.savepoint()
        y.z.note = 'after savepoint'
    assert note_of(c) == 'after savepoint'


def test_after_referenced_database_evicted(tmp_path):
    c = multidb.Collection(max_open=2, open_timeout=5)
    names = ('one', 'two', 'x1', 'x2', 'x3')
    for name in names:
        c.declare(name, functools.partial(FileStorage,
                                          str(tmp_path / f'{name}.fs')))
    try:
        with c.transaction() as g:
            y = g.root('one')['y'] = Y()
            y.z = Z()
            g.get_connection('two').add(y.z)
        with c.transaction() as g:
            g.root('one')['y'].z.note       # cached in one's pool
        for name in ('x1', 'x2', 'x3'):      # evicts two, keeps one
            with c.transaction() as g:
                g.root(name)
                g.root('one')
        assert c.settle(10)
        assert c.is_open('one') and not c.is_open('two')
        with c.transaction() as g:
            g.root('one')['y'].z.note = 'F'
        with c.transaction() as g:
            assert g.root('one')['y'].z.note == 'F'
    finally:
        c.close()


def test_after_referenced_database_removed_and_added_again(two_dbs,
                                                           tmp_path):
    c = two_dbs
    with c.transaction() as g:
        g.root('one')['y'].z.note       # cached in one's pooled connection
    c.remove('two')
    c.declare('two', functools.partial(FileStorage,
                                       str(tmp_path / 'two.fs')))
    with c.transaction() as g:
        g.root('one')['y'].z.note = 'G'
    assert note_of(c) == 'G'


def test_release_forgets_references_of_members_that_stay(two_dbs):
    c = two_dbs
    tm = transaction.TransactionManager()
    g = c.group(tm)
    try:
        y = g.root('one')['y']
        assert y.z.note is None
        g.release('two')
        # y stays in the group (its connection of one does); what it
        # referred to in two belonged to the released connection.
        y = g.root('one')['y']
        y.z.note = 'H'
        assert y.z._p_jar is g.connections['two']
        tm.commit()
    finally:
        tm.abort()
        g.close()
    assert note_of(c) == 'H'


def test_persistent_weak_reference_across_databases(two_dbs):
    from persistent.wref import WeakRef
    c = two_dbs
    with c.transaction() as g:
        g.root('one')['w'] = WeakRef(g.root('two')['z'])
    for note in ('W1', 'W2'):
        # Another group holds the pooled connection of two.
        other_tm = transaction.TransactionManager()
        other = c.group(other_tm)
        other.root('two')
        try:
            with c.transaction() as g:
                z = g.root('one')['w']()
                z.note = note
                assert z._p_jar is g.get_connection('two')
        finally:
            other.close()
        assert note_of(c) == note


# -- through plain ZODB calls (as Zope and zope.app.appsetup do) ----------

def test_plain_zodb_open_and_get_connection(two_dbs):
    c = two_dbs
    db = c['one']
    for note in ('P1', 'P2', 'P3'):
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        conn.root()['y'].z.note = note
        tm.commit()
        conn.close()
        assert note_of(c) == note
    # And with the other database's connection asked for explicitly.
    tm = transaction.TransactionManager()
    conn = c['one'].open(tm)
    two = conn.get_connection('two')
    z = conn.root()['y'].z
    assert z._p_jar is two
    z.note = 'P4'
    tm.commit()
    conn.close()
    assert note_of(c) == 'P4'


def test_plain_zodb_threads_like_zope(two_dbs):
    # Zope opens the main database per request (DB.open) and reaches the
    # mounted one through get_connection; 8 threads, 200 requests.
    c = two_dbs
    db = c['one']
    errors = []
    done = [0]
    lock = threading.Lock()

    def request(i):
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        try:
            # Retried as Zope retries conflicts, with a random pause so
            # that 8 threads on one counter do not collide for ever.
            rnd = random.Random()
            for attempt in range(200):
                try:
                    z = conn.root()['y'].z
                    z.count += 1
                    tm.commit()
                    with lock:
                        done[0] += 1
                    return
                except ConflictError:
                    tm.abort()
                    time.sleep(rnd.uniform(0, 0.002 * min(attempt, 10)))
            raise AssertionError("too many conflicts")
        finally:
            tm.abort()
            conn.close()

    def worker(k):
        try:
            for i in range(25):
                request(i)
        except Exception as e:  # the failures the issue saw
            errors.append(e)
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == []
    assert done[0] == 200
    with c.transaction() as g:
        assert g.root('two')['z'].count == 200


# -- the counter: 8 threads, conflicts retried ----------------------------

def test_counter_through_reference_adds_up(two_dbs):
    c = two_dbs
    commits = [0]
    lock = threading.Lock()
    errors = []

    def increment(g):
        g.root('one')['y'].z.count += 1

    def worker():
        tm = transaction.TransactionManager()
        try:
            for i in range(40):
                c.run(increment, attempts=50, backoff=0.001,
                      max_backoff=0.02, transaction_manager=tm)
                with lock:
                    commits[0] += 1
        except Exception as e:
            errors.append(e)
    threads = [threading.Thread(target=worker) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == []
    assert commits[0] == 320
    with c.transaction() as g:
        assert g.root('two')['z'].count == commits[0]


# -- the tests can fail ---------------------------------------------------

def test_tests_fail_without_the_fix(two_dbs, monkeypatch):
    # Without ghostifying, the pooled connection of one keeps y, whose z
    # belongs to the connection of two that another group now holds: the
    # write joins that group's transaction, and is lost with its abort.
    monkeypatch.setattr(glue.Connection, 'forget_references',
                        lambda self, name=None: None)
    c = two_dbs
    with c.transaction() as g:
        g.root('one')['y'].z.note
    other_tm = transaction.TransactionManager()
    other = c.group(other_tm)
    other.root('two')
    with c.transaction() as g:
        z = g.root('one')['y'].z
        z.note = 'lost'
        assert z._p_jar is other.connections['two']
    other_tm.abort()
    other.close()
    assert note_of(c) is None


def test_partner_found_again_keeps_the_cache(two_dbs):
    # One thread, one transaction after another: the connection of two
    # that y's z belongs to is idle in its pool when one's connection
    # opens again, so it comes back into the group and y stays loaded.
    c = two_dbs
    with c.transaction() as g:
        y = g.root('one')['y']
        y.z.note
    with c.transaction() as g:
        assert g.root('one')['y'] is y
        assert 'two' in g.connections      # came back with one
        assert y._p_changed is False       # loaded, not a ghost
        y.z.note = 'I'
    assert note_of(c) == 'I'


def _mount(conn):
    # What Zope's classic MountedObject does: reach the other database
    # through get_connection and keep its object in a volatile attribute
    # of an object of this connection (the root, which refers to no other
    # database).
    holder = conn.root()
    if getattr(holder, '_v_mounted', None) is None:
        holder._v_mounted = conn.get_connection('two').root()['z']
    return holder._v_mounted


@pytest.mark.parametrize('partner_busy', [False, True])
def test_objects_kept_from_get_connection_stay_right(two_dbs,
                                                     partner_busy):
    # Plain ZODB keeps two's connection attached to one's pooled
    # connection, so the kept object stays usable.  Here two's connection
    # goes back to its own pool: it is taken back when one's opens again
    # (kept object still right), or, when another transaction holds it,
    # every object of one's connection is ghostified (the kept object is
    # gone, fetched again through the new member).
    c = two_dbs
    db = c['one']
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    z = _mount(conn)
    z.note = 'M1'
    tm.commit()
    conn.close()
    other = None
    if partner_busy:
        other = c.group(transaction.TransactionManager())
        other.get_connection('two')       # two's idle connection, taken
    conn = db.open(tm)
    try:
        mounted = _mount(conn)
        assert mounted._p_jar is conn.get_connection('two')
        assert (mounted is z) == (not partner_busy)
        mounted.note = 'M2'
        tm.commit()
    finally:
        conn.close()
        if other is not None:
            other.close()
    assert note_of(c) == 'M2'


def test_partners_are_bounded_and_not_held(tmp_path):
    # A connection whose objects refer into many databases finds at most
    # REUNITE_LIMIT of them again; the others' objects are ghosts, and no
    # partner is held while the connection is idle in its pool.
    c = multidb.Collection()
    names = ['one'] + [f't{i}' for i in range(10)]
    for name in names:
        c.declare(name, functools.partial(FileStorage,
                                          str(tmp_path / f'{name}.fs')))
    try:
        with c.transaction() as g:
            root = g.root('one')
            for name in names[1:]:
                root[name] = Z()
                g.get_connection(name).add(root[name])
        # Every tenant database's connection is idle in its own pool.
        for name in names[1:]:
            assert glue.connections_in_use(c[name]) == 0
        with c.transaction() as g:
            g.root('one')
            assert len(g.connections) == 1 + glue.REUNITE_LIMIT
            for name in names[1:]:
                assert g.root('one')[name]._p_jar is \
                    g.get_connection(name)
    finally:
        c.close()


def test_members_record_only_cross_references(two_dbs):
    # The bookkeeping is per object holding a reference, not per object
    # loaded: the root of one and objects of two alone are not recorded.
    c = two_dbs
    with c.transaction() as g:
        g.root('one')['plain'] = PersistentMapping()
    tm = transaction.TransactionManager()
    g = c.group(tm)
    try:
        y = g.root('one')['y']
        y.z.note
        g.root('one')['plain'].keys()
        one = g.connections['one']
        assert one._xrefs == {'two': {y._p_oid}}
        assert not g.connections['two']._xrefs
    finally:
        g.close()
