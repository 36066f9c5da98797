"""Plans and progress for people: the only module that talks to Rich."""

from __future__ import annotations

import math
import os
import re
import sys

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from ndup.plan import human_bytes
from ndup.records import Plan

ACTION_STYLE = {"keep": "bold green", "delete": "red", "review": "yellow"}
TIER_STYLE = {"exact": "magenta", "copy": "cyan", "similar": "yellow"}


# Characters a file name may hold that would break a line or lie about the name when shown as they are:
# control characters (a newline starts a new line), bidirectional overrides (text shown backwards), and
# the lone surrogates that stand for bytes that are not UTF-8.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match) -> str:
    ch = match.group()
    code = ord(ch)
    if ch in _NAMED:
        return _NAMED[ch]
    if code < 0x80:
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:  # a byte of a name that is not UTF-8, as os.fsdecode carries it
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` as one honest line for a terminal: control characters, bidirectional overrides and bytes
    that are not UTF-8 are shown as escapes (\\n, \\x1b, \\u202e, \\xe9), as `ls -b` does."""
    return _UNPRINTABLE.sub(_escape, text) if _UNPRINTABLE.search(text) else text


def stdout_console() -> Console:
    # Piped output is for grep and less: never wrap lines at 80 columns there.
    width = None if sys.stdout.isatty() else 400
    return Console(highlight=False, width=width)


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


class RichProgress:
    """Progress bars on stderr; silent when stderr is not a terminal or the user asked for quiet."""

    def __init__(self, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bar: Progress | None = None
        self._task = None

    def __enter__(self) -> RichProgress:
        if self.enabled:
            self._bar = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=stderr_console(),
                transient=True,
            )
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done()

    def stage(self, name: str, total: int | None = None) -> None:
        if self._bar is None:
            return
        if self._task is not None:
            self._bar.remove_task(self._task)
        self._task = self._bar.add_task(name, total=total)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, n)

    def note(self, text: str) -> None:
        """A one-line note on stderr (shown also with --quiet and --json: it is news, not progress)."""
        if self._bar is not None:
            self._bar.console.print(Text("note: " + printable(text)), soft_wrap=True)
        else:
            print_note("note: " + text)

    def done(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def summary_line(plan: Plan) -> str:
    s = plan.summary
    by_tier = s.get("groups_by_tier", {})
    tiers = ", ".join(f"{n} {t}" for t, n in by_tier.items() if n)
    return (
        f"{s.get('files_seen', 0)} files seen, {s.get('images', 0)} images "
        f"({s.get('decoded', 0)} read this run), {s.get('failures', 0)} failures; "
        f"{s.get('groups', 0)} groups{f' ({tiers})' if tiers else ''}; "
        f"{s.get('to_delete', 0)} files proposed for deletion, "
        f"{human_bytes(s.get('bytes_freed', 0))} would be freed"
    )


def _common_folder(paths: list[str]) -> str:
    if not paths:
        return ""
    try:
        return os.path.commonpath([os.path.dirname(p) for p in paths])
    except ValueError:  # mixed drives on Windows
        return ""


def _shown(path: str, base: str) -> str:
    return os.path.relpath(path, base) if base and path.startswith(base + os.sep) else path


def print_plan(plan: Plan, console: Console, show_failures: bool = True) -> None:
    base = _common_folder([m.path for g in plan.groups for m in g.members])
    if plan.groups:
        title = f"Duplicate groups (run {plan.run_id})" + (f" under {printable(base)}" if base else "")
        table = Table(title=title, title_justify="left", expand=False, pad_edge=False, box=box.SIMPLE_HEAD)
        table.add_column("group", justify="right", no_wrap=True)
        table.add_column("tier", no_wrap=True)
        table.add_column("action", no_wrap=True)
        table.add_column("score", justify="right", no_wrap=True)
        table.add_column("pixels", justify="right", no_wrap=True)
        table.add_column("size", justify="right", no_wrap=True)
        table.add_column("file", overflow="fold")
        table.add_column("why", overflow="fold")
        for g in plan.groups:
            for i, m in enumerate(g.members):
                table.add_row(
                    str(g.id) if i == 0 else "",
                    Text(g.tier, style=TIER_STYLE[g.tier]) if i == 0 else "",
                    Text(m.action, style=ACTION_STYLE[m.action]),
                    f"{m.score:.2f}",
                    f"{m.width}x{m.height}",
                    human_bytes(m.size),
                    Text(printable(_shown(m.path, base))),
                    Text(printable(m.reason), style="dim"),
                    end_section=i == len(g.members) - 1,
                )
        console.print(table)
    else:
        console.print("No duplicates found.")
    if show_failures and plan.failures:
        fails = Table(
            title=f"Files that could not be read ({len(plan.failures)})", title_justify="left", box=box.SIMPLE_HEAD
        )
        fails.add_column("file", overflow="fold")
        fails.add_column("reason", overflow="fold")
        for f in plan.failures:
            fails.add_row(Text(printable(f.path)), Text(printable(f.reason)))
        console.print(fails)
    console.print(Text(summary_line(plan)))


def print_settings(rows: list[tuple[str, object, str, str]], file, found: bool, console: Console) -> None:
    """`ndup config show`: (setting, value, source, meaning) rows."""
    console.print(Text(f"Config file: {file}" + ("" if found else " (not found; built-in defaults apply)")))
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("setting", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("source", overflow="fold")
    table.add_column("meaning", overflow="fold", style="dim")
    for key, value, source, meaning in rows:
        shown = (
            ", ".join(value)
            if isinstance(value, list)
            else str(value).lower()
            if isinstance(value, bool)
            else str(value)
        )
        table.add_row(key, Text(printable(shown) or "(none)"), Text(printable(source)), Text(meaning))
    console.print(table)


def error(message: str) -> None:
    # soft_wrap: an error is one line however long, so scripts and grep see it whole
    stderr_console().print(Text(printable(message)), style="red" if sys.stderr.isatty() else None, soft_wrap=True)


def print_metrics(m, console: Console) -> None:
    """ndup eval's report: pairwise scores, then recall per kind of edit."""
    table = Table(title="Pairwise accuracy", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("precision", "recall", "F1", "PR AUC", "true pairs", "found pairs", "correct"):
        table.add_column(col, justify="right")
    ap = "n/a" if m.average_precision is None else f"{m.average_precision:.4f}"
    table.add_row(
        f"{m.precision:.4f}", f"{m.recall:.4f}", f"{m.f1:.4f}", ap,
        str(m.true_pairs), str(m.predicted_pairs), str(m.correct_pairs),
    )  # fmt: skip
    console.print(table)
    if m.recall_by_kind:
        kinds = Table(title="Recall per kind of edit", title_justify="left", box=box.SIMPLE_HEAD)
        kinds.add_column("kind")
        kinds.add_column("recall", justify="right")
        kinds.add_column("pairs", justify="right")
        for kind, (recall, n) in m.recall_by_kind.items():
            kinds.add_row(kind, f"{recall:.3f}", str(n))
        console.print(kinds)


def print_explanation(report: dict, console: Console) -> None:
    """ndup explain's report."""
    a, b = report["files"]
    console.print(Text(f"A: {a}  ({report['sizes'][0]})"))
    console.print(Text(f"B: {b}  ({report['sizes'][1]})"))
    table = Table(box=box.SIMPLE_HEAD, show_header=True)
    table.add_column("evidence")
    table.add_column("value", justify="right")
    table.add_row("same bytes", "yes" if report["same_bytes"] else "no")
    table.add_row("cosine before alignment", f"{report['cosine_before_alignment']:.4f}")
    table.add_row("cosine after alignment", f"{report['cosine_after_alignment']:.4f}")
    for name, value in report["features"].items():
        if name == "cosine":
            continue
        shown = f"{round(value * 64)} bits" if "hash" in name else f"{value:.4f}"
        table.add_row(name.replace("_", " "), shown)
    for who, al in zip("AB", report["alignment"]):
        angle, scale, tx, ty = al["affine"]
        table.add_row(
            f"alignment of {who}",
            f"orientation {al['orientation']}, rotate {math.degrees(angle):+.1f} deg, scale {scale:.2f}, shift ({tx:+.2f}, {ty:+.2f})",
        )
    for cls, p in report["probabilities"].items():
        table.add_row(f"P({cls})", f"{p:.4f}")
    registration = report.get("registration")
    table.add_row("registration", registration["summary"] if registration else "no transform found")
    console.print(table)
    tier = report["tier"]
    console.print(
        Text(
            f"verdict: {tier}" + ("" if tier != "copy" else f" (P(copy) >= {report['copy_threshold']:.2f})"),
            style=TIER_STYLE.get(tier, ""),
        )
    )
    if report.get("saved"):
        console.print(Text(f"wrote {report['saved']}"))


# ---- ndup apply / undo / history -----------------------------------------------------------------

_RESULT_STYLE = {"done": "green", "would": "cyan", "skipped": "yellow", "failed": "bold red", "already": "dim"}
_PAST = {"trash": "trashed", "move": "moved", "hardlink": "hard-linked", "symlink": "symlinked", "delete": "deleted"}


def result_line(result, *, undo: bool = False) -> Text:
    """One file's outcome: `trashed  PATH  (kept KEEPER)`, `would move PATH -> DEST`, `skipped PATH: why`."""
    if undo:
        verb = "restored" if result.state == "done" else "not restored"
    elif result.state == "done":
        verb = _PAST.get(result.action, result.action)
    elif result.state == "would":
        verb = f"would {result.action}"
    else:
        verb = result.state
    line = Text(f"{verb:<15} ", style=_RESULT_STYLE.get(result.state, ""))
    line.append(printable(result.src))
    if result.state in ("done", "would") and not undo:
        if result.action in ("move",) and result.dest:
            line.append(f" -> {printable(result.dest)}")
        elif result.action in ("hardlink", "symlink"):
            line.append(f" -> link to {printable(result.keeper)}")
        else:
            line.append(f"  (kept {printable(result.keeper)})", style="dim")
    if result.reason:
        line.append(f": {printable(result.reason)}")
    return line


def print_result(result, console: Console, *, undo: bool = False) -> None:
    console.print(result_line(result, undo=undo), overflow="fold")


def apply_summary(report) -> str:
    opts = report.options
    done, would = report.count("done"), report.count("would")
    parts = []
    if opts.dry_run:
        parts.append(f"dry run: would {opts.action} {would} files ({human_bytes(report.bytes_done)})")
    else:
        parts.append(f"{_PAST[opts.action]} {done} files ({human_bytes(report.bytes_done)})")
    for state in ("already", "skipped", "failed"):
        if report.count(state):
            parts.append(f"{report.count(state)} {'already done' if state == 'already' else state}")
    line = ", ".join(parts)
    if report.apply_id is not None:
        line = f"apply run {report.apply_id}{' (resumed)' if report.resumed else ''}: {line}"
        if done and opts.action != "delete":
            line += f"; undo with `ndup undo {report.apply_id}`"
    return line


def print_note(message: str) -> None:
    stderr_console().print(Text(printable(message)), style="yellow" if sys.stderr.isatty() else None, soft_wrap=True)


def print_history(runs, console: Console) -> None:
    import datetime

    if not runs:
        console.print("No apply runs yet.")
        return
    table = Table(title="Apply runs", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("run", "started", "plan", "action", "status", "files", "skipped", "failed"):
        table.add_column(col, justify="right" if col in ("run", "plan", "files", "skipped", "failed") else "left")
    for r in runs:
        when = datetime.datetime.fromtimestamp(r.started_at).strftime("%Y-%m-%d %H:%M")
        action = r.action + (f" to {r.options.get('move_to')}" if r.action == "move" else "")
        s = r.summary
        table.add_row(str(r.id), when, str(r.plan_run_id), action, r.status,
                      str(s.get("done", "")), str(s.get("skipped", "")), str(s.get("failed", "")))  # fmt: skip
    console.print(table)


# ---- ndup doctor / ndup cache ------------------------------------------------------------------------


def _when_at(ts: float | None) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "never"


def _facts(rows: list[tuple[str, str]], console: Console) -> None:
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        line = Text(f"{name:<{width}}  ", style="bold")
        line.append(value, style="")
        console.print(line, overflow="fold")


def cache_rows(doc: dict) -> list[tuple[str, str]]:
    """The lines `ndup cache info` prints (and `ndup doctor` starts from)."""
    if not doc.get("exists"):
        return [("cache", f"{doc['path']} (none yet; the first scan creates it)")]
    if "files" not in doc:
        return [("cache", f"{doc['path']} ({human_bytes(doc['size'])} on disk, unusable)")]
    models = ", ".join(f"{n} {m}" for m, n in doc["embeddings"].items()) or "none"
    latest = f"run {doc['latest_plan']} ({_when_at(doc['latest_plan_at'])})" if doc["latest_plan"] else "none"
    return [
        ("cache", f"{doc['path']} ({human_bytes(doc['size'])} on disk, schema {doc['schema_version']})"),
        ("files", f"{doc['files']}: {doc['images']} images, {doc['failures']} failures, {doc['not_images']} not "
                  "images" + (f"; read {_when_at(doc['oldest_file_at'])} to {_when_at(doc['newest_file_at'])}"
                              if doc["files"] else "")),
        ("embeddings", models),
        ("index", f"{doc['index']['path']} ({human_bytes(doc['index']['size'])})" if doc.get("index", {}).get("exists")
                  else "none yet (the next scan builds it)"),
        ("scans", f"{doc['runs']} runs, {doc['plans']} plans; latest plan: {latest}; first run "
                  f"{_when_at(doc['first_run_at'])}, last {_when_at(doc['last_run_at'])}"),
        ("apply", f"{doc['apply_runs']} runs ({doc['undoable_apply_runs']} can be undone), "
                  f"{doc['journal_entries']} journal entries"),
        ("review", f"{doc['review_decisions']} group decisions, {doc['not_duplicate_sets']} \"not duplicates\" sets"),
    ]  # fmt: skip


def print_cache_info(doc: dict, console: Console) -> None:
    _facts(cache_rows(doc), console)


def print_doctor(doc: dict, console: Console) -> None:
    rows = [("ndup", f"{doc['ndup']}, Python {doc['python']}, {doc['platform']}")]
    cfg = doc["config"]
    rows.append(("config", cfg["path"] + ("" if cfg["exists"] else " (not found; built-in defaults apply)")))
    t = doc["torch"]
    if t.get("installed"):
        cuda = t["cuda"]
        gpus = f"yes ({', '.join(cuda['devices'])}; CUDA {cuda['version']})" if cuda["available"] else "no"
        rows.append(("torch", f"{t['version']} (torchvision {t['torchvision']}), {t['threads']} threads; "
                              f"CUDA: {gpus}; MPS: {'yes' if t['mps'] else 'no'}"))  # fmt: skip
        auto = f" (auto would use {t['auto']})" if t["configured"] != "auto" else ""
        rows.append(("device", f"{t['configured']}: {t['device'] or 'not available'}{auto}"))
    w = doc["weights"]
    if "path" in w:
        state = "MISSING" if not w["exists"] else human_bytes(w["size"])
        rows.append(("weights", f"{w['path']} ({w['source']}): {state}"))
        m = w.get("meta")
        if m:
            rows.append(("trained", f"format {m['format']}; {m['trained_on']} photos trained on, {m['validated_on']} "
                                    f"for validation, {m['held_out']} held out; {m['seconds']} s; stages: "
                                    f"{', '.join(m['stages'])}; torch {m['torch']}"))  # fmt: skip
        rows.append(("model", w["model_id"] or "unknown (no weights file)"))
    if "path" in doc["cache"]:
        rows += cache_rows(doc["cache"])
    if doc["registration"].get("installed"):
        rows.append(("registration", f"OpenCV {doc['registration']['opencv']}"))
    f = doc["formats"]
    if "pillow" in f:
        names = (("heif", "HEIF"), ("avif", "AVIF"), ("raw", "RAW"), ("webp", "WebP"), ("jpeg2000", "JPEG 2000"))
        rows.append(("formats", f"Pillow {f['pillow']}; " + "; ".join(f"{n}: {f[k] or 'no'}" for k, n in names)))
    _facts(rows, console)
    for note in doc["notes"]:
        console.print(Text(f"note: {note}"), style="yellow")
    for problem in doc["problems"]:
        console.print(Text(f"problem: {problem}"), style="red")
    n = len(doc["problems"])
    console.print("Everything ndup needs is in place." if not n else f"{n} problem{'s' if n > 1 else ''} found.")


PRUNED = {
    "files": "cached files that no longer exist",
    "embeddings_of_other_models": "embeddings of other models",
    "embeddings_without_file": "embeddings of contents no cached file has",
    "runs": "scan runs with their plans",
    "apply_runs": "finished apply runs undo has nothing left to do for",
    "journal_entries": "journal entries of those",
}


def prune_summary(removed: dict[str, int], dry_run: bool, before: int, after: int) -> str:
    parts = [f"{n} {PRUNED[k]}" for k, n in removed.items() if n]
    if not parts:
        return "Nothing to prune."
    if dry_run:
        return "Would remove " + "; ".join(parts) + ". Nothing was changed (--dry-run)."
    return "Removed " + "; ".join(parts) + f". The cache went from {human_bytes(before)} to {human_bytes(after)}."


def rebuild_summary(done) -> str:
    k = done.kept
    return (
        f"Moved the old cache to {done.backup}. The new one keeps {k.get('group_decisions', 0)} review decisions, "
        f'{k.get("ignore_sets", 0)} "not duplicates" sets and {k.get("apply_runs", 0)} apply runs '
        f"({k.get('journal', 0)} journal entries); the next scan reads every file again."
    )
