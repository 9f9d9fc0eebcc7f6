"""What can be wrong with a document itself: errors that retrying will never fix.

Each message is shown to the staff member who uploaded the file (on the document's row in the admin), so it
says what is wrong and, where there is one, what to do about it. The queue (``knowledge.tasks``) fails a job
raising one of these at once instead of retrying it as if the database were down.
"""

from __future__ import annotations


class DocumentError(ValueError):
    """The document cannot be ingested as it is; the message says why."""


class UnsupportedFileType(DocumentError):
    """The file's extension is not one we can parse."""


class ParseError(DocumentError):
    """The file could not be read; the message is shown to the person who uploaded it."""


class LimitExceeded(DocumentError):
    """The document is over one of the ingestion limits (``knowledge.ingest.limits``); the message names the
    limit, its setting and how far over it the document is."""
