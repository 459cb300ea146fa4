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
