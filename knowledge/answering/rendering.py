"""Answer text -> safe HTML with linked [n] citations, and which sources an answer cites."""

from __future__ import annotations

import re

import markdown_it
import nh3

#: A citation: [3], and the LLM habit [1, 3]. The one grammar of citations: what is linked here, what the grounding
#: guard checks on the stream, and what a passage's text may not contain when it reaches an LLM (generators/openai.py).
CITATION = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
_MARKDOWN = markdown_it.MarkdownIt("commonmark", {"html": False})
_ALLOWED_TAGS = {
    "p", "br", "strong", "em", "code", "pre", "blockquote", "ul", "ol", "li", "a", "sup",
    "h1", "h2", "h3", "h4", "h5", "h6", "hr",
}  # fmt: skip
_ALLOWED_ATTRIBUTES = {"a": {"href", "title", "data-n"}, "ol": {"start"}}


def cited_sources(text: str, source_count: int) -> list[int]:
    """Sorted unique source numbers cited as [n] in ``text`` that exist (1..source_count)."""
    found: set[int] = set()
    for match in CITATION.finditer(text):
        found.update(int(n) for n in match.group(1).split(",") if 1 <= int(n) <= source_count)
    return sorted(found)


def _link_citations(fragment: str, source_count: int) -> str:
    def replace(match: re.Match) -> str:
        numbers = [int(n) for n in match.group(1).split(",")]
        if not all(1 <= n <= source_count for n in numbers):
            return match.group(0)  # not a citation of ours: leave the text alone
        return "".join(f'<sup class="cite"><a href="#source-{n}" data-n="{n}">[{n}]</a></sup>' for n in numbers)

    return CITATION.sub(replace, fragment)


def render_answer_html(text: str, source_count: int) -> str:
    """Markdown (raw HTML disabled) -> citation links -> nh3 allow-list, so answer text can never inject markup."""
    rendered = _MARKDOWN.render(text)
    parts = re.split(r"(<[^>]+>)", rendered)
    in_code = 0
    for i, part in enumerate(parts):
        if part.startswith("<"):
            tag = part.strip("</>").split()[0] if part.strip("</>") else ""
            if tag in {"code", "pre"}:
                in_code += -1 if part.startswith("</") else 1
        elif part and not in_code:
            parts[i] = _link_citations(part, source_count)
    return nh3.clean(
        "".join(parts),
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        allowed_classes={"sup": {"cite"}},
        url_schemes={"http", "https", "mailto"},
    )
