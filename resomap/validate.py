"""Validate the study's decision method on simulated studies with a known answer:
``resomap validate`` (or ``python -m resomap.validate``).

Many small studies of images whose resolution effect is planted by the generator are trained
on the CPU and decided by :func:`resomap.study.decide.decide`; the command prints and writes how
often the recommendation is the planted answer, how often a verdict is confidently wrong and
how often the intervals hold the true difference (docs/report.md, "Validation").
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

import resomap  # noqa: F401  (registers the config resolvers)
from resomap.cli import CONFIG_PATH, VERSION_BASE, start
from resomap.errors import ResoMapError, user_errors

log = logging.getLogger(__name__)


def _section(cfg: DictConfig, key: str) -> dict:
    value = cfg.get(key)
    if not isinstance(value, DictConfig):
        raise ResoMapError(f"{key} must be a mapping in conf/validate.yaml (found {value!r}).")
    return OmegaConf.to_container(value, resolve=True)


def _dataclass(kind: type, key: str, values: dict):
    valid = set(kind.__dataclass_fields__)
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ResoMapError(f"{key}.{unknown[0]} is not a setting of the validation: valid keys under {key} "
                           f"are {', '.join(sorted(valid))}.")
    for name, value in values.items():
        default = kind.__dataclass_fields__[name].default
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or (isinstance(default, int) and not isinstance(value, int)) or value < 0:
            raise ResoMapError(f"{key}.{name}={value!r} is not valid: a non-negative "
                               f"{'integer' if isinstance(default, int) else 'number'}, e.g. {default}.")
    return kind(**values)


@hydra.main(version_base=VERSION_BASE, config_path=CONFIG_PATH, config_name="validate")
def main(cfg: DictConfig) -> None:
    # Imported here, not at the top: --help and tab completion answer without loading torch.
    import torch

    from resomap.device import device_name
    from resomap.io import atomic_write_text, write_json
    from resomap.study import simulate, validation, validation_design, validation_report
    from resomap.study.decision_settings import check_settings

    with user_errors():
        threads = cfg.threads if cfg.threads is not None else os.cpu_count() or 1
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ResoMapError(f"threads={cfg.threads!r} is not valid: a positive integer, or null for one "
                               "per CPU core.")
        torch.set_num_threads(threads)
        if not isinstance(cfg.resolutions, ListConfig):
            raise ResoMapError(f"resolutions={cfg.resolutions!r} is not valid: a list of sizes in px, e.g. "
                               "resolutions=[8,12,24,32].")
        resolutions = OmegaConf.to_container(cfg.resolutions, resolve=True)
        planted = _dataclass(simulate.Planted, "planted", _section(cfg, "planted"))
        if planted.classes < 3 or planted.size % simulate.PATCH or planted.cell < 1:
            raise ResoMapError(f"planted.classes={planted.classes}, planted.size={planted.size}, "
                               f"planted.cell={planted.cell} are not valid: at least 3 classes, a size that "
                               f"is a multiple of {simulate.PATCH} px and a cell of at least 1 px.")
        training = _dataclass(simulate.Training, "training", _section(cfg, "training"))
        if min(training.channels, training.epochs, training.batch_size) < 1 or training.lr <= 0:
            raise ResoMapError("training.channels, epochs and batch_size must be at least 1 and training.lr "
                               f"positive (found {training}).")
        design = validation_design.check_design(**_section(cfg, "design"))
        settings = check_settings(**_section(cfg, "report"))
        output_dir = Path(cfg.output_dir).expanduser().resolve()
        found = validation.run(planted, training, design, settings, list(resolutions))
        machine = device_name(torch.device("cpu"))
        command = "resomap validate " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])
        output_dir.mkdir(parents=True, exist_ok=True)
        write_json(output_dir / "validation.json",
                   validation_report.summary(found, planted, training, machine, threads))
        text = validation_report.markdown(found, machine, threads, command.strip())
        atomic_write_text(output_dir / "validation.md", text)
    print(text)
    log.info("Written: %s, %s", output_dir / "validation.json", output_dir / "validation.md")


if __name__ == "__main__":
    start(main)
