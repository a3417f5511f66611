"""A mistyped value fails before torch is imported: one paragraph, exit status 2, nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# The real command in a fresh interpreter; at the failure point it reports whether torch is loaded.
PROBE = """
import json, sys
from resomap.cli import main
code = 0
try:
    main(sys.argv[1:])
except SystemExit as stop:
    code = stop.code
print(json.dumps({"code": code, "torch": "torch" in sys.modules}))
sys.exit(code)
"""


def run_probe(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, dict]:
    completed = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=cwd, capture_output=True,
                               text=True, timeout=300)
    return completed, json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("args, named", [
    (["model=tiny_cn"], "model=tiny_cn is not a model config; valid: mobilenet_v2_small"),
    (["data=synthetc"], "data=synthetc is not a data config; valid: imagefolder, skin_cancer, synthetic"),
    (["res=abc"], "res='abc' must be a positive integer number of pixels"),
    (["seed=1.5"], "seed=1.5 must be an integer"),
    (["-m", "model=tiny_cnn", "res=64", "skip_completed=true,maybe"],
     "skip_completed='maybe' must be true or false"),
    (["-m", "model=tiny_cnn", "res=64,abc"], "res='abc' must be a positive integer"),
    (["-m", "model=tiny_cnn,tiny_cn", "res=64"], "model=tiny_cn is not a model config"),
    (["-m", "model=tiny_cnn", "res=64,16"], "res=16 is below the smallest input model=tiny_cnn supports"),
])
def test_mistyped_value_fails_before_torch_is_imported(args: list[str], named: str, tmp_path: Path):
    completed, probe = run_probe(["train", *args, f"paths.root_dir={tmp_path}"], cwd=tmp_path)
    assert probe == {"code": 2, "torch": False}, completed.stderr[-3000:]
    assert completed.returncode == 2
    assert completed.stderr.startswith("error: ") and named in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1 and "Traceback" not in completed.stderr
    assert list(tmp_path.iterdir()) == []


def test_valid_command_passes_the_check(tmp_path: Path):
    completed, probe = run_probe(["train", "--cfg", "job", "model=tiny_cnn", "res=64"], cwd=tmp_path)
    assert probe == {"code": 0, "torch": False}, completed.stderr[-3000:]
    assert "name: tiny_cnn" in completed.stdout


@pytest.mark.parametrize("args", [["res=abc"], ["--config-dir", "{own}", "res=abc"]],
                         ids=["composed", "own-config-dir"])
def test_a_value_the_schema_refuses_ends_as_a_user_error(args: list[str], tmp_path: Path):
    # python -m resomap.train as a user runs it: Hydra's schema refusal (resomap.config_schema)
    # is one paragraph naming the key, the value and what is valid, and exit status 2 (also on
    # a line with the user's own config folder, which the preflight does not compose).
    own = tmp_path / "own"
    own.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    line = [arg.format(own=own) for arg in args]
    completed = subprocess.run([sys.executable, "-m", "resomap.train", *line, f"paths.root_dir={work}"],
                               cwd=work, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 2, completed.stderr[-3000:]
    assert completed.stderr == ("error: Invalid configuration: res='abc' must be a positive integer "
                                "number of pixels.\n")
    assert list(work.iterdir()) == []
