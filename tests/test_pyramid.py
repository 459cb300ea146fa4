"""multidb.pyramid: config.include('multidb.pyramid') in a real Pyramid
application served by waitress."""
import logging
import threading

import pytest
import transaction
from ZODB.POSException import ConflictError

from helpers import run_threads
from helpers import tenants_config
from test_wsgi import Server
from multidb import glue
from multidb.config import collectionFromFiles

pytest.importorskip('pyramid')
pytest.importorskip('pyramid_tm')
pytest.importorskip('pyramid_retry')
pytest.importorskip('waitress')
from pyramid.config import Configurator  # noqa: E402
from pyramid.request import Request  # noqa: E402
from pyramid.response import Response  # noqa: E402

TENANTS = ['t0', 't1', 't2', 't3']


@pytest.fixture
def conf(tmp_path):
    """A configuration file of FileStorage tenants (max-open 3, below
    the tenant count), with the tenants created."""
    path = tmp_path / 'app.conf'
    path.write_text(tenants_config('', '$data/tenants').replace(
        '<multidb>', '<multidb>\n  max-open 3'))
    defines = {'data': str(tmp_path / 'data')}
    (tmp_path / 'data').mkdir()
    c = collectionFromFiles([str(path)], defines=defines)
    try:
        for name in TENANTS:
            c.tenants.create(name)
    finally:
        c.close()
    return path, defines


def make_app(path, defines, fail_once=None, **settings):
    settings = dict(settings)
    settings['multidb.config'] = str(path)
    settings.update({f'multidb.define.{k}': v for k, v in defines.items()})
    settings.setdefault('retry.attempts', '20')
    config = Configurator(settings=settings)
    config.include('pyramid_retry')
    config.include('multidb.pyramid')
    failed = []

    def count(request):
        root = request.tenant_root
        root['count'] = root.get('count', 0) + 1
        if fail_once is not None and not failed:
            failed.append(request.tenant)
            raise ConflictError()
        return Response(f"{request.tenant} {root['count']}",
                        content_type='text/plain')
    config.add_route('count', '/count')
    config.add_view(count, route_name='count')
    app = config.make_wsgi_app()
    app.failed = failed
    return app


def in_use(collection):
    return {name: n for name, n in collection.connections_in_use().items()
            if n}


@pytest.mark.slow
def test_threads_against_waitress(conf):
    path, defines = conf
    app = make_app(path, defines)
    coll = app.registry.multidb
    server = Server(app, threads=4)
    counts = {name: [] for name in TENANTS}
    errors = []
    lock = threading.Lock()

    def client(k):
        try:
            for j in range(25):
                name = TENANTS[(k + j) % len(TENANTS)]
                status, body = server.get(f'{name}.example.com', '/count')
                if status != 200:
                    errors.append((name, status, body))
                    continue
                got, n = body.split()
                if got != name:
                    errors.append((name, body))
                with lock:
                    counts[name].append(int(n))
        except Exception as e:   # pragma: no cover
            errors.append(repr(e))
    try:
        assert run_threads(client, 4, 120) == []
        assert errors == []
        for name in TENANTS:
            assert sorted(counts[name]) == list(range(1, 26))
        status, body = server.get('initech.example.com', '/count')
        assert status == 404
        status, body = server.get('catalog.example.com', '/count')
        assert status == 404
    finally:
        server.close()
    assert in_use(coll) == {}
    for name in TENANTS:   # one at a time: max_open is 3
        with coll.transaction(transaction.TransactionManager()) as g:
            assert g.root(name)['count'] == 25
    coll.close()


def test_conflict_is_retried_by_pyramid_retry(conf):
    path, defines = conf
    app = make_app(path, defines, fail_once=True)
    coll = app.registry.multidb
    server = Server(app, threads=2)
    try:
        assert server.get('t1.example.com', '/count') == (200, 't1 1')
        assert app.failed == ['t1']
        assert server.get('t1.example.com', '/count') == (200, 't1 2')
    finally:
        server.close()
    assert in_use(coll) == {}
    coll.close()


def test_path_and_header(conf):
    path, defines = conf
    app = make_app(path, defines, **{'multidb.tenant_from': 'path'})
    try:
        resp = Request.blank('/t2/count').get_response(app)
        assert (resp.status_int, resp.text) == (200, 't2 1')
        resp = Request.blank('/nobody/count').get_response(app)
        assert resp.status_int == 404
    finally:
        app.registry.multidb.close()
    app = make_app(path, defines, **{'multidb.tenant_from': 'header',
                                     'multidb.tenant_header': 'X-Org'})
    try:
        resp = Request.blank('/count', headers={'X-Org': 't2'}
                             ).get_response(app)
        assert (resp.status_int, resp.text) == (200, 't2 2')
        assert Request.blank('/count').get_response(app).status_int == 404
        assert in_use(app.registry.multidb) == {}
    finally:
        app.registry.multidb.close()


def test_zodburi_settings():
    config = Configurator(settings={
        'zodbconn.uri': 'memory://?database_name=main',
        'zodbconn.uri.sessions': 'memory://sessions'})
    config.include('multidb.pyramid')
    coll = config.registry.multidb
    try:
        assert sorted(coll.configuration.sources) == ['main', 'sessions']
    finally:
        coll.close()


def test_bad_settings():
    from pyramid.exceptions import ConfigurationError
    with pytest.raises(ConfigurationError):
        Configurator(settings={}).include('multidb.pyramid')
    with pytest.raises(ConfigurationError):
        Configurator(settings={'zodbconn.uri': 'memory://',
                               'multidb.tenant_from': 'cookie'}
                     ).include('multidb.pyramid')


def test_group_left_open_by_a_view_is_logged(conf, caplog):
    path, defines = conf
    app = make_app(path, defines)
    collection = app.registry.multidb
    collection.track_groups = True
    leaked = []

    def forgets(request):
        # The thread's manager (request.tm's), without request.dbgroup.
        g = collection.group()
        g.root('t1')
        leaked.append(g)
        return Response('ok')

    def fine(request):
        request.tenant_root['x'] = 1
        return Response('fine')
    config = Configurator(registry=app.registry)
    config.add_route('forgets', '/forgets')
    config.add_view(forgets, route_name='forgets')
    config.add_route('fine', '/fine')
    config.add_view(fine, route_name='fine')
    config.commit()
    try:
        with caplog.at_level(logging.WARNING, logger='multidb.wsgi'):
            resp = Request.blank('/forgets', host='t2.example.com'
                                 ).get_response(app)
        assert resp.status_int == 200
        [g] = leaked
        assert 'request /forgets left a group open' in caplog.text
        assert 'in forgets' in caplog.text       # where it was opened
        g.close()
        caplog.clear()
        # request.dbgroup is the request's own: closed, never reported.
        with caplog.at_level(logging.WARNING, logger='multidb.wsgi'):
            resp = Request.blank('/fine', host='t2.example.com'
                                 ).get_response(app)
        assert resp.status_int == 200 and caplog.text == ''
        assert in_use(collection) == {}
    finally:
        collection.close()


def test_database_server_down_is_a_503_others_unaffected(
        tmp_path, zeo_server, caplog):
    host, port = zeo_server.address
    settings = {
        'zodbconn.uri.remote':
            f'zeo://{host}:{port}?storage=1&wait_timeout=1'
            f'&database_name=remote',
        'zodbconn.uri.local':
            f'file://{tmp_path}/local.fs?database_name=local',
        'multidb.tenant_from': 'path', 'retry.attempts': '2'}
    config = Configurator(settings=settings)
    config.include('pyramid_retry')
    config.include('multidb.pyramid')

    def count(request):
        root = request.tenant_root
        root['count'] = root.get('count', 0) + 1
        return Response(f"{request.tenant} {root['count']}")
    config.add_route('count', '/count')
    config.add_view(count, route_name='count')
    app = config.make_wsgi_app()
    collection = app.registry.multidb
    try:
        assert Request.blank('/remote/count').get_response(app).text == \
            'remote 1'
        assert Request.blank('/local/count').get_response(app).text == \
            'local 1'
        zeo_server.stop()
        with caplog.at_level(logging.WARNING, logger='multidb.pyramid'):
            resp = Request.blank('/remote/count').get_response(app)
        assert resp.status_int == 503
        assert resp.headers['Retry-After'] == '1'
        assert 'cannot be reached' in resp.text
        assert 'request /remote/count' in caplog.text
        assert 'ClientDisconnected' in caplog.text
        resp = Request.blank('/local/count').get_response(app)
        assert (resp.status_int, resp.text) == (200, 'local 2')
        assert in_use(collection) == {}
    finally:
        collection.close()
