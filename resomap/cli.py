"""The ``resomap`` command: the first word picks the tool, the rest are that tool's Hydra arguments.

``resomap train -m model=simple_cnn,tiny_cnn res=224,512`` runs what
``python -m resomap.train -m model=simple_cnn,tiny_cnn res=224,512`` runs. Each tool is its own
Hydra application, so ``--cfg job``, ``-m``, ``--config-dir`` and ``hydra.searchpath=[...]``
work as Hydra documents them; ``--help`` shows the command's own usage, three examples and only
the config groups it uses (:data:`HELP`, through ``conf/hydra/help/resomap.yaml``). Hydra's bash
completion calls the installed command with the whole typed line in ``COMP_LINE`` but without
the tool's name in its arguments: :func:`main` reads the tool from that line and hands the rest
to the tool's Hydra.

Before Hydra composes, :func:`start` reads ``.env``, filters known warnings and checks the
command line (:func:`preflight`): a mistyped group option or value fails in about two seconds,
before torch is imported, with one paragraph and exit status 2.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from resomap.errors import ResoMapError, exit_with
from resomap.preflight_checks import check_plugins, compose_first_job, overrides_to_check, sweep_problems

# conf/ stays at the top of the repository (the design card) and ships inside the package as
# resomap.conf: pyproject.toml maps the package resomap.conf to the folder conf/. A wheel holds
# the files under resomap/conf/, and an editable install's import hook maps resomap.conf to the
# clone's conf/ (checked: setuptools lists the mapping in its editable finder), so both read the
# same files through Hydra's package source, from any working directory.
CONFIG_PATH = "pkg://resomap.conf"
VERSION_BASE = "1.3"

# Sub-command -> (module run as ``python -m``, one line of help).
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("resomap.train", "train and test models at resolutions (-m: the study grid)"),
    "report": ("resomap.report", "rebuild the tables, statistics and report of a results folder"),
    "summarize": ("resomap.summarize", "FLOPs, parameters and memory of models at resolutions"),
    "explain": ("resomap.explain", "explain trained checkpoints without retraining"),
    "bench": ("resomap.bench", "classic vs cached data pipeline, side by side"),
    "validate": ("resomap.validate", "check the decision method on simulated studies with a known answer"),
    "data": ("resomap.data_tools.__main__",
             "data sets: 'data prepare' lays one out, 'data analyze' checks it"),
}
DATA_TASKS = ("prepare", "analyze")


class CommandHelp:
    """What ``resomap <command> --help`` shows beside the command's config."""

    def __init__(self, config_name: str, usage: str, examples: Sequence[tuple[str, str]],
                 extra_groups: Sequence[str] = ()) -> None:
        self.config_name, self.usage, self.examples = config_name, usage, list(examples)
        # Groups whose options the command takes as values (summarize's models=[...]) or that
        # it uses through Hydra (train's hydra/launcher), beside those its config composes.
        self.extra_groups = tuple(extra_groups)


HELP: dict[str, CommandHelp] = {
    "train": CommandHelp("train", "resomap train [-m] [group=option ...] [key=value ...]", [
        ("resomap train -m model=simple_cnn,tiny_cnn res=224,256,320,384,512",
         "the study grid: every model x every resolution"),
        ("resomap train model=resnet18 res=320 trainer.max_epochs=5", "one run, any key overridden"),
        ("resomap train debug=fast model=resnet34 res=512", "does this config run? one short CPU epoch"),
    ], extra_groups=("hydra/launcher",)),
    "report": CommandHelp("report", "resomap report [results_dir=PATH] [key=value ...]", [
        ("resomap report", "rebuild the report of ./results"),
        ("resomap report results_dir=/data/copied/results", "a results folder from another machine"),
        ("resomap report evaluate_cross_res=false", "only cached cross-resolution tests"),
    ]),
    "summarize": CommandHelp("summarize", "resomap summarize [models=[...]] [resolutions=[...]]", [
        ("resomap summarize", "every model at the study's resolutions"),
        ("resomap summarize models=[resnet18,vgg11] resolutions=[224,512]", "a few of them"),
        ("resomap summarize -m models=resnet18,vgg11 resolutions=224,512", "one job each, one table"),
    ], extra_groups=("model",)),
    "explain": CommandHelp("explain_app", "resomap explain [-m] model=... res=... [ckpt=PATH]", [
        ("resomap explain model=simple_cnn res=320", "explain a trained run again"),
        ("resomap explain -m model=simple_cnn,tiny_cnn res=224,512", "every run of a grid"),
        ("resomap explain model=resnet18 res=224 ckpt=path/to/best.ckpt", "a given checkpoint"),
    ], extra_groups=("hydra/launcher",)),
    "bench": CommandHelp("bench", "resomap bench [model=...] [res=...] [bench.key=value ...]", [
        ("resomap bench", "classic vs cached pipeline, simple_cnn at 224 px"),
        ("resomap bench model=resnet18 res=512 bench.epochs=2", "another model and size"),
        ("resomap bench bench.seed_scale=true", "project the seed study's time"),
    ]),
}
HELP_FLAGS = ("-h", "--help")
# Flags after which Hydra composes nothing the preflight could check, or answers by itself.
NO_PREFLIGHT_FLAGS = (*HELP_FLAGS, "--hydra-help", "-i", "--info", "-sc", "--shell-completion",
                      "-cp", "--config-path", "-cn", "--config-name", "--experimental-rerun")
COMPLETION_FLAGS = ("-sc", "--shell-completion")

USAGE = f"""usage: resomap <command> [-m] [key=value ...]

commands:
{chr(10).join(f"  {name:<10} {summary}" for name, (_, summary) in COMMANDS.items())}

  resomap train -m model=simple_cnn,tiny_cnn res=224,256,320,384,512
  resomap train -m experiment=seed_study
  resomap report
  resomap data prepare input_dir=~/lesions output_dir=data/lesions

resomap <command> --help       examples, the config groups it uses, its keys
resomap <command> --cfg job    the composed config, without running
--config-dir DIR               your own configs beside the shipped ones (DIR/model/my_net.yaml)
eval "$(resomap --shell-completion install=bash)"    tab completion in bash"""


def _command_of(hydra_main: Callable[[], Any]) -> str | None:
    """The sub-command whose entry point ``hydra_main`` is (also under ``python -m``)."""
    module = getattr(hydra_main, "__module__", None)
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        module = getattr(spec, "name", None)
    return next((name for name, (entry, _) in COMMANDS.items() if entry == module), None)


def help_section(section: str) -> str:
    """``${resomap.help:header|groups|footer}`` in conf/hydra/help/resomap.yaml: the running
    command's usage and examples, and only the config groups its config composes."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    command = next((name for name, item in HELP.items() if item.config_name == hydra_cfg.job.config_name),
                   None)
    item = HELP.get(command or "")
    if section == "header":
        summary = COMMANDS[command][1] if command else ""
        lines = [f"resomap {command}: {summary}" if command else hydra_cfg.job.name, ""]
        if item is not None:
            lines += [f"usage: {item.usage}", "", "examples:"]
            width = max(len(example) for example, _ in item.examples)
            lines += [f"  {example:<{width}}   # {what}" for example, what in item.examples]
        return "\n".join(lines)
    if section == "footer":
        name = f"resomap {command}" if command else hydra_cfg.job.name
        return "\n".join([f"{name} --cfg job: the composed config, without running. "
                          f"{name} --hydra-help: Hydra's own flags and groups.",
                          "resomap --help: every command."])
    loader = GlobalHydra.instance().config_loader()
    groups = {group for group in hydra_cfg.runtime.choices if group != "hydra" and
              not group.startswith("hydra/")}
    groups |= set(item.extra_groups if item is not None else ())
    lines = []
    for group in sorted(groups):
        options = loader.get_group_options(group)
        if options:
            lines.append(f"{group}: {', '.join(options)}")
    return "\n".join(lines)


OmegaConf.register_new_resolver("resomap.help", help_section, replace=True)


def preflight(command: str, args: Sequence[str]) -> None:
    """Compose the command's config as Hydra will, and check every swept value, before torch
    is imported: a mistyped ``model=``, ``data=`` or ``res=`` fails in seconds.

    Raises ResoMapError naming the key, the value and what is valid. Anything this check does
    not understand (a custom primary config, an interval sweep) is left to Hydra.
    """
    if command not in HELP or any(arg in NO_PREFLIGHT_FLAGS for arg in args):
        return
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    checked = overrides_to_check(args)
    if checked is None:
        from resomap.preflight_checks import check_override_types

        check_override_types(command, args)  # the schema's types, on a line not composed here
    if checked is None or GlobalHydra.instance().is_initialized():
        return  # Hydra, or the running Hydra app (tests), checks this line itself
    sweeps, first = checked
    with initialize_config_module(config_module="resomap.conf", version_base=VERSION_BASE):
        cfg = compose_first_job(command, HELP[command].config_name, first)
        cfg.hydra.runtime.output_dir = str(Path.cwd())
        HydraConfig.instance().set_config(cfg)
        try:
            problems = sweep_problems(command, cfg, sweeps)
        finally:
            HydraConfig.instance().cfg = None
    if problems:
        raise ResoMapError("Invalid configuration: " + " ".join(problems))


def start(hydra_main: Callable[[], Any], command: str | None = None) -> None:
    """Run a Hydra entry point from the command line after the checks Hydra cannot make.

    ``.env`` is read first (secrets the configs read with ``${oc.env:NAME}``), then redaction of
    log records and of stdout/stderr is installed, before Hydra parses an argument, so no log
    line, error or traceback of any command shows a secret.
    """
    from resomap.extras import load_env, quiet_bars, quiet_warnings
    from resomap.redact_logs import install_stream_redaction

    load_env()
    install_stream_redaction()
    quiet_warnings()
    quiet_bars()
    args = sys.argv[1:]
    command = command or _command_of(hydra_main)
    try:
        check_plugins(args)
        if command is not None:
            preflight(command, args)
    except ResoMapError as error:
        exit_with(error)
    if any(arg in HELP_FLAGS for arg in args) and not any(arg.startswith("hydra/help=") for arg in args):
        sys.argv.append("hydra/help=resomap")
    hydra_main()


def _words_after(line: str, count: int) -> str:
    """``line`` without its first ``count`` words (and the blanks after them)."""
    match = re.match(r"\s*" + r"\S+\s*" * count, line)
    return line[match.end():] if match else ""


def _completion(args: list[str]) -> list[str] | None:
    """For Hydra's ``-sc query=bash`` call: the tool's arguments, after pointing ``COMP_LINE`` at
    the tool's own words; None once the choices (commands, data tasks) have been printed."""
    line = os.environ.get("COMP_LINE", "")
    words = line.split()
    new_word = line == "" or line[-1].isspace()
    typed = words[1:]  # after the program's name
    if not typed or (len(typed) == 1 and not new_word):
        prefix = typed[0] if typed else ""
        print(" ".join(name for name in COMMANDS if name.startswith(prefix)))
        return None
    command, consumed = typed[0], 1
    if command not in COMMANDS:
        print("")
        return None
    if command == "data":
        if len(typed) == 1 or (len(typed) == 2 and not new_word):
            prefix = typed[1] if len(typed) == 2 else ""
            print(" ".join(task for task in DATA_TASKS if task.startswith(prefix)))
            return None
        consumed = 2
    os.environ["COMP_LINE"] = f"{words[0]} {_words_after(line, 1 + consumed)}"
    os.environ["COMP_POINT"] = str(len(os.environ["COMP_LINE"]))
    return typed[:consumed] + args


def main(argv: Sequence[str] | None = None) -> None:
    """``resomap <command> [arguments]``: run the command's entry point with the arguments."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in COMPLETION_FLAGS:
        if any(arg.startswith("query=") for arg in args):
            routed = _completion(args)
            if routed is None:
                return
            args = routed
        else:  # install= / uninstall=: the script is the same for every command
            args = ["train", *args]
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if args else sys.stderr)
        sys.exit(0 if args else 2)
    if args[0] == "--version":
        from resomap import __version__

        print(f"resomap {__version__}")
        return
    command = args[0]
    if command not in COMMANDS:
        exit_with(ResoMapError(f"unknown command {command!r}; the first word must be one of "
                               f"{', '.join(COMMANDS)} (resomap --help lists them)."))
    module = importlib.import_module(COMMANDS[command][0])
    sys.argv = [sys.argv[0], *args[1:]]
    if command == "data":
        module.main()
    else:
        start(module.main)


if __name__ == "__main__":
    main()
