"""Write docs/review.svg: `ndup review` on a small demo library, headless, in an 80x24 terminal.

    python docs/make_screenshot.py

The demo library is built in a temporary folder from the project's photo pool (../shared/photos,
OpenCV sample images: Apache-2.0 AND BSD-3-Clause, see SOURCES.json there) when it is present,
else from generated pictures. The real pipeline scans it; nothing outside the temporary folder is
read or written.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
POOL = HERE.parent.parent / "shared" / "photos"


def build_library(root: Path) -> Path:
    from PIL import Image

    lib = root / "Photos"
    (lib / "2019").mkdir(parents=True)
    (lib / "backup/2019").mkdir(parents=True)
    (lib / "export").mkdir()
    source = POOL / "ocv_fruits.jpg"
    if source.exists():
        im = Image.open(source).convert("RGB")
    else:
        sys.path.insert(0, str(HERE.parent / "tests"))
        from imagegen import synthetic_photo

        im = synthetic_photo(7, 640, 480)
    im.save(lib / "2019/fruits.jpg", quality=95)
    shutil.copy2(lib / "2019/fruits.jpg", lib / "backup/2019/fruits.jpg")
    im.resize((im.width // 2, im.height // 2)).save(lib / "export/fruits_small.jpg", quality=80)
    return lib


async def shoot(store, out: Path) -> None:
    from ndup.review import ReviewApp

    app = ReviewApp(store, store.load_plan(), opener=lambda path: None)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("right")
        await pilot.pause()
        app.save_screenshot(out.name, str(out.parent))


def main() -> None:
    root = Path(tempfile.gettempdir()) / "ndup-demo"
    shutil.rmtree(root, ignore_errors=True)
    os.environ["XDG_CACHE_HOME"] = str(root / "cache")
    from ndup.config import ScanSettings
    from ndup.scan import run_scan
    from ndup.store import Store

    lib = build_library(root)
    db = root / "cache/ndup.db"
    run_scan(ScanSettings(roots=(lib,), db_path=db, workers=1))
    store = Store.open(db)
    try:
        out = HERE / "review.svg"
        asyncio.run(shoot(store, out))
    finally:
        store.close()
    shutil.rmtree(root, ignore_errors=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
