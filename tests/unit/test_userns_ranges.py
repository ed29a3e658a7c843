"""User namespace id ranges: root's subuid/subgid entries cut into ranges, leased in a store."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbcontainer.errors import SetupError
from nbcontainer.runtime import userns
from nbcontainer.runtime.userns import SHARED, SIZE


def files(tmp_path: Path, subuid: str, subgid: str) -> dict[str, str]:
    (tmp_path / "subuid").write_text(subuid)
    (tmp_path / "subgid").write_text(subgid)
    return {"subuid": str(tmp_path / "subuid"), "subgid": str(tmp_path / "subgid")}


def test_root_entries_by_name_or_uid_are_cut_into_whole_ranges(tmp_path: Path) -> None:
    paths = files(tmp_path, "alice:100000:65536\nroot:200000:140000\n0:900000:65536\nbad\n"
                  "root:x:1\n", "root:500000:200000\n")
    assert userns.slots(**paths) == [(200000, 500000), (200000 + SIZE, 500000 + SIZE),
                                     (900000, 500000 + 2 * SIZE)]


@pytest.fixture(autouse=True)
def records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The machine-wide lease records of these tests: a directory of their own."""
    monkeypatch.setenv("NBCONTAINER_USERNS", str(tmp_path / "userns"))
    return tmp_path / "userns"


def test_without_a_subgid_entry_the_subuid_ranges_serve_for_gids(tmp_path: Path) -> None:
    paths = files(tmp_path, "root:200000:65536\n", "alice:1:65536\n")
    assert userns.slots(**paths) == [(200000, 200000)]


def test_without_an_entry_for_root_every_container_shares_the_one_range(tmp_path: Path) -> None:
    paths = files(tmp_path, "alice:100000:65536\n", "")
    assert userns.allocate(tmp_path / "store", "c1", **paths) == SHARED
    assert userns.allocate(tmp_path / "store", "c2", **paths) == SHARED
    assert not SHARED.leased
    assert userns.leases(tmp_path / "store") == {}


def test_each_container_leases_its_own_range_until_released(tmp_path: Path) -> None:
    store = tmp_path / "store"
    paths = files(tmp_path, "root:200000:131072\n", "root:300000:131072\n")
    a = userns.allocate(store, "a", **paths)
    b = userns.allocate(store, "b", **paths)
    assert (a.uid, a.gid, b.uid, b.gid) == (200000, 300000, 200000 + SIZE, 300000 + SIZE)
    assert a.leased and a.host_uid(1000) == 201000
    with pytest.raises(SetupError, match="no free user namespace id range"):
        userns.allocate(tmp_path / "another-store", "c", **paths)  # the ranges are the machine's
    userns.release(store, "a")
    userns.release(store, "a")  # idempotent
    assert userns.allocate(store, "c", **paths).uid == 200000
    assert sorted(userns.leases(store).values()) == ["b", "c"]


def test_gc_collects_the_ranges_of_containers_that_are_gone(tmp_path: Path) -> None:
    store = tmp_path / "store"
    paths = files(tmp_path, "root:200000:196608\n", "root:200000:196608\n")
    store.mkdir()
    userns.allocate(store, "gone", **paths)
    userns.allocate(store, "alive", **paths)
    userns.allocate(tmp_path / "removed-store", "orphan", **paths)
    actions = userns.collect(lambda root, cid: root == store and cid == "alive")
    assert list(userns.leases().values()) == ["alive"]
    assert list(userns.leases(store).values()) == ["alive"]
    assert "container orphan is gone" in actions[-1]
    actions = actions[:1]
    assert actions == ["released user namespace ids 200000-265535 (container gone is gone)"]


def test_a_range_that_overlaps_a_lease_is_skipped_after_the_files_changed(tmp_path: Path) -> None:
    store = tmp_path / "store"
    userns.allocate(store, "old", **files(tmp_path, "root:200000:65536\n", "root:200000:65536\n"))
    moved = files(tmp_path, "root:232768:131072\n", "root:232768:131072\n")
    assert userns.allocate(store, "new", **moved).uid == 232768 + SIZE


def test_the_record_round_trips() -> None:
    idmap = userns.IdMap(1, 2, 3, leased=True)
    assert userns.IdMap.from_record(idmap.record()) == idmap
