"""The question sets of bench/answers.py: the demo set and the other companies' corpora, each split dev / check.

A corpus is a company's help centre (a folder of articles) with questions about it. The demo one is
``knowledge/demo_kb/`` with ``bench/answer_set/{dev,check}.json``, split once by hand; the others live beside the
checkout in ``../shared/answer-corpora/<name>/`` (``kb/`` and one ``questions.json``, read-only) and are split here,
in code, with the same rule (``split_parts``), so that every run and every session draws the same line between what
the answerer may be tuned on (dev) and what is only run to report (check).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SET_DIR = Path(os.environ.get("ANSWER_SET_DIR") or ROOT / "bench" / "answer_set")
#: The shared corpora sit beside every checkout (CI's too); never copied into the repository.
CORPORA_DIR = ROOT.parent / "shared" / "answer-corpora"
DEMO = "demo"
PARTS = ("dev", "check")


@dataclass(frozen=True)
class Question:
    id: str
    kind: str
    lang: str
    question: str
    expect: str | None
    decline: bool
    sources: tuple[str, ...]
    history: tuple[str, ...] = ()
    part: str = "dev"
    corpus: str = DEMO


def _question(item: dict, part: str, corpus: str) -> Question:
    return Question(
        id=item["id"],
        kind=item["kind"],
        lang=item["lang"],
        question=item["question"],
        expect=item.get("expect"),
        decline=bool(item.get("decline")),
        sources=tuple(item.get("sources") or ()),
        history=tuple(item.get("history") or ()),
        part=part,
        corpus=corpus,
    )


def split_parts(items: Iterable[dict]) -> dict[str, str]:
    """Question id -> "dev" or "check", by the rule of bench/answer_set/README.md ("How the split was made").

    The questions are grouped by (kind, lang); within a group they are sorted by id and every one at index
    ``% 3 == 2`` is held back (check), the rest are dev. Every kind and language with three or more questions
    appears in both parts, a group of fewer lies wholly in dev, and the split depends on nothing but the ids, kinds
    and languages (not on file order), so it is the same on every machine. Applied to the demo set's two files
    together it reproduces them exactly (tests/test_answer_quality.py holds that).
    """
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for item in items:
        groups[(item["kind"], item["lang"])].append(item["id"])
    return {qid: ("check" if i % 3 == 2 else "dev") for ids in groups.values() for i, qid in enumerate(sorted(ids))}


@dataclass(frozen=True)
class Corpus:
    """A company's help centre and the questions about it."""

    name: str
    articles: Path
    #: A folder with ``dev.json`` and ``check.json`` (the demo set, split once when it was written), or one
    #: ``questions.json`` split by ``split_parts``.
    questions_path: Path

    def questions(self, parts: tuple[str, ...] = PARTS) -> list[Question]:
        """The questions of the named parts: part by part, in file order within each."""
        if self.questions_path.is_dir():
            return [
                _question(item, part, self.name)
                for part in parts
                for item in json.loads((self.questions_path / f"{part}.json").read_text(encoding="utf-8"))
            ]
        items = json.loads(self.questions_path.read_text(encoding="utf-8"))
        part_of = split_parts(items)
        return [_question(item, part, self.name) for part in parts for item in items if part_of[item["id"]] == part]


def demo_corpus() -> Corpus:
    return Corpus(DEMO, ROOT / "knowledge" / "demo_kb", SET_DIR)


def shared_corpora(directory: Path = CORPORA_DIR) -> list[Corpus]:
    """Every corpus under ``directory`` (a folder with ``kb/`` and ``questions.json``), by name.

    Missing or empty, it is an error, not an empty benchmark: a run that silently measured the demo alone would
    be reported as "four companies".
    """
    if not directory.is_dir():
        raise SystemExit(
            f"The shared answer corpora are missing: {directory} does not exist. They live beside the checkout as "
            f"../shared/answer-corpora/<name>/{{kb/,questions.json}} (see ../shared/README.md); run with "
            f"--corpus {DEMO} to measure the demo set alone."
        )
    found = [
        Corpus(path.name, path / "kb", path / "questions.json")
        for path in sorted(directory.iterdir())
        if (path / "kb").is_dir() and (path / "questions.json").is_file()
    ]
    if not found:
        raise SystemExit(f"No corpus (a folder with kb/ and questions.json) under {directory}.")
    return found


def select_corpora(spec: str) -> list[Corpus]:
    """``demo``, ``all`` (the demo and every shared corpus) or comma-separated names (``demo,skyvale``)."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if names == [DEMO]:
        return [demo_corpus()]
    available = {corpus.name: corpus for corpus in [demo_corpus(), *shared_corpora()]}
    if names == ["all"]:
        return list(available.values())
    unknown = [name for name in names if name not in available]
    if unknown:
        raise SystemExit(f"Unknown corpus {', '.join(unknown)}; there are: all, {', '.join(available)}.")
    return [available[name] for name in names]


def load_questions(parts: tuple[str, ...] = PARTS) -> list[Question]:
    """The demo set's questions of the named parts, in file order (what tests/test_answer_quality.py asks)."""
    return demo_corpus().questions(parts)
