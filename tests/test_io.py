"""The one CSV writer: text read from records never becomes a spreadsheet formula."""

from __future__ import annotations

import csv
from pathlib import Path

from resomap.io import write_csv


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
