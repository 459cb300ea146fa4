"""Where tenants' storages live: one module per storage kind.

A backend turns a tenant name into storage settings (recorded in the
catalog), makes a storage factory from settings, and copies data in and out
in ZODB's FileStorage format, which snapshots and archives use whatever the
storage kind.  See ``multidb.interfaces.IBackend``.
"""
