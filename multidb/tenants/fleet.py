"""Running a function over every tenant: resumable, exactly once per
tenant, in parallel processes if asked; and evolving tenants' data
generations through the same runner.

:class:`Fleet`, a part of ``multidb.tenants.lifecycle.Tenants``: see
``ITenants.run_all``, ``ITenants.evolve`` and
``ITenants.check_generation``.

Exactly once rests on one rule: the mark that a tenant is done for a run
is committed in the tenant's own database, in the transaction of the
function's changes (``root['multidb.runs'][run_id]``).  Whatever kills
the run, a tenant either has its changes and the mark, or neither; a
resumed run skips the marked ones and runs the others.  The journal (a
JSON file per run) is for reports only.

Marks are bounded: a tenant keeps the marks of runs younger than
``mark_ttl`` (30 days by default), at most ``MARKS_KEPT`` of them, older
ones being dropped as a new one is written.  A run is resumable for as
long as its marks are kept: ``run_all`` refuses (``RunExpired``) to
resume a run whose journal (or, for an id ``new_run_id`` made, the id
itself) says it started longer ago than that.
"""
import dataclasses
import datetime
import json
import logging
import multiprocessing
import os
import pickle
import queue
import re
import threading
import time
import uuid
from typing import TYPE_CHECKING
from typing import Any
from typing import Callable
from typing import Dict
from typing import Iterable
from typing import List
from typing import Mapping
from typing import Optional
from typing import Union

from BTrees.OOBTree import OOBTree

from multidb.errors import InvalidInput
from multidb.errors import NotConfigured
from multidb.errors import RunExpired
from multidb.errors import DatabaseInUse
from multidb.files import write_file
from multidb.inputs import check_dotted_name
from multidb.inputs import parse_label
from multidb.inputs import resolve_dotted
from multidb.tenants import generations as _gen

if TYPE_CHECKING:  # pragma: no cover
    from multidb.tenants.catalog import TenantRecord

log = logging.getLogger(__name__)

#: The root key of a tenant's marks of finished runs: run id -> when the
#: tenant was done (seconds since the epoch).
RUNS_KEY = 'multidb.runs'
#: The most marks a tenant keeps (the newest).
MARKS_KEPT = 100
#: How long marks are kept by default (seconds): 30 days.
MARK_TTL = 30 * 86400
#: How often (seconds) the journal is rewritten during a run.
JOURNAL_EVERY = 0.5

_RUN_ID = re.compile(r'[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z')

# A function run on tenants, or its dotted name.
_Func = Union[Callable[[Any, str], Any], str]
_Progress = Union[bool, Callable[[int], Any], None]


def check_run_id(run_id: str) -> str:
    """run_id if it is spelled as a run id: 1 to 64 ASCII letters,
    digits or ``._-``, starting with a letter or digit (it names a file
    of the journal); ``InvalidInput`` otherwise."""
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise InvalidInput('run id', run_id,
                           "expected 1 to 64 ASCII letters, digits or"
                           " '._-', starting with a letter or digit")
    return run_id


def new_run_id() -> str:
    """A new run id: the time (UTC) and a random part."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime(
        '%Y%m%dT%H%M%SZ')
    return f"{stamp}-{uuid.uuid4().hex[:8]}"


_GENERATED = re.compile(r'(\d{8}T\d{6}Z)-[0-9a-f]{8}\Z')


def _started_by_id(run_id):
    # When a run whose id new_run_id made started (None for another id).
    match = _GENERATED.match(run_id)
    if match is None:
        return None
    return datetime.datetime.strptime(
        match.group(1), '%Y%m%dT%H%M%SZ').replace(
            tzinfo=datetime.timezone.utc).timestamp()


def default_journal_dir() -> str:
    """Where run journals go by default: ``$MULTIDB_RUN_DIR``, else
    ``$XDG_STATE_HOME/multidb/runs`` (``~/.local/state/multidb/runs``)."""
    folder = os.environ.get('MULTIDB_RUN_DIR')
    if folder:
        return folder
    state = os.environ.get('XDG_STATE_HOME') or os.path.join(
        os.path.expanduser('~'), '.local', 'state')
    return os.path.join(state, 'multidb', 'runs')


def importable_name(func: Any, what: str = 'function') -> str:
    """The dotted name (``module:qualname``) that imports func again,
    for worker processes; ``InvalidInput`` when there is none (a lambda,
    a nested function, a bound method, an object of no module)."""
    if isinstance(func, str):
        check_dotted_name(func)
        resolve_dotted(func)       # InvalidInput when it cannot import
        return func
    module = getattr(func, '__module__', None)
    qualname = getattr(func, '__qualname__', None)
    if module and qualname and '<' not in qualname and \
            module != '__main__':
        name = f"{module}:{qualname}"
        try:
            if resolve_dotted(name) is func:
                return name
        except InvalidInput:
            pass
    raise InvalidInput(what, func,
                       f"jobs > 1 runs it in other processes, which import"
                       f" it: give an importable {what}, or its dotted name"
                       f" ('package.module:name'), not a lambda, a nested"
                       f" or a __main__ one")


def _mark(root, run_id, when, ttl):
    marks = root.get(RUNS_KEY)
    if marks is None:
        marks = root[RUNS_KEY] = OOBTree()
    marks[run_id] = when
    if len(marks) > 1:
        # Bounded: the old marks go as a new one comes (a tenant has few:
        # one per run that touched it).
        old = sorted(marks.items(), key=lambda kv: kv[1])
        extra = len(old) - MARKS_KEPT
        for i, (key, at) in enumerate(old):
            if key != run_id and (i < extra or at < when - ttl):
                del marks[key]


def run_marks(root: Any) -> Dict[str, float]:
    """The marks of finished runs in a tenant's root: run id -> when."""
    return dict(root.get(RUNS_KEY) or {})


class FuncTask:
    """Run func once on one tenant for a run (a task of the runner):
    in one transaction, func's changes and the tenant's mark; skipped
    when the mark is there already.  Picklable when func is a dotted
    name."""

    def __init__(self, func: _Func, run_id: str, attempts: int = 3,
                 mark_ttl: float = MARK_TTL) -> None:
        self.func = func
        self.run_id = run_id
        self.attempts = attempts
        self.mark_ttl = mark_ttl

    def __call__(self, collection: Any, name: str) -> Dict[str, Any]:
        func = resolve_dotted(self.func)
        run_id = self.run_id

        def attempt(group):
            root = group.root(name)
            marks = root.get(RUNS_KEY)
            if marks is not None and run_id in marks:
                return {'skipped': True}
            result = func(group, name)
            _mark(group.root(name), run_id, time.time(), self.mark_ttl)
            return {} if result is None else {'result': _jsonable(result)}

        return collection.run(attempt, attempts=self.attempts,
                              note=f"multidb run {run_id}: {name}")


def _jsonable(value):
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _error(e):
    return {'type': f"{type(e).__module__}.{type(e).__qualname__}",
            'message': ' '.join(str(e).split()) or type(e).__name__}


def _run_one(task, collection, name):
    """Run task on one tenant: its outcome (a dict: name, status 'done',
    'skipped' or 'failed', error, detail)."""
    try:
        detail = task(collection, name) or {}
    except Exception as e:
        log.warning("tenant %r failed: %s: %s", name, type(e).__name__, e)
        return {'name': name, 'status': 'failed', 'error': _error(e),
                'detail': getattr(e, 'multidb_detail', {})}
    status = 'skipped' if detail.pop('skipped', False) else 'done'
    return {'name': name, 'status': status, 'error': None, 'detail': detail}


@dataclasses.dataclass
class RunReport:
    """What a run did: the tenants done now, skipped (done before, by an
    earlier attempt of the same run), failed (name -> error type and
    message); ``details`` per tenant (what the task returned: func's
    result, or the generations of an evolve); ``journal`` the journal
    file."""

    run_id: str
    done: List[str] = dataclasses.field(default_factory=list)
    skipped: List[str] = dataclasses.field(default_factory=list)
    failed: Dict[str, Dict[str, str]] = dataclasses.field(
        default_factory=dict)
    details: Dict[str, Dict[str, Any]] = dataclasses.field(
        default_factory=dict)
    journal: Optional[str] = None
    started: Optional[float] = None
    finished: Optional[float] = None

    @property
    def ok(self) -> bool:
        """Did every tenant succeed (done or skipped)?"""
        return not self.failed

    def add(self, outcome: Mapping[str, Any]) -> None:
        name = outcome['name']
        if outcome['status'] == 'failed':
            self.failed[name] = outcome['error']
        else:
            getattr(self, outcome['status']).append(name)
        if outcome.get('detail'):
            self.details[name] = outcome['detail']

    def to_json(self) -> Dict[str, Any]:
        return {'run_id': self.run_id, 'done': sorted(self.done),
                'skipped': sorted(self.skipped),
                'failed': dict(sorted(self.failed.items())),
                'details': dict(sorted(self.details.items())),
                'journal': self.journal, 'started': self.started,
                'finished': self.finished}


class _Journal:
    """The run's JSON file, rewritten atomically now and then: for the
    report and the list of failed tenants, never for correctness."""

    def __init__(self, folder, report, what):
        self.path = None
        self.report = report
        self.what = what
        self.total = 0
        self._written = 0.0
        if folder is None:
            return
        os.makedirs(folder, exist_ok=True)
        self.path = os.path.abspath(
            os.path.join(folder, f"{report.run_id}.json"))
        report.journal = self.path

    def previous(self):
        if self.path is None:
            return None
        try:
            with open(self.path, encoding='utf-8') as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            log.warning("unreadable run journal %s: ignored", self.path)
            return None

    def write(self, final=False):
        now = time.monotonic()
        if self.path is None or (not final and
                                 now - self._written < JOURNAL_EVERY):
            return
        self._written = now
        r = self.report
        data = {'run_id': r.run_id, 'what': self.what,
                'started': r.started, 'updated': time.time(),
                'finished': r.finished, 'total': self.total,
                'done': len(r.done), 'skipped': len(r.skipped),
                'failed': r.failed}
        try:
            write_file(self.path, json.dumps(data, indent=1).encode(),
                       sync_folder=final)
        except OSError:
            log.warning("cannot write the run journal %s", self.path,
                        exc_info=True)


class Fleet:
    """Runs over many tenants (see the module).  A part of ``Tenants``:
    it uses ``collection``, ``records()``, ``init`` and ``_undeclare``."""

    #: The schema manager of the tenants' data (see use_generations), and
    #: the key its generation is kept under.
    schema_manager: Any = None
    generations_key: Optional[str] = None
    _schema_manager_name: Optional[str] = None

    # -- selection ---------------------------------------------------------

    def select(self, *, names: Optional[Iterable[str]] = None,
               labels: Any = None,
               states: Optional[Iterable[str]] = None
               ) -> List['TenantRecord']:
        """See ``ITenants.select``."""
        wanted = None
        if names is not None:
            if isinstance(names, str):
                names = [names]
            wanted = sorted(set(names))
        want_labels = _label_filter(labels)
        if states is not None:
            states = {states} if isinstance(states, str) else set(states)
            for s in states:
                if not isinstance(s, str) or not s:
                    raise InvalidInput('state', s, "expected a state name"
                                                   " ('active')")
        if wanted is not None:
            records = [self.get(n) for n in wanted]   # NoSuchTenant
        else:
            records = self.records()
        chosen = []
        seen_labels = set()
        for rec in records:
            for k, v in want_labels:
                if k in rec.labels and (not v or rec.labels[k] == v):
                    seen_labels.add((k, v))
            if states is not None and rec.state not in states:
                continue
            if all(k in rec.labels and (not v or rec.labels[k] == v)
                   for k, v in want_labels):
                chosen.append(rec)
        for k, v in want_labels:
            if (k, v) not in seen_labels:
                shown = f"{k}={v}" if v else k
                raise InvalidInput('label', shown,
                                   "no tenant has it" + (
                                       " (among the names given)"
                                       if wanted is not None else ''))
        return chosen

    # -- running -----------------------------------------------------------

    def run_all(self, func: _Func, *, names: Optional[Iterable[str]] = None,
                labels: Any = None,
                states: Optional[Iterable[str]] = None, jobs: int = 1,
                run_id: Optional[str] = None, attempts: int = 3,
                progress: _Progress = None,
                journal_dir: Optional[str] = None,
                mark_ttl: float = MARK_TTL,
                loader: Optional[Callable[[], Any]] = None) -> RunReport:
        """See ``ITenants.run_all``."""
        _check_jobs(jobs)
        _check_attempts(attempts)
        if run_id is None:
            run_id = new_run_id()
            log.info("run id %s", run_id)
        else:
            check_run_id(run_id)
        if jobs > 1:
            func = importable_name(func)
        else:
            func = resolve_dotted(func)
            if not callable(func):
                raise InvalidInput('function', func, "it is not callable")
        records = self.select(names=names, labels=labels, states=states)
        what = func if isinstance(func, str) else \
            f"{getattr(func, '__module__', '?')}:" \
            f"{getattr(func, '__qualname__', repr(func))}"
        task = FuncTask(func, run_id, attempts, mark_ttl)
        return self._run_task(task, records, run_id=run_id, jobs=jobs,
                              progress=progress, journal_dir=journal_dir,
                              what=f"run {what}", mark_ttl=mark_ttl,
                              loader=loader)

    def _run_task(self, task, records, *, run_id, jobs, progress,
                  journal_dir, what, mark_ttl=None, loader=None):
        if jobs > 1:
            items = self._worker_items(task, records, loader)
        report = RunReport(run_id, started=time.time())
        if journal_dir is None:
            journal_dir = default_journal_dir()
        journal = _Journal(journal_dir, report, what)
        before = journal.previous()
        if before is not None and before.get('started'):
            report.started = before['started']
        # Without its journal, a run id made by new_run_id still says when
        # the run started.
        started = report.started if before else _started_by_id(run_id)
        if mark_ttl is not None and started is not None and \
                time.time() - started > mark_ttl:
            raise RunExpired(run_id, datetime.datetime.fromtimestamp(
                started, datetime.timezone.utc).isoformat(), mark_ttl)
        journal.total = len(records)
        bar, tick = _bar(progress, len(records), what)
        try:
            journal.write(final=True)

            def record(outcome):
                report.add(outcome)
                journal.write()
                if tick is not None:
                    tick(1)

            if jobs == 1:
                for rec in records:
                    record(_run_one(task, self.collection, rec.name))
            elif items:
                self._run_in_workers(task, items, jobs, record, loader)
        finally:
            if bar is not None:
                bar.close()
            report.finished = time.time()
            report.done.sort()
            report.skipped.sort()
            report.failed = dict(sorted(report.failed.items()))
            journal.write(final=True)
        return report

    def _worker_items(self, task, records, loader):
        """What the workers get, one item per tenant: the tenant's name and
        its storage factory, or with a loader its record (the worker's
        loader makes the backend that opens it).  Checked here, before
        anything runs: what cannot reach a worker process."""
        for what, obj in (('task', task), ('loader', loader)):
            try:
                pickle.dumps(obj)
            except Exception as e:
                raise InvalidInput(what, obj, f"cannot be sent to worker"
                                              f" processes: {e}") from None
        if loader is not None:
            return [(rec.name, rec) for rec in records]
        items = []
        for rec in records:
            backend = self.backend_for(rec)
            factory = backend.factory(rec.settings, name=rec.name)
            try:
                pickle.dumps(factory)
            except Exception as e:
                raise NotConfigured(
                    f"tenants on {rec.kind!r} cannot be sent to worker"
                    f" processes as they are (their storage factory does"
                    f" not pickle: {e}): give a loader (the command gives"
                    f" its configuration), or run with jobs=1") from None
            items.append((rec.name, factory))
        return items

    def _run_in_workers(self, task, items, jobs, record, loader):
        """Run task on items (see _worker_items) in jobs worker processes.
        A worker opens only the tenants it is given, each given to one
        worker: not the catalog, which may be a FileStorage this process
        holds."""
        ctx = multiprocessing.get_context('spawn')
        tasks = ctx.Queue()
        results = ctx.Queue()
        # Small chunks: a worker that dies loses little, and the workers
        # stay busy to the end.
        size = max(1, min(50, len(items) // (jobs * 8) or 1))
        pending = {}
        for start in range(0, len(items), size):
            chunk = items[start:start + size]
            pending.update((n, None) for n, _ in chunk)
        # A tenant open in this process (FileStorage: locked) is closed
        # first: a worker must be able to open it.
        for name in pending:
            self._release(name)
        for start in range(0, len(items), size):
            tasks.put(items[start:start + size])
        workers = [ctx.Process(target=_worker_main,
                               args=(tasks, results, task,
                                     dict(self.db_kwargs), os.getpid(),
                                     loader),
                               daemon=True)
                   for _ in range(min(jobs, max(1, len(items))))]
        for _ in workers:
            tasks.put(None)
        for w in workers:
            w.start()
        finished = False
        try:
            while pending:
                try:
                    outcomes = results.get(timeout=0.2)
                except queue.Empty:
                    if not any(w.is_alive() for w in workers):
                        # Drain what the last ones sent as they ended.
                        try:
                            outcomes = results.get(timeout=1.0)
                        except queue.Empty:
                            break
                    else:
                        continue
                for outcome in outcomes:
                    if pending.pop(outcome['name'], 1) is None:
                        record(outcome)
            codes = sorted({w.exitcode for w in workers
                            if w.exitcode not in (None, 0)})
            for name in list(pending):
                # Its worker died (killed, out of memory, or it could not
                # start: its traceback is on stderr) during the chunk:
                # whether it was done is in the tenant's marks.
                record({'name': name, 'status': 'failed',
                        'error': {'type': 'WorkerDied',
                                  'message': f"its worker process ended"
                                             f" (exit codes {codes})"
                                             f" before reporting it"},
                        'detail': {}})
            finished = True
        finally:
            # Interrupted (Ctrl-C, an error here): the workers are killed,
            # which is safe at any moment (a tenant has its changes and
            # its mark, or neither).
            for w in workers:
                if finished:
                    w.join(timeout=5)
                if w.is_alive():
                    w.kill()
                    w.join()
            # Chunks no worker took must not keep this process from
            # exiting (the queue's feeder thread would wait for a reader).
            tasks.cancel_join_thread()
            tasks.close()
            results.close()

    def _release(self, name):
        """Close the tenant's database in this process if it is open
        (declared again on its next use)."""
        try:
            if not self.collection.is_open(name):
                return
        except Exception:
            return
        try:
            self._undeclare(name, timeout=self.in_use_timeout)
        except DatabaseInUse:
            pass   # the worker reports DatabaseLocked for it

    # -- generations -------------------------------------------------------

    def use_generations(self, manager: Any,
                        key: Optional[str] = None) -> None:
        """See ``ITenants.use_generations``."""
        given = manager
        manager = _gen.resolve_manager(manager)
        key = _gen.manager_key(manager, key)
        init = self.init
        if isinstance(init, _gen.StampingInit):
            init = init.init
        self.schema_manager = manager
        self.generations_key = key
        # For worker processes, which import it (see evolve).
        self._schema_manager_name = given if isinstance(given, str) \
            else None
        # New tenants start at the current generation: create runs init.
        self.init = _gen.StampingInit(manager, key, init)

    def _manager(self, manager, key):
        if manager is None:
            if self.schema_manager is None:
                raise NotConfigured(
                    "no schema manager: call use_generations(manager) or"
                    " give one (multidb evolve --manager MODULE:OBJ)")
            return self.schema_manager, self.generations_key
        resolved = _gen.resolve_manager(manager)
        return resolved, _gen.manager_key(resolved, key)

    def evolve(self, *, manager: Any = None, key: Optional[str] = None,
               names: Optional[Iterable[str]] = None, labels: Any = None,
               states: Optional[Iterable[str]] = None, jobs: int = 1,
               attempts: int = 3, progress: _Progress = None,
               journal_dir: Optional[str] = None,
               loader: Optional[Callable[[], Any]] = None) -> RunReport:
        """See ``ITenants.evolve``."""
        _check_jobs(jobs)
        _check_attempts(attempts)
        resolved, key = self._manager(manager, key)
        given = manager if manager is not None else (
            self._schema_manager_name or resolved)
        if jobs > 1:
            given = importable_name(given, 'schema manager') \
                if isinstance(given, str) else _manager_name(given)
        records = self.select(names=names, labels=labels, states=states)
        task = _gen.EvolveTask(given, key, attempts)
        return self._run_task(task, records, run_id=new_run_id(),
                              jobs=jobs, progress=progress,
                              journal_dir=journal_dir,
                              what=f"evolve {key} to generation"
                                   f" {resolved.generation}",
                              loader=loader)

    def generation(self, group: Any, name: str, *, key: Optional[str] = None
                   ) -> Optional[int]:
        """See ``ITenants.generation``."""
        key = key or self.generations_key
        if key is None:
            self._manager(None, None)   # NotConfigured
        return _gen.generation_of(group.root(name), key)

    def check_generation(self, group: Any, name: str, *,
                         minimum: Optional[int] = None) -> int:
        """See ``ITenants.check_generation``."""
        manager, key = self._manager(None, None)
        return _gen.check(group.root(name), manager, key, name, minimum)


def _manager_name(manager):
    # A manager object, for worker processes: its dotted name when it is
    # a module-level object (looked up in its module).
    import sys
    for modname, module in list(sys.modules.items()):
        if module is None or modname == '__main__':
            continue
        for attr, value in list(vars(module).items()):
            if value is manager:
                return f"{modname}:{attr}"
    raise InvalidInput('schema manager', manager,
                       "jobs > 1 imports it in worker processes: give its"
                       " dotted name ('package.module:obj')")


def _label_filter(labels):
    """labels as (key, value) pairs; value '' matches any value."""
    if labels is None:
        return []
    if isinstance(labels, str):
        labels = [labels]
    if isinstance(labels, Mapping):
        pairs = list(labels.items())
    else:
        pairs = [parse_label(x) if isinstance(x, str) else tuple(x)
                 for x in labels]
    return [(str(k), str(v or '')) for k, v in pairs]


def _check_jobs(jobs):
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise InvalidInput('jobs', jobs, "expected a number of worker"
                                         " processes, at least 1")


def _check_attempts(attempts):
    if not isinstance(attempts, int) or isinstance(attempts, bool) or \
            attempts < 1:
        raise InvalidInput('attempts', attempts, "expected at least 1")


def _bar(progress, total, what):
    """(a tqdm bar to close or None, a callable(n) or None)."""
    if callable(progress) and not isinstance(progress, bool):
        return None, progress
    if not progress:
        return None, None
    import sys
    from tqdm import tqdm
    bar = tqdm(total=total, desc=what, unit='tenant', file=sys.stderr,
               dynamic_ncols=True)
    return bar, bar.update


# -- worker processes ---------------------------------------------------------

def _watch_parent(parent):
    # A worker outlives no parent (killed: SIGKILL leaves no time to tell
    # the workers): it would hold its tenants' storages, and a resumed
    # run could not open them.
    while True:
        time.sleep(0.1)
        if os.getppid() != parent:
            os._exit(1)


def _worker_main(tasks, results, task, db_kwargs, parent, loader=None):
    """A worker process: tenants come in chunks of (name, storage
    factory), or (name, record) with a loader; each is declared in a
    collection of the worker's own, run, and closed again.  Outcomes go
    back a chunk at a time."""
    _die_with_parent()
    threading.Thread(target=_watch_parent, args=(parent,),
                     daemon=True).start()
    from multidb.collection import Collection
    loaded = None
    if loader is not None:
        # Only its tenants' backend is used: nothing of it is opened
        # (its catalog may be a FileStorage the parent holds).
        loaded = loader()
        db_kwargs = loaded.tenants.db_kwargs
    coll = Collection()
    try:
        while True:
            chunk = tasks.get()
            if chunk is None:
                return
            outcomes = []
            for name, factory in chunk:
                if loaded is not None:
                    rec = factory
                    factory = loaded.tenants.backend_for(rec).factory(
                        rec.settings, name=name)
                coll.declare(name, factory, **db_kwargs)
                try:
                    outcomes.append(_run_one(task, coll, name))
                finally:
                    try:
                        coll.remove(name)
                    except Exception:
                        log.warning("closing tenant %r failed", name,
                                    exc_info=True)
            results.put(outcomes)
    finally:
        coll.close()
        if loaded is not None:
            loaded.close()


def _die_with_parent():
    # Linux: the kernel kills this process when its parent dies.
    try:
        import ctypes
        import signal
        libc = ctypes.CDLL('libc.so.6', use_errno=True)
        libc.prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except Exception:
        pass
