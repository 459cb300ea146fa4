"""max_open holds as a bound under a low file-descriptor limit, and
running out of descriptors is a clear error, never a raw OSError."""
import subprocess
import sys
import textwrap

import pytest
from ZODB.FileStorage import FileStorage

import multidb


def _run(tmp_path, body):
    script = textwrap.dedent('''
        import functools, json, os, resource, sys
        import transaction
        from ZODB.FileStorage import FileStorage
        import multidb
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        folder = sys.argv[1]
        def fds():
            return len(os.listdir('/proc/self/fd'))
    ''') + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, '-c', script, str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_one_thread_reads_100_databases_under_ulimit_64(tmp_path):
    # A group holding one database reads 100 others in turn: the default
    # max_open (from the limit: 12) holds, and nothing fails with EMFILE.
    out = _run(tmp_path, '''
        c = multidb.Collection()
        assert c.max_open == 12, c.max_open
        c.declare('main', functools.partial(FileStorage,
                                            f'{folder}/main.fs'))
        for i in range(100):
            c.declare(f't{i}', functools.partial(FileStorage,
                                                 f'{folder}/t{i}.fs'))
        peak = peak_fds = 0
        for i in range(100):
            with c.transaction() as g:
                g.root('main')['last'] = i
                g.root(f't{i}')['n'] = i
                peak = max(peak, c.open_count)
                peak_fds = max(peak_fds, fds())
        c.close()
        print(peak, peak_fds)
    ''')
    peak, peak_fds = map(int, out.split())
    # main and one tenant are in use: beyond that, max_open holds.
    assert peak <= 12
    assert peak_fds < 64


def test_out_of_descriptors_is_a_clear_error(tmp_path):
    # Descriptors eaten by something else, nothing idle to close: a
    # FileLimitReached naming the database, no raw OSError, nothing left
    # half-open.
    out = _run(tmp_path, '''
        c = multidb.Collection(max_open=10)
        c.declare('a', functools.partial(FileStorage, f'{folder}/a.fs'))
        hog = []
        try:
            while True:
                hog.append(open(os.devnull))
        except OSError:
            pass
        hog[-1].close()     # one left: not enough for a FileStorage
        try:
            with c.transaction() as g:
                g.root('a')
        except multidb.FileLimitReached as e:
            print(type(e).__name__, isinstance(e, OSError), e.name)
            print(e)
        for f in hog:
            f.close()
        # The name is still declared, and opens once descriptors are back.
        with c.transaction() as g:
            g.root('a')['ok'] = True
        print(c.is_open('a'))
        c.close()
    ''')
    lines = out.splitlines()
    assert lines[0] == 'FileLimitReached True a'
    assert "cannot open database 'a'" in lines[1]
    assert 'ulimit -n' in lines[1]
    assert lines[2] == 'True'


@pytest.mark.slow
def test_one_thread_reads_100_tenants_under_ulimit_64(tmp_path):
    # As above, with tenants: every group also holds the catalog.
    out = _run(tmp_path, '''
        def collection():
            c = multidb.Collection()
            c.declare('catalog', functools.partial(FileStorage,
                                                   f'{folder}/catalog.fs'))
            t = multidb.Tenants(c, catalog='catalog',
                                backend=multidb.FileStorageBackend(
                                    folder + '/tenants/{name}.fs'))
            return c, t
        c, t = collection()
        for i in range(100):
            t.create(f't{i}')
        c.close()
        c, t = collection()
        peak = peak_fds = 0
        for i in range(100):
            with c.transaction() as g:
                g.root(f't{i}')['n'] = i
                peak = max(peak, c.open_count)
                peak_fds = max(peak_fds, fds())
        c.close()
        print(c.max_open, peak, peak_fds)
    ''')
    max_open, peak, peak_fds = map(int, out.split())
    assert peak <= max_open
    assert peak_fds < 64


def test_evicting_holds_no_descriptor_beyond_max_open(tmp_path, monkeypatch):
    import functools
    # Closing an evicted FileStorage looks at its index file (to skip
    # rewriting a current one): only once its other files are closed, so
    # the collection never holds more than max_open x 4 descriptors of its
    # databases' files.
    import builtins
    import os

    import multidb.glue as glue
    here = str(tmp_path) + '/'
    peak = [0]

    def ours():
        n = 0
        for fd in os.listdir('/proc/self/fd'):
            try:
                n += os.readlink(f'/proc/self/fd/{fd}').startswith(here)
            except OSError:
                pass
        return n

    def spy_open(*a, **kw):
        f = builtins.open(*a, **kw)
        peak[0] = max(peak[0], ours())
        return f
    monkeypatch.setattr(glue, 'open', spy_open, raising=False)
    c = multidb.Collection(max_open=2)
    try:
        for n in 'abcde':
            c.declare(n, functools.partial(FileStorage, str(tmp_path / n)))
        for n in 'abcdeabc':
            with c.transaction() as g:
                g.root(n)['v'] = 1      # written: index rewritten on close
            with c.transaction() as g:
                g.root(n).get('v')
    finally:
        c.close()
    assert 0 < peak[0] <= 2 * multidb.collection.FDS_PER_DATABASE
