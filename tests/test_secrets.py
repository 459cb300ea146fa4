"""A PostgreSQL password never gets into a catalog record, the command's
output, the logs or an archive: records hold the dsn without it, and each
connection takes it from the configuration (or libpq's passfile,
PGPASSWORD) as it is then.

The test cluster trusts every local connection; here one role of its own
must give its password (scram-sha-256), so a connection that lost the
password on the way fails for real.
"""
import contextlib
import io
import json
import logging
import os
import uuid

import psycopg2
import pytest

from helpers import root_dict
from helpers import update_root
from multidb import cli
from multidb.config import collectionFromString

ROLE = 'mdb_secret'

CONFIG = """
%import relstorage
<multidb>
  <zodb catalog>
    <relstorage>
      keep-history false
      <postgresql>
        dsn $server $auth dbname=$catalog
      </postgresql>
    </relstorage>
  </zodb>
  <tenants>
    expire-action drop
    snapshot-dir $snapshots
    template-database ${prefix}template
    <relstorage>
      keep-history false
      <postgresql>
        dsn $server $auth dbname=$prefix{name}
      </postgresql>
    </relstorage>
  </tenants>
</multidb>
"""


@pytest.fixture
def role(postgres):
    """A role that must give its password (returned), with a catalog
    database of its own."""
    password = 'pw-' + uuid.uuid4().hex
    hba = os.path.join(postgres.data, 'pg_hba.conf')
    with open(hba) as f:
        original = f.read()
    line = f'host all {ROLE} 127.0.0.1/32 scram-sha-256\n'
    postgres.sql(f'DROP ROLE IF EXISTS {ROLE}')
    postgres.sql(f"CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD '{password}'")
    with open(hba, 'w') as f:
        f.write(line + original)   # the first matching line decides
    postgres.sql('SELECT pg_reload_conf()')
    catalog = 'sec_' + uuid.uuid4().hex[:8]
    postgres.sql(f'CREATE DATABASE {catalog} OWNER {ROLE}')
    server = f'host=127.0.0.1 port={postgres.port} user={ROLE}'
    with pytest.raises(psycopg2.OperationalError, match='password'):
        psycopg2.connect(f'{server} dbname={catalog}').close()
    yield password, server, catalog
    with open(hba, 'w') as f:
        f.write(original)
    postgres.sql('SELECT pg_reload_conf()')
    for (name,) in postgres.sql(
            f"SELECT datname FROM pg_database d JOIN pg_roles r"
            f" ON d.datdba = r.oid WHERE r.rolname = '{ROLE}'"):
        postgres.sql(f'DROP DATABASE "{name}" WITH (FORCE)')
    postgres.sql(f'DROP ROLE {ROLE}')


@pytest.fixture
def setup(role, tmp_path, monkeypatch):
    password, server, catalog = role
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv('PGPASSWORD', raising=False)
    monkeypatch.setenv('MULTIDB_ARCHIVE_KEY', 'k' * 32)
    (tmp_path / 'app.conf').write_text(CONFIG)
    defines = {'server': server, 'auth': f'password={password}',
               'catalog': catalog, 'prefix': 's' + uuid.uuid4().hex[:6] + '_',
               'snapshots': str(tmp_path / 'snapshots')}
    return password, defines


def _main(defines, *argv):
    """The command in this process: (code, stdout, stderr)."""
    args = ['-C', 'app.conf']
    for k, v in defines.items():
        args += ['-D', f'{k}={v}']
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(args + list(argv))
    return code, out.getvalue(), err.getvalue()


def _raw_records(defines):
    """The catalog's records as stored (settings and all)."""
    c = collectionFromString(CONFIG, defines=defines)
    try:
        with c.transaction() as g:
            tree = g.root('catalog')['multidb.tenants']
            return {name: dict(rec.settings) for name, rec in tree.items()}
    finally:
        c.close()


def test_password_nowhere_but_in_the_configuration(setup, caplog):
    password, defines = setup
    caplog.set_level(logging.DEBUG)
    seen = []
    for argv in [('create', 'acme'), ('show', 'acme'),
                 ('--json', 'show', 'acme'), ('--json', 'list'),
                 ('--json', 'create', 'bravo'), ('snapshot', 'acme'),
                 ('clone', 'acme', 'copy'), ('archive', 'acme', 'a.multidb'),
                 ('--json', 'repair'), ('drop', 'bravo'),
                 ('restore', 'a.multidb', 'again')]:
        code, out, err = _main(defines, *argv)
        assert code == 0, (argv, err)
        seen.append(out + err)
    output = '\n'.join(seen)
    assert "created tenant 'acme' at dbname=" in output
    assert f'user={ROLE}' in output
    assert password not in output
    records = _raw_records(defines)
    assert sorted(records) == ['acme', 'again', 'copy']
    for settings in records.values():
        assert password not in json.dumps(settings)
        assert 'password' not in settings['dsn']
    from multidb.tenants.archive import read_header
    assert password not in json.dumps(read_header('a.multidb',
                                                  verify=False))
    with open('a.multidb', 'rb') as f:
        assert password.encode() not in f.read()
    logged = '\n'.join([caplog.text] + [
        repr(r.args) + str(r.msg) for r in caplog.records])
    assert password not in logged
    # And the tenants work: the password comes from the configuration.
    c = collectionFromString(CONFIG, defines=defines)
    try:
        update_root(c, 'acme', v=1)
        assert root_dict(c, 'copy') == {}
        assert root_dict(c, 'acme') == {'v': 1}
    finally:
        c.close()


def test_rotated_password(setup, postgres):
    password, defines = setup
    assert _main(defines, 'create', 'acme')[0] == 0
    new = 'rotated-' + uuid.uuid4().hex
    postgres.sql(f"ALTER ROLE {ROLE} PASSWORD '{new}'")
    rotated = dict(defines, auth=f'password={new}')
    code, out, err = _main(rotated, '--json', 'repair')
    assert (code, json.loads(out)) == (0, []), err
    c = collectionFromString(CONFIG, defines=rotated)
    try:
        update_root(c, 'acme', v='after rotation')
        assert root_dict(c, 'acme') == {'v': 'after rotation'}
    finally:
        c.close()
    # The old password is nowhere to be used any more.
    c = collectionFromString(CONFIG, defines=defines)
    try:
        with pytest.raises(psycopg2.OperationalError,
                           match='password authentication failed'):
            root_dict(c, 'acme')
    finally:
        c.close()


@pytest.mark.parametrize('how', ['PGPASSWORD', 'passfile', 'environment'])
def test_password_from_libpq_or_the_environment(setup, monkeypatch,
                                                tmp_path, how):
    password, defines = setup
    if how == 'PGPASSWORD':
        monkeypatch.setenv('PGPASSWORD', password)
        defines = dict(defines, auth='')
    elif how == 'passfile':
        passfile = tmp_path / 'pgpass'
        passfile.write_text(f'*:*:*:{ROLE}:{password}\n')
        passfile.chmod(0o600)
        defines = dict(defines, auth=f'passfile={passfile}')
    else:
        # ZConfig's $(NAME) in the file reads the environment.
        monkeypatch.setenv('MDB_TEST_PASSWORD', password)
        (tmp_path / 'app.conf').write_text(CONFIG.replace(
            '$auth', 'password=$(MDB_TEST_PASSWORD)'))
    code, out, err = _main(defines, 'create', 'acme')
    assert code == 0, err
    assert password not in out + err
    assert password not in json.dumps(_raw_records(defines))
    c = collectionFromString((tmp_path / 'app.conf').read_text(),
                             defines=defines)
    try:
        update_root(c, 'acme', v=how)
        assert root_dict(c, 'acme') == {'v': how}
    finally:
        c.close()


def test_record_of_old_holding_a_password(setup):
    # A record made before passwords were kept out: never printed, and
    # relocate takes the password out of it.
    password, defines = setup
    assert _main(defines, 'create', 'acme')[0] == 0
    c = collectionFromString(CONFIG, defines=defines)
    try:
        t = c.tenants
        rec = t.get('acme')
        leaky = dict(rec.settings,
                     dsn=rec.settings['dsn'] + f' password={password}')
        with t._catalog(write=True) as (tree, g):
            tree['acme'] = rec.replace(settings=leaky)
    finally:
        c.close()
    for argv in [('show', 'acme'), ('--json', 'show', 'acme'),
                 ('--json', 'list')]:
        code, out, err = _main(defines, *argv)
        assert code == 0 and password not in out + err, argv
    code, out, err = _main(defines, '--json', 'relocate')
    assert code == 0, err
    assert [(d['name'], d['action']) for d in json.loads(out)] == [
        ('acme', 'relocated')]
    assert password not in json.dumps(_raw_records(defines))
    c = collectionFromString(CONFIG, defines=defines)
    try:
        assert root_dict(c, 'acme') == {}
    finally:
        c.close()


@pytest.mark.parametrize('dsn, expected', [
    ('host=db user=app password=s3cret dbname=t_x',
     'user=app dbname=t_x host=db'),
    ("host=db password='s3 cr\\'et' sslpassword=k3y dbname=t_x",
     'dbname=t_x host=db'),
    ('postgresql://app:s3cret@db:5432/t_x?sslmode=require',
     'user=app dbname=t_x host=db port=5432 sslmode=require'),
    ('host=db dbname=t_x', 'host=db dbname=t_x'),
])
def test_strip_credentials(dsn, expected):
    from multidb.tenants.catalog import strip_credentials
    assert strip_credentials(dsn) == expected
