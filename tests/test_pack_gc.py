"""Tenants.pack / ``multidb pack`` (never garbage collection: the pack-gc
trap) and ``multidb gc`` (garbage collection across databases, with
zc.zodbdgc)."""
import functools
import json
import os
import time
import uuid

import pytest
import ZODB
from persistent.mapping import PersistentMapping
from ZODB.FileStorage import FileStorage
from ZODB.POSException import POSKeyError
from ZODB.serialize import referencesf

import multidb
from helpers import fs_tenants
from helpers import run_cli
from helpers import update_root
from multidb.errors import DatabaseLocked
from multidb.errors import InvalidInput
from multidb.errors import NoSuchTenant
from multidb.exporting import collect_garbage

pytestmark = pytest.mark.slow


def _churn(where, name, times=20):
    """Commit times revisions of one object of tenant name: history for a
    pack to drop."""
    for i in range(times):
        update_root(where, name, counter=i, blob='x' * 2000)


def _link(coll, source, target, key):
    """A new object in database target, referenced only from the root of
    database source (a cross-database reference); its oid."""
    with coll.transaction() as g:
        thing = PersistentMapping(where=target)
        g.get_connection(target).add(thing)
        g.root(source)[key] = thing
    return thing._p_oid


@pytest.fixture
def made(tmp_path):
    c, t = fs_tenants(tmp_path)
    yield c, t
    c.close()


def test_pack_reclaims_old_revisions(made):
    c, t = made
    t.create('acme')
    _churn(t, 'acme')
    result, = t.pack()
    assert result.name == 'acme' and result.error is None
    assert result.after < result.before
    assert result.reclaimed == result.before - result.after > 20 * 2000
    with c.transaction() as g:
        assert g.root('acme')['counter'] == 19
    assert result.to_json()['reclaimed'] == result.reclaimed


def test_pack_keeps_objects_only_another_database_references(tmp_path):
    # The trap: packing acme with garbage collection (FileStorage's
    # default, and the template's pack-gc true here) deletes an object
    # of acme that only the shared database references.  Tenants.pack
    # never collects.
    c = multidb.Collection()
    c.declare('catalog', functools.partial(
        FileStorage, str(tmp_path / 'catalog.fs')))
    c.declare('shared', functools.partial(
        FileStorage, str(tmp_path / 'shared.fs')))
    t = multidb.Tenants(c, catalog='catalog', backend=multidb
                        .FileStorageBackend(str(tmp_path / '{name}.fs'),
                                            pack_gc=True))
    try:
        t.create('acme')
        t.create('bravo')
        oid = _link(c, 'shared', 'acme', 'from_acme')
        _churn(t, 'acme')
        results = t.pack(days=0)
        assert [r.error for r in results] == [None, None]
        assert results[0].reclaimed > 0
        path = t.get('acme').settings['path']
    finally:
        c.close()
    # Read again from the files: the object survived, the reference
    # resolves.
    c = multidb.Collection()
    for name in ('shared', 'acme'):
        c.declare(name, functools.partial(
            FileStorage, str(tmp_path / f'{name}.fs')))
    try:
        with c.transaction() as g:
            assert g.root('shared')['from_acme']['where'] == 'acme'
    finally:
        c.close()
    # What a pack with garbage collection would have done: the object
    # goes, and the shared database's reference dangles.
    db = ZODB.DB(FileStorage(path))
    try:
        db.storage.load(oid)
        # (A change first: a second pack with none since is a no-op.)
        with db.transaction() as conn:
            conn.root()['after'] = 1
        time.sleep(0.01)
        db.storage.pack(time.time(), referencesf, gc=True)
        with pytest.raises(POSKeyError):
            db.storage.load(oid)
    finally:
        db.close()


def test_pack_in_parallel(made):
    c, t = made
    names = [f't{i}' for i in range(6)]
    for name in names:
        t.create(name)
        _churn(t, name, times=5)
    results = t.pack(jobs=3)
    assert [r.name for r in results] == names
    assert all(r.error is None and r.reclaimed > 0 for r in results)
    # Only some of them.
    assert [r.name for r in t.pack(['t3', 't1'], jobs=2)] == ['t1', 't3']


def test_pack_unknown_tenant_packs_nothing(made):
    c, t = made
    t.create('acme')
    _churn(t, 'acme')
    size = os.path.getsize(t.get('acme').settings['path'])
    with pytest.raises(NoSuchTenant, match="no tenant 'nope'"):
        t.pack(['acme', 'nope'])
    assert os.path.getsize(t.get('acme').settings['path']) == size


@pytest.mark.parametrize('kw, message', [
    (dict(days=-1), "bad number of days -1: must be 0 or more"),
    (dict(days='soon'), "bad number of days 'soon': not a number"),
    (dict(days=float('nan')), "bad number of days nan"),
    (dict(jobs=0), "bad number of jobs 0"),
    (dict(jobs=1.5), "bad number of jobs 1.5"),
])
def test_pack_bad_arguments(made, kw, message):
    c, t = made
    with pytest.raises(InvalidInput, match=message):
        t.pack(**kw)


def test_pack_failure_is_reported_per_tenant(made):
    c, t = made
    t.create('acme')
    t.create('bravo')
    _churn(t, 'bravo', times=3)
    c.remove('acme')
    os.unlink(t.get('acme').settings['path'])
    acme, bravo = t.pack()
    assert acme.error.startswith('MissingStorage: tenant')
    assert acme.reclaimed is None
    assert bravo.error is None and bravo.reclaimed > 0


# -- the commands -------------------------------------------------------------

CONFIG = """
%define data ./data
<multidb>
  <zodb main>
    <filestorage>
      path $data/main.fs
    </filestorage>
  </zodb>
  <zodb catalog>
    <filestorage>
      path $data/catalog.fs
    </filestorage>
  </zodb>
  <tenants>
    catalog catalog
    <filestorage>
      path $data/tenants/{name}.fs
    </filestorage>
  </tenants>
</multidb>
"""


@pytest.fixture
def conf(tmp_path, data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / 'app.conf'
    path.write_text(CONFIG)
    return path


def test_pack_command(conf, capsys):
    from multidb.config import collectionFromFile
    coll = collectionFromFile(str(conf))
    try:
        coll.tenants.create('acme')
        coll.tenants.create('bravo')
        oid = _link(coll, 'main', 'acme', 'shared')
        _churn(coll, 'acme')
    finally:
        coll.close()
    code, out, err = run_cli(capsys, 'pack', '-j', '2', config=conf)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ['NAME', 'BEFORE', 'AFTER', 'RECLAIMED',
                                'RESULT']
    assert [line.split()[0] for line in lines[1:3]] == ['acme', 'bravo']
    assert lines[-1].startswith('2 packed, 0 failed, ')
    assert "no garbage collection: see 'multidb gc'" in lines[-1]
    code, out, err = run_cli(capsys, '--json', 'pack', 'acme', '--days',
                             '0.5', config=conf)
    assert code == 0, err
    assert [r['name'] for r in json.loads(out)] == ['acme']
    coll = collectionFromFile(str(conf))
    try:
        with coll.transaction() as g:
            thing = g.root('main')['shared']
            assert thing._p_oid == oid and thing['where'] == 'acme'
    finally:
        coll.close()


@pytest.mark.parametrize('argv, code, message', [
    (('pack', '--days', '-2'), 2, "bad number of days '-2'"),
    (('pack', '--days', 'x'), 2, "bad number of days 'x': not a number"),
    (('pack', '-j', '0'), 2, "bad number of jobs 0"),
    (('pack', '-j', 'many'), 2, "bad number of jobs 'many'"),
    (('pack', 'nope'), 1, "no tenant 'nope'"),
    (('gc', '--days', '-1'), 2, "bad number of days '-1'"),
])
def test_bad_input(conf, capsys, argv, code, message):
    got, out, err = run_cli(capsys, *argv, config=conf)
    assert got == code, err
    assert err.startswith('multidb: error:') and message in err


def _gc_setup(conf):
    """acme holds kept (only main references it) and lost (nobody
    does any more), and is packed (the old revision of its root that
    referenced lost is gone: zc.zodbdgc follows every revision it
    reads); their oids."""
    from multidb.config import collectionFromFile
    coll = collectionFromFile(str(conf))
    try:
        coll.tenants.create('acme')
        kept = _link(coll, 'main', 'acme', 'kept')
        lost = _link(coll, 'acme', 'acme', 'lost')
        with coll.transaction() as g:
            del g.root('acme')['lost']
        time.sleep(0.01)   # every transaction is older than "now"
        assert coll.tenants.pack()[0].error is None
        path = coll.tenants.get('acme').settings['path']
    finally:
        coll.close()
    time.sleep(0.01)
    return path, kept, lost


def _loads(path, oid):
    fs = FileStorage(path, read_only=True)
    try:
        fs.load(oid)
        return True
    except POSKeyError:
        return False
    finally:
        fs.close()


def test_gc_across_databases(conf):
    path, kept, lost = _gc_setup(conf)
    assert _loads(path, kept) and _loads(path, lost)
    result = collect_garbage([str(conf)], days=0)
    assert result.deleted == {'main': 0, 'catalog': 0, 'acme': 1}
    assert result.total == 1
    # Reachable only from main: kept.  Reachable from nowhere: gone.
    assert _loads(path, kept)
    assert not _loads(path, lost)


def test_gc_keeps_recent_objects(conf):
    path, kept, lost = _gc_setup(conf)
    assert collect_garbage([str(conf)], days=1).total == 0
    assert _loads(path, lost)


def test_gc_command_then_pack(conf, capsys):
    path, kept, lost = _gc_setup(conf)
    code, out, err = run_cli(capsys, 'gc', '--days', '0', config=conf)
    assert code == 0, err
    assert out.splitlines() == [
        'DATABASE  DELETED', 'acme      1',
        "1 objects deleted in 3 databases; 'multidb pack' reclaims their"
        " space"]
    code, out, err = run_cli(capsys, '--json', 'pack', config=conf)
    assert code == 0, err
    assert json.loads(out)[0]['reclaimed'] > 0
    assert _loads(path, kept) and not _loads(path, lost)


def test_gc_refuses_a_database_in_use(conf, tmp_path):
    # A FileStorage serves one process: gc cannot run beside it.
    path, kept, lost = _gc_setup(conf)
    fs = FileStorage(path)
    try:
        with pytest.raises(DatabaseLocked, match=f"database '{path}' is in"
                                                 f" use by another process"):
            collect_garbage([str(conf)], days=0)
    finally:
        fs.close()
    assert _loads(path, lost)


# -- PostgreSQL ---------------------------------------------------------------

def test_pack_on_postgresql_keeps_cross_database_objects(postgres, tmp_path):
    from multidb.backends.relstorage import RelStorageBackend
    prefix = 't' + uuid.uuid4().hex[:6] + '_'
    # History-preserving, and RelStorage's own pack-gc default (true).
    backend = RelStorageBackend(postgres.dsn(prefix + '{name}'),
                                template=prefix + 'template',
                                snapshot_dir=str(tmp_path / 'snapshots'),
                                keep_history=True)
    c = multidb.Collection()
    c.declare('catalog', functools.partial(
        FileStorage, str(tmp_path / 'catalog.fs')))
    c.declare('shared', functools.partial(
        FileStorage, str(tmp_path / 'shared.fs')))
    t = multidb.Tenants(c, catalog='catalog', backend=backend)
    try:
        t.create('acme')
        t.create('bravo')
        oid = _link(c, 'shared', 'acme', 'from_acme')
        _churn(t, 'acme', times=5)
        full = t.stats(['acme'], full=True)[0]
        acme, bravo = t.pack(jobs=2)
        assert acme.error is None and bravo.error is None
        assert acme.before is not None and acme.after is not None
        # Read from the database by a storage of its own: not a cache.
        storage = backend.factory(t.get('acme').settings)()
        try:
            storage.load(oid)
        finally:
            storage.close()
        with c.transaction() as g:
            assert g.root('shared')['from_acme']['where'] == 'acme'
            assert g.root('acme')['counter'] == 4
        assert t.stats(['acme'], full=True)[0].objects == full.objects
    finally:
        c.close()
        postgres.drop_databases(prefix)


PG_CONFIG = """
%import relstorage
<multidb>
  <zodb main>
    <filestorage>
      path $data/main.fs
    </filestorage>
  </zodb>
  <zodb catalog>
    <filestorage>
      path $data/catalog.fs
    </filestorage>
  </zodb>
  <tenants>
    snapshot-dir $data/snapshots
    template-database ${prefix}template
    <relstorage>
      keep-history $history
      <postgresql>
        dsn $server dbname=$prefix{name}
      </postgresql>
    </relstorage>
  </tenants>
</multidb>
"""


@pytest.mark.parametrize('history', ['false', 'true'])
def test_gc_on_postgresql(postgres, tmp_path, data, monkeypatch, history):
    from multidb.config import collectionFromFile
    monkeypatch.chdir(tmp_path)
    prefix = 'g' + uuid.uuid4().hex[:6] + '_'
    conf = tmp_path / 'pg.conf'
    conf.write_text(PG_CONFIG)
    defines = {'server': f'host=127.0.0.1 port={postgres.port}'
                         f' user=postgres',
               'prefix': prefix, 'data': str(data), 'history': history}
    try:
        coll = collectionFromFile(str(conf), defines=defines)
        try:
            coll.tenants.create('acme')
            kept = _link(coll, 'main', 'acme', 'kept')
            lost = _link(coll, 'acme', 'acme', 'lost')
            with coll.transaction() as g:
                del g.root('acme')['lost']
            time.sleep(0.01)
            assert coll.tenants.pack()[0].error is None
            settings = coll.tenants.get('acme').settings
            backend = coll.tenants.backend
        finally:
            coll.close()
        time.sleep(0.01)
        result = collect_garbage([str(conf)], defines=defines, days=0)
        assert result.deleted == {'main': 0, 'catalog': 0, 'acme': 1}
        storage = backend.factory(settings)()
        try:
            storage.load(kept)
            with pytest.raises(POSKeyError):
                storage.load(lost)
        finally:
            storage.close()
    finally:
        postgres.drop_databases(prefix)


def test_pack_progress_and_jobs_bounded_by_max_open(tmp_path):
    c = multidb.Collection(max_open=3)
    c.declare('catalog', functools.partial(
        FileStorage, str(tmp_path / 'catalog.fs')))
    t = multidb.Tenants(c, catalog='catalog', backend=multidb
                        .FileStorageBackend(str(tmp_path / '{name}.fs')))
    try:
        for name in ('a', 'b', 'c', 'd'):
            t.create(name)
            _churn(t, name, times=3)
        done = []
        results = t.pack(jobs=8, progress=done.append)
        assert done == [1, 1, 1, 1]
        assert [r.error for r in results] == [None] * 4
    finally:
        c.close()


def test_pack_waits_for_a_lifecycle_operation_on_the_name(made):
    # A revert or restore replaces the data: pack takes the name's lock.
    import threading
    c, t = made
    t.create('acme')
    held = threading.Event()
    release = threading.Event()

    def operation():
        with t._hold('acme'):
            held.set()
            release.wait(10)
    thread = threading.Thread(target=operation)
    thread.start()
    try:
        held.wait(10)
        timer = threading.Timer(0.3, release.set)
        timer.start()
        start = time.monotonic()
        result, = t.pack()
        assert time.monotonic() - start >= 0.25
        assert result.error is None
    finally:
        release.set()
        thread.join(10)


def test_pack_command_fails_when_a_tenant_fails(conf, capsys):
    assert run_cli(capsys, 'create', 'acme', config=conf)[0] == 0
    assert run_cli(capsys, 'create', 'bravo', config=conf)[0] == 0
    os.unlink('data/tenants/acme.fs')
    code, out, err = run_cli(capsys, 'pack', config=conf)
    assert code == 1
    lines = out.splitlines()
    assert lines[1].startswith('acme') and 'MissingStorage' in lines[1]
    assert lines[2].split()[-1] == 'packed'
    assert lines[-1].startswith('1 packed, 1 failed')
    code, out, err = run_cli(capsys, '--json', 'gc', '--days', '0',
                             config=conf)
    assert code == 1 and 'acme.fs' in err and 'MissingStorage' not in err
    assert "tenant 'acme' is in the catalog but its storage is missing" \
        in err
    # Not made empty by the run.
    assert not os.path.exists('data/tenants/acme.fs')
