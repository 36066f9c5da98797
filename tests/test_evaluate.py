import pytest

from ndup.evaluate import average_precision, evaluate, true_pairs
from ndup.records import Group, Member, Plan


def plan_of(*groups, tier="copy"):
    return Plan(
        run_id=1,
        groups=tuple(
            Group(i, tier, g[0], tuple(Member(p, "keep" if j == 0 else "delete", 1.0, "") for j, p in enumerate(g)))
            for i, g in enumerate(groups)
        ),
        failures=(),
    )


def test_true_pairs_from_group_ids():
    assert true_pairs({"a": 1, "b": 1, "c": 1, "d": 2}) == {("a", "b"), ("a", "c"), ("b", "c")}


def test_precision_recall_f1_over_pairs():
    truth = {"a": 1, "b": 1, "c": 1, "x": 2, "y": 3}
    m = evaluate(plan_of(["a", "b"], ["c", "x"]), truth)
    # predicted pairs: (a,b) right, (c,x) wrong; true pairs: ab, ac, bc
    assert (m.correct_pairs, m.predicted_pairs, m.true_pairs) == (1, 2, 3)
    assert m.precision == pytest.approx(0.5) and m.recall == pytest.approx(1 / 3)
    assert m.f1 == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))


def test_similar_groups_and_unlabelled_files_do_not_count():
    truth = {"a": 1, "b": 1}
    m = evaluate(plan_of(["a", "b", "unlabelled.jpg"], tier="similar"), truth)
    assert m.predicted_pairs == 0 and m.recall == 0.0 and m.precision == 1.0


def test_recall_by_kind_counts_pairs_with_the_original():
    truth = {"o": 1, "rot": 1, "crop": 1}
    kinds = {"o": "original", "rot": "rot90", "crop": "crop50"}
    m = evaluate(plan_of(["o", "rot"]), truth, kinds)
    assert m.recall_by_kind == {"crop50": (0.0, 1), "rot90": (1.0, 1)}


def test_ignored_pairs_are_neither_right_nor_wrong():
    truth = {"a": 1, "b": 2}
    assert evaluate(plan_of(["a", "b"]), truth, ignore=[("b", "a")]).precision == 1.0


def test_average_precision():
    positives = {("a", "b"), ("c", "d")}
    assert average_precision({("a", "b"): 0.9, ("c", "d"): 0.8, ("a", "c"): 0.1}, positives) == 1.0
    # a wrong pair ranked first, one true pair never scored
    assert average_precision({("a", "c"): 0.9, ("a", "b"): 0.8}, positives) == pytest.approx(0.25)
