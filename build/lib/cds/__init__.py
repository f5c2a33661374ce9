"""cds: one-step samplers for unnormalized densities (DIS teacher, CDDS, SCDS).

`cds.fit(log_prob, dim=D)` trains a one-step sampler for your own density (`cds.fitting`);
`cds.load_sampler("models:/cds-gmm9@champion")` returns a registered one as a torch module with
`.sample(n, generator)`. Both are imported lazily so that `import cds.config` stays light.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

__all__ = ["__version__", "fit", "load_sampler"]

#: The distribution's name on the package index (the import name and the command are `cds`).
DISTRIBUTION = "cds-samplers"
try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # a source tree on sys.path without an install
    __version__ = "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "load_sampler":
        from cds.samplers import load_sampler

        return load_sampler
    if name == "fit":
        from cds.fitting import fit

        return fit
    raise AttributeError(f"module 'cds' has no attribute {name!r}")
