"""``benchmarks/gpu_check.py --tiny``: the GPU check's code paths on the CPU, and its JSON contract.

The device check runs where no test runs (a lent GPU machine, one call); this runs the same script
end to end on tiny configs, so it cannot rot meanwhile. No timing is asserted: only that every figure
is there, finite and consistent.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _check_losses(record: dict) -> None:
    assert len(record["losses"]) == 3 and all(math.isfinite(v) for v in record["losses"])
    assert record["loss_finite"] is True
    assert record["loss_falling"] is True, record["losses"]  # same batch every step: training must lower it


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("gpu-check") / "gpu_check.json"
    # --peak-tflops: a nominal peak, so that the MFU path runs on the CPU too
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--peak-tflops", "1",
                           "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(out.read_text()), proc.stdout


def test_meta_says_how_the_figures_were_taken(tiny: tuple[dict, str]) -> None:
    report, stdout = tiny
    assert set(report) == {"meta", "goals", "errors", "mmclip", "tower", "llava"} and report["errors"] == {}
    m = report["meta"]
    assert m["tiny"] is True and m["cuda"] is None and m["timer"] == "time.perf_counter"
    assert (m["warmup_steps"], m["timed_repeats"], m["precision"], m["peak_tflops"]) == (1, 3, "bf16", 1.0)
    assert all(m["versions"][d] for d in ("torch", "transformers", "open_clip_torch", "llava-torch"))
    assert _positive(m["matmul_tflops"]) and set(m["section_seconds"]) == {"mmclip", "tower", "llava"}
    assert "CPU figures" in stdout and "| goal | value | target | met |" in stdout


def test_mmclip_steps_flops_and_bf16_check(tiny: tuple[dict, str]) -> None:
    r = tiny[0]["mmclip"]
    f = r["flops"]
    # the analytic count equals what torch's flop counter sees: all of it on CUDA, all but attention on the CPU
    for key in ("image_forward", "text_forward"):
        assert f["counted"][key] in (f[key], f[key] - f[f"{key}_attention"]), key
    assert set(r["runs"]) == {"checkpointing", "no_checkpointing"}
    for key, setting in r["runs"].items():
        assert setting["grad_checkpointing"] == (key == "checkpointing")
        assert (setting["captions"], setting["images_per_step"], setting["texts_per_step"]) == (2, 8, {"ours": 2, "clip": 8})
        assert set(setting["variants"]) == {"ours", "clip"}
        for name, record in setting["variants"].items():
            assert record["status"] == "ok"
            assert _positive(record["step_s"]) and len(record["step_s_all"]) == 3
            assert record["images_per_s"] == pytest.approx(8 / record["step_s"])
            texts = setting["texts_per_step"][name]
            assert record["flops_per_step"] == 3 * (8 * f["image_forward"] + texts * f["text_forward"])
            assert record["mfu"] == pytest.approx(record["flops_per_step"] / record["step_s"] / 1e12)
            assert record["peak_memory_bytes"] is None  # the CPU has no allocator counter
            _check_losses(record)
        assert _positive(r["ratios"][key]["images_per_s"]) and r["ratios"][key]["peak_memory"] is None
    b = r["bf16_vs_fp32"]
    assert math.isfinite(b["loss_bf16"]) and math.isfinite(b["loss_fp32"]) and b["loss_bf16"] != b["loss_fp32"]
    assert b["rel_diff"] == pytest.approx(abs(b["loss_bf16"] - b["loss_fp32"]) / abs(b["loss_fp32"]))
    assert b["within_tolerance"] is True and b["tolerance_rel"] == 0.02


def test_tower_forward_matches_upstream(tiny: tuple[dict, str]) -> None:
    t = tiny[0]["tower"]
    assert (t["batch"], t["select_layer"], t["select_feature"], t["dtype"]) == (4, -2, "patch", "bf16")
    assert _positive(t["ours_images_per_s"]) and _positive(t["upstream_images_per_s"])
    assert t["ratios"]["images_per_s"] == pytest.approx(t["ours_images_per_s"] / t["upstream_images_per_s"])
    assert t["rel_feature_diff"] < 1e-2  # same weights; bf16 on both sides


def test_llava_step_with_each_tower(tiny: tuple[dict, str]) -> None:
    r = tiny[0]["llava"]
    assert (r["llm"], r["attn_implementation"], r["batch"], r["seq_len"]) == ("llama", "sdpa", 2, 48)
    assert r["tokens_per_step"] == 96 and r["image_tokens"] == 16
    ours, upstream = r["runs"]["ours"], r["runs"]["upstream"]
    assert (ours["tower_class"], upstream["tower_class"]) == ("MMCLIPVisionTower", "CLIPVisionTower")
    for record in (ours, upstream):
        assert record["status"] == "ok" and record["attention_class"] == "LlamaSdpaAttention"
        assert _positive(record["tokens_per_s"]) and record["llm_parameters"] == ours["llm_parameters"]
        _check_losses(record)
    # the same LLM, projector and tower weights: the two models train alike
    assert ours["losses"] == pytest.approx(upstream["losses"], rel=1e-2)
    assert _positive(r["ratios"]["tokens_per_s"]) and r["ratios"]["peak_memory"] is None


def test_goals_list_every_ratio_with_its_target(tiny: tuple[dict, str]) -> None:
    goals = {g["path"]: g for g in tiny[0]["goals"]}
    assert goals["tower.ratios.images_per_s"]["goal"] == ">= 1"
    assert goals["llava.ratios.tokens_per_s"]["goal"] == ">= 0.97"
    assert goals["mmclip.runs.checkpointing.variants.ours.mfu"]["goal"] == ">= 0.35"
    for g in goals.values():
        if g["path"].endswith("peak_memory"):
            assert g["value"] is None and g["met"] is None
        else:
            assert _positive(g["value"]) and g["met"] in (True, False)
