import pathlib
import shlex
import subprocess

import pytest

from multidb import cli

TOP = pathlib.Path(__file__).parent.parent


def _first_command(readme):
    return readme[readme.index('::') + 2:].strip().splitlines()[0]


def test_ci_runs_the_readme_test_command():
    readme = (TOP / 'README.rst').read_text()
    ci = (TOP / '.ci' / 'run').read_text()
    command = 'bash tests/run'
    assert command in readme and command in ci
    # The two commands come first: the main job, then the tests.
    assert 'multidb -C config/example.conf' in _first_command(readme)
    assert readme.index(command) < readme.index('What it is')


def test_the_tour_runs_twice_from_a_fresh_folder(tmp_path, monkeypatch,
                                                 capsys):
    # The main job, less its install: every `multidb` of the one line,
    # run in an empty folder (no mkdir), then again (it is rerunnable).
    line = _first_command((TOP / 'README.rst').read_text())
    steps = [shlex.split(part) for part in line.split('&&')]
    steps = [argv[1:] for argv in steps if argv[0].endswith('/multidb')]
    assert [argv[-1] for argv in steps] == ['plan=trial', 'acme', 'list']
    monkeypatch.chdir(tmp_path)
    for run in (1, 2):
        for argv in steps:
            argv = [str(TOP / a) if a.startswith('config/') else a
                    for a in argv]
            assert cli.main(argv) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        row = out.splitlines()[-1].split()
        assert (row[0], row[1], row[4]) == ('acme', 'active', str(run))
    assert (tmp_path / 'multidb-data' / 'tenants' / 'acme.fs').exists()


def test_setup_cfg_lists_every_package():
    # `pip install .` (the main job) ships only the packages listed.
    import configparser
    cfg = configparser.ConfigParser()
    cfg.read(TOP / 'setup.cfg')
    listed = set(cfg['options']['packages'].split())
    found = {'.'.join(p.parent.relative_to(TOP).parts)
             for p in (TOP / 'multidb').rglob('__init__.py')}
    assert listed == found


def test_the_demo_after_the_main_job_leaves_it_healthy(tmp_path):
    # The newcomer's path, with the real command in a fresh folder: the
    # README's main job, `multidb demo`, then `health` on the example.
    # The demo once wrote ./multidb-data/main.fs, the example's `main`,
    # with a reference to a database the example does not declare:
    # health then said `main` was unreachable (StateLoadError) and
    # printed a traceback.
    import subprocess
    import sys
    line = _first_command((TOP / 'README.rst').read_text())
    steps = [shlex.split(part) for part in line.split('&&')]
    steps = [argv[1:] for argv in steps if argv[0].endswith('/multidb')]
    example = ['-C', str(TOP / 'config' / 'example.conf')]
    for argv in steps + [['demo'], example + ['health']]:
        argv = [str(TOP / a) if a.startswith('config/') else a
                for a in argv]
        done = subprocess.run([sys.executable, '-m', 'multidb.cli'] + argv,
                              cwd=tmp_path, capture_output=True, text=True,
                              timeout=120)
        assert (done.returncode, done.stderr) == (0, ''), argv
    assert done.stdout.splitlines()[-1] == '2 of 2 database(s) reachable'
    # The demo's files are its own.
    assert sorted(p.name for p in (tmp_path / 'multidb-demo').iterdir()
                  if p.suffix == '.fs') == ['customers.fs', 'main.fs']
    assert not (tmp_path / 'multidb-data' / 'customers.fs').exists()


def _requirements(text):
    import re
    return {re.split(r'[\s<>=!~;\[]', line.strip(), maxsplit=1)[0].lower()
            for line in text.splitlines()
            if line.strip() and not line.strip().startswith('#')}


def test_setup_cfg_extras():
    # `pip install .` (the main job: FileStorage, the `multidb` command
    # and its progress bars) needs no extra; ZEO and PostgreSQL have
    # theirs, and the tests install every one.
    import configparser
    cfg = configparser.ConfigParser()
    cfg.read(TOP / 'setup.cfg')
    install = _requirements(cfg['options']['install_requires'])
    assert {'zodb', 'zconfig', 'zc.lockfile', 'tqdm'} <= install
    extras = cfg['options.extras_require']
    assert {'zeo', 'postgresql', 'test'} <= set(extras)
    zeo, postgresql, test = (_requirements(extras[name])
                             for name in ('zeo', 'postgresql', 'test'))
    assert zeo == {'zeo'}
    # The binary wheel: RelStorage's own [postgresql] builds psycopg2.
    assert postgresql == {'relstorage', 'psycopg2-binary'}
    assert 'relstorage[' not in extras['postgresql'].lower()
    assert zeo | postgresql | {'pytest'} <= test
    readme = (TOP / 'README.rst').read_text()
    assert "'.[zeo,postgresql]'" in readme


def test_module_level_imports_are_installed_by_the_main_job():
    # What the package imports when loaded comes with `pip install .`;
    # ZEO, RelStorage and psycopg2 are imported only where used.
    import ast
    import configparser
    import sys
    if not hasattr(sys, 'stdlib_module_names'):
        pytest.skip("Python 3.10 or later")
    cfg = configparser.ConfigParser()
    cfg.read(TOP / 'setup.cfg')
    install = _requirements(cfg['options']['install_requires'])
    distribution = {'zope': 'zope.interface', 'zc': 'zc.lockfile'}
    # Modules that only their extra's framework imports (Zope's folder
    # class needs Zope's base classes when it is defined): the package
    # and the integration's own module load without them.
    only_with_extra = {TOP / 'multidb' / 'zope' / 'folder.py': 'zope'}
    for path, extra in only_with_extra.items():
        assert 'Zope' in cfg['options.extras_require'][extra]
    code = ("import sys, multidb, multidb.zope;"
            " print('multidb.zope.folder' in sys.modules)")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == 'False'
    missing = set()
    for path in (TOP / 'multidb').rglob('*.py'):
        if path in only_with_extra:
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split('.')[0]
                if top in sys.stdlib_module_names or top == 'multidb':
                    continue
                if distribution.get(top, top).lower() not in install:
                    missing.add((path.name, name))
    assert not missing
