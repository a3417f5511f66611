"""Classic vs cached data pipeline, side by side: ``python -m resomap.bench model=... res=...``.

For each pipeline: setup time (decode-once cache build included), data-only throughput (one
training epoch of batches, augmented, on the training device, no model), end-to-end training
throughput and epoch time, test accuracy after the same epochs, and the achieved FLOP rate.
With ``bench.seed_scale=true`` the data is a synthetic stand-in of the seed study's size and the
10-run study's time is projected from timed steps of every model x resolution.

FLOP convention: fvcore counts one multiply-add as one FLOP; the table reports standard FLOPs
(2 per multiply-add) and a training step as 3 forward passes (forward + backward ~ 2 forwards).
"""

from __future__ import annotations

import logging
import platform
import statistics
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

import resomap  # noqa: F401  (registers the config resolvers)
from resomap.io import write_json
from resomap.models.classifier import LitClassifier
from resomap.run.orchestrate import build_trainer

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
TRAIN_FLOPS_PER_FORWARD = 3


class Clock(pl.Callback):
    """Per-epoch training and whole-epoch seconds; optionally the mean of steps after a warm-up."""

    def __init__(self, warmup_steps: int = 0, timed_steps: int = 0) -> None:
        self.warmup_steps, self.timed_steps = warmup_steps, timed_steps
        self.train_seconds: list[float] = []
        self.epoch_seconds: list[float] = []
        self.val_seconds: list[float] = []
        self.step_seconds: float | None = None
        self._marks: dict[str, float] = {}

    @staticmethod
    def now(module: pl.LightningModule) -> float:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)
        return time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._marks = {"epoch": self.now(module)}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        if self.timed_steps and batch_idx + 1 == self.warmup_steps:
            self._marks["steps"] = self.now(module)
        elif self.timed_steps and batch_idx + 1 == self.warmup_steps + self.timed_steps:
            self.step_seconds = (self.now(module) - self._marks["steps"]) / self.timed_steps

    def _end_of_training_part(self, module: pl.LightningModule) -> None:
        if "train_end" not in self._marks:
            self._marks["train_end"] = self.now(module)
            self.train_seconds.append(self._marks["train_end"] - self._marks["epoch"])

    def on_validation_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self._end_of_training_part(module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self.val_seconds.append(self.now(module) - self._marks["train_end"])

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._end_of_training_part(module)
        self.epoch_seconds.append(self.now(module) - self._marks["epoch"])


def steady(values: list[float]) -> float:
    """Median over epochs after the first (worker start-up, cudnn autotuning), if there are any."""
    return statistics.median(values[1:] or values)


def training_device(cfg: DictConfig) -> torch.device:
    accelerator = str(cfg.trainer.accelerator)
    use_cuda = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
    return torch.device("cuda" if use_cuda else "cpu")


def make_datamodule(cfg: DictConfig, pipeline: str) -> pl.LightningDataModule:
    return instantiate(cfg.data, pipeline=pipeline,
                       validation_cache=str(Path(cfg.paths.cache_dir) / "validation"))


def data_throughput(datamodule: Any, device: torch.device) -> float:
    """Training images per second through the loader, on to ``device``, augmented, no model."""
    datamodule.target_device = device
    images_seen = 0
    started = time.perf_counter()
    for images, labels in datamodule.train_dataloader():
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if images.dtype == torch.uint8:  # cached batches not augmented in the loader's workers
            images = datamodule.batch_augment(images)
        images_seen += len(labels)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return images_seen / (time.perf_counter() - started)


def build_module(cfg: DictConfig, datamodule: Any) -> LitClassifier:
    weights = datamodule.class_weights()
    return LitClassifier(
        net=instantiate(cfg.model.net, num_classes=datamodule.num_classes),
        num_classes=datamodule.num_classes, class_names=datamodule.classes,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        class_weights=weights.tolist() if weights is not None else None,
        channels_last=cfg.channels_last, compile=bool(cfg.model.get("compile", False)))


def forward_flops(cfg: DictConfig, num_classes: int) -> float:
    """fvcore's count (multiply-adds) of one image's forward pass at ``cfg.res``."""
    from fvcore.nn import FlopCountAnalysis

    net = instantiate(cfg.model.net, num_classes=num_classes).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        analysis = FlopCountAnalysis(net, torch.zeros(1, 3, cfg.res, cfg.res))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return float(analysis.total())


def trainer_for(cfg: DictConfig, clock: Clock, **overrides: Any) -> pl.Trainer:
    settings = {"enable_checkpointing": False, "enable_model_summary": False,
                "num_sanity_val_steps": 0, "default_root_dir": str(Path(cfg.bench.output).parent)}
    return build_trainer(cfg, [clock], [], **{**settings, **overrides})


def fit_and_test(cfg: DictConfig, datamodule: Any, epochs: int) -> dict[str, Any]:
    pl.seed_everything(cfg.seed, workers=True)
    module = build_module(cfg, datamodule)
    clock = Clock()
    trainer = trainer_for(cfg, clock, max_epochs=epochs, min_epochs=epochs)
    trainer.fit(module, datamodule=datamodule)
    tested = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    n_train = len(datamodule.datasets["train"])
    return {
        "train_images_per_sec": n_train / steady(clock.train_seconds),
        "epoch_sec": steady(clock.epoch_seconds),
        "epoch_seconds": clock.epoch_seconds,
        "train_seconds": clock.train_seconds,
        "test_accuracy": float(tested["test_accuracy"]),
        "test_balanced_accuracy": float(tested["test_balanced_accuracy"]),
        "compile": module.compile_report(),
    }


def bench_pipeline(cfg: DictConfig, pipeline: str) -> dict[str, Any]:
    """Every figure of one table row."""
    started = time.perf_counter()
    datamodule = make_datamodule(cfg, pipeline)
    datamodule.prepare_data()
    datamodule.setup("fit")
    row: dict[str, Any] = {"pipeline": pipeline, "setup_sec": time.perf_counter() - started,
                           "num_classes": datamodule.num_classes}
    log.info("%s: setup %.1f s; timing the data path", pipeline, row["setup_sec"])
    row["data_images_per_sec"] = data_throughput(datamodule, training_device(cfg))
    log.info("%s: %.1f img/s data only; training %d epoch(s)", pipeline, row["data_images_per_sec"],
             cfg.bench.epochs)
    row.update(fit_and_test(cfg, datamodule, int(cfg.bench.epochs)))
    return row


def with_model(cfg: DictConfig, model: str, res: int) -> DictConfig:
    """``cfg`` for another model (its conf/model file) and resolution."""
    other = cfg.copy()
    with open_dict(other):
        other.model = OmegaConf.load(CONF_DIR / "model" / f"{model}.yaml")
        other.res = res
    return other


def project_study(cfg: DictConfig) -> dict[str, Any]:
    """The 10-run study's time from timed steps of every model x resolution (cached pipeline)."""
    study = cfg.bench.study
    runs, total = [], 0.0
    for res in study.resolutions:
        for model in study.models:
            run_cfg = with_model(cfg, model, int(res))
            started = time.perf_counter()
            datamodule = make_datamodule(run_cfg, "cached")
            datamodule.prepare_data()
            datamodule.setup("fit")
            setup_sec = time.perf_counter() - started
            clock = Clock(study.warmup_steps, study.timed_steps)
            steps = int(study.warmup_steps) + int(study.timed_steps)
            trainer = trainer_for(run_cfg, clock, max_epochs=1, limit_train_batches=steps,
                                  limit_val_batches=int(study.timed_steps))
            pl.seed_everything(cfg.seed)
            trainer.fit(build_module(run_cfg, datamodule), datamodule=datamodule)
            train_batches = -(-len(datamodule.datasets["train"]) // datamodule.batch_size)
            eval_images = len(datamodule.datasets["val"])
            val_batches_timed = min(int(study.timed_steps),
                                    -(-eval_images // datamodule.eval_batch_size))
            val_batch_sec = clock.val_seconds[0] / val_batches_timed
            epoch_sec = (train_batches * clock.step_seconds
                         + -(-eval_images // datamodule.eval_batch_size) * val_batch_sec)
            run_sec = int(study.epochs) * epoch_sec
            total += run_sec
            runs.append({"model": model, "res": int(res), "setup_sec": setup_sec,
                         "train_step_sec": clock.step_seconds, "val_batch_sec": val_batch_sec,
                         "epoch_sec": epoch_sec, "run_sec": run_sec})
            log.info("projection %s @ %d: %.1f s/epoch, %.0f s for %d epochs", model, res, epoch_sec,
                     run_sec, study.epochs)
    return {"runs": runs, "study_sec": total, "epochs": int(study.epochs),
            "note": "training + validation epochs only; cache builds (setup_sec) are one-off"}


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = f"{names[0]} x {len(names)}" if names else cpu
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"cpu": cpu, "gpu": gpu, "torch": torch.__version__,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


COLUMNS = (("pipeline", "pipeline", "{}"), ("setup s", "setup_sec", "{:.1f}"),
           ("data img/s", "data_images_per_sec", "{:.1f}"),
           ("train img/s", "train_images_per_sec", "{:.1f}"), ("epoch s", "epoch_sec", "{:.1f}"),
           ("test acc", "test_accuracy", "{:.3f}"), ("test bal acc", "test_balanced_accuracy", "{:.3f}"),
           ("TFLOP/s", "train_tflops", "{:.3f}"), ("of peak", "fraction_of_peak", "{:.1%}"))


def format_table(rows: list[dict[str, Any]]) -> str:
    cells = [[title for title, _, _ in COLUMNS]]
    cells += [[fmt.format(row[key]) if row.get(key) is not None else "-" for _, key, fmt in COLUMNS]
              for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def use_seed_scale(cfg: DictConfig) -> None:
    """Point ``cfg.data`` at the seed-sized synthetic stand-in (generated on first use)."""
    spec = OmegaConf.to_container(cfg.bench.seed_scale_data, resolve=True)
    with open_dict(cfg):
        cfg.data.name = "synthetic_seed_scale"
        cfg.data.root = spec.pop("root")
        cfg.data.generator = {"_target_": "resomap.data.synthetic.generate", "_partial_": True,
                              "seed": 0, **spec}


def run(cfg: DictConfig) -> dict[str, Any]:
    if cfg.bench.seed_scale:
        use_seed_scale(cfg)
    device = training_device(cfg)
    facts = {**machine(), "model": cfg.model.name, "res": int(cfg.res), "device": str(device),
             "epochs": int(cfg.bench.epochs), "data": cfg.data.name}
    rows = [bench_pipeline(cfg, pipeline) for pipeline in cfg.bench.pipelines]
    flops = forward_flops(cfg, rows[0]["num_classes"])
    for row in rows:
        row["train_tflops"] = 2 * TRAIN_FLOPS_PER_FORWARD * flops * row["train_images_per_sec"] / 1e12
        if cfg.bench.peak_tflops:
            row["fraction_of_peak"] = row["train_tflops"] / float(cfg.bench.peak_tflops)
    payload: dict[str, Any] = {**facts, "forward_gflops_fvcore": flops / 1e9, "rows": rows}
    hardware = facts["gpu"] if device.type == "cuda" else facts["cpu"]
    print(f"\nResoMap bench: {cfg.model.name} at {cfg.res} px, {cfg.bench.epochs} epoch(s), "
          f"data {cfg.data.name}, device {device} ({hardware})")
    print(f"forward {flops / 1e9:.3f} GFLOP/image (fvcore, multiply-add = 1); TFLOP/s below count "
          f"2 FLOPs per multiply-add and 3 forwards per training image\n")
    print(format_table(rows))
    by_name = {row["pipeline"]: row for row in rows}
    if {"classic", "cached"} <= by_name.keys():
        speedups = {key: by_name["cached"][key] / by_name["classic"][key]
                    for key in ("data_images_per_sec", "train_images_per_sec")}
        payload["speedup"] = speedups
        print(f"\ncached / classic: data {speedups['data_images_per_sec']:.2f}x, "
              f"training {speedups['train_images_per_sec']:.2f}x")
    if cfg.bench.seed_scale:
        payload["projection"] = projection = project_study(cfg)
        print(f"\nProjected seed-scale study ({len(projection['runs'])} runs x {projection['epochs']} "
              f"epochs, cached pipeline): {projection['study_sec'] / 60:.1f} min")
        for run_row in projection["runs"]:
            print(f"  {run_row['model']:>12} @ {run_row['res']:>4}: {run_row['epoch_sec']:8.1f} s/epoch"
                  f"  {run_row['run_sec'] / 60:8.1f} min")
    output = Path(cfg.bench.output)
    write_json(output, payload)
    print(f"\nWrote {output}")
    return payload


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
