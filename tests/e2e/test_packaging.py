"""The wheel as a new user gets it: a regular (non-editable) install used from an empty folder.

The wheel is built from a copy of the sources and installed with ``--no-deps`` into a fresh
virtual environment that sees this environment's packages through a ``.pth`` file (torch and
the rest are not installed twice), minus the optional extras (the DagsHub client and both
Hydra launchers) and minus the editable ResoMap, so what runs is the wheel's code and configs
with only the core dependencies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import REPO_ROOT, tiny_overrides

# One xdist worker runs this file, so its module fixtures are built once (--dist loadgroup).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("packaging")]

# Distributions of the optional extras, left out of the fresh environment.
EXTRAS = ("dagshub", "dagshub_annotation_converter", "hydra_joblib_launcher", "hydra_submitit_launcher")
PLUGINS = ("hydra_joblib_launcher", "hydra_submitit_launcher")
# What building the wheel reads from the repository.
SOURCES = ("pyproject.toml", "README.md", "resomap", "conf", "hydra_plugins")

USER_MODEL = """\
name: my_cnn
family: custom
min_size: 32
pretrained: false
compile: false
net:
  _target_: my_nets.MyCNN
  width: 6
"""
USER_MODULE = """\
from torch import nn


class MyCNN(nn.Module):
    \"\"\"A user's own network, found through PYTHONPATH.\"\"\"

    def __init__(self, num_classes: int, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))
"""


def _left_out(name: str) -> bool:
    """ResoMap's own entries (the editable install) and the extras' packages and metadata."""
    project = name.split("-")[0].split(".")[0].lower()
    return project in (*EXTRAS, "resomap") or name.startswith("__editable__") or name.endswith(".pth")


def _base_packages(view: Path) -> Path:
    """A folder of links to this environment's packages, without ResoMap and the extras."""
    view.mkdir()
    for site in dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]):
        for entry in Path(site).iterdir():
            if _left_out(entry.name) or (view / entry.name).exists():
                continue
            if entry.name == "hydra_plugins":  # a namespace package: keep the other plugins
                (view / entry.name).mkdir()
                for plugin in entry.iterdir():
                    if plugin.name not in PLUGINS:
                        (view / entry.name / plugin.name).symlink_to(plugin)
                continue
            (view / entry.name).symlink_to(entry)
    return view


def _build_wheel(tmp: Path) -> Path:
    source = tmp / "source"
    source.mkdir()
    for name in SOURCES:
        copy = shutil.copytree if (REPO_ROOT / name).is_dir() else shutil.copy2
        copy(REPO_ROOT / name, source / name)
    for cache in source.rglob("__pycache__"):
        shutil.rmtree(cache)
    # Without build isolation when setuptools is here: no download of the build backend.
    isolation = ["--no-build-isolation"] if _has_setuptools() else []
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "--quiet",
                    "--wheel-dir", str(tmp / "dist"), str(source)], check=True, timeout=300)
    return next((tmp / "dist").glob("resomap-*.whl"))


def _has_setuptools() -> bool:
    import importlib.util

    return importlib.util.find_spec("setuptools") is not None


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The wheel installed (not editable) into a fresh virtual environment."""
    tmp = tmp_path_factory.mktemp("packaging")
    wheel = _build_wheel(tmp)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "base_packages.pth").write_text(f"{_base_packages(tmp / 'base')}\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet",
                    str(wheel)], check=True, timeout=300)
    return {"wheel": wheel, "venv": venv, "site": site, "python": python, "resomap": venv / "bin" / "resomap"}


def _env(venv: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "RESOMAP_ROOT", "VIRTUAL_ENV", "PYTHONHOME")}
    return {**env, "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", "PYTHONUNBUFFERED": "1",
            **extra}


def _run(installed: dict[str, Path], args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(installed["resomap"]), *args], cwd=cwd, env=_env(installed["venv"], **env),
                          capture_output=True, text=True, timeout=900)


def _data_overrides(folder: Path, data_root: Path) -> list[str]:
    """The tiny data set and CPU settings; paths and Hydra folders stay at their defaults."""
    return [item for item in tiny_overrides(folder, data_root)
            if not item.startswith(("paths.", "hydra."))]


def test_the_wheel_holds_every_module_and_config(installed: dict[str, Path]):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    modules = {path.relative_to(REPO_ROOT).as_posix() for path in (REPO_ROOT / "resomap").rglob("*.py")}
    configs = {"resomap/conf/" + path.relative_to(REPO_ROOT / "conf").as_posix()
               for path in (REPO_ROOT / "conf").rglob("*") if path.suffix in (".yaml", ".py")}
    assert modules - names == set()
    assert configs - names == set()
    assert "resomap/conf/train.yaml" in names and "resomap/conf/model/tiny_cnn.yaml" in names
    entry_points = zipfile.ZipFile(installed["wheel"]).read(
        next(name for name in names if name.endswith(".dist-info/entry_points.txt"))).decode()
    assert "resomap = resomap.cli:main" in entry_points


def test_install_trains_and_reports_from_an_empty_folder(installed: dict[str, Path], tiny_data_root: Path,
                                                         tmp_path: Path):
    folder = tmp_path / "empty"
    folder.mkdir()
    code = "import resomap, resomap.conf; print(resomap.__file__); print(resomap.conf.__file__)"
    where = subprocess.run([str(installed["python"]), "-c", code], cwd=folder, env=_env(installed["venv"]),
                           capture_output=True, text=True, check=True)
    package, configs = where.stdout.split()
    assert Path(package).parent == installed["site"] / "resomap"
    assert Path(configs).parent == installed["site"] / "resomap" / "conf"

    trained = _run(installed, ["train", "model=tiny_cnn", "res=64", "trainer.max_epochs=1",
                               *_data_overrides(folder, tiny_data_root)], cwd=folder)
    assert trained.returncode == 0, (trained.stdout + trained.stderr)[-4000:]
    results = sorted((folder / "results" / "test_results").glob("tiny_cnn_64*.json"))
    assert len(results) == 1
    assert (folder / "mlflow.db").is_file() and (folder / "checkpoints").is_dir()
    assert (folder / "outputs").is_dir()

    reported = _run(installed, ["report"], cwd=folder)
    assert reported.returncode == 0, (reported.stdout + reported.stderr)[-4000:]
    assert (folder / "results" / "report.html").is_file() and (folder / "results" / "report.md").is_file()
    assert "tiny_cnn" in (folder / "results" / "all_results.csv").read_text()


def test_a_user_config_folder_adds_a_model(installed: dict[str, Path], tiny_data_root: Path, tmp_path: Path):
    (tmp_path / "my_configs" / "model").mkdir(parents=True)
    (tmp_path / "my_configs" / "model" / "my_cnn.yaml").write_text(USER_MODEL)
    (tmp_path / "my_code").mkdir()
    (tmp_path / "my_code" / "my_nets.py").write_text(USER_MODULE)
    completed = _run(installed, ["train", "--config-dir", "my_configs", "model=my_cnn", "res=32",
                                 "explain=none", *_data_overrides(tmp_path, tiny_data_root)],
                     cwd=tmp_path, PYTHONPATH=str(tmp_path / "my_code"))
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-4000:]
    result = next((tmp_path / "results" / "test_results").glob("my_cnn_32*.json"))
    assert '"my_nets.MyCNN"' in result.read_text()

    listed = _run(installed, ["train", "--config-dir", "my_configs", "--help"], cwd=tmp_path)
    assert "my_cnn" in listed.stdout and "tiny_cnn" in listed.stdout


def test_a_launcher_whose_extra_is_missing_is_named(installed: dict[str, Path], tmp_path: Path):
    for launcher, extra in (("joblib", "joblib"), ("slurm", "slurm"), ("submitit_local", "slurm")):
        completed = _run(installed, ["train", "-m", f"hydra/launcher={launcher}", "model=tiny_cnn"],
                         cwd=tmp_path)
        assert completed.returncode == 2, completed.stderr
        assert completed.stderr.startswith(f"error: hydra/launcher={launcher} needs the")
        assert f"pip install 'resomap[{extra}]'" in completed.stderr
        assert "Traceback" not in completed.stderr
    assert list(tmp_path.iterdir()) == []
