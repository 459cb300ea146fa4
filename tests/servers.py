"""Throwaway servers for the tests and benchmarks: a PostgreSQL cluster and
ZEO servers, each in a temporary folder on a free loopback port.

PostgreSQL refuses to run as root: as root, initdb and postgres run as the
``postgres`` user (the process itself switches user, so that signals reach
postgres, not a wrapper), which owns the cluster's folder.
"""
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _stop(proc, sig, timeout=30):
    """Stop a server process: sig, then wait up to timeout seconds; a
    process still running then (hung) is killed and waited for."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _wait(check, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except Exception as e:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not come up in {timeout}s:"
                                   f" {e}") from e
            time.sleep(0.05)


def pg_bindir():
    """The folder of initdb and postgres (Debian keeps them apart)."""
    found = sorted(glob.glob('/usr/lib/postgresql/*/bin/postgres'))
    if found:
        return os.path.dirname(found[-1])
    path = shutil.which('postgres')
    if path:
        return os.path.dirname(path)
    raise RuntimeError("PostgreSQL server binaries not found: install the"
                       " 'postgresql' package (tests/run does)")


class PostgreSQL:
    """A PostgreSQL cluster of its own: ``start()``, ``stop()``, ``dsn()``.

    fsync is off: the cluster is thrown away, and the tests are about
    multidb, not about PostgreSQL's durability.
    """

    def __init__(self, data=None):
        """data: the cluster's data folder (default: one in the cluster's
        temporary folder), e.g. on a file system of the test's own; it
        is not removed by close(), and must not exist or be empty."""
        self.bindir = pg_bindir()
        self.base = tempfile.mkdtemp(prefix='multidb-pg-')
        os.chmod(self.base, 0o755)
        self.data = data or os.path.join(self.base, 'data')
        self.port = free_port()
        self.proc = None
        self._as = {}
        if os.geteuid() == 0:
            import pwd
            pw = pwd.getpwnam('postgres')
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
            if data is not None and os.path.isdir(data):
                os.chown(data, pw.pw_uid, pw.pw_gid)
            self._as = {'user': pw.pw_uid, 'group': pw.pw_gid,
                        'extra_groups': [], 'cwd': self.base}
        subprocess.run(
            [os.path.join(self.bindir, 'initdb'), '-D', self.data,
             '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8'],
            check=True, capture_output=True, **self._as)

    def dsn(self, dbname='postgres'):
        return (f"host=127.0.0.1 port={self.port} user=postgres"
                f" dbname={dbname}")

    def start(self):
        self.proc = subprocess.Popen(
            [os.path.join(self.bindir, 'postgres'), '-D', self.data,
             '-p', str(self.port), '-k', self.base,
             '-c', 'listen_addresses=127.0.0.1',
             '-c', 'fsync=off', '-c', 'max_connections=300'],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            **self._as)
        try:
            _wait(self._ping, 30, 'PostgreSQL')
        except BaseException:
            self.stop()   # not left running when it did not come up
            raise
        return self

    def _ping(self):
        import psycopg2
        psycopg2.connect(self.dsn(), connect_timeout=2).close()

    def stop(self, sig=signal.SIGINT):
        """Stop the server (SIGINT: PostgreSQL's fast shutdown), killing
        it if it has not stopped within 30 seconds."""
        if self.proc is not None:
            proc, self.proc = self.proc, None
            _stop(proc, sig)

    def restart(self):
        self.stop()
        self.start()

    def close(self):
        try:
            self.stop()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def drop_databases(self, prefix):
        """Drop every database whose name starts with prefix (a test's
        own), whoever is connected to it."""
        for (name,) in self.sql('SELECT datname FROM pg_database'):
            if name.startswith(prefix):
                self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def sql(self, statement, dbname='postgres'):
        """Run one statement in autocommit; return the rows, if any."""
        import psycopg2
        conn = psycopg2.connect(self.dsn(dbname))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(statement)
                return cur.fetchall() if cur.description else None
        finally:
            conn.close()


class ZEOServer:
    """A ZEO server process serving named FileStorages from a folder."""

    def __init__(self, storages=('1',), folder=None):
        self.folder = folder or tempfile.mkdtemp(prefix='multidb-zeo-')
        os.makedirs(self.folder, exist_ok=True)
        self.storages = list(storages)
        self.port = free_port()
        self.proc = None
        self.conf = os.path.join(self.folder, 'zeo.conf')
        with open(self.conf, 'w') as f:
            f.write(f"<zeo>\n  address 127.0.0.1:{self.port}\n</zeo>\n")
            for name in self.storages:
                path = os.path.join(self.folder, f'{name}.fs')
                f.write(f"<filestorage {name}>\n  path {path}\n"
                        f"</filestorage>\n")

    @property
    def address(self):
        return ('127.0.0.1', self.port)

    def start(self):
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'ZEO.runzeo', '-C', self.conf],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait(self._ping, 30, 'ZEO')
        except BaseException:
            self.stop()   # not left running when it did not come up
            raise
        return self

    def _ping(self):
        socket.create_connection(self.address, timeout=1).close()

    def kill(self):
        """Kill the server as a crash would (SIGKILL)."""
        self.stop(signal.SIGKILL)

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Stop the server (SIGTERM); one that has not stopped within
        timeout seconds (hung) is killed."""
        if self.proc is not None:
            proc, self.proc = self.proc, None
            _stop(proc, sig, timeout)

    def close(self):
        try:
            self.stop()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def servers_config(folder, clusters, prefix, catalog, *,
                   placement='fewest-tenants', capacities=None, notify=True,
                   history=False):
    """A configuration file of tenants over clusters (PostgreSQL objects):
    the catalog in the database catalog of the first (made by the
    caller), tenants as databases PREFIX{name} on every cluster, the first
    the main server a, then b, c ...; returns its path."""
    main = clusters[0]
    capacities = capacities or {}
    more = ''.join(
        f"""
    <server {name}>
      dsn {pg.dsn(prefix + '{name}')}
      {f'capacity {capacities[name]}' if name in capacities else ''}
    </server>""" for name, pg in zip('bcdefgh', clusters[1:]))
    text = f"""%import relstorage
<multidb>
  <zodb catalog>
    <relstorage>
      keep-history false
      <postgresql>
        dsn {main.dsn(catalog)}
      </postgresql>
    </relstorage>
  </zodb>
  <tenants>
    server-name a
    {f"server-capacity {capacities['a']}" if 'a' in capacities else ''}
    placement {placement}
    catalog-notify {'on' if notify else 'off'}
    catalog-poll-interval 0.2
    template-database {prefix}template
    snapshot-dir {folder}/{prefix}snapshots
    <relstorage>
      keep-history {'true' if history else 'false'}
      <postgresql>
        dsn {main.dsn(prefix + '{name}')}
      </postgresql>
    </relstorage>{more}
  </tenants>
</multidb>
"""
    path = os.path.join(str(folder), f'{prefix}servers.conf')
    with open(path, 'w') as f:
        f.write(text)
    return path
