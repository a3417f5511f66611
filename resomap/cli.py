"""The ``resomap`` command: the first word picks the tool, the rest are that tool's Hydra arguments.

``resomap train -m model=simple_cnn,tiny_cnn res=224,512`` runs what
``python -m resomap.train -m model=simple_cnn,tiny_cnn res=224,512`` runs. Each tool is its own
Hydra application, so ``--help``, ``--cfg job``, ``-m``, ``--config-dir`` and
``hydra.searchpath=[...]`` work as Hydra documents them. Hydra's bash completion calls the
installed command with the whole typed line in ``COMP_LINE`` but without the tool's name in
its arguments: :func:`main` reads the tool from that line and hands the rest to the tool's Hydra.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from resomap.errors import ResoMapError, exit_with

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
    "data": ("resomap.data.__main__", "data sets: 'data prepare' lays one out, 'data analyze' checks it"),
}
DATA_TASKS = ("prepare", "analyze")
COMPLETION_FLAGS = ("-sc", "--shell-completion")

# hydra/launcher=<option> -> (the plugin's module, its distribution, the resomap extra that installs it).
LAUNCHER_EXTRAS: dict[str, tuple[str, str, str]] = {
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher", "joblib"),
    "slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher", "slurm"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher", "slurm"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher", "slurm"),
}

USAGE = f"""usage: resomap <command> [-m] [key=value ...]

commands:
{chr(10).join(f"  {name:<10} {summary}" for name, (_, summary) in COMMANDS.items())}

  resomap train -m model=simple_cnn,tiny_cnn res=224,256,320,384,512
  resomap train -m experiment=seed_study
  resomap report
  resomap data prepare input_dir=~/lesions output_dir=data/lesions

resomap <command> --help       its config groups, keys and Hydra's flags
resomap <command> --cfg job    the composed config, without running
--config-dir DIR               your own configs beside the shipped ones (DIR/model/my_net.yaml)
eval "$(resomap --shell-completion install=bash)"    tab completion in bash
Each command is also python -m resomap.<command> (python -m resomap.data for data)."""


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


def start(hydra_main: Callable[[], Any]) -> None:
    """Run a Hydra entry point from the command line after the checks Hydra cannot make.

    Log redaction is installed first, so no log line of any command shows a secret.
    """
    from resomap.tracking.redact import install_log_redaction

    install_log_redaction()
    try:
        check_plugins(sys.argv[1:])
    except ResoMapError as error:
        exit_with(error)
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
