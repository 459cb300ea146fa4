"""multidb.wsgi.TenantMiddleware, behind a real HTTP server (waitress)
and in-process with fabricated environs."""
import gc
import http.client
import io
import logging
import threading

import pytest
import transaction
from ZODB.POSException import ConflictError

import multidb
from helpers import fs_tenants
from helpers import run_threads
from multidb import glue
from multidb.wsgi import TenantMiddleware
from multidb.wsgi import known
from multidb.wsgi import tenant_from_host
from multidb.wsgi import tenant_from_path

waitress = pytest.importorskip('waitress')
from waitress import wasyncore  # noqa: E402

TENANTS = [f't{i}' for i in range(8)]


def counter_app(environ, start_response):
    """Increments the tenant's counter; answers 'tenant owner count'."""
    name = environ['multidb.tenant']
    root = environ['multidb.group'].root(name)
    root['count'] = root.get('count', 0) + 1
    body = f"{name} {root.get('owner')} {root['count']}".encode()
    start_response('200 OK', [('Content-Type', 'text/plain'),
                              ('Content-Length', str(len(body)))])
    return [body]


@pytest.fixture
def tenants(tmp_path):
    c, t = fs_tenants(tmp_path)
    c.max_open = 5   # below the tenant count (the catalog counts too)
    for name in TENANTS:
        t.create(name)
        with c.transaction(transaction.TransactionManager()) as g:
            g.root(name)['owner'] = name
    yield c, t
    c.close()


class Server:
    def __init__(self, app, threads=8):
        self.server = waitress.create_server(
            app, host='127.0.0.1', port=0, threads=threads)
        self.port = self.server.effective_port
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        # waitress's own run(), in short turns, so that the server is
        # closed here, in its loop thread, once asked (closing its sockets
        # from another thread breaks its select(); waking it through its
        # trigger races with the trigger's own close).
        server = self.server
        while not self._stop.is_set():
            wasyncore.loop(timeout=0.05, map=server._map, count=1)
        wasyncore.close_all(server._map)

    def get(self, host, path='/', conn=None):
        own = conn is None
        if own:
            conn = http.client.HTTPConnection('127.0.0.1', self.port,
                                              timeout=60)
        try:
            conn.request('GET', path, headers={'Host': host})
            resp = conn.getresponse()
            return resp.status, resp.read().decode()
        finally:
            if own:
                conn.close()

    def close(self):
        self.server.task_dispatcher.shutdown()
        self._stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive()


def in_use(collection):
    return {name: n for name, n in collection.connections_in_use().items()
            if n}


@pytest.mark.slow
def test_threads_against_waitress(tenants):
    c, t = tenants
    app = TenantMiddleware(counter_app, c, attempts=20, backoff=0.01,
                           max_backoff=0.2)
    server = Server(app)
    results = {name: [] for name in TENANTS}
    errors = []
    lock = threading.Lock()

    def client(k):
        conn = http.client.HTTPConnection('127.0.0.1', server.port,
                                          timeout=60)
        try:
            for j in range(50):
                name = TENANTS[(k + j) % len(TENANTS)]
                status, body = server.get(f'{name}.example.com', conn=conn)
                if status != 200:
                    errors.append((name, status, body))
                    continue
                got, owner, count = body.split()
                if got != name or owner != name:
                    errors.append((name, body))
                with lock:
                    results[name].append(int(count))
        except Exception as e:   # pragma: no cover
            errors.append(repr(e))
        finally:
            conn.close()

    try:
        assert run_threads(client, 8, 300) == []
        assert errors == []
        assert sum(len(v) for v in results.values()) == 8 * 50
        # Each committed count seen once: 1 .. the requests of the tenant.
        for name, counts in results.items():
            assert sorted(counts) == list(range(1, len(counts) + 1)), name
        assert c.open_count <= 5
        # Unknown tenants: 404, never a 500.
        for host in ('nobody.example.com', 'catalog.example.com',
                     'localhost', '127.0.0.1'):
            status, body = server.get(host)
            assert (status, body) == (404, 'Unknown tenant\n'), host
    finally:
        server.close()
    for name in TENANTS:
        with c.transaction(transaction.TransactionManager()) as g:
            root = g.root(name)
            assert root['owner'] == name
            assert root['count'] == len(results[name])
    for name in TENANTS:
        c.wait_idle(name)
    assert in_use(c) == {}


def environ(path='/', host='t1.example.com', **kw):
    env = {'REQUEST_METHOD': 'GET', 'SCRIPT_NAME': '', 'PATH_INFO': path,
           'SERVER_NAME': 'localhost', 'SERVER_PORT': '80',
           'HTTP_HOST': host, 'wsgi.input': io.BytesIO(b''),
           'wsgi.url_scheme': 'http'}
    env.update(kw)
    return env


def call(app, env):
    out = {}

    def start_response(status, headers, exc_info=None):
        out['status'] = status
        return lambda data: None
    result = app(env, start_response)
    try:
        body = b''.join(result)
    finally:
        if hasattr(result, 'close'):
            result.close()
    return out['status'], body.decode()


def test_resolvers():
    assert tenant_from_host({'HTTP_HOST': 'Acme.example.com:8080'}) == 'acme'
    assert tenant_from_host({'HTTP_HOST': 'localhost:8080'}) is None
    assert tenant_from_host({'HTTP_HOST': '10.0.0.1'}) is None
    assert tenant_from_host({'HTTP_HOST': '[::1]:80'}) is None
    env = {'SCRIPT_NAME': '/app', 'PATH_INFO': '/acme/orders/1'}
    assert tenant_from_path(env) == 'acme'
    assert env == {'SCRIPT_NAME': '/app/acme', 'PATH_INFO': '/orders/1'}
    assert tenant_from_path({'PATH_INFO': '/'}) is None
    with pytest.raises(ValueError):
        TenantMiddleware(counter_app, None, resolve='cookie')


def test_path_and_header_resolution(tenants):
    c, t = tenants
    seen = []

    def app(environ, start_response):
        seen.append((environ['SCRIPT_NAME'], environ['PATH_INFO']))
        return counter_app(environ, start_response)
    mw = TenantMiddleware(app, c, resolve='path')
    assert call(mw, environ('/t2/x/y')) == ('200 OK', 't2 t2 1')
    assert seen == [('/t2', '/x/y')]
    assert call(mw, environ('/nope/x'))[0] == '404 Not Found'
    mw = TenantMiddleware(counter_app, c, resolve='header',
                          header='X-Customer')
    assert call(mw, environ(HTTP_X_CUSTOMER='t3')) == ('200 OK', 't3 t3 1')
    assert call(mw, environ())[0] == '404 Not Found'
    mw = TenantMiddleware(counter_app, c, resolve=lambda env: 't4')
    assert call(mw, environ()) == ('200 OK', 't4 t4 1')


def test_abort_on_5xx_and_exception(tenants):
    c, t = tenants

    def app(environ, start_response):
        root = environ['multidb.group'].root(environ['multidb.tenant'])
        root['count'] = 99
        if environ['PATH_INFO'] == '/boom':
            raise ValueError('boom')
        status = '500 Oops' if environ['PATH_INFO'] == '/500' else '404 No'
        start_response(status, [])
        return [b'x']
    mw = TenantMiddleware(app, c)
    assert call(mw, environ('/500'))[0] == '500 Oops'
    with pytest.raises(ValueError):
        call(mw, environ('/boom'))
    with c.transaction(transaction.TransactionManager()) as g:
        assert 'count' not in g.root('t1')
    # A 4xx commits.
    assert call(mw, environ('/404'))[0] == '404 No'
    with c.transaction(transaction.TransactionManager()) as g:
        assert g.root('t1')['count'] == 99
    assert in_use(c) == {}


def test_retry_rereads_the_body(tenants):
    c, t = tenants
    bodies = []

    def app(environ, start_response):
        bodies.append(environ['wsgi.input'].read())
        environ['multidb.group'].root('t1')['last'] = bodies[-1]
        if len(bodies) < 3:
            raise ConflictError()
        start_response('200 OK', [])
        return [b'ok']
    mw = TenantMiddleware(app, c, attempts=3, backoff=0)
    env = environ(REQUEST_METHOD='POST', CONTENT_LENGTH='5',
                  **{'wsgi.input': io.BytesIO(b'hello')})
    assert call(mw, env) == ('200 OK', 'ok')
    assert bodies == [b'hello'] * 3
    # Too big to buffer: one attempt only.
    bodies.clear()
    mw = TenantMiddleware(app, c, attempts=3, backoff=0, max_body=4)
    env = environ(REQUEST_METHOD='POST', CONTENT_LENGTH='5',
                  **{'wsgi.input': io.BytesIO(b'hello')})
    with pytest.raises(ConflictError):
        call(mw, env)
    assert bodies == [b'hello']
    assert in_use(c) == {}


def test_tenant_gone_in_app_is_404(tenants):
    c, t = tenants

    def app(environ, start_response):
        raise multidb.UnknownDatabase(environ['multidb.tenant'],
                                      'no longer exists')
    for manage in (True, False):
        mw = TenantMiddleware(app, c, manage_transaction=manage)
        assert call(mw, environ()) == ('404 Not Found', 'Unknown tenant\n')
    assert in_use(c) == {}


def test_unmanaged_streams_and_closes_in_close(tenants):
    c, t = tenants
    tm = transaction.TransactionManager()

    def app(environ, start_response):
        assert environ['transaction.manager'] is tm
        group = environ['multidb.group']
        start_response('200 OK', [])

        def body():
            root = group.root('t5')
            root['count'] = 7
            environ['transaction.manager'].commit()
            yield b'streamed'
        return body()
    mw = TenantMiddleware(app, c, manage_transaction=False)
    env = environ(**{'transaction.manager': tm})
    assert call(mw, env) == ('200 OK', 'streamed')
    assert env['multidb.group'].closed
    with c.transaction(transaction.TransactionManager()) as g:
        assert g.root('t5')['count'] == 7


def test_unclosed_response_is_closed_and_logged(tenants, caplog):
    c, t = tenants

    def app(environ, start_response):
        environ['multidb.group'].root('t6')['count'] = 1   # uncommitted
        start_response('200 OK', [])
        return [b'x']
    mw = TenantMiddleware(app, c, manage_transaction=False)
    env = environ('/leaky', host='t6.example.com')
    with caplog.at_level(logging.WARNING, logger='multidb.wsgi'):
        result = mw(env, lambda status, headers, exc_info=None: None)
        list(result)
        del result   # the server never called close()
        gc.collect()
    assert env['multidb.group'].closed
    text = caplog.text
    assert 'not closed by the end of the request' in text
    assert '/leaky' in text
    assert 'uncommitted' in text
    assert in_use(c) == {}
    with c.transaction(transaction.TransactionManager()) as g:
        assert 'count' not in g.root('t6')


def test_collection_tracks_leaked_groups(tmp_path, caplog):
    from ZODB.MappingStorage import MappingStorage
    for track in (False, True):
        c = multidb.Collection(track_groups=track)
        c.add('main', MappingStorage())
        with caplog.at_level(logging.WARNING, logger='multidb.collection'):
            caplog.clear()

            def leak():
                g = c.group(transaction.TransactionManager())
                g.root('main')
            leak()
            gc.collect()
            closed = c.group(transaction.TransactionManager())
            closed.close()
            del closed
            gc.collect()
        if track:
            assert 'garbage-collected without being closed' in caplog.text
            assert "['main']" in caplog.text
            assert 'in leak' in caplog.text
            assert caplog.text.count('garbage-collected') == 1
        else:
            assert caplog.text == ''
        c.close()


def test_a_request_on_a_known_tenant_reads_no_catalog(tmp_path):
    # The tenant check is answered from the tenants this process declared:
    # no catalog transaction per request (a new name is looked up once).
    c, t = fs_tenants(tmp_path)
    try:
        t.create('acme')
        reads = []
        real = t._record

        def counting(name):
            reads.append(name)
            return real(name)
        t._record = counting
        assert known(c, 'acme') and known(c, 'acme')
        assert reads == []
        assert not known(c, 'catalog') and not known(c, 'nobody')
        assert reads == ['nobody']
        assert not known(c, 'nobody')   # never declared: asked again
    finally:
        c.close()


@pytest.mark.parametrize('managed', [True, False])
@pytest.mark.parametrize('track', [True, False])
def test_group_left_open_by_the_app_is_logged(tenants, caplog, managed,
                                               track):
    c, t = tenants
    c.track_groups = track
    leaked = []

    def app(environ, start_response):
        g = c.group()        # the thread's manager, never closed
        g.root('t3')
        leaked.append(g)
        start_response('200 OK', [])
        return [b'x']
    mw = TenantMiddleware(app, c, manage_transaction=managed)
    with caplog.at_level(logging.WARNING, logger='multidb.wsgi'):
        call(mw, environ('/forgets', host='t2.example.com'))
    [g] = leaked
    text = caplog.text
    assert 'request /forgets left a group open' in text
    assert repr(g) in text
    if track:
        assert 'it was opened at:' in text and 'in app' in text
    else:
        assert 'MULTIDB_TRACK_GROUPS' in text
    # Left as it was: the application's own.
    assert not g.closed and c.connections_in_use()['t3'] == 1
    # A group of the thread opened before the request is no leak.
    caplog.clear()
    def reads(environ, start_response):
        environ['multidb.group'].root(environ['multidb.tenant'])
        start_response('200 OK', [])
        return [b'x']
    with caplog.at_level(logging.WARNING, logger='multidb.wsgi'):
        mw.app = reads
        call(mw, environ('/fine', host='t2.example.com'))
    assert caplog.text == ''
    g.close()
    assert c.group_of() is None
    assert in_use(c) == {}


def test_database_server_down_is_a_503_others_unaffected(
        tmp_path, zeo_server, caplog):
    # 'remote' on a ZEO server that stops mid-traffic; 'local' on a file.
    from ZEO.ClientStorage import ClientStorage
    from ZODB.FileStorage import FileStorage
    import functools
    c = multidb.Collection()
    c.declare('remote', functools.partial(
        ClientStorage, zeo_server.address, storage='1', wait_timeout=1))
    c.declare('local', functools.partial(FileStorage,
                                         str(tmp_path / 'local.fs')))
    mw = TenantMiddleware(counter_app, c, resolve='path', attempts=2,
                          backoff=0.01)

    def get(name):
        out = {}
        body = b''.join(mw(environ(f'/{name}/'), lambda status, headers,
                           exc_info=None: out.update(status=status,
                                                     headers=headers)))
        return out['status'], dict(out['headers']), body.decode()
    try:
        assert get('remote')[0] == '200 OK'
        assert get('local')[0] == '200 OK'
        zeo_server.stop()
        with caplog.at_level(logging.WARNING, logger='multidb.wsgi'):
            status, headers, body = get('remote')
        assert status == '503 Service Unavailable'
        assert headers['Retry-After'] == '1'
        assert "cannot be reached" in body
        assert 'request /remote/' in caplog.text
        assert 'ClientDisconnected' in caplog.text
        # The other database is served as ever.
        status, _, body = get('local')
        assert (status, body) == ('200 OK', 'local None 2')
        assert in_use(c) == {}
    finally:
        c.close()
