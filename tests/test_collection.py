import functools
import logging
import os
import time

import pytest
import ZODB
from persistent.mapping import PersistentMapping
from ZODB.FileStorage import FileStorage
from ZODB.MappingStorage import MappingStorage
from zope.interface.verify import verifyObject

import multidb
from multidb.interfaces import ICollection
from multidb.interfaces import IConnectionGroup


def _makeOne(**kw):
    return multidb.Collection(**kw)


def test_verify_collection(tmp_path):
    # With tenants: ``tenants`` raises NotConfigured on a collection
    # without them (see below).
    with _makeOne() as c:
        c.add('catalog', MappingStorage())
        multidb.Tenants(c, catalog='catalog', backend=multidb.
                        FileStorageBackend(str(tmp_path / '{name}.fs')))
        verifyObject(ICollection, c)
    names = set(ICollection.names())
    assert {'get', 'is_open', 'peek', 'open_count', 'tenants',
            'configuration'} <= names
    # Every public name of the class is in the interface.
    public = {n for n in dir(multidb.Collection) if not n.startswith('_')}
    assert public <= names


def test_itenants_declares_every_progress_argument():
    import inspect

    from multidb.interfaces import INameResolver
    from multidb.interfaces import ITenants
    # (zope.interface keeps no keyword-only arguments: read the source.)
    from multidb import interfaces
    source = inspect.getsource(interfaces)
    source = source[source.index('class ITenants('):]
    taking = [name for name in ITenants.names()
              if 'progress' in inspect.signature(
                  getattr(multidb.Tenants, name)).parameters]
    assert len(taking) >= 7
    for name in taking:
        declared = source[source.index(f'    def {name}('):]
        assert 'progress=None' in declared[:declared.index(':\n')], name
    # The resolver's callbacks are INameResolver's, not ITenants' API.
    assert not set(INameResolver.names()) & set(ITenants.names())


def test_collection_built_in_code_has_no_configuration():
    with _makeOne() as c:
        assert c.configuration is None
        with pytest.raises(multidb.NotConfigured):
            c.tenants


def test_verify_group(coll):
    g = coll.group()
    verifyObject(IConnectionGroup, g)
    g.close()


@pytest.mark.parametrize('cls, builtin', [
    (multidb.DuplicateName, ValueError),
    (multidb.InvalidName, ValueError),
    (multidb.UnknownDatabase, KeyError),
    (multidb.DatabaseInUse, RuntimeError),
    (multidb.CollectionClosed, RuntimeError),
    (multidb.GroupClosed, RuntimeError),
    (multidb.GroupExists, RuntimeError),
    (multidb.TooManyOpen, RuntimeError),
])
def test_errors_inherit_base_and_builtin(cls, builtin):
    assert issubclass(cls, multidb.MultiDBError)
    assert issubclass(cls, builtin)


def test_all_public_names_exist():
    for name in multidb.__all__:
        assert getattr(multidb, name) is not None


def test_add_returns_db_sharing_the_mapping(coll):
    a = coll.add('a', MappingStorage())
    b = coll.add('b', MappingStorage)
    assert isinstance(a, ZODB.DB)
    assert a.databases is coll.databases is b.databases
    assert a.database_name == 'a'
    assert coll['a'] is a and coll.databases['b'] is b
    assert sorted(coll) == ['a', 'b'] and len(coll) == 2
    assert 'a' in coll and 'a' in coll.databases and 'zz' not in coll


def test_add_duplicate_never_calls_factory(coll):
    coll.add('a', MappingStorage)
    calls = []

    def factory():
        calls.append(1)
        return MappingStorage()
    with pytest.raises(multidb.DuplicateName, match="'a' is already"):
        coll.add('a', factory)
    with pytest.raises(ValueError):
        coll.declare('a', factory)
    assert calls == [] and len(coll) == 1


def test_add_w_failing_factory_leaves_collection_unchanged(coll):
    def factory():
        raise OSError('disk on fire')
    with pytest.raises(OSError, match='disk on fire'):
        coll.add('a', factory)
    assert 'a' not in coll
    coll.add('a', MappingStorage)  # the name is free


def test_add_w_failing_db_closes_the_storage_it_made(coll, tmp_path):
    made = []

    def factory():
        from ZODB.FileStorage import FileStorage
        made.append(FileStorage(str(tmp_path / 'x.fs')))
        return made[-1]
    with pytest.raises(TypeError):
        coll.add("x", factory, cache_size="not a number")
    assert 'x' not in coll
    # The storage was closed: the file is not locked any more.
    from ZODB.FileStorage import FileStorage
    FileStorage(str(tmp_path / 'x.fs')).close()


@pytest.mark.parametrize('key', ['database_name', 'databases'])
def test_reserved_db_kwargs(coll, key):
    with pytest.raises(TypeError, match=key):
        coll.add('a', MappingStorage, **{key: 'x'})
    assert 'a' not in coll


@pytest.mark.parametrize('name', [None, 1, b'a'])
def test_bad_names(coll, name):
    with pytest.raises(multidb.InvalidName):
        coll.declare(name, MappingStorage)
    with pytest.raises(multidb.InvalidName):
        coll.add(name, MappingStorage)
    assert len(coll) == 0


def test_empty_name_as_in_zodb(coll):
    # ZODB accepts database_name='' (its pack tests use it).
    db = coll.add('', MappingStorage())
    assert db.database_name == ''
    with coll.transaction() as g:
        g.root('')['x'] = 1
    with coll.transaction() as g:
        assert g.root('')['x'] == 1
    assert coll[''] is db


def test_declare_w_non_callable(coll):
    with pytest.raises(TypeError, match="'a'"):
        coll.declare('a', MappingStorage())


def test_declare_opens_nothing_until_used(coll, tmp_path, fs_factory):
    coll.declare('a', fs_factory('a'))
    assert 'a' in coll and not coll.is_open('a')
    assert not os.path.exists(tmp_path / 'a.fs')
    db = coll['a']
    assert coll.is_open('a') and os.path.exists(tmp_path / 'a.fs')
    assert coll['a'] is db


def test_declared_db_opened_by_plain_zodb(coll, fs_factory):
    coll.add('main', MappingStorage)
    coll.declare('other', fs_factory('other'))
    conn = coll['main'].open()
    other = conn.get_connection('other')     # plain ZODB API
    assert other.db() is coll['other']
    assert conn.connections is other.connections
    conn.close()


def test_cross_database_reference_to_declared_db(coll, fs_factory):
    import transaction
    coll.add('main', MappingStorage)
    coll.declare('other', fs_factory('other'))
    with coll.transaction() as g:
        obj = PersistentMapping(v=42)
        g.get_connection('other').add(obj)  # ZODB wants the home said
        g.root('other')['obj'] = obj
        g.root('main')['ref'] = obj
    transaction.abort()
    with coll.transaction() as g:
        ref = g.root('main')['ref']
        assert ref['v'] == 42
        assert ref._p_jar is g.get_connection('other')


def test_unknown_database(coll):
    with pytest.raises(multidb.UnknownDatabase) as e:
        coll['nope']
    assert isinstance(e.value, KeyError)
    assert str(e.value) == "database 'nope' is not in the collection"
    with pytest.raises(KeyError):
        coll.databases['nope']
    assert coll.get('nope') is None
    with pytest.raises(multidb.UnknownDatabase):
        coll.remove('nope')
    with pytest.raises(multidb.UnknownDatabase):
        coll.is_open('nope')


def test_remove_closes_and_frees_name(coll, fs_factory):
    db = coll.add('a', fs_factory('a'))
    coll.declare('b', fs_factory('b'))
    coll.remove('a')
    coll.remove('b')
    assert len(coll) == 0
    assert 'storage' not in vars(db)
    db2 = coll.add('a', fs_factory('a'))  # same file: it was unlocked
    assert db2 is not db


def test_remove_via_mapping_delitem(coll):
    coll.add('a', MappingStorage)
    del coll.databases['a']
    assert 'a' not in coll


def test_close_idempotent_and_closed_errors(fs_factory):
    c = _makeOne()
    db = c.add('a', fs_factory('a'))
    c.declare('b', fs_factory('b'))
    c.close()
    c.close()
    assert len(c) == 0
    assert 'storage' not in vars(db)  # ZODB closed it
    for call in (lambda: c.add('x', MappingStorage),
                 lambda: c.declare('x', MappingStorage),
                 lambda: c.group()):
        with pytest.raises(multidb.CollectionClosed, match='is closed'):
            call()


def test_context_manager_closes(fs_factory):
    with _makeOne() as c:
        db = c.add('a', fs_factory('a'))
    assert 'storage' not in vars(db)


def test_db_kwargs_are_passed(coll):
    db = coll.add('a', MappingStorage, pool_size=3, cache_size=123)
    assert db.getPoolSize() == 3 and db.getCacheSize() == 123
    coll.declare('b', MappingStorage, pool_size=2)
    assert coll['b'].getPoolSize() == 2


def test_external_zodb_db_registers_itself(coll):
    # Plain ZODB code handing the shared mapping to ZODB.DB.
    db = ZODB.DB(MappingStorage(), databases=coll.databases,
                 database_name='ext')
    assert coll['ext'] is db
    with pytest.raises(ValueError):
        ZODB.DB(MappingStorage(), databases=coll.databases,
                database_name='ext')


def test_max_open_validation():
    for bad in (0, -1, 1.5, 'x'):
        with pytest.raises(ValueError, match='max_open'):
            _makeOne(max_open=bad)


def test_default_max_open_follows_fd_limit():
    import resource
    from multidb.collection import default_max_open
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    n = default_max_open()
    assert n * 4 <= soft and n >= 1


# -- in-memory databases hold no files: they do not count ----------------

def test_in_memory_databases_do_not_count_against_max_open(fs_factory):
    with multidb.Collection(max_open=2, open_timeout=30) as c:
        for i in range(3):
            c.add(f'mem{i}', MappingStorage)
        assert c.open_count == 0
        c.declare('f0', fs_factory('f0'))
        c.declare('f1', fs_factory('f1'))
        t0 = time.monotonic()
        with c.transaction() as g:
            g.root('f0')['x'] = 1
            g.root('f1')['x'] = 1
            g.root('mem0')['x'] = 1
        # No wait for a slot that in-memory databases hold (open_timeout
        # is 30 s: the test would take that long).
        assert time.monotonic() - t0 < 10
        assert c.open_count == 2
        c.remove('mem1')
        assert c.open_count == 2


# -- plain ZODB databases registered in the collection ------------------

def test_plain_zodb_db_closed_frees_its_name(coll, caplog):
    db = ZODB.DB(MappingStorage(), databases=coll.databases,
                 database_name='plain')
    assert 'plain' in coll and coll['plain'] is db
    with coll.transaction() as g:
        g.root('plain')['x'] = 1
    db.close()
    assert 'plain' not in coll
    # The name can be used again, and closing the collection logs nothing.
    storage = MappingStorage()
    ZODB.DB(storage, databases=coll.databases, database_name='plain')
    with caplog.at_level(logging.WARNING):
        coll.close()
    assert caplog.records == []
    assert not storage.opened()   # closed by the collection


def test_storage_locked_by_another_process(coll, tmp_path):
    # A FileStorage serves one process: a second one gets an error naming
    # the database and saying how to share it.
    import subprocess
    import sys
    path = str(tmp_path / 'catalog.fs')
    holder = subprocess.Popen(
        [sys.executable, '-c',
         'import sys; from ZODB.FileStorage import FileStorage;'
         f' s = FileStorage({path!r}); print("ready", flush=True);'
         ' sys.stdin.read()'],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == 'ready\n'
        coll.declare('catalog', functools.partial(FileStorage, path))
        with pytest.raises(multidb.DatabaseLocked,
                           match="'catalog' is in use by another process"
                                 ".*ZEO"):
            coll['catalog']
        assert not coll.is_open('catalog')
    finally:
        holder.communicate('')
    assert coll['catalog'] is not None   # free again: opens


def test_errors_keep_their_input_and_say_what_is_wrong():
    import errno
    e = multidb.UnknownDatabase('x')
    assert (e.name, e.reason, e.args) == ('x', 'is not in the collection',
                                          ('x',))
    assert str(e) == "database 'x' is not in the collection"
    assert isinstance(e, KeyError)
    e = multidb.MissingStorage('t', '/data/t.fs')
    assert e.errno == errno.ENOENT and isinstance(e, FileNotFoundError)
    assert str(e).startswith("tenant 't' is in the catalog but its storage"
                             " is missing: /data/t.fs does not exist")
    import pathlib
    e = multidb.ArchiveExists(pathlib.Path('/a/b.multidb'))
    assert str(e) == "archive '/a/b.multidb' already exists"
    e = multidb.UnsafeArchive('p', 'bad global', name='os.system')
    assert (e.oid, e.name, e.reason) == (None, 'os.system', 'bad global')
    with pytest.raises(TypeError, match='CollectionClosed takes'):
        multidb.CollectionClosed(1, 2)
