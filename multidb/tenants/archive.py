"""The archive: one portable file holding a tenant's data and record.

Layout (all integers big-endian)::

    b"MULTIDB-ARCHIVE\\n"      magic, 16 bytes
    u32 header length, header (JSON, UTF-8): the tenant's record, the
        data format and the data length
    data                       a FileStorage file (ZODB's own, documented
                               format, readable by any ZODB; a restore
                               into another storage kind copies its
                               transactions)
    b"MULTIDB-SHA256\\n"       15 bytes
    32 bytes                   SHA-256 of everything before it

An archive is written to a temporary name and renamed when complete, so a
crash never leaves a half-written archive under the final name.  Reading
checks the magic, the lengths and the checksum before anything is used; a
restore extracts into a temporary file and renames it only once the whole
archive has checked out.
"""
import hashlib
import json
import os
import struct

from multidb.errors import ArchiveExists
from multidb.errors import CorruptArchive

MAGIC = b'MULTIDB-ARCHIVE\n'
TRAILER = b'MULTIDB-SHA256\n'
FORMAT = 'filestorage'
VERSION = 1
CHUNK = 1 << 20
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


def copy_range(src, dst, length, hasher=None, progress=None):
    """Copy length bytes from file src to file dst (both at their current
    positions), feeding hasher; return the count.  Raises EOFError when src
    ends early."""
    left = length
    while left:
        chunk = src.read(min(CHUNK, left))
        if not chunk:
            raise EOFError(f"{length - left} of {length} bytes")
        if hasher is not None:
            hasher.update(chunk)
        dst.write(chunk)
        left -= len(chunk)
        if progress is not None:
            progress(len(chunk))
    return length


def write_archive(path, header, src, length, *, progress=None):
    """Write an archive at path from length bytes of the file src (at its
    current position); header is a JSON-able dict.  Refuses to overwrite an
    existing file."""
    path = os.fspath(path)
    if os.path.exists(path):
        raise ArchiveExists(path)
    header = dict(header, format=FORMAT, version=VERSION, data_length=length)
    blob = json.dumps(header, sort_keys=True).encode('utf-8')
    tmp = tmp_name(path)
    hasher = hashlib.sha256()
    try:
        with open(tmp, 'xb') as out:
            head = MAGIC + struct.pack('>I', len(blob)) + blob
            hasher.update(head)
            out.write(head)
            copy_range(src, out, length, hasher, progress)
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


def _read_header(f, path, hasher):
    magic = f.read(len(MAGIC))
    if magic != MAGIC:
        raise CorruptArchive(path, "not a multidb archive (bad magic)")
    raw_len = _read_exact(f, 4, path, 'header')
    (n,) = struct.unpack('>I', raw_len)
    if n > MAX_HEADER:
        raise CorruptArchive(path, f"header length {n} is not plausible")
    blob = _read_exact(f, n, path, 'header')
    hasher.update(magic + raw_len + blob)
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
    return header


def _check_trailer(f, path, hasher):
    trailer = _read_exact(f, len(TRAILER) + 32, path, 'checksum')
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
    hasher = hashlib.sha256()
    with _open(path) as f:
        header = _read_header(f, path, hasher)
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
    hasher = hashlib.sha256()
    tmp = tmp_name(dest)
    try:
        with _open(path) as f:
            header = _read_header(f, path, hasher)
            with open(tmp, 'xb') as out:
                try:
                    copy_range(f, out, header['data_length'], hasher,
                               progress)
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
