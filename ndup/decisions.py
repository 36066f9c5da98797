"""A plan's groups as a person decided them: the plan, overlaid with review decisions and the ignore list.

Pure: no I/O. `ndup review` shows these views and changes decisions through the functions here;
`ndup apply` acts on them. The rules, in order, for each member of a group:
  1. a group marked "not duplicates", or whose contents are all in one ignored set: every file is kept;
  2. the keeper (chosen by hand, else the plan's) is kept;
  3. an action chosen by hand (keep or delete) wins;
  4. a member whose contents were marked "not duplicates" together with the keeper's is kept;
  5. otherwise the plan's proposal: delete in exact and copy groups, review (= left alone) for similar
     shots and files in protected folders; the plan's keeper, when another was chosen, is deleted
     (left for review in a similar group).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace

from ndup.records import Group, GroupDecision, Member, Plan


def signature(group: Group, hashes: dict[str, str | None]) -> str:
    """Identifies a group by its members' paths and contents, so decisions outlive the run that showed it."""
    items = sorted(f"{m.path}\0{hashes.get(m.path) or ''}" for m in group.members)
    # surrogateescape: a file name that is not UTF-8 hashes as its bytes (any other name as its UTF-8)
    return hashlib.sha256("\n".join(items).encode("utf-8", "surrogateescape")).hexdigest()[:32]


class IgnoreIndex:
    """The "not duplicates" sets: content hashes of which no two are duplicates of each other."""

    def __init__(self, sets: Iterable[frozenset[str]] = ()):
        self.sets = [s for s in sets if s]
        self._by_hash: dict[str, list[int]] = {}
        for i, s in enumerate(self.sets):
            for h in s:
                self._by_hash.setdefault(h, []).append(i)

    def together(self, a: str | None, b: str | None) -> bool:
        if not a or not b:
            return False
        return bool(set(self._by_hash.get(a, ())) & set(self._by_hash.get(b, ())))

    def covers(self, hashes: Iterable[str | None]) -> bool:
        hs = set(hashes)
        if not hs or None in hs:
            return False
        return any(hs <= s for s in self.sets)


@dataclass(frozen=True, slots=True)
class GroupView:
    """One group as it stands now: who is kept, what happens to each member, and why."""

    group: Group
    signature: str
    hashes: dict[str, str | None]  # path -> content hash as scanned
    decision: GroupDecision  # what is stored (status "open" and nothing else when nobody decided)
    status: str  # open | accepted | not_duplicates
    keep: str
    actions: dict[str, str]  # path -> keep | delete | review
    why: dict[str, str]  # path -> reason for the action

    @property
    def members(self) -> tuple[Member, ...]:
        return self.group.members

    @property
    def decided(self) -> bool:
        return self.status != "open"

    def member(self, path: str) -> Member:
        return next(m for m in self.group.members if m.path == path)

    def to_delete(self) -> list[Member]:
        return [m for m in self.group.members if self.actions[m.path] == "delete"]


def view(
    group: Group, hashes: dict[str, str | None], decision: GroupDecision | None, ignored: IgnoreIndex
) -> GroupView:
    decision = decision or GroupDecision()
    paths = {m.path for m in group.members}
    keep = decision.keep if decision.keep in paths else group.keep
    status = decision.status
    if status != "not_duplicates" and ignored.covers(hashes.get(p) for p in paths):
        status = "not_duplicates"
    actions: dict[str, str] = {}
    why: dict[str, str] = {}
    for m in group.members:
        if status == "not_duplicates":
            actions[m.path], why[m.path] = "keep", "marked not duplicates"
        elif m.path == keep:
            by_hand = keep != group.keep
            actions[m.path], why[m.path] = "keep", "keeper chosen in review" if by_hand else m.reason
        elif m.path in decision.actions:
            actions[m.path], why[m.path] = decision.actions[m.path], f"{decision.actions[m.path]} chosen in review"
        elif ignored.together(hashes.get(m.path), hashes.get(keep)):
            actions[m.path], why[m.path] = "keep", "marked not a duplicate of the keeper"
        elif m.action == "keep":  # the plan's keeper, now that another was chosen in review
            actions[m.path] = "review" if group.tier == "similar" else "delete"
            why[m.path] = "not the keeper chosen in review"
        else:  # as the plan proposes: delete, or review (similar shots, protected folders)
            actions[m.path] = m.action
            why[m.path] = m.reason if keep == group.keep or m.action == "review" else "not the keeper chosen in review"
    return GroupView(group, signature(group, hashes), hashes, decision, status, keep, actions, why)


def views(plan: Plan, store) -> list[GroupView]:
    """Every group of `plan` with the decisions and ignore list stored in `store` (an ndup.store.Store)."""
    hashes_all = {p: st[2] for p, st in store.file_states(m.path for g in plan.groups for m in g.members).items()}
    per_group = [(g, {m.path: hashes_all.get(m.path) for m in g.members}) for g in plan.groups]
    sigs = [signature(g, h) for g, h in per_group]
    decisions = store.group_decisions(sigs)
    ignored = IgnoreIndex(store.ignored_hash_sets())
    return [view(g, h, decisions.get(s), ignored) for (g, h), s in zip(per_group, sigs)]


# ---- changes a person makes in review (each returns the decision to store) --------------------------


def choose_keeper(v: GroupView, path: str) -> GroupDecision:
    actions = {p: a for p, a in v.decision.actions.items() if p != path}
    status = "open" if v.decision.status == "not_duplicates" else v.decision.status
    return replace(v.decision, keep=path, actions=actions, status=status)


def toggle(v: GroupView, path: str) -> GroupDecision | None:
    """Keep <-> delete for one member; None for the keeper (choose another keeper instead)."""
    if path == v.keep:
        return None
    new = "keep" if v.actions[path] == "delete" else "delete"
    status = "open" if v.decision.status == "not_duplicates" else v.decision.status
    return replace(v.decision, actions={**v.decision.actions, path: new}, status=status)


def accept(v: GroupView) -> GroupDecision:
    return replace(v.decision, status="accepted")


def not_duplicates(v: GroupView) -> GroupDecision:
    return replace(v.decision, status="not_duplicates")


# ---- storing them (store: an ndup.store.Store) ---------------------------------------------------------


def save(store, run_id: int, v: GroupView, decision: GroupDecision) -> None:
    store.save_group_decision(v.signature, decision, run_id=run_id, group=v.group)


def mark_not_duplicates(store, run_id: int, v: GroupView) -> None:
    """Keep every file, and remember their contents as "not duplicates" for later plans too."""
    save(store, run_id, v, not_duplicates(v))
    hashes = {h for h in v.hashes.values() if h}
    if hashes:
        store.add_ignore_set(hashes, [m.path for m in v.members])


def reset(store, v: GroupView) -> None:
    """Forget what was decided about a group (and its "not duplicates" mark)."""
    store.clear_group_decision(v.signature)
    hashes = {h for h in v.hashes.values() if h}
    if v.status == "not_duplicates" and hashes:
        store.remove_ignore_set(hashes)
