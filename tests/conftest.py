import functools
import os

import pytest
import transaction
from ZODB.FileStorage import FileStorage

import multidb
from helpers import pg_servers  # noqa: F401 (the fixtures, defined once)
from helpers import postgres  # noqa: F401

# Markers (registered in setup.cfg): ``servers`` for the tests that start
# PostgreSQL or ZEO, given here to every test using a server fixture;
# ``slow`` for those that take a second or more (about 2 s on a busy
# machine), marked in their modules, and here for the modules other work
# owns (by test function).  ``pytest -m "not servers and not slow"`` runs
# the rest in seconds.
_SERVER_FIXTURES = {'postgres', 'pg_db', 'zeo_server', 'pg_servers'}
_SLOW = {
    ('test_readme.py', 'test_the_demo_after_the_main_job_leaves_it_healthy'),
    ('test_backends.py', 'test_name_lock_waits_for_another_process'),
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _SERVER_FIXTURES & set(getattr(item, 'fixturenames', ())):
            item.add_marker(pytest.mark.servers)
        function = getattr(item, 'originalname', item.name)
        if (os.path.basename(str(item.fspath)), function) in _SLOW:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def fs_factory(tmp_path):
    """fs_factory(name) -> a zero-argument FileStorage factory in tmp_path."""
    def make(name):
        return functools.partial(FileStorage, str(tmp_path / f'{name}.fs'))
    return make


@pytest.fixture
def coll():
    c = multidb.Collection()
    yield c
    c.close()


@pytest.fixture(autouse=True)
def _clean_transaction():
    # Tests use the thread's default transaction manager; leave none open.
    yield
    transaction.abort()


def fds():
    return len(os.listdir('/proc/self/fd'))


# -- servers -------------------------------------------------------------
# Started by the test run itself, on loopback, in temporary folders: no
# test is skipped for want of a server (tests/run installs PostgreSQL's
# binaries when they are missing).

# (postgres: the session's cluster, from helpers.)

@pytest.fixture
def pg_db(postgres, request):
    """A fresh, empty database name on the session's cluster (dropped
    afterwards, whatever the test did)."""
    import re
    name = 'test_' + re.sub(r'[^a-z0-9_]', '_',
                            request.node.name.lower())[:40]
    postgres.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    postgres.sql(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        postgres.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def zeo_server(tmp_path):
    """A ZEO server serving storages '1', '2' and 'catalog', stopped
    (killed if it hangs) however the test ends."""
    from servers import ZEOServer
    server = ZEOServer(('1', '2', 'catalog'), folder=str(tmp_path / 'zeo'))
    try:
        yield server.start()
    finally:
        server.close()


@pytest.fixture
def data(tmp_path):
    """The folder $data of the test configurations, tmp_path/data, with
    its tenants and archive folders."""
    d = tmp_path / 'data'
    for sub in ('tenants', 'archive'):
        (d / sub).mkdir(parents=True)
    return d
