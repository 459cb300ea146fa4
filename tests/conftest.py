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
