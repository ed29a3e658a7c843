"""nbcontainer._records: the subset of dataclasses' behaviour the start path's records rely on."""

from __future__ import annotations

import dataclasses

import pytest

from nbcontainer._records import FrozenInstanceError, field, fields, record, replace


@record(frozen=True)
class Point:
    """A frozen record with a default and a factory."""

    x: int
    y: int = 0
    tags: list[str] = field(default_factory=list, hash=False)


@record
class Box:
    """A mutable record."""

    name: str
    items: dict[str, int] = field(default_factory=dict)

    def size(self) -> int:
        return len(self.items)


@dataclasses.dataclass(frozen=True)
class DPoint:
    x: int
    y: int = 0
    tags: list[str] = dataclasses.field(default_factory=list, hash=False)


def test_init_defaults_factories_and_positional_order() -> None:
    p = Point(1)
    assert (p.x, p.y, p.tags) == (1, 0, [])
    assert Point(1, 2).y == 2 and Point(x=1, y=3).y == 3
    assert Point(1).tags is not Point(1).tags  # a fresh list each time
    assert Point.__match_args__ == ("x", "y", "tags")


def test_repr_eq_hash_match_dataclasses() -> None:
    ours, theirs = Point(1, 2, ["a"]), DPoint(1, 2, ["a"])
    assert repr(ours).removeprefix("Point") == repr(theirs).removeprefix("DPoint")
    assert Point(1, 2) == Point(1, 2) and Point(1, 2) != Point(2, 1)
    assert Point(1, 2) != DPoint(1, 2)  # another class: not equal
    assert hash(Point(1, 2, ["a"])) == hash(Point(1, 2, ["b"]))  # tags: hash=False
    assert {Point(1), Point(1)} == {Point(1)}
    assert Box.__hash__ is None  # mutable and compared by value, as dataclasses does


def test_frozen_refuses_assignment_and_deletion() -> None:
    p = Point(1)
    with pytest.raises(FrozenInstanceError, match="cannot assign to field 'x'"):
        p.x = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del p.y
    b = Box("b")
    b.name = "c"
    assert b.name == "c" and b.size() == 0


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    ((), {}, "missing required argument: 'x'"),
    ((1, 2, [], 4), {}, "takes 3 positional arguments but 4 were given"),
    ((1,), {"x": 2}, "got multiple values for argument 'x'"),
    ((1,), {"z": 2}, "got an unexpected keyword argument 'z'"),
])
def test_bad_calls_are_type_errors(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        Point(*args, **kwargs)


def test_fields_and_replace() -> None:
    assert [f.name for f in fields(Point)] == ["x", "y", "tags"]
    assert [f.type for f in fields(Point(1))] == ["int", "int", "list[str]"]
    assert fields(Point)[1].default == 0 and fields(Point)[2].default_factory is list
    p = Point(1, 2)
    q = replace(p, y=5)
    assert (q.x, q.y) == (1, 5) and p.y == 2
    with pytest.raises(TypeError, match="no field 'z'"):
        replace(p, z=1)
    with pytest.raises(TypeError, match="not a record"):
        fields(DPoint)


def test_definitions_dataclasses_refuses_are_refused() -> None:
    with pytest.raises(ValueError, match="mutable default list"):
        @record
        class Bad:
            items: list[int] = []  # noqa: RUF012

    with pytest.raises(TypeError, match="non-default argument 'b' follows default"):
        @record
        class Order:
            a: int = 0
            b: int  # type: ignore[misc]


def test_a_method_the_class_defines_wins() -> None:
    @record(frozen=True)
    class Named:
        name: str

        def __repr__(self) -> str:
            return f"<{self.name}>"

    assert repr(Named("n")) == "<n>"
    assert Named("n") == Named("n")


def test_asdict_goes_into_records_and_containers() -> None:
    from nbcontainer._records import asdict

    box = Box("b", {"n": 1})
    assert asdict(Point(1, 2, ["t"])) == {"x": 1, "y": 2, "tags": ["t"]}
    nested = asdict(Box("outer", {"p": Point(3)}))  # type: ignore[dict-item]
    assert nested == {"name": "outer", "items": {"p": {"x": 3, "y": 0, "tags": []}}}
    assert asdict(box)["items"] is not box.items  # a copy, as dataclasses makes
