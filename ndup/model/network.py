"""The full image model: alignment stage -> backbone -> multi-layer descriptor.

`Variant` switches parts off for the ablation benchmark; the shipped model uses all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ndup.model.align import AffineAligner, OrientationCanonicalizer, apply_per_sample, luminance, oriented_aspect
from ndup.model.backbone import EfficientNetLite0, load_backbone
from ndup.model.descriptor import PartProjection, aligned_phash, gem, pooled_taps
from ndup.model.spec import TAPS
from ndup.structure import THUMB_LONG_SIDE

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

    def align(
        self, x: torch.Tensor, aspect: torch.Tensor | None = None, orientation: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict]:
        """Images in [0, 1] (N, 3, S, S), squashed from pictures of width/height `aspect`,
        -> backbone-sized aligned images, and what was done to them. `orientation` overrides the
        canonicalizer's choice (to follow a second hypothesis)."""
        info: dict = {}
        if aspect is None:
            aspect = torch.ones(x.shape[0], device=x.device)
        if self.variant.orientation:
            if orientation is None:
                orientation = self.canonicalizer.logits(x).argmax(dim=1)
            x, info["orientation"] = apply_per_sample(x, orientation), orientation
            aspect = oriented_aspect(aspect, orientation)
        info["aspect"] = aspect
        if self.variant.affine:
            x, info["affine"] = self.aligner(x, INPUT_SIDE, aspect)
        elif x.shape[-1] != INPUT_SIDE:
            x = F.interpolate(x, size=(INPUT_SIDE, INPUT_SIDE), mode="bilinear", antialias=True, align_corners=False)
        return x, info

    def hypotheses(self, x: torch.Tensor, aspect: torch.Tensor | None = None):
        """Aligned images for every image's best orientation, and for the runner-up where it is live.

        Returns (aligned, info, alt_index, alt_aligned, alt_info): alt_index lists the images that
        have a second hypothesis (empty without the orientation stage)."""
        if not self.variant.orientation:
            aligned, info = self.align(x, aspect)
            return aligned, info, torch.zeros(0, dtype=torch.long), None, {}
        best, second, ambiguous = self.canonicalizer.choose(x)
        aligned, info = self.align(x, aspect, best)
        alt_index = ambiguous.nonzero().flatten()
        if len(alt_index) == 0:
            return aligned, info, alt_index, None, {}
        alt_aspect = None if aspect is None else aspect[alt_index]
        alt_aligned, alt_info = self.align(x[alt_index], alt_aspect, second[alt_index])
        return aligned, info, alt_index, alt_aligned, alt_info

    # Inference settings for the backbone alone (ndup.model.embed sets them; training leaves them):
    # its memory layout, and a half-precision type to run it in on a GPU. Everything that decides
    # something (orientation, angle, the pooled descriptor and its projection) stays in float32.
    backbone_format: torch.memory_format = torch.contiguous_format
    backbone_half: torch.dtype | None = None

    def _stages(self, x: torch.Tensor, taps: tuple[int, ...]) -> list[torch.Tensor]:
        x = self.backbone.normalize(x).contiguous(memory_format=self.backbone_format)
        if self.backbone_half is None or x.device.type != "cuda":
            return self.backbone.forward_stages(x, taps)
        with torch.autocast("cuda", dtype=self.backbone_half):
            maps = self.backbone.forward_stages(x, taps)
        return [m.float() for m in maps]

    def pooled(self, aligned: torch.Tensor) -> torch.Tensor:
        return pooled_taps(self._stages(aligned, TAPS))

    def describe(self, aligned: torch.Tensor) -> torch.Tensor:
        if not self.variant.multilayer:
            head = self._stages(aligned, (-1,))[0]
            return F.normalize(head.mean(dim=(2, 3)), dim=1)
        return self.projection(self.pooled(aligned))

    def forward(self, x: torch.Tensor, aspect: torch.Tensor | None = None) -> dict:
        """Descriptors and aligned pHashes; `alt_*` entries for images with a second orientation hypothesis."""
        aligned, info, alt_index, alt_aligned, alt_info = self.hypotheses(x, aspect)
        out = {"vector": self.describe(aligned), "phash": aligned_phash(aligned), **info, "alt_index": alt_index}
        out["thumb"] = structure_thumbnails(aligned, info["aspect"])
        if alt_aligned is not None:
            out["alt_vector"] = self.describe(alt_aligned)
            out["alt_phash"] = aligned_phash(alt_aligned)
            out["alt_orientation"] = alt_info["orientation"]
            out["alt_thumb"] = structure_thumbnails(alt_aligned, alt_info["aspect"])
        return out


def structure_thumbnails(aligned: torch.Tensor, aspect: torch.Tensor) -> list[torch.Tensor]:
    """Greyscale uint8 thumbnails of aligned views in their true proportions (ndup.structure compares them)."""
    side = THUMB_LONG_SIDE
    gray = luminance(aligned.clamp(0, 1))
    out = []
    for img, r in zip(gray, aspect.tolist()):
        h, w = (side, max(12, round(side * r))) if r < 1 else (max(12, round(side / r)), side)
        small = F.interpolate(img[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0, 0]
        out.append((small * 255).round().to(torch.uint8))
    return out


__all__ = ["FULL", "INPUT_SIDE", "NdupNet", "Variant", "gem"]
