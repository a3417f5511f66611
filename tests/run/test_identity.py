"""A run's identity: what makes two runs the same run (skip, resume) and what does not."""

from __future__ import annotations

import pytest

from resomap.run.identity import RunIdentity


def _identity(compose_train, *overrides: str, data: str = "d0") -> RunIdentity:
    return RunIdentity.from_config(compose_train(*overrides), data)


# Settings that cannot change the trained model: changing them must not retrain a finished run.
SAME_RUN = [
    "data.pipeline=classic", "data.num_workers=3", "data.device_cache=false", "data.eval_batch_size=7",
    "model.compile=true", "paths.root_dir=/elsewhere", "data.cache_dir=/other/cache",
    "logger=csv", "explain=default", "callbacks.profile.timed_runs=2", "trainer.enable_progress_bar=true",
    "ckpt_path=last", "skip_completed=false", "data.on_bad_image=skip",
]

# Settings that change what is trained: each must make another run.
OTHER_RUN = [
    "optimizer.lr=0.01", "trainer.max_epochs=3", "data.batch_size=8", "trainer.precision=32-true",
    "trainer.devices=2", "trainer.num_nodes=2", "trainer.accumulate_grad_batches=2",
    "trainer.strategy=ddp", "callbacks.early_stopping.patience=3", "data.rotation=30",
    "data.class_weighted_loss=false", "seed=1", "res=48", "model=simple_cnn", "~scheduler",
    "trainer.gradient_clip_val=0.5", "trainer.limit_train_batches=2", "channels_last=false",
    "callbacks.best_checkpoint.monitor=val_balanced_accuracy",
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


def test_on_cpu_16_mixed_is_recorded_as_the_bf16_it_runs(compose_train):
    identity = _identity(compose_train, "trainer.accelerator=cpu", "trainer.precision=16-mixed")
    assert identity.training["trainer"]["precision"] == "bf16-mixed"
    assert identity == _identity(compose_train, "trainer.accelerator=cpu", "trainer.precision=bf16-mixed")


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
    from hydra import compose, initialize_config_dir

    from resomap.config import conf_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["data=imagefolder", f"data.root={tmp_path / 'lesions'}"])
    assert cfg.data.name == "lesions" and cfg.run_name == "simple_cnn_224--lesions"


def test_each_identity_has_its_own_checkpoint_folder(compose_train, tmp_path):
    base, changed = _identity(compose_train), _identity(compose_train, "optimizer.lr=0.01")
    assert base.checkpoint_dir(tmp_path).parent == changed.checkpoint_dir(tmp_path).parent
    assert base.checkpoint_dir(tmp_path) != changed.checkpoint_dir(tmp_path)


def test_identity_round_trips_through_its_dict(compose_train):
    identity = _identity(compose_train, "optimizer.lr=0.01")
    assert RunIdentity.from_dict(identity.to_dict()) == identity
