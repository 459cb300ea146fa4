"""The backends of tenants' storages: their registry (the entry-point group
``multidb.backends``), what a ``<tenants>`` template gives them, and the
FileStorage backend's name lock across processes."""
import configparser
import os
import pathlib
import subprocess
import sys
import textwrap
import time
import types

import pytest
import transaction
import ZConfig
from ZODB.FileStorage import FileStorage
from ZODB.FileStorage.FileStorage import FileStorageQuotaError

import multidb
from multidb import backends
from multidb import config as mc
from multidb.backends.filestorage import FileStorageBackend
from multidb.backends.relstorage import RelStorageBackend

TOP = pathlib.Path(__file__).parent.parent


# -- the registry ---------------------------------------------------------------

def test_the_built_in_backends_come_from_the_entry_points():
    assert backends.backend_class('filestorage') is FileStorageBackend
    assert backends.backend_class('relstorage') is RelStorageBackend
    assert {'filestorage', 'relstorage'} <= set(backends.backend_kinds())


def test_setup_cfg_declares_the_built_in_backends():
    cfg = configparser.ConfigParser()
    cfg.read(TOP / 'setup.cfg')
    declared = dict(
        line.split('=', 1) for line in
        cfg['options.entry_points'][backends.ENTRY_POINT_GROUP].split('\n')
        if line.strip())
    declared = {k.strip(): v.strip() for k, v in declared.items()}
    assert declared == {
        'filestorage': 'multidb.backends.filestorage:FileStorageBackend',
        'relstorage': 'multidb.backends.relstorage:RelStorageBackend'}


def test_a_kind_without_backend():
    with pytest.raises(ValueError) as info:
        backends.backend_class('nosuchstorage')
    assert str(info.value).startswith(
        "no backend for the storage kind 'nosuchstorage': tenants are made"
        " by the backends of the entry-point group 'multidb.backends'"
        " (installed: ")


PLUGIN = '''\
import multidb


class MemoryBackend:
    """A backend another package ships: tenants' storages in memory."""

    kind = 'mappingstorage'
    made = []

    @classmethod
    def from_template(cls, template):
        if template.storage.config.name != 'Mapping Storage':
            raise ValueError("the tenants template's mappingstorage cannot"
                             " set name")
        backend = cls()
        cls.made.append((backend, template))
        return backend
'''


def _plugin(tmp_path, monkeypatch, entry_points, name='fakebackend'):
    """A distribution on sys.path that declares entry_points (text of
    entry_points.txt) and ships the module fakebackend."""
    folder = tmp_path / f'site-{name}'
    info = folder / f'{name}-1.0.dist-info'
    info.mkdir(parents=True)
    (info / 'METADATA').write_text(
        f'Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n')
    (info / 'entry_points.txt').write_text(textwrap.dedent(entry_points))
    (folder / f'{name}.py').write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(folder))
    return folder


MEMORY_TEMPLATE = '''
<multidb>
  <zodb catalog>
    <mappingstorage/>
  </zodb>
  <tenants>
    expire-action drop
    <mappingstorage>
      {key}
    </mappingstorage>
  </tenants>
</multidb>
'''


def test_another_package_ships_a_backend(tmp_path, monkeypatch):
    _plugin(tmp_path, monkeypatch, '''
        [multidb.backends]
        mappingstorage = fakebackend:MemoryBackend
    ''')
    import fakebackend
    assert backends.backend_class('mappingstorage') is \
        fakebackend.MemoryBackend
    assert 'mappingstorage' in backends.backend_kinds()
    c = mc.collectionFromString(MEMORY_TEMPLATE.format(key=''))
    try:
        t = c.configuration.tenant_template
        (backend, template), = fakebackend.MemoryBackend.made
        assert t.backend is backend and template is t
        assert c.tenants.backend is backend
    finally:
        c.close()
    # What the backend cannot honour is a configuration error at the
    # <tenants> line, in the backend's words.
    with pytest.raises(ZConfig.ConfigurationError) as info:
        mc.collectionFromString(MEMORY_TEMPLATE.format(key='name other'))
    assert "mappingstorage cannot set name" in str(info.value)
    assert info.value.lineno == 6


def test_two_backends_of_one_kind(tmp_path, monkeypatch):
    _plugin(tmp_path, monkeypatch, '''
        [multidb.backends]
        filestorage = fakebackend:MemoryBackend
    ''')
    with pytest.raises(ValueError) as info:
        backends.backend_class('filestorage')
    assert str(info.value) == (
        "two backends for the storage kind 'filestorage' in the entry-point"
        " group 'multidb.backends': fakebackend:MemoryBackend and"
        " multidb.backends.filestorage:FileStorageBackend")


# -- what a <tenants> template gives the FileStorage backend ------------------

FS_TEMPLATE = '''
<multidb>
  <zodb catalog>
    <mappingstorage/>
  </zodb>
  <tenants>
    expire-action drop
    <filestorage>
      path {data}/tenants/{{name}}.fs
      {keys}
    </filestorage>
  </tenants>
</multidb>
'''

PACKED = []


def recording_packer(storage, referencesf, stop, gc):
    """A packer for the packer key: records, then packs as FileStorage's
    own."""
    PACKED.append((storage.getName(), gc))
    return FileStorage.packer(storage, referencesf, stop, gc)


def _fs_collection(tmp_path, keys):
    return mc.collectionFromString(
        FS_TEMPLATE.format(data=tmp_path, keys=textwrap.dedent(keys)))


def test_every_filestorage_key_reaches_the_tenants_storage(tmp_path):
    c = _fs_collection(tmp_path, '''
        quota 200KB
        pack-gc false
        pack-keep-old false
        packer test_backends.recording_packer
    ''')
    try:
        backend = c.configuration.tenant_template.backend
        assert backend.storage_options == {
            'quota': 200 * 1024, 'pack_gc': False, 'pack_keep_old': False,
            'packer': 'test_backends.recording_packer'}
        c.tenants.create('acme')
        storage = c['acme'].storage
        assert storage._quota == 200 * 1024
        assert storage._pack_gc is False
        assert storage.pack_keep_old is False
        assert storage.packer is recording_packer
        for i in range(3):
            with c.transaction() as group:
                group.root('acme')['x'] = i
        del PACKED[:]
        c['acme'].pack()
        path = str(tmp_path / 'tenants' / 'acme.fs')
        assert PACKED == [(path, False)]
        assert not os.path.exists(path + '.old')   # pack-keep-old false
        # (FileStorage checks where a record starts: the one that
        # crosses the quota is written, the next refused.)
        with c.transaction() as group:
            group.root('acme')['big'] = b'x' * (300 * 1024)
        with pytest.raises(FileStorageQuotaError):
            with c.transaction() as group:
                group.root('acme')['more'] = 1
    finally:
        transaction.abort()
        c.close()


def test_filestorage_defaults(tmp_path):
    c = _fs_collection(tmp_path, '')
    try:
        assert c.configuration.tenant_template.backend.storage_options == {
            'pack_gc': True, 'pack_keep_old': True}
    finally:
        c.close()


def test_a_packer_that_cannot_be_imported_fails_at_open(tmp_path):
    c = _fs_collection(tmp_path, 'packer no_such_module.packer')
    try:
        with pytest.raises(ImportError, match='no_such_module'):
            c.tenants.create('acme')
        assert c.tenants.list() == []
    finally:
        c.close()


def _section(**values):
    # A <filestorage> section as ZConfig gives it: its keys as attributes.
    section = types.SimpleNamespace(**values)
    section.getSectionAttributes = lambda: list(values)
    return types.SimpleNamespace(
        storage=types.SimpleNamespace(config=section))


def test_a_filestorage_key_the_backend_does_not_know_is_refused():
    # A key a later ZODB may add to <filestorage> is an error naming it,
    # never dropped.
    template = _section(path='/srv/{name}.fs', pack_gc=True,
                        compress_level=3)
    with pytest.raises(ValueError) as info:
        FileStorageBackend.from_template(template)
    assert str(info.value).startswith(
        "the tenants template's filestorage key compress-level is not"
        " supported by FileStorageBackend")
    # Unset, it is no matter.
    backend = FileStorageBackend.from_template(
        _section(path='/srv/{name}.fs', compress_level=None,
                 blob_dir=None, read_only=False))
    assert backend.storage_options == {}


# -- the name lock across processes --------------------------------------------
# Two processes share a catalog on ZEO and FileStorage tenants in one
# folder.  The first stops (MULTIDB_PAUSE_AT) in the middle of an operation
# on a name, holding its lock; the second, on the same name, must wait:
# without the lock it would fail at once (no such tenant, exists already)
# or work on the first one's half-made state.

SHARED = '''\
import sys, multidb
from ZEO.ClientStorage import ClientStorage
folder, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = multidb.Collection()
c.declare('catalog', lambda: ClientStorage((host, port), storage='catalog',
                                           wait_timeout=30))
t = multidb.Tenants(c, catalog='catalog',
                    backend=multidb.FileStorageBackend(
                        folder + '/tenants/{name}.fs'))
'''

OPS = {
    'create': "t.create('acme', init=lambda root: root.update(v='new'))",
    'drop': "t.drop('acme')",
    'revert': "t.revert('acme', t.get('acme').snapshots[0].id)",
}

# (first operation, where it stops, second operation, what is left).
RACES = [
    ('create', 'create.storage-made', 'drop', None),
    ('drop', 'drop.closed', 'create', 'new'),
    ('revert', 'revert.copied', 'drop', None),
    ('drop', 'drop.closed', 'drop', 'no such tenant'),
]


def _opener(server, folder):
    from ZEO.ClientStorage import ClientStorage
    c = multidb.Collection()
    c.declare('catalog', lambda: ClientStorage(
        server.address, storage='catalog', wait_timeout=30))
    t = multidb.Tenants(c, catalog='catalog', backend=FileStorageBackend(
        str(folder / 'tenants' / '{name}.fs')))
    return c, t


@pytest.mark.parametrize('first, step, second, left', RACES,
                         ids=[f'{a}-then-{b}' for a, _, b, _ in RACES])
def test_operations_on_one_name_take_turns_across_processes(
        tmp_path, zeo_server, first, step, second, left):
    c, t = _opener(zeo_server, tmp_path)
    try:
        if first != 'create':
            t.create('acme', init=lambda root: root.update(v='old'))
            t.snapshot('acme', 'before')
    finally:
        c.close()
    host, port = zeo_server.address
    argv = [str(tmp_path), host, str(port)]
    env = dict(os.environ)
    env.pop('MULTIDB_CRASH_AT', None)
    env.pop('MULTIDB_PAUSE_AT', None)
    procs = []

    def start(op, **more):
        proc = subprocess.Popen(
            [sys.executable, '-c', SHARED + OPS[op] + "\nprint('done')"]
            + argv, env=dict(env, **more), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        return proc

    backend = FileStorageBackend(str(tmp_path / 'tenants' / '{name}.fs'))
    lock = str(tmp_path / 'tenants' / '.acme.fs.multidb-lock')
    try:
        one = start(first, MULTIDB_PAUSE_AT=step)
        assert one.stdout.readline() == f'PAUSED {step}\n', \
            one.stderr.read()
        # The first holds the lock file beside the tenant's file.
        assert (('acme', lock) in backend.stray_files()
                and backend.stray_in_use(lock))
        two = start(second)
        time.sleep(2)
        # Still waiting for the name, having done nothing.
        assert two.poll() is None, two.communicate()
        one.stdin.write('\n')
        one.stdin.flush()
        out, err = one.communicate(timeout=60)
        assert (one.returncode, out) == (0, 'done\n'), err
        out, err = two.communicate(timeout=60)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if left == 'no such tenant':
        # The second drop came after the first: nothing left to drop.
        assert two.returncode == 1 and 'NoSuchTenant' in err, err
    else:
        assert (two.returncode, out) == (0, 'done\n'), err
    assert not os.path.exists(lock)   # released, and gone
    c, t = _opener(zeo_server, tmp_path)
    try:
        names = [r.name for r in t.list()]
        if left is None or left == 'no such tenant':
            assert names == []
            assert not (tmp_path / 'tenants' / 'acme.fs').exists()
        else:
            assert names == ['acme']
            with c.transaction() as group:
                assert group.root('acme')['v'] == left
        assert t.repair() == []
    finally:
        c.close()


def test_name_lock_waits_for_another_process(tmp_path):
    # The lock itself, without a catalog: a process holding a name's lock
    # makes another wait for it, and a name's lock leaves the others
    # alone.
    path = str(tmp_path / 'tenants' / '{name}.fs')
    holder = subprocess.Popen(
        [sys.executable, '-c', textwrap.dedent(f'''\
            import sys, multidb
            b = multidb.FileStorageBackend({path!r})
            with b.name_lock('acme'):
                print('held', flush=True)
                sys.stdin.readline()
            ''')], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    waiter = None
    try:
        assert holder.stdout.readline() == 'held\n'
        backend = FileStorageBackend(path)
        with backend.name_lock('globex'):
            pass   # another name: no wait
        waiter = subprocess.Popen(
            [sys.executable, '-c', textwrap.dedent(f'''\
                import time, multidb
                b = multidb.FileStorageBackend({path!r})
                with b.name_lock('acme'):
                    print('got it', time.time(), flush=True)
                ''')], stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)
        assert waiter.poll() is None
        released = time.time()
        holder.stdin.write('\n')
        holder.stdin.flush()
        out, _ = waiter.communicate(timeout=30)
        assert out.startswith('got it ')
        assert float(out.split()[2]) >= released
    finally:
        for proc in (holder, waiter):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
