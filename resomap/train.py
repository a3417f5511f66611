"""Train and test models at resolutions: ``python -m resomap.train [-m] model=... res=...``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import resomap  # noqa: F401  (registers the config resolvers)
from resomap.run.sweep import run_job


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run_job(cfg)


if __name__ == "__main__":
    main()
