from __future__ import annotations

import io
import os
import shutil
import sys
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from imagegen import synthetic_photo

from ndup.config import ScanSettings
from ndup.scan import run_scan


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    """No test reads or writes the real user's cache or config."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local/share"))  # the trash: never the real one
    monkeypatch.delenv("NDUP_DB", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    return home


@pytest.fixture
def heif():
    """Pillow able to write HEIC (pillow-heif); skipped where pillow-heif is not installed."""
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    return pillow_heif


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "cache" / "ndup.db"


def save(im: Image.Image, path: Path, fmt: str | None = None, **params) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format=fmt, **params)
    return path


def jpeg_bytes(im: Image.Image, quality: int = 90, **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, **params)
    return buf.getvalue()


def scan(roots, db: Path, **kw):
    roots = tuple(Path(r) for r in (roots if isinstance(roots, (list, tuple)) else [roots]))
    kw.setdefault("workers", 1)
    return run_scan(ScanSettings(roots=roots, db_path=db, **kw))


def group_of(plan, path) -> object | None:
    path = os.fspath(path)
    for g in plan.groups:
        if g.tier != "similar" and any(m.path == path for m in g.members):
            return g
    return None


def photo(seed: int, width: int = 640, height: int = 480) -> Image.Image:
    return synthetic_photo(seed, width, height)


def make_tree(root: Path) -> Path:
    """A copy group (a.jpg kept; an identical backup and a smaller export go), an exact one (b.png kept)
    and a photo with no duplicate: ROOT/lib, 6 files."""
    a = save(photo(1, 640, 480), root / "lib/a.jpg", quality=95)
    (root / "lib/backup").mkdir()
    shutil.copy2(a, root / "lib/backup/a.jpg")
    save(photo(1, 640, 480).resize((320, 240)), root / "lib/export/a_small.jpg", quality=85)
    b = save(photo(2, 640, 480), root / "lib/b.png")
    shutil.copy2(b, root / "lib/b_copy.png")
    save(photo(3, 640, 480), root / "lib/c.jpg")
    return root / "lib"


def make_thirty(lib: Path, seed: int = 400) -> Path:
    """30 files: 10 photos in LIB/photos, each with identical copies in LIB/copies and LIB/more (20 to trash)."""
    for i in range(10):
        p = save(photo(seed + i, 160, 120), lib / f"photos/p{i}.jpg", quality=90)
        for folder in ("copies", "more"):
            (lib / folder).mkdir(exist_ok=True)
            shutil.copy2(p, lib / folder / f"p{i}.jpg")
    return lib


@pytest.fixture(scope="session")
def dup_tree_template(tmp_path_factory):
    """make_tree's library scanned once per session, and a pristine copy of it (bytes and times)."""
    base = tmp_path_factory.mktemp("duptree")
    with pytest.MonkeyPatch.context() as mp:
        for var, sub in (("HOME", "home"), ("XDG_CACHE_HOME", "home/.cache"), ("XDG_CONFIG_HOME", "home/.config")):
            mp.setenv(var, str(base / sub))
        lib = make_tree(base / "work")
        scan(lib, base / "template.db")
    shutil.copytree(lib, base / "pristine", copy_function=shutil.copy2, symlinks=True)
    return lib, base / "pristine", base / "template.db"


@pytest.fixture
def dup_tree(dup_tree_template, tmp_path):
    """make_tree's library and a cache holding its scan, fresh for each test: the library is restored at
    the same paths with the same bytes and modification times, so the scan's plan holds for it."""
    lib, pristine, template_db = dup_tree_template
    shutil.rmtree(lib, ignore_errors=True)
    shutil.copytree(pristine, lib, copy_function=shutil.copy2, symlinks=True)
    db = tmp_path / "cache/ndup.db"
    db.parent.mkdir(parents=True)
    shutil.copy2(template_db, db)
    return lib, db
