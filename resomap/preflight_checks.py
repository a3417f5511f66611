"""The checks of a command line made before Hydra composes and before torch is imported.

:func:`resomap.cli.preflight` runs them: a launcher whose plugin is not installed, a mistyped
group option or a value the run would refuse fails in about two seconds with one paragraph.
Each check leaves to Hydra (or to the run) what it does not understand.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

from omegaconf import OmegaConf

from resomap.errors import ResoMapError

# hydra/launcher=<option> -> (the plugin's module, its distribution, the resomap extra that installs it).
LAUNCHER_EXTRAS: dict[str, tuple[str, str, str]] = {
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher", "joblib"),
    "slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher", "slurm"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher", "slurm"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher", "slurm"),
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the namespace package hydra_plugins itself is absent
        return False


def check_plugins(args: Sequence[str]) -> None:
    """Refuse a Hydra launcher whose optional extra is not installed, naming the extra.

    Hydra alone answers "Could not find 'hydra/launcher/joblib'", which does not say that a
    package is missing or which one.
    """
    for arg in args:
        key, equals, value = arg.lstrip("+").partition("=")
        if equals and key == "hydra/launcher" and value in LAUNCHER_EXTRAS:
            module, distribution, extra = LAUNCHER_EXTRAS[value]
            if not _installed(module):
                raise ResoMapError(
                    f"hydra/launcher={value} needs the {distribution} plugin, which is not installed. "
                    f"Install it with: pip install 'resomap[{extra}]' (or pip install {distribution}); "
                    "without it, leave hydra/launcher out to run the jobs one after another.")


def _first_values(overrides: list[Any]) -> list[str] | None:
    """The overrides of a sweep's first job (each swept key at its first value); None when a
    sweep is not a list of values (an interval for an optimising sweeper)."""
    first = []
    for override in overrides:
        if not override.is_sweep_override():
            first.append(override.input_line)
        elif override.is_discrete_sweep():
            first.append(f"{override.get_key_element()}={next(iter(override.sweep_string_iterator()))}")
        else:
            return None
    return first


def _missing_config(error: Any) -> str:
    """One paragraph for Hydra's "Could not find 'model/x'"."""
    group, _, value = (error.missing_cfg_file or "").rpartition("/")
    options = ", ".join(error.options or [])
    if not group:
        return f"{error.missing_cfg_file!r} is not a config of this command."
    return (f"{group}={value} is not a {group} config; valid: {options} (the files of conf/{group}/; "
            f"your own: --config-dir DIR holding {group}/{value}.yaml).")


def _hydra_problem(error: Exception) -> str:
    """Hydra's message as one paragraph (its search-path listing left out)."""
    text = str(error).split("\nConfig search path:", 1)[0]
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _value_problems(command: str, cfg: Any) -> list[str]:
    """The values the command would refuse, checked without importing torch (the run checks
    them again: what this early check cannot judge is left to it)."""
    if command not in ("train", "explain"):
        return []
    from resomap.config_validation import config_problems

    try:
        return config_problems(cfg, check_precision=False)
    except ResoMapError:
        raise
    except Exception:
        return []


def _parse(args: Sequence[str]) -> tuple[Any, list[Any]] | None:
    """Hydra's reading of a command line: its flags and its overrides; None for a line Hydra
    refuses itself (its usage errors)."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        parsed = get_args_parser().parse_args(list(args))
        return parsed, OverridesParser.create().parse_overrides(parsed.overrides)
    except (SystemExit, OverrideParseException):
        return None


def check_override_types(command: str, args: Sequence[str]) -> None:
    """Refuse a value of the wrong type given to one of train.yaml's own keys (the schema of
    :mod:`resomap.config_schema`) on a line this preflight does not compose (``--config-dir``,
    an interval sweep): Hydra alone would stop there with its own message and exit status 1."""
    from omegaconf.errors import ValidationError

    from resomap.config_schema import TrainSchema, schema_field
    from resomap.config_validation import schema_problem

    read = _parse(args) if command in ("train", "explain") else None
    for override in read[1] if read else []:
        key = override.get_key_element()
        if override.is_sweep_override() or override.is_delete() or schema_field(key)[0] is Any:
            continue
        try:
            OmegaConf.update(OmegaConf.structured(TrainSchema), key, override.value())
        except ValidationError as error:
            raise ResoMapError(f"Invalid configuration: {schema_problem(error)}") from None


def overrides_to_check(args: Sequence[str]) -> tuple[list[Any], list[str]] | None:
    """The swept overrides of a command line (none without ``-m``) and the overrides of its first
    job; None when Hydra or the app checks the line itself."""
    read = _parse(args)
    if read is None:
        return None  # Hydra reports its own usage errors
    parsed, overrides = read
    first = _first_values(overrides) if parsed.multirun else [item.input_line for item in overrides]
    if first is None:
        return None
    if parsed.config_dir or any(item.get_key_element() == "hydra.searchpath" for item in overrides):
        # The user's own config folder: the groups it adds are listed only by the loader of the
        # running app (a compose here would not see them), so the app checks these runs itself.
        return None
    return (overrides if parsed.multirun else []), first


def compose_first_job(command: str, config_name: str, first: list[str]) -> Any:
    """The config of the first job, with Hydra's; a composition error as one ResoMapError."""
    from hydra import compose
    from hydra.errors import ConfigCompositionException, MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    from resomap.config_validation import schema_problem

    try:
        return compose(config_name, overrides=first, return_hydra_config=True)
    except MissingConfigException as error:
        raise ResoMapError(_missing_config(error)) from None
    except (ConfigCompositionException, OmegaConfBaseException) as error:
        problem = schema_problem(error)  # a value of the wrong type (resomap.config_schema)
        if problem is not None:
            raise ResoMapError(f"Invalid configuration: {problem}") from None
        raise ResoMapError(f"{_hydra_problem(error)} (resomap {command} --help lists the groups "
                           "and keys).") from None


def sweep_problems(command: str, cfg: Any, sweeps: list[Any]) -> list[str]:
    """What the first job's config (``cfg``, Hydra's included) and every other value of each
    swept key would be refused for: a group option that does not exist, a value out of range."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import MissingConfigException
    from omegaconf import open_dict
    from omegaconf.errors import ValidationError

    from resomap.config_validation import schema_problem

    loader = GlobalHydra.instance().config_loader()
    job = cfg.copy()
    with open_dict(job):
        del job["hydra"]
    problems = _value_problems(command, job)
    for override in sweeps:
        if not override.is_sweep_override():
            continue
        key = override.get_key_element().lstrip("+~")
        if key.startswith("hydra."):
            continue  # Hydra's own settings: Hydra checks them
        options = loader.get_group_options(key)
        for value in list(override.sweep_iterator())[1:]:
            if options:
                if value is not None and str(value) not in options:
                    problems.append(_missing_config(MissingConfigException("", f"{key}/{value}", options)))
                continue
            other = job.copy()
            try:
                with open_dict(other):
                    OmegaConf.update(other, key, value, force_add=True)
                found = _value_problems(command, other)
            except ValidationError as error:  # a value of the wrong type (resomap.config_schema)
                found = [schema_problem(error) or str(error).splitlines()[0]]
            problems += [problem for problem in found if problem not in problems]
    return problems
