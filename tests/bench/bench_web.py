"""Benchmark of the web glue: ``multidb.pyramid`` beside pyramid_zodbconn
and beside hand-written glue.

Not a test (pytest does not collect ``bench_*.py``): run it by hand::

    python tests/bench/bench_web.py --runs 3        # the full run
    python tests/bench/bench_web.py --quick         # a smoke run, seconds
    python tests/bench/bench_web.py --http          # also through waitress

Four Pyramid applications live in one process, each with pyramid_tm (a
manager per request: ``tm.manager_hook = pyramid_tm.explicit_manager``)
and pyramid_retry, each on FileStorage files of its own in a temporary
folder, each with the same two views: ``/read`` reads ``root['count']``,
``/write`` adds one to it (pyramid_tm commits).

zodbconn
    pyramid_zodbconn, one database (``zodbconn.uri = file://...``); the
    views use ``get_connection(request).root()``.
multidb (one database)
    ``config.include('multidb.pyramid')`` with the same ``zodbconn.uri``
    setting (a collection of one database, named by the URI's
    ``database_name``); the views use ``request.dbgroup.root('main')``.
hand-written
    A dict of ``ZODB.DB`` per tenant (``--tenants`` FileStorage files,
    opened at start); a request method finds the tenant from the Host
    header's first label (404 when it is not in the dict), opens
    ``db.open(transaction_manager=request.tm)`` and closes it in a
    finished callback after an abort (what pyramid_zodbconn does for its
    one database); the views use that root.
multidb (tenants)
    ``multidb.pyramid`` with a ``<tenants>`` section: a FileStorage
    catalog and ``--tenants`` FileStorage tenants, ``max-open`` above
    their count (every tenant stays open, as in the dict);
    ``multidb.tenant_from = host``; the views use ``request.tenant_root``.

Each request is a WSGI call, no server: ``webob.Request.blank(path,
headers={'Host': ...}).get_response(app)``, its status checked, so that
what is measured is the framework and its glue.  The two tenant sides
take the tenants in the same random order.  With ``--http`` each
application is also served by waitress (one thread, on loopback) and
called over one kept-alive ``http.client`` connection.

Within a run the sides alternate, block after block (``--block``
requests each), in an order that rotates every round (``--rounds``);
a side's figure is the median of its blocks, in microseconds per
request, "paired" is the median of the per-round ratios (blocks that
ran side by side), and "CPU ratio" the ratio of the median CPU times of
the process (``time.process_time``: less moved by other processes on a
busy machine).  Each run builds its applications and files afresh;
every figure is "median (min-max)" over ``--runs`` runs.  Goals:
multidb / pyramid_zodbconn <= 1.05, multidb / hand-written <= 1.05.
"""
import argparse
import http.client
import logging
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time

import ZODB
from transaction.interfaces import NoTransaction
from ZODB.FileStorage import FileStorage

from benchutil import Runs
from benchutil import add_runs_argument
from benchutil import table
from benchutil import verdict

GOAL = 1.05
KINDS = ('read', 'write')
SIDES = ('zodbconn', 'multidb-uri', 'hand', 'multidb-tenants')
#: (label, multidb side, baseline side)
PAIRS = (
    ('multidb / pyramid_zodbconn (one database)', 'multidb-uri', 'zodbconn'),
    ('multidb / hand-written (tenants)', 'multidb-tenants', 'hand'),
)
BASE_SETTINGS = {
    'tm.manager_hook': 'pyramid_tm.explicit_manager',
    'retry.attempts': '3',
}


def _views(config, root_of):
    from pyramid.response import Response

    def read(request):
        return Response(str(root_of(request).get('count', 0)))

    def write(request):
        root = root_of(request)
        root['count'] = root.get('count', 0) + 1
        return Response(str(root['count']))
    config.add_route('read', '/read')
    config.add_route('write', '/write')
    config.add_view(read, route_name='read')
    config.add_view(write, route_name='write')


def _configurator(**settings):
    from pyramid.config import Configurator
    config = Configurator(settings={**BASE_SETTINGS, **settings})
    config.include('pyramid_retry')
    return config


# -- the four applications --------------------------------------------------

def app_zodbconn(folder):
    from pyramid_zodbconn import get_connection
    config = _configurator(**{
        'zodbconn.uri': f'file://{folder}/zodbconn.fs'})
    config.include('pyramid_tm')
    config.include('pyramid_zodbconn')
    _views(config, lambda request: get_connection(request).root())
    app = config.make_wsgi_app()

    def close():
        for db in app.registry._zodb_databases.values():
            db.close()
    return app, close


def app_multidb_uri(folder):
    config = _configurator(**{
        'zodbconn.uri': f'file://{folder}/mdb.fs?database_name=main'})
    config.include('multidb.pyramid')
    _views(config, lambda request: request.dbgroup.root('main'))
    app = config.make_wsgi_app()
    return app, app.registry.multidb.close


def app_hand(folder, tenants):
    from pyramid.httpexceptions import HTTPNotFound
    dbs = {}
    for name in tenants:
        dbs[name] = ZODB.DB(FileStorage(os.path.join(folder, f'{name}.fs')))

    def tenant_root(request):
        host = request.host.split(':', 1)[0]
        label, dot, _ = host.partition('.')
        db = dbs.get(label) if dot else None
        if db is None:
            raise HTTPNotFound()
        conn = db.open(transaction_manager=request.tm)

        def close(request):
            try:
                conn.transaction_manager.abort()
            except NoTransaction:   # pyramid_tm ended it (explicit mode)
                pass
            conn.close()
        request.add_finished_callback(close)
        return conn.root()

    config = _configurator()
    config.include('pyramid_tm')
    config.add_request_method(tenant_root, 'tenant_root', reify=True)
    _views(config, lambda request: request.tenant_root)
    app = config.make_wsgi_app()

    def close():
        for db in dbs.values():
            db.close()
    return app, close


def app_multidb_tenants(folder, tenants):
    from multidb.config import collectionFromString
    conf = f"""
<multidb>
  max-open {len(tenants) + 10}
  <zodb catalog>
    <filestorage>
      path {folder}/catalog.fs
    </filestorage>
  </zodb>
  <tenants>
    <filestorage>
      path {folder}/tenants/{{name}}.fs
    </filestorage>
  </tenants>
</multidb>
"""
    with open(os.path.join(folder, 'multidb.conf'), 'w') as f:
        f.write(conf)
    c = collectionFromString(conf)
    try:
        for name in tenants:
            c.tenants.create(name)
    finally:
        c.close()
    config = _configurator(**{
        'multidb.config': os.path.join(folder, 'multidb.conf'),
        'multidb.tenant_from': 'host'})
    config.include('multidb.pyramid')
    _views(config, lambda request: request.tenant_root)
    app = config.make_wsgi_app()
    return app, app.registry.multidb.close


def build(folder, tenants):
    made = {}
    try:
        for side in SIDES:
            where = os.path.join(folder, side)
            os.makedirs(where)
            if side == 'zodbconn':
                made[side] = app_zodbconn(where)
            elif side == 'multidb-uri':
                made[side] = app_multidb_uri(where)
            elif side == 'hand':
                made[side] = app_hand(where, tenants)
            else:
                made[side] = app_multidb_tenants(where, tenants)
    except BaseException:
        for _, close in made.values():
            close()
        raise
    return made


# -- calling them -----------------------------------------------------------

def wsgi_caller(app):
    from webob import Request

    def call(path, host):
        resp = Request.blank(path, headers={'Host': host}).get_response(app)
        if resp.status_code != 200:
            raise AssertionError(f"{path} on {host}: {resp.status}")
    return call, lambda: None


class _Server:
    """waitress in a thread, on a free loopback port (tests/test_wsgi.py's
    way of running and stopping it)."""

    def __init__(self, app):
        import waitress
        self.server = waitress.create_server(app, host='127.0.0.1', port=0,
                                             threads=1)
        self.port = self.server.effective_port
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        from waitress import wasyncore
        while not self._stop.is_set():
            wasyncore.loop(timeout=0.05, map=self.server._map, count=1)
        wasyncore.close_all(self.server._map)

    def close(self):
        self.server.task_dispatcher.shutdown()
        self._stop.set()
        self.thread.join(10)


def http_caller(app):
    # One request at a time: waitress's "Task queue depth" warnings say
    # only that its one thread was still finishing the last response.
    logging.getLogger('waitress.queue').setLevel(logging.ERROR)
    server = _Server(app)
    conn = http.client.HTTPConnection('127.0.0.1', server.port, timeout=60)

    def call(path, host):
        conn.request('GET', path, headers={'Host': host})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise AssertionError(f"{path} on {host}: {resp.status}")

    def close():
        conn.close()
        server.close()
    return call, close


def requests_of(side, kind, tenants, rng, n):
    """The (path, host) of n requests of side: the tenant sides take
    the tenants in rng's order (the same for both: rng is reseeded)."""
    path = '/' + kind
    if side in ('zodbconn', 'multidb-uri'):
        return [(path, 'main.example.com')] * n
    return [(path, f'{rng.choice(tenants)}.example.com') for _ in range(n)]


def bench(folder, tenants, rounds, block, via, res, seed):
    made = build(folder, tenants)
    callers = {}
    try:
        for side, (app, _) in made.items():
            callers[side] = (wsgi_caller if via == 'wsgi'
                             else http_caller)(app)
        times = {(side, kind): [] for side in SIDES for kind in KINDS}
        cpu = {(side, kind): [] for side in SIDES for kind in KINDS}

        def timed(side, kind, n, round_no):
            call = callers[side][0]
            seq = requests_of(side, kind, tenants,
                              random.Random(seed * 1000 + round_no), n)
            c0 = time.process_time()
            t0 = time.perf_counter()
            for path, host in seq:
                call(path, host)
            return ((time.perf_counter() - t0) / n,
                    (time.process_time() - c0) / n)

        for side in SIDES:               # warm-up: every tenant open
            for kind in KINDS:
                timed(side, kind, max(block // 2, 4 * len(tenants)), -1)
        for r in range(rounds):
            order = SIDES[r % len(SIDES):] + SIDES[:r % len(SIDES)]
            for kind in KINDS:
                for side in order:
                    wall, used = timed(side, kind, block, r)
                    times[side, kind].append(wall)
                    cpu[side, kind].append(used)
    finally:
        for call, close in callers.values():
            close()
        for _, close in made.values():
            close()
    med = statistics.median
    for kind in KINDS:
        for side in SIDES:
            res.add((via, kind, side), med(times[side, kind]) * 1e6)
        for label, a, b in PAIRS:
            res.add((via, kind, label, 'ratio'),
                    med(times[a, kind]) / med(times[b, kind]))
            res.add((via, kind, label, 'paired'), med(
                [x / y for x, y in zip(times[a, kind], times[b, kind])]))
            res.add((via, kind, label, 'cpu'),
                    med(cpu[a, kind]) / med(cpu[b, kind]))


def report(via, rounds, block, runs, ntenants, res):
    rows = []
    for kind in KINDS:
        for label, a, b in PAIRS:
            k = (via, kind, label)
            rows.append([kind, label, res.fig((via, kind, b), 1),
                         res.fig((via, kind, a), 1),
                         res.fig(k + ('ratio',)), res.fig(k + ('paired',)),
                         res.fig(k + ('cpu',)),
                         verdict(res.med(k + ('ratio',)) <= GOAL)])
    how = ('WSGI calls, no server' if via == 'wsgi'
           else 'through waitress, one kept-alive connection')
    table(f'web requests, {how}: multidb.pyramid against its baselines'
          f' (microseconds per request; {ntenants} tenants; per run the'
          f' median of {rounds} rounds of {block} requests per side;'
          f' paired: the median of the per-round ratios; CPU: the ratio of'
          f' the median CPU times of the process; median (min-max)'
          f' over {runs} runs)',
          ['request', 'comparison', 'baseline us', 'multidb us', 'ratio',
           'paired', 'CPU ratio', f'<= {GOAL}'], rows)
    rows = [[kind, side, res.fig((via, kind, side), 1)]
            for kind in KINDS for side in SIDES]
    table(f'web requests, {how}: every side (microseconds per request)',
          ['request', 'side', 'us'], rows)


def versions():
    """What ran: the packages, the commit, and a digest of multidb's
    sources (the working tree may differ from the commit)."""
    import glob
    import hashlib
    import subprocess
    from importlib.metadata import version

    import multidb
    here = os.path.dirname(os.path.dirname(multidb.__file__))
    names = ('pyramid', 'pyramid_tm', 'pyramid_retry', 'pyramid_zodbconn',
             'WebOb', 'waitress', 'ZODB', 'transaction')
    head = subprocess.run(['git', '-C', here, 'describe', '--always',
                           '--dirty'], capture_output=True,
                          text=True).stdout.strip()
    digest = hashlib.sha1()
    for path in sorted(glob.glob(os.path.join(
            os.path.dirname(multidb.__file__), '**', '*.py'),
            recursive=True)):
        with open(path, 'rb') as f:
            digest.update(f.read())
    return (f"Python {sys.version.split()[0]}; "
            + ', '.join(f'{n} {version(n)}' for n in names)
            + f"; multidb at {head or '?'} (sources sha1"
            f" {digest.hexdigest()[:12]}); {time.strftime('%Y-%m-%d %H:%M')}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--quick', action='store_true', help='a smoke run')
    p.add_argument('--rounds', type=int, default=None,
                   help='rounds per run (default 15; 2 with --quick)')
    p.add_argument('--block', type=int, default=None,
                   help='requests per side per round (default 300; 30'
                        ' with --quick)')
    p.add_argument('--tenants', type=int, default=10,
                   help='tenants of the two tenant sides (default 10)')
    p.add_argument('--http', action='store_true',
                   help='also through waitress')
    add_runs_argument(p)
    args = p.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 15)
    block = args.block or (30 if args.quick else 300)
    tenants = [f't{i}' for i in range(args.tenants)]
    import pyramid_zodbconn  # noqa: F401 (fails early when missing)
    print(versions(), f'; {args.runs} runs', sep='')
    vias = ['wsgi'] + (['http'] if args.http else [])
    res = Runs()
    t0 = time.perf_counter()
    for via in vias:
        for run in range(args.runs):
            folder = tempfile.mkdtemp(prefix='multidb-bench-web-')
            try:
                bench(folder, tenants, rounds, block, via, res, seed=run)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        report(via, rounds, block, args.runs, len(tenants), res)
    print(f'\ntotal {time.perf_counter() - t0:.0f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
