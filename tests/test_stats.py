"""Tenants.stats and ``multidb stats``: the cheap numbers from the catalog,
the backend and the collection, the expensive ones with full."""
import datetime
import json
import os
import uuid

import pytest

from helpers import fs_tenants
from helpers import run_cli
from helpers import tenants_config
from helpers import update_root
from multidb.errors import InvalidInput
from multidb.errors import NoSuchTenant
from multidb.tenants.stats import TenantStats
from multidb.tenants.stats import sort_stats


@pytest.fixture
def made(tmp_path):
    c, t = fs_tenants(tmp_path)
    t.create('acme', init=lambda root: root.update(
        items=[str(i) for i in range(10)]))
    t.create('bravo')
    yield c, t
    c.close()


def _files_size(path):
    return sum(os.path.getsize(path + ext)
               for ext in ('', '.index', '.lock', '.tmp')
               if os.path.exists(path + ext))


def test_cheap_stats_open_nothing(made, tmp_path):
    c, t = made
    c.close()
    c, t = fs_tenants(tmp_path)
    try:
        rows = t.stats()
        assert [r.name for r in rows] == ['acme', 'bravo']
        acme = rows[0]
        assert acme.size == _files_size(t.get('acme').settings['path'])
        assert acme.objects is None and acme.last_transaction is None
        assert acme.open is False and acme.error is None
        assert acme.created == t.get('acme').created
        # Nothing was opened (nor even declared) to answer, the catalog
        # aside.
        assert list(c) == ['catalog']
    finally:
        c.close()


def test_open_now_and_last_opened(made):
    c, t = made
    before = datetime.datetime.now(datetime.timezone.utc)
    update_root(t, 'acme', v=1)
    acme, bravo = t.stats()
    assert acme.open is True
    # The lock file's time: when FileStorage last opened the tenant.
    assert acme.last_opened is not None
    assert acme.last_opened >= before - datetime.timedelta(seconds=2)


def test_full_counts_objects_and_last_transaction(made):
    c, t = made
    update_root(t, 'bravo', a=1)
    c.remove('bravo')   # closed: read from the file, read-only
    acme, bravo = t.stats(full=True)
    assert acme.objects == 1 and bravo.objects == 1   # the roots
    now = datetime.datetime.now(datetime.timezone.utc)
    assert now - bravo.last_transaction < datetime.timedelta(minutes=1)
    # Read-only: no lock taken, so the tenant's lock file is untouched.
    assert bravo.error is None


def test_read_a_batch_at_a_time(made):
    c, t = made
    for name in ('c1', 'c2', 'c3'):
        t.create(name)
    t.stats_batch = 2
    assert [r.name for r in t.stats()] == ['acme', 'bravo', 'c1', 'c2',
                                           'c3']
    assert all(r.size for r in t.stats())


def test_names_and_unknown_name(made):
    c, t = made
    assert [r.name for r in t.stats(['bravo'])] == ['bravo']
    with pytest.raises(NoSuchTenant, match="no tenant 'nope'"):
        t.stats(['bravo', 'nope'])


def test_missing_storage_is_reported_not_raised(made):
    c, t = made
    path = t.get('bravo').settings['path']
    c.remove('bravo')
    os.unlink(path)
    bravo = t.stats(['bravo'], full=True)[0]
    assert bravo.size is None and 'storage missing' in bravo.error


@pytest.mark.parametrize('key, expected', [
    ('name', ['a', 'b', 'c']),
    ('size', ['b', 'a', 'c']),
    ('objects', ['c', 'a', 'b']),
    ('last-transaction', ['a', 'b', 'c']),
])
def test_sort(key, expected):
    t0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
    rows = [TenantStats('c', 'filestorage', None, False, None, objects=9),
            TenantStats('a', 'filestorage', 5, False, None, objects=3,
                        last_transaction=t0),
            TenantStats('b', 'filestorage', 7, False, None,
                        last_transaction=t0)]
    assert [r.name for r in sort_stats(rows, key)] == expected


def test_bad_sort_key():
    with pytest.raises(InvalidInput, match="bad sort key 'colour'"):
        sort_stats([], 'colour')


# -- the command ------------------------------------------------------------

@pytest.fixture
def conf(tmp_path, data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / 'app.conf'
    path.write_text(tenants_config())
    return path


def test_command(capsys, conf):
    assert run_cli(capsys, 'create', 'acme', config=conf)[0] == 0
    assert run_cli(capsys, 'create', 'bravo', config=conf)[0] == 0
    code, out, err = run_cli(capsys, 'stats', config=conf)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ['NAME', 'SIZE', 'OPEN', 'LAST-OPENED',
                                'CREATED']
    assert [line.split()[0] for line in lines[1:]] == ['acme', 'bravo']
    code, out, err = run_cli(capsys, 'stats', '--full', '--sort', 'objects',
                             '--json', 'bravo', config=conf)
    assert code == 0, err
    row, = json.loads(out)
    assert row['name'] == 'bravo' and row['objects'] == 1
    assert row['size'] > 0 and row['open'] is False
    code, out, err = run_cli(capsys, 'stats', '--full', config=conf)
    assert code == 0 and 'OBJECTS' in out and 'LAST-TRANSACTION' in out


@pytest.mark.parametrize('argv, code, message', [
    (('stats', '--sort', 'colour'), 2, "invalid choice: 'colour'"),
    (('stats', '--sort', 'objects'), 2, "--sort objects needs --full"),
    (('stats', 'nope'), 1, "no tenant 'nope'"),
    (('stats', 'Bad!'), 2, "invalid database name 'Bad!'"),
])
def test_command_bad_input(capsys, conf, argv, code, message):
    got, out, err = run_cli(capsys, *argv, config=conf)
    assert got == code
    assert message in err and err.startswith('multidb: error:')


# -- PostgreSQL ---------------------------------------------------------------

def test_stats_on_postgresql(postgres, tmp_path):
    import multidb
    from multidb.backends.relstorage import RelStorageBackend
    from ZODB.FileStorage import FileStorage
    import functools
    prefix = 't' + uuid.uuid4().hex[:6] + '_'
    backend = RelStorageBackend(postgres.dsn(prefix + '{name}'),
                                template=prefix + 'template',
                                snapshot_dir=str(tmp_path / 'snapshots'),
                                keep_history=False)
    c = multidb.Collection()
    c.declare('catalog', functools.partial(
        FileStorage, str(tmp_path / 'catalog.fs')))
    t = multidb.Tenants(c, catalog='catalog', backend=backend)
    try:
        t.create('acme', init=lambda root: root.update(a=[1], b=[2]))
        cheap, = t.stats()
        db_size = postgres.sql(
            f"SELECT pg_database_size('{prefix}acme')")[0][0]
        assert abs(cheap.size - db_size) < 1024 * 1024
        assert cheap.last_opened is None and cheap.objects is None
        full, = t.stats(full=True)
        assert full.objects == 1 and full.error is None
        assert full.last_transaction is not None
        update_root(t, 'acme', c=1)
        again, = t.stats(full=True)
        assert again.last_transaction > full.last_transaction
    finally:
        c.close()
        postgres.drop_databases(prefix)
