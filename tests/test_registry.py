"""The MLflow registry with a real SQLite store: registration, the quality gate on the
`champion` alias, and loading the champion in a separate process."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import textwrap

import mlflow
import pytest
from pydantic import ValidationError

from cds.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from cds.config import RegistryParams, load_params
from cds.pipeline.layout import Layout
from cds.pipeline.model_registry import (
    CHAMPION,
    EVIDENCE,
    evaluation_protocol,
    gate,
    model_name,
    register_sampler,
)
from cds.pipeline.publish import publish
from cds.samplers import load_sampler

TOL = RegistryParams(sinkhorn_tolerance=0.05, log_z_tolerance=0.05)
CHAMP = {
    "sinkhorn_ratio": 1.20,
    "sinkhorn_ratio_se": 0.0,
    "abs_dlogZ_is": 0.20,
    "log_Z_is": -0.20,
    "log_Z_is_se": 0.01,
    "elbo": -0.5,
    "elbo_se": 0.01,
    "ess": 0.6,
    "weights_valid": True,
}
PROTOCOL = {"protocol.n": "6000", "protocol.reference_seed": "1", "protocol.method": "cdds"}


def test_gate_compares_the_floor_ratio_relatively():
    assert gate({**CHAMP, "sinkhorn_ratio": 1.25}, CHAMP, TOL)[0]
    ok, reason = gate({**CHAMP, "sinkhorn_ratio": 1.27}, CHAMP, TOL)
    assert not ok and "sinkhorn/floor 1.27 > 1.26" in reason
    # the ratios' Monte Carlo error widens the tolerance by 2 standard errors: 1.26 + 0.04
    noisy = {"sinkhorn_ratio_se": 0.02}
    assert gate({**CHAMP, **noisy, "sinkhorn_ratio": 1.29}, {**CHAMP, **noisy}, TOL)[0]
    assert not gate({**CHAMP, **noisy, "sinkhorn_ratio": 1.31}, {**CHAMP, **noisy}, TOL)[0]


def test_gate_log_z_tolerance_accounts_for_the_monte_carlo_error():
    ok, reason = gate({**CHAMP, "abs_dlogZ_is": 0.30}, CHAMP, TOL)
    assert not ok and "|dlogZ| 0.3 > 0.27" in reason  # 0.2 + 0.05 + 2·0.01
    # at ESS ≈ 0.05 the standard error is large, and the same difference is no evidence
    noisy = {"log_Z_is_se": 0.1}
    assert gate({**CHAMP, **noisy, "abs_dlogZ_is": 0.30}, {**CHAMP, **noisy}, TOL)[0]
    ok, reason = gate({**CHAMP, "elbo": -0.7}, CHAMP, TOL)
    assert not ok and "ELBO -0.7 < -0.57" in reason
    ok, reason = gate({**CHAMP, "ess": 0.25}, CHAMP, TOL)
    assert not ok and "ESS 0.25 < 0.3" in reason


def test_gate_on_weights_without_exact_samples_or_log_z():
    """lgcp, logreg, user densities: ELBO, IS log Z, ESS and validity only."""
    champ = {**CHAMP, "sinkhorn_ratio": None, "abs_dlogZ_is": None}
    better = {**champ, "elbo": -0.4, "log_Z_is": -0.1}
    ok, reason = gate(better, champ, TOL)
    assert ok and "ELBO" in reason and "IS log Z" in reason and "sinkhorn" not in reason
    assert not gate({**champ, "log_Z_is": -0.4}, champ, TOL)[0]


def test_gate_never_promotes_on_nothing_comparable_or_invalid_weights():
    bare = {key: None for key in CHAMP}
    ok, reason = gate(bare, bare, TOL)
    assert not ok and "nothing comparable" in reason
    # without exact samples the weights are all there is: invalid ones never pass
    invalid = {**bare, "weights_valid": False}
    ok, reason = gate(invalid, CHAMP, TOL)
    assert not ok and "weights are invalid" in reason
    assert not gate(invalid, None, TOL)[0]
    # with exact samples the quality decides and the lost log Z is noted
    folded = {**CHAMP, "weights_valid": False, "log_Z_is": None, "elbo": None}
    ok, reason = gate(folded, CHAMP, TOL)
    assert ok and "weights invalid (the map folds)" in reason and "sinkhorn/floor" in reason
    assert not gate({**folded, "sinkhorn_ratio": 1.4}, CHAMP, TOL)[0]
    assert gate(folded, None, TOL)[0]
    # against an invalid champion, valid weights are no regression: the quality decides
    assert gate(CHAMP, folded, TOL)[0]
    assert gate(CHAMP, None, TOL) == (True, "first version")
    assert not gate({**CHAMP, "sinkhorn_ratio": float("nan")}, None, TOL)[0]
    # a sample of zero target density: ELBO −inf, no error bar; the worst ELBO, not a failure
    assert gate({**CHAMP, "elbo": -math.inf, "elbo_se": math.inf}, None, TOL)[0]
    assert not gate({**CHAMP, "elbo": -math.inf, "elbo_se": math.inf}, CHAMP, TOL)[0]


def test_gate_refuses_another_protocol_and_names_the_difference():
    other = {**PROTOCOL, "protocol.n": "500"}
    ok, reason = gate({**CHAMP, "sinkhorn_ratio": 0.5}, CHAMP, TOL, (other, PROTOCOL))
    assert not ok and "another protocol" in reason and "protocol.n: '6000' → '500'" in reason
    assert gate(CHAMP, CHAMP, TOL, (dict(PROTOCOL), PROTOCOL))[0]


def test_new_inputs_are_judged_on_their_own():
    """Only the content of the target's files changed (new data): the champion was scored on a
    density that no longer exists, so the candidate is judged as a first version, even when
    its figures are worse than the champion's; any other difference is still refused."""
    old = {**PROTOCOL, "protocol.inputs_sha256": '{"inputs/obs.csv": "aa"}'}
    new = {**PROTOCOL, "protocol.inputs_sha256": '{"inputs/obs.csv": "bb"}'}
    worse = {**CHAMP, "sinkhorn_ratio": 3.0}
    ok, reason = gate(worse, CHAMP, TOL, (new, old))
    assert ok and "inputs changed" in reason and "first version" in reason
    broken = {**CHAMP, "sinkhorn_ratio": float("nan")}
    assert not gate(broken, CHAMP, TOL, (new, old))[0]  # the absolute checks still apply
    assert not gate(worse, CHAMP, TOL, ({**new, "protocol.n": "500"}, old))[0]
    # a champion of an older cds recorded its data files as data_sha256: no files on either
    # side is no change, and the candidate is compared as usual
    legacy = {**PROTOCOL, "protocol.data_sha256": "{}"}
    current = {**PROTOCOL, "protocol.inputs_sha256": "{}"}
    ok, reason = gate(worse, CHAMP, TOL, (current, legacy))
    assert not ok and "inputs changed" not in reason
    legacy = {**PROTOCOL, "protocol.data_sha256": '{"data": "aa"}'}  # keyed by option name
    ok, reason = gate(worse, CHAMP, TOL, (old, legacy))
    assert not ok and "inputs changed" not in reason  # same content: compared as usual


def test_tolerances_that_switch_the_gate_off_are_refused():
    for field, value in [
        ("sinkhorn_tolerance", math.inf),
        ("log_z_tolerance", math.nan),
        ("ess_tolerance", 1.0),
        ("error_multiplier", 100.0),
    ]:
        with pytest.raises(ValidationError, match=field):
            RegistryParams(**{field: value})


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
        "device": model.model_config["device"],
        "on_cpu": bool(
            mlflow.pyfunc.load_model(uri, model_config={"device": "cpu"}).predict(frame).equals(a)
        ),
    }))
    """
)


@pytest.mark.slow
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

    assert version.tags["protocol.n"] == str(params.evaluation.n_samples)
    assert version.tags["protocol.metric_version"] and version.tags["protocol.method"] == "cdds"

    # Every gate rule through the real registry: each candidate is a different checkpoint
    # with crafted evaluation figures; the alias moves only for the better one.
    metrics = json.loads(layout.metrics.read_text())
    protocol = evaluation_protocol(json.loads(layout.report.read_text()))
    payload = load_checkpoint(layout.student)
    experiment = client.get_experiment_by_name("cds").experiment_id

    def candidate(i: int, figures: dict, candidate_protocol: dict = protocol):
        changed = {key: value + 0.01 * i for key, value in payload["ema"].items()}
        path = save_checkpoint(
            layout.student.with_name(f"other{i}.pt"), {**payload, "ema": changed}
        )
        with mlflow.start_run(experiment_id=experiment) as run:
            pass
        return register_sampler(
            run.info.run_id, path, {**metrics, **figures}, params.registry, {}, candidate_protocol
        )

    ratio = metrics["sinkhorn_ratio"]
    refused = [
        candidate(1, {"sinkhorn_ratio": 2 * ratio}),
        candidate(2, {"sinkhorn_ratio": 0.5 * ratio}, {**protocol, "protocol.n": "500"}),
        candidate(
            3, {"weights_valid": False, "sinkhorn_ratio": None, "log_Z_is": None, "elbo": None}
        ),
        candidate(4, {key: None for key in EVIDENCE}),
    ]
    reasons = [r.reason for r in refused]
    assert "sinkhorn/floor" in reasons[0] and "another protocol" in reasons[1]
    assert "protocol.n" in reasons[1] and "weights are invalid" in reasons[2]
    assert "nothing comparable" in reasons[3]
    for i, registration in enumerate(refused, start=2):
        assert not registration.gate_passed and registration.version == str(i)
        assert registration.champion == "1"
        assert client.get_model_version("cds-gmm9", str(i)).tags["gate"] == "failed"
    assert str(client.get_model_version_by_alias("cds-gmm9", CHAMPION).version) == "1"
    better = candidate(5, {"sinkhorn_ratio": 0.9 * ratio})
    assert better.gate_passed and better.champion == better.version == "6"
    assert str(client.get_model_version_by_alias("cds-gmm9", CHAMPION).version) == "6"

    # A registered file replaced in the artifact store is refused: its md5 is not the tag's.
    md5 = client.get_model_version("cds-gmm9", "1").tags["checkpoint_md5"]
    (artifact,) = (
        path
        for path in (trained_copy / "mlartifacts").rglob("sampler.pt")
        if hashlib.md5(path.read_bytes()).hexdigest() == md5
    )
    original = artifact.read_bytes()
    artifact.write_bytes(layout.student.with_name("other1.pt").read_bytes())
    with pytest.raises(CheckpointError, match="not the file that was registered"):
        load_sampler("models:/cds-gmm9/1")
    artifact.write_bytes(original)

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
        "device": "cpu",  # consumers sample on the CPU unless they ask
        "on_cpu": True,
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
