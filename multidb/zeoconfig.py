"""ZEO clients that wait as long as the collection says.

A collection's ``zeo-wait-timeout`` (see ``multidb/multidb.xml``) applies
to every ZEO client storage it declares: ``<zeoclient>`` sections (ZODB's,
which have no key for it), ``zeo://`` URIs without a ``wait_timeout``
parameter, and ``<clientstorage>`` sections (ZEO's) left at ZEO's default.
:func:`_zeo_factory` turns a database's storage factory into one that
passes it.
"""
import functools
from typing import Any
from typing import Callable

import ZODB.config
import zodburi as _zodburi
from ZConfig.matcher import SectionValue

from multidb.sections import ZODBURIDatabase

#: The ``zeo-wait-timeout`` of a configuration without ``<multidb>``
#: section, in seconds (see multidb.xml for the reasons).
DEFAULT_ZEO_WAIT_TIMEOUT = 5.0
# ZEO's own default wait_timeout: ClientStorage's, and the default of
# the wait-timeout key of ZEO's <clientstorage>.
_ZEO_DEFAULT_WAIT = 30


def _open_zeoclient(config: SectionValue, wait_timeout: float):
    """ZODB.config.ZEOClient.open with a wait_timeout, which ZODB's
    ``<zeoclient>`` section has no key for (ZEO then waits 30 s)."""
    # A copy of ZODB.config.ZEOClient.open of ZODB 6.4 (the ClientStorage
    # arguments it makes from the section), plus wait_timeout.  A copy,
    # because that method builds the ClientStorage itself and takes no
    # further argument: there is no other way to pass one.  Compare it
    # with ZODB.config when ZODB changes the keys of <zeoclient>.
    from ZEO.ClientStorage import ClientStorage
    options = {}
    for key in ('blob_cache_size', 'blob_cache_size_check',
                'client_label'):
        if getattr(config, key) is not None:
            options[key] = getattr(config, key)
    return ClientStorage(
        [server.address for server in config.server],
        blob_dir=config.blob_dir, shared_blob_dir=config.shared_blob_dir,
        storage=config.storage, cache_size=config.cache_size,
        name=config.name, client=config.client, var=config.var,
        min_disconnect_poll=config.min_disconnect_poll,
        max_disconnect_poll=config.max_disconnect_poll,
        wait=config.wait, read_only=config.read_only,
        read_only_fallback=config.read_only_fallback,
        drop_cache_rather_verify=config.drop_cache_rather_verify,
        username=config.username, password=config.password,
        realm=config.realm, wait_timeout=wait_timeout, **options)


class _Override:
    """A section's values with some replaced (for ZEO's own datatype)."""

    def __init__(self, config: SectionValue, **values):
        self.__config = config
        self.__dict__.update(values)

    def __getattr__(self, name):
        return getattr(self.__config, name)


def _open_clientstorage(storage: Any, wait_timeout: float):
    return type(storage)(
        _Override(storage.config, wait_timeout=wait_timeout)).open()


def _zeo_factory(database: Any, factory: Callable, kind: str,
                 wait_timeout: float) -> Callable:
    """factory, made to use the collection's wait_timeout if it is a ZEO
    client that does not set its own (see multidb.xml)."""
    if isinstance(database, ZODBURIDatabase):
        uri = database.uri.uri
        if kind != 'zeoclient' or 'wait_timeout=' in uri:
            return factory
        sep = '&' if '?' in uri else '?'
        return _zodburi.resolve_uri(
            f"{uri}{sep}wait_timeout={wait_timeout:g}")[0]
    storage = database.config.storage
    if kind == 'zeoclient' and isinstance(storage, ZODB.config.ZEOClient):
        return functools.partial(_open_zeoclient, storage.config,
                                 wait_timeout)
    if kind == 'clientstorage' and getattr(
            storage.config, 'wait_timeout', None) == _ZEO_DEFAULT_WAIT:
        return functools.partial(_open_clientstorage, storage,
                                 wait_timeout)
    return factory
