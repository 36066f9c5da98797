"""Pick the torch device a run uses."""

from __future__ import annotations

import torch

from ndup.errors import NdupError

DEVICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def choose_device(preference: str = "auto") -> torch.device:
    """auto: CUDA, then Apple's MPS, then the CPU. Asking for one that is absent is an error, not a fallback."""
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise NdupError("--device cuda was asked for, but torch finds no CUDA GPU", hint="use --device auto or cpu")
    if preference == "mps" and not _mps_available():
        raise NdupError(
            "--device mps was asked for, but this torch has no MPS support", hint="use --device auto or cpu"
        )
    if preference not in DEVICES:
        raise NdupError(f"unknown device {preference!r}", hint=f"choose one of {', '.join(DEVICES)}")
    return torch.device(preference)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type
