"""Benchmark: loading a configuration of 10,000 FileStorage databases.

Not a test (pytest collects ``test_*.py`` only).  Run::

    python tests/bench/bench_config.py [N]

It writes N ``<zodb>`` sections (default 10,000) as one file and as a
folder of ten files, then times, best of three:

- ``ZConfig.loadConfigFile`` with ZODB's own schema on the one file (the
  parse that ``ZODB.config.databaseFromString`` does before it opens
  every database),
- ``multidb.config.collectionFromFile`` on the same file, and
- ``multidb.config.collectionFromFiles`` on the folder,

and prints the time per thousand databases and the ratio to ZODB's
parse.  Loading must stay well under a second per thousand; nothing is
opened (checked: no storage file appears).
"""
import os
import sys
import tempfile
import time

import ZConfig
import ZODB.config

from multidb.config import collectionFromFile
from multidb.config import collectionFromFiles

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


def main(n=10_000):
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
        results = [
            ('ZODB.config parse (ZConfig + ZODB schema)', best(zodb_parse)),
            ('multidb collectionFromFile (1 file)', best(multidb_file)),
            ('multidb collectionFromFiles (10 files)', best(multidb_folder)),
        ]
        assert os.listdir(data) == [], "loading created storage files"

    base = results[0][1]
    print(f"{n} declared FileStorage databases, best of 3"
          f" (Python {sys.version.split()[0]})")
    print(f"{'':44} {'total':>8} {'per 1000':>9} {'ratio':>6}")
    for label, t in results:
        print(f"{label:44} {t:7.3f}s {t / n * 1000:8.3f}s {t / base:5.2f}x")


if __name__ == '__main__':
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
