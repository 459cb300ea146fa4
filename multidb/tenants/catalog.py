"""The catalog's records.

The catalog is a database of the collection whose root holds, under
``CATALOG_KEY``, an OOBTree of tenant name -> ``TenantRecord``.  Records
are immutable values, not persistent objects: a change replaces the value,
a bucket of the tree loads some thirty records at once (a process with
100,000 tenants reads its catalog quickly), and BTrees resolve concurrent
changes to different tenants in one bucket.
"""
import dataclasses
import datetime
import re
import uuid
from typing import Any
from typing import Dict
from typing import Iterable
from typing import Mapping
from typing import Optional
from typing import Set
from typing import Tuple

from BTrees.LOBTree import LOBTree
from BTrees.OOBTree import OOBTree

CATALOG_KEY = 'multidb.tenants'
# Where catalogs made before the change log counted their changes (a
# BTrees Length); read, no longer written (see bump).
SERIAL_KEY = 'multidb.tenants.serial'
# serial -> the name of the tenant that change was about (see bump).
CHANGES_KEY = 'multidb.tenants.changes'
#: How many changes the log keeps.
LOG_KEEP = 10_000

UTC = datetime.timezone.utc


#: The keys of a libpq connection string that are secrets: never recorded,
#: printed, logged or archived (they come from the configuration, libpq's
#: passfile or PGPASSWORD at each use).
SECRET_DSN_KEYS = ('password', 'sslpassword')


def new_tenant_id() -> str:
    """A new tenant id: recorded in the tenant's catalog record and stored
    with its storage when the storage is made, so that ``repair`` knows a
    storage by what it is, not by where the configuration says it is."""
    return uuid.uuid4().hex


_TENANT_ID = re.compile(r'[0-9a-f]{32}\Z')


def is_tenant_id(value: Any) -> bool:
    return isinstance(value, str) and bool(_TENANT_ID.match(value))


def strip_credentials(dsn: str) -> str:
    """dsn (a libpq connection string, ``key=value`` or a URI) without its
    secrets (``SECRET_DSN_KEYS``)."""
    if not dsn or not any(k in dsn for k in SECRET_DSN_KEYS + (':', '@')):
        return dsn
    try:
        import psycopg2.extensions
    except ImportError:  # pragma: no cover (tenants on PostgreSQL need it)
        return re.sub(r"(?:ssl)?password\s*=\s*('(?:[^'\\]|\\.)*'|\S*)",
                      '', dsn).strip()
    try:
        params = psycopg2.extensions.parse_dsn(dsn)
    except Exception:
        # Unparsable: show nothing of it rather than a secret.
        return '(unparsable connection string)'
    if not any(k in params for k in SECRET_DSN_KEYS) and '@' not in dsn:
        return dsn
    for key in SECRET_DSN_KEYS:
        params.pop(key, None)
    return psycopg2.extensions.make_dsn(**params)


def public_settings(settings: Mapping[str, Any]) -> Dict[str, Any]:
    """A copy of a record's storage settings fit to print, log or archive:
    a ``dsn`` loses its secrets (records made before they were kept out
    may still hold them)."""
    out = dict(settings)
    if isinstance(out.get('dsn'), str):
        out['dsn'] = strip_credentials(out['dsn'])
    return out


def now() -> datetime.datetime:
    return datetime.datetime.now(UTC)


# Records are pickled compactly (see TenantRecord.__reduce__): times as
# integer microseconds since the epoch (exact both ways, unlike a float),
# dicts as tuples of items.  A create rewrites a bucket of some thirty
# records, and ZODB's pickler asks its persistent_id of every object in
# it: a datetime with its time zone is several objects, an int one.
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)
_US = datetime.timedelta(microseconds=1)


def _to_us(t):
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return (t - _EPOCH) // _US


def _from_us(us):
    return None if us is None else _EPOCH + datetime.timedelta(
        microseconds=us)


def load_snapshot(id: str, created: int, size: int,
                  label: Optional[str]) -> 'Snapshot':
    """Unpickle a Snapshot (the name is in the catalogs' pickles: keep
    it)."""
    return Snapshot(id, _from_us(created), size, label)


def load_record(name: str, kind: str, settings: Iterable[Tuple[str, Any]],
                created: int, modified: int, expires: Optional[int],
                labels: Iterable[Tuple[str, str]],
                snapshots: Tuple['Snapshot', ...],
                state: str) -> 'TenantRecord':
    """Unpickle a TenantRecord (the name is in the catalogs' pickles: keep
    it).  Records pickled before this form load as dataclasses do."""
    return TenantRecord(name, kind, dict(settings), _from_us(created),
                        _from_us(modified), _from_us(expires), dict(labels),
                        tuple(snapshots), state)


def _iso(t):
    return None if t is None else t.isoformat()


def _from_iso(s):
    return None if s is None else datetime.datetime.fromisoformat(s)


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A point-in-time copy of a tenant's data."""

    id: str
    created: datetime.datetime
    size: int
    label: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        return {'id': self.id, 'created': _iso(self.created),
                'size': self.size, 'label': self.label}

    def __reduce__(self):
        return load_snapshot, (self.id, _to_us(self.created), self.size,
                               self.label)


@dataclasses.dataclass(frozen=True)
class TenantRecord:
    """One tenant: where its data is and what is known about it."""

    name: str
    kind: str
    settings: dict
    created: datetime.datetime
    modified: datetime.datetime
    expires: Optional[datetime.datetime] = None
    labels: dict = dataclasses.field(default_factory=dict)
    snapshots: tuple = ()
    state: str = 'active'

    def replace(self, **changes: Any) -> 'TenantRecord':
        return dataclasses.replace(self, **changes)

    def __reduce__(self):
        return load_record, (
            self.name, self.kind, tuple(self.settings.items()),
            _to_us(self.created), _to_us(self.modified),
            _to_us(self.expires), tuple(self.labels.items()),
            self.snapshots, self.state)

    def snapshot(self, snapshot_id: str) -> Optional[Snapshot]:
        for s in self.snapshots:
            if s.id == snapshot_id:
                return s
        return None

    def expired(self, when: datetime.datetime) -> bool:
        return self.expires is not None and self.expires <= when

    def to_json(self) -> Dict[str, Any]:
        """A JSON-able dict (for archives and ``multidb --json``); the
        settings without credentials (records hold none, but those made
        before they were kept out may)."""
        return {
            'name': self.name, 'kind': self.kind,
            'settings': public_settings(self.settings), 'state': self.state,
            'created': _iso(self.created), 'modified': _iso(self.modified),
            'expires': _iso(self.expires), 'labels': dict(self.labels),
            'snapshots': [s.to_json() for s in self.snapshots],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any],
                  **changes: Any) -> 'TenantRecord':
        """A record from ``to_json`` output (an archive's header); raises
        ValueError, KeyError or TypeError when it is malformed."""
        rec = cls(
            name=str(data['name']), kind=str(data['kind']),
            settings=dict(data.get('settings') or {}),
            created=_from_iso(data['created']),
            modified=_from_iso(data['modified']),
            expires=_from_iso(data.get('expires')),
            labels={str(k): str(v)
                    for k, v in (data.get('labels') or {}).items()},
        )
        return rec.replace(**changes) if changes else rec


def tree(root: Any, create: bool = False) -> Optional[OOBTree]:
    """The catalog's tree in a catalog root (made when asked)."""
    t = root.get(CATALOG_KEY)
    if t is None and create:
        t = root[CATALOG_KEY] = OOBTree()
    return t


def bump(root: Any, name: str) -> None:
    """Count a change of the catalog's membership, or of where a tenant's
    data is (name created, dropped, reverted, restored, relocated), and
    log it under the next serial, so that other processes read what
    changed since they last looked (``changes``), not the whole catalog.

    The serial is the log's last key: a process that reads it has the
    last bucket of the log, which holds the newest changes, so following
    the catalog costs one object load per change seen (one round trip to
    a ZEO server), not three.  Two processes logging at once both write
    the same serial: one of them gets a ConflictError and tries again
    (lifecycle operations do).  The log keeps the last ``LOG_KEEP``
    changes; a process further behind reads the whole catalog once."""
    log = root.get(CHANGES_KEY)
    if log is None:
        # Catalogs made before the log counted changes in a Length: the
        # log goes on from there; a process that last looked before
        # reads the whole catalog once.
        log = root[CHANGES_KEY] = LOBTree()
        counter = root.get(SERIAL_KEY)
        new = (0 if counter is None else counter()) + 1
    else:
        new = log.maxKey() + 1
    log[new] = name
    if new - LOG_KEEP in log:
        del log[new - LOG_KEEP]


def serial(root: Any) -> int:
    """The serial of the catalog's last change (0: none)."""
    log = root.get(CHANGES_KEY)
    if log:
        return log.maxKey()
    counter = root.get(SERIAL_KEY)
    return 0 if counter is None else counter()


def changes(root: Any, since: int, until: int) -> Optional[Dict[str, int]]:
    """The names changed after serial since, up to until, each with the
    serial of its last change there; None when the log does not reach
    back that far (read the whole catalog)."""
    if since == until:
        return {}
    log = root.get(CHANGES_KEY)
    if log is None or since > until:
        return None
    items = log.items(since + 1, until)
    # Every serial in between must be there, or something is missing.
    if len(items) != until - since:
        return None
    return {name: number for number, name in items}
