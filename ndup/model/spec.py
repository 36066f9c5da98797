"""Which model a run uses, named without importing torch (a warm rescan never loads the network)."""

from __future__ import annotations

from pathlib import Path

BASELINE_ID = "lite0-gap-224@1"


def model_id(weights: Path | None = None) -> str:
    """The id that keys cached embeddings: a different model or input size gives a different id."""
    return BASELINE_ID
