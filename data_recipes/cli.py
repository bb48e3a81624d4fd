"""`mmgeolm-data`: one command line, one subcommand per module.

Each subcommand lives in the module that implements it; that module defines
``add_arguments(parser)`` and ``run_cli(args) -> int``; errors take the project's one path
(:func:`mmgeolm_core.cli.run_cli`: one line on stderr, exit 2 for bad input, 1 for a failed job). Modules are imported lazily so that
``mmgeolm-data --help`` stays fast and a broken optional dependency only affects its own command.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from mmgeolm_core.cli import run_cli

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "build": ("data_recipes.build.runner", "build a diagram data set with image hard negatives from a recipe YAML"),
    "text-negatives": ("data_recipes.text_negatives.generate", "rule- and retrieval-based caption negatives"),
    "perturb-script": ("data_recipes.external.perturb", "image negatives from one external matplotlib script"),
    "perturb-batch": ("data_recipes.external.batch", "image negatives for a folder of scripts or a reference data set"),
    "import": ("data_recipes.build.importers", "import reference-format JSON or (script, caption) folders"),
    "llava-data": ("data_recipes.formats.llava", "LLaVA stage-1/2 training JSON and held-out questions from a data set"),
    "probe-set": ("data_recipes.diagrams.probe", "a paired perception probe: questions on positives and their hard negatives"),
    "check-tokens": ("data_recipes.text_negatives.token_check",
                     "report hard negatives that a text encoder's tokenizer cannot tell from their positive"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmgeolm-data", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        build_parser().parse_args(argv)  # prints help or "invalid choice" and exits 2
        return 2
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"mmgeolm-data {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    return run_cli(f"mmgeolm-data {name}", parser, module.run_cli, rest)


if __name__ == "__main__":
    sys.exit(main())
