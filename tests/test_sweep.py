"""Sweeps on a real Dask LocalCluster through prefect-dask (and the sequential runner), over
real git + DVC working copies sharing one DVC cache and one MLflow store."""

from __future__ import annotations

import json

import mlflow
import pytest

from cds.pipeline.sweep import SweepGrid, cells, load_grid, run_sweep
from tests.conftest import make_project

GRID = SweepGrid(name="t", targets=["gmm9"], seeds=[0, 1])


def test_cells_are_the_grid_product_with_readable_ids():
    grid = SweepGrid(targets=["gmm9", "my.mod:Cls"], methods=["cdds", "scds"], seeds=[3],
                     overrides=[{}, {"teacher.optim.lr": 0.001}])  # fmt: skip
    ids = [c.id for c in cells(grid)]
    assert len(ids) == 8 and len(set(ids)) == 8
    assert "my.mod-Cls-scds-s3-o1" in ids
    assert cells(grid)[-1].overrides == ["teacher.optim.lr=0.001"]


def test_grid_file_is_validated(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("targets: [gmm9]\nseeds: one\n")
    with pytest.raises(ValueError, match="seeds"):
        load_grid(path)
    path.write_text("targets: [gmm9]\nregister: true\n")
    assert load_grid(path).register_cells  # the file's key is `register`
    assert not SweepGrid().register_cells


def _by_cell(rows):
    return {row["cell"]: row for row in rows}


@pytest.mark.slow
def test_dask_grid_equals_sequential_then_rerun_trains_nothing(tmp_path, prefect_api):
    project = make_project(tmp_path / "project")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep_id, dask_rows = run_sweep(
        GRID, project, tmp_path / "dask", "dask", workers=2, torch_threads=1, tracking_uri=store
    )
    _, local_rows = run_sweep(
        GRID, project, tmp_path / "local", "local", torch_threads=1, tracking_uri=store
    )
    dask_cells, local_cells = _by_cell(dask_rows), _by_cell(local_rows)
    assert sorted(dask_cells) == ["gmm9-cdds-s0", "gmm9-cdds-s1"]
    for cell, row in dask_cells.items():
        assert row["status"] == "ok", row["error"]
        assert row["trained"]
        assert row["metrics"]["sinkhorn"] == local_cells[cell]["metrics"]["sinkhorn"], cell
    assert dask_cells["gmm9-cdds-s0"]["metrics"] != dask_cells["gmm9-cdds-s1"]["metrics"]

    table = json.loads((tmp_path / "dask" / "results.json").read_text())
    assert table["sweep"] == sweep_id and len(table["cells"]) == 2
    assert "| gmm9-cdds-s0 | ok |" in (tmp_path / "dask" / "results.md").read_text()
    mlflow.set_tracking_uri(store)
    tagged = mlflow.search_runs(
        experiment_names=["cds"],
        filter_string=f"tags.sweep = '{sweep_id}'",
        output_format="list",
    )
    assert len(tagged) == 2 * 6  # a parent and five nested stage runs per cell, all tagged
    parents = [r for r in tagged if r.info.run_name.startswith("retrain")]
    assert sorted(r.data.tags["cell"] for r in parents) == sorted(dask_cells)

    # Re-run with one more, invalid, target: the two done cells train nothing, the invalid
    # ones fail alone with their error in the table.
    grid = GRID.model_copy(update={"targets": ["gmm9", "nosuch"]})
    _, rerun = run_sweep(
        grid, project, tmp_path / "dask", "dask", workers=2, torch_threads=1, tracking_uri=store
    )
    rerun_cells = _by_cell(rerun)
    for cell in dask_cells:
        assert rerun_cells[cell]["status"] == "ok" and not rerun_cells[cell]["trained"]
        assert set(rerun_cells[cell]["stages"].values()) == {"cached"}
    for seed in (0, 1):
        bad = rerun_cells[f"nosuch-cdds-s{seed}"]
        assert bad["status"] == "failed" and "unknown target 'nosuch'" in bad["error"]


@pytest.mark.slow
def test_cells_share_results_through_a_dvc_remote(tmp_path, prefect_api):
    """A cell pushes to the remote; on a machine without the cache (simulated by deleting it
    and the outputs) the re-run pulls instead of training."""
    import shutil

    project = make_project(tmp_path / "project")
    remote = tmp_path / "remote"
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    grid = SweepGrid(name="r", targets=["gmm9"], seeds=[0])
    _, rows = run_sweep(grid, project, tmp_path / "s", dvc_remote=str(remote), tracking_uri=store)
    assert rows[0]["status"] == "ok" and rows[0]["trained"], rows[0]["error"]
    assert any(remote.rglob("*")), "nothing was pushed"

    shutil.rmtree(project / ".dvc" / "cache")
    shutil.rmtree(tmp_path / "s" / "cells" / "gmm9-cdds-s0" / "data" / "teacher")
    shutil.rmtree(tmp_path / "s" / "cells" / "gmm9-cdds-s0" / "data" / "student")
    _, rows = run_sweep(grid, project, tmp_path / "s", dvc_remote=str(remote), tracking_uri=store)
    assert rows[0]["status"] == "ok" and not rows[0]["trained"], rows[0]["stages"]


@pytest.mark.slow
def test_the_methods_of_one_seed_share_one_teacher(tmp_path, prefect_api):
    """The SCDS cell starts from the CDDS cell's finished teacher instead of training its own:
    the same checkpoint, log and teacher metrics, and no training time of its own."""
    from cds.checkpoints import load_checkpoint
    from cds.pipeline.layout import Layout
    from cds.pipeline.timings import read_timings

    project = make_project(tmp_path / "project")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    grid = SweepGrid(name="m", targets=["gmm9"], methods=["cdds", "scds"], seeds=[0])
    _, rows = run_sweep(grid, project, tmp_path / "s", torch_threads=1, tracking_uri=store)
    assert [row["status"] for row in rows] == ["ok", "ok"], [row["error"] for row in rows]
    cdds, scds = (Layout(tmp_path / "s" / "cells" / f"gmm9-{m}-s0") for m in ("cdds", "scds"))
    first, second = load_checkpoint(cdds.teacher), load_checkpoint(scds.teacher)
    assert cdds.teacher.read_bytes() == scds.teacher.read_bytes()
    assert read_timings(cdds.root, "teacher")["train_seconds"] > 0
    handed_on = read_timings(scds.root, "teacher")
    assert handed_on["train_seconds"] == 0.0  # not trained, and the depositing cell's time:
    assert handed_on["shared_train_seconds"] == read_timings(cdds.root, "teacher")["train_seconds"]
    assert first["fingerprint"] == second["fingerprint"]
    assert scds.teacher_log.read_text() == cdds.teacher_log.read_text()
    teacher_metrics = [json.loads(layout.report.read_text())["teacher"] for layout in (cdds, scds)]
    assert teacher_metrics[0] == teacher_metrics[1]
    assert len(list((tmp_path / "s" / "teachers").glob("*.pt"))) == 1
