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
whole run and in tenants per second.
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--n', type=int, default=10_000,
                        help="how many tenants (default 10,000)")
    add_runs_argument(parser)
    args = parser.parse_args(argv)
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
                print(f"  round {r + 1}: {key}: {elapsed:.2f} s",
                      file=sys.stderr)
    finally:
        shutil.rmtree(journals, ignore_errors=True)
    table(f"run_all over {args.n:,} FileStorage tenants (median (min-max)"
          f" of {args.runs} runs)", ['how', 'seconds', 'tenants/s'],
          [[k, res.fig(k, 2), res.fig(k + '/s', fmt=',.0f')]
           for k in sides])
    return 0


if __name__ == '__main__':
    sys.exit(main())
