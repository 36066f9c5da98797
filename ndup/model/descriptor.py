"""Several stages of the backbone pooled into one compact, L2-normalised descriptor.

Low stages see texture and colour, high stages see objects; near-duplicates agree at every level,
while different photos of similar things mostly agree only at the top. Each tapped stage is
GeM-pooled and L2-normalised, the stages are grouped into parts (low, mid, high), each part is
projected by a learned linear map and normalised, and the parts are concatenated with fixed weights
so that the cosine of two descriptors is a weighted mean of the per-part cosines, which the decision
unit also reads one by one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ndup.model.spec import PARTS, TAP_CHANNELS

GEM_P = 3.0


def gem(x: torch.Tensor, p: float = GEM_P) -> torch.Tensor:
    """Generalised-mean pooling: between average (p=1) and max (p->inf) pooling."""
    return x.clamp(min=1e-6).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


def pooled_taps(maps: list[torch.Tensor]) -> torch.Tensor:
    """Feature maps of the taps -> one vector of per-tap L2-normalised GeM pools (N, sum(TAP_CHANNELS))."""
    return torch.cat([F.normalize(gem(m), dim=1) for m in maps], dim=1)


class PartProjection(nn.Module):
    """Pooled taps -> per-part learned projections, normalised and weighted into one unit vector."""

    def __init__(self):
        super().__init__()
        offsets = [0]
        for c in TAP_CHANNELS:
            offsets.append(offsets[-1] + c)
        self.slices = [(offsets[min(t)], offsets[max(t) + 1]) for t, _, _ in PARTS]
        self.proj = nn.ModuleList(
            nn.Linear(hi - lo, dim, bias=True) for (lo, hi), (_, dim, _) in zip(self.slices, PARTS)
        )
        self.weights = [math.sqrt(w) for _, _, w in PARTS]

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        parts = [
            F.normalize(proj(pooled[:, lo:hi]), dim=1) * w
            for proj, (lo, hi), w in zip(self.proj, self.slices, self.weights)
        ]
        return torch.cat(parts, dim=1)  # already unit length: the weights' squares sum to 1


def dct_matrix(n: int) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float32)
    m = torch.cos(math.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n))
    m[0] /= math.sqrt(2)
    return m * math.sqrt(2 / n)


def aligned_phash(x: torch.Tensor) -> torch.Tensor:
    """pHash (32x32 DCT, top-left 8x8, median threshold) of aligned images -> (N,) int64 bit patterns.

    Computed after alignment, so a rotated or mirrored copy gets the hash of its original.
    """
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    small = F.interpolate(gray, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)[:, 0]
    d = dct_matrix(32).to(x.device)
    coeffs = (d @ small @ d.T)[:, :8, :8].flatten(1)
    bits = coeffs > coeffs.median(dim=1, keepdim=True).values
    weights = (2 ** torch.arange(63, -1, -1, device=x.device, dtype=torch.float64)).to(torch.float64)
    # 64-bit patterns as signed int64 (two's complement), built in float64 exactly in two halves
    hi = (bits[:, :32].double() * weights[:32] / 2**32).sum(1).long()
    lo = (bits[:, 32:].double() * weights[32:]).sum(1).long()
    return (hi << 32) | lo
