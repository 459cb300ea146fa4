"""Tenants over several PostgreSQL servers: creates, a move, the pause.

Not a test (pytest does not collect ``bench_*.py``): run it by hand::

    python tests/bench/bench_move.py              # the full run (3 runs)
    python tests/bench/bench_move.py --quick      # a smoke run
    python tests/bench/bench_move.py --only 2,3   # some of 1,2,3

It starts three throwaway PostgreSQL clusters on loopback ports (see
``tests/servers.py``; fsync=off), standing for three hosts on one
machine, and prints reST simple tables:

(1) Creates: ``tenants.create`` of ``--n`` tenants (default 100) with a
    configuration of three servers (``<server>`` sections, placement
    ``fewest-tenants``) beside the same configuration with one server
    (no ``<server>`` section: the first cluster, another database-name
    prefix).  The catalog is on the first cluster in both.  Three
    tenants are made first on each side, untimed (the schema template of
    each server); the sides alternate their order every run; every
    tenant is closed again after its create (each open PostgreSQL tenant
    holds server connections); their databases are dropped after the
    run.  Ratio: creates/s three / one.
(2) A move of a tenant of ``--size-mb`` (default 200: persistent objects
    of 64 KB of random bytes, until ``pg_database_size`` reaches it) to
    another server (``Tenants.move``) beside ``pg_dump -Fc`` of the same
    database piped into ``pg_restore -d`` of a database made on the same
    target cluster (``CREATE DATABASE ... TEMPLATE template0``, timed),
    over TCP as user postgres.  The two alternate their order every run;
    the tenant goes on around the servers (a, b, c, a...).  The move's
    own steps are timed (``pgmove.Move``'s methods, wrapped here).
(3) The write pause: a tenant of ``--writer-mb`` (default 20) is moved
    while a writer process commits one small transaction after another
    to it (``Collection.run(bump, attempts=200, backoff=0.01,
    max_backoff=0.1)``, adding 1 to ``root['n']``); the writer reports
    the longest gap between two successful commits (from its 20th commit,
    when the move starts, to 1 s after the move) and the longest of those
    ending after the fence started; the move reports its ``pause`` (fence
    to switch).  The writer's refused attempts are counted, and those the
    transaction package saw fail in ``tpc_finish`` (its CRITICAL "second
    phase" log line: RelStorage moves its temp tables into
    ``object_state``, where the fence's trigger fires, only at
    ``tpc_finish``).  At the end, the writer's count of
    commits must equal the counter's growth in the database (else the
    script exits with status 1).

Figures over ``--runs`` (default 3) are "median (min-max)".
"""
import argparse
import json
import os
import shutil
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
from benchutil import machine  # noqa: E402
from benchutil import add_runs_argument  # noqa: E402
from benchutil import table  # noqa: E402
from servers import servers_config  # noqa: E402

OBJECT_BYTES = 64 * 1024      # one filler object's random bytes
BATCH = 64                    # filler objects per commit (4 MB)
MB = 1024 * 1024


# -- configurations ----------------------------------------------------------

def write_conf(folder, servers, prefix):
    """A configuration file: the catalog on servers[0] (database
    PREFIXcatalog, made here), tenants on every server of servers (the
    first is the main one, a; then b, c), fewest-tenants placement."""
    servers[0].sql(f'CREATE DATABASE "{prefix}catalog"')
    return servers_config(folder, servers, prefix, prefix + 'catalog')


def drop_prefixed(clusters, prefix):
    for pg in clusters:
        pg.drop_databases(prefix)


def db_size(pg, dbname):
    return pg.sql(f"SELECT pg_database_size('{dbname}')")[0][0]


# -- (1) creates ---------------------------------------------------------------

def bench_creates(clusters, folder, n, run, res):
    from multidb.config import collectionFromFiles
    sides = {'three': clusters, 'one': clusters[:1]}
    order = ['three', 'one'] if run % 2 == 0 else ['one', 'three']
    got = {}
    for side in order:
        prefix = f'c{run}{side[0]}_'
        conf = write_conf(folder, sides[side], prefix)
        c = collectionFromFiles([conf])
        try:
            t = c.tenants
            # The schema template of every server, untimed.
            for i, server in enumerate('abc'):
                t.create(f'warm{i}', server=server if side == 'three'
                         else None)
                c.remove(f'warm{i}')
            spent = 0.0
            for i in range(n):
                name = f't{i:04d}'
                t0 = time.perf_counter()
                t.create(name)
                spent += time.perf_counter() - t0
                c.remove(name)
            where = {}
            for rec in t.list():
                s = rec.settings.get('server', 'a')
                where[s] = where.get(s, 0) + 1
        finally:
            c.close()
        drop_prefixed(clusters, prefix)
        got[side] = n / spent
        res.add(('create', side), n / spent)
        print(f'  (1) run {run + 1}, {side} server(s): {n} creates in'
              f' {spent:.2f} s, {n / spent:.1f} creates/s; tenants per'
              f' server {dict(sorted(where.items()))}', flush=True)
    ratio = got['three'] / got['one']
    res.add(('create', 'ratio'), ratio)
    print(f'  (1) run {run + 1}: three / one = {ratio:.3f}', flush=True)


# -- (2) and (3): filling, timing the move's steps -------------------------------

def fill(coll, name, pg, dbname, size_mb):
    """Persistent objects of random bytes into the tenant until its
    database reaches size_mb; returns its size."""
    from BTrees.OOBTree import OOBTree
    from persistent.mapping import PersistentMapping
    with coll.transaction() as g:
        root = g.root(name)
        root['fill'] = OOBTree()
        root['n'] = 0
    i = 0
    while True:
        size = db_size(pg, dbname)
        if size >= size_mb * MB:
            return size
        with coll.transaction() as g:
            tree = g.root(name)['fill']
            for _ in range(BATCH):
                tree[i] = PersistentMapping(data=os.urandom(OBJECT_BYTES))
                i += 1


STEPS = ('prepare', 'copy', 'catch_up', 'fence', 'finish', 'committed',
         'drop_source')


class StepClock:
    """Wraps pgmove.Move's steps: seconds spent in each, and when the
    fence started (time.monotonic, the same clock in every process)."""

    def __init__(self):
        from multidb.backends import pgmove
        self.spent = {}
        self.fenced_at = None
        for step in STEPS:
            self._wrap(pgmove.Move, step)

    def _wrap(self, cls, step):
        inner = getattr(cls, step)
        clock = self

        def timed(*args, **kw):
            t0 = time.monotonic()
            if step == 'fence':
                clock.fenced_at = t0
            try:
                return inner(*args, **kw)
            finally:
                clock.spent[step] = clock.spent.get(step, 0.0) + \
                    time.monotonic() - t0
        setattr(cls, step, timed)

    def reset(self):
        self.spent = {}
        self.fenced_at = None


def dump_restore(src, dbname, dst, copy):
    """pg_dump -Fc of dbname on src piped into pg_restore -d copy on dst
    (made first); returns seconds."""
    from servers import pg_bindir
    bindir = pg_bindir()

    def conn(pg):
        return ['-h', '127.0.0.1', '-p', str(pg.port), '-U', 'postgres']
    t0 = time.perf_counter()
    dst.sql(f'CREATE DATABASE "{copy}" TEMPLATE template0')
    dump = subprocess.Popen(
        [os.path.join(bindir, 'pg_dump'), '-Fc', *conn(src), '-d', dbname],
        stdout=subprocess.PIPE)
    restore = subprocess.Popen(
        [os.path.join(bindir, 'pg_restore'), *conn(dst), '-d', copy],
        stdin=dump.stdout)
    dump.stdout.close()
    restore.wait()
    dump.wait()
    seconds = time.perf_counter() - t0
    if dump.returncode or restore.returncode:
        raise RuntimeError(f'pg_dump {dump.returncode}, pg_restore'
                           f' {restore.returncode}')
    return seconds


def bench_big_move(env, run, res):
    c, clusters, steps = env['coll'], env['clusters'], env['steps']
    prefix, name = env['prefix'], 'big'
    dbname = prefix + name
    copy = f'dumpcopy{run}'
    order = ['dump', 'move'] if run % 2 == 0 else ['move', 'dump']
    for side in order:
        # From where the tenant is to the next server (a, b, c, a...).
        here = c.tenants.get(name).settings['server']
        there = 'abc'['abc'.index(here) + 1 - 3]
        src = clusters['abc'.index(here)]
        dst = clusters['abc'.index(there)]
        size = db_size(src, dbname)
        if side == 'dump':
            seconds = dump_restore(src, dbname, dst, copy)
            copied = db_size(dst, copy)
            dst.sql(f'DROP DATABASE "{copy}"')
            res.add(('big', 'dump'), seconds)
            print(f'  (2) run {run + 1}: pg_dump -Fc | pg_restore {here} ->'
                  f' {there}: {seconds:.2f} s ({size / MB:.0f} MB;'
                  f' the copy {copied / MB:.0f} MB)', flush=True)
        else:
            steps.reset()
            done = c.tenants.move(name, there)
            res.add(('big', 'move'), done['seconds'])
            res.add(('big', 'pause'), done['pause'])
            for step in STEPS:
                res.add(('big step', step), steps.spent.get(step, 0.0))
            res.add(('big step', 'switch and the rest'), done['seconds'] -
                    sum(steps.spent.values()))
            print(f"  (2) run {run + 1}: move {here} -> {there}:"
                  f" {done['seconds']:.2f} s, pause {done['pause']:.3f} s,"
                  f" target {done['bytes'] / MB:.0f} MB, source dropped"
                  f" {done['source_dropped']}; steps "
                  + ', '.join(f'{s} {steps.spent.get(s, 0.0):.2f}'
                              for s in STEPS), flush=True)
    res.add(('big', 'ratio'), res.get(('big', 'move'))[-1] /
            res.get(('big', 'dump'))[-1])
    print(f"  (2) run {run + 1}: move / pg_dump|pg_restore ="
          f" {res.get(('big', 'ratio'))[-1]:.3f}", flush=True)


# -- (3) the writer ---------------------------------------------------------------

def writer(args):
    """The writer process: commits root['n'] += 1 until told to stop (a
    line on stdin); prints READY after 20 commits, then one JSON line."""
    from multidb.config import collectionFromFiles
    conf, name = args.writer
    c = collectionFromFiles([conf])
    stop = threading.Event()

    def wait_stop():
        sys.stdin.readline()
        stop.set()
    threading.Thread(target=wait_stop, daemon=True).start()
    calls = [0]

    def bump(g):
        calls[0] += 1
        root = g.root(name)
        root['n'] = root.get('n', 0) + 1
    done, ends = 0, []
    while not stop.is_set():
        c.run(bump, attempts=200, backoff=0.01, max_backoff=0.1)
        done += 1
        ends.append(time.monotonic())   # the same clock in every process
        if done == 20:
            print('READY', flush=True)
    c.close()
    print(json.dumps({'done': done, 'calls': calls[0], 'ends': ends}),
          flush=True)
    return 0


def bench_pause(env, run, res, failures):
    c, steps = env['coll'], env['steps']
    name = 'busy'
    here = c.tenants.get(name).settings['server']
    there = 'abc'['abc'.index(here) + 1 - 3]
    with c.transaction() as g:
        before = g.root(name)['n']
    proc = subprocess.Popen(
        [sys.executable, __file__, '--writer', env['conf'], name],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if line != 'READY\n':
            raise RuntimeError(f'the writer did not start: {line!r}')
        steps.reset()
        done = c.tenants.move(name, there)
        time.sleep(1.0)
        out, err = proc.communicate('stop\n', timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode:
        raise RuntimeError(f'the writer failed ({proc.returncode}):'
                           f' {err}')
    # The transaction package's CRITICAL log line, when a commit fails
    # in tpc_finish (the fence refuses the move of RelStorage's temp
    # tables into object_state there, not at the vote).
    second = err.count('second phase of the two-phase commit')
    w = json.loads(out.strip().splitlines()[-1])
    with c.transaction() as g:
        after = g.root(name)['n']
    ok = after - before == w['done']
    if not ok:
        failures.append(f'run {run + 1}: the writer counted {w["done"]}'
                        f' commits, the database {after - before}')
    # The gaps between two successful commits, from the 20th commit
    # (READY: the move starts then; before it, the writer's first commit
    # opened its collection and the tenant) to the writer's stop, 1 s
    # after the move.
    ends = w['ends'][19:]
    gaps = [(b - a, b) for a, b in zip(ends, ends[1:])]
    longest, ended = max(gaps)
    fence = steps.fenced_at
    # The longest gap ending after the fence started (the fence, the last
    # catch-up, the rename, the record's switch, the writer's retry).
    after_fence = max(g for g, b in gaps if b > fence)
    res.add(('pause', 'gap'), longest)
    res.add(('pause', 'across'), after_fence)
    res.add(('pause', 'pause'), done['pause'])
    res.add(('pause', 'move'), done['seconds'])
    res.add(('pause', 'median gap'), statistics.median(g for g, _ in gaps))
    res.add(('pause', 'commits'), w['done'])
    res.add(('pause', 'retries'), w['calls'] - w['done'])
    res.add(('pause', 'second phase'), second)
    where = (f" (it ended {ended - fence:+.3f} s from the fence; the"
             f" longest ending after the fence {after_fence:.3f} s)")
    print(f"  (3) run {run + 1}: move {here} -> {there} under writes:"
          f" {done['seconds']:.2f} s, pause {done['pause']:.3f} s;"
          f" writer: {w['done']} commits ({w['calls'] - w['done']}"
          f" retried attempts, {second} failed in tpc_finish), median gap"
          f" {res.get(('pause', 'median gap'))[-1] * 1000:.1f} ms,"
          f" longest gap {longest:.3f} s{where}; counter +"
          f"{after - before}: {'equal' if ok else 'DIFFERENT'}; steps "
          + ', '.join(f'{s} {steps.spent.get(s, 0.0):.2f}' for s in STEPS),
          flush=True)


# -- main ------------------------------------------------------------------------

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_runs_argument(p)
    p.add_argument('--quick', action='store_true',
                   help='a smoke run: --n 10 --size-mb 10 --writer-mb 2'
                        ' --runs 1 (unless given)')
    p.add_argument('--n', type=int, default=None,
                   help='tenants created per side and run in (1)'
                        ' (default 100)')
    p.add_argument('--size-mb', type=int, default=None,
                   help="the moved tenant's size in (2), MB (default 200)")
    p.add_argument('--writer-mb', type=int, default=None,
                   help="the tenant's size in (3), MB (default 20)")
    p.add_argument('--only', default='1,2,3', help='some of 1,2,3')
    p.add_argument('--writer', nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.writer:
        return writer(args)
    if args.quick and '--runs' not in ' '.join(sys.argv):
        args.runs = 1
    n = args.n or (10 if args.quick else 100)
    size_mb = args.size_mb or (10 if args.quick else 200)
    writer_mb = args.writer_mb or (2 if args.quick else 20)
    only = set(args.only.split(','))
    print('Command:', ' '.join([sys.executable] + sys.argv))

    from multidb.config import collectionFromFiles
    from servers import PostgreSQL
    folder = tempfile.mkdtemp(prefix='multidb-bench-move-')
    clusters = []
    failures = []
    res = Runs()
    t_start = time.perf_counter()
    try:
        for _ in range(3):
            clusters.append(PostgreSQL().start())
        version = clusters[0].sql('SHOW server_version')[0][0]
        print(f'machine: {machine()}; PostgreSQL {version} x 3 clusters'
              f' (fsync=off); Python {sys.version.split()[0]};'
              f' {args.runs} runs', flush=True)
        env = None
        if only & {'2', '3'}:
            steps = StepClock()
            conf = write_conf(folder, clusters, 'mv_')
            coll = collectionFromFiles([conf])
            env = {'coll': coll, 'clusters': clusters, 'steps': steps,
                   'prefix': 'mv_', 'conf': conf}
            t0 = time.perf_counter()
            # The schema template of every server, untimed (a move's
            # prepare makes it on a server that has none).
            for server in 'abc':
                coll.tenants.create('warm' + server, server=server)
                coll.remove('warm' + server)
            for name, server, mb, part in (('big', 'a', size_mb, '2'),
                                           ('busy', 'b', writer_mb, '3')):
                if part not in only:
                    continue
                coll.tenants.create(name, server=server)
                size = fill(coll, name, clusters['abc'.index(server)],
                            'mv_' + name, mb)
                coll.remove(name)
                print(f'  tenant {name} on {server}: {size / MB:.1f} MB',
                      flush=True)
            print(f'  filled in {time.perf_counter() - t0:.1f} s',
                  flush=True)
        for run in range(args.runs):
            if '1' in only:
                bench_creates(clusters, folder, n, run, res)
            if '2' in only:
                bench_big_move(env, run, res)
            if '3' in only:
                bench_pause(env, run, res, failures)
        if env is not None:
            env['coll'].close()
    finally:
        for pg in clusters:
            pg.close()
        shutil.rmtree(folder, ignore_errors=True)

    runs = args.runs
    if '1' in only:
        table(f'(1) creates/s, {n} tenants per side and run, catalog on'
              f' the first cluster (median (min-max) over {runs} runs)',
              ['configuration', 'creates/s'],
              [['three servers, fewest-tenants',
                res.fig(('create', 'three'), 1)],
               ['one server', res.fig(('create', 'one'), 1)],
               ['ratio three / one', res.fig(('create', 'ratio'), 3)]])
    if '2' in only:
        table(f'(2) a tenant of {size_mb} MB to another cluster, seconds'
              f' (median (min-max) over {runs} runs)',
              ['how', 'seconds'],
              [['Tenants.move', res.fig(('big', 'move'), 2)],
               ['pg_dump -Fc | pg_restore', res.fig(('big', 'dump'), 2)],
               ['ratio move / pg_dump|pg_restore',
                res.fig(('big', 'ratio'), 2)],
               ["the move's pause (fence to switch)",
                res.fig(('big', 'pause'), 3)]])
        table(f"(2) the move's steps, seconds (median (min-max) over"
              f" {runs} runs)", ['step', 'seconds'],
              [[s, res.fig(('big step', s), 3)] for s in
               STEPS + ('switch and the rest',)])
    if '3' in only:
        table(f'(3) a move of a {writer_mb} MB tenant under writes from'
              f' another process (median (min-max) over {runs} runs)',
              ['figure', 'value'],
              [['longest gap between two commits (s)',
                res.fig(('pause', 'gap'), 3)],
               ['longest gap ending after the fence (s)',
                res.fig(('pause', 'across'), 3)],
               ["move()'s pause, fence to switch (s)",
                res.fig(('pause', 'pause'), 3)],
               ['the move (s)', res.fig(('pause', 'move'), 2)],
               ["the writer's median gap (ms)",
                fig_ms(res.get(('pause', 'median gap')))],
               ["the writer's commits", res.fig(('pause', 'commits'), 0)],
               ['retried attempts', res.fig(('pause', 'retries'), 0)],
               ['of which failed in tpc_finish (second phase)',
                res.fig(('pause', 'second phase'), 0)],
               ["writer's count = counter's growth",
                'every run' if not failures else 'NO']])
    print(f'\ntotal {time.perf_counter() - t_start:.0f} s')
    if failures:
        print('FAILED:', *failures, sep='\n  ')
        return 1
    return 0


def fig_ms(values):
    from benchutil import fig
    return fig([v * 1000 for v in values], 1)


if __name__ == '__main__':
    sys.exit(main())
