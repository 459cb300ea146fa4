"""The tenant-name policy.

A tenant name becomes a file name, a PostgreSQL database name and a word on
a command line, so one policy keeps it safe for all three:

- ASCII lowercase letters, digits, ``_`` and ``-``;
- starting with a letter;
- at most 63 characters (PostgreSQL's identifier limit);
- not a name reserved by the platform (``con``, ``nul``, ``com1`` ... are
  devices on Windows) and not a database name of the collection's own
  (the catalog, configured databases).

Lowercase only: two names differing in case would share a file on a
case-insensitive file system, and PostgreSQL folds unquoted identifiers.
Anything else (path separators, ``..``, NUL, whitespace, quotes, SQL
metacharacters, Unicode look-alikes) is refused before anything is
touched.
"""
import re

from multidb.errors import InvalidName

MAX_LENGTH = 63

_PATTERN = re.compile(r'[a-z][a-z0-9_-]*\Z')

# Device names on Windows, whatever the extension: "nul.fs" is the null
# device there.
WINDOWS_DEVICES = frozenset(
    ['con', 'prn', 'aux', 'nul']
    + [f'com{i}' for i in range(10)] + [f'lpt{i}' for i in range(10)])


def check_tenant_name(name, reserved=()):
    """Return name if it is a valid tenant name, else raise InvalidName
    saying what is wrong."""
    if not isinstance(name, str):
        raise InvalidName(name, f"a tenant name must be a str, not"
                                f" {type(name).__name__}")
    if not name:
        raise InvalidName(name, "a tenant name must not be empty")
    if len(name) > MAX_LENGTH:
        raise InvalidName(name, f"a tenant name has at most {MAX_LENGTH}"
                                f" characters, this one {len(name)}")
    if not _PATTERN.match(name):
        bad = sorted({c for c in name if not re.match(r'[a-z0-9_-]', c)})
        if bad:
            shown = ', '.join(repr(c) for c in bad[:5])
            raise InvalidName(
                name, f"only lowercase ASCII letters, digits, '_' and '-'"
                      f" are allowed, not {shown}")
        raise InvalidName(name, "a tenant name must start with a letter")
    if name in WINDOWS_DEVICES:
        raise InvalidName(name, "the name of a device on Windows")
    if name in reserved:
        raise InvalidName(name, "reserved: a database of the collection"
                                " has this name")
    return name
