"""Sweeps: a grid of pipeline runs (targets × methods × seeds × params overrides) as one Prefect
flow whose cells are tasks on a Prefect task runner — sequential, a Dask LocalCluster, or an
existing Dask cluster through prefect-dask.

Each cell is an isolated pipeline run in its own git + DVC working copy under the sweep
directory. Cells share only the DVC cache (and, across machines, a DVC remote) and the MLflow
store; every MLflow run is tagged with the sweep id and the cell. A failing cell (bad params,
a crash, a killed worker) becomes a failed row of the results table and does not stop the
others; re-running the sweep finds every completed stage in the DVC cache and trains nothing.
Cells that need the same teacher (the methods of one seed) train it once
(`cds.pipeline.shared_teacher`).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from prefect import flow, get_run_logger, task
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cds.config import ParamsError, load_params, read_yaml
from cds.pipeline.dvc import TRANSIENT_MARKERS, dvc, repro_stage
from cds.pipeline.io import write_json_atomic, write_text_atomic
from cds.pipeline.layout import Layout
from cds.pipeline.metrics_schema import Role, keys
from cds.pipeline.params_file import write_complete_params
from cds.pipeline.publish import publish
from cds.pipeline.stage_graph import STAGES
from cds.pipeline.stages.teacher import SHARED_TEACHERS_ENV
from cds.pipeline.workspace import create_workspace, sync_inputs, sync_project_files
from cds.presets import NO_PRESET, chosen_preset, preset_names

#: Attempts at logging a cell to MLflow when the store is busy.
PUBLISH_ATTEMPTS = 4
#: Columns of the Markdown results table.
TABLE_COLUMNS = ("cell", "status", *keys(Role.TABLE), "trained", "seconds", "error")


class SweepGrid(BaseModel):
    """sweep.yaml: the grid. Every combination of the lists is one cell."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = "sweep"
    #: Params file the cells start from (relative to the project); None: the project's own.
    base: str | None = None
    targets: list[str] = Field(default_factory=lambda: ["gmm9"], min_length=1)
    methods: list[Literal["cdds", "scds"]] = Field(default_factory=lambda: ["cdds"], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    #: Each entry is a mapping of dotted params keys to values, applied on top of the base.
    overrides: list[dict[str, Any]] = Field(default_factory=lambda: [{}], min_length=1)
    #: Preset laid over the base before the overrides (`cds.presets`): None gives a cell whose
    #: target differs from the base's that target's own preset (where it has one); "none" none.
    preset: str | None = None

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, name: str | None) -> str | None:
        if name is not None and name != NO_PRESET and name not in preset_names():
            raise ValueError(f"preset = {name!r}: unknown; valid: {', '.join(preset_names())}")
        return name

    #: Register each cell's sampler (gate included) or only log its runs. Key `register` in
    #: sweep.yaml (the attribute name avoids shadowing BaseModel's own `register`).
    register_cells: bool = Field(default=False, alias="register")


def load_grid(path: Path) -> SweepGrid:
    if not path.is_file():
        raise ParamsError(f"sweep grid {str(path)!r} does not exist")
    try:
        return SweepGrid.model_validate(read_yaml(path.read_text()) or {})
    except (ValidationError, yaml.YAMLError) as err:
        raise ParamsError(f"invalid sweep grid {path}: {err}") from None


@dataclass(frozen=True)
class Cell:
    id: str
    target: str
    method: str
    seed: int
    overrides: list[str]
    preset: str | None = None


def cells(grid: SweepGrid) -> list[Cell]:
    """One cell per combination, with a readable, filesystem-safe id."""
    out = []
    for (i, extra), target, method, seed in itertools.product(
        enumerate(grid.overrides), grid.targets, grid.methods, grid.seeds
    ):
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", target).strip("-")
        suffix = f"-o{i}" if len(grid.overrides) > 1 else ""
        overrides = [f"{key}={json.dumps(value)}" for key, value in extra.items()]
        cell_id = f"{name}-{method}-s{seed}{suffix}"
        out.append(Cell(cell_id, target, method, seed, overrides, grid.preset))
    return out


@dataclass(frozen=True)
class SweepSettings:
    sweep_id: str
    project: str
    directory: str
    base: str | None
    tracking_uri: str
    torch_threads: int
    register: bool
    dvc_remote: str | None = None


@dataclass
class CellResult:
    cell: str
    status: str
    seconds: float
    trained: bool = False
    stages: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    error: str | None = None


def _workspace(cell: Cell, settings: SweepSettings) -> Path:
    """The cell's working copy: created on first use; on later runs its pipeline definition,
    params and inputs are refreshed from the project (new code deps, new data in inputs/)."""
    project = Path(settings.project)
    base = project / settings.base if settings.base else project / "params.yaml"
    params = load_params(
        base,
        [f"target.name={cell.target}", f"method={cell.method}", f"seed={cell.seed}",
         *cell.overrides],
        chosen_preset(cell.preset, load_params(base).target.name, cell.target),
    )  # fmt: skip
    root = Path(settings.directory) / "cells" / cell.id
    if (root / ".dvc").is_dir():
        write_complete_params(root / "params.yaml", params)
        sync_project_files(project, root)
        sync_inputs(project, root)
        return root
    root = create_workspace(project, root, params, shared_cache=project / ".dvc" / "cache")
    if settings.dvc_remote:
        code, output = dvc(root, "remote", "add", "-f", "-d", "shared", settings.dvc_remote,
                           echo=False)  # fmt: skip
        if code:
            raise RuntimeError(f"dvc remote add failed: {output}")
    return root


def _publish_with_retries(
    root: Path, stages: dict[str, str], settings: SweepSettings, cell: Cell
) -> dict[str, Any]:
    """Log (and optionally register) a cell; cells publishing at the same moment can find a
    SQLite store busy, which clears on retry."""
    for attempt in range(PUBLISH_ATTEMPTS):
        try:
            return publish(
                load_params(root / "params.yaml"),
                Layout(root),
                stages,
                tags={"sweep": settings.sweep_id, "cell": cell.id},
                register=settings.register,
            )
        except Exception as err:
            if attempt + 1 == PUBLISH_ATTEMPTS or not any(
                marker in str(err) for marker in TRANSIENT_MARKERS
            ):
                raise
            time.sleep(2.0 * (attempt + 1))
    raise AssertionError("unreachable")


@task(name="cell", task_run_name="{cell.id}", cache_policy=None)
def run_cell(cell: Cell, settings: SweepSettings) -> dict[str, Any]:
    """One pipeline run; never raises: a failure is a failed row."""
    start = time.perf_counter()
    result = CellResult(cell.id, "failed", 0.0)
    threads = str(settings.torch_threads)
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    try:
        root = _workspace(cell, settings)
        pull = settings.dvc_remote is not None
        shared = {SHARED_TEACHERS_ENV: str(Path(settings.directory).resolve() / "teachers")}
        for stage in STAGES:
            stage_env = {**env, **shared} if stage == "teacher" else env
            result.stages[stage] = repro_stage(root, stage, False, pull, stage_env).status
        result.trained = any(s == "ran" for k, s in result.stages.items() if k != "evaluate")
        if pull:
            code, output = dvc(root, "push", echo=False)
            if code:
                raise RuntimeError(f"dvc push failed: {output[-2000:]}")
        os.environ["MLFLOW_TRACKING_URI"] = settings.tracking_uri
        summary = _publish_with_retries(root, result.stages, settings, cell)
        result.metrics, result.run_id, result.status = summary["metrics"], summary["run_id"], "ok"
    except Exception as err:
        result.error = f"{type(err).__name__}: {err}"[-2000:]
    result.seconds = time.perf_counter() - start
    return asdict(result)


@flow(name="sweep")
def sweep(grid: SweepGrid, settings: SweepSettings) -> list[dict[str, Any]]:
    """Submit every cell to the flow's task runner and collect one row per cell."""
    logger = get_run_logger()
    grid_cells = cells(grid)
    futures = [(cell, run_cell.submit(cell, settings)) for cell in grid_cells]
    rows = []
    for cell, future in futures:
        try:
            rows.append(future.result())
        except Exception as err:
            rows.append(asdict(CellResult(cell.id, "failed", 0.0, error=f"{err!r}"[-2000:])))
        logger.info("cell %s: %s", cell.id, rows[-1]["status"])
    return rows


def write_results(directory: Path, sweep_id: str, rows: list[dict[str, Any]]) -> Path:
    """results.json (every field) and results.md (one line per cell) in `directory`."""
    write_json_atomic(directory / "results.json", {"sweep": sweep_id, "cells": rows})
    lines = [
        f"# sweep {sweep_id}",
        "",
        "| " + " | ".join(TABLE_COLUMNS) + " |",
        "|" + "---|" * len(TABLE_COLUMNS),
    ]
    for row in rows:
        values = {**row.get("metrics", {}), **row}
        cells_text = []
        for column in TABLE_COLUMNS:
            value = values.get(column)
            if isinstance(value, float):
                value = f"{value:.4g}"
            text = "" if value is None else str(value)
            cells_text.append(text.replace("|", "/").replace("\n", " ")[:200])
        lines.append("| " + " | ".join(cells_text) + " |")
    return write_text_atomic(directory / "results.md", "\n".join(lines) + "\n")


def task_runner(
    runner: Literal["local", "dask"], workers: int, threads_per_worker: int, address: str | None
) -> Any:
    """Sequential threads (local), a Dask LocalCluster, or an existing Dask scheduler."""
    if runner == "local":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=1)
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": workers,
            "threads_per_worker": threads_per_worker,
            "processes": True,
            "dashboard_address": None,
        },
    )


def _prepare_store(tracking_uri: str, project: Path, base: str | None) -> None:
    """Create (and migrate) the MLflow store and the experiment once, before concurrent cells
    would race to do it."""
    import mlflow

    from cds.pipeline.tracking import experiment_id

    mlflow.set_tracking_uri(tracking_uri)
    params = load_params(project / base if base else project / "params.yaml")
    experiment_id(params.registry.experiment)


def run_sweep(
    grid: SweepGrid,
    project: Path,
    directory: Path,
    runner: Literal["local", "dask"] = "local",
    workers: int = 2,
    threads_per_worker: int = 1,
    address: str | None = None,
    torch_threads: int | None = None,
    dvc_remote: str | None = None,
    tracking_uri: str | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """Run the grid on the chosen runner and write the results table; returns (id, rows).

    Torch threads per cell default to the cores divided among the concurrent cells (all cores
    for the sequential runner, 1 on a remote cluster whose cores are unknown here)."""
    from cds.pipeline.tracking import project_store

    cores = os.cpu_count() or 1
    if torch_threads is None:
        if runner == "local":
            torch_threads = cores
        elif address:
            torch_threads = 1
        else:
            torch_threads = max(1, cores // (workers * threads_per_worker))
    sweep_id = f"{grid.name}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
    settings = SweepSettings(
        sweep_id=sweep_id,
        project=str(project.resolve()),
        directory=str(directory.resolve()),
        base=grid.base,
        tracking_uri=tracking_uri
        or os.environ.get("MLFLOW_TRACKING_URI")
        or project_store(project),
        torch_threads=torch_threads,
        register=grid.register_cells,
        dvc_remote=dvc_remote,
    )
    directory.mkdir(parents=True, exist_ok=True)
    _prepare_store(settings.tracking_uri, project, grid.base)
    rows = sweep.with_options(
        task_runner=task_runner(runner, workers, threads_per_worker, address)
    )(grid, settings)
    write_results(directory, sweep_id, rows)
    return sweep_id, rows
