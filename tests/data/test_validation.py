"""Bad input is refused before any work with one message naming the file or key; odd but
valid images are decoded correctly."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_config, run_module, tiny_overrides
from hydra.errors import ConfigCompositionException
from PIL import Image

from resomap.config_validation import schema_problem, validate_config
from resomap.data.datamodule import DatasetLayoutError, ImageFolderDataModule, dataset_fingerprint
from resomap.data.io import load_rgb
from resomap.data.validate import BadImagesError, validate_images
from resomap.errors import ConfigError

# One xdist worker runs this file, so its module fixtures are built once (--dist loadgroup).
pytestmark = pytest.mark.xdist_group("validation")

SPLITS = ("train", "val", "test")
BAD_FILES = {"train/nv/empty.jpg": "empty file", "train/mel/truncated.jpg": "truncated",
             "val/bkl/notes.png": "UnsupportedImageError"}


def _png16(path: Path, pixels: np.ndarray, color_type: int) -> None:
    """A 16-bit PNG written by hand: PIL cannot save 16-bit colour."""
    height, width = pixels.shape[:2]
    raw = b"".join(b"\x00" + pixels[row].astype(">u2").tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def _add_bad_files(root: Path) -> None:
    """A zero-byte JPEG, a truncated JPEG and a text file named .png, beside good images."""
    (root / "train" / "nv" / "empty.jpg").write_bytes(b"")
    good = next((root / "train" / "mel").glob("*.jpg")).read_bytes()
    (root / "train" / "mel" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "val" / "bkl" / "notes.png").write_text("not an image\n")


@pytest.fixture(scope="module")
def bad_data_root(tiny_data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad") / "data"
    shutil.copytree(tiny_data_root, root)
    _add_bad_files(root)
    return root


def test_non_rgb_and_rotated_images_decode_to_upright_rgb(tmp_path: Path):
    red = Image.new("RGB", (40, 20), (200, 30, 30))
    red.convert("CMYK").save(tmp_path / "cmyk.jpg")
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    Image.fromarray(np.full((20, 40), 32768, np.uint16)).save(tmp_path / "gray16.png")
    assert Image.open(tmp_path / "gray16.png").mode == "I;16"
    rgb16 = np.zeros((20, 40, 3), np.uint16)
    rgb16[..., 0], rgb16[..., 1] = 65535, 32768
    _png16(tmp_path / "rgb16.png", rgb16, color_type=2)
    red.quantize(4).save(tmp_path / "palette.png")
    Image.new("RGBA", (40, 20), (255, 0, 0, 0)).save(tmp_path / "transparent.png")
    Image.new("L", (40, 20), 77).save(tmp_path / "gray.jpg")
    Image.new("F", (40, 20), 0.5).save(tmp_path / "float.tif")
    # Stored landscape with the left half red; orientation 6 displays it rotated 90 degrees
    # clockwise, so the red half is on top.
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "rotated.jpg", exif=exif)

    decoded = {path.name: load_rgb(path) for path in tmp_path.iterdir()}
    assert all(image.mode == "RGB" for image in decoded.values())
    pixel = {name: np.asarray(image)[5, 5].astype(int) for name, image in decoded.items()}
    np.testing.assert_allclose(pixel["cmyk.jpg"], [200, 30, 30], atol=6)
    np.testing.assert_allclose(pixel["gray16.png"], [128, 128, 128], atol=1)
    np.testing.assert_allclose(pixel["rgb16.png"], [255, 128, 0], atol=1)
    np.testing.assert_allclose(pixel["palette.png"], [200, 30, 30], atol=6)
    np.testing.assert_allclose(pixel["transparent.png"], [255, 255, 255], atol=0)
    np.testing.assert_allclose(pixel["gray.jpg"], [77, 77, 77], atol=2)
    np.testing.assert_allclose(pixel["float.tif"], [128, 128, 128], atol=1)
    rotated = np.asarray(decoded["rotated.jpg"]).astype(int)
    assert decoded["rotated.jpg"].size == (20, 40)
    np.testing.assert_allclose(rotated[5, 10], [255, 0, 0], atol=8)
    np.testing.assert_allclose(rotated[35, 10], [0, 0, 255], atol=8)


def test_bad_images_are_listed_with_their_reasons_and_cached(bad_data_root: Path, tmp_path: Path):
    classes = sorted(p.name for p in (bad_data_root / "train").iterdir())
    fingerprint = dataset_fingerprint(bad_data_root)
    with pytest.raises(BadImagesError) as raised:
        validate_images(bad_data_root, SPLITS, classes, fingerprint, "error", tmp_path)
    message = str(raised.value)
    assert message.startswith("3 image(s) under")
    for name, reason in BAD_FILES.items():
        line = next(line for line in message.splitlines() if str(bad_data_root / name) in line)
        assert reason in line
    assert "data.on_bad_image=skip" in message
    cached = json.loads((tmp_path / f"{fingerprint}.json").read_text())
    assert sorted(cached["bad"]) == sorted(BAD_FILES)
    assert validate_images(bad_data_root, SPLITS, classes, fingerprint, "skip", tmp_path) == sorted(BAD_FILES)


def test_more_than_twenty_bad_images_are_counted(tiny_data_root: Path, tmp_path: Path):
    root = tmp_path / "data"
    shutil.copytree(tiny_data_root, root)
    for index in range(25):
        (root / "test" / "nv" / f"empty{index:02d}.jpg").write_bytes(b"")
    with pytest.raises(BadImagesError) as raised:
        ImageFolderDataModule(str(root), image_size=32, num_workers=0).setup()
    listed = [line for line in str(raised.value).splitlines() if line.startswith("  /")]
    assert len(listed) == 20
    assert "... and 5 more." in str(raised.value)


def test_skipping_every_image_of_a_class_is_refused(tiny_data_root: Path, tmp_path: Path):
    root = tmp_path / "data"
    shutil.copytree(tiny_data_root, root)
    for path in (root / "val" / "df").glob("*.jpg"):
        path.write_bytes(b"")
    with pytest.raises(BadImagesError, match=f"{root / 'val' / 'df'}.*leave the class empty"):
        ImageFolderDataModule(str(root), image_size=32, num_workers=0, on_bad_image="skip").setup()


@pytest.mark.parametrize("damage, named", [
    (lambda root: shutil.rmtree(root / "test"), "Split folder {root}/test is missing"),
    (lambda root: shutil.copytree(root / "train" / "df", root / "val" / "extra"),
     "only in val: ['extra']"),
    (lambda root: [path.unlink() for path in (root / "train" / "vasc").iterdir()],
     "Class folder {root}/train/vasc has no images"),
    (lambda root: [shutil.rmtree(path) for path in (root / "val").iterdir()],
     "Split folder {root}/val has no class folders"),
    (lambda root: shutil.rmtree(root), "Data root {root} does not exist"),
], ids=["missing-split", "class-only-in-val", "class-without-images", "split-without-classes",
        "missing-root"])
def test_layout_errors_name_the_path_and_the_expected_layout(tiny_data_root: Path, tmp_path: Path,
                                                             damage, named: str):
    root = tmp_path / "data"
    shutil.copytree(tiny_data_root, root)
    damage(root)
    with pytest.raises(DatasetLayoutError) as raised:
        ImageFolderDataModule(str(root), image_size=32, num_workers=0).setup()
    assert named.format(root=root) in str(raised.value)
    assert "/<class>/" in str(raised.value) or "same class folders" in str(raised.value)


@pytest.mark.parametrize("override, named", [
    ("res=0", "res=0 must be a positive integer"),
    ("res=16", "res=16 is below the smallest input model=tiny_cnn supports (model.min_size=32)"),
    ("data.batch_size=0", "data.batch_size=0 must be a positive integer"),
    ("data.eval_batch_size=-8", "data.eval_batch_size=-8 must be a positive integer"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0 must be a positive integer"),
    ("trainer.precision=fp16", "trainer.precision='fp16' is not a Lightning precision; valid: "),
    ("model.name=tiny", "model.name='tiny' is not a known model; available: "),
    ("data.on_bad_image=ignore", "data.on_bad_image='ignore' is not valid; use one of error, skip"),
    ("oom.min_batch_size=0", "oom.min_batch_size=0 must be a positive integer"),
    ("optimizer.lr=0", "optimizer.lr=0 must be a positive number"),
    ("optimizer.lr=-0.01", "optimizer.lr=-0.01 must be a positive number"),
    ("optimizer.weight_decay=-1", "optimizer.weight_decay=-1 must be a number >= 0"),
    ("objective=test_balanced_accuracy", "objective='test_balanced_accuracy' must name a validation metric"),
])
def test_config_values_are_checked_before_any_work(override: str, named: str):
    valid = ["model=tiny_cnn", "res=32", "paths.output_dir=outputs"]
    validate_config(compose_config("train", valid))
    with pytest.raises(ConfigError) as raised:
        validate_config(compose_config("train", [*valid, override]))
    assert named in str(raised.value)
    if "precision" in override:
        assert "bf16-mixed" in str(raised.value)
    if "model.name" in override:
        assert "tiny_cnn" in str(raised.value) and "resnet18" in str(raised.value)


@pytest.mark.parametrize("override, named", [
    ("res=2.5", "res=2.5 must be a positive integer number of pixels."),
    ("res=abc", "res='abc' must be a positive integer number of pixels."),
    ("res=null", "res=null is not valid: res must be a positive integer number of pixels."),
    ("seed=1.5", "seed=1.5 must be an integer."),
    ("skip_completed=maybe", "skip_completed='maybe' must be true or false."),
    ("oom.min_batch_size=four", "oom.min_batch_size='four' must be a positive integer."),
    ("ckpt_path=[1]", "ckpt_path=[1] must be a string or null."),
])
def test_values_of_the_wrong_type_are_refused_by_the_schema_as_hydra_composes(override: str, named: str):
    # resomap.config_schema types train.yaml's own keys: Hydra refuses these while composing,
    # and config_validation says so in the same words as its own checks.
    with pytest.raises(ConfigCompositionException) as raised:
        compose_config("train", ["model=tiny_cnn", "res=32", override])
    assert schema_problem(raised.value) == named
    assert schema_problem(ValueError("not a schema refusal")) is None


def test_the_schema_keeps_open_keys_open():
    # Group nodes and new top-level keys are not closed by the schema (resomap.config_schema).
    cfg = compose_config("train", ["+trainer.max_time=null", "+extra={n:1}", "+extras.other=1"])
    assert cfg.extra.n == 1 and cfg.trainer.max_time is None and cfg.extras.other == 1
    assert compose_config("explain_app", ["ckpt=/x/best.ckpt"]).ckpt == "/x/best.ckpt"


def _output(completed) -> str:
    return completed.stdout + completed.stderr


@pytest.fixture(scope="module")
def skipped_run(bad_data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run on the bad data with data.on_bad_image=skip: the earlier result of the
    error tests below, which must survive their failures untouched."""
    root = tmp_path_factory.mktemp("skip")
    completed = run_module("resomap.train", [*tiny_overrides(root, bad_data_root), "model=tiny_cnn",
                                             "res=32", "explain=none", "data.on_bad_image=skip"],
                           cwd=root)
    assert completed.returncode == 0, _output(completed)[-3000:]
    assert _output(completed).count("Skipping 3 unreadable image(s)") == 1
    return root


def _result_files(root: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in (root / "results" / "test_results").iterdir()}


@pytest.fixture
def earlier_results(skipped_run: Path, tmp_path: Path) -> dict[str, bytes]:
    """The finished run's results copied into this test's root."""
    shutil.copytree(skipped_run / "results", tmp_path / "results")
    return _result_files(tmp_path)


@pytest.mark.slow
def test_skip_trains_without_bad_images_and_records_them(skipped_run: Path):
    result = json.loads((skipped_run / "results" / "test_results" / "tiny_cnn_32.json").read_text())
    assert sorted(result["skipped_images"]) == sorted(BAD_FILES)
    assert sum(result["data"]["class_counts"]["train"]) == 42
    assert result["test_metrics"]["num_images"] == 21


@pytest.mark.slow
def test_bad_images_stop_the_run_before_training(train_cli, bad_data_root: Path, tmp_path: Path,
                                                 earlier_results: dict[str, bytes]):
    completed = train_cli("model=tiny_cnn", "res=48", "explain=none", f"data.root={bad_data_root}")
    assert completed.returncode == 2, _output(completed)[-3000:]
    output = _output(completed)
    assert "error: 3 image(s) under" in completed.stderr
    assert all(str(bad_data_root / name) in completed.stderr for name in BAD_FILES)
    assert "Traceback" not in output and "Epoch 0" not in output
    assert _result_files(tmp_path) == earlier_results


@pytest.mark.slow
def test_class_only_in_val_exits_with_one_paragraph(train_cli, tiny_data_root: Path, tmp_path: Path,
                                                    earlier_results: dict[str, bytes]):
    root = tmp_path / "data"
    shutil.copytree(tiny_data_root, root)
    shutil.copytree(root / "val" / "df", root / "val" / "extra")
    completed = train_cli("model=tiny_cnn", "res=48", "explain=none", f"data.root={root}")
    assert completed.returncode == 2
    assert f"error: Class folders of {root / 'val'} differ" in completed.stderr
    assert "only in val: ['extra']" in completed.stderr and "Traceback" not in completed.stderr
    assert _result_files(tmp_path) == earlier_results


@pytest.mark.slow
def test_config_error_exits_with_one_paragraph(train_cli, tmp_path: Path,
                                               earlier_results: dict[str, bytes]):
    # Checked by the command before torch loads.
    completed = train_cli("model=tiny_cnn", "res=48", "explain=none", "data.batch_size=0")
    assert completed.returncode == 2
    assert "error: Invalid configuration: data.batch_size=0 must be a positive integer." in completed.stderr
    assert "Traceback" not in _output(completed)
    # Checked by the run, which knows the accelerator.
    completed = train_cli("model=tiny_cnn", "res=48", "explain=none", "trainer.precision=fp16")
    assert completed.returncode == 2
    output = _output(completed)
    assert "trainer.precision='fp16'" in completed.stderr and "Traceback" not in output
    assert _result_files(tmp_path) == earlier_results


@pytest.mark.slow
def test_unknown_model_is_refused_by_hydra_with_the_options(train_cli, tmp_path: Path):
    completed = train_cli("model=tiny", "res=48")
    assert completed.returncode == 2
    assert "error: model=tiny is not a model config; valid: " in completed.stderr
    assert "tiny_cnn" in completed.stderr and "Traceback" not in completed.stderr


@pytest.mark.slow
def test_config_error_in_a_sweep_stops_it_before_any_job(bad_data_root: Path, skipped_run: Path):
    """Every swept value is checked before the first job (and before torch loads): one bad value
    stops the sweep with one paragraph, nothing trained or written. Runs in the finished run's
    root: keep this test last."""
    before = _result_files(skipped_run)
    completed = run_module("resomap.train", [
        "-m", *tiny_overrides(skipped_run, bad_data_root), "model=tiny_cnn", "res=16,32",
        "explain=none", "data.on_bad_image=skip"], cwd=skipped_run)
    output = _output(completed)
    assert completed.returncode == 2, output[-3000:]
    assert "res=16 is below the smallest input" in completed.stderr and "Traceback" not in output
    assert "Skipping tiny_cnn_32" not in output
    assert not list((skipped_run / "multirun").glob("*/failure.json"))
    assert _result_files(skipped_run) == before
