"""Shared fixtures: a tiny generated data set and a runner for the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from resomap.cli import VERSION_BASE
from resomap.config import conf_dir
from resomap.data.synthetic import generate

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_SPEC = {"n_train": 42, "n_val": 21, "n_test": 21, "width": 96, "height": 72, "seed": 0}


@pytest.fixture(autouse=True)
def ctrl_c_as_a_terminal_sends_it() -> None:
    """Each test starts with SIGINT at Python's default, as in a terminal. A test that trains in
    this process and stops it with Ctrl-C may leave SIGINT ignored (Lightning ignores it while it
    shuts down), and an ignored SIGINT is inherited by every process a later test starts: its
    Ctrl-C test would then see a sweep that never stops. Two Ctrl-C tests failed so in one CI run
    under pytest-xdist, both on the same worker, the sweep ending as if no Ctrl-C was sent."""
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 7-class synthetic set of 84 small images, generated once per test session."""
    root = tmp_path_factory.mktemp("data") / "synthetic"
    return generate(root, workers=1, **TINY_SPEC)


def tiny_overrides(root_dir: Path, data_root: Path) -> list[str]:
    """Overrides for a fast, self-contained run of the real training CLI."""
    generator = [f"data.generator.{key}={value}" for key, value in TINY_SPEC.items()]
    return [
        f"paths.root_dir={root_dir}",
        f"data.root={data_root}",
        *generator,
        "data.num_workers=0",
        "data.batch_size=16",
        "data.eval_batch_size=32",
        "trainer.max_epochs=1",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        # Timed passes stop after half a second (default 5 s): on a loaded CI machine the 2 %
        # target is rarely met, so every run would time to the limit. ``++``: other commands
        # (bench) have no callbacks node.
        "++callbacks.profile.max_seconds=0.5",
        f"hydra.run.dir={root_dir}/outputs",
        f"hydra.sweep.dir={root_dir}/multirun",
    ]


def run_module(module: str, args: Sequence[str], cwd: Path, timeout: float = 600,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` as a user would and capture its output."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("RESOMAP_ROOT", None)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def train_cli(tmp_path: Path, tiny_data_root: Path) -> Callable[..., subprocess.CompletedProcess]:
    """``train_cli(*overrides)`` runs ``python -m resomap.train`` on the tiny data in tmp_path."""

    def run(*overrides: str, timeout: float = 600, env: dict[str, str] | None = None):
        flags = [item for item in overrides if item.startswith("-")]
        values = [item for item in overrides if not item.startswith("-")]
        args = [*flags, *tiny_overrides(tmp_path, tiny_data_root), *values]
        return run_module("resomap.train", args, cwd=tmp_path, timeout=timeout, env=env)

    return run


def compose_config(config_name: str | None = "train", overrides: Sequence[str] = (),
                   return_hydra_config: bool = False) -> DictConfig:
    """The project's real configs (``conf/``) composed as the CLI composes them: ``config_name``
    with ``overrides`` (``None`` composes the overrides alone, such as ``+model=tiny_cnn``), with
    Hydra's own ``hydra`` node when ``return_hydra_config``. Hydra is initialized for this call
    alone and cleared after it; inside an already initialized Hydra (``compose_train``) the call
    composes there and leaves it as it is."""
    from hydra.core.global_hydra import GlobalHydra

    running = GlobalHydra.instance().is_initialized()
    with nullcontext() if running else initialize_config_dir(str(conf_dir()), version_base=VERSION_BASE):
        return compose(config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)


@pytest.fixture
def compose_train(tmp_path: Path, tiny_data_root: Path) -> Callable[..., DictConfig]:
    """``compose_train(*overrides)``: the real ``conf/train.yaml`` composed as the CLI would, for a
    tiny in-process run in tmp_path (tiny_cnn at 32 px, no explanations, no tracking)."""
    overrides = [item for item in tiny_overrides(tmp_path, tiny_data_root) if not item.startswith("hydra.")]
    overrides += ["model=tiny_cnn", "res=32", "explain=none", "logger=none",
                  f"paths.output_dir={tmp_path / 'outputs'}"]
    # Hydra stays initialized while the test runs, as under the CLI.
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=VERSION_BASE):
        yield lambda *extra: compose_config("train", [*overrides, *extra])


def checkpoint_folders(root: Path, run_name: str) -> list[Path]:
    """The checkpoint folders of ``run_name`` under ``root/checkpoints`` (one per identity)."""
    return sorted(path.parent for path in (root / "checkpoints" / run_name).glob("*/identity.json"))


def fail_training_step(monkeypatch: pytest.MonkeyPatch, when: Callable[..., bool],
                       error: BaseException) -> None:
    """Make the real training step raise ``error`` when ``when(module, batch_idx)`` holds: a
    Ctrl-C (KeyboardInterrupt) or an out-of-memory error at a chosen step."""
    from resomap.models.classifier import LitClassifier

    original = LitClassifier.training_step

    def training_step(self, batch, batch_idx):
        if when(self, batch_idx):
            raise error
        return original(self, batch, batch_idx)

    monkeypatch.setattr(LitClassifier, "training_step", training_step)


def interrupt_run(run: Callable[[DictConfig], object], cfg: DictConfig, monkeypatch: pytest.MonkeyPatch,
                  when: Callable[..., bool]) -> None:
    """``run(cfg)`` stopped by Ctrl-C (KeyboardInterrupt) at the training step where ``when``
    holds; Lightning's SIGINT handler is put back afterwards."""
    import signal

    handler = signal.getsignal(signal.SIGINT)
    fail_training_step(monkeypatch, when, KeyboardInterrupt())
    try:
        with pytest.raises(KeyboardInterrupt):
            run(cfg)
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores SIGINT after an interrupt
        monkeypatch.undo()
