"""MLflow and DagsHub tracking: logger set-up, finished-run lookup, one MLflow run across resumes.

A run's MLflow run id is kept beside its checkpoints (``{run_checkpoint_dir}/mlflow_run.json``),
so ``ckpt_path=last`` continues the same MLflow run instead of leaving an orphan behind.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers import MLFlowLogger as LightningMLFlowLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from resomap.config import training_config
from resomap.errors import ResoMapError
from resomap.io import atomic_write_bytes, write_json
from resomap.run import record as results

log = logging.getLogger(__name__)

RUN_ID_FILE = "mlflow_run.json"
# MLflow's defaults retry an unreachable server for about four minutes; these fail in seconds.
# A user's own values in the environment win.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
SECRET_WORDS = ("token", "password", "secret", "credential")
# Config tables that are lookups, not settings: their applied values appear elsewhere in the config.
UNLOGGED_KEYS = ("resolution",)
MAX_VALUE_LENGTH = 500
BATCH_SIZE = 100  # MLflow's limit of params or tags per log_batch call
_warned_uris: set[str] = set()


class TrackingError(ResoMapError):
    """The tracking store cannot be used: unreachable, misconfigured or missing credentials."""


def configure_http() -> None:
    """Bound MLflow's HTTP timeouts and retries unless the user chose their own."""
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)


def redact_uri(uri: str) -> str:
    """``uri`` without user name or password, fit for logs and saved files."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def absolute_store_uri(uri: str) -> str:
    """``sqlite:///relative.db`` made absolute, its folder created: the store must not follow the cwd."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri == f"{prefix}:memory:":
        return uri
    path = Path(uri[len(prefix):]).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"{prefix}{path}"


class MLFlowLogger(LightningMLFlowLogger):
    """Lightning's MLFlowLogger with an explicit store, epoch steps, and the run's end left to ResoMap.

    Lightning would log the module's hyperparameters as params and mark the run FINISHED after
    ``fit``: ResoMap logs its config itself (:func:`tracked_run`), because params are write-once
    and a resumed run must not re-log changed paths, and ends the run only after testing.
    """

    def __init__(self, tracking_uri: str, experiment_name: str = "ResoMap", run_name: str | None = None,
                 artifact_location: str | None = None, **kwargs: Any) -> None:
        tracking_uri = absolute_store_uri(tracking_uri)
        if artifact_location is None and tracking_uri.startswith("sqlite:///"):
            # Beside the database; MLflow's default would be ./mlruns in whatever the cwd is.
            artifact_location = str(Path(tracking_uri[len("sqlite:///"):]).parent / "mlartifacts")
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


def build_loggers(cfg: DictConfig) -> list[Logger]:
    """The loggers of ``cfg.logger``; MLflow's network calls are bounded first."""
    configure_http()
    return [instantiate(node) for node in (cfg.get("logger") or {}).values()]


def prepare_stores(cfg: DictConfig) -> None:
    """Create each SQLite store and its experiment once, before parallel jobs race on the schema."""
    configure_http()
    for node in (cfg.get("logger") or {}).values():
        if str(node.get("tracking_uri", "")).startswith("sqlite:"):
            instantiate(node).ensure_experiment()


def _trackers(loggers: Iterable[Logger]) -> list[MLFlowLogger]:
    return [logger for logger in loggers if isinstance(logger, MLFlowLogger)]


@contextmanager
def _store_errors(uri: str) -> Iterator[None]:
    """Turn a store failure into one error that names the store and what to do."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (MlflowException, OSError) as error:
        raise TrackingError(
            f"MLflow tracking store {redact_uri(uri)} failed: {error}. Check that the server is running "
            "and reachable (logger.mlflow.tracking_uri=...), or train without it with logger=csv."
        ) from error


def identity_tags(cfg: DictConfig, fingerprint: str, data_fingerprint: str) -> dict[str, str]:
    """The tags that say which run this is: equal tags mean an equivalent run."""
    return {"model": str(cfg.model.name), "res": str(cfg.res), "seed": str(cfg.seed),
            "data": data_fingerprint, "config_fingerprint": fingerprint}


def find_finished(loggers: Iterable[Logger], cfg: DictConfig, fingerprint: str,
                  data_fingerprint: str) -> Any | None:
    """A FINISHED MLflow run equivalent to this one (same name and identity tags), if any.

    An unreachable store is warned about once and treated as holding nothing.
    """
    from mlflow.exceptions import MlflowException

    tags = identity_tags(cfg, fingerprint, data_fingerprint)
    filters = [f"attributes.run_name = '{cfg.run_name}'", "attributes.status = 'FINISHED'",
               *(f"tags.{key} = '{value}'" for key, value in tags.items())]
    for logger in _trackers(loggers):
        try:
            experiment_id = logger.experiment_id_or_none()
            found = experiment_id and logger.client.search_runs(
                [experiment_id], " AND ".join(filters), max_results=1, order_by=["attributes.end_time DESC"])
        except (MlflowException, OSError) as error:
            uri = redact_uri(logger.tracking_uri)
            if uri not in _warned_uris:
                _warned_uris.add(uri)
                log.warning("MLflow tracking store %s is unreachable (%s); looking for finished runs "
                            "in the local results only", uri, error)
            continue
        if found:
            return found[0]
    return None


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (Lightning's own helper is private)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _loggable(flat: Mapping[str, Any]) -> dict[str, str]:
    """String values, secrets dropped, credentials stripped from URIs, lengths bounded."""
    kept = {}
    for key, value in flat.items():
        if any(word in key.lower() for word in SECRET_WORDS):
            continue
        text = str(value)
        kept[key] = (redact_uri(text) if "://" in text else text)[:MAX_VALUE_LENGTH]
    return kept


def run_record(cfg: DictConfig, fingerprint: str, data_fingerprint: str) -> tuple[dict[str, str],
                                                                                   dict[str, str]]:
    """Params and tags of a run from its resolved config.

    Params (write-once in MLflow) are the keys that decide the trained model, equal in every
    resumption of a run by construction; everything else (paths, ``ckpt_path``, devices,
    workers, loggers) may change between resumptions and is logged as tags.
    """
    trained = _flatten(training_config(cfg))
    container = OmegaConf.to_container(cfg, resolve=True)
    everything = _flatten({key: value for key, value in container.items() if key not in UNLOGGED_KEYS})
    # The seed study's param names, so old and new runs compare side by side.
    optimizer = str(OmegaConf.select(cfg, "optimizer._target_", default=""))
    seed_names = {"model": cfg.model.name, "resolution": cfg.res, "epochs": cfg.trainer.max_epochs,
                  "batch_size": OmegaConf.select(cfg, "data.batch_size"),
                  "learning_rate": OmegaConf.select(cfg, "optimizer.lr"),
                  "optimizer": optimizer.rsplit(".", 1)[-1]}
    params = _loggable({**seed_names, **trained})
    tags = _loggable({key: value for key, value in everything.items() if key not in trained})
    tags.update(identity_tags(cfg, fingerprint, data_fingerprint))
    return params, tags


def _log_record(logger: MLFlowLogger, run_id: str, params: dict[str, str], tags: dict[str, str]) -> None:
    from mlflow.entities import Param, RunTag

    param_items, tag_items = list(params.items()), list(tags.items())
    for start in range(0, max(len(param_items), len(tag_items)), BATCH_SIZE):
        logger.client.log_batch(
            run_id, params=[Param(key, value) for key, value in param_items[start:start + BATCH_SIZE]],
            tags=[RunTag(key, value) for key, value in tag_items[start:start + BATCH_SIZE]])


def _read_run_ids(path: Path) -> dict[str, str]:
    """Run ids by (redacted) store URI; an unreadable file counts as none."""
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return {}


def _existing_run(logger: MLFlowLogger, run_id: str | None) -> Any | None:
    from mlflow.exceptions import MlflowException

    if not run_id:
        return None
    try:
        run = logger.client.get_run(run_id)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return run if run.info.lifecycle_stage != "deleted" else None


def _start(logger: MLFlowLogger, cfg: DictConfig, fingerprint: str, data_fingerprint: str) -> str:
    """Continue this run's unfinished MLflow run when resuming, else start one; log config and tags."""
    run_file = Path(cfg.run_checkpoint_dir) / RUN_ID_FILE
    store = redact_uri(logger.tracking_uri)
    run_ids = _read_run_ids(run_file)
    with _store_errors(logger.tracking_uri):
        previous = _existing_run(logger, run_ids.get(store))
        if (previous is not None and cfg.ckpt_path is not None and previous.info.status != "FINISHED"
                and previous.data.tags.get("config_fingerprint") == fingerprint):
            logger.continue_run(previous.info.run_id)
            logger.client.update_run(previous.info.run_id, status="RUNNING")
            log.info("Continuing MLflow run %s in %s", previous.info.run_id, store)
        elif previous is not None and previous.info.status == "RUNNING":
            # Killed without the chance to end it (SIGKILL); this fresh run replaces it.
            logger.client.set_terminated(previous.info.run_id, "KILLED")
        run_id = logger.run_id
        write_json(run_file, {**run_ids, store: run_id})
        _log_record(logger, run_id, *run_record(cfg, fingerprint, data_fingerprint))
    return run_id


def plot_confusion_matrix(matrix: list[list[int]], classes: list[str]) -> bytes:
    """A small PNG of the test confusion matrix (rows: true class, columns: predicted)."""
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
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _hydra_config_dir() -> Path | None:
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.output_subdir is None:
        return None
    folder = Path(hydra_cfg.runtime.output_dir) / hydra_cfg.output_subdir
    return folder if folder.is_dir() else None


def _log_artifacts(logger: MLFlowLogger, cfg: DictConfig) -> None:
    """The result JSON, a confusion matrix plot and the Hydra config of a finished run."""
    run_id = logger.run_id
    result_file = results.result_path(cfg.paths.results_dir, cfg.run_name)
    with _store_errors(logger.tracking_uri):
        if result_file.is_file():
            logger.client.log_artifact(run_id, str(result_file), "results")
            payload = results.read_result(result_file)
            with tempfile.TemporaryDirectory() as folder:
                plot = Path(folder) / "confusion_matrix.png"
                atomic_write_bytes(plot, plot_confusion_matrix(
                    payload["test_metrics"]["confusion_matrix"], payload["classes"]))
                logger.client.log_artifact(run_id, str(plot), "plots")
        if (hydra_dir := _hydra_config_dir()) is not None:
            logger.client.log_artifacts(run_id, str(hydra_dir), "hydra")


def _end(trackers: Iterable[MLFlowLogger], status: str) -> None:
    for logger in trackers:
        try:
            logger.client.set_terminated(logger.run_id, status)
        except Exception as error:  # ending is best effort once the run itself has failed
            log.warning("Could not mark MLflow run %s %s in %s: %s", logger.run_id, status,
                        redact_uri(logger.tracking_uri), error)


@contextmanager
def tracked_run(cfg: DictConfig, loggers: Iterable[Logger], fingerprint: str,
                data_fingerprint: str) -> Iterator[None]:
    """Around fit and test: start or continue the MLflow run(s), then end them FINISHED (with
    artifacts), FAILED (an exception) or KILLED (SIGTERM, Ctrl-C)."""
    trackers = _trackers(loggers) if rank_zero_only.rank == 0 else []
    for logger in trackers:
        _start(logger, cfg, fingerprint, data_fingerprint)
    try:
        yield
        for logger in trackers:
            _log_artifacts(logger, cfg)
    except (SIGTERMException, KeyboardInterrupt):
        _end(trackers, "KILLED")
        raise
    except BaseException:
        _end(trackers, "FAILED")
        raise
    for logger in trackers:
        with _store_errors(logger.tracking_uri):
            logger.client.set_terminated(logger.run_id, "FINISHED")
