"""The multidb command's tenant subcommands."""
import datetime
import json
import os

import pytest

from multidb import cli
from multidb.cli import framework
from helpers import run_cli
from helpers import tenants_config
from helpers import tree

CONFIG = tenants_config('expire-action archive\n    archive-dir $data/archive')


@pytest.fixture
def conf(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'app.conf').write_text(CONFIG)
    return tmp_path / 'app.conf'


def _run(capsys, *argv, config='app.conf'):
    return run_cli(capsys, *argv, config=config)


def _json(capsys, *argv):
    code, out, err = _run(capsys, '--json', *argv)
    assert (code, err) == (0, ''), err
    return json.loads(out)


def _create(capsys, *names):
    for name in names:
        assert _run(capsys, 'create', name)[0] == 0


_tree = tree


# -- every subcommand ---------------------------------------------------------

def test_create_makes_missing_folders_and_lists(capsys, conf):
    code, out, err = _run(capsys, 'create', 'acme', '--label', 'plan=gold',
                          '--label', 'eu')
    assert (code, err) == (0, '')
    assert out.startswith("created tenant 'acme' at ")
    assert (conf.parent / 'data' / 'tenants' / 'acme.fs').exists()
    code, out, err = _run(capsys, 'list')
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == ['NAME', 'STATE', 'CREATED', 'EXPIRES',
                              'SNAPSHOTS', 'LABELS']
    assert row.split()[:2] == ['acme', 'active']
    assert row.split()[3:] == ['-', '0', 'eu,plan=gold']


def test_create_on_a_fresh_folder_loads_the_configuration_once(
        capsys, conf, monkeypatch):
    # The missing folders are found in one load (no re-parse per folder,
    # no reading of ZConfig's message text).
    from multidb import config as mc
    loads = []
    real = mc._load
    monkeypatch.setattr(mc, '_load',
                        lambda *a, **kw: loads.append(a) or real(*a, **kw))
    assert _run(capsys, 'create', 'acme')[:3:2] == (0, '')
    assert len(loads) == 1
    assert (conf.parent / 'data' / 'tenants' / 'acme.fs').exists()


def test_list_with_the_catalogs_folder_only(capsys, conf):
    # The tenants' folder is the backend's to make: a command that makes
    # no tenant works without it, and makes nothing.
    (conf.parent / 'data').mkdir()
    assert _run(capsys, 'list') == (0, 'no tenants\n', '')
    assert not (conf.parent / 'data' / 'tenants').exists()


def test_list_empty(capsys, conf):
    _create(capsys, 'acme')
    assert _run(capsys, 'drop', 'acme')[0] == 0
    assert _run(capsys, 'list')[1] == 'no tenants\n'
    assert _json(capsys, 'list') == []


def test_list_and_show_json_are_records(capsys, conf):
    _create(capsys, 'acme', 'globex')
    records = _json(capsys, 'list')
    assert [r['name'] for r in records] == ['acme', 'globex']
    assert set(records[0]) >= {'name', 'state', 'created', 'modified',
                               'expires', 'labels', 'snapshots', 'settings'}
    shown = _json(capsys, 'show', 'globex')
    assert shown == records[1]
    assert shown['settings']['path'].endswith('/data/tenants/globex.fs')


def test_show_table(capsys, conf):
    _run(capsys, 'create', 'acme', '--label', 'k=v')
    code, out, err = _run(capsys, 'show', 'acme')
    assert code == 0
    assert out.splitlines()[0] == "tenant 'acme'"
    assert '  expires:   never' in out
    assert '  labels:    k=v' in out


@pytest.mark.parametrize('value, delta', [
    ('30d', datetime.timedelta(days=30)),
    ('12h', datetime.timedelta(hours=12)),
    ('90m', datetime.timedelta(minutes=90)),
    ('3600s', datetime.timedelta(seconds=3600)),
])
def test_create_expires_duration(capsys, conf, value, delta):
    before = datetime.datetime.now(datetime.timezone.utc)
    rec = _json(capsys, 'create', 'acme', '--expires', value)
    expires = datetime.datetime.fromisoformat(rec['expires'])
    assert before + delta <= expires <= before + delta + datetime.timedelta(
        seconds=30)


@pytest.mark.parametrize('value, expected', [
    ('2030-01-31', '2030-01-31T00:00:00+00:00'),
    ('2030-01-31T12:30', '2030-01-31T12:30:00+00:00'),
    ('2030-01-31T12:30:00+02:00', '2030-01-31T12:30:00+02:00'),
])
def test_create_expires_iso(capsys, conf, value, expected):
    rec = _json(capsys, 'create', 'acme', '--expires', value)
    assert datetime.datetime.fromisoformat(rec['expires']) == \
        datetime.datetime.fromisoformat(expected)


def test_create_exist_ok(capsys, conf):
    _create(capsys, 'acme')
    code, out, err = _run(capsys, 'create', 'acme', '--exist-ok',
                          '--label', 'x')
    assert (code, err) == (0, '')
    assert 'exists already' in out
    assert _json(capsys, 'show', 'acme')['labels'] == {}


def test_clone(capsys, conf):
    _run(capsys, 'create', 'acme', '--label', 'plan=gold')
    rec = _json(capsys, 'clone', 'acme', 'globex')
    assert (rec['name'], rec['labels']) == ('globex', {'plan': 'gold'})
    code, out, err = _run(capsys, 'clone', 'acme', 'initech',
                          '--label', 'plan=free')
    assert code == 0 and out.startswith("cloned tenant 'acme' to 'initech'")
    assert _json(capsys, 'show', 'initech')['labels'] == {'plan': 'free'}


def test_drop(capsys, conf):
    _create(capsys, 'acme')
    code, out, err = _run(capsys, 'drop', 'acme')
    assert (code, out, err) == (0, "dropped tenant 'acme'\n", '')
    assert not (conf.parent / 'data' / 'tenants' / 'acme.fs').exists()
    assert _run(capsys, 'show', 'acme')[0] == 1


def test_drop_archive_to_then_restore(capsys, conf):
    _create(capsys, 'acme')
    result = _json(capsys, 'drop', 'acme', '--archive-to', 'a.multidb')
    assert result['dropped'] == 'acme'
    assert result['archive'] == str(conf.parent / 'a.multidb')
    assert result['record']['name'] == 'acme'
    rec = _json(capsys, 'restore', 'a.multidb', '--trust-unsigned')
    assert rec['name'] == 'acme'


def test_drop_archive_to_existing_file_drops_nothing(capsys, conf):
    _create(capsys, 'acme')
    (conf.parent / 'a.multidb').write_text('keep')
    code, out, err = _run(capsys, 'drop', 'acme', '--archive-to',
                          'a.multidb')
    assert code == 1
    assert 'already exists' in err
    assert (conf.parent / 'a.multidb').read_text() == 'keep'
    assert _json(capsys, 'show', 'acme')['name'] == 'acme'


def test_snapshot_snapshots_revert(capsys, conf):
    _create(capsys, 'acme')
    snap = _json(capsys, 'snapshot', 'acme', '--label', 'v1')
    assert (snap['tenant'], snap['label']) == ('acme', 'v1')
    assert snap['size'] > 0
    code, out, err = _run(capsys, 'snapshot', 'acme')
    assert code == 0 and out.startswith('snapshot ')
    snaps = _json(capsys, 'snapshots', 'acme')
    assert [s['label'] for s in snaps] == ['v1', None]
    assert snaps[0]['id'] == snap['id']
    code, out, err = _run(capsys, 'snapshots', 'acme')
    assert out.splitlines()[0].split() == ['ID', 'CREATED', 'SIZE', 'LABEL']
    assert len(out.splitlines()) == 3
    result = _json(capsys, 'revert', 'acme', snap['id'])
    assert result['reverted_to'] == snap['id']
    ids = [s['id'] for s in _json(capsys, 'snapshots', 'acme')]
    assert result['before'] == ids[-1]
    code, out, err = _run(capsys, 'revert', 'acme', result['before'])
    assert code == 0 and "undo with: multidb revert acme " in out


def test_snapshots_none(capsys, conf):
    _create(capsys, 'acme')
    assert _run(capsys, 'snapshots', 'acme')[1] == \
        "tenant 'acme' has no snapshots\n"


def test_archive_and_restore_under_another_name(capsys, conf):
    _run(capsys, 'create', 'acme', '--label', 'plan=gold')
    result = _json(capsys, 'archive', 'acme', 'acme.multidb')
    assert result['archive'] == str(conf.parent / 'acme.multidb')
    assert result['size'] == os.path.getsize('acme.multidb')
    code, out, err = _run(capsys, 'restore', 'acme.multidb', 'acme2',
                          '--trust-unsigned')
    assert (code, err) == (0, '')
    assert out == "restored tenant 'acme2' from acme.multidb\n"
    assert _json(capsys, 'show', 'acme2')['labels'] == {'plan': 'gold'}


def test_restore_replace(capsys, conf):
    _create(capsys, 'acme')
    assert _run(capsys, 'archive', 'acme', 'a.multidb')[0] == 0
    assert _run(capsys, 'restore', 'a.multidb', '--trust-unsigned')[0] == 1
    rec = _json(capsys, 'restore', 'a.multidb', '--replace',
                '--trust-unsigned')
    assert [s['label'] for s in rec['snapshots']] == ['before restore']


def test_restore_into_a_fresh_folder_makes_it(capsys, conf, tmp_path):
    _create(capsys, 'acme')
    assert _run(capsys, 'archive', 'acme', 'a.multidb')[0] == 0
    other = tmp_path / 'other'
    other.mkdir()
    (other / 'app.conf').write_text(CONFIG)
    os.chdir(other)
    rec = _json(capsys, 'restore', str(tmp_path / 'a.multidb'),
                '--trust-unsigned')
    assert rec['settings']['path'] == str(other / 'data/tenants/acme.fs')


def test_expire(capsys, conf):
    _run(capsys, 'create', 'acme', '--expires', '2030-01-01')
    _create(capsys, 'globex')
    code, out, err = _run(capsys, 'expire')
    assert (code, err) == (0, '')
    assert out.startswith('no tenant expired by ')
    done = _json(capsys, 'expire', '--now', '2030-01-02')
    assert [(d['name'], d['action']) for d in done] == [('acme', 'archive')]
    assert os.path.exists(done[0]['archive'])
    assert [r['name'] for r in _json(capsys, 'list')] == ['globex']


def test_expire_table(capsys, conf):
    _run(capsys, 'create', 'acme', '--expires', '1s')
    code, out, err = _run(capsys, 'expire', '--now', '2999-01-01T00:00Z')
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == ['NAME', 'ACTION', 'DETAIL']
    assert row.split()[:2] == ['acme', 'archive']


def test_repair(capsys, conf):
    _create(capsys, 'acme')
    tenants = conf.parent / 'data' / 'tenants'
    # As a crashed create leaves it: a data file carrying a tenant id
    # that no record has.
    (tenants / 'ghost.fs').write_bytes((tenants / 'acme.fs').read_bytes())
    (tenants / 'ghost.fs.multidb-id').write_text(
        json.dumps({'multidb': 'tenant', 'id': 'f' * 32}))
    found = _json(capsys, 'repair', '--dry-run')
    assert [(f['kind'], f['name'], f['action']) for f in found] == [
        ('leftover', 'ghost', 'would delete')]
    assert (tenants / 'ghost.fs').exists()
    code, out, err = _run(capsys, 'repair')
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == ['FOUND', 'TENANT', 'PATH', 'ACTION']
    assert row.split() == ['leftover', 'ghost', str(tenants / 'ghost.fs'),
                           'deleted']
    assert not (tenants / 'ghost.fs').exists()
    assert _run(capsys, 'repair')[1] == 'nothing to repair\n'
    assert _json(capsys, 'repair') == []


def test_repair_keeps_a_file_without_tenant_id(capsys, conf):
    _create(capsys, 'acme')
    tenants = conf.parent / 'data' / 'tenants'
    (tenants / 'copy.fs').write_bytes((tenants / 'acme.fs').read_bytes())
    for argv in (('repair', '--dry-run'), ('repair',)):
        assert [(f['kind'], f['name'], f['action'])
                for f in _json(capsys, *argv)] == [
            ('unidentified storage', 'copy',
             "kept (no tenant id: not provably multidb's)")]
    assert (tenants / 'copy.fs').exists()


# -- failures: exit codes, one line, nothing touched --------------------------

def _assert_one_line(err):
    assert err.startswith('multidb: error: ')
    assert err.count('\n') == 1
    assert 'Traceback' not in err


@pytest.mark.parametrize('argv, fragment', [
    (('show', 'nosuch'), "no tenant 'nosuch' in the catalog"),
    (('drop', 'nosuch'), "no tenant 'nosuch' in the catalog"),
    (('snapshot', 'nosuch'), "no tenant 'nosuch'"),
    (('snapshots', 'nosuch'), "no tenant 'nosuch'"),
    (('archive', 'nosuch', 'x.multidb'), "no tenant 'nosuch'"),
    (('clone', 'nosuch', 'other'), "no tenant 'nosuch'"),
    (('revert', 'acme', 'nosuch'), "tenant 'acme' has no snapshot 'nosuch'"),
    (('create', 'acme'), "tenant 'acme' already exists"),
    (('clone', 'acme', 'acme'), "tenant 'acme' already exists"),
    (('restore', 'nofile.multidb', 'other'), 'nofile.multidb'),
])
def test_operation_failures_exit_1(capsys, conf, argv, fragment):
    _create(capsys, 'acme')
    before = _tree(conf.parent)
    code, out, err = _run(capsys, *argv)
    assert (code, out) == (1, '')
    _assert_one_line(err)
    assert fragment in err
    assert _tree(conf.parent) == before


@pytest.mark.parametrize('damage', ['truncate', 'flip', 'garbage'])
def test_corrupt_archive_exits_1_and_restores_nothing(capsys, conf, damage):
    _create(capsys, 'acme')
    assert _run(capsys, 'archive', 'acme', 'a.multidb')[0] == 0
    data = bytearray((conf.parent / 'a.multidb').read_bytes())
    if damage == 'truncate':
        data = data[:len(data) - 10]
    elif damage == 'flip':
        data[len(data) // 2] ^= 0xff
    else:
        data = b'not an archive at all'
    (conf.parent / 'bad.multidb').write_bytes(bytes(data))
    before = _tree(conf.parent)
    code, out, err = _run(capsys, 'restore', 'bad.multidb', 'acme2',
                          '--trust-unsigned')
    assert (code, out) == (1, '')
    _assert_one_line(err)
    assert "archive 'bad.multidb' is unusable" in err
    assert _tree(conf.parent) == before
    assert _run(capsys, 'show', 'acme2')[0] == 1


HOSTILE = ['../etc', 'a/b', 'a\\b', '', ' acme', 'acme;drop', 'Acme',
           'a\x00b', 'аcme', 'x' * 64, '-acme', "a'b", 'con']


@pytest.mark.parametrize('name', HOSTILE)
@pytest.mark.parametrize('command', ['create', 'show', 'drop'])
def test_hostile_names_exit_2_touch_nothing(capsys, tmp_path, monkeypatch,
                                            command, name):
    # No data folder at all: not even create's folders are made.
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'app.conf').write_text(CONFIG)
    code, out, err = _run(capsys, command, '--', name)
    assert (code, out) == (2, '')
    _assert_one_line(err)
    assert f'invalid database name {name!r}' in err
    assert _tree(tmp_path) == ['app.conf']


def test_reserved_name_exits_2(capsys, conf):
    code, out, err = _run(capsys, 'create', 'catalog')
    assert code == 2
    _assert_one_line(err)
    assert "invalid database name 'catalog': reserved" in err


@pytest.mark.parametrize('argv, fragment', [
    (('create', 'acme', '--expires', '3x'), "bad duration '3x'"),
    (('create', 'acme', '--expires', '0d'),
     "bad duration '0d': a duration must be positive"),
    (('create', 'acme', '--expires', '3600'), "bad duration '3600'"),
    (('create', 'acme', '--expires', '10y'), "bad duration '10y'"),
    (('create', 'acme', '--expires', 'tomorrow'), "bad expiry 'tomorrow'"),
    (('create', 'acme', '--expires', '2030-13-01'),
     "bad time '2030-13-01': month must be in 1..12"),
    (('create', 'acme', '--expires', '99999999999d'), 'too long'),
    (('create', 'acme', '--label', '=x'), "bad label '=x'"),
    (('create', 'acme', '--label', 'a b=x'), "bad label 'a b=x'"),
    (('create', 'acme', '--label', 'k=a\nb'), 'control character'),
    (('create', 'acme', '--label', 'k=1', '--label', 'k=2'),
     "label 'k' is given twice"),
    (('expire', '--now', 'soon'), "bad time 'soon'"),
    (('create',), 'required: NAME'),
    (('restore',), 'required: FILE'),
    (('frobnicate',), "invalid choice: 'frobnicate'"),
    (('list', '--bogus'), 'unrecognized arguments: --bogus'),
])
def test_bad_arguments_exit_2_touch_nothing(capsys, tmp_path, monkeypatch,
                                            argv, fragment):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'app.conf').write_text(CONFIG)
    code, out, err = _run(capsys, *argv)
    assert (code, out) == (2, '')
    _assert_one_line(err)
    assert fragment in err
    assert _tree(tmp_path) == ['app.conf']


def test_missing_config_exits_2(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(capsys, 'list', config=None)
    assert code == 2
    _assert_one_line(err)
    assert 'give -C FILE' in err
    code, out, err = _run(capsys, 'list', config=tmp_path / 'nope.conf')
    assert code == 2
    _assert_one_line(err)
    assert 'no such configuration file' in err
    assert _tree(tmp_path) == []


def test_missing_data_folder_exits_2_for_list(capsys, tmp_path, monkeypatch):
    # Only the commands that make tenants make folders.
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'app.conf').write_text(CONFIG)
    code, out, err = _run(capsys, 'list')
    assert code == 2
    _assert_one_line(err)
    assert './data/catalog.fs does not exist' in err
    assert _tree(tmp_path) == ['app.conf']


def test_config_without_tenants_exits_2(capsys, tmp_path):
    path = tmp_path / 'plain.conf'
    path.write_text('<zodb main>\n  <mappingstorage/>\n</zodb>\n')
    for argv in (('list',), ('create', 'acme'), ('repair',)):
        code, out, err = _run(capsys, *argv, config=path)
        assert (code, out) == (2, '')
        _assert_one_line(err)
        assert 'has no tenants: configure a <tenants> section' in err


def test_debug_prints_the_traceback(capsys, conf):
    _create(capsys, 'acme')
    code, out, err = _run(capsys, '--debug', 'show', 'nosuch')
    assert code == 1
    assert err.startswith('Traceback (most recent call last):')
    assert 'multidb.errors.NoSuchTenant' in err
    assert err.splitlines()[-1] == \
        "multidb: error: no tenant 'nosuch' in the catalog"


def test_collection_is_closed_on_failure(capsys, conf, monkeypatch):
    closed = []
    real = cli.load_collection

    def spy(args, **kw):
        c = real(args, **kw)
        orig = c.close
        c.close = lambda: (closed.append(True), orig())
        return c
    # Where the commands look it up (cli re-exports it).
    monkeypatch.setattr(framework, 'load_collection', spy)
    _create(capsys, 'acme')
    assert _run(capsys, 'show', 'nosuch')[0] == 1
    assert _run(capsys, 'create', 'acme')[0] == 1
    assert _run(capsys, 'list')[0] == 0
    assert closed == [True] * 4


# -- progress -----------------------------------------------------------------

@pytest.mark.parametrize('argv, bar', [
    (('archive', 'acme', 'a.multidb'), 'archive acme'),
    (('clone', 'acme', 'globex'), 'clone acme'),
    (('snapshot', 'acme'), 'snapshot acme'),
    (('drop', 'acme', '--archive-to', 'a.multidb'), 'archive acme'),
])
def test_progress_forced_draws_on_stderr(capsys, conf, argv, bar):
    _create(capsys, 'acme')
    code, out, err = _run(capsys, '--progress', *argv)
    assert code == 0
    assert f'{bar}: 100%' in err
    assert '%' not in out


def test_progress_forced_after_the_command_restore_revert_expire(
        capsys, conf):
    _run(capsys, 'create', 'acme', '--expires', '1s')
    assert _run(capsys, 'archive', 'acme', 'a.multidb')[0] == 0
    sid = _json(capsys, 'snapshot', 'acme')['id']
    code, out, err = _run(capsys, 'revert', 'acme', sid, '--progress')
    assert code == 0 and 'revert acme' in err
    code, out, err = _run(capsys, 'restore', 'a.multidb', 'acme2',
                          '--progress', '--trust-unsigned')
    assert code == 0 and 'restore acme2' in err
    code, out, err = _run(capsys, 'expire', '--now', '2999-01-01',
                          '--progress')
    assert code == 0 and 'expire' in err and 'tenant' in err


def _size(n):
    # Sizes are printed as the progress bar prints them, by tqdm.
    from tqdm import tqdm
    return tqdm.format_sizeof(n, 'B', 1024)


def test_sizes_are_tqdm_s():
    from multidb.cli.output import _bytes
    assert [_bytes(n) for n in (None, 674, 1536, 10 * 2**20)] == [
        '-', '674B', '1.50kB', '10.0MB']


def test_progress_off_when_not_a_terminal_or_refused(capsys, conf):
    _create(capsys, 'acme')
    assert _run(capsys, 'archive', 'acme', 'a.multidb') == (
        0, f"archived tenant 'acme' to {conf.parent / 'a.multidb'}"
           f" ({_size(os.path.getsize('a.multidb'))})\n", '')
    code, out, err = _run(capsys, '--progress', '--no-progress',
                          'archive', 'acme', 'b.multidb')
    assert (code, err) == (0, '')


# -- the library's rules, on the command line ---------------------------------

@pytest.mark.parametrize('text', [
    'plan=gold', 'eu', 'k=', 'a.b/c:d-e_f=x y', 'k=a=b', 'x' * 63,
    'k=ü €', 'x' * 64, '=x', 'a b=x', '-k=v', 'ключ=v', 'k=a\nb',
    'k=a\tb', 'k=\x1b[31m', 'k=a\u200bb',
])
def test_python_and_the_command_take_the_same_labels(capsys, conf, text):
    import multidb
    from multidb.config import collectionFromFile
    (conf.parent / 'data' / 'tenants').mkdir(parents=True)
    key, _, value = text.partition('=')
    c = collectionFromFile(str(conf))
    try:
        c.tenants.create('py', labels={key: value})
        refused = None
    except multidb.InvalidInput as e:
        refused = str(e)
    finally:
        c.close()
    # (--label=TEXT: argparse would take '-k=v' for an option.)
    code, out, err = _run(capsys, 'create', 'cli', f'--label={text}')
    if refused is None:
        assert (code, err) == (0, '')
        assert _json(capsys, 'show', 'cli')['labels'] == \
            _json(capsys, 'show', 'py')['labels'] == {key: value}
    else:
        # The same error, naming the label; nothing made.
        assert refused.startswith('bad label ')
        assert (code, out) == (2, '')
        _assert_one_line(err)
        assert f"argument --label: {refused} (see" in err
        assert 'cli.fs' not in _tree(conf.parent)


def _promised_times():
    # The times the command's help and messages give as examples.
    import re
    from multidb.cli import make_parser
    from multidb.cli.arguments import _EXPIRES
    texts = [_EXPIRES[1]['help'], make_parser().format_help()]
    for bad in ('tomorrow', 'soon'):
        try:
            _EXPIRES[1]['type'](bad)
        except Exception as e:
            texts.append(str(e))
    found = set()
    for text in texts:
        found.update(re.findall(r'\d{4}-\d\d-\d\d(?:T[\d:]+Z?)?', text))
    return found


def test_the_documented_expiry_examples_parse(capsys, conf):
    promised = _promised_times()
    assert {'2030-01-31', '2030-01-31T12:00Z'} <= promised
    for i, when in enumerate(sorted(promised)):
        rec = _json(capsys, 'create', f't{i}', '--expires', when)
        expected = datetime.datetime.fromisoformat(
            when.replace('Z', '+00:00'))
        if expected.tzinfo is None:
            expected = expected.replace(tzinfo=datetime.timezone.utc)
        assert datetime.datetime.fromisoformat(rec['expires']) == expected


@pytest.mark.parametrize('value, expected', [
    ('2030-01-31T12:00Z', '2030-01-31T12:00:00+00:00'),
    ('2030-01-31T12:00+00:00', '2030-01-31T12:00:00+00:00'),
    ('2030-01-31T12:00-05:00', '2030-01-31T17:00:00+00:00'),
    ('2030-01-31 12:00:30Z', '2030-01-31T12:00:30+00:00'),
])
def test_create_expires_iso_with_a_time_zone(capsys, conf, value, expected):
    rec = _json(capsys, 'create', 'acme', '--expires', value)
    assert datetime.datetime.fromisoformat(rec['expires']) == \
        datetime.datetime.fromisoformat(expected)


def test_expire_now_takes_z(capsys, conf):
    _run(capsys, 'create', 'acme', '--expires', '2030-01-31T12:00Z')
    assert _json(capsys, 'expire', '--now', '2030-01-31T11:59Z') == []
    done = _json(capsys, 'expire', '--now', '2030-01-31T12:01Z')
    assert [d['name'] for d in done] == ['acme']


def test_python_takes_the_command_s_expiry_text(capsys, conf):
    from multidb.config import collectionFromFile
    _create(capsys, 'first')   # makes the data folders
    c = collectionFromFile(str(conf))
    try:
        rec = c.tenants.create('py', expires='2030-01-31T12:00Z')
        assert rec.expires == datetime.datetime(
            2030, 1, 31, 12, tzinfo=datetime.timezone.utc)
        rec = c.tenants.create('py2', expires='30d')
        assert rec.expires - rec.created == datetime.timedelta(days=30)
    finally:
        c.close()


@pytest.mark.parametrize('value', ['3s', '500ms', '2.5'])
def test_health_timeout_takes_durations(capsys, conf, value):
    from multidb.cli.arguments import _seconds
    assert _seconds(value) == {'3s': 3, '500ms': 0.5, '2.5': 2.5}[value]
