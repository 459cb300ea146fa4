"""Crash safety of the tenant lifecycle: real processes killed with SIGKILL.

Each operation runs in a subprocess that kills itself at one of the
``MULTIDB_CRASH_AT`` steps (or is killed by this process at a random
moment); the parent then reopens the same folder and checks what the
lifecycle promises (``multidb.interfaces.ITenants``): the tenant is in its
old state or its new one, every listed tenant opens and holds its committed
data, ``repair()`` deletes every leftover it reports and then finds nothing,
and the operation, retried, does what it should.
"""
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
from ZODB import DB
from ZODB.FileStorage import FileStorage

import multidb
from helpers import fs_tenants
from helpers import repair_while_paused
from helpers import root_dict
from helpers import update_root

# The top of every subprocess script: the same collection the parent opens.
PRELUDE = '''\
import functools, sys, multidb
from ZODB.FileStorage import FileStorage
folder = sys.argv[1]
args = sys.argv[2:]
c = multidb.Collection()
c.declare('catalog', functools.partial(FileStorage, folder + '/catalog.fs'))
t = multidb.Tenants(c, catalog='catalog',
                    backend=multidb.FileStorageBackend(folder + '/tenants/{name}.fs'))
'''

OPERATIONS = {
    'create': "t.create('fresh', init=lambda root: root.update(v='init'))",
    'clone': "t.clone('acme', 'fresh')",
    'drop': "t.drop('acme')",
    'snapshot': "t.snapshot('acme', 'crash')",
    'revert': "t.revert('acme', args[0])",
    # The archive is the test's own, unsigned: trusted explicitly.
    'restore': "t.restore(args[1], 'fresh', trust_unsigned=True)",
    'restore-replace': "t.restore(args[1], 'acme', replace=True,"
                       " trust_unsigned=True)",
}

# (operation, crash step, the state the tenant must be in afterwards).
# The catalog's commit decides: before it the old state, after it the new
# one; revert and restore over an existing tenant replace the data after a
# "before" snapshot is committed, so a crash once the data is in place
# leaves the new data.
MATRIX = [
    ('create', 'create.declared', 'old'),
    ('create', 'create.storage-made', 'old'),
    ('create', 'catalog.tpc_finish', 'old'),
    ('create', 'create.committed', 'new'),
    ('clone', 'clone.copied', 'old'),
    ('clone', 'clone.loaded', 'old'),
    ('clone', 'catalog.tpc_finish', 'old'),
    ('drop', 'drop.closed', 'old'),
    ('drop', 'catalog.tpc_finish', 'old'),
    ('drop', 'drop.committed', 'new'),
    ('snapshot', 'snapshot.written', 'old'),
    ('snapshot', 'catalog.tpc_finish', 'old'),
    ('revert', 'snapshot.written', 'old'),
    ('revert', 'catalog.tpc_finish', 'old'),
    ('revert', 'revert.copied', 'old'),
    ('revert', 'revert.loaded', 'new'),
    ('restore', 'restore.extracted', 'old'),
    ('restore', 'restore.loaded', 'old'),
    ('restore', 'catalog.tpc_finish', 'old'),
    ('restore-replace', 'restore.extracted', 'old'),
    ('restore-replace', 'snapshot.written', 'old'),
    ('restore-replace', 'catalog.tpc_finish', 'old'),
    ('restore-replace', 'restore.loaded', 'new'),
]

TENANT_FILE = re.compile(r'([a-z][a-z0-9_-]*)\.fs(\..+)?\Z')


_open = fs_tenants


_root = root_dict
_set = update_root


def _file_root(path):
    """The root of a FileStorage file (a snapshot), read-only."""
    db = DB(FileStorage(path, read_only=True))
    try:
        with db.transaction() as conn:
            return dict(conn.root())
    finally:
        db.close()


def _run(folder, code, step=None, *args):
    env = dict(os.environ)
    env.pop('MULTIDB_CRASH_AT', None)
    if step is not None:
        env['MULTIDB_CRASH_AT'] = step
    return subprocess.run(
        [sys.executable, '-c', PRELUDE + code, str(folder), *args],
        env=env, capture_output=True, text=True, timeout=60)


def _prepare(folder, opener=None):
    """keep (a marker nobody touches), acme (v=2, one snapshot at v=1,
    label who=old) and an archive of a tenant with v='archived'."""
    c, t = (opener or _open)(folder)
    try:
        t.create('keep', init=lambda root: root.update(marker='keep-1'))
        t.create('acme', labels={'who': 'old'},
                 init=lambda root: root.update(v=1))
        sid = t.snapshot('acme', 'at v=1')
        _set(c, 'acme', v=2)
        t.create('proto', labels={'who': 'archive'},
                 init=lambda root: root.update(v='archived'))
        archive = str(folder / 'proto.multidb')
        t.archive('proto', archive)
        t.drop('proto')
    finally:
        c.close()
    return sid, archive


# -- the states, per operation ----------------------------------------------

def _absent(c, t, name):
    assert name not in [r.name for r in t.list()]
    with pytest.raises(multidb.NoSuchTenant):
        t.get(name)
    return 'old'


def _state_fresh(value):
    # A new tenant 'fresh' holding v=value, or none.
    def state(c, t, sid):
        if 'fresh' not in t:
            return _absent(c, t, 'fresh')
        assert _root(c, 'fresh')['v'] == value
        return 'new'
    return state


def _state_acme_snapshots(c, t, sid):
    snaps = t.snapshots('acme')
    assert snaps[0].id == sid
    assert _root(c, 'acme')['v'] == 2
    if len(snaps) == 1:
        return 'old'
    assert [s.label for s in snaps[1:]] == ['crash']
    return 'new'


def _state_revert(c, t, sid):
    v = _root(c, 'acme')['v']
    assert v in (1, 2)
    labels = [s.label for s in t.snapshots('acme')]
    if v == 2:
        # Maybe with the "before" snapshot already recorded: a snapshot
        # is a complete operation of its own.
        assert labels in (['at v=1'], ['at v=1', f'before revert to {sid}'])
        return 'old'
    assert labels == ['at v=1', f'before revert to {sid}']
    return 'new'


def _state_drop(c, t, sid):
    if 'acme' not in t:
        _absent(c, t, 'acme')
        return 'new'
    assert _root(c, 'acme')['v'] == 2
    assert [s.id for s in t.snapshots('acme')] == [sid]
    return 'old'


def _state_restore_replace(c, t, sid):
    rec = t.get('acme')
    v = _root(c, 'acme')['v']
    if v == 2:
        assert rec.labels == {'who': 'old'}
        return 'old'
    assert v == 'archived'
    # Replacing restores data only: the tenant keeps its own record.
    assert rec.labels == {'who': 'old'}
    # The replaced data stays recoverable.
    labels = [s.label for s in rec.snapshots]
    assert labels[0] == 'at v=1' and 'before restore' in labels, labels
    return 'new'


STATES = {
    'create': _state_fresh('init'),
    'clone': _state_fresh(2),
    'drop': _state_drop,
    'snapshot': _state_acme_snapshots,
    'revert': _state_revert,
    'restore': _state_fresh('archived'),
    'restore-replace': _state_restore_replace,
}

# What retrying the operation does in the new state (in the old state it
# must simply succeed).
RETRY_IN_NEW_STATE = {
    'create': multidb.TenantExists,
    'clone': multidb.TenantExists,
    'drop': multidb.NoSuchTenant,
    'restore': multidb.TenantExists,
}


def check_invariants(folder, markers=None, opener=None):
    """What must hold after any crash; returns the repair findings.

    markers: {name: (key, value)} of committed data that must be there;
    opener(folder) -> (collection, tenants), by default _open.
    """
    markers = markers or {}
    c, t = (opener or _open)(folder)
    try:
        records = {r.name: r for r in t.list()}
        for name, (key, value) in markers.items():
            assert name in records, f"committed tenant {name!r} lost"
            assert _root(c, name).get(key) == value, (
                f"committed data of {name!r} lost")
        backend = t.backend
        for name, rec in records.items():
            # Opening a missing FileStorage would make an empty one: look
            # at the disk first.
            assert backend.exists(rec.settings), (
                f"tenant {name!r} is listed but has no storage")
            assert _root(c, name), f"tenant {name!r} has an empty root"
            for s in rec.snapshots:
                path = backend.snapshot_path(rec.settings, s.id)
                assert os.path.exists(path), f"snapshot {s.id} is missing"
                assert _file_root(path), f"snapshot {s.id} is empty"

        findings = t.repair()
        for f in findings:
            assert f['kind'] in ('leftover', 'stray snapshot',
                                 'temporary file'), f
            assert f['action'] == 'deleted', f
            assert not os.path.exists(f['path']), f
        assert t.repair() == []

        # Nothing on disk but the listed tenants' files.
        tenants_dir = folder / 'tenants'
        for entry in os.listdir(tenants_dir):
            m = TENANT_FILE.match(entry)
            assert m and m.group(1) in records, (
                f"{entry} is left in {tenants_dir}")
        for dirpath, dirs, files in os.walk(tenants_dir):
            for f in files:
                assert not f.endswith('.multidb-tmp'), (dirpath, f)
        # The listed tenants still open after the repair.
        for name in records:
            assert _root(c, name)
    finally:
        c.close()
    return findings


def _id(entry):
    op, step, _ = getattr(entry, 'values', entry)
    return f'{op}-{step}'


@pytest.mark.slow
@pytest.mark.parametrize('op, step, expected', MATRIX,
                         ids=[_id(e) for e in MATRIX])
def test_kill_at_step(tmp_path, op, step, expected):
    sid, archive = _prepare(tmp_path)
    proc = _run(tmp_path, OPERATIONS[op], step, sid, archive)
    assert proc.returncode == -signal.SIGKILL, (
        f"did not die at {step}: rc={proc.returncode}\n{proc.stderr}")

    c, t = _open(tmp_path)
    try:
        state = STATES[op](c, t, sid)
    finally:
        c.close()
    assert state == expected
    check_invariants(tmp_path, {'keep': ('marker', 'keep-1')})

    # Retry, in a fresh process as a job runner would.
    proc = _run(tmp_path, OPERATIONS[op], None, sid, archive)
    c, t = _open(tmp_path)
    try:
        if state == 'new' and op in RETRY_IN_NEW_STATE:
            assert proc.returncode == 1
            assert RETRY_IN_NEW_STATE[op].__name__ in proc.stderr
        else:
            assert proc.returncode == 0, proc.stderr
        if op == 'revert':
            assert _root(c, 'acme')['v'] == 1
        elif op == 'snapshot':
            assert [s.label for s in t.snapshots('acme')][-1] == 'crash'
        else:
            assert STATES[op](c, t, sid) == 'new'
    finally:
        c.close()
    check_invariants(tmp_path, {'keep': ('marker', 'keep-1')})


@pytest.mark.parametrize('op', sorted(OPERATIONS))
def test_no_crash_without_the_variable(tmp_path, op):
    # The matrix's baseline: the operation runs to the end in a fresh
    # process and reaches its new state, leaving nothing to repair.
    sid, archive = _prepare(tmp_path)
    proc = _run(tmp_path, OPERATIONS[op], None, sid, archive)
    assert proc.returncode == 0, proc.stderr
    c, t = _open(tmp_path)
    try:
        assert STATES[op](c, t, sid) == 'new'
    finally:
        c.close()
    assert check_invariants(tmp_path, {'keep': ('marker', 'keep-1')}) == []


# -- killed from outside at random moments ----------------------------------

LOOP = '''
import random, multidb
rng = random.Random(int(args[0]))
names = ['a', 'b', 'c']
print('ready', flush=True)
while True:
    op = rng.choice(['create', 'create', 'clone', 'drop', 'snapshot',
                     'revert', 'write'])
    n = rng.choice(names)
    try:
        if op == 'create':
            t.create(n, init=lambda root: root.update(v=n))
        elif op == 'clone':
            t.clone(rng.choice(names), n)
        elif op == 'drop':
            t.drop(n)
        elif op == 'snapshot':
            t.snapshot(rng.choice(names + ['keep']))
        elif op == 'revert':
            snaps = t.snapshots(n)
            if snaps:
                t.revert(n, rng.choice(snaps).id)
        else:
            with c.transaction() as g:
                root = g.root('keep')
                root['count'] += 1
                count = root['count']
            # One write of the whole line: with PYTHONUNBUFFERED, print
            # writes its parts apart, and a kill between them left 'keep '.
            sys.stdout.write(f'keep {count}\\n')
            sys.stdout.flush()
    except (multidb.TenantExists, multidb.NoSuchTenant):
        pass
'''


@pytest.mark.slow
@pytest.mark.parametrize('seed', [1, 2, 3])
def test_killed_at_random_moments(tmp_path, seed):
    rng = random.Random(seed)
    c, t = _open(tmp_path)
    t.create('keep', init=lambda root: root.update(count=0))
    c.close()
    env = dict(os.environ)
    env.pop('MULTIDB_CRASH_AT', None)
    deadline = time.monotonic() + 12
    kills = 0
    count = 0
    while kills < 4 and time.monotonic() < deadline:
        proc = subprocess.Popen(
            [sys.executable, '-c', PRELUDE + LOOP, str(tmp_path),
             str(rng.randrange(1 << 30))],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        try:
            assert proc.stdout.readline() == 'ready\n', proc.stderr.read()
            time.sleep(rng.uniform(0.05, 0.6))
            proc.send_signal(signal.SIGKILL)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        # Still looping when killed: an error would have ended it earlier.
        assert proc.returncode == -signal.SIGKILL, err
        kills += 1
        written = [int(line.split()[1]) for line in out.splitlines()
                   if line.startswith('keep ')]
        if written:
            count = written[-1]
        c, t = _open(tmp_path)
        try:
            # Committed writes stay; at most the one in flight is extra.
            assert _root(c, 'keep')['count'] in (count, count + 1)
            count = _root(c, 'keep')['count']
            for rec in t.list():
                if rec.name != 'keep':
                    assert 'v' in _root(c, rec.name), rec.name
        finally:
            c.close()
        check_invariants(tmp_path, {'keep': ('count', count)})
    assert kills >= 2


def test_repair_deletes_companions_without_data_file(tmp_path):
    # What a kill inside drop's file deletion (or while FileStorage saves
    # its index on close) leaves: files of a tenant whose data file is gone.
    sid, archive = _prepare(tmp_path)
    tenants = tmp_path / 'tenants'
    (tenants / 'gone.fs.index.index_tmp').write_bytes(b'x')
    (tenants / 'gone.fs.lock').write_bytes(b'')
    (tenants / 'gone.fs.snapshots').mkdir()
    (tenants / 'gone.fs.snapshots' / 'x.fs').write_bytes(b'x')
    # A listed tenant's stale index save goes with the tenant.
    (tenants / 'acme.fs.index.index_tmp').write_bytes(b'x')
    c, t = _open(tmp_path)
    try:
        t.drop('acme')
    finally:
        c.close()
    findings = check_invariants(tmp_path, {'keep': ('marker', 'keep-1')})
    assert [(f['kind'], f['name']) for f in findings] == [
        ('leftover', 'gone')]
    assert {TENANT_FILE.match(f).group(1) for f in os.listdir(tenants)} \
        == {'keep'}


# -- repair racing an operation of another process ----------------------------
# The operation stops (MULTIDB_PAUSE_AT) where what it made is on disk and
# its record not committed yet; a repair runs meanwhile in another process.
# The repair must take the name's lock, as the operation holds it, and so
# wait: what the operation made is then recorded, and kept.

# Two processes share the tenants' folder and a catalog on ZEO.
SHARED = '''\
import sys, multidb
from ZEO.ClientStorage import ClientStorage
folder, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
args = sys.argv[4:]
c = multidb.Collection()
c.declare('catalog', lambda: ClientStorage((host, port), storage='catalog',
                                           wait_timeout=30))
t = multidb.Tenants(c, catalog='catalog',
                    backend=multidb.FileStorageBackend(folder + '/tenants/{name}.fs'))
'''

REPAIR = '''
import json
print(json.dumps(t.repair()), flush=True)
c.close()
'''

RACES = [
    ('create', 'create.storage-made'),
    ('clone', 'clone.loaded'),
    ('restore', 'restore.loaded'),
    ('snapshot', 'snapshot.written'),
    ('revert', 'revert.copied'),
]


def _shared_opener(server):
    def opener(folder):
        from ZEO.ClientStorage import ClientStorage
        c = multidb.Collection()
        c.declare('catalog', lambda: ClientStorage(
            server.address, storage='catalog', wait_timeout=30))
        t = multidb.Tenants(c, catalog='catalog',
                            backend=multidb.FileStorageBackend(
                                str(folder / 'tenants' / '{name}.fs')))
        return c, t
    return opener


@pytest.mark.parametrize('op, step', RACES, ids=[f'{o}-{s}' for o, s in RACES])
def test_repair_waits_for_an_operation_of_another_process(
        tmp_path, zeo_server, op, step):
    opener = _shared_opener(zeo_server)
    sid, archive = _prepare(tmp_path, opener)
    host, port = zeo_server.address
    where = [str(tmp_path), host, str(port)]
    env = dict(os.environ, MULTIDB_PAUSE_AT=step)
    env.pop('MULTIDB_CRASH_AT', None)
    worker = subprocess.Popen(
        [sys.executable, '-c', SHARED + OPERATIONS[op], *where, sid,
         archive], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    env.pop('MULTIDB_PAUSE_AT')
    findings = repair_while_paused(
        worker, step, [sys.executable, '-c', SHARED + REPAIR, *where], env)
    # Nothing of the operation was deleted by the repair.
    for finding in findings:
        assert finding['action'] != 'deleted', finding
    c, t = opener(tmp_path)
    try:
        if op == 'revert':
            assert _root(c, 'acme')['v'] == 1
        else:
            assert STATES[op](c, t, sid) == 'new'
    finally:
        c.close()
    assert check_invariants(tmp_path, {'keep': ('marker', 'keep-1')},
                            opener) == []
