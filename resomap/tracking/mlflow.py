"""MLflow and DagsHub: the logger, its store and credentials, and redacted uploads.

The life of a run's MLflow run (start, continue, mirror the record, end) is in
:mod:`resomap.tracking.mirror`. Everything sent to MLflow (params, tags, artifacts) goes
through :mod:`resomap.redact`; credentials in a tracking URI are moved into MLflow's
own environment variables.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers import MLFlowLogger as LightningMLFlowLogger

from resomap.errors import ResoMapError
from resomap.redact import redact_config, redact_text, redact_uri
from resomap.tracking.settings import TrackingSettings, is_store_node
from resomap.tracking.store_home import default_artifact_root, relocate_artifacts

log = logging.getLogger(__name__)

# MLflow's defaults retry an unreachable server for about four minutes; these fail in seconds.
# A user's own values in the environment win.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
MAX_VALUE_LENGTH = 500


class TrackingError(ResoMapError):
    """The tracking store cannot be used: unreachable, misconfigured or missing credentials."""


def configure_http() -> None:
    """Bound MLflow's HTTP timeouts and retries unless the user chose their own."""
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)


def use_env_credentials(uri: str) -> str:
    """``uri`` without user info; its user name and password go to MLflow's own variables.

    ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` are what MLflow sends as basic
    auth; set in this process, they reach the server without the URI (which is logged, tagged
    and stored) ever holding them again. A password in the URI replaces one already exported.
    """
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    if parts.username:
        os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(parts.username)
    if parts.password is not None:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(parts.password)
    else:
        log.warning("The tracking URI %s has a user name but no password; MLflow sends credentials only "
                    "when MLFLOW_TRACKING_PASSWORD is set too (or export MLFLOW_TRACKING_TOKEN)",
                    redact_uri(uri))
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def absolute_store_uri(uri: str) -> str:
    """``sqlite:///relative.db`` made absolute, its folder created: the store must not follow the
    cwd. An existing store whose project folder moved has its artifact paths repaired
    (:func:`resomap.tracking.store_home.relocate_artifacts`: MLflow records them absolute)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri == f"{prefix}:memory:":
        return uri
    path = Path(uri[len(prefix):]).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        create_sqlite_store(path)
    else:
        with corrupt_store_errors(uri):
            relocate_artifacts(path)
    return f"{prefix}{path}"


def create_sqlite_store(path: Path) -> None:
    """Create a SQLite store whole, or not at all.

    MLflow builds a new store's schema in many steps; a process killed among them leaves a
    database that every later run refuses ("table ... already exists"). So the schema is built in
    a temporary file beside ``path`` and hard-linked into place, which fails if another process
    created the store first (its store is then used, and ours dropped).
    """
    from mlflow.tracking import MlflowClient

    from resomap.io import file_mode

    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(descriptor)
    os.chmod(temporary, file_mode())  # mkstemp makes 0600; the mode the umask gives a new file
    try:
        MlflowClient(f"sqlite:///{temporary}").search_experiments()  # runs the schema migrations
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
    finally:
        Path(temporary).unlink(missing_ok=True)


def database_errors() -> tuple[type[BaseException], ...]:
    """The errors of a damaged SQLite store (SQLAlchemy's and sqlite3's own)."""
    import sqlite3

    from sqlalchemy.exc import SQLAlchemyError

    return (SQLAlchemyError, sqlite3.DatabaseError)


@contextmanager
def corrupt_store_errors(uri: str) -> Iterator[None]:
    """A damaged SQLite store becomes one paragraph naming the file and what to do."""
    try:
        yield
    except database_errors() as error:
        path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else redact_uri(uri)
        first = str(error).splitlines()[0]
        raise TrackingError(
            f"The MLflow store {path} cannot be read ({first}): the file is damaged or not an MLflow "
            f"database. Your results are safe in paths.results_dir. Move the file away (mv {path} "
            f"{path}.damaged) and re-run: a new store is created and every finished run's record is "
            "mirrored into it when the run is skipped. Or train without tracking with logger=csv."
        ) from error


class MLFlowLogger(LightningMLFlowLogger):
    """Lightning's MLFlowLogger with an explicit store, epoch steps, and the run's end left to ResoMap.

    Lightning would log the module's hyperparameters as params and mark the run FINISHED after
    ``fit``: ResoMap logs its config itself (:func:`tracked_run`), because params are write-once
    and a resumed run must not re-log changed paths, and ends the run only after testing.
    """

    def __init__(self, tracking_uri: str, experiment_name: str = "ResoMap", run_name: str | None = None,
                 artifact_location: str | None = None, **kwargs: Any) -> None:
        tracking_uri = use_env_credentials(absolute_store_uri(tracking_uri))
        if artifact_location is None and tracking_uri.startswith("sqlite:///"):
            # Beside the database; MLflow's default would be ./mlruns in whatever the cwd is.
            artifact_location = str(default_artifact_root(Path(tracking_uri[len("sqlite:///"):])))
        with corrupt_store_errors(tracking_uri):
            super().__init__(experiment_name=experiment_name, run_name=run_name, tracking_uri=tracking_uri,
                             artifact_location=artifact_location, **kwargs)

    @property
    def tracking_uri(self) -> str:
        return self._tracking_uri

    @property
    def client(self) -> Any:
        """The ``MlflowClient`` of this store (no run is created by asking for it)."""
        return self._mlflow_client

    def experiment_id_or_none(self) -> str | None:
        """The experiment's id if it exists; unlike ``experiment_id``, never creates a run."""
        experiment = self.client.get_experiment_by_name(self._experiment_name)
        return experiment.experiment_id if experiment and experiment.lifecycle_stage != "deleted" else None

    def ensure_experiment(self) -> str:
        """Create the experiment if needed (and with it a SQLite store's schema)."""
        return self.experiment_id_or_none() or self.client.create_experiment(
            self._experiment_name, artifact_location=self._artifact_location)

    def continue_run(self, run_id: str) -> None:
        """Log into the existing run ``run_id`` instead of creating a new one."""
        # Lightning takes a run id only at construction; the decision needs the store, so it comes later.
        self._run_id = run_id
        self._initialized = False

    def log_hyperparams(self, params: Any) -> None:
        """Left to :func:`tracked_run`, which logs the resolved config under stable names."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Epoch-level metrics use the epoch as their step, as the seed study's runs did."""
        if "epoch" in metrics:
            step = int(metrics["epoch"])
        super().log_metrics(metrics, step)

    def finalize(self, status: str = "success") -> None:
        """Lightning calls this after ``fit`` and after ``test``; :func:`tracked_run` ends the run."""


def dagshub_logger(repo_owner: str | None, repo_name: str | None, tracking_uri: str,
                   username: str | None = None, **kwargs: Any) -> MLFlowLogger:
    """An :class:`MLFlowLogger` for DagsHub's hosted MLflow, with credentials from the environment.

    This is what ``dagshub.init()`` does for tracking, without its interactive login, which waits
    forever when no token is set.
    """
    if not repo_owner or not repo_name:
        raise TrackingError(
            "logger=dagshub needs your DagsHub repository: pass logger.dagshub.repo_owner=<owner> "
            "logger.dagshub.repo_name=<name> (the repository https://dagshub.com/<owner>/<name>).")
    set_dagshub_credentials(username or repo_owner)
    return MLFlowLogger(tracking_uri=tracking_uri, **kwargs)


def set_dagshub_credentials(username: str) -> None:
    """Export MLflow's basic-auth variables from ``DAGSHUB_TOKEN``; never from a config file."""
    if os.environ.get("MLFLOW_TRACKING_USERNAME") and os.environ.get("MLFLOW_TRACKING_PASSWORD"):
        return
    token = os.environ.get("DAGSHUB_TOKEN") or os.environ.get("DAGSHUB_USER_TOKEN")
    if not token:
        raise TrackingError(
            "logger=dagshub needs a DagsHub token in the environment: export DAGSHUB_TOKEN=<token> "
            "(create one at https://dagshub.com/user/settings/tokens; if the token is not "
            "logger.dagshub.repo_owner's, also pass logger.dagshub.username=<its user>), or export "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD. Tokens are never read from config files.")
    os.environ["MLFLOW_TRACKING_USERNAME"] = os.environ.get("MLFLOW_TRACKING_USERNAME") or username
    os.environ["MLFLOW_TRACKING_PASSWORD"] = token


def build_loggers(nodes: Iterable[Mapping[str, Any]]) -> list[Logger]:
    """The loggers of the logger nodes (Hydra targets); MLflow's network calls are bounded first."""
    configure_http()
    return [instantiate(node) for node in nodes]


def prepare_stores(stores: Iterable[Mapping[str, Any]]) -> None:
    """Create each SQLite store and its experiment once, before parallel jobs race on the schema."""
    configure_http()
    for node in stores:
        if str(node.get("tracking_uri", "")).startswith("sqlite:"):
            instantiate(node).ensure_experiment()


@contextmanager
def _store_errors(uri: str) -> Iterator[None]:
    """Turn a store failure into one error that names the store and what to do."""
    from mlflow.exceptions import MlflowException

    try:
        with corrupt_store_errors(uri):
            yield
    except TrackingError:
        raise
    except (MlflowException, OSError) as error:
        raise TrackingError(
            f"MLflow tracking store {redact_uri(uri)} failed: {error}. Check that the server is running "
            "and reachable (logger.mlflow.tracking_uri=...), or train without it with logger=csv."
        ) from error



def plot_confusion_matrix(matrix: list[list[int]], classes: list[str]) -> Any:
    """A small figure of the test confusion matrix (rows: true class, columns: predicted), for
    MLflow's ``log_figure``."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(1.0 + 0.6 * len(classes), 0.8 + 0.6 * len(classes)))
    axes = figure.add_subplot()
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    peak = max(max(row) for row in matrix) or 1
    for row, counts in enumerate(matrix):
        for column, count in enumerate(counts):
            axes.text(column, row, str(count), ha="center", va="center", fontsize=8,
                      color="white" if count > peak / 2 else "black")
    figure.set_layout_engine("tight")
    return figure


def log_artifact_redacted(client: Any, run_id: str, path: str | os.PathLike, artifact_path: str) -> None:
    """Log the text file ``path`` (a result, a config, a report) as ``artifact_path/<its name>`` with
    its secrets redacted: JSON and YAML as data (secret keys masked too), anything else as text.
    MLflow's ``log_dict`` / ``log_text`` upload from memory: no redacted copy touches the disk."""
    from omegaconf import OmegaConf

    source = Path(path)
    name = f"{artifact_path}/{source.name}" if artifact_path else source.name
    if source.suffix == ".json":
        client.log_dict(run_id, redact_config(json.loads(source.read_text())), name)
    elif source.suffix in (".yaml", ".yml"):
        container = OmegaConf.to_container(OmegaConf.load(source), resolve=False)
        client.log_text(run_id, OmegaConf.to_yaml(OmegaConf.create(redact_config(container))), name)
    else:
        client.log_text(run_id, redact_text(source.read_text()), name)


def store_loggers(settings: TrackingSettings) -> list[MLFlowLogger]:
    """An MLflow logger per configured store, for look-ups (no run is started by building them)."""
    configure_http()
    found = []
    for node in settings.stores:
        if is_store_node(node):
            logger = instantiate(node)
            if isinstance(logger, MLFlowLogger):
                found.append(logger)
    return found
