"""Packing tenants: ``Tenants.pack``.

:class:`Packing`, a part of ``multidb.tenants.lifecycle.Tenants``.  See
``multidb.interfaces.ITenants.pack``.

The pack-gc trap.  Packing a database with garbage collection (ZODB's
default, FileStorage's and RelStorage's ``pack-gc true``) deletes every
object its own root does not reach, and a database's root knows nothing
of the other databases: an object of tenant A that only database B
references (a cross-database reference) is deleted, and B's reference
dangles (``POSKeyError``).  ZODB says so (``ZODB/cross-database-
references.rst``).  In a collection there is always more than one
database (the catalog, the tenants, the configured ones), so ``pack``
never collects garbage, whatever the template's ``pack-gc`` says: it
drops old revisions (and the records of deleted objects), nothing that is
current.  Garbage across databases is collected by ``multidb gc``
(``multidb.exporting.collect_garbage``), which follows references across
every database, then a pack reclaims the space.

Packing is not transactional, so it does not go through the runners of
transactional work: each tenant is packed by one worker thread, ``jobs``
at a time, and a failure is reported for its tenant while the others go
on.
"""
import concurrent.futures
import dataclasses
import time
from typing import Any
from typing import Callable
from typing import Dict
from typing import Iterable
from typing import List
from typing import Optional

import transaction

from multidb.errors import InvalidInput
from multidb.tenants.catalog import TenantRecord


@dataclasses.dataclass(frozen=True)
class PackResult:
    """What packing one tenant did: its size on disk before and after
    (None when unknown), the seconds it took, or the error that stopped
    it (then nothing was reclaimed)."""

    name: str
    before: Optional[int]
    after: Optional[int]
    seconds: float
    error: Optional[str] = None

    @property
    def reclaimed(self) -> Optional[int]:
        """Bytes given back (before - after), None when unknown.  A
        PostgreSQL database gives its space back to the system only after
        a ``VACUUM FULL``; until then, to itself."""
        if self.before is None or self.after is None:
            return None
        return self.before - self.after

    def to_json(self) -> Dict[str, Any]:
        return {'name': self.name, 'before': self.before,
                'after': self.after, 'reclaimed': self.reclaimed,
                'seconds': round(self.seconds, 3), 'error': self.error}


def check_days(days: Any) -> float:
    """days as a number of days, 0 or more; ``InvalidInput`` else."""
    try:
        value = float(days)
    except (TypeError, ValueError):
        raise InvalidInput('number of days', days,
                           'not a number') from None
    if not value >= 0 or value == float('inf'):
        raise InvalidInput('number of days', days,
                           'must be 0 or more (and finite)')
    return value


def check_jobs(jobs: Any) -> int:
    """jobs as a count of workers, 1 or more; ``InvalidInput`` else."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise InvalidInput('number of jobs', jobs,
                           'must be a whole number, 1 or more')
    return jobs


class Packing:
    """``pack`` (see the module).

    A part of ``Tenants``: it uses ``collection``, ``records()``,
    ``_record()``, ``get()``, ``backend_for()``, ``_declare()`` and
    ``_hold()`` (the name's lock).
    """

    def pack(self, names: Optional[Iterable[str]] = None, *,
             days: float = 0, jobs: int = 1,
             progress: Optional[Callable[[int], Any]] = None
             ) -> List[PackResult]:
        """See ``ITenants.pack``."""
        days = check_days(days)
        jobs = check_jobs(jobs)
        max_open = getattr(self.collection, 'max_open', None)
        if max_open:
            # Each worker holds its tenant's database open for the pack;
            # more workers than the collection may keep open (the catalog
            # needs one too) would only wait for each other's slots.
            jobs = max(1, min(jobs, max_open - 1))
        if names is None:
            records = list(self.records())
        else:
            records = self._named_records(names)
        # One time for every tenant: "days ago" means the same moment.
        t = time.time() - days * 86400
        def one(rec):
            result = self._pack_one(rec, t)
            if progress is not None:
                progress(1)
            return result
        if jobs == 1 or len(records) < 2:
            return [one(rec) for rec in records]
        with concurrent.futures.ThreadPoolExecutor(
                max_workers=jobs, thread_name_prefix='multidb-pack') as pool:
            return list(pool.map(one, records))

    def _pack_one(self, rec: TenantRecord, t: float) -> PackResult:
        start = time.monotonic()
        before = after = None
        try:
            # Serialized with the lifecycle operations on the name (a
            # revert or restore replaces the data being packed), here and
            # in other processes; the record read again under the lock
            # (dropped, or moved, meanwhile).
            with self._hold(rec.name):
                rec = self.get(rec.name)
                backend = self.backend_for(rec)
                before = backend.size(rec.settings)
                after = self._pack_held(rec, backend, t)
        except Exception as e:
            detail = ' '.join(str(e).split())
            return PackResult(rec.name, before, None,
                              time.monotonic() - start,
                              f"{type(e).__name__}: {detail}" if detail
                              else type(e).__name__)
        return PackResult(rec.name, before, after, time.monotonic() - start)

    def _pack_held(self, rec: TenantRecord, backend: Any,
                   t: float) -> Optional[int]:
        """Pack rec's data; its size after."""
        # The tenant's database, held by a group for the pack: the
        # collection does not close a database a group uses (to make
        # room for others), and a FileStorage is packed by the process
        # that has it open.  A transaction manager of its own: the
        # caller's transaction is not touched.
        # Under _hold the collection does not resolve the name itself.
        self._declare(rec)
        tm = transaction.TransactionManager()
        group = self.collection.group(tm)
        try:
            db = group.get_connection(rec.name).db()
            backend.pack(rec.settings, db, t, gc=False)
        finally:
            tm.abort()
            group.close()
        return backend.size(rec.settings)
