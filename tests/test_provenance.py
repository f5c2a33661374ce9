"""What a checkpoint's fingerprint and a version's protocol record about the target's files:
exactly the files the target reads, by path relative to the project, by content."""

from __future__ import annotations

import hashlib
import sys

import pytest

from cds.provenance import code_version, input_digests


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "README.md").write_text("guide\n")
    (tmp_path / "inputs" / "notes.txt").write_text("unrelated\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path / "inputs"))
    yield tmp_path
    sys.modules.pop("prov_dens", None)


def test_builtin_targets_record_only_the_files_their_options_name(project):
    assert input_digests("gmm9", {}) == {}  # an unrelated file in inputs/ is not the target's
    (project / "inputs" / "obs.csv").write_text("x,y\n")
    assert input_digests("lgcp", {"data": "inputs/obs.csv", "grid_size": 4}) == {
        "inputs/obs.csv": sha("x,y\n")
    }


def test_a_user_module_in_inputs_records_everything_there_but_its_guide(project):
    (project / "inputs" / "prov_dens.py").write_text("class T: ...\n")
    (project / "inputs" / "__pycache__").mkdir()
    (project / "inputs" / "__pycache__" / "prov_dens.cpython-311.pyc").write_bytes(b"\0")
    assert input_digests("prov_dens:T", {}) == {
        "inputs/notes.txt": sha("unrelated\n"),
        "inputs/prov_dens.py": sha("class T: ...\n"),
    }


def test_installed_modules_are_not_project_files(project):
    assert input_digests("json.decoder:JSONDecoder", {}) == {}


def test_code_version_is_a_stable_digest_of_the_package():
    assert code_version() == code_version() and len(code_version()) == 16
