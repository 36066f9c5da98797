"""Groups -> a plan: one keeper per group chosen by an explicit policy, and a reason for every file.

The default keeper policy, in order (the first rule on which two files differ decides):
  1. more pixels;
  2. the better format: RAW > HEIF/AVIF > lossless (PNG, TIFF, BMP) > JPEG > WebP > GIF, and among
     JPEGs the higher estimated quality, so an original wins over its re-encode;
  3. the larger file;
  4. the richer EXIF metadata;
  5. the older file (modification time);
  6. the shorter path, then the alphabetically first, so the choice is always deterministic.
Upscaled copies have more pixels than their source; they are rare in photo libraries and the review
step shows both, so pixels stay the first rule.
"""

from __future__ import annotations

from collections.abc import Sequence

from ndup.group import Cluster
from ndup.records import Failure, Group, ImageRecord, Member, Plan

FORMAT_RANK = {
    "RAW": 6, "DNG": 6, "CR3": 6, "RAF": 6,
    "HEIF": 5, "AVIF": 5,
    "PNG": 4, "TIFF": 4, "BMP": 4,
    "JPEG": 3, "MPO": 3, "JPEG2000": 3,
    "WEBP": 2,
    "GIF": 1,
}  # fmt: skip


# Rule names, in policy order; the reason for each deleted file names the first one that decided.
RULES = ("pixels", "format", "size", "exif", "oldest", "path")


def _format_label(rec: ImageRecord) -> str:
    f = rec.facts
    return f"{f.format} q{f.quality}" if f.quality else f.format


def policy_key(rec: ImageRecord) -> tuple:
    """Sort key, smallest = most worth keeping; one component per rule in RULES."""
    f = rec.facts
    return (
        -f.pixels,
        (-FORMAT_RANK.get(f.format, 0), -(f.quality or 0)),
        -rec.size,
        -f.exif_tags,
        rec.mtime_ns,
        (len(rec.path), rec.path),
    )


def _rule_values(rec: ImageRecord) -> tuple[str, ...]:
    import datetime

    f = rec.facts
    when = datetime.datetime.fromtimestamp(rec.mtime_ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")
    return (f"{f.width}x{f.height}", _format_label(rec), human_bytes(rec.size), f"{f.exif_tags} tags", when)


def deciding_rule(keeper: ImageRecord, other: ImageRecord) -> str:
    """Why the keeper was preferred to `other`: the first rule that tells them apart, with both values."""
    k_key, o_key = policy_key(keeper), policy_key(other)
    for i, (rule, kk, ok) in enumerate(zip(RULES, k_key, o_key)):
        if kk != ok:
            if rule == "path":
                return "path (shorter, or first in order)"
            return f"{rule} ({_rule_values(keeper)[i]} vs {_rule_values(other)[i]})"
    return "path (the files tie on every rule)"


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _member(rec: ImageRecord, action: str, score: float, reason: str) -> Member:
    f = rec.facts
    return Member(rec.path, action, round(score, 4), reason, rec.size, f.width, f.height, f.format)


def make_plan(
    run_id: int,
    images: Sequence[ImageRecord],
    clusters: Sequence[Cluster],
    failures: Sequence[Failure],
    summary: dict,
) -> Plan:
    groups = []
    ordered = sorted(clusters, key=lambda c: (c.tier == "similar", images[c.keeper].path))
    for gid, cluster in enumerate(ordered, start=1):
        keeper = images[cluster.keeper]
        members = []
        for idx, score in zip(cluster.members, cluster.scores):
            rec = images[idx]
            if idx == cluster.keeper:
                why = (
                    "best pick of these similar shots"
                    if cluster.tier == "similar"
                    else "best copy by the keeper policy"
                )
                members.append(_member(rec, "keep", 1.0, why))
                continue
            rule = deciding_rule(keeper, rec)
            if cluster.tier == "similar":
                members.append(
                    _member(rec, "review", score, f"similar shot, not a copy: yours to review; pick won on {rule}")
                )
            elif rec.facts.content_hash == keeper.facts.content_hash:
                members.append(_member(rec, "delete", score, f"same bytes as the kept file; keeper won on {rule}"))
            else:
                members.append(_member(rec, "delete", score, f"copy of the kept file; keeper won on {rule}"))
        groups.append(Group(id=gid, tier=cluster.tier, keep=keeper.path, members=tuple(members)))
    to_delete = [m for g in groups for m in g.members if m.action == "delete"]
    summary = dict(summary)
    summary.update(
        groups=len(groups),
        groups_by_tier={t: sum(1 for g in groups if g.tier == t) for t in ("exact", "copy", "similar")},
        to_delete=len(to_delete),
        bytes_freed=sum(m.size for m in to_delete),
        failures=len(failures),
    )
    return Plan(run_id=run_id, groups=tuple(groups), failures=tuple(failures), summary=summary)
