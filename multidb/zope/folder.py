"""The folder above the tenants' mount points (needs Zope).

Zope mounts a database where a ``Products.ZODBMountPoint``
``MountedObject`` is stored, one per mount point, added once through the
ZMI.  Tenants come and go at run time, so :class:`TenantsFolder` stores
none: traversing to a tenant's name makes a ``MountedObject`` for the
tenant's mount path on the fly, which Zope's own code then resolves
through Zope's database table (see :mod:`multidb.zope`).
"""
import logging

import transaction
from Acquisition import aq_base
from App.config import getConfiguration
from OFS.Folder import Folder
from Products.ZODBMountPoint.MountedObject import MountedObject
from ZPublisher.interfaces import UseTraversalDefault

log = logging.getLogger(__name__)


def _owner():
    """The ``multidb.zope.ZopeCollection`` that Zope's table looks names
    up in (once Zope opened its root database), or None."""
    dbtab = getattr(getConfiguration(), 'dbtab', None)
    return getattr(getattr(dbtab, 'db_factories', None), 'owner', None)


class TenantsFolder(Folder):
    """A folder whose items include every tenant of the collection,
    mounted (its own items come first)."""

    meta_type = 'multidb Tenants Folder'
    zmi_icon = 'fas fa-database'

    def _tenant(self, name):
        """The mounted root object of tenant name (wrapped in self), or
        None when name is none of the collection's tenants."""
        owner = _owner()
        if owner is None or owner.tenant_mount is None:
            return None
        path = '/'.join(self.getPhysicalPath())
        if path != owner.tenant_mount.container:
            return None   # a copy elsewhere mounts nothing
        mount_path = owner.tenant_mount.path(name)
        if owner.tenant_mount.name(mount_path) != name or \
                not owner.is_tenant(name):
            return None
        jar = self._p_jar
        if jar is not None:
            # The tenant's connection joins this one's (the request's
            # connections), where MountedObject finds it.  Opened here, a
            # transient error (TooManyOpen) reaches Zope, which publishes
            # the request again, without MountedObject's error log.
            jar.get_connection(name)
        # Not stored: its jar is this folder's (MountedObject takes its
        # parent's when it has none).
        mount = MountedObject(mount_path)
        mounted = mount.__of__(self)
        if aq_base(mounted) is mount:
            # Mounting failed; MountedObject keeps (and logs) the error
            # and hands out itself.  Raised here: a transient error (a
            # ConflictError making the mounted folder) makes Zope publish
            # the request again.
            raise mount.mount_error_()[1]
        return mounted

    def __bobo_traverse__(self, request, name):
        # Publishing and (un)restrictedTraverse.
        if self.hasObject(name):
            raise UseTraversalDefault
        mounted = self._tenant(name)
        if mounted is None:
            raise UseTraversalDefault
        return mounted

    def __getitem__(self, name):
        try:
            return super().__getitem__(name)
        except KeyError:
            mounted = self._tenant(name)
            if mounted is None:
                raise
            return mounted


def ensure_tenants_folder(db, path):
    """Make the folders of path (``/tenants``) in db's Zope application
    when missing, the last one a :class:`TenantsFolder`; committed at
    once.  An object of another class already there is left alone (and
    logged): it mounts no tenant."""
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    try:
        container = conn.root()['Application']
        parts = [p for p in path.split('/') if p]
        for i, part in enumerate(parts):
            ob = container._getOb(part, None)
            if ob is None:
                klass = TenantsFolder if i == len(parts) - 1 else Folder
                ob = klass(part)
                ob.title = ''
                container._setObject(part, ob, set_owner=0,
                                     suppress_events=True)
                ob = container._getOb(part)
            container = ob
        if not isinstance(aq_base(container), TenantsFolder):
            log.warning("%s is a %s, not a TenantsFolder: tenants are not"
                        " mounted there", path, type(aq_base(container))
                        .__name__)
        tm.commit()
    finally:
        tm.abort()
        conn.close()
