"""Where tenants' storages live: one module per storage kind.

A backend turns a tenant name into storage settings (recorded in the
catalog), makes a storage factory from settings, and copies data in and out
in ZODB's FileStorage format, which snapshots and archives use whatever the
storage kind.  See ``multidb.interfaces.IBackend``.

The backends form a registry keyed by storage kind, the type of the
``<tenants>`` template's storage section (``filestorage``,
``relstorage``): the entry points of the group ``multidb.backends``
(read with ``importlib.metadata``, as zodburi reads its resolvers), each
named after its kind and naming a backend class; multidb's own two are
declared in its ``setup.cfg``, and another package ships a backend by
declaring one there.  A backend class builds itself from the template,
``from_template(template)`` (a ``multidb.sections.TenantTemplate``), and
raises ``ValueError`` naming the key for a template it cannot honour: the
configuration then fails at the ``<tenants>`` section.
"""
import importlib.metadata
import pkgutil

#: The entry-point group of the backends: name = storage kind, value =
#: the backend class (``package.module:Class``).
ENTRY_POINT_GROUP = 'multidb.backends'
# The kinds whose backends come with multidb: used when no entry point
# names them (multidb run from a source tree that was never installed, or
# installed without its metadata), so that its own kinds always work.
_OWN = {'filestorage': 'multidb.backends.filestorage:FileStorageBackend',
        'relstorage': 'multidb.backends.relstorage:RelStorageBackend'}


def _entry_points():
    try:
        return importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    except TypeError:  # pragma: no cover (Python < 3.10)
        return importlib.metadata.entry_points().get(ENTRY_POINT_GROUP, ())


def backend_kinds():
    """The storage kinds that have a backend, sorted."""
    return sorted({ep.name for ep in _entry_points()} | set(_OWN))


def backend_class(kind):
    """The backend class of a storage kind, from the entry points of
    ``multidb.backends``.  Raises ``ValueError`` naming the kind and the
    group when none is declared, or two different ones."""
    found = {ep.value: ep for ep in _entry_points() if ep.name == kind}
    if not found:
        if kind in _OWN:
            return pkgutil.resolve_name(_OWN[kind])
        known = ', '.join(sorted(set(backend_kinds()) | set(_OWN)))
        raise ValueError(
            f"no backend for the storage kind {kind!r}: tenants are made by"
            f" the backends of the entry-point group {ENTRY_POINT_GROUP!r}"
            f" (installed: {known})")
    if len(found) > 1:
        raise ValueError(
            f"two backends for the storage kind {kind!r} in the"
            f" entry-point group {ENTRY_POINT_GROUP!r}:"
            f" {' and '.join(sorted(found))}")
    ep, = found.values()
    return ep.load()
