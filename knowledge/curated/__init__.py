"""Curated answers: what the support team wants the assistant to answer to some questions (``CuratedAnswer``).

- ``indexing``: saving a curated answer puts it in its knowledge base at once, as a ``Document`` of kind
  ``curated`` with one chunk searched like any passage; deactivating or deleting it takes it out.
- ``admin``: the admin screen, whose add form is pre-filled from the query string (``?knowledge_base=<id>&
  questions=<lines>``), the link the knowledge gaps of the insights page give.

When a question matches one of a curated answer's questions, the answerer gives that answer, cited as "Answer from
the support team" (knowledge/answering/curated.py; docs/analytics.md "Curated answers").
"""
