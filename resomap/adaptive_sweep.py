"""The adaptive study as a Hydra sweeper: the grid once, then seeds only where they decide.

``resomap train -m study=adaptive model=simple_cnn,tiny_cnn res=224,256,320,384,512`` runs the
grid as Hydra's basic sweeper does, then looks at this sweep's own runs: per configuration (a
model, with any other swept keys) it decides through :func:`resomap.study.decide.decide` and
launches, through the same launcher, one more seed for the runs that can still change the
answer (:func:`resomap.study.adaptive.extend`). Every added run is an ordinary job of the sweep
with ``seed=N`` among its overrides, so skip, resume, locks and tracking treat it as any run:
a killed study re-run with the same command skips its finished runs and, its decisions being
functions of the records alone (seeded bootstrap, recorded times), takes the same steps again.

Hydra instantiates sweepers only from the ``hydra_plugins`` package: the class it loads is
``hydra_plugins.resomap_sweeper.adaptive_sweeper.AdaptiveSweeper``, a subclass of this one.
Import this module only after Hydra's plugin scan (``hydra_plugins.resomap_sweeper.register``):
the scan executes Hydra's ``basic_sweeper`` module again, and a subclass of the class it replaced
fails in ``BasicSweeper.__init__``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from resomap.errors import ResoMapError, exit_with
from resomap.progress import plan_batch
from resomap.study.adaptive import (
    Extension,
    StudySettings,
    check_study,
    extend,
    fits_budget,
    projected_seconds,
)

log = logging.getLogger(__name__)

TRACE_FILE = "adaptive_study.json"
# Keys that place a job inside its configuration rather than define the configuration.
POSITION_KEYS = ("res", "seed")
FAILURE_FILE = "failure.json"  # resomap.sweep.FAILURE_FILE, without importing the training stack


@dataclass
class Job:
    """One launched job of the sweep: its overrides, where it sits, what it returned."""

    overrides: list[str]
    config: tuple[str, ...]  # the configuration: overrides other than res and seed
    model: str
    res: int
    seed: int
    results_dir: str
    output_dir: str
    run_name: str
    succeeded: bool


@dataclass
class Finished:
    """A finished run of the sweep: its record's identity digest, time and test predictions."""

    digest: str
    seconds: float
    predictions: Any


@dataclass
class Configuration:
    label: str
    base_seeds: set[int] = field(default_factory=set)
    templates: dict[int, list[str]] = field(default_factory=dict)  # res -> overrides of its grid job
    runs: dict[int, dict[int, Finished]] = field(default_factory=dict)  # res -> seed -> run


class AdaptiveSweeper(BasicSweeper):
    """Hydra's basic sweeper, followed by looks that add seeds where the answer is undecided."""

    def __init__(self, max_batch_size: int | None = None, params: dict[str, str] | None = None,
                 min_seeds: Any = 2, max_seeds: Any = 5, budget_minutes: Any = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.study_values = {"min_seeds": min_seeds, "max_seeds": max_seeds, "budget_minutes": budget_minutes}
        self.parser = OverridesParser.create()
        self.read: dict[tuple[str, str, str], Finished] = {}

    # ------------------------------------------------------------------------------ the sweep

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        try:
            settings = check_study(**self.study_values,
                                   report_looks=OmegaConf.select(self.config, "report.looks", default=None))
            self._report_settings()  # a bad report.* key stops the study before its first run
        except ResoMapError as error:
            exit_with(error)
        returns = super().sweep(arguments)  # the grid, as the basic sweeper runs it
        jobs = [self._job(ret) for batch in returns for ret in batch]
        grid = len(jobs)
        trace: dict[str, Any] = {"settings": {**vars(settings), "looks": settings.looks}, "looks": []}
        look = 0
        while True:
            look += 1
            launched = {(job.config, job.res, job.seed) for job in jobs}
            configurations = self._configurations(jobs, grid)
            extensions = {key: self._extend(conf, settings) for key, conf in configurations.items()}
            new = {key: _unlaunched(key, extension, launched) for key, extension in extensions.items()}
            batch = [self._with_seed(configurations[key].templates[res], seed)
                     for key, additions in new.items() for res, seeds in sorted(additions.items())
                     for seed in seeds]
            spent = _spent_seconds(configurations.values())
            projected = sum(projected_seconds(new[key], _seconds(conf))
                            for key, conf in configurations.items())
            summary = "; ".join(f"{configurations[key].label}: {_added_text(new[key], extensions[key])}"
                                for key in configurations)
            entry = {"look": look, "runs": len(batch), "projected_sec": projected, "spent_sec": spent,
                     "configurations": {configurations[key].label: {"added": new[key],
                                                                    "reason": extensions[key].reason}
                                        for key in configurations}}
            if not batch:
                trace["looks"].append({**entry, "started": False})
                log.info("Adaptive study, look %d: nothing to add (%s)", look, summary)
                break
            if not fits_budget(projected, spent, settings.budget_minutes):
                trace["looks"].append({**entry, "started": False})
                log.info("Adaptive study, look %d not started: its %d runs are projected to take %.1f min, "
                         "more than the %.1f min left of study.budget_minutes=%g (%s)", look, len(batch),
                         projected / 60, max(0.0, settings.budget_minutes - spent / 60),
                         settings.budget_minutes, summary)
                break
            trace["looks"].append({**entry, "started": True})
            self._write_trace(trace)
            log.info("Adaptive study, look %d: %d runs, projected %.1f min (%.1f min spent so far): %s", look,
                     len(batch), projected / 60, spent / 60, summary)
            for chunk in self.split_overrides_to_chunks(batch, self.max_batch_size):
                self.validate_batch_is_legal(chunk)
                plan_batch(self.config, chunk, len(jobs), label=f"look {look}")
                results = self.launcher.launch(chunk, initial_job_idx=len(jobs))
                returns.append(results)
                jobs.extend(self._job(ret) for ret in results)
        trace["cost"] = cost = self._cost(self._configurations(jobs, grid), settings)
        self._write_trace(trace)
        log.info("Adaptive study finished: %d runs, %.1f min of recorded run time; the full grid at %d seeds "
                 "would be %d runs, about %.1f min", cost["runs"], cost["run_sec"] / 60, settings.max_seeds,
                 cost["full_grid_runs"], cost["full_grid_sec"] / 60)
        return returns

    # -------------------------------------------------------------------------- reading jobs

    def _key(self, override: str) -> str:
        return self.parser.parse_override(override).key_or_group

    def _job(self, ret: JobReturn) -> Job:
        cfg = ret.cfg
        overrides = list(ret.overrides or [])
        config = tuple(item for item in overrides if self._key(item) not in POSITION_KEYS)
        output_dir = str(ret.hydra_cfg.hydra.runtime.output_dir) if ret.hydra_cfg is not None else ""
        succeeded = ret.status == JobStatus.COMPLETED
        if succeeded and output_dir:
            succeeded = not (Path(output_dir) / FAILURE_FILE).is_file()
        return Job(overrides, config, str(cfg.model.name), int(cfg.res), int(cfg.seed),
                   str(cfg.paths.results_dir), output_dir, str(cfg.run_name), succeeded)

    def _configurations(self, jobs: Sequence[Job], grid: int) -> dict[tuple[str, ...], Configuration]:
        """This sweep's jobs per configuration (the first ``grid`` are the grid's), with the
        finished runs' records read."""
        from resomap.run import record as records

        indexes = {folder: _index(records, folder) for folder in {job.results_dir for job in jobs}}
        varying = _varying([job.config for job in jobs])
        found: dict[tuple[str, ...], Configuration] = {}
        for number, job in enumerate(jobs):
            conf = found.get(job.config)
            if conf is None:
                label = " ".join(item for item in job.config if self._key(item) in varying) or job.model
                conf = found[job.config] = Configuration(label)
            conf.templates.setdefault(job.res, job.overrides)
            if number < grid:
                conf.base_seeds.add(job.seed)
            finished = self._finished(job, indexes[job.results_dir])
            if finished is not None:
                conf.runs.setdefault(job.res, {})[job.seed] = finished
        return found

    def _extend(self, conf: Configuration, settings: StudySettings) -> Extension:
        seeds = {res: set(conf.runs.get(res, {})) for res in conf.templates}
        seeds = {res: found for res, found in seeds.items() if found}
        decision = None
        if seeds and min(map(len, seeds.values())) >= settings.min_seeds:
            try:
                decision = self._decide(conf)
            except ValueError as error:  # e.g. resolutions tested on different images
                log.warning("Adaptive study: no decision for %s: %s", conf.label, error)
                return Extension(reason=f"no decision ({error})", done=True)
        return extend(seeds, decision, conf.base_seeds or {0}, settings)

    def _decide(self, conf: Configuration) -> Any:
        from resomap.study.decide import decide

        runs = {res: {seed: run.predictions for seed, run in sorted(by_seed.items())
                      if run.predictions is not None} for res, by_seed in sorted(conf.runs.items())}
        runs = {res: by_seed for res, by_seed in runs.items() if by_seed}
        if not runs:
            return None
        return decide(runs, self._report_settings())

    def _report_settings(self) -> Any:
        """The report's decision settings (report.*), looks included: the report decides alike."""
        from resomap.study.decision_settings import check_settings

        report = OmegaConf.to_container(self.config.report, resolve=True) if "report" in self.config else {}
        return check_settings(**report)

    def _finished(self, job: Job, index: dict[str, tuple[Path, Any]]) -> Finished | None:
        """The job's finished run (records are written once, so each is read once per sweep)."""
        found = _record_of(job, index)
        if found is None:
            return None
        path, record = found
        key = (str(path), record.identity.digest, record.timestamp)
        if key not in self.read:
            from resomap.study.study import load_run

            seconds = record.timing.get("total_sec")
            self.read[key] = Finished(record.identity.digest,
                                      float(seconds) if isinstance(seconds, (int, float)) else 0.0,
                                      load_run(Path(job.results_dir), path, record).predictions)
        return self.read[key]

    # ------------------------------------------------------------------------------ helpers

    def _with_seed(self, overrides: list[str], seed: int) -> list[str]:
        return [*(item for item in overrides if self._key(item) != "seed"), f"seed={seed}"]

    @staticmethod
    def _cost(configurations: dict[tuple[str, ...], Configuration],
              settings: StudySettings) -> dict[str, Any]:
        """What the answer cost against the full grid at ``max_seeds`` seeds (recorded times)."""
        runs = sum(len(by_seed) for conf in configurations.values() for by_seed in conf.runs.values())
        full_runs, full_sec = 0, 0.0
        for conf in configurations.values():
            seconds = _seconds(conf)
            full = {res: list(range(settings.max_seeds)) for res in conf.templates}
            full_runs += sum(map(len, full.values()))
            full_sec += projected_seconds(full, seconds)
        return {"runs": runs, "run_sec": _spent_seconds(configurations.values()), "full_grid_runs": full_runs,
                "full_grid_sec": full_sec}

    def _write_trace(self, trace: dict[str, Any]) -> None:
        from resomap.io import write_json

        write_json(Path(self.config.hydra.sweep.dir) / TRACE_FILE, _plain(trace))


def _plain(value: Any) -> Any:
    """JSON-ready: mappings with string keys."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(item) for item in value]
    return value


def _varying(configs: Sequence[tuple[str, ...]]) -> set[str]:
    """Keys whose override is not the same in every configuration (they name each one in logs)."""
    parser = OverridesParser.create()
    distinct = set(configs)
    values: dict[str, set[str]] = defaultdict(set)
    present: dict[str, int] = defaultdict(int)
    for config in distinct:
        for item in config:
            key = parser.parse_override(item).key_or_group
            values[key].add(item)
            present[key] += 1
    return {key for key in values if len(values[key]) > 1 or present[key] < len(distinct)}


def _index(records: Any, results_dir: str) -> dict[str, tuple[Path, Any]]:
    """The results folder's records by identity digest and by run name."""
    index: dict[str, tuple[Path, Any]] = {}
    for path, record in records.iter_records(results_dir):
        if isinstance(record, records.InvalidRecord):
            continue
        index[record.identity.digest] = (path, record)
        index.setdefault(f"name:{record.run_name}", (path, record))
    return index


def _job_file(output_dir: str) -> dict[str, Any] | None:
    """The job's ``job.json`` (resomap.run.job.read_job), where the sweep writes one."""
    try:
        from resomap.run.job import read_job
    except ImportError:
        return None
    return read_job(output_dir) if output_dir else None


def _record_of(job: Job, index: dict[str, tuple[Path, Any]]) -> tuple[Path, Any] | None:
    """The record of the job's finished run: through its ``job.json`` digest, else its run name."""
    if not job.succeeded:
        return None
    written = _job_file(job.output_dir)
    if written is not None:
        if written.get("status") not in ("finished", "skipped"):
            return None
        found = index.get(str(written.get("identity")))
    else:
        found = index.get(f"name:{job.run_name}")
    if found is None:
        return None
    record = found[1]
    return found if (record.model, record.resolution, record.seed) == (job.model, job.res, job.seed) else None


def _seconds(conf: Configuration) -> dict[int, list[float]]:
    return {res: [run.seconds for run in by_seed.values() if run.seconds > 0]
            for res, by_seed in conf.runs.items()}


def _spent_seconds(configurations: Any) -> float:
    seen: dict[str, float] = {}
    for conf in configurations:
        for by_seed in conf.runs.values():
            for run in by_seed.values():
                seen[run.digest] = run.seconds
    return sum(seen.values())


def _unlaunched(key: tuple[str, ...], extension: Extension, launched: set) -> dict[int, list[int]]:
    """The extension's runs that this sweep has not launched yet (a failed run is not retried)."""
    found = {res: [seed for seed in seeds if (key, res, seed) not in launched]
             for res, seeds in extension.additions.items()}
    return {res: seeds for res, seeds in found.items() if seeds}


def _added_text(additions: dict[int, list[int]], extension: Extension) -> str:
    if not additions:
        return extension.reason
    runs = sum(map(len, additions.values()))
    where = ", ".join(f"{res} px seed {'/'.join(map(str, seeds))}"
                      for res, seeds in sorted(additions.items()))
    return f"+{runs} ({where}): {extension.reason}"

