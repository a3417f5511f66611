"""Rebuild the tables, statistics and report of a results folder: ``resomap report``
(or ``python -m resomap.report``)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

import resomap  # noqa: F401  (registers the config resolvers)
from resomap.cli import CONFIG_PATH, VERSION_BASE, start
from resomap.errors import ResoMapError, user_errors

log = logging.getLogger(__name__)


@hydra.main(version_base=VERSION_BASE, config_path=CONFIG_PATH, config_name="report")
def main(cfg: DictConfig) -> None:
    # Imported here, not at the top: --help and tab completion answer without loading torch.
    from omegaconf import OmegaConf

    from resomap.extras import extras
    from resomap.logs import stage
    from resomap.run import record as results
    from resomap.study.aggregate import write_aggregates
    from resomap.study.failures import ReportIncomplete

    extras(cfg)
    with user_errors():
        results_dir = Path(cfg.results_dir).expanduser().resolve()
        found = [*results_dir.glob(f"{results.RUNS}/*/{results.RECORD_FILE}"),
                 *(results_dir / results.TEST_RESULTS).glob("*.json")]
        if not found:
            raise ResoMapError(
                f"No result files in {results_dir}: expected the {results.RUNS}/<identity>/"
                f"{results.RECORD_FILE} (or {results.TEST_RESULTS}/<model>_<res>.json) files a training run "
                "writes. Run a sweep first, or pass results_dir=PATH pointing at a results folder (the one "
                f"holding {results.RUNS}/ or {results.TEST_RESULTS}/).")
        try:
            with stage("Building the report", log):
                written = write_aggregates(results_dir, evaluate_cross_res=cfg.evaluate_cross_res,
                                           **OmegaConf.to_container(cfg.report, resolve=True))
        except ReportIncomplete as incomplete:
            # Every other section and file was written; the report lists what failed.
            log.error("%s", incomplete)
            sys.exit(1)
    log.info("Report written: %s", ", ".join(str(path) for path in written[:6]))
    log.info("Open %s first", results_dir / "report.html")


if __name__ == "__main__":
    start(main)
