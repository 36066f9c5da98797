"""Pairwise accuracy of a plan against a labelled folder. Pure: no I/O, no outside libraries.

Ground truth is {file: group id}: two files are a true pair when they share a group id. A predicted
pair is two files in one `exact` or `copy` group of the plan. Files absent from the truth are ignored.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import combinations

from ndup.records import Plan


@dataclass(frozen=True)
class Metrics:
    precision: float
    recall: float
    f1: float
    true_pairs: int
    predicted_pairs: int
    correct_pairs: int
    average_precision: float | None = None  # area under the precision-recall curve of the pair scores
    recall_by_kind: dict[str, tuple[float, int]] = field(default_factory=dict)  # kind -> (recall, pairs)


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


def true_pairs(truth: Mapping[str, object]) -> set[tuple[str, str]]:
    groups: dict[object, list[str]] = defaultdict(list)
    for path, gid in truth.items():
        groups[gid].append(path)
    return {_pair(a, b) for members in groups.values() for a, b in combinations(sorted(members), 2)}


def predicted_pairs(plan: Plan, tiers: Iterable[str] = ("exact", "copy")) -> set[tuple[str, str]]:
    wanted = set(tiers)
    return {_pair(a.path, b.path) for g in plan.groups if g.tier in wanted for a, b in combinations(g.members, 2)}


def average_precision(scores: Mapping[tuple[str, str], float], positives: set[tuple[str, str]]) -> float:
    """Area under the precision-recall curve, with unscored true pairs counted as never found."""
    if not positives:
        return 0.0
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    hits, total = 0, 0.0
    for i, (pair, _) in enumerate(ranked, start=1):
        if pair in positives:
            hits += 1
            total += hits / i
    return total / len(positives)


def evaluate(
    plan: Plan,
    truth: Mapping[str, object],
    kinds: Mapping[str, str] | None = None,
    scores: Mapping[tuple[str, str], float] | None = None,
    ignore: Iterable[tuple[str, str]] = (),
) -> Metrics:
    """Precision, recall and F1 over pairs of labelled files; recall per kind of edit when `kinds` is given.

    Per-kind recall counts, for each file of that kind, its true pairs with the group's files of kind
    "original" (or with all its true partners when the group has no original). `ignore` lists pairs
    that are neither right nor wrong (e.g. designer variants of one picture).
    """
    labelled = set(truth)
    skip = {_pair(a, b) for a, b in ignore}
    truth_set = true_pairs(truth) - skip
    predicted = {p for p in predicted_pairs(plan) if p[0] in labelled and p[1] in labelled} - skip
    correct = truth_set & predicted
    precision = len(correct) / len(predicted) if predicted else 1.0
    recall = len(correct) / len(truth_set) if truth_set else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    ap = None
    if scores is not None:
        labelled_scores = {p: s for p, s in scores.items() if p[0] in labelled and p[1] in labelled and p not in skip}
        ap = average_precision(labelled_scores, truth_set)
    by_kind: dict[str, tuple[float, int]] = {}
    if kinds:
        members: dict[object, list[str]] = defaultdict(list)
        for path, gid in truth.items():
            members[gid].append(path)
        found: dict[str, list[bool]] = defaultdict(list)
        for path, kind in kinds.items():
            if path not in truth or kind == "original":
                continue
            group = members[truth[path]]
            partners = [p for p in group if p != path and kinds.get(p) == "original"] or [p for p in group if p != path]
            for other in partners:
                pair = _pair(path, other)
                if pair not in skip:
                    found[kind].append(pair in predicted)
        by_kind = {k: (sum(v) / len(v), len(v)) for k, v in sorted(found.items()) if v}
    return Metrics(precision, recall, f1, len(truth_set), len(predicted), len(correct), ap, by_kind)
