"""Data sets: ``python -m resomap.data prepare|analyze key=value ...``.

The first word picks the task and with it the Hydra config (``conf/data_tool/<task>.yaml``);
the rest are ordinary Hydra overrides. ``python -m resomap.data <task> --help`` lists the keys.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import resomap  # noqa: F401  (registers the config resolvers)
from resomap.data.analyze import AnalyzeError, analyze_dataset, split_names, write_analysis
from resomap.data.kaggle import KaggleUnavailable
from resomap.data.prepare import PrepareError

log = logging.getLogger("resomap.data")
# Bad input or a missing prerequisite: reported as one message, without a traceback.
USER_ERRORS = (PrepareError, KaggleUnavailable, AnalyzeError, FileExistsError)

USAGE = """usage: python -m resomap.data {prepare,analyze} [key=value ...]

  prepare   lay out images as <output_dir>/{train,val,test}/<class>/ for the trainer:
              python -m resomap.data prepare input_dir=~/lesions output_dir=data/lesions
              python -m resomap.data prepare source=kaggle
              python -m resomap.data prepare source=synthetic n_train=30224 n_val=8283 n_test=3653
  analyze   class balance, image sizes and cross-split duplicates of a data set:
              python -m resomap.data analyze root=data/lesions

python -m resomap.data <task> --help lists every key of a task."""


def _fail(message: str) -> NoReturn:
    print(f"Error: {message}", file=sys.stderr)
    sys.exit(1)


def prepare(cfg: DictConfig) -> None:
    if cfg.source not in cfg.sources:
        _fail(f"source={cfg.source!r} is not valid; use one of {sorted(cfg.sources)}.")
    if cfg.source == "folder" and not cfg.input_dir:
        _fail("source=folder needs input_dir=<folder holding one sub-folder of images per class>.")
    overrides = {"output_dir": cfg.output_dir} if cfg.output_dir else {}
    try:
        output_dir = instantiate(cfg.sources[cfg.source], **overrides)
    except InstantiationException as error:
        if isinstance(error.__cause__, USER_ERRORS):
            _fail(str(error.__cause__))
        raise
    root = Path(output_dir).resolve()
    # The seed's data set and its synthetic stand-in train with the seed's settings.
    config = "imagefolder" if cfg.source == "folder" else "skin_cancer"
    log.info("Next: python -m resomap.data analyze root=%s", root)
    log.info("Then: python -m resomap.train data=%s data.root=%s", config, root)


def analyze(cfg: DictConfig) -> None:
    if OmegaConf.is_missing(cfg, "root"):
        _fail("analyze needs root=<data set folder>, e.g. "
              "python -m resomap.data analyze root=data/skin_cancer")
    try:
        report = analyze_dataset(cfg.root, sample_per_class=cfg.sample_per_class, seed=cfg.seed,
                                 check_duplicates=cfg.check_duplicates)
    except USER_ERRORS as error:
        _fail(str(error))
    output_dir = write_analysis(report, cfg.output_dir)
    duplicates = report.get("cross_split_duplicates", {}).get("num_groups", 0)
    if duplicates:
        log.warning("%d image(s) appear in more than one split (leakage): see %s/dataset_summary.txt",
                    duplicates, output_dir)
    for split in split_names(report):
        log.info("%s: %d images", split, report[split]["total_images"])
    log.info("Wrote %s", output_dir.resolve())


TASKS: dict[str, Callable[[DictConfig], None]] = {"prepare": prepare, "analyze": analyze}


def main() -> None:
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if args else sys.stderr)
        sys.exit(0 if args else 2)
    task = args[0]
    if task not in TASKS:
        print(f"Error: unknown task {task!r}; the first word must be one of {list(TASKS)}.\n\n{USAGE}",
              file=sys.stderr)
        sys.exit(2)
    sys.argv = [sys.argv[0], *args[1:]]
    hydra.main(version_base="1.3", config_path="../../conf", config_name=f"data_tool/{task}")(TASKS[task])()


if __name__ == "__main__":
    main()
