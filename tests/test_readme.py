import pathlib
import shlex

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
