"""cds: one-step samplers for unnormalized densities (DIS teacher, CDDS, SCDS).

`cds.fit(log_prob, dim=D)` trains a one-step sampler for your own density (`cds.fitting`);
`cds.load_sampler("models:/cds-gmm9@champion")` returns a registered one as a torch module with
`.sample(n, generator)`. Both are imported lazily so that `import cds.config` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["fit", "load_sampler"]


def __getattr__(name: str) -> Any:
    if name == "load_sampler":
        from cds.samplers import load_sampler

        return load_sampler
    if name == "fit":
        from cds.fitting import fit

        return fit
    raise AttributeError(f"module 'cds' has no attribute {name!r}")
