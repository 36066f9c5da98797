"""The network in a process of its own, which ends once the scan has read its files.

torch and the network hold about 0.7 GB (`import torch` alone: 480 MB) that a scan needs only while
it embeds new images. Loaded in the scan's own process they would stay to the end (a module, once
imported, is never unloaded), through matching, which is what needs the most memory on a large
library; in a child process they go when it ends (docs/benchmarks.md, "Memory").

This module itself imports no torch: the scan's process imports it, the child loads the network.
"""

from __future__ import annotations

import os
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from ndup.errors import NdupError
from ndup.workers import close_pool, submit_to, worker_pool

_embedder = None  # in the child: the network, loaded by its first task


def _load(device: str, weights: Path | None, variant: str) -> str:
    global _embedder
    # torch's OpenMP threads otherwise spin for a while after each layer, waiting for the next: on a
    # machine whose cores the decoding processes share, that spinning takes their time. Read once,
    # when torch loads (so here, before the import); measured in docs/benchmarks.md.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from ndup.model.embed import Embedder

    _embedder = Embedder(device, weights, variant)
    return _embedder.model_id


def _embed(pixels: np.ndarray, aspects: np.ndarray | None) -> dict:
    if _embedder is None:  # only ever called after _load, in the same single process
        raise RuntimeError("the network process was asked to embed before loading the network")
    return _embedder.embed(pixels, aspects)


class EmbedderProcess:
    """`Embedder`'s `embed`, run by a child process. The network starts loading at once, in the
    background (a few seconds: the scan reads its first files meanwhile). Loading is the process's
    first task, not its initializer, so that a loading error (a missing weights file) comes back as
    itself, with its hint, from `loaded` or the first `embed`, rather than as a broken pool."""

    def __init__(self, device: str = "cpu", weights: Path | None = None, variant: str = "full"):
        self._pool = worker_pool(1)
        self._loading: Future = self._pool.submit(_load, device, weights, variant)

    def _result(self, future: Future):
        try:
            return future.result()
        except BrokenProcessPool:
            raise NdupError(
                "the process that runs the network ended unexpectedly (killed, or out of memory)",
                hint="check free memory and scan again: what was read so far is kept",
            ) from None

    def loaded(self) -> str:
        """Wait for the network to load; its model id."""
        return self._result(self._loading)

    def embed(self, pixels: np.ndarray, aspects: np.ndarray | None = None) -> dict[str, np.ndarray]:
        self.loaded()  # a loading error, as itself, before any images are sent
        return self._result(submit_to(self._pool, _embed, pixels, aspects))

    def close(self, kill: bool = False) -> None:
        """End the process and free its memory; `kill`: at once, without finishing the work in hand."""
        close_pool(self._pool, kill=kill)
