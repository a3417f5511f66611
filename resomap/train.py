"""Train and test models at resolutions: ``resomap train [-m] model=... res=...``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import resomap  # noqa: F401  (registers the config resolvers)
from hydra_plugins.resomap_sweeper import register as register_sweepers
from resomap.cli import CONFIG_PATH, VERSION_BASE, start
from resomap.errors import user_errors

register_sweepers()  # study=adaptive's sweeper, in editable installs too


@hydra.main(version_base=VERSION_BASE, config_path=CONFIG_PATH, config_name="train")
def main(cfg: DictConfig) -> float | None:
    # Imported here, not at the top: --help, --cfg and tab completion answer without loading torch.
    from resomap.extras import extras
    from resomap.sweep import run_job

    extras(cfg)  # after the import: Lightning's console handler exists only once it is loaded
    with user_errors():
        return run_job(cfg)


if __name__ == "__main__":
    start(main)
