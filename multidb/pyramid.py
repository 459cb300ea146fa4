"""Pyramid: ``config.include('multidb.pyramid')`` (see ``docs/web.rst``).

In the style of pyramid_zodbconn: the collection is built once from the
settings and kept as ``config.registry.multidb``; each request gets
``request.dbgroup`` (a group of the collection on pyramid_tm's
``request.tm``, closed by a finished callback), ``request.tenant`` (the
tenant's name, by multidb.wsgi's resolvers) and ``request.tenant_root``.

Settings:

``multidb.config``
    One or more configuration files or folders, whitespace separated
    (``multidb.config.collectionFromFiles``).
``multidb.define.NAME``
    ZConfig ``%define`` values for those files (``$NAME``).
``zodbconn.uri``, ``zodbconn.uri.NAME``
    Instead of ``multidb.config``: databases as zodburi URIs, each a
    ``<zodburi>`` section (the unnamed one is named by its URI's
    ``database_name``, else ``unnamed``).
``multidb.tenant_from``
    ``host`` (the default), ``path`` or ``header``.
``multidb.tenant_header``
    The header of ``tenant_from = header`` (``X-Tenant``).

Retries are pyramid_retry's (pyramid_tm marks ConflictError and other
transient errors retryable); nothing here retries.

Pyramid is imported only where used (the ``[pyramid]`` extra), so that
what the package imports when loaded comes with ``pip install .``.
"""
import atexit
import logging
import weakref

import transaction
from transaction.interfaces import TransientError
from ZODB.POSException import ConnectionStateError

from multidb.config import collectionFromFiles
from multidb.config import collectionFromString
from multidb.errors import NoSuchTenant
from multidb.errors import UnknownDatabase
from multidb.wsgi import known
from multidb.wsgi import report_leaked_group
from multidb.wsgi import tenant_from_header
from multidb.wsgi import tenant_from_host
from multidb.wsgi import tenant_from_path
from multidb.wsgi import unavailable

CONFIG = 'multidb.config'
DEFINE = 'multidb.define.'
URI = 'zodbconn.uri'
TENANT_FROM = 'multidb.tenant_from'
TENANT_HEADER = 'multidb.tenant_header'

# Where the path resolver leaves the tenant's name, once per environ
# (pyramid_retry runs every attempt on the same environ).
_ENVIRON_KEY = 'multidb.tenant'


def _configuration_error(message):
    from pyramid.exceptions import ConfigurationError
    return ConfigurationError(message)


def _not_found(message):
    from pyramid.httpexceptions import HTTPNotFound
    return HTTPNotFound(message)


log = logging.getLogger(__name__)


def _unavailable_view(exc, request):
    """An exception view: a database that cannot be reached (its server
    down, after pyramid_retry's attempts; see multidb.wsgi.unavailable)
    is a 503 with Retry-After, not a 500."""
    if not unavailable(exc) or (isinstance(exc, TransientError) and
                                not _last_attempt(request)):
        raise exc    # not ours, or pyramid_retry tries again
    from pyramid.response import Response
    text = ' '.join(str(exc).split())
    log.warning("request %s: the database cannot be reached (%s): 503",
                request.path, f"{type(exc).__name__}: {text}" if text
                else type(exc).__name__)
    response = Response(
        "Service unavailable: the tenant's database cannot be reached"
        " now\n", status=503, content_type='text/plain')
    response.headers['Retry-After'] = '1'
    return response


def _last_attempt(request):
    # pyramid_retry's attempts (none: this is the only one).
    environ = request.environ
    attempt, attempts = environ.get('retry.attempt'), \
        environ.get('retry.attempts')
    return attempt is None or attempts is None or attempt + 1 >= attempts


def _unavailable_contexts():
    from multidb.errors import ServerUnavailable
    from multidb.errors import TooManyOpen
    contexts = [ServerUnavailable, TooManyOpen]
    try:
        from ZEO.Exceptions import ClientDisconnected
        contexts.append(ClientDisconnected)
    except ImportError:  # pragma: no cover (ZEO is a dependency)
        pass
    try:
        import psycopg2
        contexts.append(psycopg2.Error)
    except ImportError:  # pragma: no cover (the [postgresql] extra)
        pass
    return contexts


def _defines(settings):
    return {k[len(DEFINE):]: v for k, v in settings.items()
            if k.startswith(DEFINE) and len(k) > len(DEFINE)}


def _uris_config(settings):
    """The configuration text of zodbconn.uri[.NAME] settings, or None."""
    sections = []
    for key, uri in sorted(settings.items()):
        if key == URI:
            name = ''
        elif key.startswith(URI + '.'):
            name = key[len(URI) + 1:]
            if not name:
                raise _configuration_error(f"{key} names no database")
        else:
            continue
        uri = str(uri).strip().replace('$', '$$')
        sections.append(f"<zodburi {name}>\n  uri {uri}\n</zodburi>\n")
    return ''.join(sections) or None


def collection_from_settings(settings):
    """The collection that the settings describe (see the module)."""
    paths = (settings.get(CONFIG) or '').split()
    uris = _uris_config(settings)
    if paths and uris:
        raise _configuration_error(
            f"give {CONFIG} or {URI} settings, not both")
    if paths:
        return collectionFromFiles(paths, defines=_defines(settings))
    if uris:
        return collectionFromString(uris, defines=_defines(settings))
    raise _configuration_error(
        f"multidb.pyramid needs a {CONFIG} or a {URI} setting")


def _resolver(settings):
    how = (settings.get(TENANT_FROM) or 'host').strip().lower()
    if how == 'host':
        return tenant_from_host
    if how == 'path':
        return tenant_from_path
    if how == 'header':
        return tenant_from_header(
            (settings.get(TENANT_HEADER) or 'X-Tenant').strip())
    raise _configuration_error(
        f"{TENANT_FROM} must be host, path or header, not {how!r}")


# -- request properties ---------------------------------------------------------

def dbgroup(request):
    """A group of the collection on ``request.tm``, closed when the
    request is finished (what is left uncommitted is aborted)."""
    tm = request.tm
    if isinstance(tm, transaction.ThreadTransactionManager):
        tm = tm.manager   # this thread's own: one group per thread
    group = request.registry.multidb.group(tm)

    def close(request):
        try:
            group.close()
        except ConnectionStateError:
            tm.abort()
            group.close()
    request.add_finished_callback(close)
    return group


def tenant(request):
    """The request's tenant's name; HTTPNotFound when there is none or
    it is unknown."""
    environ = request.environ
    if _ENVIRON_KEY in environ:
        name = environ[_ENVIRON_KEY]
    else:
        name = request.registry.multidb_resolve(environ)
    if not name or not known(request.registry.multidb, name):
        raise _not_found("Unknown tenant")
    return name


def tenant_root(request):
    """The root of the tenant's database in ``request.dbgroup``."""
    name = request.tenant
    try:
        return request.dbgroup.root(name)
    except (UnknownDatabase, NoSuchTenant) as e:
        if getattr(e, 'name', None) == name:   # dropped meanwhile
            raise _not_found("Unknown tenant")
        raise


def tween_factory(handler, registry):
    """The tween of ``multidb.pyramid`` (added by ``includeme``, under
    Pyramid's ingress): with ``tenant_from = path`` it moves the first
    path segment to SCRIPT_NAME before the routes are matched, and it
    logs a group the request opened on its thread's transaction manager
    (besides ``request.dbgroup``) and left open.  A tween rather than
    event subscribers: any subscriber makes Pyramid emit four events per
    request."""
    collection = registry.multidb
    shift = registry.multidb_resolve is tenant_from_path

    def tween(request):
        environ = request.environ
        if shift and _ENVIRON_KEY not in environ:
            environ[_ENVIRON_KEY] = tenant_from_path(environ)
        before = collection.group_of()
        try:
            return handler(request)
        finally:
            report_leaked_group(collection, before, lambda: request.path,
                                own=request.__dict__.get('dbgroup'))
    return tween


# -- shutdown -------------------------------------------------------------------

def _close_at_exit(ref):
    collection = ref()
    if collection is not None:
        collection.close()


def includeme(config):
    """Build the collection (``config.registry.multidb``) and add the
    request properties ``dbgroup``, ``tenant`` and ``tenant_root``;
    includes pyramid_tm."""
    from pyramid.tweens import INGRESS
    config.include('pyramid_tm')
    settings = config.registry.settings
    resolve = _resolver(settings)
    registry = config.registry
    if getattr(registry, 'multidb', None) is None:
        registry.multidb = collection_from_settings(settings)
        # Closed at exit unless the application closes it first (the
        # registry keeps it; the weak reference does not).
        atexit.register(_close_at_exit, weakref.ref(registry.multidb))
    registry.multidb_resolve = resolve
    config.add_request_method(dbgroup, 'dbgroup', reify=True)
    config.add_request_method(tenant, 'tenant', reify=True)
    config.add_request_method(tenant_root, 'tenant_root', reify=True)
    config.add_tween('multidb.pyramid.tween_factory', under=INGRESS)
    for context in _unavailable_contexts():
        config.add_exception_view(_unavailable_view, context=context)
