"""Stable database handles (Collection.handle): usable across evictions,
keeping what was set on them; zope.app.appsetup's multi_database() over
a collection.  (Plain ZODB: a closed DB object stays closed, and a new
one starts from its defaults.)"""
import pytest
import transaction
import ZODB.ActivityMonitor
from persistent.mapping import PersistentMapping
from ZODB.interfaces import IDatabase

import multidb
from multidb.handles import handle_factories


@pytest.fixture
def two(coll, fs_factory):
    coll.max_open = 2
    for name in 'abc':
        coll.declare(name, fs_factory(name))
    return coll


def _evict_a(coll):
    with coll.transaction() as g:
        g.root('b')
        g.root('c')
    assert not coll.is_open('a')


def test_handle_survives_eviction_and_keeps_its_settings(two):
    h = two.handle('a')
    assert h is two.handle('a')
    assert IDatabase.providedBy(h)
    monitor = ZODB.ActivityMonitor.ActivityMonitor()
    h.setActivityMonitor(monitor)
    h.setCacheSize(123)
    h.setPoolSize(3)
    first = two['a']
    _evict_a(two)
    conn = h.open(transaction.TransactionManager())
    try:
        conn.root()['x'] = 1
        conn.transaction_manager.commit()
    finally:
        conn.close()
    again = two['a']
    assert again is not first           # a new ZODB.DB ...
    # ... with what was set on the old one.
    assert again.getActivityMonitor() is monitor
    assert again.getCacheSize() == 123 and again.getPoolSize() == 3
    assert h.getCacheSize() == 123 and h.database_name == 'a'
    assert h.storage is again.storage
    assert h.databases is two.databases


def test_settings_made_on_a_plain_db_object_are_kept(two):
    db = two['a']
    db.setHistoricalTimeout(42)
    _evict_a(two)
    assert two['a'].getHistoricalTimeout() == 42
    # Set on the evicted object: passed on to the open database too.
    old = two['a']
    _evict_a(two)
    new = two['a']
    old.setCacheSize(77)
    assert new.getCacheSize() == 77


def test_handle_refuses_what_it_cannot_keep(two):
    h = two.handle('a')
    with pytest.raises(AttributeError, match="cannot set 'x' on the handle"
                                             " of database 'a'"):
        h.x = 1
    with pytest.raises(ValueError, match="cannot rename database 'a'"):
        h.database_name = 'z'
    h.database_name = 'a'
    with pytest.raises(multidb.UnknownDatabase):
        two.handle('nope')


def test_multi_database_over_a_collection(two):
    appsetup = pytest.importorskip('zope.app.appsetup.appsetup')
    from zope import component
    dbs, mapping = appsetup.multi_database(handle_factories(two, 'ab'))
    try:
        assert [db.database_name for db in dbs] == ['a', 'b']
        assert mapping == {'a': two.handle('a'), 'b': two.handle('b')}
        # The collection keeps its own mapping (every database shares it).
        assert two['a'].databases is two.databases
        a = component.getUtility(IDatabase, 'a')
        assert a is two.handle('a')
        monitor = a.getActivityMonitor()
        assert isinstance(monitor, ZODB.ActivityMonitor.ActivityMonitor)
        # A cross-database reference through the registered utilities.
        tm = transaction.TransactionManager()
        conn = a.open(tm)
        conn.root()['other'] = conn.get_connection('b').root()
        conn.get_connection('b').root()['thing'] = PersistentMapping(n=1)
        tm.commit()
        conn.close()
        _evict_a(two)
        # The utility still works after eviction, with its monitor.
        conn = component.getUtility(IDatabase, 'a').open(tm)
        assert conn.root()['other']['thing']['n'] == 1
        tm.abort()
        conn.close()
        assert two['a'].getActivityMonitor() is monitor
    finally:
        gsm = component.getGlobalSiteManager()
        for name, db in mapping.items():
            gsm.unregisterUtility(db, IDatabase, name)
