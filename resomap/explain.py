"""Explain trained checkpoints: ``python -m resomap.explain [-m] model=... res=... [ckpt=PATH]``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import resomap  # noqa: F401  (registers the config resolvers)
from resomap.study.explain_run import explain_checkpoint


@hydra.main(version_base="1.3", config_path="../conf", config_name="explain_app")
def main(cfg: DictConfig) -> None:
    explain_checkpoint(cfg)


if __name__ == "__main__":
    main()
