"""Record classes without the import-time cost of :mod:`dataclasses`, for a start's path.

Why: ``dataclasses`` writes each class's ``__init__``, ``__repr__``, ``__eq__`` (and, frozen,
``__setattr__``, ``__delattr__``, ``__hash__``) as source text and compiles it at import. The
22 records imported by ``nbcontainer run`` cost 15 ms that way, and the module itself, with the
``inspect`` it imports, 9 ms more: a quarter of the CLI's whole start (measured with
``python -X importtime`` and by timing ``dataclasses._process_class``; bench/RESULTS.md has the
start). Here every record shares the same few ordinary functions, which read the class's field
table; making a record class costs a loop over its annotations.

The price is per instance: a shared ``__init__`` loops over the fields, about twice as slow as
a compiled one. The records built here are built a few times per container, so that does not
show; records built per tar member (``images/tarstream.py`` and the layer code) keep
dataclasses.

What is supported is what the records use, with dataclasses' meaning: fields from the class's
annotations, in order, with a default or ``field(default_factory=...)``; ``frozen`` (then
hashable, ``field(hash=False)`` leaves a field out); ``__eq__`` between records of the same
class; ``__repr__``; ``__match_args__``; :func:`fields` (with ``name``, ``type``, ``default``,
``default_factory``), :func:`replace` and :func:`asdict`. Methods a class defines itself win.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is slow to import: a CLI start needs only what it runs
if TYPE_CHECKING:
    from typing import Any, TypeVar

    from typing_extensions import dataclass_transform  # typing's own from Python 3.11

    _T = TypeVar("_T")
else:
    def dataclass_transform(**_: object) -> object:
        """At run time a no-op; for type checkers (PEP 681) the records are dataclasses."""
        return lambda decorated: decorated

_MISSING = object()

#: Mutable defaults a record must not share between instances (dataclasses refuses them too).
_MUTABLE = (list, dict, set, bytearray)


class FrozenInstanceError(AttributeError):
    """An assignment to a field of a frozen record."""


class Field:
    """One field of a record: its name, annotation (a string) and default."""

    __slots__ = ("name", "type", "default", "default_factory", "hash", "compare", "repr")

    def __init__(self, default: object = _MISSING, default_factory: object = _MISSING,
                 hash: bool | None = None, compare: bool = True, repr: bool = True) -> None:
        self.name = ""
        self.type: object = None
        self.default = default
        self.default_factory = default_factory
        self.hash = hash
        self.compare = compare
        self.repr = repr

    def __repr__(self) -> str:
        return f"Field(name={self.name!r}, type={self.type!r})"

    @property
    def required(self) -> bool:
        return self.default is _MISSING and self.default_factory is _MISSING


def field(*, default: Any = _MISSING, default_factory: Any = _MISSING,
          hash: bool | None = None, compare: bool = True, repr: bool = True) -> Any:
    """A field's options, as :func:`dataclasses.field` takes them."""
    if default is not _MISSING and default_factory is not _MISSING:
        raise ValueError("cannot specify both default and default_factory")
    return Field(default, default_factory, hash, compare, repr)


@dataclass_transform(field_specifiers=(field, Field))
def record(cls: type | None = None, /, *, frozen: bool = False) -> Any:
    """Make ``cls`` a record (``@record`` or ``@record(frozen=True)``), in place."""

    def wrap(klass: type) -> type:
        return _make_record(klass, frozen)

    return wrap if cls is None else wrap(cls)


def fields(rec: object) -> tuple[Field, ...]:
    """The fields of a record class or instance, in order."""
    klass = rec if isinstance(rec, type) else type(rec)
    try:
        return klass.__record_fields__  # type: ignore[attr-defined]
    except AttributeError:
        raise TypeError(f"{klass.__name__} is not a record") from None


def replace(rec: _T, /, **changes: Any) -> _T:
    """A copy of the record ``rec`` with some fields changed."""
    values = {f.name: getattr(rec, f.name) for f in fields(rec)}
    unknown = set(changes) - set(values)
    if unknown:
        raise TypeError(f"{type(rec).__name__} has no field {sorted(unknown)[0]!r}")
    values.update(changes)
    return type(rec)(**values)


def asdict(rec: object) -> dict[str, Any]:
    """A record as a dict, records inside it too (for JSON); lists, tuples and dicts are
    copied, other values shared (dataclasses deep-copies them; the records' are scalars)."""
    return {f.name: _plain(getattr(rec, f.name)) for f in fields(rec)}


def _plain(value: object) -> object:
    if hasattr(type(value), "__record_fields__"):
        return asdict(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _make_record(cls: type, frozen: bool) -> type:
    table: dict[str, Field] = {}
    for base in reversed(cls.__mro__[1:]):
        for f in base.__dict__.get("__record_fields__", ()):
            table[f.name] = f
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        if str(annotation).startswith(("ClassVar", "typing.ClassVar")):
            continue
        value = cls.__dict__.get(name, _MISSING)
        f = value if isinstance(value, Field) else Field(default=value)
        f.name, f.type = name, annotation
        if isinstance(f.default, _MUTABLE):
            raise ValueError(f"mutable default {type(f.default).__name__} for field {name} "
                             "is not allowed: use default_factory")
        if isinstance(value, Field):
            if f.default is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, f.default)
        table[name] = f
    seen_default = False
    for f in table.values():
        if f.required and seen_default:
            raise TypeError(f"non-default argument {f.name!r} follows default argument")
        seen_default = seen_default or not f.required
    own = cls.__dict__
    methods: dict[str, object] = {"__record_fields__": tuple(table.values()),
                                  "__match_args__": tuple(table)}
    for name, method in (("__init__", _init), ("__repr__", _repr), ("__eq__", _eq)):
        if name not in own:
            methods[name] = method
    if frozen:
        methods["__setattr__"] = _frozen_setattr
        methods["__delattr__"] = _frozen_delattr
        if own.get("__hash__") is None:
            methods["__hash__"] = _hash
    elif "__hash__" not in own:
        methods["__hash__"] = None  # mutable and compared by value: unhashable
    for name, value in methods.items():
        setattr(cls, name, value)
    return cls


def _init(self: object, *args: object, **kwargs: object) -> None:
    table = type(self).__record_fields__  # type: ignore[attr-defined]
    if len(args) > len(table):
        raise TypeError(f"{type(self).__name__}() takes {len(table)} positional arguments "
                        f"but {len(args)} were given")
    assign = object.__setattr__
    for i, f in enumerate(table):
        if i < len(args):
            if f.name in kwargs:
                raise TypeError(f"{type(self).__name__}() got multiple values for argument "
                                f"{f.name!r}")
            value = args[i]
        elif f.name in kwargs:
            value = kwargs.pop(f.name)
        elif f.default is not _MISSING:
            value = f.default
        elif f.default_factory is not _MISSING:
            value = f.default_factory()
        else:
            raise TypeError(f"{type(self).__name__}() missing required argument: {f.name!r}")
        assign(self, f.name, value)
    if kwargs:
        raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument "
                        f"{next(iter(kwargs))!r}")


def _repr(self: object) -> str:
    table = type(self).__record_fields__  # type: ignore[attr-defined]
    inner = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in table if f.repr)
    return f"{type(self).__qualname__}({inner})"


def _eq(self: object, other: object) -> bool:
    if other.__class__ is not self.__class__:
        return NotImplemented
    table = type(self).__record_fields__  # type: ignore[attr-defined]
    return (tuple(getattr(self, f.name) for f in table if f.compare)
            == tuple(getattr(other, f.name) for f in table if f.compare))


def _hash(self: object) -> int:
    table = type(self).__record_fields__  # type: ignore[attr-defined]
    return hash(tuple(getattr(self, f.name) for f in table
                      if (f.compare if f.hash is None else f.hash)))


def _frozen_setattr(self: object, name: str, value: object) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: object, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")
