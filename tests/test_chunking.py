"""Chunking rules: headings are hard boundaries, paragraphs packed, long ones split with overlap."""

from __future__ import annotations

from knowledge.ingest.chunking import chunk_sections, count_tokens
from knowledge.ingest.parsers import Section


def words(prefix: str, n: int) -> str:
    return " ".join(f"{prefix}{i}" for i in range(n))


def shared_words(previous: str, current: str) -> int:
    """How many of previous's last words start current."""
    before, after = previous.split(), current.split()
    return max((k for k in range(1, min(len(before), len(after)) + 1) if before[-k:] == after[:k]), default=0)


def overlap_text(previous, current) -> str:
    return " ".join(current.text.split()[: shared_words(previous.text, current.text)])


def test_token_count_counts_words_and_punctuation():
    assert count_tokens("Hello, world!") == 4
    assert count_tokens("") == 0


def test_chunks_never_cross_heading_boundaries_and_positions_are_sequential():
    sections = [
        Section(["Returns"], "Short intro."),
        Section(["Returns", "Labels"], "Print the label.\n\nDrop the parcel."),
        Section(["Refunds"], "Refunds take a week."),
    ]
    drafts = chunk_sections(sections, max_tokens=100, overlap_tokens=10)
    assert [(d.heading_path, d.text) for d in drafts] == [
        ("Returns", "Short intro."),
        ("Returns > Labels", "Print the label.\n\nDrop the parcel."),  # small paragraphs packed together
        ("Refunds", "Refunds take a week."),
    ]
    assert [d.position for d in drafts] == [0, 1, 2]
    assert [d.token_count for d in drafts] == [count_tokens(d.text) for d in drafts]


def test_paragraphs_are_packed_up_to_the_budget_and_never_split_when_they_fit():
    paragraphs = [words(f"p{n}w", 30) for n in range(5)]  # 5 paragraphs of 30 tokens
    drafts = chunk_sections([Section(["A"], "\n\n".join(paragraphs))], max_tokens=70, overlap_tokens=0)
    assert [d.text for d in drafts] == [
        paragraphs[0] + "\n\n" + paragraphs[1],
        paragraphs[2] + "\n\n" + paragraphs[3],
        paragraphs[4],
    ]
    assert all(d.token_count <= 70 for d in drafts)


def test_long_paragraph_is_split_at_sentences_with_overlap():
    sentences = [f"Sentence {n} {words('w', 12)}." for n in range(10)]  # 16 tokens each
    paragraph = " ".join(sentences)
    drafts = chunk_sections([Section(["Policy"], paragraph, page=4)], max_tokens=50, overlap_tokens=8)
    assert len(drafts) > 3
    assert all(d.token_count <= 50 for d in drafts)
    assert all(d.page == 4 and d.heading_path == "Policy" for d in drafts)
    # Every sentence is whole in some chunk: splits happen at sentence ends.
    for sentence in sentences:
        assert any(sentence in d.text for d in drafts)
    # Consecutive chunks overlap: the next one starts with the previous one's last words.
    for previous, current in zip(drafts, drafts[1:], strict=False):
        assert 0 < shared_words(previous.text, current.text) and count_tokens(overlap_text(previous, current)) <= 8
    assert drafts[0].text.startswith("Sentence 0")


def test_sentence_longer_than_budget_is_split_by_words():
    text = words("x", 120)  # one 120-token "sentence"
    drafts = chunk_sections([Section([], text)], max_tokens=40, overlap_tokens=10)
    assert all(d.token_count <= 40 for d in drafts)
    # All words kept in order; pieces overlap by up to 10 tokens.
    seen = []
    for d in drafts:
        for w in d.text.split():
            if not seen or int(w[1:]) > int(seen[-1][1:]):
                seen.append(w)
    assert seen == text.split()
    overlap = set(drafts[0].text.split()) & set(drafts[1].text.split())
    assert 0 < len(overlap) <= 10


def test_overlap_is_dropped_rather_than_exceeding_the_budget():
    big = words("a", 45)
    drafts = chunk_sections([Section([], f"{big}\n\n{words('b', 45)}")], max_tokens=50, overlap_tokens=10)
    assert [d.text for d in drafts] == [big, words("b", 45)]


def test_empty_sections_make_no_chunks():
    assert chunk_sections([Section(["Empty"], "   ")], max_tokens=50, overlap_tokens=5) == []


def test_a_ten_megabyte_word_is_split_into_chunks_that_fit_the_budget():
    drafts = chunk_sections([Section([], "a" * 1_000_000)], 200, 40)
    assert len(drafts) > 1000
    assert all(d.token_count <= 200 for d in drafts)
    assert "".join(d.text for d in drafts) == "a" * 1_000_000  # split, nothing lost or added


def test_a_long_word_among_words_keeps_the_words_whole():
    text = "Before words. " + "x" * 5000 + " after words here."
    drafts = chunk_sections([Section([], text)], 50, 10)
    assert all(d.token_count <= 50 for d in drafts)
    assert drafts[0].text.startswith("Before words.") and drafts[-1].text.endswith("after words here.")


def test_chinese_counts_a_token_per_character_and_splits_at_its_sentence_ends():
    sentence = "我下个月去日本，在那边用手机流量怎么收费？"
    assert count_tokens(sentence) == 21  # 19 characters and two marks, not one "word"
    drafts = chunk_sections([Section([], sentence * 40)], 100, 20)
    assert len(drafts) > 1 and all(d.token_count <= 100 for d in drafts)
    assert all(d.text.endswith("？") for d in drafts)  # cut between sentences, not inside one


def test_ordinary_long_words_still_count_one():
    assert count_tokens("Internationalisation accessibility") == 2
    assert count_tokens("a" * 25) == 7  # past LONG_RUN_CHARS: one per four characters
