"""Small helpers shared by the tests (and the docs: docs/conftest.py).

The fixtures of ``tests/conftest.py`` (``data``, ``postgres``, ``pg_db``,
``zeo_server``) go with these: ``postgres`` is defined here, once, for
both conftests.
"""
import contextlib
import errno
import functools
import os
import subprocess

import pytest


def _coll(where):
    # A Collection, or Tenants (whose collection is meant).
    return getattr(where, 'collection', where)


def root_dict(where, name):
    """The root of database name as a dict, read in a transaction."""
    with _coll(where).transaction() as g:
        return dict(g.root(name))


def update_root(where, name, **values):
    """Set values in the root of database name, in a transaction."""
    with _coll(where).transaction() as g:
        g.root(name).update(values)


def tree(root):
    """Every file and folder under root, relative to it, sorted."""
    return sorted(os.path.relpath(os.path.join(p, f), root)
                  for p, dirs, files in os.walk(root) for f in files + dirs)


def run_cli(capsys, *argv, config=None):
    """Run the multidb command in this process: (code, stdout, stderr);
    config: a configuration given as -C first."""
    from multidb import cli
    if config is not None:
        argv = ('-C', str(config)) + argv
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# A FileStorage catalog and FileStorage tenants under ./data (the tests
# run in their own folder); keys: more keys of the <tenants> section.
_TENANTS_CONFIG = """
%define data ./data
<multidb>
  <zodb catalog>
    <filestorage>
      path $data/catalog.fs
    </filestorage>
  </zodb>
  <tenants>
    KEYS
    <filestorage>
      path TENANTS/{name}.fs
    </filestorage>
  </tenants>
</multidb>
"""


def tenants_config(keys='', tenants='$data/tenants'):
    """The text of a configuration with a FileStorage catalog and
    FileStorage tenants (in the folder tenants)."""
    return _TENANTS_CONFIG.replace('KEYS', keys).replace('TENANTS', tenants)


def fs_tenants(folder, *, catalog='catalog.fs', tenants='tenants', **kw):
    """(collection, tenants) built in code: a FileStorage catalog
    (folder/catalog) and FileStorage tenants (folder/tenants/NAME.fs);
    kw: more arguments of Tenants.  The caller closes the collection."""
    import multidb
    from ZODB.FileStorage import FileStorage
    folder = str(folder)
    c = multidb.Collection()
    c.declare('catalog', functools.partial(
        FileStorage, os.path.join(folder, catalog)))
    t = multidb.Tenants(c, catalog='catalog', backend=multidb.FileStorageBackend(
        os.path.join(folder, tenants, '{name}.fs')), **kw)
    return c, t


# -- full disks ---------------------------------------------------------------

@contextlib.contextmanager
def tmpfs(path, size, owner=None):
    """A tmpfs of size mounted at path (made), owned by the user owner,
    unmounted (lazily: a server that hung may hold it) afterwards."""
    os.makedirs(path, exist_ok=True)
    done = subprocess.run(
        ['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)],
        capture_output=True, text=True)
    if done.returncode:
        pytest.fail(f"mounting a tmpfs for the full-disk tests failed"
                    f" (these tests run as root): {done.stderr.strip()}")
    try:
        if owner is not None:
            import pwd
            pw = pwd.getpwnam(owner)
            os.chown(path, pw.pw_uid, pw.pw_gid)
        yield path
    finally:
        subprocess.run(['umount', '-l', str(path)], check=True)


def fill(folder, leave=0):
    """Fill folder's file system, leaving about leave bytes; the filler's
    path (remove it to make room)."""
    filler = os.path.join(folder, 'filler')
    with open(filler, 'wb', buffering=0) as f:
        try:
            while True:
                f.write(b'x' * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    if leave:
        os.truncate(filler, max(0, os.path.getsize(filler) - leave))
    return filler


# -- servers ------------------------------------------------------------------

@pytest.fixture(scope='session')
def postgres():
    """A throwaway PostgreSQL cluster for the whole session, stopped and
    removed however the session ends.  (Imported by tests/conftest.py and
    docs/conftest.py.)"""
    from servers import PostgreSQL
    pg = PostgreSQL()
    try:
        yield pg.start()
    finally:
        pg.close()


@pytest.fixture(scope='session')
def pg_servers(postgres):
    """Three PostgreSQL clusters on loopback ports, standing in for three
    hosts: the session's and two more, started on first use."""
    from servers import PostgreSQL
    more = []
    try:
        for _ in range(2):
            more.append(PostgreSQL())
            more[-1].start()
        yield [postgres] + more
    finally:
        for pg in more:
            pg.close()


def repair_while_paused(worker, step, repair_argv, env, paused=None):
    """worker (a process started with MULTIDB_PAUSE_AT=step, stdin and
    stdout pipes) pauses at step; run repair_argv (a repair printing its
    findings as JSON) meanwhile, then let the worker go on.  Both must
    succeed; returns the repair's findings.  A repair that waits for the
    operation's name lock ends after the worker.  paused(): checks made
    while the worker is paused, before the repair starts."""
    import json
    import subprocess
    import time
    repair = None
    try:
        line = worker.stdout.readline()
        assert line == f'PAUSED {step}\n', worker.stderr.read()
        if paused is not None:
            paused()
        repair = subprocess.Popen(repair_argv, env=env,
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        time.sleep(2)   # long enough for a repair that takes no lock
        worker.stdin.write('\n')
        worker.stdin.flush()
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        out, err = repair.communicate(timeout=60)
        assert repair.returncode == 0, err
    finally:
        for proc in (worker, repair):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    return json.loads(out)


def run_threads(target, count, timeout):
    """Run target(k) in count threads (k = 0 .. count - 1), wait for them
    up to timeout seconds each; the threads still alive (a list)."""
    import threading
    threads = [threading.Thread(target=target, args=(k,))
               for k in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return [t for t in threads if t.is_alive()]
