"""The stages from a recipe to MMGeoLM, as subprocess commands over one run directory.

    data -> [mmclip] -> [ablation] -> [eval] -> llava_data -> llava_stage1 -> llava_stage2 -> answers -> [bench]
         -> [e2e] -> report

LLaVA's tower is the mmclip stage's encoder, or an ablation arm's (``llava.tower: ablation:<arm>``); the
``e2e`` stage (:mod:`mmgeolm.e2e`) repeats the LLaVA stages with three towers and several seeds.

Each stage writes into ``<run>/<stage>/``; :mod:`mmgeolm.stages` runs them, skips finished ones and
re-runs an interrupted one (whose own command resumes).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from llava_patches.tiny_llm import is_tiny_llm
from mmgeolm.recipe import ABLATION_TOWER, LlavaStage, PipelineRecipe
from mmgeolm.run_layout import STAGE_NAMES, RunLayout
from mmgeolm.stages import Stage, python_module

__all__ = ["STAGE_NAMES", "bench_commands", "build_stages", "llava_tower", "llava_train_args"]


def _console(name: str) -> str:
    """A console script of this environment (next to the running interpreter), else from PATH."""
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else (shutil.which(name) or name)


def llava_tower(recipe: PipelineRecipe, run: RunLayout) -> Path:
    """The encoder the main LLaVA chain uses: the mmclip stage's, or ``llava.tower``'s ablation arm for the run's seed."""
    tower = recipe.llava.tower
    if tower.startswith(ABLATION_TOWER):
        return run.ablation_encoder(tower[len(ABLATION_TOWER):], recipe.seed)
    return run.mmclip / "final"


def llava_train_args(recipe: PipelineRecipe, run: RunLayout, stage: LlavaStage, out: Path, stage1: bool,
                     tower: Path | None = None, seed: int | None = None, projector: Path | None = None) -> list[str]:
    """upstream ``train()``'s arguments for LLaVA stage 1 or 2 of ``recipe``.

    Args:
        recipe: the pipeline recipe (LLM, template, stage settings).
        run: the run's layout (LLM, LLaVA data, data set).
        stage: the stage's settings.
        out: the checkpoint directory to write.
        stage1: projector pretraining (True) or instruction tuning (False).
        tower: the MMCLIP encoder (default: :func:`llava_tower`).
        seed: the training seed (default: the recipe's).
        projector: stage 2's pretrained projector (default: the main chain's stage 1).
    """
    llava = recipe.llava
    tower = llava_tower(recipe, run) if tower is None else tower
    seed = recipe.seed if seed is None else seed
    projector = run.llava_model(1) / "mm_projector.bin" if projector is None else projector
    args = [
        "--model_name_or_path", str(run.tiny_llm) if is_tiny_llm(llava.llm) else llava.llm,
        "--data_path", str(run.llava_data / ("stage1.json" if stage1 else "stage2.json")),
        "--image_folder", str(run.dataset),
        "--vision_tower", f"mmclip:{tower}",
        "--mm_projector_type", "mlp2x_gelu",
        "--mm_vision_select_layer", "-2",
        "--mm_use_im_start_end", "False",
        "--mm_use_im_patch_token", "False",
        "--image_aspect_ratio", "pad",
        "--output_dir", str(out),
        "--max_steps", str(stage.max_steps),
        "--num_train_epochs", str(stage.epochs),
        "--per_device_train_batch_size", str(stage.batch_size),
        "--gradient_accumulation_steps", str(stage.grad_accum),
        "--learning_rate", str(stage.learning_rate),
        "--weight_decay", "0.0",
        "--warmup_ratio", "0.03",
        "--lr_scheduler_type", "cosine",
        "--logging_steps", "1",
        "--model_max_length", str(llava.max_length),
        "--lazy_preprocess", "True",
        "--dataloader_num_workers", str(llava.dataloader_workers),
        "--report_to", "none",
        "--save_strategy", "no",
        "--seed", str(seed),
    ]
    if stage1:
        args += ["--version", "plain", "--tune_mm_mlp_adapter", "True"]
    else:
        args += ["--version", llava.version, "--pretrain_mm_mlp_adapter", str(projector)]
    if stage.deepspeed or llava.deepspeed:
        args += ["--deepspeed", stage.deepspeed or llava.deepspeed]
    cpu = is_tiny_llm(llava.llm)
    args += ["--bf16", "False", "--fp16", "False", "--use_cpu", "True"] if cpu else ["--bf16", "True"]
    return args + llava.extra_args + stage.extra_args


def llava_command(recipe: PipelineRecipe, args: list[str]) -> list[str]:
    """The argv running the recipe's LLaVA entry point (under its launcher, if any) with ``args``."""
    if recipe.llava.launcher:
        return [*recipe.llava.launcher, recipe.llava.entry, *args]
    return python_module(recipe.llava.entry, *args)


def bench_commands(recipe: PipelineRecipe, run: RunLayout, folder: Path) -> list[list[str]]:
    """``mmgeolm-bench generate`` then ``score`` for every benchmark the recipe names (the probe made first
    when it is given as a number of pairs); each writes into ``<run>/bench/<name>/``."""
    cfg, cmds = recipe.bench, []
    for name, value in cfg.selected().items():
        questions = Path(str(value))
        if name == "probe" and isinstance(value, int):
            questions = folder / "probe-set"
            cmds.append([_console("mmgeolm-data"), "probe-set", "--out", str(questions), "--num", str(value),
                         "--seed", str(recipe.seed), "--size", str(cfg.probe_size), "-q"])
        out = folder / name
        cmds.append([_console("mmgeolm-bench"), "generate", name, "--model-path", str(run.llava_model(2)),
                     "--questions", str(questions), "--out", str(out), "--conv-mode", recipe.llava.version,
                     "--batch-size", str(cfg.batch_size), "--max-new-tokens", str(cfg.max_new_tokens),
                     "--prompt", cfg.prompt])
        cmds.append([_console("mmgeolm-bench"), "score", name, "--questions", str(questions), "--predictions",
                     str(out / "predictions.jsonl"), "--out", str(out), "--mode", cfg.mode, "-q"])
    return cmds


def build_stages(recipe: PipelineRecipe, run: Path) -> list[Stage]:
    """The pipeline's stages for ``recipe`` writing under ``run``."""
    run = RunLayout(run.resolve())
    data_dir, mmclip_dir = run.dataset, run.mmclip

    def data(folder: Path) -> list[list[str]]:
        cmd = [_console("mmgeolm-data"), "build", recipe.data.recipe, "--out", str(data_dir),
               "--workers", str(recipe.data.workers), "--seed", str(recipe.seed)]
        if recipe.data.num:
            cmd += ["--num", str(recipe.data.num)]
        return [cmd]

    def mmclip(folder: Path) -> list[list[str]]:
        launch = [*recipe.mmclip.launcher, "mmclip_plugin.cli"] if recipe.mmclip.launcher else [_console("mmclip-train")]
        cmd = [*launch, recipe.mmclip.config, f"data.train={data_dir}",
               f"output_dir={mmclip_dir}", f"seed={recipe.seed}", *recipe.mmclip.overrides]
        if any((mmclip_dir / "checkpoints").glob("step_*")):
            cmd += ["--resume", "latest"]
        return [cmd]

    def ablation(folder: Path) -> list[list[str]]:
        # the run's own data set: the towers LLaVA takes from here have seen its train split only
        cmd = [_console("mmclip-ablate"), recipe.ablation.recipe, "--out", str(folder), "--data", str(data_dir),
               "--no-progress", "--jobs", str(recipe.ablation.jobs)]
        if recipe.ablation.arms:
            cmd += ["--arms", *recipe.ablation.arms]
        if recipe.ablation.seeds:
            cmd += ["--seeds", *map(str, recipe.ablation.seeds)]
        return [cmd]

    def evaluate(folder: Path) -> list[list[str]]:
        # the trained encoder beside the very weights its training started from (mmclip-train saved them)
        return [[_console("mmclip-eval"), "--checkpoint", str(mmclip_dir / "final"), str(mmclip_dir / "init"),
                 "--data", str(data_dir), "--split", "val", "--out", str(folder / "eval.json"),
                 "--plot", str(folder / "eval.png")]]

    def llava_data(folder: Path) -> list[list[str]]:
        cmds = [[_console("mmgeolm-data"), "llava-data", "--data", str(data_dir), "--out", str(folder),
                 "--num-questions", str(recipe.questions.num), "--seed", str(recipe.seed),
                 "--stage2", recipe.llava.stage2_data]]
        if is_tiny_llm(recipe.llava.llm):
            cmds.append(python_module("llava_patches.tiny_llm", "--model", recipe.llava.llm, "--corpus",
                                      folder / "stage1.json", folder / "stage2.json", "--out", run.tiny_llm,
                                      "--seed", recipe.seed))
        return cmds

    def llava_stage(stage: LlavaStage, stage1: bool):
        def commands(folder: Path) -> list[list[str]]:
            return [llava_command(recipe, llava_train_args(recipe, run, stage, folder / "model", stage1))]
        return commands

    def answers(folder: Path) -> list[list[str]]:
        return [python_module("llava_patches.answer_questions", "--model-path", run.llava_model(2),
                              "--questions", run.questions, "--image-folder", data_dir,
                              "--out", folder, "--conv-mode", recipe.llava.version,
                              "--max-new-tokens", recipe.questions.max_new_tokens)]

    def bench(folder: Path) -> list[list[str]]:
        return bench_commands(recipe, run, folder)

    def e2e(folder: Path) -> list[list[str]]:
        from mmgeolm.e2e import e2e_commands

        return e2e_commands(recipe, run)

    def report(folder: Path) -> list[list[str]]:
        return [python_module("mmgeolm.report", run.root)]

    llava_on = recipe.llava.enabled
    return [
        Stage("data", data),
        Stage("mmclip", mmclip, enabled=recipe.mmclip.enabled),
        Stage("ablation", ablation, enabled=recipe.ablation.enabled),
        Stage("eval", evaluate, enabled=recipe.eval.enabled),
        Stage("llava_data", llava_data, enabled=llava_on),
        Stage("llava_stage1", llava_stage(recipe.llava.stage1, True), enabled=llava_on),
        Stage("llava_stage2", llava_stage(recipe.llava.stage2, False), enabled=llava_on),
        Stage("answers", answers, enabled=llava_on),
        Stage("bench", bench, enabled=llava_on and bool(recipe.bench.selected())),
        Stage("e2e", e2e, enabled=llava_on and recipe.e2e.enabled),
        Stage("report", report),
    ]
