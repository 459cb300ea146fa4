"""Benchmarks of the tenant lifecycle, beside their baselines.

Not a test (pytest does not collect ``bench_*.py``): run it by hand::

    python tests/bench/bench_tenants.py            # the full run, 3 runs
    python tests/bench/bench_tenants.py --quick    # a smoke run, seconds
    python tests/bench/bench_tenants.py --only 2   # one benchmark (1 or 2)
    python tests/bench/bench_tenants.py --runs 5   # more runs

It prints reST simple tables, so that the figures can be copied into
``docs/performance.rst``:

(1) Tenant create and drop on FileStorage: median and p99 per operation
    over N creates then N drops, beside the bare ZODB equivalent in the
    same run (``ZODB.DB(FileStorage(path))``, a one-object commit, close;
    ``os.unlink`` of its files for the drop).  The two sides alternate in
    blocks.  The time spent in FileStorage's fsync is counted on both
    sides, and a cProfile of a separate batch shows where the rest goes.
(2) Snapshot, archive and restore throughput of a tenant of about 200 MB
    (built once and cached as an archive under /tmp), beside ``cp`` of
    its storage file (and ``cp`` followed by an fsync of the copy, since
    the three operations make their result durable).  Operations
    alternate, round after round, in a rotating order; the page cache is
    warm for all of them (nothing drops it); ``os.sync()`` runs, untimed,
    before each timed operation so that none pays for another's
    write-back.  A breakdown times the pieces: SHA-256 alone, fsync.

Each benchmark is repeated ``--runs`` times (default 3) in the run; every
figure of the tables is "median (min-max)" over the runs of the run's
figure (itself a median over its operations); a verdict is on the median.
The profiles are of the first run only.
"""
import argparse
import cProfile
import functools
import hashlib
import io
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import transaction
import ZODB
import ZODB.FileStorage.FileStorage
from persistent.mapping import PersistentMapping
from ZODB.FileStorage import FileStorage

import multidb
from benchutil import Runs
from benchutil import add_runs_argument
from benchutil import table
from benchutil import verdict

TARGET_CREATE_MS = 3.0      # median
TARGET_VS_CP = 0.5          # throughput / cp's
CACHE = '/tmp/multidb-bench-tenant'
# The module (ZODB.FileStorage.FileStorage names the class).
fsmodule = sys.modules['ZODB.FileStorage.FileStorage']


# -- helpers ---------------------------------------------------------------

class FsyncMeter:
    """Wraps FileStorage's fsync (and os.fsync) to count calls and time."""

    def __init__(self):
        self.calls = 0
        self.seconds = 0.0

    def __enter__(self):
        self._fs, self._os = fsmodule.fsync, os.fsync
        real = self._os

        def fsync(fd):
            t0 = time.perf_counter()
            try:
                return real(fd)
            finally:
                self.seconds += time.perf_counter() - t0
                self.calls += 1
        fsmodule.fsync = os.fsync = fsync
        return self

    def __exit__(self, *exc):
        fsmodule.fsync, os.fsync = self._fs, self._os


def med(values):
    return statistics.median(values)


def p99(values):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(0.99 * (len(v) - 1))))]


def tenants_in(folder, **kw):
    c = multidb.Collection()
    c.declare('catalog', functools.partial(
        FileStorage, os.path.join(folder, 'catalog.fs')))
    backend = multidb.FileStorageBackend(
        os.path.join(folder, 'tenants', '{name}.fs'))
    t = multidb.Tenants(c, catalog='catalog', backend=backend, **kw)
    return c, t


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def print_profile(title, prof, top):
    print()
    print(title)
    print()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats('tottime').print_stats(top)
    lines = s.getvalue().splitlines()
    # Skip pstats' preamble up to the column header.
    start = next(i for i, line in enumerate(lines) if 'ncalls' in line)
    print('::')
    print()
    for line in lines[start - 2:]:
        if line.strip():
            print('    ' + line.replace(sys.prefix, '<venv>').replace(
                os.path.dirname(os.path.dirname(os.path.dirname(
                    os.path.abspath(__file__)))), '<repo>'))
    sys.stdout.flush()


# -- (1) create and drop -----------------------------------------------------

def raw_create(folder, i):
    db = ZODB.DB(FileStorage(os.path.join(folder, f'r{i}.fs')))
    with db.transaction() as conn:
        conn.root()['x'] = 1
    db.close()


def raw_drop(folder, i):
    path = os.path.join(folder, f'r{i}.fs')
    for ext in ('', '.index', '.lock', '.tmp'):
        _unlink(path + ext)


def bench_create_drop(n, block, profile_n, res):
    """One run of (1): its figures into res; the profiles if profile_n."""
    work = tempfile.mkdtemp(prefix='multidb-bench-create-')
    try:
        c, t = tenants_in(work)
        raw = os.path.join(work, 'raw')
        os.makedirs(raw)
        # Warm up both sides: imports, the catalog's first transactions.
        t.create('warm')
        raw_create(raw, 'warm')
        times = {k: [] for k in ('mc', 'rc', 'md', 'rd')}
        fsyncs = {k: FsyncMeter() for k in times}

        def run(key, fn, start):
            meter = fsyncs[key]
            with meter:
                for i in range(start, min(start + block, n)):
                    t0 = time.perf_counter()
                    fn(i)
                    times[key].append(time.perf_counter() - t0)

        for phase in (('mc', lambda i: t.create(f't{i}'),
                       'rc', lambda i: raw_create(raw, i)),
                      ('md', lambda i: t.drop(f't{i}'),
                       'rd', lambda i: raw_drop(raw, i))):
            ka, fa, kb, fb = phase
            for b, start in enumerate(range(0, n, block)):
                order = [(ka, fa), (kb, fb)]
                if b % 2:
                    order.reverse()
                for key, fn in order:
                    run(key, fn, start)

        for what, m, r in (('create', 'mc', 'rc'), ('drop', 'md', 'rd')):
            mm, rm = med(times[m]), med(times[r])
            res.add((1, what, 'raw med'), rm * 1000)
            res.add((1, what, 'raw p99'), p99(times[r]) * 1000)
            res.add((1, what, 'multidb med'), mm * 1000)
            res.add((1, what, 'multidb p99'), p99(times[m]) * 1000)
            res.add((1, what, 'ratio'), mm / rm)
            res.add((1, what, 'raw fsyncs'), fsyncs[r].calls / n)
            res.add((1, what, 'raw fsync ms'), fsyncs[r].seconds / n * 1000)
            res.add((1, what, 'multidb fsyncs'), fsyncs[m].calls / n)
            res.add((1, what, 'multidb fsync ms'),
                    fsyncs[m].seconds / n * 1000)
        if not profile_n:
            c.close()
            return

        # Where the time goes: a separate, profiled batch.
        prof = cProfile.Profile()
        prof.enable()
        for i in range(profile_n):
            t.create(f'p{i}')
        prof.disable()
        print_profile(f"cProfile of {profile_n} creates (top entries by"
                      f" own time):", prof, 14)
        prof = cProfile.Profile()
        prof.enable()
        for i in range(profile_n):
            t.drop(f'p{i}')
        prof.disable()
        print_profile(f"cProfile of {profile_n} drops (top entries by own"
                      f" time):", prof, 10)
        c.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def table_create_drop(n, runs, res):
    rows = []
    for what, target in (('create', TARGET_CREATE_MS), ('drop', None)):
        k = (1, what)
        rows.append([
            what, res.fig(k + ('raw med',)), res.fig(k + ('raw p99',)),
            res.fig(k + ('multidb med',)), res.fig(k + ('multidb p99',)),
            res.fig(k + ('ratio',), 2),
            f"{res.fig(k + ('raw fsyncs',), 1)} /"
            f" {res.fig(k + ('raw fsync ms',))}",
            f"{res.fig(k + ('multidb fsyncs',), 1)} /"
            f" {res.fig(k + ('multidb fsync ms',))}",
            '' if target is None else
            f"{verdict(res.med(k + ('multidb med',)) <= target)}"
            f" (<= {target:g} ms)"])
    table(f"(1) tenant create and drop on FileStorage, {n} of each per run,"
          f" ms per operation (median (min-max) over {runs} runs of the"
          f" run's median or p99)",
          ['op', 'raw median', 'raw p99', 'multidb median',
           'multidb p99', 'ratio', 'raw fsyncs / ms',
           'multidb fsyncs / ms', 'target'],
          rows)


# -- (2) snapshot, archive, restore ---------------------------------------

def build_tenant_archive(mb, path):
    """A tenant of about mb MB (mb transactions of ~1 MB each: a
    PersistentMapping of 16 bytes values of 64 KiB), archived at path."""
    work = tempfile.mkdtemp(prefix='multidb-bench-build-')
    try:
        t0 = time.perf_counter()
        c, t = tenants_in(work)
        t.create('big')
        for i in range(mb):
            with c.transaction() as g:
                root = g.root('big')
                root[i] = PersistentMapping(
                    {k: os.urandom(64 << 10) for k in range(16)})
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + '.tmp'
        _unlink(tmp)
        t.archive('big', tmp)
        os.rename(tmp, path)
        c.close()
        print(f"built the {mb} MB tenant in {time.perf_counter() - t0:.1f} s"
              f" (cached as {path})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def sha256_file(path, length):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        left = length
        while left:
            b = f.read(min(1 << 20, left))
            h.update(b)
            left -= len(b)


def fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def bench_throughput(mb, rounds, res):
    """One run of (2): its figures into res; returns the tenant's size."""
    cached = os.path.join(CACHE, f'tenant-{mb}mb.multidb')
    if not os.path.exists(cached):
        build_tenant_archive(mb, cached)
    work = tempfile.mkdtemp(prefix='multidb-bench-archive-')
    try:
        c, t = tenants_in(work)
        t.restore(cached, 'big', trust_unsigned=True)
        rec = t.get('big')
        src = rec.settings['path']
        size = os.path.getsize(src)
        backend = t.backend
        archive = os.path.join(work, 'big.multidb')
        t.archive('big', archive)      # the one the restores read
        # Warm up: open the tenant, fill the page cache.
        sid = t.snapshot('big')
        backend.remove_snapshot(rec.settings, sid)
        dst = os.path.join(work, 'cp.fs')
        subprocess.run(['cp', src, dst], check=True)

        def do_cp():
            subprocess.run(['cp', src, dst], check=True)

        def do_cp_fsync():
            subprocess.run(['cp', src, dst], check=True)
            fsync_path(dst)

        def do_snapshot():
            do_snapshot.sid = t.snapshot('big')

        def undo_snapshot():
            backend.remove_snapshot(rec.settings, do_snapshot.sid)

        out = os.path.join(work, 'timed.multidb')

        def do_archive():
            t.archive('big', out)

        def do_restore():
            t.restore(archive, 'copy', trust_unsigned=True)

        def do_sha256():
            sha256_file(src, size)

        ops = {
            'cp': (do_cp, lambda: _unlink(dst)),
            'cp + fsync': (do_cp_fsync, lambda: _unlink(dst)),
            'snapshot': (do_snapshot, undo_snapshot),
            'archive': (do_archive, lambda: _unlink(out)),
            'restore': (do_restore, lambda: t.drop('copy')),
            'sha256 alone': (do_sha256, lambda: None),
        }
        names = list(ops)
        times = {k: [] for k in names}
        fsyncs = {k: FsyncMeter() for k in names}
        for r in range(rounds):
            k = r % len(names)
            order = names[k:] + names[:k]
            if r % 2:
                order.reverse()
            for name in order:
                fn, cleanup = ops[name]
                os.sync()
                with fsyncs[name]:
                    t0 = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t0)
                cleanup()
        cp = med(times['cp'])
        cpf = med(times['cp + fsync'])
        for name in names:
            m = med(times[name])
            res.add((2, name, 'ms'), m * 1000)
            res.add((2, name, 'MB/s'), size / m / 1e6)
            res.add((2, name, 'vs cp'), cp / m)
            res.add((2, name, 'vs cp + fsync'), cpf / m)
            res.add((2, name, 'fsync ms'), fsyncs[name].seconds / rounds
                    * 1000)
        c.close()
        return size
    finally:
        shutil.rmtree(work, ignore_errors=True)


THROUGHPUT_OPS = ('cp', 'cp + fsync', 'snapshot', 'archive', 'restore',
                  'sha256 alone')


def table_throughput(size, rounds, runs, res):
    rows = []
    for name in THROUGHPUT_OPS:
        k = (2, name)
        target = ''
        if name in ('snapshot', 'archive', 'restore'):
            target = verdict(res.med(k + ('vs cp',)) >= TARGET_VS_CP)
        rows.append([name, res.fig(k + ('ms',), 1),
                     res.fig(k + ('MB/s',), fmt=',.0f'),
                     res.fig(k + ('vs cp',), 2),
                     res.fig(k + ('vs cp + fsync',), 2),
                     res.fig(k + ('fsync ms',), 1), target])
    table(f"(2) a tenant of {size / 1e6:.0f} MB, warm page cache (per run:"
          f" the median of {rounds} rounds; median (min-max) over {runs}"
          f" runs)",
          ['operation', 'ms', 'MB/s', 'vs cp', 'vs cp + fsync',
           'fsync ms', f'>= {TARGET_VS_CP} of cp'], rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--quick', action='store_true',
                   help='a smoke run: small sizes, few rounds')
    p.add_argument('--only', default='1,2', help='benchmarks to run: 1,2')
    p.add_argument('-n', type=int, help='creates and drops (default 500)')
    p.add_argument('--mb', type=int, help='tenant size in MB (default 200)')
    p.add_argument('--rounds', type=int, help='rounds of (2) (default 9)')
    add_runs_argument(p)
    args = p.parse_args(argv)
    only = set(args.only.split(','))
    n = args.n or (40 if args.quick else 500)
    mb = args.mb or (8 if args.quick else 200)
    rounds = args.rounds or (3 if args.quick else 9)
    from importlib.metadata import version
    print(f"Python {sys.version.split()[0]}, ZODB {version('ZODB')};"
          f" {args.runs} runs")
    res = Runs()
    t0 = time.perf_counter()
    if '1' in only:
        for run in range(args.runs):
            bench_create_drop(n, block=max(1, min(50, n // 4)),
                              profile_n=max(20, n // 5) if run == 0 else 0,
                              res=res)
        table_create_drop(n, args.runs, res)
    if '2' in only:
        for run in range(args.runs):
            size = bench_throughput(mb, rounds, res)
        table_throughput(size, rounds, args.runs, res)
    transaction.abort()
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == '__main__':
    main()
