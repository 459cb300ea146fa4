"""Configuration files: multidb.config."""
import io
import os
import textwrap
import xml.etree.ElementTree as ET

import pytest
import ZConfig
import ZODB.config

import multidb
from multidb import config as mc
from helpers import tree

HERE = os.path.dirname(__file__)
CONFIG = os.path.join(os.path.dirname(HERE), 'config')
PACKAGE = os.path.dirname(mc.__file__)


_tree = tree


def _write(tmp_path, files):
    """Write {relative name: text}; return the paths to load: the first
    file, then the folder of the others."""
    paths = []
    for rel, text in files.items():
        path = tmp_path / 'conf' / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        folder = os.path.dirname(str(path))
        if not paths:
            paths.append(str(path))
        elif folder not in paths and folder != os.path.dirname(paths[0]):
            paths.append(folder)
    return paths


def _load(tmp_path, data, files):
    return mc.collectionFromFiles(_write(tmp_path, files),
                                  defines={'data': str(data)})


FS = """
<zodb {name}>
  <filestorage>
    path $data/{name}.fs
  </filestorage>
</zodb>
"""

TEMPLATE = """
<multidb>
  <zodb catalog>
    <mappingstorage/>
  </zodb>
  <tenants>
    {keys}
    <filestorage>
      path {path}
    </filestorage>
  </tenants>
</multidb>
"""


def _template(keys='archive-dir $data/archive',
              path='$data/tenants/{name}.fs'):
    return TEMPLATE.replace('{keys}', keys).replace('{path}', path)


# (id, files, fragment of the message, (file, line) of the error,
#  another (file, line) the message must name, or None)
MALFORMED = [
    ('unknown-key',
     {'main.conf': '<zodb a>\n  bogus 1\n  <mappingstorage/>\n</zodb>\n'},
     "'bogus' is not a known key name", ('main.conf', 2), None),
    ('bad-value',
     {'main.conf': '<zodb a>\n  cache-size lots\n  <mappingstorage/>\n'
                   '</zodb>\n'},
     'lots', ('main.conf', 2), None),
    ('missing-storage',
     {'main.conf': '# no storage\n<zodb a>\n  cache-size 10\n</zodb>\n'},
     "database 'a' has no storage section", ('main.conf', 2), None),
    ('two-unnamed',
     {'main.conf': '<zodb>\n  <mappingstorage/>\n</zodb>\n'
                   '<zodb>\n  <mappingstorage/>\n</zodb>\n'},
     'two databases have no name', ('main.conf', 4), ('main.conf', 1)),
    ('duplicate-database-name-in-file',
     {'main.conf': FS.format(name='a') + '<zodb b>\n  database-name a\n'
                   '  <mappingstorage/>\n</zodb>\n'},
     "database name 'a' is declared twice", ('main.conf', 7),
     ('main.conf', 2)),
    ('duplicate-section-name-in-file',
     {'main.conf': '<zodb a>\n  <mappingstorage/>\n</zodb>\n'
                   '<zodb a>\n  <mappingstorage/>\n</zodb>\n'},
     "<zodb a> is declared twice", ('main.conf', 4), ('main.conf', 1)),
    ('duplicate-across-files',
     {'main.conf': FS.format(name='a'),
      'd/10-x.conf': '# a tenant\n' + FS.format(name='a')},
     "<zodb a> is declared twice", ('d/10-x.conf', 3),
     ('main.conf', 2)),
    ('duplicate-database-name-across-files',
     {'main.conf': FS.format(name='a'),
      'd/x.conf': '<zodb x>\n  database-name a\n  <mappingstorage/>\n'
                  '</zodb>\n'},
     "database name 'a' is declared twice", ('d/x.conf', 1),
     ('main.conf', 2)),
    ('duplicate-multidb-and-top-level',
     {'main.conf': '<multidb>\n' + FS.format(name='a') + '</multidb>\n'
                   + FS.format(name='a')},
     "database name 'a' is declared twice", ('main.conf', 10),
     ('main.conf', 3)),
    ('two-multidb-sections',
     {'main.conf': '<multidb>\n  max-open 3\n</multidb>\n',
      'd/x.conf': '<multidb>\n</multidb>\n'},
     '<multidb> is declared twice', ('d/x.conf', 1), ('main.conf', 1)),
    ('two-tenants-sections',
     {'main.conf': '<multidb>\n  <tenants>\n    <mappingstorage/>\n'
                   '  </tenants>\n  <tenants>\n    <mappingstorage/>\n'
                   '  </tenants>\n</multidb>\n'},
     '<tenants> is declared twice', ('main.conf', 5), ('main.conf', 2)),
    ('template-unknown-placeholder',
     {'main.conf': _template(path='$data/tenants/{tenant}.fs')},
     'unknown placeholder {tenant}', ('main.conf', 6), None),
    ('template-missing-placeholder',
     {'main.conf': _template(path='$data/tenants/all.fs')},
     'no {name} placeholder', ('main.conf', 6), None),
    ('template-malformed-placeholder',
     {'main.conf': _template(path='$data/tenants/{name.fs')},
     'bad placeholder', ('main.conf', 6), None),
    ('template-placeholder-conversion',
     {'main.conf': _template(path='$data/tenants/{name!r}.fs')},
     'unknown placeholder {name!r}', ('main.conf', 6), None),
    ('template-database-name',
     {'main.conf': _template(keys='database-name x\n'
                                  'archive-dir $data/archive')},
     'cannot have a database-name', ('main.conf', 6), None),
    ('template-no-storage',
     {'main.conf': '<multidb>\n  <tenants>\n    expire-action drop\n'
                   '  </tenants>\n</multidb>\n'},
     'has no storage section', ('main.conf', 2), None),
    ('template-catalog-not-declared',
     {'main.conf': _template(keys='catalog registry\n'
                                  'archive-dir $data/archive')},
     "catalog database 'registry'", ('main.conf', 6), None),
    ('template-bad-expire-action',
     {'main.conf': _template(keys='expire-action shred')},
     "expire-action must be 'drop' or 'archive'", ('main.conf', 7), None),
    ('template-blob-dir',
     {'main.conf': _template(path='$data/tenants/{name}.fs\n'
                                  '      blob-dir $data/blobs')},
     "filestorage cannot set blob-dir", ('main.conf', 6), None),
    ('template-create',
     {'main.conf': _template(path='$data/tenants/{name}.fs\n'
                                  '      create true')},
     "filestorage cannot set create", ('main.conf', 6), None),
    ('template-read-only',
     {'main.conf': _template(path='$data/tenants/{name}.fs\n'
                                  '      read-only true')},
     "filestorage cannot set read-only", ('main.conf', 6), None),
    ('template-packer-not-dotted',
     {'main.conf': _template(path='$data/tenants/{name}.fs\n'
                                  '      packer no-such-packer')},
     "packer 'no-such-packer' is not a dotted name", ('main.conf', 6),
     None),
    ('template-placeholder-in-folder',
     {'main.conf': _template(path='$data/{name}/data.fs')},
     "{name} in its file name, not in a folder", ('main.conf', 6), None),
    ('template-relstorage-not-postgresql',
     {'main.conf': '%import relstorage\n<multidb>\n<zodb catalog>\n'
                   '<mappingstorage/>\n</zodb>\n<tenants>\n'
                   'expire-action drop\n<relstorage>\n<mysql>\n'
                   'db tenant_{name}\n</mysql>\n</relstorage>\n'
                   '</tenants>\n</multidb>\n'},
     "relstorage has a <mysql> adapter", ('main.conf', 6), None),
    ('template-relstorage-name',
     {'main.conf': '%import relstorage\n<multidb>\n<zodb catalog>\n'
                   '<mappingstorage/>\n</zodb>\n<tenants>\n'
                   'expire-action drop\n<relstorage>\nname t\n'
                   '<postgresql>\ndsn dbname=tenant_{name}\n</postgresql>\n'
                   '</relstorage>\n</tenants>\n</multidb>\n'},
     "relstorage cannot set name", ('main.conf', 6), None),
    ('template-bad-init',
     {'main.conf': _template(keys='init my-app.init\n'
                                  'archive-dir $data/archive')},
     'my-app.init', ('main.conf', 7), None),
    ('unreadable-include',
     {'main.conf': FS.format(name='a') + '%include missing.conf\n'},
     'cannot %include', ('main.conf', 7), None),
    ('bad-max-open-zero',
     {'main.conf': '<multidb>\n  max-open 0\n</multidb>\n'},
     'max-open must be a positive integer', ('main.conf', 2), None),
    ('bad-max-open-word',
     {'main.conf': '<multidb>\n  max-open many\n</multidb>\n'},
     'max-open must be a positive integer', ('main.conf', 2), None),
    ('bad-open-timeout',
     {'main.conf': '<multidb>\n  open-timeout soon\n</multidb>\n'},
     'soon', ('main.conf', 2), None),
    ('bad-uri-scheme',
     {'main.conf': '<zodburi a>\n  uri nosuch://x\n</zodburi>\n'},
     "no zodburi resolver for the scheme 'nosuch'", ('main.conf', 2), None),
    ('bad-uri-parameter',
     {'main.conf': '<zodburi a>\n  uri memory://x?bogus=1\n</zodburi>\n'},
     'bad zodburi URI', ('main.conf', 2), None),
    ('uri-missing',
     {'main.conf': '<zodburi a>\n</zodburi>\n'},
     "no values for 'uri'", ('main.conf', 2), None),
    ('uri-contradicting-database-name',
     {'main.conf': '<multidb>\n<zodburi a>\n  database-name a\n'
                   '  uri memory://x?database_name=b\n</zodburi>\n'
                   '</multidb>\n'},
     'contradicts', ('main.conf', 2), None),
    ('unknown-section-type',
     {'main.conf': '<zodbx a>\n</zodbx>\n'},
     'zodbx', ('main.conf', 1), None),
    ('filestorage-folder-missing',
     {'main.conf': '<zodb a>\n  <filestorage>\n    path $data/no/a.fs\n'
                   '  </filestorage>\n</zodb>\n'},
     'does not exist', ('main.conf', 3), None),
    ('undefined-variable',
     {'main.conf': '<zodb a>\n  <filestorage>\n    path $nowhere/a.fs\n'
                   '  </filestorage>\n</zodb>\n'},
     "no replacement for 'nowhere'", ('main.conf', 3), None),
    ('unclosed-section',
     {'main.conf': '<zodb a>\n  <mappingstorage/>\n'},
     'unclosed sections', ('main.conf', 2), None),
    ('error-in-tenant-file',
     {'main.conf': FS.format(name='a'),
      'd/b.conf': '\n\n<zodb b>\n  pool-size seven\n  <mappingstorage/>\n'
                  '</zodb>\n'},
     'seven', ('d/b.conf', 4), None),
]


@pytest.mark.parametrize('files, fragment, where, other',
                         [case[1:] for case in MALFORMED],
                         ids=[case[0] for case in MALFORMED])
def test_malformed(tmp_path, data, files, fragment, where, other):
    before = _tree(tmp_path / 'data')
    with pytest.raises(ZConfig.ConfigurationError) as info:
        _load(tmp_path, data, files)
    e = info.value
    text = str(e)
    path = str(tmp_path / 'conf' / where[0])
    assert fragment in text
    assert path in text, text
    assert f"line {where[1]}" in text, text
    assert e.lineno == where[1]
    assert e.url.endswith(where[0])
    if other is not None:
        assert f"{tmp_path / 'conf' / other[0]}:{other[1]}" in text, text
    assert _tree(tmp_path / 'data') == before


def test_missing_archive_dir_loads_and_is_not_made(tmp_path, data):
    # Made on the first archive, not at load: loading touches nothing.
    c = _load(tmp_path, data,
              {'main.conf': _template(keys='archive-dir $data/nowhere')})
    try:
        t = c.configuration.tenant_template
        assert t.archive_dir == f'{data}/nowhere'
        assert not os.path.exists(data / 'nowhere')
    finally:
        c.close()


def test_duplicate_is_a_duplicate_name(tmp_path, data):
    files = {'main.conf': FS.format(name='a'),
             'd/x.conf': FS.format(name='a')}
    with pytest.raises(multidb.DuplicateName) as info:
        _load(tmp_path, data, files)
    e = info.value
    assert isinstance(e, mc.DuplicateDeclaration)
    assert isinstance(e, ZConfig.ConfigurationError)
    assert e.name == 'a'
    assert (e.first.line, e.second.line) == (2, 2)
    assert e.first.file.endswith('main.conf')
    assert e.second.file.endswith('x.conf')


def test_error_from_string_names_line():
    with pytest.raises(ZConfig.ConfigurationError) as info:
        mc.collectionFromString('\n<zodb a>\n</zodb>\n')
    assert info.value.lineno == 2


# -- ZODB compatibility -------------------------------------------------------

ZODB_TEXT = """
<zodb>
  database-name first
  <mappingstorage/>
</zodb>
<zodb second>
  cache-size 100
  <mappingstorage/>
</zodb>
<zodb Third>
  <filestorage>
    path {data}/third.fs
  </filestorage>
</zodb>
<zodb fourth>
  database-name Fourth
  <demostorage>
    <mappingstorage/>
  </demostorage>
</zodb>
"""


def _zodb_names(text):
    db = ZODB.config.databaseFromString(text)
    try:
        return list(db.databases)
    finally:
        for d in list(db.databases.values()):
            d.close()


def test_zodb_config_file_loads_unchanged_with_same_names(tmp_path, data):
    text = ZODB_TEXT.format(data=data)
    expected = _zodb_names(text)
    c = mc.collectionFromString(text)
    try:
        assert list(c) == expected == ['first', 'second', 'third', 'Fourth']
        assert c.configuration.sources['second'].kind == 'mappingstorage'
        assert c.configuration.sources['third'].kind == 'filestorage'
        assert c['second']._cache_size == 100
    finally:
        c.close()


def test_zodb_config_file_loads_from_file(tmp_path, data):
    path = tmp_path / 'zodb.conf'
    path.write_text(ZODB_TEXT.format(data=data))
    c = mc.collectionFromFile(str(path))
    try:
        assert c.configuration.sources['first'] == (
            str(path), 2, 'mappingstorage', path.as_uri())
    finally:
        c.close()


def test_unnamed_database_is_called_unnamed():
    text = '<zodb>\n  <mappingstorage/>\n</zodb>\n'
    assert _zodb_names(text) == ['']  # which a collection refuses
    c = mc.collectionFromString(text)
    assert list(c) == [mc.UNNAMED]
    c.close()


def test_zodb_config_can_import_multidb_for_zodburi():
    db = ZODB.config.databaseFromString(
        '%import multidb\n<zodburi s>\n  uri memory://x\n</zodburi>\n')
    try:
        assert db.database_name == 's'
    finally:
        db.close()


# -- composition and defines --------------------------------------------------

def _example(data):
    return mc.collectionFromFiles(
        [os.path.join(CONFIG, 'example.conf'),
         os.path.join(CONFIG, 'tenants.d')], defines={'data': str(data)})


def test_example_composes_main_file_and_tenant_folder(data):
    c = _example(data)
    try:
        assert list(c) == ['main', 'catalog', 'acme', 'globex']
        src = c.configuration.sources
        assert str(src['main']) == os.path.join(CONFIG, 'example.conf') + ':12'
        assert src['acme'].file == os.path.join(CONFIG, 'tenants.d',
                                                'acme.conf')
        assert src['globex'].line == 2
        assert c.configuration.files == [
            os.path.join(CONFIG, 'example.conf'),
            os.path.join(CONFIG, 'tenants.d', 'acme.conf'),
            os.path.join(CONFIG, 'tenants.d', 'globex.conf')]
        assert c.max_open == 200
        assert c.open_timeout == 30
        t = c.configuration.tenant_template
        assert (t.kind, t.catalog, t.expire_action) == (
            'filestorage', 'catalog', 'archive')
        assert t.archive_dir == f'{data}/archive'
        assert t.db_kwargs['cache_size'] == 2000
        assert t.db_kwargs['pool_size'] == 3
        assert t.placeholders == ['filestorage path']
    finally:
        c.close()


def test_folder_order_is_sorted_by_name_not_creation(tmp_path, data):
    folder = tmp_path / 'd'
    folder.mkdir()
    for name in ('b', 'c', 'a'):
        (folder / f'{name}.conf').write_text(
            f'<zodb {name}>\n  <mappingstorage/>\n</zodb>\n')
    (folder / 'ignored.txt').write_text('<zodb x>\n</zodb>\n')
    (folder / '.hidden.conf').write_text('<zodb x>\n</zodb>\n')
    c = mc.collectionFromFiles([str(folder)])
    assert list(c) == ['a', 'b', 'c']
    c.close()


def test_a_file_named_twice_counts_once(tmp_path):
    path = tmp_path / 'a.conf'
    path.write_text('<zodb a>\n  <mappingstorage/>\n</zodb>\n')
    assert mc.config_files([str(path), str(tmp_path)]) == [str(path)]


def test_missing_path(tmp_path):
    with pytest.raises(ZConfig.ConfigurationError, match='no such'):
        mc.collectionFromFiles([str(tmp_path / 'nope.conf')])


def test_empty_folder(tmp_path):
    with pytest.raises(ZConfig.ConfigurationError, match='no configuration'):
        mc.collectionFromFiles([str(tmp_path)])


def test_caller_defines_win_over_file_defines(tmp_path, data):
    path = tmp_path / 'a.conf'
    path.write_text('%define data /nonexistent\n' + FS.format(name='a'))
    c = mc.collectionFromFile(str(path), defines={'DATA': str(data)})
    c['a']
    assert (data / 'a.fs').exists()
    c.close()


def test_include_is_relative_to_the_including_file(tmp_path):
    (tmp_path / 'sub').mkdir()
    (tmp_path / 'sub' / 'b.conf').write_text(
        '<zodb b>\n  <mappingstorage/>\n</zodb>\n')
    (tmp_path / 'a.conf').write_text('%include sub/b.conf\n')
    c = mc.collectionFromFile(str(tmp_path / 'a.conf'))
    assert str(c.configuration.sources['b']) == f"{tmp_path}/sub/b.conf:1"
    c.close()


def test_multidb_settings(tmp_path):
    c = mc.collectionFromString(
        '<multidb>\n  max-open 5\n  open-timeout 2m\n</multidb>\n')
    assert (c.max_open, c.open_timeout, len(c)) == (5, 120, 0)
    assert c.configuration.tenant_template is None
    c.close()
    c = mc.collectionFromString('<multidb>\n</multidb>\n')
    assert c.max_open == multidb.Collection().max_open
    c.close()


# -- laziness -----------------------------------------------------------------

def test_loading_opens_nothing_and_first_use_opens(data):
    before = _tree(data)
    c = _example(data)
    try:
        assert _tree(data) == before
        assert c.open_count == 0
        assert not c.is_open('main')
        db = c['main']
        assert (data / 'main.fs').exists()
        assert not (data / 'catalog.fs').exists()
        with c.transaction() as group:
            group.root('main')['x'] = 1
            group.root('acme')['y'] = 2
        assert (data / 'tenants' / 'acme.fs').exists()
        assert db._cache_size == 10000
        assert c['acme']._cache_size == 2000
    finally:
        c.close()


# -- the tenants template -----------------------------------------------------

def test_template_backend_makes_the_tenants_storage(data):
    # One mechanism: the backend of the storage kind, built from the
    # template, is the one the tenants use.
    c = _example(data)
    try:
        t = c.configuration.tenant_template
        assert type(t.backend) is multidb.FileStorageBackend
        assert c.tenants.backend is t.backend
        assert t.backend.path == f'{data}/tenants/{{name}}.fs'
        assert not (data / 'tenants' / 'initech.fs').exists()
        c.tenants.create('initech')
        assert (data / 'tenants' / 'initech.fs').exists()
    finally:
        c.close()


@pytest.mark.parametrize('name', ['', '.', '..', 'a/b', '../x', 'a\\b',
                                  'a\0b', None])
def test_template_refuses_names_that_escape(data, name):
    c = _example(data)
    with pytest.raises(multidb.InvalidName):
        c.tenants.create(name)
    c.close()
    assert os.listdir(data / 'tenants') == []


def test_template_relstorage_opens_no_connection():
    c = mc.collectionFromFile(os.path.join(CONFIG, 'relstorage.conf'))
    try:
        t = c.configuration.tenant_template
        assert t.kind == 'relstorage'
        assert t.placeholders == ['relstorage postgresql dsn']
        assert type(t.backend) is multidb.RelStorageBackend
        assert t.backend.dsn == (
            'host=localhost user=multidb dbname=tenant_{name}')
        assert t.backend.options == {'keep_history': False}
        assert t.backend.template == 'multidb_template_hf'
        assert t.backend.admin_dsn == 'host=localhost user=multidb' \
                                      ' dbname=postgres'
        assert c.configuration.sources['catalog'].kind == 'relstorage'
    finally:
        c.close()


def test_template_kind_without_backend_is_an_error():
    # No backend of the kind (none comes with multidb for storages in
    # memory): a configuration error naming the kind and the entry-point
    # group, at the <tenants> line, not a collection without tenants.
    with pytest.raises(ZConfig.ConfigurationError) as info:
        mc.collectionFromString(
            '<multidb>\n<zodb catalog>\n<mappingstorage/>\n</zodb>\n'
            '<tenants>\nexpire-action drop\n<mappingstorage/>\n'
            '</tenants>\n</multidb>\n')
    text = str(info.value)
    assert "no backend for the storage kind 'mappingstorage'" in text
    assert "'multidb.backends'" in text
    assert 'installed: filestorage, relstorage' in text
    assert info.value.lineno == 5


def test_template_literal_braces(data):
    c = mc.collectionFromString(
        _template(keys='archive-dir $data/archive',
                  path='$data/tenants/{{x}}{name}.fs'),
        defines={'data': str(data)})
    try:
        settings = c.configuration.tenant_template.backend.settings_for('a')
        assert settings['path'] == f'{data}/tenants/{{x}}a.fs'
    finally:
        c.close()


FRESH = """
<multidb>
  <zodb catalog>
    <filestorage>
      path $data/catalog.fs
    </filestorage>
  </zodb>
  <tenants>
    expire-action drop
    <filestorage>
      path $data/tenants/deeper/{name}.fs
    </filestorage>
  </tenants>
</multidb>
"""


def test_fresh_tenants_folder_from_python(tmp_path):
    # The template's path is a template: its folder need not exist when
    # the configuration loads (ZConfig's existing-dirpath would say "The
    # directory named as part of the path ... does not exist"); the first
    # tenant makes it.
    data = tmp_path / 'data'
    data.mkdir()
    (tmp_path / 'app.conf').write_text(FRESH)
    c = mc.collectionFromFile(str(tmp_path / 'app.conf'),
                              defines={'data': str(data)})
    try:
        assert _tree(data) == []    # loading made nothing
        c.tenants.create('acme')
        assert (data / 'tenants' / 'deeper' / 'acme.fs').exists()
    finally:
        c.close()


def test_fixed_databases_keep_zconfigs_rule(tmp_path):
    # A <zodb>'s storage folder must exist, as ZConfig says; with
    # make_folders (the commands that create tenants) it is made, once
    # the configuration is found good, in one load.
    data = tmp_path / 'data'
    (tmp_path / 'app.conf').write_text(FRESH)
    with pytest.raises(ZConfig.ConfigurationError,
                       match='catalog.fs does not exist'):
        mc.collectionFromFile(str(tmp_path / 'app.conf'),
                              defines={'data': str(data)})
    assert not data.exists()
    # A configuration with an error makes no folder.
    (tmp_path / 'bad.conf').write_text(
        FRESH.replace('expire-action drop', 'expire-action shred'))
    with pytest.raises(ZConfig.ConfigurationError, match='shred'):
        mc.collectionFromFiles([str(tmp_path / 'bad.conf')],
                               defines={'data': str(data)},
                               make_folders=True)
    assert not data.exists()
    c = mc.collectionFromFiles([str(tmp_path / 'app.conf')],
                               defines={'data': str(data)},
                               make_folders=True)
    try:
        # The catalog's folder; the tenants' is the backend's to make.
        assert _tree(data) == []
        c.tenants.create('acme')
        assert (data / 'tenants' / 'deeper' / 'acme.fs').exists()
    finally:
        c.close()


def test_template_paths_below_nested_storages_need_no_folder(tmp_path):
    # Below <tenants> at any depth (a storage inside a storage): refused
    # for want of a backend of its kind, not for its folder.
    data = tmp_path / 'data'
    data.mkdir()
    with pytest.raises(ZConfig.ConfigurationError) as info:
        mc.collectionFromString(
            '<multidb>\n<zodb catalog>\n<mappingstorage/>\n</zodb>\n'
            '<tenants>\nexpire-action drop\n<demostorage>\n'
            '<filestorage base>\npath $data/no/{name}.fs\n</filestorage>\n'
            '</demostorage>\n</tenants>\n</multidb>\n',
            defines={'data': str(data)})
    assert "no backend for the storage kind 'demostorage'" in str(info.value)


def test_template_init_is_kept_as_a_dotted_name(data):
    c = mc.collectionFromString(
        _template(keys='init myapp.tenants.setup\nexpire-action drop'),
        defines={'data': str(data)})
    t = c.configuration.tenant_template
    assert t.init == 'myapp.tenants.setup'
    assert t.settings['expire_action'] == 'drop'
    c.close()


# -- zodburi ------------------------------------------------------------------

def test_zodburi_example(data):
    c = mc.collectionFromFile(os.path.join(CONFIG, 'zodburi.conf'),
                              defines={'data': str(data)})
    try:
        assert list(c) == ['main', 'sessions']
        assert c.configuration.sources['main'].kind == 'filestorage'
        assert c.configuration.sources['sessions'].kind == 'mappingstorage'
        assert not (data / 'main.fs').exists()
        assert c['main']._cache_size == 20000
        assert c['sessions'].pool._size == 20
    finally:
        c.close()


def test_zodburi_database_name_from_the_uri():
    c = mc.collectionFromString(
        '<zodburi>\n  uri memory://x?database_name=Sessions\n</zodburi>\n')
    assert list(c) == ['Sessions']
    c.close()


# -- the schema files ---------------------------------------------------------

def test_config_schema_is_the_packaged_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for sub in ('tenants', 'archive'):
        os.makedirs(os.path.join('multidb-data', sub))
    schema = ZConfig.loadSchema(os.path.join(CONFIG, 'schema.xml'))
    conf, _ = ZConfig.loadConfig(schema, os.path.join(CONFIG,
                                                      'example.conf'))
    assert [d.name for d in conf.multidb.databases] == ['main', 'catalog']


def test_component_is_importable_by_other_schemas():
    schema = ZConfig.loadSchemaFile(io.StringIO(
        '<schema><import package="multidb"/>'
        '<section type="multidb" name="*" attribute="m"/></schema>'))
    conf, _ = ZConfig.loadConfigFile(schema, io.StringIO(
        '<multidb>\n<zodb a>\n<mappingstorage/>\n</zodb>\n</multidb>\n'))
    c = conf.m.open()
    assert list(c) == ['a']
    c.close()


@pytest.mark.parametrize('name', ['multidb.xml', 'tenants.xml',
                                  'zodburi.xml'])
def test_every_key_has_a_description_and_a_default(name):
    root = ET.parse(os.path.join(PACKAGE, name)).getroot()
    keys = root.iter('key')
    for key in keys:
        text = key.findtext('description') or ''
        assert text.strip(), key.get('name')
        assert key.get('default') is not None or 'Default' in text \
            or 'required' in text, key.get('name')


def test_every_zodb_storage_type_is_declared_without_connecting(data):
    c = mc.collectionFromString(f'''
<zodb zeo>
  <zeoclient>
    server localhost:1
    wait false
  </zeoclient>
</zodb>
<zodb blobs>
  <blobstorage>
    blob-dir {data}/blobs
    <filestorage>
      path {data}/blobs.fs
    </filestorage>
  </blobstorage>
</zodb>
<zodb demo>
  <demostorage>
    <mappingstorage/>
  </demostorage>
</zodb>
''')
    try:
        assert [s.kind for s in c.configuration.sources.values()] == [
            'zeoclient', 'blobstorage', 'demostorage']
        assert _tree(data) == ['archive', 'tenants']
        assert c['demo'] is not None
    finally:
        c.close()
