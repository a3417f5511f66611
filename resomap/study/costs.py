"""Cost tables of every architecture at every resolution, without training or data.

Each (model, resolution) writes ``summary/{model}/{res}/architecture_summary.txt`` and a
``complexity.json`` record; the tables (``model_summary_detailed.{csv,json}`` and one
``summary_{figure}.csv`` per figure, models as rows and resolutions as columns) are rebuilt
from every record under ``summary/``, so single runs and multirun jobs add up to one table.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig
from tqdm.auto import tqdm

from resomap.errors import ResoMapError
from resomap.io import atomic_write_text, write_json
from resomap.measure.complexity import CONVENTIONS, MB, analyse, architecture_summary
from resomap.run.record_schema import with_new_keys

log = logging.getLogger(__name__)

RECORD = "complexity.json"
# File stem -> (column of the detailed table, unit and convention written in the table's header).
FIGURES = {
    "summary_total_params": ("total_params", "parameters, count"),
    "summary_gmacs": ("gmacs", f"GMACs per image; {CONVENTIONS['macs']}"),
    "summary_mult_adds": ("gmult_adds", f"G multiply-adds per image; {CONVENTIONS['mult_adds']}"),
    "summary_memory_mb": ("memory_mb", f"MB; {CONVENTIONS['memory_mb']}"),
}


def as_list(value: Any) -> list[Any]:
    """A list key that a multirun may have set to one value (``-m models=a,b``)."""
    return list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]


def model_config(name: str) -> DictConfig:
    """``conf/model/{name}.yaml`` composed by Hydra, as ``python -m resomap.train model=name`` sees it."""
    try:
        return hydra.compose(overrides=[f"+model={name}", "model.pretrained=false"]).model
    except HydraException as error:
        options = GlobalHydra.instance().config_loader().get_group_options("model")
        raise ResoMapError(f"models: {name!r} is not a model config (conf/model/{name}.yaml); valid "
                           f"names are {', '.join(options)}.") from error


def check_resolution(value: Any, min_size: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < min_size:
        raise ResoMapError(f"resolutions: {value!r} is not valid: each resolution must be an integer "
                           f">= {min_size} pixels (e.g. resolutions=[224,512]).")
    return value


def summarize_model(name: str, model_cfg: DictConfig, resolutions: Iterable[int], num_classes: int,
                    summary_dir: Path) -> list[dict[str, Any]]:
    """Measure one architecture at each resolution; write its text summaries and records."""
    net = instantiate(model_cfg.net, num_classes=num_classes)
    rows = []
    for res in resolutions:
        complexity = analyse(net, check_resolution(res, int(model_cfg.get("min_size", 1))))
        folder = summary_dir / name / str(res)
        atomic_write_text(folder / "architecture_summary.txt",
                                  architecture_summary(name, num_classes, complexity))
        row = {
            "model": name, "family": model_cfg.get("family"), "resolution": res,
            "num_classes": num_classes, "total_params": complexity.params_total,
            "trainable_params": complexity.params_trainable, "gmacs": complexity.macs / 1e9,
            "gmult_adds": complexity.mult_adds / 1e9, "memory_mb": complexity.memory_bytes / MB,
            "activation_memory_mb": complexity.activation_bytes / MB,
            "input_memory_mb": complexity.input_bytes / MB,
            "param_memory_mb": complexity.param_bytes / MB,
            "skipped_ops": " ".join(sorted(complexity.skipped_ops)),
        }
        write_json(folder / RECORD, row)
        rows.append(row)
        log.info("%s @ %d: %.3f GMACs, %d params", name, res, row["gmacs"], row["total_params"])
    return rows


def write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def load_records(summary_dir: Path) -> list[dict[str, Any]]:
    """Every ``complexity.json`` under ``summary_dir``; one written before the rename has its
    ``gflops`` read as ``gmacs``."""
    records = [with_new_keys(json.loads(path.read_text())) for path in summary_dir.glob(f"*/*/{RECORD}")]
    return sorted(records, key=lambda row: (row["model"], int(row["resolution"])))


def write_tables(summary_dir: str | Path) -> list[Path]:
    """Rebuild the detailed table and the per-figure tables from every record in ``summary_dir``."""
    summary_dir = Path(summary_dir)
    rows = load_records(summary_dir)
    if not rows:
        return []
    columns = list(rows[0])
    written = [summary_dir / "model_summary_detailed.csv", summary_dir / "model_summary_detailed.json"]
    write_csv(written[0], columns, rows)
    write_json(written[1], {"generated_at": dt.datetime.now().isoformat(),
                                    "conventions": CONVENTIONS, "rows": rows})
    models = list(dict.fromkeys(row["model"] for row in rows))
    resolutions = sorted({int(row["resolution"]) for row in rows})
    for stem, (column, convention) in FIGURES.items():
        # The first header cell states the unit and convention; pandas reads the table with
        # read_csv(path, index_col=0): models as the index, resolutions as the columns.
        header = f"model [{convention}]"
        table = {model: {header: model} for model in models}
        for row in rows:
            table[row["model"]][str(row["resolution"])] = row[column]
        path = summary_dir / f"{stem}.csv"
        write_csv(path, [header, *map(str, resolutions)], list(table.values()))
        written.append(path)
    return written


def run(cfg: DictConfig) -> list[Path]:
    """Summarize ``cfg.models`` x ``cfg.resolutions`` into ``cfg.summary_dir``."""
    summary_dir = Path(cfg.summary_dir)
    num_classes = cfg.num_classes
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ResoMapError(f"num_classes={num_classes!r} is not valid: it must be a positive integer "
                           "(the data set's class count, 7 for the dermoscopy data).")
    resolutions = as_list(cfg.resolutions)
    for name in tqdm(as_list(cfg.models), unit="model", desc="Summarizing", mininterval=1.0):
        summarize_model(str(name), model_config(str(name)), resolutions, num_classes, summary_dir)
    written = write_tables(summary_dir)
    log.info("Summary tables written to %s", summary_dir)
    return written


class RebuildTables(Callback):
    """After a multirun, rebuild the tables once more from every job's records.

    Jobs rebuild them as they finish; with a parallel launcher the last to finish may not
    have seen a record written meanwhile.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        write_tables(config.summary_dir)
