import numpy as np

from longdoc.tasks import retrieve


def test_bm25_prefers_passage_with_query_terms_after_stemming():
    passages = ["The parties agree to arbitrate disputes.", "This Agreement is governed by the laws of Delaware.",
                "Payment is due within thirty days."]
    s = retrieve.lexical_scores(passages, ["governing law clause?", "when is payment due"])
    assert s.shape == (2, 3)
    assert s[0].argmax() == 1  # "governing" ~ "governed" through the stemmer
    assert s[1].argmax() == 2


def test_bm25_unknown_words_and_empty_corpus():
    assert retrieve.lexical_scores(["alpha beta"], ["zzz"]).tolist() == [[0.0]]
    assert retrieve.lexical_scores([], ["q"]).shape == (1, 0)


def test_bm25_corpus_of_stop_words_scores_zero():
    """A document of stop words and one-letter tokens leaves BM25 no vocabulary (bm25s raised on it)."""
    out = retrieve.lexical_scores(["To be or not to be.", "A B"], ["what is it?", "be"])
    assert out.shape == (2, 2) and not out.any()


def test_ranks_and_fusion():
    a = np.array([[3.0, 1.0, 2.0]])
    b = np.array([[0.0, 5.0, 4.0]])
    assert retrieve.ranks(a).tolist() == [[0, 2, 1]]
    fused = retrieve.rank_fusion(a, b, k=0)
    # passage 2 is second in both lists: 1/2 + 1/2 beats 1/1 + 1/3 for the others
    np.testing.assert_allclose(fused, [[1 + 1 / 3, 1 / 3 + 1, 0.5 + 0.5]])
    assert retrieve.top_k(np.array([[0.1, 0.9, 0.5]]), 2) == [[1, 2]]


def test_dense_scores_are_cosines():
    p = np.eye(3, dtype=np.float32)
    q = np.array([[0.0, 1.0, 0.0]], dtype=np.float32)
    assert retrieve.dense_scores(p, q).tolist() == [[0.0, 1.0, 0.0]]
