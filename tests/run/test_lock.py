"""The run lock and the files ResoMap creates in shared folders: opened safely, modes from the umask."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from resomap.run.lock import LOCK_FILE, UnsafeLockError, run_lock

VICTIM_TEXT = "a file of the user's that a lock must never touch\n"


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim.txt"
    victim.write_text(VICTIM_TEXT)
    return victim


def test_a_symlinked_lock_is_refused_and_its_target_left_intact(tmp_path: Path):
    victim = _victim(tmp_path)
    folder = tmp_path / "checkpoints" / "run"
    folder.mkdir(parents=True)
    (folder / LOCK_FILE).symlink_to(victim)
    with pytest.raises(UnsafeLockError, match=f"{LOCK_FILE} is a symbolic link"), run_lock(folder, "run"):
        pass
    assert victim.read_text() == VICTIM_TEXT


def test_a_hard_linked_lock_is_refused_and_its_target_left_intact(tmp_path: Path):
    victim = _victim(tmp_path)
    folder = tmp_path / "run"
    folder.mkdir()
    os.link(victim, folder / LOCK_FILE)
    with pytest.raises(UnsafeLockError, match="2 names"), run_lock(folder, "run"):
        pass
    assert victim.read_text() == VICTIM_TEXT


def test_a_fifo_in_place_of_the_lock_is_refused_without_blocking(tmp_path: Path):
    os.mkfifo(tmp_path / LOCK_FILE)
    with pytest.raises(UnsafeLockError, match="not a regular file"), run_lock(tmp_path, "run"):
        pass


def test_an_existing_lock_is_never_truncated_and_names_its_holder(tmp_path: Path):
    lock = tmp_path / LOCK_FILE
    lock.write_text("x" * 1000)
    with run_lock(tmp_path, "run"):
        text = lock.read_text()
        assert len(text) == 1000
        assert json.loads(text[:256])["pid"] == os.getpid()


def test_a_second_holder_waits_for_the_first(tmp_path: Path):
    order = []
    with run_lock(tmp_path, "run"):
        script = ("from resomap.run.lock import run_lock\n"
                  f"with run_lock({str(tmp_path)!r}, 'run', poll_seconds=0.05):\n"
                  "    print('acquired', flush=True)\n")
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        reader = threading.Thread(target=lambda: order.append(child.stdout.readline().strip()))
        reader.start()
        reader.join(timeout=3)  # the child cannot have the lock while this process holds it
        order.append("released")
    reader.join(timeout=60)
    child.wait(timeout=60)
    assert order == ["released", "acquired"]


@pytest.mark.slow
def test_a_symlinked_lock_leaves_its_target_intact_when_the_run_is_skipped(tmp_path: Path, train_cli):
    """A finished run, then its lock replaced by a link to a user's file: starting the run again
    (which would skip it) refuses the lock, names it, and the file is untouched."""
    fast = ("model=tiny_cnn", "res=32", "explain=none", "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1")
    first = train_cli(*fast)
    assert first.returncode == 0, first.stderr[-3000:]
    (lock,) = (tmp_path / "checkpoints").rglob(LOCK_FILE)
    victim = _victim(tmp_path)
    lock.unlink()
    lock.symlink_to(victim)
    second = train_cli(*fast)
    assert second.returncode == 2, second.stderr[-3000:]
    assert f"{lock} is a symbolic link" in second.stdout + second.stderr
    assert victim.read_text() == VICTIM_TEXT


def test_stores_and_records_honour_the_umask(tmp_path: Path):
    """Under umask 077 a new MLflow store and a written result are private (0600)."""
    script = ("import os, pathlib, sys\n"
              "os.umask(0o077)\n"
              "from resomap.io import write_json\n"
              "from resomap.tracking.mlflow import create_sqlite_store\n"
              "folder = pathlib.Path(sys.argv[1])\n"
              "create_sqlite_store(folder / 'mlflow.db')\n"
              "write_json(folder / 'result.json', {'a': 1})\n")
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, timeout=300)
    modes = {name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in ("mlflow.db", "result.json")}
    assert modes == {"mlflow.db": 0o600, "result.json": 0o600}

