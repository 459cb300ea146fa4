"""Files written so that a crash leaves the old content or the new, never
half of either.

A file is written under a temporary name beside its final one, flushed
to disk (fsync), renamed into place (``os.replace``, atomic), and then
its folder is flushed too (``fsync_dir``): until then the rename itself
may be lost to a power cut, the new name pointing nowhere or at the old
file.  ``replacing`` does all of it; ``move_into_place`` does the last
two steps for a file written otherwise.

The temporary name is multidb's own (``tmp_name``), and the file is held
locked while it is written (``create_tmp``), so that
``stale_temp_files`` can tell those a killed process left behind from
those being written.

This module uses only the standard library: every floor of multidb may
use it.
"""
import contextlib
import errno
import os
import re
import shutil
import stat
import threading
import time

try:
    import fcntl
except ImportError:  # pragma: no cover (not POSIX: no locks, pid and age)
    fcntl = None

CHUNK = 1 << 20
# What one copy_file_range call copies between two progress reports.
KERNEL_CHUNK = 8 << 20
# How much copy_range(sync=True) writes between two background flushes.
SYNC_EVERY = 32 << 20

TMP_SUFFIX = '.multidb-tmp'
# .<final name>.<pid>.multidb-tmp: hidden, and named after its writer.
_TMP_RE = re.compile(r'\A\..+\.(\d+)' + re.escape(TMP_SUFFIX) + r'\Z')
#: How old a temporary file of a live process (or of another host) must
#: be before it counts as stale, when no lock says it is being written.
STALE_AFTER = 24 * 3600


# -- temporary files ----------------------------------------------------------

def tmp_name(path):
    """The temporary name a file is written under before its rename:
    ``.<name>.<pid>.multidb-tmp`` beside it, recognisably multidb's."""
    d, base = os.path.split(os.fspath(path))
    return os.path.join(d, f'.{base}.{os.getpid()}{TMP_SUFFIX}')


def _lock(f, block=True):
    """Lock the open file f for writing (flock: held until f is closed);
    False when block is false and another file description holds it."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(f.fileno(),
                    fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def create_tmp(path, exclusive=True):
    """Create the temporary file path (which must not exist, unless not
    exclusive: then it is truncated), open for writing and locked for as
    long as it stays open: a running writer's file is never stale."""
    f = open(path, 'xb' if exclusive else 'wb')
    try:
        _lock(f)
    except BaseException:
        f.close()
        raise
    return f


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True   # someone else's (or no pid of ours): assume alive
    return True


def stale_temp_files(folder, *, remove=False, min_age=STALE_AFTER):
    """The temporary files multidb left in folder (not its subfolders):
    those named by ``tmp_name`` that no process holds locked (a writer
    holds its file locked, see ``create_tmp``) and whose process is gone
    or that are older than min_age seconds (a process of another host,
    or a pid used again).  With remove, delete them too.  Returns their
    paths, sorted; a missing folder has none."""
    folder = os.fspath(folder)
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    found = []
    now = time.time()
    for name in names:
        m = _TMP_RE.match(name)
        if m is None:
            continue
        path = os.path.join(folder, name)
        try:
            # Neither following a link nor waiting on a fifo.
            fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NOFOLLOW', 0)
                         | getattr(os, 'O_NONBLOCK', 0))
        except OSError:
            continue   # gone, a link, not ours to open
        with open(fd, 'rb') as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode) or \
                    not _lock(f, block=False):
                continue   # not a file, or being written right now
            age = now - os.fstat(fd).st_mtime
            if _pid_alive(int(m.group(1))) and age < min_age:
                continue
            if remove:
                # Under the lock, which no writer holds meanwhile.
                unlink_if_present(path)
            found.append(path)
    return found


# -- durable writes -----------------------------------------------------------

def fsync_dir(path):
    """Flush to disk the folder holding path: the names it lists (a
    file's creation, rename or deletion) survive a crash only then."""
    fd = os.open(os.path.dirname(os.path.abspath(path)) or '.', os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def move_into_place(tmp, path):
    """Rename the file tmp (complete, and flushed to disk) to path,
    replacing any file there, and flush the folder: a crash leaves the
    old file at path or the new, and once this returns, the new."""
    os.replace(tmp, path)
    fsync_dir(path)


@contextlib.contextmanager
def replacing(path, *, refuse=None, exclusive=True, sync_folder=True):
    """Write the file path atomically: yields a file open for writing
    (binary) under the temporary name beside path (``tmp_name``, locked:
    see ``create_tmp``); when the block ends, the file is flushed to
    disk, renamed to path (replacing any file there) and the folder
    flushed.  When the block raises, path is untouched and the temporary
    file deleted.

    refuse: an exception class; when given, path must not exist at the
    rename, and refuse(path) is raised when it does.  exclusive=False
    truncates a temporary file of the same name (a killed process of
    the same pid left it) instead of failing: for callers that never
    write the same path from two threads at once.  sync_folder=False
    leaves flushing the folder to the caller, who must do it before
    anything relies on the new name (it has more to make there, and one
    flush serves all)."""
    tmp = tmp_name(path)
    try:
        with create_tmp(tmp, exclusive) as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
            if refuse is not None and os.path.exists(path):
                raise refuse(path)
            # Renamed while still locked: never an unlocked moment under
            # the temporary name.
            os.replace(tmp, path)
        if sync_folder:
            fsync_dir(path)
    except BaseException:
        unlink_if_present(tmp)
        raise


def write_file(path, data, sync_folder=True):
    """Replace the file path with data (bytes) atomically (see
    ``replacing``)."""
    with replacing(path, exclusive=False, sync_folder=sync_folder) as f:
        f.write(data)


def unlink_if_present(path):
    """Delete the file path; whether there was one to delete."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def rmtree_if_present(path):
    """Delete the folder path and all it holds; whether there was one."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        return False
    return True


# -- copies -------------------------------------------------------------------

def copy_to_new(src, length, dest, progress=None):
    """Copy length bytes of the open file src (from its position) to the
    new file dest (a temporary name, locked while written: see
    ``create_tmp``) and flush it to disk; return length."""
    with create_tmp(dest) as out:
        copy_range(src, out, length, None, progress)
        out.flush()
        os.fsync(out.fileno())
    return length


def copy_file(src, dest, progress=None):
    """Copy the file src to the new file dest (see ``copy_to_new``);
    return its size."""
    with open(src, 'rb') as f:
        return copy_to_new(f, os.fstat(f.fileno()).st_size, dest, progress)


def copy_range(src, dst, length, hasher=None, progress=None, *,
               sync=False):
    """Copy length bytes from file src to file dst (both at their current
    positions, which end length bytes further), feeding hasher; return the
    count.  Raises EOFError when src ends early.

    Without a hasher, between two regular files, the kernel copies
    (``os.copy_file_range``: no trip through Python's buffers).  Otherwise
    a read/write loop reuses one buffer; with sync, a second thread
    flushes what is written to disk (fdatasync) while the loop goes on, so
    that the caller's final fsync has little left to do."""
    done = 0
    if hasher is None and length:
        fds = _kernel_fds(src, dst)
        if fds is not None:
            sfd, soff, dfd, doff = fds
            done = _kernel_copy(sfd, soff, dfd, doff, length, progress)
            src.seek(soff + done)
            dst.seek(doff + done)
    if done < length:
        # The kernel could not copy (or src ended early): the loop does
        # the rest, and raises EOFError if src is short.
        _copy_loop(src, dst, length - done, hasher, progress, done, sync)
    return length


def _copy_loop(src, dst, length, hasher, progress, before=0, sync=False):
    syncer = _Syncer(dst) if sync and length > SYNC_EVERY else None
    buf = memoryview(bytearray(min(CHUNK, length)))
    left = length
    try:
        while left:
            n = src.readinto(buf[:min(CHUNK, left)])
            if not n:
                raise EOFError(f"{before + length - left} of"
                               f" {before + length} bytes")
            chunk = buf[:n]
            if hasher is not None:
                hasher.update(chunk)
            dst.write(chunk)
            left -= n
            if syncer is not None:
                syncer.wrote(n)
            if progress is not None:
                progress(n)
    finally:
        if syncer is not None:
            syncer.stop()
    return length


class _Syncer:
    """Flushes a file being written to disk from a thread, every
    SYNC_EVERY bytes, so that the disk works while the writer hashes."""

    def __init__(self, f):
        self.fd = f.fileno()
        self.flush = f.flush
        self.pending = 0
        self.wake = threading.Event()
        self.done = False
        self.thread = threading.Thread(target=self.run, daemon=True,
                                       name='multidb-sync')
        self.thread.start()

    def wrote(self, n):
        self.pending += n
        if self.pending >= SYNC_EVERY:
            self.pending = 0
            self.flush()
            self.wake.set()

    def run(self):
        while True:
            self.wake.wait()
            self.wake.clear()
            if self.done:
                return
            try:
                os.fdatasync(self.fd)
            except OSError:
                # The caller's own fsync reports a failing disk.
                return

    def stop(self):
        self.done = True
        self.wake.set()
        self.thread.join()


# copy_file_range's answers that mean "not here": fall back to the loop.
_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EBADF,
                   errno.EOPNOTSUPP, errno.ENOTSUP, errno.EPERM}


def _kernel_fds(src, dst):
    """(src fd, src offset, dst fd, dst offset) when both are regular
    files the kernel may copy between, else None."""
    if not hasattr(os, 'copy_file_range'):
        return None
    try:
        sfd, dfd = src.fileno(), dst.fileno()
        if not (stat.S_ISREG(os.fstat(sfd).st_mode)
                and stat.S_ISREG(os.fstat(dfd).st_mode)):
            return None
        dst.flush()
        return sfd, src.tell(), dfd, dst.tell()
    except (AttributeError, OSError, ValueError):
        return None


def _kernel_copy(sfd, soff, dfd, doff, length, progress):
    """Copy with copy_file_range at explicit offsets; return the count,
    short if src ended or the kernel cannot copy these files."""
    done = 0
    while done < length:
        try:
            n = os.copy_file_range(sfd, dfd, min(KERNEL_CHUNK, length - done),
                                   soff + done, doff + done)
        except OSError as e:
            if e.errno in _NO_KERNEL_COPY:
                break
            raise
        if not n:
            break
        done += n
        if progress is not None:
            progress(n)
    return done
