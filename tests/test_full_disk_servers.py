"""A full disk on a server: the ZEO server's storage folder, the
PostgreSQL cluster's data folder (see test_full_disk.py for FileStorage).

Every operation fails with the server's own error (the tenant it was
working on named), in the configured time, leaves nothing half-made,
loses nothing, and works again once there is room, also in a new
collection (and after a server restart).  When PostgreSQL cannot write
its WAL it PANICs and stops: the clients say so at once (the server is
gone), and once there is room a restarted cluster has every commit.

The disks are small tmpfs mounted for the test (the tests run as root on
this kind of machine, as CI does), filled to the last block by a filler
file whose removal makes room again.
"""
import contextlib
import errno
import os
import shutil
import subprocess
import tempfile
import time

import psycopg2
import pytest
from ZEO.Exceptions import ServerException

import multidb
from multidb.backends.filestorage import FileStorageBackend
from multidb.backends.relstorage import RelStorageBackend
from multidb.cli import main
from multidb.config import collectionFromString
from multidb.errors import ServerUnavailable

from helpers import fill
from helpers import tmpfs
from servers import PostgreSQL
from servers import ZEOServer

pytestmark = [pytest.mark.servers, pytest.mark.slow]

NO_SPACE = 'No space left on device'


# -- helpers -------------------------------------------------------------

def names(tenants):
    return sorted(r.name for r in tenants.records())


def notes(error):
    return ' '.join(getattr(error, '__notes__', ()))


@contextlib.contextmanager
def within(seconds, what):
    """The block takes less than seconds (no hang: an error comes in the
    configured time)."""
    start = time.monotonic()
    yield
    took = time.monotonic() - start
    assert took < seconds, f"{what} took {took:.1f} s"


# -- ZEO -----------------------------------------------------------------

@pytest.fixture
def zeo_disk(tmp_path):
    """A ZEO server serving '1' and 'catalog' from a 2 MiB tmpfs (its
    folder), stopped (killed if it hangs) and unmounted afterwards."""
    with tmpfs(tmp_path / 'disk', '2m') as disk:
        server = ZEOServer(('1', 'catalog'), folder=str(disk / 'zeo'))
        try:
            server.start()
            yield server, disk
        finally:
            server.stop()


def _zeo_collection(server, tenants_folder):
    """'one' (storage 1) and the catalog (storage catalog) on the ZEO
    server, tenants as FileStorages in tenants_folder (another disk)."""
    host, port = server.address
    zodb = ''.join(
        f"  <zodb {name}>\n    <zeoclient>\n      server {host}:{port}\n"
        f"      storage {storage}\n    </zeoclient>\n  </zodb>\n"
        for name, storage in (('one', '1'), ('catalog', 'catalog')))
    c = collectionFromString(
        f"%import ZEO\n<multidb>\n  zeo-wait-timeout 2s\n{zodb}</multidb>\n")
    t = multidb.Tenants(c, catalog='catalog', backend=FileStorageBackend(
        str(tenants_folder / '{name}.fs')))
    return c, t


def _is_zeo_no_space(error):
    # ZEO gives the client the server's error by class name and arguments.
    return (isinstance(error, ServerException)
            and error.args[0] == 'builtins.OSError'
            and error.args[1][0] == errno.ENOSPC
            and NO_SPACE in str(error))


def test_zeo_commit_on_a_full_server_loses_nothing(zeo_disk, tmp_path):
    server, disk = zeo_disk
    c, t = _zeo_collection(server, tmp_path / 'tenants')
    try:
        with c.transaction() as g:
            g.root('one')['v'] = 1
        filler = fill(disk)
        for _ in range(2):
            with within(5, "a commit to the full server"):
                with pytest.raises(ServerException) as info:
                    with c.transaction() as g:
                        g.root('one')['big'] = 'z' * 100000
            assert _is_zeo_no_space(info.value), repr(info.value)
            # The server lives on, and serves what it has.
            assert server.proc.poll() is None
            with c.transaction() as g:
                assert dict(g.root('one')) == {'v': 1}
        os.unlink(filler)
        with c.transaction() as g:
            g.root('one')['v'] = 2
            g.root('one')['big'] = 'z' * 100000
    finally:
        c.close()
    # The server's data file is whole: a restarted server, a new client,
    # read every commit, and take more.
    server.stop()
    server.start()
    c, t = _zeo_collection(server, tmp_path / 'tenants')
    try:
        with c.transaction() as g:
            assert g.root('one')['v'] == 2
            assert len(g.root('one')['big']) == 100000
            g.root('one')['v'] = 3
        with c.transaction() as g:
            assert g.root('one')['v'] == 3
    finally:
        c.close()


def test_zeo_create_whose_catalog_commit_fails_leaves_nothing(
        zeo_disk, tmp_path):
    # The catalog on the full server, the tenants on another disk: the
    # tenant's storage is made, then the catalog cannot list it.  The
    # storage goes; nothing is left for repair.
    server, disk = zeo_disk
    folder = tmp_path / 'tenants'
    c, t = _zeo_collection(server, folder)
    try:
        t.create('a', init=lambda root: root.update(v=1))
        files_of_a = sorted(os.listdir(folder))
        filler = fill(disk)
        failed = []
        for i in range(5):
            with within(5, "a create on the full catalog"):
                try:
                    t.create(f'b{i}', labels={'pad': 'p' * 2000})
                except ServerException as e:
                    assert _is_zeo_no_space(e), repr(e)
                    assert f"tenant 'b{i}'" in notes(e)
                    failed.append(f'b{i}')
        assert failed, "the catalog's disk never filled"
        made = names(t)
        assert not set(made) & set(failed)
        # The files of the tenants made, none of those that failed.
        assert sorted(os.listdir(folder)) == sorted(
            f.replace('a.fs', n + '.fs', 1) for n in made
            for f in files_of_a)
        assert t.repair(dry_run=True) == []
        with c.transaction() as g:
            assert g.root('a')['v'] == 1
        os.unlink(filler)
        t.create('c', init=lambda root: root.update(v=3))
        made = names(t)
        assert 'c' in made
    finally:
        c.close()
    server.stop()
    server.start()
    c, t = _zeo_collection(server, folder)
    try:
        t.load()
        assert names(t) == made
        with c.transaction() as g:
            assert g.root('a')['v'] == 1 and g.root('c')['v'] == 3
        assert t.repair(dry_run=True) == []
    finally:
        c.close()


def test_zeo_the_command_names_the_tenant(zeo_disk, tmp_path, capsys):
    server, disk = zeo_disk
    host, port = server.address
    config = tmp_path / 'multidb.conf'
    config.write_text(
        f"%import ZEO\n<multidb>\n  zeo-wait-timeout 2s\n"
        f"  <zodb catalog>\n    <zeoclient>\n      server {host}:{port}\n"
        f"      storage catalog\n    </zeoclient>\n  </zodb>\n"
        f"  <tenants>\n    <filestorage>\n"
        f"      path {tmp_path}/tenants/{{name}}.fs\n    </filestorage>\n"
        f"  </tenants>\n</multidb>\n")
    assert main(['-C', str(config), 'create', 'a']) == 0
    filler = fill(disk)
    capsys.readouterr()
    codes = []
    for i in range(5):
        codes.append(main(['-C', str(config), 'create', f'big{i}']))
        if codes[-1]:
            break
    assert codes[-1] == 1, "the catalog's disk never filled"
    err = capsys.readouterr().err
    assert NO_SPACE in err and f"tenant 'big{len(codes) - 1}'" in err, err
    os.unlink(filler)
    assert main(['-C', str(config), 'list']) == 0
    out = capsys.readouterr().out.split()
    assert 'a' in out and f'big{len(codes) - 1}' not in out


# -- PostgreSQL ----------------------------------------------------------

# Room for initdb (about 40 MB), the catalog, a template and a tenant or
# two, and their WAL (which grows until a checkpoint).
PG_DISK = '128m'


@pytest.fixture
def pg_disk():
    """A PostgreSQL cluster of its own whose data folder is on a tmpfs,
    started; (cluster, the tmpfs's folder).  Stopped and unmounted
    afterwards, however the test ends.  (The folder is not in tmp_path:
    the postgres user must reach it.)"""
    mountpoint = tempfile.mkdtemp(prefix='multidb-pgdisk-')
    os.chmod(mountpoint, 0o755)
    try:
        with tmpfs(mountpoint, PG_DISK, owner='postgres') as disk:
            pg = PostgreSQL(data=os.path.join(disk, 'data'))
            try:
                pg.start()
                pg.sql('CREATE DATABASE catalog')
                yield pg, disk
            finally:
                pg.close()
    finally:
        shutil.rmtree(mountpoint, ignore_errors=True)


def _pg_tenants(catalog_pg, tenants_pg, prefix, tmp_path, attempts=3):
    """(collection, tenants): the catalog in database catalog of
    catalog_pg, tenants as databases PREFIX{name} of tenants_pg; a
    lifecycle operation that loses its server tries attempts times."""
    c = multidb.Collection()
    c.declare('catalog', lambda: RelStorageBackend(
        catalog_pg.dsn('x_{name}'), keep_history=False)._open_relstorage(
            catalog_pg.dsn('catalog')))
    t = multidb.Tenants(c, catalog='catalog', backend=RelStorageBackend(
        tenants_pg.dsn(prefix + '{name}'), template=prefix + 'template',
        snapshot_dir=str(tmp_path / 'snapshots'), keep_history=False))
    t.attempts = attempts
    return c, t


def _databases(pg, prefix):
    return sorted(name for (name,) in pg.sql('SELECT datname FROM pg_database')
                  if name.startswith(prefix))


def _fill_pg(pg, disk):
    """Fill the cluster's disk, its WAL in a fresh segment first (written
    in full when made: the WAL of what the test does fits, PostgreSQL
    does not PANIC)."""
    pg.sql('SELECT pg_switch_wal()')
    pg.sql('CHECKPOINT')
    return fill(disk)


def _is_disk_full(error):
    return (isinstance(error, psycopg2.errors.DiskFull)
            and error.pgcode == '53100' and NO_SPACE in str(error))


def test_pg_create_and_commit_on_a_full_cluster(pg_disk, tmp_path):
    pg, disk = pg_disk
    c, t = _pg_tenants(pg, pg, 't_', tmp_path)
    try:
        t.create('a', init=lambda root: root.update(v=1))
        before = _databases(pg, 't_')
        assert before == ['t_a', 't_template']
        filler = _fill_pg(pg, disk)
        for i in range(3):
            # CREATE DATABASE fails; the temporary database goes.
            with within(10, "a create on the full cluster"):
                with pytest.raises(psycopg2.errors.DiskFull) as info:
                    t.create(f'b{i}', init=lambda root: root.update(v=2))
            assert _is_disk_full(info.value), repr(info.value)
            assert f"tenant 'b{i}'" in notes(info.value)
            assert names(t) == ['a']
            assert _databases(pg, 't_') == before
        assert t.repair(dry_run=True) == []
        # A commit fails whole: nothing of it is seen, the rest is there.
        for _ in range(2):
            with within(10, "a commit on the full cluster"):
                with pytest.raises(psycopg2.errors.DiskFull) as info:
                    with c.transaction() as g:
                        g.root('a')['big'] = os.urandom(200000)
            assert _is_disk_full(info.value), repr(info.value)
            with c.transaction() as g:
                assert dict(g.root('a')) == {'v': 1}
        assert pg.proc.poll() is None, "PostgreSQL stopped"
        os.unlink(filler)
        t.create('b0', init=lambda root: root.update(v=2))
        with c.transaction() as g:
            g.root('a')['v'] = 3
            g.root('a')['big'] = b'b' * 200000
    finally:
        c.close()
    # A new collection (a new process's) reads every commit.
    c, t = _pg_tenants(pg, pg, 't_', tmp_path)
    try:
        t.load()
        assert names(t) == ['a', 'b0']
        with c.transaction() as g:
            assert g.root('a')['v'] == 3 and len(g.root('a')['big']) == 200000
            assert g.root('b0')['v'] == 2
        assert t.repair(dry_run=True) == []
        assert _databases(pg, 't_') == ['t_a', 't_b0', 't_template']
    finally:
        c.close()


def test_pg_create_whose_catalog_commit_fails_leaves_no_database(
        pg_disk, postgres, tmp_path):
    # The catalog on the full cluster, the tenants on another (the
    # session's): CREATE DATABASE works, then the catalog cannot list
    # the tenant.  Its database is dropped; nothing is left for repair.
    pg, disk = pg_disk
    prefix = 'fd' + os.urandom(3).hex() + '_'
    c, t = _pg_tenants(pg, postgres, prefix, tmp_path)
    try:
        t.create('a', init=lambda root: root.update(v=1))
        filler = _fill_pg(pg, disk)
        failed = []
        for i in range(3):
            with within(10, "a create on the full catalog"):
                try:
                    t.create(f'b{i}', labels={'pad': 'p' * 2000})
                except psycopg2.errors.DiskFull as e:
                    assert _is_disk_full(e), repr(e)
                    assert f"tenant 'b{i}'" in notes(e)
                    failed.append(f'b{i}')
        assert failed, "the catalog's disk never filled"
        made = names(t)
        assert not set(made) & set(failed)
        assert _databases(postgres, prefix) == sorted(
            [prefix + n for n in made] + [prefix + 'template'])
        assert t.repair(dry_run=True) == []
        assert pg.proc.poll() is None, "PostgreSQL stopped"
        os.unlink(filler)
        t.create('c', init=lambda root: root.update(v=3))
        made = names(t)
        with c.transaction() as g:
            assert g.root('a')['v'] == 1 and g.root('c')['v'] == 3
    finally:
        c.close()
    c, t = _pg_tenants(pg, postgres, prefix, tmp_path)
    try:
        t.load()
        assert names(t) == made and 'c' in made
        assert t.repair(dry_run=True) == []
        assert _databases(postgres, prefix) == sorted(
            [prefix + n for n in made] + [prefix + 'template'])
    finally:
        c.close()
        postgres.drop_databases(prefix)


def _panic(pg):
    """Make PostgreSQL need a WAL segment that does not fit (a WAL switch
    after each small record, until the recycled segments run out): it
    PANICs.  The error its client saw."""
    for _ in range(50):
        try:
            pg.sql("SELECT pg_switch_wal(),"
                   " pg_logical_emit_message(false, 'full', 'disk')")
        except psycopg2.OperationalError as e:
            return e
    pytest.fail("PostgreSQL wrote 50 WAL segments on a full disk")


def _stopped(pg, timeout):
    try:
        pg.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"PostgreSQL still runs {timeout} s after its PANIC")


def test_pg_panic_on_a_full_wal_loses_nothing(pg_disk, tmp_path):
    pg, disk = pg_disk
    c, t = _pg_tenants(pg, pg, 't_', tmp_path)
    try:
        t.create('a', init=lambda root: root.update(v=1))
        with c.transaction() as g:
            g.root('a')['data'] = b'd' * 100000
        filler = fill(disk)
        error = _panic(pg)
        assert 'terminated abnormally' in str(error) or \
            'closed the connection' in str(error), str(error)
        # Its crash recovery cannot write the WAL either: it stops.
        # Every client says so, in the configured time.
        _stopped(pg, 10)
        with within(10, "a commit to the stopped cluster"):
            with pytest.raises(psycopg2.OperationalError) as info:
                with c.transaction() as g:
                    g.root('a')['v'] = 2
        assert not isinstance(info.value, psycopg2.errors.DiskFull)
        with within(20, "a create on the stopped cluster"):
            with pytest.raises(ServerUnavailable) as info:
                t.create('b')
        assert "tenant 'b'" in str(info.value)
        assert isinstance(info.value.__cause__, psycopg2.OperationalError)
        # Room again, and a restart: every commit is there, nothing is
        # half-made.
        os.unlink(filler)
        pg.restart()
        assert names(t) == ['a']
        with c.transaction() as g:
            assert g.root('a')['v'] == 1
            assert g.root('a')['data'] == b'd' * 100000
        assert t.repair(dry_run=True) == []
        assert _databases(pg, 't_') == ['t_a', 't_template']
        t.create('b', init=lambda root: root.update(v=2))
        with c.transaction() as g:
            g.root('a')['v'] = 3
    finally:
        c.close()
    c, t = _pg_tenants(pg, pg, 't_', tmp_path)
    try:
        t.load()
        assert names(t) == ['a', 'b']
        with c.transaction() as g:
            assert g.root('a')['v'] == 3 and g.root('b')['v'] == 2
        assert t.repair(dry_run=True) == []
    finally:
        c.close()
