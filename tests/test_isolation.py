"""Tenant isolation: a commit storing a reference from one tenant's
database into another's is refused; references into the shared,
configured databases are not; check-references finds those stored
before.  (Plain ZODB stores any cross-database reference its databases
allow: every refusal here would be a commit on plain ZODB.)"""
import json
import weakref

import pytest
import transaction
from persistent.mapping import PersistentMapping
from ZODB.MappingStorage import MappingStorage
from ZODB.POSException import InvalidObjectReference
from persistent.wref import WeakRef

import multidb
from multidb.config import collectionFromFile
from multidb.errors import CrossTenantReference
from helpers import fs_tenants
from helpers import run_cli
from helpers import tenants_config


def _made(tmp_path, **kw):
    c, t = fs_tenants(tmp_path, **kw)
    c.declare('shared', MappingStorage)
    for name in ('a', 'b'):
        t.create(name)
    return c, t


def test_reference_into_another_tenant_is_refused(tmp_path):
    c, t = _made(tmp_path)
    try:
        with c.transaction() as g:
            g.root('b')['thing'] = PersistentMapping()
        tm = transaction.TransactionManager()
        with c.group(tm) as g:
            g.root('a')['other'] = g.root('b')['thing']
            with pytest.raises(CrossTenantReference) as info:
                tm.commit()
            tm.abort()
        e = info.value
        assert isinstance(e, InvalidObjectReference)
        assert (e.source, e.target) == ('a', 'b')
        assert "from tenant 'a' into tenant 'b'" in str(e)
        assert 'PersistentMapping' in str(e)
        # Nothing of it was stored.
        with c.transaction() as g:
            assert 'other' not in g.root('a')
    finally:
        c.close()


def test_new_object_holding_the_reference_is_refused_too(tmp_path):
    c, t = _made(tmp_path)
    try:
        tm = transaction.TransactionManager()
        with c.group(tm) as g:
            g.root('b')['thing'] = PersistentMapping()
            tm.commit()
            holder = PersistentMapping(x=g.root('b')['thing'])
            g.root('a')['holder'] = holder
            with pytest.raises(CrossTenantReference) as info:
                tm.commit()
            tm.abort()
        # The refused object is named (the new one holding the reference).
        assert info.value.obj.startswith(
            'the persistent.mapping.PersistentMapping object oid 0x')
    finally:
        c.close()


def test_weak_reference_into_another_tenant_is_refused(tmp_path):
    c, t = _made(tmp_path)
    try:
        tm = transaction.TransactionManager()
        with c.group(tm) as g:
            g.root('b')['thing'] = PersistentMapping()
            tm.commit()
            g.root('a')['weak'] = WeakRef(g.root('b')['thing'])
            with pytest.raises(CrossTenantReference):
                tm.commit()
            tm.abort()
    finally:
        c.close()


def test_references_into_shared_databases_are_allowed(tmp_path):
    c, t = _made(tmp_path)
    try:
        with c.transaction() as g:
            g.root('shared')['config'] = PersistentMapping(color='blue')
        with c.transaction() as g:
            g.root('a')['config'] = g.root('shared')['config']
            # And the other way: shared data naming a tenant's object.
            g.root('shared')['a-home'] = g.root('a')
        with c.transaction() as g:
            assert g.root('a')['config']['color'] == 'blue'
    finally:
        c.close()


def test_isolation_off_allows_them_and_check_finds_them(tmp_path):
    c, t = _made(tmp_path, isolation=False)
    try:
        with c.transaction() as g:
            g.root('b')['thing'] = PersistentMapping()
            g.root('b')['thing2'] = PersistentMapping()
        with c.transaction() as g:
            g.root('a')['other'] = g.root('b')['thing']
            g.root('a')['weak'] = WeakRef(g.root('b')['thing2'])
            g.root('a')['config'] = g.root('shared')  # allowed anyway
        found = list(t.check_references())
        assert found == [{'tenant': 'a', 'oid': '0x0',
                          'targets': ['b']}]
        assert list(t.check_references(['b'])) == []
        with pytest.raises(multidb.NoSuchTenant):
            list(t.check_references(['nope']))
    finally:
        c.close()


def test_check_references_command(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    conf = tmp_path / 'multidb.conf'
    conf.write_text(tenants_config(keys='isolation off'))
    code, out, err = run_cli(capsys, 'create', 'a', config=conf)
    assert code == 0, err
    code, out, err = run_cli(capsys, 'create', 'b', config=conf)
    assert code == 0, err
    code, out, err = run_cli(capsys, 'check-references', config=conf)
    assert (code, out.strip()) == (0, "no tenant refers to another tenant")
    c = collectionFromFile(str(conf))
    try:
        with c.transaction() as g:
            g.root('a')['b'] = g.root('b')
    finally:
        c.close()
    code, out, err = run_cli(capsys, 'check-references', config=conf)
    assert code == 1
    assert out.split('\n')[1].split() == ['a', '0x0', 'b']
    code, out, err = run_cli(capsys, '--json', 'check-references', 'b',
                             config=conf)
    assert (code, json.loads(out)) == (0, [])
    code, out, err = run_cli(capsys, 'check-references', 'Bad Name',
                             config=conf)
    assert code == 2 and 'Bad Name' in err
    # With isolation on (the default), the same commit is refused.
    conf.write_text(tenants_config())
    c = collectionFromFile(str(conf))
    try:
        with pytest.raises(CrossTenantReference):
            with c.transaction() as g:
                g.root('b')['a'] = g.root('a')
    finally:
        c.close()
