"""Verified pairs -> groups. Pure: no I/O, no outside libraries.

Weak links must not chain unrelated photos together: A~B and B~C does not put A and C in one group
unless they match each other too. Groups are grown around a centre (the file with the most links) and
its links; the keeper (the policy's favourite) must match at least half of the group, brings in the
files it matches itself, and every other member must match the keeper directly or most of the other
members.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ndup.records import PairVerdict, Tier


@dataclass(frozen=True, slots=True)
class Cluster:
    tier: Tier
    keeper: int
    members: tuple[int, ...]  # keeper first, then the rest in preference order
    scores: tuple[float, ...]  # each member's match score to the keeper (1.0 for the keeper)


class _Graph:
    def __init__(self, edges: Iterable[tuple[int, int, float]]):
        self.adj: dict[int, dict[int, float]] = {}
        for a, b, score in edges:
            if a == b:
                continue
            for x, y in ((a, b), (b, a)):
                row = self.adj.setdefault(x, {})
                row[y] = max(score, row.get(y, 0.0))

    def components(self) -> list[list[int]]:
        seen: set[int] = set()
        out = []
        for start in sorted(self.adj):
            if start in seen:
                continue
            stack, comp = [start], []
            seen.add(start)
            while stack:
                node = stack.pop()
                comp.append(node)
                for nxt in self.adj[node]:
                    if nxt not in seen:
                        seen.add(nxt)
                        stack.append(nxt)
            out.append(sorted(comp))
        return out


def _strength(node: int, among: set[int], adj: dict[int, dict[int, float]]) -> tuple:
    """How central a node is among `among`: links, then total score, then the lower index (determinism)."""
    links = [s for m, s in adj[node].items() if m in among]
    return (len(links), sum(links), -node)


def _neg(strength: tuple) -> tuple:
    """A strength as a min-heap key (largest strength first)."""
    links, total, minus_node = strength
    return (-links, -total, -minus_node)


def _belongs(node: int, keeper: int, cluster: set[int], adj: dict[int, dict[int, float]]) -> bool:
    if node == keeper or keeper in adj[node]:
        return True
    others = len(cluster) - 1
    return sum(1 for m in adj[node] if m in cluster) * 2 > others


def _member_score(node: int, keeper: int, cluster: Sequence[int], adj: dict[int, dict[int, float]]) -> float:
    if node == keeper:
        return 1.0
    if keeper in adj[node]:
        return adj[node][keeper]
    links = [adj[node][m] for m in cluster if m in adj[node]]
    return sum(links) / len(links) if links else 0.0


def cluster_edges(edges: Iterable[tuple[int, int, float]], rank: Callable[[int], object], tier: Tier) -> list[Cluster]:
    """Centre-grown clusters over scored edges; `rank(node)` orders keeper candidates (smallest wins)."""
    graph = _Graph(edges)
    adj = graph.adj
    clusters: list[Cluster] = []
    for comp in graph.components():
        remaining = set(comp)
        # The most central remaining node, found lazily: a node's strength only falls as nodes leave
        # `remaining`, so a popped node whose strength is still what it was pushed with is the maximum
        # (the same node max() over `remaining` would pick; ties are broken by index in both). Linear
        # scans made large components (tens of thousands of similar shots) quadratic.
        heap = [(_neg(_strength(n, remaining, adj)), n) for n in comp]
        heapq.heapify(heap)
        while len(remaining) >= 2:
            center = None
            while heap:
                key, n = heapq.heappop(heap)
                if n not in remaining:
                    continue
                now = _neg(_strength(n, remaining, adj))
                if now == key:
                    center = n
                    break
                heapq.heappush(heap, (now, n))
            if center is None:
                break
            cluster = {center} | {m for m in adj[center] if m in remaining}
            while True:
                keeper = min(cluster, key=rank)
                linked = sum(1 for m in adj[keeper] if m in cluster)
                if keeper == center or 2 * linked >= len(cluster) - 1:
                    break
                # The policy's favourite matches too little of this group to anchor it. It stays out
                # (undeleted), so no file is ever deleted in favour of one the policy ranks lower.
                cluster.discard(keeper)
            # Copies verified against the keeper itself but not against the centre belong here too
            # (a tilted or cropped copy the centre, itself an edited copy, was not shown to match);
            # only those the policy ranks below the keeper, so none is deleted in favour of a lesser file.
            cluster |= {m for m in adj[keeper] if m in remaining and rank(m) > rank(keeper)}
            members = {n for n in cluster if _belongs(n, keeper, cluster, adj)}
            if len(members) < 2:
                remaining.discard(center)
                continue
            ordered = sorted(members, key=lambda n: (n != keeper, rank(n)))
            scores = tuple(_member_score(n, keeper, ordered, adj) for n in ordered)
            clusters.append(Cluster(tier=tier, keeper=keeper, members=tuple(ordered), scores=scores))
            remaining -= members
    return clusters


def unverified_scene_pairs(verdicts: Iterable[PairVerdict], max_size: int) -> list[tuple[int, int]]:
    """Pairs not yet verified inside each set of images linked by copy or similar verdicts (of at most
    `max_size` images). Candidates come from each image's k nearest neighbours, so a scene with more
    than k copies has pairs nobody looked at; groups are only sound when every member's links to the
    keeper and the others were actually verified."""
    verdicts = list(verdicts)
    graph = _Graph((v.a, v.b, v.score) for v in verdicts if v.tier in ("exact", "copy", "similar"))
    scenes = [comp for comp in graph.components() if 3 <= len(comp) <= max_size]
    scene_of = {i: s for s, comp in enumerate(scenes) for i in comp}
    # only pairs inside one scene matter: a set of every verified pair was 130 MB at 890,000 pairs
    seen = {(min(v.a, v.b), max(v.a, v.b)) for v in verdicts if scene_of.get(v.a, -1) == scene_of.get(v.b, -2)}
    out = []
    for comp in scenes:
        out += [(a, b) for i, a in enumerate(comp) for b in comp[i + 1 :] if (a, b) not in seen]
    return out


def build_groups(
    count: int,
    verdicts: Iterable[PairVerdict],
    rank: Callable[[int], object],
    content_hashes: Sequence[str],
    similar_rank: Callable[[int], object] | None = None,
) -> list[Cluster]:
    """Copy groups (tier exact when every member has the same bytes), then similar-shot groups.

    Similar groups are built between the keepers of copy groups and the images in no copy group, so a
    photo is never both deleted as a copy and offered as a similar shot. `similar_rank` orders the
    pick of a similar group (the sharpest of a burst, say); by default `rank` does.
    """
    verdicts = list(verdicts)
    copy_edges = [(v.a, v.b, v.score) for v in verdicts if v.tier in ("exact", "copy")]
    copies = cluster_edges(copy_edges, rank, "copy")
    copies = [
        Cluster("exact", c.keeper, c.members, c.scores) if len({content_hashes[m] for m in c.members}) == 1 else c
        for c in copies
    ]
    unit_of = list(range(count))
    for c in copies:
        for m in c.members:
            unit_of[m] = c.keeper
    similar_edges = [
        (unit_of[v.a], unit_of[v.b], v.score) for v in verdicts if v.tier == "similar" and unit_of[v.a] != unit_of[v.b]
    ]
    similar = cluster_edges(similar_edges, similar_rank or rank, "similar")
    return copies + similar
