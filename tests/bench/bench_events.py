"""Event latency: from the commit that changes the catalog in one process
to the subscriber's callback in another, beside the bare mechanism.

For a catalog on ZEO and on PostgreSQL (a throwaway cluster and a ZEO
server are started here), a subscriber process (``--subscriber``) builds
its own collection on the same catalog, subscribes, and writes the time
of each event it is told of; this process creates tenants one at a time
(tenants on FileStorage for ZEO, on PostgreSQL for PostgreSQL), taking
the time when ``create`` returns (its catalog commit is done then).  The
latency is the subscriber's time minus that time (same machine, same
clock).

Baselines, in the same run: PostgreSQL, a bare ``NOTIFY`` from one
psycopg2 connection to a ``LISTEN`` in the subscriber process; ZEO, a
bare ZEO client in the subscriber process seeing the commit of another
client (its ``lastTransaction()`` moving, looked at every 0.1 ms).

Prints p50 and p99 per run and "median (min-max)" over ``--runs``.
"""
import argparse
import functools
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from benchutil import Runs  # noqa: E402
from benchutil import add_runs_argument  # noqa: E402
from benchutil import table  # noqa: E402


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


# -- the two sides' collections ------------------------------------------------

def zeo_collection(address, folder):
    import multidb
    from ZEO.ClientStorage import ClientStorage
    c = multidb.Collection()
    c.declare('catalog', functools.partial(
        ClientStorage, address, storage='catalog', wait_timeout=30))
    multidb.Tenants(c, catalog='catalog', backend=multidb.FileStorageBackend(
        os.path.join(folder, 'tenants', '{name}.fs')))
    return c


def pg_collection(dsn_of, prefix):
    import multidb
    from multidb.backends.relstorage import RelStorageBackend
    backend = RelStorageBackend(dsn_of(prefix + '{name}'),
                                template=prefix + 'template',
                                keep_history=False)
    c = multidb.Collection()
    c.declare('catalog', functools.partial(
        backend._open_relstorage, dsn_of(prefix + 'catalog')))
    t = multidb.Tenants(c, catalog='catalog', backend=backend)
    t.catalog_poll_interval = 3600      # only NOTIFY tells, then
    return c


# -- the subscriber process ---------------------------------------------------

def subscriber(args):
    spec = json.loads(args.subscriber)
    out = sys.stdout
    lock = threading.Lock()

    def tell(line):
        with lock:
            out.write(line + '\n')
            out.flush()
    if spec['kind'] == 'zeo':
        c = zeo_collection(tuple(spec['address']), spec['folder'])
    else:
        def dsn_of(name):
            return spec['dsn'].replace('DBNAME', name)
        c = pg_collection(dsn_of, spec['prefix'])
    from persistent.TimeStamp import TimeStamp
    def told(event):
        now = time.time()
        # The commit's time, from its transaction id (same machine).
        committed = TimeStamp(event.tid).timeTime()
        tell(f"event {event.name} {event.kind} {now - committed:.6f}")
    c.tenants.subscribe(told)
    # The baselines' listeners.
    if spec['kind'] == 'pg':
        import psycopg2
        conn = psycopg2.connect(spec['dsn'].replace('DBNAME', 'postgres'))
        conn.autocommit = True
        conn.cursor().execute('LISTEN bench')

        def listen():
            while True:
                select.select([conn], [], [], 1)
                conn.poll()
                while conn.notifies:
                    n = conn.notifies.pop(0)
                    key, sent = n.payload.split()
                    tell(f"raw {key} {time.time() - float(sent):.6f}")
        threading.Thread(target=listen, daemon=True).start()
    else:
        from ZEO.ClientStorage import ClientStorage
        raw = ClientStorage(tuple(spec['address']), storage='1',
                            wait_timeout=30)

        def watch():
            last = raw.lastTransaction()
            while True:
                now = raw.lastTransaction()
                if now != last:
                    last = now
                    tell(f"raw {now.hex()}"
                         f" {time.time() - TimeStamp(now).timeTime():.6f}")
                time.sleep(0.0001)
        threading.Thread(target=watch, daemon=True).start()
    tell('ready')
    sys.stdin.readline()       # until told to stop
    c.close()
    return 0


# -- the measuring process ----------------------------------------------------

class Subscriber:
    def __init__(self, spec):
        self.proc = subprocess.Popen(
            [sys.executable, __file__, '--subscriber', json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.lines = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.wait(lambda line: line == 'ready', 60)

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.strip())
                self.cond.notify_all()

    def wait(self, match, timeout=30):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i, line in enumerate(self.lines):
                    if match(line):
                        del self.lines[i]
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError('no line matched')
                self.cond.wait(left)

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(30)
        except Exception:
            self.proc.kill()


def measure(kind, creator, sub, count, raw_send, run):
    # The subscriber prints each latency (its clock, the commit's time).
    events, raws = [], []
    for i in range(count):
        name = f'r{run}n{i:03d}'
        creator.tenants.create(name)
        # Closed again: FileStorage serves one process at a time, and
        # each open PostgreSQL tenant holds server connections.
        creator.remove(name)
        line = sub.wait(lambda line, n=name: line.startswith(
            f'event {n} created'))
        events.append(float(line.split()[-1]))
        key = raw_send(i)
        line = sub.wait(lambda line, k=key: line.startswith(f'raw {k}'))
        raws.append(float(line.split()[-1]))
        time.sleep(0.01)
    return events, raws


def bench_zeo(args, runs):
    import transaction
    from servers import ZEOServer
    from ZEO.ClientStorage import ClientStorage
    import ZODB
    folder = tempfile.mkdtemp(prefix='multidb-bench-events-')
    os.makedirs(os.path.join(folder, 'tenants'))
    server = ZEOServer(storages=('catalog', '1'), folder=folder)
    server.start()
    try:
        address = server.address
        creator = zeo_collection(address, folder)
        rawdb = ZODB.DB(ClientStorage(address, storage='1',
                                      wait_timeout=30))
        conn = rawdb.open()

        def raw_send(i):
            conn.root()['i'] = i
            transaction.commit()
            return rawdb.storage.lastTransaction().hex()
        sub = Subscriber({'kind': 'zeo', 'address': list(address),
                          'folder': folder})
        try:
            for run in range(args.runs):
                e, r = measure('zeo', creator, sub, args.count, raw_send, run)
                runs.add(('zeo', 'p50'), pct(e, 50) * 1000)
                runs.add(('zeo', 'p99'), pct(e, 99) * 1000)
                runs.add(('zeo', 'raw p50'), pct(r, 50) * 1000)
                runs.add(('zeo', 'raw p99'), pct(r, 99) * 1000)
        finally:
            sub.close()
            conn.close()
            rawdb.close()
            creator.close()
    finally:
        server.close()


def bench_pg(args, runs):
    import uuid
    import psycopg2
    from servers import PostgreSQL
    pg = PostgreSQL()
    pg.start()
    try:
        prefix = 'b' + uuid.uuid4().hex[:6] + '_'
        pg.sql(f'CREATE DATABASE "{prefix}catalog"')
        base = pg.dsn('DBNAME')

        def dsn_of(name):
            return base.replace('DBNAME', name)
        creator = pg_collection(dsn_of, prefix)
        notify = psycopg2.connect(dsn_of('postgres'))
        notify.autocommit = True

        def raw_send(i):
            key = f'n{i}'
            notify.cursor().execute('SELECT pg_notify(%s, %s)',
                                    ('bench', f'{key} {time.time():.6f}'))
            return key
        sub = Subscriber({'kind': 'pg', 'dsn': base, 'prefix': prefix})
        try:
            for run in range(args.runs):
                e, r = measure('pg', creator, sub, args.count, raw_send, run)
                runs.add(('pg', 'p50'), pct(e, 50) * 1000)
                runs.add(('pg', 'p99'), pct(e, 99) * 1000)
                runs.add(('pg', 'raw p50'), pct(r, 50) * 1000)
                runs.add(('pg', 'raw p99'), pct(r, 99) * 1000)
        finally:
            sub.close()
            notify.close()
            creator.close()
    finally:
        pg.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_runs_argument(p)
    p.add_argument('--count', type=int, default=50,
                   help='tenants created per run and catalog (default 50)')
    p.add_argument('--only', default='zeo,pg',
                   help='catalogs to measure: zeo,pg (default both)')
    p.add_argument('--subscriber', help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.subscriber:
        return subscriber(args)
    print('Command:', ' '.join([sys.executable] + sys.argv))
    runs = Runs()
    only = args.only.split(',')
    if 'zeo' in only:
        bench_zeo(args, runs)
    if 'pg' in only:
        bench_pg(args, runs)
    rows = []
    for kind, label in (('zeo', 'ZEO'), ('pg', 'PostgreSQL')):
        if not runs.get((kind, 'p50')):
            continue
        rows.append([label, runs.fig((kind, 'p50')), runs.fig((kind, 'p99')),
                     runs.fig((kind, 'raw p50')), runs.fig((kind, 'raw p99')),
                     f"{statistics.median(runs.get((kind, 'p99'))):.1f}"
                     f" {'<=' if statistics.median(runs.get((kind, 'p99'))) <= 1000 else '>'} 1000"])
    table(f"event latency, ms: catalog commit to the callback in another"
          f" process ({args.count} creates per run; median (min-max) over"
          f" {args.runs} runs); raw: the bare mechanism",
          ['catalog', 'p50', 'p99', 'raw p50', 'raw p99', 'p99 within 1 s'],
          rows)
    return 0


if __name__ == '__main__':
    sys.exit(main())
