"""Where everything of a pipeline run lives: the stage names and the paths of their outputs.

The pipeline writes these paths and the report reads them; both take them from here::

    <run>/recipe.yaml              the resolved recipe
    <run>/<stage>/                 each stage's folder: stage.log, DONE.json and its outputs
    <run>/data/dataset/            the data set (samples.jsonl, images/, manifest.json, ...)
    <run>/mmclip/{init,final}/     MMCLIP's starting and trained weights, metrics.jsonl
    <run>/llava_data/              stage1.json, stage2.json, questions.jsonl, llm/ (a tiny LLM)
    <run>/llava_stage{1,2}/model/  the LLaVA checkpoints
    <run>/answers/                 answers.jsonl, score.json
    <run>/bench/<name>/            predictions, results and scores of each benchmark
    <run>/e2e/                     probe/, <row>/seed_<s>/{llava_stage1,llava_stage2,probe}/, e2e.json
    <run>/report/                  report.md, report.html and their figures
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STAGE_NAMES = (
    "data", "mmclip", "ablation", "eval", "llava_data", "llava_stage1", "llava_stage2", "answers", "bench", "e2e",
    "report",
)
DONE_FILE = "DONE.json"
LOG_FILE = "stage.log"


@dataclass(frozen=True)
class RunLayout:
    """The files of one run directory."""

    root: Path

    def stage(self, name: str) -> Path:
        """The folder of stage ``name``."""
        if name not in STAGE_NAMES:
            raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}")
        return self.root / name

    def done(self, name: str) -> Path:
        return self.stage(name) / DONE_FILE

    @property
    def recipe(self) -> Path:
        return self.root / "recipe.yaml"

    @property
    def dataset(self) -> Path:
        return self.stage("data") / "dataset"

    @property
    def mmclip(self) -> Path:
        return self.stage("mmclip")

    @property
    def eval_json(self) -> Path:
        return self.stage("eval") / "eval.json"

    @property
    def eval_png(self) -> Path:
        return self.stage("eval") / "eval.png"

    @property
    def ablation(self) -> Path:
        return self.stage("ablation")

    @property
    def llava_data(self) -> Path:
        return self.stage("llava_data")

    @property
    def tiny_llm(self) -> Path:
        return self.llava_data / "llm"

    @property
    def questions(self) -> Path:
        return self.llava_data / "questions.jsonl"

    def llava_model(self, stage: int) -> Path:
        """The checkpoint of LLaVA stage 1 or 2."""
        return self.stage(f"llava_stage{stage}") / "model"

    @property
    def answers(self) -> Path:
        return self.stage("answers")

    @property
    def bench(self) -> Path:
        return self.stage("bench")

    def ablation_encoder(self, arm: str, seed: int) -> Path:
        """The encoder ablation arm ``arm`` trained for ``seed`` (``no_finetune``: the arms' common start)."""
        if arm == "no_finetune":
            pretrained = self.ablation / "pretrain" / "train" / "final"
            return pretrained if pretrained.is_dir() else self.ablation / "init" / f"seed_{seed}"
        return self.ablation / "arms" / arm / f"seed_{seed}" / "train" / "final"

    @property
    def e2e(self) -> Path:
        return self.stage("e2e")

    @property
    def e2e_probe(self) -> Path:
        return self.e2e / "probe"

    def e2e_run(self, row: str, seed: int) -> Path:
        """The folder of one end-to-end run: LLaVA stages 1 and 2 with ``row``'s tower, and its probe answers."""
        return self.e2e / row / f"seed_{seed}"

    @property
    def e2e_json(self) -> Path:
        return self.e2e / "e2e.json"

    @property
    def report(self) -> Path:
        return self.stage("report")

    @property
    def summary(self) -> Path:
        """``report/summary.json``: the headline figures, every one computed from the run's files."""
        return self.report / "summary.json"
