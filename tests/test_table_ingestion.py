"""Tables are ingested as rows under their header (issue 18, point 4): from HTML, Markdown, Word and PDF alike,
each row is one line "| a | b |" with the header line above it, a chunk is cut between rows and repeats the header,
and each row is quoted as "Label — Header: cell; Header: cell." — never a header run together with a row.

Corpus articles from ../shared/answer-corpora (the companies bench/answers.py measures) and the demo's PDF go
through the real path (the isolated parser, the chunker, the stored units); small synthetic cases pin the rules.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings

from knowledge.ingest import pipeline
from knowledge.ingest.chunking import chunk_sections, count_tokens
from knowledge.ingest.limits import Limits
from knowledge.ingest.parsers import Section, parse_file
from knowledge.models import Document
from knowledge.sentences import ROW, is_table_row, is_table_rule, units
from tests import pdf_files
from tests.corpora import corpus_file

ROOT = Path(__file__).resolve().parents[1]
DEMO_KB = ROOT / "knowledge" / "demo_kb"


def ingest(path: Path) -> list[dict]:
    """Ingest one file through the real pipeline; its chunks as text and stored units, in order."""
    kb = pipeline.get_or_create_knowledge_base("Table ingestion")
    document, _ = pipeline.add_document(kb, filename=path.name, data=path.read_bytes())
    pipeline.ingest_document(document)
    document.refresh_from_db()
    assert document.status == Document.Status.READY, document.error
    return [
        {"text": c.text, "tokens": c.token_count, "units": [(u["k"], u["t"]) for u in c.sentences]}
        for c in document.chunks.order_by("position")
    ]


def row_units(chunks: list[dict]) -> list[str]:
    return [text for chunk in chunks for kind, text in chunk["units"] if kind == ROW]


def all_units(chunks: list[dict]) -> list[str]:
    return [text for chunk in chunks for _, text in chunk["units"]]


def limits(**changes: int) -> Limits:
    return Limits(**{**Limits.from_settings().as_dict(), **changes})


def parse(data: bytes | str, filename: str, **limit_changes: int) -> str:
    """The parsed text of a small document, its sections joined."""
    data = data.encode() if isinstance(data, str) else data
    return "\n\n".join(s.text for s in parse_file(data, filename, limits(**limit_changes)).sections)


def rows_of(text: str) -> list[str]:
    return [u.text for u in units(text) if u.kind == ROW]


# --- corpus articles, through the real path -------------------------------------------------------------------


@pytest.mark.django_db
def test_an_html_tables_rows_read_with_their_header_labels():
    chunks = ingest(corpus_file("kestrel", "card-limits.html"))
    rows = row_units(chunks)
    assert "Limit: ATM withdrawals per day — Basic: €300; Plus: €600; Metal: €1,200." in rows
    assert any("ATM withdrawals per day" in row and "Metal: €1,200" in row for row in rows)
    assert len(rows) == 5
    assert not any("Limit Basic Plus Metal" in unit for unit in all_units(chunks)), "no header glued to a row"
    table = next(c["text"] for c in chunks if "ATM withdrawals" in c["text"])
    assert "| Limit | Basic | Plus | Metal |\n|---|---|---|---|\n| ATM withdrawals per day | €300 |" in table


@pytest.mark.django_db
def test_a_markdown_header_with_an_empty_first_cell_keeps_its_columns():
    rows = row_units(ingest(corpus_file("kestrel", "freeze-and-replace-card.md")))
    assert (
        "Replacement card — Basic: €6.00; Plus: First one each calendar year free, then €6.00; "
        "Metal: First two each calendar year free, then €39.00."
    ) in rows
    assert "Express delivery (2 working days) — Basic: €19.00; Plus: €19.00; Metal: Free." in rows


@pytest.mark.django_db
def test_a_long_table_is_cut_between_rows_and_each_chunk_repeats_its_header():
    path = corpus_file("kestrel", "app-error-codes.md")
    source = {
        m.group(1): m.group(2).strip()
        for m in re.finditer(r"^\| (KS-\d+) \| ([^|]+) \|", path.read_text(encoding="utf-8"), re.MULTILINE)
    }
    assert len(source) >= 8
    chunks = ingest(path)
    with_rows = [c for c in chunks if any(kind == ROW for kind, _ in c["units"])]
    assert len(with_rows) >= 2, "the table is longer than one chunk"
    for chunk in with_rows:
        assert chunk["tokens"] <= settings.CHUNK_MAX_TOKENS
        lines = chunk["text"].splitlines()
        table = [line for line in lines if is_table_row(line)]
        assert table[:2] == ["| Code | What it means | What to do |", "|---|---|---|"], chunk["text"]
        # Every line holding a cell separator is a whole row: no chunk (or overlap) starts or ends mid-row.
        assert all(is_table_row(line) for line in lines if " | " in line), chunk["text"]
    rows = sorted(set(row_units(chunks)))  # overlapping chunks repeat a row; it is the same unit
    assert all(row.startswith("Code: KS-") for row in rows), rows
    for code, meaning in source.items():
        holding = [row for row in rows if code in row]
        assert len(holding) == 1, (code, holding)
        assert holding[0].startswith(f"Code: {code} — What it means: {meaning}"), holding


@pytest.mark.django_db
def test_the_demo_pdfs_tables_are_rows_under_their_header():
    chunks = ingest(DEMO_KB / "shipping-rates.pdf")
    rows = row_units(chunks)
    assert (
        "Option: Express (DHL Express) — Delivery time: next business day; Price: 9.95; Order by: 14:00 Monday–Friday."
    ) in rows
    assert (
        "Option: Same-day (Hamburg, Berlin, Munich only) — Delivery time: same evening 18:00–22:00; Price: 14.95; "
        "Order by: 12:00 Monday–Saturday."
    ) in rows
    assert "Service: Delivery to the room of your choice — Price: 39.00." in rows
    assert len(rows) == 10
    glued = [u for u in all_units(chunks) if "Option Delivery time" in u or "Service Price" in u]
    assert not glued, glued
    text = "\n".join(c["text"] for c in chunks)
    assert "Rate card for deliveries to addresses in Germany" in text  # the text around the tables is kept
    assert text.index("Delivery speeds") < text.index("| Option |") < text.index("Northwind Plus members")


# --- HTML ----------------------------------------------------------------------------------------------------


def html(body: str) -> str:
    return f'<html><head><meta charset="utf-8"><title>T</title></head><body>{body}</body></html>'


def test_an_html_table_without_a_header_keeps_its_rows_apart_and_has_no_header_line():
    text = parse(
        html(
            "<p>Reach us:</p><table><tr><td>Phone</td><td>+49 40 555 <b>0177</b></td></tr>"
            "<tr><td>Email</td><td>help@example.com<br>billing@example.com</td></tr></table><p>Thank you.</p>"
        ),
        "contact.html",
    )
    assert "| Phone | +49 40 555 0177 |\n| Email | help@example.com billing@example.com |" in text
    assert "---" not in text
    assert rows_of(text) == ["Phone — +49 40 555 0177.", "Email — help@example.com billing@example.com."]


def test_html_header_spans_name_each_column_and_body_spans_keep_their_meaning():
    text = parse(
        html(
            "<table><thead><tr><th rowspan='2'>Plan</th><th colspan='2'>Price</th></tr>"
            "<tr><th>Monthly</th><th>Yearly</th></tr></thead><tbody>"
            "<tr><td>Team</td><td>€8</td><td>€80</td></tr>"
            "<tr><td colspan='3'>For larger companies</td></tr>"
            "<tr><td rowspan='2'>Pro</td><td colspan='2'>on request</td></tr>"
            "<tr><td><p>€12</p><p>per seat</p></td><td>€120 | yearly</td></tr></tbody></table>"
        ),
        "plans.html",
    )
    assert text.splitlines()[:2] == ["| Plan | Price Monthly | Price Yearly |", "|---|---|---|"]
    assert "| For larger companies | | |" in text  # a cell across the whole row is written once
    assert rows_of(text) == [
        "Plan: Team — Price Monthly: €8; Price Yearly: €80.",
        "Plan: For larger companies.",
        "Plan: Pro — Price Monthly: on request; Price Yearly: on request.",
        "Plan: Pro — Price Monthly: €12 per seat; Price Yearly: €120 | yearly.",  # a cell's own "|" stays text
    ]


def test_a_first_row_of_th_is_the_header_and_layout_tables_stay_text():
    text = parse(
        html(
            "<table><tr><td><h2>Opening hours</h2><p>We are open every day.</p></td></tr></table>"
            "<table><tr><th>Day</th><th>Hours</th></tr><tr><td>Monday</td><td>9–17</td></tr></table>"
            "<table><tr><td>A single column is not a table of values.</td></tr></table>"
        ),
        "hours.html",
    )
    assert "We are open every day." in text and "A single column is not a table of values." in text
    assert "| We are open" not in text and "| A single column" not in text
    assert rows_of(text) == ["Day: Monday — Hours: 9–17."]


# --- Markdown ------------------------------------------------------------------------------------------------


def test_markdown_rows_keep_empty_cells_in_their_columns():
    text = parse("# Fees\n\n| Fee | Basic | Plus |\n|---|---|---|\n| Card | | €5 |\n| | €1 | €2 |\n", "fees.md")
    assert "| Card | | €5 |" in text
    assert rows_of(text) == ["Fee: Card — Plus: €5."]  # a row without its first cell continues the one above


# --- chunking ------------------------------------------------------------------------------------------------


def table(rows: int, words: int = 6) -> str:
    header = "| Code | Meaning | Fix |\n|---|---|---|"
    body = [
        f"| C-{n} | {' '.join(f'm{n}w{i}' for i in range(words))} | {' '.join(['do'] * words)} |" for n in range(rows)
    ]
    return "\n".join([header, *body])


@pytest.mark.parametrize("overlap", [0, 12])
def test_chunks_cut_between_rows_repeat_the_header_and_count_it(overlap):
    text = "Intro sentence here.\n\n" + table(20) + "\n\nA closing sentence after the table."
    drafts = chunk_sections([Section(["Codes"], text)], max_tokens=80, overlap_tokens=overlap)
    assert len(drafts) > 3
    seen: list[str] = []
    for draft in drafts:
        assert draft.token_count == count_tokens(draft.text) <= 80
        lines = draft.text.splitlines()
        rows = [line for line in lines if is_table_row(line) and not is_table_rule(line)]
        if rows:
            first = lines.index(next(line for line in lines if is_table_row(line)))
            assert lines[first : first + 2] == ["| Code | Meaning | Fix |", "|---|---|---|"], draft.text
        assert all(is_table_row(line) for line in lines if "|" in line), draft.text
        seen += [row for row in rows if row != "| Code | Meaning | Fix |"]
        for unit in units(draft.text):
            if unit.kind == ROW:
                assert re.fullmatch(r"Code: C-\d+ — Meaning: (m\d+w\d ?)+; Fix: (do ?)+\.", unit.text), unit.text
    body = table(20).splitlines()[2:]
    assert sorted(set(seen), key=body.index) == body, "every row whole, in order"
    if not overlap:
        assert len(seen) == len(body), "without overlap no row is repeated"


def test_a_row_too_long_for_a_chunk_becomes_labelled_text_that_is_no_table_line():
    giant = " ".join(f"word{i}" for i in range(150))
    text = f"| Code | Meaning |\n|---|---|\n| C-1 | short |\n| C-2 | {giant} |\n| C-3 | short again |"
    drafts = chunk_sections([Section([], text)], max_tokens=60, overlap_tokens=10)
    assert all(d.token_count <= 60 for d in drafts)
    joined = "\n".join(d.text for d in drafts)
    assert "Code: C-2 — Meaning: word0 word1" in joined  # the giant row, labelled, as text
    assert "word149" in joined
    for draft in drafts:
        for line in draft.text.splitlines():
            assert not ("word" in line and is_table_row(line)), line
    rows = [u.text for d in drafts for u in units(d.text) if u.kind == ROW]
    assert "Code: C-1 — Meaning: short." in rows and "Code: C-3 — Meaning: short again." in rows


def test_a_table_without_a_header_is_cut_between_rows_without_a_header_line():
    text = "\n".join(f"| Item {n} | {' '.join(['value'] * 8)} |" for n in range(12))
    drafts = chunk_sections([Section([], text)], max_tokens=50, overlap_tokens=10)
    assert len(drafts) > 2
    for draft in drafts:
        assert all(is_table_row(line) and not is_table_rule(line) for line in draft.text.splitlines())
        assert draft.token_count <= 50


# --- PDF -----------------------------------------------------------------------------------------------------


def pdf_with_table(rows: list[list[str]], ruled: bool = True) -> bytes:
    """A one-page PDF: a sentence, a table (its first row in bold, cells boxed when ``ruled``), a sentence."""
    widths, height, left, top = [150, 120, 120], 20, 50, 650
    ops = ["BT /F1 10 Tf 50 700 Td (Our delivery options are listed below.) Tj ET"]
    for r, row in enumerate(rows):
        y = top - r * height
        x = left
        for c, cell in enumerate(row):
            if ruled:
                ops.append(f"{x} {y} {widths[c]} {height} re S")
            font = "F2" if r == 0 else "F1"
            ops.append(f"BT /{font} 10 Tf {x + 4} {y + 6} Td ({cell}) Tj ET")
            x += widths[c]
    ops.append(f"BT /F1 10 Tf 50 {top - len(rows) * height - 40} Td (Prices include VAT.) Tj ET")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R /F2 6 0 R >> >> >>",
        pdf_files.stream("\n".join(ops).encode("latin-1")),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold >>",
    ]
    return pdf_files.pdf(objects)


RATES = [["Option", "Delivery time", "Price"], ["Standard", "2-3 days", "4.95"], ["Express", "next day", "9.95"]]


def test_a_ruled_pdf_table_is_rows_under_its_bold_header():
    text = parse(pdf_with_table(RATES), "rates.pdf")
    assert text.splitlines() == [
        "Our delivery options are listed below.",
        "",
        "| Option | Delivery time | Price |",
        "|---|---|---|",
        "| Standard | 2-3 days | 4.95 |",
        "| Express | next day | 9.95 |",
        "",
        "Prices include VAT.",
    ]
    assert rows_of(text) == [
        "Option: Standard — Delivery time: 2-3 days; Price: 4.95.",
        "Option: Express — Delivery time: next day; Price: 9.95.",
    ]


def test_a_pdf_table_the_parser_cannot_find_keeps_its_rows_without_a_glued_header():
    """Without ruling lines (or past the time table search may take) the page keeps its plain text; the rows
    are still quoted as rows, but the header's words are not run together in front of them."""
    for data, changes in ((pdf_with_table(RATES, ruled=False), {}), (pdf_with_table(RATES), {"timeout_seconds": 0})):
        text = parse(data, "rates.pdf", **changes)
        assert "|" not in text
        assert rows_of(text) == ["Standard 2-3 days 4.95.", "Express next day 9.95."]
