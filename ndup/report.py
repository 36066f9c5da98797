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
