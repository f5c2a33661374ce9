"""Registered models travel: an SCDS sampler (which needs its target at sampling time) trained on
a user density that reads a data file, registered in one project, loads and samples in a fresh
process in another directory after the project's own files are gone, with the density's
module nowhere on the path; it is served over REST by MLflow's own scoring server; and the
model asks its consumers for no more than sampling needs."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cds.pipeline.flows import retrain
from tests.conftest import make_project
from tests.test_retraining import DENSITY, git

pytestmark = pytest.mark.slow  # a real pipeline: run by CI, not in the edit-test loop

#: In a fresh interpreter: load the champion through the registry and sample; report where the
#: density's module came from.
CONSUMER = """
import json, sys
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
frame = model.predict(pd.DataFrame({"n": [3000], "seed": [0]}))
again = model.predict(pd.DataFrame({"n": [3000], "seed": [0]}))
print(json.dumps({
    "shape": list(frame.shape),
    "finite": bool(frame.notna().all().all()),
    "same": bool(frame.equals(again)),
    "module": sys.modules["dens"].__file__,
}))
"""


@pytest.fixture(scope="module")
def registered(prefect_api, tmp_path_factory):
    root = make_project(
        tmp_path_factory.mktemp("portable") / "project",
        "method=scds",
        "target.name=dens:Shifted",
        "target.options.data=inputs/mean.csv",
    )
    (root / "inputs" / "dens.py").write_text(DENSITY)
    (root / "inputs" / "mean.csv").write_text("1.0,-1.0\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "user target")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        summary = retrain(str(root), echo=False)
    assert summary["version"] == "1"
    return root, uri, f"models:/{summary['model']}@champion"


def test_a_user_density_model_samples_anywhere_without_its_project(registered, tmp_path):
    root, uri, model = registered
    shutil.rmtree(root / "inputs")  # the module and the data file are gone from the project
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", CONSUMER, model],
        cwd=elsewhere,
        env={**env, "MLFLOW_TRACKING_URI": uri},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["shape"] == [3000, 2] and report["finite"] and report["same"]
    # the module imported is the model's own copy (its code path), not the project's inputs/
    module = Path(report["module"])
    assert module.parent.name == "code" and module.parent.parent.name == "artifacts", module


def test_the_model_carries_its_target_and_asks_only_for_what_sampling_needs(registered):
    import mlflow

    _, uri, model = registered
    mlflow.set_tracking_uri(uri)
    local = Path(mlflow.artifacts.download_artifacts(model))
    assert (local / "code" / "dens.py").read_text() == DENSITY
    assert (local / "code" / "cds" / "samplers.py").is_file()
    config = json.dumps(
        __import__("yaml").safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    )
    assert '"inputs/mean.csv": "target_file_0"' in config
    assert (local / "artifacts" / "mean.csv").read_text() == "1.0,-1.0\n"
    requirements = {
        line.split("==")[0] for line in (local / "requirements.txt").read_text().splitlines()
    }
    assert {"torch", "mlflow-skinny", "numpy", "pandas"} <= requirements
    assert not requirements & {"scikit-learn", "matplotlib", "sqlalchemy", "alembic", "prefect"}


def test_mlflow_serves_the_champion_over_rest(registered, tmp_path):
    """`mlflow models serve -m models:/NAME@champion --env-manager local` (as the README says):
    POST /invocations returns the samples the pyfunc model draws for the same n and seed."""
    import mlflow
    import pandas as pd

    _, uri, model = registered
    with socket.socket() as probe:  # a free port on localhost
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    bin_dir = Path(sys.executable).parent
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        "MLFLOW_TRACKING_URI": uri,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }
    server = subprocess.Popen(
        [str(bin_dir / "mlflow"), "models", "serve", "-m", model, "--env-manager", "local",
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as ping:
                    if ping.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert server.poll() is None, server.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "the scoring server did not start in 120 s"
            time.sleep(1.0)
        body = {"dataframe_split": {"columns": ["n", "seed"], "data": [[500, 7]]}}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            served = pd.DataFrame(json.loads(response.read())["predictions"])
    finally:
        server.terminate()
        server.wait(timeout=30)
    mlflow.set_tracking_uri(uri)
    local = mlflow.pyfunc.load_model(model).predict(pd.DataFrame({"n": [500], "seed": [7]}))
    assert list(served.columns) == ["x0", "x1"] and len(served) == 500
    assert served.to_numpy() == pytest.approx(local.to_numpy(), rel=1e-6, abs=1e-6)
