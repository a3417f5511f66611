"""Rebuild the tables, statistics and report of a results folder: ``python -m resomap.report``."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

import resomap  # noqa: F401  (registers the config resolvers)
from resomap.run import record as results
from resomap.study.aggregate import write_aggregates

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="report")
def main(cfg: DictConfig) -> None:
    results_dir = Path(cfg.results_dir).expanduser().resolve()
    if not any((results_dir / results.TEST_RESULTS).glob("*.json")):
        raise SystemExit(
            f"No result files in {results_dir / results.TEST_RESULTS}: expected the <model>_<res>.json "
            "files a training run writes. Run a sweep first, or pass results_dir=PATH pointing at a "
            "results folder (the one holding test_results/)."
        )
    written = write_aggregates(results_dir, evaluate_cross_res=cfg.evaluate_cross_res)
    log.info("Report written: %s", ", ".join(str(path) for path in written[:6]))
    log.info("Open %s first", results_dir / "report.html")


if __name__ == "__main__":
    main()
