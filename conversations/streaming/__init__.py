"""Generating answers independently of any socket: numbering, the frame log for ``resume``, fan-out, and leases.

The package, one concern per module: ``framelog`` (the per-message frame log), ``stream`` (one message's
frames: numbering, publishing, finishing, replay), ``generation`` (the answer pipeline turned into frames),
``workers`` (the per-conversation queue and claims), ``cancelling`` (stop an answer from any node), ``leases``
(renewal thread, node heartbeats), ``reaper`` (closing dead nodes' answers), ``node`` (the control channel and
the periodic passes) and ``shutdown``.

An answer is produced by a task owned by a process (a *node*), not by the WebSocket that asked, so a dropped
connection never stops it. For each assistant message a single ``MessageStream`` numbers its frames (seq 1, 2,
3…), appends each to the message's frame log (Redis list with a TTL when ``REDIS_URL`` is set, readable by every
node; an in-process dict otherwise — one process only) and then publishes it to the conversation's channel-layer
group ``conv.<hex>``, which every socket showing the conversation, on any node, has joined. The append is a
compare-and-append on the expected ``seq``, so two writers can never both own a ``seq``. ``replay()`` reads the
log, or rebuilds the frames from PostgreSQL once the log has expired.

Several nodes (docs/architecture.md, "Several nodes"):

* **The queue is the database.** An assistant message in state ``streaming`` that nobody has claimed is a queued
  answer. A per-conversation ``ConversationWorker`` on some node *claims* the oldest one under a row lock on the
  conversation, and only when no other answer of that conversation holds a live lease: generation is single-flight
  per conversation across all nodes, in the order the questions were asked.
* **Leases.** A claimed message has ``lease_owner`` (the node's control channel) and ``lease_expires_at``, renewed
  by the node every ``CHAT_REAPER_INTERVAL_SECONDS``. The same periodic ``Node`` task, on every node, reaps
  messages whose lease lapsed (their node died, e.g. SIGKILL): it closes them ``interrupted`` with the partial
  text rebuilt from the frame log, publishes their ``final`` and restarts the conversation's queue. Detection
  time: at most ``CHAT_LEASE_SECONDS + CHAT_REAPER_INTERVAL_SECONDS`` after the node's last renewal.
* **Cancel from anywhere.** ``cancel_message`` / ``cancel_conversation`` end a queued answer directly in the
  database; for a claimed one they set ``Message.cancel_requested`` (durable) and send ``stream.cancel`` to the
  owner's control channel (fast). The owner also re-reads the flag at every renewal.
"""

from conversations.streaming.cancelling import cancel_conversation, cancel_message
from conversations.streaming.framelog import MemoryFrameLog, RedisFrameLog, frame_log
from conversations.streaming.generation import generate
from conversations.streaming.node import Node, ensure_node, start_node_when_serving
from conversations.streaming.reaper import reap_expired
from conversations.streaming.shutdown import shutdown
from conversations.streaming.stream import LeaseLost, MessageStream, frames_from_db, publish, replay
from conversations.streaming.workers import claim_next, kick, start

__all__ = [
    "LeaseLost",
    "MemoryFrameLog",
    "MessageStream",
    "Node",
    "RedisFrameLog",
    "cancel_conversation",
    "cancel_message",
    "claim_next",
    "ensure_node",
    "frame_log",
    "frames_from_db",
    "generate",
    "kick",
    "publish",
    "reap_expired",
    "replay",
    "shutdown",
    "start",
    "start_node_when_serving",
]
