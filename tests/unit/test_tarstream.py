"""The tar reader of the import path, checked against tarfile (and GNU tar) as the oracle.

Archives are written here in every format a layer can arrive in (GNU, POSIX pax, ustar, GNU tar's
own output), with long names, long link targets, non-UTF-8 names, base-256 numbers, xattrs,
global pax headers and every entry type; each must read back member for member, byte for byte,
as tarfile reads it. Broken archives must fail with a sentence, never with a traceback of ours.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from nbcontainer.images.tarstream import (
    DIRECTORY,
    REGULAR,
    TarFormatError,
    TarStream,
    parse_pax,
)

REGULAR_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)


def _info(name: str, kind: bytes = tarfile.REGTYPE, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mtime = 1_700_000_000
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def _archive(fmt: int, members: list[tuple[tarfile.TarInfo, bytes]],
             pax_headers: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, pax_headers=pax_headers,
                      encoding="utf-8", errors="surrogateescape") as tar:
        for info, data in members:
            if info.type in REGULAR_TYPES:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def _everything(fmt: int) -> list[tuple[tarfile.TarInfo, bytes]]:
    long_dir = "/".join(["a-long-directory-name"] * 8)
    members = [
        (_info("etc", tarfile.DIRTYPE, mode=0o755), b""),
        (_info("etc/hostname", mode=0o644, uid=1000, gid=1000), b"box\n"),
        (_info("empty"), b""),
        (_info("block-sized"), bytes(range(256)) * 4),
        (_info("odd-sized", mode=0o4755), os.urandom(70_001)),
        (_info(long_dir + "/file-with-a-long-path.txt"), b"deep"),
        (_info("link", tarfile.SYMTYPE, linkname="/" + long_dir + "/target-" + "x" * 120), b""),
        (_info("hard", tarfile.LNKTYPE, linkname="etc/hostname"), b""),
        (_info("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666), b""),
        (_info("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0), b""),
        (_info("fifo", tarfile.FIFOTYPE, mode=0o600), b""),
        (_info("unicode-é-名前.txt"), "ü".encode()),
    ]
    if fmt != tarfile.USTAR_FORMAT:
        members.append((_info("big-ids", uid=3_000_000_000, gid=2_500_000_000), b"ids"))
    if fmt == tarfile.PAX_FORMAT:
        xattrs = _info("with-xattrs")
        xattrs.pax_headers = {"SCHILY.xattr.user.note": "hello",
                              "SCHILY.xattr.security.capability": "\x01\x00\x00\x02"}
        members.append((xattrs, b"x"))
        members.append((_info("mtime-fraction", mtime=1_700_000_000.25), b"t"))
    if fmt == tarfile.GNU_FORMAT:
        members.append((_info("not-utf8-\udcff\udcfe"), b"raw name bytes"))
    return members


def _expected(data: bytes) -> list[tuple]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|", encoding="utf-8",
                      errors="surrogateescape") as tar:
        for m in tar:
            content = tar.extractfile(m).read() if m.isreg() else b""  # type: ignore[union-attr]
            xattrs = {k[13:]: v.encode("utf-8", "surrogateescape")
                      for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")}
            kind = REGULAR if m.type in REGULAR_TYPES else m.type
            out.append((m.name.rstrip("/"), kind, m.size if m.isreg() else 0, m.mode, m.uid,
                        m.gid, float(m.mtime), m.linkname, m.devmajor, m.devminor, xattrs,
                        content))
    return out


def _ours(data: bytes, chunked: bool = False) -> list[tuple]:
    src: io.RawIOBase = _Trickle(data) if chunked else io.BytesIO(data)  # type: ignore[assignment]
    ts = TarStream(src)
    out = []
    for m in ts:
        content = b"".join(bytes(p) for p in ts.data())
        out.append((m.name.rstrip("/"), m.type, m.size if m.isreg() else 0, m.mode, m.uid,
                    m.gid, float(m.mtime), m.linkname, m.devmajor, m.devminor, m.xattrs,
                    content))
    return out


class _Trickle(io.RawIOBase):
    """Returns at most 777 bytes per read, like a pipe or a decompressor might."""

    def __init__(self, data: bytes) -> None:
        self._src = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        return self._src.read(min(777, n if n >= 0 else 777))


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT],
                         ids=["gnu", "pax", "ustar"])
@pytest.mark.parametrize("chunked", [False, True], ids=["whole", "trickle"])
def test_reads_what_tarfile_reads(fmt: int, chunked: bool) -> None:
    members = _everything(fmt)
    if fmt == tarfile.USTAR_FORMAT:  # ustar cannot hold the long link target
        members = [(i, d) for i, d in members if len(i.linkname) <= 100]
    data = _archive(fmt, members)
    expected = _expected(data)
    assert len(expected) == len(members)
    assert _ours(data, chunked) == expected


def test_global_pax_header_applies_to_later_members() -> None:
    data = _archive(tarfile.PAX_FORMAT, [(_info("a"), b"1"), (_info("b"), b"2")],
                    pax_headers={"uid": "4242", "comment": "from git archive"})
    ours = _ours(data)
    assert [m[4] for m in ours] == [4242, 4242]
    assert ours == _expected(data)


def test_v7_directory_is_a_regular_entry_ending_in_slash() -> None:
    info = _info("olddir/", tarfile.AREGTYPE)
    data = _archive(tarfile.USTAR_FORMAT, [(info, b"")])
    [m] = list(TarStream(io.BytesIO(data)))
    assert m.type == DIRECTORY and m.isdir()


def test_unknown_types_keep_their_data_out_of_the_stream() -> None:
    odd = _info("vendor-entry", b"Z")
    odd.size = 700
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(odd, io.BytesIO(b"z" * 700))
        after = _info("after")
        after.size = 3
        tar.addfile(after, io.BytesIO(b"end"))
    ts = TarStream(io.BytesIO(buf.getvalue()))
    got = [(m.name, m.type, b"".join(bytes(p) for p in ts.data())) for m in ts]
    assert got == [("vendor-entry", b"Z", b""), ("after", REGULAR, b"end")]


@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar is not installed")
@pytest.mark.parametrize("fmt", ["gnu", "posix", "ustar"])
def test_reads_gnu_tar_output(tmp_path: Path, fmt: str) -> None:
    src = tmp_path / "src"
    (src / "d" / ("n" * 60) / ("m" * 60)).mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"data" * 1000)
    (src / "d" / ("n" * 60) / ("m" * 60) / "deep").write_bytes(b"deep")
    os.symlink("f", src / "d" / "s")
    os.link(src / "d" / "f", src / "d" / "h")
    os.mkfifo(src / "p")
    data = subprocess.run(["tar", f"--format={fmt}", "-C", str(src), "-cf", "-", "."],
                          check=True, capture_output=True).stdout
    assert _ours(data) == _expected(data)


def _header(name: bytes = b"f", size: bytes = b"00000000001", kind: bytes = b"0",
            fix_checksum: bool = True) -> bytearray:
    block = bytearray(512)
    block[0:len(name)] = name
    block[100:108] = b"0000644\x00"
    block[108:116] = block[116:124] = b"0000000\x00"
    block[124:124 + len(size)] = size
    block[136:148] = b"00000000000\x00"
    block[156:157] = kind
    block[257:263] = b"ustar\x00"
    block[148:156] = b" " * 8
    if fix_checksum:
        block[148:156] = b"%06o\x00 " % sum(block)
    return block


BROKEN = [
    ("empty", b"", "empty"),
    ("not-a-tar", b"hello world" * 100, "checksum"),
    ("bad-checksum", bytes(_header(fix_checksum=False)[:148]) + b"0000000\x00"
     + bytes(_header()[156:]), "checksum"),
    ("truncated-header", bytes(_header())[:300], "middle of a header"),
    ("truncated-data", bytes(_header(size=b"00000001000")) + b"x" * 100, "truncated"),
    ("bad-size", bytes(_header(size=b"zz")) + bytes(1024), "octal"),
    ("sparse", bytes(_header(kind=b"S", size=b"00000000000")) + bytes(1024), "sparse"),
    ("multi-volume", bytes(_header(kind=b"M", size=b"00000000000")) + bytes(1024),
     "multi-volume"),
    ("huge-pax", bytes(_header(kind=b"x", size=b"77777777777")), "too large"),
    ("malformed-pax", bytes(_header(kind=b"x", size=b"00000000010")) + b"99 a=b\n".ljust(512,
                                                                                        b"\0"),
     "pax"),
]


@pytest.mark.parametrize(("case", "data", "words"), BROKEN, ids=[c[0] for c in BROKEN])
def test_broken_archives_fail_with_a_sentence(case: str, data: bytes, words: str) -> None:
    ts = TarStream(io.BytesIO(data))
    with pytest.raises(TarFormatError, match=words):
        for _ in ts:
            for _piece in ts.data():
                pass


def test_end_marker_stops_reading() -> None:
    data = _archive(tarfile.GNU_FORMAT, [(_info("a"), b"1")]) + b"trailing garbage" * 64
    assert [m.name for m in TarStream(io.BytesIO(data))] == ["a"]


def test_parse_pax_records() -> None:
    assert parse_pax(b"16 path=a/b/c.d\n20 SCHILY.xattr.x=\x00\n") == {
        "path": b"a/b/c.d", "SCHILY.xattr.x": b"\x00"}
    with pytest.raises(TarFormatError, match="malformed pax extended header record at byte 0"):
        parse_pax(b"5 path=x\n")


def test_mutated_archives_fail_only_with_tar_format_errors() -> None:
    """Random byte flips in a real archive: the reader either reads it or says why, nothing else."""
    import random

    rng = random.Random(1234)
    base = bytearray(_archive(tarfile.PAX_FORMAT, _everything(tarfile.PAX_FORMAT)))
    outcomes = {"read": 0, "refused": 0}
    for _ in range(1500):
        data = bytearray(base)
        for _ in range(rng.randint(1, 8)):
            # Mostly the first headers, where the fields are; sometimes anywhere.
            pos = rng.randrange(0, 4096) if rng.random() < 0.8 else rng.randrange(len(data))
            data[pos] = rng.randrange(256)
        if rng.random() < 0.2:
            del data[rng.randrange(len(data)):]
        ts = TarStream(io.BytesIO(bytes(data)))
        try:
            for _m in ts:
                for _piece in ts.data():
                    pass
            outcomes["read"] += 1
        except TarFormatError as err:
            assert str(err)
            outcomes["refused"] += 1
    assert outcomes["read"] and outcomes["refused"]


def _written() -> tuple[bytes, list[tuple[str, bytes, dict]]]:
    """An archive from encode_header with every case that needs a pax record, and its plan."""
    plan: list[tuple[str, bytes, dict]] = [
        ("d/", DIRECTORY, {"mode": 0o755, "mtime": 1_700_000_000}),
        ("d/" + "long-" * 30 + "name", REGULAR, {"size": 5}),
        ("d/unicode-é", REGULAR, {"size": 5, "uid": 3_000_000_000, "gid": 7}),
        ("d/link", b"2", {"linkname": "target/" * 20 + "end"}),
        ("d/xattrs", REGULAR, {"size": 5, "xattrs": {"user.b": b"2", "user.a": b"\x00\xff"}}),
        ("d/null", b"3", {"devmajor": 1, "devminor": 3, "mode": 0o666}),
    ]
    from nbcontainer.images.tarstream import END_OF_ARCHIVE, encode_header, padding

    out = bytearray()
    for name, kind, fields in plan:
        out += encode_header(name, kind, **fields)
        if fields.get("size"):
            out += b"hello" + padding(5)
    return bytes(out + END_OF_ARCHIVE), plan


def test_encoded_headers_read_back_in_tarfile_and_ours() -> None:
    data, plan = _written()
    ours = _ours(data)
    assert ours == _expected(data)
    assert [m[0] for m in ours] == [name.rstrip("/") for name, _, _ in plan]
    assert ours[2][4] == 3_000_000_000 and ours[3][7] == "target/" * 20 + "end"
    assert ours[4][10] == {"user.a": b"\x00\xff", "user.b": b"2"}
    assert data == _written()[0], "the same input gives the same bytes"


@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar is not installed")
def test_gnu_tar_lists_encoded_headers(tmp_path: Path) -> None:
    data, plan = _written()
    (tmp_path / "a.tar").write_bytes(data)
    listing = subprocess.run(["tar", "--numeric-owner", "-tvf", str(tmp_path / "a.tar")],
                             check=True, capture_output=True, text=True).stdout
    for name, _, _ in plan:
        assert name in listing
    assert "3000000000/7" in listing


def test_byte_sum_is_sum_for_every_kind_of_block() -> None:
    """The header checksum's fast sum (Adler-32 of each half) is exactly ``sum``."""
    import random

    from nbcontainer.images.tarstream import byte_sum

    rng = random.Random(7)
    blocks = [bytes(512), b"\xff" * 512, b"\xff" * 256 + bytes(256), bytes(256) + b"\xff" * 256]
    blocks += [rng.randbytes(512) for _ in range(2000)]
    blocks += [bytes(rng.choice((0, 255)) for _ in range(512)) for _ in range(200)]
    for block in blocks:
        assert byte_sum(block) == sum(block)
