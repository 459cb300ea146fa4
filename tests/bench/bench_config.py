"""Benchmark: loading a configuration of 10,000 FileStorage databases.

Not a test (pytest collects ``test_*.py`` only).  Run::

    python tests/bench/bench_config.py [N] [--runs 3]

It writes N ``<zodb>`` sections (default 10,000) as one file and as a
folder of ten files, then times, best of three, in each of ``--runs``
runs (the three loads alternating, in a rotating order):

- ``ZConfig.loadConfigFile`` with ZODB's own schema on the one file (the
  parse that ``ZODB.config.databaseFromString`` does before it opens
  every database),
- ``multidb.config.collectionFromFile`` on the same file, and
- ``multidb.config.collectionFromFiles`` on the folder,

and prints the time per thousand databases and the ratio to ZODB's
parse, each as "median (min-max)" over the runs (the ratio is taken in
each run).  Loading must stay well under a second per thousand; nothing
is opened (checked: no storage file appears).
"""
import argparse
import os
import sys
import tempfile
import time

import ZConfig
import ZODB.config

from multidb.config import collectionFromFile
from multidb.config import collectionFromFiles

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchutil import Runs  # noqa: E402
from benchutil import fig  # noqa: E402
from benchutil import add_runs_argument  # noqa: E402
from benchutil import table  # noqa: E402
from benchutil import verdict  # noqa: E402

TARGET_PER_1000 = 1.0       # seconds per thousand databases, at most

SECTION = """\
<zodb db{i:05d}>
  cache-size 1000
  <filestorage>
    path $data/db{i:05d}.fs
  </filestorage>
</zodb>
"""


def best(func, repeat=3):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
        close = getattr(result, 'close', None)
        if close is not None:
            close()
    return min(times)


def main(n=10_000, runs=3):
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, 'data')
        os.mkdir(data)
        define = f'%define data {data}\n'
        body = [SECTION.format(i=i) for i in range(n)]
        one = os.path.join(tmp, 'all.conf')
        with open(one, 'w') as f:
            f.write(define + ''.join(body))
        folder = os.path.join(tmp, 'conf.d')
        os.mkdir(folder)
        parts = 10
        step = (n + parts - 1) // parts
        for p in range(parts):
            with open(os.path.join(folder, f'{p:02d}.conf'), 'w') as f:
                f.write((define if p == 0 else '')
                        + ''.join(body[p * step:(p + 1) * step]))

        schema = ZODB.config.getDbSchema()

        def zodb_parse():
            with open(one) as f:
                config, _ = ZConfig.loadConfigFile(schema, f)
            assert len(config.database) == n

        def multidb_file():
            c = collectionFromFile(one)
            assert len(c) == n
            return c

        def multidb_folder():
            c = collectionFromFiles([folder])
            assert len(c) == n
            return c

        zodb_parse()  # warm up: schema, imports
        collectionFromFile(one).close()
        loads = [
            ('ZODB.config parse (ZConfig + ZODB schema)', zodb_parse),
            ('multidb collectionFromFile (1 file)', multidb_file),
            ('multidb collectionFromFiles (10 files)', multidb_folder),
        ]
        res = Runs()
        for run in range(runs):
            k = run % len(loads)
            for label, func in loads[k:] + loads[:k]:
                res.add((label, 's'), best(func))
            base = res.get((loads[0][0], 's'))[-1]
            for label, _ in loads:
                res.add((label, 'ratio'), res.get((label, 's'))[-1] / base)
        assert os.listdir(data) == [], "loading created storage files"

    rows = []
    for label, _ in loads:
        per = [t / n * 1000 for t in res.get((label, 's'))]
        rows.append([label, res.fig((label, 's')), fig(per),
                     res.fig((label, 'ratio'), 2),
                     verdict(max(per) < TARGET_PER_1000)
                     if label.startswith('multidb') else ''])
    table(f"loading {n:,} declared FileStorage databases (seconds, best of"
          f" 3 per run; median (min-max) over {runs} runs; Python"
          f" {sys.version.split()[0]})",
          ['load', 's', 's per 1,000', 'ratio to ZODB parse',
           f'< {TARGET_PER_1000:g} s per 1,000'], rows)


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('n', nargs='?', type=int, default=10_000,
                   help='databases (default 10,000)')
    add_runs_argument(p)
    args = p.parse_args()
    main(args.n, args.runs)
