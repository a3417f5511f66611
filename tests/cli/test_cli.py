"""The ``resomap`` command as a user types it: sub-commands, help, tab completion, user errors,
and the experiment/debug config groups."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT, compose_config, run_module

BIN = Path(sys.executable).parent
MODELS = sorted(path.stem for path in (REPO_ROOT / "conf" / "model").glob("*.yaml"))
TRAIN_GROUPS = ("model", "data", "trainer", "experiment", "debug", "logger", "explain", "callbacks",
                "optimizer", "scheduler", "resolution", "paths", "report", "study", "hparams_search",
                "hydra/launcher")
REPORT_GROUPS = ("paths", "report")
# summarize takes model names as values (models=[resnet18,vgg11]).
SUMMARIZE_GROUPS = ("paths", "model")
BENCH_GROUPS = ("model", "data", "trainer", "optimizer", "scheduler", "resolution", "paths")


def resomap(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it."""
    full_env = {key: value for key, value in os.environ.items() if key != "RESOMAP_ROOT"}
    return subprocess.run([str(BIN / "resomap"), *args], cwd=cwd, env={**full_env, **(env or {})},
                          capture_output=True, text=True, timeout=300)


def _groups(help_text: str) -> dict[str, list[str]]:
    """``group: a, b`` lines of the "Configuration groups" section of Hydra's help."""
    section = help_text.split("== Configuration groups ==", 1)[1].split("== Config ==", 1)[0]
    lines = [line.split(":", 1) for line in section.splitlines()
             if ":" in line and "(group=option)" not in line]
    return {name.strip(): [option.strip() for option in options.split(",")] for name, options in lines}


@pytest.mark.parametrize("command, groups", [
    ("train", TRAIN_GROUPS),
    ("explain", TRAIN_GROUPS),
    ("report", REPORT_GROUPS),
    ("summarize", SUMMARIZE_GROUPS),
    ("bench", BENCH_GROUPS),
])
def test_each_command_help_lists_only_its_config_groups(command: str, groups: tuple[str, ...],
                                                        tmp_path: Path):
    completed = resomap(command, "--help", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    listed = _groups(completed.stdout)
    assert set(listed) == set(groups)
    if "model" in listed:
        assert listed["model"] == MODELS
    if "experiment" in listed:
        assert listed["experiment"] == ["demo", "seed_study"] and listed["debug"] == ["fast"]
    examples = [line.strip() for line in completed.stdout.split("examples:", 1)[1].split("==", 1)[0]
                .splitlines() if line.strip()]
    assert len(examples) == 3 and all(line.startswith(f"resomap {command}") for line in examples)
    assert "== Config ==" in completed.stdout and "python -m" not in completed.stdout


@pytest.mark.parametrize("task, keys", [("prepare", ("source:", "input_dir:", "output_dir:", "paths:")),
                                        ("analyze", ("root:", "output_dir:", "paths:"))])
def test_data_task_help_lists_its_keys(task: str, keys: tuple[str, ...], tmp_path: Path):
    completed = resomap("data", task, "--help", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert all(key in completed.stdout for key in keys)
    assert (f"resomap data {task}" in completed.stdout
            or f"python -m resomap.data_tools {task}" in completed.stdout)


def test_top_level_help_names_every_command(tmp_path: Path):
    completed = resomap("--help", cwd=tmp_path)
    assert completed.returncode == 0
    assert all(f"  {name} " in completed.stdout for name in
               ("train", "report", "summarize", "explain", "bench", "data"))
    unknown = resomap("trian", "model=tiny_cnn", cwd=tmp_path)
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("error: unknown command 'trian'") and "Traceback" not in unknown.stderr
    assert list(tmp_path.iterdir()) == []


def test_module_forms_compose_the_same_config_as_the_command(tmp_path: Path):
    args = ["--cfg", "job", "model=tiny_cnn", "res=96", "experiment=seed_study"]
    command = resomap("train", *args, cwd=tmp_path)
    module = run_module("resomap.train", args, cwd=tmp_path)
    package = run_module("resomap", ["train", *args], cwd=tmp_path)
    assert command.returncode == module.returncode == package.returncode == 0, command.stderr[-3000:]
    assert command.stdout == module.stdout == package.stdout
    job = yaml.safe_load(command.stdout)
    assert (job["model"]["name"], job["res"], job["trainer"]["max_epochs"]) == ("tiny_cnn", 96, 25)

    data_args = ["prepare", "--cfg", "job", "source=synthetic", "n_train=14"]
    assert resomap("data", *data_args, cwd=tmp_path).stdout == run_module("resomap.data_tools", data_args,
                                                                          cwd=tmp_path).stdout


def _complete(line: str, cwd: Path) -> list[str]:
    """What bash offers after Hydra's completion script for ``resomap`` is installed."""
    words = line.split()
    index = len(words) if line.endswith(" ") else len(words) - 1
    script = (f'eval "$(resomap --shell-completion install=bash)"\n'
              f'COMP_LINE="{line}"; COMP_POINT=${{#COMP_LINE}}; COMP_CWORD={index}\n'
              'hydra_bash_completion\nprintf "%s\\n" "${COMPREPLY[@]}"\n')
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    completed = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0, completed.stderr
    return [word for word in completed.stdout.splitlines() if word]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash completion needs bash")
def test_tab_completion_offers_models_commands_and_tasks(tmp_path: Path):
    assert _complete("resomap train model=", tmp_path) == [f"model={name}" for name in MODELS]
    assert _complete("resomap train model=tin", tmp_path) == ["model=tiny_cnn"]
    assert _complete("resomap train -m experiment=", tmp_path) == ["experiment=demo", "experiment=seed_study"]
    assert _complete("resomap tr", tmp_path) == ["train"]
    assert _complete("resomap data an", tmp_path) == ["analyze"]
    assert "source=" in _complete("resomap data prepare sou", tmp_path)


def test_user_errors_end_with_one_message_and_status_2(tmp_path: Path):
    cases = [
        (["report", f"paths.root_dir={tmp_path}"], "error: No result files in"),
        (["data", "analyze", f"root={tmp_path / 'nowhere'}"], f"error: root={tmp_path / 'nowhere'} is not"),
        (["data", "prepare", "source=ftp"], "error: source='ftp' is not valid"),
        (["data", "prepare", f"input_dir={tmp_path / 'nowhere'}", f"output_dir={tmp_path / 'out'}"],
         "error: input_dir="),
        (["data", "split"], "error: unknown task 'split'"),
    ]
    for args, message in cases:
        completed = resomap(*args, cwd=tmp_path)
        assert completed.returncode == 2, (args, completed.stdout + completed.stderr)
        assert completed.stderr.startswith(message), (args, completed.stderr)
        assert "Traceback" not in completed.stdout + completed.stderr
    assert list(tmp_path.iterdir()) == []


def test_explain_of_a_run_never_trained_is_a_user_error(tmp_path: Path):
    completed = resomap("explain", "model=tiny_cnn", "res=32", f"paths.root_dir={tmp_path}",
                        f"hydra.run.dir={tmp_path}/outputs", cwd=tmp_path)
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert completed.stderr.startswith("error: No record of run tiny_cnn_32")
    assert "Traceback" not in completed.stdout + completed.stderr


def _composed(*overrides: str):
    return compose_config("train", overrides, return_hydra_config=True)


def test_epochs_come_from_the_trainer_data_experiment_or_debug_config():
    assert _composed().trainer.max_epochs == 4  # the demo's data set
    assert "schedule" not in _composed()
    assert _composed("data=imagefolder", "data.root=/x").trainer.max_epochs == 25
    seed = _composed("experiment=seed_study")
    assert (seed.trainer.max_epochs, seed.data.name, seed.data.batch_size) == (25, "skin_cancer", 32)
    assert dict(seed.hydra.sweeper.params) == {"model": "simple_cnn,tiny_cnn", "res": "224,256,320,384,512"}
    assert _composed("experiment=seed_study", "trainer.max_epochs=3").trainer.max_epochs == 3
    demo = _composed("experiment=demo")
    assert (demo.trainer.max_epochs, demo.data.name) == (4, "synthetic")
    debug = _composed("debug=fast", "experiment=seed_study")
    assert (debug.trainer.max_epochs, debug.trainer.limit_train_batches) == (1, 2)
    assert debug.data.name == "skin_cancer"
    assert debug.paths.results_dir.endswith("/debug/results") and "mlflow" not in debug.get("logger", {})
    assert debug.callbacks.get("explain") is None


@pytest.mark.slow
def test_seed_study_experiment_runs_its_grid(tmp_path: Path):
    """The ten jobs start with the seed's schedule; each stops at the missing data set (nothing to
    train on here), which the sweep records per job."""
    completed = resomap("train", "-m", "experiment=seed_study", "logger=none", f"paths.root_dir={tmp_path}",
                        f"hydra.sweep.dir={tmp_path}/multirun", cwd=tmp_path)
    assert completed.returncode == 1
    assert "10 run(s) failed" in completed.stdout + completed.stderr
    jobs = sorted(path.name for path in (tmp_path / "multirun").iterdir() if path.is_dir())
    assert jobs == sorted(f"{index}_{model}_{res}" for index, (model, res) in enumerate(
        (model, res) for model in ("simple_cnn", "tiny_cnn") for res in (224, 256, 320, 384, 512)))
    for job in jobs:
        config = yaml.safe_load((tmp_path / "multirun" / job / ".hydra" / "config.yaml").read_text())
        assert (config["trainer"]["max_epochs"], config["data"]["name"], config["data"]["batch_size"]) == (
            25, "skin_cancer", 32)
