"""Optional dependencies, imported where they are used: a core install (`pip install
cds-samplers`) has what training and sampling need; the data-backed built-in targets and the
pipeline (Prefect, DVC, MLflow, the `cds` command) come with extras. A missing one is named
together with the extra that installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

#: The extra of cds-samplers that installs each optional top-level module.
EXTRA_OF = {
    "matplotlib": "targets",
    "PIL": "targets",
    "pandas": "targets",
    "sklearn": "targets",
    "mlflow": "pipeline",
    "prefect": "pipeline",
    "dvc": "pipeline",
    "typer": "pipeline",
}


def missing_extra_message(module: str, purpose: str) -> str:
    """What to tell a user whose install lacks `module` (a dotted name) for `purpose`."""
    top = module.split(".")[0]
    if top not in EXTRA_OF:
        return f"{purpose} needs {top}, which is not installed: pip install {top}"
    extra = EXTRA_OF[top]
    return f"{purpose} needs {top}, which comes with an extra: pip install 'cds-samplers[{extra}]'"


def require(module: str, purpose: str) -> ModuleType:
    """`import module`, or a ModuleNotFoundError that names the extra installing it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is None or module.split(".")[0] != err.name.split(".")[0]:
            raise  # something inside the module is broken: not a missing extra
        raise ModuleNotFoundError(missing_extra_message(module, purpose), name=err.name) from err
