"""Our training extensions without a training run: extra args, tower lr groups, CPU-safe save, env, attention."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from llava_fixtures import build_mmclip_checkpoint

from llava_patches import train_mem
from llava_patches.args import ExtraArguments, parse_extra_args
from llava_patches.register import registered
from llava_patches.save import make_cpu_safe_save
from llava_patches.train import single_process_env, training_patches

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- extra arguments
@pytest.mark.parametrize(
    ("argv", "unfreeze", "lr"),
    [
        ([], False, None),
        (["--unfreeze_mm_vision_tower", "True"], True, None),
        (["--unfreeze_mm_vision_tower"], True, None),
        (["--unfreeze_mm_vision_tower=false"], False, None),
        (["--unfreeze_mm_vision_tower", "1", "--mm_vision_tower_lr", "2e-6"], True, 2e-6),
        (["--unfreeze_mm_vision_tower=yes", "--mm_vision_tower_lr=1e-5"], True, 1e-5),
    ],
)
def test_extra_args_are_taken_out_and_the_rest_kept_in_order(argv, unfreeze, lr):
    upstream = ["--model_name_or_path", "m", "--bf16", "True", "--learning_rate", "2e-5"]
    extra, rest = parse_extra_args(upstream[:2] + argv + upstream[2:])
    assert extra == ExtraArguments(unfreeze_mm_vision_tower=unfreeze, mm_vision_tower_lr=lr)
    assert rest == upstream


def test_prefixes_of_upstream_flags_are_never_taken_for_ours():
    _, rest = parse_extra_args(["--unfreeze", "True", "--mm_vision", "x"])
    assert rest == ["--unfreeze", "True", "--mm_vision", "x"]


@pytest.mark.parametrize(
    ("argv", "error", "match"),
    [
        (["--mm_vision_tower_lr", "1e-5"], ValueError, "without --unfreeze_mm_vision_tower"),
        (["--unfreeze_mm_vision_tower", "True", "--mm_vision_tower_lr", "-1"], ValueError, "positive"),
        (["--unfreeze_mm_vision_tower", "True", "--mm_vision_tower_lr", "nan"], ValueError, "positive"),
        (["--unfreeze_mm_vision_tower", "maybe"], SystemExit, None),
    ],
)
def test_bad_extra_args_fail_clearly(argv, error, match, capsys):
    with pytest.raises(error, match=match):
        parse_extra_args(argv)


# ----------------------------------------------------------------------------- environment helpers
def test_single_process_env_only_for_launcherless_deepspeed():
    env: dict[str, str] = {}
    assert not single_process_env(["--output_dir", "x"], env) and env == {}
    assert single_process_env(["--deepspeed", "zero2.json"], env)
    assert env["LOCAL_RANK"] == "0" and env["WORLD_SIZE"] == "1" and int(env["MASTER_PORT"]) > 0
    launched = {"LOCAL_RANK": "3"}
    assert not single_process_env(["--deepspeed=zero2.json"], launched) and launched == {"LOCAL_RANK": "3"}


@pytest.mark.parametrize(("flash", "cuda", "expected"), [(True, True, "flash_attention_2"), (True, False, "sdpa"), (False, True, "sdpa"), (False, False, "sdpa")])
def test_train_mem_asks_for_flash_attention_only_when_usable(monkeypatch, flash, cuda, expected):
    monkeypatch.setattr(train_mem, "is_flash_attn_available", lambda: flash)
    monkeypatch.setattr(train_mem.torch.cuda, "is_available", lambda: cuda)
    assert train_mem.select_attn_implementation() == expected


# ----------------------------------------------------------------------------- CPU-safe final save
class _Recorder:
    def __init__(self, deepspeed: bool, adapter_only: bool):
        self.deepspeed = object() if deepspeed else None
        self.args = SimpleNamespace(tune_mm_mlp_adapter=adapter_only)
        self.saved: list[str] = []

    def save_model(self, output_dir: str) -> None:
        self.saved.append(output_dir)


@pytest.mark.parametrize(("deepspeed", "adapter_only"), [(True, False), (False, False), (True, True)])
def test_cpu_safe_save_skips_cuda_synchronize_only_where_upstream_would_call_it(deepspeed, adapter_only):
    import llava.train.train as upstream

    calls = []
    wrapped = make_cpu_safe_save(lambda trainer, output_dir: calls.append(output_dir))
    trainer = _Recorder(deepspeed, adapter_only)
    wrapped(trainer, "out")
    on_cpu_deepspeed = deepspeed and not adapter_only and not torch.cuda.is_available()
    assert trainer.saved == (["out"] if on_cpu_deepspeed else [])
    assert calls == ([] if on_cpu_deepspeed else ["out"])
    assert upstream.safe_save_model_for_hf_trainer.__module__ == "llava.train.train"


# ----------------------------------------------------------------------------- the trainer subclass
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return build_mmclip_checkpoint(tmp_path_factory.mktemp("trainer") / "mmclip")


@pytest.fixture
def tiny_llava(checkpoint):
    """A fresh tiny LLaVA with an MMCLIP tower, set up the way upstream ``train()`` leaves it."""
    from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM

    config = LlavaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    model_args = SimpleNamespace(
        vision_tower=f"mmclip:{checkpoint}", mm_vision_select_layer=-2, mm_vision_select_feature="patch",
        pretrain_mm_mlp_adapter=None, mm_patch_merge_type="flat", mm_projector_type="mlp2x_gelu",
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlavaLlamaForCausalLM(config)
    with registered():
        model.get_model().initialize_vision_modules(model_args)
    model.get_vision_tower().to(dtype=torch.float16)  # what upstream train() does on CPU
    return model


def _trainer(model, tmp_path: Path, extra: ExtraArguments, **args):
    import llava.train.train as upstream

    training_args = upstream.TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to="none", learning_rate=1e-4, weight_decay=0.1, **args
    )
    with training_patches(extra):
        trainer_cls = upstream.LLaVATrainer
        assert trainer_cls.__name__ == "MMCLIPLLaVATrainer"
        return trainer_cls(model=model, args=training_args)


def test_frozen_tower_is_left_alone(tiny_llava, tmp_path):
    trainer = _trainer(tiny_llava, tmp_path, ExtraArguments())
    optimizer = trainer.create_optimizer()
    tower_ids = {id(p) for p in tiny_llava.get_vision_tower().parameters()}
    assert not any(id(p) in tower_ids for g in optimizer.param_groups for p in g["params"])
    assert tiny_llava.get_vision_tower().dtype == torch.float16


def test_unfrozen_tower_gets_its_own_lr_groups_and_every_parameter_appears_once(tiny_llava, tmp_path):
    trainer = _trainer(tiny_llava, tmp_path, ExtraArguments(unfreeze_mm_vision_tower=True, mm_vision_tower_lr=3e-6))
    tower = tiny_llava.get_vision_tower()
    assert tower.dtype == torch.float32, "a trained tower takes the LLM's parameter dtype"
    optimizer = trainer.create_optimizer()
    seen = [id(p) for g in optimizer.param_groups for p in g["params"]]
    trainable = [id(p) for p in tiny_llava.parameters() if p.requires_grad]
    assert sorted(seen) == sorted(trainable), "each trainable parameter in exactly one group"
    tower_ids = {id(p) for p in tower.parameters()}
    assert tower_ids <= set(seen)
    for group in optimizer.param_groups:
        in_tower = {id(p) in tower_ids for p in group["params"]}
        assert len(in_tower) == 1, "a group mixes tower and non-tower parameters"
        assert group["lr"] == (3e-6 if in_tower == {True} else 1e-4)
    decays = {g["weight_decay"] for g in optimizer.param_groups if id(g["params"][0]) in tower_ids}
    assert decays == {0.0, 0.1}


@pytest.mark.parametrize(("flag", "match"), [("tune_mm_mlp_adapter", "stage 1"), ("lora_enable", "lora_enable")])
def test_unfreezing_where_the_tower_could_not_be_saved_is_refused(tiny_llava, tmp_path, flag, match):
    import llava.train.train as upstream

    training_args = upstream.TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    setattr(training_args, flag, True)
    with training_patches(ExtraArguments(unfreeze_mm_vision_tower=True)):
        with pytest.raises(ValueError, match=match):
            upstream.LLaVATrainer(model=tiny_llava, args=training_args)
    assert upstream.LLaVATrainer.__name__ == "LLaVATrainer", "patches must be undone on leaving the block"


def test_zero_configs_are_valid_and_left_to_the_trainer():
    for stage in (2, 3):
        cfg = json.loads((ROOT / "llava_patches" / "zero_configs" / f"zero{stage}.json").read_text())
        assert cfg["zero_optimization"]["stage"] == stage
        assert cfg["train_micro_batch_size_per_gpu"] == "auto" and "optimizer" not in cfg


# ----------------------------------------------------------------------------- launch scripts
SCRIPT_ENV = {"MODEL": "base-llm", "VISION_TOWER": "mmclip:/ckpt", "PROJECTOR": "stage1/mm_projector.bin",
              "DATA": "data.json", "IMAGE_FOLDER": "images", "OUTPUT": "out", "DRY_RUN": "1"}  # fmt: skip


def _dry_run(script: str, env: dict[str, str], *args: str):
    import os
    import shlex
    import subprocess

    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / script), *args], env={"PATH": os.environ["PATH"], **env},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return proc, (shlex.split(proc.stdout) if proc.returncode == 0 else [])


def _flag(cmd: list[str], name: str) -> str:
    return cmd[len(cmd) - 1 - cmd[::-1].index(name) + 1]  # the last occurrence wins, as in argparse


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("pretrain.sh", {"--version": "plain", "--tune_mm_mlp_adapter": "True", "--learning_rate": "1e-3",
                         "--mm_projector_type": "mlp2x_gelu", "--mm_vision_select_layer": "-2",
                         "--per_device_train_batch_size": "32", "--vision_tower": "mmclip:/ckpt"}),
        ("finetune.sh", {"--version": "v1", "--learning_rate": "2e-5", "--pretrain_mm_mlp_adapter": "stage1/mm_projector.bin",
                         "--image_aspect_ratio": "pad", "--per_device_train_batch_size": "16",
                         "--unfreeze_mm_vision_tower": "False", "--vision_tower": "mmclip:/ckpt"}),
    ],
)  # fmt: skip
def test_scripts_mirror_llava_1_5_and_pass_extra_args_last(script, expected):
    proc, cmd = _dry_run(script, SCRIPT_ENV, "--max_steps", "3", "--learning_rate", "5e-4")
    assert proc.returncode == 0, proc.stderr
    assert cmd[:3] == ["deepspeed", "--module", "llava_patches.train_mem"]
    for name, value in expected.items():
        if name != "--learning_rate":
            assert _flag(cmd, name) == value, name
    assert cmd.count("--learning_rate") == 2 and _flag(cmd, "--learning_rate") == "5e-4"
    zero = Path(_flag(cmd, "--deepspeed"))
    assert zero.is_file() and zero.name == ("zero2.json" if script == "pretrain.sh" else "zero3.json")
    from llava_patches.args import parse_extra_args

    parse_extra_args(cmd[3:])  # our parser accepts what the scripts pass


def test_finetune_script_options_for_zero2_and_a_trained_tower():
    env = {**SCRIPT_ENV, "ZERO": "zero2", "UNFREEZE_TOWER": "True", "TOWER_LR": "2e-6", "LAUNCHER": "torchrun -m"}
    proc, cmd = _dry_run("finetune.sh", env)
    assert proc.returncode == 0, proc.stderr
    assert cmd[:3] == ["torchrun", "-m", "llava_patches.train_mem"]
    assert Path(_flag(cmd, "--deepspeed")).name == "zero2.json"
    extra, _ = parse_extra_args(cmd[3:])
    assert extra == ExtraArguments(unfreeze_mm_vision_tower=True, mm_vision_tower_lr=2e-6)


@pytest.mark.parametrize("missing", ["MODEL", "VISION_TOWER", "DATA", "OUTPUT"])
def test_scripts_name_a_missing_variable(missing):
    env = {k: v for k, v in SCRIPT_ENV.items() if k != missing}
    for script in ("pretrain.sh", "finetune.sh"):
        proc, _ = _dry_run(script, env)
        assert proc.returncode != 0 and missing in proc.stderr, proc.stderr


def test_unfreezing_needs_an_mmclip_tower():
    from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM

    from llava_patches.trainer import unfreeze_tower

    config = LlavaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    with pytest.raises(ValueError, match="needs a loaded MMCLIP tower.*NoneType"):
        unfreeze_tower(LlavaLlamaForCausalLM(config))
