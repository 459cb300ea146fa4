"""Benchmark of ``Tenants.run_all`` over many small FileStorage tenants.

Not a test (pytest does not collect ``bench_*.py``): run it by hand::

    python tests/bench/bench_fleet.py              # 10,000 tenants
    python tests/bench/bench_fleet.py --n 1000     # a smaller run

The tenants (each a FileStorage whose root holds a counter) are made
once, with ``Tenants.create``, into a cache folder under /tmp and reused.
Each round runs, in a rotating order, the same small function (add 1 to
the tenant's counter) over every tenant:

- ``run_all`` sequential (``jobs=1``): a transaction per tenant with its
  run mark, retries of transient errors, the journal;
- ``run_all`` with ``jobs=2`` worker processes (spawned, each loading
  nothing but the tenants it is given);
- a hand-written loop: ``with coll.transaction() as g: func(g, name)``
  for each name of ``tenants.list()`` (no marks, no journal, no retries).

Every figure is "median (min-max)" over the rounds, in seconds for the
whole run and in tenants per second; the ratios are taken per round
(run_all sequential over the hand-written loop: goal <= 1.10; the
speed-up of jobs=2 over jobs=1: goal >= 0.7 x 2 on two cores).

Memory: ``run_all`` (jobs=1) in a fresh subprocess over the first tenth
of the tenants and over all of them, each with ``max_open`` 64; the
peak RSS (VmHWM) of both, and their ratio: bounded by ``max_open``, not by
the number of tenants, means a ratio near 1.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from benchutil import Runs  # noqa: E402
from benchutil import add_runs_argument  # noqa: E402
from benchutil import table  # noqa: E402
from benchutil import verdict  # noqa: E402

CACHE = os.path.join(tempfile.gettempdir(), 'multidb-bench-fleet')


def count(group, name):
    """The function run on every tenant (importable by the workers)."""
    root = group.root(name)
    root['count'] = root.get('count', 0) + 1


def _init(root):
    root['count'] = 0


def tenants_in(folder):
    from helpers import fs_tenants
    return fs_tenants(folder)


def build(n):
    """The cache folder of n tenants, made once."""
    folder = os.path.join(CACHE, str(n))
    done = os.path.join(folder, 'complete')
    if os.path.exists(done):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    c, t = tenants_in(folder)
    start = time.perf_counter()
    try:
        for i in range(n):
            t.create(f't{i:05d}', init=_init)
            if i % 1000 == 999:
                print(f"  made {i + 1} tenants", file=sys.stderr)
    finally:
        c.close()
    print(f"made {n} tenants in {time.perf_counter() - start:.0f} s"
          f" (cached in {folder})", file=sys.stderr)
    open(done, 'w').close()
    return folder


def hand_loop(t):
    coll = t.collection
    for rec in t.list():
        with coll.transaction() as g:
            count(g, rec.name)


def _peak_rss_mb():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024
    return float('nan')


def rss_worker(folder, k):
    """In a subprocess: run_all over the first k tenants; print the peak
    RSS in MB."""
    journals = tempfile.mkdtemp()
    c, t = tenants_in(folder)
    c.max_open = 64
    try:
        names = sorted(r.name for r in t.list())[:k]
        report = t.run_all(count, names=names, journal_dir=journals)
        assert report.ok and len(report.done) == k, report
    finally:
        c.close()
        shutil.rmtree(journals, ignore_errors=True)
    print(f"{_peak_rss_mb():.1f}")


def rss(folder, k):
    import subprocess
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), '--rss-worker', folder,
         str(k)], check=True, capture_output=True, text=True).stdout
    return float(out.split()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--n', type=int, default=10_000,
                        help="how many tenants (default 10,000)")
    parser.add_argument('--rss-worker', nargs=2, help=argparse.SUPPRESS)
    add_runs_argument(parser)
    args = parser.parse_args(argv)
    if args.rss_worker:
        rss_worker(args.rss_worker[0], int(args.rss_worker[1]))
        return 0
    print('Command:', ' '.join([sys.executable] + sys.argv))
    folder = build(args.n)
    journals = tempfile.mkdtemp()
    sides = {
        'run_all, jobs=1': lambda t: t.run_all(
            count, journal_dir=journals),
        'run_all, jobs=2': lambda t: t.run_all(
            'bench_fleet:count', jobs=2, journal_dir=journals),
        'hand-written loop': hand_loop,
    }
    res = Runs()
    order = list(sides)
    try:
        for r in range(args.runs):
            this = {}
            for key in order[r % len(order):] + order[:r % len(order)]:
                c, t = tenants_in(folder)
                try:
                    start = time.perf_counter()
                    report = sides[key](t)
                    elapsed = time.perf_counter() - start
                finally:
                    c.close()
                if report is not None:
                    assert report.ok and len(report.done) == args.n, report
                res.add(key, elapsed)
                res.add(key + '/s', args.n / elapsed)
                this[key] = elapsed
                print(f"  round {r + 1}: {key}: {elapsed:.2f} s",
                      file=sys.stderr)
            res.add('overhead', this['run_all, jobs=1'] /
                    this['hand-written loop'])
            res.add('speed-up', this['run_all, jobs=1'] /
                    this['run_all, jobs=2'])
            small = max(1, args.n // 10)
            res.add('rss small', rss(folder, small))
            res.add('rss all', rss(folder, args.n))
            res.add('rss ratio', res.get('rss all')[-1] /
                    res.get('rss small')[-1])
    finally:
        shutil.rmtree(journals, ignore_errors=True)
    table(f"run_all over {args.n:,} FileStorage tenants (median (min-max)"
          f" of {args.runs} runs)", ['how', 'seconds', 'tenants/s'],
          [[k, res.fig(k, 2), res.fig(k + '/s', fmt=',.0f')]
           for k in sides])
    over, up, mem = (res.med('overhead'), res.med('speed-up'),
                     res.med('rss ratio'))
    table("ratios, per run (median (min-max))",
          ['ratio', 'figure', 'goal', 'verdict'],
          [['run_all jobs=1 / hand-written loop', res.fig('overhead', 2),
            '<= 1.10', verdict(over <= 1.10)],
           ['speed-up, jobs=2 over jobs=1', res.fig('speed-up', 2),
            '>= 1.4 (0.7 x 2)', verdict(up >= 1.4)],
           [f'peak RSS (MB), {small:,} tenants', res.fig('rss small', 1),
            '', ''],
           [f'peak RSS (MB), {args.n:,} tenants', res.fig('rss all', 1),
            '', ''],
           ['peak RSS ratio (bounded by max_open)', res.fig('rss ratio', 2),
            '<= 1.5', verdict(mem <= 1.5)]])
    return 0


if __name__ == '__main__':
    sys.exit(main())
