"""Tools: the company's own HTTP APIs that the assistant calls mid-answer to look something up for the customer
who is asking (their order's status, their refund), defined by staff in the admin.

A tool call carries who is asking from the server, signed with the tool's secret, never from the question: the
company's API answers for that identity, so typing another customer's order number reads nothing. Everything the
question supplies is validated and encoded before any request, and the request goes only to the tool's base URL.

- ``signing``: the identity headers, ``signed_headers`` for our side and ``verify`` for the API's (docs show it).
- ``calling``: ``ToolSpec`` (plain data; the ``Tool`` model converts itself to one) and ``call``, one HTTP
  request with its gates (arguments, URL, address, size, time) and a ``ToolResult`` naming its outcome, with the
  request redacted for traces.
- ``admin``: the tools' admin screen, with write-only secrets.
"""
