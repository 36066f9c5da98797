"""Batches of decoded pixels -> descriptors and alignment facts, on whatever device the run chose."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ndup.heap import keep_freed_memory
from ndup.model.backbone import fold_batchnorms
from ndup.model.device import choose_device
from ndup.model.network import NdupNet, Variant
from ndup.model.spec import model_id
from ndup.model.weights import load_network
from ndup.workers import default_workers

VARIANTS = {
    "full": Variant(),
    "unit": Variant(),  # same network; pairs are not registered (ndup.registration)
    "aligned": Variant(),  # same network; only the verifier differs (thresholds, not the decision unit)
    "multilayer": Variant(orientation=False, affine=False),
    "backbone": Variant(orientation=False, affine=False, multilayer=False),
}


# Images the network takes at once on the CPU, whatever the scan's batch: twice as many run barely
# faster there (0-12% in `benchmarks/model_cost.py --chunk 32` against 16) but hold twice the
# activations, which the heap keeps between batches (ndup.heap): 250 MB more peak memory.
CPU_CHUNK = 16


def _joined(parts: list):
    """One batch's result from its chunks': lists of thumbnails concatenated, arrays stacked."""
    if isinstance(parts[0], list):
        return [item for part in parts for item in part]
    return np.concatenate(parts)


def torch_threads(cores: int | None = None) -> int:
    """Intra-op threads for the network on the CPU: half the cores this process may use (at least one).

    On a CPU the network and the decoding of camera JPEGs cost about the same per image
    (docs/benchmarks.md), so each gets about half the machine: the decoding processes run beside
    the network and the kernel shares the cores out. On 2 cores, with its threads sleeping between
    layers as in a scan, a second thread made the network no faster and cost a third more CPU or
    more, which the decoders needed. NDUP_TORCH_THREADS overrides it."""
    env = os.environ.get("NDUP_TORCH_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, (cores if cores is not None else default_workers()) // 2)


def prepare_for_inference(net: NdupNet, device: torch.device) -> NdupNet:
    """The frozen network made faster without changing what it computes beyond float rounding:
    batch norms folded into the convolutions, the backbone in channels-last layout (faster with
    oneDNN and with cuDNN's tensor cores) and, on a GPU, the backbone in half precision (its
    feature maps go back to float32 before pooling; the cache keeps descriptors as float16 anyway);
    on the CPU, glibc keeps the activations' freed memory for the next batch (ndup.heap)."""
    net.eval()
    fold_batchnorms(net.backbone)
    net.backbone.to(memory_format=torch.channels_last)
    net.backbone_format = torch.channels_last
    if device.type == "cuda":
        net.backbone_half = torch.float16
        torch.backends.cudnn.benchmark = True
    elif device.type == "cpu":
        torch.set_num_threads(torch_threads())
        keep_freed_memory()  # activations reuse freed heap instead of page-faulting fresh mmaps
    return net


class Embedder:
    def __init__(self, device: str = "auto", weights: Path | None = None, variant: str = "full"):
        self.device = choose_device(device)
        self.variant = variant
        self.model_id = model_id(weights, variant)
        if variant == "backbone":  # nothing learned by ndup: no weights file needed
            self.net = NdupNet(variant=VARIANTS[variant]).eval().to(self.device)
        else:
            self.net = load_network(weights, VARIANTS[variant]).to(self.device)
        prepare_for_inference(self.net, self.device)

    def embed(self, pixels: np.ndarray, aspects: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """(N, S, S, 3) uint8 and (N,) width/height -> {"vector": (N, D) float32, "phash": (N,) uint64, ...}.

        `alt_vector` rows (NaN where absent) are the second orientation hypothesis of ambiguous images.
        On the CPU the network takes at most CPU_CHUNK images at a time."""
        if self.device.type != "cpu" or len(pixels) <= CPU_CHUNK:
            return self._embed(pixels, aspects)
        parts = [
            self._embed(pixels[i : i + CPU_CHUNK], None if aspects is None else aspects[i : i + CPU_CHUNK])
            for i in range(0, len(pixels), CPU_CHUNK)
        ]
        return {k: _joined([p[k] for p in parts]) for k in parts[0]}

    def _tensors(self, pixels: np.ndarray, aspects: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, S, S, 3) uint8 -> (N, 3, S, S) in [0, 1] on the device; width/height ratios likewise."""
        x = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        aspect = None if aspects is None else torch.from_numpy(np.asarray(aspects, dtype=np.float32)).to(self.device)
        return x, aspect

    @torch.inference_mode()
    def _embed(self, pixels: np.ndarray, aspects: np.ndarray | None) -> dict[str, np.ndarray]:
        out = self.net(*self._tensors(pixels, aspects))
        result = {
            "thumb": [t.cpu().numpy() for t in out["thumb"]],
            "vector": out["vector"].float().cpu().numpy(),
            "phash": out["phash"].cpu().numpy().astype(np.int64).view(np.uint64),
        }
        if "orientation" in out:
            result["orientation"] = out["orientation"].cpu().numpy()
        if "affine" in out:
            result["affine"] = out["affine"].float().cpu().numpy()
        # second orientation hypotheses: NaN rows where an image has none
        n, dim = result["vector"].shape
        result["alt_vector"] = np.full((n, dim), np.nan, dtype=np.float32)
        result["alt_phash"] = np.zeros(n, dtype=np.uint64)
        result["alt_orientation"] = np.full(n, -1, dtype=np.int64)
        result["alt_thumb"] = [None] * n
        if "alt_vector" in out:
            idx = out["alt_index"].cpu().numpy()
            for i, t in zip(idx, out["alt_thumb"]):
                result["alt_thumb"][int(i)] = t.cpu().numpy()
            result["alt_vector"][idx] = out["alt_vector"].float().cpu().numpy()
            result["alt_phash"][idx] = out["alt_phash"].cpu().numpy().astype(np.int64).view(np.uint64)
            result["alt_orientation"][idx] = out["alt_orientation"].cpu().numpy()
        return result

    @torch.inference_mode()
    def aligned_views(self, pixels: np.ndarray, aspects: np.ndarray | None = None) -> np.ndarray:
        """What the backbone sees: (N, 224, 224, 3) uint8 images after the alignment stage."""
        aligned, _ = self.net.align(*self._tensors(pixels, aspects))
        return (aligned.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
