"""The archive: one portable file holding a tenant's data and record.

Layout (all integers big-endian)::

    b"MULTIDB-ARCHIVE\\n"      magic, 16 bytes
    u32 header length, header (JSON, UTF-8): the tenant's record (without
        credentials), the data format and the data length, and whether
        the archive is signed
    data                       a FileStorage file (ZODB's own, documented
                               format, readable by any ZODB; a restore
                               into another storage kind copies its
                               transactions)
    b"MULTIDB-CHECKSUM\\n"     17 bytes
    the checksum               of everything before it, by the algorithm
                               the header names: CRC-32 (4 bytes, as in
                               gzip and zip; the default) or SHA-256 (32)
    b"MULTIDB-SIGNATURE\\n"    18 bytes, in a signed archive only
    the signature              HMAC-SHA256 (32 bytes), with the archive
                               key, of everything before the checksum

The checksum proves integrity, not origin: CRC-32 catches accidental
corruption and, with the lengths, truncation, about four times as fast
as SHA-256 (``docs/performance.rst``); SHA-256 (``checksum='sha256'``)
catches it with more certainty, hashing at about the speed of the copy.  Anyone can write either.  Only
the signature says who wrote an archive: it is made with a secret key
(``archive-key-file`` in the configuration, or the environment variable
``MULTIDB_ARCHIVE_KEY``), and an archive altered without the key fails
it.

What a restore trusts: the data is pickles, and unpickling calls the
functions and classes a pickle names.  So a restore refuses an archive
whose origin it cannot check, unless told to trust it; and whatever its
origin, it reads the whole FileStorage (``check_filestorage``) before the
data replaces anything: every transaction and record must be well formed,
every pointer must lead to a real record, and every global that a pickle
names (of the records, their persistent references, the transactions'
extensions) must be importable and allowed by a ``PicklePolicy``.  The
check unpickles nothing for real: every global it meets stands for a
harmless stub.  It does not judge what allowed classes do with their
state; the allowed modules are trusted code.

An archive is written to a temporary name and renamed when complete, so a
crash never leaves a half-written archive under the final name; the
temporary name is multidb's own, held locked while it is written, so that
``stale_temp_files`` can tell those a killed process left behind (see
``multidb.files``).  Reading checks the magic, the lengths, the checksum and the
signature before anything is used; a restore extracts into a temporary
file and renames it only once the whole archive has checked out.
"""
import datetime
import hashlib
import hmac
import io
import json
import os
import re
import struct
import zlib

from multidb.errors import ArchiveExists
from multidb.errors import CorruptArchive
from multidb.errors import UnsafeArchive
from multidb.errors import UnsignedArchive
from multidb.files import copy_range
from multidb.files import replacing

MAGIC = b'MULTIDB-ARCHIVE\n'
TRAILER = b'MULTIDB-CHECKSUM\n'
SIGNATURE_MARK = b'MULTIDB-SIGNATURE\n'
#: The one signature there is, as the header names it.
SIGNATURE = 'hmac-sha256'
#: The environment variable holding the archive key, when the
#: configuration names no key file.
KEY_ENV = 'MULTIDB_ARCHIVE_KEY'
#: The shortest key accepted: a short secret is a guessable one.
MIN_KEY = 16
FORMAT = 'filestorage'
VERSION = 1
# A header is a record, not data: anything larger is not ours.
MAX_HEADER = 16 << 20


class CRC32:
    """zlib's CRC-32 with hashlib's update/digest."""

    digest_size = 4

    def __init__(self):
        self.value = 0

    def update(self, data):
        self.value = zlib.crc32(data, self.value)

    def digest(self):
        return struct.pack('>I', self.value)


CHECKSUMS = {'crc32': CRC32, 'sha256': hashlib.sha256}


def _hasher(name, path=None):
    try:
        return CHECKSUMS[name]()
    except (KeyError, TypeError):
        if path is None:
            raise ValueError(f"unknown checksum {name!r} (one of"
                             f" {', '.join(CHECKSUMS)})") from None
        raise CorruptArchive(path, f"unknown checksum {name!r}") from None


# -- the archive key ------------------------------------------------------

def check_key(key, where='the archive key'):
    """key (bytes, or str as UTF-8) as bytes; ValueError when it is too
    short to be a secret.  Messages say where the key came from, never
    what it is."""
    if isinstance(key, str):
        key = key.encode('utf-8')
    if not isinstance(key, (bytes, bytearray)):
        raise TypeError(f"{where} must be bytes or str, not"
                        f" {type(key).__name__}")
    if len(key) < MIN_KEY:
        raise ValueError(f"{where} is {len(key)} bytes: use at least"
                         f" {MIN_KEY} bytes of secret (for instance 32"
                         f" random bytes: head -c 32 /dev/urandom | base64)")
    return bytes(key)


def key_from_file(path):
    """The archive key held in the file at path (its bytes, less a
    trailing newline)."""
    path = os.path.expanduser(os.fspath(path))
    with open(path, 'rb') as f:
        key = f.read(1 << 16)
    return check_key(key.rstrip(b'\r\n'), f"the archive key in {path}")


def key_from_env():
    """The archive key of the environment (``MULTIDB_ARCHIVE_KEY``), or
    None when it is unset or empty."""
    value = os.environ.get(KEY_ENV)
    if not value:
        return None
    return check_key(value, f"the archive key in ${KEY_ENV}")


class _Sums:
    """The checksum and, with a key, the signature, fed the same bytes."""

    def __init__(self, checksum, key=None):
        self.checksum = checksum
        self.mac = None if key is None else hmac.new(key, digestmod='sha256')

    def update(self, data):
        self.checksum.update(data)
        if self.mac is not None:
            self.mac.update(data)


def check_origin(path, header, key, trust_unsigned=False):
    """Refuse, with ``UnsignedArchive``, an archive whose origin cannot be
    checked (no signature, or no key to check it with) unless the caller
    trusts it.  A signed archive read with a key is checked as it is
    read (``extract``), whatever trust_unsigned says."""
    signed = header.get('signature') is not None
    if trust_unsigned or (signed and key is not None):
        return
    how = ("or, for an archive whose origin you know, pass"
           " trust_unsigned=True (multidb restore --trust-unsigned)")
    if not signed:
        raise UnsignedArchive(
            path, f"not signed, so nothing says who wrote it (and its data"
                  f" is pickles, which can run code): restore archives"
                  f" signed with the archive key (archive-key-file or"
                  f" ${KEY_ENV}), {how}")
    raise UnsignedArchive(
        path, f"signed, but no archive key is configured to check the"
              f" signature (archive-key-file or ${KEY_ENV}); configure the"
              f" key it was signed with, {how}")


# -- writing and reading ----------------------------------------------------

def write_archive(path, header, src, length, *, progress=None,
                  checksum='crc32', key=None):
    """Write an archive at path from length bytes of the file src (at its
    current position); header is a JSON-able dict, whose record loses any
    credential (``without_secrets``).  Signed when a key is given.
    Refuses to overwrite an existing file."""
    path = os.fspath(path)
    sums = _Sums(_hasher(checksum),
                 None if key is None else check_key(key))
    if os.path.exists(path):
        raise ArchiveExists(path)
    header = dict(header, format=FORMAT, version=VERSION, data_length=length,
                  checksum=checksum)
    record = header.get('record')
    if isinstance(record, dict) and 'settings' in record:
        header['record'] = dict(
            record, settings=without_secrets(record['settings']))
    if key is not None:
        header['signature'] = SIGNATURE
    blob = json.dumps(header, sort_keys=True).encode('utf-8')
    with replacing(path, refuse=ArchiveExists) as out:
        head = MAGIC + struct.pack('>I', len(blob)) + blob
        sums.update(head)
        out.write(head)
        copy_range(src, out, length, sums, progress, sync=True)
        out.write(TRAILER + sums.checksum.digest())
        if sums.mac is not None:
            out.write(SIGNATURE_MARK + sums.mac.digest())
    return header


# Credentials in connection strings: libpq's key=value form
# (password='...' or password=...) and URIs (user:password@host,
# ?password=...).
_KV_SECRET = re.compile(
    r"""(?<!\S)(?:ssl)?password\s*=\s*(?:'(?:[^'\\]|\\.)*'|[^\s']\S*|)""",
    re.IGNORECASE)
_URI_SECRET = re.compile(r'(?<=://)([^/@:\s]*):[^@/\s]*@')
_QUERY_SECRET = re.compile(r'(?<=[?&])(?:ssl)?password=[^&#\s]*&?',
                           re.IGNORECASE)
_SECRET_KEYS = re.compile(r'password|passwd|secret|token|\Apass\Z|\Akey\Z',
                          re.IGNORECASE)


def without_secrets(value):
    """value (a record's settings) with the credentials taken out:
    passwords in connection strings and URIs, and keys named like
    secrets.  An archive travels further than the catalog: it must not
    carry them."""
    if isinstance(value, dict):
        return {k: without_secrets(v) for k, v in value.items()
                if not (isinstance(k, str) and _SECRET_KEYS.search(k))}
    if isinstance(value, (list, tuple)):
        return [without_secrets(v) for v in value]
    if isinstance(value, str):
        text = _URI_SECRET.sub(r'\1@', value)
        query = _QUERY_SECRET.sub('', text)
        if query != text:
            text = query.rstrip('?&')
        stripped = _KV_SECRET.sub('', text)
        if stripped != text:
            text = ' '.join(stripped.split())
        return text
    return value


def _read_exact(f, n, path, what):
    data = f.read(n)
    if len(data) != n:
        raise CorruptArchive(path, f"truncated in the {what}")
    return data


def _read_header(f, path):
    """The header, and the bytes before the data (for the sums)."""
    magic = f.read(len(MAGIC))
    if magic != MAGIC:
        raise CorruptArchive(path, "not a multidb archive (bad magic)")
    raw_len = _read_exact(f, 4, path, 'header')
    (n,) = struct.unpack('>I', raw_len)
    if n > MAX_HEADER:
        raise CorruptArchive(path, f"header length {n} is not plausible")
    blob = _read_exact(f, n, path, 'header')
    try:
        header = json.loads(blob.decode('utf-8'))
        length = header['data_length']
        fmt, version = header['format'], header['version']
        header['record']['name']
    except (ValueError, KeyError, TypeError, IndexError,
            RecursionError) as e:
        # RecursionError: JSON nested deeper than the parser goes.
        reason = 'nested too deeply' if isinstance(e, RecursionError) \
            else e
        raise CorruptArchive(path, f"unreadable header ({reason})") \
            from None
    if fmt != FORMAT or version != VERSION:
        raise CorruptArchive(path, f"unsupported format {fmt!r} version"
                                   f" {version!r}")
    if type(length) is not int or length < 0:
        raise CorruptArchive(path, f"bad data length {length!r}")
    signature = header.get('signature')
    if signature is not None and signature != SIGNATURE:
        raise CorruptArchive(path, f"unknown signature {signature!r}")
    _hasher(header.get('checksum'), path)
    return header, magic + raw_len + blob


def _sums(header, head, path, key):
    sums = _Sums(_hasher(header['checksum'], path),
                 key if header.get('signature') is not None else None)
    sums.update(head)
    return sums


def _check_trailer(f, path, header, sums):
    trailer = _read_exact(f, len(TRAILER) + sums.checksum.digest_size, path,
                          'checksum')
    if trailer[:len(TRAILER)] != TRAILER:
        raise CorruptArchive(path, "data length does not match (truncated"
                                   " or altered)")
    if trailer[len(TRAILER):] != sums.checksum.digest():
        raise CorruptArchive(path, "checksum mismatch (corrupted)")
    if header.get('signature') is not None:
        mark = _read_exact(f, len(SIGNATURE_MARK) + 32, path, 'signature')
        if mark[:len(SIGNATURE_MARK)] != SIGNATURE_MARK:
            raise CorruptArchive(path, "signed, but the signature is"
                                       " missing")
        # Without a key (a caller that trusts unsigned archives) the
        # signature cannot be checked, only skipped.
        if sums.mac is not None and not hmac.compare_digest(
                mark[len(SIGNATURE_MARK):], sums.mac.digest()):
            raise CorruptArchive(path, "bad signature: altered, or signed"
                                       " with another archive key")
    if f.read(1):
        raise CorruptArchive(path, "unexpected bytes after the checksum")


class _Discard:
    def write(self, data):
        pass


def read_header(path, *, verify=True, progress=None, key=None):
    """Return an archive's header; with verify, check all of it first:
    the checksum, and the signature when the archive is signed and key
    is given.  (Whether an unsigned archive is acceptable is the
    caller's decision: ``check_origin``.)"""
    path = os.fspath(path)
    with _open(path) as f:
        header, head = _read_header(f, path)
        if verify:
            sums = _sums(header, head, path, key)
            try:
                copy_range(f, _Discard(), header['data_length'], sums,
                           progress)
            except EOFError:
                raise CorruptArchive(path, "truncated in the data") from None
            _check_trailer(f, path, header, sums)
    return header


def extract(path, dest, *, progress=None, key=None, trust_unsigned=False):
    """Check the archive at path and write its data (a FileStorage file) to
    dest, which must not exist; return the header.  An archive whose
    origin cannot be checked is refused before anything is written, unless
    trust_unsigned (see ``check_origin``); a signed one is checked with
    key.  On any error dest is not created.

    The data is not checked: ``check_filestorage`` does that."""
    path = os.fspath(path)
    with _open(path) as f:
        header, head = _read_header(f, path)
        check_origin(path, header, key, trust_unsigned)
        sums = _sums(header, head, path, key)
        with replacing(dest) as out:
            try:
                copy_range(f, out, header['data_length'], sums,
                           progress, sync=True)
            except EOFError:
                raise CorruptArchive(path, "truncated in the data") \
                    from None
            _check_trailer(f, path, header, sums)
    return header


# -- the archived record ----------------------------------------------------

def tenant_record(path, header):
    """The tenant record of an archive's header, checked field by field
    (a ``CorruptArchive`` naming the field, never a crash): ready for
    ``TenantRecord.from_json``.  Labels follow the label rule: non-empty
    string keys, string values, no control characters in either (which
    would reach terminals and logs as they are)."""
    rec = header['record']
    if not isinstance(rec, dict):
        raise CorruptArchive(path, "bad tenant record (not an object)")

    def bad(field, why):
        return CorruptArchive(path, f"bad tenant record: {field} {why}")
    for field in ('name', 'kind'):
        if not isinstance(rec.get(field), str):
            raise bad(field, f"must be a string, not {rec.get(field)!r:.80}")
    if not isinstance(rec.get('settings', {}), (dict, type(None))):
        raise bad('settings', "must be an object")
    for field in ('created', 'modified', 'expires'):
        value = rec.get(field)
        if value is None and field == 'expires':
            continue
        try:
            when = datetime.datetime.fromisoformat(value)
        except (TypeError, ValueError):
            raise bad(field, f"must be an ISO date and time, not"
                             f" {value!r:.80}") from None
        if when.tzinfo is None:
            raise bad(field, f"{value!r} has no time zone")
    labels = rec.get('labels')
    if labels is None:
        labels = {}
    if not isinstance(labels, dict):
        raise bad('labels', f"must be an object of strings, not"
                            f" {labels!r:.80}")
    for k, v in labels.items():
        if not k or not isinstance(v, str):
            raise bad('labels', f"must be non-empty strings with string"
                                f" values, not {k!r:.80}: {v!r:.80}")
        if not (k + v).isprintable():
            raise bad(f"label {k!r:.80}", "has a control character")
    return dict(rec, labels=labels)


# -- what a pickle may name --------------------------------------------------

#: Modules whose classes any archive may name: ZODB's data structures.
#: (Not ZODB itself: its classes include FileStorage, whose constructor
#: truncates the file it is given.)
DEFAULT_MODULES = ('persistent', 'BTrees')
#: Single globals any archive may name: the built-in types and the
#: standard library's value classes that plain pickles use.
DEFAULT_NAMES = tuple(
    [('builtins', n) for n in (
        'object', 'set', 'frozenset', 'bytearray', 'complex', 'list',
        'dict', 'tuple', 'int', 'float', 'str', 'bytes', 'bool', 'slice',
        'range')]
    + [('copyreg', n) for n in ('_reconstructor', '__newobj__',
                                '__newobj_ex__')]
    + [('datetime', n) for n in ('date', 'datetime', 'time', 'timedelta',
                                 'timezone')]
    + [('decimal', 'Decimal'), ('fractions', 'Fraction'),
       ('uuid', 'UUID'), ('uuid', 'SafeUUID'),
       # Bytes as Python 2's ZODB with zodbpickle wrote them.
       ('zodbpickle', 'binary')]
    + [('collections', n) for n in ('OrderedDict', 'deque', 'defaultdict',
                                    'Counter')])
#: Modules (and their submodules) no policy allows, whatever it says:
#: they run commands, code or imports, or touch files, processes and
#: the network.
NEVER_MODULES = (
    'os', 'posix', 'nt', 'posixpath', 'ntpath', 'subprocess', 'sys',
    'builtins', 'importlib', 'imp', 'pkgutil', 'runpy', 'code', 'codeop',
    'shutil', 'tempfile', 'pathlib', 'io', '_io', 'socket', 'ssl',
    'select', 'signal', 'pty', 'pickle', '_pickle', 'zodbpickle.pickle',
    'zodbpickle.pickle_2', 'zodbpickle.pickle_3', 'zodbpickle.fastpickle',
    'zodbpickle.slowpickle', 'zodbpickle._pickle',
    'marshal', 'shelve', 'ctypes', 'multiprocessing', 'threading',
    '_thread', 'asyncio', 'webbrowser', 'pdb', 'bdb', 'platform',
    'sysconfig', 'glob', 'zipimport', 'urllib', 'http', 'ftplib',
    'smtplib', 'telnetlib', 'xmlrpc', 'ZODB.FileStorage', 'ZODB.DB',
    'ZODB.config', 'ZConfig', 'zc.lockfile')
#: Built-ins that run code or reach attributes and files.
NEVER_BUILTINS = frozenset([
    'eval', 'exec', 'compile', 'open', '__import__', 'getattr', 'setattr',
    'delattr', 'globals', 'locals', 'vars', 'input', 'breakpoint', 'exit',
    'quit', 'help', 'memoryview', 'type', 'super', 'classmethod',
    'staticmethod', 'property', 'print', 'dir'])
# What ZODB's own find_global accepts: a dotted module, a plain name.
_MODULE_RE = re.compile(r'[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*\Z', re.ASCII)
_NAME_RE = re.compile(r'[A-Za-z_]\w*\Z', re.ASCII)


def _within(module, prefixes):
    return any(module == p or module.startswith(p + '.') for p in prefixes)


# Python 2's names, which pickle's fix_imports maps to these (ZODB
# unpickles transaction extensions so).
_PY2_MODULES = {'__builtin__': 'builtins', 'copy_reg': 'copyreg',
                'exceptions': 'builtins'}


def _never(module, name):
    module = _PY2_MODULES.get(module, module)
    if module == 'builtins':
        return name in NEVER_BUILTINS
    return _within(module, NEVER_MODULES)


class PicklePolicy:
    """Which globals (functions and classes, which unpickling calls) the
    pickles of a restored archive may name.

    allow: entries added to the defaults, each ``module`` (its classes and
    its submodules' classes, not its functions) or ``module:name`` (that
    one global, class or function).  Every global must also import as
    ZODB would import it (module, then one attribute).  ``ValueError``
    for an entry that is malformed or names what is never allowed
    (``NEVER_MODULES``, ``NEVER_BUILTINS``)."""

    def __init__(self, allow=()):
        if isinstance(allow, str):
            allow = allow.split()
        modules, names = list(DEFAULT_MODULES), set(DEFAULT_NAMES)
        for entry in allow:
            module, sep, name = str(entry).partition(':')
            if not _MODULE_RE.match(module) or \
                    (sep and not _NAME_RE.match(name)):
                raise ValueError(f"bad archive-allow entry {entry!r}: write"
                                 f" a module (package.module) or one global"
                                 f" (package.module:Name)")
            if _never(module, name if sep else '') or (
                    _PY2_MODULES.get(module, module) == 'builtins'
                    and not sep):
                raise ValueError(
                    f"archive-allow entry {entry!r} is never allowed: it"
                    f" names a module or built-in that runs commands, code"
                    f" or imports (allow single classes as module:Name)")
            if sep:
                names.add((module, name))
            else:
                modules.append(module)
        self.modules = tuple(modules)
        self.names = frozenset(names)
        self._verdicts = {}
        self._allowed = set()   # (module, name) found allowed

    def __repr__(self):
        extra = [m for m in self.modules if m not in DEFAULT_MODULES] + \
            sorted(f'{m}:{n}' for m, n in self.names - set(DEFAULT_NAMES))
        return f"<PicklePolicy allowing the defaults and {extra!r}>"

    def refusal(self, module, name):
        """None when the global module.name may be named, else why not."""
        key = (module, name)
        try:
            return self._verdicts[key]
        except (KeyError, TypeError):
            pass
        verdict = self._judge(module, name)
        try:
            self._verdicts[key] = verdict
            if verdict is None:
                self._allowed.add(key)
        except TypeError:
            pass
        return verdict

    def _judge(self, module, name):
        if not (isinstance(module, str) and isinstance(name, str)
                and _MODULE_RE.match(module) and _NAME_RE.match(name)):
            return (f"names the global {module!r:.80} {name!r:.80}, which"
                    f" is no module and name")
        what = f"names {module}.{name}"
        if _never(module, name):
            return (f"{what}, which a restore never allows (it can run"
                    f" commands or code)")
        exact = (module, name) in self.names
        if not exact and not _within(module, self.modules):
            return (f"{what}, which is not allowed (allowed: the"
                    f" classes of {', '.join(self.modules)} and standard"
                    f" value types); if it is your application's, allow"
                    f" its module with archive-allow in the <tenants>"
                    f" configuration (Tenants(archive_allow=...))")
        # Allowed modules are trusted code: importing them is what ZODB
        # does next anyway.
        import importlib
        try:
            obj = getattr(importlib.import_module(module), name)
        except Exception as e:
            return f"{what}, which cannot be imported ({e})"
        if exact:
            return None
        if not isinstance(obj, type):
            return (f"{what}, which is not a class (a module allowed whole"
                    f" allows its classes; allow a function alone as"
                    f" {module}:{name})")
        home = getattr(obj, '__module__', None)
        if not isinstance(home, str) or _never(home, name) or \
                not _within(home, self.modules):
            return (f"{what}, a class of {home}, which is not allowed")
        return None


class _Refused(Exception):
    def __init__(self, reason, name):
        self.reason = reason
        self.name = name


class _Stub:
    """What every global stands for while a pickle is checked: calling,
    building or filling it does nothing."""

    def __new__(cls, *args, **kw):
        return object.__new__(_Stub)

    def __init__(self, *args, **kw):
        pass

    def __call__(self, *args, **kw):
        return _Stub()

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass


def _scanner_class():
    # ZODB's unpickler (zodbpickle's): the pickles it cannot read are
    # refused as they are, and those it reads name what it would import.
    import zodbpickle.pickle

    class Scanner(zodbpickle.pickle.Unpickler):

        def __init__(self, data, policy):
            super().__init__(io.BytesIO(data), encoding='ASCII',
                             errors='bytes')
            self.policy = policy
            self.allowed = policy._allowed

        def find_class(self, module, name):
            # The fast way for what was allowed before (most globals of
            # most records).
            if (module, name) not in self.allowed:
                self.check(module, name)
            return _Stub

        def check(self, module, name):
            reason = self.policy.refusal(module, name)
            if reason is not None:
                raise _Refused(reason, f'{module}.{name}')

        def check_class(self, klass):
            # A class given by name, as ZODB accepts in references and
            # in old records: (module, name), imported by ZODB itself.
            if isinstance(klass, tuple):
                if len(klass) != 2:
                    raise _Refused(f"names a class as {klass!r:.80},"
                                   f" which is no module and name", None)
                self.check(*klass)

        def persistent_load(self, ref):
            # The forms of ZODB.serialize.ObjectReader._persistent_load:
            # (oid, class), oid, [kind, args] with 'm' (database, oid,
            # class), 'n' (database, oid) and 'w' (weak references).
            if isinstance(ref, tuple):
                if len(ref) == 2:
                    self.check_class(ref[1])
            elif isinstance(ref, list) and len(ref) == 2 and \
                    ref[0] == 'm' and isinstance(ref[1], tuple) and \
                    len(ref[1]) == 3:
                self.check_class(ref[1][2])
            return _Stub()

    return Scanner


_Scanner = None


def _scan(data, policy, record=True):
    """Check the pickles of a data record (the class, then the state) or,
    with record false, a transaction's extension (one pickle); raises
    _Refused, or another exception for an unreadable pickle."""
    global _Scanner
    if _Scanner is None:
        _Scanner = _scanner_class()
    u = _Scanner(data, policy)
    first = u.load()
    if record:
        # The class metadata: a class, or (class, args) where class may
        # be (module, name).
        if isinstance(first, tuple) and len(first) == 2:
            u.check_class(first[0])
        u.load()


# -- what a restored FileStorage must be -------------------------------------

def check_filestorage(fs_path, policy=None, *, archive=None):
    """Read the FileStorage file at fs_path from end to end, as a restore
    does before the file replaces a tenant's data; return the number of
    transactions and data records.

    Refused with ``CorruptArchive`` (naming archive, or fs_path): a file
    that is not a FileStorage, is cut off (within or between
    transactions) or has bytes after its last transaction; a transaction
    or record out of order or overlapping another; a previous-record or
    back pointer that does not lead to a real, earlier record of the same
    object (ZODB follows them when loading, and a forged one could lead
    into bytes this check read as part of another pickle); a pickle ZODB's
    unpickler cannot read; a file without a root object.  Refused with
    ``UnsafeArchive``: a pickle naming a global the policy (by default
    ``PicklePolicy()``) refuses."""
    from ZODB.FileStorage.FileStorage import packed_version
    from ZODB.FileStorage.format import DATA_HDR
    from ZODB.FileStorage.format import DATA_HDR_LEN
    from ZODB.FileStorage.format import TRANS_HDR
    from ZODB.FileStorage.format import TRANS_HDR_LEN
    from ZODB.fsIndex import fsIndex
    from ZODB.utils import oid_repr
    from ZODB.utils import tid_repr
    from ZODB.utils import z64

    where = os.fspath(archive if archive is not None else fs_path)
    policy = policy if policy is not None else PicklePolicy()

    def bad(reason):
        return CorruptArchive(where, reason)

    def cut(at):
        return bad(f"the data is cut off: the FileStorage ends inside the"
                   f" transaction at byte {at}")

    def record_of(oid, tid):
        return f"record oid {oid_repr(oid)} (transaction {tid_repr(tid)})"

    records = txns = 0
    with open(fs_path, 'rb') as f:
        size = os.fstat(f.fileno()).st_size
        magic = f.read(len(packed_version))
        if magic != packed_version:
            raise bad(f"the data is not a FileStorage (it starts with"
                      f" {magic!r}, not {packed_version!r})")
        index = fsIndex()      # oid -> its latest record, as ZODB's
        pos = len(packed_version)
        ltid = z64
        while pos < size:
            if pos + TRANS_HDR_LEN > size:
                raise cut(pos)
            f.seek(pos)
            tid, tl, status, ul, dl, el = struct.unpack(
                TRANS_HDR, f.read(TRANS_HDR_LEN))
            if tid <= ltid:
                raise bad(f"the transaction at byte {pos} is out of order"
                          f" ({tid_repr(tid)} after {tid_repr(ltid)})")
            ltid = tid
            if status not in b' pu':
                if status == b'c':
                    raise cut(pos)   # a commit that never finished
                raise bad(f"the transaction at byte {pos} has the unknown"
                          f" status {status!r}")
            hl = TRANS_HDR_LEN + ul + dl + el
            tend = pos + tl
            if tl < hl:
                raise bad(f"the transaction at byte {pos} is shorter than"
                          f" its own header")
            if tend + 8 > size:
                raise cut(pos)
            f.seek(pos + TRANS_HDR_LEN + ul + dl)
            ext = f.read(el)
            if ext:
                # undoLog() and history() unpickle it.
                try:
                    _scan(ext, policy, record=False)
                except _Refused as e:
                    raise UnsafeArchive(
                        where, f"the extension of transaction"
                               f" {tid_repr(tid)} {e.reason}",
                        name=e.name) from None
                except Exception as e:
                    raise bad(f"the extension of transaction"
                              f" {tid_repr(tid)} is no readable pickle"
                              f" ({e!r:.200})") from None
            rpos = pos + hl
            tindex = {}
            while rpos < tend:
                if rpos + DATA_HDR_LEN > tend:
                    raise bad(f"the data record at byte {rpos} overruns"
                              f" its transaction")
                f.seek(rpos)
                oid, dtid, prev, tloc, vlen, plen = struct.unpack(
                    DATA_HDR, f.read(DATA_HDR_LEN))
                rlen = DATA_HDR_LEN + (plen or 8)
                if dtid != tid or tloc != pos or vlen or \
                        rpos + rlen > tend:
                    raise bad(f"{record_of(oid, tid)} at byte {rpos} does"
                              f" not fit its transaction")
                # As ZODB's read_index: against the transactions before
                # (an undo of several transactions may write an object
                # twice, each record pointing before the transaction).
                latest = index.get(oid, 0)
                if prev and prev != latest and status != b'u':
                    raise bad(f"{record_of(oid, tid)} has a bad"
                              f" previous-record pointer"
                              f" ({prev}, not {latest})")
                if plen:
                    data = f.read(plen)
                    try:
                        _scan(data, policy)
                    except _Refused as e:
                        raise UnsafeArchive(
                            where, f"{record_of(oid, tid)} {e.reason}",
                            oid=oid, name=e.name) from None
                    except Exception as e:
                        raise bad(f"{record_of(oid, tid)} is no readable"
                                  f" pickle ({e!r:.200})") from None
                else:
                    back = struct.unpack('>Q', f.read(8))[0]
                    if back and back not in tindex.get(oid, ()) and \
                            not _on_chain(f, oid, latest, back, DATA_HDR,
                                          DATA_HDR_LEN):
                        raise bad(f"{record_of(oid, tid)} has a bad back"
                                  f" pointer ({back} is no earlier record"
                                  f" of the object)")
                if status != b'u':
                    # ZODB's index skips undone transactions too.
                    tindex.setdefault(oid, []).append(rpos)
                records += 1
                rpos += rlen
            f.seek(tend)
            if struct.unpack('>Q', f.read(8))[0] != tl:
                raise bad(f"the transaction at byte {pos} has a bad"
                          f" redundant length (cut off or altered)")
            index.update({o: ps[-1] for o, ps in tindex.items()})
            txns += 1
            pos = tend + 8
        if index.get(z64) is None:
            raise bad("the data holds no root object: an empty or cut-off"
                      " FileStorage is no tenant")
    return txns, records


def _on_chain(f, oid, latest, target, DATA_HDR, DATA_HDR_LEN):
    """Is target one of oid's earlier records?  They form a chain from
    latest through previous-record pointers, each checked already."""
    pos = latest
    while pos > target:
        f.seek(pos)
        h_oid, _, prev, _, _, _ = struct.unpack(DATA_HDR,
                                                f.read(DATA_HDR_LEN))
        if h_oid != oid:
            return False
        pos = prev
    return pos == target and target != 0


def _open(path):
    # A missing file is an OSError naming the path, not a corrupt archive.
    return open(path, 'rb')
