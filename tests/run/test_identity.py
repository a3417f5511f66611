"""A run's identity: what makes two runs the same run (skip, resume) and what does not."""

from __future__ import annotations

import json

import pytest
from conftest import compose_config

from resomap import device
from resomap.run.identity import RunIdentity


def _identity(compose_train, *overrides: str, data: str = "d0") -> RunIdentity:
    return RunIdentity.from_config(compose_train(*overrides), data)


# Settings that cannot change the trained model: changing them must not retrain a finished run.
SAME_RUN = [
    "data.pipeline=classic", "data.num_workers=3", "data.device_cache=false", "data.eval_batch_size=7",
    "model.compile=true", "paths.root_dir=/elsewhere", "data.cache_dir=/other/cache",
    "logger=csv", "explain=default", "callbacks.profile.timed_runs=2", "trainer.enable_progress_bar=true",
    "ckpt_path=last", "skip_completed=false", "data.on_bad_image=skip", "channels_last=false",
    "model.family=other", "+trainer.max_time=null", "trainer.log_every_n_steps=3",
    "+callbacks.best_checkpoint.verbose=true", "callbacks.best_checkpoint.filename=other",
]

# The precision this CPU does not run by default (bf16-mixed or 32-true, by its bf16 instructions).
OTHER_PRECISION = "bf16-mixed" if device.resolve_precision("16-mixed", "cpu") == "32-true" else "32-true"

# Settings that change what is trained: each must make another run.
OTHER_RUN = [
    "optimizer.lr=0.01", "trainer.max_epochs=3", "data.batch_size=8", f"trainer.precision={OTHER_PRECISION}",
    "trainer.devices=2", "trainer.num_nodes=2", "trainer.accumulate_grad_batches=2",
    "trainer.strategy=ddp", "callbacks.early_stopping.patience=3", "data.rotation=30",
    "data.class_weighted_loss=false", "seed=1", "res=48", "model=simple_cnn", "~scheduler",
    "trainer.gradient_clip_val=0.5", "trainer.limit_train_batches=2",
    "callbacks.best_checkpoint.monitor=val_balanced_accuracy", "callbacks.best_checkpoint.mode=max",
    # Lightning's debug and budget flags cut or change training: never the full run.
    "+trainer.fast_dev_run=true", "+trainer.overfit_batches=1", "+trainer.max_time=00:00:00:10",
    "+trainer.min_steps=50", "trainer.limit_val_batches=1",
    # A key nobody listed is in the identity (deny-list, not allow-list).
    "+model.net.width=64", "+data.new_augmentation=0.5", "+optimizer.amsgrad=true",
]


@pytest.mark.parametrize("override", SAME_RUN)
def test_settings_that_cannot_change_the_model_keep_the_identity(compose_train, override):
    assert _identity(compose_train, override) == _identity(compose_train)


@pytest.mark.parametrize("override", OTHER_RUN)
def test_settings_that_change_training_make_another_run(compose_train, override):
    changed, base = _identity(compose_train, override), _identity(compose_train)
    assert changed != base
    assert changed.digest != base.digest
    assert changed.differences(base), "a changed identity must say what differs"


def test_the_data_content_is_part_of_the_identity(compose_train):
    assert _identity(compose_train, data="d0") != _identity(compose_train, data="d1")


def test_effective_batch_counts_devices_nodes_and_accumulation(compose_train):
    one = _identity(compose_train, "data.batch_size=8")
    many = _identity(compose_train, "data.batch_size=8", "trainer.devices=2", "trainer.num_nodes=2",
                     "trainer.accumulate_grad_batches=2")
    assert one.training["trainer"]["effective_batch_size"] == 8
    assert many.training["trainer"]["effective_batch_size"] == 64


@pytest.mark.parametrize(("native_bf16", "runs_as"), [(True, "bf16-mixed"), (False, "32-true")])
def test_on_cpu_16_mixed_is_recorded_as_the_precision_it_runs(compose_train, monkeypatch, native_bf16: bool,
                                                               runs_as: str):
    # bf16 where the CPU has bf16 instructions (AVX512-BF16, AMX), else fp32: without them bf16
    # convolutions are several times slower than fp32 (docs/benchmarks.md).
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: native_bf16)
    identity = _identity(compose_train, "trainer.accelerator=cpu", "trainer.precision=16-mixed")
    assert identity.training["trainer"]["precision"] == runs_as
    assert identity == _identity(compose_train, "trainer.accelerator=cpu", f"trainer.precision={runs_as}")
    other = "32-true" if runs_as == "bf16-mixed" else "bf16-mixed"
    assert identity != _identity(compose_train, "trainer.accelerator=cpu", f"trainer.precision={other}")


def test_differences_name_the_changed_keys_with_old_and_new_values(compose_train):
    changed = _identity(compose_train, "optimizer.lr=0.01", "trainer.max_epochs=3")
    base = _identity(compose_train, "optimizer.lr=0.001", "trainer.max_epochs=1")
    assert changed.differences(base) == ["optimizer.lr: 0.001 -> 0.01", "trainer.max_epochs: 1 -> 3"]


def test_names_keep_the_seed_study_layout_on_the_primary_data_set(compose_train, tmp_path):
    assert _identity(compose_train).run_name == "tiny_cnn_32"
    assert _identity(compose_train, "seed=2").run_name == "tiny_cnn_32_seed2"
    other = _identity(compose_train, "data.name=lesions")
    assert other.run_name == "tiny_cnn_32--lesions"
    assert compose_train("data.name=lesions").run_name == other.run_name


def test_an_image_folder_is_named_after_its_folder(tmp_path):
    cfg = compose_config("train", ["data=imagefolder", f"data.root={tmp_path / 'lesions'}"])
    assert cfg.data.name == "lesions" and cfg.run_name == "simple_cnn_224--lesions"


def test_each_identity_has_its_own_checkpoint_folder(compose_train, tmp_path):
    base, changed = _identity(compose_train), _identity(compose_train, "optimizer.lr=0.01")
    assert base.checkpoint_dir(tmp_path).parent == changed.checkpoint_dir(tmp_path).parent
    assert base.checkpoint_dir(tmp_path) != changed.checkpoint_dir(tmp_path)


def test_identity_round_trips_through_its_dict(compose_train):
    identity = _identity(compose_train, "optimizer.lr=0.01")
    assert RunIdentity.from_dict(identity.to_dict()) == identity


@pytest.mark.parametrize(("one", "other"), [("32", "32-true"), ("16", "16-mixed"), ("bf16", "bf16-mixed"),
                                            ("64", "64-true")])
def test_precision_aliases_are_one_run(compose_train, one, other):
    assert _identity(compose_train, f"trainer.precision={one}") == _identity(
        compose_train, f"trainer.precision={other}")


def test_a_model_key_named_like_a_secret_is_hashed_with_its_value(compose_train):
    """key_dim is a setting, not a credential: key_dim=64 is not the finished key_dim=4."""
    four, sixty_four = (_identity(compose_train, f"+model.net.key_dim={value}") for value in (4, 64))
    assert four != sixty_four
    assert sixty_four.training["model"]["net"]["key_dim"] == 64
    assert "model.net.key_dim: 4 -> 64" in sixty_four.differences(four)


def test_tracking_credentials_never_enter_the_identity(compose_train):
    identity = _identity(compose_train, "logger=mlflow", "logger.mlflow.tracking_uri=http://user:hunter22@host:5000")
    assert identity == _identity(compose_train)
    assert "hunter22" not in json.dumps(identity.to_dict())
    assert "logger" not in identity.training and "paths" not in identity.training


def test_editing_the_networks_source_code_makes_another_run(compose_train, tmp_path, monkeypatch):
    package = tmp_path / "mynets"
    package.mkdir()
    (package / "__init__.py").write_text("")
    source = package / "net.py"
    source.write_text("import torch\nclass Net(torch.nn.Linear):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = _identity(compose_train, "model.net._target_=mynets.net.Net")
    assert before == _identity(compose_train, "model.net._target_=mynets.net.Net")
    source.write_text("import torch\nclass Net(torch.nn.Linear):\n    scale = 2\n")
    after = _identity(compose_train, "model.net._target_=mynets.net.Net")
    assert after != before
    assert [line for line in after.differences(before) if line.startswith("model.source:")]
