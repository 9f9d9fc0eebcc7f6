"""/metrics: this node's numbers in the Prometheus text format, for staff or the networks allowed to scrape.

Every metric is defined here, once; the code that counts imports it (the consumers count sockets and frames,
``conversations.streaming`` answers and token timing, ``knowledge.retrieval`` search and embedding time).
Values are per process, i.e. per Daphne node: scrape every node. The knowledge-base figures that live in the
database (answers waiting, ingestion queue, failed documents) are read at scrape time.

Access: a signed-in staff member, or a client whose address is in ``METRICS_ALLOWED_NETWORKS`` (CIDRs; the
direct peer's address — behind a proxy, allow the scraper's network on the node's own port, not the public
one). Everyone else gets 403.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from conversations import protocol

disable_created_metrics()  # no "<name>_created" series: a scrape shows what is counted, nothing else

#: Seconds, for latencies from a few milliseconds to a slow LLM's first token.
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

OPEN_SOCKETS = Gauge("chat_open_sockets", "WebSocket connections open on this node.", ["socket"])
FRAMES_SENT = Counter("chat_frames_sent_total", "Frames sent to WebSocket clients by this node.", ["socket"])
MALFORMED_FRAMES = Counter(
    "chat_malformed_frames_total", "Client frames refused as malformed (bad_frame, unknown_type, too_large, invalid).",
    ["socket", "code"],
)  # fmt: skip
ANSWERS_STREAMING = Gauge("chat_answers_streaming", "Answers this node is generating now.")
ANSWERS_QUEUED = Gauge("chat_answers_queued", "Answers waiting for one of this node's answer slots.")
ANSWERS_FINISHED = Counter("chat_answers_finished_total", "Answers this node finished, by final state.", ["state"])
ANSWERS_REAPED = Counter("chat_answers_reaped_total", "Answers whose node stopped renewing, closed by this node.")
SOCKETS_EVICTED = Counter(
    "chat_sockets_evicted_total",
    "Sockets of this node closed (4429) because their user opened more than CHAT_MAX_SOCKETS_PER_USER.",
    ["socket"],
)
SLOW_CLIENTS_CLOSED = Counter(
    "chat_slow_clients_closed_total", "WebSockets closed because their client stopped reading (over the send buffer)."
)
HANDSHAKES_REFUSED = Counter(
    "chat_handshakes_refused_total", "WebSocket handshakes closed with 4013: too many waiting, or their turn came too late."
)
ACCEPT_PAUSES = Counter(
    "chat_accept_pauses_total", "Times the node stopped accepting connections while its handshakes caught up."
)
FIRST_TOKEN = Histogram(
    "chat_first_token_seconds", "From the start of an answer's generation to its first token.", buckets=_LATENCY
)
TOKEN_GAP = Histogram("chat_token_gap_seconds", "Between two tokens of one answer.", buckets=_LATENCY)
RETRIEVAL = Histogram("knowledge_retrieval_seconds", "One knowledge-base search, embedding included.", buckets=_LATENCY)
QUERY_EMBEDDING = Histogram("knowledge_query_embedding_seconds", "Embedding one search query.", buckets=_LATENCY)
EMBEDDING_BATCH = Histogram(
    "knowledge_embedding_batch_size", "Texts per call to the embedding model.", ["kind"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)  # fmt: skip
TOOL_CALLS = Counter(
    "knowledge_tool_calls_total", "Tool runs by tool and outcome (ok, a refusal before any request, or how the "
    "company's API failed: knowledge/tools/running.py).", ["tool", "outcome"],
)  # fmt: skip
TOOL_LATENCY = Histogram(
    "knowledge_tool_call_seconds", "One tool call to the company's API, resolving to the last byte.", ["tool"],
    buckets=_LATENCY,
)  # fmt: skip
ANSWERS_WAITING = Gauge("chat_answers_waiting", "Answers queued behind another in their conversation (database).")
INGESTION_QUEUE = Gauge("knowledge_ingestion_queue", "Documents waiting for or in ingestion (database).")
INGESTION_FAILED = Gauge("knowledge_documents_failed", "Documents whose last ingestion failed (database).")


#: ``EMBEDDING_BATCH`` kinds: a search query, chunks at ingestion, a chunk's sentences.
QUERY, PASSAGES, SENTENCES = "query", "passages", "sentences"

# Every label value a dashboard may look for exists from the start (0), not only after its first event.
for _socket in ("chat", "console"):
    OPEN_SOCKETS.labels(_socket)
    FRAMES_SENT.labels(_socket)
    for _code in sorted(protocol.MALFORMED):
        MALFORMED_FRAMES.labels(_socket, _code)
for _state in (protocol.COMPLETE, protocol.CANCELLED, protocol.FAILED, protocol.INTERRUPTED):
    ANSWERS_FINISHED.labels(_state)
for _kind in (QUERY, PASSAGES, SENTENCES):
    EMBEDDING_BATCH.labels(_kind)


def allowed(request: HttpRequest) -> bool:
    """Staff, or a peer address inside ``METRICS_ALLOWED_NETWORKS``."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(network, strict=False) for network in settings.METRICS_ALLOWED_NETWORKS)


def _read_database_figures() -> None:
    from conversations.models import Message
    from knowledge.models import Document

    ANSWERS_WAITING.set(
        Message.objects.filter(role=Message.Role.ASSISTANT, state=Message.State.STREAMING, lease_owner="").count()
    )
    INGESTION_QUEUE.set(
        Document.objects.filter(status__in=[Document.Status.PENDING, Document.Status.PROCESSING]).count()
    )
    INGESTION_FAILED.set(Document.objects.filter(status=Document.Status.FAILED).count())


def metrics(request: HttpRequest) -> HttpResponse:
    if not allowed(request):
        return HttpResponse("Metrics are for staff or the networks in METRICS_ALLOWED_NETWORKS.\n", status=403,
                            content_type="text/plain")  # fmt: skip
    _read_database_figures()
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
