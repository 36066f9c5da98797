"""The full image model: alignment stage -> backbone -> multi-layer descriptor.

`Variant` switches parts off for the ablation benchmark; the shipped model uses all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ndup.model.align import AffineAligner, OrientationCanonicalizer, oriented_aspect
from ndup.model.backbone import EfficientNetLite0, load_backbone
from ndup.model.descriptor import PartProjection, aligned_phash, gem, pooled_taps
from ndup.model.spec import TAPS

INPUT_SIDE = 224


@dataclass(frozen=True)
class Variant:
    orientation: bool = True  # D4 canonicalizer
    affine: bool = True  # residual affine spatial transformer
    multilayer: bool = True  # pooled stages + learned projection (else: the head's average pool)

    @property
    def name(self) -> str:
        if not self.multilayer:
            return "backbone"
        if not (self.orientation or self.affine):
            return "multilayer"
        return "aligned" if self.orientation and self.affine else ("oriented" if self.orientation else "affine")


FULL = Variant()


class NdupNet(nn.Module):
    def __init__(self, backbone: EfficientNetLite0 | None = None, variant: Variant = FULL):
        super().__init__()
        self.variant = variant
        self.backbone = backbone if backbone is not None else load_backbone()
        self.canonicalizer = OrientationCanonicalizer()
        self.aligner = AffineAligner()
        self.projection = PartProjection()
        for p in self.backbone.parameters():
            p.requires_grad_(False)

    def align(self, x: torch.Tensor, aspect: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """Images in [0, 1] (N, 3, S, S), squashed from pictures of width/height `aspect`,
        -> backbone-sized aligned images, and what was done to them."""
        info: dict = {}
        if aspect is None:
            aspect = torch.ones(x.shape[0], device=x.device)
        if self.variant.orientation:
            x, info["orientation"] = self.canonicalizer(x)
            aspect = oriented_aspect(aspect, info["orientation"])
        if self.variant.affine:
            x, info["affine"] = self.aligner(x, INPUT_SIDE, aspect)
        elif x.shape[-1] != INPUT_SIDE:
            x = F.interpolate(x, size=(INPUT_SIDE, INPUT_SIDE), mode="bilinear", antialias=True, align_corners=False)
        return x, info

    def pooled(self, aligned: torch.Tensor) -> torch.Tensor:
        maps = self.backbone.forward_stages(self.backbone.normalize(aligned), TAPS)
        return pooled_taps(maps)

    def describe(self, aligned: torch.Tensor) -> torch.Tensor:
        if not self.variant.multilayer:
            head = self.backbone.forward_stages(self.backbone.normalize(aligned), (-1,))[0]
            return F.normalize(head.mean(dim=(2, 3)), dim=1)
        return self.projection(self.pooled(aligned))

    def forward(self, x: torch.Tensor, aspect: torch.Tensor | None = None) -> dict:
        aligned, info = self.align(x, aspect)
        return {"vector": self.describe(aligned), "phash": aligned_phash(aligned), **info}


__all__ = ["FULL", "INPUT_SIDE", "NdupNet", "Variant", "gem"]
