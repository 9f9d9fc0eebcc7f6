"""One scale for passages of every language: a question's similarity to a passage, corrected for the language pair.

Why: a multilingual embedding model puts texts of one language closer to each other than to their translations'
neighbours. Measured with multilingual-e5-small on Django's own translated messages, a Chinese question is 0.86
similar to *unrelated* Chinese text and 0.81 to unrelated English text (German 0.84 / 0.80); an English question
is equally far from every language. So in a knowledge base with one Chinese article, every Chinese question's
nearest passages were that article's, whatever it asked.

The correction is measured per question, not tuned per knowledge base: each language the site speaks has a
*centroid*, the mean vector of a fixed set of short texts in that language — the same messages in every language
(Django's translation catalogs, which ship with Django for every language it knows), so the centroids differ by
language, not by topic. ``q · centroid(L)`` is how similar the question is to arbitrary text in ``L``; a passage in
``L`` gets ``q · centroid(English) − q · centroid(L)`` added to its cosine, which puts every passage on the scale of
English passages, the scale the answer thresholds were measured on. A Chinese question's Chinese passages lose the
closeness they owe to the language alone; its English passages are unchanged. A passage in a language the site does
not speak is unchanged too. Nothing here names a knowledge base's words or languages: the languages are the site's
(``settings.LANGUAGES``) and the texts are Django's.
"""

from __future__ import annotations

import gettext
import threading
from collections.abc import Sequence
from pathlib import Path

import django
import numpy as np
from django.conf import settings
from django.utils.translation import to_locale

from knowledge.embeddings import Embedder, get_embedder
from knowledge.models import LanguageCentroid

#: How many messages make a centroid: enough that one message's topic does not show (measured: the shifts of 64
#: and of 140 messages differ by at most 0.005), few enough to embed in seconds once per model.
REFERENCE_MESSAGES = 64
#: The language whose scale every similarity is put on: the one the models' answer thresholds were measured in.
REFERENCE_LANGUAGE = "en"
_MIN_WORDS = 4

_lock = threading.Lock()
_centroids: dict[str, dict[str, np.ndarray]] = {}  # by model name


def _catalogs(locale: str) -> list[Path]:
    root = Path(django.__file__).parent
    return sorted(
        [*root.glob(f"conf/locale/{locale}/LC_MESSAGES/django.mo"),
         *root.glob(f"contrib/*/locale/{locale}/LC_MESSAGES/django.mo")]
    )


def _translations(locale: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for path in _catalogs(locale):
        with path.open("rb") as handle:
            catalog = gettext.GNUTranslations(handle)._catalog  # msgid -> msgstr; plural forms are tuple keys
        found.update({k: v for k, v in catalog.items() if isinstance(k, str) and isinstance(v, str) and k and v})
    return found


def reference_texts(languages: Sequence[str]) -> dict[str, list[str]]:
    """The same ``REFERENCE_MESSAGES`` messages in each of ``languages`` (English: Django's source strings).

    Only messages of several words without placeholders, translated in every one of the languages, in a fixed
    order: every process and node builds the same centroids. A language Django has no catalog for is left out.
    """
    catalogs = {code: _translations(to_locale(code)) for code in languages if not code.startswith("en")}
    catalogs = {code: found for code, found in catalogs.items() if found}
    chosen = [
        message for message in sorted(set().union(*(found.keys() for found in catalogs.values())) or ())
        if len(message.split()) >= _MIN_WORDS and "%" not in message and "{" not in message
        and all(message in found for found in catalogs.values())
    ][:REFERENCE_MESSAGES]
    texts = {code: [found[m] for m in chosen] for code, found in catalogs.items()}
    if any(code.startswith("en") for code in languages):
        texts["en"] = chosen
    return texts if chosen else {}


def centroids() -> dict[str, np.ndarray]:
    """The current embedding model's centroid per site language.

    Read once per process and model from ``LanguageCentroid``; the first process to need them for a model computes
    and stores them (about 7 s of a 2-core machine's CPU for multilingual-e5-small).
    """
    embedder = get_embedder()
    found = _centroids.get(embedder.name)
    if found is None:
        with _lock:
            found = _centroids.get(embedder.name)
            if found is None:
                found = _centroids[embedder.name] = _stored(embedder) or _computed(embedder)
    return found


def _stored(embedder: Embedder) -> dict[str, np.ndarray]:
    languages = {code for code, _ in settings.LANGUAGES}
    rows = LanguageCentroid.objects.filter(model=embedder.name, messages=REFERENCE_MESSAGES, language__in=languages)
    found = {row.language: np.frombuffer(bytes(row.vector), dtype=np.float32) for row in rows}
    complete = set(found) == set(reference_texts(sorted(languages)))
    return found if complete and all(v.size == embedder.dimensions for v in found.values()) else {}


def _computed(embedder: Embedder) -> dict[str, np.ndarray]:
    texts = reference_texts([code for code, _ in settings.LANGUAGES])
    found = {
        code: np.asarray(embedder.embed_documents(messages), dtype=np.float32).mean(axis=0)
        for code, messages in texts.items()
    }
    LanguageCentroid.objects.bulk_create(
        [LanguageCentroid(model=embedder.name, language=code, messages=REFERENCE_MESSAGES, vector=vector.tobytes())
         for code, vector in found.items()],
        ignore_conflicts=True,  # another process stored them first: the same texts, the same vectors
    )
    return found


def shifts(vector: Sequence[float]) -> dict[str, float]:
    """What to add to the cosine of a passage in each language (by ``Chunk.language``) for this question vector.

    Every passage is put on the scale of passages in ``REFERENCE_LANGUAGE``, the one the answer thresholds were
    measured in (``embeddings.BACKENDS``): ``q · centroid(reference) − q · centroid(L)``. Nothing needs the
    question's language: a Chinese question's vector is itself closer to the Chinese centroid, so Chinese passages
    lose that closeness. A language without a centroid (not one of the site's) is left as it is.
    """
    found = centroids()
    reference = found.get(REFERENCE_LANGUAGE)
    if reference is None:
        return {}
    query = np.asarray(vector, dtype=np.float32)
    own = float(query @ reference)
    return {code: round(own - float(query @ centroid), 4) for code, centroid in found.items() if code != REFERENCE_LANGUAGE}
