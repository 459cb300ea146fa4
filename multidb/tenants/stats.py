"""What each tenant takes and how it is used: ``Tenants.stats``.

:class:`Stats`, a part of ``multidb.tenants.lifecycle.Tenants``.  See
``multidb.interfaces.ITenants.stats``.

Two prices.  The cheap numbers are what a dashboard polls: the catalog's
records (read a batch at a time), the size from the backend (a ``stat``
of the files, ``pg_database_size``), whether the tenant is open in this
process (the collection's ``peek``, which never opens), and when it was
last opened, where the storage itself tells (a FileStorage's lock file is
rewritten at each open).  No tenant is opened, and nothing is written:
recording "last opened" in the catalog would be a catalog write on every
open, on the request path, and a conflict between processes opening
tenants at once.  The expensive numbers, the object count and the time of
the last transaction, come with ``full``: each tenant's storage is read
(the open database when the tenant is open here, else the file read-only
or a SQL count).
"""
import dataclasses
import datetime
from typing import Any
from typing import Dict
from typing import Iterable
from typing import List
from typing import Optional

from persistent.TimeStamp import TimeStamp
from ZODB.utils import z64

from multidb.errors import InvalidInput
from multidb.tenants.catalog import TenantRecord

UTC = datetime.timezone.utc

#: The orders of ``sort_stats``: the key, and whether the largest (the
#: latest) comes first.  Unknown values (None) go last.
SORT_KEYS = {
    'name': ('name', False),
    'size': ('size', True),
    'objects': ('objects', True),
    'last-transaction': ('last_transaction', True),
}
#: The orders that need the expensive numbers (``full``).
FULL_SORT_KEYS = frozenset(['objects', 'last-transaction'])


def _iso(t):
    return None if t is None else t.isoformat()


def tid_time(tid: Optional[bytes]) -> Optional[datetime.datetime]:
    """The time of a transaction id (UTC), None for no transaction."""
    if not tid or tid == z64:
        return None
    return datetime.datetime.fromtimestamp(TimeStamp(tid).timeTime(), UTC)


@dataclasses.dataclass(frozen=True)
class TenantStats:
    """One tenant's numbers.  ``objects`` and ``last_transaction`` are
    None unless asked for (``full``); ``last_opened`` is None where the
    storage does not tell (PostgreSQL); ``error`` says why a number is
    missing (a storage gone, a server away)."""

    name: str
    kind: str
    #: Bytes on disk (files, or the server database), snapshots apart.
    size: Optional[int]
    #: Open in this process right now (another process is not seen).
    open: bool
    created: Optional[datetime.datetime]
    last_opened: Optional[datetime.datetime] = None
    snapshots: int = 0
    objects: Optional[int] = None
    last_transaction: Optional[datetime.datetime] = None
    error: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        return {'name': self.name, 'kind': self.kind, 'size': self.size,
                'open': self.open, 'created': _iso(self.created),
                'last_opened': _iso(self.last_opened),
                'snapshots': self.snapshots, 'objects': self.objects,
                'last_transaction': _iso(self.last_transaction),
                'error': self.error}


def sort_stats(rows: Iterable[TenantStats],
               key: str = 'name') -> List[TenantStats]:
    """rows in the order key names (``SORT_KEYS``): by name A to Z, the
    others largest or latest first, unknown values last, ties by name.
    Raises ``InvalidInput`` for another key."""
    if key not in SORT_KEYS:
        raise InvalidInput('sort key', key,
                           f"choose one of {', '.join(SORT_KEYS)}")
    attr, descending = SORT_KEYS[key]
    rows = sorted(rows, key=lambda r: r.name)
    if attr == 'name':
        return rows
    known = [r for r in rows if getattr(r, attr) is not None]
    unknown = [r for r in rows if getattr(r, attr) is None]
    known.sort(key=lambda r: getattr(r, attr), reverse=descending)
    return known + unknown


class Stats:
    """``stats`` (see the module).

    A part of ``Tenants``: it uses ``collection``, ``backend_for()``,
    ``records()`` and ``_record()``.  It takes no name lock: a number
    read while a tenant is reverted or restored is the old data's or the
    new's.
    """

    #: How many records ``stats`` reads (and sizes, in one call of the
    #: backend's ``sizes``) at a time.
    stats_batch = 1000

    def stats(self, names: Optional[Iterable[str]] = None, *,
              full: bool = False) -> List[TenantStats]:
        """See ``ITenants.stats``."""
        if names is None:
            records = self.records(batch=self.stats_batch)
        else:
            records = self._named_records(names)
        out = []
        batch = []
        for rec in records:
            batch.append(rec)
            if len(batch) == self.stats_batch:
                out += self._stats_of(batch, full)
                batch = []
        if batch:
            out += self._stats_of(batch, full)
        return out

    def _stats_of(self, records: List[TenantRecord],
                  full: bool) -> List[TenantStats]:
        errors = {}
        ours = []
        for rec in records:
            try:
                self.backend_for(rec)
                ours.append(rec)
            except ValueError as e:   # a record of another storage kind
                errors[rec.name] = _one_line(e)
        try:
            sizes = dict(zip([rec.name for rec in ours], self.backend.sizes(
                [rec.settings for rec in ours])))
        except Exception as e:   # a server away: say so for each tenant
            sizes = {}
            error = _one_line(e)
            errors.update((rec.name, error) for rec in ours)
        return [self._stats_one(rec, sizes.get(rec.name),
                                errors.get(rec.name), full)
                for rec in records]

    def _stats_one(self, rec: TenantRecord, size: Optional[int],
                   error: Optional[str], full: bool) -> TenantStats:
        backend = self.backend
        db = self.collection.peek(rec.name)
        opened = None
        if error is None:
            try:
                opened = backend.last_opened(rec.settings)
            except Exception as e:
                error = _one_line(e)
        if size is None and error is None:
            error = f"storage missing: {backend.describe(rec.settings)}"
        stats = TenantStats(
            name=rec.name, kind=rec.kind, size=size, open=db is not None,
            created=rec.created,
            last_opened=None if opened is None
            else datetime.datetime.fromtimestamp(opened, UTC),
            snapshots=len(rec.snapshots), error=error)
        if not full or size is None:
            return stats
        try:
            objects, tid = backend.contents(rec.settings, db)
        except Exception as e:
            return dataclasses.replace(stats, error=_one_line(e))
        return dataclasses.replace(stats, objects=objects,
                                   last_transaction=tid_time(tid))


def _one_line(error):
    detail = ' '.join(str(error).split())
    return f"{type(error).__name__}: {detail}" if detail \
        else type(error).__name__
