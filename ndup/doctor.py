"""`ndup doctor`: what this installation can do, and what is missing, as one JSON-ready document.

Every check catches its own failure and turns it into a line of `problems` (something a scan needs)
or `notes` (something optional), so the report always comes out whole.
"""

from __future__ import annotations

import json
import os
import platform
import warnings
from pathlib import Path

from ndup import __version__
from ndup.errors import NdupError


def weights_in_use(eff=None) -> tuple[Path, str | None]:
    """The weights file scans use, and the source of the setting that chose it (None: the shipped file)."""
    from ndup.model import spec

    configured = eff["run.weights"] if eff is not None else None
    if configured:
        return Path(configured), eff.sources["run.weights"]
    return spec.SHIPPED_WEIGHTS, None


def model_in_use(eff=None) -> str | None:
    """The model id that keys the embeddings scans make now; None when it cannot be told (no weights file)."""
    from ndup.model.spec import model_id

    path, source = weights_in_use(eff)
    try:
        return model_id(path if source else None)
    except (OSError, NdupError):  # missing or unreadable: the weights section says so
        return None


def read_meta(path: Path) -> dict:
    """The JSON record a weights file carries (numpy only: no torch needed)."""
    import numpy as np

    with np.load(path) as z:
        return json.loads(str(z["meta"]))


def _section(problems: list[str], name: str, fn, *args) -> dict:
    try:
        return fn(problems, *args)
    except Exception as e:  # a check that breaks is itself a finding, never a crash
        problems.append(f"{name}: cannot check ({type(e).__name__}: {e})")
        return {"error": f"{type(e).__name__}: {e}"}


def _registration(problems: list[str]) -> dict:
    try:
        import cv2
    except ImportError as e:
        problems.append(
            f"OpenCV: not installed ({e}); a scan needs it to tell crops and tilts from second captures "
            "(pip install opencv-python-headless)"
        )
        return {"installed": False}
    return {"installed": True, "opencv": cv2.__version__}


def _config(problems: list[str]):
    from ndup.config import config_path, effective

    path = config_path()
    doc = {"path": str(path), "exists": path.is_file()}
    try:
        eff = effective()
    except NdupError as e:
        problems.append(f"config: {e}")
        doc["error"] = str(e)
        return doc, None
    return doc, eff


def _torch(problems: list[str], eff) -> dict:
    try:
        import torch
        import torchvision
    except ImportError as e:
        problems.append(f"torch: not installed ({e}) (hint: see README, Install)")
        return {"installed": False}
    from ndup.model.device import choose_device, describe

    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    configured = eff["run.device"] if eff is not None else "auto"
    doc = {
        "installed": True,
        "version": torch.__version__,
        "torchvision": torchvision.__version__,
        "threads": torch.get_num_threads(),
        "cuda": {
            "available": cuda,
            "version": torch.version.cuda,
            "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        },
        "mps": mps,
        "auto": describe(choose_device("auto")),
        "configured": configured,
    }
    try:
        doc["device"] = describe(choose_device(configured))
    except NdupError as e:
        problems.append(f"device: {e}")
        doc["device"] = None
    return doc


def _weights(problems: list[str], eff) -> dict:
    path, source = weights_in_use(eff)
    doc: dict = {"path": str(path), "source": source or "shipped with ndup", "exists": path.is_file(),
                 "model_id": model_in_use(eff)}  # fmt: skip
    if not doc["exists"]:
        hint = (
            "reinstall ndup"
            if source is None
            else "fix --weights, NDUP_WEIGHTS or the config file's weights, or train one with `ndup train`"
        )
        problems.append(f"weights: the model's weights file is missing: {path} (hint: {hint})")
        return doc
    doc["size"] = path.stat().st_size
    if path.suffix != ".npz":  # the plain backbone's state dict: no training record to read
        return doc
    try:
        meta = read_meta(path)
    except (OSError, ValueError, KeyError) as e:
        problems.append(f"weights: {path} is not an ndup weights file ({e}) (hint: train one with `ndup train`)")
        return doc
    doc["meta"] = {
        "format": meta.get("format"),
        "trained_on": len(meta.get("trained_on", ())),
        "validated_on": len(meta.get("validated_on", ())),
        "held_out": len(meta.get("held_out", ())),
        "seconds": meta.get("seconds"),
        "stages": list(meta.get("stages", {})),
        "torch": meta.get("torch"),
    }
    return doc


def _cache(problems: list[str], eff, db: Path | None) -> dict:
    from ndup.store import cache_report

    path = Path(db).expanduser() if db else Path(eff["cache.db"]) if eff is not None else None
    if path is None:
        from ndup.config import default_db_path

        path = default_db_path()
    doc = cache_report(path)
    if doc.get("problem"):
        problems.append(f"cache: {NdupError(doc['problem'], doc.get('hint'))}")
    folder = next((p for p in (path, *path.parents) if p.exists()), None)
    if folder is not None and not os.access(folder if folder.is_dir() else folder.parent, os.W_OK):
        problems.append(f"cache: cannot write to {folder} (hint: fix its permissions, or choose --db PATH / NDUP_DB)")
    return doc


def _feature(name: str) -> str | None:
    from PIL import features

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an older Pillow warns about features it does not know
        try:
            return (features.version(name) or "yes") if features.check(name) else None
        except (ValueError, KeyError):
            return None


def _formats(notes: list[str]) -> dict:
    import PIL

    doc: dict = {"pillow": PIL.__version__}
    try:
        import pillow_heif

        doc["heif"] = f"pillow-heif {pillow_heif.__version__}, libheif {pillow_heif.libheif_version()}"
    except ImportError:
        doc["heif"] = None
        notes.append(
            "HEIF/HEIC: pillow-heif is not installed, iPhone photos are listed as failures (pip install pillow-heif)"
        )
    avif = _feature("avif")
    doc["avif"] = f"libavif {avif}" if avif else None
    if not avif:
        notes.append("AVIF: this Pillow has no AVIF support (pip install -U pillow)")
    try:
        import rawpy

        doc["raw"] = f"rawpy {rawpy.__version__}, LibRaw {'.'.join(map(str, rawpy.libraw_version))}"
    except ImportError:
        doc["raw"] = None
        notes.append("camera RAW: rawpy is not installed, RAW files are listed as failures (pip install rawpy)")
    for key, feature, what, library in (("webp", "webp", "WebP", "libwebp"),
                                        ("jpeg2000", "jpg_2000", "JPEG 2000", "OpenJPEG")):  # fmt: skip
        version = _feature(feature)
        doc[key] = f"{library} {version}" if version else None
        if not version:
            notes.append(f"{what}: this Pillow was built without it")
    return doc


def collect(db: Path | None = None) -> dict:
    """Every check; `ok` is False when something a scan needs is missing (then `problems` says what)."""
    problems: list[str] = []
    notes: list[str] = []
    doc: dict = {
        "ndup": __version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
    }
    config, eff = _config(problems)
    doc["config"] = config
    doc["torch"] = _section(problems, "torch", _torch, eff)
    doc["weights"] = _section(problems, "weights", _weights, eff)
    doc["cache"] = _section(problems, "cache", _cache, eff, db)
    doc["registration"] = _section(problems, "registration", _registration)
    doc["formats"] = _section(notes, "formats", _formats)
    doc["problems"] = problems
    doc["notes"] = notes
    doc["ok"] = not problems
    return doc
