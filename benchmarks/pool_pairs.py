"""What a plain scan makes of the photo pool's labelled pairs (similar shots, copies, different).

    python benchmarks/pool_pairs.py                 # scans ../shared/photos as it is
    python benchmarks/pool_pairs.py --markdown docs/benchmarks.md

`../shared/photos/SOURCES.json` labels some pairs of its photos: `similar-shot` (burst or video frames,
stereo pairs, exposure or viewpoint changes, renders: never to be called copies), `copy` (an edited
copy: to be found) and `different`. The script scans the folder with the default settings into a
fresh cache, through the real pipeline (`ndup.scan.run_scan`), and reports the tier the plan gives each
labelled pair: copy/exact (one would be proposed for deletion), similar (shown for review) or none.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from accuracy import write_between_markers

from ndup.config import ScanSettings
from ndup.scan import run_scan

DEFAULT_POOL = Path(__file__).resolve().parents[2] / "shared" / "photos"


def labelled_pairs(pool: Path) -> list[tuple[str, str, str, str]]:
    """(group, relation, file a, file b) for each labelled pair of the pool."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for entry in json.loads((pool / "SOURCES.json").read_text()):
        if entry.get("group"):
            groups[entry["group"]].append(entry)
    out = []
    for name, entries in sorted(groups.items()):
        files = sorted(e["file"] for e in entries)
        relation = entries[0].get("relation", "")
        out += [(name, relation, a, b) for i, a in enumerate(files) for b in files[i + 1 :]]
    return out


def tier_of_pair(plan, a: str, b: str) -> str:
    for group in plan.groups:
        names = {Path(m.path).name for m in group.members}
        if a in names and b in names:
            return group.tier
    return "none"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pool", type=Path, default=DEFAULT_POOL)
    p.add_argument("--markdown", type=Path, default=None, help="write the table into this file (between markers)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ndup-pool-") as work:
        plan = run_scan(ScanSettings(roots=(args.pool,), db_path=Path(work) / "cache.db"))
    rows = ["| pair | labelled | tier given |", "|---|---|---|"]
    wrong = total = 0
    for name, relation, a, b in labelled_pairs(args.pool):
        tier = tier_of_pair(plan, a, b)
        kind = relation.split(" ", 1)[0]
        total += kind == "similar-shot"
        wrong += kind == "similar-shot" and tier in ("copy", "exact")
        rows.append(f"| {name}: {a} + {b} | {relation} | {tier} |")
    summary = f"{wrong} of {total} labelled similar-shot pairs put in copy groups"
    body = "\n".join(rows) + f"\n\n{summary}.\n"
    print(body)
    if args.markdown:
        write_between_markers(
            args.markdown, "pool-pairs", body, "python benchmarks/pool_pairs.py --markdown docs/benchmarks.md"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
