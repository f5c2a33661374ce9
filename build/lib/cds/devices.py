"""Where tensors live: the `device` setting, `auto` | `cpu` | `cuda` | `cuda:N`.

`auto` (the default) is the first CUDA device when torch sees one, else the CPU. Everything a
run builds (networks, target constants, grids, generators, fragment banks) is put on the
resolved device once; from there every tensor is created beside the tensor it is used with
(`device=x.device`), and every random draw on its generator's device, so nothing is moved back
and forth inside a step. Random streams differ between the CPU and CUDA: a seed reproduces a
result on the same kind of device.
"""

from __future__ import annotations

import re

import torch

#: The values the `device` setting accepts.
DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"


class DeviceError(ValueError):
    """A device that is malformed or not present on this machine."""


def resolve_device(spec: str | torch.device | None = "auto", field: str = "device") -> torch.device:
    """The torch device `spec` names on this machine; `field` names the setting in errors."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = "auto" if spec is None else spec
    if not isinstance(spec, str) or not re.match(DEVICE_PATTERN, spec):
        raise DeviceError(f"{field} = {spec!r}: expected auto, cpu, cuda or cuda:N")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"{field} = {spec!r}: torch sees no CUDA device on this machine")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"{field} = {spec!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return device


def draw_device(generator: torch.Generator | None, fallback: torch.device) -> torch.device:
    """Where a random draw happens: on its generator's device, else on `fallback`."""
    return generator.device if generator is not None else fallback
