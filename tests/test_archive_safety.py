"""Archives are data, and pickles run code: what a restore trusts.

An archive's checksum proves integrity, not origin.  These tests craft
archives the way an attacker would (valid checksums, hostile contents)
and check that a restore refuses them before anything is recorded or
read, that a bad archive never replaces good data, and that a tenant
whose storage is broken can still be reverted.
"""
import datetime
import functools
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import time
import zlib

import pytest
from persistent.mapping import PersistentMapping
from ZODB.FileStorage import FileStorage
from ZODB.FileStorage.FileStorage import packed_version

import multidb
from helpers import fs_tenants
from helpers import root_dict
from helpers import run_cli
from helpers import tenants_config
from helpers import update_root
from multidb import files
from multidb.errors import CorruptArchive
from multidb.tenants import archive

KEY = b'0123456789abcdef0123456789abcdef'
OTHER_KEY = b'fedcba9876543210fedcba9876543210'
UTC = datetime.timezone.utc


_make = fs_tenants


@pytest.fixture(autouse=True)
def _no_key_in_the_environment(monkeypatch):
    monkeypatch.delenv('MULTIDB_ARCHIVE_KEY', raising=False)


@pytest.fixture
def tenants(tmp_path):
    c, t = _make(tmp_path)
    yield t
    c.close()


@pytest.fixture
def signing(tmp_path):
    c, t = _make(tmp_path, archive_key=KEY)
    yield t
    c.close()


# -- crafting archives --------------------------------------------------------

TRANS_HDR = '>8sQcHHH'
DATA_HDR = '>8s8sQQHQ'


def oid(n):
    return struct.pack('>Q', n)


def record(state, klass=PersistentMapping):
    """A ZODB data record: the class pickle, then the state pickle."""
    return pickle.dumps(klass, 3) + pickle.dumps(state, 3)


def fs_bytes(txns):
    """A FileStorage file from txns, a list of (records, ext); records is a
    list of (oid, data) or (oid, None, back): back a byte position."""
    out = bytearray(packed_version)
    last = {}
    for i, (records, ext) in enumerate(txns):
        tid = struct.pack('>Q', 0x03f0000000000000 + i)
        tpos = len(out)
        body = bytearray()
        pos = tpos + struct.calcsize(TRANS_HDR) + len(ext)
        for rec in records:
            o, data = rec[0], rec[1]
            prev = last.get(o, 0)
            if data is None:
                back = rec[2]
                raw = struct.pack(DATA_HDR, o, tid, prev, tpos, 0, 0) + \
                    struct.pack('>Q', back)
            else:
                raw = struct.pack(DATA_HDR, o, tid, prev, tpos, 0,
                                  len(data)) + data
            last[o] = pos
            body += raw
            pos += len(raw)
        tl = struct.calcsize(TRANS_HDR) + len(ext) + len(body)
        out += struct.pack(TRANS_HDR, tid, tl, b' ', 0, 0, len(ext))
        out += ext + body + struct.pack('>Q', tl)
    return bytes(out)


def header_record(**changes):
    now = datetime.datetime.now(UTC).isoformat()
    rec = {'name': 'evil', 'kind': 'filestorage', 'settings': {},
           'state': 'active', 'created': now, 'modified': now,
           'expires': None, 'labels': {}, 'snapshots': []}
    rec.update(changes)
    return rec


def write(path, data, record=None, **kw):
    archive.write_archive(path, {'record': record or header_record()},
                          io.BytesIO(data), len(data), **kw)
    return path


def raw_archive(path, blob, data=b''):
    """An archive with header blob as is and a valid CRC-32."""
    body = archive.MAGIC + struct.pack('>I', len(blob)) + blob + data
    path.write_bytes(body + archive.TRAILER +
                     struct.pack('>I', zlib.crc32(body)))
    return path


def good_root(**values):
    return record({'data': values})


class RunsCode:
    """Pickles as a call of func(arg): what a crafted archive holds."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def _touch(marker):
    return f'touch {marker}'


# -- unsigned, signed, wrongly signed -----------------------------------------

def test_unsigned_archive_refused_by_default(tenants, tmp_path):
    tenants.create('acme')
    update_root(tenants, 'acme', v=1)
    arc = tmp_path / 'a.multidb'
    tenants.archive('acme', arc)
    with pytest.raises(multidb.errors.UnsignedArchive,
                       match="a.multidb.*not signed.*trust_unsigned"):
        tenants.restore(arc, 'copy')
    assert 'copy' not in tenants
    assert not (tmp_path / 'tenants' / 'copy.fs').exists()
    # The caller who knows where the archive comes from says so.
    tenants.restore(arc, 'copy', trust_unsigned=True)
    assert root_dict(tenants, 'copy') == {'v': 1}


def test_signed_round_trip(signing, tmp_path):
    signing.create('acme')
    update_root(signing, 'acme', v=1)
    arc = tmp_path / 'a.multidb'
    signing.archive('acme', arc)
    assert archive.read_header(arc, key=KEY)['signature'] == 'hmac-sha256'
    signing.restore(arc, 'copy')
    assert root_dict(signing, 'copy') == {'v': 1}


def _resign_crc(raw):
    """raw with one data byte changed and every checksum made valid again:
    what an attacker who knows the format (but not the key) can do."""
    hl = struct.unpack('>I', raw[16:20])[0]
    header = json.loads(raw[20:20 + hl])
    n = header['data_length']
    body = bytearray(raw[:20 + hl + n])
    body[20 + hl + 10] ^= 1
    tail = raw[20 + hl + n:]
    crc = struct.pack('>I', zlib.crc32(bytes(body)))
    rest = tail[len(archive.TRAILER) + 4:]
    return bytes(body) + archive.TRAILER + crc + rest


def test_altered_signed_archive_refused(signing, tmp_path):
    signing.create('acme')
    arc = tmp_path / 'a.multidb'
    signing.archive('acme', arc)
    arc.write_bytes(_resign_crc(arc.read_bytes()))
    with pytest.raises(CorruptArchive, match='bad signature'):
        signing.restore(arc, 'copy')
    with pytest.raises(CorruptArchive, match='bad signature'):
        signing.restore(arc, 'copy', trust_unsigned=True)
    assert 'copy' not in signing


def test_wrong_key_refused(tmp_path):
    c, t = _make(tmp_path, archive_key=OTHER_KEY)
    try:
        t.create('acme')
        arc = tmp_path / 'a.multidb'
        t.archive('acme', arc)
        t.archive_key = KEY
        with pytest.raises(CorruptArchive, match='bad signature'):
            t.restore(arc, 'copy')
        with pytest.raises(CorruptArchive, match='bad signature'):
            t.restore(arc, 'copy', trust_unsigned=True)
        assert 'copy' not in t
    finally:
        c.close()


def test_unsigned_refused_when_a_key_is_configured(signing, tmp_path):
    arc = write(tmp_path / 'a.multidb', fs_bytes([([(oid(0), good_root())],
                                                   b'')]))
    with pytest.raises(multidb.errors.UnsignedArchive, match='not signed'):
        signing.restore(arc, 'copy')
    signing.restore(arc, 'copy', trust_unsigned=True)
    assert 'copy' in signing


def test_signed_archive_without_a_key_to_check_it(tenants, tmp_path):
    arc = write(tmp_path / 'a.multidb',
                fs_bytes([([(oid(0), good_root(v=1))], b'')]), key=KEY)
    with pytest.raises(multidb.errors.UnsignedArchive,
                       match='no archive key'):
        tenants.restore(arc, 'copy')
    tenants.restore(arc, 'copy', trust_unsigned=True)
    assert root_dict(tenants, 'copy') == {'v': 1}


def test_key_from_the_environment(tenants, tmp_path, monkeypatch):
    monkeypatch.setenv('MULTIDB_ARCHIVE_KEY', KEY.decode())
    tenants.create('acme')
    arc = tmp_path / 'a.multidb'
    tenants.archive('acme', arc)
    assert archive.read_header(arc, key=KEY)['signature'] == 'hmac-sha256'
    tenants.restore(arc, 'copy')
    monkeypatch.setenv('MULTIDB_ARCHIVE_KEY', OTHER_KEY.decode())
    with pytest.raises(CorruptArchive, match='bad signature'):
        tenants.restore(arc, 'other')


@pytest.mark.parametrize('key', [b'short', '', b'x' * 15])
def test_short_keys_refused(tmp_path, key):
    with pytest.raises(ValueError, match='at least 16 bytes') as e:
        _make(tmp_path, archive_key=key)
    if key:
        assert repr(key) not in str(e.value)


def test_header_never_holds_a_password(tenants, tmp_path):
    rec = tenants.create('acme')
    settings = dict(rec.settings,
                    dsn="host=db user=app password='s3cr3t pw' dbname=t",
                    url='postgresql://app:s3cr3t@db/t',
                    admin_dsn='password=s3cr3t host=db')
    with tenants._catalog(write=True) as (tree, g):
        tree['acme'] = rec.replace(settings=settings)
    arc = tmp_path / 'a.multidb'
    tenants.archive('acme', arc)
    raw = arc.read_bytes()
    assert b's3cr3t' not in raw
    kept = archive.read_header(arc)['record']['settings']
    assert sorted(kept['dsn'].split()) == ['dbname=t', 'host=db', 'user=app']
    assert kept['url'] == 'postgresql://app@db/t'
    assert kept['path'] == rec.settings['path']


def test_header_of_a_postgresql_tenant_holds_no_password(postgres,
                                                         tmp_path):
    from multidb.backends.relstorage import RelStorageBackend
    prefix = 'a' + os.urandom(3).hex() + '_'
    # The test cluster trusts every local connection: any password works.
    backend = RelStorageBackend(
        postgres.dsn(prefix + '{name}') + " password='s3cr3t'",
        template=prefix + 'template', keep_history=False,
        snapshot_dir=str(tmp_path / 'snapshots'))
    c = multidb.Collection()
    c.declare('catalog', functools.partial(FileStorage,
                                           str(tmp_path / 'catalog.fs')))
    t = multidb.Tenants(c, catalog='catalog', backend=backend)
    try:
        t.create('acme')
        update_root(t, 'acme', v=1)
        arc = tmp_path / 'a.multidb'
        t.archive('acme', arc)
        assert b's3cr3t' not in arc.read_bytes()
        dsn = archive.read_header(arc)['record']['settings']['dsn']
        assert 'password' not in dsn and prefix + 'acme' in dsn
        t.restore(arc, 'copy', trust_unsigned=True)
        assert root_dict(t, 'copy') == {'v': 1}
    finally:
        c.close()
        postgres.drop_databases(prefix)


# -- pickles that run code ----------------------------------------------------

def _refused_and_harmless(tenants, arc, marker, match, name='evil'):
    with pytest.raises(multidb.errors.UnsafeArchive, match=match) as e:
        tenants.restore(arc, name, trust_unsigned=True)
    assert isinstance(e.value, CorruptArchive)
    assert not marker.exists()
    # Nothing was recorded or left behind to read.
    assert name not in tenants
    with pytest.raises(KeyError):
        root_dict(tenants, name)
    assert not os.path.exists(
        os.path.join(os.path.dirname(tenants.backend.path), f'{name}.fs'))
    assert not marker.exists()
    return e.value


@pytest.mark.parametrize('protocol', [0, 1, 2, 3])
def test_os_system_in_a_record_refused(tenants, tmp_path, protocol):
    marker = tmp_path / 'marker'
    state = pickle.dumps({'data': {'x': RunsCode(os.system, _touch(marker))}},
                         protocol)
    data = fs_bytes([([(oid(0), pickle.dumps(PersistentMapping, 3) + state)],
                      b'')])
    arc = write(tmp_path / 'evil.multidb', data)
    err = _refused_and_harmless(tenants, arc, marker,
                                r"posix\.system|os\.system")
    assert 'oid 0x00' in str(err)


def test_builtins_exec_in_a_class_pickle_refused(tenants, tmp_path):
    marker = tmp_path / 'marker'
    code = f'open({str(marker)!r}, "w").close()'
    data = fs_bytes([([(oid(0), pickle.dumps(RunsCode(exec, code), 3) +
                        pickle.dumps({'data': {}}, 3))], b'')])
    arc = write(tmp_path / 'evil.multidb', data)
    _refused_and_harmless(tenants, arc, marker, r'builtins\.exec')


def test_code_in_a_later_record_refused(tenants, tmp_path):
    # The root is harmless; the object it refers to is not.
    marker = tmp_path / 'marker'
    evil = record({'data': {'x': RunsCode(os.system, _touch(marker))}})

    class Ref:
        pass
    ref = Ref()

    def persistent_id(obj):
        return (oid(1), None) if obj is ref else None
    f = io.BytesIO()
    p = pickle.Pickler(f, 3)
    p.persistent_id = persistent_id
    p.dump({'data': {'child': ref}})
    root = pickle.dumps(PersistentMapping, 3) + f.getvalue()
    data = fs_bytes([([(oid(0), root), (oid(1), evil)], b'')])
    arc = write(tmp_path / 'evil.multidb', data)
    err = _refused_and_harmless(tenants, arc, marker, 'system')
    assert 'oid 0x01' in str(err)


def test_class_named_in_a_persistent_reference_refused(tenants, tmp_path):
    # ZODB imports the class of (oid, (module, name)) references itself.
    class Ref:
        pass
    ref = Ref()

    def persistent_id(obj):
        return (oid(1), ('os', 'system')) if obj is ref else None
    f = io.BytesIO()
    p = pickle.Pickler(f, 3)
    p.persistent_id = persistent_id
    p.dump({'data': {'child': ref}})
    root = pickle.dumps(PersistentMapping, 3) + f.getvalue()
    arc = write(tmp_path / 'evil.multidb',
                fs_bytes([([(oid(0), root)], b'')]))
    _refused_and_harmless(tenants, arc, tmp_path / 'marker', r'os\.system')


def test_old_style_class_reference_refused(tenants, tmp_path):
    # A class pickle of ((module, name), args): ZODB imports it by name.
    data = pickle.dumps((('os', 'system'), None), 3) + \
        pickle.dumps({'data': {}}, 3)
    arc = write(tmp_path / 'evil.multidb',
                fs_bytes([([(oid(0), data)], b'')]))
    _refused_and_harmless(tenants, arc, tmp_path / 'marker', r'os\.system')


def test_transaction_extension_pickle_refused(tenants, tmp_path):
    # undoLog() and history() unpickle every transaction's extension.
    marker = tmp_path / 'marker'
    ext = pickle.dumps({'user': RunsCode(os.system, _touch(marker))}, 2)
    arc = write(tmp_path / 'evil.multidb',
                fs_bytes([([(oid(0), good_root())], ext)]))
    err = _refused_and_harmless(tenants, arc, marker, 'extension')
    assert 'system' in str(err)


def test_back_pointer_into_a_pickle_refused(tenants, tmp_path):
    # A harmless record hides a fake data record in a string; a later
    # record points into it.  Only real records may be pointed to.
    marker = tmp_path / 'marker'
    evil = record({'data': {'x': RunsCode(os.system, _touch(marker))}})
    fake = struct.pack(DATA_HDR, oid(1), b'\0' * 8, 0, 0, 0, len(evil)) + evil
    hiding = record({'data': {'blob': fake}})
    first = fs_bytes([([(oid(0), good_root()), (oid(1), hiding)], b'')])
    at = first.index(fake)
    data = fs_bytes([([(oid(0), good_root()), (oid(1), hiding)], b''),
                     ([(oid(1), None, at)], b'')])
    arc = write(tmp_path / 'evil.multidb', data)
    with pytest.raises(CorruptArchive, match='back pointer'):
        tenants.restore(arc, 'evil', trust_unsigned=True)
    assert 'evil' not in tenants and not marker.exists()


def test_signed_archives_are_scanned_too(signing, tmp_path):
    # A key proves who wrote the archive, not that its writer was sound.
    marker = tmp_path / 'marker'
    data = fs_bytes([([(oid(0), record(
        {'data': {'x': RunsCode(os.system, _touch(marker))}}))], b'')])
    arc = write(tmp_path / 'evil.multidb', data, key=KEY)
    _refused_and_harmless(signing, arc, marker, 'system')


class Gadget(PersistentMapping):
    """An application class, in a module the policy does not know."""


def test_application_classes_need_allowing(tmp_path):
    data = fs_bytes([([(oid(0), record({'data': {'v': 1}}, Gadget))], b'')])
    arc = write(tmp_path / 'app.multidb', data)
    c, t = _make(tmp_path)
    try:
        with pytest.raises(multidb.errors.UnsafeArchive,
                           match=f'{__name__}.Gadget.*not allowed'):
            t.restore(arc, 'app', trust_unsigned=True)
    finally:
        c.close()
    c, t = _make(tmp_path, archive_allow=[__name__])
    try:
        t.restore(arc, 'app', trust_unsigned=True)
        with t.collection.transaction() as g:
            assert type(g.root('app')) is Gadget
    finally:
        c.close()


def test_unimportable_and_non_class_globals_refused(tmp_path):
    c, t = _make(tmp_path, archive_allow=[__name__])
    try:
        klass = pickle.dumps(Gadget, 3).replace(b'Gadget', b'Gadgot')
        arc = write(tmp_path / 'a.multidb', fs_bytes(
            [([(oid(0), klass + pickle.dumps({'data': {}}, 3))], b'')]))
        with pytest.raises(multidb.errors.UnsafeArchive,
                           match='Gadgot.*cannot be imported'):
            t.restore(arc, 'a', trust_unsigned=True)
        # A module allowed whole allows its classes, not its functions.
        arc = write(tmp_path / 'b.multidb', fs_bytes([([(oid(0), record(
            {'data': {'x': RunsCode(_touch, 'x')}}))], b'')]))
        with pytest.raises(multidb.errors.UnsafeArchive,
                           match='_touch.*not a class'):
            t.restore(arc, 'b', trust_unsigned=True)
    finally:
        c.close()


@pytest.mark.parametrize('entry', ['os', 'subprocess', 'builtins',
                                   'builtins:eval', 'posix:system'])
def test_dangerous_names_cannot_be_allowed(tmp_path, entry):
    with pytest.raises(ValueError, match='never'):
        _make(tmp_path, archive_allow=[entry])


# -- payloads that are not a tenant -------------------------------------------

def _refused(tenants, arc, match, name='bad'):
    with pytest.raises(CorruptArchive, match=match):
        tenants.restore(arc, name, trust_unsigned=True)
    assert name not in tenants
    assert not os.path.exists(
        os.path.join(os.path.dirname(tenants.backend.path), f'{name}.fs'))


def test_random_bytes_with_a_valid_checksum(tenants, tmp_path):
    arc = write(tmp_path / 'r.multidb', os.urandom(5000))
    _refused(tenants, arc, 'not a FileStorage')


def test_random_bytes_after_a_filestorage_magic(tenants, tmp_path):
    arc = write(tmp_path / 'r.multidb', packed_version + os.urandom(5000))
    _refused(tenants, arc, 'a.multidb|r.multidb')


@pytest.mark.parametrize('cut', [4, 30, 'half', -8, -1])
def test_cut_off_payload(tenants, tmp_path, cut):
    tenants.create('acme')
    update_root(tenants, 'acme', v=1)
    update_root(tenants, 'acme', w=2)
    full = tmp_path / 'full.multidb'
    tenants.archive('acme', full)
    archive.extract(full, tmp_path / 'data.fs', trust_unsigned=True)
    data = (tmp_path / 'data.fs').read_bytes()
    cut = len(data) // 2 if cut == 'half' else cut
    arc = write(tmp_path / 'cut.multidb', data[:cut])
    _refused(tenants, arc, 'cut off|no root')


def test_empty_filestorage_is_not_a_tenant(tenants, tmp_path):
    arc = write(tmp_path / 'e.multidb', packed_version)
    _refused(tenants, arc, 'no root object')


def test_trailing_bytes_after_the_last_transaction(tenants, tmp_path):
    data = fs_bytes([([(oid(0), good_root())], b'')]) + b'junk'
    _refused(tenants, write(tmp_path / 't.multidb', data), 'cut off')


# -- a bad archive never replaces good data -----------------------------------

@pytest.mark.parametrize('payload', ['random', 'cut', 'evil'])
def test_replace_with_a_bad_archive_keeps_the_tenant(tenants, tmp_path,
                                                     payload):
    tenants.create('acme')
    update_root(tenants, 'acme', v='good')
    marker = tmp_path / 'marker'
    if payload == 'random':
        data = os.urandom(3000)
    elif payload == 'cut':
        data = fs_bytes([([(oid(0), good_root(v='bad'))], b'')])[:-20]
    else:
        data = fs_bytes([([(oid(0), record(
            {'data': {'x': RunsCode(os.system, _touch(marker))}}))], b'')])
    arc = write(tmp_path / 'bad.multidb', data,
                record=header_record(name='acme'))
    with pytest.raises(CorruptArchive):
        tenants.restore(arc, replace=True, trust_unsigned=True)
    assert root_dict(tenants, 'acme') == {'v': 'good'}
    assert tenants.snapshots('acme') == []
    assert not marker.exists()


def test_cli_replace_with_a_bad_archive_keeps_the_tenant(capsys, tmp_path,
                                                         monkeypatch):
    conf = _cli_conf(tmp_path, monkeypatch)
    assert _cli(capsys, conf, 'create', 'acme')[0] == 0
    before = open('data/tenants/acme.fs', 'rb').read()
    write(tmp_path / 'bad.multidb', os.urandom(3000),
          record=header_record(name='acme'))
    code, out, err = _cli(capsys, conf, 'restore', 'bad.multidb',
                          '--replace', '--trust-unsigned')
    assert code == 1 and 'not a FileStorage' in err
    assert open('data/tenants/acme.fs', 'rb').read() == before
    code, out, err = _cli(capsys, conf, '--json', 'show', 'acme')
    assert code == 0 and json.loads(out)['snapshots'] == []


# -- revert from a broken current state ---------------------------------------

def _break(tmp_path, name='acme'):
    path = tmp_path / 'tenants' / f'{name}.fs'
    broken = b'this is no FileStorage' * 10
    path.write_bytes(broken)
    for ext in ('.index', '.lock'):
        if os.path.exists(str(path) + ext):
            os.unlink(str(path) + ext)
    return broken


def test_revert_from_a_broken_state(tmp_path):
    c, t = _make(tmp_path)
    t.create('acme')
    update_root(t, 'acme', v=1)
    sid = t.snapshot('acme')
    c.close()
    broken = _break(tmp_path)
    c, t = _make(tmp_path)
    try:
        kept = t.revert('acme', sid)
        assert root_dict(t, 'acme') == {'v': 1}
        snap = t.get('acme').snapshot(kept)
        assert snap.label == f'unreadable state before revert to {sid}'
        # The broken bytes are kept as they were, for whoever investigates.
        path = t.backend.snapshot_path(t.get('acme').settings, kept)
        assert open(path, 'rb').read() == broken
    finally:
        c.close()


def test_restore_replace_over_a_broken_state(tmp_path):
    c, t = _make(tmp_path)
    t.create('acme')
    update_root(t, 'acme', v=1)
    arc = tmp_path / 'a.multidb'
    t.archive('acme', arc)
    c.close()
    broken = _break(tmp_path)
    c, t = _make(tmp_path)
    try:
        t.restore(arc, replace=True, trust_unsigned=True)
        assert root_dict(t, 'acme') == {'v': 1}
        snap, = t.snapshots('acme')
        assert snap.label == 'unreadable state before restore'
        path = t.backend.snapshot_path(t.get('acme').settings, snap.id)
        assert open(path, 'rb').read() == broken
    finally:
        c.close()


# -- hostile headers ----------------------------------------------------------

def test_deeply_nested_header(tenants, tmp_path):
    blob = b'{"record": {"name": "evil"}, "x": ' + b'[' * 100000 + \
        b']' * 100000 + b'}'
    arc = raw_archive(tmp_path / 'h.multidb', blob)
    with pytest.raises(CorruptArchive, match='unreadable header'):
        tenants.restore(arc, trust_unsigned=True)
    with pytest.raises(CorruptArchive, match='unreadable header'):
        archive.read_header(arc)


@pytest.mark.parametrize('changes, match', [
    ({'labels': ['a', 'b']}, 'labels'),
    ({'labels': 'plan'}, 'labels'),
    ({'labels': {'plan': 'gold\x1b[31m'}}, 'control character'),
    ({'labels': {'plan': 'gold\n'}}, 'control character'),
    ({'labels': {'a\x00b': ''}}, 'control character'),
    ({'labels': {'': 'x'}}, 'labels'),
    ({'labels': {'plan': 3}}, 'labels'),
    ({'expires': '2030-01-01T00:00:00'}, 'time zone'),
    ({'name': ['evil']}, 'name'),
])
def test_bad_records_in_headers(tenants, tmp_path, changes, match):
    data = fs_bytes([([(oid(0), good_root())], b'')])
    arc = write(tmp_path / 'h.multidb', data, record=header_record(**changes))
    with pytest.raises(CorruptArchive, match=match):
        tenants.restore(arc, 'target', trust_unsigned=True)
    assert 'target' not in tenants


@pytest.mark.parametrize('length', [True])
def test_header_data_length_not_an_integer(tmp_path, length):
    blob = json.dumps({'record': header_record(), 'format': 'filestorage',
                       'version': 1, 'data_length': length,
                       'checksum': 'crc32'}).encode()
    arc = raw_archive(tmp_path / 'h.multidb', blob, b'x')
    with pytest.raises(CorruptArchive, match='data length'):
        archive.read_header(arc)


# -- temporary files ----------------------------------------------------------

SLOW_WRITER = r'''
import sys, time
from multidb.tenants import archive

class Slow:
    def readinto(self, buf):
        time.sleep(60)
        return 0

archive.write_archive(sys.argv[1], {'record': {'name': 'x'}}, Slow(), 100)
'''


def test_killed_archive_run_leaves_a_recognisable_temp_file(tmp_path):
    folder = tmp_path / 'archives'
    folder.mkdir()
    (folder / 'keep.multidb-tmp').write_bytes(b'not ours: no dot, no pid')
    (folder / '.other.txt').write_bytes(b'not ours')
    child = subprocess.Popen([sys.executable, '-c', SLOW_WRITER,
                              str(folder / 'a.multidb')])
    try:
        deadline = time.monotonic() + 30
        while not [n for n in os.listdir(folder) if n.startswith('.a.')]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        tmp, = [str(folder / n) for n in os.listdir(folder)
                if n.startswith('.a.')]
        # Being written: not stale, whatever its age.
        os.utime(tmp, (0, 0))
        assert files.stale_temp_files(folder) == []
        assert files.stale_temp_files(folder, remove=True) == []
        assert os.path.exists(tmp)
    finally:
        child.kill()
        child.wait()
    assert files.stale_temp_files(folder) == [tmp]
    assert os.path.exists(tmp)
    assert files.stale_temp_files(folder, remove=True) == [tmp]
    assert sorted(os.listdir(folder)) == ['.other.txt', 'keep.multidb-tmp']
    assert files.stale_temp_files(folder) == []


def test_fresh_temp_file_of_a_live_process_is_not_stale(tmp_path):
    # Unlocked (another writer's), its process alive, and young: kept.
    tmp = files.tmp_name(tmp_path / 'x.fs')
    open(tmp, 'wb').close()
    assert files.stale_temp_files(tmp_path) == []
    os.utime(tmp, (0, 0))
    assert files.stale_temp_files(tmp_path) == [tmp]


def test_stale_temp_files_of_a_missing_folder(tmp_path):
    assert files.stale_temp_files(tmp_path / 'nowhere') == []


# -- configuration and the command --------------------------------------------



def _cli_conf(tmp_path, monkeypatch, keys=''):
    monkeypatch.chdir(tmp_path)
    # The folders exist: the configuration's own errors come first.
    (tmp_path / 'data' / 'tenants').mkdir(parents=True, exist_ok=True)
    conf = tmp_path / 'app.conf'
    conf.write_text(tenants_config('archive-dir $data/archive\n    ' + keys))
    return conf


def _cli(capsys, conf, *argv):
    return run_cli(capsys, *argv, config=conf)


def test_cli_restore_needs_trust_unsigned(capsys, tmp_path, monkeypatch):
    conf = _cli_conf(tmp_path, monkeypatch)
    assert _cli(capsys, conf, 'create', 'acme')[0] == 0
    code, out, err = _cli(capsys, conf, '--json', 'archive', 'acme',
                          'a.multidb')
    assert code == 0 and json.loads(out)['signed'] is False
    code, out, err = _cli(capsys, conf, 'restore', 'a.multidb', 'copy')
    assert code == 1
    assert "archive 'a.multidb' is unusable: not signed" in err
    assert '--trust-unsigned' in err
    assert _cli(capsys, conf, 'show', 'copy')[0] == 1
    code, out, err = _cli(capsys, conf, 'restore', 'a.multidb', 'copy',
                          '--trust-unsigned')
    assert (code, err) == (0, '')


def test_cli_key_file_signs_and_checks(capsys, tmp_path, monkeypatch):
    (tmp_path / 'archive.key').write_bytes(KEY + b'\n')
    conf = _cli_conf(tmp_path, monkeypatch,
                     keys='archive-key-file $data/../archive.key')
    assert _cli(capsys, conf, 'create', 'acme')[0] == 0
    code, out, err = _cli(capsys, conf, '--json', 'archive', 'acme',
                          'a.multidb')
    assert code == 0 and json.loads(out)['signed'] is True
    code, out, err = _cli(capsys, conf, 'restore', 'a.multidb', 'copy')
    assert (code, err) == (0, '')
    # The configuration names the file; nothing prints the key.
    code, out, err = _cli(capsys, conf, '--json', 'check-config')
    assert code == 0 and KEY.decode() not in out + err
    # Another key: the archive is refused.
    (tmp_path / 'archive.key').write_bytes(OTHER_KEY)
    code, out, err = _cli(capsys, conf, 'restore', 'a.multidb', 'other')
    assert code == 1 and 'bad signature' in err
    assert KEY.decode() not in out + err


@pytest.mark.parametrize('content, match', [
    (None, 'archive.key'),
    (b'short\n', 'at least 16 bytes'),
])
def test_cli_bad_key_file_is_a_configuration_error(capsys, tmp_path,
                                                   monkeypatch, content,
                                                   match):
    if content is not None:
        (tmp_path / 'archive.key').write_bytes(content)
    conf = _cli_conf(tmp_path, monkeypatch,
                     keys='archive-key-file $data/../archive.key')
    code, out, err = _cli(capsys, conf, 'list')
    assert code == 2 and match in err and 'line' in err


def test_cli_allow_lets_application_classes_in(capsys, tmp_path,
                                              monkeypatch):
    data = fs_bytes([([(oid(0), record({'data': {'v': 1}}, Gadget))], b'')])
    write(tmp_path / 'app.multidb', data)
    conf = _cli_conf(tmp_path, monkeypatch)
    code, out, err = _cli(capsys, conf, 'restore', 'app.multidb', 'app',
                          '--trust-unsigned')
    assert code == 1 and 'Gadget' in err and 'archive-allow' in err
    conf = _cli_conf(tmp_path, monkeypatch,
                     keys=f'archive-allow {__name__} decimal:Decimal')
    code, out, err = _cli(capsys, conf, 'restore', 'app.multidb', 'app',
                          '--trust-unsigned')
    assert (code, err) == (0, '')


def test_cli_allow_refuses_dangerous_entries(capsys, tmp_path, monkeypatch):
    conf = _cli_conf(tmp_path, monkeypatch, keys='archive-allow os')
    code, out, err = _cli(capsys, conf, 'list')
    assert code == 2 and 'never' in err
