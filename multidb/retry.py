"""The one retry policy of multidb: a bounded number of attempts with
exponential backoff and jitter (after psycopg_pool's AttemptWithBackoff).

Used by :meth:`multidb.Collection.run` and by the tenant operations that
lose a catalog write to another process.  ``retryable`` says which errors
the tenant operations run again for; ``lost_connection`` which of them
are a lost connection to a database server.
"""
import random
import time


class AttemptWithBackoff:
    """Attempts numbered from 1 to ``attempts``; between two attempts a
    delay of ``initial * factor ** (n - 1)`` seconds (n: the attempt that
    failed), at most ``maximum``, of which a random part up to ``jitter``
    (a fraction) is taken off, so that processes that failed together do
    not retry in step.

    Iterate to run the attempts; the iterator sleeps before every attempt
    but the first::

        policy = AttemptWithBackoff(attempts=3)
        for attempt in policy:
            try:
                return work()
            except TransientError:
                if policy.last:
                    raise
    """

    def __init__(self, attempts=3, *, initial=0.1, maximum=5.0, factor=2.0,
                 jitter=0.5, rng=None, sleep=None):
        if not isinstance(attempts, int) or isinstance(attempts, bool) \
                or attempts < 1:
            raise ValueError(f"attempts must be an int of at least 1, not"
                             f" {attempts!r}")
        for what, value in (('initial', initial), ('maximum', maximum)):
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{what} backoff must be a number of"
                                 f" seconds >= 0, not {value!r}")
        if factor < 1:
            raise ValueError(f"factor must be at least 1, not {factor!r}")
        if not 0 <= jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, not"
                             f" {jitter!r}")
        self.attempts = attempts
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._rng = rng or random.Random()
        self._sleep = sleep
        #: The attempt running now (0 before the first).
        self.attempt = 0

    @property
    def last(self):
        """Is the attempt running now the last one?"""
        return self.attempt >= self.attempts

    def delay(self, attempt):
        """The delay after attempt number ``attempt`` failed."""
        base = min(self.maximum, self.initial * self.factor ** (attempt - 1))
        return base * (1 - self.jitter * self._rng.random())

    def __iter__(self):
        while self.attempt < self.attempts:
            if self.attempt:
                (self._sleep or time.sleep)(self.delay(self.attempt))
            self.attempt += 1
            yield self.attempt

    def __repr__(self):
        return (f"<AttemptWithBackoff {self.attempt}/{self.attempts},"
                f" initial={self.initial}, maximum={self.maximum}>")


# Connection errors of PostgreSQL that are not a lost connection: retrying
# does not help.
_NOT_LOST = ('authentication failed', 'does not exist', 'no password',
             'permission denied', 'not permitted', 'role ')


def lost_connection(error):
    """Does error mean a lost (or refused, for now) connection to a
    database server, so that the operation may run again: psycopg2's
    InterfaceError and the OperationalErrors of a broken, terminated or
    refused connection (not a wrong password or a missing database),
    ZEO's ``ClientDisconnected`` (its server gone or not answering in
    ``wait_timeout``), or an error a backend marks so
    (``multidb_lost_connection``)."""
    if getattr(error, 'multidb_lost_connection', False):
        return True
    try:
        from ZEO.Exceptions import ClientDisconnected
    except ImportError:  # pragma: no cover (ZEO is optional)
        pass
    else:
        if isinstance(error, ClientDisconnected):
            return True
    try:
        import psycopg2
    except ImportError:  # pragma: no cover
        return False
    cause = error.__cause__
    if cause is not None and cause is not error and \
            isinstance(cause, psycopg2.Error):
        # RelStorage wraps the driver's error of a lost connection in its
        # own (UnableToAcquireCommitLockError ...).
        return lost_connection(cause)
    if isinstance(error, psycopg2.InterfaceError):
        return True
    if not isinstance(error, psycopg2.OperationalError):
        return False
    code = getattr(error, 'pgcode', None)
    if code:
        # Class 08: connection exception; 57P01-03: terminated by an
        # administrator, a crash, or the server starting up.
        return code.startswith('08') or code in ('57P01', '57P02', '57P03')
    text = str(error).lower()
    return not any(s in text for s in _NOT_LOST)


def retryable(error):
    """Is error worth running a tenant operation again: a catalog write
    lost to another process (ConflictError, any TransientError, ZEO's
    ClientDisconnected), a lock RelStorage could not take in time, or a
    lost connection (see lost_connection)?"""
    from transaction.interfaces import TransientError
    if isinstance(error, TransientError) or lost_connection(error):
        return True
    try:
        from relstorage.adapters.interfaces import UnableToAcquireLockError
    except ImportError:  # pragma: no cover (RelStorage is optional)
        return False
    return isinstance(error, UnableToAcquireLockError)
