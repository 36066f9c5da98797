"""The network in a process of its own, which ends once the scan has read its files.

torch and the network hold about 0.7 GB (`import torch` alone: 480 MB) that a scan needs only while
it embeds new images. Loaded in the scan's own process they would stay to the end (a module, once
imported, is never unloaded), through matching, which is what needs the most memory on a large
library; in a child process they go when it ends (docs/benchmarks.md, "Memory").

This module itself imports no torch: the scan's process imports it, the child loads the network.
"""

from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from ndup.errors import NdupError
from ndup.workers import close_pool, worker_pool

_embedder = None  # in the child: the network, loaded by its first task


def _load(device: str, weights: Path | None, variant: str) -> str:
    global _embedder
    from ndup.model.embed import Embedder

    _embedder = Embedder(device, weights, variant)
    return _embedder.model_id


def _embed(pixels: np.ndarray, aspects: np.ndarray | None) -> dict:
    if _embedder is None:  # only ever called after _load, in the same single process
        raise RuntimeError("the network process was asked to embed before loading the network")
    return _embedder.embed(pixels, aspects)


class EmbedderProcess:
    """`Embedder`'s `embed`, run by a child process. Loading happens as its first task, not in the
    process's initializer, so that a loading error (a missing weights file) comes back as itself,
    with its hint, rather than as a broken pool."""

    def __init__(self, device: str = "cpu", weights: Path | None = None, variant: str = "full"):
        self._pool = worker_pool(1)
        try:
            self.model_id: str = self._call(_load, device, weights, variant)
        except BaseException:
            self.close(kill=True)
            raise

    def _call(self, fn, *args):
        try:
            return self._pool.submit(fn, *args).result()
        except BrokenProcessPool:
            raise NdupError(
                "the process that runs the network ended unexpectedly (killed, or out of memory)",
                hint="check free memory and scan again: what was read so far is kept",
            ) from None

    def embed(self, pixels: np.ndarray, aspects: np.ndarray | None = None) -> dict[str, np.ndarray]:
        return self._call(_embed, pixels, aspects)

    def close(self, kill: bool = False) -> None:
        """End the process and free its memory; `kill`: at once, without finishing the work in hand."""
        close_pool(self._pool, kill=kill)
