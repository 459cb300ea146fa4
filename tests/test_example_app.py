"""The example application of docs/example.rst (docs/example/notes), served
by waitress: client threads on more tenants than databases may be open,
and a tenant created by the multidb command, a second process, while
they run."""
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import transaction

from multidb import glue

pytest.importorskip('pyramid')
pytest.importorskip('pyramid_tm')
pytest.importorskip('pyramid_retry')
pytest.importorskip('waitress')
pytest.importorskip('ZEO')

EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       os.pardir, 'docs', 'example')
sys.path.insert(0, EXAMPLE)
import notes  # noqa: E402
from notes.testing import serve  # noqa: E402

TENANTS = [f't{i}' for i in range(6)]
MAX_OPEN = 4       # below the tenant count (the catalog takes one too)
CLIENTS = 8
REQUESTS = 50      # per client


def _request(url, path, **form):
    """(status, body) of a GET, or of a POST of form."""
    data = urllib.parse.urlencode(form).encode() if form else None
    try:
        with urllib.request.urlopen(url + path, data, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _settings(defines, conf='multidb-zeo.conf', **more):
    settings = {'multidb.config': os.path.join(EXAMPLE, 'notes', conf)}
    settings.update({f'multidb.define.{k}': v for k, v in defines.items()})
    settings.update(more)
    return settings


def _command(defines, *args, conf='multidb-zeo.conf'):
    """The argv of the multidb command, as a second process."""
    argv = [sys.executable, '-m', 'multidb.cli', '-C',
            os.path.join(EXAMPLE, 'notes', conf)]
    argv += [f'-D{k}={v}' for k, v in sorted(defines.items())]
    return argv + list(args)


def _in_use(collection):
    busy = {}
    for name in list(collection):
        db = collection.peek(name)
        if db is not None and glue.connections_in_use(db):
            busy[name] = glue.connections_in_use(db)
    return busy


@pytest.fixture
def defines(zeo_server, tmp_path):
    """The %defines of multidb-zeo.conf: the catalog on the ZEO server,
    tenants under tmp_path/data, max-open below the tenant count; the
    tenants made (by the library, as the command does)."""
    from multidb.config import collectionFromFiles
    host, port = zeo_server.address
    d = {'data': str(tmp_path / 'data'), 'zeo': f'{host}:{port}',
         'zeo_storage': 'catalog', 'max_open': str(MAX_OPEN)}
    c = collectionFromFiles([os.path.join(EXAMPLE, 'notes',
                                          'multidb-zeo.conf')], defines=d)
    try:
        for name in TENANTS:
            c.tenants.create(name)
    finally:
        c.close()
    return d


@pytest.mark.slow
def test_threads_and_a_tenant_created_by_another_process(defines, tmp_path):
    app = notes.main({}, **_settings(defines, **{'retry.attempts': '20'}))
    coll = app.registry.multidb
    url, stop = serve(app, threads=4)
    added = {name: [] for name in TENANTS}     # (number, text) per POST
    errors = []
    lock = threading.Lock()
    done = []            # one item per request started
    late_served = threading.Event()

    def client(k):
        try:
            for j in range(REQUESTS):
                if j == REQUESTS - 1:
                    # Each client's last request waits for the tenant
                    # created meanwhile: every client is still running
                    # when the command runs.
                    late_served.wait(120)
                done.append(1)
                name = TENANTS[(k + j) % len(TENANTS)]
                if j % 3 == 0:
                    status, body = _request(url, f'/{name}/notes.json')
                    if status != 200:
                        errors.append((name, status, body))
                        continue
                    got = json.loads(body)
                    if got['tenant'] != name or \
                            got['count'] != len(got['notes']) or \
                            any(not text.startswith(name + ':')
                                for text in got['notes']):
                        errors.append(('crossed', name, got))
                    continue
                text = f'{name}:{k}:{j}'
                status, body = _request(url, f'/{name}/notes', text=text)
                if status != 201:
                    errors.append((name, status, body))
                    continue
                who, _, number, _ = body.split()
                if who != f'{name}:':
                    errors.append(('crossed', name, body))
                with lock:
                    added[name].append((int(number), text))
        except Exception as e:   # pragma: no cover
            errors.append(repr(e))

    try:
        assert _request(url, '/late/notes')[0] == 404
        threads = [threading.Thread(target=client, args=(k,))
                   for k in range(CLIENTS)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(done) < 2 * CLIENTS and time.monotonic() < deadline:
            time.sleep(0.01)
        # While the clients run: the command, in another process, creates
        # a tenant; the application serves it without a restart (once the
        # ZEO server's invalidation has arrived: milliseconds).
        proc = subprocess.run(_command(defines, 'create', 'late'),
                              cwd=str(tmp_path), capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "created tenant 'late'" in proc.stdout
        deadline = time.monotonic() + 10
        while True:
            status, body = _request(url, '/late/notes')
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert (status, body) == (200, 'late: 0 notes\n')
        assert _request(url, '/late/notes', text='late:1') == \
            (201, 'late: note 1 added\n')
        late_served.set()
        for t in threads:
            t.join(240)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        # Every tenant's notes: each POST's number once, 1..n, and its
        # notes exactly the texts posted to it.
        posts = 0
        for name in TENANTS:
            numbers = sorted(n for n, _ in added[name])
            assert numbers == list(range(1, len(numbers) + 1)), name
            status, body = _request(url, f'/{name}/notes.json')
            assert status == 200
            got = json.loads(body)
            assert got['count'] == len(numbers)
            assert sorted(got['notes']) == sorted(t for _, t in added[name])
            posts += len(numbers)
        assert posts == CLIENTS * (REQUESTS - len(range(0, REQUESTS, 3)))
        assert json.loads(_request(url, '/late/notes.json')[1]) == \
            {'tenant': 'late', 'count': 1, 'notes': ['late:1']}
        for path in ('/initech/notes', '/catalog/notes', '/notes'):
            assert _request(url, path)[0] == 404
    finally:
        late_served.set()
        stop()
    try:
        assert _in_use(coll) == {}
        assert len([n for n in coll if coll.is_open(n)]) <= MAX_OPEN
        for name in TENANTS:   # one at a time: max_open is below
            with coll.transaction(transaction.TransactionManager()) as g:
                assert len(g.root(name)['notes']) == len(added[name])
    finally:
        coll.close()


@pytest.mark.slow
def test_development_ini(tmp_path):
    # pserve's way: PasteDeploy reads development.ini (a copy in
    # tmp_path, its %(here)s, where var/ goes); the command, then the
    # app, one process at a time on the FileStorage configuration.
    from pyramid.paster import get_app
    from webob import Request
    with open(os.path.join(EXAMPLE, 'development.ini')) as f:
        ini = f.read().replace('%(here)s/notes/',
                               os.path.join(EXAMPLE, 'notes', ''))
    (tmp_path / 'development.ini').write_text(ini)
    defines = {'data': str(tmp_path / 'var')}
    argv = _command(defines, 'create', 'acme', conf='multidb.conf')
    proc = subprocess.run(argv, cwd=str(tmp_path), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    app = get_app(str(tmp_path / 'development.ini'))
    try:
        resp = Request.blank('/acme/notes', POST={'text': 'x'}
                             ).get_response(app)
        assert (resp.status_int, resp.text) == (201, 'acme: note 1 added\n')
        resp = Request.blank('/acme/notes.json').get_response(app)
        assert resp.json == {'tenant': 'acme', 'count': 1, 'notes': ['x']}
        resp = Request.blank('/acme/notes', POST={'text': ' '}
                             ).get_response(app)
        assert resp.status_int == 400
        assert Request.blank('/other/notes').get_response(app
                                                          ).status_int == 404
        # The FileStorage catalog is this process's: the command, in
        # another, is refused, and says why.
        argv = _command(defines, 'create', 'globex', conf='multidb.conf')
        proc = subprocess.run(argv, cwd=str(tmp_path), capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 1
        assert "database 'catalog' is in use by another process" \
            in proc.stderr
        assert _in_use(app.registry.multidb) == {}
    finally:
        app.registry.multidb.close()
    # The refused command left nothing behind.
    assert not [f for f in os.listdir(tmp_path / 'var' / 'tenants')
                if 'globex' in f]
