"""multidb.inputs: one rule for each value callers give multidb."""
import ast
import datetime
import pathlib
import sys

import pytest
import ZConfig

import multidb
from multidb import datatypes
from multidb import inputs
from multidb.errors import InvalidInput

UTC = datetime.timezone.utc


# -- the module's floor -------------------------------------------------------

def test_imports_only_the_standard_library_and_the_lowest_floor():
    tree = ast.parse(pathlib.Path(inputs.__file__).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add(node.module)
    ours = {m for m in found if m.split('.')[0] == 'multidb'}
    assert ours <= {'multidb.errors', 'multidb.names'}
    stdlib = getattr(sys, 'stdlib_module_names', None)
    if stdlib is not None:
        assert {m.split('.')[0] for m in found - ours} <= stdlib


def test_times_are_parsed_without_fromisoformat():
    # datetime.fromisoformat takes no 'Z' before Python 3.11: times are
    # read the same on every Python version setup.cfg allows.
    tree = ast.parse(pathlib.Path(inputs.__file__).read_text())
    assert not [node for node in ast.walk(tree)
                if isinstance(node, ast.Attribute)
                and node.attr == 'fromisoformat']


# -- labels -------------------------------------------------------------------

@pytest.mark.parametrize('key, value', [
    ('plan', 'gold'), ('eu', ''), ('a', 'x y'), ('x' * 63, ''),
    ('A.b_c:d/e-f', 'ü €'), ('9lives', 'k=v'),
])
def test_good_labels(key, value):
    assert inputs.check_label(key, value) == (key, value)
    assert inputs.check_labels({key: value}) == {key: value}
    text = f"{key}={value}" if value else key
    assert inputs.parse_label(text) == (key, value)


@pytest.mark.parametrize('key, value, shown, reason', [
    ('', 'x', "'=x'", 'the key is 1 to 63'),
    ('a b', 'x', "'a b=x'", 'the key is 1 to 63'),
    ('x' * 64, '', repr('x' * 64), 'the key is 1 to 63'),
    ('-k', '', "'-k'", 'starting with a letter or digit'),
    ('ключ', 'v', "'ключ=v'", 'ASCII'),
    ('k=v', '', "'k=v'", 'the key is 1 to 63'),
    ('k', 'a\nb', "'k=a\\nb'", 'control character'),
    ('k', '\x1b[31m', "'k=\\x1b[31m'", 'control character'),
    ('k', 'a\u200bb', "'k=a\\u200bb'", 'control character'),
    (3, 'x', "(3, 'x')", 'strings'),
    ('k', 3, "('k', 3)", 'strings'),
])
def test_bad_labels_name_the_label(key, value, shown, reason):
    with pytest.raises(InvalidInput) as e:
        inputs.check_labels({key: value})
    assert str(e.value).startswith(f"bad label {shown}: ")
    assert reason in str(e.value)
    assert isinstance(e.value, ValueError) and e.value.kind == 'label'


def test_labels_forms():
    assert inputs.check_labels(None) == {}
    assert inputs.check_labels(['vip', 'eu']) == {'vip': '', 'eu': ''}
    labels = {'a': 'b'}
    checked = inputs.check_labels(labels)
    assert checked == labels and checked is not labels
    for bad in ('plan', b'plan', 3):
        with pytest.raises(TypeError, match='labels must be'):
            inputs.check_labels(bad)
    with pytest.raises(InvalidInput, match="bad label 'a b'"):
        inputs.check_labels(['ok', 'a b'])


def test_parse_label_splits_at_the_first_equals_sign():
    assert inputs.parse_label('k=a=b') == ('k', 'a=b')
    assert inputs.parse_label('k=') == ('k', '')
    with pytest.raises(InvalidInput, match="bad label '=x'"):
        inputs.parse_label('=x')


# -- durations ----------------------------------------------------------------

@pytest.mark.parametrize('text, seconds', [
    ('30', 30), ('1.5', 1.5), ('.5', 0.5), ('5s', 5), ('1.5s', 1.5),
    ('500ms', 0.5), ('2m', 120), ('12h', 43200), ('30d', 2592000),
    ('5S', 5), ('2M', 120), (' 5 s ', 5), ('3600s', 3600),
])
def test_durations(text, seconds):
    assert inputs.parse_duration(text) == seconds
    assert isinstance(inputs.parse_duration(text), float)


@pytest.mark.parametrize('text, reason', [
    ('soon', 'write a number'), ('5 days', 'write a number'),
    ('-1s', 'write a number'), ('3x', 'write a number'), ('', 'number'),
    ('1e3', 'write a number'), ('0', 'must be positive'),
    ('0s', 'must be positive'), ('0.0ms', 'must be positive'),
    ('99999999999d', 'too long'),
])
def test_bad_durations(text, reason):
    with pytest.raises(InvalidInput) as e:
        inputs.parse_duration(text)
    assert str(e.value).startswith(f"bad duration {text!r}: ")
    assert reason in str(e.value)


def test_duration_zero_and_unit():
    assert inputs.parse_duration('0', zero=True) == 0
    assert inputs.parse_duration('0s', zero=True) == 0
    with pytest.raises(InvalidInput, match='write a number'):
        inputs.parse_duration('-1', zero=True)
    assert inputs.parse_duration('30d', unit=True) == 30 * 86400
    with pytest.raises(InvalidInput,
                       match="bad duration '30': write a number and one"
                             " of s, m, h, d"):
        inputs.parse_duration('30', unit=True)
    with pytest.raises(TypeError):
        inputs.parse_duration(30)


@pytest.mark.parametrize('text', ['30', '5s', '2m', '1h', '1d', '5S'])
def test_one_datatype_takes_zconfig_time_interval_spellings(text):
    # What ZConfig's time-interval (open-timeout's datatype of old) took,
    # the one duration datatype takes, with the same value.
    import ZConfig.datatypes
    old = ZConfig.datatypes.stock_datatypes['time-interval'](text)
    assert datatypes.duration(text) == old


@pytest.mark.parametrize('text, seconds', [
    ('5s', 5), ('1.5s', 1.5), ('500ms', 0.5), ('1m', 60), ('0', 0),
])
def test_one_datatype_takes_the_old_seconds_spellings(text, seconds):
    assert datatypes.duration(text) == seconds


def test_the_duration_keys_share_one_datatype():
    import multidb.config as mc
    c = mc.collectionFromString(
        '<multidb>\n  open-timeout 1.5s\n  zeo-wait-timeout 2m\n'
        '</multidb>\n')
    try:
        assert c.open_timeout == 1.5
        assert c.configuration.zeo_wait_timeout == 120
    finally:
        c.close()
    root = pathlib.Path(multidb.__file__).parent
    text = (root / 'multidb.xml').read_text() + (
        root / 'tenants.xml').read_text()
    for key in ('open-timeout', 'zeo-wait-timeout',
                'catalog-poll-interval'):
        start = text.index(f'<key name="{key}"')
        assert text[start:text.index('>', start)].count(
            'datatype=".duration"') == 1, key
    assert 'time-interval' not in text and '.seconds' not in text


# -- times --------------------------------------------------------------------

@pytest.mark.parametrize('text, expected', [
    ('2030-01-31', datetime.datetime(2030, 1, 31, tzinfo=UTC)),
    ('2030-01-31T12:00Z', datetime.datetime(2030, 1, 31, 12, tzinfo=UTC)),
    ('2030-01-31T12:00z', datetime.datetime(2030, 1, 31, 12, tzinfo=UTC)),
    ('2030-01-31T12:00', datetime.datetime(2030, 1, 31, 12, tzinfo=UTC)),
    ('2030-01-31T12:00+00:00',
     datetime.datetime(2030, 1, 31, 12, tzinfo=UTC)),
    ('2030-01-31 12:30:15', datetime.datetime(2030, 1, 31, 12, 30, 15,
                                              tzinfo=UTC)),
    ('2030-01-31T12Z', datetime.datetime(2030, 1, 31, 12, tzinfo=UTC)),
    ('2030-01-31T12:30:00+02:00', datetime.datetime(
        2030, 1, 31, 10, 30, tzinfo=UTC)),
    ('2030-01-31T12:30-0530', datetime.datetime(
        2030, 1, 31, 18, 0, tzinfo=UTC)),
    ('2030-01-31T12:30:00.25Z', datetime.datetime(
        2030, 1, 31, 12, 30, 0, 250000, tzinfo=UTC)),
    ('2030-01-31T12:30:00.1234567Z', datetime.datetime(
        2030, 1, 31, 12, 30, 0, 123456, tzinfo=UTC)),
    (' 2030-01-31 ', datetime.datetime(2030, 1, 31, tzinfo=UTC)),
])
def test_times(text, expected):
    when = inputs.parse_time(text)
    assert when == expected and when.tzinfo is not None


def test_time_keeps_its_offset():
    when = inputs.parse_time('2030-01-31T12:30+02:00')
    assert when.utcoffset() == datetime.timedelta(hours=2)
    assert when.hour == 12


@pytest.mark.parametrize('text, reason', [
    ('soon', 'expected an ISO 8601 date'),
    ('2030-13-01', 'month must be in 1..12'),
    ('2030-02-30', 'day is out of range'),
    ('2030-01-31T24:00', 'hour must be in 0..23'),
    ('2030-01-31T12:00+24:00', 'expected an ISO 8601 date'),
    ('2030-01-31Z', 'expected an ISO 8601 date'),
    ('31.01.2030', 'expected an ISO 8601 date'),
    ('2030-1-31', 'expected an ISO 8601 date'),
    ('', 'expected an ISO 8601 date'),
])
def test_bad_times(text, reason):
    with pytest.raises(InvalidInput) as e:
        inputs.parse_time(text)
    assert str(e.value).startswith(f"bad time {text!r}: ")
    assert reason in str(e.value)


# -- expiries -----------------------------------------------------------------

NOW = datetime.datetime(2030, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize('value, expected', [
    (None, None),
    ('30d', NOW + datetime.timedelta(days=30)),
    ('90m', NOW + datetime.timedelta(minutes=90)),
    ('2030-01-31T12:00Z', datetime.datetime(2030, 1, 31, 12, tzinfo=UTC)),
    ('2030-01-31', datetime.datetime(2030, 1, 31, tzinfo=UTC)),
    (datetime.timedelta(hours=1), NOW + datetime.timedelta(hours=1)),
    (60, NOW + datetime.timedelta(minutes=1)),
    (0, NOW),
    (datetime.datetime(2030, 2, 1), datetime.datetime(2030, 2, 1,
                                                      tzinfo=UTC)),
])
def test_expiry(value, expected):
    assert inputs.expiry(value, NOW) == expected


@pytest.mark.parametrize('value, error, message', [
    ('tomorrow', InvalidInput, "bad expiry 'tomorrow'"),
    ('3600', InvalidInput, "bad duration '3600': write a number and one"),
    ('0d', InvalidInput, "bad duration '0d': a duration must be positive"),
    ('2030-13-01', InvalidInput, "bad time '2030-13-01'"),
    (datetime.timedelta.max, InvalidInput, 'bad expiry'),
    (True, TypeError, 'expires must be'),
    (['30d'], TypeError, 'expires must be'),
])
def test_bad_expiry(value, error, message):
    with pytest.raises(error, match=message.replace('(', r'\(')):
        inputs.expiry(value, NOW)


# -- dotted names -------------------------------------------------------------

def test_resolve_dotted():
    import os.path
    assert inputs.resolve_dotted('os.path.join') is os.path.join
    assert inputs.resolve_dotted('os.path:join') is os.path.join
    assert inputs.resolve_dotted('os.path:join.__name__') == 'join'
    assert inputs.resolve_dotted(len) is len


@pytest.mark.parametrize('name, reason', [
    ('no_such_module.init', "cannot import it: No module named"
                            " 'no_such_module'"),
    ('os.path.no_such_function', "cannot import it:"),
    ('os.path:nope', "cannot import it:"),
    ('1os.path', 'expected package.module.name'),
    ('os..path', 'expected package.module.name'),
    ('os path', 'expected package.module.name'),
    ('os:path:join', 'expected package.module.name'),
    ('', 'expected package.module.name'),
])
def test_bad_dotted_names_are_named(name, reason):
    with pytest.raises(InvalidInput) as e:
        inputs.resolve_dotted(name)
    assert str(e.value).startswith(f"bad dotted name {name!r}: ")
    assert reason in str(e.value)


def test_dotted_name_datatype_checks_syntax_only():
    # Not imported at load (the application may not be importable yet).
    assert datatypes.dotted_name(' myapp.tenants:setup ') == \
        'myapp.tenants:setup'
    with pytest.raises(ValueError, match="bad dotted name 'my app'"):
        datatypes.dotted_name('my app')


def test_the_init_key_takes_the_colon_form(data):
    import multidb.config as mc
    from helpers import tenants_config

    def config(init):
        return tenants_config(f'init {init}\n    expire-action drop').replace(
            './data', str(data))
    c = mc.collectionFromString(config('os.path:join'))
    try:
        assert c.configuration.tenant_template.init == 'os.path:join'
    finally:
        c.close()
    with pytest.raises(ZConfig.DataConversionError,
                       match="bad dotted name 'os path'"):
        mc.collectionFromString(config('os path'))
