"""Cost tables of every model at every resolution, no training: ``python -m resomap.summarize``."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

import resomap  # noqa: F401  (registers the config resolvers)
from resomap.errors import ResoMapError
from resomap.study.costs import run

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="summarize")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except ResoMapError as error:
        log.error("error: %s", error)
        sys.exit(2)


if __name__ == "__main__":
    main()
