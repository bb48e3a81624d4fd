"""The stages from a recipe to MMGeoLM, as subprocess commands over one run directory.

    data -> mmclip -> [ablation] -> eval -> llava_data -> llava_stage1 -> llava_stage2 -> answers -> report

Each stage writes into ``<run>/<stage>/``; :mod:`mmgeolm.stages` runs them, skips finished ones and
re-runs an interrupted one (whose own command resumes).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import yaml

from llava_patches.tiny_llm import is_tiny_llm
from mmgeolm.recipe import LlavaStage, PipelineRecipe
from mmgeolm.stages import Stage, python_module

STAGE_NAMES = (
    "data", "mmclip", "ablation", "eval", "llava_data", "llava_stage1", "llava_stage2", "answers", "report",
)


def dataset_dir(run: Path) -> Path:
    """Where the data stage builds the data set (its stage folder also holds the log and DONE marker)."""
    return run / "data" / "dataset"


def starting_model(recipe: PipelineRecipe) -> str:
    """``mmclip-eval``'s name for the weights MMCLIP training started from: ``none:<model>[:<pretrained>]``.

    Read from the MMCLIP config and its ``model.name`` / ``model.pretrained`` overrides, so the evaluation
    compares the trained encoder with the very encoder it was fine-tuned from.
    """
    config = yaml.safe_load(Path(recipe.mmclip.config).read_text()) or {}
    model = dict(config.get("model") or {})
    for override in recipe.mmclip.overrides:
        key, _, value = override.partition("=")
        if key in ("model.name", "model.pretrained"):
            model[key.split(".")[1]] = yaml.safe_load(value)
    if not model.get("name"):
        raise ValueError(f"{recipe.mmclip.config}: key 'model.name' is missing; expected an open_clip model name")
    pretrained = model.get("pretrained")
    return f"none:{model['name']}" + (f":{pretrained}" if pretrained else "")


def _console(name: str) -> str:
    """A console script of this environment (next to the running interpreter), else from PATH."""
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else (shutil.which(name) or name)


def _llava_train_args(recipe: PipelineRecipe, run: Path, stage: LlavaStage, out: Path, stage1: bool) -> list[str]:
    llava = recipe.llava
    args = [
        "--model_name_or_path", str(run / "llava_data" / "llm") if is_tiny_llm(llava.llm) else llava.llm,
        "--data_path", str(run / "llava_data" / ("stage1.json" if stage1 else "stage2.json")),
        "--image_folder", str(dataset_dir(run)),
        "--vision_tower", f"mmclip:{run / 'mmclip' / 'final'}",
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
        "--dataloader_num_workers", "0",
        "--report_to", "none",
        "--save_strategy", "no",
        "--seed", str(recipe.seed),
    ]
    if stage1:
        args += ["--version", "plain", "--tune_mm_mlp_adapter", "True"]
    else:
        args += ["--version", llava.version,
                 "--pretrain_mm_mlp_adapter", str(run / "llava_stage1" / "model" / "mm_projector.bin")]
    if stage.deepspeed or llava.deepspeed:
        args += ["--deepspeed", stage.deepspeed or llava.deepspeed]
    cpu = is_tiny_llm(llava.llm)
    args += ["--bf16", "False", "--fp16", "False", "--use_cpu", "True"] if cpu else ["--bf16", "True"]
    return args + llava.extra_args + stage.extra_args


def build_stages(recipe: PipelineRecipe, run: Path) -> list[Stage]:
    """The pipeline's stages for ``recipe`` writing under ``run``."""
    run = run.resolve()
    data_dir, mmclip_dir = dataset_dir(run), run / "mmclip"

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
        return [[_console("mmclip-ablate"), recipe.ablation.recipe, "--out", str(folder)]]

    def evaluate(folder: Path) -> list[list[str]]:
        return [[_console("mmclip-eval"), "--checkpoint", str(mmclip_dir / "final"), starting_model(recipe),
                 "--data", str(data_dir), "--split", "val", "--out", str(folder / "eval.json"),
                 "--plot", str(folder / "eval.png")]]

    def llava_data(folder: Path) -> list[list[str]]:
        cmds = [python_module("mmgeolm.tasks", "llava-data", "--data", data_dir, "--out", folder,
                              "--num-questions", recipe.questions.num, "--seed", recipe.seed)]
        if is_tiny_llm(recipe.llava.llm):
            cmds.append(python_module("llava_patches.tiny_llm", "--model", recipe.llava.llm, "--corpus",
                                      folder / "stage1.json", folder / "stage2.json", "--out", folder / "llm",
                                      "--seed", recipe.seed))
        return cmds

    def llava_stage(stage: LlavaStage, stage1: bool):
        def commands(folder: Path) -> list[list[str]]:
            args = _llava_train_args(recipe, run, stage, folder / "model", stage1)
            if recipe.llava.launcher:
                return [[*recipe.llava.launcher, recipe.llava.entry, *args]]
            return [python_module(recipe.llava.entry, *args)]
        return commands

    def answers(folder: Path) -> list[list[str]]:
        return [python_module("llava_patches.answer_questions", "--model-path", run / "llava_stage2" / "model",
                              "--questions", run / "llava_data" / "questions.jsonl", "--image-folder", data_dir,
                              "--out", folder, "--conv-mode", recipe.llava.version,
                              "--max-new-tokens", recipe.questions.max_new_tokens)]

    def report(folder: Path) -> list[list[str]]:
        return [python_module("mmgeolm.report", run)]

    llava_on = recipe.llava.enabled
    return [
        Stage("data", data),
        Stage("mmclip", mmclip),
        Stage("ablation", ablation, enabled=recipe.ablation.enabled),
        Stage("eval", evaluate, enabled=recipe.eval.enabled),
        Stage("llava_data", llava_data, enabled=llava_on),
        Stage("llava_stage1", llava_stage(recipe.llava.stage1, True), enabled=llava_on),
        Stage("llava_stage2", llava_stage(recipe.llava.stage2, False), enabled=llava_on),
        Stage("answers", answers, enabled=llava_on),
        Stage("report", report),
    ]
