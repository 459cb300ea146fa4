import string

import pytest

import multidb
from multidb.names import check_tenant_name

HOSTILE = [
    # path traversal and separators
    '../etc', '..', '.', 'a/../b', '/abs', 'a/b', 'a\\b', 'c:evil', '~root',
    # NUL and control characters
    'a\x00b', '\x00', 'a\nb', 'a\rb', 'a\tb', 'bell\x07',
    # whitespace
    ' a', 'a ', 'a b', '\u00a0a',
    # SQL and shell metacharacters
    'x"; DROP DATABASE postgres; --', "x'; --", 'a;b', 'a$b', 'a`id`',
    'a|b', 'a*', 'a?', '$(reboot)', 'a%b', 'a.b', 'a:b', 'a,b',
    # Unicode look-alikes and non-ASCII
    'аcme',        # Cyrillic a
    'acme\u200b',  # zero-width space
    'ａｃｍｅ',      # full-width
    'café', 'ßtraße', 'acm\u0435',
    # shape
    '', '1acme', '_acme', '-acme', 'Acme', 'ACME', 'a' * 64, 'a' * 1000,
    # Windows devices
    'con', 'nul', 'com1', 'lpt9', 'aux', 'prn',
]


@pytest.mark.parametrize('name', HOSTILE)
def test_hostile_names_refused(name):
    with pytest.raises(multidb.InvalidName) as e:
        check_tenant_name(name)
    assert isinstance(e.value, ValueError)
    assert repr(name) in str(e.value)


@pytest.mark.parametrize('name', [None, 1, b'acme', ['a']])
def test_non_strings_refused(name):
    with pytest.raises(multidb.InvalidName, match='must be a str'):
        check_tenant_name(name)


@pytest.mark.parametrize('name', [
    'a', 'acme', 'acme-2', 'acme_2', 'a' * 63, 'x1-y2_z3', 'console', 'nul1'])
def test_good_names(name):
    assert check_tenant_name(name) == name


def test_reserved_names():
    with pytest.raises(multidb.InvalidName, match='reserved'):
        check_tenant_name('catalog', reserved={'catalog'})


def test_messages_say_what_is_wrong():
    with pytest.raises(multidb.InvalidName, match="not '/'"):
        check_tenant_name('a/b')
    with pytest.raises(multidb.InvalidName, match='at most 63'):
        check_tenant_name('a' * 64)
    with pytest.raises(multidb.InvalidName, match='start with a letter'):
        check_tenant_name('1a')
    with pytest.raises(multidb.InvalidName, match='empty'):
        check_tenant_name('')


def test_every_character_outside_the_policy_is_refused():
    # The policy decides, not a list of cases: every character but
    # lowercase ASCII letters, digits, '_' and '-' is refused inside a
    # name (ASCII, controls, Latin-1 and beyond).
    allowed = set(string.ascii_lowercase + string.digits + '_-')
    for code in range(0x300):
        name = f'a{chr(code)}b'
        if chr(code) in allowed:
            assert check_tenant_name(name) == name
        else:
            with pytest.raises(multidb.InvalidName):
                check_tenant_name(name)
