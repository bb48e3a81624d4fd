"""Shared test set-up: headless matplotlib, few threads (CI has 2 cores), quiet warnings."""
import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

try:
    import torch

    torch.set_num_threads(min(2, torch.get_num_threads()))
except ImportError:  # data_recipes tests run without torch
    pass

try:
    from hypothesis import settings

    # Property tests draw the same examples on every run: CI never fails on a draw nobody can reproduce.
    # `pytest --hypothesis-profile=explore` searches afresh.
    settings.register_profile("ci", derandomize=True)
    settings.register_profile("explore", derandomize=False, max_examples=1000)
    settings.load_profile("ci")
except ImportError:
    pass


# --------------------------------------------------------------------------- a tiny Qwen2 LLaVA's parts
# Module-scoped: each test module that asks for them gets its own (built on the fly, no downloads).
import pytest  # noqa: E402


@pytest.fixture(scope="module")
def qwen_root(tmp_path_factory):
    return tmp_path_factory.mktemp("qwen")


@pytest.fixture(scope="module")
def qwen_dir(qwen_root):
    from llava_fixtures import build_tiny_qwen2

    return build_tiny_qwen2(qwen_root / "tiny-qwen2")


@pytest.fixture(scope="module")
def qwen_tokenizer(qwen_dir):
    # the slow tokenizer, as upstream train() and load_pretrained_model ask for it
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(qwen_dir), use_fast=False, model_max_length=512)


@pytest.fixture(scope="module")
def qwen_data(qwen_root):
    from llava_fixtures import build_diagram_dataset

    return build_diagram_dataset(qwen_root / "data", n=6, turns=(1, 2, 3))
