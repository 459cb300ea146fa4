"""The docs run as doctests, each in its own empty working folder.

``deployment.rst`` runs against real servers, as the tests do
(``tests/servers.py``): a ZEO server of its own, ``zeo_server``, and a
throwaway PostgreSQL cluster, ``postgres``, whose ``dsn()`` the examples
use.
"""
import os
import sys

import pytest
import transaction

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'tests'))

# The docs that need servers, by file name.
_NEEDS_SERVERS = {'deployment.rst'}


@pytest.fixture(scope='session')
def _postgres():
    from servers import PostgreSQL
    pg = PostgreSQL().start()
    yield pg
    pg.close()


@pytest.fixture(autouse=True)
def _doc_folder(tmp_path, monkeypatch, request, doctest_namespace):
    monkeypatch.chdir(tmp_path)
    server = None
    if os.path.basename(str(request.node.fspath)) in _NEEDS_SERVERS:
        from servers import ZEOServer
        server = ZEOServer(('main', 'catalog'), folder=str(tmp_path / 'zeo'))
        server.start()
        doctest_namespace['zeo_server'] = server
        doctest_namespace['postgres'] = request.getfixturevalue('_postgres')
    yield
    transaction.abort()
    if server is not None:
        server.close()
