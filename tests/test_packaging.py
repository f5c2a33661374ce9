"""The package as users install it: the core without the extras, from a built wheel in a fresh
virtual environment outside the checkout; and the messages that name a missing extra."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from cds.extras import missing_extra_message, require

ROOT = Path(__file__).resolve().parents[1]
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


def test_require_names_the_extra_of_a_missing_module():
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'cds-samplers\[pipeline\]'"):
        require("cds_no_such_module.sub", "this feature")
    assert "cds-samplers[targets]" in missing_extra_message("sklearn.datasets", "logreg")
    assert require("math", "arithmetic").sqrt(4.0) == 2.0


def test_require_does_not_hide_a_broken_module(tmp_path, monkeypatch):
    """A module that is installed but fails on its own imports is not a missing extra."""
    (tmp_path / "cds_broken_module.py").write_text("import cds_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as err:
        require("cds_broken_module", "this feature")
    assert err.value.name == "cds_no_such_dependency"
    assert "cds-samplers" not in str(err.value)


@pytest.mark.slow
def test_core_wheel_installs_and_fits_without_the_extras(tmp_path):
    """`pip install cds-samplers` (a wheel built from this checkout, into a fresh venv, run from
    a directory outside it): cds.fit trains and samples, save/load round-trips, none of the
    extras' packages is installed or imported, and the `cds` command names the extra it needs.
    """
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
    )
    (wheel,) = wheels.glob("cds_samplers-*.whl")
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    torch_pin = f"torch=={_installed('torch')}"  # the build this checkout runs on (CPU here)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", torch_pin, str(wheel)], check=True
    )
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
    import json

    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["version"] == _installed("cds-samplers")
    assert report["same"]
    # the smoke preset checks that the install works; quality is tests/test_fit.py's job
    assert report["shape"] == [4000, 2] and report["finite"]
    assert not set(report["modules"]) & {*PIPELINE_MODULES, *TARGET_MODULES}
    freeze = subprocess.run(
        [str(python), "-m", "pip", "freeze"], capture_output=True, text=True, check=True
    ).stdout.lower()
    assert not any(f"{name}==" in freeze for name in ("prefect", "mlflow", "dvc", "pot"))
    command = subprocess.run(
        [str(env_dir / "bin" / "cds"), "targets"], cwd=work, capture_output=True, text=True
    )
    assert command.returncode == 2
    assert "pip install 'cds-samplers[pipeline]'" in command.stderr
    version = subprocess.run(
        [str(env_dir / "bin" / "cds"), "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.strip() == f"cds {report['version']}"


def _installed(distribution: str) -> str:
    from importlib.metadata import version

    return version(distribution)
