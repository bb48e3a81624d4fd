"""``mmgeolm run RECIPE.yaml --out DIR [--from STAGE] [--until STAGE]``: the whole pipeline."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from mmgeolm.pipeline import STAGE_NAMES, build_stages
from mmgeolm.recipe import RecipeError, load_recipe
from mmgeolm.stages import StageError, missing_before, run_stages, select

SHIPPED_RECIPES = Path(__file__).parent / "recipes"


def _recipe_path(value: str) -> Path:
    """A recipe file as given, else a shipped recipe by short name (``demo-cpu``)."""
    path = Path(value)
    if path.is_file():
        return path
    shipped = SHIPPED_RECIPES / f"{value}.yaml"
    if not path.suffix and shipped.is_file():
        return shipped
    known = ", ".join(p.stem for p in sorted(SHIPPED_RECIPES.glob("*.yaml")))
    raise RecipeError(f"pipeline recipe {value!r} is neither a file nor a shipped recipe ({known})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mmgeolm", description="From a recipe to a trained, evaluated MMGeoLM.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run", help="run (or resume) the pipeline of a recipe",
        description="Run the stages " + " -> ".join(STAGE_NAMES) + "; each writes into OUT/<stage>/ with its "
                    "log and a DONE.json marker; a re-run skips finished stages and resumes the rest.",
        epilog="example: mmgeolm run demo-cpu --out runs/demo",
    )
    run.add_argument("recipe", help=f"pipeline recipe YAML, or a shipped name ({', '.join(p.stem for p in sorted(SHIPPED_RECIPES.glob('*.yaml')))})")
    run.add_argument("--out", required=True, type=Path, help="run directory (re-running resumes it)")
    run.add_argument("--from", dest="start", default=None, metavar="STAGE", help="first stage to run")
    run.add_argument("--until", default=None, metavar="STAGE", help="last stage to run")
    args = parser.parse_args(argv)
    try:
        recipe = load_recipe(_recipe_path(args.recipe))
        all_stages = build_stages(recipe, args.out)
        stages = select(all_stages, args.start, args.until)
        missing = missing_before(args.out, all_stages, args.start)
        if missing:
            raise ValueError(f"--from {args.start}: earlier stage(s) {', '.join(missing)} have not finished in "
                             f"{args.out} (no DONE.json); run them first or start from {missing[0]}")
    except (RecipeError, ValueError) as exc:
        print(f"mmgeolm: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    try:
        status = run_stages(args.out, stages)
    except StageError as exc:
        print(f"mmgeolm: {exc}", file=sys.stderr)
        return 1
    print(f"mmgeolm: {', '.join(f'{k} {v}' for k, v in status.items())}")
    report = args.out / "report" / "report.md"
    if report.exists():
        print(f"mmgeolm: report at {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
