"""The template's conventions: secrets from .env, this machine's conf/local, known warnings
filtered in one place (resomap.extras)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest
import yaml
from test_cli import resomap

from resomap.extras import quiet_warnings


def test_dotenv_fills_the_environment_and_the_environment_wins(tmp_path: Path):
    (tmp_path / ".env").write_text(f"# machine settings\nRESOMAP_ROOT={tmp_path / 'from_env_file'}\n"
                                   "export OTHER='quoted value'\n")
    completed = resomap("train", "--cfg", "job", "--resolve", "-p", "paths", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert yaml.safe_load(completed.stdout)["root_dir"] == str(tmp_path / "from_env_file")
    given = resomap("train", "--cfg", "job", "--resolve", "-p", "paths", cwd=tmp_path,
                    env={"RESOMAP_ROOT": str(tmp_path / "given")})
    assert yaml.safe_load(given.stdout)["root_dir"] == str(tmp_path / "given")


def test_local_machine_config_wins_over_shipped_defaults_not_over_the_command_line(tmp_path: Path):
    local = tmp_path / "my_configs" / "local"
    local.mkdir(parents=True)
    (local / "default.yaml").write_text("# @package _global_\ntrainer:\n  max_epochs: 7\n  devices: 1\n")
    args = ["train", "--config-dir", str(tmp_path / "my_configs"), "--cfg", "job", "-p", "trainer"]
    trainer = yaml.safe_load(resomap(*args, cwd=tmp_path).stdout)
    assert (trainer["max_epochs"], trainer["devices"]) == (7, 1)
    assert yaml.safe_load(resomap(*args, "trainer.max_epochs=2", cwd=tmp_path).stdout)["max_epochs"] == 2


def test_known_warnings_are_filtered_and_others_reach_the_log(caplog: pytest.LogCaptureFixture):
    with warnings.catch_warnings():
        quiet_warnings()
        try:
            with caplog.at_level(logging.WARNING, logger="py.warnings"):
                warnings.warn_explicit("Checkpoint directory /x exists and is not empty.", UserWarning,
                                       "model_checkpoint.py", 1, module="lightning.pytorch.callbacks")
                warnings.warn_explicit("something new", UserWarning, "other.py", 1, module="other")
        finally:
            logging.captureWarnings(False)
    messages = [record.getMessage() for record in caplog.records]
    assert any("something new" in message for message in messages)
    assert not any("is not empty" in message for message in messages)
