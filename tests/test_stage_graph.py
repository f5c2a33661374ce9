"""The stage graph read from dvc.yaml: execution order and the params each stage lists."""

from __future__ import annotations

from pathlib import Path

import yaml

from cds.config import load_params
from cds.pipeline.stage_graph import DVC_YAML, STAGES, read_stages, stage_params


def _outs(spec: dict) -> list[str]:
    return [next(iter(o)) if isinstance(o, dict) else o for o in spec.get("outs", [])]


def test_stages_are_in_an_order_where_each_reads_only_earlier_outputs():
    stages = yaml.safe_load(DVC_YAML.read_text())["stages"]
    assert tuple(stages) == STAGES
    produced: list[str] = []
    for name in STAGES:
        for dep in stages[name]["deps"]:
            producers = [o for s in STAGES for o in _outs(stages[s]) if dep.startswith(o)]
            assert all(o in produced for o in producers), f"{name} reads {dep} before it is made"
        produced += _outs(stages[name])


def test_stage_params_are_the_values_dvc_tracks(tmp_path: Path):
    raw = load_params(None, ["sde.prior_truncation=3.5"]).model_dump()
    target = stage_params(raw, "target")
    assert set(target) == set(read_stages()[0].params)
    assert target["sde.prior_truncation"] == 3.5 and target["target"] == raw["target"]
    other = tmp_path / "dvc.yaml"
    other.write_text(yaml.safe_dump({"stages": {"only": {"cmd": "x", "params": ["seed"]}}}))
    assert stage_params(raw, "only", other) == {"seed": raw["seed"]}
