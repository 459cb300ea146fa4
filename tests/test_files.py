"""The file primitives (multidb.files), on the real file system: what a
failure leaves behind, and what is flushed to disk, in which order."""
import hashlib
import io
import os
import sys

import pytest

import multidb
from helpers import fs_tenants
from multidb import files

try:
    import fcntl
except ImportError:  # pragma: no cover (not POSIX)
    fcntl = None


def ident(path):
    st = os.stat(path)
    return st.st_dev, st.st_ino


@pytest.fixture
def events(monkeypatch):
    """The os.fsync calls (as the identity of what was synced: a file or
    a folder) and os.replace calls made, in order; both still run."""
    log = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        st = os.fstat(fd)
        log.append(('fsync', (st.st_dev, st.st_ino)))
        return real_fsync(fd)

    def replace(src, dst, **kw):
        log.append(('replace', os.fspath(src), os.fspath(dst)))
        return real_replace(src, dst, **kw)
    monkeypatch.setattr(os, 'fsync', fsync)
    monkeypatch.setattr(os, 'replace', replace)
    return log


# -- replacing a file -----------------------------------------------------

def test_write_file_syncs_the_file_renames_then_syncs_its_folder(
        tmp_path, events):
    folder = tmp_path / 'sub'
    folder.mkdir()
    target = folder / 'id'
    files.write_file(target, b'new\n')
    assert target.read_bytes() == b'new\n'
    assert events == [('fsync', ident(target)),
                      ('replace', files.tmp_name(target), str(target)),
                      ('fsync', ident(folder))]
    assert os.listdir(folder) == ['id']


def test_write_file_replaces_the_old_content(tmp_path):
    target = tmp_path / 't'
    target.write_bytes(b'old content, longer than the new')
    files.write_file(target, b'new')
    assert target.read_bytes() == b'new'
    assert os.listdir(tmp_path) == ['t']


def test_a_write_that_raises_midway_leaves_the_old_file_and_no_temp(
        tmp_path, events):
    target = tmp_path / 't'
    target.write_bytes(b'old')
    with pytest.raises(RuntimeError, match='disk gone'):
        with files.replacing(target) as f:
            f.write(b'half of the ne')
            assert os.path.exists(files.tmp_name(target))
            raise RuntimeError('disk gone')
    assert target.read_bytes() == b'old'
    assert os.listdir(tmp_path) == ['t']
    assert [e for e in events if e[0] == 'replace'] == []


def test_a_failed_fsync_leaves_the_old_file_and_no_temp(tmp_path,
                                                         monkeypatch):
    target = tmp_path / 't'
    target.write_bytes(b'old')

    def fsync(fd):
        raise OSError(5, 'Input/output error')
    monkeypatch.setattr(os, 'fsync', fsync)
    with pytest.raises(OSError, match='Input/output'):
        files.write_file(target, b'new')
    assert target.read_bytes() == b'old'
    assert os.listdir(tmp_path) == ['t']


def test_replacing_makes_a_new_file(tmp_path):
    target = tmp_path / 'new'
    with files.replacing(target) as f:
        f.write(b'x')
    assert target.read_bytes() == b'x'
    assert os.listdir(tmp_path) == ['new']


def test_refuse_keeps_a_file_that_appeared_meanwhile(tmp_path):
    target = tmp_path / 't'
    with pytest.raises(FileExistsError):
        with files.replacing(target, refuse=FileExistsError) as f:
            f.write(b'mine')
            target.write_bytes(b'theirs')   # another writer, meanwhile
    assert target.read_bytes() == b'theirs'
    assert os.listdir(tmp_path) == ['t']


def test_the_temp_file_is_locked_while_written(tmp_path):
    target = tmp_path / 't'
    with files.replacing(target) as f:
        f.write(b'x')
        tmp = files.tmp_name(target)
        assert os.path.basename(tmp) == \
            f'.t.{os.getpid()}{files.TMP_SUFFIX}'
        # However old, a file being written is not stale.
        os.utime(tmp, (0, 0))
        assert files.stale_temp_files(tmp_path, min_age=0) == []
        if fcntl is not None:
            with open(tmp, 'rb') as other:
                with pytest.raises(BlockingIOError):
                    fcntl.flock(other.fileno(),
                                fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert files.stale_temp_files(tmp_path, min_age=0) == []
    # Unlocked, the same name is stale.
    open(tmp, 'wb').close()
    assert files.stale_temp_files(tmp_path, min_age=0) == [tmp]
    assert files.stale_temp_files(tmp_path, min_age=0, remove=True) == [tmp]
    assert os.listdir(tmp_path) == ['t']


def test_create_tmp_is_exclusive_unless_told(tmp_path):
    tmp = tmp_path / '.t.1.multidb-tmp'
    tmp.write_bytes(b'left by a killed process')
    with pytest.raises(FileExistsError):
        files.create_tmp(tmp)
    assert tmp.read_bytes() == b'left by a killed process'
    with files.create_tmp(tmp, exclusive=False) as f:
        f.write(b'new')
    assert tmp.read_bytes() == b'new'


def test_write_file_over_a_leftover_temp_file(tmp_path):
    # A killed process of the same pid (pids repeat across container
    # restarts) left the temporary name behind.
    target = tmp_path / 't'
    with open(files.tmp_name(target), 'wb') as f:
        f.write(b'half a')
    files.write_file(target, b'whole')
    assert target.read_bytes() == b'whole'
    assert os.listdir(tmp_path) == ['t']


# -- moving, syncing, deleting ----------------------------------------------

def test_move_into_place_syncs_the_folder_of_the_destination(tmp_path,
                                                              events):
    a, b = tmp_path / 'a', tmp_path / 'b'
    a.mkdir()
    b.mkdir()
    (a / 'f').write_bytes(b'data')
    (b / 'f').write_bytes(b'old')
    files.move_into_place(a / 'f', b / 'f')
    assert (b / 'f').read_bytes() == b'data'
    assert os.listdir(a) == []
    assert events == [('replace', str(a / 'f'), str(b / 'f')),
                      ('fsync', ident(b))]


def test_fsync_dir_syncs_the_folder_holding_the_path(tmp_path, events):
    (tmp_path / 'sub').mkdir()
    files.fsync_dir(tmp_path / 'sub' / 'not-yet-there')
    assert events == [('fsync', ident(tmp_path / 'sub'))]


def test_fsync_dir_of_a_relative_path(tmp_path, events, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files.fsync_dir('name')
    assert events == [('fsync', ident(tmp_path))]


def test_unlink_if_present(tmp_path):
    f = tmp_path / 'f'
    f.write_bytes(b'x')
    assert files.unlink_if_present(f) is True
    assert not f.exists()
    assert files.unlink_if_present(f) is False
    assert files.unlink_if_present(tmp_path / 'no' / 'folder') is False


def test_unlink_if_present_raises_for_a_folder(tmp_path):
    # Only a missing file is quietly passed over.
    (tmp_path / 'd').mkdir()
    with pytest.raises(OSError):
        files.unlink_if_present(tmp_path / 'd')
    assert (tmp_path / 'd').is_dir()


def test_rmtree_if_present(tmp_path):
    d = tmp_path / 'd'
    (d / 'e').mkdir(parents=True)
    (d / 'e' / 'f').write_bytes(b'x')
    assert files.rmtree_if_present(d) is True
    assert not d.exists()
    assert files.rmtree_if_present(d) is False


# -- copies -----------------------------------------------------------------

def test_copy_file_copies_and_syncs_the_new_file(tmp_path, events):
    src = tmp_path / 'src'
    data = os.urandom(3 * files.CHUNK + 17)
    src.write_bytes(data)
    dest = tmp_path / 'dest'
    assert files.copy_file(src, dest) == len(data)
    assert dest.read_bytes() == data
    assert ('fsync', ident(dest)) in events


def test_copy_file_refuses_an_existing_file(tmp_path):
    (tmp_path / 'src').write_bytes(b'new')
    (tmp_path / 'dest').write_bytes(b'old')
    with pytest.raises(FileExistsError):
        files.copy_file(tmp_path / 'src', tmp_path / 'dest')
    assert (tmp_path / 'dest').read_bytes() == b'old'


def test_copy_to_new_copies_from_the_position(tmp_path):
    src = tmp_path / 'src'
    src.write_bytes(b'headDATAtail')
    with open(src, 'rb') as f:
        f.seek(4)
        assert files.copy_to_new(f, 4, tmp_path / 'dest') == 4
        assert f.tell() == 8
    assert (tmp_path / 'dest').read_bytes() == b'DATA'


def test_copy_range_hashes_and_stops_at_a_short_source():
    data = os.urandom(files.CHUNK + 5)
    out, h = io.BytesIO(), hashlib.sha256()
    assert files.copy_range(io.BytesIO(data), out, len(data), h) == \
        len(data)
    assert out.getvalue() == data
    assert h.digest() == hashlib.sha256(data).digest()
    with pytest.raises(EOFError):
        files.copy_range(io.BytesIO(data), io.BytesIO(), len(data) + 1)


# -- their users ------------------------------------------------------------

def test_a_snapshot_is_in_its_folder_for_good_before_it_is_recorded(
        tmp_path, events, monkeypatch):
    # The snapshot's rename is flushed (its folder synced) before the
    # catalog lists it: a crash cannot leave a listed snapshot missing.
    from multidb.tenants import copies
    real = copies._crashpoint

    def crashpoint(step):
        events.append(('step', step))
        real(step)
    monkeypatch.setattr(copies, '_crashpoint', crashpoint)
    c, t = fs_tenants(tmp_path)
    try:
        t.create('acme')
        del events[:]
        sid = t.snapshot('acme')
        path = t.backend.snapshot_path(t.get('acme').settings, sid)
        moved = events.index(('replace', files.tmp_name(path), path))
        assert events[moved + 1:moved + 3] == [
            ('fsync', ident(os.path.dirname(path))),
            ('step', 'snapshot.written')]
    finally:
        c.close()


def test_a_new_tenant_is_in_its_folder_for_good_before_it_is_recorded(
        tmp_path, monkeypatch):
    # create: the id file and the data file are made in the tenants'
    # folder, which is flushed once both are there; the data file is
    # flushed too; both before the catalog commits the record.
    c, t = fs_tenants(tmp_path)
    try:
        t.create('first')          # makes the folder and the catalog
        folder = tmp_path / 'tenants'
        data = folder / 'acme.fs'
        log = []
        real_fsync = os.fsync

        def fsync(fd):
            st = os.fstat(fd)
            what = (st.st_dev, st.st_ino)
            if what == ident(folder):
                log.append(('folder', data.exists(),
                            (folder / 'acme.fs.multidb-id').exists()))
            elif data.exists() and what == ident(data):
                log.append(('data',))
            elif what == ident(tmp_path / 'catalog.fs'):
                log.append(('catalog',))
            return real_fsync(fd)
        monkeypatch.setattr(os, 'fsync', fsync)
        # (FileStorage took its own reference to os.fsync.)
        monkeypatch.setattr(sys.modules['ZODB.FileStorage.FileStorage'],
                            'fsync', fsync)
        t.create('acme')
        record = log.index(('catalog',))
        assert ('folder', True, True) in log[:record]
        assert ('data',) in log[:record]
    finally:
        c.close()
