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
