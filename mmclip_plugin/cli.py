"""Command lines of mmclip_plugin: ``mmclip-train``, ``mmclip-eval`` and ``mmclip-ablate``.

``mmclip-train CONFIG.yaml [key=value ...] [--resume latest|DIR]``; the same under
``torchrun --nproc_per_node N -m mmclip_plugin.cli CONFIG.yaml ...`` trains with DDP.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from mmclip_plugin.config import load_config
from mmgeolm_core.cli import run_cli
from mmgeolm_core.config import config_to_dict
from mmgeolm_core.errors import InputError
from mmgeolm_core.io import atomic_write_json, check_output_dir, check_output_file, read_text


def build_train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmclip-train",
        description="Fine-tune a CLIP/SigLIP encoder pair with hard-negative contrastive losses (MMCLIP).",
        epilog="example: mmclip-train mmclip_plugin/configs/tiny-cpu.yaml data.train=runs/demo/data output_dir=runs/mmclip",
    )
    parser.add_argument("config", help="training config YAML, or a shipped name (tiny-cpu, vit-l-14-336, ...)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, nested keys dotted (data.train=DIR optim.lr=1e-4 steps=200)")
    parser.add_argument("--resume", metavar="latest|DIR", default=None,
                        help="continue exactly from the newest checkpoint in output_dir, or from a checkpoint directory")
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh in an output_dir that holds another run (moved aside, never deleted)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    return parser


def run_train(args: argparse.Namespace) -> int:
    """``mmclip-train``: load and check the config, then train (or print the resolved config)."""
    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True), end="")
        return 0
    from mmclip_plugin.train import train  # torch and open_clip load only when training

    cfg.progress = cfg.progress and not args.quiet
    result = train(cfg, resume=args.resume, overwrite=args.overwrite)
    if result.history:
        print(f"final loss {result.final_loss:.4f} after {result.steps} steps; model: {result.final_dir}")
    return 0


def train_main(argv: list[str] | None = None) -> int:
    """Entry point of ``mmclip-train``; returns the exit status."""
    return run_cli("mmclip-train", build_train_parser(), run_train, argv, intermixed=True)


def build_eval_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmclip-eval",
        description="Hard-negative accuracy (Hit@1 among 1 + K), per perturbation type and caption kind, "
                    "and retrieval R@1/R@5 of MMCLIP checkpoints on a data-set split.",
        epilog="example: mmclip-eval --checkpoint runs/mmclip/final none:mmclip-tiny-vit --data runs/demo/data "
               "--out eval.json --plot eval.png",
    )
    parser.add_argument("--checkpoint", nargs="+", required=True, metavar="DIR",
                        help="checkpoint directories, training run directories (their final/), or "
                             "none:<open_clip model>[:<pretrained tag>] for an untrained starting model")
    parser.add_argument("--data", nargs="+", required=True, metavar="PATH",
                        help="data-set directory built by mmgeolm-data (or reference-format JSON files)")
    parser.add_argument("--split", default="val", help="split of a data-set directory (default: val)")
    parser.add_argument("--out", metavar="FILE.json", help="write the results as JSON (atomically)")
    parser.add_argument("--plot", metavar="FILE.png", help="write a bar chart per perturbation type")
    parser.add_argument("--batch-size", type=int, default=64, help="images/captions per forward pass")
    parser.add_argument("--image-negatives", type=int, default=None, metavar="K", help="at most K image negatives per sample")
    parser.add_argument("--text-negatives", type=int, default=None, metavar="K", help="at most K caption negatives per sample")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers decoding images")
    return parser


def run_eval(args: argparse.Namespace) -> int:
    """``mmclip-eval``: evaluate every checkpoint on the same split; print, and write JSON and a chart."""
    from mmclip_plugin.evaluate import EvalConfig, evaluate_checkpoints, format_summary

    for option, path in (("--out", args.out), ("--plot", args.plot)):
        if path:
            check_output_file(path, option)  # before any model is loaded
    cfg = EvalConfig(split=args.split, batch_size=args.batch_size, image_negatives=args.image_negatives,
                     text_negatives=args.text_negatives, device=args.device, num_workers=args.num_workers,
                     progress=not args.quiet)
    results = evaluate_checkpoints(args.checkpoint, args.data[0] if len(args.data) == 1 else args.data, cfg)
    if not args.quiet:
        for name, result in results.items():
            print(format_summary(name, result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.out, next(iter(results.values())) if len(results) == 1 else results)
    if args.plot:
        from mmclip_plugin.plots import plot_results

        plot_results(results, args.plot)
    return 0


def eval_main(argv: list[str] | None = None) -> int:
    """Entry point of ``mmclip-eval`` (hard-negative accuracy of checkpoints); returns the exit status."""
    return run_cli("mmclip-eval", build_eval_parser(), run_eval, argv)


def build_ablate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmclip-ablate",
        description="Train and evaluate the paper's arms (no fine-tuning, in-batch only, + retrieval, + rule, "
                    "+ image negatives, all, all with hard batches) from the same starting weights; write "
                    "ablation.md, ablation.json and ablation.png. Re-running skips arms already evaluated.",
        epilog="example: mmclip-ablate mmclip_plugin/configs/ablation-cpu.yaml --out runs/ablation",
    )
    parser.add_argument("recipe", nargs="?", help="ablation recipe YAML or shipped name (e.g. ablation-cpu)")
    parser.add_argument("--out", metavar="DIR", help="output directory (resumed when it exists)")
    parser.add_argument("--arms", nargs="+", metavar="ARM", help="run only these arms (default: the recipe's)")
    parser.add_argument("--seeds", nargs="+", type=int, metavar="S", help="override the recipe's seeds")
    parser.add_argument("--data", metavar="DIR", help="an existing data-set directory instead of the recipe's "
                        "data / data_recipe (the pipeline passes its own)")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="(arm, seed) runs side by side, one intra-op thread each (default 1)")
    parser.add_argument("--list-arms", action="store_true", help="print the registered arms and exit")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    return parser


def run_ablate(args: argparse.Namespace) -> int:
    """``mmclip-ablate``: every (arm, seed) not yet evaluated, then the table."""
    from mmclip_plugin.ablation.arms import get_arm, list_arms
    from mmclip_plugin.ablation.config import load_ablation
    from mmclip_plugin.ablation.run import run_ablation

    if args.list_arms:
        for name in list_arms():
            print(f"{name:18s} {get_arm(name).label}")
        return 0
    if args.recipe is None or args.out is None:
        raise InputError("give an ablation RECIPE and --out DIR (or --list-arms)")
    check_output_dir(args.out)
    ablation = load_ablation(args.recipe)
    if args.arms:
        ablation.arms = [get_arm(a).name for a in args.arms]
    if args.seeds:
        ablation.seeds = list(dict.fromkeys(args.seeds))
    if args.data:
        if not Path(args.data, "samples.jsonl").is_file():
            raise InputError(f"--data {args.data}: not a data set (no samples.jsonl); build one with mmgeolm-data build")
        ablation.data, ablation.data_recipe = str(Path(args.data).resolve()), None
    if args.jobs < 1:
        raise InputError(f"--jobs {args.jobs}: expected at least 1")
    run_ablation(ablation, args.out, progress=not args.no_progress, jobs=args.jobs)
    print(read_text(Path(args.out, "ablation.md")), end="")
    return 0


def ablate_main(argv: list[str] | None = None) -> int:
    """Entry point of ``mmclip-ablate`` (the paper's comparison of negative types); returns the exit status."""
    return run_cli("mmclip-ablate", build_ablate_parser(), run_ablate, argv)


if __name__ == "__main__":
    sys.exit(train_main())
