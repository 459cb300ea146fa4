import io
import json
import os
import struct

import pytest

import multidb
from multidb.tenants import archive


def _write(tmp_path, data=b'FS21' + b'x' * 5000, name='a.multidb',
           checksum='crc32'):
    path = tmp_path / name
    archive.write_archive(path, {'record': {'name': 'acme'}},
                          io.BytesIO(data), len(data), checksum=checksum)
    return path, data


@pytest.mark.parametrize('checksum', ['crc32', 'sha256'])
def test_round_trip(tmp_path, checksum):
    path, data = _write(tmp_path, checksum=checksum)
    header = archive.read_header(path)
    assert header['checksum'] == checksum
    assert header['record'] == {'name': 'acme'}
    assert header['data_length'] == len(data)
    archive.extract(path, tmp_path / 'out.fs', trust_unsigned=True)
    assert (tmp_path / 'out.fs').read_bytes() == data
    assert not [p for p in os.listdir(tmp_path) if 'multidb-tmp' in p]


def test_refuses_to_overwrite(tmp_path):
    path, _ = _write(tmp_path)
    before = path.read_bytes()
    with pytest.raises(multidb.ArchiveExists):
        _write(tmp_path)
    assert path.read_bytes() == before


def test_short_source_leaves_no_file(tmp_path):
    with pytest.raises(EOFError):
        archive.write_archive(tmp_path / 'a', {'record': {'name': 'x'}},
                              io.BytesIO(b'abc'), 10)
    assert os.listdir(tmp_path) == []


def test_unknown_checksum_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match="unknown checksum 'md4'"):
        _write(tmp_path, checksum='md4')
    assert os.listdir(tmp_path) == []


def _corruptions(raw, checksum):
    n = len(raw)
    tail = len(archive.TRAILER) + archive.CHECKSUMS[checksum]().digest_size
    hl = struct.unpack('>I', raw[16:20])[0]
    yield 'empty', b''
    yield 'magic only', raw[:16]
    yield 'bad magic', b'NOT-AN-ARCHIVE!\n' + raw[16:]
    yield 'cut in header length', raw[:18]
    yield 'cut in header', raw[:20 + hl // 2]
    yield 'cut at data start', raw[:20 + hl]
    yield 'cut in data', raw[:n // 2]
    yield 'cut before checksum', raw[:n - tail]
    yield 'cut in checksum', raw[:n - 2]
    yield 'flipped data byte', raw[:n // 2] + bytes([raw[n // 2] ^ 1]) + \
        raw[n // 2 + 1:]
    yield 'flipped checksum byte', raw[:-1] + bytes([raw[-1] ^ 0xff])
    yield 'trailing garbage', raw + b'junk'
    yield 'huge header length', raw[:16] + struct.pack('>I', 1 << 30) + \
        raw[20:]
    bad_json = b'{not json'
    yield 'bad json', raw[:16] + struct.pack('>I', len(bad_json)) + \
        bad_json + raw[20 + hl:]
    head = json.loads(raw[20:20 + hl])
    head['data_length'] += 10
    blob = json.dumps(head).encode()
    yield 'wrong data length', raw[:16] + struct.pack('>I', len(blob)) + \
        blob + raw[20 + hl:]
    head['data_length'] = -1
    blob = json.dumps(head).encode()
    yield 'negative data length', raw[:16] + struct.pack('>I', len(blob)) + \
        blob + raw[20 + hl:]
    head = json.loads(raw[20:20 + hl])
    head['version'] = 99
    blob = json.dumps(head).encode()
    # a consistent checksum, so only the version is wrong
    body = raw[:16] + struct.pack('>I', len(blob)) + blob + \
        raw[20 + hl:n - tail]
    h = archive.CHECKSUMS[checksum]()
    h.update(body)
    yield 'future version', body + archive.TRAILER + h.digest()
    head = json.loads(raw[20:20 + hl])
    head['checksum'] = 'md4'
    blob = json.dumps(head).encode()
    yield 'unknown checksum', raw[:16] + struct.pack('>I', len(blob)) + \
        blob + raw[20 + hl:]


@pytest.mark.parametrize('checksum', ['crc32', 'sha256'])
@pytest.mark.parametrize('case', range(18))
def test_corrupt_archives_refused(tmp_path, case, checksum):
    path, _ = _write(tmp_path, checksum=checksum)
    label, bad = list(_corruptions(path.read_bytes(), checksum))[case]
    path.write_bytes(bad)
    with pytest.raises(multidb.CorruptArchive) as e:
        archive.read_header(path)
    assert str(path) in str(e.value), label
    dest = tmp_path / 'out.fs'
    with pytest.raises(multidb.CorruptArchive):
        archive.extract(path, dest, trust_unsigned=True)
    assert not dest.exists()
    assert sorted(os.listdir(tmp_path)) == ['a.multidb'], label


def test_missing_archive(tmp_path):
    with pytest.raises(FileNotFoundError):
        archive.read_header(tmp_path / 'nope')
