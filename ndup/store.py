"""The SQLite cache: file facts, embeddings, runs and plans. The only module that talks to SQLite.

Every change a scan makes is written in one transaction per batch, so an interrupted scan keeps
everything finished before the interruption and the next scan carries on from there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlite_utils import Database, Migrations

from ndup.errors import NdupError
from ndup.records import (
    ApplyRun,
    Decoded,
    Failure,
    FileEntry,
    Group,
    GroupDecision,
    ImageFacts,
    ImageRecord,
    JournalEntry,
    Member,
    NotAnImage,
    Outcome,
    Plan,
)

# ---- text in and out of SQLite ------------------------------------------------------------------------
# A POSIX file name is bytes; Python hands over a name that is not valid UTF-8 (an old camera's
# Latin-1, a zip from another system) as a str with lone surrogates (os.fsdecode), and sqlite3 refuses
# to encode those. Every str that goes in is therefore stored with its lone surrogates, and NUL (which
# no path holds), written as NUL + 4 hex digits; every str that comes out is decoded back. Valid
# UTF-8 text is stored as it is, and the round trip is exact, so such files can be acted on and undone.
_UNSAFE = re.compile("[\x00\ud800-\udfff]")
_ESCAPED = re.compile("\x00([0-9a-f]{4})")


def _escape(match: re.Match) -> str:
    return f"\x00{ord(match.group()):04x}"


def _to_db(value):
    if type(value) is str and _UNSAFE.search(value):
        return _UNSAFE.sub(_escape, value)
    return value


def _from_db(raw: bytes) -> str:
    text = raw.decode("utf-8", "surrogateescape")
    return _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), text) if "\x00" in text else text


def _params(parameters):
    if isinstance(parameters, dict):
        return {k: _to_db(v) for k, v in parameters.items()}
    return [_to_db(v) for v in parameters]


class _Connection(sqlite3.Connection):
    """sqlite3's connection, storing any Python str (see above); sqlite-utils writes through it too."""

    def execute(self, sql, parameters=(), /):
        return super().execute(sql, _params(parameters))

    def executemany(self, sql, seq_of_parameters, /):
        return super().executemany(sql, (_params(p) for p in seq_of_parameters))


migrations = Migrations("ndup")


@migrations()
def m001_initial(db: Database) -> None:
    db["files"].create(
        {
            "path": str,
            "size": int,
            "mtime_ns": int,
            "dev": int,
            "inode": int,
            "kind": str,  # image | failed | other
            "decoder_version": int,
            "content_hash": str,
            "format": str,
            "width": int,
            "height": int,
            "phash": str,
            "dhash": str,
            "quality": int,
            "lossless": int,
            "exif_tags": int,
            "reason": str,
            "scanned_at": float,
        },
        pk="path",
    )
    db["files"].create_index(["content_hash"])
    db["embeddings"].create(
        {"content_hash": str, "model_id": str, "vector": bytes},
        pk=("content_hash", "model_id"),
    )
    db["runs"].create(
        {
            "id": int,
            "started_at": float,
            "finished_at": float,
            "roots": str,
            "settings": str,
            "summary": str,
            "status": str,  # running | done | interrupted | failed
        },
        pk="id",
    )
    db["plan_groups"].create(
        {"run_id": int, "group_id": int, "tier": str, "keep_path": str},
        pk=("run_id", "group_id"),
    )
    db["plan_members"].create(
        {
            "run_id": int,
            "group_id": int,
            "position": int,
            "path": str,
            "action": str,
            "score": float,
            "reason": str,
            "size": int,
            "width": int,
            "height": int,
            "format": str,
        },
        pk=("run_id", "group_id", "path"),  # a copy group's keeper can also head a similar-shot group
    )
    db["run_failures"].create({"run_id": int, "path": str, "reason": str}, pk=("run_id", "path"))


@migrations()
def m002_capture_metadata(db: Database) -> None:
    """Issue 5: RAW flavour, capture metadata and the burst pick's sharpness/exposure measures."""
    table = db["files"]
    for name, kind in _M002_COLUMNS.items():
        table.add_column(name, kind)


@migrations()
def m003_review_decisions(db: Database) -> None:
    """What people decide in `ndup review`, and the "not duplicates" ignore list.

    Decisions are keyed by a group's signature (its members' paths and content hashes), so they
    carry over to later scans that find the same group, and lapse when any member changes.
    """
    db["group_decisions"].create(
        {"signature": str, "status": str, "keep_path": str, "tier": str, "run_id": int, "group_id": int,
         "updated_at": float},
        pk="signature",
    )  # fmt: skip
    db["member_decisions"].create({"signature": str, "path": str, "action": str}, pk=("signature", "path"))
    db["ignore_sets"].create({"set_id": str, "paths": str, "created_at": float}, pk="set_id")
    db["ignore_members"].create({"set_id": str, "content_hash": str}, pk=("set_id", "content_hash"))
    db["ignore_members"].create_index(["content_hash"])


@migrations()
def m004_apply_journal(db: Database) -> None:
    """`ndup apply` runs and their journal: one row per file, written before and after it is touched."""
    db["apply_runs"].create(
        {"id": int, "plan_run_id": int, "action": str, "options": str, "status": str, "pid": int,
         "started_at": float, "finished_at": float, "summary": str},
        pk="id",
    )  # fmt: skip
    db["journal"].create(
        {"apply_id": int, "seq": int, "group_id": int, "action": str, "src": str, "dest": str, "keeper": str,
         "temp": str, "content_hash": str, "size": int, "mtime_ns": int, "mode": int, "state": str,
         "reason": str, "extra": str, "updated_at": float},
        pk=("apply_id", "seq"),
    )  # fmt: skip
    db["journal"].create_index(["src"])


_M002_COLUMNS = {
    "subtype": str,
    "capture_time": str,
    "camera_make": str,
    "camera_model": str,
    "lens": str,
    "has_gps": int,
    "rating": int,
    "sharpness": float,
    "clipped": float,
}
# ImageFacts fields are files columns of the same name; these two are stored as 0/1.
_FACT_COLUMNS = tuple(f.name for f in dataclasses.fields(ImageFacts))
_BOOL_FACTS = ("lossless", "has_gps")


@migrations()
def m005_embedding_aux(db: Database) -> None:
    """Issue 3: what the alignment stage did (orientation, rotation), the aligned image's pHash, and
    the aligned greyscale thumbnail(s) the pixel-level pair check compares (ndup.structure)."""
    db["embeddings"].add_column("aux", str)
    db["embeddings"].add_column("thumb", bytes)


@dataclass(frozen=True, slots=True)
class CachedStat:
    """The part of a cached file row that decides whether the file must be read again."""

    size: int
    mtime_ns: int
    decoder_version: int
    kind: str
    content_hash: str | None


def _facts_from_row(row: sqlite3.Row | tuple) -> ImageFacts:
    values = dict(zip(_FACT_COLUMNS, row))
    for name in _BOOL_FACTS:
        values[name] = bool(values[name])
    values["exif_tags"] = values["exif_tags"] or 0
    return ImageFacts(**values)


def _facts_to_row(facts: ImageFacts) -> dict:
    row = {name: getattr(facts, name) for name in _FACT_COLUMNS}
    for name in _BOOL_FACTS:
        row[name] = int(row[name])
    return row


class Store:
    def __init__(self, db: Database, path: Path):
        self.db = db
        self.path = path

    # ---- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path, *, check: bool = False) -> Store:
        """Open (creating or migrating) the cache; use it as `with Store.open(path) as store:` so that an
        SQLite error met on the way (a damaged file, a full disk) becomes one clear NdupError.

        `check`: first run SQLite's quick_check, so that a damaged cache is refused before anything is
        written into it (scan, apply and undo do; it reads the whole file, about 0.25 s per 100,000
        photos when the file is in the page cache)."""
        path = Path(path).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise NdupError(
                f"cannot create the cache folder {path.parent}: {e.strerror or e}",
                hint="choose another location with --db PATH or NDUP_DB",
            ) from None
        if path.exists() and not os.access(path, os.R_OK | os.W_OK):
            raise NdupError(
                f"the cache {path} is not readable and writable", hint="fix its permissions or use --db PATH"
            )
        conn = None
        try:
            conn = sqlite3.connect(str(path), timeout=30.0, factory=_Connection)
            conn.text_factory = _from_db
            store = cls(Database(conn), path)
            store.db.execute("PRAGMA journal_mode=WAL")
            store.db.execute("PRAGMA synchronous=NORMAL")
            if check and (problems := store.damage()):
                raise sqlite3.DatabaseError(f"database disk image is malformed: {problems[0]}")
            migrations.apply(store.db)
        except BaseException as e:
            if conn is not None:
                conn.close()
            if isinstance(e, sqlite3.Error):
                raise cache_error(path, e) from None
            raise
        return store

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, kind, error, tb) -> None:
        try:
            self.close()
        except sqlite3.Error as e:
            error = error or e
        if isinstance(error, sqlite3.Error):
            raise cache_error(self.path, error) from None

    @property
    def schema_version(self) -> int:
        return len(migrations.applied(self.db))

    # ---- file facts ----------------------------------------------------------------------------
    def cached_stats(self) -> dict[str, CachedStat]:
        rows = self.db.conn.execute("SELECT path, size, mtime_ns, decoder_version, kind, content_hash FROM files")
        return {r[0]: CachedStat(*r[1:]) for r in rows}

    def image_records(self, paths: Iterable[str]) -> list[ImageRecord]:
        """Cached facts for the given paths that are images, in the order given."""
        wanted = list(paths)
        found: dict[str, ImageRecord] = {}
        cols = ", ".join(("path", "size", "mtime_ns", *_FACT_COLUMNS))
        for chunk in _chunks(wanted, 900):
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT {cols} FROM files WHERE kind = 'image' AND path IN ({marks})"
            for r in self.db.conn.execute(sql, chunk):
                found[r[0]] = ImageRecord(path=r[0], size=r[1], mtime_ns=r[2], facts=_facts_from_row(r[3:]))
        return [found[p] for p in wanted if p in found]

    def failures(self, paths: Iterable[str]) -> list[Failure]:
        wanted = list(paths)
        out: dict[str, Failure] = {}
        for chunk in _chunks(wanted, 900):
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT path, reason FROM files WHERE kind = 'failed' AND path IN ({marks})"
            for path, reason in self.db.conn.execute(sql, chunk):
                out[path] = Failure(path, reason)
        return [out[p] for p in wanted if p in out]

    def write_batch(
        self,
        results: Iterable[tuple[FileEntry, Outcome]],
        embeddings: dict[str, tuple[np.ndarray, dict, bytes]],
        model_id: str,
        decoder_version: int,
    ) -> None:
        """Record one batch of read files and their new embeddings in a single transaction."""
        now = time.time()
        rows = []
        for entry, outcome in results:
            row = dict(path=entry.path, size=entry.size, mtime_ns=entry.mtime_ns, dev=entry.dev, inode=entry.inode,
                       decoder_version=decoder_version, scanned_at=now, **_EMPTY_FACTS)  # fmt: skip
            if isinstance(outcome, Decoded):
                row.update(size=outcome.size, mtime_ns=outcome.mtime_ns, kind="image", **_facts_to_row(outcome.facts))
            elif isinstance(outcome, NotAnImage):
                row.update(size=outcome.size, mtime_ns=outcome.mtime_ns, kind="other")
            else:
                row.update(kind="failed", reason=outcome.reason)
            rows.append(row)
        vectors = [
            {
                "content_hash": h,
                "model_id": model_id,
                "vector": v.astype(np.float16).tobytes(),
                "aux": json.dumps(aux),
                "thumb": thumb,
            }
            for h, (v, aux, thumb) in embeddings.items()
        ]
        with self.db.atomic():
            if rows:
                self.db["files"].insert_all(rows, pk="path", replace=True)
            if vectors:
                self.db["embeddings"].insert_all(vectors, pk=("content_hash", "model_id"), replace=True)

    # ---- embeddings ----------------------------------------------------------------------------
    def embedded_hashes(self, model_id: str) -> set[str]:
        rows = self.db.conn.execute("SELECT content_hash FROM embeddings WHERE model_id = ?", (model_id,))
        return {r[0] for r in rows}

    def embeddings(self, content_hashes: Iterable[str], model_id: str) -> dict[str, tuple[np.ndarray, dict]]:
        """{content hash: (descriptor, alignment facts)} for one model."""
        out: dict[str, tuple[np.ndarray, dict]] = {}
        for chunk in _chunks(list(set(content_hashes)), 900):
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT content_hash, vector, aux FROM embeddings WHERE model_id = ? AND content_hash IN ({marks})"
            for h, blob, aux in self.db.conn.execute(sql, [model_id, *chunk]):
                out[h] = (np.frombuffer(blob, dtype=np.float16).astype(np.float32), json.loads(aux or "{}"))
        return out

    def thumbnail(self, content_hash: str, model_id: str) -> bytes | None:
        row = self.db.conn.execute(
            "SELECT thumb FROM embeddings WHERE content_hash = ? AND model_id = ?", (content_hash, model_id)
        ).fetchone()
        return row[0] if row else None

    # ---- runs and plans ------------------------------------------------------------------------
    def begin_run(self, roots: list[str], settings: dict) -> int:
        table = self.db["runs"]
        table.insert(
            {
                "started_at": time.time(),
                "roots": json.dumps(roots),
                "settings": json.dumps(settings),
                "status": "running",
            }
        )
        return int(table.last_pk)

    def finish_run(self, run_id: int, status: str, summary: dict | None = None) -> None:
        self.db["runs"].update(
            run_id, {"finished_at": time.time(), "status": status, "summary": json.dumps(summary or {})}
        )

    def save_plan(self, plan: Plan) -> None:
        groups = [{"run_id": plan.run_id, "group_id": g.id, "tier": g.tier, "keep_path": g.keep} for g in plan.groups]
        members = [
            {"run_id": plan.run_id, "group_id": g.id, "position": i, "path": m.path, "action": m.action,
             "score": m.score, "reason": m.reason, "size": m.size, "width": m.width, "height": m.height,
             "format": m.format}
            for g in plan.groups
            for i, m in enumerate(g.members)
        ]  # fmt: skip
        failures = [{"run_id": plan.run_id, "path": f.path, "reason": f.reason} for f in plan.failures]
        with self.db.atomic():
            self.db["plan_groups"].insert_all(groups, pk=("run_id", "group_id"), replace=True)
            self.db["plan_members"].insert_all(members, pk=("run_id", "group_id", "path"), replace=True)
            self.db["run_failures"].insert_all(failures, pk=("run_id", "path"), replace=True)
            self.db["runs"].update(
                plan.run_id, {"finished_at": time.time(), "status": "done", "summary": json.dumps(plan.summary)}
            )

    def latest_run_id(self) -> int | None:
        row = self.db.conn.execute("SELECT max(id) FROM runs WHERE status = 'done'").fetchone()
        return row[0] if row and row[0] is not None else None

    def load_plan(self, run_id: int | None = None) -> Plan | None:
        if run_id is None:
            run_id = self.latest_run_id()
            if run_id is None:
                return None
        run = self.db.conn.execute("SELECT summary, status FROM runs WHERE id = ?", (run_id,)).fetchone()
        if run is None or run[1] != "done":
            return None
        members_by_group: dict[int, list[Member]] = {}
        sql = (
            "SELECT group_id, path, action, score, reason, size, width, height, format FROM plan_members "
            "WHERE run_id = ? ORDER BY group_id, position"
        )
        for gid, *fields in self.db.conn.execute(sql, (run_id,)):
            members_by_group.setdefault(gid, []).append(Member(*fields))
        groups = tuple(
            Group(id=gid, tier=tier, keep=keep, members=tuple(members_by_group.get(gid, ())))
            for gid, tier, keep in self.db.conn.execute(
                "SELECT group_id, tier, keep_path FROM plan_groups WHERE run_id = ? ORDER BY group_id", (run_id,)
            )
        )
        failures = tuple(
            Failure(p, r)
            for p, r in self.db.conn.execute(
                "SELECT path, reason FROM run_failures WHERE run_id = ? ORDER BY path", (run_id,)
            )
        )
        return Plan(run_id=run_id, groups=groups, failures=failures, summary=json.loads(run[0] or "{}"))

    def require_plan(self, run_id: int | None = None) -> Plan:
        """load_plan, or the error a person sees when there is nothing to show or act on."""
        plan = self.load_plan(run_id)
        if plan is None:
            what = f"no finished scan with run id {run_id}" if run_id is not None else "no plan yet in this cache"
            raise NdupError(what, hint="run `ndup scan FOLDER` first, or name the cache with --db")
        return plan

    def run_roots(self, run_id: int) -> list[str]:
        row = self.db.conn.execute("SELECT roots FROM runs WHERE id = ?", (run_id,)).fetchone()
        return json.loads(row[0]) if row and row[0] else []

    def file_states(self, paths: Iterable[str]) -> dict[str, tuple[int, int, str | None]]:
        """(size, mtime_ns, content_hash) of each path as the last scan saw it."""
        out: dict[str, tuple[int, int, str | None]] = {}
        for chunk in _chunks(list(set(paths)), 900):
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT path, size, mtime_ns, content_hash FROM files WHERE path IN ({marks})"
            for path, size, mtime_ns, content_hash in self.db.conn.execute(sql, chunk):
                out[path] = (size, mtime_ns, content_hash)
        return out

    # ---- review decisions and the ignore list --------------------------------------------------
    def group_decisions(self, signatures: Iterable[str]) -> dict[str, GroupDecision]:
        wanted = list(set(signatures))
        rows: dict[str, tuple[str, str | None]] = {}
        actions: dict[str, dict[str, str]] = {}
        for chunk in _chunks(wanted, 900):
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT signature, status, keep_path FROM group_decisions WHERE signature IN ({marks})"
            for sig, status, keep in self.db.conn.execute(sql, chunk):
                rows[sig] = (status, keep)
            sql = f"SELECT signature, path, action FROM member_decisions WHERE signature IN ({marks})"
            for sig, path, action in self.db.conn.execute(sql, chunk):
                actions.setdefault(sig, {})[path] = action
        return {
            sig: GroupDecision(status=status, keep=keep, actions=actions.get(sig, {}))
            for sig, (status, keep) in rows.items()
        }

    def save_group_decision(self, signature: str, decision: GroupDecision, *, run_id: int, group: Group) -> None:
        """Replace what is stored for one group, in one transaction (saved as each key is pressed)."""
        with self.db.atomic():
            self.db.conn.execute(
                "INSERT OR REPLACE INTO group_decisions VALUES (?, ?, ?, ?, ?, ?, ?)",
                (signature, decision.status, decision.keep, group.tier, run_id, group.id, time.time()),
            )
            self.db.conn.execute("DELETE FROM member_decisions WHERE signature = ?", (signature,))
            self.db.conn.executemany(
                "INSERT INTO member_decisions VALUES (?, ?, ?)",
                [(signature, path, action) for path, action in decision.actions.items()],
            )

    def clear_group_decision(self, signature: str) -> None:
        with self.db.atomic():
            self.db.conn.execute("DELETE FROM group_decisions WHERE signature = ?", (signature,))
            self.db.conn.execute("DELETE FROM member_decisions WHERE signature = ?", (signature,))

    @staticmethod
    def _ignore_set_id(content_hashes: Iterable[str]) -> str:
        import hashlib

        return hashlib.sha256("\n".join(sorted(set(content_hashes))).encode()).hexdigest()[:32]

    def add_ignore_set(self, content_hashes: Iterable[str], paths: Iterable[str] = ()) -> None:
        """Remember that files with these contents are not duplicates of each other."""
        hashes = sorted(set(content_hashes))
        set_id = self._ignore_set_id(hashes)
        with self.db.atomic():
            self.db.conn.execute(
                "INSERT OR REPLACE INTO ignore_sets VALUES (?, ?, ?)", (set_id, json.dumps(sorted(paths)), time.time())
            )
            self.db.conn.executemany(
                "INSERT OR IGNORE INTO ignore_members VALUES (?, ?)", [(set_id, h) for h in hashes]
            )

    def remove_ignore_set(self, content_hashes: Iterable[str]) -> None:
        set_id = self._ignore_set_id(content_hashes)
        with self.db.atomic():
            self.db.conn.execute("DELETE FROM ignore_sets WHERE set_id = ?", (set_id,))
            self.db.conn.execute("DELETE FROM ignore_members WHERE set_id = ?", (set_id,))

    def ignored_hash_sets(self) -> list[frozenset[str]]:
        """Sets of content hashes a person marked "not duplicates": no two files whose contents are in
        one set are duplicates of each other (a set of one hash: identical copies that are all wanted)."""
        sets: dict[str, set[str]] = {}
        for set_id, content_hash in self.db.conn.execute("SELECT set_id, content_hash FROM ignore_members"):
            sets.setdefault(set_id, set()).add(content_hash)
        return [frozenset(s) for _, s in sorted(sets.items())]

    # ---- apply runs and their journal ----------------------------------------------------------
    def durable(self) -> None:
        """Make every later commit survive a power cut, not only a crash (the journal needs it)."""
        self.db.execute("PRAGMA synchronous=FULL")

    def begin_apply(self, plan_run_id: int, action: str, options: dict) -> int:
        with self.db.atomic():
            cur = self.db.conn.execute(
                "INSERT INTO apply_runs (plan_run_id, action, options, status, pid, started_at) "
                "VALUES (?, ?, ?, 'running', ?, ?)",
                (plan_run_id, action, json.dumps(options), os.getpid(), time.time()),
            )
        return int(cur.lastrowid)

    def set_apply_status(self, apply_id: int, status: str, summary: dict | None = None) -> None:
        with self.db.atomic():
            self.db.conn.execute(
                "UPDATE apply_runs SET status = ?, finished_at = ?, summary = coalesce(?, summary) WHERE id = ?",
                (status, time.time(), json.dumps(summary) if summary is not None else None, apply_id),
            )

    def apply_runs(self, status: str | None = None) -> list[ApplyRun]:
        sql = "SELECT id, plan_run_id, action, options, status, started_at, finished_at, summary FROM apply_runs"
        where, args = (" WHERE status = ?", (status,)) if status else ("", ())
        rows = self.db.conn.execute(sql + where + " ORDER BY id", args)
        return [
            ApplyRun(i, p, a, json.loads(o or "{}"), s, t0, t1, json.loads(summ or "{}"))
            for i, p, a, o, s, t0, t1, summ in rows
        ]

    def apply_run(self, apply_id: int) -> ApplyRun | None:
        return next((r for r in self.apply_runs() if r.id == apply_id), None)

    def journal_plan(self, entry: JournalEntry) -> JournalEntry:
        """Record, and commit, that a file is about to be touched. Returns the entry with its seq."""
        seq = entry.seq or self.next_seq(entry.apply_id)
        with self.db.atomic():
            row = dict(zip(_JOURNAL_COLS, _journal_values(entry)))
            row.update(seq=seq, updated_at=time.time())
            marks = ",".join("?" * len(row))
            self.db.conn.execute(f"INSERT INTO journal ({','.join(row)}) VALUES ({marks})", list(row.values()))
        return self.journal_entry(entry.apply_id, seq)

    def next_seq(self, apply_id: int) -> int:
        sql = "SELECT coalesce(max(seq), 0) + 1 FROM journal WHERE apply_id = ?"
        return int(self.db.conn.execute(sql, (apply_id,)).fetchone()[0])

    def journal_set(self, entry: JournalEntry, state: str, reason: str = "", **changes) -> JournalEntry:
        """Move one journal entry to a new state (and update dest/temp/extra), committed at once."""
        allowed = {"dest", "temp", "extra"}
        assert set(changes) <= allowed, changes
        sets = ", ".join(f"{k} = ?" for k in changes)
        with self.db.atomic():
            self.db.conn.execute(
                f"UPDATE journal SET state = ?, reason = ?, updated_at = ?{', ' + sets if sets else ''} "
                "WHERE apply_id = ? AND seq = ?",
                (state, reason, time.time(), *changes.values(), entry.apply_id, entry.seq),
            )
        return self.journal_entry(entry.apply_id, entry.seq)

    def journal(self, apply_id: int) -> list[JournalEntry]:
        sql = f"SELECT {','.join(_JOURNAL_COLS)} FROM journal WHERE apply_id = ? ORDER BY seq"
        return [JournalEntry(*r) for r in self.db.conn.execute(sql, (apply_id,))]

    def journal_entry(self, apply_id: int, seq: int) -> JournalEntry:
        sql = f"SELECT {','.join(_JOURNAL_COLS)} FROM journal WHERE apply_id = ? AND seq = ?"
        return JournalEntry(*self.db.conn.execute(sql, (apply_id, seq)).fetchone())

    def journal_done_for(self, paths: Iterable[str]) -> dict[str, JournalEntry]:
        """The latest entry per path that an apply carried out and nobody undid."""
        out: dict[str, JournalEntry] = {}
        cols = ",".join(_JOURNAL_COLS)
        for chunk in _chunks(list(set(paths)), 900):
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT {cols} FROM journal WHERE state = 'done' AND src IN ({marks}) ORDER BY apply_id, seq"
            for r in self.db.conn.execute(sql, chunk):
                entry = JournalEntry(*r)
                out[entry.src] = entry
        return out

    # ---- the cache as a whole: ndup cache info / prune, ndup doctor ------------------------------
    def stats(self) -> dict:
        """What the cache holds: counts by kind, embeddings by model id, runs and their times."""
        one = lambda sql, *args: self.db.conn.execute(sql, args).fetchone()  # noqa: E731
        kinds = dict(self.db.conn.execute("SELECT kind, count(*) FROM files GROUP BY kind").fetchall())
        first_scan, last_scan = one("SELECT min(scanned_at), max(scanned_at) FROM files")
        runs, first_run, last_run = one("SELECT count(*), min(started_at), max(started_at) FROM runs")
        latest = one("SELECT id, finished_at FROM runs WHERE status = 'done' ORDER BY id DESC LIMIT 1")
        undoable = one(
            f"SELECT count(DISTINCT apply_id) FROM journal WHERE state IN ({_marks(UNDO_NEEDS)})", *UNDO_NEEDS
        )[0]
        return {
            "schema_version": self.schema_version,
            "files": sum(kinds.values()),
            "images": kinds.get("image", 0),
            "failures": kinds.get("failed", 0),
            "not_images": kinds.get("other", 0),
            "embeddings": dict(
                self.db.conn.execute("SELECT model_id, count(*) FROM embeddings GROUP BY model_id ORDER BY model_id")
            ),
            "runs": runs,
            "plans": one("SELECT count(DISTINCT run_id) FROM plan_groups")[0],
            "latest_plan": latest[0] if latest else None,
            "latest_plan_at": latest[1] if latest else None,
            "first_run_at": first_run,
            "last_run_at": last_run,
            "oldest_file_at": first_scan,
            "newest_file_at": last_scan,
            "apply_runs": one("SELECT count(*) FROM apply_runs")[0],
            "undoable_apply_runs": undoable,
            "journal_entries": one("SELECT count(*) FROM journal")[0],
            "review_decisions": one("SELECT count(*) FROM group_decisions")[0],
            "not_duplicate_sets": one("SELECT count(*) FROM ignore_sets")[0],
        }

    def damage(self) -> list[str]:
        """What SQLite's quick_check finds wrong with the file; [] when it is sound."""
        try:
            rows = [r[0] for r in self.db.conn.execute("PRAGMA quick_check")]
        except sqlite3.DatabaseError as e:
            return [str(e)]
        return [] if rows == ["ok"] else rows

    def cached_paths(self) -> list[str]:
        return [r[0] for r in self.db.conn.execute("SELECT path FROM files ORDER BY path")]

    def prune(self, *, missing: Iterable[str], model_id: str | None, keep_runs: int, dry_run: bool) -> dict[str, int]:
        """Remove what no later run needs; returns how many rows of each kind went (or would go).

        `missing`: cached paths that no longer exist; `model_id`: the model scans use now (None: keep
        every model's embeddings). Scan runs and apply runs beyond the newest `keep_runs` go, except
        the plans apply runs refer to and apply runs whose journal undo (or recovery) still needs.
        Review decisions and the "not duplicates" list are never touched.
        """
        removed: dict[str, int] = {}
        run = lambda sql, args=(): self.db.conn.execute(sql, args).rowcount  # noqa: E731
        try:
            with self.db.atomic():
                removed["files"] = self._delete_in("files", "path", list(missing))
                removed["embeddings_of_other_models"] = (
                    run("DELETE FROM embeddings WHERE model_id != ?", (model_id,)) if model_id else 0
                )
                removed["embeddings_without_file"] = run(
                    "DELETE FROM embeddings WHERE content_hash NOT IN "
                    "(SELECT content_hash FROM files WHERE content_hash IS NOT NULL)"
                )
                old_applies = [
                    r[0]
                    for r in self.db.conn.execute(
                        f"SELECT id FROM apply_runs WHERE id NOT IN (SELECT id FROM apply_runs ORDER BY id DESC LIMIT ?) "
                        f"AND status NOT IN ({_marks(APPLY_BUSY)}) AND NOT EXISTS (SELECT 1 FROM journal "
                        f"WHERE journal.apply_id = apply_runs.id AND state IN ({_marks(UNDO_NEEDS)}))",
                        (keep_runs, *APPLY_BUSY, *UNDO_NEEDS),
                    )
                ]
                removed["journal_entries"] = self._delete_in("journal", "apply_id", old_applies)
                removed["apply_runs"] = self._delete_in("apply_runs", "id", old_applies)
                old_runs = [
                    r[0]
                    for r in self.db.conn.execute(
                        "SELECT id FROM runs WHERE id NOT IN (SELECT id FROM runs ORDER BY id DESC LIMIT ?) "
                        "AND id NOT IN (SELECT plan_run_id FROM apply_runs WHERE plan_run_id IS NOT NULL) "
                        "AND id IS NOT (SELECT max(id) FROM runs WHERE status = 'done')",
                        (keep_runs,),
                    )
                ]
                for table in ("plan_members", "plan_groups", "run_failures"):
                    self._delete_in(table, "run_id", old_runs)
                removed["runs"] = self._delete_in("runs", "id", old_runs)
                if dry_run:
                    raise _Rollback
        except _Rollback:
            pass
        return removed

    def _delete_in(self, table: str, column: str, values: list) -> int:
        """Delete the rows whose `column` is one of `values`; how many went."""
        sql = f"DELETE FROM {table} WHERE {column} IN "
        return sum(self.db.conn.execute(sql + f"({_marks(c)})", c).rowcount for c in _chunks(values, 900))

    def vacuum(self) -> None:
        """Give the space of removed rows back to the filesystem."""
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.vacuum()
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def restore_user_tables(self, kept: dict[str, tuple[list[str], list[tuple]]], last_run_id: int | None) -> None:
        """Write rows read by `read_user_tables` into this (new) cache; keep run ids counting on from
        `last_run_id`, so a new scan never takes the id an old apply run's plan had."""
        with self.db.atomic():
            for table, (columns, rows) in kept.items():
                have = {c.name for c in self.db[table].columns}
                keep = [i for i, c in enumerate(columns) if c in have]
                names = ",".join(columns[i] for i in keep)
                self.db.conn.executemany(
                    f"INSERT OR REPLACE INTO {table} ({names}) VALUES ({_marks(keep)})",
                    [tuple(row[i] for i in keep) for row in rows],
                )
            if last_run_id:
                now = time.time()
                self.db.conn.execute(
                    "INSERT INTO runs (id, started_at, finished_at, roots, settings, summary, status) "
                    "VALUES (?, ?, ?, '[]', '{}', '{}', 'rebuilt')",
                    (last_run_id, now, now),
                )


_JOURNAL_COLS = ("apply_id", "seq", "group_id", "action", "src", "dest", "keeper", "temp", "content_hash", "size",
                 "mtime_ns", "mode", "state", "reason", "extra")  # fmt: skip


def _journal_values(entry: JournalEntry) -> tuple:
    return tuple(getattr(entry, c) for c in _JOURNAL_COLS)


_EMPTY_FACTS = dict.fromkeys(("kind", "reason", *_FACT_COLUMNS))


def _chunks(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _marks(items) -> str:
    return ",".join("?" * len(items))


class _Rollback(Exception):
    """Raised inside a transaction to undo it (a dry run)."""


# Journal states undo (or the recovery of an interrupted apply) still acts on, and apply-run statuses
# that mean a run is not finished: an apply run with either keeps its journal.
UNDO_NEEDS = ("planned", "done", "undoing")
APPLY_BUSY = ("running", "interrupted", "undoing")
# What a person decided and what undo needs: `ndup cache rebuild` carries these into the new cache.
USER_TABLES = ("group_decisions", "member_decisions", "ignore_sets", "ignore_members", "apply_runs", "journal")


# ---- the cache file ------------------------------------------------------------------------------------


def is_damaged(e: BaseException) -> bool:
    """An SQLite error that means the file itself is broken (not a lock, a full disk or a bug)."""
    if not isinstance(e, sqlite3.DatabaseError):
        return False
    return type(e) is sqlite3.DatabaseError or any(s in str(e) for s in ("malformed", "not a database"))


DAMAGED_HINT = (
    "`ndup cache rebuild` (with the same --db) moves it aside and starts a new one, keeping review decisions "
    "and the apply journal"
)


def cache_error(path: Path | None, e: sqlite3.Error) -> NdupError:
    """The one-line error for a cache SQLite cannot use (`path` None: the cache the command was given)."""
    where = f"the cache {path}" if path else "the cache"
    if is_damaged(e):
        return NdupError(f"{where} is damaged ({e})", hint=DAMAGED_HINT)
    if getattr(e, "sqlite_errorname", "").startswith("SQLITE_FULL") or "disk is full" in str(e):
        return NdupError(
            f"the disk holding {where} is full ({e}); everything saved before this point is kept",
            hint="free some space or put the cache elsewhere with --db PATH, then run the command again",
        )
    if "readonly" in str(e):
        return NdupError(f"{where} cannot be written ({e})", hint="check its permissions, or use --db PATH")
    if "locked" in str(e):
        return NdupError(f"{where} is locked by another program ({e})", hint="close it, or use --db PATH")
    return NdupError(f"cannot use {where}: {e}", hint="check the disk and the file's permissions, or use --db PATH")


def cache_files(path: Path) -> list[Path]:
    """The cache and SQLite's write-ahead log and shared-memory files beside it, those that exist."""
    path = Path(path).expanduser()
    return [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]


def index_files(path: Path) -> list[Path]:
    """The persisted search index beside the cache (`CACHE.hnsw`, `CACHE.hnsw.meta`), the verdicts of
    the last scan's candidate pairs (`CACHE.pairs`) and its groups (`CACHE.match`), those that exist.
    Derived data: a scan rebuilds them whenever they are missing or do not match the cache."""
    path = Path(path).expanduser()
    derived = (".hnsw", ".hnsw.meta", ".pairs", ".match")
    return [p for p in (Path(f"{path}{suffix}") for suffix in derived) if p.exists()]


def disk_size(path: Path) -> int:
    return sum(p.stat().st_size for p in cache_files(path))


def cache_report(path: Path) -> dict:
    """`ndup cache info` and `ndup doctor`: where the cache is, its size on disk and what it holds; for a
    cache that cannot be used, `problem` and `hint` say why and what to do. Never creates a cache."""
    path = Path(path).expanduser()
    doc: dict = {"path": str(path), "exists": path.exists(), "size": disk_size(path)}
    if not doc["exists"]:
        return doc
    index = index_files(path)
    doc["index"] = {"path": f"{path}.hnsw", "exists": bool(index), "size": sum(p.stat().st_size for p in index)}
    try:
        store = Store.open(path)
    except NdupError as e:
        return {**doc, "problem": e.message, "hint": e.hint}
    try:
        damage = store.damage()
        if not damage:
            doc.update(store.stats())
    except sqlite3.DatabaseError as e:
        damage = [str(e)]
    finally:
        store.close()
    if damage:
        doc.update(damage=damage, problem=f"the cache {path} is damaged ({damage[0]})", hint=DAMAGED_HINT)
    doc["size"] = disk_size(path)
    return doc


def read_user_tables(path: Path) -> tuple[dict[str, tuple[list[str], list[tuple]]], dict[str, str], int | None]:
    """USER_TABLES' (columns, rows) from a cache that may be damaged, what could not be read (table:
    reason), and the highest scan run id it knows of."""
    kept: dict[str, tuple[list[str], list[tuple]]] = {}
    unreadable: dict[str, str] = {}
    last_run: int | None = None
    try:
        conn = sqlite3.connect(str(Path(path).expanduser()))
    except sqlite3.DatabaseError as e:
        return {}, dict.fromkeys(USER_TABLES, str(e)), None
    conn.text_factory = _from_db  # paths as they were (see _Connection), not as they are stored
    try:
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as e:
            return {}, dict.fromkeys(USER_TABLES, str(e)), None
        for table in USER_TABLES:
            if table not in tables:  # a cache from before the table existed
                continue
            try:
                cur = conn.execute(f"SELECT * FROM {table}")
                rows = cur.fetchall()
                kept[table] = ([d[0] for d in cur.description], rows)
            except sqlite3.DatabaseError as e:
                unreadable[table] = str(e)
        ids = []
        for sql in ("SELECT max(id) FROM runs", "SELECT max(plan_run_id) FROM apply_runs",
                    "SELECT max(run_id) FROM group_decisions"):  # fmt: skip
            with contextlib.suppress(sqlite3.DatabaseError):
                ids.append(conn.execute(sql).fetchone()[0])
        last_run = max((i for i in ids if i is not None), default=None)
    finally:
        conn.close()
    return kept, unreadable, last_run


@dataclass
class Rebuilt:
    path: Path
    backup: Path
    kept: dict[str, int]  # rows carried over, by table
    unreadable: dict[str, str]  # tables that could not be read from the old file, and why


def rebuild(path: Path, *, force: bool = False) -> Rebuilt:
    """Move the cache aside (`PATH.bak-YYYYmmdd-HHMMSS`, with its -wal and -shm) and start an empty one that
    keeps review decisions, the "not duplicates" list and the apply journal. Refuses, touching nothing,
    when those cannot be read from the old file, unless `force`. The caller holds the cache lock."""
    path = Path(path).expanduser()
    if not path.exists():
        raise NdupError(f"there is no cache at {path}", hint="nothing to rebuild; `ndup scan FOLDER` creates one")
    kept, unreadable, last_run = read_user_tables(path)
    if unreadable and not force:
        what = ", ".join(unreadable)
        raise NdupError(
            f"cannot read {what} from the damaged cache {path} ({next(iter(unreadable.values()))})",
            hint="`ndup cache rebuild --force` starts an empty cache anyway and keeps the old file beside it; "
            "review decisions or apply journals in it would not come along",
        )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup = path.with_name(f"{path.name}.bak-{stamp}")
    n = 1
    while any(Path(f"{backup}{s}").exists() for s in ("", "-wal", "-shm")):
        n += 1
        backup = path.with_name(f"{path.name}.bak-{stamp}-{n}")
    moved: list[tuple[Path, Path]] = []
    created = False
    try:
        for old in cache_files(path):
            new = Path(str(backup) + str(old)[len(str(path)) :])
            os.rename(old, new)
            moved.append((old, new))
        created = True
        store = Store.open(path)
        try:
            store.restore_user_tables(kept, last_run)
        finally:
            store.close()
        for p in index_files(path):  # derived from the old cache's embeddings: the next scan builds anew
            p.unlink()
    except BaseException as e:  # put the old cache back as it was
        for p in cache_files(path) if created else ():
            p.unlink()
        for old, new in reversed(moved):
            os.rename(new, old)
        if isinstance(e, OSError):
            raise NdupError(
                f"cannot rebuild the cache {path}: {e.strerror or e}",
                hint="it is unchanged; check the free space and the folder's permissions",
            ) from None
        raise
    return Rebuilt(path, backup, {t: len(rows) for t, (_, rows) in kept.items()}, unreadable)
