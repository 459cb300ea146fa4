"""Two real processes share one catalog on PostgreSQL: they create, drop
and use tenants at the same time, and each sees the other's changes at its
next transaction boundary."""
import json
import subprocess
import sys
import textwrap
import uuid

import pytest

WORKER = textwrap.dedent('''
    import json, sys, time
    import transaction
    import multidb
    from multidb.backends.relstorage import RelStorageBackend

    me, other, catalog_dsn, tenant_dsn, template, snaps = sys.argv[1:7]
    backend = RelStorageBackend(tenant_dsn, template=template,
                                snapshot_dir=snaps, keep_history=False)
    c = multidb.Collection()
    c.declare('catalog', lambda: backend._open_relstorage(catalog_dsn))
    t = multidb.Tenants(c, catalog='catalog', backend=backend)
    out = {'created': [], 'exists': [], 'seen_other': [], 'dropped': [],
           'gone_seen': []}

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
        with c.transaction() as g:
            g.root(f'{me}{i}')['by'] = me
    print('READY', flush=True)
    # 3. Wait for the other's tenants, reading them through groups
    #    (declared from the catalog on first use).
    tm = transaction.TransactionManager()
    deadline = time.monotonic() + 60
    while len(out['seen_other']) < 2 and time.monotonic() < deadline:
        for i in range(2):
            name = f'{other}{i}'
            if name in out['seen_other']:
                continue
            try:
                with c.transaction(tm) as g:
                    assert g.root(name)['by'] == other
                out['seen_other'].append(name)
            except (multidb.UnknownDatabase, KeyError):
                time.sleep(0.05)
    # 4. Drop one own tenant; wait until the other has seen it go.
    t.drop(f'{me}0')
    out['dropped'].append(f'{me}0')
    name = f'{other}0'
    while time.monotonic() < deadline:
        g = c.group(tm)
        try:
            tm.begin()
            g.get_connection(name)
        except multidb.UnknownDatabase:
            out['gone_seen'].append(name)
            break
        finally:
            tm.abort()
            g.close()
        time.sleep(0.05)
    out['final'] = sorted(r.name for r in t.list())
    c.close()
    print(json.dumps(out), flush=True)
''')


def test_two_processes_share_a_catalog(postgres, pg_db, tmp_path):
    prefix = 'mp' + uuid.uuid4().hex[:6] + '_'
    args = [postgres.dsn(pg_db), postgres.dsn(prefix + '{name}'),
            prefix + 'template', str(tmp_path / 'snaps')]
    # Make the template once, so both start on equal terms.
    from multidb.backends.relstorage import RelStorageBackend
    RelStorageBackend(args[1], template=args[2],
                      keep_history=False).ensure_template()
    procs = [subprocess.Popen([sys.executable, '-c', WORKER, me, other]
                              + args, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for me, other in (('p', 'q'), ('q', 'p'))]
    try:
        results = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            results.append(json.loads(out.splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    p_out, q_out = results
    for i in range(3):   # each shared name created exactly once
        name = f'shared{i}'
        assert (name in p_out['created']) != (name in q_out['created'])
        assert (name in p_out['exists']) != (name in q_out['exists'])
    assert sorted(p_out['seen_other']) == ['q0', 'q1']
    assert sorted(q_out['seen_other']) == ['p0', 'p1']
    assert p_out['gone_seen'] == ['q0'] and q_out['gone_seen'] == ['p0']
    expected = ['p1', 'q1', 'shared0', 'shared1', 'shared2']
    assert p_out['final'] == expected or q_out['final'] == expected
    dbs = {r[0] for r in postgres.sql('SELECT datname FROM pg_database')}
    assert sorted(d[len(prefix):] for d in dbs if d.startswith(prefix)
                  and d != prefix + 'template') == expected
    for d in dbs:
        if d.startswith(prefix):
            postgres.sql(f'DROP DATABASE "{d}" WITH (FORCE)')
