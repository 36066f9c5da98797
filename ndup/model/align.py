"""The alignment stage: a spatial transformer that puts every image into a canonical frame.

Two learned parts, one after the other:
1. `OrientationCanonicalizer` picks one of the 8 right-angle rotations/mirrorings (the dihedral
   group D4). An affine regressor cannot learn these (they are far apart and mirrors are not
   rotations), so we score all 8 transformed versions of a thumbnail with one small network and keep
   the best. Because the 8 candidates of a rotated or mirrored copy are the same 8 images in another
   order, the choice is exactly invariant to those edits by construction; training only has to make
   the scorer's choice stable under everything else (re-encoding, resizing, colour, crops).
2. `AffineAligner`, a classic spatial transformer: a localisation network predicts a rotation,
   scale and translation, a grid generator (affine_grid) and sampler (grid_sample) resample the
   canonically oriented image into the backbone's input. It is trained to undo small rotations and
   to frame the same content in a crop and in its original.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ORIENTATIONS = 8
THUMB_SIDE = 64  # the canonicalizer's and localisation network's view of the image
MAX_ANGLE = math.radians(30.0)
MIN_SCALE = 0.6  # the window never covers less than 60% of the side
# An image turned counter-clockwise by t (as Pillow and torchvision rotate) is undone by angle = -t.
UNDO_SIGN = -1.0


def dihedral(x: torch.Tensor, g: int) -> torch.Tensor:
    """Element g of D4 applied to square images (N, C, S, S): mirror if g >= 4, then g % 4 quarter turns."""
    if g >= 4:
        x = x.flip(-1)
    k = g % 4
    return torch.rot90(x, k, dims=(-2, -1)) if k else x


def dihedral_stack(x: torch.Tensor) -> torch.Tensor:
    """(N, C, S, S) -> (N, 8, C, S, S): all eight orientations."""
    return torch.stack([dihedral(x, g) for g in range(ORIENTATIONS)], dim=1)


def apply_per_sample(x: torch.Tensor, orientation: torch.Tensor) -> torch.Tensor:
    """Orient each image of a batch by its own element of D4."""
    out = torch.empty_like(x)
    for g in range(ORIENTATIONS):
        mask = orientation == g
        if mask.any():
            out[mask] = dihedral(x[mask], g)
    return out


def thumbnail(x: torch.Tensor, side: int = THUMB_SIDE) -> torch.Tensor:
    return F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)


def _standardise(x: torch.Tensor) -> torch.Tensor:
    # per-image contrast normalisation: exposure edits should not move the choice
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True)
    return (x - mean) / (std + 0.05)


def luminance(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB -> (N, 1, H, W): colour edits (greyscale, saturation, hue) leave it nearly unchanged."""
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


class OrientationScorer(nn.Module):
    """A small CNN that gives one thumbnail a score; position-aware, so rotations change it."""

    def __init__(self, width: int = 24):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 5, stride=2, padding=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 8, 1),
        )
        self.head = nn.Linear(8 * (THUMB_SIDE // 8) ** 2, 1)

    def forward(self, thumbs: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(_standardise(luminance(thumbs))).flatten(1)).squeeze(1)


class OrientationCanonicalizer(nn.Module):
    """Scores the 8 orientations; the best is the canonical one.

    When the best two are closer than `second_margin` (set in training from held-out photos), the
    choice could flip under a mild edit, so the runner-up is returned as a second hypothesis and the
    image gets a second descriptor. Matching compares every hypothesis of one image with every
    hypothesis of the other, so agreeing on either suffices.
    """

    def __init__(self):
        super().__init__()
        self.scorer = OrientationScorer()
        self.register_buffer("second_margin", torch.tensor(0.0))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) images in [0, 1] -> (N, 8) scores of their eight orientations."""
        stack = dihedral_stack(thumbnail(x))
        n = stack.shape[0]
        return self.scorer(stack.flatten(0, 1)).view(n, ORIENTATIONS)

    def choose(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(best orientation, runner-up, whether the runner-up is a live second hypothesis) per image."""
        logp = self.logits(x).log_softmax(dim=1)
        top = logp.topk(2, dim=1)
        ambiguous = (top.values[:, 0] - top.values[:, 1]) < self.second_margin
        return top.indices[:, 0], top.indices[:, 1], ambiguous

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Canonically oriented images and the orientation chosen for each."""
        choice = self.logits(x).argmax(dim=1)
        return apply_per_sample(x, choice), choice


def oriented_aspect(aspect: torch.Tensor, orientation: torch.Tensor) -> torch.Tensor:
    """Width/height after a D4 element: odd quarter turns swap width and height."""
    return torch.where(orientation % 2 == 1, 1.0 / aspect, aspect)


_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
ORIENTATION_SIDE = 128  # long side of the aspect-correct thumbnail whose edges the angle is read from
ORIENTATION_GRID = 16


def edge_orientations(x: torch.Tensor, aspect: torch.Tensor, side: int = ORIENTATION_SIDE) -> torch.Tensor:
    """Per-cell edge evidence in the picture's true proportions: (N, 3, G, G) of m*cos(4p), m*sin(4p), m.

    m is the gradient magnitude and p its direction. Quadrupling the angle makes directions 90 degrees
    apart count alike, so a tilted horizon and tilted verticals both say "turn by this much".
    """
    cells = []
    for img, r in zip(x, aspect.tolist()):
        h, w = (side, max(8, round(side * r))) if r < 1 else (max(8, round(side / r)), side)
        t = F.interpolate(luminance(img[None]), size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        k = _SOBEL.to(x)[None, None]
        gx = F.conv2d(t, k)
        gy = F.conv2d(t, k.transpose(2, 3))
        m = torch.sqrt(gx**2 + gy**2 + 1e-8)
        p = torch.atan2(gy, gx)
        field = torch.cat([m * torch.cos(4 * p), m * torch.sin(4 * p), m], dim=1)
        cells.append(F.adaptive_avg_pool2d(field, ORIENTATION_GRID))
    return torch.cat(cells) / (torch.cat(cells)[:, 2:3].mean(dim=(2, 3), keepdim=True) + 1e-4)


class AffineAligner(nn.Module):
    """Localisation network -> (angle, scale, tx, ty) -> affine grid -> bilinear sampler.

    The angle comes from a learned, weighted vote of the picture's edge directions: a small CNN looks
    at the per-cell edge evidence and decides which cells to trust (long straight lines, not foliage)
    and how confident to be overall. It is trained so that a copy turned by a few degrees and its
    original land in the same frame. Scale and centre (the optional `frame` head, a second small CNN
    on the thumbnail) stay at the identity in the shipped model.
    """

    def __init__(self, width: int = 32, frame: bool = False):
        super().__init__()
        # Whether there is a scale/centre head. Trained to frame the same content in a crop and in its
        # original, it moved re-encoded copies apart more than it brought crops together
        # (docs/benchmarks.md), so the shipped model aligns rotation only.
        self.register_buffer("frame_enabled", torch.tensor(frame))
        self.vote = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2, 1),  # per-cell trust logit, per-cell confidence evidence
        )
        if frame:
            self.loc = nn.Sequential(
                nn.Conv2d(3, width, 5, stride=2, padding=2),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(4 * width, 4 * width, 3, stride=2, padding=1),
                nn.ReLU(inplace=True),
            )
            self.fc = nn.Sequential(nn.Linear(4 * width * 16 + 4 * width, 64), nn.ReLU(inplace=True), nn.Linear(64, 3))
            # Start as the identity: scale 1, centred.
            nn.init.zeros_(self.fc[-1].weight)
            with torch.no_grad():
                self.fc[-1].bias.copy_(torch.tensor([4.0, 0.0, 0.0]))

    def params(self, x: torch.Tensor, aspect: torch.Tensor | None = None) -> torch.Tensor:
        """(N, 4): angle in radians, scale in [MIN_SCALE, 1], centre x and y in [-1, 1] coordinates."""
        if aspect is None:
            aspect = torch.ones(x.shape[0], device=x.device)
        cells = edge_orientations(x, aspect)
        vote = self.vote(cells)
        trust = torch.softmax(vote[:, 0].flatten(1), dim=1).view_as(vote[:, 0])
        c = (trust * cells[:, 0]).sum(dim=(1, 2))
        s = (trust * cells[:, 1]).sum(dim=(1, 2))
        confidence = torch.sigmoid(vote[:, 1].mean(dim=(1, 2)) + 2.0)
        angle = (confidence * torch.atan2(s, c + 1e-6) / 4).clamp(-MAX_ANGLE, MAX_ANGLE)
        if not bool(self.frame_enabled):
            one, zero = torch.ones_like(angle), torch.zeros_like(angle)
            return torch.stack([angle, one, zero, zero], dim=1)
        f = self.loc(_standardise(thumbnail(x)))
        pooled = torch.cat([F.adaptive_avg_pool2d(f, 4).flatten(1), f.amax(dim=(2, 3))], dim=1)
        raw = self.fc(pooled)
        scale = MIN_SCALE + (1 - MIN_SCALE) * torch.sigmoid(raw[:, 0])
        room = 1 - scale  # keep the window inside the image
        tx = torch.tanh(raw[:, 1]) * room
        ty = torch.tanh(raw[:, 2]) * room
        return torch.stack([angle, scale, tx, ty], dim=1)

    @staticmethod
    def theta(params: torch.Tensor, aspect: torch.Tensor | None = None) -> torch.Tensor:
        """Sampling matrices (N, 2, 3). The input was squashed to a square, so a rotation of the real
        picture (width/height = aspect) is D^-1 R D in the square's coordinates, with D = diag(aspect, 1)."""
        angle, scale, tx, ty = params.unbind(1)
        r = torch.ones_like(angle) if aspect is None else aspect.to(angle)
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        row1 = torch.stack([cos, -sin / r, tx], dim=1)
        row2 = torch.stack([sin * r, cos, ty], dim=1)
        return torch.stack([row1, row2], dim=1)

    @staticmethod
    def sample(x: torch.Tensor, params: torch.Tensor, side: int, aspect: torch.Tensor | None = None) -> torch.Tensor:
        theta = AffineAligner.theta(params, aspect)
        grid = F.affine_grid(theta, [x.shape[0], x.shape[1], side, side], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def forward(
        self, x: torch.Tensor, side: int, aspect: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        params = self.params(x, aspect)
        return self.sample(x, params, side, aspect), params
