"""Where tenants' storages live: one module per storage kind.

A backend turns a tenant name into storage settings (recorded in the
catalog), makes a storage factory from settings, and copies data in and out
in ZODB's FileStorage format, which snapshots and archives use whatever the
storage kind.  See ``multidb.interfaces.IBackend``.
"""


def backend_from_template(template):
    """The backend for a configured ``<tenants>`` template
    (``multidb.sections.TenantTemplate``), or None when its storage kind has
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
    if template.kind == 'relstorage':
        from multidb.backends.relstorage import RelStorageBackend
        from relstorage.options import Options
        config = template.storage.config
        adapter = config.adapter
        if type(adapter).__name__ != 'PostgreSQLAdapterFactory':
            return None
        # RelStorage's own reading of its section, less what is per
        # storage (its adapter and name).
        options = Options.copy_valid_options(config).__dict__
        options = {k: v for k, v in options.items()
                   if k not in ('adapter', 'name', 'driver')
                   and v != getattr(Options, k, object())}
        return RelStorageBackend(
            adapter.config.dsn, admin_dsn=template.admin_dsn,
            template=template.template_database,
            snapshot_dir=template.snapshot_dir, **options)
    return None
