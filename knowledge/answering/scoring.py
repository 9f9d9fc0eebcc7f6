"""How well a quotable unit answers a question: meaning, the question's own terms, and what kind of fact it asks.

The extractive answerer ranks a passage's units (``knowledge.sentences``) with ``score_units``. The
signals, each cheap and none tuned to one knowledge base:

* **meaning**: cosine of the unit's stored vector with the query's (both from the KB's embedding model),
  rescaled within the question's candidates, so models with compressed similarity scales rank alike;
* **terms**: the share of the question's content words (IDF-weighted over the candidates, lightly stemmed) the
  unit contains; a unit that answers a different question about the same topic has fewer of them;
* **kind of fact**: a question asking a price wants an amount, "how long" a duration, "when / until when" a
  time, "how do I" steps; the cue words are listed per language, so a Chinese or German question gets the
  same help;
* **numbers and codes**: "I'm 172 cm" matches a "170–176 cm" row; "E42", "NW-RV7" match themselves;
* **rank**: how highly retrieval, which saw whole chunks with their titles and sections, ranked the unit's
  document.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from knowledge.sentences import ROW, STEP, Unit

_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*", re.UNICODE)
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_STOPWORDS = frozenset(
    "a an and are as at be but by can could do does did for from have has how i if in is it its me my of on or "
    "our please should so that the their them then there these they this those to was we what when where which "
    "who why will with would you your about any get got im i'm id i'd dont don't just also there's whats what's "
    "want need much many long still yet again any some us it's is there been being".split()
)
#: A number as written: thousands grouped by a comma, a space or a narrow space ("1,501", "3 900"), then decimals.
_FIGURE = r"\d{1,3}(?:(?:,|[ \u00a0\u202f])\d{3})+(?![\d])(?:\.\d+)?|\d+(?:[.,]\d+)?"
_NUMBER = re.compile(rf"(?<![\w.,])({_FIGURE})(?![\d])")
_RANGE = re.compile(rf"({_FIGURE})\s*(?:[-–—]|to|bis|à|a)\s*({_FIGURE})")
_GROUPING = re.compile(r"(?<=\d)(?:,|[ \u00a0\u202f])(?=\d{3}(?!\d))")
_CODE = re.compile(r"\b(?=[A-Z0-9-]*\d)(?=[A-Z0-9-]*[A-Z])[A-Z0-9]+(?:-[A-Z0-9]+)*\b")


@dataclass(frozen=True)
class Intent:
    """A kind of fact: cue words in questions (any language) and the shape of an answering unit."""

    name: str
    cues: re.Pattern
    answer: re.Pattern | None  # None: judged by the unit's kind (steps)


_I = re.IGNORECASE
INTENTS = (
    Intent(
        "price",
        re.compile(
            r"how much|\bcost|\bprice|\bcharge|\bfees?\b|\bpay\b|expensive|cheap|€|\beur\b|kostet|kosten|preis|"
            r"gebühr|zahle|combien|co[uû]t|prix|tarif|payer|cu[aá]nto (?:cuesta|cobr|pag)|cuesta|precio|coste|pago|"
            r"多少钱|费用|价格|收费|运费|几块|多少欧",
            _I,
        ),
        re.compile(
            r"(?:EUR|€|\$|USD|CHF|GBP|£)\s?\d|\d(?:[.,]\d+)?\s?(?:EUR|€|euros?)\b|(?<![\d.,:])\d+[.,]\d{2}(?![\d:])|"
            r"free of charge|\bfree\b",
            _I,
        ),
    ),
    Intent(
        "duration",
        re.compile(
            r"how long|how many (?:days|weeks|hours|months|years)|how soon|how quickly|take[s]? to|until .* (?:back|"
            r"arrive)|wie lange|wie schnell|dauert|combien de temps|délai|en combien|cu[aá]nto tiempo|tarda|plazo|"
            # "until when?" is answered by a time or by a period ("within 10 days of opening"):
            r"until when|till when|bis wann|jusqu'à quand|hasta cu[aá]ndo|"
            r"多久|几天|多长时间|多长|多少天|什么时候",
            _I,
        ),
        re.compile(
            r"\d+\s*(?:[-–]\s*\d+\s*)?(?:business |working |calendar )?(?:days?|hours?|weeks?|months?|years?|"
            r"minutes?|mins?)\b|\bwithin\b|same day|next (?:business |working )?day|immediately|instantly",
            _I,
        ),
    ),
    Intent(
        "time",
        re.compile(
            r"what time|until when|till when|\bopen\b|opening|closing|close[sd]?\b|\bhours\b|bis wann|uhrzeit|"
            r"(?:bis|um) wie ?viel uhr|wie spät|jusqu'à quand|hasta cu[aá]ndo|"
            r"geöffnet|öffnungszeit|à quelle heure|jusqu'à quelle|horaires?|ouvert|a qu[eé] hora|hasta qu[eé] hora|"
            r"abiert|几点|营业|开门|关门",
            _I,
        ),
        re.compile(r"\d{1,2}[:.]\d{2}|\b\d{1,2}\s?(?:am|pm)\b|\b(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*\b", _I),
    ),
    Intent(
        "steps",
        re.compile(
            r"^(?:how (?:do|can|should|would) (?:i|we)|how to)\b|\bsteps?\b|where do i|what do i (?:need to )?do|"
            r"what should i do|how do i|wie (?:kann|trage|mache|melde|ändere|bekomme|gehe)|was muss ich|"
            r"comment (?:je|puis|faire|on)|que dois-je|c[oó]mo (?:puedo|hago|se)|qu[eé] tengo que hacer|"
            r"怎么|如何|步骤|怎样",
            _I,
        ),
        None,
    ),
    Intent(
        # "Can I pay the driver in cash?": answered by what is allowed, included or not — a sentence that says
        # yes or no ("Cash on delivery is not accepted", "only on the Business plan", "free of charge").
        "yesno",
        re.compile(
            r"^(?:\W*\w+[,:]\s+)?(?:can|could|may|do|does|is|are|will|would|am|should)\s+(?:i|we|you|my|our|it|there|"
            r"they|the|a|an|this|that)\b|"
            r"^(?:\W*\w+[,:]\s+)?(?:kann|können|darf|dürfen|muss|gibt es|ist|sind|geht|bekomme|krieg)\b|"
            r"^(?:\W*\w+[,:]\s+)?(?:est-ce que|puis-je|peut-on|peux-je|y a-t-il)\b|"
            r"^[¿\s]*(?:puedo|se puede|hay|es|tengo|pueden|podemos)\b|"
            r"(?:吗|能不能|可不可以|是否|可以.*[吗？?])[？?]?\s*$",
            _I,
        ),
        re.compile(
            r"\bnot?\b|n't\b|\bonly\b|\bnever\b|\bcannot\b|free of charge|\bincluded\b|\byes\b|\bnicht\b|"
            r"\bkeine?[nrms]?\b|\bnur\b|\bpas\b|\bseulement\b|\bsolo\b|\bsólo\b|不|没有|只|无需|免费",
            _I,
        ),
    ),
)


def stem(word: str) -> str:
    """A lower-case word without its English inflection ("discounts", "charges", "charging" -> "discount",
    "charg", "charg"): a word and its forms compare equal, or as a prefix of the other."""
    for suffix, keep in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + keep
    return word


def terms(text: str) -> set[str]:
    """Content words (stemmed, lower case) and CJK character bigrams of ``text``.

    Latin words written into Chinese without spaces ("我是Basic套餐", "App显示KS-701") are words of their own."""
    found = set()
    for piece in _CJK_RUN.split(text):  # the text between CJK runs: its words
        found |= {stem(w) for w in (m.lower() for m in _WORD.findall(piece)) if w not in _STOPWORDS and len(w) > 1}
    for run in _CJK_RUN.findall(text):
        found.update(run[i : i + 2] for i in range(max(1, len(run) - 1)))
    return found


def _value(figure: str) -> float:
    """'1,501' and '3 900' -> 1501, 3900 (grouped thousands); '9,95' -> 9.95 (a decimal comma)."""
    return float(_GROUPING.sub("", figure).replace(",", "."))


def _numbers(text: str) -> list[float]:
    return [_value(n) for n in _NUMBER.findall(text)]


@dataclass
class Question:
    """What scoring needs to know about a question, computed once.

    A follow-up is searched as a rewrite ("and to Austria?" + the previous question's terms); its own words
    (``focus``) then weigh more than the carried ones, its numbers and codes are its own, and the kind of fact
    asked is its own or, when it names none ("and to Austria?"), the previous question's (``context``).
    """

    text: str
    terms: set[str]
    intents: set[str]
    numbers: list[float]
    codes: set[str]
    vector: np.ndarray
    focus: set[str] = field(default_factory=set)  # the terms the customer wrote in this message

    @classmethod
    def of(cls, text: str, vector: Sequence[float], *, focus: str | None = None, context: str | None = None) -> Question:
        own = focus if focus is not None else text
        # A follow-up naming no kind of fact asks the previous question's ("and to Austria?" asks a price), but not
        # its yes-or-no: "what do I need to bring?" after "can I collect it in the shop?" asks for things.
        intents = _intents(own) or (_intents(context) - {"yesno"} if context else set())
        return cls(
            text=text,
            terms=terms(text) | terms(own),
            intents=intents,
            numbers=_numbers(own),
            codes={c.upper() for c in _CODE.findall(own.upper()) if not c.isdigit()},
            vector=np.asarray(vector, dtype=np.float32),
            focus=terms(own),
        )

    def unknown_codes(self, texts: Sequence[str]) -> set[str]:
        """The product and error codes asked about ("E24", "NW-D900") that none of ``texts`` mentions.

        A knowledge base that never names a code cannot say what it means; long digit runs (order and
        tracking numbers) and digit-first tokens ("3PM", "2FA") are not such codes.
        """
        wanted = {c for c in self.codes if c[0].isalpha() and sum(ch.isdigit() for ch in c) <= 4}
        for text in texts:
            upper = text.upper()
            wanted = {c for c in wanted if not re.search(rf"(?<![A-Z0-9]){re.escape(c)}(?![A-Z0-9])", upper)}
            if not wanted:
                break
        return wanted

    def weight(self, term: str) -> float:
        """1 for the customer's own words, less for words carried over from the conversation."""
        return 1.0 if term in self.focus else CARRIED_WEIGHT


#: Weight of a term a follow-up's rewrite carried over from the previous question.
CARRIED_WEIGHT = 0.4


def _intents(text: str) -> set[str]:
    return {i.name for i in INTENTS if i.cues.search(text.strip())}


@dataclass
class Scored:
    """One candidate unit with its source number, position and scores."""

    n: int  # source number (1-based passage index)
    document: int
    position: int  # order within the passage
    unit: Unit
    vector: np.ndarray
    prior: float = 0.0  # how highly retrieval ranked the unit's document (1 = first), see ``document_priors``
    shift: float = 0.0  # added to the cosine: its language's correction (knowledge.cross_lingual)
    similarity: float = 0.0  # cosine with the query, shifted
    score: float = 0.0
    reasons: dict[str, float] = field(default_factory=dict)
    quote: str = ""  # what the answer quotes when not the unit's whole text (a table row's asked columns)


def _number_match(question: Question, text: str) -> float:
    """1 if a number of the question falls in a range of the unit or equals one of its numbers."""
    if not question.numbers:
        return 0.0
    for low, high in _RANGE.findall(text):
        lo, hi = _value(low), _value(high)
        if any(lo <= n <= hi for n in question.numbers):
            return 1.0
    mentioned = set(_numbers(text))
    return 0.6 if any(n in mentioned for n in question.numbers if n >= 10) else 0.0


def score_units(question: Question, candidates: list[Scored]) -> None:
    """Fill in ``similarity``, ``score`` and ``reasons`` of every candidate (see the module docstring)."""
    if not candidates:
        return
    matrix = np.stack([c.vector for c in candidates])
    similarities = matrix @ question.vector + np.array([c.shift for c in candidates], dtype=np.float32)
    low, high = float(similarities.min()), float(similarities.max())
    spread = max(high - low, 1e-6)
    unit_terms = [terms(c.unit.text) for c in candidates]
    documents = len(candidates)
    idf = {
        t: question.weight(t) * math.log(1 + documents / (1 + sum(t in ts for ts in unit_terms)))
        for t in question.terms
    }
    total_idf = sum(idf.values()) or 1.0
    wanted = [i for i in INTENTS if i.name in question.intents]
    for candidate, similarity, found in zip(candidates, similarities, unit_terms, strict=True):
        text = candidate.unit.text
        reasons = {
            "meaning": (float(similarity) - low) / spread,
            "terms": sum(idf[t] for t in question.terms if t in found) / total_idf,
        }
        for intent in wanted:
            if intent.answer is not None and intent.answer.search(text):
                reasons[intent.name] = 1.0
            elif intent.answer is None and candidate.unit.kind == STEP:
                reasons[intent.name] = 1.0
        if (match := _number_match(question, text)) > 0:
            reasons["number"] = match
        if question.codes and any(code in text.upper() for code in question.codes):
            reasons["code"] = 1.0
        if candidate.prior:
            reasons["rank"] = candidate.prior
        candidate.similarity = float(similarity)
        candidate.reasons = reasons
        candidate.score = (
            reasons["meaning"]
            + 0.8 * reasons["terms"]
            + 0.35 * sum(reasons.get(i.name, 0.0) for i in wanted)
            + 0.5 * reasons.get("number", 0.0) * (1.2 if candidate.unit.kind == ROW else 1.0)
            + 0.4 * reasons.get("code", 0.0)
            + RANK_WEIGHT * candidate.prior
        )


#: Weight of the retrieval rank of a unit's document: retrieval saw the whole chunk (title, section, context);
#: a unit alone can match a question's words while its document is about something else.
RANK_WEIGHT = 0.3


def document_priors(document_ids: Sequence[int]) -> dict[int, float]:
    """1, 1/2, 1/3… for the documents in the order retrieval first ranked one of their passages."""
    order: list[int] = []
    for document in document_ids:
        if document not in order:
            order.append(document)
    return {document: 1.0 / (rank + 1) for rank, document in enumerate(order)}
