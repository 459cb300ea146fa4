"""Small helpers shared by the tests."""


def _coll(where):
    # A Collection, or Tenants (whose collection is meant).
    return getattr(where, 'collection', where)


def root_dict(where, name):
    """The root of database name as a dict, read in a transaction."""
    with _coll(where).transaction() as g:
        return dict(g.root(name))


def update_root(where, name, **values):
    """Set values in the root of database name, in a transaction."""
    with _coll(where).transaction() as g:
        g.root(name).update(values)


# A FileStorage catalog and FileStorage tenants under ./data (the tests
# run in their own folder); keys: more keys of the <tenants> section.
_TENANTS_CONFIG = """
%define data ./data
<multidb>
  <zodb catalog>
    <filestorage>
      path $data/catalog.fs
    </filestorage>
  </zodb>
  <tenants>
    KEYS
    <filestorage>
      path $data/tenants/{name}.fs
    </filestorage>
  </tenants>
</multidb>
"""


def tenants_config(keys=''):
    """The text of a configuration with FileStorage tenants."""
    return _TENANTS_CONFIG.replace('KEYS', keys)

