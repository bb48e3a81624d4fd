"""Command lines of mmclip_plugin: ``mmclip-train`` (and, to come, ``mmclip-eval`` / ``mmclip-ablate``).

``mmclip-train CONFIG.yaml [key=value ...] [--resume latest|DIR]``; the same under
``torchrun --nproc_per_node N -m mmclip_plugin.cli CONFIG.yaml ...`` trains with DDP.
"""
from __future__ import annotations

import argparse
import sys

from .config import ConfigError, load_config


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

        from .config import config_to_dict

        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
        return 0
    from .train import train  # torch and open_clip load only when training

    result = train(cfg, resume=args.resume)
    if result.history:
        print(f"final loss {result.final_loss:.4f} after {result.steps} steps; model: {result.final_dir}")
    return 0


def eval_main(argv: list[str] | None = None) -> int:
    """Entry point of ``mmclip-eval`` (hard-negative accuracy of checkpoints)."""
    raise NotImplementedError("mmclip-eval is not implemented yet (issue 4, 'Evaluation')")


def ablate_main(argv: list[str] | None = None) -> int:
    """Entry point of ``mmclip-ablate`` (the paper's comparison of negative types)."""
    raise NotImplementedError("mmclip-ablate is not implemented yet (issue 4, 'Ablation')")


if __name__ == "__main__":
    sys.exit(train_main())
