"""Tiny transformers CLIP and SigLIP directories, with tokenizers made on the spot (no downloads).

The configs are deliberately awkward: widths that are not powers of two, MLP ratios that are not
integers, projection widths that differ from both towers (so a transposed projection cannot load),
and for SigLIP a patch grid that does not tile the image (30 px / 7 px patches -> 4 x 4).
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import torch

# English geometry sentences without the symbols ∥ ⊥ ∠ △ ≅ ⊙ ° (SigLIP's vocabulary was learnt from English
# web text); a tokenizer trained on them maps those symbols to <unk>.
WORD_CORPUS = [
    "in the figure abcd is a square with side length 8",
    "ab is parallel to cd and ab is perpendicular to bc",
    "triangle abc is congruent to triangle def",
    "triangle abc is similar to triangle def",
    "angle abc measures 90 degrees and angle bcd measures 45 degrees",
    "circle o passes through a b and c",
    "point m is the midpoint of segment ab",
    "the diagonals ac and bd intersect at point o",
    "a photo of a square",
    "de is the altitude from d to ef and df is the median",
    "the radius of circle o is 5 and the length of ab is 12",
    "x y z w v u t s r q p n l k j i h g f e 0 1 2 3 4 5 6 7 8 9",
]


def siglip_tokenizer(directory: Path, vocab_size: int = 120) -> Path:
    """A SiglipTokenizer over a sentencepiece model trained on :data:`WORD_CORPUS` (ids laid out as SigLIP's)."""
    import sentencepiece as spm
    from transformers import SiglipTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(WORD_CORPUS * 4), model_writer=model, vocab_size=vocab_size, model_type="unigram",
        character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>",
        unk_piece="<unk>", minloglevel=2, hard_vocab_limit=False,
    )
    (directory / "spiece.model").write_bytes(model.getvalue())
    SiglipTokenizer(str(directory / "spiece.model"), model_max_length=16).save_pretrained(directory)
    return directory


def clip_tokenizer(directory: Path) -> Path:
    """A byte-level CLIPTokenizer with a handful of merges; ``<|endoftext|>`` is the largest id, as in OpenAI's."""
    from transformers import CLIPTokenizer
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    directory.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    merges = [("a", "b"), ("c", "d"), ("t", "h"), ("th", "e</w>"), ("i", "n</w>")]
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"), model_max_length=20).save_pretrained(directory)
    for name in ("vocab.json", "merges.txt"):  # save_pretrained wrote its own copies
        assert (directory / name).is_file()
    return directory


def clip_model_dir(directory: Path, *, legacy_eos: bool = True, act: str = "quick_gelu", seed: int = 0) -> Path:
    """A random tiny CLIPModel with tokenizer and image processor, saved as transformers does.

    ``legacy_eos``: the config's ``eos_token_id`` is 2 (transformers then pools at the largest token id,
    as for OpenAI's checkpoints); otherwise it is the tokenizer's real EOS id (first-EOS pooling).
    """
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    clip_tokenizer(directory)
    tok = CLIPTokenizer.from_pretrained(directory)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=40, intermediate_size=50, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=20, hidden_act=act,
                         eos_token_id=2 if legacy_eos else tok.eos_token_id, bos_token_id=tok.bos_token_id,
                         pad_token_id=tok.pad_token_id),
        vision_config=dict(hidden_size=36, intermediate_size=70, num_hidden_layers=2, num_attention_heads=3,
                           image_size=30, patch_size=6, hidden_act=act),
        projection_dim=20,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    with torch.no_grad():
        model.logit_scale.fill_(2.9)
    model.save_pretrained(directory, safe_serialization=True)
    CLIPImageProcessor(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30}).save_pretrained(directory)
    return directory


def siglip_model_dir(directory: Path, seed: int = 0) -> Path:
    """A random tiny SiglipModel (30 px images, 7 px patches: a 4 x 4 grid) with tokenizer and image processor."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipTokenizer

    siglip_tokenizer(directory)
    tok = SiglipTokenizer.from_pretrained(directory)
    config = SiglipConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=48, intermediate_size=70, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id),
        vision_config=dict(hidden_size=48, intermediate_size=90, num_hidden_layers=3, num_attention_heads=3,
                           image_size=30, patch_size=7),
    )
    torch.manual_seed(seed)
    model = SiglipModel(config).eval()
    with torch.no_grad():
        model.logit_scale.fill_(2.3)
        model.logit_bias.fill_(-4.0)
    model.save_pretrained(directory, safe_serialization=True)
    SiglipImageProcessor(size={"height": 30, "width": 30}).save_pretrained(directory)
    return directory
