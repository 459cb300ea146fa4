"""Databases on ZEO servers in collections, groups and the catalog, on
real servers (see conftest.zeo_server), and the collection's ZEO
wait_timeout."""
import time

import pytest
import transaction
from ZEO.Exceptions import ClientDisconnected

import multidb
from multidb.backends.filestorage import FileStorageBackend
from multidb.config import collectionFromString


def _zeo(name, server, storage, extra=''):
    host, port = server.address
    return (f"  <zodb {name}>\n    <zeoclient>\n      server {host}:{port}\n"
            f"      storage {storage}\n{extra}    </zeoclient>\n  </zodb>\n")


def _collection(body, settings=''):
    return collectionFromString(
        f"%import ZEO\n<multidb>\n{settings}{body}</multidb>\n")


@pytest.fixture
def zeo_coll(zeo_server, tmp_path):
    """'one' and 'two' on the ZEO server, 'local' a FileStorage."""
    c = _collection(
        _zeo('one', zeo_server, '1') + _zeo('two', zeo_server, '2') +
        f"  <zodb local>\n    <filestorage>\n"
        f"      path {tmp_path}/local.fs\n    </filestorage>\n  </zodb>\n",
        settings="  zeo-wait-timeout 1s\n")
    yield c
    c.close()


def _timeout_of(db):
    # The wait_timeout the ClientStorage was made with.
    return db.storage._server.timeout


def test_declared_not_connected(zeo_coll):
    assert not zeo_coll.is_open('one')
    assert zeo_coll.configuration.sources['one'].kind == 'zeoclient'


def test_group_commits_across_zeo_and_filestorage(zeo_coll, zeo_server):
    with zeo_coll.transaction() as g:
        g.root('one')['v'] = 1
        g.root('two')['v'] = 2
        g.root('local')['v'] = 3
        # A cross-database reference from a ZEO database to a local one.
        obj = multidb_object()
        g.get_connection('local').add(obj)
        g.root('local')['obj'] = g.root('two')['ref'] = obj
    # Another client of the same server sees the ZEO side.
    other = _collection(_zeo('one', zeo_server, '1') +
                        _zeo('two', zeo_server, '2'))
    try:
        with other.transaction() as g:
            assert g.root('one')['v'] == 1
    finally:
        other.close()
    with zeo_coll.transaction() as g:
        assert g.root('two')['ref'] is g.root('local')['obj']
        assert g.root('two')['v'] == 2


def multidb_object():
    from persistent.mapping import PersistentMapping
    return PersistentMapping(kind='local')


def test_two_phase_commit_aborts_every_member(zeo_coll):
    # A vote failing in the FileStorage member leaves the ZEO member
    # unchanged too.
    from ZODB.POSException import ConflictError
    with zeo_coll.transaction() as g:
        g.root('one')['v'] = g.root('local')['v'] = 0
    tm = transaction.TransactionManager()
    g = zeo_coll.group(tm)
    tm.begin()
    g.root('one')['v'] = 1
    g.root('local')['v'] = 1
    # A concurrent commit to 'local' makes our commit conflict.
    with zeo_coll.transaction(transaction.TransactionManager()) as g2:
        g2.root('local')['v'] = 2
    with pytest.raises(ConflictError):
        tm.commit()
    tm.abort()
    g.close()
    with zeo_coll.transaction() as g:
        assert g.root('one')['v'] == 0 and g.root('local')['v'] == 2


def test_two_servers(zeo_server, tmp_path):
    from servers import ZEOServer
    second = ZEOServer(('1',), folder=str(tmp_path / 'zeo2')).start()
    try:
        c = _collection(_zeo('a', zeo_server, '1') + _zeo('b', second, '1'))
        with c.transaction() as g:
            g.root('a')['v'] = 'a'
            g.root('b')['v'] = 'b'
        with c.transaction() as g:
            assert (g.root('a')['v'], g.root('b')['v']) == ('a', 'b')
        c.close()
    finally:
        second.close()


def test_catalog_on_zeo(zeo_server, tmp_path):
    # Two processes' worth of collections share the catalog on ZEO; the
    # tenants are FileStorages in a folder both can reach.
    def make():
        c = _collection(_zeo('catalog', zeo_server, 'catalog'))
        backend = FileStorageBackend(str(tmp_path / 't' / '{name}.fs'))
        multidb.Tenants(c, catalog='catalog', backend=backend)
        return c
    def names(c, expected):
        # ZEO sends invalidations asynchronously: a client sees another's
        # commit once it arrives (at once on loopback, but not always by
        # the very next transaction).
        deadline = time.monotonic() + 5
        while True:
            found = [r.name for r in c.tenants.list()]
            if found == expected or time.monotonic() > deadline:
                return found
            time.sleep(0.01)
    a, b = make(), make()
    try:
        a.tenants.create('acme', init=lambda root: root.update(v=1))
        assert names(b, ['acme']) == ['acme']
        with a.transaction() as g:
            assert g.root('acme')['v'] == 1
        a.tenants.drop('acme')
        assert names(b, []) == []
    finally:
        a.close()
        b.close()


def test_request_fails_after_wait_timeout(zeo_coll, zeo_server):
    with zeo_coll.transaction() as g:
        g.root('one')['v'] = 1
    assert _timeout_of(zeo_coll['one']) == 1
    zeo_server.stop()
    # A call that needs the server waits for it, wait_timeout long.
    start = time.monotonic()
    with pytest.raises(ClientDisconnected):
        zeo_coll['one'].storage.ping()
    elapsed = time.monotonic() - start
    assert 0.8 < elapsed < 5, elapsed   # not ZEO's 30 s
    # A commit fails (at once, once the client knows the server is gone).
    start = time.monotonic()
    with pytest.raises(ClientDisconnected):
        with zeo_coll.transaction() as g:
            g.root('one')['v'] = 2
    assert time.monotonic() - start < 5


def test_opening_fails_after_wait_timeout(zeo_coll, zeo_server):
    zeo_server.stop()
    start = time.monotonic()
    with pytest.raises(ClientDisconnected):
        zeo_coll['two']
    assert 0.8 < time.monotonic() - start < 5
    assert not zeo_coll.is_open('two')   # declared still, to be retried


@pytest.mark.parametrize('settings, storage, expected', [
    # The collection's default.
    ('', '', 5),
    ('  zeo-wait-timeout 2.5s\n', '', 2.5),
    ('  zeo-wait-timeout 500ms\n', '', 0.5),
    ('  zeo-wait-timeout 1m\n', '', 60),
])
def test_wait_timeout_of_zeoclient(zeo_server, settings, storage, expected):
    c = _collection(_zeo('one', zeo_server, '1'), settings)
    try:
        assert c.configuration.zeo_wait_timeout == expected
        assert _timeout_of(c['one']) == expected
    finally:
        c.close()


def _clientstorage(server, extra=''):
    host, port = server.address
    return (f"  <zodb one>\n    <clientstorage>\n"
            f"      server {host}:{port}\n      storage 1\n{extra}"
            f"    </clientstorage>\n  </zodb>\n")


@pytest.mark.parametrize('extra, expected', [
    # ZEO's default (or 30 written out: ZConfig cannot tell) yields.
    ('', 2),
    ('      wait-timeout 30\n', 2),
    # Anything else is the section's own.
    ('      wait-timeout 10\n', 10),
])
def test_wait_timeout_of_clientstorage(zeo_server, extra, expected):
    c = _collection(_clientstorage(zeo_server, extra),
                    '  zeo-wait-timeout 2s\n')
    try:
        assert _timeout_of(c['one']) == expected
    finally:
        c.close()


@pytest.mark.parametrize('query, expected', [
    ('', 2), ('&wait_timeout=7', 7)])
def test_wait_timeout_of_zeo_uri(zeo_server, query, expected):
    host, port = zeo_server.address
    c = _collection(f"  <zodburi one>\n    uri zeo://{host}:{port}"
                    f"?storage=1{query}\n  </zodburi>\n",
                    '  zeo-wait-timeout 2s\n')
    try:
        assert _timeout_of(c['one']) == expected
    finally:
        c.close()


def test_wait_timeout_without_multidb_section(zeo_server):
    host, port = zeo_server.address
    c = collectionFromString(
        f"<zodb one>\n  <zeoclient>\n    server {host}:{port}\n"
        f"  </zeoclient>\n</zodb>\n")
    try:
        assert c.configuration.zeo_wait_timeout == 5
        assert _timeout_of(c['one']) == 5
    finally:
        c.close()


@pytest.mark.parametrize('value', ['soon', '-1s', '5 days'])
def test_bad_wait_timeout(value):
    import ZConfig
    with pytest.raises(ZConfig.DataConversionError,
                       match=f"bad duration '{value}'"):
        collectionFromString(
            f"<multidb>\n  zeo-wait-timeout {value}\n</multidb>\n")


@pytest.mark.parametrize('value', ['0s', '0', '0ms'])
def test_zero_wait_timeout(value):
    # open-timeout 0 means "do not wait"; a ZEO client waiting 0 s never
    # connects: refused, with the section's line.
    import ZConfig
    with pytest.raises(ZConfig.ConfigurationError,
                       match='zeo-wait-timeout must be a positive duration'):
        collectionFromString(
            f"<multidb>\n  zeo-wait-timeout {value}\n</multidb>\n")


def test_health_of_zeo_server_down(zeo_coll, zeo_server):
    with zeo_coll.transaction() as g:
        g.root('one')['v'] = 1
    before = {r.name: r for r in zeo_coll.health()}
    assert all(r.reachable for r in before.values())
    assert before['one'].last_transaction is not None
    # ZODB.DB committed the root of each when it opened.
    assert all(r.last_transaction is not None for r in before.values())
    zeo_server.stop()
    start = time.monotonic()
    after = {r.name: r for r in zeo_coll.health(timeout=3)}
    assert time.monotonic() - start < 4
    assert not after['one'].reachable
    assert 'ClientDisconnected' in after['one'].error
    assert after['local'].reachable


def test_health_bounded_by_timeout(zeo_coll, zeo_server):
    # The check waits for the server longer than the caller will.
    zeo_server.stop()
    c = _collection(_zeo('slow', zeo_server, '1'),
                    '  zeo-wait-timeout 30s\n')
    try:
        start = time.monotonic()
        [result] = c.health(timeout=1)
        assert time.monotonic() - start < 2
        assert not result.reachable
        assert result.error == 'no answer within 1 s'
    finally:
        c.close()
