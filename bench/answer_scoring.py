"""How bench/answers.py judges one answer: the fact, a refusal, its language, its citations and its readability.

Each judge looks only at the answer's text, the question and the passages the answer was given, never at how the
answerer works, so the same judge holds an extractive answer and an LLM's alike; and none names a corpus's words,
products or codes, so it holds on a help centre nobody has seen.

**Readability** (issue 18: "one focused answer"). Three checks, each defined on the *tables of the passages*:

* A passage's **tables** are found in its text two ways. A *separated* table is a run of at least two lines that
  start with ``|`` or hold `` | `` (Markdown, and parsers that keep cell separators; blank lines and ``|---|``
  rules inside it are skipped); its first line is the header, each cell a column name, every further line a row of
  cells. A *plain* table is what a table becomes when a parser (PDF, some HTML) keeps its lines but loses the cell
  boundaries: a header line of 2–10 words with no digit, followed (blank lines skipped) by at least two row lines
  of at most 30 words, the first of them with a digit (so a title above the header is not taken for it), where no
  line has a sentence end mark, a list or heading marker or a lower-case start (the rest of a hard-wrapped
  sentence); its column names and each row's cells are then their words.
* A row is **shown** in a paragraph of the answer (text between blank lines, citation markers and emphasis
  removed, case ignored) when every cell of it occurs there as a whole phrase (not inside a longer word or number),
  in the row's order. How the answer lays it out ("Plan: Team — Price: €8", a Markdown table, label: value
  lines) does not matter.
* **glued table header**: one sentence or line of the answer holds a table's column names run together (the
  header's cells with nothing but spaces between them, as a header line that lost its separators reads) and
  also shows a row of that table: "Limit Basic Plus Metal: ATM withdrawals per day €300 €600 €1,200" leaves the
  reader to guess which figure is whose. A header laid out beside its values ("Basic: €300; Plus: €600") or above
  its rows in a Markdown table is not glued.
* **extra table rows**: a question that asks one value from a table (kind ``table`` in the question sets) is
  answered with more than one distinct row shown (rows with the same cells count once).
* **more than two articles**: the answer's citations ``[n]`` point at passages of more than two distinct
  documents (counted by citations: an answer that cites nothing counts none).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bench.answer_questions import Question

#: Refusals in the languages of the set, for generators whose final event does not say so itself (an LLM).
DECLINE_PATTERN = re.compile(
    r"could(?:n't| not) find|can(?:'t|not) find|no information|not (?:in|covered by) the knowledge base"
    r"|do(?:n't| not) (?:know|have (?:any )?information)|找不到|没有找到|未找到|没有相关|无法找到"
    r"|keine informationen|nichts gefunden|nicht gefunden|rien trouvé|aucune information|pas trouvé"
    r"|no (?:he |hemos )?encontr|no tengo información",
    re.IGNORECASE,
)
_CITATION = re.compile(r"\s*\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
_SENTENCE = re.compile(r"(?<=[.!?。！？])\s+|(?<=[。！？])")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+•]|\d{1,2}[.)])\s+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*|\d+(?:[.,:]\d+)*", re.UNICODE)
#: A sentence that ends on one of these words was cut mid-way ("…no deliveries on Sundays or [1]."). With its
#: full stop, a sentence may end on a preposition ("the address you registered with."): those count only when
#: the sentence has no end mark.
_DANGLING = frozenset("a an and or but nor the your our their its if that which who whose is are was be".split())
_DANGLING_UNENDED = _DANGLING | frozenset("to of for with on in at by from than as".split())
_TERMINAL = tuple(".!?:;。！？：；…)\"'”’*|")
_STOP = {
    "en": "the and is are you your to of for it in on can do does how what my i we our with be this that not".split(),
    "de": "der die das und ist sind ich mein meine sie wie was kann nicht mit für ein eine zu den im auf es".split(),
    "fr": "le la les et est sont je mon ma vous comment que peux pas avec pour un une des du de au en il".split(),
    "es": "el la los las y es son yo mi usted cómo qué puedo no con para un una del de en se lo por".split(),
}


def detect_language(text: str) -> str:
    """'zh' for Chinese script, else the Latin-script language with most of its function words (default en)."""
    letters = [c for c in text if c.isalpha()]
    if letters and len(_CJK.findall(text)) / len(letters) >= 0.3:
        return "zh"
    words = [w.lower() for w in _WORD.findall(text)]
    counts = {lang: sum(w in stop for w in words) for lang, stop in _STOP.items()}
    best = max(counts, key=counts.get)
    return best if counts[best] > counts["en"] else "en"


def sentences_of(text: str) -> list[str]:
    """The answer's sentences and list items, citation markers kept."""
    pieces = []
    for line in text.splitlines():
        line = line.strip()
        if not line or set(line) <= set("|-: "):
            continue
        pieces.extend(p.strip() for p in _SENTENCE.split(line) if p.strip())
    return pieces


def _normal(text: str) -> str:
    return " ".join(_CITATION.sub("", text).split()).strip()


def is_fragment(sentence: str) -> bool:
    """Cut mid-way: no end, a dangling last word, a lower-case start (Latin script), or a bare heading mark."""
    plain = _normal(sentence)
    if not plain or plain.startswith("#"):
        return bool(plain)
    is_item = bool(_LIST_ITEM.match(plain)) or plain.startswith("|")
    body = _LIST_ITEM.sub("", plain)
    words = _WORD.findall(body)
    ended = body.endswith(_TERMINAL)
    if words and words[-1].lower() in (_DANGLING if ended else _DANGLING_UNENDED):
        return True
    if is_item:
        return False
    if not body.endswith(_TERMINAL):
        return True
    first = body.lstrip("\"'“(*_")[:1]
    return first.isalpha() and first.islower() and not _CJK.match(first)


def _content_tokens(text: str) -> set[str]:
    tokens = {w.lower() for w in _WORD.findall(text)}
    return {t for t in tokens if t[0].isdigit() or (len(t) > 2 and t not in _STOP["en"])}


def citation_pairs(text: str, passages: list[str]) -> tuple[int, int]:
    """(cited (sentence, source) pairs, pairs whose source holds >= 60 % of the sentence's content words).

    A sentence in another script than its source (an LLM translating) is checked on its numbers and
    Latin-script words; a pair with nothing checkable is not counted.
    """
    pairs = supported = 0
    for sentence in sentences_of(text):
        numbers = [int(n) for m in _CITATION.finditer(sentence) for n in m.group(1).split(",")]
        claim = _content_tokens(_normal(sentence))
        if not numbers or not claim:
            continue
        for n in numbers:
            pairs += 1
            if 1 <= n <= len(passages):
                source = _content_tokens(passages[n - 1])
                if len(claim & source) / len(claim) >= 0.6:
                    supported += 1
    return pairs, supported


def own_words(text: str, passages: list[str]) -> str:
    """The answer minus the sentences it quotes from its passages: what the answerer wrote itself."""
    quoted = " ".join(" ".join(p.split()) for p in passages).lower()
    mine = [s for s in sentences_of(text) if _normal(_LIST_ITEM.sub("", s)).lower().rstrip(".") not in quoted]
    return " ".join(mine)


# --- readability ------------------------------------------------------------------------------------------

_SEPARATED = re.compile(r"^\||\s\|\s")
_RULE = re.compile(r"^\|?[\s|:-]*-{2,}[\s|:-]*$")
_END_MARK = re.compile(r"[.!?:;。！？：；]\W*$")
_HEADING = re.compile(r"^\s*#{1,6}\s")
_EMPHASIS = re.compile(r"[*_`]+")


@dataclass(frozen=True)
class Table:
    """A table of a passage: its column names and its rows, each row as its cells (see the module docstring)."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def _cells(line: str) -> tuple[str, ...]:
    return tuple(c for c in (" ".join(cell.split()) for cell in line.strip().strip("|").split("|")) if c)


def _plain_line(line: str, max_words: int) -> bool:
    """Could be a line of a table that lost its separators: short, no sentence end, not a list item or heading,
    and not the rest of a wrapped sentence (a lower-case start)."""
    return (
        0 < len(line.split()) <= max_words
        and not _END_MARK.search(line.rstrip(")"))
        and not _LIST_ITEM.match(line)
        and not _HEADING.match(line)
        and not line[:1].islower()
    )


def _plain_header(line: str) -> bool:
    return _plain_line(line, 10) and len(line.split()) >= 2 and not re.search(r"\d", line)


def tables_in(passage: str) -> list[Table]:
    """The passage's separated and plain tables, in order."""
    lines = [line.strip() for line in passage.splitlines()]
    found: list[Table] = []
    i = 0
    while i < len(lines):
        if _SEPARATED.search(lines[i]):
            block = []
            while i < len(lines) and (not lines[i] or _SEPARATED.search(lines[i])):
                if lines[i] and not _RULE.match(lines[i]) and _cells(lines[i]):
                    block.append(_cells(lines[i]))
                i += 1
            if len(block) >= 2:
                found.append(Table(block[0], tuple(block[1:])))
            continue
        if _plain_header(lines[i]):
            j, rows = i + 1, []
            while j < len(lines) and (not lines[j] or _plain_line(lines[j], 30)):
                if lines[j]:
                    rows.append(tuple(lines[j].split()))
                j += 1
            if len(rows) >= 2 and re.search(r"\d", " ".join(rows[0])):
                found.append(Table(tuple(lines[i].split()), tuple(rows)))
                i = j
                continue
        i += 1
    return found


def _plain_text(text: str) -> str:
    return " ".join(_EMPHASIS.sub("", _CITATION.sub("", text)).lower().split())


def _phrase(phrase: str) -> re.Pattern:
    return re.compile(r"(?<!\w)" + re.escape(_plain_text(phrase)) + r"(?!\w)")


def _in_order(phrases: tuple[str, ...], text: str) -> bool:
    """Every phrase occurs whole in ``text`` (already plain), each after the one before."""
    at = 0
    for phrase in phrases:
        if not _plain_text(phrase):
            continue  # a cell of emphasis marks only
        match = _phrase(phrase).search(text, at)
        if match is None:
            return False
        at = match.end()
    return True


def _paragraphs(text: str) -> list[str]:
    return [_plain_text(p) for p in re.split(r"\n\s*\n", text) if p.strip()]


def rows_shown(text: str, passages: list[str]) -> set[tuple[str, ...]]:
    """The distinct table rows of the passages that a paragraph of the answer shows whole."""
    paragraphs = _paragraphs(text)
    return {
        row
        for passage in passages
        for table in tables_in(passage)
        for row in table.rows
        if len(row) >= 2 and any(_in_order(row, paragraph) for paragraph in paragraphs)
    }


def glued_headers(text: str, passages: list[str]) -> list[str]:
    """The answer's sentences that hold a table's header run together with one of its rows."""
    tables = [t for passage in passages for t in tables_in(passage) if len(t.header) >= 2]
    glued = []
    for sentence in sentences_of(text):
        plain = _plain_text(sentence)
        for table in tables:
            if _phrase(" ".join(table.header)).search(plain) and any(_in_order(row, plain) for row in table.rows):
                glued.append(sentence)
                break
    return glued


def cited_articles(text: str, passage_sources: list[str]) -> set[str]:
    """The documents of the passages the answer cites (``[n]`` is the n-th passage)."""
    numbers = {int(n) for m in _CITATION.finditer(text) for n in m.group(1).split(",")}
    return {passage_sources[n - 1] for n in numbers if 1 <= n <= len(passage_sources)}


# --- one answer -------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    question: Question
    text: str
    declined: bool
    fact_ok: bool
    fragments: list[str]
    cited_pairs: int
    supported_pairs: int
    language: str
    first_source: str | None
    retrieved: list[str]
    searched_as: str | None
    cpu_ms: float
    first_token_ms: float
    glued: list[str] = field(default_factory=list)
    rows: int = 0
    articles: int = 0
    #: The question is about an article in another language than most of its knowledge base (set by evaluate()).
    about_other_language: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def correct(self) -> bool:
        return self.declined if self.question.decline else self.fact_ok

    @property
    def language_ok(self) -> bool:
        return self.language == self.question.lang

    @property
    def extra_rows(self) -> bool:
        """More than one table row shown where the question asks one value from a table."""
        return self.question.kind == "table" and self.rows > 1

    @property
    def unreadable(self) -> list[str]:
        """The readability checks this answer fails (the module docstring defines them)."""
        return [
            name
            for name, failed in (
                ("glued table header", bool(self.glued)),
                (f"{self.rows} table rows", self.extra_rows),
                (f"{self.articles} articles", self.articles > 2),
            )
            if failed
        ]


def score(question: Question, final: Any, sources: list[dict], passages: list[str], cpu_ms: float) -> Outcome:
    """One answer against its question (``final``: the pipeline's FinalEvent; ``passages``: the texts of the
    passages in the trace's order, which is what ``[n]`` cites)."""
    text = final.text
    declined = bool(getattr(final, "offer_handoff", False)) or bool(DECLINE_PATTERN.search(text))
    fact_ok = (
        not declined
        and question.expect is not None
        and re.search(question.expect, text, re.IGNORECASE | re.DOTALL) is not None
    )
    pairs, supported = citation_pairs(text, passages)
    mine = own_words(text, passages) or text
    trace = final.trace or {}
    passage_sources = [p.get("source") or p.get("title") or "" for p in trace.get("passages", [])]
    return Outcome(
        question=question,
        text=text,
        declined=declined,
        fact_ok=fact_ok,
        fragments=[s for s in sentences_of(text) if is_fragment(s)],
        cited_pairs=pairs,
        supported_pairs=supported,
        language=detect_language(mine),
        first_source=sources[0]["source"] if sources else None,
        retrieved=[s["source"] for s in sources],
        searched_as=trace.get("rewritten_query"),
        cpu_ms=cpu_ms,
        first_token_ms=float((final.timings or {}).get("first_token_ms", 0.0)),
        glued=glued_headers(text, passages),
        rows=len(rows_shown(text, passages)),
        articles=len(cited_articles(text, passage_sources)),
        extra={
            "answer": trace.get("answer") or {},
            "top_passage_similarity": max(
                (p.get("vector_score") or 0.0 for p in trace.get("passages", [])), default=0.0
            ),
        },  # fmt: skip
    )
