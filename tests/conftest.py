import functools
import os

import pytest
import transaction
from ZODB.FileStorage import FileStorage

import multidb


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

@pytest.fixture(scope='session')
def postgres():
    """A throwaway PostgreSQL cluster for the whole session."""
    from servers import PostgreSQL
    pg = PostgreSQL().start()
    yield pg
    pg.close()


@pytest.fixture
def pg_db(postgres, request):
    """A fresh, empty database name on the session's cluster (dropped
    afterwards)."""
    import re
    name = 'test_' + re.sub(r'[^a-z0-9_]', '_',
                            request.node.name.lower())[:40]
    postgres.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    postgres.sql(f'CREATE DATABASE "{name}"')
    yield name
    postgres.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def zeo_server(tmp_path):
    """A ZEO server serving storages '1' and 'catalog' (stopped after)."""
    from servers import ZEOServer
    server = ZEOServer(('1', '2', 'catalog'), folder=str(tmp_path / 'zeo'))
    server.start()
    yield server
    server.close()
