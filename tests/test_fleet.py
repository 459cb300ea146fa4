"""Tenants.run_all and ``multidb run``: a function over every tenant,
each tenant in its own transaction, exactly once per run, resumable,
in worker processes.

Real FileStorage tenants throughout.  The functions below are imported
by name (``test_fleet:bump``) by worker processes and by the command
run in a subprocess (PYTHONPATH: this folder).
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from ZODB.POSException import ConflictError

import multidb
from helpers import fs_tenants
from helpers import root_dict
from helpers import run_cli
from helpers import tenants_config
from multidb.errors import InvalidInput
from multidb.errors import NoSuchTenant
from multidb.errors import NotConfigured
from multidb.errors import RunExpired
from multidb.tenants import fleet

HERE = os.path.dirname(os.path.abspath(__file__))


# -- functions run on tenants (importable by worker processes) ----------------

def bump(group, name):
    """Count the calls that committed in the tenant's root; fail where
    the tenant's root says so (after changing it: the abort undoes it)."""
    root = group.root(name)
    root['count'] = root.get('count', 0) + 1
    if root.get('fail'):
        raise ValueError(f"tenant {name} is made to fail")
    return root['count']


def slow_bump(group, name):
    time.sleep(0.01)   # so that a kill lands mid-run
    bump(group, name)


_conflicts = {}


def conflict_once(group, name):
    # A transient error at the first attempt of each tenant.
    root = group.root(name)
    root['count'] = root.get('count', 0) + 1
    if name not in _conflicts:
        _conflicts[name] = 1
        raise ConflictError(f"a conflict in {name}")


def _init(root):
    root['count'] = 0


def _make(folder, count, *, fail=(), labels=None):
    """(collection, tenants) with count tenants t000, t001, ... whose
    roots say whether they fail."""
    c, t = fs_tenants(folder)
    for i in range(count):
        name = f't{i:03d}'

        def init(root, name=name):
            root['count'] = 0
            root['fail'] = name in fail
        t.create(name, init=init,
                 labels=(labels or {}).get(name) or {'plan': 'free'})
    return c, t


def _counts(t):
    with t.collection.transaction() as g:
        return {r.name: g.root(r.name).get('count') for r in t.list()}


@pytest.fixture
def small(tmp_path):
    c, t = _make(tmp_path, 12, fail={'t003', 't007'},
                 labels={'t001': {'plan': 'gold'}, 't002': {'plan': 'gold',
                                                             'beta': ''}})
    yield t
    c.close()


# -- run_all ------------------------------------------------------------------

@pytest.mark.parametrize('jobs', [1, 2])
def test_run_all_reports_exactly_the_failing_tenants(small, tmp_path, jobs):
    func = bump if jobs == 1 else 'test_fleet:bump'
    report = small.run_all(func, jobs=jobs, journal_dir=tmp_path / 'runs')
    assert set(report.failed) == {'t003', 't007'}
    assert report.failed['t003'] == {
        'type': 'builtins.ValueError',
        'message': 'tenant t003 is made to fail'}
    assert sorted(report.done) == sorted(
        f't{i:03d}' for i in range(12) if i not in (3, 7))
    assert report.skipped == [] and not report.ok
    counts = _counts(small)
    # The failing tenants' changes were aborted, each other counted once.
    assert counts == {n: 0 if n in ('t003', 't007') else 1 for n in counts}
    assert report.details['t000'] == {'result': 1}


def test_resumed_run_skips_the_tenants_it_finished(small, tmp_path):
    runs = tmp_path / 'runs'
    first = small.run_all(bump, run_id='r1', journal_dir=runs)
    again = small.run_all(bump, run_id='r1', journal_dir=runs)
    assert sorted(again.skipped) == sorted(first.done)
    assert again.done == []
    # A failed tenant has no mark: it runs again (and fails again).
    assert set(again.failed) == {'t003', 't007'}
    assert set(_counts(small).values()) == {0, 1}
    # Another run is another run.
    other = small.run_all(bump, run_id='r2', journal_dir=runs)
    assert sorted(other.done) == sorted(first.done)
    assert _counts(small)['t000'] == 2


def test_journal_lists_the_failed_tenants(small, tmp_path):
    report = small.run_all(bump, run_id='j1', journal_dir=tmp_path / 'runs')
    with open(report.journal) as f:
        journal = json.load(f)
    assert report.journal == str(tmp_path / 'runs' / 'j1.json')
    assert journal['run_id'] == 'j1'
    assert (journal['total'], journal['done'], journal['skipped']) == \
        (12, 10, 0)
    assert sorted(journal['failed']) == ['t003', 't007']
    assert journal['finished'] >= journal['started']


def test_correctness_does_not_depend_on_the_journal(small, tmp_path):
    runs = tmp_path / 'runs'
    report = small.run_all(bump, run_id='r1', journal_dir=runs)
    os.unlink(report.journal)
    again = small.run_all(bump, run_id='r1', journal_dir=runs)
    assert sorted(again.skipped) == sorted(report.done)


@pytest.mark.parametrize('selection, expected', [
    (dict(names=['t005', 't001']), ['t001', 't005']),
    (dict(labels=['plan=gold']), ['t001', 't002']),
    (dict(labels={'plan': 'gold', 'beta': ''}), ['t002']),
    (dict(labels=['beta']), ['t002']),
    (dict(states=['active'], names=['t004']), ['t004']),
    (dict(states=['archived']), []),
])
def test_selection(small, tmp_path, selection, expected):
    report = small.run_all(bump, journal_dir=tmp_path / 'runs', **selection)
    assert sorted(report.done) == expected


def test_transient_errors_are_retried(small, tmp_path):
    report = small.run_all(conflict_once, names=['t000', 't001'],
                           journal_dir=tmp_path / 'runs')
    assert sorted(report.done) == ['t000', 't001']
    assert _counts(small)['t000'] == 1   # the first attempt was aborted


def test_marks_are_bounded(small, tmp_path, monkeypatch):
    monkeypatch.setattr(fleet, 'MARKS_KEPT', 5)
    for i in range(8):
        small.run_all(bump, names=['t000'], run_id=f'r{i}',
                      journal_dir=tmp_path / 'runs')
    with small.collection.transaction() as g:
        marks = fleet.run_marks(g.root('t000'))
    assert sorted(marks) == ['r3', 'r4', 'r5', 'r6', 'r7']
    # Marks older than mark_ttl go as a new one comes.
    small.run_all(bump, names=['t000'], run_id='last', mark_ttl=0,
                  journal_dir=tmp_path / 'runs')
    with small.collection.transaction() as g:
        assert list(fleet.run_marks(g.root('t000'))) == ['last']


def test_resuming_an_expired_run_is_refused(small, tmp_path):
    runs = tmp_path / 'runs'
    runs.mkdir()
    (runs / 'old.json').write_text(json.dumps(
        {'run_id': 'old', 'started': time.time() - 31 * 86400}))
    with pytest.raises(RunExpired, match="'old' started at"):
        small.run_all(bump, run_id='old', journal_dir=runs)
    # A run id made by run_all says when it started, journal or not.
    with pytest.raises(RunExpired, match="started at 2020-01-31T12:00:00"):
        small.run_all(bump, run_id='20200131T120000Z-0123abcd',
                      journal_dir=runs)
    assert set(_counts(small).values()) == {0}
    recent = fleet.new_run_id()
    assert small.run_all(bump, run_id=recent, names=['t000'],
                         journal_dir=runs).done == ['t000']


def _local(group, name):
    pass


@pytest.mark.parametrize('kwargs, error', [
    (dict(run_id='a b'), "bad run id 'a b'"),
    (dict(run_id='../x'), "bad run id '../x'"),
    (dict(jobs=0), "bad jobs 0"),
    (dict(jobs=2, func=lambda g, n: None), "jobs > 1 runs it in other"),
    (dict(jobs=2, func=_local.__get__(1)), "jobs > 1 runs it in other"),
    (dict(func='nosuchmodule:f'), "cannot import it"),
    (dict(func='test_fleet:nosuchfunc', jobs=2), "cannot import it"),
    (dict(labels=['plan=platinum']), "bad label 'plan=platinum'"),
    (dict(labels=['nolabel']), "no tenant has it"),
    (dict(attempts=0), "bad attempts 0"),
])
def test_bad_input_is_refused_before_anything_runs(small, tmp_path, kwargs,
                                                   error):
    func = kwargs.pop('func', bump)
    with pytest.raises(InvalidInput, match=error.replace('(', '.')):
        small.run_all(func, journal_dir=tmp_path / 'runs', **kwargs)
    assert set(_counts(small).values()) == {0}
    assert not (tmp_path / 'runs').exists()


def test_unknown_name_is_refused(small, tmp_path):
    with pytest.raises(NoSuchTenant):
        small.run_all(bump, names=['t000', 'nobody'],
                      journal_dir=tmp_path / 'runs')
    assert _counts(small)['t000'] == 0


def test_workers_open_tenants_this_process_had_open(small, tmp_path):
    # Every tenant was opened here by create: a FileStorage is locked
    # by one process, so the run closes them before the workers start.
    assert small.collection.is_open('t000')
    report = small.run_all('test_fleet:bump', jobs=2,
                           journal_dir=tmp_path / 'runs')
    assert len(report.done) == 10
    assert root_dict(small, 't000')['count'] == 1   # declared again


def test_tenants_of_a_worker_that_died_are_reported_failed(small, tmp_path):
    import functools
    import operator
    # A loader that fails in the worker: the worker ends at once.
    report = small.run_all('test_fleet:bump', jobs=2, names=['t000', 't001'],
                           journal_dir=tmp_path / 'runs',
                           loader=functools.partial(operator.truediv, 1, 0))
    assert report.done == [] and sorted(report.failed) == ['t000', 't001']
    assert report.failed['t000'] == {
        'type': 'WorkerDied', 'message': 'its worker process ended (exit'
                                         ' codes [1]) before reporting it'}
    # Nothing was done: a run with the same id does them.
    again = small.run_all('test_fleet:bump', jobs=2, names=['t000', 't001'],
                          run_id=report.run_id, journal_dir=tmp_path / 'runs')
    assert again.done == ['t000', 't001']


def test_progress_callable_is_called_once_per_tenant(small, tmp_path):
    ticks = []
    small.run_all(bump, progress=ticks.append, journal_dir=tmp_path / 'r')
    assert ticks == [1] * 12


def test_progress_bar(small, tmp_path, capsys):
    small.run_all(bump, progress=True, journal_dir=tmp_path / 'r')
    assert '12/12' in capsys.readouterr().err


# -- the command --------------------------------------------------------------

@pytest.fixture
def cli_tenants(tmp_path, data, monkeypatch):
    """Twelve tenants under ./data (two failing), the configuration in
    ./tenants.conf; journals in ./runs."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('MULTIDB_RUN_DIR', str(tmp_path / 'runs'))
    (tmp_path / 'tenants.conf').write_text(tenants_config())
    c, t = _make(data, 12, fail={'t003', 't007'},
                 labels={'t001': {'plan': 'gold'}})
    c.close()
    return tmp_path / 'tenants.conf'


def test_cli_run_prints_a_table_and_fails_when_a_tenant_failed(
        cli_tenants, capsys):
    code, out, err = run_cli(capsys, 'run', 'test_fleet:bump', '--run-id',
                             'c1', config=cli_tenants)
    assert code == 1, err
    lines = out.splitlines()
    assert lines[0].split() == ['TENANT', 'STATUS', 'DETAIL']
    assert lines[1].split() == ['t000', 'done', '1']
    assert lines[4].split(None, 2) == [
        't003', 'failed', 'ValueError: tenant t003 is made to fail']
    assert lines[-1] == 'run c1: 10 done, 0 skipped, 2 failed'
    code, out, err = run_cli(capsys, 'run', 'test_fleet:bump', 't000',
                             't001', '--run-id', 'c1', '--json',
                             config=cli_tenants)
    assert code == 0, err
    report = json.loads(out)
    assert report['skipped'] == ['t000', 't001'] and report['done'] == []


def test_cli_run_prints_a_new_run_id(cli_tenants, capsys):
    code, out, err = run_cli(capsys, 'run', 'test_fleet:bump', '--label',
                             'plan=gold', '-j', '2', config=cli_tenants)
    assert code == 0, err
    first = out.splitlines()[0]
    assert first.startswith('run id ') and '--run-id' in first
    assert out.splitlines()[-1].endswith('1 done, 0 skipped, 0 failed')


@pytest.mark.parametrize('argv, error', [
    (['test_fleet:bump', '--run-id', 'a b'], "bad run id 'a b'"),
    (['test_fleet:bump', '-j', '0'], "at least 1, not '0'"),
    (['test_fleet:bump', '-j', 'two'], "at least 1, not 'two'"),
    (['nosuchmodule:bump'], "cannot import it"),
    (['test_fleet:nosuch'], "cannot import it"),
    (['not a name'], "bad dotted name 'not a name'"),
    (['test_fleet:bump', '--label', 'nolabel'], "bad label 'nolabel': no"),
    (['test_fleet:bump', '--label', 'a b'], "bad label"),
])
def test_cli_run_bad_input_exits_2(cli_tenants, capsys, argv, error):
    code, out, err = run_cli(capsys, 'run', *argv, config=cli_tenants)
    assert code == 2, (out, err)
    assert err.startswith('multidb: error: ') and error in err
    assert not os.path.exists('runs')


# -- killed and resumed -------------------------------------------------------

def _wait_for_journal(path, done, proc, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            with open(path) as f:
                if json.load(f)['done'] >= done:
                    return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)
    raise AssertionError("the run did not get far enough")


def _children(pid):
    """The pids of the processes whose parent is pid (Linux)."""
    found = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/stat') as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces.
        if int(stat.rpartition(')')[2].split()[1]) == pid:
            found.append(int(entry))
    return found


def _wait_gone(pids, timeout=10):
    deadline = time.monotonic() + timeout
    for pid in pids:
        while os.path.exists(f'/proc/{pid}'):
            with open(f'/proc/{pid}/stat') as f:
                if f.read().rpartition(')')[2].split()[0] == 'Z':
                    break   # dead, not reaped yet
            assert time.monotonic() < deadline, f"worker {pid} lives on"
            time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize('jobs', [1, 2])
def test_run_killed_midway_and_resumed_touches_each_tenant_once(
        tmp_path, data, monkeypatch, jobs):
    count = 300
    monkeypatch.chdir(tmp_path)
    c, t = _make(data, count)
    c.close()
    (tmp_path / 'tenants.conf').write_text(tenants_config())
    env = dict(os.environ, PYTHONPATH=HERE)
    runs = tmp_path / 'runs'
    proc = subprocess.Popen(
        [sys.executable, '-m', 'multidb.cli', '-C', 'tenants.conf', 'run',
         'test_fleet:slow_bump', '--run-id', 'k1', '-j', str(jobs),
         '--journal-dir', str(runs)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_journal(runs / 'k1.json', 20, proc)
        # (With jobs > 1, multiprocessing's resource tracker too.)
        workers = _children(proc.pid)
        assert len(workers) >= (jobs if jobs > 1 else 0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    # The workers die with it (the kernel kills them: PR_SET_PDEATHSIG),
    # at once but not synchronously: wait for it.
    _wait_gone(workers)
    c, t = fs_tenants(data)
    try:
        before = _counts(t)
        finished = {n for n, k in before.items() if k == 1}
        assert 20 <= len(finished) < count
        # Workers die with the process that started them: their tenants
        # are free again.
        report = t.run_all('test_fleet:slow_bump', run_id='k1', jobs=jobs,
                           journal_dir=runs)
        assert report.failed == {}
        assert set(report.skipped) == finished
        assert set(report.done) == set(before) - finished
        assert set(_counts(t).values()) == {1}
    finally:
        c.close()


# -- on PostgreSQL ------------------------------------------------------------

def pg_collection(tenant_dsn, template, catalog_dsn):
    """A collection with tenants on PostgreSQL (RelStorage), the catalog
    too; nothing opened.  Also the loader of the worker processes."""
    from multidb.backends.relstorage import RelStorageBackend
    backend = RelStorageBackend(tenant_dsn, template=template,
                                keep_history=False)
    c = multidb.Collection()
    c.declare('catalog', lambda: backend._open_relstorage(catalog_dsn))
    multidb.Tenants(c, catalog='catalog', backend=backend)
    return c


@pytest.fixture
def pg_tenants(postgres, pg_db, tmp_path):
    """Three tenants on PostgreSQL (RelStorage), the catalog too, and the
    loader that makes the same collection in a worker."""
    import functools
    import uuid
    prefix = 'f' + uuid.uuid4().hex[:6] + '_'
    loader = functools.partial(pg_collection, postgres.dsn(prefix + '{name}'),
                               prefix + 'template', postgres.dsn(pg_db))
    c = loader()
    t = c.tenants
    t.loader = loader
    try:
        for name in ('a', 'b', 'c'):
            t.create(name, init=lambda root, name=name: root.update(
                count=0, fail=name == 'b'))
        yield t
    finally:
        c.close()
        postgres.drop_databases(prefix)


@pytest.mark.slow
@pytest.mark.parametrize('jobs', [1, 2])
def test_run_all_on_postgresql(pg_tenants, tmp_path, jobs):
    runs = tmp_path / 'runs'
    loader = pg_tenants.loader if jobs > 1 else None
    report = pg_tenants.run_all('test_fleet:bump', run_id='p1', jobs=jobs,
                                journal_dir=runs, loader=loader)
    assert (report.done, list(report.failed)) == (['a', 'c'], ['b'])
    again = pg_tenants.run_all('test_fleet:bump', run_id='p1', jobs=jobs,
                               journal_dir=runs, loader=loader)
    assert (again.skipped, list(again.failed)) == (['a', 'c'], ['b'])
    assert _counts(pg_tenants) == {'a': 1, 'b': 0, 'c': 1}


def test_tenants_whose_factory_does_not_pickle_need_a_loader(pg_tenants,
                                                             tmp_path):
    with pytest.raises(NotConfigured, match='give a loader'):
        pg_tenants.run_all('test_fleet:bump', jobs=2,
                           journal_dir=tmp_path / 'runs')
    assert not (tmp_path / 'runs').exists()
