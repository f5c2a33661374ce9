"""cds: one-step samplers for unnormalized densities (DIS teacher, CDDS, SCDS).

`cds.load_sampler("models:/cds-gmm9@champion")` returns a torch module with `.sample(n,
generator)`; it is imported lazily so that `import cds.config` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_sampler"]


def __getattr__(name: str) -> Any:
    if name == "load_sampler":
        from cds.samplers import load_sampler

        return load_sampler
    raise AttributeError(f"module 'cds' has no attribute {name!r}")
