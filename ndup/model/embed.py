"""Batches of decoded pixels -> L2-normalised descriptors, on whatever device the run chose."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ndup.model.backbone import load_backbone
from ndup.model.device import choose_device
from ndup.model.spec import BASELINE_ID

INPUT_SIDE = 224


class Embedder:
    """The plain backbone descriptor: the head's 1280 channels, average-pooled."""

    model_id = BASELINE_ID

    def __init__(self, device: str = "auto"):
        self.device = choose_device(device)
        self.backbone = load_backbone().to(self.device)
        if self.device.type != "cpu":
            self.backbone = self.backbone.to(memory_format=torch.channels_last)

    def to_tensor(self, pixels: np.ndarray) -> torch.Tensor:
        """(N, S, S, 3) uint8 -> (N, 3, INPUT_SIDE, INPUT_SIDE) float on the device, in [0, 1]."""
        x = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[-1] != INPUT_SIDE:
            x = F.interpolate(x, size=(INPUT_SIDE, INPUT_SIDE), mode="bilinear", antialias=True, align_corners=False)
        return x

    @torch.inference_mode()
    def embed(self, pixels: np.ndarray) -> np.ndarray:
        x = self.backbone.normalize(self.to_tensor(pixels))
        head = self.backbone.forward_stages(x, (-1,))[0]
        v = F.normalize(head.mean(dim=(2, 3)), dim=1)
        return v.float().cpu().numpy()
