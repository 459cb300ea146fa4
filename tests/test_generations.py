"""Data generations of tenants (zope.generations' schema managers):
Tenants.evolve, use_generations, check_generation, ``multidb evolve``.

The application is a real package written to a temporary folder:
``genapp`` with a zope.generations ``SchemaManager`` at generation 3 and
its modules ``install``, ``evolve1`` .. ``evolve3``; ``evolve2`` fails
for a tenant whose root says so.
"""
import json
import sys
import textwrap

import pytest
from persistent.mapping import PersistentMapping

from helpers import fs_tenants
from helpers import root_dict
from helpers import run_cli
from helpers import tenants_config
from multidb.errors import InvalidInput
from multidb.errors import NotConfigured
from multidb.errors import TenantBehind

_STEP = """
def evolve(context):
    '''Evolver {n}'''
    root = context.connection.root()
    if {n} == 2 and root.get('bad'):
        raise ValueError('tenant ' + context.name + ' cannot take step 2')
    root['steps'] = root.get('steps', ()) + ({n},)
"""


@pytest.fixture(scope='module')
def genapp(tmp_path_factory):
    """The importable package genapp (its folder on sys.path, which
    worker processes inherit)."""
    folder = tmp_path_factory.mktemp('app')
    pkg = folder / 'genapp'
    pkg.mkdir()
    (pkg / '__init__.py').write_text(textwrap.dedent("""
        from zope.generations.generations import SchemaManager
        manager = SchemaManager(minimum_generation=2, generation=3,
                                package_name='genapp')
        not_a_manager = object()
    """))
    (pkg / 'install.py').write_text(
        "def evolve(context):\n"
        "    context.connection.root()['installed'] = True\n")
    for n in (1, 2, 3):
        (pkg / f'evolve{n}.py').write_text(_STEP.format(n=n))
    sys.path.insert(0, str(folder))
    import genapp
    yield genapp
    sys.path.remove(str(folder))


def _make(folder, count, bad=()):
    c, t = fs_tenants(folder)
    for i in range(count):
        name = f't{i:03d}'
        t.create(name, init=lambda root, name=name: root.update(
            bad=name in bad))
    return c, t


@pytest.fixture
def old_tenants(tmp_path, genapp):
    """Six tenants made before the application declared its manager (at
    generation 0); t002 fails at step 2."""
    c, t = _make(tmp_path, 6, bad={'t002'})
    yield t
    c.close()


def _generations(t):
    with t.collection.transaction() as g:
        return {r.name: t.generation(g, r.name, key='genapp')
                for r in t.list()}


def _steps(t):
    with t.collection.transaction() as g:
        return {r.name: g.root(r.name).get('steps', ()) for r in t.list()}


@pytest.mark.parametrize('jobs', [1, 2])
def test_evolve_from_0_to_3_with_a_step_failing_for_one_tenant(
        old_tenants, genapp, tmp_path, jobs):
    manager = genapp.manager if jobs == 1 else 'genapp:manager'
    report = old_tenants.evolve(manager=manager, jobs=jobs,
                                journal_dir=tmp_path / 'runs')
    assert set(report.failed) == {'t002'}
    assert report.failed['t002'] == {
        'type': 'builtins.ValueError',
        'message': 'tenant t002 cannot take step 2'}
    assert report.details['t002'] == {'from': 0, 'generation': 1,
                                      'target': 3}
    assert report.details['t000'] == {'from': 0, 'generation': 3,
                                      'target': 3}
    # The failing tenant stopped at the last good generation.
    assert _generations(old_tenants) == {
        't000': 3, 't001': 3, 't002': 1, 't003': 3, 't004': 3, 't005': 3}
    assert _steps(old_tenants)['t002'] == (1,)
    assert _steps(old_tenants)['t000'] == (1, 2, 3)

    # Fixed, it goes on from there; the others are not evolved again.
    with old_tenants.collection.transaction() as g:
        g.root('t002')['bad'] = False
    again = old_tenants.evolve(manager=manager, jobs=jobs,
                               journal_dir=tmp_path / 'runs')
    assert again.ok and sorted(again.done) == [f't{i:03d}' for i in range(6)]
    assert again.details['t002'] == {'from': 1, 'generation': 3,
                                     'target': 3}
    assert again.details['t000'] == {'from': 3, 'generation': 3,
                                     'target': 3}
    assert set(_steps(old_tenants).values()) == {(1, 2, 3)}


def test_each_step_is_a_transaction_of_its_own(old_tenants, genapp,
                                               tmp_path):
    old_tenants.evolve(manager=genapp.manager, names=['t000'],
                       journal_dir=tmp_path / 'runs')
    path = old_tenants.get('t000').settings['path']
    old_tenants.collection.remove('t000')   # closed, to read its file
    from ZODB.FileStorage import FileStorage
    fs = FileStorage(path, read_only=True)
    try:
        notes = [t.description for t in fs.iterator()]
    finally:
        fs.close()
    assert notes[-3:] == [b't000/genapp: evolving to generation 1',
                          b't000/genapp: evolving to generation 2',
                          b't000/genapp: evolving to generation 3']


def test_the_layout_is_zope_generations_own(old_tenants, genapp, tmp_path):
    from zope.generations.generations import generations_key
    old_tenants.evolve(manager=genapp.manager, names=['t000'],
                       journal_dir=tmp_path / 'runs')
    root = root_dict(old_tenants, 't000')
    assert isinstance(root[generations_key], PersistentMapping)
    assert dict(root[generations_key]) == {'genapp': 3}


def test_a_new_tenant_starts_at_the_current_generation(tmp_path, genapp):
    c, t = fs_tenants(tmp_path, init=lambda root: root.update(app=1))
    try:
        t.use_generations('genapp:manager')
        t.create('fresh')
        root = root_dict(t, 'fresh')
        # The configured init ran, then the manager's install.
        assert (root['app'], root['installed']) == (1, True)
        with t.collection.transaction() as g:
            assert t.check_generation(g, 'fresh') == 3
        report = t.evolve(journal_dir=tmp_path / 'runs')
        assert report.details['fresh'] == {'from': 3, 'generation': 3,
                                           'target': 3}
        assert 'steps' not in root_dict(t, 'fresh')
        # Declaring it again does not stack the stamping.
        t.use_generations(genapp.manager)
        from multidb.tenants.generations import StampingInit
        assert not isinstance(t.init.init, StampingInit)
    finally:
        c.close()


def test_check_generation_refuses_a_tenant_behind(old_tenants, genapp,
                                                  tmp_path):
    old_tenants.use_generations(genapp.manager)
    old_tenants.evolve(names=['t001'], journal_dir=tmp_path / 'runs')
    with old_tenants.collection.transaction() as g:
        assert old_tenants.check_generation(g, 't001') == 3
        with pytest.raises(TenantBehind) as info:
            old_tenants.check_generation(g, 't000')
        assert old_tenants.check_generation(g, 't000', minimum=0) == 0
    assert str(info.value) == (
        "tenant 't000' is at generation 0 of 'genapp', older than the"
        " minimum 2: evolve it first ('multidb evolve')")
    assert isinstance(info.value, RuntimeError)


def test_without_a_manager(old_tenants):
    with pytest.raises(NotConfigured, match='no schema manager'):
        old_tenants.evolve()
    with old_tenants.collection.transaction() as g:
        with pytest.raises(NotConfigured):
            old_tenants.check_generation(g, 't000')


@pytest.mark.parametrize('manager, error', [
    ('genapp:not_a_manager', "it has no 'generation'"),
    ('genapp:nosuch', 'cannot import it'),
])
def test_bad_manager_is_refused(old_tenants, manager, error):
    with pytest.raises(InvalidInput, match=error):
        old_tenants.evolve(manager=manager)


def test_a_manager_object_must_be_importable_for_workers(old_tenants,
                                                         tmp_path):
    from zope.generations.generations import SchemaManager
    local = SchemaManager(0, 0)
    with pytest.raises(InvalidInput, match='worker processes'):
        old_tenants.evolve(manager=local, key='local', jobs=2,
                           journal_dir=tmp_path / 'runs')


# -- the command --------------------------------------------------------------

@pytest.fixture
def conf(tmp_path, data, monkeypatch, genapp):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('MULTIDB_RUN_DIR', str(tmp_path / 'runs'))
    (tmp_path / 'tenants.conf').write_text(tenants_config())
    c, t = _make(data, 3, bad={'t001'})
    c.close()
    return tmp_path / 'tenants.conf'


def test_cli_evolve(conf, capsys):
    code, out, err = run_cli(capsys, 'evolve', '--manager', 'genapp:manager',
                             config=conf)
    assert code == 1, err
    assert out.splitlines() == [
        'TENANT  STATUS  DETAIL',
        't000    done    generation 0 -> 3',
        't001    failed  ValueError: tenant t001 cannot take step 2 (left'
        ' at generation 1)',
        't002    done    generation 0 -> 3',
        out.splitlines()[-1]]
    assert out.splitlines()[-1].endswith(': 2 done, 0 skipped, 1 failed')
    code, out, err = run_cli(capsys, 'evolve', '--manager', 'genapp:manager',
                             't000', '--json', config=conf)
    assert code == 0, err
    assert json.loads(out)['details'] == {
        't000': {'from': 3, 'generation': 3, 'target': 3}}


def test_cli_list_shows_generations(conf, capsys):
    code, out, err = run_cli(capsys, 'evolve', '--manager', 'genapp:manager',
                             '-j', '2', config=conf)
    assert code == 1 and 'left at generation 1' in out, err
    code, out, err = run_cli(capsys, 'list', '--generations',
                             'genapp:manager', config=conf)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[-1] == 'GENERATION'
    assert [line.split()[-1] for line in lines[1:]] == ['3', '1', '3']


@pytest.mark.parametrize('argv, error', [
    (['--manager', 'nosuch:manager'], 'cannot import it'),
    (['--manager', 'genapp:not_a_manager'], "it has no 'generation'"),
    (['--manager', 'not a name'], "bad dotted name"),
    (['--manager', 'genapp:manager', '-j', '0'], 'at least 1'),
    (['--manager', 'genapp:manager', '--label', 'nolabel'], 'no tenant'),
    ([], 'the following arguments are required: --manager'),
])
def test_cli_evolve_bad_input_exits_2(conf, capsys, argv, error):
    code, out, err = run_cli(capsys, 'evolve', *argv, config=conf)
    assert code == 2, (out, err)
    assert error in err
