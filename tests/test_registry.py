"""The MLflow registry with a real SQLite store: registration, the quality gate on the
`champion` alias, and loading the champion in a separate process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import mlflow
import pytest

from cds.checkpoints import load_checkpoint, save_checkpoint
from cds.config import RegistryParams, load_params
from pipelines.layout import Layout
from pipelines.publish import publish
from pipelines.registry import CHAMPION, gate, model_name, register_sampler

TOL = RegistryParams(sinkhorn_tolerance=0.05, log_z_tolerance=0.05)


def test_gate_compares_sinkhorn_relatively_and_log_z_absolutely():
    champ = {"sinkhorn": 0.10, "abs_dlogZ_is": 0.20}
    assert gate({"sinkhorn": 0.104, "abs_dlogZ_is": 0.24}, champ, TOL)[0]
    ok, reason = gate({"sinkhorn": 0.106, "abs_dlogZ_is": 0.0}, champ, TOL)
    assert not ok and "sinkhorn 0.106 > 0.105" in reason
    ok, reason = gate({"sinkhorn": 0.09, "abs_dlogZ_is": 0.26}, champ, TOL)
    assert not ok and "|dlogZ| 0.26 > 0.25" in reason
    assert gate({"sinkhorn": 0.5, "abs_dlogZ_is": None}, None, TOL) == (True, "first version")
    assert not gate({"sinkhorn": float("nan"), "abs_dlogZ_is": 0.1}, None, TOL)[0]
    # without log Z (unknown for the target) only the Sinkhorn is compared
    assert gate({"sinkhorn": 0.1, "abs_dlogZ_is": None}, champ, TOL)[0]


def test_model_name_defaults_to_target_and_is_uri_safe():
    assert model_name(RegistryParams(), "gmm9") == "cds-gmm9"
    assert model_name(RegistryParams(), "my.mod:Density") == "cds-my.mod-Density"
    assert model_name(RegistryParams(model_name="team-sampler"), "gmm9") == "team-sampler"


CONSUMER = textwrap.dedent(
    """
    import json, sys
    import mlflow, pandas as pd, torch
    import cds
    uri = sys.argv[1]
    model = mlflow.pyfunc.load_model(uri)
    frame = pd.DataFrame({"n": [50], "seed": [3]})
    a, b = model.predict(frame), model.predict(frame)
    c = model.predict(pd.DataFrame({"n": [50], "seed": [4]}))
    native = cds.load_sampler(uri).sample(50, torch.Generator().manual_seed(3))
    print(json.dumps({
        "columns": list(a.columns), "rows": len(a),
        "same_seed_equal": bool(a.equals(b)), "other_seed_differs": not a.equals(c),
        "native_matches": bool(torch.allclose(torch.tensor(a.values), native)),
        "inputs": [c.name for c in model.metadata.get_input_schema().inputs],
    }))
    """
)


def test_register_gate_and_load_champion_in_another_process(trained_copy):
    layout = Layout(trained_copy)
    params = load_params(layout.params)
    first = publish(params, layout, statuses={})
    assert first["model"] == "cds-gmm9" and first["version"] == "1"
    assert first["gate"] == "passed" and first["champion"] == "1"

    # Publishing the same checkpoint again creates no version.
    again = publish(params, layout, statuses={})
    assert again["already_registered"] and again["version"] == "1"

    client = mlflow.MlflowClient()
    version = client.get_model_version("cds-gmm9", "1")
    assert version.tags["method"] == "cdds" and version.tags["nfe"] == "1"
    assert version.tags["git_commit"] and float(version.tags["sinkhorn"]) > 0

    # A worse candidate (a different checkpoint whose Sinkhorn is twice the champion's)
    # is registered, tagged gate=failed, and does not take the alias.
    metrics = json.loads(layout.metrics.read_text())
    worse = {**metrics, "sinkhorn": 2 * metrics["sinkhorn"]}
    payload = load_checkpoint(layout.student)
    payload["ema"] = {key: value + 0.01 for key, value in payload["ema"].items()}
    other = save_checkpoint(layout.student.with_name("other.pt"), payload)
    experiment = client.get_experiment_by_name("cds").experiment_id
    with mlflow.start_run(experiment_id=experiment) as run:
        pass
    failed = register_sampler(run.info.run_id, other, worse, params.registry, {})
    assert not failed.gate_passed and failed.version == "2" and failed.champion == "1"
    assert client.get_model_version("cds-gmm9", "2").tags["gate"] == "failed"
    assert str(client.get_model_version_by_alias("cds-gmm9", CHAMPION).version) == "1"

    result = subprocess.run(
        [sys.executable, "-c", CONSUMER, "models:/cds-gmm9@champion"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=trained_copy.parent,  # not the project: the URI comes from the environment
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out == {
        "columns": ["x0", "x1"],
        "rows": 50,
        "same_seed_equal": True,
        "other_seed_differs": True,
        "native_matches": True,
        "inputs": ["n", "seed"],
    }


@pytest.mark.parametrize("frame", [{"rows": [1]}, {"n": [10]}])
def test_predict_rejects_frames_without_n_and_seed(frame, trained_copy):
    import pandas as pd

    from cds.pyfunc_model import SamplerModel

    model = SamplerModel()

    context = mlflow.pyfunc.PythonModelContext(
        artifacts={"sampler": str(Layout(trained_copy).student)}, model_config={}
    )
    model.load_context(context)
    with pytest.raises(ValueError, match="input needs columns 'n' and 'seed'"):
        model.predict(None, pd.DataFrame(frame))
