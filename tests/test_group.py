import pytest
import transaction
from persistent.mapping import PersistentMapping
from ZODB.MappingStorage import MappingStorage
from ZODB.POSException import ConnectionStateError

import multidb


@pytest.fixture
def two(coll, fs_factory):
    coll.declare('a', fs_factory('a'))
    coll.declare('b', fs_factory('b'))
    return coll


def test_group_opens_nothing_until_used(two):
    g = two.group()
    assert g.connections == {}
    assert not two.is_open('a') and not two.is_open('b')
    g.get_connection('a')
    assert two.is_open('a') and not two.is_open('b')
    g.close()


def test_members_share_tm_and_connections(two):
    tm = transaction.TransactionManager()
    g = two.group(tm)
    a = g.get_connection('a')
    b = g.get_connection('b')
    assert a.transaction_manager is tm is b.transaction_manager
    assert g.transaction_manager is tm
    assert a.connections is b.connections is g.connections
    assert a.get_connection('b') is b and b.get_connection('a') is a
    assert g.get_connection('a') is a
    assert g.root('a') is a.root()
    g.close()


def test_one_commit_across_databases(two):
    tm = transaction.TransactionManager()
    with two.group(tm) as g:
        g.root('a')['x'] = 1
        g.root('b')['y'] = 2
        tm.commit()
    with two.group(tm) as g:
        assert g.root('a')['x'] == 1 and g.root('b')['y'] == 2


def test_commit_is_atomic_across_databases(two):
    # A conflict in b aborts a's change too: one two-phase commit.
    tm1, tm2 = transaction.TransactionManager(), transaction.TransactionManager()
    with two.transaction(tm1) as g:
        g.root('b')['n'] = PersistentMapping(v=0)
    g1, g2 = two.group(tm1), two.group(tm2)
    tm1.begin()
    tm2.begin()
    g1.root('a')['x'] = 'from g1'
    g1.root('b')['n']['v'] = 1
    g2.root('b')['n']['v'] = 2
    tm2.commit()
    from ZODB.POSException import ConflictError
    with pytest.raises(ConflictError):
        tm1.commit()
    tm1.abort()
    g1.close()
    g2.close()
    with two.transaction() as g:
        assert 'x' not in g.root('a')
        assert g.root('b')['n']['v'] == 2


def test_get_connection_unknown(two):
    with two.group() as g:
        with pytest.raises(multidb.UnknownDatabase):
            g.get_connection('nope')
        with pytest.raises(KeyError):
            g.get_connection('a').get_connection('nope')


def test_one_group_per_transaction_manager(two):
    tm = transaction.TransactionManager()
    g = two.group(tm)
    with pytest.raises(multidb.GroupExists):
        two.group(tm)
    other = two.group()  # another manager: fine
    other.close()
    g.close()
    two.group(tm).close()  # closed groups do not count


def test_close_refuses_w_pending_changes_and_closes_nothing(two):
    tm = transaction.TransactionManager()
    g = two.group(tm)
    g.root('a')
    g.root('b')['x'] = 1
    with pytest.raises(ConnectionStateError, match="database 'b'"):
        g.close()
    assert not g.closed and set(g.connections) == {'a', 'b'}
    tm.commit()
    g.close()
    assert g.closed and g.connections == {}


def test_close_returns_members_to_their_own_pools(two):
    g = two.group()
    a, b = g.get_connection('a'), g.get_connection('b')
    g.close()
    g.close()  # idempotent
    assert a.opened is None and b.opened is None
    assert a.connections == {'a': a} and b.connections == {'b': b}
    assert [c for _, c in two['a'].pool.available] == [a]
    assert [c for _, c in two['b'].pool.available] == [b]


def test_closed_group_refuses_new_members(two):
    g = two.group()
    g.close()
    with pytest.raises(multidb.GroupClosed):
        g.get_connection('a')


def test_context_manager_aborts_on_exception(two):
    tm = transaction.TransactionManager()
    with pytest.raises(ZeroDivisionError):
        with two.group(tm) as g:
            g.root('a')['x'] = 1
            1 / 0
    assert g.closed
    with two.transaction() as g:
        assert 'x' not in g.root('a')


def test_transaction_commits_and_aborts(two):
    with two.transaction() as g:
        g.root('a')['x'] = 1
    assert g.closed
    with pytest.raises(RuntimeError):
        with two.transaction() as g:
            g.root('a')['x'] = 2
            raise RuntimeError
    assert g.closed
    with two.transaction() as g:
        assert g.root('a')['x'] == 1


def test_transaction_commit_failure_aborts_and_closes(two):
    from ZODB.POSException import ConflictError
    with two.transaction() as g:
        g.root('a')['n'] = PersistentMapping(v=0)
    tm = transaction.TransactionManager()
    with pytest.raises(ConflictError):
        with two.transaction(tm) as g:
            g.root('a')['n']['v'] = 1
            with two.transaction() as other:
                other.root('a')['n']['v'] = 2
    assert g.closed
    with two.transaction() as g:
        assert g.root('a')['n']['v'] == 2


def test_release(two):
    tm = transaction.TransactionManager()
    g = two.group(tm)
    a = g.get_connection('a')
    g.root('b')['x'] = 1
    with pytest.raises(ConnectionStateError, match="'b'"):
        g.release('b')
    g.release('a')
    assert 'a' not in g.connections and a.opened is None
    assert a.connections == {'a': a}
    tm.commit()
    g.release('b')
    g.release('nope')  # not a member: nothing to do
    assert g.connections == {}
    g.close()


def test_group_w_in_memory_and_file_databases(coll, fs_factory):
    coll.add('mem', MappingStorage)
    coll.declare('file', fs_factory('file'))
    with coll.transaction() as g:
        g.root('mem')['x'] = 1
        g.root('file')['y'] = 2
    with coll.transaction() as g:
        assert g.root('mem')['x'] == 1 and g.root('file')['y'] == 2
