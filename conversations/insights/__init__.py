"""The insights a support lead reads at ``/console/insights/`` (docs/analytics.md defines every figure).

One module per concern: ``period`` (the date range, day or week, knowledge base and site chosen), ``metrics``
(the period table: two GROUP BY statements over indexed columns, never a row of Python per conversation),
``gaps`` (knowledge gaps grouped by the similarity of their questions), ``reviews`` (the 👎 review queue and
its one action), ``charts`` (SVG drawn on the server), ``export`` (the table as CSV) and ``views`` (the pages).
Everything here only reads what ``conversations/outcomes.py`` and the answer path write, except the review's mark.
"""
