"""Tenants on several PostgreSQL servers: one backend over many.

See ``multidb.interfaces.IBackend``.  A ``<tenants>`` section with
``<server NAME>`` sections makes a ``ServerSet``: one
``RelStorageBackend`` per server (the template's own ``<postgresql>`` is
the server named by ``server-name``, ``main`` by default), the same
RelStorage options for all.  A tenant's record says its server
(``settings['server']``; a record made before servers were configured
has none and is on the main one), and every operation on a tenant goes to
that server's backend.

New tenants are placed by a policy (``placement``): ``fewest-tenants``
(the default: the server with the fewest tenant databases) or
``most-free-space`` (the server whose ``capacity`` less the size of its
databases is largest; every server then declares a capacity), unless the
caller names the server.  A server that cannot be reached is passed over,
with a warning; only its own tenants are affected.

Two things stay on the main server: the locks of tenant names (a
lifecycle operation on any tenant takes its name's lock there, so that
two processes never run two operations on one name, whichever servers
they touch) and the snapshot database, keyed by tenant id, which a move
therefore leaves where it is.

Moving a tenant between servers is ``multidb.backends.pgmove``.
"""
import contextlib
import logging
import threading
import time
from typing import Any
from typing import Callable
from typing import Dict
from typing import Iterator
from typing import List
from typing import Mapping
from typing import Optional
from typing import Sequence
from typing import Tuple

from zope.interface import implementer

from multidb.errors import NotConfigured
from multidb.errors import UnknownServer
from multidb.interfaces import IServerSet
from multidb.retry import lost_connection

log = logging.getLogger(__name__)

PLACEMENTS = ('fewest-tenants', 'most-free-space')
# A stray database of another server than the main one: its path says
# which (the main server's keep their old spelling).
_STRAY = 'postgresql://'

_Settings = Mapping[str, Any]


@implementer(IServerSet)
class ServerSet:
    """servers: server name -> its ``RelStorageBackend`` (the first is
    the main one unless main names another); placement: one of
    ``PLACEMENTS``; capacities: server name -> bytes (most-free-space)."""

    kind = 'relstorage'

    def __init__(self, servers: Mapping[str, Any], *,
                 main: Optional[str] = None,
                 placement: str = 'fewest-tenants',
                 capacities: Optional[Mapping[str, int]] = None) -> None:
        if not servers:
            raise ValueError("a server set needs at least one server")
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, not"
                             f" {placement!r}")
        self.servers = dict(servers)
        self.main = main if main is not None else next(iter(self.servers))
        if self.main not in self.servers:
            raise ValueError(f"the main server {self.main!r} is not one of"
                             f" the servers ({', '.join(self.servers)})")
        self.placement = placement
        self.capacities = dict(capacities or {})
        if placement == 'most-free-space':
            lacking = [s for s in self.servers if s not in self.capacities]
            if lacking:
                raise ValueError(
                    f"placement most-free-space needs a capacity for every"
                    f" server: {', '.join(lacking)} has none")
        #: How long what placement asked of a server (its tenants, their
        #: size) is taken as still true, in seconds.
        self.placement_ttl = 5.0
        self._usage_cache: Dict[str, Any] = {}
        self._usage_lock = threading.Lock()
        first = self.servers[self.main]
        # What the core and the other parts read of a backend.
        self.keep_history = first.keep_history
        self.snapshot_dir = first.snapshot_dir
        self.snapshot_database = first.snapshot_database
        # Snapshots of every tenant are kept by the main server's backend
        # (see the module's docstring).
        for backend in self.servers.values():
            backend.snapshot_owner = first

    @classmethod
    def from_template(cls, template: Any) -> 'ServerSet':
        """The server set of a ``<tenants>`` template with ``<server>``
        sections: what its storage kind's backend makes of it
        (``RelStorageBackend.from_template``)."""
        from multidb.backends import backend_class
        backend = backend_class(template.kind).from_template(template)
        if not isinstance(backend, cls):
            raise ValueError("the tenants template has no <server>"
                             " sections")
        return backend

    def __repr__(self):
        return f"<ServerSet {', '.join(self.servers)} main={self.main!r}>"

    # -- which server ---------------------------------------------------

    def server_names(self) -> List[str]:
        return list(self.servers)

    def check_server(self, server: str) -> str:
        """server if it is configured, else UnknownServer."""
        if server not in self.servers:
            raise UnknownServer(server, ', '.join(self.servers))
        return server

    def server_of(self, settings: _Settings) -> str:
        return settings.get('server') or self.main

    def _at(self, settings: _Settings) -> Any:
        server = self.server_of(settings)
        try:
            return self.servers[server]
        except KeyError:
            raise UnknownServer(server, ', '.join(self.servers)) from None

    def describe_server(self, server: str) -> str:
        return self.servers[self.check_server(server)].describe_server()

    def status(self) -> List[Dict[str, Any]]:
        """One dict per server: name, main, reachable, error, tenants
        (its tenant databases), bytes (their size), capacity."""
        out = []
        for name, backend in self.servers.items():
            entry = {'name': name, 'main': name == self.main,
                     'where': backend.describe_server(),
                     'capacity': self.capacities.get(name)}
            try:
                count, size = backend.usage()
                entry.update(reachable=True, error=None, tenants=count,
                             bytes=size)
            except Exception as e:
                entry.update(reachable=False,
                             error=' '.join(str(e).split()) or
                             type(e).__name__, tenants=None, bytes=None)
            out.append(entry)
        return out

    def _usage(self, server):
        """(count, size) of server, asked at most every placement_ttl
        seconds (a burst of creates asks once); an error is remembered as
        long."""
        now = time.monotonic()
        with self._usage_lock:
            cached = self._usage_cache.get(server)
            if cached is not None and now - cached[0] < self.placement_ttl:
                if isinstance(cached[1], Exception):
                    raise cached[1]
                return cached[1]
        try:
            found = self.servers[server].usage(
                sizes=self.placement == 'most-free-space')
        except Exception as e:
            with self._usage_lock:
                self._usage_cache[server] = (now, e)
            raise
        with self._usage_lock:
            self._usage_cache[server] = (now, found)
        return found

    def _placed(self, server):
        # One more tenant there, until the server is asked again.
        with self._usage_lock:
            cached = self._usage_cache.get(server)
            if cached is not None and not isinstance(cached[1], Exception):
                count, size = cached[1]
                self._usage_cache[server] = (cached[0], (count + 1, size))

    def place(self, name: str) -> str:
        """The server for a new tenant, by the placement policy, among
        the servers that answer (ties: the order of the configuration).
        What the servers hold is asked at most every ``placement_ttl``
        seconds, and counted here in between."""
        best, best_key, errors = None, None, []
        for server in self.servers:
            try:
                count, size = self._usage(server)
            except Exception as e:
                errors.append(f"{server}: {' '.join(str(e).split())}")
                log.warning("tenant server %r cannot be reached; a new"
                            " tenant is placed elsewhere: %s", server, e)
                continue
            if self.placement == 'most-free-space':
                key = -(self.capacities[server] - size)
            else:
                key = count
            if best_key is None or key < best_key:
                best, best_key = server, key
        if best is None:
            raise NotConfigured(f"no tenant server can be reached to place"
                                f" tenant {name!r}: {'; '.join(errors)}")
        self._placed(best)
        return best

    # -- settings -------------------------------------------------------

    def settings_for(self, name: str, server: Optional[str] = None
                     ) -> Dict[str, Any]:
        """A new tenant's settings on server (default: the placement's
        choice)."""
        server = self.check_server(server) if server is not None \
            else self.place(name)
        settings = self.servers[server].settings_for(name)
        settings['server'] = server
        return settings

    def settings_on(self, settings: _Settings, server: str
                    ) -> Dict[str, Any]:
        """The settings of the same tenant (its id, kind, template) on
        another server: where a move puts it."""
        name = self._at(settings).name_of(settings['dbname'])
        new = self.servers[self.check_server(server)].relocated(
            settings, name)
        new['server'] = server
        return new

    def relocated(self, record_settings: _Settings,
                  name: str) -> Dict[str, Any]:
        new = self._at(record_settings).relocated(record_settings, name)
        new['server'] = self.server_of(record_settings)
        return new

    def factory(self, settings: _Settings, *, name: Optional[str] = None,
                create: bool = False) -> Callable[[], Any]:
        return self._at(settings).factory(settings, name=name,
                                          create=create)

    def describe(self, settings: _Settings) -> str:
        return (f"{self._at(settings).describe(settings)} on server"
                f" {self.server_of(settings)!r}")

    def same_place(self, a: _Settings, b: _Settings) -> bool:
        return self.server_of(a) == self.server_of(b) and \
            self._at(a).same_place(a, b)

    def place_key(self, settings: _Settings) -> str:
        return (f"{self.server_of(settings)}:"
                f"{self._at(settings).place_key(settings)}")

    # -- locks (on the main server) ---------------------------------------

    def name_lock(self, name: str) -> Any:
        return self.servers[self.main].name_lock(name)

    def check_lock(self, name: str) -> bool:
        return self.servers[self.main].check_lock(name)

    # -- one tenant's storage, on its server --------------------------------

    def exists(self, settings: _Settings) -> bool:
        with self._watch(settings):
            return self._at(settings).exists(settings)

    def identify(self, settings: _Settings) -> Optional[str]:
        with self._watch(settings):
            return self._at(settings).identify(settings)

    def mark(self, settings: _Settings) -> None:
        self._at(settings).mark(settings)

    def prepare(self, settings: _Settings) -> None:
        with self._watch(settings):
            self._at(settings).prepare(settings)

    @contextlib.contextmanager
    def _watch(self, settings):
        # A server lost while making a tenant: placement asks it again
        # before it puts the next tenant there.
        try:
            yield
        except Exception as e:
            if lost_connection(e):
                with self._usage_lock:
                    self._usage_cache.pop(self.server_of(settings), None)
            raise

    def check_destroy(self, settings: _Settings,
                      name: Optional[str] = None) -> None:
        self._at(settings).check_destroy(settings, name)

    def destroy(self, settings: _Settings) -> None:
        self._at(settings).destroy(settings)

    def is_locked(self, settings: _Settings) -> bool:
        return self._at(settings).is_locked(settings)

    def open_data(self, db: Any, settings: _Settings) -> Any:
        return self._at(settings).open_data(db, settings)

    def load(self, settings: _Settings, fs_path: str,
             progress: Any = None) -> None:
        self._at(settings).load(settings, fs_path, progress)

    def tmp_path(self, settings: _Settings) -> str:
        return self._at(settings).tmp_path(settings)

    def size(self, settings: _Settings) -> Optional[int]:
        return self._at(settings).size(settings)

    def sizes(self, many: Sequence[_Settings]) -> List[Optional[int]]:
        """One query per server."""
        by_server: Dict[str, List[int]] = {}
        for i, s in enumerate(many):
            by_server.setdefault(self.server_of(s), []).append(i)
        out: List[Optional[int]] = [None] * len(many)
        for server, indexes in by_server.items():
            found = self._at({'server': server}).sizes(
                [many[i] for i in indexes])
            for i, size in zip(indexes, found):
                out[i] = size
        return out

    def last_opened(self, settings: _Settings) -> Optional[float]:
        return self._at(settings).last_opened(settings)

    def contents(self, settings: _Settings, db: Any = None) -> Any:
        return self._at(settings).contents(settings, db)

    def pack(self, settings: _Settings, db: Any, t: float, *,
             gc: bool = False) -> None:
        self._at(settings).pack(settings, db, t, gc=gc)

    def storage_config(self, settings: _Settings, *,
                       secrets: bool = False) -> str:
        return self._at(settings).storage_config(settings, secrets=secrets)

    # -- snapshots (kept by the main server's backend) ----------------------

    def snapshot_path(self, settings: _Settings, snapshot_id: str) -> str:
        return self._at(settings).snapshot_path(settings, snapshot_id)

    def snapshot_ids(self, settings: _Settings) -> List[str]:
        return self._at(settings).snapshot_ids(settings)

    def remove_snapshot(self, settings: _Settings,
                        snapshot_id: str) -> None:
        self._at(settings).remove_snapshot(settings, snapshot_id)

    def keep_snapshot(self, settings: _Settings, snapshot_id: str,
                      path: str) -> None:
        self._at(settings).keep_snapshot(settings, snapshot_id, path)

    def has_snapshot(self, settings: _Settings, snapshot_id: str) -> bool:
        return self._at(settings).has_snapshot(settings, snapshot_id)

    def describe_snapshot(self, settings: _Settings,
                          snapshot_id: str) -> str:
        return self._at(settings).describe_snapshot(settings, snapshot_id)

    def copy_snapshot(self, settings: _Settings, snapshot_id: str,
                      dest: str, progress: Any = None) -> int:
        return self._at(settings).copy_snapshot(settings, snapshot_id,
                                                dest, progress)

    def stored_snapshots(self) -> List[Dict[str, str]]:
        rows = self.servers[self.main].stored_snapshots()
        for row in rows:
            for backend in self.servers.values():
                name = backend.name_of(row['dbname'])
                if name != row['dbname']:
                    row['name'] = name
                    break
        return rows

    def remove_stored_snapshot(self, key: str, snapshot_id: str) -> None:
        self.servers[self.main].remove_stored_snapshot(key, snapshot_id)

    # -- every server (repair) ----------------------------------------------

    def same_cluster(self, a: str, b: str) -> bool:
        """Are servers a and b one PostgreSQL cluster (two spellings of
        its dsn)?  See RelStorageBackend.same_cluster."""
        return self.servers[self.check_server(a)].same_cluster(
            self.servers[self.check_server(b)])

    def scan(self) -> Iterator[Tuple[str, Dict[str, Any]]]:
        """Every server's tenant databases, each with its server.  A
        server that is an earlier one spelled another way is not scanned
        again (with a warning): its databases would be found twice, once
        at a place no record names.  Not the snapshot folders without a
        database, which one server's backend reports: the folder is
        shared by the servers, and a tenant moved to a server that names
        its database as another server would is no leftover there (see
        pgmove), so none is provably a leftover."""
        distinct: List[str] = []
        for server in self.servers:
            alias = next((d for d in distinct
                          if self.same_cluster(d, server)), None)
            if alias is not None:
                log.warning("tenant servers %r and %r are one PostgreSQL"
                            " cluster: %r is not scanned", alias, server,
                            server)
                continue
            distinct.append(server)
        for server in distinct:
            backend = self.servers[server]
            for name, settings in backend.scan():
                if not settings.get('present', True):
                    continue
                settings['server'] = server
                yield name, settings

    def stray_files(self) -> List[Tuple[Optional[str], str]]:
        found, seen = [], set()
        for server, backend in self.servers.items():
            for name, path in backend.stray_files():
                if path.startswith('postgresql:') and server != self.main:
                    path = f"{_STRAY}{server}/{path[len('postgresql:'):]}"
                if path not in seen:
                    seen.add(path)
                    found.append((name, path))
        return found

    def _stray_backend(self, path):
        if path.startswith(_STRAY):
            server, _, dbname = path[len(_STRAY):].partition('/')
            return self.servers[self.check_server(server)], \
                f'postgresql:{dbname}'
        return self.servers[self.main], path

    def stray_in_use(self, path: str) -> bool:
        backend, path = self._stray_backend(path)
        return backend.stray_in_use(path)

    def remove_stray(self, path: str) -> None:
        backend, path = self._stray_backend(path)
        backend.remove_stray(path)

    # -- moves (see multidb.backends.pgmove) ------------------------------

    def move_state(self, settings: _Settings) -> Optional[Dict[str, Any]]:
        """The mark an unfinished move left in settings' database (see
        pgmove.move_state), or None."""
        from multidb.backends import pgmove
        return pgmove.move_state(self._at(settings), settings)

    def unfence(self, settings: _Settings) -> bool:
        """Undo the fence of a move that did not switch the record (see
        pgmove.unfence)."""
        from multidb.backends import pgmove
        return pgmove.unfence(self._at(settings), settings)

    def drop_copy(self, settings: _Settings) -> bool:
        """Drop a copy of a tenant's database that a move left (its
        snapshots are the tenant's, kept)."""
        return self._at(settings).drop_database(settings)

    def clear_move_mark(self, settings: _Settings) -> None:
        from multidb.backends import pgmove
        pgmove.clear_mark(self._at(settings), settings)

    def mover(self, settings: _Settings, new: _Settings) -> Any:
        """A ``pgmove.Move`` of the tenant of settings to new (from
        settings_on)."""
        from multidb.backends import pgmove
        return pgmove.Move(self._at(settings), settings, self._at(new), new)
