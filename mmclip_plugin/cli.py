"""Command lines of mmclip_plugin: ``mmclip-train``, ``mmclip-eval`` and ``mmclip-ablate``.

``mmclip-train CONFIG.yaml [key=value ...] [--resume latest|DIR]``; the same under
``torchrun --nproc_per_node N -m mmclip_plugin.cli CONFIG.yaml ...`` trains with DDP.
"""
from __future__ import annotations

import argparse
import sys

from mmclip_plugin.config import ConfigError, load_config
from mmgeolm_core.errors import InputError


def build_train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmclip-train",
        description="Fine-tune a CLIP/SigLIP encoder pair with hard-negative contrastive losses (MMCLIP).",
        epilog="example: mmclip-train mmclip_plugin/configs/tiny-cpu.yaml data.train=runs/demo/data output_dir=runs/mmclip",
    )
    parser.add_argument("config", help="training config YAML (see mmclip_plugin/configs/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, nested keys dotted (data.train=DIR optim.lr=1e-4 steps=200)")
    parser.add_argument("--resume", metavar="latest|DIR", default=None,
                        help="continue exactly from the newest checkpoint in output_dir, or from a checkpoint directory")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    return parser


def train_main(argv: list[str] | None = None) -> int:
    """Entry point of ``mmclip-train``; returns the exit status."""
    args = build_train_parser().parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"mmclip-train: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        import yaml

        from mmclip_plugin.config import config_to_dict

        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
        return 0
    from mmclip_plugin.train import train  # torch and open_clip load only when training

    try:
        result = train(cfg, resume=args.resume)
    except InputError as exc:  # bad data or model input found at start (e.g. data.tokenization_check=error)
        print(f"mmclip-train: {exc}", file=sys.stderr)
        return 2
    if result.history:
        print(f"final loss {result.final_loss:.4f} after {result.steps} steps; model: {result.final_dir}")
    return 0


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
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return parser


def eval_main(argv: list[str] | None = None) -> int:
    """Entry point of ``mmclip-eval`` (hard-negative accuracy of checkpoints); returns the exit status."""
    args = build_eval_parser().parse_args(argv)
    from mmclip_plugin.evaluate import EvalConfig, evaluate_checkpoints, format_summary
    from mmclip_plugin.train import write_json

    try:
        cfg = EvalConfig(split=args.split, batch_size=args.batch_size, image_negatives=args.image_negatives,
                         text_negatives=args.text_negatives, device=args.device, num_workers=args.num_workers,
                         progress=not args.quiet)
        data = args.data[0] if len(args.data) == 1 else args.data
        results = evaluate_checkpoints(args.checkpoint, data, cfg)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"mmclip-eval: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        for name, result in results.items():
            print(format_summary(name, result))
    if args.out:
        from pathlib import Path

        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, next(iter(results.values())) if len(results) == 1 else results)
    if args.plot:
        from mmclip_plugin.plots import plot_results

        plot_results(results, args.plot)
    return 0


def build_ablate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmclip-ablate",
        description="Train and evaluate the paper's arms (no fine-tuning, in-batch only, + retrieval, + rule, "
                    "+ image negatives, all, all with hard batches) from the same starting weights; write "
                    "ablation.md, ablation.json and ablation.png. Re-running skips arms already evaluated.",
        epilog="example: mmclip-ablate mmclip_plugin/configs/ablation-cpu.yaml --out runs/ablation",
    )
    parser.add_argument("recipe", help="ablation recipe YAML (see mmclip_plugin/configs/ablation-cpu.yaml)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (resumed when it exists)")
    parser.add_argument("--arms", nargs="+", metavar="ARM", help="run only these arms (default: the recipe's)")
    parser.add_argument("--seeds", nargs="+", type=int, metavar="S", help="override the recipe's seeds")
    parser.add_argument("--list-arms", action="store_true", help="print the registered arms and exit")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    return parser


def ablate_main(argv: list[str] | None = None) -> int:
    """Entry point of ``mmclip-ablate`` (the paper's comparison of negative types); returns the exit status."""
    args = build_ablate_parser().parse_args(argv)
    from mmclip_plugin.ablation.arms import get_arm, list_arms
    from mmclip_plugin.ablation.config import load_ablation
    from mmclip_plugin.ablation.run import run_ablation

    if args.list_arms:
        for name in list_arms():
            print(f"{name:18s} {get_arm(name).label}")
        return 0
    try:
        ablation = load_ablation(args.recipe)
        if args.arms:
            ablation.arms = [get_arm(a).name for a in args.arms]
        if args.seeds:
            ablation.seeds = list(dict.fromkeys(args.seeds))
    except (ConfigError, KeyError) as exc:
        print(f"mmclip-ablate: {exc}", file=sys.stderr)
        return 2
    run_ablation(ablation, args.out, progress=not args.no_progress)
    from pathlib import Path

    print(Path(args.out, "ablation.md").read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(train_main())
