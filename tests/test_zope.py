"""multidb.zope: Zope 6 on a collection (``%import multidb`` and one
``<multidb-zope>`` section in zope.conf), served by waitress in a process
of its own, and existing zope.conf files loaded into a collection."""
import http.client
import os
import subprocess
import sys
import textwrap
import threading

import pytest
import ZConfig

from helpers import run_threads

pytest.importorskip('Zope2')
pytest.importorskip('Products.ZODBMountPoint')
pytest.importorskip('waitress')

from multidb.zope import collectionFromZopeConf  # noqa: E402
from multidb.zope import tenant_mount_point  # noqa: E402

TENANTS = ['t0', 't1', 't2', 't3']

# The application's module, importable by the server (its tenants' root
# object, a folder counting hits per key: a Length per key never
# conflicts, an insert of a new key into the OOBTree resolves).
APP = '''
from BTrees.Length import Length
from BTrees.OOBTree import OOBTree
from OFS.Folder import Folder


class TenantApp(Folder):
    """A tenant's application."""

    meta_type = 'Test Tenant App'

    def __init__(self, id=None):
        super().__init__(id)
        self.counters = OOBTree()

    hit__roles__ = None

    def hit(self, key):
        """Count a hit of key; the count."""
        counter = self.counters.get(key)
        if counter is None:
            counter = self.counters[key] = Length()
        counter.change(1)
        return f"{self._p_jar.db().database_name} {counter()}"

    value__roles__ = None

    def value(self, key):
        """The count of key."""
        counter = self.counters.get(key)
        return f"{self._p_jar.db().database_name} {counter() if counter is not None else 0}"
'''

# Zope's WSGI pipeline, as mkwsgiinstance writes it (less its access
# log): 404s and other HTTP errors from Zope's httpexceptions filter.
ZOPE_INI = '''
[app:zope]
use = egg:Zope#main
zope_conf = %(here)s/zope.conf

[pipeline:main]
pipeline =
    egg:Zope#httpexceptions
    zope
'''

# The server: Zope's application loaded from zope.ini (as runwsgi loads
# it) on waitress, on a free loopback port (printed).  Commands on stdin:
# "create NAME" creates a tenant in the server's own process; end of
# input stops the server and closes the collection.
SERVER = '''
import faulthandler
import os
import sys
import threading
if os.environ.get('ZOPE_TEST_DUMP'):
    faulthandler.dump_traceback_later(
        int(os.environ['ZOPE_TEST_DUMP']), exit=False)

import waitress
from paste.deploy import loadapp
from waitress import wasyncore

import multidb.zope

app = loadapp('config:' + sys.argv[1])
server = waitress.create_server(app, host='127.0.0.1', port=0, threads=8)
stop = threading.Event()


def mount(path):
    # What the ZMI's "Add ZODB Mount Points" does, as the system user.
    import transaction
    import Zope2
    from AccessControl.SecurityManagement import newSecurityManager
    from AccessControl.SecurityManagement import noSecurityManager
    from AccessControl.users import system
    from Products.ZODBMountPoint.MountedObject import manage_addMounts
    newSecurityManager(None, system)
    app = Zope2.app()
    try:
        manage_addMounts(app, [path])
        transaction.commit()
    finally:
        transaction.abort()
        app._p_jar.close()
        noSecurityManager()


def commands():
    for line in sys.stdin:
        word, _, name = line.strip().partition(' ')
        if word == 'create':
            multidb.zope.collection().tenants.create(name)
            print('created', name, flush=True)
        elif word == 'mount':
            mount(name)
            print('mounted', name, flush=True)
    stop.set()


threading.Thread(target=commands, daemon=True).start()
print(server.effective_port, flush=True)
while not stop.is_set():
    wasyncore.loop(timeout=0.05, map=server._map, count=1)
server.task_dispatcher.shutdown()
wasyncore.close_all(server._map)
multidb.zope.collection().close()
print('stopped', flush=True)
'''

# max-open below what 8 concurrent requests use (the root database and
# four tenants): a request that finds every database in use gets
# TooManyOpen while mounting, and Zope publishes it again (up to
# max-conflict-retries times).
ZOPE_CONF = '''
%define INSTANCE {folder}
instancehome $INSTANCE
max-conflict-retries 20
%import multidb
<multidb-zope databases>
  max-open 4
  <zodb_db main>
    mount-point /
    <filestorage>
      path $INSTANCE/var/Data.fs
    </filestorage>
  </zodb_db>
  <zodb_db shared>
    mount-point /shared
    container-class zapp.TenantApp
    cache-size 1000
    <filestorage>
      path $INSTANCE/var/shared.fs
    </filestorage>
  </zodb_db>
  <zodb catalog>
    <filestorage>
      path $INSTANCE/var/catalog.fs
    </filestorage>
  </zodb>
  tenant-mount-point /tenants/{{name}}:/{{name}}
  tenant-container-class zapp.TenantApp
  <tenants>
    <filestorage>
      path $INSTANCE/var/tenants/{{name}}.fs
    </filestorage>
  </tenants>
</multidb-zope>
'''


class ZopeServer:
    """The server script in a process of its own."""

    def __init__(self, folder):
        ini = folder / 'zope.ini'
        ini.write_text(ZOPE_INI)
        env = dict(os.environ)
        env['PYTHONPATH'] = os.pathsep.join(
            [str(folder)] + sys.path)
        script = folder / 'server.py'
        script.write_text(SERVER)
        self.log = open(folder / 'server.log', 'w')
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(ini)], cwd=str(folder),
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.log, text=True)
        try:
            self.port = int(self._line(120))
        except BaseException:
            self.kill()
            raise

    def _line(self, timeout):
        # readline() with a timeout: a server that hangs fails the test.
        result = []
        reader = threading.Thread(
            target=lambda: result.append(self.proc.stdout.readline()),
            daemon=True)
        reader.start()
        reader.join(timeout)
        if not result or not result[0]:
            raise AssertionError("the Zope server said nothing")
        return result[0].strip()

    def command(self, word, arg):
        self.proc.stdin.write(f"{word} {arg}\n")
        self.proc.stdin.flush()
        return self._line(60)

    def get(self, path, conn=None):
        own = conn is None
        if own:
            conn = http.client.HTTPConnection('127.0.0.1', self.port,
                                              timeout=60)
        try:
            conn.request('GET', path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode()
        finally:
            if own:
                conn.close()

    def stop(self):
        """End of input: the server stops and closes its collection."""
        self.proc.stdin.close()
        try:
            assert self._line(60) == 'stopped'
            assert self.proc.wait(60) == 0
        finally:
            self.kill()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.log):
            if not stream.closed:
                stream.close()


@pytest.fixture
def instance(tmp_path):
    """A Zope instance folder: zope.conf, the application's module, the
    folders of the storages; the tenants t0 .. t3 created."""
    (tmp_path / 'var' / 'tenants').mkdir(parents=True)
    (tmp_path / 'zapp.py').write_text(APP)
    conf = tmp_path / 'zope.conf'
    conf.write_text(ZOPE_CONF.format(folder=tmp_path))
    c = collectionFromZopeConf(str(conf))
    try:
        for name in TENANTS:
            c.tenants.create(name)
    finally:
        c.close()
    return tmp_path, conf


@pytest.mark.slow
def test_zope_serves_tenants_at_their_mount_points(instance, monkeypatch):
    folder, conf = instance
    server = ZopeServer(folder)
    try:
        # Each tenant's first request makes its application object (a
        # write to its root), one at a time.
        for name in TENANTS:
            assert server.get(f'/tenants/{name}/hit?key=warm') == \
                (200, f'{name} 1')
        counts = {}
        errors = []
        lock = threading.Lock()

        def client(k):
            conn = http.client.HTTPConnection('127.0.0.1', server.port,
                                              timeout=60)
            mine = {name: 0 for name in TENANTS}
            try:
                for j in range(50):
                    name = TENANTS[(k + j) % len(TENANTS)]
                    status, body = server.get(
                        f'/tenants/{name}/hit?key=k{k}', conn)
                    mine[name] += 1
                    if (status, body) != (200, f'{name} {mine[name]}'):
                        with lock:
                            errors.append((name, k, status, body[:300]))
                for name in TENANTS:
                    status, body = server.get(
                        f'/tenants/{name}/value?key=k{k}', conn)
                    if (status, body) != (200, f'{name} {mine[name]}'):
                        with lock:
                            errors.append((name, k, status, body[:300]))
            except Exception as e:
                with lock:
                    errors.append((k, repr(e)))
            finally:
                conn.close()
            with lock:
                counts[k] = mine

        assert run_threads(client, 8, 120) == []
        assert errors == []
        assert sum(sum(m.values()) for m in counts.values()) == 8 * 50

        # A tenant created while the server runs is served at its mount
        # point, without a restart; a name that is no tenant is not.
        assert server.get('/tenants/t4/hit?key=x')[0] == 404
        assert server.command('create', 't4') == 'created t4'
        assert server.get('/tenants/t4/hit?key=x') == (200, 't4 1')
        assert server.get('/tenants/nope/hit?key=x')[0] == 404
        assert server.get('/tenants/manage_main')[0] in (200, 401)
    finally:
        server.stop()
    # TooManyOpen went to Zope's retries, not to MountedObject's log.
    log = (folder / 'server.log').read_text()
    assert 'Failed to mount' not in log
    assert 'Exception while serving' not in log

    # What the server committed, read back from the files.
    monkeypatch.syspath_prepend(str(folder))   # zapp
    c = collectionFromZopeConf(str(conf))
    try:
        for name in TENANTS:
            with c.transaction() as g:
                app = g.root(name)['Application']
                counters = app[name].counters
                assert counters['warm']() == 1
                assert sum(counters[f'k{k}']() for k in range(8)) == \
                    sum(counts[k][name] for k in range(8))
        with c.transaction() as g:
            assert g.root('t4')['Application']['t4'].counters['x']() == 1
            assert 'tenants' in g.root('main')['Application'].objectIds()
    finally:
        c.close()


@pytest.mark.slow
def test_classic_mount_point(instance):
    """A <zodb_db> mounted the classic way: a MountedObject added once
    (the ZMI's "Add ZODB Mount Points") at its mount-point."""
    folder, conf = instance
    server = ZopeServer(folder)
    try:
        assert server.get('/shared/hit?key=x')[0] == 404
        assert server.command('mount', '/shared') == 'mounted /shared'
        assert server.get('/shared/hit?key=x') == (200, 'shared 1')
        assert server.get('/shared/hit?key=x') == (200, 'shared 2')
    finally:
        server.stop()


# The tenants' part of the configuration in a file of its own, included
# by zope.conf and by the configuration of the multidb command; the
# catalog on a ZEO server, so that both processes reach it.
TENANTS_CONF = '''
<zodb catalog>
  <zeoclient>
    server 127.0.0.1:{port}
    storage catalog
  </zeoclient>
</zodb>
<tenants>
  <filestorage>
    path $INSTANCE/var/tenants/{{name}}.fs
  </filestorage>
</tenants>
'''

ZEO_ZOPE_CONF = '''
%define INSTANCE {folder}
instancehome $INSTANCE
%import multidb
<multidb-zope databases>
  <zodburi main>
    uri file://$INSTANCE/var/Data.fs
  </zodburi>
  mount main /
  %include tenants.conf
  tenant-mount-point /tenants/{{name}}:/{{name}}
  tenant-container-class zapp.TenantApp
</multidb-zope>
'''

CLI_CONF = '''
%define INSTANCE {folder}
<multidb>
  %include tenants.conf
</multidb>
'''


@pytest.mark.slow
def test_tenant_created_by_the_command_while_zope_runs(
        tmp_path, zeo_server, capsys):
    from multidb import cli
    (tmp_path / 'var' / 'tenants').mkdir(parents=True)
    (tmp_path / 'zapp.py').write_text(APP)
    (tmp_path / 'tenants.conf').write_text(
        TENANTS_CONF.format(port=zeo_server.port))
    (tmp_path / 'zope.conf').write_text(
        ZEO_ZOPE_CONF.format(folder=tmp_path))
    cli_conf = tmp_path / 'cli.conf'
    cli_conf.write_text(CLI_CONF.format(folder=tmp_path))
    assert cli.main(['-C', str(cli_conf), 'create', 'acme']) == 0
    server = ZopeServer(tmp_path)
    try:
        assert server.get('/tenants/acme/hit?key=k') == (200, 'acme 1')
        assert server.get('/tenants/globex/hit?key=k')[0] == 404
        # Another process (the command, here) creates a tenant: the
        # running Zope serves it at its mount point.
        assert cli.main(['-C', str(cli_conf), 'create', 'globex']) == 0
        errors = []

        def client(k):
            conn = http.client.HTTPConnection('127.0.0.1', server.port,
                                              timeout=60)
            try:
                for j in range(10):
                    name = ('acme', 'globex')[(k + j) % 2]
                    status, body = server.get(
                        f'/tenants/{name}/hit?key=k{k}', conn)
                    if status != 200 or not body.startswith(name + ' '):
                        errors.append((name, status, body[:300]))
            finally:
                conn.close()

        assert run_threads(client, 4, 120) == []
        assert errors == []
        assert server.get('/tenants/globex/value?key=k0') == \
            (200, 'globex 5')
    finally:
        server.stop()
    capsys.readouterr()


# -- an existing zope.conf -----------------------------------------------------

CLASSIC_CONF = '''
%define INSTANCE {folder}
instancehome $INSTANCE
<zodb_db main>
  mount-point /
  cache-size 3000
  <filestorage>
    path $INSTANCE/var/Data.fs
  </filestorage>
</zodb_db>
<zodb_db catalog>
  mount-point /catalog
  mount-point /other/catalog:/catalog
  container-class OFS.Folder.Folder
  pool-size 3
  <filestorage>
    path $INSTANCE/var/catalog.fs
  </filestorage>
</zodb_db>
<zodb_db temporary>
  mount-point /temp_folder
  class-factory test_zope.class_factory
  <mappingstorage>
  </mappingstorage>
</zodb_db>
'''


def class_factory(connection, module, name):
    """The class factory of the database temporary."""
    from ZODB.broken import find_global
    return find_global(module, name)


def test_classic_zope_conf_loads_into_a_collection(tmp_path):
    (tmp_path / 'var').mkdir()
    conf = tmp_path / 'zope.conf'
    conf.write_text(CLASSIC_CONF.format(folder=tmp_path))
    from Zope2.App.ClassFactory import ClassFactory
    c = collectionFromZopeConf(str(conf))
    try:
        assert list(c) == ['main', 'catalog', 'temporary']
        assert c.configuration.files == [str(conf)]
        main = c['main']
        assert main.getCacheSize() == 3000
        assert main.classFactory == ClassFactory   # Zope's default
        assert c['catalog'].getPoolSize() == 3
        assert c['temporary'].classFactory == class_factory
        with c.transaction() as g:
            g.root('main')['x'] = 1
    finally:
        c.close()


def test_classic_zope_conf_with_connection_class(tmp_path):
    (tmp_path / 'var').mkdir()
    conf = tmp_path / 'zope.conf'
    conf.write_text(CLASSIC_CONF.format(folder=tmp_path).replace(
        '  pool-size 3\n',
        '  pool-size 3\n  connection-class ZODB.Connection.Connection\n'))
    with pytest.raises(ZConfig.ConfigurationError,
                       match="'catalog': connection-class is not"):
        collectionFromZopeConf(str(conf))


def _zope_conf(tmp_path, inside, outside=''):
    (tmp_path / 'var').mkdir(exist_ok=True)
    conf = tmp_path / 'zope.conf'
    conf.write_text(textwrap.dedent(f'''
        instancehome {tmp_path}
        %import multidb
        <multidb-zope dbs>
        {textwrap.indent(textwrap.dedent(inside), '  ')}
        </multidb-zope>
        {outside}
        '''))
    return str(conf)


def test_multidb_zope_needs_a_root_mount_point(tmp_path):
    conf = _zope_conf(tmp_path, '''
        <zodb_db main>
          mount-point /main
          <mappingstorage>
          </mappingstorage>
        </zodb_db>''')
    with pytest.raises(ZConfig.ConfigurationError,
                       match="needs Zope's root database"):
        collectionFromZopeConf(conf)


def test_multidb_zope_mount(tmp_path):
    conf = _zope_conf(tmp_path, '''
        <zodburi main>
          uri memory://main
        </zodburi>
        <zodb sessions>
          <mappingstorage>
          </mappingstorage>
        </zodb>
        mount main /
        mount sessions /temp_folder
        mount sessions /other:~root/sessions''')
    from Zope2.Startup.options import ZopeWSGIOptions
    [section] = ZopeWSGIOptions(conf)().configroot.databases
    assert section.mounts == {
        '/': ('main', None, '/', None),
        '/temp_folder': ('sessions', None, '/temp_folder',
                         'OFS.Folder.Folder'),
        '/other': ('sessions', 'root', 'sessions', 'OFS.Folder.Folder'),
    }
    assert section.getVirtualMountPaths() == ['/', '/temp_folder', '/other']
    assert section.getMountParams('/other') == \
        ('root', 'sessions', 'OFS.Folder.Folder')
    section.collection.close()


_MAIN = '''
     <zodb_db main>
       mount-point /
       <mappingstorage>
       </mappingstorage>
     </zodb_db>'''


@pytest.mark.parametrize('inside, message', [
    (_MAIN + '\n     mount main /x\n     mount nope /y',
     "mount nope /y: no database 'nope'"),
    (_MAIN + '\n     mount main /',
     "mount point '/' is given to databases 'main' and 'main'"),
    ('\n     mount main', "give a database name and a mount point"),
    ('\n     mount main x', "must begin with a slash"),
])
def test_multidb_zope_mount_refused(tmp_path, inside, message):
    with pytest.raises(ZConfig.ConfigurationError, match=message):
        collectionFromZopeConf(_zope_conf(tmp_path, inside))


def test_multidb_zope_with_sections_outside(tmp_path):
    conf = _zope_conf(tmp_path, '''
        <zodb_db main>
          mount-point /
          <mappingstorage>
          </mappingstorage>
        </zodb_db>''', '''
        <zodb_db other>
          mount-point /other
          <mappingstorage>
          </mappingstorage>
        </zodb_db>''')
    with pytest.raises(ZConfig.ConfigurationError,
                       match="outside <multidb-zope dbs> must move"):
        collectionFromZopeConf(conf)


def test_multidb_zope_tenant_mount_point_needs_tenants(tmp_path):
    conf = _zope_conf(tmp_path, '''
        tenant-mount-point /tenants/{name}
        <zodb_db main>
          mount-point /
          <mappingstorage>
          </mappingstorage>
        </zodb_db>''')
    with pytest.raises(ZConfig.ConfigurationError,
                       match="tenant-mount-point needs a <tenants>"):
        collectionFromZopeConf(conf)


@pytest.mark.parametrize('value, container, real', [
    ('/tenants/{name}', '/tenants', '/tenants/{name}'),
    ('/a/b/{name}:/{name}', '/a/b', '/{name}'),
    (' /tenants/{name} : /x/{name} ', '/tenants', '/x/{name}'),
])
def test_tenant_mount_point(value, container, real):
    mount = tenant_mount_point(value)
    assert (mount.container, mount.real) == (container, real)
    assert mount.name(f'{container}/acme') == 'acme'
    assert mount.real_path('acme') == real.replace('{name}', 'acme')


@pytest.mark.parametrize('value, message', [
    ('tenants/{name}', 'must begin with a slash'),
    ('/{name}', 'needs a folder above'),
    ('/tenants', 'must end with /{name}'),
    ('/tenants/{name}/x', 'must end with /{name}'),
    ('/{name}/{name}', 'the only placeholder'),
    ('/tenants/{name}:x/{name}', 'must begin with a slash'),
    ('/tenants/{name}:~root/{name}', 'must begin with a slash'),
    ('/tenants/{name}:/~root/{name}', 'a real root'),
])
def test_tenant_mount_point_refused(value, message):
    with pytest.raises(ValueError, match=message.replace('{', '\\{')
                       .replace('}', '\\}')):
        tenant_mount_point(value)


@pytest.mark.parametrize('path', [
    '/tenants', '/tenants/', '/other/acme', '/tenants/Acme',
    '/tenants/acme/x', '/tenants/../acme'])
def test_tenant_mount_point_names_nothing(path):
    assert tenant_mount_point('/tenants/{name}').name(path) is None
