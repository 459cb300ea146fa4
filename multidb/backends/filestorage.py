"""Tenants as FileStorage files under a folder.

See ``multidb.interfaces.IBackend``.
"""
import contextlib
import functools
import glob
import os
import re
import shutil
import string

from ZODB.FileStorage import FileStorage
from zope.interface import implementer

from multidb import glue
from multidb.interfaces import IBackend
from multidb.tenants.archive import fsync_dir
from multidb.tenants.archive import tmp_name

PLACEHOLDER = '{name}'
# The files FileStorage keeps beside its data file (.index.index_tmp is
# the index being saved on close: a kill then leaves it behind).
_COMPANIONS = ('.index', '.lock', '.tmp', '.old', '.pack',
               '.index.index_tmp')
SNAPSHOTS = '.snapshots'


def check_path_template(path):
    """Split a path template around its one {name} placeholder (str.format
    syntax: {{ and }} are literal braces); raises ValueError saying what is
    wrong.  Returns (head, tail), the literal text around {name}."""
    try:
        parts = list(string.Formatter().parse(path))
    except ValueError as e:
        raise ValueError(f"the tenant path {path!r} is malformed: {e}") \
            from None
    fields = [f for _, f, _, _ in parts if f is not None]
    for f in fields:
        if f != 'name':
            raise ValueError(f"the tenant path {path!r} has an unknown"
                             f" placeholder {{{f}}} (only {PLACEHOLDER})")
    if len(fields) != 1:
        raise ValueError(f"the tenant path {path!r} must contain"
                         f" {PLACEHOLDER} exactly once, not {len(fields)}"
                         f" times")
    head, tail, seen = '', '', False
    for literal, field, spec, conv in parts:
        if seen:
            tail += literal
        else:
            head += literal
        if field is not None:
            if spec or conv:
                raise ValueError(f"the tenant path {path!r}: write {PLACEHOLDER}"
                                 f" without a format spec or conversion")
            seen = True
    if os.sep in tail or (os.altsep and os.altsep in tail):
        raise ValueError(f"the tenant path {path!r} must hold {PLACEHOLDER}"
                         f" in its file name, not in a folder")
    return head, tail


@implementer(IBackend)
class FileStorageBackend:
    """Each tenant is a FileStorage file; the path template says where,
    e.g. ``/srv/data/tenants/{name}.fs``.  Snapshots go to
    ``<tenant file>.snapshots/<id>.fs``."""

    kind = 'filestorage'

    def __init__(self, path, **storage_options):
        head, tail = check_path_template(path)
        # Absolute now: the settings recorded must not depend on the
        # working folder of whoever reads the catalog later.
        folder, prefix = os.path.split(head)
        self._head = os.path.join(os.path.abspath(folder or '.'), prefix)
        self._tail = tail
        self.path = self._head + PLACEHOLDER + tail
        self.storage_options = storage_options
        self._scan_glob = glob.escape(self._head) + '*' + glob.escape(tail)
        self._scan_re = re.compile(re.escape(self._head) +
                                   r'([a-z][a-z0-9_-]*)' +
                                   re.escape(tail) + r'\Z')
        # What a kill in the middle of destroy() leaves: companions of a
        # data file that is gone already.
        self._companion_re = re.compile(
            re.escape(self._head) + r'([a-z][a-z0-9_-]*)' + re.escape(tail)
            + '(?:' + '|'.join(map(re.escape, _COMPANIONS + (SNAPSHOTS,)))
            + r')\Z')

    def __repr__(self):
        return f"<FileStorageBackend {self.path!r}>"

    def name_lock(self, name):
        """A FileStorage is used by one process: the lifecycle's own
        in-process lock is enough."""
        return contextlib.nullcontext()

    # -- settings and factories --------------------------------------------

    def settings_for(self, name):
        return {'kind': self.kind, 'path': self._head + name + self._tail}

    def factory(self, settings):
        path = settings['path']
        return functools.partial(_open_fs, path, self.storage_options)

    def describe(self, settings):
        return settings['path']

    def exists(self, settings):
        return os.path.exists(settings['path'])

    # -- making and destroying ---------------------------------------------

    def prepare(self, settings):
        """Make sure the folder exists (the file is made on first open)."""
        os.makedirs(os.path.dirname(settings['path']), exist_ok=True)

    def destroy(self, settings):
        """Delete the tenant's files, snapshots included."""
        path = settings['path']
        for p in [path] + [path + ext for ext in _COMPANIONS]:
            _unlink(p)
        shutil.rmtree(path + SNAPSHOTS, ignore_errors=True)

    def is_locked(self, settings):
        """Does a process hold the tenant's storage open?"""
        import zc.lockfile
        path = settings['path']
        if not os.path.exists(path):
            return False
        try:
            lock = zc.lockfile.LockFile(path + '.lock')
        except zc.lockfile.LockError:
            return True
        lock.close()
        return False

    def scan(self):
        """Yield (name, settings) for every tenant file on disk, and for
        companion files left without their data file."""
        seen = set()
        for path in sorted(glob.glob(self._scan_glob + '*')):
            m = self._scan_re.match(path)
            if m and not os.path.isfile(path):
                continue
            m = m or self._companion_re.match(path)
            if m and m.group(1) not in seen:
                seen.add(m.group(1))
                yield m.group(1), self.settings_for(m.group(1))

    def stray_files(self):
        """Temporary files a crash left behind."""
        head = os.path.dirname(self._head + 'x')
        return glob.glob(os.path.join(glob.escape(head), '**',
                                      '.*.multidb-tmp'), recursive=True)

    def remove_stray(self, path):
        _unlink(path)

    # -- data in and out, in FileStorage format ------------------------------

    def open_data(self, db, settings):
        """(file, length) of the consistent committed data; db is the
        tenant's open database."""
        length = glue.filestorage_committed_length(db.storage)
        return open(settings['path'], 'rb'), length

    def load(self, settings, fs_path, progress=None):
        """Make the tenant's storage hold the data of the FileStorage file
        at fs_path, replacing what is there, atomically: a crash leaves the
        old data or the new.  fs_path is consumed (renamed into place)."""
        path = settings['path']
        self.prepare(settings)
        # The old index describes the old file: drop it first (a missing
        # index is rebuilt on open; a wrong one would be believed).
        _unlink(path + '.index')
        os.replace(fs_path, path)
        fsync_dir(path)

    def snapshot_path(self, settings, snapshot_id):
        return os.path.join(settings['path'] + SNAPSHOTS, snapshot_id + '.fs')

    def snapshot_ids(self, settings):
        """The snapshot ids found on disk for the tenant."""
        d = settings['path'] + SNAPSHOTS
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            return []
        return [n[:-3] for n in names if n.endswith('.fs')]

    def remove_snapshot(self, settings, snapshot_id):
        _unlink(self.snapshot_path(settings, snapshot_id))

    def tmp_path(self, settings):
        """A temporary file beside the tenant's file."""
        self.prepare(settings)
        return tmp_name(settings['path'])


def _open_fs(path, options):
    return FileStorage(path, **options)


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
