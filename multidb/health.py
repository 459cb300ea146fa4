"""Health checks of a collection's databases.

See :meth:`multidb.interfaces.ICollection.health`.
"""
import datetime
import threading
import time
from typing import Any
from typing import Iterable
from typing import List
from typing import NamedTuple
from typing import Optional

import transaction
from persistent.TimeStamp import TimeStamp
from ZODB.utils import z64

from multidb import glue

#: The default ``timeout`` of a health check, in seconds: a little more
#: than the default ``zeo-wait-timeout`` (5 s), so that a ZEO client
#: waiting for its server reports ZEO's own error rather than a timeout.
DEFAULT_TIMEOUT = 6.0

# Checks run in threads, this many at once.
_BATCH = 32


class DatabaseHealth(NamedTuple):
    """The health of one database (see ``ICollection.health``)."""

    #: The database's name.
    name: str
    #: Did the check reach the data (and the server, if any)?
    reachable: bool
    #: Seconds for a connection, the root object's record and, for ZEO, a
    #: server round trip; None when unreachable.
    latency: Optional[float]
    #: When the last transaction was committed (UTC), None for an empty
    #: database or when unreachable.
    last_transaction: Optional[datetime.datetime]
    #: What went wrong, one line; None when reachable.
    error: Optional[str]
    #: Connections of the database handed out when it was checked (by
    #: groups and plain ``db.open()``; the check's own not counted), or
    #: None when it could not be opened.  A count that only grows points
    #: at connections that are never closed.
    in_use: Optional[int] = None

    def as_dict(self) -> dict:
        """JSON-able: the time as ISO 8601, the latency in seconds."""
        d = self._asdict()
        if self.last_transaction is not None:
            d['last_transaction'] = self.last_transaction.isoformat()
        return d


def tid_time(tid: bytes) -> Optional[datetime.datetime]:
    """The commit time of a transaction id (UTC); None for z64."""
    if not tid or tid == z64:
        return None
    return datetime.datetime.fromtimestamp(TimeStamp(tid).timeTime(),
                                           datetime.timezone.utc)


def _error_text(error: BaseException) -> str:
    """One line: the error's type and message; an error that says
    nothing by itself (ZODB's ``StateLoadError``) is followed by what
    caused it, so the line names what could not be resolved."""
    text = ' '.join(str(error).split())
    name = type(error).__name__
    if text:
        return f"{name}: {text}"
    cause = error.__cause__
    if cause is None and not error.__suppress_context__:
        cause = error.__context__
    if cause is not None and cause is not error:
        return f"{name} ({_error_text(cause)})"
    return name


def check(collection: Any, name: str) -> DatabaseHealth:
    """Check one database, in the calling thread (no time limit)."""
    in_use = None
    try:
        db = collection[name]   # opens it when declared and closed
        in_use = glue.connections_in_use(db)
        # A manager of its own: the caller's transaction is not touched,
        # and no group is needed (a group would refresh the tenants from
        # the catalog first, making every check depend on the catalog).
        tm = transaction.TransactionManager()
        start = time.monotonic()
        conn = db.open(tm)   # polls: RelStorage queries its server here
        try:
            # The root as a ghost: its record read from the storage (when
            # the connection does not hold it already) and only its class
            # taken from the pickle; its state is not unpickled.  That is
            # what "reachable" means: the state would resolve the root's
            # references, and one to a database this collection does not
            # declare (another program's data) is no finding about this
            # one.
            conn.get(z64)
            # ZEO serves loads from its cache: ping is a server round
            # trip, and waits up to wait_timeout when disconnected.
            ping = getattr(db.storage, 'ping', None)
            if callable(ping):
                ping()
            latency = time.monotonic() - start
            last = glue.last_transaction(conn)
        finally:
            try:
                tm.abort()
            finally:
                conn.close()
    except Exception as e:
        return DatabaseHealth(name, False, None, None, _error_text(e),
                              in_use)
    return DatabaseHealth(name, True, latency, tid_time(last), None, in_use)


def check_all(collection: Any, names: Iterable[str],
              timeout: float) -> List[DatabaseHealth]:
    """Check names in threads, each bounded by timeout; in names' order.

    A check that does not end in time is reported unreachable; its
    thread (a daemon) is left to finish or fail on its own.
    """
    results = {}

    def run(name):
        results[name] = check(collection, name)

    names = list(names)
    for i in range(0, len(names), _BATCH):
        batch = names[i:i + _BATCH]
        threads = [threading.Thread(target=run, args=(name,), daemon=True,
                                    name=f'multidb health {name}')
                   for name in batch]
        for t in threads:
            t.start()
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for name in batch:
            if name not in results:
                results[name] = DatabaseHealth(
                    name, False, None, None,
                    f"no answer within {timeout:g} s")
    return [results[name] for name in names]
