"""Where tenants' storages live: one module per storage kind.

A backend turns a tenant name into storage settings (recorded in the
catalog), makes a storage factory from settings, and copies data in and out
in ZODB's FileStorage format, which snapshots and archives use whatever the
storage kind.  See ``multidb.interfaces.IBackend``.
"""


def backend_from_template(template):
    """The backend for a configured ``<tenants>`` template
    (``multidb.config.TenantTemplate``), or None when its storage kind has
    no lifecycle backend."""
    if template.kind == 'filestorage':
        from multidb.backends.filestorage import FileStorageBackend
        config = template.storage.config
        options = {}
        for key in ('quota', 'pack_gc', 'pack_keep_old'):
            value = getattr(config, key, None)
            if value is not None:
                options[key] = value
        return FileStorageBackend(config.path, **options)
    return None
