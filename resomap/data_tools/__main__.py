"""Data sets: ``resomap data prepare|analyze key=value ...`` (or ``python -m resomap.data_tools``).

The first word picks the task and with it the Hydra config (``conf/data_tool/<task>.yaml``);
the rest are ordinary Hydra overrides. ``resomap data <task> --help`` lists the keys.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

import hydra
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import resomap  # noqa: F401  (registers the config resolvers)
from resomap.cli import CONFIG_PATH, VERSION_BASE
from resomap.errors import ResoMapError, exit_with, user_errors

log = logging.getLogger("resomap.data_tools")

USAGE = """usage: resomap data {prepare,analyze} [key=value ...]   (or python -m resomap.data_tools ...)

  prepare   lay out images as <output_dir>/{train,val,test}/<class>/ for the trainer:
              resomap data prepare input_dir=~/lesions output_dir=data/lesions
              resomap data prepare source=kaggle
              resomap data prepare source=synthetic n_train=30224 n_val=8283 n_test=3653
  analyze   class balance, image sizes and cross-split duplicates of a data set:
              resomap data analyze root=data/lesions

resomap data <task> --help lists every key of a task."""


def prepare(cfg: DictConfig) -> None:
    if cfg.source not in cfg.sources:
        raise ResoMapError(f"source={cfg.source!r} is not valid; use one of {sorted(cfg.sources)}.")
    if cfg.source == "folder" and not cfg.input_dir:
        raise ResoMapError("source=folder needs input_dir=<folder holding one sub-folder of images per "
                           "class>.")
    overrides = {"output_dir": cfg.output_dir} if cfg.output_dir else {}
    try:
        output_dir = instantiate(cfg.sources[cfg.source], **overrides)
    except InstantiationException as error:
        # resomap.data.synthetic.generate refuses to write over a different data set this way.
        if isinstance(error.__cause__, FileExistsError):
            raise ResoMapError(str(error.__cause__)) from error
        raise
    root = Path(output_dir).resolve()
    # The seed's data set and its synthetic stand-in train with the seed's settings.
    config = "imagefolder" if cfg.source == "folder" else "skin_cancer"
    log.info("Next: resomap data analyze root=%s", root)
    log.info("Then: resomap train data=%s data.root=%s", config, root)


def analyze(cfg: DictConfig) -> None:
    # Imported here: --help answers without loading numpy, PIL and matplotlib.
    from resomap.data_tools.analyze import analyze_dataset, split_names, write_analysis

    if OmegaConf.is_missing(cfg, "root"):
        raise ResoMapError("analyze needs root=<data set folder>, e.g. resomap data analyze "
                           "root=data/skin_cancer")
    report = analyze_dataset(cfg.root, sample_per_class=cfg.sample_per_class, seed=cfg.seed,
                             check_duplicates=cfg.check_duplicates)
    output_dir = write_analysis(report, cfg.output_dir)
    duplicates = report.get("cross_split_duplicates", {}).get("num_groups", 0)
    if duplicates:
        log.warning("%d image(s) appear in more than one split (leakage): see %s/dataset_summary.txt",
                    duplicates, output_dir)
    for split in split_names(report):
        log.info("%s: %d images", split, report[split]["total_images"])
    log.info("Wrote %s", output_dir.resolve())


TASKS: dict[str, Callable[[DictConfig], None]] = {"prepare": prepare, "analyze": analyze}


def _guarded(task: Callable[[DictConfig], None]) -> Callable[[DictConfig], None]:
    """``task`` reporting user errors as one message and exit status 2."""

    def run_task(cfg: DictConfig) -> None:
        with user_errors():
            task(cfg)

    return run_task


def main() -> None:
    from resomap.redact_logs import install_log_redaction

    install_log_redaction()
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if args else sys.stderr)
        sys.exit(0 if args else 2)
    task = args[0]
    if task not in TASKS:
        exit_with(ResoMapError(f"unknown task {task!r}; the first word must be one of {list(TASKS)}.\n\n"
                               f"{USAGE}"))
    sys.argv = [sys.argv[0], *args[1:]]
    hydra.main(version_base=VERSION_BASE, config_path=CONFIG_PATH,
               config_name=f"data_tool/{task}")(_guarded(TASKS[task]))()


if __name__ == "__main__":
    main()
