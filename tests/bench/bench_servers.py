"""Benchmarks of tenants on real servers, beside their baselines.

Not a test (pytest does not collect ``bench_*.py``): run it by hand::

    python tests/bench/bench_servers.py            # the full run
    python tests/bench/bench_servers.py --quick    # a smoke run
    python tests/bench/bench_servers.py --only 1,3 # some of 1,2,3
    python tests/bench/bench_servers.py --runs 5   # more runs (default 3)

It starts a throwaway PostgreSQL cluster and a ZEO server (see
``tests/servers.py``; the cluster runs with ``fsync=off``) and prints reST
simple tables:

(1) A PostgreSQL tenant created through multidb (``tenants.create``:
    CREATE DATABASE from the schema template, first open, first commit
    with the catalog record) beside the same steps by hand (psycopg2
    ``CREATE DATABASE ... TEMPLATE ...`` with ``sql.Identifier``,
    ``RelStorage(PostgreSQLAdapter(dsn))``, ``ZODB.DB``, one commit,
    close).  Both write one object into the new tenant.  Once with the
    catalog on FileStorage, once with the catalog on PostgreSQL.  Then
    multidb's own steps of a create (the name lock's connection, the
    existence probe, a catalog read and a catalog commit), each timed
    alone, and a cProfile of a batch of multidb creates.
(2) A FileStorage tenant created through multidb beside a bare
    PostgreSQL ``CREATE DATABASE ... TEMPLATE`` (no RelStorage), from the
    schema template and from ``template0``, with and without the psycopg2
    connection.
(3) One-object commit latency on FileStorage, ZEO and RelStorage: multidb
    (``with coll.transaction() as g: g.root(name)['x'] = i``, and a
    long-lived group committing with ``tm.commit()``) beside raw ZODB on a
    storage of the same kind (``db.open()``, ``transaction.commit()``,
    ``close()``; and a long-lived connection).  Each side has its own
    storage on the same server (its own file, ZEO storage, or PostgreSQL
    database).  "paired ratio" is the median of the ratios of the two
    blocks of each round.

The sides alternate, block after block, in an order that swaps every
round.  Each benchmark is repeated ``--runs`` times (default 3) in the
run; every figure of the tables is "median (min-max)" over the runs of
the run's median; a verdict is on the median.  The profiles are of the
first run only.
"""
import argparse
import cProfile
import functools
import inspect
import io
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time

import psycopg2
import transaction
import ZODB
from psycopg2 import sql
from relstorage.adapters.postgresql import PostgreSQLAdapter
from relstorage.options import Options
from relstorage.storage import RelStorage
from ZODB.FileStorage import FileStorage

import multidb
from multidb.backends.relstorage import RelStorageBackend
from multidb.tenants.catalog import bump

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
from servers import PostgreSQL  # noqa: E402
from servers import ZEOServer  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchutil import Runs  # noqa: E402
from benchutil import machine  # noqa: E402
from benchutil import add_runs_argument  # noqa: E402
from benchutil import table  # noqa: E402
from benchutil import verdict  # noqa: E402

TARGET_PG_CREATE = 1.3      # multidb / by hand
TARGET_FS_VS_PG = 20.0      # bare CREATE DATABASE / multidb FileStorage
TARGET_COMMIT = 1.05        # multidb / raw ZODB
TEMPLATE = 'bench_template'


# -- helpers ---------------------------------------------------------------

def med(xs):
    return statistics.median(xs)


def rs_options():
    return Options(keep_history=False)


def open_relstorage(dsn):
    opts = rs_options()
    return RelStorage(PostgreSQLAdapter(dsn=dsn, options=opts), options=opts)


class Admin:
    """One autocommit connection for untimed housekeeping."""

    def __init__(self, pg):
        self.conn = psycopg2.connect(pg.dsn())
        self.conn.autocommit = True

    def run(self, text, *names):
        with self.conn.cursor() as cur:
            cur.execute(sql.SQL(text).format(
                *[sql.Identifier(n) for n in names]))

    def drop(self, dbname):
        self.run('DROP DATABASE IF EXISTS {} WITH (FORCE)', dbname)

    def close(self):
        self.conn.close()


# -- (1) PostgreSQL tenant: multidb against by hand -----------------------

class MultidbPG:
    """tenants.create(name) on RelStorageBackend; catalog on FileStorage
    or on PostgreSQL."""

    def __init__(self, pg, folder, catalog_on, tag):
        self.pg = pg
        self.coll = multidb.Collection()
        if catalog_on == 'filestorage':
            self.coll.declare('catalog', functools.partial(
                FileStorage, os.path.join(folder, f'catalog-{tag}.fs')))
        else:
            dbname = f'bench_catalog_{tag}'
            Admin(pg).run('CREATE DATABASE {}', dbname)
            self.coll.declare('catalog', functools.partial(
                open_relstorage, pg.dsn(dbname)))
        self.backend = RelStorageBackend(
            pg.dsn(f'm{tag}_{{name}}'), template=TEMPLATE,
            snapshot_dir=os.path.join(folder, 'snapshots'),
            keep_history=False)
        self.tenants = multidb.Tenants(self.coll, catalog='catalog',
                                       backend=self.backend)
        self.n = 0

    @staticmethod
    def _init(root):
        root['x'] = 1

    def create(self):
        self.n += 1
        name = f't{self.n}'
        t0 = time.perf_counter()
        self.tenants.create(name, init=self._init)
        dt = time.perf_counter() - t0
        return dt, name

    def cleanup(self, name):
        self.tenants.drop(name)

    def close(self):
        self.coll.close()


class ByHandPG:
    """The same steps with psycopg2 and RelStorage."""

    def __init__(self, pg, tag):
        self.pg = pg
        self.admin_dsn = pg.dsn()
        self.tag = tag
        self.n = 0

    def create(self):
        self.n += 1
        dbname = f'h{self.tag}_t{self.n}'
        t0 = time.perf_counter()
        conn = psycopg2.connect(self.admin_dsn)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql.SQL('CREATE DATABASE {} TEMPLATE {}').format(
                    sql.Identifier(dbname), sql.Identifier(TEMPLATE)))
        finally:
            conn.close()
        db = ZODB.DB(open_relstorage(self.pg.dsn(dbname)))
        tm = transaction.TransactionManager()
        c = db.open(tm)
        c.root()['x'] = 1
        tm.commit()
        c.close()
        db.close()
        dt = time.perf_counter() - t0
        return dt, dbname


CATALOGS = {'filestorage': 'FileStorage', 'postgresql': 'PostgreSQL'}


def bench_pg_create(pg, folder, rounds, block, profile_n, run_no, res):
    """One run of (1): its figures into res."""
    admin = Admin(pg)
    # The template, made once by the backend (not timed).
    RelStorageBackend(pg.dsn('x_{name}'), template=TEMPLATE,
                      keep_history=False).ensure_template()
    results = {}
    for catalog_on in ('filestorage', 'postgresql'):
        tag = ('f' if catalog_on == 'filestorage' else 'p') + str(run_no)
        m = MultidbPG(pg, folder, catalog_on, tag)
        h = ByHandPG(pg, tag)
        times = {'multidb': [], 'hand': []}

        def run(side, n, record=True):
            for _ in range(n):
                if side == 'multidb':
                    dt, name = m.create()
                    m.cleanup(name)
                else:
                    dt, dbname = h.create()
                    admin.drop(dbname)
                if record:
                    times[side].append(dt)

        run('multidb', 2, False)     # warm-up (imports, catalog made)
        run('hand', 2, False)
        for r in range(rounds):
            order = ('multidb', 'hand') if r % 2 == 0 else ('hand', 'multidb')
            for side in order:
                run(side, block)
        mm, hm = med(times['multidb']), med(times['hand'])
        results[catalog_on] = (m, h, times)
        k = (1, catalog_on)
        res.add(k + ('hand',), hm * 1000)
        res.add(k + ('multidb',), mm * 1000)
        res.add(k + ('ratio',), mm / hm)
        res.add(k + ('hand min',), min(times['hand']) * 1000)
        res.add(k + ('multidb min',), min(times['multidb']) * 1000)
    steps(pg, results, rounds * block * 2, res)
    # Where multidb's time goes.
    for catalog_on in ('filestorage', 'postgresql'):
        m = results[catalog_on][0]
        if profile_n:
            profile_creates(m, profile_n, catalog_on)
    for catalog_on, (m, _, _) in results.items():
        m.close()
        if catalog_on == 'postgresql':
            admin.drop(f'bench_catalog_p{run_no}')
    admin.close()


def table_pg_create(rounds, block, runs, res):
    rows = []
    for catalog_on, label in CATALOGS.items():
        k = (1, catalog_on)
        rows.append([f'catalog on {label}', res.fig(k + ('hand',)),
                     res.fig(k + ('multidb',)), res.fig(k + ('ratio',), 2),
                     verdict(res.med(k + ('ratio',)) <= TARGET_PG_CREATE),
                     f"{res.fig(k + ('hand min',))} /"
                     f" {res.fig(k + ('multidb min',))}"])
    table(f'(1) PostgreSQL tenant: multidb tenants.create() against the'
          f' same steps by hand (ms per create; per run the median of'
          f' {rounds * block} creates per side and row, {rounds} rounds of'
          f' {block}; median (min-max) over {runs} runs)',
          ['case', 'by hand', 'multidb', 'ratio',
           f'<= {TARGET_PG_CREATE}', 'min: hand / multidb'], rows)
    table(f"(1) multidb's own steps of a PostgreSQL create, each timed"
          f" alone (ms; per run the median of {rounds * block * 2}; median"
          f" (min-max) over {runs} runs)",
          ['step', 'ms'],
          [[label, res.fig((1, 'step', label))] for label in STEPS])


STEPS = ('psycopg2 connect + close',
         'backend.name_lock() (advisory lock, own connection)',
         'backend.exists() (own connection)',
         'catalog read (_record), catalog on FileStorage',
         'catalog read (_record), catalog on PostgreSQL',
         'catalog commit, catalog on FileStorage',
         'catalog commit, catalog on PostgreSQL')


def steps(pg, results, n, res):
    """multidb's own steps of a create, each timed alone (ms, median of
    n, the steps interleaved): what it adds to the by-hand sequence."""
    m_f = results['filestorage'][0]
    m_p = results['postgresql'][0]
    be = m_f.backend
    settings = be.settings_for('nosuch')
    dsn = pg.dsn()

    def connect_close():
        psycopg2.connect(dsn).close()

    def name_lock():
        with be.name_lock('nosuch'):
            pass

    def exists():
        be.exists(settings)

    def record_fs():
        m_f.tenants._record('nosuch')

    def record_pg():
        m_p.tenants._record('nosuch')

    def commit(m):
        # A catalog commit (the membership counter, one small object).
        with m.tenants._catalog(write=True) as (_, g):
            root = g.root('catalog')
            # bump(root) or, with the catalog's change log, bump(root,
            # name).
            if len(inspect.signature(bump).parameters) == 1:
                bump(root)
            else:
                bump(root, 'nosuch')

    funcs = list(zip(STEPS, [connect_close, name_lock, exists, record_fs,
                             record_pg, functools.partial(commit, m_f),
                             functools.partial(commit, m_p)]))
    times = {k: [] for k, _ in funcs}
    for _, f in funcs:
        f()
    for i in range(n):
        for k, f in funcs[i % len(funcs):] + funcs[:i % len(funcs)]:
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    for k, v in times.items():
        res.add((1, 'step', k), med(v) * 1000)


def profile_creates(m, n, catalog_on):
    prof = cProfile.Profile()
    for _ in range(n):
        m.n += 1
        name = f't{m.n}'
        prof.enable()
        m.tenants.create(name, init=m._init)
        prof.disable()
        m.cleanup(name)
    s = io.StringIO()
    st = pstats.Stats(prof, stream=s)
    st.sort_stats('cumulative').print_stats(40)
    print(f'\ncProfile of {n} multidb creates, catalog on {catalog_on}'
          f' (drops untimed):\n')
    print('\n'.join('    ' + line for line in s.getvalue().splitlines()
                    if line.strip()))
    # The calls that talk to the server, per create.
    s = io.StringIO()
    st = pstats.Stats(prof, stream=s)
    st.sort_stats('tottime').print_stats(15)
    print('\n    by own time:')
    print('\n'.join('    ' + line for line in s.getvalue().splitlines()
                    if line.strip()))


# -- (2) FileStorage tenant against bare CREATE DATABASE -------------------

FS_VS_PG = {
    'pg_conn_tpl': 'CREATE DATABASE, schema template, with connect',
    'pg_stmt_tpl': 'CREATE DATABASE, schema template, statement only',
    'pg_conn_t0': 'CREATE DATABASE, template0, with connect',
    'pg_stmt_t0': 'CREATE DATABASE, template0, statement only',
}


def bench_fs_vs_pg(pg, folder, rounds, block, run, res):
    """One run of (2): its figures into res."""
    admin = Admin(pg)
    RelStorageBackend(pg.dsn('x_{name}'), template=TEMPLATE,
                      keep_history=False).ensure_template()
    d = os.path.join(folder, f'fs2-{run}')
    os.makedirs(d)
    coll = multidb.Collection()
    coll.declare('catalog', functools.partial(
        FileStorage, os.path.join(d, 'catalog.fs')))
    tenants = multidb.Tenants(coll, catalog='catalog',
                              backend=multidb.FileStorageBackend(
                                  os.path.join(d, '{name}.fs')))
    held = psycopg2.connect(pg.dsn())
    held.autocommit = True
    counter = [0]
    times = {k: [] for k in ('multidb', 'pg_conn_tpl', 'pg_stmt_tpl',
                             'pg_conn_t0', 'pg_stmt_t0')}

    def fs_create(record=True):
        counter[0] += 1
        name = f't{counter[0]}'
        t0 = time.perf_counter()
        tenants.create(name)
        dt = time.perf_counter() - t0
        tenants.drop(name)
        if record:
            times['multidb'].append(dt)

    def pg_create(key, template, with_conn, record=True):
        counter[0] += 1
        dbname = f'bare_{counter[0]}'
        stmt = sql.SQL('CREATE DATABASE {} TEMPLATE {}').format(
            sql.Identifier(dbname), sql.Identifier(template))
        t0 = time.perf_counter()
        if with_conn:
            conn = psycopg2.connect(pg.dsn())
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(stmt)
            conn.close()
        else:
            with held.cursor() as cur:
                cur.execute(stmt)
        dt = time.perf_counter() - t0
        admin.drop(dbname)
        if record:
            times[key].append(dt)

    sides = [
        ('multidb', fs_create),
        ('pg_conn_tpl', functools.partial(pg_create, 'pg_conn_tpl',
                                          TEMPLATE, True)),
        ('pg_stmt_tpl', functools.partial(pg_create, 'pg_stmt_tpl',
                                          TEMPLATE, False)),
        ('pg_conn_t0', functools.partial(pg_create, 'pg_conn_t0',
                                         'template0', True)),
        ('pg_stmt_t0', functools.partial(pg_create, 'pg_stmt_t0',
                                         'template0', False)),
    ]
    for _, f in sides:
        f(record=False)
    for r in range(rounds):
        order = sides[r % len(sides):] + sides[:r % len(sides)]
        for _, f in order:
            for _ in range(block):
                f()
    held.close()
    coll.close()
    admin.close()
    fs = med(times['multidb'])
    res.add((2, 'multidb', 'ms'), fs * 1000)
    for key in FS_VS_PG:
        res.add((2, key, 'ms'), med(times[key]) * 1000)
        res.add((2, key, 'x'), med(times[key]) / fs)


def table_fs_vs_pg(rounds, block, runs, res):
    rows = [['multidb create, FileStorage', res.fig((2, 'multidb', 'ms')),
             '1.0', '']]
    for key, label in FS_VS_PG.items():
        rows.append([label, res.fig((2, key, 'ms')),
                     res.fig((2, key, 'x'), 1),
                     verdict(res.med((2, key, 'x')) >= TARGET_FS_VS_PG)])
    table(f'(2) FileStorage tenant through multidb against a bare'
          f' PostgreSQL CREATE DATABASE (ms per create; per run the median'
          f' of {rounds * block} of each, {rounds} rounds of {block};'
          f' median (min-max) over {runs} runs)',
          ['operation', 'ms', 'x multidb FS', f'>= {TARGET_FS_VS_PG:g}x'],
          rows)


# -- (3) one-object commit latency ----------------------------------------

COMMIT_KINDS = ('FileStorage', 'ZEO', 'RelStorage')
COMMIT_MODES = (('coll.transaction()', 'raw_tx', 'mdb_tx'),
                ('long-lived group', 'raw_ll', 'mdb_ll'))


def bench_commits(pg, zeo, folder, rounds, block, run, res):
    """One run of (3): its figures into res."""
    import ZEO
    admin = Admin(pg)
    RelStorageBackend(pg.dsn('x_{name}'), template=TEMPLATE,
                      keep_history=False).ensure_template()
    for db in ('commit_raw', 'commit_mdb'):
        admin.drop(db)
        admin.run('CREATE DATABASE {} TEMPLATE {}', db, TEMPLATE)
    d = os.path.join(folder, f'fs3-{run}')
    os.makedirs(d)
    kinds = {
        'FileStorage': (
            lambda: FileStorage(os.path.join(d, 'raw.fs')),
            lambda: FileStorage(os.path.join(d, 'mdb.fs'))),
        'ZEO': (
            lambda: ZEO.client(zeo.address, storage='raw'),
            lambda: ZEO.client(zeo.address, storage='mdb')),
        'RelStorage': (
            lambda: open_relstorage(pg.dsn('commit_raw')),
            lambda: open_relstorage(pg.dsn('commit_mdb'))),
    }
    for kind, (raw_factory, mdb_factory) in kinds.items():
        rawdb = ZODB.DB(raw_factory())
        coll = multidb.Collection()
        coll.declare('t', mdb_factory)
        times = {k: [] for k in ('raw_tx', 'mdb_tx', 'raw_ll', 'mdb_ll')}
        i = [0]

        def raw_tx(n):
            tm = transaction.manager
            for _ in range(n):
                i[0] += 1
                c = rawdb.open()
                c.root()['x'] = i[0]
                tm.commit()
                c.close()

        def mdb_tx(n):
            for _ in range(n):
                i[0] += 1
                with coll.transaction() as g:
                    g.root('t')['x'] = i[0]

        # Long-lived: one connection / group, opened once per block.
        def raw_ll(n):
            tm = transaction.TransactionManager()
            c = rawdb.open(tm)
            root = c.root()
            t0 = time.perf_counter()
            for _ in range(n):
                i[0] += 1
                root['x'] = i[0]
                tm.commit()
            dt = time.perf_counter() - t0
            c.close()
            return dt

        def mdb_ll(n):
            tm = transaction.TransactionManager()
            g = coll.group(tm)
            g.root('t')
            t0 = time.perf_counter()
            for _ in range(n):
                i[0] += 1
                g.root('t')['x'] = i[0]
                tm.commit()
            dt = time.perf_counter() - t0
            g.close()
            return dt

        sides = {'raw_tx': raw_tx, 'mdb_tx': mdb_tx,
                 'raw_ll': raw_ll, 'mdb_ll': mdb_ll}

        def timed(key, n):
            f = sides[key]
            t0 = time.perf_counter()
            inner = f(n)
            dt = time.perf_counter() - t0 if inner is None else inner
            return dt / n

        for key in sides:             # warm-up
            timed(key, max(block // 4, 5))
        for r in range(rounds):
            # Each pair side by side, the order swapping every round.
            for pair in (('raw_tx', 'mdb_tx'), ('raw_ll', 'mdb_ll')):
                p = pair if r % 2 == 0 else pair[::-1]
                for key in p:
                    times[key].append(timed(key, block))
        rawdb.close()
        coll.close()
        for mode, a, b in COMMIT_MODES:
            ra, rb = med(times[a]), med(times[b])
            # Each round's two blocks ran side by side: the median of
            # their ratios is less moved by the machine's drift.
            paired = med([y / w for w, y in zip(times[a], times[b])])
            k = (3, kind, mode)
            res.add(k + ('raw',), ra * 1000)
            res.add(k + ('multidb',), rb * 1000)
            res.add(k + ('ratio',), rb / ra)
            res.add(k + ('paired',), paired)
    admin.drop('commit_raw')
    admin.drop('commit_mdb')
    admin.close()


def table_commits(rounds, block, runs, res):
    rows = []
    for kind in COMMIT_KINDS:
        for mode, _, _ in COMMIT_MODES:
            k = (3, kind, mode)
            rows.append([kind, mode, res.fig(k + ('raw',)),
                         res.fig(k + ('multidb',)), res.fig(k + ('ratio',)),
                         res.fig(k + ('paired',)),
                         verdict(res.med(k + ('ratio',)) <= TARGET_COMMIT)])
    table(f'(3) one-object commit latency, multidb against raw ZODB on the'
          f' same kind of storage (ms per commit; per run the median of'
          f' {rounds} rounds of {block} commits per side; paired ratio: the'
          f' median of the per-round ratios; median'
          f' (min-max) over {runs} runs)',
          ['storage', 'multidb side', 'raw ZODB', 'multidb', 'ratio',
           'paired ratio', f'<= {TARGET_COMMIT}'], rows)


# -- main ------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--quick', action='store_true', help='a smoke run')
    p.add_argument('--only', default='1,2,3', help='some of 1,2,3')
    p.add_argument('--rounds', type=int, default=None)
    add_runs_argument(p)
    args = p.parse_args(argv)
    only = set(args.only.split(','))
    q = args.quick
    r = args.rounds
    folder = tempfile.mkdtemp(prefix='multidb-bench-servers-')
    pg = PostgreSQL().start()
    zeo = ZEOServer(('raw', 'mdb'), folder=os.path.join(folder, 'zeo'))
    try:
        version = Admin(pg)
        with version.conn.cursor() as cur:
            cur.execute('SHOW server_version')
            v = cur.fetchone()[0]
        version.close()
        print(f'machine: {machine()}; PostgreSQL {v} (fsync=off);'
              f' Python {sys.version.split()[0]}; {args.runs} runs')
        res = Runs()
        runs = args.runs
        t0 = time.perf_counter()
        clock = {}
        if '1' in only:
            rounds, block = r or (2 if q else 10), 1 if q else 3
            for run in range(runs):
                bench_pg_create(pg, folder, rounds, block,
                                profile_n=(3 if q else 30) if run == 0
                                else 0, run_no=run, res=res)
            table_pg_create(rounds, block, runs, res)
            clock['1'] = time.perf_counter() - t0
        if '2' in only:
            t1 = time.perf_counter()
            rounds, block = r or (2 if q else 10), 2 if q else 5
            for run in range(runs):
                bench_fs_vs_pg(pg, folder, rounds, block, run, res)
            table_fs_vs_pg(rounds, block, runs, res)
            clock['2'] = time.perf_counter() - t1
        if '3' in only:
            t1 = time.perf_counter()
            zeo.start()
            rounds, block = r or (2 if q else 15), 20 if q else 200
            for run in range(runs):
                bench_commits(pg, zeo, folder, rounds, block, run, res)
            table_commits(rounds, block, runs, res)
            clock['3'] = time.perf_counter() - t1
        print(f'\ntotal {time.perf_counter() - t0:.0f} s ('
              + ', '.join(f'({k}) {v:.0f} s' for k, v in clock.items())
              + ')')
    finally:
        zeo.close()
        pg.close()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == '__main__':
    main()
