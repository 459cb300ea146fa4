"""repair deletes only what it can prove belongs to no record, and missing
data never looks like an empty tenant ("Nothing lost, nothing leaked").

A configuration that spells the tenants' place another way (a folder
through a symbolic link, a dsn written another way, a new password, a new
keep-history) must not turn live tenants into leftovers; a tenant whose
storage is gone must not be made again, empty, when it is opened.  Each
case runs the real command (``multidb repair``) in a subprocess against
real files and the real PostgreSQL of the test run.
"""
import json
import os
import subprocess
import sys
import uuid

import pytest

import multidb
from helpers import repair_while_paused
from helpers import root_dict
from helpers import tenants_config
from helpers import update_root
from multidb.config import collectionFromString

FS_CONFIG = tenants_config('expire-action drop', tenants='$tenants')

PG_CONFIG = """
%import relstorage
<multidb>
  <zodb catalog>
    <relstorage>
      keep-history false
      <postgresql>
        dsn $server dbname=$catalog
      </postgresql>
    </relstorage>
  </zodb>
  <tenants>
    expire-action drop
    snapshot-dir $snapshots
    template-database $template
    <relstorage>
      keep-history $history
      <postgresql>
        dsn $server dbname=$prefix{name}
      </postgresql>
    </relstorage>
  </tenants>
</multidb>
"""


def _cli(conf, *argv, env=None, **defines):
    """Run the multidb command in a process of its own: (code, out, err)."""
    args = [sys.executable, '-m', 'multidb.cli', '-C', str(conf)]
    for k, v in defines.items():
        args += ['-D', f'{k}={v}']
    proc = subprocess.run(args + list(argv), capture_output=True, text=True,
                          timeout=120, env=env)
    return proc.returncode, proc.stdout, proc.stderr


def _repair_both(conf, **defines):
    """repair --dry-run then repair, as JSON; they must agree."""
    code, out, err = _cli(conf, '--json', 'repair', '--dry-run', **defines)
    assert code == 0, err
    dry = json.loads(out)
    code, out, err = _cli(conf, '--json', 'repair', **defines)
    assert code == 0, err
    real = json.loads(out)
    assert [(f['kind'], f['name'], f['path']) for f in dry] == \
        [(f['kind'], f['name'], f['path']) for f in real]
    return real


# -- FileStorage ---------------------------------------------------------------

@pytest.fixture
def fs_conf(tmp_path):
    conf = tmp_path / 'app.conf'
    conf.write_text(FS_CONFIG)
    (tmp_path / 'data').mkdir()
    (tmp_path / 'real').mkdir()
    return conf


def _fs(conf, tenants_dir):
    return collectionFromString(
        conf.read_text(), defines={'data': str(conf.parent / 'data'),
                                   'tenants': str(tenants_dir)})


def test_symlinked_folder_is_not_a_leftover(fs_conf, tmp_path):
    # The tenants were made through the real folder; the configuration now
    # reaches it through a symbolic link (a mount point moved, a config
    # cleaned up).  Same files: nothing to repair.
    real = tmp_path / 'real'
    c = _fs(fs_conf, real)
    c.tenants.create('acme', init=lambda root: root.update(v='precious'))
    c.close()
    os.symlink(real, tmp_path / 'link')
    data = str(tmp_path / 'data')
    assert _repair_both(fs_conf, data=data, tenants=tmp_path / 'link') == []
    assert (real / 'acme.fs').exists()
    c = _fs(fs_conf, tmp_path / 'link')
    try:
        assert root_dict(c, 'acme') == {'v': 'precious'}
    finally:
        c.close()


@pytest.mark.slow
def test_moved_folder_is_reported_not_deleted_and_relocated(fs_conf,
                                                            tmp_path):
    # The folder moved for real (the records point where it was): its
    # files carry their tenants' ids, so repair says where they are and
    # deletes nothing; relocate points the records there.
    old = tmp_path / 'real'
    c = _fs(fs_conf, old)
    c.tenants.create('acme', init=lambda root: root.update(v='precious'))
    c.tenants.snapshot('acme', 'one')
    c.close()
    new = tmp_path / 'moved'
    os.rename(old, new)
    data = str(tmp_path / 'data')
    found = _repair_both(fs_conf, data=data, tenants=new)
    assert [(f['kind'], f['name'], f['path']) for f in found] == [
        ('moved storage', 'acme', str(new / 'acme.fs')),
        ('missing snapshot', 'acme', f"{old}/acme.fs.snapshots/"
                                     f"{found[1]['path'].split('/')[-1]}")]
    assert found[0]['action'].startswith('kept')
    assert (new / 'acme.fs').exists()
    code, out, err = _cli(fs_conf, '--json', 'relocate', data=data,
                          tenants=new)
    assert code == 0, err
    assert [(d['name'], d['action']) for d in json.loads(out)] == [
        ('acme', 'relocated')]
    assert _repair_both(fs_conf, data=data, tenants=new) == []
    c = _fs(fs_conf, new)
    try:
        assert root_dict(c, 'acme') == {'v': 'precious'}
        assert [s.label for s in c.tenants.snapshots('acme')] == ['one']
    finally:
        c.close()


def test_relocate_refuses_what_it_cannot_prove(fs_conf, tmp_path):
    # The configuration points at a folder holding another tenant's file
    # of that name: the record stays as it is.
    c = _fs(fs_conf, tmp_path / 'real')
    c.tenants.create('acme')
    c.close()
    (tmp_path / 'other').mkdir()
    c = _fs(fs_conf, tmp_path / 'other')
    try:
        other = c.tenants.backend.settings_for('acme')
        c.tenants.backend.prepare(other)
        done = c.tenants.relocate()
        assert [(d['name'], d['action'].split(':')[0]) for d in done] == [
            ('acme', 'refused')]
        assert "holds another tenant's storage" in done[0]['action']
        assert c.tenants.get('acme').settings['path'] == str(
            tmp_path / 'real' / 'acme.fs')
    finally:
        c.close()


def _legacy(tenants, name):
    """Make tenant name look made before tenant ids: no id in its record,
    none beside its file."""
    rec = tenants.get(name)
    settings = {k: v for k, v in rec.settings.items() if k != 'id'}
    with tenants._catalog(write=True) as (tree, g):
        tree[name] = rec.replace(settings=settings)
    tenants.collection.remove(name)
    if 'path' in settings:
        os.unlink(settings['path'] + '.multidb-id')
    return settings


def test_record_without_id_is_kept_and_identified(fs_conf, tmp_path):
    c = _fs(fs_conf, tmp_path / 'real')
    t = c.tenants
    try:
        t.create('acme', init=lambda root: root.update(v=1))
        _legacy(t, 'acme')
        assert t.repair() == []
        assert [(d['name'], d['action']) for d in
                t.relocate(dry_run=True)] == [('acme', 'would identify')]
        assert [(d['name'], d['action']) for d in t.relocate()] == [
            ('acme', 'identified')]
        rec = t.get('acme')
        assert t.backend.identify(rec.settings) == rec.settings['id']
        assert root_dict(c, 'acme') == {'v': 1}
        assert t.relocate() == []
    finally:
        c.close()


def test_deleted_file_is_missing_not_empty(fs_conf, tmp_path):
    # The file of a recorded tenant is gone: opening it raises an error
    # naming the tenant, makes no file, accepts no write; repair goes on
    # reporting it.
    tenants_dir = tmp_path / 'real'
    c = _fs(fs_conf, tenants_dir)
    c.tenants.create('acme', init=lambda root: root.update(v='precious'))
    c.close()
    os.unlink(tenants_dir / 'acme.fs')
    c = _fs(fs_conf, tenants_dir)
    try:
        for attempt in range(2):
            with pytest.raises(multidb.MissingStorage) as exc:
                update_root(c, 'acme', v='new data')
            assert exc.value.name == 'acme'
            assert str(tenants_dir / 'acme.fs') in str(exc.value)
            assert 'missing' in str(exc.value)
            assert isinstance(exc.value, FileNotFoundError)
            assert not (tenants_dir / 'acme.fs').exists()
        assert [(f['kind'], f['name']) for f in c.tenants.repair()] == [
            ('missing storage', 'acme')]
        assert not (tenants_dir / 'acme.fs').exists()
        assert [(f['kind'], f['name']) for f in c.tenants.repair()] == [
            ('missing storage', 'acme')]
        # Dropping the tenant is still possible.
        c.tenants.drop('acme')
        assert c.tenants.repair() == []
    finally:
        c.close()


@pytest.mark.slow
def test_deleted_file_through_the_command(fs_conf, tmp_path):
    tenants_dir = tmp_path / 'real'
    data = str(tmp_path / 'data')
    code, out, err = _cli(fs_conf, 'create', 'acme', data=data,
                          tenants=tenants_dir)
    assert code == 0, err
    os.unlink(tenants_dir / 'acme.fs')
    for _ in range(2):
        found = _repair_both(fs_conf, data=data, tenants=tenants_dir)
        assert [(f['kind'], f['name'], f['action']) for f in found] == [
            ('missing storage', 'acme', 'reported')]
        assert not (tenants_dir / 'acme.fs').exists()
    code, out, err = _cli(fs_conf, 'snapshot', 'acme', data=data,
                          tenants=tenants_dir)
    assert code == 1
    assert "tenant 'acme' is in the catalog but its storage is missing" \
        in err
    assert not (tenants_dir / 'acme.fs').exists()


# -- PostgreSQL ----------------------------------------------------------------

@pytest.fixture
def pg(postgres, pg_db, tmp_path):
    """defines(**changes) -> the -D values of a PostgreSQL configuration
    (tenants prefixed for this test; dropped afterwards)."""
    prefix = 'r' + uuid.uuid4().hex[:6] + '_'
    conf = tmp_path / 'pg.conf'
    conf.write_text(PG_CONFIG)
    base = {'server': f'host=127.0.0.1 port={postgres.port} user=postgres',
            'catalog': pg_db, 'prefix': prefix,
            'snapshots': str(tmp_path / 'snapshots'), 'history': 'false'}

    def defines(**changes):
        out = dict(base, **changes)
        # A template per kind, as the default names have it.
        kind = 'hp' if out['history'] == 'true' else 'hf'
        out.setdefault('template', f'{prefix}template_{kind}')
        return out
    defines.conf = conf
    defines.prefix = prefix
    yield defines
    postgres.drop_databases(prefix)


def _pg(pg, **changes):
    return collectionFromString(pg.conf.read_text(), defines=pg(**changes))


def _dbnames(postgres):
    return {r[0] for r in postgres.sql('SELECT datname FROM pg_database')}


@pytest.mark.parametrize('change', ['localhost', 'password', 'keep-history'])
def test_configuration_changes_make_no_leftovers(pg, postgres, change):
    # acme is made with one configuration; repair runs with another that
    # spells the same server another way, gives a (new) password, or
    # makes new tenants history-preserving, as documented.
    c = _pg(pg)
    c.tenants.create('acme', init=lambda root: root.update(v='precious'))
    c.close()
    server = pg()['server']
    changes = {
        'localhost': {'server': server.replace('127.0.0.1', 'localhost')},
        'password': {'server': server + ' password=rotated-secret'},
        'keep-history': {'history': 'true'},
    }[change]
    found = _repair_both(pg.conf, **pg(**changes))
    assert found == []
    assert pg.prefix + 'acme' in _dbnames(postgres)
    c = _pg(pg, **changes)
    try:
        assert root_dict(c, 'acme') == {'v': 'precious'}
        update_root(c, 'acme', v='still writable')
        if change == 'keep-history':
            # New tenants take the new kind; acme keeps its own.
            assert c.tenants.create('bravo').settings['keep_history']
            assert not c.tenants.get('acme').settings['keep_history']
            c.tenants.snapshot('acme')
            c.tenants.clone('acme', 'copy')
            assert root_dict(c, 'copy') == {'v': 'still writable'}
            assert c.tenants.get('copy').settings['keep_history']
        assert c.tenants.repair() == []
    finally:
        c.close()


def test_relocate_rewrites_a_dsn_spelled_another_way(pg, postgres):
    c = _pg(pg)
    c.tenants.create('acme', init=lambda root: root.update(v=1))
    c.close()
    server = pg()['server'].replace('127.0.0.1', 'localhost')
    c = _pg(pg, server=server)
    try:
        done = c.tenants.relocate()
        assert [(d['name'], d['action']) for d in done] == [
            ('acme', 'relocated')]
        assert 'host=localhost' in c.tenants.get('acme').settings['dsn']
        assert root_dict(c, 'acme') == {'v': 1}
        assert c.tenants.relocate() == []
    finally:
        c.close()


def test_dropped_database_is_missing_not_empty(pg, postgres):
    # A DBA dropped the tenant's database: opening it raises an error
    # naming the tenant, creates no database; and a database of that name
    # made again, empty, is not taken for the tenant's either.
    c = _pg(pg)
    c.tenants.create('acme', init=lambda root: root.update(v='precious'))
    c.close()
    dbname = pg.prefix + 'acme'
    postgres.sql(f'DROP DATABASE "{dbname}" WITH (FORCE)')
    c = _pg(pg)
    try:
        with pytest.raises(multidb.MissingStorage) as exc:
            update_root(c, 'acme', v='new')
        assert exc.value.name == 'acme'
        assert f"postgresql database {dbname!r} does not exist" in str(
            exc.value)
        assert dbname not in _dbnames(postgres)
        assert [(f['kind'], f['name']) for f in c.tenants.repair()] == [
            ('missing storage', 'acme')]
        postgres.sql(f'CREATE DATABASE "{dbname}"')
        c.remove('acme')
        with pytest.raises(multidb.MissingStorage,
                           match="is not the tenant's: it carries no"
                                 " tenant id"):
            update_root(c, 'acme', v='new')
        tables = postgres.sql("SELECT count(*) FROM information_schema.tables"
                              " WHERE table_schema = 'public'", dbname)
        assert tables == [(0,)]   # no schema laid down
    finally:
        c.close()


def test_repair_through_the_command_on_postgresql(pg, postgres):
    # A leftover (a crashed create's database: it carries a tenant id no
    # record has) is dropped; the tenant, with a dsn spelled another way,
    # is not.
    c = _pg(pg)
    t = c.tenants
    t.create('acme')
    t.backend.prepare(t.backend.settings_for('ghost'))
    c.close()
    server = pg()['server'].replace('127.0.0.1', 'localhost')
    found = _repair_both(pg.conf, **pg(server=server))
    assert [(f['kind'], f['name'], f['action']) for f in found] == [
        ('leftover', 'ghost', 'deleted')]
    names = _dbnames(postgres)
    assert pg.prefix + 'acme' in names and pg.prefix + 'ghost' not in names


@pytest.mark.parametrize('op, step', [('clone', 'clone.loaded'),
                                      ('restore', 'restore.loaded')])
def test_repair_waits_for_a_clone_or_restore_of_another_process(
        pg, postgres, tmp_path, op, step):
    # The operation stops between renaming its new database into place
    # and committing its record; `multidb repair` runs meanwhile in
    # another process.  It must wait for the name's lock: the database is
    # then recorded, and kept.
    env = dict(os.environ, MULTIDB_ARCHIVE_KEY='k' * 32)
    env.pop('MULTIDB_CRASH_AT', None)
    defines = pg()
    code, out, err = _cli(pg.conf, 'create', 'acme', env=env, **defines)
    assert code == 0, err
    c = _pg(pg)
    update_root(c, 'acme', v='precious')
    c.close()
    archive = str(tmp_path / 'acme.multidb')
    if op == 'clone':
        argv = ['clone', 'acme', 'fresh']
    else:
        code, out, err = _cli(pg.conf, 'archive', 'acme', archive, env=env,
                              **defines)
        assert code == 0, err
        argv = ['restore', archive, 'fresh']
    args = [sys.executable, '-m', 'multidb.cli', '-C', str(pg.conf)]
    for k, v in defines.items():
        args += ['-D', f'{k}={v}']
    worker = subprocess.Popen(
        args + argv, env=dict(env, MULTIDB_PAUSE_AT=step),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    def paused():
        assert pg.prefix + 'fresh' in _dbnames(postgres)
    findings = repair_while_paused(worker, step,
                                   args + ['--json', 'repair'], env, paused)
    for finding in findings:
        assert finding['action'] != 'deleted', finding
    assert pg.prefix + 'fresh' in _dbnames(postgres)
    c = _pg(pg)
    try:
        assert root_dict(c, 'fresh') == {'v': 'precious'}
        assert c.tenants.repair() == []
    finally:
        c.close()


def _dead_pid():
    proc = subprocess.Popen([sys.executable, '-c', 'pass'])
    proc.wait()
    return proc.pid


def test_repair_cleans_the_folders_multidb_writes_to(pg, postgres, tmp_path):
    # The snapshot folder of PostgreSQL tenants and the archive folder:
    # temporary files of a dead process go; a file being written (its
    # writer holds it locked) and files that are not multidb's stay.
    from multidb import files
    archives = tmp_path / 'archives'
    archives.mkdir()
    c = _pg(pg)
    t = c.tenants
    t.archive_dir = str(archives)
    try:
        t.create('acme')
        t.snapshot('acme')
        folder = tmp_path / 'snapshots' / (pg.prefix + 'acme')
        dead = _dead_pid()
        dump = folder / f'.dump.fs.{dead}.multidb-tmp'
        stale = [dump, folder / f'.dump.fs.{dead}.multidb-tmp.index',
                 folder / f'.load.fs.{dead}.multidb-tmp',
                 archives / f'.x.multidb.{dead}.multidb-tmp']
        for p in stale:
            p.write_bytes(b'x')
        mine = [folder / 'notes.txt', archives / 'x.multidb']
        for p in mine:
            p.write_bytes(b'mine')
        with files.create_tmp(
                archives / f'.y.multidb.{dead}.multidb-tmp') as busy:
            busy.write(b'being written')
            found = t.repair(dry_run=True)
            assert sorted((f['kind'], f['path'], f['action'])
                          for f in found) == sorted(
                ('temporary file', str(p), 'would delete') for p in stale)
            found = t.repair()
            assert sorted(f['action'] for f in found) == ['deleted'] * 4
            assert os.path.exists(busy.name)
        for p in stale:
            assert not p.exists(), p
        for p in mine:
            assert p.exists(), p
        assert len(t.snapshots('acme')) == 1
    finally:
        c.close()
