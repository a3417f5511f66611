"""A local SQLite store's artifacts follow the project folder when it moves.

MLflow (3.x) cannot keep a relative artifact location for a SQLite store: ``create_experiment``
and the store's default artifact root go through ``mlflow.utils.uri.resolve_uri_if_local``,
which makes a relative path absolute against the current directory, and ``create_run`` copies
the experiment's location into each run's ``artifact_uri`` (``<location>/<run_id>/artifacts``).
Both are saved in the database (``experiments.artifact_location``, ``runs.artifact_uri``), and
MLflow offers no call that changes them. ``mlflow-artifacts:`` URIs are location-free, but only
a tracking *server* resolves them (a client of a ``sqlite:`` URI refuses them).

So ResoMap repairs the database when it opens it: an artifact location named ``mlartifacts``
(the folder ResoMap puts beside the store) that no longer exists, while ``mlartifacts`` beside the
store does, is the same folder moved with the project, and every path under it is rewritten to
the new place. A location chosen by the user (another name, or a folder that still exists) is
never touched. A copied project still points at the original until the original is gone.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
from pathlib import Path

from resomap.errors import ResoMapError, user_errors

log = logging.getLogger(__name__)

ARTIFACTS_DIR = "mlartifacts"
# Tables and columns where MLflow's SQL store keeps artifact locations.
LOCATIONS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
             ("logged_models", "artifact_location"))


def default_artifact_root(db: Path) -> Path:
    """Where ResoMap keeps a SQLite store's artifacts: ``mlartifacts/`` beside the database."""
    return db.parent / ARTIFACTS_DIR


def _moved_roots(connection: sqlite3.Connection, new_root: Path) -> list[str]:
    """The experiments' artifact locations that are this store's ``mlartifacts`` at an old place."""
    roots = []
    for (location,) in connection.execute("SELECT DISTINCT artifact_location FROM experiments"):
        if not location or not location.startswith("/"):
            continue  # another scheme (s3:, mlflow-artifacts:, file:) or a Windows path: left alone
        old = Path(location)
        if old.name == ARTIFACTS_DIR and old != new_root and not old.exists() and new_root.is_dir():
            roots.append(location)
    return roots


def relocate_artifacts(db: Path) -> list[str]:
    """Point the store ``db`` at ``mlartifacts/`` beside it if the project folder moved; returns
    the old locations rewritten (none when nothing moved). One transaction: a crash leaves the
    database as it was, and parallel jobs opening the store repair it once."""
    new_root = default_artifact_root(db)
    connection = sqlite3.connect(db, timeout=60)
    try:
        with connection:
            listed = connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
            tables = {name for (name,) in listed}
            if "experiments" not in tables:
                return []
            moved = _moved_roots(connection, new_root)
            for old in moved:
                for table, column in LOCATIONS:
                    if table not in tables:
                        continue
                    # The old root itself, or a path under it: never a sibling that shares its prefix.
                    connection.execute(
                        f"UPDATE {table} SET {column} = ? || substr({column}, ?) "  # noqa: S608 (fixed names)
                        f"WHERE {column} = ? OR substr({column}, 1, ?) = ?",
                        (str(new_root), len(old) + 1, old, len(old) + 1, old + "/"))
    finally:
        connection.close()
    for old in moved:
        log.info("The MLflow store %s moved: its artifacts, recorded in %s, are now read from %s",
                 db, old, new_root)
    return moved


def main(argv: list[str]) -> int:
    """``python -m resomap.tracking.store_home path/to/mlflow.db``: repair a moved store before
    browsing it with ``mlflow ui`` (any ResoMap command that opens the store does the same)."""
    with user_errors():
        if len(argv) != 1:
            raise ResoMapError(f"expected one argument, the MLflow SQLite store to repair, got {len(argv)}: "
                               "python -m resomap.tracking.store_home path/to/mlflow.db")
        if not Path(argv[0]).is_file():
            raise ResoMapError(f"{argv[0]} is not a file: pass the MLflow SQLite store to repair (the "
                               "project's mlflow.db): python -m resomap.tracking.store_home "
                               "path/to/mlflow.db")
    moved = relocate_artifacts(Path(argv[0]).resolve())
    print(f"artifacts now read from {default_artifact_root(Path(argv[0]).resolve())}" if moved
          else "nothing to relocate")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
