"""The package as users install it, from a wheel built from this checkout into fresh virtual
environments, run from directories outside it: the core without the extras; the pipeline extra
starting a project with `cds init`, running it and sampling its model; and the messages that
name a missing extra."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from cds.extras import EXTRA_OF, missing_extra_message, require

ROOT = Path(__file__).resolve().parents[1]
#: The checkout's files that cds/pipeline/project/*.template link to (copied with the sources).
TEMPLATE_SOURCES = ("dvc.yaml", ".gitignore", ".dvcignore", "data/.gitignore")
PIPELINE_MODULES = ("prefect", "mlflow", "dvc", "dask", "typer", "sqlalchemy")
TARGET_MODULES = ("sklearn", "matplotlib", "pandas", "PIL")

#: Run in the fresh environment: fit a tiny density, sample, save, load, and list what the
#: core imported.
CORE_SCRIPT = """
import json, sys, torch
import cds

def log_prob(x):
    return -0.5 * ((x - 1.0) ** 2).sum(dim=1)

sampler = cds.fit(log_prob, dim=2, method="cdds", preset="smoke", workdir=sys.argv[1])
x = sampler.sample(4000, torch.Generator().manual_seed(0))
sampler.save(sys.argv[1] + "/s.pt")
again = cds.load_sampler(sys.argv[1] + "/s.pt").sample(4000, torch.Generator().manual_seed(0))
print(json.dumps({
    "version": cds.__version__,
    "shape": list(x.shape),
    "finite": bool(torch.isfinite(x).all()),
    "same": bool(torch.equal(x, again)),
    "modules": sorted({name.split(".")[0] for name in sys.modules}),
}))
"""


def test_require_names_the_extra_of_a_missing_module(monkeypatch):
    monkeypatch.setitem(EXTRA_OF, "cds_no_such_module", "pipeline")
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'cds-samplers\[pipeline\]'"):
        require("cds_no_such_module.sub", "this feature")
    assert "cds-samplers[targets]" in missing_extra_message("sklearn.datasets", "logreg")
    assert missing_extra_message("cds_unlisted", "x").endswith("pip install cds_unlisted")
    assert require("math", "arithmetic").sqrt(4.0) == 2.0


def test_require_does_not_hide_a_broken_module(tmp_path, monkeypatch):
    """A module that is installed but fails on its own imports is not a missing extra."""
    (tmp_path / "cds_broken_module.py").write_text("import cds_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as err:
        require("cds_broken_module", "this feature")
    assert err.value.name == "cds_no_such_dependency"
    assert "cds-samplers" not in str(err.value)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cds-samplers built from a copy of this checkout's sources (so that no build/ directory is
    left in the checkout; without build isolation: no download)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE", *TEMPLATE_SOURCES):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "cds", source / "cds", symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
    )
    wheels = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "-w", str(wheels), str(source)],
        check=True,
    )  # fmt: skip
    (built,) = wheels.glob("cds_samplers-*.whl")
    return built


def fresh_env(where: Path, *requirements: str) -> Path:
    """A new virtual environment at `where` with this checkout's torch build (from PyTorch's
    index for its variant, as the Makefile installs it), then `requirements`; its bin/."""
    venv.create(where, with_pip=True)
    pip = [str(where / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    installed = _installed("torch")
    index = f"https://download.pytorch.org/whl/{installed.partition('+')[2] or 'cpu'}"
    # one retry: where PyTorch's index is unreachable, the local wheel (find-links) serves
    torch = [f"torch=={installed}", "--extra-index-url", index, "--retries", "1"]
    subprocess.run([*pip, *torch], check=True)
    subprocess.run([*pip, *requirements], check=True)
    return where / "bin"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the checkout's paths and registry settings."""
    drop = ("PYTHONPATH", "MLFLOW_TRACKING_URI", "PREFECT_API_URL")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


@pytest.mark.slow
def test_core_wheel_installs_and_fits_without_the_extras(wheel, tmp_path):
    """`pip install cds-samplers` (a wheel built from this checkout, into a fresh venv, run from
    a directory outside it): cds.fit trains and samples, save/load round-trips, none of the
    extras' packages is installed or imported, and the `cds` command names the extra it needs.
    """
    bin_dir = fresh_env(tmp_path / "env", str(wheel))
    python = bin_dir / "python"
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [str(python), "-c", CORE_SCRIPT, str(work / "fit")],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["version"] == _installed("cds-samplers")
    assert report["same"]
    # the smoke preset checks that the install works; quality is tests/test_fit.py's job
    assert report["shape"] == [4000, 2] and report["finite"]
    assert not set(report["modules"]) & {*PIPELINE_MODULES, *TARGET_MODULES}
    freeze = subprocess.run(
        [str(python), "-m", "pip", "freeze"], capture_output=True, text=True, check=True
    ).stdout.lower()
    extras = ("prefect", "mlflow", "dvc", "pot", "scikit-learn", "matplotlib", "pandas", "pillow")
    assert not any(f"\n{name}==" in f"\n{freeze}" for name in extras)
    command = subprocess.run(
        [str(bin_dir / "cds"), "targets"], cwd=work, capture_output=True, text=True
    )
    assert command.returncode == 2
    assert "pip install 'cds-samplers[pipeline]'" in command.stderr
    version = subprocess.run(
        [str(bin_dir / "cds"), "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.strip() == f"cds {report['version']}"


USER_DENSITY = """
import torch


class MyDensity:
    \"\"\"An unnormalized Gaussian at (1, -1).\"\"\"

    dim = 2

    def log_prob(self, x):
        return -0.5 * ((x - torch.tensor([1.0, -1.0])) ** 2).sum(dim=1)
"""


@pytest.mark.slow
def test_pipeline_wheel_starts_runs_and_serves_a_project_anywhere(wheel, tmp_path):
    """`pip install cds-samplers[pipeline]` (the lock's versions, then the wheel): `cds init`
    with the user's density module starts a project outside the checkout, `cds run --preset
    smoke` trains an SCDS sampler, evaluates and registers it there, and `cds sample` draws from
    the champion in a third directory after the project's inputs/ are gone (the model carries
    the density's module)."""
    bin_dir = fresh_env(tmp_path / "env", "-r", str(ROOT / "requirements.lock"))
    subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)],
        check=True,
    )
    home = tmp_path / "home"
    home.mkdir()
    (home / "mydens.py").write_text(USER_DENSITY)
    env = clean_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    def cds(*args: str, cwd: Path) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(bin_dir / "cds"), *args], cwd=cwd, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, (args, result.stdout[-2000:], result.stderr[-3000:])
        return result

    cds("init", "proj", "--target", "mydens:MyDensity", cwd=home)
    project = home / "proj"
    assert (project / "inputs" / "mydens.py").read_text() == USER_DENSITY
    # the stages' code dependency is the installed package, not this checkout
    assert (project / "cds").resolve().is_relative_to(bin_dir.parent.resolve())
    # SCDS: its sampler needs the user's density at sampling time, which the model carries
    out = cds("run", "--preset", "smoke", "--set", "method=scds", cwd=project).stdout
    assert "champion:  models:/cds-mydens-MyDensity@champion = version 1" in out
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{project / 'mlflow.db'}"
    shutil.rmtree(project / "inputs")  # the density's module is nowhere on the path
    cds("sample", "--model", "models:/cds-mydens-MyDensity@champion", "-n", "500",
        "--seed", "0", "--out", "x.npy", "--trust-target-code", cwd=elsewhere)  # fmt: skip
    import numpy as np

    x = np.load(elsewhere / "x.npy")
    assert x.shape == (500, 2) and np.isfinite(x).all()


def _installed(distribution: str) -> str:
    from importlib.metadata import version

    return version(distribution)
