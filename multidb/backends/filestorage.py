"""Tenants as FileStorage files under a folder.

See ``multidb.interfaces.IBackend``.
"""
import errno
import functools
import glob
import importlib
import json
import os
import re
import string
from typing import TYPE_CHECKING
from typing import Any
from typing import BinaryIO
from typing import Callable
from typing import ContextManager
from typing import Dict
from typing import Iterator
from typing import List
from typing import Mapping
from typing import Optional
from typing import Sequence
from typing import Tuple

from ZODB.FileStorage import FileStorage
from zope.interface import implementer

from multidb import glue
from multidb.errors import MissingStorage
from multidb.errors import NotWritable
from multidb.errors import StorageInTheWay
from multidb.files import TMP_SUFFIX
from multidb.files import copy_file
from multidb.files import fsync_dir
from multidb.files import move_into_place
from multidb.files import rmtree_if_present
from multidb.files import tmp_name
from multidb.files import unlink_if_present
from multidb.files import write_file
from multidb.interfaces import IBackend
from multidb.tenants.catalog import is_tenant_id
from multidb.tenants.catalog import new_tenant_id

try:
    import fcntl
except ImportError:  # pragma: no cover (not POSIX)
    fcntl = None

if TYPE_CHECKING:  # pragma: no cover
    from ZODB.DB import DB

PLACEHOLDER = '{name}'
# The files FileStorage keeps beside its data file (.index.index_tmp is
# the index being saved on close: a kill then leaves it behind).
_COMPANIONS = ('.index', '.lock', '.tmp', '.old', '.pack',
               '.index.index_tmp')
# Those that size() counts: what the storage uses, not a backup.
_LIVE_COMPANIONS = ('.index', '.lock', '.tmp')
SNAPSHOTS = '.snapshots'
# Beside the data file: the tenant id, written before the data file is
# made and deleted after it, so that every data file multidb makes carries
# the id of the tenant it was made for.
ID_FILE = '.multidb-id'
# In the tenants' folder, ``.<file name>.multidb-lock``: a tenant's
# lifecycle lock across processes, there only while held.
LOCK_SUFFIX = '.multidb-lock'
# A snapshot's file name, as copies.new_snapshot_id makes it.
SNAPSHOT_FILE = re.compile(r'\d{8}T\d{12}Z-[0-9a-f]{6}\.fs\Z')
# The keys of ZODB's <filestorage> section (ZODB/component.xml) that a
# tenants template passes to every tenant's FileStorage, as
# ZODB.config.FileStorage does (packer: a dotted name, resolved at open).
_OPTION_KEYS = ('quota', 'packer', 'pack_gc', 'pack_keep_old')
# Those it refuses when set: a tenant is one file, made by multidb.
_REFUSED_KEYS = ('blob_dir', 'create', 'read_only')
# A tenant's storage settings, as recorded (see IBackend).
_Settings = Mapping[str, Any]


def check_path_template(path: str) -> Tuple[str, str]:
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
    ``<tenant file>.snapshots/<id>.fs``; the tenant's id to
    ``<tenant file>.multidb-id``."""

    kind = 'filestorage'

    def __init__(self, path: str, **storage_options: Any) -> None:
        """storage_options: FileStorage's keyword arguments for every
        tenant (``quota``, ``pack_gc``, ``pack_keep_old``, ``packer``: a
        callable, or its dotted name as ZODB's configuration writes it,
        ``module.name`` or ``module:expression``, imported at open)."""
        packer = storage_options.get('packer')
        if isinstance(packer, str):
            _check_dotted(packer)
        head, tail = check_path_template(path)
        # Absolute now: the settings recorded must not depend on the
        # working folder of whoever reads the catalog later.
        folder, prefix = os.path.split(head)
        self.folder = os.path.abspath(folder or '.')
        self._prefix = prefix
        self._head = os.path.join(self.folder, prefix)
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
            + '(?:' + '|'.join(map(re.escape,
                                   _COMPANIONS + (SNAPSHOTS, ID_FILE)))
            + r')\Z')
        # A file name of the folder -> the tenant name in it.
        self._base_re = re.compile(
            re.escape(prefix) + r'([a-z][a-z0-9_-]*)' + re.escape(tail)
            + '(?:' + '|'.join(map(re.escape, _COMPANIONS + (ID_FILE,)))
            + r')?\Z')

    def __repr__(self):
        return f"<FileStorageBackend {self.path!r}>"

    @classmethod
    def from_template(cls, template: Any) -> 'FileStorageBackend':
        """The backend of a ``<tenants>`` template whose storage is a
        ``<filestorage>`` (a ``multidb.sections.TenantTemplate``): its
        path is the path template, and every other key set goes to each
        tenant's FileStorage.  ``ValueError`` naming the key for a key
        that cannot be honoured (blob-dir, create, read-only; a key this
        version does not know)."""
        config = template.storage.config
        options = {}
        for attr in config.getSectionAttributes():
            value = getattr(config, attr)
            key = attr.replace('_', '-')
            if attr == 'path' or value is None:
                continue
            if attr in _REFUSED_KEYS:
                if value:
                    raise ValueError(
                        f"the tenants template's filestorage cannot set"
                        f" {key}: tenants are created, written,"
                        f" snapshotted and archived as single files")
            elif attr in _OPTION_KEYS:
                options[attr] = value
            else:
                raise ValueError(
                    f"the tenants template's filestorage key {key} is not"
                    f" supported by {cls.__name__} (it passes"
                    f" {', '.join(k.replace('_', '-') for k in _OPTION_KEYS)}"
                    f" to each tenant's FileStorage)")
        try:
            return cls(config.path, **options)
        except ValueError as e:
            raise ValueError(f"the tenants template's filestorage: {e}") \
                from None

    def name_lock(self, name: str) -> ContextManager[Any]:
        """A lock file per name in the tenants' folder, locked (flock)
        for the operation, so that processes sharing the folder take
        turns on a name; released by the kernel if the process dies."""
        return _NameLock(self._lock_path(name), name)

    def _lock_path(self, name):
        return os.path.join(self.folder, '.' + self._prefix + name +
                            self._tail + LOCK_SUFFIX)

    def check_lock(self, name: str) -> bool:
        """An flock is not lost while the process lives: False."""
        return False

    # -- settings and factories --------------------------------------------

    def settings_for(self, name: str) -> Dict[str, Any]:
        """A new tenant's settings: its file, and a new tenant id."""
        return {'kind': self.kind, 'path': self._head + name + self._tail,
                'id': new_tenant_id()}

    def factory(self, settings: _Settings, *, name: Optional[str] = None,
                create: bool = False) -> Callable[[], FileStorage]:
        """Opens the tenant's storage; only with create may the file be
        made (a recorded tenant whose file is gone raises MissingStorage:
        missing data must not look like an empty tenant)."""
        return functools.partial(_open_fs, settings['path'],
                                 self.storage_options, name, create)

    def describe(self, settings: _Settings) -> str:
        return settings['path']

    def exists(self, settings: _Settings) -> bool:
        return os.path.isfile(settings['path'])

    def identify(self, settings: _Settings) -> Optional[str]:
        """The tenant id stored with the storage at settings' place, or
        None (no storage there, or one without an id)."""
        return _read_id(settings['path'] + ID_FILE)

    def same_place(self, a: _Settings, b: _Settings) -> bool:
        """Do the settings a and b name the same file, however spelled
        (symbolic links, ``..``)?"""
        return _place(a['path']) == _place(b['path'])

    def place_key(self, settings: _Settings) -> str:
        return _place(settings['path'])

    # -- making and destroying ---------------------------------------------

    def prepare(self, settings: _Settings) -> None:
        """Make sure the folder exists and the tenant's id is beside the
        (future) data file; the file itself is made on first open.

        The folder is not flushed here: what comes next makes the data
        file in it and flushes it once for both (the create's first open,
        see _open_fs; load's move into place)."""
        path = settings['path']
        folder = os.path.dirname(path)
        if not os.path.isdir(folder):
            os.makedirs(folder, exist_ok=True)
            fsync_dir(folder)   # the new folder's own name
        tid = settings.get('id')
        if tid is None:
            return   # a tenant recorded before ids were kept
        found = _read_id(path + ID_FILE)
        if found == tid:
            return
        if found is not None or os.path.exists(path):
            raise StorageInTheWay(
                _name_of(self, path), path,
                f"belongs to another tenant (id {found})" if found
                else "carries no tenant id")
        _write_id(path + ID_FILE, tid, sync_folder=False)

    def mark(self, settings: _Settings) -> None:
        """Store settings' tenant id beside the data file (relocate gives
        records made before ids were kept their id)."""
        _write_id(settings['path'] + ID_FILE, settings['id'])

    def check_destroy(self, settings: _Settings,
                      name: Optional[str] = None) -> None:
        """Raise NotWritable when the tenant's files could not be deleted
        (checked before a drop commits; a process may do what access()
        allows)."""
        path = settings['path']
        for folder in (os.path.dirname(path), path + SNAPSHOTS):
            if os.path.isdir(folder) and \
                    not os.access(folder, os.W_OK | os.X_OK):
                raise NotWritable(name or _name_of(self, path), folder,
                                  os.strerror(errno.EACCES))

    def destroy(self, settings: _Settings) -> None:
        """Delete the tenant's files, snapshots included, the id last.

        With an id in settings, only the storage carrying that id is
        deleted: another tenant's storage at the same place is left alone
        (nothing is deleted), and a data file carrying no id raises
        StorageInTheWay.  Without one (a record made before ids were
        kept), whatever is at the place is deleted."""
        path = settings['path']
        tid = settings.get('id')
        if tid is not None:
            found = _read_id(path + ID_FILE)
            if found is not None and found != tid:
                return
            if found is None and os.path.exists(path):
                raise StorageInTheWay(_name_of(self, path), path,
                                      "carries no tenant id")
        for p in [path] + [path + ext for ext in _COMPANIONS]:
            unlink_if_present(p)
        rmtree_if_present(path + SNAPSHOTS)
        unlink_if_present(path + ID_FILE)

    def companions(self, settings: _Settings) -> List[str]:
        """The files of the tenant's place beside its data file (index,
        lock, snapshot folder, id ...) that exist."""
        path = settings['path']
        return [p for p in [path + ext for ext in
                            _COMPANIONS + (SNAPSHOTS, ID_FILE)]
                if os.path.lexists(p)]

    def is_locked(self, settings: _Settings) -> bool:
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

    def scan(self) -> Iterator[Tuple[str, Dict[str, Any]]]:
        """Yield (name, settings) for every tenant file on disk, and for
        companion files left without their data file; settings hold the
        id found with the storage, if any."""
        seen = set()
        for path in sorted(glob.glob(self._scan_glob + '*')):
            m = self._scan_re.match(path)
            if m and not os.path.isfile(path):
                continue
            m = m or self._companion_re.match(path)
            if m and m.group(1) not in seen:
                name = m.group(1)
                seen.add(name)
                settings = {'kind': self.kind,
                            'path': self._head + name + self._tail}
                tid = self.identify(settings)
                if tid is not None:
                    settings['id'] = tid
                # Whether there is data, or only companions.
                settings['present'] = os.path.isfile(settings['path'])
                yield name, settings

    def stray_files(self) -> List[Tuple[Optional[str], str]]:
        """The files multidb may have left behind, as (tenant name or
        None, path): temporary files in the tenants' folder and the
        snapshot folders, and lock files."""
        found = []
        for dirpath, dirs, files in os.walk(self.folder):
            dirs.sort()
            for f in sorted(files):
                path = os.path.join(dirpath, f)
                if f.endswith(LOCK_SUFFIX) and dirpath == self.folder:
                    m = self._base_re.match(f[1:-len(LOCK_SUFFIX)])
                    if f.startswith('.') and m:
                        found.append((m.group(1), path))
                elif f.startswith('.') and TMP_SUFFIX in f and \
                        _TMP_RE.match(f):
                    found.append((self._name_of_folder(dirpath, f), path))
        return found

    def _name_of_folder(self, dirpath, filename):
        # The tenant a temporary file belongs to: beside its file, or in
        # its snapshot folder.
        if dirpath == self.folder:
            m = _TMP_RE.match(filename)
            m = self._base_re.match(m.group(1)) if m else None
        else:
            m = self._companion_re.match(dirpath)
            if m and not dirpath.endswith(SNAPSHOTS):
                m = None
        return m.group(1) if m else None

    def remove_stray(self, path: str) -> None:
        if path.endswith(LOCK_SUFFIX):
            _remove_lock_file(path)
        else:
            unlink_if_present(path)

    def stray_in_use(self, path: str) -> bool:
        """Is the stray file path held (a lock file locked by a process)?"""
        return path.endswith(LOCK_SUFFIX) and _lock_file_held(path)

    # -- data in and out, in FileStorage format ------------------------------

    def open_data(self, db: 'DB',
                  settings: _Settings) -> Tuple[BinaryIO, int]:
        """(file, length) of the consistent committed data; db is the
        tenant's open database."""
        length = glue.filestorage_committed_length(db.storage)
        return open(settings['path'], 'rb'), length

    def load(self, settings: _Settings, fs_path: str,
             progress: Optional[Callable[[int], Any]] = None) -> None:
        """Make the tenant's storage hold the data of the FileStorage file
        at fs_path, replacing what is there, atomically: a crash leaves the
        old data or the new.  fs_path is consumed (renamed into place)."""
        path = settings['path']
        self.prepare(settings)
        # The old index describes the old file: drop it first (a missing
        # index is rebuilt on open; a wrong one would be believed).
        unlink_if_present(path + '.index')
        move_into_place(fs_path, path)

    def snapshot_path(self, settings: _Settings, snapshot_id: str) -> str:
        return os.path.join(settings['path'] + SNAPSHOTS, snapshot_id + '.fs')

    def snapshot_ids(self, settings: _Settings) -> List[str]:
        """The snapshot ids found on disk for the tenant (files named as
        multidb names snapshots; anything else there is not multidb's)."""
        d = settings['path'] + SNAPSHOTS
        try:
            names = os.listdir(d)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [n[:-3] for n in sorted(names) if SNAPSHOT_FILE.match(n)]

    def remove_snapshot(self, settings: _Settings,
                        snapshot_id: str) -> None:
        unlink_if_present(self.snapshot_path(settings, snapshot_id))

    def keep_snapshot(self, settings: _Settings, snapshot_id: str,
                      path: str) -> None:
        """The snapshot file at snapshot_path is where it is kept."""

    def has_snapshot(self, settings: _Settings, snapshot_id: str) -> bool:
        return os.path.exists(self.snapshot_path(settings, snapshot_id))

    def describe_snapshot(self, settings: _Settings,
                          snapshot_id: str) -> str:
        return self.snapshot_path(settings, snapshot_id)

    def copy_snapshot(self, settings: _Settings, snapshot_id: str,
                      dest: str, progress: Any = None) -> int:
        """Copy the snapshot to the new file dest; return its size."""
        return copy_file(self.snapshot_path(settings, snapshot_id), dest,
                         progress)

    def tmp_path(self, settings: _Settings) -> str:
        """A temporary file beside the tenant's file."""
        os.makedirs(os.path.dirname(settings['path']), exist_ok=True)
        return tmp_name(settings['path'])

    # -- statistics, packing and export -----------------------------------

    def size(self, settings: _Settings) -> Optional[int]:
        """Bytes on disk: the data file and the companions FileStorage
        uses with it (index, lock, the commit buffer), without the
        snapshots (each snapshot's size is in the record) and without
        ``.old``, the file as it was before the last pack, which
        FileStorage keeps as a backup (``pack-keep-old``) and replaces at
        the next pack.  None when the data file is missing.  Reads only
        the folder (stat)."""
        path = settings['path']
        try:
            total = os.stat(path).st_size
        except FileNotFoundError:
            return None
        for ext in _LIVE_COMPANIONS:
            try:
                total += os.stat(path + ext).st_size
            except FileNotFoundError:
                pass
        return total

    def sizes(self, many: Sequence[_Settings]) -> List[Optional[int]]:
        """``size`` of each settings of many, in order."""
        return [self.size(settings) for settings in many]

    def last_opened(self, settings: _Settings) -> Optional[float]:
        """When the storage was last opened for writing by any process,
        as its lock file says (seconds since the epoch), or None.

        FileStorage rewrites its lock file (the holder's pid) each time
        it opens for writing, so the file's modification time is that
        time, recorded at no cost on the request path.  ``is_locked``
        (repair's check) takes the lock too, and counts as an open."""
        try:
            return os.stat(settings['path'] + '.lock').st_mtime
        except FileNotFoundError:
            return None

    def contents(self, settings: _Settings,
                 db: Optional['DB'] = None) -> Tuple[int, bytes]:
        """(object count, last transaction id) of the tenant's data: from
        db's storage when the tenant is open in this process, else from
        the file opened read-only (no lock taken, so a process using the
        tenant is not disturbed; without a current index, FileStorage
        reads the whole file).  Raises MissingStorage."""
        if db is not None:
            return len(db.storage), db.storage.lastTransaction()
        path = settings['path']
        if not os.path.isfile(path):
            raise MissingStorage(_name_of(self, path), path)
        storage = FileStorage(path, read_only=True)
        try:
            return len(storage), storage.lastTransaction()
        finally:
            storage.close()

    def pack(self, settings: _Settings, db: 'DB', t: float, *,
             gc: bool = False) -> None:
        """Pack the tenant's data to time t (seconds since the epoch),
        with garbage collection only when gc: through db, the tenant's
        database open in this process (a FileStorage serves one process:
        the one holding it packs).  An explicit gc wins over the
        template's ``pack-gc``."""
        from ZODB.serialize import referencesf
        db.storage.pack(t, referencesf, gc=gc)

    def storage_config(self, settings: _Settings, *,
                       secrets: bool = False) -> str:
        """The ZConfig storage section (ZODB's ``<filestorage>``) that
        opens the tenant's storage as multidb opens it.  A packer given
        as a callable, not a dotted name, cannot be written: left out.
        There are no secrets."""
        lines = ['<filestorage>', f"  path {settings['path']}"]
        for key, value in sorted(self.storage_options.items()):
            if value is None or (key == 'packer' and
                                 not isinstance(value, str)):
                continue
            if isinstance(value, bool):
                value = 'true' if value else 'false'
            lines.append(f"  {key.replace('_', '-')} {value}")
        lines.append('</filestorage>')
        return '\n'.join(lines)

    def relocated(self, record_settings: _Settings,
                  name: str) -> Dict[str, Any]:
        """The settings of the current configuration for the recorded
        tenant name: its place as configured now, its own id."""
        new = self.settings_for(name)
        if 'id' in record_settings:
            new['id'] = record_settings['id']
        else:
            del new['id']
        return new


_TMP_RE = re.compile(r'\A\.(.+)\.\d+' + re.escape(TMP_SUFFIX) +
                     r'(?:\.(?:index|lock|tmp|old|pack))?\Z')


def _name_of(backend, path):
    m = backend._scan_re.match(path)
    return m.group(1) if m else os.path.basename(path)


def _place(path):
    # Where a file is, symbolic links of its folders resolved: the file
    # itself need not exist.
    folder, base = os.path.split(os.path.abspath(path))
    return os.path.join(os.path.realpath(folder), base)


def _read_id(path):
    try:
        with open(path, 'rb') as f:
            data = json.loads(f.read(4096))
    except (OSError, ValueError):
        return None
    tid = data.get('id') if isinstance(data, dict) else None
    return tid if is_tenant_id(tid) else None


def _write_id(path, tid, sync_folder=True):
    # Atomically: a crash leaves the id or nothing, never half of one.
    write_file(path, json.dumps({'multidb': 'tenant', 'id': tid})
               .encode('ascii') + b'\n', sync_folder=sync_folder)


def _open_fs(path, options, name, create):
    if not create and not os.path.isfile(path):
        # FileStorage would make an empty file: a recorded tenant whose
        # data is gone would look like a new, empty one.
        raise MissingStorage(name or path, path)
    if isinstance(options.get('packer'), str):
        options = dict(options, packer=_resolve_packer(options['packer']))
    storage = FileStorage(path, **options)
    if create:
        try:
            # The root first, in a commit of its own that flushes the
            # data file to disk (fsync), as ZODB.DB would make it on
            # opening the storage (it finds it there and commits
            # nothing).  Then the folder: the new data file's name, and
            # its id file's (prepare() left the folder unflushed for this
            # one flush), must survive a crash before the catalog records
            # the tenant: never a record without data.  (FileStorage
            # flushes its file, not the folder.)  Both are done before
            # the storage is handed out, whoever opens it, so the create
            # that commits the record next finds them durable.  In this
            # order (file, then folder) a journaling file system has
            # most often written the folder's change with the file's
            # flush already (ext4, XFS): the folder's flush then costs
            # little, where before the file's it committed a journal
            # transaction of its own.
            glue.make_root(storage)
            fsync_dir(path)
        except BaseException:
            storage.close()
            raise
    return storage


_DOTTED = re.compile(r'[A-Za-z_][\w.]*\Z')


def _check_dotted(packer):
    module = packer.split(':', 1)[0] if ':' in packer \
        else packer.rpartition('.')[0]
    if not module or not _DOTTED.match(module) or \
            (':' not in packer and not _DOTTED.match(packer)):
        raise ValueError(f"packer {packer!r} is not a dotted name"
                         f" (module.name or module:expression)")


def _resolve_packer(packer):
    # As ZODB.config.FileStorage.open resolves its packer key.
    if ':' in packer:
        module, expr = packer.split(':', 1)
        module = importlib.import_module(module)
        return eval(expr, module.__dict__)
    module, name = packer.rsplit('.', 1)
    return getattr(importlib.import_module(module), name)


class _NameLock:
    """The lock file of one tenant name (see FileStorageBackend.name_lock).

    The file exists only while held: the holder deletes it before it
    unlocks, and a process that locked a file since deleted (or replaced)
    tries again, so two processes never hold "the" lock through two
    files."""

    def __init__(self, path, name):
        self.path = path
        self.name = name
        self.fd = None

    def __enter__(self):
        self.fd = _lock_file(self.path, self.name, block=True)
        return self

    def __exit__(self, *exc):
        fd, self.fd = self.fd, None
        if fd is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass   # a read-only folder now: the next holder reuses it
            os.close(fd)


def _lock_file(path, name=None, block=True, create=True):
    """Open and lock path, made if missing (unless not create: then None
    when it is missing); the fd, or None when not block and another
    process holds it."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC |
                         (os.O_CREAT if create else 0), 0o644)
        except FileNotFoundError:
            if not create:
                return None
            os.makedirs(os.path.dirname(path), exist_ok=True)
            continue
        except PermissionError as e:
            raise NotWritable(name or os.path.basename(path),
                              os.path.dirname(path), e.strerror) from None
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX |
                                (0 if block else fcntl.LOCK_NB))
                except BlockingIOError:
                    os.close(fd)
                    return None
            try:
                now = os.stat(path)
            except FileNotFoundError:
                now = None
            mine = os.fstat(fd)
            if now is not None and (now.st_dev, now.st_ino) == \
                    (mine.st_dev, mine.st_ino):
                return fd
        except BaseException:
            os.close(fd)
            raise
        # Deleted (or replaced) by its holder meanwhile: try again.
        os.close(fd)


def _lock_file_held(path):
    fd = _lock_file(path, block=False, create=False)
    if fd is None and not os.path.exists(path):
        return False
    if fd is None:
        return True
    os.close(fd)
    return False


def _remove_lock_file(path):
    # Only a lock file nobody holds, deleted while we hold it.
    fd = _lock_file(path, block=False, create=False)
    if fd is None:
        return
    try:
        unlink_if_present(path)
    finally:
        os.close(fd)
