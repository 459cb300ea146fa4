"""Tenant isolation: no reference from one tenant's database into
another's.

A ZODB object may refer to objects of other databases of its
multi-database (``xrefs``).  Between tenants that is a leak: one tenant's
data would reach into another's, survive its drop as a dangling
reference, and travel in its archive.  ``Tenants(isolation=True)`` (the
default; the ``isolation`` key of ``<tenants>``) refuses such a commit
through the collection's ``reference_checks`` hook; references into the
configured, shared databases stay allowed.  ``check_references`` finds
the references stored before (or with isolation off).
"""
import logging
from typing import Any
from typing import Dict
from typing import Iterable
from typing import Iterator
from typing import Optional

import transaction

from multidb.errors import CrossTenantReference
from multidb.glue import referenced_databases

log = logging.getLogger(__name__)


def _describe(obj):
    oid = getattr(obj, '_p_oid', None)
    what = f"{type(obj).__module__}.{type(obj).__qualname__}"
    if oid is None:
        return f"a new {what} object"
    return f"the {what} object oid 0x{int.from_bytes(oid, 'big'):x}"


class Isolation:
    """A mixin of ``Tenants``; needs ``collection``, ``catalog``,
    ``isolation``, ``_declared`` and ``list()``."""

    def _check_reference(self, source: str, target: str, obj: Any) -> None:
        # The collection calls this for each cross-database reference a
        # commit stores (ICollection.reference_checks).  _declared holds
        # the tenants this object declared: a database open in the
        # collection under a tenant's name is one of them.
        if self.isolation and source != target and \
                source in self._declared and target in self._declared:
            raise CrossTenantReference(source, target, _describe(obj))

    def check_references(self, names: Optional[Iterable[str]] = None
                         ) -> Iterator[Dict[str, Any]]:
        """See ``ITenants.check_references``: the references stored in the
        tenants' databases (all tenants, or names) that point into other
        tenants' databases, one dict per referring object (``tenant``,
        ``oid`` as hex, ``targets``: the tenants referred to).  Reads every
        current record of each tenant (the storage's
        ``record_iternext``); opens each tenant's database in turn,
        within ``max_open``."""
        tenants = {r.name for r in self.list()}
        selected = sorted(tenants) if names is None else list(names)
        for name in selected:
            self.get(name)            # NoSuchTenant for a wrong name
            tm = transaction.TransactionManager()
            # A member of a group keeps the database open (never evicted
            # while its records are read).
            with self.collection.group(tm) as group:
                try:
                    storage = group.get_connection(name).db().storage
                    for oid, data in _current_records(storage):
                        targets = referenced_databases(data) & tenants
                        targets.discard(name)
                        if targets:
                            yield {'tenant': name,
                                   'oid': f"0x{int.from_bytes(oid, 'big'):x}",
                                   'targets': sorted(targets)}
                finally:
                    tm.abort()


def _current_records(storage):
    """(oid, pickle) of every object's current record in storage, through
    the public IStorageCurrentRecordIteration."""
    next_ = None
    while True:
        oid, tid, data, next_ = storage.record_iternext(next_)
        if data:
            yield oid, data
        if next_ is None:
            return
