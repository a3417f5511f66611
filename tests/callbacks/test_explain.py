"""Explanations: captum methods on every architecture, the callback and ``resomap.explain``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config, run_module, tiny_overrides
from hydra.utils import instantiate

from resomap.callbacks.explain import Explain, completeness, select_sample
from resomap.data.datamodule import ImageFolderDataModule
from resomap.errors import ResoMapError
from resomap.measure.attribution import (
    GradCam,
    IntegratedGradientsMethod,
    LayerNotFoundError,
    SaliencyMethod,
    black_baseline,
    find_gradcam_layer,
)
from resomap.run import record as records

LAST_STAGE = {"simple_cnn": "features", "tiny_cnn": "features", "vgg11": "features",
              "vgg13": "features", "resnet18": "layer4", "resnet34": "layer4",
              "mobilenet_v2_small": "features", "mobilenet_v3_small": "features"}
# Enough epochs on the tiny data for the model to look at the lesion; IG kept cheap.
EXPLAIN_OVERRIDES = ("model=tiny_cnn", "res=48", "trainer.max_epochs=8",
                     "callbacks.explain.num_images=7",
                     "callbacks.explain.methods.integrated_gradients.n_steps=4")


def build(model: str) -> torch.nn.Module:
    cfg = compose_config("train", [f"model={model}"])
    return instantiate(cfg.model.net, num_classes=7).eval()


@pytest.mark.parametrize("model", sorted(LAST_STAGE))
def test_gradcam_layer_is_found_for_every_architecture(model: str):
    net = build(model)
    assert find_gradcam_layer(net, 64) == LAST_STAGE[model]
    images = torch.randn(2, 3, 64, 64, requires_grad=True)
    maps = GradCam()(net, images, torch.tensor([0, 3]))
    assert maps.shape == (2, 64, 64)
    assert torch.isfinite(maps).all() and (maps >= 0).all()


def test_gradcam_layer_can_be_chosen_and_a_wrong_one_is_named():
    net = build("resnet18")
    images = torch.randn(1, 3, 64, 64, requires_grad=True)
    assert GradCam("layer3.1")(net, images, torch.tensor([2])).shape == (1, 64, 64)
    with pytest.raises(LayerNotFoundError, match="layer='layer9'.*layer4"):
        GradCam("layer9")(net, images, torch.tensor([2]))


@pytest.mark.parametrize("method", [SaliencyMethod(), IntegratedGradientsMethod("black", 4, 8),
                                    IntegratedGradientsMethod("zeros", 4, 8),
                                    IntegratedGradientsMethod("blur", 4, 8)],
                         ids=["saliency", "ig_black", "ig_zeros", "ig_blur"])
def test_maps_have_the_input_size_and_are_finite(method):
    net = build("tiny_cnn")
    for size in (32, 48):
        maps = method(net, torch.randn(3, 3, size, size, requires_grad=True), torch.tensor([0, 1, 6]))
        assert maps.shape == (3, size, size)
        assert torch.isfinite(maps).all() and (maps >= 0).all() and maps.sum() > 0


def test_integrated_gradients_completeness_error_is_measured_and_shrinks_with_steps():
    torch.manual_seed(0)  # the network and images are random: fix them, so the check is repeatable
    net = build("tiny_cnn")
    images = torch.randn(4, 3, 32, 32)
    targets = torch.tensor([0, 2, 4, 6])
    errors = {}
    for steps in (1, 64):
        maps, deltas, changes = IntegratedGradientsMethod("black", steps, 8).attribute_with_completeness(
            net, images, targets)
        assert maps.shape == (4, 32, 32) and deltas.shape == changes.shape == (4,)
        with torch.no_grad():
            expected = net(images)[range(4), targets] - net(black_baseline(images))[range(4), targets]
        assert changes.tolist() == pytest.approx(expected.tolist(), abs=1e-5)
        errors[steps], _ = completeness(deltas, changes)
    assert errors[64] < errors[1] and errors[64] < 0.05


def test_completeness_is_relative_to_the_total_output_change():
    overall, per_image = completeness(torch.tensor([0.1, -0.3]), torch.tensor([1.0, 3.0]))
    assert overall == pytest.approx(0.4 / 4.0)
    assert per_image == pytest.approx([0.1, 0.1])


def test_explain_reports_sanity_magnitude_chance_level_and_completeness(tmp_path: Path, tiny_data_root: Path,
                                                                        caplog: pytest.LogCaptureFixture):
    datamodule = ImageFolderDataModule(str(tiny_data_root), 32, num_workers=0, pipeline="classic")
    datamodule.setup("test")
    net = build("tiny_cnn")
    explainer = Explain(str(tmp_path), "tiny_cnn_32",
                        {"integrated_gradients": IntegratedGradientsMethod("black", 1, 8),
                         "saliency": SaliencyMethod()},
                        num_images=7, sanity_methods=["saliency"], overlays=False)
    with caplog.at_level("WARNING"):
        section = explainer.explain(net, datamodule)
    saliency, ig = section["methods"]["saliency"], section["methods"]["integrated_gradients"]
    correlations = saliency["per_image"]["sanity_spearman"]
    assert saliency["sanity_abs_spearman"] == pytest.approx(np.nanmean(np.abs(correlations)))
    assert saliency["sanity_abs_spearman"] >= abs(saliency["sanity_spearman"])
    assert 0 < section["lesion_area_fraction"] < 1  # the chance level of lesion_mass_fraction
    # One integration step cannot be complete: the error is reported, flagged and warned about.
    assert ig["completeness_error"] > ig["completeness_tolerance"] == 0.05 and ig["completeness_large"]
    assert len(ig["per_image"]["completeness_error"]) == 7
    assert "miss completeness" in caplog.text and "integrated_gradients.n_steps (now 1)" in caplog.text
    assert "completeness_error" not in saliency


def test_unknown_baseline_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="baseline='noise'.*black, zeros, blur"):
        IntegratedGradientsMethod("noise")


def test_sample_is_stratified_and_the_same_for_every_run(tmp_path: Path):
    samples = [(str(tmp_path / "test" / c / f"{c}_{i}.jpg"), label)
               for label, c in enumerate("abc") for i in range(5)]
    first = select_sample(samples, tmp_path, 7, seed=0)
    assert first == select_sample(list(reversed(samples)), tmp_path, 7, seed=0)
    assert [label for _, label in first] == [0, 1, 2, 0, 1, 2, 0]
    assert first[0][0].startswith("test/a/")
    assert select_sample(samples, tmp_path, 7, seed=1) != first
    assert len(select_sample(samples, tmp_path, 100, seed=0)) == 15


def _without_timings(section):
    if isinstance(section, dict):
        return {key: _without_timings(value) for key, value in section.items() if key != "seconds"}
    if isinstance(section, list):
        return [_without_timings(value) for value in section]
    return section


def _assert_close(first, second, path="explain"):
    if isinstance(first, dict):
        assert first.keys() == second.keys(), path
        for key in first:
            _assert_close(first[key], second[key], f"{path}.{key}")
    elif isinstance(first, list):
        assert len(first) == len(second), path
        for index, (a, b) in enumerate(zip(first, second)):
            _assert_close(a, b, f"{path}[{index}]")
    elif isinstance(first, float):
        assert second == pytest.approx(first, abs=1e-4), path
    else:
        assert first == second, path


@pytest.mark.slow
def test_callback_and_command_explain_a_trained_model(train_cli, tmp_path: Path, tiny_data_root: Path):
    trained = train_cli(*EXPLAIN_OVERRIDES)
    assert trained.returncode == 0, trained.stderr[-3000:]
    result_file = tmp_path / "results" / "test_results" / "tiny_cnn_48.json"
    section = json.loads(result_file.read_text())["explain"]

    # Every class once, from the one with most test images down (ties by name): nv has 7, bkl and mel 3.
    assert [item["label"] for item in section["images"]] == ["nv", "bkl", "mel", "akiec", "bcc", "df",
                                                              "vasc"]
    assert section["classes"] is None
    assert set(section["methods"]) == {"grad_cam", "integrated_gradients", "saliency"}
    assert section["methods"]["grad_cam"]["layer"] == "features"
    out = tmp_path / "results" / section["dir"]
    with np.load(out / section["maps_file"]) as maps:
        assert maps["images"].tolist() == [item["image"] for item in section["images"]]
        for method in section["methods"]:
            for target in ("label", "predicted"):
                array = maps[f"{method}__{target}"].astype(np.float32)
                assert array.shape == (7, 48, 48)
                assert np.isfinite(array).all()
    assert len(section["overlays"]) == 7
    completeness_error = section["methods"]["integrated_gradients"]["completeness_error"]
    assert math.isfinite(completeness_error) and completeness_error >= 0
    for overlay in section["overlays"]:
        assert (out / overlay).read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG: photographs under maps
        assert (out / overlay).stat().st_size > 1000

    # Sanity check (Adebayo et al.): maps of the re-initialised model barely rank-correlate
    # with the trained model's, and put less of their mass on the lesion.
    for method in ("grad_cam", "saliency"):
        summary = section["methods"][method]
        assert summary["sanity_spearman"] < 0.5, (method, summary)
        assert abs(summary["sanity_spearman"]) <= summary["sanity_abs_spearman"] <= 1, (method, summary)
        assert summary["lesion_mass_fraction"] > summary["random_lesion_mass_fraction"], (method, summary)
        assert summary["lesion_mass_fraction"] > section["lesion_area_fraction"], (method, summary)

    # The command explains the finished run again without retraining: its section goes into
    # explain.json beside the record, which stays as the run wrote it, and readers see it there.
    written = result_file.read_bytes()
    explained = run_module("resomap.explain",
                           [*tiny_overrides(tmp_path, tiny_data_root), *EXPLAIN_OVERRIDES], cwd=tmp_path)
    assert explained.returncode == 0, explained.stderr[-3000:]
    assert result_file.read_bytes() == written
    (record_path, record), = records.iter_records(tmp_path / "results")
    again = json.loads((record_path.parent / "explain.json").read_text())
    assert again["identity"] == record.identity.digest
    assert record.explain == again["explain"] and record.explain["seconds"] != section["seconds"]
    _assert_close(_without_timings(section), _without_timings(again["explain"]))
    assert math.isfinite(again["explain"]["seconds"])
    assert (tmp_path / "results" / "explanations" / "agreement.csv").is_file()

    # The run's own MLflow run, still FINISHED, holds the later section and its maps.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("ResoMap").experiment_id],
                                f"tags.identity = '{record.identity.digest}'")
    assert run.info.status == "FINISHED"
    assert "results/explain.json" in {item.path for item in client.list_artifacts(run.info.run_id, "results")}
    logged = {Path(item.path).name for item in client.list_artifacts(run.info.run_id, "explanations")}
    assert Path(section["maps_file"]).name in logged and len(logged) >= 2


@pytest.mark.slow
def test_explain_command_names_a_missing_run(tmp_path: Path, tiny_data_root: Path):
    failed = run_module("resomap.explain", [*tiny_overrides(tmp_path, tiny_data_root),
                                            "model=tiny_cnn", "res=32"], cwd=tmp_path)
    assert failed.returncode == 2
    assert "No record of run tiny_cnn_32" in failed.stderr
    assert "train model=tiny_cnn res=32" in failed.stderr and "Traceback" not in failed.stderr


def test_sample_can_be_limited_to_named_classes(tmp_path: Path):
    samples = [(str(tmp_path / "test" / c / f"{c}_{i}.jpg"), label)
               for label, c in enumerate("abc") for i in range(5)]
    chosen = select_sample(samples, tmp_path, 4, seed=0, labels=[0, 2])
    assert [label for _, label in chosen] == [0, 2, 0, 2]
    # The same images of those classes as the unrestricted sample's turns give them.
    everything = select_sample(samples, tmp_path, 15, seed=0)
    assert [path for path, _ in chosen][:2] == [path for path, label in everything if label in (0, 2)][:2]


def test_explanations_go_to_the_given_folder_for_the_named_classes(tmp_path: Path, tiny_data_root: Path):
    datamodule = ImageFolderDataModule(str(tiny_data_root), 32, num_workers=0, pipeline="classic")
    datamodule.setup("test")
    out = tmp_path / "runs" / "abc123" / "explanations"
    explainer = Explain(str(tmp_path / "results"), "tiny_cnn_32", {"saliency": SaliencyMethod()},
                        num_images=2, overlays=False, output_dir=str(out), classes=["mel", "nv"])
    section = explainer.explain(build("tiny_cnn"), datamodule)
    assert [item["label"] for item in section["images"]] == ["mel", "nv"]
    assert section["classes"] == ["mel", "nv"]  # the report shows the classes named
    assert (out / section["maps_file"]).is_file() and section["dir"] == str(out)
    assert not (tmp_path / "results" / "explanations").exists()
    with pytest.raises(ResoMapError, match=r"callbacks.explain.classes names \['melanoma'\]"):
        Explain(str(tmp_path), "x", {"saliency": SaliencyMethod()}, classes=["melanoma"]).explain(
            build("tiny_cnn"), datamodule)


def _uneven(tmp_path: Path) -> list[tuple[str, int]]:
    """Seven classes of 2 to 8 test images, the largest neither first nor last by label."""
    sizes = {"akiec": 2, "bcc": 3, "bkl": 4, "df": 2, "mel": 5, "nv": 8, "vasc": 2}
    return [(str(tmp_path / "test" / name / f"{name}_{i}.jpg"), label)
            for label, (name, count) in enumerate(sizes.items()) for i in range(count)]


def test_sample_covers_every_class_and_fewer_images_take_the_largest_classes(tmp_path: Path):
    samples = _uneven(tmp_path)
    # The default's 4 images: one of each of the 4 classes with most test images, largest first.
    assert [label for _, label in select_sample(samples, tmp_path, 4, seed=0)] == [5, 4, 2, 1]
    seven = select_sample(samples, tmp_path, 7, seed=0)
    assert sorted(label for _, label in seven) == list(range(7))
    assert seven == select_sample(list(reversed(samples)), tmp_path, 7, seed=0)
    assert [path for path, _ in seven] != [path for path, _ in select_sample(samples, tmp_path, 7, seed=3)]
    # Named classes go in the order named.
    assert [label for _, label in select_sample(samples, tmp_path, 3, seed=0, labels=[6, 4])] == [6, 4, 6]


def test_default_explains_at_most_4_images_of_every_class_in_turns():
    explain = compose_config("train").callbacks.explain
    assert explain.num_images <= 4 and explain.classes is None
    assert explain.seeds == [0] and explain.methods.integrated_gradients.n_steps == 8


def test_a_bad_class_name_is_refused_before_training_with_the_key_and_the_choices(tmp_path: Path):
    from types import SimpleNamespace

    classes = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    trainer = SimpleNamespace(datamodule=SimpleNamespace(classes=classes))
    explainer = Explain(str(tmp_path), "x", {"saliency": SaliencyMethod()}, classes=["mel", "melanoma"])
    with pytest.raises(ResoMapError) as error:
        explainer.setup(trainer, None, "fit")
    assert "callbacks.explain.classes names ['melanoma']" in str(error.value)
    assert "akiec, bcc, bkl, df, mel, nv, vasc" in str(error.value)
    Explain(str(tmp_path), "x", {"saliency": SaliencyMethod()}, classes="nv").setup(trainer, None, "fit")
