"""Classic vs cached data pipeline, side by side: ``python -m resomap.bench model=... res=...``.

For each pipeline: setup time (decode-once cache build included), data-only throughput (one
training epoch of batches, augmented and normalised, on the training device, no model),
end-to-end training throughput and epoch time, test accuracy after the same epochs, and the
achieved FLOP rate. Beside them, the framework overhead: ResoMap's training rate (Lightning,
LitClassifier, its data module) over a bare PyTorch loop doing the same work on the same
cached tensors (``bench.overhead``). With ``bench.seed_scale=true`` the data is a synthetic
stand-in of the seed study's size and the 10-run study's time is projected from timed steps
of every model x resolution. ``gpu_check=true`` runs the GPU figures of docs/benchmarks.md in
one go (a CUDA device is required).

FLOP convention: fvcore counts one multiply-add as one FLOP; the table reports standard FLOPs
(2 per multiply-add) and a training step as 3 forward passes (forward + backward ~ 2 forwards).
"""

from __future__ import annotations

import logging
import os
import statistics
import time
import warnings
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

import resomap  # noqa: F401  (registers the config resolvers)
from resomap.callbacks.profile import ProfileCallback
from resomap.cli import CONFIG_PATH, VERSION_BASE
from resomap.data import cache
from resomap.device import describe, resolve_precision, uses_cuda
from resomap.device import machine as device_machine
from resomap.errors import ResoMapError, user_errors
from resomap.io import write_json
from resomap.measure.peak import fraction_of_peak, measure_peak, training_tflops
from resomap.run.build import build_module, build_trainer

log = logging.getLogger(__name__)

CONF_DIR = resources.files("resomap.conf")  # conf/ in a clone, resomap/conf/ when installed
AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


class Clock(pl.Callback):
    """Per-epoch training and whole-epoch seconds; optionally the mean of steps after a warm-up."""

    def __init__(self, warmup_steps: int = 0, timed_steps: int = 0) -> None:
        self.warmup_steps, self.timed_steps = warmup_steps, timed_steps
        self.train_seconds: list[float] = []
        self.epoch_seconds: list[float] = []
        self.val_seconds: list[float] = []
        # CPU time of this process per training part of an epoch (work done, whatever the load).
        self.train_cpu_seconds: list[float] = []
        self.step_seconds: float | None = None
        self._marks: dict[str, float] = {}

    @staticmethod
    def now(module: pl.LightningModule) -> float:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)
        return time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._marks = {"epoch": self.now(module), "epoch_cpu": time.process_time()}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        if self.timed_steps and batch_idx + 1 == self.warmup_steps:
            self._marks["steps"] = self.now(module)
        elif self.timed_steps and batch_idx + 1 == self.warmup_steps + self.timed_steps:
            self.step_seconds = (self.now(module) - self._marks["steps"]) / self.timed_steps

    def _end_of_training_part(self, module: pl.LightningModule) -> None:
        if "train_end" not in self._marks:
            self._marks["train_end"] = self.now(module)
            self.train_seconds.append(self._marks["train_end"] - self._marks["epoch"])
            self.train_cpu_seconds.append(time.process_time() - self._marks["epoch_cpu"])

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
    return torch.device("cuda" if uses_cuda(str(cfg.trainer.accelerator)) else "cpu")


def sync(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def make_datamodule(cfg: DictConfig, pipeline: str, **overrides: Any) -> pl.LightningDataModule:
    return instantiate(cfg.data, pipeline=pipeline,
                       validation_cache=str(Path(cfg.paths.cache_dir) / "validation"), **overrides)


def data_throughput(datamodule: Any, device: torch.device) -> float:
    """Training images per second through the loader, on to ``device``, augmented and
    normalised as for training (the data module's own ``prepare_batch``), no model: the second
    epoch of one loader, so starting its worker processes is not counted (training reuses
    them: persistent workers)."""
    datamodule.target_device = device
    loader = datamodule.train_dataloader()
    for _ in range(2):  # the first epoch starts the workers
        images_seen = 0
        started = sync(device)
        for images, labels in loader:
            batch = (images.to(device, non_blocking=True), labels.to(device, non_blocking=True))
            images, labels = datamodule.prepare_batch(batch, training=True)
            images_seen += len(labels)
        seconds = sync(device) - started
    return images_seen / seconds



def forward_flops(cfg: DictConfig, num_classes: int) -> float:
    """fvcore's count (multiply-adds) of one image's forward pass at ``cfg.res``."""
    from fvcore.nn import FlopCountAnalysis

    net = instantiate(cfg.model.net, num_classes=num_classes).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        analysis = FlopCountAnalysis(net, torch.zeros(1, 3, cfg.res, cfg.res))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return float(analysis.total())


def trainer_for(cfg: DictConfig, callbacks: list[pl.Callback], **overrides: Any) -> pl.Trainer:
    settings = {"enable_checkpointing": False, "enable_model_summary": False,
                "num_sanity_val_steps": 0, "default_root_dir": str(Path(cfg.bench.output).parent)}
    return build_trainer(cfg, callbacks, [], **{**settings, **overrides})


def fit_and_test(cfg: DictConfig, datamodule: Any, epochs: int) -> dict[str, Any]:
    pl.seed_everything(cfg.seed, workers=True)
    module = build_module(cfg, datamodule)
    clock = Clock()
    trainer = trainer_for(cfg, [clock], max_epochs=epochs, min_epochs=epochs)
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


def with_model(cfg: DictConfig, model: str, res: int, **changes: Any) -> DictConfig:
    """``cfg`` for another model (its conf/model file) and resolution; ``changes`` are dotted
    keys set on the copy (e.g. ``{"trainer.precision": "bf16-mixed"}``)."""
    other = cfg.copy()
    with open_dict(other):
        other.model = OmegaConf.load(CONF_DIR / "model" / f"{model}.yaml")
        other.res = res
        for key, value in changes.items():
            OmegaConf.update(other, key, value, merge=False)
    return other


# ---- framework overhead ------------------------------------------------------------------------

def bare_loop(cfg: DictConfig, split: cache.CachedSplit, augment: Any, num_classes: int,
              class_weights: torch.Tensor | None, device: torch.device,
              epochs: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of each training epoch of a plain PyTorch loop: the run's network,
    optimiser, scheduler, loss, gradient clipping, autocast and augmentation, on ``split``
    (resident on ``device``), with no Lightning, metrics, logging or callbacks."""
    pl.seed_everything(cfg.seed)
    net = instantiate(cfg.model.net, num_classes=num_classes).to(device)
    channels_last = bool(cfg.channels_last)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if cfg.model.get("compile", False):
        net.compile()
    optimizer = instantiate(cfg.optimizer)(net.parameters())
    batch_size = int(cfg.data.batch_size)
    n = len(split)
    steps = epochs * -(-n // batch_size)
    scheduler = instantiate(cfg.scheduler)(optimizer, total_steps=steps) if cfg.get("scheduler") else None
    loss_fn = torch.nn.CrossEntropyLoss(
        weight=class_weights.to(device) if class_weights is not None else None)
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    dtype = AUTOCAST_DTYPES.get(precision)
    scaler = torch.amp.GradScaler("cuda") if precision == "16-mixed" and device.type == "cuda" else None
    clip = cfg.trainer.get("gradient_clip_val")
    net.train()
    seconds, cpu_seconds = [], []
    for _ in range(epochs):
        started, started_cpu = sync(device), time.process_time()
        order = torch.randperm(n, device=device)
        for start in range(0, n, batch_size):
            index = order[start:start + batch_size]
            images, labels = augment(split.images[index]), split.labels[index]
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = loss_fn(net(images).float(), labels)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(net.parameters(), float(clip))
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            if scheduler is not None:
                scheduler.step()
        seconds.append(sync(device) - started)
        cpu_seconds.append(time.process_time() - started_cpu)
    return seconds, cpu_seconds


def resomap_loop(cfg: DictConfig, datamodule: Any, epochs: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of each training epoch of ResoMap's own fit (Lightning,
    LitClassifier with its metrics, the data module, the profiling callback), validation off."""
    pl.seed_everything(cfg.seed)
    clock = Clock()
    profile = ProfileCallback(image_size=int(cfg.res), complexity=False)
    trainer = trainer_for(cfg, [clock, profile], max_epochs=epochs, min_epochs=epochs, limit_val_batches=0)
    trainer.fit(build_module(cfg, datamodule), datamodule=datamodule)
    return clock.train_seconds, clock.train_cpu_seconds


def overhead_threads(setting: Any, load: float | None, device: torch.device) -> int | None:
    """Torch threads for the overhead comparison: ``bench.overhead.threads`` when a number;
    under ``auto``, 1 on a CPU whose 1-minute load is above 1 (another process is running: two
    threads whose peer is descheduled spin, and rounds of the same loops then differ 30x), else
    None (torch's default)."""
    if setting is not None and str(setting).lower() != "auto":
        return int(setting)
    if device.type == "cpu" and load is not None and load > 1.0:
        return 1
    return None


def rounds_disagree(ratios: list[float], tolerance: float = 0.2) -> bool:
    """Whether the rounds' ratios spread by more than ``tolerance`` of their median
    ((max - min) / median): then the median is not a measurement of the code but of the load."""
    if len(ratios) < 2:
        return False
    middle = statistics.median(ratios)
    return middle <= 0 or (max(ratios) - min(ratios)) / middle > tolerance


def overhead(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """Run :func:`measure_overhead` with the threads the load calls for (restored afterwards)."""
    load = load_average()
    threads = overhead_threads(cfg.bench.overhead.get("threads", "auto"), load, device)
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        result = measure_overhead(cfg, device)
    finally:
        torch.set_num_threads(before)
    ratios = [row["ratio"] for row in result["rounds"]]
    result.update(load_1min=load, load_1min_after=load_average(), threads=threads or before,
                  spread=(max(ratios) - min(ratios)) / statistics.median(ratios) if ratios else None,
                  rounds_disagree=rounds_disagree(ratios))
    return result


def measure_overhead(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """ResoMap's training rate over a bare PyTorch loop's, same model, batch, precision and
    cached tensors on ``device`` (``data.device_cache=true``: the splits in device or process
    memory, augmented in the training process, as the bare loop does). Rounds alternate the two
    so drifting load affects both; the ratio is the median of the rounds' ratios. ``cpu_ratio``
    compares CPU time per image instead (the work each does, steadier on a shared machine;
    meaningful on a CPU, where everything runs in this process)."""
    spec = cfg.bench.overhead
    run_cfg = with_model(cfg, str(spec.model), int(spec.res), **dict(spec.get("set") or {}))
    datamodule = make_datamodule(run_cfg, "cached", device_cache="true")
    datamodule.prepare_data()
    datamodule.setup("fit")
    datamodule.target_device = device
    split = cache.resident(datamodule.cached["train"], device)
    weights = datamodule.class_weights()
    epochs, n = int(spec.epochs), len(split)
    rounds = []
    for index in range(int(spec.rounds)):
        bare, bare_cpu = bare_loop(run_cfg, split, datamodule.batch_augment, datamodule.num_classes,
                                   weights, device, epochs)
        ours, ours_cpu = resomap_loop(run_cfg, datamodule, epochs)
        row = {"bare_images_per_sec": n * (epochs - 1) / sum(bare[1:]),
               "resomap_images_per_sec": n * (epochs - 1) / sum(ours[1:]),
               "bare_epoch_seconds": bare, "resomap_epoch_seconds": ours,
               "bare_epoch_cpu_seconds": bare_cpu, "resomap_epoch_cpu_seconds": ours_cpu,
               "cpu_ratio": sum(bare_cpu[1:]) / sum(ours_cpu[1:])}
        row["ratio"] = row["resomap_images_per_sec"] / row["bare_images_per_sec"]
        log.info("overhead round %d: bare %.1f img/s, resomap %.1f img/s, ratio %.3f", index,
                 row["bare_images_per_sec"], row["resomap_images_per_sec"], row["ratio"])
        rounds.append(row)
    return {"model": str(spec.model), "res": int(spec.res), "device": str(device),
            "batch_size": datamodule.batch_size, "train_images": n, "epochs": epochs,
            "precision": resolve_precision(run_cfg.trainer.precision, run_cfg.trainer.accelerator),
            "compile": bool(run_cfg.model.get("compile", False)),
            "ratio": statistics.median(row["ratio"] for row in rounds),
            "cpu_ratio": statistics.median(row["cpu_ratio"] for row in rounds),
            "threads": torch.get_num_threads(),
            "bare_images_per_sec": statistics.median(row["bare_images_per_sec"] for row in rounds),
            "resomap_images_per_sec": statistics.median(row["resomap_images_per_sec"] for row in rounds),
            "rounds": rounds,
            "note": "training epochs after the first, validation off; images/s of whole epochs"}


# ---- the machine's peak and the roofline table ------------------------------------------------

def roofline_row(cfg: DictConfig, model: str, res: int, peak: dict[str, Any]) -> dict[str, Any]:
    """One training configuration as a run trains it (Lightning, the cached pipeline, the run's
    precision), timed over steps after a warm-up, and placed under the measured peak."""
    spec = cfg.bench.roofline
    run_cfg = with_model(cfg, model, res, **dict(spec.get("set") or {}))
    datamodule = make_datamodule(run_cfg, "cached")
    datamodule.prepare_data()
    datamodule.setup("fit")
    warmup, timed = int(spec.warmup_steps), int(spec.timed_steps)
    clock = Clock(warmup, timed)
    trainer = trainer_for(run_cfg, [clock], max_epochs=1, limit_train_batches=warmup + timed,
                          limit_val_batches=0)
    pl.seed_everything(cfg.seed)
    trainer.fit(build_module(run_cfg, datamodule), datamodule=datamodule)
    images_per_sec = datamodule.batch_size / clock.step_seconds
    mult_adds = forward_flops(run_cfg, datamodule.num_classes)
    precision = resolve_precision(run_cfg.trainer.precision, run_cfg.trainer.accelerator)
    achieved = training_tflops(mult_adds, images_per_sec)
    # bf16-mixed runs its convolutions in bf16: its ceiling is the bf16 peak.
    ceiling = "bfloat16" if precision.startswith("bf16") else "float32"
    return {"model": model, "res": res, "batch_size": datamodule.batch_size, "precision": precision,
            "train_step_sec": clock.step_seconds, "images_per_sec": images_per_sec,
            "forward_gmacs": mult_adds / 1e9, "train_tflops": achieved, "ceiling": ceiling,
            "fraction_of_peak": fraction_of_peak(achieved, (peak.get(ceiling) or {}).get("tflops")),
            "fraction_of_bf16_peak": fraction_of_peak(achieved, (peak.get("bfloat16") or {}).get("tflops")),
            "fraction_of_fp32_peak": fraction_of_peak(achieved, (peak.get("float32") or {}).get("tflops"))}


def print_roofline(peak: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    parts = [f"{name} {peak[name]['tflops']:.3f} TFLOP/s (n={peak[name]['size']})"
             for name in ("bfloat16", "float32") if name in peak]
    print(f"\nMachine peak, measured here (dense n x n matmul, same process, {peak['threads']} thread(s)): "
          + ", ".join(parts))
    if not rows:
        return
    print("Training as runs do it (cached pipeline, Lightning, the run's precision); TFLOP/s = 2 x fvcore "
          "multiply-adds x 3 forwards per image x img/s; of bf16 / fp32 peak = TFLOP/s over that measured "
          "matmul peak (without AMX, torch's bf16 matmul can be slower than its fp32 one while bf16 "
          "convolutions are faster: both are shown)\n")
    columns = (("model", "model", "{}"), ("res", "res", "{}"), ("batch", "batch_size", "{}"),
               ("precision", "precision", "{}"), ("img/s", "images_per_sec", "{:.1f}"),
               ("TFLOP/s", "train_tflops", "{:.3f}"), ("of bf16 peak", "fraction_of_bf16_peak", "{:.1%}"),
               ("of fp32 peak", "fraction_of_fp32_peak", "{:.1%}"))
    print(format_table(rows, columns))


def roofline(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """The machine's measured peak, then every configuration of ``bench.roofline`` under it."""
    spec = cfg.bench.roofline
    peak = measure_peak(device, sizes=[int(n) for n in spec.peak_sizes], min_seconds=float(spec.peak_seconds))
    rows = [roofline_row(cfg, str(model), int(res), peak)
            for model in spec.models for res in spec.resolutions]
    return {"peak": peak, "rows": rows}


# ---- seed-scale projection ---------------------------------------------------------------------

def project_study(cfg: DictConfig, counts: dict[str, int] | None = None,
                  changes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The 10-run study's time from timed steps of every model x resolution (cached pipeline).

    ``counts`` ({"train": N, "val": M}) projects to a data set of that size from a smaller
    stand-in (same image size, so the same cost per step); default: the stand-in's own sizes.
    All resolutions of the study are cached in one decode pass; resolution-major order lets
    consecutive runs reuse the resident splits.
    """
    study = cfg.bench.study
    resolutions = [int(res) for res in study.resolutions]
    runs, total = [], 0.0
    for res in resolutions:
        for model in study.models:
            run_cfg = with_model(cfg, model, res, **(changes or {}))
            started = time.perf_counter()
            datamodule = make_datamodule(run_cfg, "cached", cache_sizes=resolutions)
            datamodule.prepare_data()
            datamodule.setup("fit")
            setup_sec = time.perf_counter() - started
            clock = Clock(study.warmup_steps, study.timed_steps)
            steps = int(study.warmup_steps) + int(study.timed_steps)
            trainer = trainer_for(run_cfg, [clock], max_epochs=1, limit_train_batches=steps,
                                  limit_val_batches=int(study.timed_steps))
            pl.seed_everything(cfg.seed)
            module = build_module(run_cfg, datamodule)
            trainer.fit(module, datamodule=datamodule)
            n_train = (counts or {}).get("train") or len(datamodule.datasets["train"])
            n_val = (counts or {}).get("val") or len(datamodule.datasets["val"])
            train_batches = -(-int(n_train) // datamodule.batch_size)
            val_batches = -(-int(n_val) // datamodule.eval_batch_size)
            own_val_batches = -(-len(datamodule.datasets["val"]) // datamodule.eval_batch_size)
            val_batch_sec = clock.val_seconds[0] / min(int(study.timed_steps), own_val_batches)
            epoch_sec = train_batches * clock.step_seconds + val_batches * val_batch_sec
            run_sec = int(study.epochs) * epoch_sec
            total += run_sec
            runs.append({"model": model, "res": res, "setup_sec": setup_sec,
                         "train_step_sec": clock.step_seconds, "val_batch_sec": val_batch_sec,
                         "epoch_sec": epoch_sec, "run_sec": run_sec,
                         "compile": module.compile_report()})
            log.info("projection %s @ %d: %.1f s/epoch, %.0f s for %d epochs", model, res, epoch_sec,
                     run_sec, study.epochs)
    return {"runs": runs, "study_sec": total, "epochs": int(study.epochs), "counts": counts,
            "note": "training + validation epochs only; cache builds (setup_sec) are one-off"}


def load_average() -> float | None:
    """The 1-minute load average (None where the system has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def machine_facts() -> dict[str, Any]:
    """The machine (resomap.device.machine: CPU model and matrix features read from the system,
    GPU), the load and the date, for the header and bench.json."""
    info = device_machine()
    load = " ".join(f"{value:.2f}" for value in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return {"machine": info, "cpu": f"{info['cpu']} x {info['cores']}", "gpu": info.get("gpu") or "none",
            "torch": torch.__version__, "load_average": load,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


COLUMNS = (("pipeline", "pipeline", "{}"), ("setup s", "setup_sec", "{:.1f}"),
           ("data img/s", "data_images_per_sec", "{:.1f}"),
           ("train img/s", "train_images_per_sec", "{:.1f}"), ("epoch s", "epoch_sec", "{:.1f}"),
           ("test acc", "test_accuracy", "{:.3f}"), ("test bal acc", "test_balanced_accuracy", "{:.3f}"),
           ("TFLOP/s", "train_tflops", "{:.3f}"), ("of peak", "fraction_of_peak", "{:.1%}"))


def format_table(rows: list[dict[str, Any]], columns: tuple[tuple[str, str, str], ...] = COLUMNS) -> str:
    """``rows`` as right-aligned text columns: (title, row key, format) per column; "-" where missing."""
    cells = [[title for title, _, _ in columns]]
    cells += [[fmt.format(row[key]) if row.get(key) is not None else "-" for _, key, fmt in columns]
              for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def use_seed_scale(cfg: DictConfig, spec_node: DictConfig | None = None, name: str = "synthetic_seed_scale"
                   ) -> None:
    """Point ``cfg.data`` at a synthetic stand-in (generated on first use), by default the
    seed-sized one (``bench.seed_scale_data``)."""
    spec = OmegaConf.to_container(spec_node if spec_node is not None else cfg.bench.seed_scale_data,
                                  resolve=True)
    with open_dict(cfg):
        cfg.data.name = name
        cfg.data.root = spec.pop("root")
        cfg.data.generator = {"_target_": "resomap.data.synthetic.generate", "_partial_": True,
                              "seed": 0, **spec}


def print_overhead(result: dict[str, Any]) -> None:
    load = result.get("load_1min")
    print(f"\nFramework overhead ({result['model']} at {result['res']} px, batch {result['batch_size']}, "
          f"{result['precision']}, {result['device']}, cached tensors in memory, "
          f"{result['threads']} torch thread(s), 1-minute load "
          f"{'?' if load is None else f'{load:.2f}'}): ResoMap "
          f"{result['resomap_images_per_sec']:.1f} img/s, bare PyTorch loop "
          f"{result['bare_images_per_sec']:.1f} img/s, ratio {result['ratio']:.3f}, CPU-time ratio "
          f"{result['cpu_ratio']:.3f} "
          f"(median of {len(result['rounds'])} alternating rounds: "
          + ", ".join(f"{row['ratio']:.3f}" for row in result["rounds"]) + ")")
    if result.get("rounds_disagree"):
        print(f"WARNING: the rounds disagree by {result['spread']:.0%} of their median (more than 20 %): "
              "the machine's load changed during the comparison, so this ratio measures the load, not "
              "ResoMap. Run it again on a quieter machine"
              + (", or with bench.overhead.threads=1." if result["threads"] > 1 else "; the CPU-time ratio, "
                 "which counts the work each loop did, is steadier under load."))


def set_threads(cfg: DictConfig) -> None:
    """``bench.threads``: torch's intra-op threads for the whole bench (null: torch's default).

    On a CPU shared with other jobs, OpenMP threads that wait for a descheduled peer spin:
    measured here, a tiny_cnn step at 64 px took 12 ms on 1 thread and 420 ms on 2 threads
    while two other processes ran. One thread keeps comparisons stable on a busy machine.
    """
    if cfg.bench.get("threads"):
        torch.set_num_threads(int(cfg.bench.threads))


def run(cfg: DictConfig) -> dict[str, Any]:
    set_threads(cfg)
    if cfg.get("gpu_check"):
        return gpu_check(cfg)
    if cfg.bench.seed_scale:
        use_seed_scale(cfg)
    device = training_device(cfg)
    facts = {**machine_facts(), "device": str(device), "data": cfg.data.name,
             "threads": torch.get_num_threads()}
    print(f"\nResoMap bench on {describe(facts['machine'])}; device {device}, {facts['threads']} torch "
          f"thread(s), load average {facts['load_average']} (1, 5, 15 min), {facts['date']}")
    payload: dict[str, Any] = {**facts}
    if cfg.bench.roofline.enabled:
        payload["roofline"] = roofline(cfg, device)
        print_roofline(payload["roofline"]["peak"], payload["roofline"]["rows"])
    measured_peak = ((payload.get("roofline") or {}).get("peak") or {}).get("bfloat16", {}).get("tflops")
    peak = float(cfg.bench.peak_tflops) if cfg.bench.peak_tflops else measured_peak
    rows = [bench_pipeline(cfg, pipeline) for pipeline in cfg.bench.pipelines]
    flops = forward_flops(cfg, rows[0]["num_classes"]) if rows else 0.0
    for row in rows:
        row["train_tflops"] = training_tflops(flops, row["train_images_per_sec"])
        row["fraction_of_peak"] = fraction_of_peak(row["train_tflops"], peak)
    payload.update({"model": cfg.model.name, "res": int(cfg.res), "epochs": int(cfg.bench.epochs),
                    "forward_gflops_fvcore": flops / 1e9, "rows": rows})
    if rows:
        print(f"\nData pipelines: {cfg.model.name} at {cfg.res} px, {cfg.bench.epochs} epoch(s), data "
              f"{cfg.data.name}")
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
    if cfg.bench.overhead.enabled:
        payload["overhead"] = overhead(cfg, device)
        print_overhead(payload["overhead"])
    if cfg.bench.precision.enabled:
        payload["precision"] = compare_precisions(cfg)
        print_precisions(payload["precision"])
    if cfg.bench.seed_scale:
        payload["projection"] = projection = project_study(cfg)
        print_projection(projection)
    output = Path(cfg.bench.output)
    write_json(output, payload)
    print(f"\nWrote {output}")
    return payload


def print_projection(projection: dict[str, Any], title: str = "Projected seed-scale study") -> None:
    print(f"\n{title} ({len(projection['runs'])} runs x {projection['epochs']} "
          f"epochs, cached pipeline): {projection['study_sec'] / 60:.1f} min")
    for run_row in projection["runs"]:
        print(f"  {run_row['model']:>12} @ {run_row['res']:>4}: {run_row['epoch_sec']:8.1f} s/epoch"
              f"  {run_row['run_sec'] / 60:8.1f} min")


# ---- GPU check ---------------------------------------------------------------------------------

def profile_untrained(cfg: DictConfig, model: str, res: int) -> dict[str, Any]:
    """The ``profiling`` and ``complexity`` sections of ``model`` at ``res``, as a run records them
    after its test (weights do not change time or memory), with the data cache resident."""
    run_cfg = with_model(cfg, model, res)
    datamodule = make_datamodule(run_cfg, "cached")
    datamodule.prepare_data()
    datamodule.setup("test")
    profile = ProfileCallback(image_size=res, batch_size=int(cfg.bench.gpu_check.profile_batch_size))
    trainer = trainer_for(run_cfg, [profile], limit_test_batches=2)
    trainer.test(build_module(run_cfg, datamodule), datamodule=datamodule, verbose=False)
    sections = dict(profile.sections or {})
    sections["profiling"] = {key: value for key, value in sections.get("profiling", {}).items()
                             if key != "training"}
    return sections


def step_row(cfg: DictConfig, model: str, res: int, precision: str, compiled: bool, warmup_steps: int,
             timed_steps: int) -> dict[str, Any]:
    """Mean training step time of ``model`` at ``res`` in ``precision`` after ``warmup_steps``."""
    run_cfg = with_model(cfg, model, res, **{"trainer.precision": precision, "model.compile": compiled})
    datamodule = make_datamodule(run_cfg, "cached")
    datamodule.prepare_data()
    datamodule.setup("fit")
    clock = Clock(warmup_steps, timed_steps)
    trainer = trainer_for(run_cfg, [clock], max_epochs=1, limit_train_batches=warmup_steps + timed_steps,
                          limit_val_batches=0)
    pl.seed_everything(cfg.seed)
    module = build_module(run_cfg, datamodule)
    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    return {"model": model, "res": res, "precision": precision, "compile": compiled,
            "train_step_sec": clock.step_seconds,
            "images_per_sec": datamodule.batch_size / clock.step_seconds,
            "fit_sec": time.perf_counter() - started, "compile_report": module.compile_report()}


def step_variants(cfg: DictConfig) -> list[dict[str, Any]]:
    """Training step time of one model x resolution under each precision x compile setting."""
    spec = cfg.bench.gpu_check.variants
    rows = []
    for precision in spec.precisions:
        for compiled in spec.compile:
            rows.append(step_row(cfg, str(spec.model), int(spec.res), str(precision), bool(compiled),
                                 int(spec.warmup_steps), int(spec.timed_steps)))
            log.info("variant %s: %.2f ms/step", rows[-1], 1000 * rows[-1]["train_step_sec"])
    return rows


def compare_precisions(cfg: DictConfig) -> dict[str, Any]:
    """Training step time per precision (``bench.precision``), rounds alternating in one process
    so that the machine's load falls on every precision alike; the median round per precision.
    Decides ``resolve_precision``'s CPU choice: bf16 is fast only with bf16 instructions."""
    spec = cfg.bench.precision
    precisions = [str(name) for name in spec.precisions]
    seconds: dict[str, list[float]] = {name: [] for name in precisions}
    for _ in range(int(spec.rounds)):
        for name in precisions:
            row = step_row(cfg, str(spec.model), int(spec.res), name, False, int(spec.warmup_steps),
                           int(spec.timed_steps))
            seconds[name].append(row["train_step_sec"])
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    return {"model": str(spec.model), "res": int(spec.res), "batch_size": int(cfg.data.batch_size),
            "rounds": seconds, "median_step_sec": medians,
            "time_over_first": {name: medians[name] / medians[precisions[0]] for name in precisions}}


def print_precisions(result: dict[str, Any]) -> None:
    print(f"\nPrecision: {result['model']} at {result['res']} px, batch {result['batch_size']}, training "
          f"step, median of {len(next(iter(result['rounds'].values())))} alternating rounds")
    for name, median in result["median_step_sec"].items():
        print(f"  {name:>10}: {1000 * median:9.1f} ms/step  ({result['time_over_first'][name]:.2f}x the "
              f"time of {next(iter(result['median_step_sec']))})")


def gpu_check(cfg: DictConfig, require_cuda: bool = True) -> dict[str, Any]:
    """The GPU figures of docs/benchmarks.md in one command (``gpu_check=true``, sized for the
    issue's 8 minutes on one H100/H200; not yet run on a GPU): the seed-scale study projected
    from a stand-in of the seed's image size,
    profiles of every study model at 224 and 512 px with the data cache resident, the framework
    overhead at 224 px, and training step times under 16-mixed vs bf16-mixed and compile on vs
    off. Writes ``bench.json`` beside the run."""
    device = training_device(cfg)
    if require_cuda and device.type != "cuda":
        raise ResoMapError(
            "gpu_check=true measures the GPU path and needs a CUDA GPU, but "
            f"trainer.accelerator={cfg.trainer.accelerator} gives {device} here "
            f"(torch.cuda.is_available() is {torch.cuda.is_available()}). Run it on a machine with "
            "a GPU; on a CPU, python -m resomap.bench gives the CPU figures.")
    started = time.perf_counter()
    spec = cfg.bench.gpu_check
    use_seed_scale(cfg, spec.data, name="synthetic_gpu_check")
    payload: dict[str, Any] = {**machine_facts(), "mode": "gpu_check", "device": str(device)}
    timings: dict[str, float] = {}

    clock = time.perf_counter()
    payload["peak"] = measure_peak(device, dtypes=("bfloat16", "float16", "float32"),
                                   sizes=[int(n) for n in spec.peak_sizes],
                                   min_seconds=float(cfg.bench.roofline.peak_seconds))
    timings["peak_sec"] = time.perf_counter() - clock
    print("GPU matmul peak, measured: " + ", ".join(f"{name} {payload['peak'][name]['tflops']:.1f} TFLOP/s"
                                                    for name in ("bfloat16", "float16", "float32")))

    clock = time.perf_counter()
    counts = {key: int(value) for key, value in spec.counts.items()}
    payload["projection"] = project_study(cfg, counts=counts)
    timings["projection_sec"] = time.perf_counter() - clock
    print_projection(payload["projection"], "Projected seed-scale study (counts " + ", ".join(
        f"{key} {value}" for key, value in counts.items()) + ")")

    clock = time.perf_counter()
    payload["profiles"] = []
    for res in spec.profile_resolutions:
        for model in cfg.bench.study.models:
            sections = profile_untrained(cfg, str(model), int(res))
            payload["profiles"].append({"model": str(model), "res": int(res), **sections})
            figures = sections["profiling"]
            print(f"profile {model} @ {res}: {1000 * figures['median_time_sec']:.2f} ms per batch of "
                  f"{figures['batch_size']}, model GPU peak {figures.get('gpu_memory_peak_mb', 0):.0f} MiB "
                  f"(data cache {figures.get('data_cache_gpu_mb', 0):.0f} MiB left out)")
    timings["profiles_sec"] = time.perf_counter() - clock

    clock = time.perf_counter()
    with open_dict(cfg):
        cfg.bench.overhead.res = int(spec.overhead_res)
    payload["overhead"] = overhead(cfg, device)
    print_overhead(payload["overhead"])
    timings["overhead_sec"] = time.perf_counter() - clock

    clock = time.perf_counter()
    payload["variants"] = step_variants(cfg)
    for row in payload["variants"]:
        print(f"step {row['model']} @ {row['res']} {row['precision']:>10} compile={row['compile']!s:5}: "
              f"{1000 * row['train_step_sec']:.2f} ms ({row['images_per_sec']:.0f} img/s)")
    timings["variants_sec"] = time.perf_counter() - clock

    timings["total_sec"] = time.perf_counter() - started
    payload["timing"] = timings
    output = Path(cfg.bench.output)
    write_json(output, payload)
    print(f"\ngpu_check took {timings['total_sec'] / 60:.1f} min; wrote {output}")
    return payload


@hydra.main(version_base=VERSION_BASE, config_path=CONFIG_PATH, config_name="bench")
def main(cfg: DictConfig) -> None:
    from resomap.extras import extras

    extras(cfg)  # one line per log record, known warnings filtered, no advertisements
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    from resomap.cli import start

    start(main)
