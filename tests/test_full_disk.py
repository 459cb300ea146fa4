"""A full disk: every operation fails with the disk's own error (naming
the tenant it was working on), leaves nothing half-made, loses nothing,
and works again once there is room.

The disk is a small tmpfs mounted for the test (the tests run as root on
this kind of machine, as CI does); filled to the last block by a filler
file, whose removal makes room again.
"""
import errno
import os

import pytest

from multidb.cli import main

from helpers import fill
from helpers import fs_tenants
from helpers import tmpfs


@pytest.fixture
def disk(tmp_path):
    """A 1 MiB tmpfs at tmp_path/disk, unmounted afterwards."""
    with tmpfs(tmp_path / 'disk', '1m') as path:
        yield path


def names(tenants):
    return sorted(r.name for r in tenants.records())


def files(folder):
    return sorted(os.listdir(folder))


def test_create_on_a_full_disk_leaves_nothing(disk):
    c, t = fs_tenants(disk)
    try:
        t.create('a', init=lambda root: root.update(v=1))
        before = files(disk / 'tenants')
        filler = fill(disk, leave=8192)
        for i in range(3):
            with pytest.raises(OSError) as info:
                t.create(f'b{i}', init=lambda root: root.update(
                    big='y' * 20000))
            assert info.value.errno == errno.ENOSPC
            assert f"tenant 'b{i}'" in ' '.join(info.value.__notes__)
        # No record, no storage, nothing repair would have to prove.
        assert names(t) == ['a']
        assert files(disk / 'tenants') == before
        assert t.repair(dry_run=True) == []
        with c.transaction() as g:
            assert g.root('a')['v'] == 1
        os.unlink(filler)
        t.create('b0', init=lambda root: root.update(v=2))
        with c.transaction() as g:
            assert g.root('b0')['v'] == 2
    finally:
        c.close()


def test_a_commit_on_a_full_disk_loses_nothing(disk):
    c, t = fs_tenants(disk)
    try:
        t.create('a', init=lambda root: root.update(v=1))
        filler = fill(disk)
        with pytest.raises(OSError) as info:
            with c.transaction() as g:
                g.root('a')['big'] = 'z' * 100000
        assert info.value.errno == errno.ENOSPC
        with c.transaction() as g:
            assert g.root('a')['v'] == 1 and 'big' not in g.root('a')
        os.unlink(filler)
        with c.transaction() as g:
            g.root('a')['v'] = 2
    finally:
        c.close()
    # The data file is whole: a new process reads every commit.
    c, t = fs_tenants(disk)
    try:
        t.load()
        with c.transaction() as g:
            assert g.root('a')['v'] == 2 and 'big' not in g.root('a')
        assert t.repair(dry_run=True) == []
    finally:
        c.close()


def test_snapshot_on_a_full_disk_is_not_recorded(disk):
    c, t = fs_tenants(disk)
    try:
        t.create('a', init=lambda root: root.update(big='v' * 50000))
        before = files(disk / 'tenants')
        filler = fill(disk, leave=8192)
        with pytest.raises(OSError) as info:
            t.snapshot('a')
        assert info.value.errno == errno.ENOSPC
        assert "tenant 'a'" in ' '.join(info.value.__notes__)
        assert t.snapshots('a') == []
        assert files(disk / 'tenants') == before
        assert t.repair(dry_run=True) == []
        os.unlink(filler)
        sid = t.snapshot('a')
        assert [s.id for s in t.snapshots('a')] == [sid]
    finally:
        c.close()


def test_archive_to_a_full_disk_leaves_no_partial_archive(disk, tmp_path):
    c, t = fs_tenants(tmp_path / 'data')
    try:
        # Random bytes: an archive cannot compress them below the disk.
        t.create('a', init=lambda root: root.update(
            big=os.urandom(2 << 20)))
        target = disk / 'a.archive'
        with pytest.raises(OSError) as info:
            t.archive('a', str(target))
        assert info.value.errno == errno.ENOSPC
        assert files(disk) == []
        assert names(t) == ['a']
        with c.transaction() as g:
            assert len(g.root('a')['big']) == 2 << 20
    finally:
        c.close()


def test_the_command_names_the_tenant(disk, tmp_path, capsys):
    config = tmp_path / 'multidb.conf'
    config.write_text(
        f"<multidb>\n  <zodb catalog>\n    <filestorage>\n"
        f"      path {disk}/catalog.fs\n    </filestorage>\n  </zodb>\n"
        f"  <tenants>\n    <filestorage>\n"
        f"      path {disk}/tenants/{{name}}.fs\n    </filestorage>\n"
        f"  </tenants>\n</multidb>\n")
    assert main(['-C', str(config), 'create', 'a']) == 0
    filler = fill(disk, leave=1024)
    capsys.readouterr()
    assert main(['-C', str(config), 'create', 'big-one']) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "tenant 'big-one'" in err
    os.unlink(filler)
    assert main(['-C', str(config), 'list']) == 0
    out = capsys.readouterr().out
    assert 'a' in out.split() and 'big-one' not in out


def test_drop_clone_and_restore_on_a_full_disk(disk, tmp_path):
    c, t = fs_tenants(disk)
    archive = str(tmp_path / 'a.archive')
    try:
        t.create('a', init=lambda root: root.update(v=1, big='b' * 50000))
        t.create('gone', init=lambda root: root.update(v=2))
        t.archive('a', archive)
        before = files(disk / 'tenants')
        # Nothing fits: every operation fails whole, nothing lost.  (The
        # disk is filled again before each: a failed one frees what it
        # had written.)
        for what, attempt in [
                ('clone', lambda: t.clone('a', 'a2')),
                ('restore', lambda: t.restore(archive, name='a3',
                                              trust_unsigned=True))]:
            filler = fill(disk)
            with pytest.raises(OSError, match='No space') as info:
                attempt()
            assert info.value.errno == errno.ENOSPC
            assert names(t) == ['a', 'gone']
            assert files(disk / 'tenants') == before
            os.unlink(filler)
        with c.transaction() as g:
            assert g.root('gone')['v'] == 2 and g.root('a')['v'] == 1
        assert t.repair(dry_run=True) == []
        # A drop's catalog commit is small: it may still fit in the last
        # page of the catalog's file.  Whole either way.
        filler = fill(disk)
        try:
            t.drop('gone')
        except OSError as e:
            assert e.errno == errno.ENOSPC
            assert names(t) == ['a', 'gone']
            assert files(disk / 'tenants') == before
            os.unlink(filler)
            t.drop('gone')
        else:
            os.unlink(filler)
        assert names(t) == ['a']
        assert not [f for f in files(disk / 'tenants')
                    if f.startswith('gone.')]
        assert t.repair(dry_run=True) == []
        t.clone('a', 'a2')
        t.restore(archive, name='a3', trust_unsigned=True)
        assert names(t) == ['a', 'a2', 'a3']
        with c.transaction() as g:
            assert g.root('a2')['v'] == g.root('a3')['v'] == 1
    finally:
        c.close()


def test_create_whose_catalog_commit_fails_leaves_no_data(disk, tmp_path):
    # The catalog on the full disk, the tenants on another: the tenant's
    # storage is made, then the catalog cannot list it.  The storage goes
    # (a record-less storage is what repair deletes; here it never stays).
    c, t = fs_tenants(tmp_path, catalog=str(disk / 'catalog.fs'))
    try:
        t.create('a')
        before = files(tmp_path / 'tenants')
        filler = fill(disk)
        failed = 0
        for i in range(5):
            try:
                t.create(f'b{i}', labels={'pad': 'p' * 2000})
            except OSError as e:
                assert e.errno == errno.ENOSPC
                assert f"tenant 'b{i}'" in ' '.join(e.__notes__)
                failed += 1
        assert failed, "the catalog's disk never filled"
        made = names(t)
        assert files(tmp_path / 'tenants') == sorted(
            before + [f for n in made if n != 'a'
                      for f in before_of(before, n)])
        assert t.repair(dry_run=True) == []
        os.unlink(filler)
        t.create('c')
        assert 'c' in names(t)
    finally:
        c.close()


def before_of(files_of_a, name):
    # The file names tenant name has where tenant 'a' has files_of_a.
    return [f.replace('a.fs', name + '.fs', 1) for f in files_of_a]
