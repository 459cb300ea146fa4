"""The archive: one portable file holding a tenant's data and record.

Layout (all integers big-endian)::

    b"MULTIDB-ARCHIVE\\n"      magic, 16 bytes
    u32 header length, header (JSON, UTF-8): the tenant's record, the
        data format and the data length
    data                       a FileStorage file (ZODB's own, documented
                               format, readable by any ZODB; a restore
                               into another storage kind copies its
                               transactions)
    b"MULTIDB-CHECKSUM\\n"     17 bytes
    the checksum               of everything before it, by the algorithm
                               the header names: CRC-32 (4 bytes, as in
                               gzip and zip; the default) or SHA-256 (32)

CRC-32 catches accidental corruption and, with the lengths, truncation,
at several times the speed of a copy; SHA-256 (``checksum='sha256'``) also
guards against deliberate alteration, at about the speed of a copy.

An archive is written to a temporary name and renamed when complete, so a
crash never leaves a half-written archive under the final name.  Reading
checks the magic, the lengths and the checksum before anything is used; a
restore extracts into a temporary file and renames it only once the whole
archive has checked out.
"""
import errno
import hashlib
import json
import os
import stat
import struct
import threading
import zlib

from multidb.errors import ArchiveExists
from multidb.errors import CorruptArchive

MAGIC = b'MULTIDB-ARCHIVE\n'
TRAILER = b'MULTIDB-CHECKSUM\n'
FORMAT = 'filestorage'
VERSION = 1
CHUNK = 1 << 20
# What one copy_file_range call copies between two progress reports.
KERNEL_CHUNK = 8 << 20
# How much copy_range(sync=True) writes between two background flushes.
SYNC_EVERY = 32 << 20
# A header is a record, not data: anything larger is not ours.
MAX_HEADER = 16 << 20


def tmp_name(path):
    """The temporary name a file is written under before its rename."""
    d, base = os.path.split(os.fspath(path))
    return os.path.join(d, f'.{base}.{os.getpid()}.multidb-tmp')


def fsync_dir(path):
    fd = os.open(os.path.dirname(os.path.abspath(path)) or '.', os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


class CRC32:
    """zlib's CRC-32 with hashlib's update/digest."""

    digest_size = 4

    def __init__(self):
        self.value = 0

    def update(self, data):
        self.value = zlib.crc32(data, self.value)

    def digest(self):
        return struct.pack('>I', self.value)


CHECKSUMS = {'crc32': CRC32, 'sha256': hashlib.sha256}


def _hasher(name, path=None):
    try:
        return CHECKSUMS[name]()
    except (KeyError, TypeError):
        if path is None:
            raise ValueError(f"unknown checksum {name!r} (one of"
                             f" {', '.join(CHECKSUMS)})") from None
        raise CorruptArchive(path, f"unknown checksum {name!r}") from None


def write_archive(path, header, src, length, *, progress=None,
                  checksum='crc32'):
    """Write an archive at path from length bytes of the file src (at its
    current position); header is a JSON-able dict.  Refuses to overwrite an
    existing file."""
    path = os.fspath(path)
    hasher = _hasher(checksum)
    if os.path.exists(path):
        raise ArchiveExists(path)
    header = dict(header, format=FORMAT, version=VERSION, data_length=length,
                  checksum=checksum)
    blob = json.dumps(header, sort_keys=True).encode('utf-8')
    tmp = tmp_name(path)
    try:
        with open(tmp, 'xb') as out:
            head = MAGIC + struct.pack('>I', len(blob)) + blob
            hasher.update(head)
            out.write(head)
            copy_range(src, out, length, hasher, progress, sync=True)
            out.write(TRAILER + hasher.digest())
            out.flush()
            os.fsync(out.fileno())
        if os.path.exists(path):
            raise ArchiveExists(path)
        os.rename(tmp, path)
        fsync_dir(path)
    except BaseException:
        _unlink(tmp)
        raise
    return header


def _read_exact(f, n, path, what):
    data = f.read(n)
    if len(data) != n:
        raise CorruptArchive(path, f"truncated in the {what}")
    return data


def _read_header(f, path):
    """The header and the checksum algorithm fed with it."""
    magic = f.read(len(MAGIC))
    if magic != MAGIC:
        raise CorruptArchive(path, "not a multidb archive (bad magic)")
    raw_len = _read_exact(f, 4, path, 'header')
    (n,) = struct.unpack('>I', raw_len)
    if n > MAX_HEADER:
        raise CorruptArchive(path, f"header length {n} is not plausible")
    blob = _read_exact(f, n, path, 'header')
    try:
        header = json.loads(blob.decode('utf-8'))
        length = header['data_length']
        fmt, version = header['format'], header['version']
        header['record']['name']
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptArchive(path, f"unreadable header ({e})") from None
    if fmt != FORMAT or version != VERSION:
        raise CorruptArchive(path, f"unsupported format {fmt!r} version"
                                   f" {version!r}")
    if not isinstance(length, int) or length < 0:
        raise CorruptArchive(path, f"bad data length {length!r}")
    hasher = _hasher(header.get('checksum'), path)
    hasher.update(magic + raw_len + blob)
    return header, hasher


def _check_trailer(f, path, hasher):
    trailer = _read_exact(f, len(TRAILER) + hasher.digest_size, path,
                          'checksum')
    if trailer[:len(TRAILER)] != TRAILER:
        raise CorruptArchive(path, "data length does not match (truncated"
                                   " or altered)")
    if trailer[len(TRAILER):] != hasher.digest():
        raise CorruptArchive(path, "checksum mismatch (corrupted)")
    if f.read(1):
        raise CorruptArchive(path, "unexpected bytes after the checksum")


class _Discard:
    def write(self, data):
        pass


def read_header(path, *, verify=True, progress=None):
    """Return an archive's header; with verify, check all of it first."""
    path = os.fspath(path)
    with _open(path) as f:
        header, hasher = _read_header(f, path)
        if verify:
            try:
                copy_range(f, _Discard(), header['data_length'], hasher,
                           progress)
            except EOFError:
                raise CorruptArchive(path, "truncated in the data") from None
            _check_trailer(f, path, hasher)
    return header


def extract(path, dest, *, progress=None):
    """Check the archive at path and write its data (a FileStorage file) to
    dest, which must not exist; return the header.  On any error dest is
    not created."""
    path = os.fspath(path)
    tmp = tmp_name(dest)
    try:
        with _open(path) as f:
            header, hasher = _read_header(f, path)
            with open(tmp, 'xb') as out:
                try:
                    copy_range(f, out, header['data_length'], hasher,
                               progress, sync=True)
                except EOFError:
                    raise CorruptArchive(path, "truncated in the data") \
                        from None
                _check_trailer(f, path, hasher)
                out.flush()
                os.fsync(out.fileno())
        os.rename(tmp, dest)
    except BaseException:
        _unlink(tmp)
        raise
    return header


def _open(path):
    # A missing file is an OSError naming the path, not a corrupt archive.
    return open(path, 'rb')


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
