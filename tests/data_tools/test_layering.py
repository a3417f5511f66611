"""Imports flow one way: the data set tools may use resomap.data, a training run never loads the tools."""

from __future__ import annotations

import importlib.util
from pathlib import Path

STRUCTURE = Path(__file__).resolve().parents[1] / "tools" / "structure.py"


def _structure():
    spec = importlib.util.spec_from_file_location("structure", STRUCTURE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_code_never_imports_the_data_tools():
    structure = _structure()
    data = sorted((structure.PACKAGE / "data").glob("*.py"))
    assert data
    for path in data:
        assert not any(name.startswith("resomap.data_tools") for name in structure.imports(path)), path
    for command in ("resomap.train", "resomap.orchestrate", "resomap.data.datamodule"):
        assert not any(name.startswith("resomap/data_tools/") for name in structure.closure(command)), command


def test_the_tools_read_images_through_resomap_data():
    structure = _structure()
    used = set().union(*(structure.imports(path)
                         for path in (structure.PACKAGE / "data_tools").glob("*.py")))
    assert {"resomap.data.io", "resomap.data.synthetic"} <= used
