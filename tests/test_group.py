import pytest

from ndup.group import build_groups, cluster_edges
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
