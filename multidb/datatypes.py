"""The datatypes of configuration keys.

The functions that the component files (``multidb/multidb.xml``,
``tenants.xml``, ``zodburi.xml``) name as the ``datatype`` of their keys:
each turns a key's text into its value, or raises ``ValueError``, which
ZConfig reports with the key's file and line.
"""
import os
from typing import Optional

import ZConfig
import zodburi as _zodburi

from multidb.inputs import check_dotted_name
from multidb.inputs import parse_duration

#: The name of a database whose section has neither a name nor a
#: ``database-name``.  ZODB.config calls it ``''``, which a collection
#: refuses; ``'unnamed'`` is what ``ZODB.DB`` and zodburi call it.
UNNAMED = 'unnamed'

# Storage kinds of the zodburi schemes; other schemes show as themselves.
_URI_KINDS = {
    'file': 'filestorage', 'memory': 'mappingstorage', 'zeo': 'zeoclient',
    'demo': 'demostorage', 'postgres': 'relstorage', 'mysql': 'relstorage',
    'oracle': 'relstorage', 'sqlite': 'relstorage',
}


def max_open(value: str) -> Optional[int]:
    """``max-open``: a positive integer, or ``auto`` (None: the
    collection's default)."""
    if value.strip().lower() == 'auto':
        return None
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"max-open must be a positive integer or 'auto',"
                         f" not {value!r}") from None
    if n < 1:
        raise ValueError(f"max-open must be a positive integer or 'auto',"
                         f" not {value!r}")
    return n


def duration(value: str) -> float:
    """A duration in seconds, zero or more (what zero means is the key's
    to say): a number of seconds or a number and a unit ``ms``, ``s``,
    ``m``, ``h``, ``d`` (``30``, ``1.5s``, ``500ms``, ``2m``); see
    ``multidb.inputs.parse_duration``.  ZConfig's ``time-interval``
    spellings (``30``, ``5s``, ``2m``, ``1h``, ``1d``) are among them."""
    return parse_duration(value, zero=True)


def dotted_name(value: str) -> str:
    """``init``: the dotted name of a callable, ``package.module.name``
    or ``package.module:name``, checked for its syntax only: it is
    imported (``pkgutil.resolve_name``) when a tenant is created."""
    return check_dotted_name(value.strip())


def expire_action(value: str) -> str:
    """``expire-action``: ``drop`` or ``archive``."""
    v = value.strip().lower()
    if v not in ('drop', 'archive'):
        raise ValueError(f"expire-action must be 'drop' or 'archive', not"
                         f" {value!r}")
    return v


def archive_checksum(value: str) -> str:
    """``archive-checksum``: crc32 or sha256."""
    from multidb.tenants.archive import CHECKSUMS
    v = value.strip().lower()
    if v not in CHECKSUMS:
        raise ValueError(f"archive-checksum must be one of"
                         f" {', '.join(CHECKSUMS)}, not {value!r}")
    return v


def archive_key_file(value: str) -> str:
    """``archive-key-file``: the path (``~`` expanded) of a file holding
    the archive key, read now so that a missing file or a short key is a
    configuration error with its line.  The key stays out of every
    message."""
    from multidb.tenants.archive import key_from_file
    path = os.path.expanduser(value.strip())
    if not path:
        raise ValueError("archive-key-file must not be empty")
    try:
        key_from_file(path)
    except OSError as e:
        raise ValueError(f"cannot read the archive key file {path}:"
                         f" {e.strerror or e}") from None
    return path


def archive_allow(value: str) -> list:
    """``archive-allow``: modules (``package.module``) and single globals
    (``package.module:Name``) the pickles of restored archives may name,
    separated by spaces."""
    from multidb.tenants.archive import PicklePolicy
    entries = value.split()
    PicklePolicy(entries)   # refuse a bad or dangerous entry now
    return entries


def archive_dir(value: str) -> str:
    """``archive-dir``: a folder path (``~`` expanded), made on the first
    archive, so that a fresh data folder needs no ``mkdir``."""
    v = os.path.expanduser(value.strip())
    if not v:
        raise ValueError("archive-dir must not be empty")
    return v


class ResolvedURI:
    """A zodburi URI resolved when the configuration was loaded."""

    __slots__ = ('uri', 'factory', 'db_kwargs', 'database_name', 'kind')

    def __init__(self, uri, factory, db_kwargs, database_name, kind):
        self.uri = uri
        self.factory = factory
        self.db_kwargs = db_kwargs
        self.database_name = database_name
        self.kind = kind

    def __repr__(self):
        return f"<ResolvedURI {self.uri!r}>"


def zodburi(value: str) -> ResolvedURI:
    """``uri``: resolve with zodburi (which makes a factory and opens
    nothing), turning its errors into ValueError so ZConfig names the
    line."""
    uri = value.strip()
    scheme = uri.split(':', 1)[0] if ':' in uri else ''
    try:
        factory, dbkw = _zodburi.resolve_uri(uri)
    except _zodburi.NoResolverForScheme:
        raise ValueError(f"no zodburi resolver for the scheme {scheme!r}"
                         f" of {uri!r}") from None
    except (KeyError, ValueError, TypeError, ZConfig.ConfigurationError) \
            as e:
        # KeyError: UnknownDatabaseKeywords, or zconfig:// naming no
        # section; ConfigurationError: a bad file behind zconfig://.
        reason = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise ValueError(f"bad zodburi URI {uri!r}: {reason}") from None
    name = dbkw.pop('database_name', UNNAMED)
    return ResolvedURI(uri, factory, dbkw,
                       None if name == UNNAMED else name,
                       _URI_KINDS.get(scheme, scheme))
