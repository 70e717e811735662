"""Where a model runs: ``compute.device`` of the policy, steps-to-go and learner nodes and
the ``device`` of experiment configs (issue 16, item 4).

Asking for a GPU where there is none is an error, never a silent CPU fallback: a robot
that quietly runs its 10 Hz policy on the CPU misses its control deadline with no
message saying why.
"""

from __future__ import annotations

import re

import torch

_DEVICE = re.compile(r"^(cpu|cuda)(?::(\d+))?$")


class DeviceError(ValueError):
    """A device that is malformed or not present on this machine."""


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` -> a torch device that exists here."""
    match = _DEVICE.match(str(name).strip())
    if match is None or (match.group(1) == "cpu" and match.group(2) is not None):
        raise DeviceError(f"device {name!r}: use cpu, cuda or cuda:N")
    if match.group(1) == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(
            f"device {name!r} requested but torch sees no CUDA device (torch "
            f"{torch.__version__}, built {'with' if torch.version.cuda else 'without'} CUDA); "
            "set compute.device: cpu, or install CUDA torch (docker/Dockerfile.learner)"
        )
    index = int(match.group(2) or 0)
    if index >= torch.cuda.device_count():
        raise DeviceError(
            f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) are present"
        )
    return torch.device("cuda", index)
