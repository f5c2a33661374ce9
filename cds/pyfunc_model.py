"""The registered sampler as an MLflow pyfunc, logged as models-from-code.

MLflow executes this file when the model is loaded; the trained checkpoint travels as the
artifact `sampler` and the `cds` package as the model's code path, so a consumer needs only the
model's pip requirements. `predict` takes a DataFrame with integer columns `n` and `seed` and
returns, for each row, `n` samples as columns `x0 … x{dim-1}`; the same seed gives the same
samples. A sampler on a user target imports it only when the registering pipeline marked the
model so (`model_config["trust_target_code"]`, set from the registrant's own params). A sampler
that needs its target at sampling time (SCDS, DIS) finds it anywhere: the user's density module
ships as a code path (on sys.path when the model loads), and the data files its options name as
artifacts, the options pointed at them here (`model_config["target_files"]`, option value →
artifact; `cds.pipeline.model_registry.TargetBundle`).

It samples on the CPU unless the consumer asks for another device at load time:
`mlflow.pyfunc.load_model(uri, model_config={"device": "cuda"})`, or for a scoring server the
environment variable `MLFLOW_PYFUNC_INFERENCE_CONFIG='{"device": "cuda"}'`.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
import torch

from cds.samplers import bundled_target, sampler_from_checkpoint


class SamplerModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        config = context.model_config or {}
        trusted = bool(config.get("trust_target_code", False))
        checkpoint = context.artifacts["sampler"]
        # MLflow put the model's code (cds, a user module) on the path already
        target = bundled_target(
            checkpoint, config.get("target_files") or {}, context.artifacts, None, trusted
        )
        self.sampler = sampler_from_checkpoint(
            checkpoint, target=target, trust_target_code=trusted, device=config.get("device", "cpu")
        )

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        missing = {"n", "seed"} - set(model_input.columns)
        if missing:
            raise ValueError(f"input needs columns 'n' and 'seed'; missing {sorted(missing)}")
        columns = [f"x{i}" for i in range(self.sampler.dim)]
        frames = []
        for n, seed in zip(model_input["n"], model_input["seed"], strict=True):
            generator = torch.Generator(device=self.sampler.device).manual_seed(int(seed))
            x = self.sampler.sample(int(n), generator)
            frames.append(pd.DataFrame(x.cpu().numpy(), columns=columns))
        return pd.concat(frames, ignore_index=True)


mlflow.models.set_model(SamplerModel())
