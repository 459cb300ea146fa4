"""Tenants created, dropped and used by several threads at once, on real
FileStorage files."""
import collections
import os
import random
import threading
import time

import pytest
import transaction

import multidb
from helpers import fs_tenants

NAMES = [f't{i}' for i in range(5)]
# What the loser of a race may get, per operation.
ALLOWED = {
    'create': {'TenantExists'},
    'drop': {'NoSuchTenant', 'DatabaseInUse'},   # in use by a reader
    'use': {'UnknownDatabase'},                  # no such tenant (now)
}


def _makeOne(tmp_path):
    c, t = fs_tenants(tmp_path)
    # The catalog's tree exists before the threads race for it.
    t.list()
    return c, t


def _hammer(c, t, *, threads, ops, seconds, use=False):
    """Run create/drop (and with use, short reads) from threads; return
    (per-name log of successful operations in order, error counts,
    unexpected errors)."""
    log = collections.defaultdict(list)
    errors = collections.Counter()
    unexpected = []
    lock = threading.Lock()
    left = [ops]
    deadline = time.monotonic() + seconds

    def worker(seed):
        rng = random.Random(seed)
        tm = transaction.TransactionManager()
        while time.monotonic() < deadline:
            with lock:
                if not left[0]:
                    return
                left[0] -= 1
            name = rng.choice(NAMES)
            op = rng.choice(['create', 'drop'] + ['use'] * use)
            try:
                if op == 'create':
                    t.create(name, init=lambda root: root.update(v=name))
                    with lock:
                        log[name].append('create')
                elif op == 'drop':
                    t.drop(name)
                    with lock:
                        log[name].append('drop')
                else:
                    with c.transaction(tm) as g:
                        if 'v' not in g.root(name):
                            # A tenant still being created (see
                            # test_tenant_hidden_until_created).
                            with lock:
                                errors[op, 'uncommitted'] += 1
                        time.sleep(0.001)
            except Exception as e:
                with lock:
                    errors[op, type(e).__name__] += 1
                if type(e).__name__ not in ALLOWED[op]:
                    unexpected.append((op, name, repr(e)))

    workers = [threading.Thread(target=worker, args=(i,))
               for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(seconds + 30)
    assert not any(w.is_alive() for w in workers), "a worker hangs"
    return log, errors, unexpected


def _check_agreement(tmp_path, c, t, log):
    listed = {r.name for r in t.list()}
    on_disk = {n for n in NAMES
               if os.path.exists(tmp_path / 'tenants' / f'{n}.fs')}
    for name in NAMES:
        ops = log.get(name, [])
        # Serialized per name: successes alternate, starting with create.
        assert ops == ['create', 'drop'] * (len(ops) // 2) + \
            ['create'] * (len(ops) % 2), (name, ops)
        created = len(ops) % 2 == 1
        assert (name in listed) == created, (name, ops)
        assert (name in on_disk) == created, (name, ops)
        if created:
            with c.transaction() as g:
                assert g.root(name)['v'] == name
    return listed


def _check_fresh(tmp_path, listed):
    # A fresh process (collection) sees the same, and nothing to repair.
    c, t = _makeOne(tmp_path)
    try:
        assert {r.name for r in t.list()} == listed
        assert t.repair() == []
    finally:
        c.close()


def test_create_drop_same_names_from_threads(tmp_path):
    c, t = _makeOne(tmp_path)
    try:
        log, errors, unexpected = _hammer(c, t, threads=8, ops=400,
                                          seconds=10)
        assert unexpected == []
        # The race was real: both kinds of loser were seen.
        assert errors['create', 'TenantExists'] > 0
        assert errors['drop', 'NoSuchTenant'] > 0
        assert sum(len(v) for v in log.values()) > 20
        listed = _check_agreement(tmp_path, c, t, log)
        # Declared in the collection exactly when listed.
        assert {n for n in NAMES if n in c} == listed
    finally:
        c.close()
    _check_fresh(tmp_path, listed)


def test_create_drop_while_threads_use_them(tmp_path):
    c, t = _makeOne(tmp_path)
    try:
        log, errors, unexpected = _hammer(c, t, threads=8, ops=400,
                                          seconds=10, use=True)
        assert unexpected == []
        assert errors['create', 'TenantExists'] > 0
        assert errors['drop', 'NoSuchTenant'] > 0
        print(dict(errors))
        listed = _check_agreement(tmp_path, c, t, log)
        # A read may have left a name declared (resolved from the
        # catalog) only if its tenant exists.
        assert {n for n in NAMES if n in c} <= listed
    finally:
        c.close()
    _check_fresh(tmp_path, listed)


def test_drop_while_group_uses_other_tenants(tmp_path):
    c, t = _makeOne(tmp_path)
    try:
        for name in ['a', 'b', 'gone']:
            t.create(name, init=lambda root: root.update(n=0))
        tm = transaction.TransactionManager()
        g = c.group(tm)
        try:
            tm.begin()
            g.root('a')['n'] = 1
            g.root('b')['n'] = 1
            # Dropped from another thread while the group is mid-transaction.
            done = []
            th = threading.Thread(target=lambda: done.append(t.drop('gone')))
            th.start()
            th.join(30)
            assert done and done[0].name == 'gone'
            assert 'gone' not in c
            tm.commit()
            # And the group goes on with the next transaction.
            tm.begin()
            g.root('a')['n'] = 2
            tm.commit()
        finally:
            g.close()
        with c.transaction() as g:
            assert (g.root('a')['n'], g.root('b')['n']) == (2, 1)
        assert [r.name for r in t.list()] == ['a', 'b']
        assert not os.path.exists(tmp_path / 'tenants' / 'gone.fs')
    finally:
        c.close()


def test_drop_of_tenant_in_use_is_refused_and_changes_nothing(tmp_path):
    c, t = _makeOne(tmp_path)
    try:
        t.create('a', init=lambda root: root.update(n=0))
        t.create('b', init=lambda root: root.update(n=0))
        tm = transaction.TransactionManager()
        g = c.group(tm)
        try:
            tm.begin()
            g.root('a')['n'] = 1
            g.root('b')['n'] = 1
            errors = []

            def drop():
                try:
                    t.drop('b')
                except multidb.DatabaseInUse as e:
                    errors.append(e)
            th = threading.Thread(target=drop)
            th.start()
            th.join(30)
            assert [e.name for e in errors] == ['b']
            tm.commit()
        finally:
            g.close()
        assert [r.name for r in t.list()] == ['a', 'b']
        with c.transaction() as g:
            assert (g.root('a')['n'], g.root('b')['n']) == (1, 1)
        t.drop('b')
        assert [r.name for r in t.list()] == ['a']
    finally:
        c.close()


def test_tenant_hidden_until_created(tmp_path):
    c, t = _makeOne(tmp_path)
    try:
        started, go = threading.Event(), threading.Event()

        def init(root):
            started.set()
            go.wait(10)
            root['v'] = 1

        th = threading.Thread(target=lambda: t.create('slow', init=init))
        th.start()
        try:
            assert started.wait(10)
            with pytest.raises((multidb.UnknownDatabase,
                                multidb.NoSuchTenant)):
                with c.transaction(transaction.TransactionManager()) as g:
                    g.root('slow')
        finally:
            go.set()
            th.join(30)
        assert t.get('slow').name == 'slow'
    finally:
        c.close()
