"""The configurable keeper policy: parsing, ordering, and reasons that name the deciding rule."""

import os

import pytest

from ndup.errors import NdupError
from ndup.group import Cluster
from ndup.plan import make_plan, policy_key
from ndup.policy import DEFAULT_POLICY, DEFAULT_PREFER, Policy, keeper_policies
from ndup.records import ImageFacts, ImageRecord


def rec(path, w=4000, h=3000, fmt="JPEG", q=90, size=5_000_000, exif=20, mtime=1_000, content="c", **facts):
    f = ImageFacts(content, fmt, w, h, "0" * 16, "0" * 16, q if fmt == "JPEG" else None, fmt == "PNG", exif, **facts)
    return ImageRecord(path, size, mtime, f)


def best(policy: Policy, *records):
    return min(records, key=policy.key)


def test_default_policy_is_the_documented_one():
    assert DEFAULT_POLICY.text == DEFAULT_PREFER == "pixels,format,size,exif,oldest,path"
    a, b = rec("/a"), rec("/b", size=1)
    assert policy_key(a) == DEFAULT_POLICY.key(a) and policy_key(a) < policy_key(b)


def test_rules_apply_in_the_order_given_and_the_reason_names_the_rule_as_written():
    big_jpeg = rec("/lib/big.jpg", w=4000, h=3000)
    small_png = rec("/lib/small.png", w=2000, h=1500, fmt="PNG")
    by_resolution = Policy.parse("resolution,format")
    assert best(by_resolution, big_jpeg, small_png) is big_jpeg
    assert by_resolution.explain(big_jpeg, small_png) == "resolution (4000x3000 vs 2000x1500)"
    by_format = Policy.parse("format,resolution")
    assert best(by_format, big_jpeg, small_png) is small_png
    assert by_format.explain(small_png, big_jpeg) == "format (PNG vs JPEG q90)"


def test_format_order_with_aliases_ties_and_raw_flavours():
    heic = rec("/a.heic", fmt="HEIF")
    avif = rec("/a.avif", fmt="AVIF")
    png = rec("/a.png", fmt="PNG")
    jpg = rec("/a.jpg")
    webp = rec("/a.webp", fmt="WEBP")
    nef = rec("/a.nef", fmt="RAW", subtype="NEF")
    dng = rec("/a.dng", fmt="RAW", subtype="DNG")
    p = Policy.parse("format:jpg>png>raw")
    assert sorted([png, nef, jpg], key=p.key) == [jpg, png, nef]
    # unlisted formats come after the listed ones, in the default order among themselves
    assert sorted([webp, heic, jpg], key=p.key) == [jpg, heic, webp]
    assert Policy.parse("format:dng>nef").explain(dng, nef) == "format:dng>nef (RAW (DNG) vs RAW (NEF))"
    tie = Policy.parse("format:heic=avif>jpg,path")
    assert tie.explain(heic, avif).startswith("path")  # equal formats: the next rule decides
    assert sorted([rec("/q70.jpg", q=70), rec("/q95.jpg", q=95)], key=tie.key)[0].path == "/q95.jpg"


def test_path_rule_prefers_files_under_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    inside = rec(str(tmp_path / "Photos/Originals/2020/a.jpg"))
    outside = rec(str(tmp_path / "a.jpg"))
    p = Policy.parse("path:~/Photos/Originals,pixels")
    assert best(p, outside, inside) is inside
    folder = os.path.join(str(tmp_path), "Photos", "Originals")
    assert p.explain(inside, outside) == f"path:~/Photos/Originals (inside vs outside {folder})"
    assert best(Policy.parse("pixels,path"), outside, inside) is outside  # plain path: shorter wins


def test_oldest_prefers_capture_time_over_modification_time():
    shot_early = rec("/a", mtime=9_000_000_000_000_000_000, capture_time="2001-01-01T12:00:00+00:00")
    touched_early = rec("/b", mtime=1_000_000_000_000_000_000)  # 2001-09-09, no capture time
    p = Policy.parse("oldest")
    assert best(p, shot_early, touched_early) is shot_early
    assert p.explain(shot_early, touched_early).startswith("oldest (taken 2001-01-01")
    assert best(Policy.parse("newest"), shot_early, touched_early) is touched_early


def test_rating_sharpness_and_exposure_rules():
    starred, plain = rec("/a", rating=5), rec("/b")
    assert best(Policy.parse("rating"), plain, starred) is starred
    sharp, soft = rec("/sharp", sharpness=400.0, clipped=0.0), rec("/soft", sharpness=90.0, clipped=0.0)
    blown = rec("/blown", sharpness=900.0, clipped=0.12)
    _, pick = keeper_policies()
    assert best(pick, soft, blown, sharp) is sharp
    assert pick.explain(sharp, blown) == "exposure (0% clipped vs 12% clipped)"
    assert pick.explain(sharp, soft) == "sharpness (400 vs 90)"
    nearly = rec("/nearly", sharpness=395.0, clipped=0.001)  # within noise on both: the keeper policy decides
    assert pick.explain(sharp, nearly).startswith("path")


@pytest.mark.parametrize(
    "text,message",
    [
        ("pixels,colour", "unknown keeper rule 'colour' in --prefer"),
        ("format:jpg>bmpx", "unknown format 'bmpx'"),
        ("size:big", "keeper rule 'size' takes no argument"),
        (" , ", "an empty keeper policy"),
    ],
)
def test_bad_policies_are_usage_errors_listing_the_valid_rules(text, message):
    with pytest.raises(NdupError) as e:
        Policy.parse(text)
    assert message in e.value.message and e.value.exit_code == 2
    assert "pixels" in e.value.hint or "jpg, mpo, png, raw" in e.value.hint


def test_plan_reasons_follow_the_configured_policy_and_protected_folders_are_never_deleted():
    images = [rec("/lib/a.jpg", content="x"), rec("/keep/a.png", fmt="PNG", w=2000, h=1500, content="y"),
              rec("/keep/b.jpg", w=1000, h=750, content="z")]  # fmt: skip
    policy = Policy.parse("format,resolution")
    plan = make_plan(1, images, [Cluster("copy", 1, (1, 0, 2), (1.0, 0.95, 0.9))], [], {}, policy, protect=["/keep"])
    [g] = plan.groups
    assert g.keep == "/keep/a.png"
    a, b = g.members[1], g.members[2]
    assert a.action == "delete" and a.reason == "copy of the kept file; keeper won on format (PNG vs JPEG q90)"
    assert b.action == "review" and "in protected folder /keep, so not deleted" in b.reason
    assert plan.summary["to_delete"] == 1
