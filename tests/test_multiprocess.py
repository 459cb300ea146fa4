"""Two real processes share one catalog on PostgreSQL: they create, drop
and use tenants at the same time, and each sees the other's changes at its
next transaction boundary.

The processes move in step: at each barrier a worker writes ``AT step``
and waits for ``GO step`` on its stdin, which the test sends once both
workers are there.  So every expectation is exact: a worker reads the
other's tenants only once they exist, and drops its own only once the
other has read them.
"""
import json
import queue
import subprocess
import sys
import textwrap
import threading
import uuid

STEPS = ('start', 'created', 'seen', 'dropped')
TIMEOUT = 120   # seconds for any one step

WORKER = textwrap.dedent('''
    import json, sys
    import transaction
    import multidb
    from multidb.backends.relstorage import RelStorageBackend

    me, other, catalog_dsn, tenant_dsn, template, snaps = sys.argv[1:7]

    def barrier(step):
        print('AT', step, flush=True)
        line = sys.stdin.readline()
        if line.split() != ['GO', step]:
            sys.exit(f'barrier {step}: got {line!r}')

    def read(name):
        """name's root['by'] in a new transaction, or the error's type."""
        try:
            with c.transaction(tm) as g:
                return g.root(name).get('by')
        except Exception as e:
            return type(e).__name__

    backend = RelStorageBackend(tenant_dsn, template=template,
                                snapshot_dir=snaps, keep_history=False)
    c = multidb.Collection()
    c.declare('catalog', lambda: backend._open_relstorage(catalog_dsn))
    t = multidb.Tenants(c, catalog='catalog', backend=backend)
    tm = transaction.TransactionManager()
    out = {'created': [], 'exists': []}

    barrier('start')
    # 1. Both race to create the same names: exactly one wins each.
    for i in range(3):
        try:
            t.create(f'shared{i}')
            out['created'].append(f'shared{i}')
        except multidb.TenantExists:
            out['exists'].append(f'shared{i}')
    # 2. Each makes its own tenants and writes to them.
    for i in range(2):
        t.create(f'{me}{i}')
        with c.transaction(tm) as g:
            g.root(f'{me}{i}')['by'] = me
    barrier('created')
    # 3. The other's tenants exist: read them through groups (declared
    #    from the catalog on first use).
    out['seen_other'] = {f'{other}{i}': read(f'{other}{i}') for i in range(2)}
    barrier('seen')
    # 4. The other has read ours: drop one.
    t.drop(f'{me}0')
    barrier('dropped')
    # 5. Both drops are committed: each sees both at its next transaction
    #    (the other's tenant open in this process until now).
    out['after_drops'] = {name: read(name) for name in
                          (f'{other}0', f'{other}1', f'{me}0', f'{me}1')}
    out['declared'] = sorted(name for name in (f'{other}0', f'{me}0')
                             if name in c)
    out['final'] = sorted(r.name for r in t.list())
    c.close()
    print('RESULT', json.dumps(out), flush=True)
''')


def _reader(stream, lines):
    for line in stream:
        lines.put(line.rstrip('\n'))
    lines.put(None)


def test_two_processes_share_a_catalog(postgres, pg_db, tmp_path):
    prefix = 'mp' + uuid.uuid4().hex[:6] + '_'
    args = [postgres.dsn(pg_db), postgres.dsn(prefix + '{name}'),
            prefix + 'template', str(tmp_path / 'snaps')]
    # Make the template once, so both start on equal terms.
    from multidb.backends.relstorage import RelStorageBackend
    RelStorageBackend(args[1], template=args[2],
                      keep_history=False).ensure_template()
    procs, lines, errs = [], [], []
    try:
        for me, other in (('p', 'q'), ('q', 'p')):
            err = open(tmp_path / f'{me}.err', 'w+')
            errs.append(err)
            proc = subprocess.Popen(
                [sys.executable, '-c', WORKER, me, other] + args,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                text=True)
            procs.append(proc)
            lines.append(queue.Queue())
            threading.Thread(target=_reader, args=(proc.stdout, lines[-1]),
                             daemon=True).start()

        def next_line(i, kind):
            # The worker's next protocol line starting with kind.
            while True:
                try:
                    line = lines[i].get(timeout=TIMEOUT)
                except queue.Empty:
                    line = None
                if line is None:
                    procs[i].kill()
                    procs[i].wait()
                    errs[i].seek(0)
                    raise AssertionError(
                        f"worker {'pq'[i]} gave no {kind} line (exit code"
                        f" {procs[i].returncode}):\n{errs[i].read()}")
                if line.startswith(kind + ' '):
                    return line[len(kind) + 1:]

        for step in STEPS:
            for i in range(2):
                assert next_line(i, 'AT') == step
            for proc in procs:
                proc.stdin.write(f'GO {step}\n')
                proc.stdin.flush()
        results = [json.loads(next_line(i, 'RESULT')) for i in range(2)]
        for i, proc in enumerate(procs):
            if proc.wait(TIMEOUT) != 0:
                errs[i].seek(0)
                raise AssertionError(errs[i].read())
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for err in errs:
            err.close()
        dbs = {r[0] for r in postgres.sql('SELECT datname FROM pg_database')}
        left = sorted(d[len(prefix):] for d in dbs if d.startswith(prefix)
                      and d != prefix + 'template')
        for d in dbs:
            if d.startswith(prefix):
                postgres.sql(f'DROP DATABASE "{d}" WITH (FORCE)')
    p_out, q_out = results
    for i in range(3):   # each shared name created exactly once
        name = f'shared{i}'
        assert (name in p_out['created']) != (name in q_out['created'])
        assert (name in p_out['exists']) != (name in q_out['exists'])
    assert p_out['seen_other'] == {'q0': 'q', 'q1': 'q'}
    assert q_out['seen_other'] == {'p0': 'p', 'p1': 'p'}
    gone = 'UnknownDatabase'
    assert p_out['after_drops'] == {'q0': gone, 'q1': 'q', 'p0': gone,
                                    'p1': 'p'}
    assert q_out['after_drops'] == {'p0': gone, 'p1': 'p', 'q0': gone,
                                    'q1': 'q'}
    assert p_out['declared'] == q_out['declared'] == []
    expected = ['p1', 'q1', 'shared0', 'shared1', 'shared2']
    assert p_out['final'] == expected
    assert q_out['final'] == expected
    assert left == expected
