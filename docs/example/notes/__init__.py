"""notes: a small Pyramid application with one ZODB database per tenant.

Each tenant (``/acme/...``, ``/globex/...``: the first path segment names
it) keeps its own notes in its own database; ``multidb.pyramid`` finds the
tenant, opens its database in the request's transaction, and pyramid_tm
commits.  See ``docs/example.rst``; run it with ``pserve development.ini``
from ``docs/example``.
"""
from pyramid.config import Configurator

#: Settings the application sets unless the configuration does.
DEFAULTS = {
    # The tenant is the first path segment: /acme/notes.
    'multidb.tenant_from': 'path',
    # A transaction manager per request (pyramid_tm), not the thread's.
    'tm.manager_hook': 'pyramid_tm.explicit_manager',
    # A ConflictError (two requests adding a note to one tenant at once)
    # runs the request again, up to this many attempts in all.
    'retry.attempts': '5',
}


def main(global_config, **settings):
    """The WSGI application (PasteDeploy's ``app_factory``): settings
    ``multidb.config`` (the ZConfig file) and ``multidb.define.NAME``
    (its ``%define`` values) say where the databases are."""
    for key, value in DEFAULTS.items():
        settings.setdefault(key, value)
    with Configurator(settings=settings) as config:
        config.include('pyramid_retry')
        config.include('multidb.pyramid')
        config.add_route('notes', '/notes')
        config.add_route('notes_json', '/notes.json')
        config.scan('.views')
    return config.make_wsgi_app()
