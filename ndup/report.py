"""Plans -> the JSON document `--json` prints (pure; documented in README)."""

from __future__ import annotations

from ndup.records import Plan


def plan_to_json(plan: Plan) -> dict:
    return {
        "run_id": plan.run_id,
        "groups": [
            {
                "id": g.id,
                "tier": g.tier,
                "keep": g.keep,
                "members": [
                    {
                        "path": m.path,
                        "action": m.action,
                        "score": m.score,
                        "reason": m.reason,
                        "size": m.size,
                        "width": m.width,
                        "height": m.height,
                        "format": m.format,
                    }
                    for m in g.members
                ],
            }
            for g in plan.groups
        ],
        "failures": [{"path": f.path, "reason": f.reason} for f in plan.failures],
        "summary": plan.summary,
    }


def result_to_json(r) -> dict:
    return {
        "group": r.group_id,
        "path": r.src,
        "keep": r.keeper,
        "action": r.action,
        "state": r.state,
        "reason": r.reason,
        "dest": r.dest,
        "size": r.size,
    }


def apply_to_json(report) -> dict:
    """`ndup apply --json` (and the "apply" part of `ndup scan --apply --json`); shape in README."""
    return {
        "apply_id": report.apply_id,
        "plan_run_id": report.plan_run_id,
        "action": report.options.action,
        "dry_run": report.options.dry_run,
        "resumed": report.resumed,
        "note": report.note,
        "recovered": report.recovered,
        "results": [result_to_json(r) for r in report.results],
        "summary": {s: report.count(s) for s in ("done", "would", "already", "skipped", "failed")}
        | {"bytes": report.bytes_done},
    }


def undo_to_json(report) -> dict:
    return {
        "apply_id": report.apply_id,
        "recovered": report.recovered,
        "results": [result_to_json(r) for r in report.results],
        "summary": {"restored": report.count("done"), "failed": report.count("failed")},
    }


def history_to_json(runs) -> list[dict]:
    return [
        {"id": r.id, "plan_run_id": r.plan_run_id, "action": r.action, "options": r.options, "status": r.status,
         "started_at": r.started_at, "finished_at": r.finished_at, "summary": r.summary}
        for r in runs
    ]  # fmt: skip
