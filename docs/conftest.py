"""The docs run as doctests, each in its own empty working folder."""
import pytest
import transaction


@pytest.fixture(autouse=True)
def _doc_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    yield
    transaction.abort()
