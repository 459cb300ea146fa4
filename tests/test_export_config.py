"""export_config and ``multidb export-config``: a plain ZODB
configuration of every database, which ZODB's own tools read."""
import os
import stat
import uuid

import pytest
import ZODB.config
from persistent.mapping import PersistentMapping

import multidb
from helpers import fs_tenants
from helpers import run_cli
from multidb.config import collectionFromFile
from multidb.errors import NotConfigured
from multidb.exporting import _redact_uri
from multidb.exporting import export_config

CONFIG = """
%define data ./data
<multidb>
  <zodb main>
    cache-size 1000
    <filestorage>
      path $data/main.fs
    </filestorage>
  </zodb>
  <zodb catalog>
    <filestorage>
      path $data/catalog.fs
    </filestorage>
  </zodb>
  <tenants>
    catalog catalog
    pool-size 3
    <filestorage>
      path $data/tenants/{name}.fs
      pack-gc false
    </filestorage>
  </tenants>
</multidb>
"""


@pytest.fixture
def conf(tmp_path, data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / 'app.conf'
    path.write_text(CONFIG)
    return path


def _databases(path):
    """Every database of the ZODB configuration file path, opened by
    ZODB.config as ZODB's tools open it: {name: DB}."""
    with open(path) as f:
        db = ZODB.config.databaseFromFile(f)
    return db.databases


def _close(databases):
    for db in list(databases.values()):
        db.close()


def test_exported_file_opens_every_database(conf, tmp_path, capsys):
    coll = collectionFromFile(str(conf))
    try:
        tenants = coll.tenants
        tenants.create('acme', init=lambda root: root.update(v='acme'))
        tenants.create('bravo', init=lambda root: root.update(v='bravo'))
        # A cross-database reference, main -> acme.
        with coll.transaction() as g:
            thing = g.root('acme')['thing'] = PersistentMapping(x=1)
            g.get_connection('acme').add(thing)
            g.root('main')['link'] = thing
    finally:
        coll.close()
    out = tmp_path / 'zodb.conf'
    code, stdout, err = run_cli(capsys, 'export-config', '-o', str(out),
                                config=conf)
    assert code == 0, err
    assert stdout == f"wrote 4 databases to {out}\n"
    text = out.read_text()
    assert 'It holds no secrets.' in text
    # Paths are absolute: the file works from any folder.
    assert f"path {tmp_path}/data/main.fs" in text
    os.chdir('/')
    databases = _databases(out)
    try:
        assert sorted(databases) == ['acme', 'bravo', 'catalog', 'main']
        for name, db in databases.items():
            conn = db.open()
            root = conn.root()
            if name in ('acme', 'bravo'):
                assert root['v'] == name
            if name == 'main':
                # The reference to acme's object resolves.
                assert root['link']['x'] == 1
                assert root['link']._p_jar.db().database_name == 'acme'
            conn.close()
        assert databases['main'].getCacheSize() == 1000
        assert databases['acme'].getPoolSize() == 3
        assert databases['acme'].storage._pack_gc is False
    finally:
        _close(databases)


def test_printed_without_output(conf, capsys):
    code, out, err = run_cli(capsys, 'export-config', config=conf)
    assert code == 0, err
    assert out.startswith("# A ZODB configuration written by 'multidb"
                          " export-config'")
    assert '<zodb catalog>\n  database-name catalog\n' in out
    assert err == ''


def test_unwritable_output(conf, tmp_path, capsys):
    # Below a plain file: no process may write there, root neither.
    (tmp_path / 'plain').write_text('')
    target = tmp_path / 'plain' / 'x.conf'
    code, out, err = run_cli(capsys, 'export-config', '-o', str(target),
                             config=conf)
    assert code == 1
    assert err == (f"multidb: error: cannot write {target}: Not a"
                   f" directory\n")


def test_output_in_missing_folder(conf, tmp_path, capsys):
    target = tmp_path / 'nope' / 'x.conf'
    code, out, err = run_cli(capsys, 'export-config', '-o', str(target),
                             config=conf)
    assert code == 1
    assert err.startswith(f"multidb: error: cannot write {target}:")


def test_no_configuration(capsys):
    code, out, err = run_cli(capsys, 'export-config')
    assert code == 2 and 'no configuration' in err


def test_collection_built_in_code(tmp_path):
    c, t = fs_tenants(tmp_path)
    try:
        with pytest.raises(NotConfigured, match='loaded from configuration'
                                                ' files'):
            export_config(c)
    finally:
        c.close()


@pytest.mark.parametrize('uri, expected', [
    ('postgresql://u:pw@host/db', 'postgresql://u@host/db'),
    ('zeo://host:8100?storage=1', 'zeo://host:8100?storage=1'),
    ('file:///srv/x.fs', 'file:///srv/x.fs'),
])
def test_redact_uri(uri, expected):
    assert _redact_uri(uri) == expected


# -- secrets: PostgreSQL tenants ---------------------------------------------

PG_CONFIG = """
%import relstorage
<multidb>
  <zodb catalog>
    <filestorage>
      path $data/catalog.fs
    </filestorage>
  </zodb>
  <zodb shared>
    <relstorage>
      keep-history false
      <postgresql>
        dsn $server password=s3cret dbname=${prefix}shared
      </postgresql>
    </relstorage>
  </zodb>
  <tenants>
    snapshot-dir $data/snapshots
    template-database ${prefix}template
    <relstorage>
      keep-history false
      <postgresql>
        dsn $server password=s3cret dbname=$prefix{name}
      </postgresql>
    </relstorage>
  </tenants>
</multidb>
"""


def test_passwords_only_when_asked(postgres, tmp_path, data, capsys,
                                   monkeypatch):
    # The cluster trusts local connections: a password in the dsn is
    # never asked for, so both files open.
    monkeypatch.chdir(tmp_path)
    prefix = 'x' + uuid.uuid4().hex[:6] + '_'
    postgres.sql(f'CREATE DATABASE "{prefix}shared"')
    conf = tmp_path / 'pg.conf'
    conf.write_text(PG_CONFIG)
    defines = ['-D', f'server=host=127.0.0.1 port={postgres.port}'
                     f' user=postgres', '-D', f'prefix={prefix}',
               '-D', f'data={data}']
    try:
        code, out, err = run_cli(capsys, *defines, 'create', 'acme',
                                 config=conf)
        assert code == 0, err
        plain = tmp_path / 'plain.conf'
        code, out, err = run_cli(capsys, *defines, 'export-config', '-o',
                                 str(plain), config=conf)
        assert code == 0, err
        assert 'secrets left out (2)' in err and '--with-secrets' in err
        text = plain.read_text()
        assert 's3cret' not in text and 'password=' not in text
        assert "#   database 'shared': the password of its dsn" in text
        assert "#   database 'acme': the password of its dsn" in text
        assert text.count('%import relstorage') == 1
        assert 'create-schema false' in text
        secret = tmp_path / 'secret.conf'
        code, out, err = run_cli(capsys, *defines, 'export-config', '-o',
                                 str(secret), '--with-secrets', config=conf)
        assert code == 0, err
        assert 'holds secrets' in err
        assert secret.read_text().count('password=s3cret') == 2
        assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
        for path in (plain, secret):
            databases = _databases(path)
            try:
                assert sorted(databases) == ['acme', 'catalog', 'shared']
                for db in databases.values():
                    db.open().close()
            finally:
                _close(databases)
    finally:
        postgres.drop_databases(prefix)


def test_verify_interfaces():
    from zope.interface.verify import verifyClass
    from multidb.interfaces import IBackend
    verifyClass(IBackend, multidb.FileStorageBackend)
    from multidb.backends.relstorage import RelStorageBackend
    verifyClass(IBackend, RelStorageBackend)
    from multidb.backends.servers import ServerSet
    from multidb.interfaces import IServerSet
    verifyClass(IServerSet, ServerSet)


def test_composed_files_defines_and_top_level_sections(conf, tmp_path,
                                                       capsys):
    # A second file, composed after the first, with a top-level <zodb>
    # (as ZODB.config files have them) and an %include; -D wins over
    # the file's own %define.
    (tmp_path / 'other').mkdir()
    (tmp_path / 'inc.conf').write_text(
        "<zodb extra>\n  <filestorage>\n    path $data/extra.fs\n"
        "  </filestorage>\n</zodb>\n")
    second = tmp_path / 'more.conf'
    second.write_text("%include inc.conf\n")
    code, out, err = run_cli(capsys, '-D', f'data={tmp_path}/other', '-C',
                             str(second), 'export-config', config=conf)
    assert code == 0, err
    assert f"path {tmp_path}/other/main.fs" in out
    assert (f"<zodb extra>\n  database-name extra\n  <filestorage>\n"
            f"    path {tmp_path}/other/extra.fs\n") in out
    assert f"#   {second}" in out
