"""JPEG decoding on a CUDA GPU (nvjpeg, through torchvision), for scans where the CPU's decoders would
otherwise be the bottleneck. Imported only by runs on a CUDA device; a CPU run never loads it.

Workers read and hash each file (decode.Deferred); here whole batches are decoded on the GPU, turned
upright by their EXIF orientation, scaled to MODEL_SIDE on the short side (antialiased, as Pillow's
draft decode and resize do on the CPU) and handed back as small arrays, from which
`Deferred.finish` computes the same facts and model pixels as the CPU path. A file nvjpeg cannot
decode falls back to the CPU decoder, so its outcome (picture or reason) is the CPU's.

Not measured in the session that wrote it (no GPU was available); the same code runs on the CPU in
the tests, with torchvision's CPU decoder standing in for nvjpeg.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from ndup.decode import MODEL_SIDE


def _upright(img: torch.Tensor, orientation: int) -> torch.Tensor:
    """(C, H, W) as stored -> as a person sees it (EXIF orientations 1-8, as Pillow's exif_transpose)."""
    if orientation == 2:
        return img.flip(-1)
    if orientation == 3:
        return img.flip(-1).flip(-2)
    if orientation == 4:
        return img.flip(-2)
    if orientation == 5:
        return img.transpose(-1, -2)
    if orientation == 6:
        return torch.rot90(img, -1, dims=(-2, -1))
    if orientation == 7:
        return torch.rot90(img, 2, dims=(-2, -1)).transpose(-1, -2)
    if orientation == 8:
        return torch.rot90(img, 1, dims=(-2, -1))
    return img


def _small(img: torch.Tensor, side: int = MODEL_SIDE) -> np.ndarray:
    """(C, H, W) uint8 on the device -> (h, w, 3) uint8 numpy with its short side `side` (never enlarged)."""
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    h, w = img.shape[-2:]
    scale = side / min(h, w)
    if scale < 1:
        size = (max(side, round(h * scale)), max(side, round(w * scale)))
        img = F.interpolate(img[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False)[0]
        img = img.round_().clamp_(0, 255).to(torch.uint8)
    return img.permute(1, 2, 0).contiguous().cpu().numpy()


def decode_jpegs(datas: list[bytes], orientations: list[int], device: torch.device | str) -> list[np.ndarray | None]:
    """Each JPEG's upright picture, short side MODEL_SIDE, as numpy; None where the decoder failed."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if not datas:
        return []
    tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision 0.29 calls its image decoders deprecated
        try:
            images = decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:  # one bad file fails the whole batch call: try them one by one
            images = []
            for t in tensors:
                try:
                    images.append(decode_jpeg(t, mode=ImageReadMode.RGB, device=device))
                except RuntimeError:
                    images.append(None)
    out: list[np.ndarray | None] = []
    for img, orientation in zip(images, orientations):
        if img is None:
            out.append(None)
            continue
        img = _upright(img, orientation)
        out.append(_small(img))
    return out
