"""Hard negatives that a text encoder cannot tell from their positive, because they tokenize the same.

SigLIP's tokenizer (and open_clip's ``canonicalize`` cleaning) deletes ASCII punctuation before
tokenizing, and a vocabulary learnt from English web text may have no piece for ∥ ⊥ ∠ △ ≅ ⊙ °, which
then all become the same unknown id: "AB ∥ CD" and "AB ⊥ CD" reach the text tower as the same ids,
and a contrastive loss is asked to score one text both as the positive and as a negative. Long
captions cut at the context length (64 tokens for SigLIP) collide the same way when they differ
only past the cut.

:func:`find_token_collisions` takes any ``encode(texts) -> id sequences`` (the model's own tokenizer
in ``mmclip-train``; :func:`load_tokenizer` here for ``mmgeolm-data build``) and reports every hard
negative whose ids equal its positive's, with what the two texts differ in. This module imports
neither torch nor transformers: :func:`load_tokenizer` reads a tokenizer file through the
``tokenizers`` or ``sentencepiece`` library, lazily.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import re
import string
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmgeolm_core.errors import InputError

Encode = Callable[[list[str]], list[Sequence[int]]]
CLEANERS = ("canonicalize", "lower", "whitespace", "none")
SENTENCEPIECE_FILES = ("spiece.model", "sentencepiece.bpe.model", "tokenizer.model")
MAX_EXAMPLES = 20
logger = logging.getLogger(__name__)
_PUNCTUATION = str.maketrans("", "", string.punctuation)


# --------------------------------------------------------------------------- the check
@dataclass(frozen=True)
class Collision:
    """One hard negative with the same token ids as its positive."""

    sample: str
    positive: str
    negative: str
    kind: str
    change: str
    cause: str = "unknown"

    def __str__(self) -> str:
        return f"{self.sample}: {self.kind} negative differs only in {self.change} ({self.cause}): {self.negative!r}"


@dataclass
class TokenCheckReport:
    """What :func:`find_token_collisions` found.

    Attributes:
        tokenizer: what tokenized (a path or a model name).
        samples: positives checked.
        negatives: hard negatives checked.
        collisions: the negatives whose ids equal their positive's.
        by_kind: collisions per negative kind.
        by_change: collisions per textual change (``'∥' -> '⊥'``), most frequent first.
    """

    tokenizer: str
    samples: int = 0
    negatives: int = 0
    collisions: list[Collision] = field(default_factory=list)

    @property
    def by_kind(self) -> dict[str, int]:
        return dict(Counter(c.kind for c in self.collisions).most_common())

    @property
    def by_change(self) -> dict[str, int]:
        return dict(Counter(c.change for c in self.collisions).most_common())

    @property
    def by_cause(self) -> dict[str, int]:
        return dict(Counter(c.cause for c in self.collisions).most_common())

    @property
    def affected_samples(self) -> int:
        return len({c.sample for c in self.collisions})

    def summary(self, examples: int = 3) -> str:
        """One paragraph: counts, the commonest changes and a few examples."""
        if not self.collisions:
            return (f"tokenization check ({self.tokenizer}): every one of {self.negatives} hard negatives of "
                    f"{self.samples} captions tokenizes differently from its positive")
        share = len(self.collisions) / max(1, self.negatives)
        changes = ", ".join(f"{change} ({n})" for change, n in list(self.by_change.items())[:5])
        lines = [f"tokenization check ({self.tokenizer}): {len(self.collisions)} of {self.negatives} hard negatives "
                 f"({share:.1%}, in {self.affected_samples} of {self.samples} captions) tokenize exactly like their "
                 f"positive, so the text tower cannot tell them apart; by kind {self.by_kind}; by cause {self.by_cause}; "
                 f"commonest changes: {changes}"]
        lines += [f"  e.g. {c.positive!r} vs {c.negative!r}" for c in self.collisions[:examples]]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (at most :data:`MAX_EXAMPLES` examples)."""
        return {
            "tokenizer": self.tokenizer, "samples": self.samples, "negatives": self.negatives,
            "collisions": len(self.collisions), "affected_samples": self.affected_samples, "by_kind": self.by_kind,
            "by_cause": self.by_cause, "by_change": self.by_change,
            "examples": [{"sample": c.sample, "positive": c.positive, "negative": c.negative, "kind": c.kind,
                          "change": c.change, "cause": c.cause} for c in self.collisions[:MAX_EXAMPLES]],
        }


def describe_change(positive: str, negative: str) -> str:
    """What ``negative`` changes in ``positive``, as ``'a' -> 'b'`` pieces (``'x' removed`` / ``'y' added``)."""
    parts = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, positive, negative, autojunk=False).get_opcodes():
        if op == "replace":
            parts.append(f"{positive[i1:i2]!r} -> {negative[j1:j2]!r}")
        elif op == "delete":
            parts.append(f"{positive[i1:i2]!r} removed")
        elif op == "insert":
            parts.append(f"{negative[j1:j2]!r} added")
    return "; ".join(parts) or "nothing (identical text)"


CUT = "cut at the context length"
CLEANED = "same ids after cleaning (punctuation, case, unknown symbols)"


def find_token_collisions(items: Iterable[tuple[str, str, Sequence[tuple[str, str]]]], encode: Encode,
                          tokenizer: str = "tokenizer", batch_size: int = 512,
                          encode_uncut: Encode | None = None) -> TokenCheckReport:
    """Report hard negatives whose token ids equal their positive's.

    Args:
        items: ``(sample id, positive caption, [(negative caption, kind), ...])``.
        encode: texts -> one id sequence per text (cleaning and truncation included, as the model sees them).
        tokenizer: named in the report.
        batch_size: texts per ``encode`` call.
        encode_uncut: the same tokenizer without the context-length cut; given, each collision says whether
            the texts differ only past the cut (:data:`CUT`) or not at all once tokenized (:data:`CLEANED`).
    """
    items = list(items)
    texts = list(dict.fromkeys(t for _, positive, negatives in items for t in [positive, *(n for n, _ in negatives)]))
    ids: dict[str, tuple] = {}
    for start in range(0, len(texts), batch_size):
        chunk = texts[start:start + batch_size]
        ids.update(zip(chunk, (tuple(row) for row in encode(chunk))))
    report = TokenCheckReport(tokenizer=tokenizer, samples=len(items))
    for sample, positive, negatives in items:
        for negative, kind in negatives:
            report.negatives += 1
            if negative != positive and ids[negative] == ids[positive]:
                report.collisions.append(Collision(sample, positive, negative, kind, describe_change(positive, negative)))
    if encode_uncut is not None and report.collisions:
        texts = list(dict.fromkeys(t for c in report.collisions for t in (c.positive, c.negative)))
        uncut = dict(zip(texts, (tuple(row) for row in encode_uncut(texts))))
        report.collisions = [dataclasses.replace(c, cause=CUT if uncut[c.positive] != uncut[c.negative] else CLEANED)
                             for c in report.collisions]
    return report


def items_from_samples(samples: Iterable[dict[str, Any]]) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """Check items of data-set samples (``samples.jsonl`` records): caption negatives and image negatives' captions."""
    out = []
    for sample in samples:
        negatives = [(t["caption"], t.get("kind", "text")) for t in sample.get("text_negatives", [])]
        seen = {caption for caption, _ in negatives}
        negatives += [(n["caption"], "image") for n in sample.get("negatives", []) if n.get("caption") and
                      n["caption"] not in seen]
        out.append((str(sample.get("id", "")), sample["caption"], negatives))
    return out


# --------------------------------------------------------------------------- tokenizers without torch
def clean_text(text: str, mode: str) -> str:
    """The text cleaning of open_clip's ``HFTokenizer`` / SigLIP's tokenizer (without ftfy's mojibake repair).

    ``canonicalize`` (SigLIP): delete ASCII punctuation, lowercase, collapse whitespace; ``lower``:
    lowercase and collapse whitespace; ``whitespace``: collapse whitespace; ``none``: as is.
    """
    if mode == "none":
        return text
    if mode == "canonicalize":
        text = text.replace("_", " ").translate(_PUNCTUATION).lower()
    elif mode == "lower":
        text = text.lower()
    elif mode != "whitespace":
        raise ValueError(f"text cleaning {mode!r}: expected one of {list(CLEANERS)}")
    return re.sub(r"\s+", " ", text).strip()


@dataclass
class FileTokenizer:
    """A tokenizer read from a file, torch-free: ``tokenizer.json`` (tokenizers) or a sentencepiece model.

    Attributes:
        path: the file.
        clean: the cleaning applied first (see :func:`clean_text`).
        context_length: ids are cut to this many, keeping the final end-of-text id (None: no cut).
        add_eos: append the sentencepiece model's end-of-text id (SigLIP does; tokenizer.json files add
            their own special tokens).
    """

    path: Path
    clean: str = "whitespace"
    context_length: int | None = None
    add_eos: bool = True

    def __post_init__(self) -> None:
        if self.clean not in CLEANERS:
            raise InputError(f"tokenizer cleaning {self.clean!r}: expected one of {list(CLEANERS)}")
        self._sp = self._hf = None
        try:
            if self.path.suffix == ".json":
                from tokenizers import Tokenizer

                self._hf = Tokenizer.from_file(str(self.path))
                self._hf.no_padding()
                if self.context_length:
                    self._hf.enable_truncation(self.context_length)
            else:
                import sentencepiece

                self._sp = sentencepiece.SentencePieceProcessor(model_file=str(self.path))
        except ImportError as exc:
            raise ImportError(f"reading {self.path} needs the '{exc.name}' package: pip install {exc.name}") from exc
        except Exception as exc:  # noqa: BLE001 - tokenizers and sentencepiece raise their own exception types
            raise InputError(f"{self.path}: not a readable tokenizer file ({exc})") from None

    def uncut(self, texts: list[str]) -> list[list[int]]:
        """Ids without the context-length cut."""
        length, self.context_length = self.context_length, None
        if self._hf is not None:
            self._hf.no_truncation()
        try:
            return self(texts)
        finally:
            self.context_length = length
            if self._hf is not None and length:
                self._hf.enable_truncation(length)

    def __call__(self, texts: list[str]) -> list[list[int]]:
        texts = [clean_text(t, self.clean) for t in texts]
        if self._hf is not None:
            return [e.ids for e in self._hf.encode_batch(texts)]
        eos = self._sp.eos_id()
        out = []
        for ids in self._sp.encode(texts):
            if self.add_eos and eos >= 0:
                ids = [*ids, eos]
            if self.context_length and len(ids) > self.context_length:
                ids = ids[: self.context_length - 1] + ids[-1:] if self.add_eos else ids[: self.context_length]
            out.append(ids)
        return out


def load_tokenizer(path: str | os.PathLike, clean: str | None = None, context_length: int | None = None) -> FileTokenizer:
    """A tokenizer for the check from a file or a transformers tokenizer directory.

    A directory is read as transformers writes it: ``tokenizer.json`` if present, else a sentencepiece
    model; its ``tokenizer_config.json`` gives the defaults: SigLIP's tokenizer cleans with
    ``canonicalize``, others with ``whitespace``; ``model_max_length`` is the context length.

    Raises:
        InputError: nothing readable at ``path`` (the message lists what was looked for).
    """
    path = Path(path).expanduser()
    config: dict[str, Any] = {}
    if path.is_dir():
        if (path / "tokenizer_config.json").is_file():
            try:
                config = json.loads((path / "tokenizer_config.json").read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise InputError(f"{path / 'tokenizer_config.json'}: not valid JSON ({exc})") from None
        siglip = str(config.get("tokenizer_class", "")).startswith("Siglip")
        candidates = (SENTENCEPIECE_FILES + ("tokenizer.json",)) if siglip else (("tokenizer.json",) + SENTENCEPIECE_FILES)
        found = [path / name for name in candidates if (path / name).is_file()]
        if not found:
            raise InputError(f"{path}: no tokenizer file; expected one of {', '.join(candidates)}")
        file = found[0]
    elif path.is_file():
        file, siglip = path, False
    else:
        raise InputError(f"tokenizer {path} does not exist; expected a tokenizer.json, a sentencepiece .model file or a "
                         f"transformers tokenizer directory")
    default_clean = "canonicalize" if siglip or (file.suffix == ".model" and not config) else "whitespace"
    length = context_length or config.get("model_max_length")
    if not isinstance(length, int) or length > 10**6:  # transformers writes a huge sentinel for "no limit"
        length = None
    return FileTokenizer(file, clean or default_clean, length, add_eos=file.suffix != ".json")


# --------------------------------------------------------------------------- mmgeolm-data check-tokens
def add_arguments(parser: Any) -> None:
    """Arguments of ``mmgeolm-data check-tokens``."""
    parser.add_argument("dataset", type=Path, help="a data-set directory built by mmgeolm-data build (samples.jsonl)")
    parser.add_argument("--tokenizer", required=True, type=Path,
                        help="tokenizer.json, a sentencepiece .model, or a transformers tokenizer directory")
    parser.add_argument("--clean", choices=CLEANERS, default=None, help="text cleaning (default: the tokenizer's own)")
    parser.add_argument("--context-length", type=int, default=None, help="cut ids here (default: the tokenizer's)")
    parser.add_argument("--out", type=Path, default=None, help="also write the report as JSON")


def run_cli(args: Any) -> int:
    """Run ``mmgeolm-data check-tokens``: print the report; 0 whether or not negatives collide.

    Records that the data-set format refuses are skipped, counted in the report (``bad_records``) and listed.
    """
    from data_recipes.formats.dataset import read_samples_report
    from mmgeolm_core.io import atomic_write_json, check_output_file

    if args.out:
        check_output_file(args.out)
    samples, problems = read_samples_report(args.dataset)
    if not samples:
        raise InputError(f"{args.dataset}: no valid sample to check" + (f": {problems[0]}" if problems else ""))
    tokenizer = load_tokenizer(args.tokenizer, args.clean, args.context_length)
    report = find_token_collisions(items_from_samples(samples), tokenizer, tokenizer=str(args.tokenizer),
                                   encode_uncut=tokenizer.uncut)
    print(report.summary(examples=5))
    for problem in problems[:5]:
        logger.warning("skipped: %s", problem)
    if problems:
        logger.warning("skipped %d record(s) that the data-set format refuses (listed in the report's bad_records)",
                       len(problems))
    if args.out:
        atomic_write_json(args.out, {**report.to_dict(), "bad_records": len(problems),
                                     "bad_record_details": [str(p) for p in problems]})
    return 0
