"""cds: one-step samplers for unnormalized densities (DIS teacher, CDDS, SCDS).

`cds.fit(log_prob, dim=D)` trains a one-step sampler for your own density (`cds.fitting`);
`cds.load_sampler("models:/cds-gmm9@champion")` returns a registered one as a torch module with
`.sample(n, generator)`. Both are imported lazily so that `import cds.config` stays light.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version
from typing import Any

__all__ = ["__version__", "fit", "load_sampler"]

#: MKL's strict conditional numerical reproducibility: its float32 matrix products give the same
#: bits on any number of threads, so `cds.threads` may change the count under load without
#: changing a result (docs/decisions.md §32). MKL reads it when it starts, so it is set here,
#: before anything of cds loads torch; a value already in the environment wins.
MKL_REPRODUCIBILITY = "AUTO,STRICT"
os.environ.setdefault("MKL_CBWR", MKL_REPRODUCIBILITY)

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
