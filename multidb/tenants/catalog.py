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
from typing import Optional

from BTrees.Length import Length
from BTrees.LOBTree import LOBTree
from BTrees.OOBTree import OOBTree

CATALOG_KEY = 'multidb.tenants'
# A counter bumped whenever a tenant comes or goes: other processes compare
# it at their transaction boundaries (BTrees' Length resolves concurrent
# bumps without conflict).
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


def new_tenant_id():
    """A new tenant id: recorded in the tenant's catalog record and stored
    with its storage when the storage is made, so that ``repair`` knows a
    storage by what it is, not by where the configuration says it is."""
    return uuid.uuid4().hex


_TENANT_ID = re.compile(r'[0-9a-f]{32}\Z')


def is_tenant_id(value):
    return isinstance(value, str) and bool(_TENANT_ID.match(value))


def strip_credentials(dsn):
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


def public_settings(settings):
    """A copy of a record's storage settings fit to print, log or archive:
    a ``dsn`` loses its secrets (records made before they were kept out
    may still hold them)."""
    out = dict(settings)
    if isinstance(out.get('dsn'), str):
        out['dsn'] = strip_credentials(out['dsn'])
    return out


def now():
    return datetime.datetime.now(UTC)


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

    def to_json(self):
        return {'id': self.id, 'created': _iso(self.created),
                'size': self.size, 'label': self.label}


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

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def snapshot(self, snapshot_id):
        for s in self.snapshots:
            if s.id == snapshot_id:
                return s
        return None

    def expired(self, when):
        return self.expires is not None and self.expires <= when

    def to_json(self):
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
    def from_json(cls, data, **changes):
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


def tree(root, create=False):
    """The catalog's tree in a catalog root (made when asked)."""
    t = root.get(CATALOG_KEY)
    if t is None and create:
        t = root[CATALOG_KEY] = OOBTree()
    return t


def bump(root, name):
    """Count a change of the catalog's membership, or of where a tenant's
    data is (name created, dropped, reverted, restored), and log it under
    the new serial, so that other processes read what changed since they
    last looked (``changes``), not the whole catalog.

    Two processes logging at once both write the same serial: one of them
    gets a ConflictError and tries again (lifecycle operations do).  The
    log keeps the last ``LOG_KEEP`` changes; a process further behind
    reads the whole catalog once."""
    serial = root.get(SERIAL_KEY)
    if serial is None:
        serial = root[SERIAL_KEY] = Length()
    serial.change(1)
    log = root.get(CHANGES_KEY)
    if log is None:
        # Catalogs made before the log: it starts now; a process that
        # last looked before that reads the whole catalog once.
        log = root[CHANGES_KEY] = LOBTree()
    new = serial()
    log[new] = name
    if new - LOG_KEEP in log:
        del log[new - LOG_KEEP]


def serial(root):
    counter = root.get(SERIAL_KEY)
    return 0 if counter is None else counter()


def changes(root, since, until):
    """The names changed after serial since, up to until (a set), or None
    when the log does not reach back that far (read the whole catalog)."""
    if since == until:
        return set()
    log = root.get(CHANGES_KEY)
    if log is None or since > until:
        return None
    names = set(log.values(since + 1, until))
    # Every serial in between must be there, or something is missing.
    if len(log.keys(since + 1, until)) != until - since:
        return None
    return names
