"""Cost tables of every model at every resolution, no training: ``resomap summarize``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import resomap  # noqa: F401  (registers the config resolvers)
from resomap.cli import CONFIG_PATH, VERSION_BASE, start
from resomap.errors import user_errors


@hydra.main(version_base=VERSION_BASE, config_path=CONFIG_PATH, config_name="summarize")
def main(cfg: DictConfig) -> None:
    # Imported here, not at the top: --help and tab completion answer without loading torch.
    from resomap.extras import extras
    from resomap.study.costs import run

    extras(cfg)
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    start(main)
