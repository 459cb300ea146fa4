import datetime
import functools
import os

import pytest
import transaction
from ZODB.FileStorage import FileStorage
from zope.interface.verify import verifyObject

import multidb
from helpers import fs_tenants
from helpers import root_dict
from helpers import update_root
from multidb.interfaces import ITenants

UTC = datetime.timezone.utc


def init_orders(root):
    root['orders'] = []


def _make(tmp_path, **kw):
    c, t = fs_tenants(tmp_path, **kw)
    c.declare('main', functools.partial(FileStorage,
                                        str(tmp_path / 'main.fs')))
    return c, t


@pytest.fixture
def tenants(tmp_path):
    c, t = _make(tmp_path)
    yield t
    c.close()


_root = root_dict
_set = update_root


def test_verify(tenants):
    verifyObject(ITenants, tenants)
    assert tenants.collection.tenants is tenants


def test_backends_verify():
    from multidb.backends.relstorage import RelStorageBackend
    from multidb.interfaces import IBackend
    verifyObject(IBackend, multidb.FileStorageBackend('/srv/{name}.fs'))
    verifyObject(IBackend, RelStorageBackend('host=db dbname=t_{name}'))


def test_no_tenants_configured():
    with multidb.Collection() as c:
        with pytest.raises(multidb.NotConfigured, match='no tenants'):
            c.tenants


def test_create_runs_init_and_commits_record(tenants, tmp_path):
    rec = tenants.create('acme', init=init_orders, labels={'plan': 'gold'},
                         expires=datetime.timedelta(days=3))
    assert rec.name == 'acme' and rec.state == 'active'
    assert rec.labels == {'plan': 'gold'}
    assert rec.expires - rec.created == datetime.timedelta(days=3)
    assert rec.settings['path'] == str(tmp_path / 'tenants' / 'acme.fs')
    assert _root(tenants, 'acme') == {'orders': []}
    assert tenants.get('acme') == rec
    assert [r.name for r in tenants.list()] == ['acme']
    assert 'acme' in tenants.collection


def test_create_w_dotted_init(tmp_path):
    c, t = _make(tmp_path, init='test_tenants.init_orders')
    try:
        t.create('acme')
        assert _root(t, 'acme') == {'orders': []}
        with pytest.raises(multidb.InvalidInput,
                           match="dotted name 'no_such_module.init': cannot"
                                 " import it: No module named"):
            t.create('beta', init='no_such_module.init')
        assert 'beta' not in t
    finally:
        c.close()


def test_create_existing(tenants):
    tenants.create('acme')
    _set(tenants, 'acme', x=1)
    with pytest.raises(multidb.TenantExists, match="'acme'"):
        tenants.create('acme')
    assert _root(tenants, 'acme') == {'x': 1}


@pytest.mark.parametrize('name', ['../evil', 'a b', 'Acme', '', 'x"; --'])
def test_create_bad_name_touches_nothing(tenants, tmp_path, name):
    with pytest.raises(multidb.InvalidName):
        tenants.create(name)
    assert not (tmp_path / 'tenants').exists()
    assert tenants.list() == []


@pytest.mark.parametrize('name', ['catalog', 'main'])
def test_create_reserved_name(tenants, name):
    with pytest.raises(multidb.InvalidName, match='reserved'):
        tenants.create(name)


def test_create_failing_init_leaves_nothing(tenants, tmp_path):
    def init(root):
        root['half'] = True
        raise RuntimeError('init failed')
    with pytest.raises(RuntimeError, match='init failed'):
        tenants.create('acme', init=init)
    assert 'acme' not in tenants and 'acme' not in tenants.collection
    assert not (tmp_path / 'tenants' / 'acme.fs').exists()
    tenants.create('acme')  # and the name is free
    assert _root(tenants, 'acme') == {}


def test_create_bad_arguments(tenants):
    with pytest.raises(multidb.InvalidInput, match="bad expiry 'tomorrow'"):
        tenants.create('acme', expires='tomorrow')
    with pytest.raises(TypeError, match='expires'):
        tenants.create('acme', expires=['2030-01-31'])
    with pytest.raises(ValueError, match="bad label '=x'"):
        tenants.create('acme', labels={'': 'x'})
    assert tenants.list() == []


def test_clone(tenants):
    tenants.create('tpl', init=init_orders, labels={'kind': 'template'})
    _set(tenants, 'tpl', orders=[1, 2])
    g = tenants.collection.group(transaction.TransactionManager())
    g.root('tpl')['pending'] = True   # in use, uncommitted: not copied
    rec = tenants.clone('tpl', 'acme')
    g.transaction_manager.abort()
    g.close()
    assert rec.labels == {'kind': 'template'}
    assert _root(tenants, 'acme') == {'orders': [1, 2]}
    _set(tenants, 'acme', orders=[9])
    assert _root(tenants, 'tpl') == {'orders': [1, 2]}
    with pytest.raises(multidb.TenantExists):
        tenants.clone('tpl', 'acme')
    with pytest.raises(multidb.NoSuchTenant):
        tenants.clone('nope', 'other')
    assert 'other' not in tenants


def test_drop(tenants, tmp_path):
    tenants.create('acme')
    _set(tenants, 'acme', x=1)
    tenants.snapshot('acme')
    tenants.drop('acme')
    assert 'acme' not in tenants and 'acme' not in tenants.collection
    assert os.listdir(tmp_path / 'tenants') == []
    with pytest.raises(multidb.NoSuchTenant, match="no tenant 'acme'"):
        tenants.drop('acme')
    with pytest.raises(KeyError):
        tenants.get('acme')


def test_drop_in_use_changes_nothing(tenants):
    tenants.create('acme')
    tenants.create('beta')
    tm = transaction.TransactionManager()
    g = tenants.collection.group(tm)
    g.root('beta')['x'] = 1
    g.root('acme')
    with pytest.raises(multidb.DatabaseInUse):
        tenants.drop('acme')
    assert 'acme' in tenants
    tm.commit()
    g.close()
    tenants.drop('acme')
    assert _root(tenants, 'beta') == {'x': 1}


def test_drop_while_group_uses_other_tenants(tenants):
    tenants.create('acme')
    tenants.create('beta')
    tm = transaction.TransactionManager()
    g = tenants.collection.group(tm)
    g.root('beta')['x'] = 1
    tenants.drop('acme')
    tm.commit()
    g.close()
    assert _root(tenants, 'beta') == {'x': 1}


def test_drop_w_archive_then_restore(tenants, tmp_path):
    tenants.create('acme', labels=['vip'])
    _set(tenants, 'acme', x=1)
    arc = tmp_path / 'acme.multidb'
    tenants.drop('acme', archive_to=arc)
    assert arc.exists() and 'acme' not in tenants
    rec = tenants.restore(arc, trust_unsigned=True)
    assert rec.name == 'acme' and rec.labels == {'vip': ''}
    assert _root(tenants, 'acme') == {'x': 1}


def test_drop_w_archive_to_existing_file_keeps_tenant(tenants, tmp_path):
    tenants.create('acme')
    arc = tmp_path / 'taken'
    arc.write_bytes(b'mine')
    with pytest.raises(multidb.ArchiveExists):
        tenants.drop('acme', archive_to=arc)
    assert 'acme' in tenants and arc.read_bytes() == b'mine'


def test_snapshot_and_revert(tenants):
    tenants.create('acme')
    _set(tenants, 'acme', v=1)
    s1 = tenants.snapshot('acme', 'v1')
    _set(tenants, 'acme', v=2)
    snaps = tenants.snapshots('acme')
    assert [s.id for s in snaps] == [s1] and snaps[0].label == 'v1'
    before = tenants.revert('acme', s1)
    assert _root(tenants, 'acme') == {'v': 1}
    # the revert itself can be undone
    tenants.revert('acme', before)
    assert _root(tenants, 'acme') == {'v': 2}
    labels = [s.label for s in tenants.snapshots('acme')]
    assert labels[:2] == ['v1', f'before revert to {s1}']
    with pytest.raises(multidb.NoSuchSnapshot, match="no snapshot 'x'"):
        tenants.revert('acme', 'x')


def test_snapshot_while_in_use_is_consistent(tenants):
    tenants.create('acme')
    _set(tenants, 'acme', v=1)
    tm = transaction.TransactionManager()
    g = tenants.collection.group(tm)
    g.root('acme')['v'] = 'uncommitted'
    sid = tenants.snapshot('acme')
    tm.commit()
    g.close()
    tenants.revert('acme', sid)
    assert _root(tenants, 'acme') == {'v': 1}


def test_revert_in_use_refused(tenants):
    tenants.create('acme')
    sid = tenants.snapshot('acme')
    g = tenants.collection.group(transaction.TransactionManager())
    g.root('acme')
    with pytest.raises(multidb.DatabaseInUse):
        tenants.revert('acme', sid)
    g.close()
    assert len(tenants.snapshots('acme')) == 1


def test_archive_and_restore_under_new_name(tenants, tmp_path):
    tenants.create('acme', init=init_orders)
    arc = tmp_path / 'a.multidb'
    assert tenants.archive('acme', arc) == str(arc)
    rec = tenants.restore(arc, 'acme-copy', trust_unsigned=True)
    assert rec.name == 'acme-copy'
    assert _root(tenants, 'acme-copy') == {'orders': []}
    with pytest.raises(multidb.TenantExists):
        tenants.restore(arc, trust_unsigned=True)


def test_restore_replace(tenants, tmp_path):
    tenants.create('acme')
    _set(tenants, 'acme', v='old')
    arc = tmp_path / 'a.multidb'
    tenants.archive('acme', arc)
    _set(tenants, 'acme', v='new')
    tenants.restore(arc, replace=True, trust_unsigned=True)
    assert _root(tenants, 'acme') == {'v': 'old'}
    # the replaced state was snapshotted first
    snap = tenants.snapshots('acme')[-1]
    assert snap.label == 'before restore'
    tenants.revert('acme', snap.id)
    assert _root(tenants, 'acme') == {'v': 'new'}


@pytest.mark.parametrize('how', ['truncate', 'flip'])
def test_restore_corrupt_archive_leaves_target_untouched(tenants, tmp_path,
                                                         how):
    tenants.create('acme')
    _set(tenants, 'acme', v='good')
    arc = tmp_path / 'a.multidb'
    tenants.archive('acme', arc)
    raw = arc.read_bytes()
    if how == 'truncate':
        arc.write_bytes(raw[:len(raw) - 100])
    else:
        arc.write_bytes(raw[:200] + bytes([raw[200] ^ 1]) + raw[201:])
    _set(tenants, 'acme', v='current')
    with pytest.raises(multidb.CorruptArchive, match='a.multidb'):
        tenants.restore(arc, replace=True, trust_unsigned=True)
    with pytest.raises(multidb.CorruptArchive):
        tenants.restore(arc, 'other', trust_unsigned=True)
    assert _root(tenants, 'acme') == {'v': 'current'}
    assert 'other' not in tenants
    assert tenants.snapshots('acme') == []
    assert not (tmp_path / 'tenants' / 'other.fs').exists()


def test_restore_not_an_archive(tenants, tmp_path):
    bogus = tmp_path / 'bogus'
    bogus.write_bytes(b'hello')
    with pytest.raises(multidb.CorruptArchive, match='bad magic'):
        tenants.restore(bogus)


def test_expire_drop(tenants):
    tenants.expire_action = 'drop'
    now = datetime.datetime.now(UTC)
    tenants.create('old', expires=now - datetime.timedelta(seconds=1))
    tenants.create('young', expires=datetime.timedelta(days=1))
    tenants.create('forever')
    done = tenants.expire()
    assert [(d['name'], d['action']) for d in done] == [('old', 'drop')]
    assert sorted(r.name for r in tenants.list()) == ['forever', 'young']
    done = tenants.expire(now=now + datetime.timedelta(days=2))
    assert [d['name'] for d in done] == ['young']


def test_expire_archive(tmp_path):
    c, t = _make(tmp_path, expire_action='archive',
                 archive_dir=str(tmp_path / 'archives'))
    try:
        t.create('old', expires=0)
        _set(t, 'old', x=1)
        done = t.expire()
        assert done[0]['action'] == 'archive'
        assert os.path.exists(done[0]['archive'])
        t.restore(done[0]['archive'], trust_unsigned=True)
        assert _root(t, 'old') == {'x': 1}
    finally:
        c.close()


def test_expire_skips_tenant_in_use(tenants):
    tenants.expire_action = 'drop'
    tenants.create('old', expires=0)
    g = tenants.collection.group(transaction.TransactionManager())
    g.root('old')
    done = tenants.expire()
    assert done[0]['action'] == 'skipped' and 'open connection' in \
        done[0]['error']
    g.close()
    assert tenants.expire()[0]['action'] == 'drop'


def test_bad_expire_settings(tmp_path):
    with pytest.raises(ValueError, match='expire_action'):
        _make(tmp_path, expire_action='shred')
    # The default, archive, needs a folder only when expire must archive:
    # then it refuses, naming the setting, and drops nothing.
    c, t = _make(tmp_path)
    try:
        assert t.expire_action == 'archive' and t.archive_dir is None
        t.create('old', expires=0)
        with pytest.raises(multidb.NotConfigured, match='archive_dir'):
            t.expire()
        assert [r.name for r in t.list()] == ['old']
    finally:
        c.close()


def _leftover(tenants, name):
    """Storage of tenant name as a crashed create leaves it: its file,
    carrying a tenant id, and no record."""
    settings = tenants.backend.settings_for(name)
    tenants.backend.prepare(settings)
    FileStorage(settings['path']).close()
    return settings


def test_repair_finds_and_cleans_leftovers(tenants, tmp_path):
    from multidb.tenants.lifecycle import new_snapshot_id
    tenants.create('acme')
    tenants.create('beta')
    d = tmp_path / 'tenants'
    _leftover(tenants, 'ghost')
    # a snapshot with no record, a temporary file
    sid = tenants.snapshot('beta')
    stray = new_snapshot_id(datetime.datetime.now(UTC))
    os.makedirs(d / 'acme.fs.snapshots', exist_ok=True)
    (d / 'acme.fs.snapshots' / f'{stray}.fs').write_bytes(b'x')
    (d / '.acme.fs.1.multidb-tmp').write_bytes(b'x')
    report = tenants.repair(dry_run=True)
    kinds = sorted((f['kind'], f['name'], f['action']) for f in report)
    assert kinds == [('leftover', 'ghost', 'would delete'),
                     ('stray snapshot', 'acme', 'would delete'),
                     ('temporary file', 'acme', 'would delete')]
    assert (d / 'ghost.fs').exists()
    real = tenants.repair()
    # The dry run said what the real run does.
    assert [dict(f, action='would delete') for f in real] == report
    assert {f['action'] for f in real} == {'deleted'}
    assert not (d / 'ghost.fs').exists()
    assert sorted(os.listdir(d)) == [
        'acme.fs', 'acme.fs.index', 'acme.fs.lock', 'acme.fs.multidb-id',
        'acme.fs.snapshots', 'acme.fs.tmp', 'beta.fs', 'beta.fs.index',
        'beta.fs.lock', 'beta.fs.multidb-id', 'beta.fs.snapshots',
        'beta.fs.tmp']
    assert tenants.repair() == []
    assert [s.id for s in tenants.snapshots('beta')] == [sid]
    assert _root(tenants, 'acme') == {}


def test_repair_keeps_what_it_cannot_prove_is_a_leftover(tenants, tmp_path):
    # A FileStorage without a tenant id (not made by multidb, or made
    # before tenant ids), and a file in a snapshot folder not named as
    # multidb names snapshots: reported (or not), never deleted.
    tenants.create('acme')
    d = tmp_path / 'tenants'
    FileStorage(str(d / 'other.fs')).close()
    (d / 'acme.fs.snapshots').mkdir()
    (d / 'acme.fs.snapshots' / 'mine.fs').write_bytes(b'x')
    for dry_run in (True, False):
        assert [(f['kind'], f['name'], f['action'])
                for f in tenants.repair(dry_run=dry_run)] == [
            ('unidentified storage', 'other',
             "kept (no tenant id: not provably multidb's)")]
    assert (d / 'other.fs').exists()
    assert (d / 'acme.fs.snapshots' / 'mine.fs').exists()


def test_repair_reports_missing_storage(tenants, tmp_path):
    tenants.create('acme')
    tenants.collection.remove('acme')
    os.unlink(tmp_path / 'tenants' / 'acme.fs')
    report = tenants.repair()
    assert [(f['kind'], f['name']) for f in report] == [
        ('missing storage', 'acme')]


def test_create_over_leftover(tenants, tmp_path):
    # What a crashed create left (it carries a tenant id) is replaced.
    _leftover(tenants, 'acme')
    rec = tenants.create('acme')
    assert _root(tenants, 'acme') == {}
    assert tenants.backend.identify(rec.settings) == rec.settings['id']


def test_create_over_storage_without_id_refused(tenants, tmp_path):
    # A file multidb cannot prove is its own leftover is not deleted.
    d = tmp_path / 'tenants'
    d.mkdir()
    db = FileStorage(str(d / 'acme.fs'))
    db.close()
    with pytest.raises(multidb.StorageInTheWay,
                       match="acme.fs exists and carries no tenant id"):
        tenants.create('acme')
    assert 'acme' not in tenants
    assert sorted(os.listdir(d)) == ['acme.fs', 'acme.fs.index',
                                     'acme.fs.lock', 'acme.fs.tmp']


def test_new_collection_sees_catalogued_tenants_lazily(tmp_path):
    c, t = _make(tmp_path)
    t.create('acme', init=init_orders)
    c.close()
    c, t = _make(tmp_path)
    try:
        assert 'acme' not in c          # not read yet
        with c.transaction() as g:      # first use declares it
            assert g.root('acme')['orders'] == []
        assert 'acme' in c
        with pytest.raises(multidb.UnknownDatabase):
            c['nope']
    finally:
        c.close()


def test_load_declares_all_without_opening(tmp_path):
    c, t = _make(tmp_path)
    for n in ['a1', 'a2', 'a3']:
        t.create(n)
    c.close()
    c, t = _make(tmp_path)
    try:
        assert t.load() == 3
        assert all(n in c and not c.is_open(n) for n in ['a1', 'a2', 'a3'])
    finally:
        c.close()


def test_catalog_commits_last(tenants):
    tenants.create('acme')
    tm = transaction.TransactionManager()
    with tenants.collection.group(tm) as g:
        keys = sorted([g.get_connection('catalog'),
                       g.get_connection('acme'),
                       g.get_connection('main')],
                      key=lambda c: c.sortKey())
        assert keys[-1].db().database_name == 'catalog'


def test_tenants_from_configuration(tmp_path):
    import multidb.config
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    (tmp_path / 'archive').mkdir()
    (tmp_path / 'tenants').mkdir()
    c = multidb.config.collectionFromFile(
        os.path.join(here, 'config', 'example.conf'),
        defines={'data': str(tmp_path)})
    try:
        t = c.tenants
        assert t.catalog == 'catalog' and t.expire_action == 'archive'
        assert not os.path.exists(tmp_path / 'catalog.fs')  # nothing opened
        t.create('acme', expires=0)
        assert c['acme'].getCacheSize() == 2000   # the template's settings
        assert os.path.exists(tmp_path / 'tenants' / 'acme.fs')
        done = t.expire()
        assert done[0]['action'] == 'archive'
        assert os.path.dirname(done[0]['archive']) == str(tmp_path / 'archive')
    finally:
        c.close()


@pytest.mark.parametrize('path, message', [
    ('tenants/{name}/{name}.fs', 'exactly once'),
    ('tenants/{nom}.fs', 'unknown placeholder'),
    ('tenants/x.fs', 'exactly once'),
    ('{name}/Data.fs', 'file name'),
    ('tenants/{name!r}.fs', 'format spec'),
    ('tenants/{name.fs', 'malformed'),
])
def test_bad_backend_paths(path, message):
    with pytest.raises(ValueError, match=message):
        multidb.FileStorageBackend(path)


def test_archive_w_sha256(tenants, tmp_path):
    tenants.create('acme')
    _set(tenants, 'acme', v=1)
    arc = tmp_path / 'a.multidb'
    tenants.archive('acme', arc, checksum='sha256')
    from multidb.tenants.archive import read_header
    assert read_header(arc)['checksum'] == 'sha256'
    tenants.restore(arc, 'copy', trust_unsigned=True)
    assert _root(tenants, 'copy') == {'v': 1}
    with pytest.raises(ValueError, match='unknown checksum'):
        tenants.archive('acme', tmp_path / 'b', checksum='md5')
    assert not (tmp_path / 'b').exists()
