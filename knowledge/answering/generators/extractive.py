"""The offline default generator: answers with the knowledge base's own sentences, each cited."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from django.conf import settings
from django.utils.translation import gettext

from knowledge import cross_lingual, sentence_vectors
from knowledge.answering import curated, near_misses, rows
from knowledge.answering.followups import previous_question
from knowledge.answering.generators import Composition, ToolOffer
from knowledge.answering.scoring import INTENTS, Question, Scored, document_priors, score_units, terms
from knowledge.embeddings import BACKENDS
from knowledge.inference import answer_work, query_vector
from knowledge.language import detect as detect_language
from knowledge.retrieval import document_passages
from knowledge.sentences import ROW, STEP

#: The English source strings (tests and docs); what the customer gets is ``nothing_found()``, translated.
NOTHING_FOUND = "I couldn't find anything about that in the knowledge base. Would you like to talk to a person?"
MAX_STEPS = 8
_POINTER = re.compile(r"\bsee\s+[\"'“‘]([^\"'”’]{3,80})[\"'”’]", re.IGNORECASE)
_WORDS = re.compile(r"\S+\s*")
_STOPWORDS = frozenset(
    "a an and are as at be but by can could do does for from have how i if in is it its me my "
    "of on or our please should so that the their them then there these they this those to was "
    "we what when where which who why will with would you your about any".split()
)


async def pace_words(text: str, words_per_second: float) -> AsyncIterator[str]:
    """Yield ``text`` word by word (each word with its following whitespace) at a steady pace; 0 = no delay."""
    interval = 1.0 / words_per_second if words_per_second > 0 else 0.0
    start = time.monotonic()
    for i, word in enumerate(_WORDS.findall(text)):
        if interval:
            # Deadline-based so small sleep overshoots do not add up over a long answer.
            await asyncio.sleep(max(0.0, start + i * interval - time.monotonic()))
        else:
            await asyncio.sleep(0)  # still a cancellation point between tokens
        yield word


def nothing_found() -> str:
    """The refusal, in the active language (``knowledge.language`` picks it per question)."""
    return gettext(
        "I couldn't find anything about that in the knowledge base. Would you like to talk to a person?"
    )


def lead_in() -> str:
    return gettext("Here is what the knowledge base says:")


def key_terms(text: str) -> list[str]:
    """Content words of a question, in order, without repeats."""
    seen: list[str] = []
    for word in re.findall(r"[\w'-]+", text.lower()):
        if word not in _STOPWORDS and len(word) > 1 and word not in seen:
            seen.append(word)
    return seen


def min_similarity(question: str, passage_language: str) -> float:
    """The similarity below which nothing answers: ``ANSWER_MIN_SIMILARITY`` (or its cross-lingual twin when the
    question and the best passage are in different languages), else the embedding model's calibrated values
    (``embeddings.BACKENDS``). Similarities are on the reference language's scale (``knowledge.cross_lingual``);
    a question and a passage in two languages still match less closely than in one, hence two thresholds."""
    asked, written = detect_language(question), passage_language or None
    cross = asked is not None and written is not None and asked != written
    configured = settings.ANSWER_MIN_SIMILARITY_CROSS_LINGUAL if cross else settings.ANSWER_MIN_SIMILARITY
    if configured is not None:
        return configured
    backend = BACKENDS.get(settings.EMBEDDING_BACKEND)
    if backend is None:
        return 0.0
    return backend.cross_lingual_min_similarity if cross else backend.min_similarity


def _candidates(passages: Sequence[Any], shifts: dict[str, float]) -> list[Scored]:
    """Every unit of the passages once (overlapping chunks repeat sentences), with its stored vector and its
    passage's language shift (``cross_lingual.shifts``)."""
    stored = sentence_vectors.for_chunks([p.chunk_id for p in passages])
    candidates: list[Scored] = []
    seen: set[str] = set()
    for n, passage in enumerate(passages, start=1):
        found = stored.get(passage.chunk_id)
        if found is None:
            continue  # deleted since it was retrieved
        for position, (unit, vector) in enumerate(zip(found.units, found.vectors, strict=True)):
            key = unit.text.lower()
            if key not in seen:
                seen.add(key)
                candidates.append(
                    Scored(n, passage.document_id, position, unit, vector, shift=shifts.get(passage.language, 0.0))
                )
    return candidates


def _documents(ranked: list[Scored], question: Question) -> list[int]:
    """The document of the best unit, and a second one only if its best unit is nearly as good and adds
    something: asked terms the first document lacks, or another figure of the kind asked (express at home
    and abroad: the customer sees both prices, each with its source)."""
    primary = ranked[0].document
    chosen = [primary]
    covered = {t for c in ranked if c.document == primary for t in question.terms if t in terms(c.unit.text)}
    for candidate in ranked[1:]:
        if candidate.document in chosen:
            continue
        adds = {t for t in question.terms if t in terms(candidate.unit.text)} - covered
        other_figure = bool(question.intents & _FIGURES) and _figures(candidate) - _figures(ranked[0])
        if candidate.score >= SECOND_DOCUMENT_SHARE * ranked[0].score and (adds or other_figure):
            chosen.append(candidate.document)
        break  # only the best unit of the runner-up document is considered
    return chosen


#: A second document's best unit must score at least this share of the best unit's.
SECOND_DOCUMENT_SHARE = 0.75
_FIGURES = frozenset({"price", "duration", "time"})


def _figures(candidate: Scored) -> set[str]:
    """The amounts of the kind asked a unit states (only units that answer the asked kind count)."""
    if not any(candidate.reasons.get(kind) for kind in _FIGURES):
        return set()
    return set(re.findall(r"\d+(?:[.,]\d+)?", candidate.unit.text))


def _follow_pointer(pick: Scored, ranked: list[Scored], passages: Sequence[Any]) -> Scored | None:
    """For 'see "Missing or damaged parcel"': the best unit of that passage, when it was retrieved."""
    match = _POINTER.search(pick.unit.text)
    if not match:
        return None
    target = match.group(1).strip().lower()
    for candidate in ranked:
        passage = passages[candidate.n - 1]
        names = f"{passage.title} {passage.heading}".lower()
        if candidate is not pick and target in names and not _POINTER.search(candidate.unit.text):
            return candidate
    return None


def _same_words(a: Scored, b: Scored) -> bool:
    """Near-duplicates by their words (vectors of one model's table rows are all alike)."""
    left, right = terms(a.unit.text), terms(b.unit.text)
    return bool(left and right) and len(left & right) / len(left | right) > 0.8


def _steps(pick: Scored, candidates: list[Scored]) -> list[Scored]:
    """All steps of the procedure ``pick`` belongs to, in order."""
    return [c for c in candidates if c.n == pick.n and c.unit.block == pick.unit.block and c.unit.kind == STEP][
        :MAX_STEPS
    ]


def _render(chosen: list[Scored]) -> str:
    """Sources in order of their best unit; each source's units in passage order; steps as a numbered list."""
    order: list[int] = []
    for c in chosen:
        if c.n not in order:
            order.append(c.n)
    paragraphs: list[str] = []
    for n in order:
        units_of_n = sorted((c for c in chosen if c.n == n), key=lambda c: c.position)
        numbered = sum(c.unit.kind == STEP for c in units_of_n) > 1  # one step alone is just a sentence
        prose: list[str] = []
        step = 0
        for c in units_of_n:
            if c.unit.kind == STEP and numbered:
                if prose:
                    paragraphs.append(" ".join(prose))
                    prose = []
                step += 1
                paragraphs.append(f"{step}. {_with_marker(c.quote or c.unit.text, n)}")
            else:
                prose.append(_with_marker(c.quote or c.unit.text, n))
        if prose:
            paragraphs.append(" ".join(prose))
    # consecutive steps form one list (single line breaks), the rest are paragraphs
    text = ""
    for paragraph in paragraphs:
        if text:
            text += "\n" if paragraph[:1].isdigit() and text.rsplit("\n", 1)[-1][:1].isdigit() else "\n\n"
        text += paragraph
    return text


def _with_marker(sentence: str, n: int) -> str:
    """'Do X.' -> 'Do X [1].' — the marker sits inside the sentence it supports."""
    sentence = sentence.rstrip()
    if sentence and sentence[-1] in ".!?:;。！？":
        return f"{sentence[:-1]} [{n}]{sentence[-1]}"
    return f"{sentence} [{n}]."


def _reading_list(passages: Sequence[Any]) -> list[Any]:
    """The passages, then the other chunks of the (at most two) documents the first three come from."""
    documents: list[int] = []
    for passage in passages[:3]:
        if passage.document_id not in documents and len(documents) < 2:
            documents.append(passage.document_id)
    return [*passages, *document_passages(documents, {p.chunk_id for p in passages})]


def compose(
    question: str,
    passages: Sequence[Any],
    *,
    max_sentences: int | None = None,
    threshold: float | None = None,
    whole_documents: bool = True,
    focus: str | None = None,
    context: str | None = None,
    requester: str | None = None,
) -> Composition:
    """The extractive answer to ``question`` from ``passages`` (synchronous: reads the database).

    Units are ranked by ``scoring.score_units``; the answer quotes the best ones from the one or two documents
    that answer, keeps a procedure's steps together and in order, follows a "see X" pointer to X when X was
    retrieved, and declines when even the best unit is not close enough in meaning to the question, the
    question names a product or error code the passages never mention, or it asks whether the company has or
    offers a thing they never name (``near_misses``). With
    ``whole_documents`` it also reads the other chunks of the best documents; those it quotes are appended to
    ``Composition.passages`` (the sources its citations number). For a follow-up searched as a rewrite,
    ``question`` is the rewrite, ``focus`` what the customer wrote and ``context`` the previous question
    (``scoring.Question.of``). ``requester``: whose turn the question's embedding waits for, if it is not
    remembered yet (``inference.query_vector``).
    """
    vector = query_vector(question, requester)
    shifts = cross_lingual.shifts(vector)
    # Only for a question searched as asked: a follow-up's rewrite carries another question's words.
    if focus is None and (match := curated.preferred(question, passages, vector, shifts, min_similarity)):
        # The support team's answer to this question (knowledge/answering/curated.py): whole, its only source.
        return Composition(curated.text_of(match, 1), False, {"curated": match.report()}, [match.passage])
    # None matches: the articles answer, as if no curated answer had been found (its sentences are no article's).
    passages = curated.without(passages)
    reading = _reading_list(passages) if whole_documents and passages else list(passages)
    candidates = _candidates(reading, shifts)
    if not candidates:
        return Composition(nothing_found(), True, {"reason": "no passages"}, [])
    asked = Question.of(question, vector, focus=focus, context=context)
    priors = document_priors([p.document_id for p in passages])
    for candidate in candidates:
        candidate.prior = priors.get(candidate.document, 0.0)
    score_units(asked, candidates)
    ranked = sorted(candidates, key=lambda c: c.score, reverse=True)
    closest = max(candidates, key=lambda c: c.similarity)
    best_similarity = closest.similarity
    threshold = min_similarity(focus or question, reading[closest.n - 1].language) if threshold is None else threshold
    report: dict[str, Any] = {"best_similarity": round(best_similarity, 3), "threshold": threshold,
                              "intents": sorted(asked.intents)}
    if best_similarity < threshold:
        return Composition(nothing_found(), True, {**report, "reason": "below threshold"}, [])
    if unknown := asked.unknown_codes([p.text for p in reading]):
        # "my Bosch shows E24": close in meaning to the KB's own error codes, but about one it never names.
        return Composition(nothing_found(), True, {**report, "reason": f"unknown code {sorted(unknown)[0]}"}, [])
    if missing := near_misses.unnamed(focus or question, reading):
        # "do you do a student discount?": close to the KB's prices and discounts, about one it never names.
        return Composition(nothing_found(), True, {**report, "reason": f"asks for {missing!r}, named nowhere"}, [])

    documents = _documents(ranked, asked)
    floor = ranked[0].score * settings.ANSWER_RELATIVE_SIMILARITY
    limit = max_sentences or settings.ANSWER_MAX_SENTENCES
    chosen: list[Scored] = []
    for candidate in ranked:
        if len([c for c in chosen if c.unit.kind != STEP]) >= limit or candidate.score < floor:
            break
        if candidate.document not in documents or candidate in chosen:
            continue
        if _POINTER.search(candidate.unit.text) and (target := _follow_pointer(candidate, ranked, reading)):
            candidate = target
            if candidate in chosen:
                continue
        if any(_same_words(candidate, c) for c in chosen):
            continue  # says the same as a unit already chosen (overlapping chunks, a repeated summary)
        if candidate.unit.kind == STEP:  # a step out of its procedure helps no one: the whole of it, in order
            chosen.extend(s for s in _steps(candidate, candidates) if s not in chosen)
            continue
        if candidate.unit.kind == ROW:
            # One row of a document's tables answers a look-up; another only when it adds asked words.
            quoted = [c.unit.text for c in chosen if c.unit.kind == ROW and c.document == candidate.document]
            if quoted and not rows.adds_to(candidate.unit.text, quoted, asked.focus):
                continue
        chosen.append(candidate)
    if "steps" in asked.intents and not any(c.unit.kind == STEP for c in chosen):
        # "How do I…": the best-matching procedure of the answering documents, whole and in order.
        procedure = next((c for c in ranked if c.unit.kind == STEP and c.document in documents), None)
        if procedure is not None and procedure.score >= 0.5 * ranked[0].score:
            chosen = chosen[: max(1, limit // 2)] + [s for s in _steps(procedure, candidates) if s not in chosen]
    wanted = [i.answer for i in INTENTS if i.name in asked.intents and i.answer is not None]
    for candidate in chosen:
        if candidate.unit.kind == ROW:  # the columns the customer named ("on Metal"), with the row's label
            candidate.quote = rows.focused(reading[candidate.n - 1].text, candidate.unit.text, asked.focus, wanted)
    sources = _number_sources(chosen, passages, reading)
    report["chosen"] = [
        {"n": c.n, "score": round(c.score, 3), **{k: round(v, 2) for k, v in c.reasons.items()}} for c in chosen
    ]
    return Composition(f"{lead_in()}\n\n{_render(chosen)}", False, report, sources)


def _number_sources(chosen: list[Scored], passages: Sequence[Any], reading: list[Any]) -> list[Any]:
    """Renumber ``chosen`` so the retrieved passages keep their numbers and quoted siblings follow them."""
    sources = list(passages)
    numbers = {n: n for n in range(1, len(passages) + 1)}
    for candidate in sorted(chosen, key=lambda c: -c.score):
        if candidate.n not in numbers:
            sources.append(reading[candidate.n - 1])
            numbers[candidate.n] = len(sources)
    for candidate in chosen:
        candidate.n = numbers[candidate.n]
    return sources


class ComposesVerdict:
    """``Generator.composition`` for every generator: ``compose`` with the generator's limits (None: the
    settings'). The extractive composition is the relevance verdict whatever writes the answer, so a question
    nothing answers is refused the same way, without a model call."""

    max_sentences: int | None = None
    min_similarity: float | None = None

    def composition(
        self,
        question: str,
        passages: Sequence[Any],
        *,
        whole_documents: bool = True,
        focus: str | None = None,
        context: str | None = None,
        requester: str | None = None,
    ) -> Composition:
        """``compose`` with this generator's limits (synchronous: it reads the database)."""
        return compose(
            question, passages, max_sentences=self.max_sentences, threshold=self.min_similarity,
            whole_documents=whole_documents, focus=focus, context=context, requester=requester,
        )


class ExtractiveGenerator(ComposesVerdict):
    """Grounded extractive answers: the passages' own sentences, steps and table rows that answer, each cited.

    See ``compose``. No model work per question beyond the query's embedding (shared with retrieval): the units'
    vectors are stored at ingestion (``knowledge.sentence_vectors``).
    """

    name = "extractive"
    grounded = True  # it quotes the passages' own units, each cited: nothing for the grounding guard to check
    composes = True  # its answer is exactly ``compose()`` (the pipeline composes once and paces the text)
    answers_searched_query = True  # it cannot read the conversation: the pipeline hands it the rewritten query
    rewrites_cheaply = True  # ``rewrite`` is string work: every question after others may be tried rewritten

    def __init__(
        self,
        *,
        words_per_second: float | None = None,
        max_sentences: int | None = None,
        min_similarity: float | None = None,
    ) -> None:
        self.words_per_second = words_per_second
        self.max_sentences = max_sentences
        self.min_similarity = min_similarity

    async def rewrite(self, question: str, history: list[dict]) -> str:
        """The follow-up with the key terms of the previous user question added, without a model.

        "And how long does it take?" after "How do I return an item?" searches for "…return item".
        The pipeline asks for this only when the question refers back (``followups.refers_back``) and
        keeps it only when it searches better than the question alone.
        """
        previous = previous_question(history) or ""
        words = re.findall(r"[\w'-]+", question.lower())
        extra = [t for t in key_terms(previous) if t not in words]
        return f"{question} {' '.join(extra)}".strip() if extra else question

    def compose(self, question: str, passages: Sequence[Any]) -> str:
        """The answer text over exactly these passages, its citations numbering them (synchronous: reads the
        database). The grounding guard replaces an uncited LLM answer with it."""
        return self.composition(question, passages, whole_documents=False).text

    def pace(self) -> float:
        """Its own pace when given one, else ``ANSWER_WORDS_PER_SECOND``."""
        return self.words_per_second if self.words_per_second is not None else settings.ANSWER_WORDS_PER_SECOND

    async def stream(
        self, question: str, passages: Sequence[Any], history: list[dict], tools: Sequence[ToolOffer] = ()
    ) -> AsyncIterator[str]:
        """The composition, paced; ``tools`` are not offered to it (the pipeline chooses them: knowledge/tools/)."""
        text = await answer_work(self.compose, question, passages)
        async for word in pace_words(text, self.pace()):
            yield word
