"""Benchmarks of multidb at scale: N tenants, each figure beside its baseline.

Not a test (pytest does not collect ``bench_*.py``): run it by hand::

    python tests/bench/bench_scale.py                     # N = 100 .. 100,000
    python tests/bench/bench_scale.py --ns 100,1000,10000 --runs 3
    python tests/bench/bench_scale.py --quick             # a smoke run, < 2 min
    python tests/bench/bench_scale.py --no-pg             # without PostgreSQL
    python tests/bench/bench_scale.py --only create,miss  # some benchmarks

For each N (``--ns``), the population of N FileStorage tenants (a catalog
database and N tenant files, plus N plain copies for the raw ZODB
baselines) is built once and cached in ``/tmp/multidb-bench-scale-N``
(reused while present; ``--rebuild`` makes it again).  The catalog is
filled in bulk (records written into its tree, 2,000 per transaction; one
tenant file made with ZODB and copied byte for byte, each copy with its
own tenant id beside it): only the timed creates are real
``tenants.create`` calls.

Each benchmark runs multidb and its baseline in the same process (or in
one fresh subprocess each, for RSS), alternately, block after block.
The whole set is repeated ``--runs`` times; every figure is printed as
the median over the runs with the min-max, "1.03 (0.98-1.10)", and a
verdict is the median ratio against the goal.

create
    ``tenants.create(name)`` (no init) at a population of N, median and
    p99 over ``--creates`` creates (dropped again afterwards, untimed),
    beside raw ZODB: ``ZODB.DB(FileStorage(path))`` in a folder of N
    files, a one-object commit, close.  The collection has every tenant
    declared (``tenants.load()``) first.  Goals: <= 2x at every N, and
    multidb's median at the largest N within 1.5x of the smallest.
first
    The catalog on a ZEO server (serving the population's catalog file),
    the tenants on FileStorage.  A subprocess creates a tenant (a
    Tenants object of its own on the same catalog and folder; it closes
    the new tenant's file afterwards so that this process may open it);
    this process then times its next request on a tenant it has open
    (and, informational, its first request on the new tenant), beside
    steady requests between creates.  A ZEO ping (untimed) before each
    timed request makes sure the invalidation has arrived; the request
    starts at once after it (or ``--first-gap`` seconds later, steady
    requests alike): the process catches up with the catalog in the
    background as the invalidation arrives, and at once is the worst
    case, a request racing that catch-up.  Goal: <= 2x.
miss
    ``Collection(max_open=65)`` (the catalog takes one slot: 64 tenants
    stay open), every tenant declared; a random tenant per request (open
    a group, read the root, close) beside a hand-written LRU (OrderedDict,
    at most 64 ``ZODB.DB`` objects, evicting with ``db.close()``) over the
    plain copies.  Goal: <= 1.0x.  Descriptors are sampled in a thread
    meanwhile (``fds``).
fds
    The peak number of descriptors of each side on its database files
    during the miss benchmark: the descriptors of the process whose
    targets are that side's files under the population folder (multidb:
    the tenants' files and the catalog; the LRU: the plain copies),
    sampled every ``--fd-interval`` seconds while the side runs.  Goal:
    multidb never above its own max_open x 4 (65 x 4 = 260).
hit
    ``--hot`` tenants (all of them when N is smaller) open on both sides,
    every tenant declared through the catalog; a random one of them per
    request, beside a dict of ``ZODB.DB`` objects (``db.open()``, root
    read, close).  Goal: <= 1.10x.  Two more sides, informational, show
    what the ratio is made of: the raw request inside an empty group
    (``coll.group()`` ... ``close()``), and that plus the tenant check
    a group makes at its first use (``coll.resolver.refresh``).
threads
    The hit benchmark's requests in 8 threads and in 1 thread, for
    ``--thread-seconds`` each: the 8/1 throughput ratio of multidb over
    that of the raw dict.  Goal: >= 0.95.
rss
    VmRSS of a fresh subprocess after ``tenants.load()`` of the N tenants,
    beside one that declares the N FileStorage databases itself,
    ``coll.declare(name, functools.partial(FileStorage, path))`` per name,
    each with its own path (the plain declare).  Goal: <= 1.5x.  A third
    subprocess declaring N names with one trivial shared factory is shown
    beside, informational.
pg
    ``--pg-n`` tenants on PostgreSQL (a throwaway cluster, ``fsync=off``,
    with ``pg_stat_statements``; N is small: creating PostgreSQL tenants
    is slow), all open: a request on a random one, multidb with the
    catalog on PostgreSQL and with the catalog on FileStorage, beside
    RelStorage per tenant by hand (databases made with ``CREATE
    DATABASE ... TEMPLATE`` from the same template).  SQL statements per
    request are counted by the server (``pg_stat_statements``, reset
    before at least ``--pg-count`` requests and ``--pg-window`` seconds of
    one side, summed per database), the same way for every side: tenant
    statements per request, and catalog statements apart.  The catalog
    on PostgreSQL is polled at most once per ``catalog_poll_interval``
    (default 1 s) by design: its statements are divided by those of one
    poll (measured alone: one request after more than an interval
    without any) and compared with the intervals the counted window
    spans.  Goal: <= 1.10x median, the same tenant
    statements per request, and catalog statements only from the
    periodic poll (<= 1 per interval).
"""
import argparse
import collections
import functools
import gc
import glob
import json
import logging
import os
import random
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import transaction
import ZODB
from ZODB.FileStorage import FileStorage
from ZODB.MappingStorage import MappingStorage

import multidb
from multidb.tenants import catalog as mcatalog
from multidb.tenants.catalog import TenantRecord
from benchutil import Runs as Results
from benchutil import fig
from benchutil import filestorage_bytes
from benchutil import table
from benchutil import verdict

HERE = os.path.abspath(__file__)
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

CACHE = '/tmp/multidb-bench-scale-{n}'
BUILD_VERSION = 1

# The goals.
GOAL_CREATE = 2.0           # multidb / raw, median and p99, every N
GOAL_CREATE_SCALE = 1.5     # multidb median at the largest N / smallest
GOAL_FIRST = 2.0            # first request after a create elsewhere / steady
GOAL_MISS = 1.0             # multidb / hand-written LRU
GOAL_HIT = 1.10             # multidb / dict of DBs
GOAL_PG = 1.10              # multidb / RelStorage by hand
GOAL_THREADS = 0.95         # multidb 8/1 over raw 8/1
FDS_PER_DB = 4              # the fd goal: max_open x 4
GOAL_RSS = 1.5              # tenants.load() / plain FileStorage declare

BENCHMARKS = ('rss', 'create', 'miss', 'hit', 'first', 'pg')


# -- figures -----------------------------------------------------------------

def med(values):
    return statistics.median(values)


def p99(values):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(0.99 * (len(v) - 1))))]


def ms(seconds):
    return seconds * 1000


# -- the machine -----------------------------------------------------------

def machine():
    model = '?'
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    model = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    from importlib.metadata import version
    versions = []
    for dist in ('ZODB', 'ZEO', 'persistent', 'BTrees', 'transaction',
                 'RelStorage', 'psycopg2-binary'):
        try:
            versions.append(f"{dist} {version(dist)}")
        except Exception:
            pass
    try:
        head = subprocess.run(
            ['git', '-C', os.path.dirname(HERE), 'describe', '--always',
             '--dirty'], capture_output=True, text=True).stdout.strip()
    except OSError:
        head = '?'
    # The working tree may differ from the commit: a digest of the sources
    # run tells two runs of one commit apart.
    import hashlib
    digest = hashlib.sha1()
    for path in sorted(glob.glob(os.path.join(
            os.path.dirname(multidb.__file__), '**', '*.py'),
            recursive=True)):
        with open(path, 'rb') as f:
            digest.update(f.read())
    return (f"CPU: {model}; {os.cpu_count()} cores;"
            f" Python {sys.version.split()[0]}; {', '.join(versions)};"
            f" multidb at {head or '?'} (sources sha1"
            f" {digest.hexdigest()[:12]} in"
            f" {os.path.dirname(os.path.dirname(multidb.__file__))});"
            f" {time.strftime('%Y-%m-%d %H:%M')}")


def vm_rss_mb():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    return float('nan')


def raise_fd_limit(wanted):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


_fd_lock = threading.Lock()


def open_fds():
    # One listing at a time: each holds a descriptor of its own while it
    # runs, and two at once would count each other's.
    with _fd_lock:
        return len(os.listdir('/proc/self/fd'))


def fds_under(prefixes):
    """How many of this process's descriptors point under each prefix."""
    counts = [0] * len(prefixes)
    for fd in os.listdir('/proc/self/fd'):
        try:
            target = os.readlink(f'/proc/self/fd/{fd}')
        except OSError:
            continue
        for i, p in enumerate(prefixes):
            if target.startswith(p):
                counts[i] += 1
    return counts


def fds_on(prefixes):
    """How many of this process's descriptors point at files under any of
    prefixes (one listing at a time, as open_fds)."""
    with _fd_lock:
        return sum(fds_under(prefixes))


class FdSampler(threading.Thread):
    """Samples the process's descriptors on the files of a block (those
    under its prefixes); the peak of each block (a sample counts for the
    block only if the block was on before and after it was taken)."""

    def __init__(self, interval):
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = 0
        self._block = None
        self._prefixes = ()
        self._halt = threading.Event()

    def run(self):
        while not self._halt.wait(self.interval):
            block = self._block
            if block is None:
                continue
            n = fds_on(self._prefixes)
            if block is self._block and n > self.peak:
                self.peak = n

    def start_block(self, prefixes):
        self._block = None
        self._prefixes = tuple(prefixes)
        self.peak = fds_on(self._prefixes)
        self._block = object()
        return self.peak

    def end_block(self):
        self._block = None
        self.peak = max(self.peak, fds_on(self._prefixes))
        return self.peak

    def stop(self):
        self._halt.set()
        self.join()


# -- the population ----------------------------------------------------------

def tenant_names(n):
    return [f't{i:06d}' for i in range(n)]


def paths(folder):
    return {'catalog': os.path.join(folder, 'catalog.fs'),
            'tenants': os.path.join(folder, 'tenants'),
            'raw': os.path.join(folder, 'raw'),
            'marker': os.path.join(folder, 'COMPLETE.json')}


def backend_in(folder):
    return multidb.FileStorageBackend(
        os.path.join(folder, 'tenants', '{name}.fs'))


def tenants_in(folder, catalog_factory=None, **kw):
    """A collection with the population's catalog and its Tenants."""
    c = multidb.Collection(**kw)
    c.declare('catalog', catalog_factory or functools.partial(
        FileStorage, paths(folder)['catalog']))
    t = multidb.Tenants(c, catalog='catalog', backend=backend_in(folder))
    return c, t


def bump(root, names):
    """Count a change of the catalog's membership (catalog.bump: its
    signature is bump(root) or, with the change log, bump(root, name))."""
    import inspect
    if len(inspect.signature(mcatalog.bump).parameters) == 1:
        mcatalog.bump(root)
    else:
        for name in names:
            mcatalog.bump(root, name)


def _write(path, content):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, content)
    finally:
        os.close(fd)


def build_population(n, folder, rebuild=False):
    """The cached population of n tenants in folder; returns its info."""
    p = paths(folder)
    if not rebuild and os.path.exists(p['marker']):
        with open(p['marker']) as f:
            info = json.load(f)
        if info.get('n') == n and info.get('version') == BUILD_VERSION:
            return info
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(p['tenants'])
    os.makedirs(p['raw'])
    t0 = time.perf_counter()
    # One tenant file made by ZODB: what tenants.create makes, with
    # root['x'] = 0.
    data, index = filestorage_bytes(folder, 'x')
    backend = backend_in(folder)
    now = mcatalog.now()
    records = []
    for name in tenant_names(n):
        settings = backend.settings_for(name)
        path = settings['path']
        _write(path, data)
        _write(path + '.index', index)
        # What FileStorageBackend.prepare writes (without its fsyncs).
        _write(path + '.multidb-id', (json.dumps(
            {'multidb': 'tenant', 'id': settings['id']}) + '\n').encode())
        raw = os.path.join(p['raw'], name + '.fs')
        _write(raw, data)
        _write(raw + '.index', index)
        records.append(TenantRecord(name=name, kind=backend.kind,
                                    settings=settings, created=now,
                                    modified=now))
    files_s = time.perf_counter() - t0
    coll, tenants = tenants_in(folder)
    for start in range(0, n, 2000):
        with coll.transaction() as g:
            root = g.root('catalog')
            tree = mcatalog.tree(root, create=True)
            batch = records[start:start + 2000]
            for rec in batch:
                tree[rec.name] = rec
            bump(root, [batch[-1].name])
    # Check a sample: the records, the ids, the data.
    assert len(tenants.list()) == n
    for name in random.Random(0).sample(tenant_names(n), min(5, n)):
        rec = tenants.get(name)
        assert backend.identify(rec.settings) == rec.settings['id'], name
        with coll.group() as g:
            assert g.root(name)['x'] == 0, name
    coll.close()
    seconds = time.perf_counter() - t0
    info = {'n': n, 'version': BUILD_VERSION, 'seconds': seconds,
            'files_seconds': files_s,
            'made': time.strftime('%Y-%m-%d %H:%M')}
    with open(p['marker'], 'w') as f:
        json.dump(info, f)
    print(f"built the population of {n:,} tenants in {folder} in"
          f" {seconds:.1f} s ({seconds / n * 1000:.2f} s per 1,000 tenants;"
          f" files {files_s:.1f} s, catalog {seconds - files_s:.1f} s)")
    sys.stdout.flush()
    return info


def check_population(n, folder):
    """Drop what an interrupted run left (tenants not of the population,
    raw files of the create benchmark); the catalog holds n tenants."""
    p = paths(folder)
    for path in glob.glob(os.path.join(p['raw'], 'new-*')):
        os.remove(path)
    coll, tenants = tenants_in(folder)
    try:
        tenants.load()
        population = set(tenant_names(n))
        stray = [name for name in coll if name != 'catalog' and
                 name not in population]
        for name in stray:
            tenants.drop(name)
        if stray:
            print(f"(dropped {len(stray)} tenants left by an earlier run)")
        count = len(tenants.list())
        assert count == n, (count, n)
    finally:
        coll.close()


# -- the requests ------------------------------------------------------------

def multidb_request(coll, name):
    with coll.group() as g:
        g.root(name).get('x')


def raw_request(db):
    conn = db.open()
    conn.root().get('x')
    conn.close()


class LRU:
    """The hand-written baseline: at most max_open ZODB.DB objects, least
    recently used first out, closed with db.close()."""

    def __init__(self, folder, max_open):
        self.folder = folder
        self.max_open = max_open
        self.dbs = collections.OrderedDict()

    def get(self, name):
        db = self.dbs.get(name)
        if db is not None:
            self.dbs.move_to_end(name)
            return db
        db = ZODB.DB(FileStorage(os.path.join(self.folder, name + '.fs')))
        self.dbs[name] = db
        if len(self.dbs) > self.max_open:
            _, old = self.dbs.popitem(last=False)
            old.close()
        return db

    def request(self, name):
        raw_request(self.get(name))

    def close(self):
        while self.dbs:
            self.dbs.popitem()[1].close()


def _calibrate(fn, arg_of, batch_seconds, minimum=20):
    fn(arg_of(0))
    t0 = time.perf_counter()
    for i in range(10):
        fn(arg_of(i))
    one = max((time.perf_counter() - t0) / 10, 1e-7)
    return max(minimum, int(batch_seconds / one))


def measure(sides, seq, rounds, batch_seconds):
    """Time sides (name -> fn(arg)) over the arguments seq (cycled), in
    blocks alternating round after round; name -> per-call seconds of
    each round."""
    names = list(sides)
    pos = {k: 0 for k in names}

    def arg_of(i):
        return seq[i % len(seq)]
    counts = {k: _calibrate(sides[k], arg_of, batch_seconds) for k in names}
    times = {k: [] for k in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        if r % 2:
            order.reverse()
        for k in order:
            fn, count, start = sides[k], counts[k], pos[k]
            gc.collect()
            t0 = time.perf_counter()
            for i in range(start, start + count):
                fn(seq[i % len(seq)])
            times[k].append((time.perf_counter() - t0) / count)
            pos[k] = start + count
    return times


def paired(times, side, base):
    """The median of the per-round ratios side/base (drift of the machine
    hits both sides of a round alike)."""
    return med([a / b for a, b in zip(times[side], times[base])])


def throughput(fn, names, threads, seconds, seed):
    """Requests per second of fn(name), random names, in threads."""
    counts = [0] * threads
    barrier = threading.Barrier(threads + 1)
    stop = [None]

    def work(i):
        rng = random.Random(seed + i)
        choice = rng.choice
        barrier.wait()
        deadline = stop[0]
        clock = time.perf_counter
        n = 0
        while clock() < deadline:
            fn(choice(names))
            n += 1
        counts[i] = n

    workers = [threading.Thread(target=work, args=(i,))
               for i in range(threads)]
    for w in workers:
        w.start()
    gc.collect()
    t0 = time.perf_counter()
    stop[0] = t0 + seconds
    barrier.wait()
    for w in workers:
        w.join()
    return sum(counts) / (time.perf_counter() - t0)


# -- create ----------------------------------------------------------------

def raw_create(path):
    db = ZODB.DB(FileStorage(path))
    with db.transaction() as conn:
        conn.root()['x'] = 1
    db.close()


def raw_unlink(path):
    for ext in ('', '.index', '.lock', '.tmp'):
        try:
            os.remove(path + ext)
        except FileNotFoundError:
            pass


def bench_create(args, n, folder, run, res):
    p = paths(folder)
    coll, tenants = tenants_in(folder)
    made = []
    raws = []
    try:
        tenants.load()
        # Warm up both sides.
        tenants.create(f'new-w{run}')
        made.append(f'new-w{run}')
        raws.append(os.path.join(p['raw'], f'new-w{run}.fs'))
        raw_create(raws[-1])
        times = {'multidb': [], 'raw': []}
        count, block = args.creates, args.create_block

        def do(side, i):
            if side == 'multidb':
                name = f'new-{run}x{i:05d}'
                t0 = time.perf_counter()
                tenants.create(name)
                dt = time.perf_counter() - t0
                made.append(name)
            else:
                path = os.path.join(p['raw'], f'new-{run}x{i:05d}.fs')
                t0 = time.perf_counter()
                raw_create(path)
                dt = time.perf_counter() - t0
                raws.append(path)
            times[side].append(dt)

        for b, start in enumerate(range(0, count, block)):
            order = ['multidb', 'raw'] if b % 2 == 0 else ['raw', 'multidb']
            for side in order:
                for i in range(start, min(start + block, count)):
                    do(side, i)
        m, r = times['multidb'], times['raw']
        res.add(('create', n, 'raw med'), ms(med(r)))
        res.add(('create', n, 'raw p99'), ms(p99(r)))
        res.add(('create', n, 'multidb med'), ms(med(m)))
        res.add(('create', n, 'multidb p99'), ms(p99(m)))
        res.add(('create', n, 'ratio med'), med(m) / med(r))
        res.add(('create', n, 'ratio p99'), p99(m) / p99(r))
    finally:
        for name in made:
            tenants.drop(name)
        for path in raws:
            raw_unlink(path)
        coll.close()


def table_create(args, res):
    rows = []
    for n in args.ns:
        k = ('create', n)
        rm, rp = res.get(k + ('ratio med',)), res.get(k + ('ratio p99',))
        if not rm:
            continue
        rows.append([f"{n:,}", res.fig(k + ('raw med',)),
                     res.fig(k + ('multidb med',)), fig(rm, 2),
                     res.fig(k + ('raw p99',)), res.fig(k + ('multidb p99',)),
                     fig(rp, 2),
                     verdict(med(rm) <= GOAL_CREATE and
                             med(rp) <= GOAL_CREATE)])
    if not rows:
        return
    table(f"create: tenants.create(name) at N tenants beside a new raw"
          f" FileStorage (ms per create, {args.creates} of each per run;"
          f" median (min-max) over {args.runs} runs)",
          ['N', 'raw median', 'multidb median', 'ratio', 'raw p99',
           'multidb p99', 'ratio p99', f'<= {GOAL_CREATE:g}x'], rows)
    done = [n for n in args.ns if res.get(('create', n, 'multidb med'))]
    if len(done) > 1:
        lo, hi = min(done), max(done)
        a = res.get(('create', lo, 'multidb med'))
        b = res.get(('create', hi, 'multidb med'))
        ratios = [y / x for x, y in zip(a, b)]
        note = '' if (lo, hi) == (100, 100_000) else \
            ' (the goal is for N=100,000 against N=100)'
        print(f"\nmultidb create median at N={hi:,} over N={lo:,}:"
              f" {fig(ratios, 2)}, goal <= {GOAL_CREATE_SCALE:g}x:"
              f" {verdict(med(ratios) <= GOAL_CREATE_SCALE)}{note}")


# -- miss (and fds) ----------------------------------------------------------

def bench_miss(args, n, folder, run, res):
    p = paths(folder)
    max_open = args.max_open
    names = tenant_names(n)
    rng = random.Random(args.seed + run)
    seq = [rng.choice(names) for _ in range(args.miss_requests)]
    # The catalog takes one of multidb's slots: max_open + 1, so that both
    # sides keep max_open tenant databases open.
    coll, tenants = tenants_in(folder, max_open=max_open + 1)
    lru = LRU(p['raw'], max_open)
    sampler = FdSampler(args.fd_interval)
    sampler.start()
    # Descriptors of each side on its database files: multidb's are the
    # catalog and the tenants' files, the LRU's the plain copies.
    prefixes = {'multidb': [p['tenants'] + os.sep, p['catalog']],
                'raw': [p['raw'] + os.sep]}
    peaks = {'multidb': 0, 'raw': 0}
    try:
        tenants.load()
        sides = {'multidb': functools.partial(multidb_request, coll),
                 'raw': lru.request}
        # Warm up: fill both sides (and the collection's catalog).
        for name in seq[:2 * max_open]:
            for fn in sides.values():
                fn(name)
        coll.settle(10)
        times = {k: [] for k in sides}
        block = max(1, len(seq) // args.miss_rounds)
        pos = {k: 0 for k in sides}
        for r in range(args.miss_rounds):
            order = ['multidb', 'raw'] if r % 2 == 0 else ['raw', 'multidb']
            for k in order:
                fn = sides[k]
                part = seq[pos[k]:pos[k] + block]
                pos[k] += block
                gc.collect()
                sampler.start_block(prefixes[k])
                t0 = time.perf_counter()
                for name in part:
                    fn(name)
                dt = time.perf_counter() - t0
                peaks[k] = max(peaks[k], sampler.end_block())
                times[k].append(dt / len(part))
                if k == 'multidb':
                    coll.settle(10)
        m, rw = med(times['multidb']), med(times['raw'])
        res.add(('miss', n, 'raw'), ms(rw))
        res.add(('miss', n, 'multidb'), ms(m))
        res.add(('miss', n, 'ratio'), m / rw)
        res.add(('fds', n, 'raw'), peaks['raw'])
        res.add(('fds', n, 'multidb'), peaks['multidb'])
    finally:
        sampler.stop()
        coll.close()
        lru.close()


def table_miss(args, res):
    rows = []
    for n in args.ns:
        k = ('miss', n)
        r = res.get(k + ('ratio',))
        if not r:
            continue
        rows.append([f"{n:,}", res.fig(k + ('raw',)),
                     res.fig(k + ('multidb',)), fig(r, 2),
                     verdict(med(r) <= GOAL_MISS)])
    if rows:
        table(f"miss: a random tenant per request (group, root read, close),"
              f" every tenant declared, multidb with max_open="
              f"{args.max_open + 1} ({args.max_open} tenants + its catalog),"
              f" beside a hand-written LRU of {args.max_open} ZODB.DB (ms"
              f" per request,"
              f" {args.miss_requests:,} requests per side per run; median"
              f" (min-max) over {args.runs} runs)",
              ['N', 'raw LRU', 'multidb', 'ratio', f'<= {GOAL_MISS:g}x'],
              rows)
    limit = (args.max_open + 1) * FDS_PER_DB
    rows = []
    for n in args.ns:
        k = ('fds', n)
        m = res.get(k + ('multidb',))
        if not m:
            continue
        rows.append([f"{n:,}", fig(res.get(k + ('raw',)), 0), fig(m, 0),
                     limit, verdict(max(m) <= limit)])
    if rows:
        table(f"fds: peak descriptors on database files (files under the"
              f" population folder: multidb's tenant files and catalog, the"
              f" LRU's plain copies) during the miss benchmark, multidb"
              f" against its own max_open x {FDS_PER_DB} ="
              f" {args.max_open + 1} x {FDS_PER_DB} = {limit} (sampled every"
              f" {args.fd_interval:g} s; median (min-max) over {args.runs}"
              f" runs; the verdict on the highest run)",
              ['N', f'raw LRU ({args.max_open})',
               f'multidb ({args.max_open + 1})', 'max_open x 4',
               'multidb never above'], rows)


# -- hit and threads -------------------------------------------------------

def bench_hit(args, n, folder, run, res, do_threads=True):
    p = paths(folder)
    names = tenant_names(n)
    hot = random.Random(args.seed).sample(names, min(n, args.hot))
    raise_fd_limit(2 * FDS_PER_DB * len(hot) + 1024)
    coll, tenants = tenants_in(folder, max_open=len(hot) + 8)
    raw = {}
    try:
        tenants.load()
        for name in hot:
            raw[name] = ZODB.DB(FileStorage(os.path.join(p['raw'],
                                                         name + '.fs')))
            multidb_request(coll, name)
        assert all(coll.is_open(name) for name in hot)
        rng = random.Random(args.seed + run)
        seq = [rng.choice(hot) for _ in range(10_000)]
        resolver = coll.resolver

        def in_group(name):
            # What a group alone adds: the raw request inside an empty
            # group (made, registered, closed).
            g = coll.group()
            raw_request(raw[name])
            g.close()

        def in_group_checked(name):
            # ... plus the tenant check a group makes at its first use
            # (INameResolver.refresh: is the catalog unchanged?).
            g = coll.group()
            resolver.refresh(g, name)
            raw_request(raw[name])
            g.close()

        t = measure({'multidb': functools.partial(multidb_request, coll),
                     'raw': lambda name: raw_request(raw[name]),
                     'group': in_group, 'checked': in_group_checked},
                    seq, args.hit_rounds, args.batch)
        res.add(('hit', n, 'raw'), med(t['raw']) * 1e6)
        res.add(('hit', n, 'multidb'), med(t['multidb']) * 1e6)
        res.add(('hit', n, 'ratio'), paired(t, 'multidb', 'raw'))
        res.add(('hit', n, 'group'), paired(t, 'group', 'raw'))
        res.add(('hit', n, 'checked'), paired(t, 'checked', 'raw'))
        if do_threads:
            sides = {'multidb': functools.partial(multidb_request, coll),
                     'raw': lambda name: raw_request(raw[name])}
            # ZODB warns when 8 threads hold 8 connections of one database
            # (pool_size 7): expected here, on both sides.
            logging.getLogger('ZODB.DB').setLevel(logging.ERROR)
            rates = {}
            order = [('multidb', 1), ('raw', 1), ('raw', 8), ('multidb', 8)]
            if run % 2:
                order.reverse()
            for side, k in order:
                rates[side, k] = throughput(sides[side], hot, k,
                                            args.thread_seconds,
                                            args.seed + run)
            for side in sides:
                res.add(('threads', n, side, 1), rates[side, 1])
                res.add(('threads', n, side, 8), rates[side, 8])
                res.add(('threads', n, side, '8/1'),
                        rates[side, 8] / rates[side, 1])
            res.add(('threads', n, 'ratio'),
                    (rates['multidb', 8] / rates['multidb', 1]) /
                    (rates['raw', 8] / rates['raw', 1]))
        assert all(coll.is_open(name) for name in hot), 'evicted'
    finally:
        coll.close()
        for db in raw.values():
            db.close()


def table_hit(args, res):
    rows = []
    for n in args.ns:
        k = ('hit', n)
        r = res.get(k + ('ratio',))
        if not r:
            continue
        rows.append([f"{n:,}", f"{min(n, args.hot):,}",
                     res.fig(k + ('raw',), 1), res.fig(k + ('multidb',), 1),
                     fig(r, 2), verdict(med(r) <= GOAL_HIT),
                     fig(res.get(k + ('group',)), 2),
                     fig(res.get(k + ('checked',)), 2)])
    if rows:
        table(f"hit: a random open tenant per request (group, root read,"
              f" close), every tenant declared, beside a dict of ZODB.DB"
              f" (us per request, median of {args.hit_rounds} rounds; ratio:"
              f" median of the per-round ratios;"
              f" median (min-max) over {args.runs} runs)",
              ['N', 'open', 'raw dict', 'multidb', 'ratio',
               f'<= {GOAL_HIT:g}x', 'raw in a group', '+ tenant check'],
              rows)
    rows = []
    for n in args.ns:
        k = ('threads', n)
        r = res.get(k + ('ratio',))
        if not r:
            continue
        rows.append([f"{n:,}", res.fig(k + ('raw', 1), 0),
                     res.fig(k + ('raw', 8), 0), res.fig(k + ('raw', '8/1'), 2),
                     res.fig(k + ('multidb', 1), 0),
                     res.fig(k + ('multidb', 8), 0),
                     res.fig(k + ('multidb', '8/1'), 2), fig(r, 2),
                     verdict(med(r) >= GOAL_THREADS)])
    if rows:
        table(f"threads: hit requests in 8 threads and in 1 thread,"
              f" {args.thread_seconds:g} s each (requests per second;"
              f" median (min-max) over {args.runs} runs)",
              ['N', 'raw 1', 'raw 8', 'raw 8/1', 'multidb 1', 'multidb 8',
               'multidb 8/1', 'ratio', f'>= {GOAL_THREADS:g}'], rows)


# -- rss ---------------------------------------------------------------------

def worker_rss(args):
    gc.collect()
    before = vm_rss_mb()
    t0 = time.perf_counter()
    if args.rss_worker == 'multidb':
        coll, tenants = tenants_in(args.folder)
        count = tenants.load()
    elif args.rss_worker == 'filestorage':
        # The baseline: a process declaring the N FileStorage databases
        # itself, one partial (its own path) per name.
        coll = multidb.Collection()
        coll.declare('catalog', functools.partial(
            FileStorage, paths(args.folder)['catalog']))
        folder = paths(args.folder)['tenants']
        count = args.n
        for name in tenant_names(args.n):
            coll.declare(name, functools.partial(
                FileStorage, os.path.join(folder, name + '.fs')))
    else:
        coll = multidb.Collection()
        coll.declare('catalog', functools.partial(
            FileStorage, paths(args.folder)['catalog']))
        factory = MappingStorage     # one trivial factory for every name
        count = args.n
        for name in tenant_names(args.n):
            coll.declare(name, factory)
    seconds = time.perf_counter() - t0
    gc.collect()
    after = vm_rss_mb()
    assert count == args.n, (count, args.n)
    coll.close()
    return {'before': before, 'after': after, 'seconds': seconds}


def run_worker(*argv):
    out = subprocess.run([sys.executable, HERE, *argv], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


RSS_SIDES = ('multidb', 'filestorage', 'declare')


def bench_rss(args, n, folder, run, res):
    k = run % len(RSS_SIDES)
    order = list(RSS_SIDES[k:] + RSS_SIDES[:k])
    if run % 2:
        order.reverse()
    out = {}
    for side in order:
        out[side] = run_worker('--rss-worker', side, '--folder', folder,
                               '--n', str(n))
    m, f = out['multidb'], out['filestorage']
    for side, o in out.items():
        res.add(('rss', n, side), o['after'])
        res.add(('rss', n, side + '+'), o['after'] - o['before'])
        res.add(('rss', n, side + ' s'), o['seconds'])
    res.add(('rss', n, 'ratio'), m['after'] / f['after'])
    res.add(('rss', n, 'ratio trivial'), m['after'] / out['declare']['after'])
    res.add(('rss', n, 'base'), m['before'])


def table_rss(args, res):
    rows = []
    for n in args.ns:
        k = ('rss', n)
        r = res.get(k + ('ratio',))
        if not r:
            continue
        rows.append([f"{n:,}", res.fig(k + ('filestorage',), 1),
                     res.fig(k + ('multidb',), 1), fig(r, 2),
                     verdict(med(r) <= GOAL_RSS),
                     res.fig(k + ('filestorage+',), 1),
                     res.fig(k + ('multidb+',), 1),
                     res.fig(k + ('filestorage s',), 3),
                     res.fig(k + ('multidb s',), 3),
                     res.fig(k + ('declare',), 1),
                     res.fig(k + ('ratio trivial',), 2)])
    if rows:
        table(f"rss: VmRSS (MB) of a fresh process with N tenants loaded"
              f" (tenants.load()) beside a plain declare of the N"
              f" FileStorage databases (coll.declare(name,"
              f" functools.partial(FileStorage, path)), one path per name),"
              f" each in a subprocess of its own (median (min-max) over"
              f" {args.runs} runs; '+' columns: growth over the RSS after"
              f" imports; 'trivial': N declares of one shared factory,"
              f" informational)",
              ['N', 'plain declare', 'tenants.load()', 'ratio',
               f'<= {GOAL_RSS:g}x', 'declare +', 'load +', 'declare s',
               'load s', 'trivial', 'load / trivial'], rows)


# -- first request after a create elsewhere ------------------------------

def zeo_catalog(address):
    from ZEO.ClientStorage import ClientStorage
    return functools.partial(ClientStorage, address, storage='catalog',
                             wait_timeout=30)


def worker_zeo_creator(args):
    """Create (and close) tenants on the ZEO catalog, as told on stdin."""
    host, port = args.zeo_creator.rsplit(':', 1)
    coll, tenants = tenants_in(args.folder,
                               catalog_factory=zeo_catalog((host, int(port))))
    print('ready', flush=True)
    for line in sys.stdin:
        op, name = line.split()
        if op == 'create':
            tenants.create(name)
            # Close it: FileStorage serves one process at a time, and the
            # other process will open it.
            coll.remove(name)
        print('ok', flush=True)
    coll.close()
    return None


def bench_first(args, n, folder, run, res):
    from servers import ZEOServer
    names = tenant_names(n)
    server = ZEOServer(storages=('catalog',), folder=folder)
    server.start()
    creator = None
    coll = None
    try:
        address = server.address
        coll, tenants = tenants_in(folder, max_open=args.max_open,
                                   catalog_factory=zeo_catalog(address))
        storage = coll['catalog'].storage
        creator = subprocess.Popen(
            [sys.executable, HERE, '--zeo-creator',
             f'{address[0]}:{address[1]}', '--folder', folder],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert creator.stdout.readline() == 'ready\n'

        def tell(op, name):
            creator.stdin.write(f'{op} {name}\n')
            creator.stdin.flush()
            assert creator.stdout.readline() == 'ok\n'

        rng = random.Random(args.seed + run)
        hot = rng.sample(names, min(n, 8))
        for _ in range(3):
            for name in hot:
                multidb_request(coll, name)

        def timed(name):
            storage.ping()      # the invalidations sent before are in
            if args.first_gap:
                time.sleep(args.first_gap)
            t0 = time.perf_counter()
            multidb_request(coll, name)
            return time.perf_counter() - t0

        def ping():
            t0 = time.perf_counter()
            storage.ping()
            return time.perf_counter() - t0

        pings = [ping() for _ in range(20)]
        steady, first, new = [], [], []
        for i in range(args.first_creates):
            for _ in range(args.first_steady):
                steady.append(timed(rng.choice(hot)))
            name = f'new-z{run}x{i:04d}'
            tell('create', name)
            first.append(timed(rng.choice(hot)))
            new.append(timed(name))
            pings.append(ping())
            tenants.drop(name)
            # The drop's own refresh, untimed.
            storage.ping()
            multidb_request(coll, rng.choice(hot))
        s, f, w = med(steady), med(first), med(new)
        res.add(('first', n, 'steady'), ms(s))
        res.add(('first', n, 'first'), ms(f))
        res.add(('first', n, 'first p-max'), ms(max(first)))
        res.add(('first', n, 'new'), ms(w))
        res.add(('first', n, 'ratio'), f / s)
        res.add(('first', n, 'ratio new'), w / s)
        res.add(('first', n, 'ping'), ms(med(pings)))
    finally:
        if creator is not None:
            creator.stdin.close()
            creator.wait(60)
        if coll is not None:
            coll.close()
        server.stop()        # (not close(): that deletes the folder)
        os.remove(server.conf)


def table_first(args, res):
    rows = []
    for n in args.ns:
        k = ('first', n)
        r = res.get(k + ('ratio',))
        if not r:
            continue
        rows.append([f"{n:,}", res.fig(k + ('steady',)),
                     res.fig(k + ('first',)), fig(r, 2),
                     verdict(med(r) <= GOAL_FIRST), res.fig(k + ('new',)),
                     res.fig(k + ('ratio new',), 2), res.fig(k + ('ping',))])
    if rows:
        table(f"first: catalog on ZEO; the first request on an open tenant"
              f" after a create in another process, beside steady requests"
              f" (ms; medians of {args.first_creates} creates and"
              f" {args.first_creates * args.first_steady} steady requests"
              f" per run; median (min-max) over {args.runs} runs; each"
              f" {args.first_gap * 1000:g} ms after a ZEO ping).  'new"
              f" tenant': the first request on the tenant just created"
              f" (opens it), informational; 'ZEO ping': one round trip to"
              f" the server",
              ['N', 'steady', 'first after create', 'ratio',
               f'<= {GOAL_FIRST:g}x', 'new tenant', 'ratio', 'ZEO ping'],
              rows)


# -- PostgreSQL --------------------------------------------------------------

def start_pg():
    """A throwaway cluster (tests/servers.py) with pg_stat_statements."""
    from servers import PostgreSQL
    from servers import _wait

    class StatPostgreSQL(PostgreSQL):
        def start(self):
            self.proc = subprocess.Popen(
                [os.path.join(self.bindir, 'postgres'), '-D', self.data,
                 '-p', str(self.port), '-k', self.base,
                 '-c', 'listen_addresses=127.0.0.1',
                 '-c', 'fsync=off', '-c', 'max_connections=1000',
                 '-c', 'shared_preload_libraries=pg_stat_statements',
                 '-c', 'pg_stat_statements.track=all'],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                **self._as)
            _wait(self._ping, 30, 'PostgreSQL')
            return self

    return StatPostgreSQL().start()


class PGSetup:
    """pg_n tenants made by multidb (catalog on PostgreSQL; a second
    collection with a FileStorage catalog holding the same records) and
    pg_n databases made by hand from the same template."""

    CATALOG = 'bench_catalog'

    def __init__(self, args):
        self.args = args
        self.coll = self.coll_fs = self.admin = self.pg = None
        self.raw = {}
        self.tmp = tempfile.mkdtemp(prefix='multidb-bench-scale-pg-')
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self):
        import psycopg2
        from multidb.backends.relstorage import RelStorageBackend
        args = self.args
        self.pg = start_pg()
        self.admin = psycopg2.connect(self.pg.dsn())
        self.admin.autocommit = True
        self.sql('CREATE EXTENSION IF NOT EXISTS pg_stat_statements')

        def backend():
            return RelStorageBackend(
                self.pg.dsn('mt_{name}'), keep_history=False,
                snapshot_dir=os.path.join(self.tmp, 'snapshots'))
        self.template = backend().ensure_template()
        self.sql(f'CREATE DATABASE {self.CATALOG}')
        self.names = [f'p{i:04d}' for i in range(args.pg_n)]

        def init(root):
            root['x'] = 0
        # multidb, catalog on PostgreSQL.
        self.coll = multidb.Collection()
        self.coll.declare('catalog', functools.partial(
            self.open_rs, self.pg.dsn(self.CATALOG)))
        self.tenants = multidb.Tenants(self.coll, catalog='catalog',
                                       backend=backend())
        t0 = time.perf_counter()
        for name in self.names:
            self.tenants.create(name, init=init)
        self.create_s = time.perf_counter() - t0
        # multidb, catalog on FileStorage, the same records.
        self.coll_fs = multidb.Collection()
        self.coll_fs.declare('catalog', functools.partial(
            FileStorage, os.path.join(self.tmp, 'catalog.fs')))
        self.tenants_fs = multidb.Tenants(self.coll_fs, catalog='catalog',
                                          backend=backend())
        with self.coll_fs.transaction() as g:
            root = g.root('catalog')
            tree = mcatalog.tree(root, create=True)
            records = self.tenants.list()
            for rec in records:
                tree[rec.name] = rec
            bump(root, [records[-1].name])
        # By hand.
        t0 = time.perf_counter()
        for name in self.names:
            self.sql(f'CREATE DATABASE h_{name} TEMPLATE {self.template}')
            db = ZODB.DB(self.open_rs(self.pg.dsn(f'h_{name}')))
            with db.transaction() as conn:
                conn.root()['x'] = 0
            self.raw[name] = db
        self.hand_s = time.perf_counter() - t0
        for name in self.names:
            multidb_request(self.coll, name)
            multidb_request(self.coll_fs, name)
        self.connections = self.sql(
            'SELECT count(*) FROM pg_stat_activity', fetch=True)[0][0]

    @staticmethod
    def open_rs(dsn):
        from relstorage.adapters.postgresql import PostgreSQLAdapter
        from relstorage.options import Options
        from relstorage.storage import RelStorage
        options = Options(keep_history=False)
        return RelStorage(PostgreSQLAdapter(dsn=dsn, options=options),
                          options=options)

    def sql(self, statement, fetch=False):
        with self.admin.cursor() as cur:
            cur.execute(statement)
            return cur.fetchall() if fetch else None

    def sides(self):
        return {'raw': lambda name: raw_request(self.raw[name]),
                'multidb': functools.partial(multidb_request, self.coll),
                'multidb, catalog on FileStorage': functools.partial(
                    multidb_request, self.coll_fs)}

    def statements(self):
        """SQL statements since the last reset, by database kind."""
        rows = self.sql(
            'SELECT d.datname, sum(s.calls) FROM pg_stat_statements s'
            ' JOIN pg_database d ON d.oid = s.dbid GROUP BY d.datname',
            fetch=True)
        out = {'tenants': 0, 'catalog': 0}
        for datname, calls in rows:
            if datname.startswith(('h_', 'mt_')):
                out['tenants'] += int(calls)
            elif datname == self.CATALOG:
                out['catalog'] += int(calls)
        return out

    def count(self, fn, k, window):
        """SQL statements of at least k requests of fn and at least window
        seconds of them, by database kind: tenant statements per request,
        catalog statements in all, the seconds the requests took."""
        self.sql('SELECT pg_stat_statements_reset()')
        t0 = time.perf_counter()
        i = 0
        while i < k or time.perf_counter() - t0 < window:
            fn(self.names[i % len(self.names)])
            i += 1
        seconds = time.perf_counter() - t0
        out = self.statements()
        return {'tenants': out['tenants'] / i, 'catalog': out['catalog'],
                'seconds': seconds}

    def poll_statements(self, fn):
        """The catalog statements of one poll: one request after more than
        catalog_poll_interval seconds without any."""
        fn(self.names[0])
        time.sleep(self.tenants.catalog_poll_interval + 0.1)
        self.sql('SELECT pg_stat_statements_reset()')
        fn(self.names[1])
        return self.statements()['catalog']

    def close(self):
        for c in (self.coll, self.coll_fs):
            if c is not None:
                try:
                    c.close()
                except Exception:
                    pass
        for db in self.raw.values():
            db.close()
        if self.admin is not None:
            self.admin.close()
        if self.pg is not None:
            self.pg.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def bench_pg(args, setup, run, res):
    sides = setup.sides()
    rng = random.Random(args.seed + run)
    seq = [rng.choice(setup.names) for _ in range(10_000)]
    t = measure(sides, seq, args.pg_rounds, args.batch)
    interval = setup.tenants.catalog_poll_interval
    for side in sides:
        res.add(('pg', side, 'us'), med(t[side]) * 1e6)
        res.add(('pg', side, 'ratio'), paired(t, side, 'raw'))
        counts = setup.count(sides[side], args.pg_count, args.pg_window)
        res.add(('pg', side, 'stmts'), counts['tenants'])
        res.add(('pg', side, 'catalog stmts'), counts['catalog'])
        res.add(('pg', side, 'seconds'), counts['seconds'])
        # The polls the window may hold: one per interval begun in it,
        # and one at its start.
        res.add(('pg', side, 'polls allowed'),
                int(counts['seconds'] // interval) + 1)
        if side == 'multidb':
            per_poll = setup.poll_statements(sides[side])
            res.add(('pg', side, 'per poll'), per_poll)
            res.add(('pg', side, 'polls'),
                    counts['catalog'] / per_poll if per_poll else 0)


def table_pg(args, res, setup):
    rows = []
    raw_stmts = res.get(('pg', 'raw', 'stmts'))
    interval = setup.tenants.catalog_poll_interval
    for side in ('raw', 'multidb', 'multidb, catalog on FileStorage'):
        k = ('pg', side)
        r = res.get(k + ('ratio',))
        if not r:
            continue
        stmts = res.get(k + ('stmts',))
        same = all(abs(a - b) < 1e-9 for a, b in zip(stmts, raw_stmts))
        catalog = res.get(k + ('catalog stmts',))
        allowed = res.get(k + ('polls allowed',))
        if side == 'multidb':
            polls = res.get(k + ('polls',))
            per_poll = res.fig(k + ('per poll',), 0)
            polls_ok = all(p <= a for p, a in zip(polls, allowed))
            polls_text = f"{fig(polls, 1)} (<= {fig(allowed, 0)})"
        else:
            # No catalog on PostgreSQL: no catalog statement at all.
            per_poll = ''
            polls_ok = not any(catalog)
            polls_text = ''
        rows.append([side, res.fig(k + ('us',), 1),
                     '' if side == 'raw' else fig(r, 2),
                     res.fig(k + ('stmts',), 2), fig(catalog, 0),
                     per_poll, polls_text,
                     res.fig(k + ('seconds',), 2),
                     '' if side == 'raw' else
                     verdict(med(r) <= GOAL_PG and same and polls_ok)])
    table(f"pg: a request on a random open PostgreSQL tenant of"
          f" {args.pg_n} (N is small: creating PostgreSQL tenants is slow),"
          f" beside RelStorage per tenant by hand (us per request, median of"
          f" {args.pg_rounds} rounds; ratio: median of the per-round ratios;"
          f" SQL statements counted by pg_stat_statements over at least"
          f" {args.pg_count} requests and {args.pg_window:g} s of each side"
          f" ('window s'):"
          f" tenant statements per request, catalog statements in all; the"
          f" catalog on PostgreSQL is polled at most once per"
          f" catalog_poll_interval = {interval:g} s, 'polls' = catalog"
          f" statements / statements of one poll, against the intervals"
          f" begun in the window; median (min-max) over {args.runs} runs)",
          ['side', 'us', 'ratio', 'tenant stmts / request',
           'catalog stmts', 'stmts / poll', 'polls (allowed)', 'window s',
           f'<= {GOAL_PG:g}x, same tenant stmts, polls only'], rows)
    print(f"\n{args.pg_n} PostgreSQL tenants: tenants.create took"
          f" {setup.create_s:.1f} s, by hand {setup.hand_s:.1f} s;"
          f" {setup.connections} server connections open with every"
          f" database open.")


# -- running -------------------------------------------------------------

def parse_ints(text):
    return [int(x) for x in text.replace('_', '').split(',') if x]


def parser():
    p = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--ns', type=parse_ints,
                   default=[100, 1000, 10_000, 100_000],
                   help='tenant counts (default: 100,1000,10000,100000)')
    p.add_argument('--runs', type=int, default=3,
                   help='repeat everything this many times (default: 3)')
    p.add_argument('--quick', action='store_true',
                   help='a smoke run: N=100,1000, short timings (< 2 min)')
    p.add_argument('--only', default=','.join(BENCHMARKS),
                   help=f'benchmarks, of {",".join(BENCHMARKS)} (threads'
                        f' and fds come with hit and miss)')
    p.add_argument('--rebuild', action='store_true',
                   help='make the cached populations again')
    p.add_argument('--no-pg', action='store_true',
                   help='skip the PostgreSQL benchmark')
    p.add_argument('--creates', type=int, default=200,
                   help='timed creates per side per N and run (default 200)')
    p.add_argument('--create-block', type=int, default=25)
    p.add_argument('--max-open', type=int, default=64,
                   help='max_open of the miss benchmark (default 64)')
    p.add_argument('--miss-requests', type=int, default=3000,
                   help='requests per side per run (default 3000)')
    p.add_argument('--miss-rounds', type=int, default=6)
    p.add_argument('--fd-interval', type=float, default=0.01,
                   help='seconds between two samples of the descriptors'
                        ' (default 0.01)')
    p.add_argument('--hot', type=int, default=1000,
                   help='tenants open in the hit benchmark (default 1000)')
    p.add_argument('--hit-rounds', type=int, default=9)
    p.add_argument('--batch', type=float, default=0.2,
                   help='seconds of one side in one round (default 0.2)')
    p.add_argument('--thread-seconds', type=float, default=2.0)
    p.add_argument('--first-creates', type=int, default=20)
    p.add_argument('--first-gap', type=float, default=0.0,
                   help='seconds between the ping and a timed request'
                   ' (default 0)')
    p.add_argument('--first-steady', type=int, default=10,
                   help='steady requests between two creates (default 10)')
    p.add_argument('--pg-n', type=int, default=100,
                   help='PostgreSQL tenants (default 100)')
    p.add_argument('--pg-rounds', type=int, default=15)
    p.add_argument('--pg-count', type=int, default=200,
                   help='requests whose statements are counted (default'
                        ' 200)')
    p.add_argument('--pg-window', type=float, default=3.5,
                   help='seconds of requests whose statements are counted,'
                        ' at least (default 3.5: a few poll intervals)')
    p.add_argument('--seed', type=int, default=7)
    p.add_argument('--json', metavar='FILE',
                   help='also write every per-run figure to FILE')
    p.add_argument('--rss-worker', help=argparse.SUPPRESS)
    p.add_argument('--zeo-creator', help=argparse.SUPPRESS)
    p.add_argument('--folder', help=argparse.SUPPRESS)
    p.add_argument('--n', type=int, help=argparse.SUPPRESS)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    if args.rss_worker:
        print(json.dumps(worker_rss(args)))
        return 0
    if args.zeo_creator:
        worker_zeo_creator(args)
        return 0
    if args.quick:
        args.ns = [n for n in args.ns if n <= 1000] or [100]
        args.creates = min(args.creates, 20)
        args.create_block = min(args.create_block, 10)
        args.miss_requests = min(args.miss_requests, 400)
        args.miss_rounds = min(args.miss_rounds, 4)
        args.hot = min(args.hot, 200)
        args.hit_rounds = min(args.hit_rounds, 3)
        args.pg_rounds = min(args.pg_rounds, 3)
        args.batch = min(args.batch, 0.03)
        args.thread_seconds = min(args.thread_seconds, 0.3)
        args.first_creates = min(args.first_creates, 4)
        args.first_steady = min(args.first_steady, 5)
        args.pg_n = min(args.pg_n, 10)
        args.pg_count = min(args.pg_count, 50)
        args.pg_window = min(args.pg_window, 1.5)
    only = set(args.only.split(','))
    unknown = only - set(BENCHMARKS) - {'threads', 'fds'}
    if unknown:
        parser().error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
    if 'threads' in only:
        only.add('hit')
    if 'fds' in only:
        only.add('miss')
    print(machine())
    print('command: ' + ' '.join(shlex.quote(a) for a in
                                 [sys.executable] + sys.argv))
    print(f"N = {', '.join(f'{n:,}' for n in args.ns)}; {args.runs} runs")
    sys.stdout.flush()
    raise_fd_limit(8192)
    res = Results()
    clock = collections.defaultdict(float)
    started = time.perf_counter()
    for n in args.ns:
        folder = CACHE.format(n=n)
        t0 = time.perf_counter()
        info = build_population(n, folder, args.rebuild)
        clock[f'build {n}'] += time.perf_counter() - t0
        print(f"N={n:,}: population {folder} (built"
              f" {info.get('made')} in {info['seconds']:.1f} s,"
              f" {info['seconds'] / n * 1000:.2f} s per 1,000 tenants)")
        sys.stdout.flush()
        check_population(n, folder)
        for run in range(args.runs):
            for name, bench in (('rss', bench_rss), ('create', bench_create),
                                ('miss', bench_miss), ('hit', bench_hit),
                                ('first', bench_first)):
                if name in only:
                    t0 = time.perf_counter()
                    bench(args, n, folder, run, res)
                    clock[f'{name} {n}'] += time.perf_counter() - t0
                    transaction.abort()
        print(f"N={n:,}: done ("
              + ', '.join(f"{k.split()[0]} {v:.0f} s" for k, v in
                          clock.items() if k.endswith(f' {n}')) + ')')
        sys.stdout.flush()
    if 'rss' in only:
        table_rss(args, res)
    if 'create' in only:
        table_create(args, res)
    if 'first' in only:
        table_first(args, res)
    if 'miss' in only:
        table_miss(args, res)
    if 'hit' in only:
        table_hit(args, res)
    if 'pg' in only and not args.no_pg:
        t0 = time.perf_counter()
        setup = PGSetup(args)
        try:
            clock['pg setup'] = time.perf_counter() - t0
            t0 = time.perf_counter()
            for run in range(args.runs):
                bench_pg(args, setup, run, res)
            clock['pg'] = time.perf_counter() - t0
            table_pg(args, res, setup)
        finally:
            setup.close()
    print(f"\ntime taken: " + ', '.join(f"{k} {v:.0f} s"
                                         for k, v in clock.items())
          + f"; total {time.perf_counter() - started:.0f} s")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump([[list(map(str, k)), v] for k, v in res.data.items()],
                      f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
