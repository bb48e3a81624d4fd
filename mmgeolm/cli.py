"""``mmgeolm run RECIPE.yaml --out DIR [--from STAGE] [--until STAGE]``: the whole pipeline."""
from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import yaml

from mmgeolm.pipeline import STAGE_NAMES, build_stages
from mmgeolm.recipe import check_stage_settings, load_recipe
from mmgeolm.stages import changed_settings, missing_before, run_stages, select
from mmgeolm_core.cli import run_cli
from mmgeolm_core.errors import InputError
from mmgeolm_core.io import atomic_write_text, check_output_dir
from mmgeolm_core.resources import shipped_names

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmgeolm", description="From a recipe to a trained, evaluated MMGeoLM.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run", help="run (or resume) the pipeline of a recipe",
        description="Run the stages " + " -> ".join(STAGE_NAMES) + "; each writes into OUT/<stage>/ with its "
                    "log and a DONE.json marker; a re-run skips finished stages and resumes the rest.",
        epilog="example: mmgeolm run demo-cpu --out runs/demo",
    )
    run.add_argument("recipe", help=f"pipeline recipe YAML, or a shipped name ({', '.join(shipped_names('pipeline-recipe'))})")
    run.add_argument("--out", required=True, type=Path, help="run directory (re-running resumes it)")
    run.add_argument("--from", dest="start", default=None, metavar="STAGE", help="first stage to run")
    run.add_argument("--until", default=None, metavar="STAGE", help="last stage to run")
    return parser


def run_pipeline(args: argparse.Namespace) -> int:
    """Check the recipe and every stage's settings, then run (or resume) the selected stages."""
    recipe = load_recipe(args.recipe)
    check_stage_settings(recipe)
    all_stages = build_stages(recipe, args.out)
    stages = select(all_stages, args.start, args.until)
    missing = missing_before(args.out, all_stages, args.start)
    if missing:
        raise InputError(f"--from {args.start}: earlier stage(s) {', '.join(missing)} have not finished in "
                         f"{args.out} (no DONE.json); run them first or start from {missing[0]}")
    changed = changed_settings(args.out, all_stages) if args.out.is_dir() else []
    if changed:
        raise InputError(f"{args.out}: finished stage(s) ran with other settings than this recipe gives them: "
                         f"{'; '.join(changed)}. Delete those stage folders (and the later ones that read them) "
                         f"to redo them, or use another --out")
    check_output_dir(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "recipe.yaml", yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    status = run_stages(args.out, stages)
    print(f"mmgeolm: {', '.join(f'{k} {v}' for k, v in status.items())}")
    report = args.out / "report" / "report.md"
    if report.exists():
        print(f"mmgeolm: report at {report}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli("mmgeolm", build_parser(), run_pipeline, argv)


if __name__ == "__main__":
    raise SystemExit(main())
