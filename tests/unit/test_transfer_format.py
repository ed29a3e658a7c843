"""The -i/-o data format: round trips, refusals in words, and hostile input from a container."""

from __future__ import annotations

import ast
import collections
import datetime
import decimal
import enum
import fractions
import math
import random
import struct
import subprocess
import sys
import threading
import uuid
import warnings
from pathlib import Path

import pytest

from nbcontainer.notebook import dataformat, transfer
from nbcontainer.notebook.dataformat import (
    MAX_DEPTH,
    MAX_INT_BYTES,
    TransferError,
    dumps,
    loads,
    refusal,
)

np = pytest.importorskip("numpy")

H = b"NBCD\x01"


def L(n: int) -> bytes:  # noqa: N802 - reads like the format's LEN
    return struct.pack(">Q", n)


def same(a, b) -> bool:
    """Equal, and of the same types all the way down (nan equal to nan)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack(">d", a) == struct.pack(">d", b)
    if isinstance(a, complex):
        return same(a.real, b.real) and same(a.imag, b.imag)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, decimal.Decimal):
        return str(a) == str(b)
    if isinstance(a, np.ndarray):
        return (a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
                and b.flags.c_contiguous and b.flags.writeable)
    if isinstance(a, np.generic):
        return a.dtype == b.dtype and a.tobytes() == b.tobytes()
    if isinstance(a, (datetime.datetime, datetime.time)):
        return a == b and a.utcoffset() == b.utcoffset() and a.fold == b.fold
    return bool(a == b)


UTC_MINUS_5 = datetime.timezone(datetime.timedelta(hours=-5, minutes=-30))

VALUES = [
    None, True, False, 0, 1, -1, 2**63, -(2**63) - 1, 7**500, -(7**500), 0.0, -0.0, 1.5,
    float("nan"), float("inf"), -float("inf"), 5e-324, 1j, complex(-0.0, float("nan")),
    "", "é€𝄞", "lone \ud800 surrogate", "\x00", b"", b"\x00\xff", bytearray(), bytearray(b"ab"),
    [], (), {}, set(), frozenset(), [[[]]], (1, (2, (3,))), {"a": [1, {"b": (2, None)}]},
    {1: "int", 1.5: "float", "s": "str", b"b": "bytes", (1, "t"): "tuple", None: "none",
     frozenset({1}): "frozenset", False: "bool", 2.5j: "complex"},
    {1, "a", (2, 3), b"x"}, frozenset({frozenset({1})}),
    datetime.date(1, 1, 1), datetime.date(9999, 12, 31), datetime.time(),
    datetime.time(23, 59, 59, 999999),
    datetime.time(1, 2, tzinfo=UTC_MINUS_5), datetime.datetime(2021, 11, 7, 1, 30, fold=1),
    datetime.datetime(2020, 2, 29, 12, tzinfo=datetime.timezone.utc),
    datetime.datetime(2020, 2, 29, 12, tzinfo=UTC_MINUS_5),
    datetime.timedelta(), datetime.timedelta(days=-1, microseconds=1),
    datetime.timedelta.max, datetime.timedelta.min,
    decimal.Decimal("0"), decimal.Decimal("-0.00"), decimal.Decimal("1E+999999"),
    decimal.Decimal("3.14159265358979323846264338327950288419716939937510"),
    decimal.Decimal("NaN"), decimal.Decimal("-Infinity"), decimal.Decimal("sNaN"),
    fractions.Fraction(0), fractions.Fraction(-22, 7), fractions.Fraction(2**100, 3),
    uuid.UUID(int=0), uuid.UUID("12345678-1234-5678-1234-567812345678"),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_round_trip_plain(value):
    back = loads(dumps(value))
    assert same(value, back), (value, back)


def test_round_trip_nested_everything_and_zoneinfo_becomes_a_fixed_offset():
    zoneinfo = pytest.importorskip("zoneinfo")
    try:
        paris = zoneinfo.ZoneInfo("Europe/Paris")
    except zoneinfo.ZoneInfoNotFoundError:
        pytest.skip("no tz database")
    when = datetime.datetime(2024, 7, 1, 12, tzinfo=paris)
    value = {"all": VALUES, "when": when}
    back = loads(dumps(value))
    assert same(value["all"], back["all"])
    assert back["when"] == when and back["when"].utcoffset() == datetime.timedelta(hours=2)
    assert type(back["when"].tzinfo) is datetime.timezone


ARRAYS = [
    np.array(3.5), np.array(True), np.array("x"), np.zeros(0), np.zeros((0, 3), dtype=np.int8),
    np.arange(24, dtype=np.int64).reshape(2, 3, 4), np.arange(24.0).reshape(4, 6)[::2, ::3],
    np.arange(12).reshape(3, 4).T, np.arange(5, dtype=">i4"), np.arange(4, dtype=">f8"),
    np.array([1 + 2j, np.nan], dtype=np.complex64), np.array([True, False]),
    np.array(["", "ab", "é𝄞"]), np.array([b"", b"\x00z"]), np.arange(3, dtype=np.float16),
    np.array([np.nan, -0.0, np.inf]), np.arange(3, dtype=np.uint64) * (2**63),
    np.array(["2020-01-01", "NaT"], dtype="datetime64[ns]"),
    np.array([1, -2], dtype="timedelta64[s]"), np.array(["2020-01"], dtype="datetime64[M]"),
]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype.str}{a.shape}")
def test_round_trip_numpy(array):
    back = loads(dumps(array))
    assert same(array, back), (array, back)


def test_round_trip_numpy_scalars():
    for scalar in (np.float64(1.5), np.int8(-3), np.bool_(True), np.complex128(1j),
                   np.datetime64("2020-01-01"), np.str_("s")):
        back = loads(dumps(scalar))
        assert type(back) is type(scalar) and same(scalar, back)


def test_round_trip_pandas():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({
        "i": [1, 2, 3], "f": [0.5, np.nan, -0.0], "b": [True, False, True],
        "s": ["x", None, "zé"], "o": [b"raw", 1, None],
        "t": pd.to_datetime(["2020-01-01 00:00", None, "2021-06-30 12:00"]),
        "d": pd.to_timedelta([1, 2, 3], unit="s"),
        "c": pd.Categorical(["lo", "hi", "lo"], categories=["lo", "hi"], ordered=True),
        "n": pd.array([1, None, 3], dtype="Int64"),
    }, index=pd.Index([10, 20, 30], name="key"))
    pd.testing.assert_frame_equal(loads(dumps(frame)), frame)
    series = pd.Series([1.0, 2.0], index=pd.Index(["a", "b"], name="k"), name="s")
    pd.testing.assert_series_equal(loads(dumps(series)), series)
    multi = pd.MultiIndex.from_product([["a", "b"], [1, 2]], names=["x", "y"])
    wide = pd.DataFrame(np.arange(8).reshape(4, 2), index=multi, columns=["u", "u"])
    pd.testing.assert_frame_equal(loads(dumps(wide)), wide)
    for empty in (pd.DataFrame(), pd.DataFrame(index=pd.RangeIndex(5, 0, -2)),
                  pd.Series([], dtype="float32"), pd.Index([], dtype="int64")):
        back = loads(dumps(empty))
        assert type(back) is type(empty) and back.equals(empty)
    pd.testing.assert_index_equal(loads(dumps(pd.RangeIndex(2, 9, 3, name="r"))),
                                  pd.RangeIndex(2, 9, 3, name="r"), exact=True)
    nested = {"frame": frame, "array": np.arange(3)}
    back = loads(dumps(nested))
    pd.testing.assert_frame_equal(back["frame"], frame)


class MyInt(int):
    pass


class Color(enum.Enum):
    RED = 1


def _refusals():
    cases = [
        (object(), "a value of type object"),
        (lambda: 1, "a value of type function"),
        (sys, "a value of type module"),
        (int, "a value of type type"),
        (MyInt(1), "a value of type test_transfer_format.MyInt"),
        (Color.RED, "a value of type test_transfer_format.Color"),
        (collections.OrderedDict(a=1), "a value of type collections.OrderedDict"),
        (collections.defaultdict(list), "a value of type collections.defaultdict"),
        ((i for i in ()), "a value of type generator"),
        (threading.Lock(), "a value of type _thread.lock"),
        (np.array([1, "a"], dtype=object), "a value of type numpy.ndarray with dtype object"),
        (np.zeros(2, dtype=[("a", "i4")]), r"a value of type numpy.ndarray with dtype \["),
        (np.ma.masked_array([1]), "a value of type numpy.ma.MaskedArray"),
    ]
    with warnings.catch_warnings():  # numpy.matrix is pending deprecation, and refused
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        cases.append((np.asmatrix(np.eye(1)), "a value of type numpy.matrix"))
    try:
        import pandas as pd
    except ImportError:
        return cases
    return cases + [
        (pd.Timestamp("2020-01-01"), "a value of type pandas.Timestamp"),
        (pd.Series(pd.to_datetime(["2020"], utc=True)), "timezone-aware values"),
        (pd.Series(pd.period_range("2020", periods=2)), "a pandas object of dtype period"),
        (pd.DataFrame({"o": [object()]}), "a value of type object inside a pandas"),
    ]


@pytest.mark.parametrize("value,reason", _refusals(), ids=lambda x: type(x).__name__)
def test_refused_in_words(value, reason):
    with pytest.raises(TransferError, match=reason) as info:
        dumps({"k": [1, value]})
    text = refusal(info.value, "-o", "model")
    assert text.startswith("cannot bring back ") and "(at model['k'][1])" in text
    if reason.startswith("a value of type"):
        assert text.endswith("; -o moves data only (numbers, strings, bytes, lists, dicts, "
                             "sets, dates, numpy arrays, pandas objects)")


class LinearRegression:
    """Where scikit-learn keeps it: the message names the public path."""


LinearRegression.__module__ = "sklearn.linear_model._base"


def test_refusal_names_the_variable_and_the_public_type_path():
    with pytest.raises(TransferError) as info:
        dumps(LinearRegression())
    assert refusal(info.value, "-o", "model") == (
        "cannot bring back a value of type sklearn.linear_model.LinearRegression; -o moves "
        "data only (numbers, strings, bytes, lists, dicts, sets, dates, numpy arrays, pandas "
        "objects)")
    with pytest.raises(TransferError, match=r"^-i model: cannot send a value of type "
                                            r"sklearn.linear_model.LinearRegression; -i moves"):
        transfer.pack_inputs(("model",), {"model": LinearRegression()})


def test_cycles_depth_and_size_are_refused_in_words():
    loop: list = [1]
    loop.append(loop)
    with pytest.raises(TransferError, match=r"a value that contains itself"):
        dumps(loop)
    deep: list = []
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(TransferError, match=f"nested deeper than {MAX_DEPTH} levels"):
        dumps(deep)
    with pytest.raises(TransferError, match="more than 100 bytes"):
        dumps(b"x" * 200, max_size=100)
    shared = [1, 2]
    assert loads(dumps([shared, shared])) == [[1, 2], [1, 2]]  # shared is not a cycle
    tz = datetime.datetime(2020, 1, 1, tzinfo=NoOffset())
    with pytest.raises(TransferError, match="has no fixed UTC offset"):
        dumps(tz)


class NoOffset(datetime.tzinfo):
    def utcoffset(self, dt):
        return None


def arr(dtype: bytes, shape: tuple, data: bytes, tag: bytes = b"a") -> bytes:
    return (H + tag + L(len(dtype)) + dtype + L(len(shape)) + b"".join(L(n) for n in shape)
            + L(len(data)) + data)


def pandas_of(spec) -> bytes:
    return H + b"P" + dumps(spec)[5:]


HOSTILE = [
    (b"", "header is missing"),
    (b"\x80\x04\x95pickle", "header is missing"),
    (b"NBCD", "no version byte"),
    (b"NBCD\x02N", "data version 2 is not supported"),
    (H, "truncated data: a tag needs 1 bytes but only 0 remain"),
    (H + b"Z", r"unknown tag b'Z' at offset 5"),
    (H + b"\x00", r"unknown tag b'\\x00'"),
    (H + b"NN", "1 trailing bytes after the value"),
    (H + b"s\x00\x00", "truncated data: the length of a str needs 8 bytes"),
    (H + b"s" + L(5) + b"ab", "a str claims 5 bytes but only 2 remain"),
    (H + b"b" + L(2**64 - 1), "a bytes claims 18446744073709551615 bytes"),
    (H + b"b" + struct.pack(">d", math.nan), r"a bytes claims \d+ bytes but only 0 remain"),
    (H + b"l" + L(10**12) + b"N", "a list claims 1000000000000 items but only 1 bytes remain"),
    (H + b"d" + L(2) + b"NN", "truncated data: a tag needs 1"),
    (H + b"s" + L(2) + b"\xc3\x28", "invalid UTF-8 in a str at offset 5"),
    (H + b"s" + L(1) + b"\xff", "invalid UTF-8"),
    (H + b"f\x00\x00", "truncated data: a float needs 8 bytes"),
    (H + b"i" + L(MAX_INT_BYTES + 1) + bytes(MAX_INT_BYTES + 1), "more than the limit"),
    (H + b"d" + L(1) + b"l" + L(0) + b"N", "a dict key that is not hashable"),
    (H + b"S" + L(1) + b"d" + L(0), "a set holds an element that is not hashable"),
    (H + b"S" + L(1) + b"m" + L(4) + b"sNaN", "a set holds an element that is not hashable"),
    (H + b"D" + struct.pack(">HBB", 2020, 13, 1), "invalid date: month must be in 1..12"),
    (H + b"W" + struct.pack(">HBBBBBIB", 2020, 1, 1, 25, 0, 0, 0, 0) + b"\x00",
     "invalid datetime: hour must be in 0..23"),
    (H + b"h" + struct.pack(">BBBIB", 1, 2, 3, 4, 0) + b"\x07", "a tzinfo flag of 7"),
    (H + b"h" + struct.pack(">BBBIB", 1, 2, 3, 4, 0) + b"\x01" + struct.pack(">q", 10**11),
     "invalid UTC offset"),
    (H + b"h" + struct.pack(">BBBIB", 1, 2, 3, 4, 2) + b"\x00", "invalid time: fold"),
    (H + b"e" + struct.pack(">iiI", 10**9, 0, 0), "invalid timedelta"),
    (H + b"m" + L(3) + b"abc", "invalid Decimal at offset 5"),
    (H + b"m" + L(2) + b"\xff1", "invalid Decimal"),
    (H + b"q" + L(1) + b"\x01" + L(1) + b"\x00", "a Fraction with denominator 0"),
    (H + b"q" + L(1) + b"\x01" + L(1) + b"\xff", "a Fraction with denominator -1"),
    (H + b"q" + L(5000) + bytes(5000) + L(1) + b"\x01", "more than the limit of 4096"),
    (H + b"u" + b"short", "truncated data: a UUID needs 16 bytes"),
    (arr(b"|O", (1,), bytes(8)), r"numpy dtype b'\|O' is not one that travels"),
    (arr(b"<x9", (1,), bytes(9)), r"numpy dtype b'<x9' is not one that travels"),
    (arr(b"|V8", (1,), bytes(8)), r"numpy dtype b'\|V8' is not one that travels"),
    (arr(b"\xff\xfe", (1,), bytes(8)), r"numpy dtype b'\\xff\\xfe' is not one that travels"),
    (arr(b"<f8", (3,), bytes(8)), r"shape \(3,\) and dtype <f8 needs 24 bytes but has 8"),
    (arr(b"<f8", (2**63, 0), b""), "a numpy array dimension of 9223372036854775808"),
    (arr(b"<f8", (1,) * 100, bytes(8)), "a numpy array with 100 dimensions"),
    (arr(b"<f8", (1,), bytes(8), tag=b"g"), "a numpy scalar with 1 dimensions"),
    (arr(b"|b1", (2,), b"\x01\x02"), "a numpy bool array with bytes other than 0 and 1"),
    (arr(b"<U1", (1,), struct.pack("<I", 0x110000)), r"code point above U\+10FFFF"),
    (H + b"a" + L(100) + b"<f8", "a numpy dtype claims 100 bytes but only 3 remain"),
]


def _pandas_hostile():
    try:
        import pandas  # noqa: F401
    except ImportError:
        return []
    rng = ("range", 0, 2, 1, None)
    return [
        (pandas_of(["frame"]), "malformed pandas object: not a tuple"),
        (pandas_of(("series", ("np", np.arange(3)), rng, None)),
         "malformed pandas object: 3 values for an index of 2"),
        (pandas_of(("frame", rng, rng, [("np", np.arange(2))])),
         "malformed pandas object: 2 column names for 1 columns"),
        (pandas_of(("series", ("ext", "pandas.core.frame.DataFrame", [1, 2]), rng, None)),
         "extension values need a known dtype"),
        (pandas_of(("series", ("obj", "os.system"), rng, None)), "object values not a list"),
        (pandas_of(("series", ("np", np.zeros((2, 2))), rng, None)),
         "numpy values not a 1-d array"),
        (pandas_of(("index", ("range", 0, 5, 0, None))), "non-zero step"),
        (pandas_of(("index", ("pickle", b"..."))), "unknown index kind 'pickle'"),
        (pandas_of(("eval", "1")), "malformed pandas object: unknown kind 'eval'"),
        (pandas_of(("series", ("cat", np.array([0, 5]), ("index", ("np", np.arange(2)), None),
                               False), rng, None)), "malformed pandas object at offset 5"),
        (pandas_of(("series", ("np", np.arange(2)), rng, ["unhashable"])),
         "malformed pandas object at offset 5"),
    ]


def _deep(levels: int) -> bytes:
    return H + (b"l" + L(1)) * levels + b"N"


@pytest.mark.parametrize("data,reason", HOSTILE + _pandas_hostile() + [
    (_deep(100_000), f"nested deeper than {MAX_DEPTH} levels"),
    ((H + b"S" + L(1)) + (b"z" + L(1)) * 100_000 + b"N", "nested deeper than"),
], ids=lambda x: x[:24].hex() if isinstance(x, bytes) else None)
def test_hostile_input_is_a_transfer_error_in_words(data, reason):
    with pytest.raises(TransferError, match=reason):
        loads(data)


def test_size_limit_and_non_bytes():
    with pytest.raises(TransferError, match="data of 15 bytes is more than the limit of 10"):
        loads(H + b"s" + L(0) + b"N", max_size=10)
    with pytest.raises(TransferError, match="cannot read a int as data"):
        loads(5)


def _valid_samples() -> list[bytes]:
    samples = [dumps(VALUES), dumps({"arrays": ARRAYS[:8]}), dumps(np.arange(6.0).reshape(2, 3))]
    try:
        import pandas as pd
    except ImportError:
        return samples
    frame = pd.DataFrame({"a": [1, 2], "s": ["x", "y"], "c": pd.Categorical(["u", "v"])},
                         index=pd.Index([3, 4], name="k"))
    return samples + [dumps(frame)]


def test_fuzz_only_values_or_transfer_errors():
    rng = random.Random(11)
    cases = [bytes(rng.randrange(256) for _ in range(rng.randrange(64))) for _ in range(1000)]
    cases += [H + bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
              for _ in range(1000)]
    samples = _valid_samples()
    for _ in range(3000):
        data = bytearray(rng.choice(samples))
        for _ in range(rng.randrange(1, 4)):
            op = rng.randrange(4)
            at = rng.randrange(5, max(6, len(data)))
            if op == 0:
                data[at] = rng.randrange(256)
            elif op == 1:
                del data[at:at + rng.randrange(1, 16)]
            elif op == 2:
                data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
            else:
                data = data[:at]
        cases.append(bytes(data))
    errors = 0
    for data in cases:
        try:
            loads(data)
        except TransferError:
            errors += 1
    assert errors > len(cases) // 2  # the mutations do break most inputs


def test_container_side_is_stdlib_only_and_python38():
    source = Path(dataformat.__file__).read_text(encoding="utf-8")
    tree = ast.parse(source, feature_version=(3, 8))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "datetime", "decimal", "fractions", "re", "struct", "sys",
                        "typing", "uuid"}, imported
    ast.parse(transfer.BOOTSTRAP, feature_version=(3, 8))
    assert len(transfer.BOOTSTRAP) < 100_000  # one argv string (MAX_ARG_STRLEN is 128 KiB)


def test_no_code_from_data_on_the_host():
    for module in (dataformat, transfer):
        tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        names |= {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                  for a in n.names}
        assert not names & {"pickle", "importlib", "eval", "marshal", "import_module",
                            "getattr_static"}, module.__name__


def test_numpy_and_pandas_are_imported_only_when_needed():
    code = ("import sys\nfrom nbcontainer.notebook.dataformat import dumps, loads\n"
            "assert loads(dumps({'a': [1, 2.5, 'x']})) == {'a': [1, 2.5, 'x']}\n"
            "assert 'numpy' not in sys.modules and 'pandas' not in sys.modules\n"
            "import numpy\nloads(dumps(numpy.arange(3)))\n"
            "assert 'pandas' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(dataformat.__file__).parents[2])
    assert done.returncode == 0, done.stderr


def _other_pythons() -> list[str]:
    """Interpreters of other 3.x versions here (pyenv's, the system's): images have those."""
    found = {}
    for v in range(8, 15):
        if v == sys.version_info[1]:
            continue
        candidates = sorted(Path.home().glob(f".pyenv/versions/3.{v}.*/bin/python3.{v}"))
        candidates += [Path(p) for p in [f"/usr/bin/python3.{v}"] if Path(p).exists()]
        if candidates:
            found[v] = str(candidates[0])
    return list(found.values())


OTHER_PYTHONS = _other_pythons()


@pytest.mark.parametrize("python", OTHER_PYTHONS or [pytest.param(None, marks=pytest.mark.skip(
    reason="no other python3.x on this machine"))])
def test_format_under_another_python(python):
    source = Path(dataformat.__file__).read_text(encoding="utf-8")
    code = ("import sys, types\nfmt = types.ModuleType('f')\n"
            "exec(compile(sys.stdin.read(), 'f', 'exec'), fmt.__dict__)\n"
            "import datetime, decimal\n"
            "v = [1, 2**100, -0.0, 'é', b'x', {1: (2, {3})}, datetime.datetime(2020, 1, 1),"
            " decimal.Decimal('1.5')]\n"
            "assert fmt.loads(fmt.dumps(v)) == v\n"
            "sys.stdout.write(fmt.dumps(v).hex())\n")
    done = subprocess.run([python, "-c", code], input=source, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert loads(bytes.fromhex(done.stdout))[5] == {1: (2, {3})}


@pytest.mark.parametrize("python", OTHER_PYTHONS or [pytest.param(None, marks=pytest.mark.skip(
    reason="no other python3.x on this machine"))])
def test_bootstrap_under_another_python(python, tmp_path):
    """An image's python3 runs the cell: -i in, -o out, a refusal named, over the real pipes."""
    import os

    packed = transfer.pack_inputs(("xs",), {"xs": [1, 2, 3]})
    r, w = os.pipe()
    try:
        data = transfer.Program("total = sum(xs)\nbad = object()\n", packed,
                                ("total", "bad"), w).encode()
        done = subprocess.run(transfer.python_command(python), input=data, pass_fds=(w,),
                              capture_output=True)
        os.close(w)
        w = -1
        assert done.returncode == 0, done.stderr
        with os.fdopen(r, "rb") as f:
            r = -1
            out = f.read()
    finally:
        for fd in (r, w):
            if fd >= 0:
                os.close(fd)
    assert transfer.unpack_outputs(("total",), out) == {"total": 6}
    with pytest.raises(TransferError, match="-o bad: cannot bring back a value of type object"):
        transfer.unpack_outputs(("bad",), out)
