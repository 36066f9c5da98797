"""ndup train / eval / explain: the learned model, measured and explained."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ndup.cli.common import DeviceOption, JsonOption, QuietOption, WeightsOption, app, handle_errors, print_json
from ndup.errors import ExitCode, NdupError


@app.command()
@handle_errors
def train(
    photos: Annotated[Path, typer.Argument(metavar="FOLDER", help="Photos to learn from (subfolders too).")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="PATH", help="Where to write the weights file.")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed and folder give the same model.")] = 0,
    holdout: Annotated[
        float,
        typer.Option("--holdout", min=0.0, max=0.9, help="Fraction of photos never trained on, kept for evaluation."),
    ] = 0.33,
    quick: Annotated[
        bool, typer.Option("--quick", help="A few steps of each stage: to check a setup, not to use.")
    ] = False,
) -> None:
    """Train the alignment stage, descriptor and decision unit on your own photos (self-supervised).

    Use the result with `ndup scan --weights PATH` (or `weights` in the config file). New weights mean
    new embeddings: the cache keys them by a hash of the weights that shape them, so nothing stale is reused.
    """
    from ndup.model.train import TrainConfig, quick_config
    from ndup.model.train import train as run_training

    if not photos.is_dir():
        raise NdupError(f"no such folder: {photos}", hint="name a folder of photos", exit_code=ExitCode.USAGE)
    cfg = TrainConfig(photos=photos, out=out, seed=seed, holdout=holdout)
    run_training(quick_config(cfg) if quick else cfg, say=lambda line: typer.echo(line, err=True))


def _load_json_map(path: Path, folder: Path, what: str) -> dict[str, str]:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise NdupError(
            f"no such file: {path}", hint=f"give the {what} as a JSON object", exit_code=ExitCode.USAGE
        ) from None
    except (OSError, json.JSONDecodeError) as e:
        raise NdupError(f"cannot read {what} {path}: {e}", hint='expected {"file": value, ...}') from None
    if not isinstance(raw, dict):
        raise NdupError(f"{path} is not a JSON object", hint='expected {"file": value, ...}')
    return {str((folder / k).absolute()) if not Path(k).is_absolute() else k: str(v) for k, v in raw.items()}


@app.command("eval")
@handle_errors
def eval_(
    folder: Annotated[Path, typer.Argument(metavar="FOLDER", help="A labelled folder of photos.")],
    truth: Annotated[
        Path, typer.Option("--truth", metavar="TRUTH.json", help='{"file": group id}: files with one id are copies.')
    ],
    kinds: Annotated[
        Optional[Path], typer.Option("--kinds", metavar="KINDS.json", help='{"file": kind}: recall per kind of edit.')
    ] = None,
    db: Annotated[
        Optional[Path],
        typer.Option("--db", metavar="PATH", help="Cache for this evaluation [default: ~/.cache/ndup/eval.db]."),
    ] = None,
    weights: WeightsOption = None,
    device: DeviceOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Measure pairwise precision, recall and F1 (and the PR curve's area) on a labelled folder.

    File names in the JSON files are relative to FOLDER. The evaluation keeps its own cache, so it
    never replaces the plan `ndup apply` would act on.
    """
    from ndup.config import ScanSettings, cache_dir
    from ndup.evaluate import evaluate
    from ndup.render import RichProgress, print_metrics, stdout_console
    from ndup.scan import run_scan

    truth_map = _load_json_map(truth, folder, "truth")
    kinds_map = _load_json_map(kinds, folder, "kinds") if kinds else None
    settings = ScanSettings(
        roots=(folder,),
        db_path=db or cache_dir() / "eval.db",
        device=device.value if device else "auto",
        weights=weights,
    )
    captured: dict = {}
    with RichProgress(enabled=None if not (quiet or json_output) else False) as progress:
        plan = run_scan(
            settings, progress, on_matched=lambda images, verdicts: captured.update(images=images, verdicts=verdicts)
        )
    images = captured.get("images", [])
    scores = {}
    for v in captured.get("verdicts", []):
        a, b = sorted((images[v.a].path, images[v.b].path))
        scores[(a, b)] = v.score
    metrics = evaluate(plan, truth_map, kinds_map, scores)
    if json_output:
        print_json({"metrics": metrics.__dict__, "files": len(truth_map)})
    else:
        print_metrics(metrics, stdout_console())


@app.command()
@handle_errors
def explain(
    a: Annotated[Path, typer.Argument(metavar="A", help="An image file.")],
    b: Annotated[Path, typer.Argument(metavar="B", help="Another image file.")],
    save: Annotated[
        Optional[Path], typer.Option("--save", metavar="PNG", help="Write both images and their aligned views here.")
    ] = None,
    weights: WeightsOption = None,
    device: DeviceOption = None,
    json_output: JsonOption = False,
) -> None:
    """Explain why two files match or not: hash distances, cosine before and after alignment, the
    decision unit's probabilities, what registration finds and the tier."""
    from ndup.explain import explain_pair
    from ndup.render import print_explanation, stdout_console

    report = explain_pair(a, b, weights=weights, device=device.value if device else "auto", save=save)
    if json_output:
        print_json(report)
    else:
        print_explanation(report, stdout_console())
