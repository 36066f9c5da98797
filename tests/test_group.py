import pytest

from ndup.group import build_groups, cluster_edges, unverified_scene_pairs
from ndup.records import PairVerdict


def v(a, b, tier="copy", score=0.9):
    return PairVerdict(a, b, tier, score)


def by_index(n):
    return n


def test_weak_links_do_not_chain_unrelated_photos():
    # 0~1 and 1~2, but 0 and 2 do not match each other: not one group of three
    clusters = cluster_edges([(0, 1, 0.9), (1, 2, 0.9)], by_index, "copy")
    assert all(len(c.members) == 2 for c in clusters)
    assert not any({0, 2} <= set(c.members) for c in clusters)


def test_a_clique_is_one_group_with_the_ranked_keeper_first():
    edges = [(a, b, 0.95) for a in range(4) for b in range(a + 1, 4)]
    [c] = cluster_edges(edges, rank=lambda n: -n, tier="copy")  # highest index ranks best
    assert c.keeper == 3 and c.members[0] == 3 and set(c.members) == {0, 1, 2, 3}
    assert c.scores[0] == 1.0 and all(s == 0.95 for s in c.scores[1:])


def test_members_must_match_the_keeper_or_most_members():
    # star around 0; 4 hangs on 3 only, so it is not pulled in through 3
    edges = [(0, 1, 0.9), (0, 2, 0.9), (0, 3, 0.9), (3, 4, 0.9)]
    [c] = cluster_edges(edges, by_index, "copy")
    assert c.keeper == 0 and set(c.members) == {0, 1, 2, 3}


def test_a_member_linked_to_most_others_stays_without_a_direct_keeper_link():
    # 4 misses the keeper 0 but matches 1, 2 and 3: a majority of the others
    edges = [(0, 1, 0.9), (0, 2, 0.9), (0, 3, 0.9), (1, 2, 0.9), (1, 3, 0.9), (2, 3, 0.9)]
    edges += [(1, 4, 0.8), (2, 4, 0.8), (3, 4, 0.8)]
    [c] = cluster_edges(edges, by_index, "copy")
    assert c.keeper == 0 and set(c.members) == {0, 1, 2, 3, 4}
    assert c.scores[c.members.index(4)] == pytest.approx(0.8)  # no keeper link: its mean link to the group


def test_a_favourite_that_matches_too_little_is_left_out_not_deleted():
    # 5 is the policy's favourite but only matches 0; 0 matches everyone
    edges = [(0, 1, 0.9), (0, 2, 0.9), (0, 3, 0.9), (0, 5, 0.9)]
    order = {5: 0, 0: 1, 1: 2, 2: 3, 3: 4}
    [c] = cluster_edges(edges, rank=order.__getitem__, tier="copy")
    assert c.keeper == 0 and set(c.members) == {0, 1, 2, 3}


def test_copies_that_match_only_the_keeper_join_its_group():
    # 0 is the centre (the most, and strongest, links); 1 is the policy's favourite and matches 0, 2
    # and 3; 5 matches only 1 (a tilted copy that the centre, itself an edited copy, was not shown to
    # match), and so does 4, which the policy ranks above 1: 5 joins the group, 4 stays out (nothing is
    # deleted in favour of a file ranked lower). 6 and 7 match only the centre and stay out as before.
    edges = [(0, m, 0.95) for m in (1, 2, 3, 6, 7)] + [(1, m, 0.9) for m in (2, 3, 4, 5)]
    order = {4: 0, 1: 1, 0: 2, 2: 3, 3: 4, 5: 5, 6: 6, 7: 7}
    clusters = cluster_edges(edges, rank=order.__getitem__, tier="copy")
    assert (clusters[0].keeper, set(clusters[0].members)) == (1, {0, 1, 2, 3, 5})
    assert clusters[0].scores[clusters[0].members.index(5)] == 0.9
    assert not any(4 in c.members for c in clusters)


def test_exact_tier_needs_identical_bytes_and_similar_groups_join_keepers():
    hashes = ["h0", "h0", "h2", "h3", "h4"]
    verdicts = [v(0, 1, "exact", 1.0), v(2, 3, "copy", 0.9), v(1, 4, "similar", 0.7), v(3, 4, "similar", 0.6)]
    groups = build_groups(5, verdicts, by_index, hashes)
    tiers = sorted((g.tier, tuple(sorted(g.members))) for g in groups)
    # 1 is in exact group {0,1}: its similar link lifts to that group's keeper 0; 3 lifts to 2.
    # 4 is the centre; the keeper 0 does not match 2, and 2 matches only one of the two others.
    assert tiers == [("copy", (2, 3)), ("exact", (0, 1)), ("similar", (0, 4))]


def test_similar_pairs_inside_one_copy_group_make_no_similar_group():
    groups = build_groups(3, [v(0, 1, "copy"), v(0, 2, "copy"), v(1, 2, "similar")], by_index, ["a", "b", "c"])
    assert [g.tier for g in groups] == ["copy"]


# ---- the lazy-heap centre search picks exactly what a linear max() did ------------------------------
from dataclasses import astuple  # noqa: E402

from ndup.group import Cluster, _belongs, _Graph, _member_score, _strength  # noqa: E402


def naive_cluster_edges(edges, rank, tier):
    """The implementation before the lazy heap (a linear max() per step), as the reference."""
    graph = _Graph(edges)
    adj = graph.adj
    clusters: list[Cluster] = []
    for comp in graph.components():
        remaining = set(comp)
        while len(remaining) >= 2:
            center = max(remaining, key=lambda n, left=remaining: _strength(n, left, adj))
            cluster = {center} | {m for m in adj[center] if m in remaining}
            while True:
                keeper = min(cluster, key=rank)
                linked = sum(1 for m in adj[keeper] if m in cluster)
                if keeper == center or 2 * linked >= len(cluster) - 1:
                    break
                # The policy's favourite matches too little of this group to anchor it. It stays out
                # (undeleted), so no file is ever deleted in favour of one the policy ranks lower.
                cluster.discard(keeper)
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


def test_lazy_centre_search_gives_the_same_clusters_as_a_linear_scan():
    import random

    for trial in range(150):
        r = random.Random(trial)
        n, p = r.randint(2, 50), r.uniform(0.02, 0.5)
        edges = [(i, j, round(r.uniform(0.5, 1.0), r.choice([1, 3])))
                 for i in range(n) for j in range(i + 1, n) if r.random() < p]  # fmt: skip
        rank = lambda x: (x * 7919) % 101  # noqa: E731
        fast = [astuple(c) for c in cluster_edges(edges, rank, "copy")]
        assert fast == [astuple(c) for c in naive_cluster_edges(edges, rank, "copy")], trial


def test_every_unverified_pair_inside_a_scene_is_listed_once():
    # 0-1-2-3 linked by copy/similar verdicts through a chain; 5~6 a pair; 7 looked at, no match
    verdicts = [v(0, 1), v(1, 2, "similar"), v(2, 3), v(0, 2, None), v(5, 6), v(3, 7, None)]
    assert sorted(unverified_scene_pairs(verdicts, max_size=10)) == [(0, 3), (1, 3)]
    assert unverified_scene_pairs(verdicts, max_size=3) == []  # a larger chain is left as it is


def test_unverified_scene_pairs_against_every_pair_of_every_scene_checked_directly():
    """The pairs inside scenes only are looked up among the verified ones; the answer is that of
    looking every pair up (random graphs, pairs verified in both orders, non-matches inside scenes)."""
    import random

    for trial in range(100):
        r = random.Random(trial)
        n = r.randint(3, 40)
        verdicts = []
        for i in range(n):
            for j in range(i + 1, n):
                if r.random() < 0.15:
                    a, b = (i, j) if r.random() < 0.5 else (j, i)
                    verdicts.append(v(a, b, r.choice(["copy", "similar", "exact", None, None])))
        graph = _Graph((x.a, x.b, x.score) for x in verdicts if x.tier)
        every = {(min(x.a, x.b), max(x.a, x.b)) for x in verdicts}
        size = r.randint(3, 12)
        expected = [(a, b) for comp in graph.components() if 3 <= len(comp) <= size
                    for i, a in enumerate(comp) for b in comp[i + 1 :] if (a, b) not in every]  # fmt: skip
        assert unverified_scene_pairs(verdicts, max_size=size) == expected, trial
