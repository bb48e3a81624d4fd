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
    <run>/report/                  report.md, report.html and their figures
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STAGE_NAMES = (
    "data", "mmclip", "ablation", "eval", "llava_data", "llava_stage1", "llava_stage2", "answers", "bench", "report",
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

    @property
    def report(self) -> Path:
        return self.stage("report")
