import pytest

from ndup.group import Cluster
from ndup.plan import deciding_rule, make_plan, policy_key
from ndup.records import ImageFacts, ImageRecord


def rec(path, w=4000, h=3000, fmt="JPEG", q=90, size=5_000_000, exif=20, mtime=1_000, content="c"):
    facts = ImageFacts(content, fmt, w, h, "0" * 16, "0" * 16, q if fmt == "JPEG" else None, fmt == "PNG", exif)
    return ImageRecord(path, size, mtime, facts)


@pytest.mark.parametrize(
    "better,worse,rule",
    [
        (rec("/a", w=4000), rec("/b", w=2000, h=1500), "pixels"),
        (rec("/a", fmt="PNG"), rec("/b", fmt="JPEG"), "format"),
        (rec("/a", q=95), rec("/b", q=70), "format"),
        (rec("/a", size=6_000_000), rec("/b", size=5_000_000), "size"),
        (rec("/a", exif=30), rec("/b", exif=2), "exif"),
        (rec("/a", mtime=10), rec("/b", mtime=20), "oldest"),
        (rec("/photos/a.jpg"), rec("/photos/copies/a.jpg"), "path"),
    ],
)
def test_keeper_policy_rules_in_order(better, worse, rule):
    assert policy_key(better) < policy_key(worse)
    assert deciding_rule(better, worse).startswith(rule)


def test_earlier_rules_win_over_later_ones():
    bigger_but_jpeg = rec("/a", w=4000, fmt="JPEG", size=1)
    smaller_png = rec("/b", w=3000, h=2000, fmt="PNG", size=10**9)
    assert policy_key(bigger_but_jpeg) < policy_key(smaller_png)


def test_plan_actions_reasons_and_summary():
    images = [rec("/lib/orig.jpg", content="x"), rec("/lib/small.jpg", w=1000, h=750, size=300_000, content="y"),
              rec("/lib/same.jpg", content="x", mtime=5_000), rec("/lib/burst2.jpg", content="z")]  # fmt: skip
    clusters = [
        Cluster("copy", 0, (0, 1, 2), (1.0, 0.97, 1.0)),
        Cluster("similar", 0, (0, 3), (1.0, 0.6)),
    ]
    plan = make_plan(7, images, clusters, [], {"files_seen": 4})
    copy, similar = plan.groups
    assert copy.keep == "/lib/orig.jpg" and [m.action for m in copy.members] == ["keep", "delete", "delete"]
    assert (
        "copy of the kept file" in copy.members[1].reason and "pixels (4000x3000 vs 1000x750)" in copy.members[1].reason
    )
    assert copy.members[2].reason.startswith("same bytes as the kept file; keeper won on oldest")
    assert [m.action for m in similar.members] == ["keep", "review"]
    assert plan.summary["to_delete"] == 2 and plan.summary["bytes_freed"] == 5_300_000
    assert plan.summary["groups_by_tier"] == {"exact": 0, "copy": 1, "similar": 1}
