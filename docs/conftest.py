"""The docs run as doctests, each in its own empty working folder.

``deployment.rst`` runs against real servers, as the tests do
(``tests/servers.py``): a ZEO server of its own, ``zeo_server``, and a
throwaway PostgreSQL cluster, ``postgres`` (the tests' own fixture, from
``tests/helpers.py``), whose ``dsn()`` the examples use; ``servers.rst``
also gets ``pg_servers``, three clusters.  Every server
started here is stopped however the doc ends.
"""
import os
import sys

import pytest
import transaction

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(_HERE), 'tests'))

from helpers import pg_servers  # noqa: F401,E402 (the tests' own fixtures)
from helpers import postgres  # noqa: F401,E402

# The docs that need servers, by file name (marked ``servers``); the docs
# slower than about 2 seconds (marked ``slow``).
_NEEDS_SERVERS = {'deployment.rst', 'servers.rst'}
_SLOW = {'deployment.rst', 'servers.rst'}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if os.path.dirname(str(item.fspath)) != _HERE:
            continue
        name = os.path.basename(str(item.fspath))
        if name in _NEEDS_SERVERS:
            item.add_marker(pytest.mark.servers)
        if name in _SLOW:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _doc_folder(tmp_path, monkeypatch, request, doctest_namespace):
    monkeypatch.chdir(tmp_path)
    server = None
    try:
        name = os.path.basename(str(request.node.fspath))
        if name in _NEEDS_SERVERS:
            from servers import ZEOServer
            server = ZEOServer(('main', 'catalog'),
                               folder=str(tmp_path / 'zeo'))
            doctest_namespace['zeo_server'] = server.start()
            doctest_namespace['postgres'] = request.getfixturevalue(
                'postgres')
            if name == 'servers.rst':
                doctest_namespace['pg_servers'] = request.getfixturevalue(
                    'pg_servers')
        yield
        transaction.abort()
    finally:
        if server is not None:
            server.close()   # killed if it hangs (tests/servers.py)
