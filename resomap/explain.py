"""Explain trained checkpoints: ``resomap explain [-m] model=... res=... [ckpt=PATH]``
(or ``python -m resomap.explain``)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import resomap  # noqa: F401  (registers the config resolvers)
from resomap.cli import CONFIG_PATH, VERSION_BASE, start
from resomap.errors import user_errors


@hydra.main(version_base=VERSION_BASE, config_path=CONFIG_PATH, config_name="explain_app")
def main(cfg: DictConfig) -> None:
    # Imported here, not at the top: --help and tab completion answer without loading torch.
    from resomap.extras import extras
    from resomap.study.explain_run import explain_checkpoint

    extras(cfg)  # after the import: Lightning's console handler exists only once it is loaded
    with user_errors():
        explain_checkpoint(cfg)


if __name__ == "__main__":
    start(main)
