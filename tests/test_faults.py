"""Servers failing under a workload that runs through Collection.run: a
ZEO server killed (SIGKILL) and restarted, PostgreSQL stopped and
started.  No transaction reported committed is lost, and the ones retried
after the restart commit.  Every loop and wait is bounded."""
import logging
import re
import threading
import time

import pytest
import transaction
from BTrees.OOBTree import OOBTree

from multidb.config import collectionFromString

# How many attempts and how much backoff the workload allows itself: the
# attempts of one transaction span a restart (0.1 + 0.2 + 0.4 + 0.8 + 1
# + ... s, halved at worst by the jitter).
RUN = dict(attempts=12, backoff=0.1, max_backoff=1.0)


class Workload:
    """Transactions, each adding one number to a tree, in a thread."""

    def __init__(self, collection, name, limit=5000):
        self.collection = collection
        self.name = name
        self.limit = limit
        self.committed = []      # reported committed by run()
        self.tries = {}          # number -> attempts it took
        self.failed = []         # errors run() gave up with
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        tm = transaction.TransactionManager()
        for n in range(self.limit):
            if self.stop.is_set():
                return

            def add(group, n=n):
                self.tries[n] = self.tries.get(n, 0) + 1
                root = group.root(self.name)
                tree = root.get('tree')
                if tree is None:
                    tree = root['tree'] = OOBTree()
                tree[n] = n
            try:
                self.collection.run(add, transaction_manager=tm, **RUN)
            except Exception as e:
                self.failed.append(e)
            else:
                self.committed.append(n)

    def wait_for(self, count, timeout=20):
        deadline = time.monotonic() + timeout
        while len(self.committed) < count:
            assert time.monotonic() < deadline, (
                f"only {len(self.committed)} of {count} commits after"
                f" {timeout} s; errors: {self.failed[-3:]}")
            assert self.thread.is_alive()
            time.sleep(0.01)

    def finish(self):
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


def _retried_on(caplog):
    """The names of the errors Collection.run retried, as its log says
    them (``... failed with NAME: retrying``)."""
    found = (re.search(r'failed with (\w+): retrying', r.getMessage())
             for r in caplog.records if r.name == 'multidb.collection')
    return {m.group(1) for m in found if m}


def _check(workload, tree, restarted_at):
    """Every commit reported is in tree; the retried ones committed."""
    assert not workload.failed, workload.failed[:3]
    missing = set(workload.committed) - set(tree)
    assert not missing, f"{len(missing)} committed transactions lost"
    retried = [n for n, tries in workload.tries.items() if tries > 1]
    assert retried, "no transaction was retried"
    assert set(retried) <= set(workload.committed)
    after = [n for n in workload.committed if n >= restarted_at]
    assert len(after) >= 20
    print(f"{len(workload.committed)} committed, {len(tree)} in the"
          f" database, {len(retried)} retried")


def _zeo_collection(server):
    host, port = server.address
    return collectionFromString(f"""
        <multidb>
          zeo-wait-timeout 2s
          <zodb one>
            <zeoclient>
              server {host}:{port}
              storage 1
            </zeoclient>
          </zodb>
        </multidb>""")


def test_zeo_server_killed_and_restarted(zeo_server, caplog):
    caplog.set_level(logging.INFO, logger='multidb.collection')
    c = _zeo_collection(zeo_server)
    w = Workload(c, 'one')
    try:
        w.thread.start()
        w.wait_for(30)
        zeo_server.kill()
        killed_at = len(w.committed)
        time.sleep(1)   # the workload waits, fails, backs off, retries
        # Same folder and port: the client reconnects by itself.
        zeo_server.start()
        w.wait_for(killed_at + 50)
        w.finish()
    finally:
        w.stop.set()
        c.close()
    # A client of its own reads what the server has.
    c = _zeo_collection(zeo_server)
    try:
        with c.transaction() as g:
            tree = dict(g.root('one')['tree'])
    finally:
        c.close()
    _check(w, tree, w.committed[killed_at])
    assert _retried_on(caplog) == {'ClientDisconnected'}


def _pg_collection(postgres, dbname):
    return collectionFromString(f"""
        %import relstorage
        <multidb>
          <zodb one>
            <relstorage>
              keep-history false
              <postgresql>
                dsn {postgres.dsn(dbname)}
              </postgresql>
            </relstorage>
          </zodb>
        </multidb>""")


def test_postgresql_restarted(postgres, pg_db, caplog):
    caplog.set_level(logging.INFO, logger='multidb.collection')
    c = _pg_collection(postgres, pg_db)
    w = Workload(c, 'one')
    try:
        w.thread.start()
        w.wait_for(30)
        try:
            postgres.stop()
            stopped_at = len(w.committed)
            time.sleep(1)
        finally:
            postgres.start()   # a session fixture: leave it running
        w.wait_for(stopped_at + 50)
        w.finish()
    finally:
        w.stop.set()
        c.close()
    c = _pg_collection(postgres, pg_db)
    try:
        with c.transaction() as g:
            tree = dict(g.root('one')['tree'])
    finally:
        c.close()
    _check(w, tree, w.committed[stopped_at])
    # A lost connection, as RelStorage's psycopg2 driver reports it.
    retried_on = _retried_on(caplog)
    assert retried_on, "Collection.run retried nothing"
    assert retried_on <= {'OperationalError', 'InterfaceError'}, retried_on


def test_run_gives_up_with_the_last_error(zeo_server):
    from ZEO.Exceptions import ClientDisconnected
    c = _zeo_collection(zeo_server)
    try:
        with c.transaction() as g:
            g.root('one')['v'] = 1
        zeo_server.kill()
        calls = []

        def touch(group):
            calls.append(1)
            group.root('one')['v'] += 1
        start = time.monotonic()
        with pytest.raises(ClientDisconnected):
            c.run(touch, attempts=2, backoff=0.05)
        assert len(calls) <= 2
        assert time.monotonic() - start < 10
    finally:
        c.close()
