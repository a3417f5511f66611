"""The one writer of files: atomic swaps (files, memory-mapped arrays, links) and a CSV writer whose
text read from records never becomes a spreadsheet formula."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from resomap.io import atomic_path, atomic_symlink, file_mode, write_csv


def test_cells_that_begin_like_a_formula_are_neutralised(tmp_path: Path):
    rows = [{"model": '=HYPERLINK("http://x","y")', "class": "+cmd|' /C calc'!A0", "note": "@SUM(A1)",
             "data": "-2+3", "tab": "\tx", "cr": "\rx", "score": -0.5, "text_number": "-0.5",
             "plain": "tiny_cnn"}]
    write_csv(tmp_path / "all.csv", rows)
    with open(tmp_path / "all.csv", newline="") as handle:
        (header, row) = list(csv.reader(handle))
    assert header == list(rows[0])
    assert dict(zip(header, row)) == {
        "model": "'=HYPERLINK(\"http://x\",\"y\")", "class": "'+cmd|' /C calc'!A0", "note": "'@SUM(A1)",
        "data": "'-2+3", "tab": "'\tx", "cr": "'\rx", "score": "-0.5", "text_number": "-0.5",
        "plain": "tiny_cnn"}


def test_column_names_from_records_are_neutralised_too(tmp_path: Path):
    write_csv(tmp_path / "x.csv", [{"=evil": 1, "ok": None}])
    with open(tmp_path / "x.csv", newline="") as handle:
        assert list(csv.reader(handle)) == [["'=evil", "ok"], ["1", ""]]


def test_atomic_path_swaps_the_file_in_only_when_the_block_succeeds(tmp_path: Path):
    target = tmp_path / "sub" / "data.bin"
    with atomic_path(target) as temporary:
        assert temporary.parent == target.parent and not target.exists()
        temporary.write_bytes(b"new")
    assert target.read_bytes() == b"new" and (target.stat().st_mode & 0o777) == file_mode()
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"new"  # the old file, and no temporary left behind
    assert sorted(path.name for path in target.parent.iterdir()) == ["data.bin"]


def test_atomic_symlink_replaces_a_file_or_a_link_with_a_relative_link(tmp_path: Path):
    first, second = tmp_path / "runs" / "a.json", tmp_path / "runs" / "b.json"
    view = tmp_path / "view" / "x.json"
    first.parent.mkdir()
    first.write_text("a")
    second.write_text("b")
    view.parent.mkdir()
    view.write_text("a plain file of the earlier layout")
    atomic_symlink(first, view)
    assert view.is_symlink() and os.readlink(view) == os.path.join("..", "runs", "a.json")
    atomic_symlink(second, view)
    assert view.read_text() == "b" and sorted(path.name for path in view.parent.iterdir()) == ["x.json"]
