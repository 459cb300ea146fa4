"""The multidb command: global options, check-config, demo."""
import json
import os

import pytest
from ZODB.FileStorage import FileStorage

import multidb
from multidb import cli
from helpers import run_cli

CONFIG = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'config')
EXAMPLE = os.path.join(CONFIG, 'example.conf')
TENANTS = os.path.join(CONFIG, 'tenants.d')


_run = run_cli


def test_check_config_prints_the_table(capsys, data):
    code, out, err = _run(capsys, '-D', f'data={data}', '-C', EXAMPLE,
                          '-C', TENANTS, 'check-config')
    assert (code, err) == (0, '')
    assert '4 database(s) from 3 file(s); max-open 200' in out
    lines = out.splitlines()
    assert lines[2].split() == ['NAME', 'KIND', 'SOURCE']
    assert lines[3].split() == ['main', 'filestorage', f'{EXAMPLE}:12']
    assert lines[5].split() == [
        'acme', 'filestorage', f'{TENANTS}/acme.conf:3']
    assert f'tenants: filestorage at {EXAMPLE}:28' in out
    assert f'expire-action: archive to {data}/archive' in out
    assert os.listdir(data / 'tenants') == []


def test_check_config_json(capsys, data):
    code, out, err = _run(capsys, '--json', '-D', f'data={data}',
                          '-C', EXAMPLE, '-C', TENANTS, 'check-config')
    assert code == 0
    result = json.loads(out)
    assert [d['name'] for d in result['databases']] == [
        'main', 'catalog', 'acme', 'globex']
    assert result['databases'][3] == {
        'name': 'globex', 'kind': 'filestorage',
        'file': f'{TENANTS}/globex.conf', 'line': 2}
    assert result['tenants']['placeholders'] == ['filestorage path']
    assert result['tenants']['line'] == 28
    assert result['max_open'] == 200


def test_check_config_reads_the_collections_configuration(capsys, data,
                                                       monkeypatch):
    # One attribute, None for a collection built in code: the command
    # says so (exit 2) rather than fail on a missing attribute.
    from multidb.cli import collection_commands
    from multidb.config import Configuration
    from multidb.config import collectionFromFile
    c = collectionFromFile(EXAMPLE, defines={'data': str(data)})
    assert isinstance(c.configuration, Configuration)
    assert c.configuration.files == [EXAMPLE]
    assert list(c.configuration.sources) == ['main', 'catalog']
    assert c.configuration.tenant_template.catalog == 'catalog'
    assert c.configuration.zeo_wait_timeout == 5
    c.close()
    built = multidb.Collection()
    assert built.configuration is None
    monkeypatch.setattr(collection_commands, 'load_collection',
                        lambda args: built)
    code, out, err = _run(capsys, '-C', EXAMPLE, 'check-config')
    assert (code, out) == (2, '')
    assert 'not loaded from configuration files' in err
    assert 'configuration is None' in err


def test_global_options_after_the_command(capsys, data):
    code, out, err = _run(capsys, '-C', EXAMPLE, 'check-config',
                          '-C', TENANTS, '--json', '-D', f'data={data}')
    assert code == 0
    assert len(json.loads(out)['databases']) == 4


def test_check_config_bad_config_exits_2_naming_file_and_line(
        capsys, tmp_path):
    path = tmp_path / 'bad.conf'
    path.write_text('<zodb a>\n  <mappingstorage/>\n</zodb>\n'
                    '<zodb a>\n  <mappingstorage/>\n</zodb>\n')
    code, out, err = _run(capsys, '-C', str(path), 'check-config')
    assert (code, out) == (2, '')
    assert err.count('\n') == 1
    assert err.startswith('multidb: error: <zodb a> is declared twice:'
                          f' at {path}:1 and at {path}:4')
    assert 'Traceback' not in err


def test_debug_prints_the_traceback(capsys, tmp_path):
    path = tmp_path / 'bad.conf'
    path.write_text('<zodb a>\n  bogus 1\n</zodb>\n')
    code, out, err = _run(capsys, '--debug', '-C', str(path), 'check-config')
    assert code == 2
    assert 'Traceback' in err
    assert f"'bogus' is not a known key name (line 2 in {path.as_uri()})" \
        in err


def test_no_config_is_a_usage_error(capsys):
    code, out, err = _run(capsys, 'check-config')
    assert code == 2
    assert 'give -C FILE' in err


def test_missing_config_file(capsys, tmp_path):
    code, out, err = _run(capsys, '-C', str(tmp_path / 'x.conf'),
                          'check-config')
    assert code == 2
    assert 'no such configuration file' in err


def test_usage_errors_exit_2(capsys):
    assert _run(capsys, 'no-such-command')[0] == 2
    assert _run(capsys)[0] == 2
    assert _run(capsys, '-D', 'novalue', 'check-config')[0] == 2


def test_help_exits_0(capsys):
    code, out, err = _run(capsys, '--help')
    assert code == 0
    assert 'check-config' in out and 'demo' in out


def test_commands_are_registered_in_one_place():
    assert list(cli.COMMANDS) == [
        'check-config', 'health', 'demo', 'list', 'show', 'create', 'clone',
        'drop', 'snapshot', 'snapshots', 'revert', 'archive', 'restore',
        'expire', 'repair', 'relocate', 'check-references', 'run', 'evolve',
        'stats', 'pack', 'export-config', 'gc', 'servers', 'move']


def test_demo_persists_and_counts(capsys, tmp_path):
    d = tmp_path / 'demo'
    code, out, err = _run(capsys, 'demo', '--dir', str(d))
    assert (code, err) == (0, '')
    assert '(run 1)' in out and '1 customer(s)' in out
    code, out, err = _run(capsys, 'demo', '--dir', str(d))
    assert code == 0
    assert '(run 2)' in out
    assert "the previous run stored 'customer-1'" in out
    code, out, err = _run(capsys, '--json', 'demo', '--dir', str(d))
    result = json.loads(out)
    assert (result['run'], result['customers']) == (3, 3)
    assert result['previous_customer'] == 'customer-2'
    # The reference from main really points into customers.fs.
    with multidb.Collection() as c:
        for name in ('main', 'customers'):
            c.declare(name, lambda n=name: FileStorage(str(d / f'{n}.fs')))
        with c.transaction() as group:
            latest = group.root('main')['latest_customer']
            assert latest._p_jar.db().database_name == 'customers'
            assert latest['name'] == 'customer-3'


def test_demo_default_dir(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _run(capsys, 'demo')[0] == 0
    # Its own folder, not the example configuration's ./multidb-data.
    assert (tmp_path / 'multidb-demo' / 'main.fs').exists()
    assert not (tmp_path / 'multidb-data').exists()


def test_demo_failure_exits_1(capsys, tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('')
    code, out, err = _run(capsys, 'demo', '--dir', str(blocker))
    assert code == 1
    assert err.startswith('multidb: error: ')
