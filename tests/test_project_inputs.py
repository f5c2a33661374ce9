"""Files named in params must be where DVC tracks them (`inputs/`), or a run is refused before
anything is written, naming the field and the value."""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from cds.config import load_params
from cds.pipeline.cli import app
from cds.pipeline.project_inputs import UntrackedInputError, check_tracked


@pytest.fixture
def clean_path():
    before = list(sys.path)
    yield
    sys.path[:] = before
    for name in ("outside_mod", "inside_mod"):
        sys.modules.pop(name, None)


def test_data_file_outside_inputs_is_refused(tmp_path):
    (tmp_path / "inputs").mkdir()
    (tmp_path / "obs.csv").write_text("x,y\n")
    (tmp_path / "inputs" / "obs.csv").write_text("x,y\n")
    params = load_params(None, ["target.name=lgcp", "target.options.data=obs.csv"])
    with pytest.raises(UntrackedInputError, match=r"target.options.data = 'obs.csv'.*inputs/"):
        check_tracked(params, tmp_path)
    check_tracked(load_params(None, ["target.options.data=inputs/obs.csv"]), tmp_path)
    outside = tmp_path.parent / "shared.csv"
    outside.write_text("x,y\n")
    with pytest.raises(UntrackedInputError, match="symlink it"):
        check_tracked(load_params(None, [f"target.options.data={outside}"]), tmp_path)
    (tmp_path / "inputs" / "link.csv").symlink_to(outside)  # a link in inputs/ is tracked
    check_tracked(load_params(None, ["target.options.data=inputs/link.csv"]), tmp_path)


def test_user_module_must_live_in_inputs(tmp_path, clean_path):
    (tmp_path / "inputs").mkdir()
    (tmp_path / "outside_mod.py").write_text("class T: ...\n")
    (tmp_path / "inputs" / "inside_mod.py").write_text("class T: ...\n")
    sys.path.insert(0, str(tmp_path))
    with pytest.raises(UntrackedInputError, match=r"target.name = 'outside_mod:T'.*move it"):
        check_tracked(load_params(None, ["target.name=outside_mod:T"]), tmp_path)
    check_tracked(load_params(None, ["target.name=inside_mod:T"]), tmp_path)
    assert str((tmp_path / "inputs").resolve()) in sys.path  # importable from there


def test_run_refuses_an_untracked_data_file_before_writing(project):
    (project / "points.csv").write_text("x,y\n0.5,0.5\n")
    before = (project / "params.yaml").read_text()
    result = CliRunner().invoke(
        app,
        ["run", "--project", str(project), "--set", "target.name=lgcp",
         "--set", "target.options.data=points.csv"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "target.options.data = 'points.csv'" in result.stderr
    assert (project / "params.yaml").read_text() == before
    assert not (project / "data" / "target").exists()
