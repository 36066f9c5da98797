"""The weights file: every learned tensor of the model in one .npz, plus a JSON record of how it was made.

The decision unit's arrays (prefix `du_`) are read by `ndup.verify` with numpy alone; the alignment
stage and projection (prefixes `can.`, `ali.`, `proj.`) are loaded into torch here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ndup.errors import NdupError
from ndup.model.network import NdupNet, Variant
from ndup.model.spec import SHIPPED_WEIGHTS, missing_weights

PREFIXES = {"can.": "canonicalizer", "ali.": "aligner", "proj.": "projection"}


def save_weights(path: Path, net: NdupNet, decision: dict[str, np.ndarray], meta: dict) -> None:
    arrays: dict[str, np.ndarray] = {}
    for prefix, attr in PREFIXES.items():
        for k, v in getattr(net, attr).state_dict().items():
            arrays[prefix + k] = v.detach().cpu().numpy()
    arrays.update(decision)
    arrays["meta"] = np.array(json.dumps(meta, indent=1, sort_keys=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def read_meta(path: Path) -> dict:
    with np.load(path) as z:
        return json.loads(str(z["meta"]))


def load_network(path: Path | None = None, variant: Variant | None = None) -> NdupNet:
    path = Path(path) if path else SHIPPED_WEIGHTS
    net = NdupNet(variant=variant or Variant())
    try:
        with np.load(path) as z:
            for prefix, attr in PREFIXES.items():
                module = getattr(net, attr)
                state = {k[len(prefix) :]: torch.from_numpy(z[k]) for k in z.files if k.startswith(prefix)}
                module.load_state_dict(state, strict=True)
    except FileNotFoundError:
        raise missing_weights(path) from None
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise NdupError(f"{path} is not an ndup weights file ({e})", hint="train one with `ndup train`") from None
    return net.eval()
