"""Pick the torch device a run uses."""

from __future__ import annotations

import glob
import sys
from typing import TYPE_CHECKING

from ndup.errors import NdupError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda", "mps")

# Device files a GPU driver creates on Linux: NVIDIA's, Jetson's, AMD's compute (ROCm builds of torch
# answer to "cuda" too) and WSL's. Without any of them torch cannot find a GPU.
GPU_DEVICE_FILES = ("/dev/nvidia*", "/dev/nvhost-*", "/dev/kfd", "/dev/dxg")


def cpu_for_certain(preference: str) -> bool:
    """Whether `choose_device(preference)` is the CPU, where that can be told without importing torch
    (480 MB and seconds): the CPU asked for, or `auto` on a Linux machine with no GPU driver. False
    means: ask torch."""
    if preference == "cpu":
        return True
    if preference != "auto" or not sys.platform.startswith("linux"):
        return False
    return not any(glob.glob(pattern) for pattern in GPU_DEVICE_FILES)


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def choose_device(preference: str = "auto") -> torch.device:
    """auto: CUDA, then Apple's MPS, then the CPU. Asking for one that is absent is an error, not a fallback."""
    import torch

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
    import torch

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type
