"""Presets: what was learned per target, as params files laid over the embedded defaults.

A preset is a YAML file in this directory holding the part of params.yaml it changes, e.g.
`mw54.yaml` sets the teacher budget and the CDDS and SCDS learning rates measured on mw54
(docs/decisions.md). It is the one home of such settings: `cds run --preset NAME`,
`cds.fit(preset=NAME)`, sweeps and benchmarks all read it from here. A built-in target's own
preset is the file named after it; `default` is the embedded defaults (budgets decided by
convergence), what a density without its own preset gets; `smoke` is a tiny budget that runs
the whole pipeline in about a minute, for checking that a density and an installation work;
`posterior` is the defaults with the Laplace prior, for a unimodal density such as a Bayesian
posterior (docs/methods.md §1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Where the preset files live (shipped inside the package).
PRESETS_DIR = Path(__file__).resolve().parent
#: The name that means "no preset" on the command line.
NO_PRESET = "none"
#: The preset of a density nobody tuned for: the embedded defaults, nothing laid over them.
DEFAULT_PRESET = "default"


class PresetError(ValueError):
    """An unknown preset, or a preset file that is not a params mapping."""


def preset_names() -> list[str]:
    """Every preset, by name."""
    return sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))


def read_preset(name: str) -> dict[str, Any]:
    """The params a preset sets, as a nested mapping (validated with the rest of the params by
    `cds.config.load_params`)."""
    from cds.config import read_yaml

    path = PRESETS_DIR / f"{name}.yaml"
    if not name or name != Path(name).name or not path.is_file():
        raise PresetError(f"preset = {name!r}: unknown; valid: {', '.join(preset_names())}")
    raw = read_yaml(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise PresetError(f"preset {name!r} ({path}) must be a mapping of params")
    return raw


def base_preset_values(target_name: str) -> dict[tuple[str, ...], Any]:
    """What the own preset of `target_name` sets, key path → value ({} for a target without
    one): what a run that switches to another target undoes where it still holds."""
    preset = target_preset(target_name)
    values: dict[tuple[str, ...], Any] = {}

    def walk(tree: dict[str, Any], prefix: tuple[str, ...]) -> None:
        for key, value in tree.items():
            if isinstance(value, dict):
                walk(value, (*prefix, key))
            else:
                values[(*prefix, key)] = value

    if preset is not None:
        walk(read_preset(preset), ())
    return values


def target_preset(target_name: str) -> str | None:
    """The preset a built-in target picks by itself: the one named after it, if any."""
    return target_name if (PRESETS_DIR / f"{target_name}.yaml").is_file() else None


def chosen_preset(asked: str | None, base_target: str, target: str) -> str | None:
    """The preset a run lays over its base params: the one `asked` for (None for "none"), or,
    when a run switches the base's target to another, the new target's own preset, or
    `default` for a target without one (the base's settings were made for the other target);
    else none, so that re-running a project never overwrites what its params.yaml says."""
    if asked is not None:
        return None if asked == NO_PRESET else asked
    if target == base_target:
        return None
    return target_preset(target) or DEFAULT_PRESET
