"""Change notifications of a catalog kept on PostgreSQL (RelStorage).

RelStorage polls: a process learns that another one committed only when
it asks.  PostgreSQL can tell instead: a statement-level trigger on
RelStorage's ``object_state`` table sends ``NOTIFY multidb_catalog`` with
every commit that stores objects in the catalog's database, delivered by
PostgreSQL when (and only if) that transaction commits, whoever made it.
A ``Listener`` in each process ``LISTEN``s on a connection of its own and
calls back at once.

The trigger's notification carries nothing (no payload to outgrow
NOTIFY's 8000 bytes): the callback reads what changed from the catalog's
change log.  Processes also send short messages to each other on the
same channel (``send``: the commits of tenants, for subscribers); those
are not in any log, so a reconnection is reported (``on_reconnect``).
Nothing is lost when the listening connection is: the listener
reconnects, with a growing pause, and calls back once connected again, so
that whatever was committed meanwhile is read.
"""
import logging
import select
import threading
import time
from typing import Callable
from typing import Optional

log = logging.getLogger(__name__)

#: The channel of the catalog's notifications (NOTIFY channels are per
#: database: each catalog database has its own).
CHANNEL = 'multidb_catalog'

# Is the trigger there?  (Asked first: the DDL below locks the table
# against writes for a moment, and every process starts a listener.)
_INSTALLED = """
SELECT 1 FROM pg_trigger
WHERE tgname = 'multidb_notify_catalog'
  AND tgrelid = 'object_state'::regclass
"""

# Installed by the first listener; CREATE OR REPLACE under an advisory
# lock, so that processes starting together do not trip on each other.
_INSTALL = """
SELECT pg_advisory_xact_lock(hashtext('multidb_notify_catalog'));
CREATE OR REPLACE FUNCTION multidb_notify_catalog() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('multidb_catalog', '');
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER multidb_notify_catalog
    AFTER INSERT OR UPDATE OR DELETE ON object_state
    FOR EACH STATEMENT EXECUTE FUNCTION multidb_notify_catalog();
"""


def _not_allowed(error):
    # PostgreSQL's insufficient_privilege (42501): the role may not make
    # the trigger's function or trigger.
    return getattr(error, 'pgcode', None) == '42501'


class Listener:
    """Listens for the commits of one catalog database; calls
    ``on_change()`` (in the listener's thread) for each, and once after
    each (re)connection.  ``close()`` stops it; ``connected`` says whether
    it listens right now."""

    #: The longest pause between two connection attempts, in seconds.
    max_backoff = 5.0

    def __init__(self, dsn: str, on_change: Callable[[], None], *,
                 name: str = 'catalog',
                 on_message: Optional[Callable[[str], None]] = None,
                 on_reconnect: Optional[Callable[[], None]] = None
                 ) -> None:
        self._dsn = dsn
        self._on_change = on_change
        # Messages other processes send (``send``), and a hook for a
        # reconnection (messages sent meanwhile are lost: say so).
        self._on_message = on_message
        self._on_reconnect = on_reconnect
        self._name = name
        self._sender = None
        self._send_lock = threading.Lock()
        self._connections = 0
        self._stop = threading.Event()
        self.connected = False
        #: Set once the listener is connected the first time (or gave up).
        self.ready = threading.Event()
        self._conn = None
        self._thread = threading.Thread(
            target=self._run, daemon=True,
            name=f'multidb listener {name!r}')
        self._thread.start()

    def close(self, timeout: Optional[float] = 5.0) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        with self._send_lock:
            if self._sender is not None:
                try:
                    self._sender.close()
                except Exception:
                    pass
                self._sender = None

    def send(self, message: str) -> bool:
        """NOTIFY message (a short text) to every listener of the
        catalog's database but this one, on a connection of its own (the
        listening one belongs to the listener's thread).  Returns whether
        it was sent; a failure is logged, not raised (the caller's commit
        is done)."""
        import psycopg2
        with self._send_lock:
            for attempt in (1, 2):
                try:
                    if self._sender is None:
                        self._sender = psycopg2.connect(self._dsn)
                        self._sender.autocommit = True
                    with self._sender.cursor() as cur:
                        cur.execute('SELECT pg_notify(%s, %s)',
                                    (CHANNEL, message))
                    return True
                except Exception as e:
                    try:
                        if self._sender is not None:
                            self._sender.close()
                    except Exception:
                        pass
                    self._sender = None
                    if attempt == 2:
                        log.warning("cannot notify the listeners of %r: %s",
                                    self._name, ' '.join(str(e).split()))
        return False

    def _connect(self):
        import psycopg2
        # Keepalives: a server gone without a word (a cut network) is
        # found within about half a minute, and the listener reconnects.
        conn = psycopg2.connect(self._dsn, keepalives=1, keepalives_idle=10,
                                keepalives_interval=5, keepalives_count=3)
        try:
            conn.autocommit = False
            with conn.cursor() as cur:
                cur.execute(_INSTALLED)
                if not cur.fetchall():
                    cur.execute(_INSTALL)
            conn.commit()
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'LISTEN {CHANNEL}')
        except BaseException:
            conn.close()
            raise
        return conn

    def _run(self):
        backoff = 0.05
        told = False
        while not self._stop.is_set():
            try:
                conn = self._conn = self._connect()
            except Exception as e:
                text = ' '.join(str(e).split())
                if _not_allowed(e):
                    # The catalog's role may not make the trigger: no
                    # notifications, ever; the refresh polls as it would.
                    log.warning("cannot listen for changes of %r: %s; they"
                                " are found by polling instead",
                                self._name, text)
                    self.ready.set()
                    return
                # Said once per outage, then quietly retried.
                (log.debug if told else log.warning)(
                    "cannot listen for changes of %r (retrying): %s",
                    self._name, text)
                told = True
                self.ready.set()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            backoff = 0.05
            told = False
            self.connected = True
            self.ready.set()
            self._connections += 1
            try:
                if self._connections > 1 and self._on_reconnect is not None:
                    self._on_reconnect()
                # Whatever was committed while nobody listened.
                self._call()
                self._listen(conn)
            except Exception as e:
                if not self._stop.is_set():
                    log.warning("listening for changes of %r stopped"
                                " (reconnecting): %s", self._name,
                                ' '.join(str(e).split()))
            finally:
                self.connected = False
                try:
                    conn.close()
                except Exception:
                    pass
                self._conn = None
            if not self._stop.is_set():
                time.sleep(0.05)

    def _listen(self, conn):
        while not self._stop.is_set():
            # A short timeout: to notice close() (the thread owns conn).
            ready, _, _ = select.select([conn], [], [], 0.5)
            if not ready:
                continue
            conn.poll()
            if conn.notifies:
                notifies = list(conn.notifies)
                del conn.notifies[:]
                changed = False
                for n in notifies:
                    if not n.payload:
                        changed = True      # the trigger: a commit
                    elif n.pid != self._sender_pid() and \
                            self._on_message is not None:
                        try:
                            self._on_message(n.payload)
                        except Exception:
                            log.exception("the message callback of %r"
                                          " failed", self._name)
                if changed:
                    # Several commits read at once: one call.
                    self._call()

    def _sender_pid(self):
        # The backend of this process's own sending connection: its
        # messages are not for this process.
        sender = self._sender
        try:
            return sender.get_backend_pid() if sender is not None else None
        except Exception:
            return None

    def _call(self):
        try:
            self._on_change()
        except Exception:
            log.exception("the change callback of %r failed", self._name)
