"""A WSGI middleware: one tenant per request (see ``docs/web.rst``).

``TenantMiddleware(app, collection)`` finds the request's tenant (from
the host name, the first path segment, a header, or a function), opens a
group of the collection on a transaction manager of the request, hands it
to the application in the environ (``multidb.group``, ``multidb.tenant``,
``transaction.manager``), commits or aborts, runs the request again on a
transient error, and always closes the group.  Framework-free: it needs
only ``transaction`` and multidb.
"""
import io
import logging
import sys
import weakref

import transaction
from ZODB.POSException import ConnectionStateError

from multidb.errors import NoSuchTenant
from multidb.errors import NotConfigured
from multidb.errors import ServerUnavailable
from multidb.errors import TooManyOpen
from multidb.errors import UnknownDatabase
from multidb.retry import AttemptWithBackoff
from multidb.retry import lost_connection

log = logging.getLogger(__name__)

#: The largest request body buffered so that a request can run again
#: (bytes); a larger one runs once.
MAX_BODY = 1 << 20

_NOT_FOUND = b"Unknown tenant\n"


def tenant_from_host(environ):
    """The first label of the Host header (``acme.example.com`` ->
    ``acme``), lower case; None for a host of one label (``localhost``)
    or an IP address."""
    host = environ.get('HTTP_HOST') or environ.get('SERVER_NAME') or ''
    if host.startswith('['):
        return None   # an IPv6 address
    host = host.split(':', 1)[0].rstrip('.').lower()
    label, dot, rest = host.partition('.')
    if not dot or not label or host.replace('.', '').isdigit():
        return None
    return label


def tenant_from_path(environ):
    """The first segment of PATH_INFO, moved to SCRIPT_NAME
    (``/acme/orders`` -> ``acme``, the application sees ``/orders``)."""
    path = environ.get('PATH_INFO') or ''
    if not path.startswith('/'):
        return None
    segment, slash, rest = path[1:].partition('/')
    if not segment:
        return None
    environ['SCRIPT_NAME'] = environ.get('SCRIPT_NAME', '') + '/' + segment
    environ['PATH_INFO'] = slash + rest
    return segment


def tenant_from_header(header):
    """A resolver reading the request header ``header``."""
    key = 'HTTP_' + header.upper().replace('-', '_')

    def resolve(environ):
        return environ.get(key) or None
    return resolve


def known(collection, name):
    """Is name a tenant of the collection?  With tenants, one of theirs
    (``ITenants.is_tenant``: a database that is not a tenant, such as the
    catalog, is never served; no catalog read per request); without, a
    database of the collection."""
    try:
        tenants = collection.tenants
    except NotConfigured:
        return name in collection
    return tenants.is_tenant(name)


def report_leaked_group(collection, before, path, own=None):
    """Log (warning, logger ``multidb.wsgi``) a group that a request
    opened on its thread's default transaction manager and left open:
    the group of that manager now, unless it is before (the one there
    when the request began: a long-lived group of the thread is no leak)
    or own (the integration's own group for the request, closed next);
    path: the request's, or a callable returning it.
    The group is left as it is (what it holds is the application's); its
    stack is logged when the collection tracks groups.  Returns whether
    one was found."""
    group = collection.group_of()
    if group is None or group is before or group is own:
        return False
    if callable(path):
        path = path()       # only now: a request's path costs something
    where = group.opened_at
    log.warning(
        "request %s left a group open: %r, on its thread's transaction"
        " manager; %s", path, group,
        f"it was opened at:\n{where}" if where else
        "set MULTIDB_TRACK_GROUPS=1 to log where groups are opened")
    return True


def default_commit_veto(environ, status, headers):
    """Abort the transaction of a response whose status is 5xx."""
    return status.startswith('5')


_UNAVAILABLE = b"Service unavailable: the tenant's database cannot be" \
    b" reached now\n"


def unavailable(error):
    """Does error mean that the database cannot be reached now (its
    server is down or unreachable, or every database slot is busy), so
    that the request deserves a 503, not a 500?  Lost PostgreSQL
    connections (``multidb.retry.lost_connection``), ZEO's
    ``ClientDisconnected``, ``ServerUnavailable`` and ``TooManyOpen``."""
    return isinstance(error, (ServerUnavailable, TooManyOpen)) or \
        lost_connection(error)


def _unavailable(start_response, path, error, exc_info=None):
    text = ' '.join(str(error).split())
    log.warning("request %s: the database cannot be reached (%s): 503",
                path, f"{type(error).__name__}: {text}" if text
                else type(error).__name__)
    headers = [('Content-Type', 'text/plain; charset=utf-8'),
               ('Content-Length', str(len(_UNAVAILABLE))),
               ('Retry-After', '1')]
    if exc_info is None:
        start_response('503 Service Unavailable', headers)
    else:
        start_response('503 Service Unavailable', headers, exc_info)
    return [_UNAVAILABLE]


def _not_found(start_response, exc_info=None):
    headers = [('Content-Type', 'text/plain; charset=utf-8'),
               ('Content-Length', str(len(_NOT_FOUND)))]
    if exc_info is None:
        start_response('404 Not Found', headers)
    else:
        start_response('404 Not Found', headers, exc_info)
    return [_NOT_FOUND]


class _Response:
    """The response of one attempt, held back until the transaction ends."""

    __slots__ = ('status', 'headers', 'exc_info', 'body')

    def __init__(self):
        self.status = None
        self.headers = None
        self.exc_info = None
        self.body = []

    def start_response(self, status, headers, exc_info=None):
        if exc_info is None and self.status is not None:
            raise AssertionError("start_response called twice")
        self.status, self.headers, self.exc_info = status, headers, exc_info
        return self.body.append


class _Closer:
    """Ends a streamed request: closes its group once, aborting what the
    application left uncommitted.  Called by the response's close(), or,
    when the server never called it, as the response is garbage
    collected (logged: a leak)."""

    def __init__(self, group, path, before=None):
        self.group = group
        self.path = path
        self.before = before
        self.done = False

    def __call__(self, leaked=False):
        if self.done:
            return
        self.done = True
        group = self.group
        if not leaked:
            report_leaked_group(group._collection, self.before, self.path,
                                own=group)
        if leaked:
            log.warning("the group of request %s was not closed by the"
                        " end of the request: closing it", self.path)
        try:
            try:
                group.close()
            except ConnectionStateError:
                log.warning("request %s left uncommitted changes:"
                            " aborting them", self.path)
                group.transaction_manager.abort()
                group.close()
        except Exception:
            log.exception("closing the group of request %s failed",
                          self.path)
            if not leaked:
                raise


class _Streamed:
    """The application's response, closing the group in close()."""

    def __init__(self, result, closer):
        self._result = result
        self._closer = closer
        self._finalizer = weakref.finalize(self, closer, True)

    def __iter__(self):
        return iter(self._result)

    def close(self):
        self._finalizer.detach()
        try:
            close = getattr(self._result, 'close', None)
            if close is not None:
                close()
        finally:
            self._closer()


class _Chained(io.RawIOBase):
    """Bytes read already, then the rest of a stream."""

    def __init__(self, head, stream):
        self._head = io.BytesIO(head)
        self._stream = stream

    def readable(self):
        return True

    def readinto(self, buffer):
        n = self._head.readinto(buffer)
        if n:
            return n
        data = self._stream.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


class TenantMiddleware:
    """Serve each request from its tenant's database.

    ``resolve``: how to find the tenant's name: ``'host'`` (the first
    label of the Host header), ``'path'`` (the first path segment, moved
    from PATH_INFO to SCRIPT_NAME), ``'header'`` (the request header
    ``header``), or a callable ``resolve(environ)`` returning the name or
    None.  No name, a name the collection's tenants (or, without tenants,
    the collection) do not know, or ``UnknownDatabase``/``NoSuchTenant``
    for the tenant raised by the application: a 404 with a short text
    body.  A database that cannot be reached (its server down, after the
    retries; see ``unavailable``) is a 503 with ``Retry-After``, logged;
    the other tenants are served as ever.

    The application finds ``environ['multidb.group']`` (a group bound to
    the request's transaction manager), ``environ['multidb.tenant']``
    and ``environ['transaction.manager']``.

    With ``manage_transaction`` (the default) the middleware owns the
    transaction: a manager of its own per request; it commits when the
    application returns, and aborts on an exception or when
    ``commit_veto(environ, status, headers)`` says so (default: a 5xx
    status).  The response is buffered (the commit must succeed before a
    byte is sent).  A transient error (``transaction.interfaces.
    TransientError``, such as a ``ConflictError`` or ``TooManyOpen``, or
    what a data manager says through ``Transaction.isRetryableError``, or
    one of ``retry_on``) runs the request again, up to ``attempts`` times,
    when its body could be buffered (at most ``max_body`` bytes, with a
    Content-Length); else it runs once.

    Without ``manage_transaction`` the application commits: the group is
    bound to ``environ['transaction.manager']`` when something (say
    pyramid_tm or repoze.tm) put one there, else to a manager of the
    middleware's own; the response is streamed and the group closed in
    its ``close()`` (what the application left uncommitted is aborted and
    logged).  In both modes the group is always closed; one the server
    never closed is closed when the response is garbage collected, with a
    warning of logger ``multidb.wsgi`` naming the path.
    """

    def __init__(self, app, collection, *, resolve='host',
                 header='X-Tenant', attempts=3, retry_on=(),
                 manage_transaction=True, commit_veto=default_commit_veto,
                 max_body=MAX_BODY, backoff=0.05, max_backoff=1.0):
        self.app = app
        self.collection = collection
        if resolve == 'host':
            resolve = tenant_from_host
        elif resolve == 'path':
            resolve = tenant_from_path
        elif resolve == 'header':
            resolve = tenant_from_header(header)
        elif not callable(resolve):
            raise ValueError(f"resolve must be 'host', 'path', 'header' or"
                             f" a callable, not {resolve!r}")
        self.resolve = resolve
        AttemptWithBackoff(attempts)   # checks attempts
        self.attempts = attempts
        self.retry_on = tuple(retry_on)
        self.manage_transaction = manage_transaction
        self.commit_veto = commit_veto
        self.max_body = max_body
        self.backoff = backoff
        self.max_backoff = max_backoff

    # -- tenants -----------------------------------------------------------

    def known(self, name):
        """See ``known``."""
        return known(self.collection, name)

    @staticmethod
    def _is_gone(error, name):
        return isinstance(error, (UnknownDatabase, NoSuchTenant)) and \
            getattr(error, 'name', None) == name

    # -- requests ----------------------------------------------------------

    def __call__(self, environ, start_response):
        path = environ.get('SCRIPT_NAME', '') + environ.get('PATH_INFO', '')
        name = self.resolve(environ)
        if not name or not self.known(name):
            return _not_found(start_response)
        environ['multidb.tenant'] = name
        # A group the application opens on the thread's manager and
        # leaves open is reported at the end of the request.
        before = self.collection.group_of()
        if self.manage_transaction:
            try:
                return self._managed(environ, start_response, name, path)
            finally:
                report_leaked_group(self.collection, before, path)
        return self._streamed(environ, start_response, name, path, before)

    def _streamed(self, environ, start_response, name, path, before):
        tm = environ.get('transaction.manager')
        if tm is None:
            tm = environ['transaction.manager'] = \
                transaction.TransactionManager()
        group = self.collection.group(tm)
        environ['multidb.group'] = group
        closer = _Closer(group, path, before)
        try:
            result = self.app(environ, start_response)
        except Exception as e:
            try:
                closer()
            except Exception:
                pass   # logged; the application's error is the one
            if self._is_gone(e, name):
                return _not_found(start_response, sys.exc_info())
            if unavailable(e):
                return _unavailable(start_response, path, e,
                                    sys.exc_info())
            raise
        except BaseException:
            closer()
            raise
        return _Streamed(result, closer)

    def _body(self, environ):
        """The request body, read, when it may be read again; else None
        (then wsgi.input still reads the whole body)."""
        length = environ.get('CONTENT_LENGTH')
        if not length:
            if not environ.get('wsgi.input_terminated'):
                return b''
            # No length (chunked, or no body at all): the input ends by
            # itself; read a little more than the limit.
            stream = environ['wsgi.input']
            data = stream.read(self.max_body + 1)
            if len(data) <= self.max_body:
                return data
            environ['wsgi.input'] = io.BufferedReader(_Chained(data, stream))
            return None
        try:
            length = int(length)
        except ValueError:
            return None
        if length <= 0:
            return b''
        if length > self.max_body:
            return None
        return environ['wsgi.input'].read(length)

    def _managed(self, environ, start_response, name, path):
        body = self._body(environ)
        attempts = self.attempts if body is not None else 1
        policy = AttemptWithBackoff(attempts, initial=self.backoff,
                                    maximum=self.max_backoff)
        for attempt in policy:
            env = dict(environ)
            if body is not None:
                env['wsgi.input'] = io.BytesIO(body)
            else:
                env['wsgi.input'] = environ['wsgi.input']
            tm = env['transaction.manager'] = transaction.TransactionManager()
            group = self.collection.group(tm)
            env['multidb.group'] = group
            txn = None
            try:
                try:
                    txn = tm.begin()
                    txn.note(path)
                    response = self._call(env)
                    if tm.isDoomed() or self.commit_veto(
                            env, response.status, response.headers):
                        tm.abort()
                    else:
                        tm.commit()
                except Exception as e:
                    # Asked before the abort, which forgets the data
                    # managers whose should_retry() may know better.
                    retry = not policy.last and (
                        isinstance(e, self.retry_on) or
                        (txn is not None and txn.isRetryableError(e)))
                    self._abort(tm)
                    if self._is_gone(e, name):
                        return _not_found(start_response)
                    if not retry:
                        if unavailable(e):
                            return _unavailable(start_response, path, e)
                        raise
                    log.info("request %s: attempt %d of %d failed with %s:"
                             " retrying", path, attempt, attempts,
                             type(e).__name__)
                    continue
                except BaseException:
                    self._abort(tm)
                    raise
            finally:
                group.close()
            if response.exc_info is None:
                start_response(response.status, response.headers)
            else:
                start_response(response.status, response.headers,
                               response.exc_info)
            return response.body
        raise AssertionError("unreachable")  # pragma: no cover

    def _call(self, env):
        """Run the application, consuming its response."""
        response = _Response()
        result = self.app(env, response.start_response)
        try:
            for chunk in result:
                response.body.append(chunk)
        finally:
            close = getattr(result, 'close', None)
            if close is not None:
                close()
        if response.status is None:
            raise RuntimeError("the application did not call"
                               " start_response")
        return response

    @staticmethod
    def _abort(tm):
        try:
            tm.abort()
        except Exception:
            log.warning("aborting the transaction failed", exc_info=True)
