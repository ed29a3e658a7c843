"""A data-only format for ``%%container -i/-o``: values in, values out, never code.

Nothing decoded here is ever called, imported or evaluated: a tag names one of a fixed set of
types and the decoder builds that type from its fields (no pickle, no importlib, no eval), so a
container that writes hostile bytes gets at worst a :class:`TransferError` in the notebook.

Layout: ``b"NBCD"``, a version byte (1), then one value. A value is a one-byte tag and its
payload; every length and count is an 8-byte big-endian unsigned integer and is checked against
the bytes that remain before anything is allocated::

    N T F              None, True, False
    i LEN BYTES        int, two's complement big-endian (any size up to MAX_INT_BYTES)
    f D / c D D        float / complex, IEEE 754 binary64 big-endian (nan, inf, -0.0 exact)
    s b B LEN BYTES    str (UTF-8, surrogates kept), bytes, bytearray
    l t S z COUNT ...  list, tuple, set, frozenset: COUNT values follow
    d COUNT ...        dict: COUNT key, value pairs
    D h W e            date, time, datetime, timedelta (fixed fields; tzinfo a UTC offset)
    m LEN ASCII        decimal.Decimal as its str()
    q INT INT          fractions.Fraction (numerator, denominator as the i payload)
    u 16 BYTES         uuid.UUID
    a / g ARRAY        numpy array / numpy scalar: dtype str (allowlisted), ndim, shape, raw bytes
    P VALUE            a pandas DataFrame/Series/Index described by a tuple of the values above

Decoding is bounded: MAX_SIZE bytes in all, MAX_DEPTH levels of nesting, exact type checks,
and every malformed input is a TransferError that says what was wrong.

This module is also sent into the container as source (the ``-i/-o`` bootstrap execs it there,
possibly under another Python), so it is stdlib-only, Python 3.8 syntax, imports numpy and
pandas only when a value needs them, and imports nothing from nbcontainer.
"""

from __future__ import annotations

import datetime
import decimal
import fractions
import re
import struct
import sys
import uuid
from typing import Any

MAGIC = b"NBCD"
VERSION = 1
#: The most bytes one encoding may have (either direction).
MAX_SIZE = 1 << 30
#: The deepest nesting of containers a value may have.
MAX_DEPTH = 100
#: The largest int, in bytes of two's complement (8 Mbit, about 2.5 million digits).
MAX_INT_BYTES = 1 << 20
#: The largest numerator or denominator of a Fraction (its gcd is quadratic in this).
MAX_FRACTION_BYTES = 1 << 12
#: The most dimensions of a numpy array.
MAX_NDIM = 64

#: What travels, in words, for the refusal message.
KINDS = ("numbers, strings, bytes, lists, dicts, sets, dates, numpy arrays, pandas objects")

_LEN = struct.Struct(">Q")
_F64 = struct.Struct(">d")
_C128 = struct.Struct(">dd")
_DATE = struct.Struct(">HBB")
_TIME = struct.Struct(">BBBIB")
_DATETIME = struct.Struct(">HBBBBBIB")
_DELTA = struct.Struct(">iiI")
_OFFSET = struct.Struct(">q")

# numpy dtype.str values that may travel: numbers, bool, fixed-size str/bytes, datetime64 and
# timedelta64. No object ("O"), void/structured ("V") or anything else.
_DTYPE = re.compile(
    r"[<>|=](b1|[iu][1248]|f(2|4|8|12|16)|c(8|16|24|32)|[US][1-9][0-9]{0,8}"
    r"|[mM]8(\[(Y|M|W|D|h|m|s|ms|us|ns|ps|fs|as)\])?)")

# pandas extension dtypes that travel as a list of their elements (missing ones as None).
_PANDAS_EXT = frozenset(["str", "string", "boolean", "Int8", "Int16", "Int32", "Int64", "UInt8",
                         "UInt16", "UInt32", "UInt64", "Float32", "Float64"])

_TAGS: dict[type, bytes] = {list: b"l", tuple: b"t", set: b"S", frozenset: b"z"}
_DECIMAL_CONTEXT = decimal.Context(traps=[decimal.InvalidOperation])


class TransferError(Exception):
    """A variable could not be moved in or out; the message names it and says why."""


class Refused(TransferError):
    """A value the format does not carry; ``path`` says where inside the variable."""

    def __init__(self, what: str, data_only: bool = True) -> None:
        super().__init__(what)
        self.what = what
        self.data_only = data_only
        self.path = ""

    def __str__(self) -> str:
        return self.what


def refusal(err: TransferError, option: str, name: str) -> str:
    """The sentence (after ``-o name:``) for a value that cannot be encoded."""
    if not isinstance(err, Refused):
        return str(err)
    verb = "cannot bring back" if option == "-o" else "cannot send"
    where = f" (at {name}{err.path})" if err.path else ""
    text = f"{verb} {err.what}{where}"
    if err.data_only:
        text += f"; {option} moves data only ({KINDS})"
    return text


def type_name(kind: type) -> str:
    """``sklearn.linear_model.LinearRegression``: the public module path, not ``._base``."""
    module = str(getattr(kind, "__module__", None) or "?")
    qualname = str(getattr(kind, "__qualname__", None) or getattr(kind, "__name__", "?"))
    if module == "builtins":
        return qualname
    parts = [p for p in module.split(".") if not p.startswith("_") or p.endswith("__")]
    return ".".join(parts + [qualname]) if parts else f"{module}.{qualname}"


def _refuse_type(value: Any) -> Refused:
    return Refused(f"a value of type {type_name(type(value))}")


# -- encoding ------------------------------------------------------------------------------------


class Encoded:
    """An encoding as chunks (no copy of big buffers); ``bytes(e)`` joins them."""

    __slots__ = ("chunks", "size")

    def __init__(self, chunks: list[Any], size: int) -> None:
        self.chunks = chunks
        self.size = size

    def __bytes__(self) -> bytes:
        return b"".join(self.chunks)

    def write(self, file: Any) -> None:
        """Write the chunks to a binary file object."""
        for chunk in self.chunks:
            file.write(chunk)


def encode(value: Any, max_size: int = MAX_SIZE) -> Encoded:
    """Encode ``value``; raises :class:`Refused` (a TransferError) for what does not travel."""
    enc = _Encoder(max_size)
    enc.put(MAGIC + bytes([VERSION]))
    enc.value(value, 0)
    return Encoded(enc.chunks, enc.size)


def dumps(value: Any, max_size: int = MAX_SIZE) -> bytes:
    """Encode ``value`` to bytes."""
    return bytes(encode(value, max_size))


class _Encoder:
    def __init__(self, max_size: int) -> None:
        self.chunks: list[Any] = []
        self.size = 0
        self.max_size = max_size
        self.active: set[int] = set()

    def put(self, chunk: Any) -> None:
        self.chunks.append(chunk)
        self.size += len(chunk)
        if self.size > self.max_size:
            raise Refused(f"data of more than {self.max_size} bytes (the limit)", data_only=False)

    def blob(self, tag: bytes, data: Any) -> None:
        self.put(tag + _LEN.pack(len(data)))
        self.put(data)

    def value(self, v: Any, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise Refused(f"data nested deeper than {MAX_DEPTH} levels", data_only=False)
        t = type(v)
        if v is None:
            self.put(b"N")
        elif t is bool:
            self.put(b"T" if v else b"F")
        elif t is int:
            self.blob(b"i", _int_bytes(v, MAX_INT_BYTES))
        elif t is float:
            self.put(b"f" + _F64.pack(v))
        elif t is complex:
            self.put(b"c" + _C128.pack(v.real, v.imag))
        elif t is str:
            self.blob(b"s", v.encode("utf-8", "surrogatepass"))
        elif t is bytes:
            self.blob(b"b", v)
        elif t is bytearray:
            self.blob(b"B", bytes(v))
        elif t is Encoded:
            self.put(b"b" + _LEN.pack(v.size))
            self.chunks.extend(v.chunks)
            self.size += v.size
        elif t in (list, tuple, set, frozenset, dict):
            self.container(v, depth)
        elif t is datetime.date:
            self.put(b"D" + _DATE.pack(v.year, v.month, v.day))
        elif t is datetime.time:
            self.put(b"h" + _TIME.pack(v.hour, v.minute, v.second, v.microsecond, v.fold)
                     + _offset(v, v.utcoffset() if v.tzinfo is not None else None))
        elif t is datetime.datetime:
            self.put(b"W" + _DATETIME.pack(v.year, v.month, v.day, v.hour, v.minute, v.second,
                                           v.microsecond, v.fold)
                     + _offset(v, v.utcoffset() if v.tzinfo is not None else None))
        elif t is datetime.timedelta:
            self.put(b"e" + _DELTA.pack(v.days, v.seconds, v.microseconds))
        elif t is decimal.Decimal:
            self.blob(b"m", str(v).encode("ascii"))
        elif t is fractions.Fraction:
            num = _int_bytes(v.numerator, MAX_FRACTION_BYTES)
            den = _int_bytes(v.denominator, MAX_FRACTION_BYTES)
            self.put(b"q" + _LEN.pack(len(num)) + num + _LEN.pack(len(den)) + den)
        elif t is uuid.UUID:
            self.put(b"u" + v.bytes)
        else:
            self.foreign(v, depth)

    def container(self, v: Any, depth: int) -> None:
        if id(v) in self.active:
            raise Refused("a value that contains itself", data_only=False)
        self.active.add(id(v))
        try:
            if type(v) is dict:
                self.put(b"d" + _LEN.pack(len(v)))
                for key, item in v.items():
                    where = f"[{_short(key)}]"
                    self.nested(key, depth, where + " (a key)")
                    self.nested(item, depth, where)
            else:
                tag = _TAGS[type(v)]
                self.put(tag + _LEN.pack(len(v)))
                ordered = type(v) in (list, tuple)
                for i, item in enumerate(v):
                    self.nested(item, depth, f"[{i}]" if ordered else " (an element)")
        finally:
            self.active.discard(id(v))

    def nested(self, v: Any, depth: int, where: str) -> None:
        try:
            self.value(v, depth + 1)
        except Refused as err:
            if not err.path:
                err.path = where
            elif not where.startswith(" "):
                err.path = where + err.path
            raise

    def foreign(self, v: Any, depth: int) -> None:
        """numpy and pandas values, recognised without importing either."""
        np = sys.modules.get("numpy")
        pd = sys.modules.get("pandas")
        t = type(v)
        if np is not None and t is np.ndarray:
            self.array(b"a", v, np)
        elif np is not None and isinstance(v, np.generic) and t.__module__ == "numpy":
            self.array(b"g", np.asarray(v), np)
        elif pd is not None and t.__module__.split(".")[0] == "pandas" and (
                t is pd.DataFrame or t is pd.Series or isinstance(v, pd.Index)):
            self.put(b"P")
            try:
                self.value(_pandas_spec(v, pd, np), depth + 1)
            except Refused as err:  # its path is inside our description: say which object
                err.path = ""
                if "pandas" not in err.what:
                    err.what += f" inside a {type_name(t)}"
                raise
        else:
            raise _refuse_type(v)

    def array(self, tag: bytes, a: Any, np: Any) -> None:
        dtype = a.dtype.str
        if not _DTYPE.fullmatch(dtype):
            kind = "numpy.ndarray" if tag == b"a" else "numpy scalar"
            raise Refused(f"a value of type {kind} with dtype {a.dtype}")
        if not a.flags.c_contiguous:  # (np.ascontiguousarray would make a 0-d array 1-d)
            a = a.copy(order="C")
        raw = dtype.encode("ascii")
        head = [tag, _LEN.pack(len(raw)), raw, _LEN.pack(a.ndim)]
        head += [_LEN.pack(n) for n in a.shape]
        self.put(b"".join(head) + _LEN.pack(a.nbytes))
        if a.nbytes:
            self.put(a.reshape(-1).view(np.uint8))


def _int_bytes(v: int, limit: int) -> bytes:
    data = v.to_bytes(v.bit_length() // 8 + 1, "big", signed=True)
    if len(data) > limit:
        raise Refused(f"an int of {len(data)} bytes (the limit is {limit})", data_only=False)
    return data


def _offset(v: Any, offset: datetime.timedelta | None) -> bytes:
    if v.tzinfo is None:
        return b"\x00"
    if offset is None:
        raise Refused(f"a {type(v).__name__} whose tzinfo {v.tzinfo!r} has no fixed UTC offset",
                      data_only=False)
    return b"\x01" + _OFFSET.pack(offset // datetime.timedelta(microseconds=1))


def _short(key: Any) -> str:
    text = repr(key)
    return text if len(text) <= 40 else text[:37] + "..."


def _pandas_spec(v: Any, pd: Any, np: Any) -> tuple[Any, ...]:
    """A pandas object as a tuple of plain values and numpy arrays."""
    if type(v) is pd.DataFrame:
        columns = [_pandas_column(v.iloc[:, i], pd, np) for i in range(v.shape[1])]
        return ("frame", _pandas_index(v.columns, pd, np), _pandas_index(v.index, pd, np), columns)
    if type(v) is pd.Series:
        return ("series", _pandas_column(v, pd, np), _pandas_index(v.index, pd, np), v.name)
    return ("index", _pandas_index(v, pd, np))


def _pandas_index(ix: Any, pd: Any, np: Any) -> tuple[Any, ...]:
    if type(ix) is pd.RangeIndex:
        return ("range", int(ix.start), int(ix.stop), int(ix.step), ix.name)
    if type(ix) is pd.MultiIndex:
        return ("multi", [_pandas_index(level, pd, np) for level in ix.levels],
                [c for c in ix.codes], list(ix.names))
    return ("index", _pandas_column(ix, pd, np), ix.name)


def _pandas_column(s: Any, pd: Any, np: Any) -> tuple[Any, ...]:
    """The values of a Series or an Index."""
    dt = s.dtype
    if isinstance(dt, pd.CategoricalDtype):
        cat = s.array
        return ("cat", cat.codes, _pandas_index(cat.categories, pd, np), bool(cat.ordered))
    if isinstance(dt, np.dtype):
        return ("obj", list(s)) if dt.kind == "O" else ("np", s.to_numpy())
    if str(dt) in _PANDAS_EXT:
        return ("ext", str(dt), list(s.array.to_numpy(dtype=object, na_value=None)))
    if getattr(dt, "tz", None) is not None:
        raise Refused(f"a pandas object with timezone-aware values ({dt}); make them naive "
                      "first, e.g. .dt.tz_convert(None)", data_only=False)
    raise Refused(f"a pandas object of dtype {dt} (numbers, bool, str, categories and naive "
                  "datetimes travel)", data_only=False)


# -- decoding ------------------------------------------------------------------------------------


def loads(data: Any, views: bool = False, max_size: int = MAX_SIZE) -> Any:
    """Decode bytes made by :func:`encode`; anything malformed is a TransferError.

    With ``views=True`` a ``bytes`` value comes back as a read-only memoryview into ``data``
    (no copy), for envelopes that carry encodings.
    """
    try:
        view = memoryview(data).cast("B")
    except TypeError as err:
        raise TransferError(f"cannot read a {type(data).__name__} as data") from err
    if len(view) > max_size:
        raise TransferError(f"data of {len(view)} bytes is more than the limit of {max_size}")
    if bytes(view[:4]) != MAGIC:
        raise TransferError("not nbcontainer data (the header is missing)")
    if len(view) < 5:
        raise TransferError("truncated data: no version byte")
    if view[4] != VERSION:
        raise TransferError(f"data version {view[4]} is not supported (this side reads "
                            f"version {VERSION})")
    dec = _Decoder(view, 5, views)
    try:
        value = dec.value(0)
    except TransferError:
        raise
    except RecursionError as err:  # a deep pandas object built by a library, say
        raise TransferError("data nested too deeply for this interpreter") from err
    except (ValueError, TypeError, OverflowError, ArithmeticError, IndexError, KeyError,
            struct.error, UnicodeError) as err:
        raise TransferError(f"malformed data at offset {dec.pos}: {type(err).__name__}: "
                            f"{err}") from err
    if dec.pos != len(view):
        raise TransferError(f"{len(view) - dec.pos} trailing bytes after the value")
    return value


class _Decoder:
    def __init__(self, view: memoryview, pos: int, views: bool) -> None:
        self.view = view
        self.pos = pos
        self.views = views

    def left(self) -> int:
        return len(self.view) - self.pos

    def take(self, n: int, what: str) -> memoryview:
        if n > self.left():
            raise TransferError(f"truncated data: {what} needs {n} bytes but only {self.left()} "
                                "remain")
        chunk = self.view[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def fixed(self, st: struct.Struct, what: str) -> tuple[Any, ...]:
        return st.unpack(self.take(st.size, what))

    def length(self, what: str, limit: int | None = None) -> int:
        n = self.fixed(_LEN, f"the length of {what}")[0]
        if n > self.left():
            raise TransferError(f"{what} claims {n} bytes but only {self.left()} remain")
        if limit is not None and n > limit:
            raise TransferError(f"{what} of {n} bytes is more than the limit of {limit}")
        return int(n)

    def count(self, what: str) -> int:
        n = self.fixed(_LEN, f"the count of {what}")[0]
        if n > self.left():  # every item takes at least one byte
            raise TransferError(f"{what} claims {n} items but only {self.left()} bytes remain")
        return int(n)

    def raw_int(self, what: str, limit: int) -> int:
        n = self.length(what, limit)
        return int.from_bytes(self.take(n, what), "big", signed=True)

    def value(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise TransferError(f"data nested deeper than {MAX_DEPTH} levels")
        at = self.pos
        tag = bytes(self.take(1, "a tag"))
        if tag == b"N":
            return None
        if tag == b"T":
            return True
        if tag == b"F":
            return False
        if tag == b"i":
            return self.raw_int("an int", MAX_INT_BYTES)
        if tag == b"f":
            return self.fixed(_F64, "a float")[0]
        if tag == b"c":
            real, imag = self.fixed(_C128, "a complex")
            return complex(real, imag)
        if tag == b"s":
            raw = self.take(self.length("a str"), "a str")
            try:
                return str(raw, "utf-8", "surrogatepass")
            except UnicodeDecodeError as err:
                raise TransferError(f"invalid UTF-8 in a str at offset {at}: {err.reason}") \
                    from None
        if tag == b"b":
            raw = self.take(self.length("a bytes"), "a bytes")
            return raw.toreadonly() if self.views else bytes(raw)
        if tag == b"B":
            return bytearray(self.take(self.length("a bytearray"), "a bytearray"))
        if tag in (b"l", b"t", b"S", b"z"):
            return self.sequence(tag, depth)
        if tag == b"d":
            return self.mapping(depth)
        if tag in (b"D", b"h", b"W", b"e"):
            return self.dates(tag)
        if tag == b"m":
            raw = self.take(self.length("a Decimal"), "a Decimal")
            try:
                return decimal.Decimal(str(raw, "ascii"), _DECIMAL_CONTEXT)
            except (UnicodeDecodeError, ValueError, ArithmeticError):
                raise TransferError(f"invalid Decimal at offset {at}") from None
        if tag == b"q":
            num = self.raw_int("a Fraction's numerator", MAX_FRACTION_BYTES)
            den = self.raw_int("a Fraction's denominator", MAX_FRACTION_BYTES)
            if den <= 0:
                raise TransferError(f"a Fraction with denominator {den} at offset {at}")
            return fractions.Fraction(num, den)
        if tag == b"u":
            return uuid.UUID(bytes=bytes(self.take(16, "a UUID")))
        if tag in (b"a", b"g"):
            return self.array(tag, at)
        if tag == b"P":
            spec = self.value(depth + 1)
            return _build_pandas(spec, at)
        raise TransferError(f"unknown tag {tag!r} at offset {at}")

    def sequence(self, tag: bytes, depth: int) -> Any:
        what = {b"l": "a list", b"t": "a tuple", b"S": "a set", b"z": "a frozenset"}[tag]
        n = self.count(what)
        items = [self.value(depth + 1) for _ in range(n)]
        if tag == b"l":
            return items
        if tag == b"t":
            return tuple(items)
        try:
            return set(items) if tag == b"S" else frozenset(items)
        except TypeError as err:
            raise TransferError(f"{what} holds an element that is not hashable ({err})") from None

    def mapping(self, depth: int) -> dict[Any, Any]:
        n = self.count("a dict")
        out: dict[Any, Any] = {}
        for _ in range(n):
            key = self.value(depth + 1)
            item = self.value(depth + 1)
            try:
                out[key] = item
            except TypeError as err:
                raise TransferError(f"a dict key that is not hashable ({err})") from None
        return out

    def tz(self, what: str) -> datetime.timezone | None:
        flag = self.take(1, f"the tzinfo flag of {what}")[0]
        if flag == 0:
            return None
        if flag != 1:
            raise TransferError(f"a tzinfo flag of {flag} in {what}")
        micros = self.fixed(_OFFSET, f"the UTC offset of {what}")[0]
        try:
            return datetime.timezone(datetime.timedelta(microseconds=micros))
        except (ValueError, OverflowError) as err:
            raise TransferError(f"invalid UTC offset in {what}: {err}") from None

    def dates(self, tag: bytes) -> Any:
        try:
            if tag == b"D":
                return datetime.date(*self.fixed(_DATE, "a date"))
            if tag == b"h":
                h, mi, s, us, fold = self.fixed(_TIME, "a time")
                return datetime.time(h, mi, s, us, self.tz("a time"), fold=fold)
            if tag == b"W":
                y, mo, d, h, mi, s, us, fold = self.fixed(_DATETIME, "a datetime")
                return datetime.datetime(y, mo, d, h, mi, s, us, self.tz("a datetime"),
                                         fold=fold)
            days, secs, micros = self.fixed(_DELTA, "a timedelta")
            return datetime.timedelta(days=days, seconds=secs, microseconds=micros)
        except (ValueError, OverflowError) as err:
            kind = {b"D": "date", b"h": "time", b"W": "datetime", b"e": "timedelta"}[tag]
            raise TransferError(f"invalid {kind}: {err}") from None

    def array(self, tag: bytes, at: int) -> Any:
        raw = self.take(self.length("a numpy dtype", 64), "a numpy dtype")
        try:
            dtype = str(raw, "ascii")
        except UnicodeDecodeError:
            dtype = ""
        if not _DTYPE.fullmatch(dtype):
            raise TransferError(f"numpy dtype {bytes(raw)!r} is not one that travels (numbers, "
                                "bool, str, bytes, datetime64, timedelta64)")
        ndim = self.fixed(_LEN, "the ndim of a numpy array")[0]
        if ndim > MAX_NDIM or (tag == b"g" and ndim != 0):
            raise TransferError(f"a numpy {'array' if tag == b'a' else 'scalar'} with "
                                f"{ndim} dimensions")
        shape = self.fixed(struct.Struct(f">{ndim}Q"), "the shape of a numpy array")
        nbytes = self.length("a numpy array's data")
        np = _import("numpy", "a numpy array")
        dt = np.dtype(dtype)
        count = 1
        for n in shape:
            if n >= 1 << 62:
                raise TransferError(f"a numpy array dimension of {n}")
            count *= n
        if count * dt.itemsize != nbytes:
            raise TransferError(f"a numpy array of shape {tuple(shape)} and dtype {dtype} "
                                f"needs {count * dt.itemsize} bytes but has {nbytes}")
        data = bytearray(self.take(nbytes, "a numpy array's data"))
        if dt.kind == "b" and data.translate(None, b"\x00\x01"):
            raise TransferError("a numpy bool array with bytes other than 0 and 1")
        if dt.kind == "U" and count:
            code = np.frombuffer(data, dtype=dt.byteorder.replace("|", "=") + "u4")
            if int(code.max()) > 0x10FFFF:
                raise TransferError("a numpy str array with a code point above U+10FFFF")
        arr = np.frombuffer(data, dtype=dt) if nbytes else np.empty(0, dtype=dt)
        arr = arr.reshape(tuple(int(n) for n in shape))
        return arr[()] if tag == b"g" else arr


def _import(name: str, what: str) -> Any:
    """numpy or pandas (fixed names, never one the data gives), or a sentence."""
    module = sys.modules.get(name)
    if module is not None:
        return module
    try:
        return __import__(name)
    except ImportError:
        raise TransferError(f"the data holds {what} but {name} is not installed in "
                            f"{sys.executable or 'this Python'}") from None


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise TransferError(f"malformed pandas object: {what}")


def _build_pandas(spec: Any, at: int) -> Any:
    pd = _import("pandas", "a pandas object")
    np = _import("numpy", "a pandas object")
    _check(type(spec) is tuple and len(spec) > 0, "not a tuple")
    try:
        if spec[0] == "frame":
            _check(len(spec) == 4 and type(spec[3]) is list, "a frame needs 4 fields")
            columns = _pd_index(spec[1], pd, np)
            index = _pd_index(spec[2], pd, np)
            values = [_pd_values(c, pd, np) for c in spec[3]]
            _check(len(columns) == len(values), f"{len(columns)} column names for "
                   f"{len(values)} columns")
            for v in values:
                _check(len(v) == len(index), f"a column of {len(v)} values for an index of "
                       f"{len(index)}")
            frame = pd.DataFrame({i: pd.Series(v, index=index, copy=False)
                                  for i, v in enumerate(values)}, index=index)
            frame.columns = columns
            return frame
        if spec[0] == "series":
            _check(len(spec) == 4, "a series needs 4 fields")
            values = _pd_values(spec[1], pd, np)
            index = _pd_index(spec[2], pd, np)
            _check(len(values) == len(index), f"{len(values)} values for an index of "
                   f"{len(index)}")
            return pd.Series(values, index=index, name=spec[3], copy=False)
        if spec[0] == "index":
            _check(len(spec) == 2, "an index needs 2 fields")
            return _pd_index(spec[1], pd, np)
        raise TransferError(f"malformed pandas object: unknown kind {_short(spec[0])}")
    except TransferError:
        raise
    except Exception as err:  # noqa: BLE001 - pandas validates with many exception types
        raise TransferError(f"malformed pandas object at offset {at}: {type(err).__name__}: "
                            f"{err}") from None


def _pd_values(spec: Any, pd: Any, np: Any) -> Any:
    _check(type(spec) is tuple and len(spec) > 1, "column values not a tuple")
    kind = spec[0]
    if kind == "np":
        _check(len(spec) == 2 and type(spec[1]) is np.ndarray and spec[1].ndim == 1,
               "numpy values not a 1-d array")
        return spec[1]
    if kind == "obj":
        _check(len(spec) == 2 and type(spec[1]) is list, "object values not a list")
        out = np.empty(len(spec[1]), dtype=object)
        out[:] = spec[1]
        return out
    if kind == "ext":
        _check(len(spec) == 3 and spec[1] in _PANDAS_EXT and type(spec[2]) is list,
               "extension values need a known dtype and a list")
        return pd.array(spec[2], dtype=spec[1])
    if kind == "cat":
        _check(len(spec) == 4 and type(spec[1]) is np.ndarray and spec[1].ndim == 1
               and spec[1].dtype.kind == "i" and type(spec[3]) is bool,
               "categorical values need int codes, categories and ordered")
        return pd.Categorical.from_codes(spec[1], categories=_pd_index(spec[2], pd, np),
                                         ordered=spec[3])
    raise TransferError(f"malformed pandas object: unknown values kind {_short(kind)}")


def _pd_index(spec: Any, pd: Any, np: Any) -> Any:
    _check(type(spec) is tuple and len(spec) > 1, "an index not a tuple")
    kind = spec[0]
    if kind == "range":
        _check(len(spec) == 5 and all(type(n) is int for n in spec[1:4]) and spec[3] != 0,
               "a range index needs int start, stop, non-zero step")
        return pd.RangeIndex(spec[1], spec[2], spec[3], name=spec[4])
    if kind == "index":
        _check(len(spec) == 3, "an index needs 3 fields")
        values = _pd_values(spec[1], pd, np)
        return pd.Index(values, name=spec[2], copy=False,
                        dtype=object if spec[1][0] == "obj" else None)
    if kind == "multi":
        _check(len(spec) == 4 and all(type(x) is list for x in spec[1:]),
               "a multi-index needs levels, codes and names")
        levels = [_pd_index(level, pd, np) for level in spec[1]]
        for c in spec[2]:
            _check(type(c) is np.ndarray and c.ndim == 1 and c.dtype.kind == "i",
                   "multi-index codes not int arrays")
        return pd.MultiIndex(levels=levels, codes=spec[2], names=spec[3])
    raise TransferError(f"malformed pandas object: unknown index kind {_short(kind)}")
