"""The seed-scale study's time, projected from timed steps of every model x resolution on a
synthetic stand-in of the seed's image size (``bench.seed_scale``, ``gpu_check``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf, open_dict

from resomap.benchmarks.harness import Clock, make_datamodule, trainer_for, with_model
from resomap.run.build import build_module

log = logging.getLogger(__name__)



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


def print_projection(projection: dict[str, Any], title: str = "Projected seed-scale study") -> None:
    print(f"\n{title} ({len(projection['runs'])} runs x {projection['epochs']} "
          f"epochs, cached pipeline): {projection['study_sec'] / 60:.1f} min")
    for run_row in projection["runs"]:
        print(f"  {run_row['model']:>12} @ {run_row['res']:>4}: {run_row['epoch_sec']:8.1f} s/epoch"
              f"  {run_row['run_sec'] / 60:8.1f} min")
