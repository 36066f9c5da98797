"""Registration (ndup.registration): edited copies line up block for block; second captures do not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from imagegen import synthetic_photo
from PIL import Image, ImageOps

from ndup.registration import FEW_KEYPOINTS, MAX_MOTION, MIN_WORST_BLOCK, prepare, register


def view(im: Image.Image):
    return prepare(np.asarray(im.convert("RGB")))


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return synthetic_photo(11, 800, 600)


def crop_half(im: Image.Image) -> Image.Image:
    w, h = im.size
    cw, ch = int(w * 0.707), int(h * 0.707)
    return im.crop((w - cw - 20, 30, w - 20, 30 + ch))


def tilt(im: Image.Image) -> Image.Image:
    return im.rotate(12, resample=Image.BICUBIC, expand=True, fillcolor=(255, 255, 255))


def framed(im: Image.Image) -> Image.Image:
    return ImageOps.expand(im, border=40, fill=(30, 120, 200))


def squeezed_mirror(im: Image.Image) -> Image.Image:
    return ImageOps.mirror(im.crop((60, 40, 760, 560)).resize((400, 300), Image.LANCZOS))


@pytest.mark.parametrize("edit", [crop_half, tilt, framed, squeezed_mirror], ids=lambda f: f.__name__)
def test_an_edited_copy_is_the_same_picture(photo, edit):
    found = register(view(photo), view(edit(photo)))
    assert found is not None and found.same_picture, found and found.describe()
    assert found.mirrored == (edit is squeezed_mirror)


@pytest.mark.parametrize("edit", [crop_half, tilt, framed, squeezed_mirror], ids=lambda f: f.__name__)
def test_no_part_of_an_edited_copy_moves(photo, edit):
    found = register(view(photo), view(edit(photo)))
    assert found.motion < MAX_MOTION / 2


def next_frame(im: Image.Image) -> Image.Image:
    """The next frame of a still scene: a few things in it moved by a pixel or two, nothing else."""
    frame = im.copy()
    for box, (dx, dy) in [
        ((80, 60, 360, 300), (2, 1)),
        ((420, 250, 760, 560), (-1, 2)),
        ((300, 20, 560, 200), (2, -2)),
    ]:
        frame.paste(im.crop(box), (box[0] + dx, box[1] + dy))
    return frame


def test_consecutive_frames_are_not_the_same_picture(photo):
    found = register(view(photo), view(next_frame(photo)))
    assert found is not None and found.worst_block >= MIN_WORST_BLOCK  # every block still finds its match...
    assert found.motion > MAX_MOTION and not found.same_picture  # ...but parts moved against the rest


def captioned(im: Image.Image) -> Image.Image:
    """A copy with a caption box drawn over part of it: one area no longer matches, nothing moved."""
    from PIL import ImageDraw

    out = im.copy()
    draw = ImageDraw.Draw(out)
    draw.rectangle((40, 480, 420, 560), fill=(250, 250, 250))
    draw.text((60, 500), "HAPPY BIRTHDAY", fill=(200, 0, 0))
    return out


def test_a_captioned_copy_is_never_another_frame(photo):
    from ndup.registration import ANOTHER_FRAME

    found = register(view(photo), view(captioned(photo)))
    assert found.aligned and found.motion < MAX_MOTION / 2
    assert found.verdict != ANOTHER_FRAME


def test_registration_is_symmetric_in_which_picture_contains_the_other(photo):
    copy = crop_half(photo)
    one, other = register(view(photo), view(copy)), register(view(copy), view(photo))
    assert one.same_picture and other.same_picture


def second_capture(im: Image.Image, seed: int) -> Image.Image:
    """The scene again: the camera moved a little and something in it moved."""
    rng = np.random.default_rng(seed)
    w, h = im.size
    shot = im.crop((24, 18, w - 8, h - 30)).resize((w, h), Image.BICUBIC)
    patch = shot.crop((300, 200, 460, 320))
    shot.paste(patch, (300 + int(rng.integers(40, 60)), 200 + int(rng.integers(20, 40))))
    return shot


@pytest.mark.parametrize("seed", [0, 1])
def test_a_second_capture_with_something_moved_is_not(photo, seed):
    found = register(view(photo), view(second_capture(photo, seed)))
    assert found is not None  # the scene lines up...
    assert not found.same_picture  # ...but not every part of it
    assert found.worst_block < MIN_WORST_BLOCK


def test_unrelated_pictures_do_not_register(photo):
    found = register(view(photo), view(synthetic_photo(12, 800, 600)))
    assert found is None or not found.same_picture


def test_flat_pictures_are_never_called_the_same_picture():
    flat = Image.new("RGB", (640, 480), (90, 90, 90))
    found = register(view(flat), view(flat.crop((0, 0, 400, 300))))
    assert found is None or not found.same_picture


@pytest.fixture(scope="module")
def wallpaper() -> Image.Image:
    """A smooth graphic: colour gradients cut by a few soft curved bands, almost no corners for keypoints."""
    h, w = 540, 960
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    picture = np.stack([120 + 80 * x / w, 60 + 60 * y / h, 150 - 50 * (x + y) / (w + h)], axis=-1)
    for cx, cy, r, shade in [(250, 700, 520, 55), (900, -150, 480, -45), (-100, 100, 300, 35)]:
        inside = 1 / (1 + np.exp(np.clip((np.hypot(x - cx, y - cy) - r) / 1.5, -50, 50)))  # a soft edge
        picture += shade * inside[..., None]
    return Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8))


def smooth_tilt(im: Image.Image) -> Image.Image:
    """Tilted by 9 degrees and cropped to what stays inside the frame (what a photo editor does)."""
    w, h = im.size
    turned = im.rotate(9, resample=Image.BICUBIC)
    return turned.crop((int(w * 0.16), int(h * 0.16), int(w * 0.84), int(h * 0.84)))


def perspective_capture(im: Image.Image) -> Image.Image:
    """The same smooth scene from a moved viewpoint: a perspective change, cropped to the frame."""
    w, h = im.size
    src = [(0, 0), (w, 0), (w, h), (0, h)]
    dst = [(0.05 * w, 0.02 * h), (0.97 * w, 0.06 * h), (w, h), (0.02 * w, 0.93 * h)]
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst):
        rows += [[u, v, 1, 0, 0, 0, -x * u, -x * v], [0, 0, 0, u, v, 1, -y * u, -y * v]]
        rhs += [x, y]
    coeffs = np.linalg.solve(np.array(rows, float), np.array(rhs, float))
    shot = im.transform((w, h), Image.PERSPECTIVE, tuple(coeffs), Image.BICUBIC)
    return shot.crop((int(w * 0.1), int(h * 0.1), int(w * 0.9), int(h * 0.9)))


def test_a_smooth_picture_has_too_few_corners_for_keypoints(wallpaper):
    assert len(view(wallpaper).points) < FEW_KEYPOINTS


@pytest.mark.parametrize("edit", [crop_half, smooth_tilt, framed], ids=lambda f: f.__name__)
def test_a_copy_of_a_smooth_picture_lines_up_by_its_intensities(wallpaper, edit):
    found = register(view(wallpaper), view(edit(wallpaper)))
    assert found is not None and found.same_picture, found and found.describe()
    assert found.intensity is not None and "aligned by intensity" in found.describe()


def test_a_smooth_scene_seen_from_elsewhere_is_not_the_same_picture(wallpaper):
    found = register(view(wallpaper), view(perspective_capture(wallpaper)))
    assert found is None or not found.same_picture, found.describe()


def test_the_perspective_fit_is_measured_only_where_it_decides(wallpaper, monkeypatch):
    """The perspective fit (an ECC homography, the costliest step) runs only for an intensity fit that
    passes everything else; for the rest it could not change the verdict."""
    import ndup.registration as registration

    measured = []
    real = registration._perspective
    monkeypatch.setattr(registration, "_perspective", lambda *a: measured.append(1) or real(*a))
    flipped = Image.fromarray(np.asarray(wallpaper)[::-1].copy())  # smooth too, but lies nowhere in it
    found = register(view(wallpaper), view(flipped))
    assert found is None or not found.aligned
    assert measured == []
    found = register(view(wallpaper), view(crop_half(wallpaper)))
    assert found is not None and found.same_picture and found.perspective is not None
    assert measured


def test_a_scan_groups_a_half_crop_with_its_original_but_not_a_second_capture_or_the_next_frame(photo, tmp_path):
    from ndup.config import ScanSettings
    from ndup.scan import run_scan

    lib = tmp_path / "lib"
    lib.mkdir()
    photo.save(lib / "photo.jpg", quality=92)
    crop_half(photo).save(lib / "crop.jpg", quality=85)
    tilt(photo).save(lib / "tilt.jpg", quality=85)
    second_capture(photo, 0).save(lib / "again.jpg", quality=92)
    next_frame(photo).save(lib / "next.png")
    synthetic_photo(12, 800, 600).save(lib / "other.jpg", quality=92)
    seen = {}
    plan = run_scan(
        ScanSettings(roots=(lib,), db_path=tmp_path / "c.db", workers=1),
        on_matched=lambda images, verdicts: seen.update(images=images, verdicts=verdicts),
    )
    copies = [{m.path.rsplit("/", 1)[1] for m in g.members} for g in plan.groups if g.tier == "copy"]
    assert {"photo.jpg", "crop.jpg", "tilt.jpg"} in copies, copies
    assert not any(g & {"again.jpg", "next.png", "other.jpg"} for g in copies)
    # the next frame looks like a copy everywhere but where things moved: it is shown as a similar shot
    similar = [{m.path.rsplit("/", 1)[1] for m in g.members} for g in plan.groups if g.tier == "similar"]
    assert any("next.png" in g for g in similar), similar


def test_a_degenerate_fit_is_no_registration_and_never_an_error(photo, monkeypatch):
    import ndup.registration as registration

    monkeypatch.setattr(registration, "_fit", lambda *a: (np.full((2, 3), np.nan), 50))
    assert register(view(photo), view(crop_half(photo))) is None


def test_many_pairs_are_registered_in_batches_on_threads_with_unreadable_files_proving_nothing(photo, monkeypatch):
    import ndup.registration as registration

    pictures = [photo, crop_half(photo), tilt(photo), second_capture(photo, 0), None, next_frame(photo)]
    views = [None if p is None else view(p) for p in pictures]
    pairs = [(0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (1, 4), (0, 5)]
    asked = []

    def view_of(i):
        asked.append(i)
        return views[i]

    monkeypatch.setattr(registration, "VIEW_BATCH", 3)  # several batches, each reusing the views it can
    found = registration.judge(pairs, view_of, threads=2)
    same, frame, unshown = registration.SAME_PICTURE, registration.ANOTHER_FRAME, registration.NOT_SHOWN
    assert found == [same, same, unshown, unshown, same, unshown, frame]
    assert len(asked) < 2 * len(pairs)


def test_the_views_used_last_are_kept_from_one_call_to_the_next_within_their_bound(photo):
    import ndup.registration as registration

    views = [view(p) for p in (photo, crop_half(photo), tilt(photo), second_capture(photo, 0))]
    asked = []

    def view_of(i):
        asked.append(i)
        return views[i]

    recent = registration.RecentViews(capacity=3)
    first = registration.judge([(0, 1), (0, 2)], view_of, recent=recent)
    assert registration.judge([(1, 2)], view_of, recent=recent) == registration.judge([(1, 2)], view_of)
    assert first == registration.judge([(0, 1), (0, 2)], view_of)
    asked.clear()
    registration.judge([(0, 1), (0, 2), (1, 2)], view_of, recent=recent)
    assert asked == []  # all three kept
    registration.judge([(2, 3)], view_of, recent=recent)
    assert asked == [3] and 3 in recent and 0 not in recent  # the least recently used one let go


def test_a_missing_opencv_is_one_clear_error_not_a_traceback(monkeypatch):
    import sys

    from ndup.errors import NdupError
    from ndup.scan import _registration

    monkeypatch.delitem(sys.modules, "ndup.registration", raising=False)
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(NdupError, match="OpenCV is missing"):
        _registration(["a.jpg", "b.jpg"], threads=1)(np.array([[0, 1]]))


def test_a_scan_registers_from_its_own_decode_and_reads_again_only_what_that_cannot_give(tmp_path, monkeypatch):
    import ndup.scan as scan
    from ndup.config import ScanSettings

    big = synthetic_photo(11, 1280, 960)  # decoded at 1/2 for the model and for registration alike
    lib = tmp_path / "lib"
    lib.mkdir()
    big.save(lib / "photo.jpg", quality=92)
    crop_half(big).save(lib / "crop.jpg", quality=85)  # 905x679: 1/2 for the model, whole for registration
    tilt(big).save(lib / "tilt.jpg", quality=85)
    second_capture(big, 0).save(lib / "again.jpg", quality=92)
    next_frame(big).save(lib / "next.png")
    read_again = []
    real_view = scan.registration_view
    monkeypatch.setattr(scan, "registration_view", lambda path: read_again.append(Path(path).name) or real_view(path))

    def scan_with(kept_bytes: int, db: str):
        monkeypatch.setattr(scan, "KEPT_VIEWS_BYTES", kept_bytes)
        read_again.clear()
        seen = {}
        settings = ScanSettings(roots=(lib,), db_path=tmp_path / db, workers=1)
        scan.run_scan(settings, on_matched=lambda images, verdicts: seen.update(verdicts=verdicts))
        return seen["verdicts"], set(read_again)

    kept, read_when_kept = scan_with(scan.KEPT_VIEWS_BYTES, "kept.db")
    none, read_when_none = scan_with(0, "none.db")
    assert kept == none  # the same pixels, so the same verdicts
    assert {"photo.jpg", "crop.jpg", "next.png"} <= read_when_none  # registered
    assert "crop.jpg" in read_when_kept and not read_when_kept & {"photo.jpg", "next.png"}
    _, read_within_budget = scan_with(200_000, "small.db")  # room for one 480x360 picture only
    assert read_when_kept < read_within_budget < read_when_none  # the first file read ("again.jpg") kept
