"""Records replaced in place: the reader sees the old text or the new one, nothing else left."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from nbcontainer.paths import replace_runtime_record


def test_first_save_creates_the_record(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    replace_runtime_record(path, '{"a": 1}')
    assert path.read_text() == '{"a": 1}'
    assert os.listdir(tmp_path) == ["state.json"]


def test_a_save_swaps_the_text_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("old")
    inode_before = path.stat().st_ino
    replace_runtime_record(path, "new")
    assert path.read_text() == "new"
    assert path.stat().st_ino != inode_before  # a new file under the name, not a rewrite
    assert os.listdir(tmp_path) == ["state.json"]


def test_readers_never_see_a_partial_record(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    texts = {"A" * 5000, "B" * 5000}
    replace_runtime_record(path, "A" * 5000)
    stop = threading.Event()
    seen: set[str] = set()

    def read() -> None:
        while not stop.is_set():
            seen.add(path.read_text())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(300):
            replace_runtime_record(path, "AB"[i % 2] * 5000)
    finally:
        stop.set()
        reader.join()
    assert seen <= texts and seen
