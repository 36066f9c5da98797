"""Groups -> a plan: one keeper per group chosen by an explicit policy, and a reason for every file.

The keeper policy (ndup.policy) is ordered rules; the default, in order (the first rule on which two
files differ decides):
  1. more pixels;
  2. the better format: RAW > HEIF/AVIF > lossless (PNG, TIFF, BMP) > JPEG > WebP > GIF, and among
     JPEGs the higher estimated quality, so an original wins over its re-encode;
  3. the larger file;
  4. the richer EXIF metadata;
  5. the older file (capture time when known, else modification time);
  6. the shorter path, then the alphabetically first, so the choice is always deterministic.
Upscaled copies have more pixels than their source; they are rare in photo libraries and the review
step shows both, so pixels stay the first rule. The pick of a group of similar shots puts the
sharpest and best-exposed first (DEFAULT_PICK), then the same rules.

Files under a protected folder are never proposed for deletion: they are left for review.
"""

from __future__ import annotations

from collections.abc import Sequence

from ndup.group import Cluster
from ndup.policy import DEFAULT_POLICY, DEFAULT_PREFER, FORMAT_RANK, Policy, human_bytes, is_under, keeper_policies
from ndup.records import Failure, Group, ImageRecord, Member, Plan

__all__ = ["FORMAT_RANK", "RULES", "deciding_rule", "human_bytes", "make_plan", "policy_key"]

# Rule names of the default policy, in order; the reason for each deleted file names the one that decided.
RULES = tuple(DEFAULT_PREFER.split(","))


def policy_key(rec: ImageRecord, policy: Policy = DEFAULT_POLICY) -> tuple:
    """Sort key, smallest = most worth keeping."""
    return policy.key(rec)


def deciding_rule(keeper: ImageRecord, other: ImageRecord, policy: Policy = DEFAULT_POLICY) -> str:
    """Why the keeper was preferred to `other`: the first rule that tells them apart, with both values."""
    return policy.explain(keeper, other)


def _protected_by(path: str, protect: Sequence[str]) -> str | None:
    return next((d for d in protect if is_under(path, d)), None)


def _member(rec: ImageRecord, action: str, score: float, reason: str) -> Member:
    f = rec.facts
    return Member(rec.path, action, round(score, 4), reason, rec.size, f.width, f.height, f.format)


def make_plan(
    run_id: int,
    images: Sequence[ImageRecord],
    clusters: Sequence[Cluster],
    failures: Sequence[Failure],
    summary: dict,
    policy: Policy | None = None,
    pick: Policy | None = None,
    protect: Sequence[str] = (),
) -> Plan:
    """`policy` explains copy groups, `pick` similar ones (defaults: DEFAULT_PREFER, DEFAULT_PICK then it);
    `protect` are absolute folders whose files are never proposed for deletion."""
    default_policy, default_pick = keeper_policies()
    policy = policy or default_policy
    pick = pick or default_pick
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
            if cluster.tier == "similar":
                rule = pick.explain(keeper, rec)
                members.append(
                    _member(rec, "review", score, f"similar shot, not a copy: yours to review; pick won on {rule}")
                )
                continue
            rule = policy.explain(keeper, rec)
            same = rec.facts.content_hash == keeper.facts.content_hash
            why = f"{'same bytes as' if same else 'copy of'} the kept file; keeper won on {rule}"
            folder = _protected_by(rec.path, protect)
            if folder:
                members.append(_member(rec, "review", score, f"{why}; in protected folder {folder}, so not deleted"))
            else:
                members.append(_member(rec, "delete", score, why))
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
