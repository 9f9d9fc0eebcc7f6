"""Admission control: a node prepares at most ``CHAT_MAX_CONCURRENT_ANSWERS`` answers at once (retrieval and
composing, up to the first token; streaming the rest is cheap); the rest wait in line, first come first served,
and each waiting customer is told their place and a time estimate. One customer holds at most half of the slots:
the rest of their questions wait in line, so they cannot take every slot from the others.

Why: answers are CPU work. Started all at once on a saturated node they all slowed down together (first token
after 110 s at 1 000 customers, answers reaped, handshakes timing out); in line, the first ones finish at full
speed and the others know how long they wait. The line is bounded by ``CHAT_NODE_QUEUE_LIMIT``: a question asked
when it is full is refused with ``busy`` and a ``retry_after`` (chat.ask, before anything is saved).

Before it enters this line an answer takes one of its customer's streams: at most ``CHAT_MAX_STREAMS_PER_USER``
answers of one customer generate at once across every node (customer_streams.py; ``Slot`` takes both).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable, Hashable

from django.conf import settings

from conversations.streaming import customer_streams

POSITION_EVERY_SECONDS = 3.0  # a waiting answer hears about its place at most this often (and when it changes)
_SMOOTHING = 0.2  # weight of the newest answer in the running average of answer durations


class Admission:
    """The line in front of this node's answer slots (one per event loop).

    One requester (a customer: ``Conversation.requester``) holds at most half of the slots, rounded up
    (``per_requester``): a customer who asks eight questions at once in eight conversations gets four slots and
    waits in line for the rest, so another customer's question always finds a slot the first one cannot take.
    """

    def __init__(self, slots: int) -> None:
        self.slots = max(1, slots)
        self.per_requester = (self.slots + 1) // 2
        self.running = 0
        self.held: collections.Counter[Hashable] = collections.Counter()  # slots per requester
        self.line: collections.deque[tuple[Hashable, asyncio.Future]] = collections.deque()
        self.average_seconds = 5.0  # until answers have been measured

    def full(self) -> bool:
        """No room left in the line (``CHAT_NODE_QUEUE_LIMIT``): new questions are refused, not queued."""
        return self.running >= self.slots and len(self.line) >= settings.CHAT_NODE_QUEUE_LIMIT

    def estimate(self, position: int) -> float:
        """Seconds until the answer at ``position`` (1 = next) starts: whole rounds of the slots ahead of it."""
        return self.average_seconds * ((position - 1) // self.slots + 1)

    def retry_after(self) -> int:
        return max(1, round(self.estimate(len(self.line) + 1)))

    def _may_start(self, requester: Hashable) -> bool:
        return self.running < self.slots and self.held[requester] < self.per_requester

    def _start(self, requester: Hashable) -> None:
        self.running += 1
        self.held[requester] += 1

    async def enter(self, told: Callable[[int, float], Awaitable[None]], requester: Hashable) -> None:
        """Wait for a slot for ``requester``; while waiting, ``told(position, seconds)`` whenever the place changes
        (and at most once per POSITION_EVERY_SECONDS). Cancelled while waiting: leaves the line.

        Whoever waits in line while a slot is free is a requester at their share (``leave`` hands a freed slot to
        the first one in line who may take it), so a requester below theirs takes a free slot at once."""
        if self._may_start(requester):
            self._start(requester)
            return
        turn = asyncio.get_running_loop().create_future()
        entry = (requester, turn)
        self.line.append(entry)
        self._count()
        last = None
        try:
            while not turn.done():
                position = self.line.index(entry) + 1
                if position != last:
                    last = position
                    await told(position, self.estimate(position))
                try:
                    await asyncio.wait_for(asyncio.shield(turn), POSITION_EVERY_SECONDS)
                except TimeoutError:
                    pass
        except BaseException:
            if entry in self.line:
                self.line.remove(entry)
                self._count()
            elif turn.done() and not turn.cancelled():
                self.leave(0.0, requester)  # we were given the slot as we were cancelled: pass it on
            raise

    def leave(self, seconds: float, requester: Hashable) -> None:
        """``requester``'s answer ended after ``seconds``: its slot goes to the first in line who may take it."""
        if seconds > 0:
            self.average_seconds += _SMOOTHING * (seconds - self.average_seconds)
        self.running = max(0, self.running - 1)
        self.held[requester] -= 1
        if self.held[requester] <= 0:
            del self.held[requester]
        for entry in list(self.line):
            if self.running >= self.slots:
                break
            waiting, turn = entry
            if turn.done():  # cancelled: it leaves the line itself
                continue
            if self._may_start(waiting):
                self.line.remove(entry)
                self._start(waiting)
                turn.set_result(None)
        self._count()

    def _count(self) -> None:
        from chatsite import metrics

        metrics.ANSWERS_QUEUED.set(len(self.line))


_admissions: dict[asyncio.AbstractEventLoop, Admission] = {}


def admission() -> Admission:
    """This event loop's line (one node per loop)."""
    loop = asyncio.get_running_loop()
    found = _admissions.get(loop)
    if found is None:
        for closed in [known for known in _admissions if known.is_closed()]:
            del _admissions[closed]
        found = _admissions[loop] = Admission(settings.CHAT_MAX_CONCURRENT_ANSWERS)
    return found


class Slot:
    """``async with Slot(told, requester) as slot:`` — hold one of the customer's streams (customer_streams.py) for
    the whole body, and one of the node's answer slots until ``slot.release()`` (the answer's first token: retrieval
    and composing are the work a node slot bounds; streaming a paced answer costs little) or the end of the body,
    whichever comes first. ``requester``: whose share of the slots it counts against (``Conversation.requester``);
    None: a requester of its own, bound by neither.

    The customer's stream is taken first: an answer waiting for its customer's other answers holds no node slot, so
    one customer's many questions never keep another customer's from starting. While it waits, ``told_own()`` says
    so once (its ``status(queued)`` frame, text ``customer_streams.waiting_text()``); without it, ``told`` hears the
    answer's place in its customer's line.
    """

    def __init__(
        self,
        told: Callable[[int, float], Awaitable[None]],
        requester: Hashable | None = None,
        *,
        told_own: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.told = told
        self.told_own = told_own
        self.requester = requester if requester is not None else object()
        self.stream = customer_streams.stream_for(requester)
        self.started = 0.0
        self.held = False

    async def _waits_for_own(self, position: int) -> None:
        if self.told_own is not None:
            await self.told_own()
        elif self.told is not None:
            await self.told(position, admission().average_seconds * position)

    async def __aenter__(self) -> Slot:
        await self.stream.enter(self._waits_for_own)
        try:
            await admission().enter(self.told, self.requester)
        except BaseException:
            await asyncio.shield(self.stream.leave())
            raise
        self.started = time.monotonic()
        self.held = True
        return self

    def release(self) -> None:
        """The node's slot goes to the next in line (the customer's stream is kept until the body ends)."""
        if self.held:
            self.held = False
            admission().leave(time.monotonic() - self.started, self.requester)

    async def __aexit__(self, *exc: object) -> None:
        self.release()
        await asyncio.shield(self.stream.leave())
