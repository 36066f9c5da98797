"""Plans overlaid with review decisions and the ignore list (pure), and the similar tier in apply."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from conftest import photo, save, scan

from ndup import decisions
from ndup.apply import ApplyOptions, run_apply
from ndup.decisions import IgnoreIndex, accept, choose_keeper, not_duplicates, toggle, view
from ndup.errors import ExitCode
from ndup.records import Group, GroupDecision, Member, Plan
from ndup.store import Store

ROOT = Path(__file__).resolve().parent.parent


def group(tier="copy", paths=("/p/a", "/p/b", "/p/c")):
    members = tuple(
        Member(p, "keep" if i == 0 else ("review" if tier == "similar" else "delete"), 1.0, f"why {p}")
        for i, p in enumerate(paths)
    )
    return Group(1, tier, paths[0], members)


HASHES = {"/p/a": "ha", "/p/b": "hb", "/p/c": "hc"}


def test_the_plan_stands_until_someone_decides():
    v = view(group(), HASHES, None, IgnoreIndex())
    assert v.status == "open" and v.keep == "/p/a"
    assert v.actions == {"/p/a": "keep", "/p/b": "delete", "/p/c": "delete"}
    s = view(group("similar"), HASHES, None, IgnoreIndex())
    assert s.actions == {"/p/a": "keep", "/p/b": "review", "/p/c": "review"} and s.to_delete() == []
    g = group()
    protected = Group(g.id, g.tier, g.keep, (*g.members[:2], replace(g.members[2], action="review")))
    p = view(protected, HASHES, None, IgnoreIndex())  # the plan leaves files in protected folders alone
    assert p.actions["/p/c"] == "review" and [m.path for m in p.to_delete()] == ["/p/b"]
    p = view(protected, HASHES, choose_keeper(p, "/p/b"), IgnoreIndex())
    assert p.actions == {"/p/a": "delete", "/p/b": "keep", "/p/c": "review"}


def test_a_new_keeper_and_toggles_win_over_the_plan():
    v = view(group(), HASHES, None, IgnoreIndex())
    d = choose_keeper(v, "/p/c")
    v = view(group(), HASHES, d, IgnoreIndex())
    assert v.keep == "/p/c" and v.actions == {"/p/a": "delete", "/p/b": "delete", "/p/c": "keep"}
    assert v.why["/p/a"] == "not the keeper chosen in review"
    v = view(group(), HASHES, toggle(v, "/p/b"), IgnoreIndex())
    assert v.actions["/p/b"] == "keep" and toggle(v, "/p/c") is None  # the keeper cannot be toggled
    v = view(group(), HASHES, accept(v), IgnoreIndex())
    assert v.status == "accepted" and [m.path for m in v.to_delete()] == ["/p/a"]


def test_the_ignore_list_keeps_files_marked_not_duplicates():
    ignored = IgnoreIndex([frozenset({"ha", "hb"})])
    v = view(group(), HASHES, None, ignored)
    assert v.status == "open" and v.actions["/p/b"] == "keep" and v.actions["/p/c"] == "delete"
    assert v.why["/p/b"] == "marked not a duplicate of the keeper"
    everything = view(group(), HASHES, None, IgnoreIndex([frozenset(HASHES.values())]))
    assert everything.status == "not_duplicates" and everything.to_delete() == []
    marked = view(group(), HASHES, not_duplicates(v), IgnoreIndex())
    assert marked.status == "not_duplicates" and set(marked.actions.values()) == {"keep"}


def test_decisions_are_keyed_by_paths_and_contents():
    g = group()
    assert decisions.signature(g, HASHES) == decisions.signature(g, dict(reversed(HASHES.items())))
    assert decisions.signature(g, HASHES) != decisions.signature(g, {**HASHES, "/p/c": "changed"})


def test_similar_shots_act_only_when_named_and_marked_delete(tmp_path):
    lib = tmp_path / "lib"
    paths = [str(save(photo(60 + i, 200, 150), lib / f"shot{i}.jpg")) for i in range(3)]
    db = tmp_path / "ndup.db"
    scan(lib, db)
    store = Store.open(db)
    try:  # a plan with one similar-shots group over these real files
        run_id = store.begin_run([str(lib)], {})
        members = tuple(Member(p, "keep" if i == 0 else "review", 0.7, "similar shot", 1) for i, p in enumerate(paths))
        store.save_plan(Plan(run_id, (Group(1, "similar", paths[0], members),), (), {}))
        [v] = decisions.views(store.load_plan(), store)
        decisions.save(store, run_id, v, GroupDecision("accepted", None, {paths[2]: "delete"}))
        assert run_apply(store, ApplyOptions(yes=True)).note.startswith("nothing to do: the plan has no exact or copy")
        report = run_apply(store, ApplyOptions(tiers=("similar",)))
        assert [(r.src, r.state) for r in report.results] == [(paths[2], "done")]
        assert sorted(os.listdir(lib)) == ["shot0.jpg", "shot1.jpg"]
    finally:
        store.close()


def test_every_exit_code_is_documented():
    readme = (ROOT / "README.md").read_text()
    man = (ROOT / "man/ndup.1").read_text()
    for code in ExitCode:
        assert f"\n| {int(code)} |" in readme, code
        assert f'.IP "{int(code)}"' in man or f".B {int(code)}\n" in man or f".TP\n.B {int(code)}" in man, code


def test_the_cli_stays_light_to_import():
    code = "import sys, ndup.cli; print(json.dumps(sorted(m for m in ('textual', 'torch', 'PIL') if m in sys.modules)))"
    r = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(r.stdout) == []
