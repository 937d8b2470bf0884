"""The legacy feed's fan-out inside one daphne process.

When every open feed was its own member of the channel-layer group, each event was
queued, woken, decoded and dispatched once per consumer: at hundreds of dashboards per
process that was most of daphne's CPU and the legacy path's latency. Instead each event
loop (one per daphne process) has one hub, the process's single member of the group,
which hands every batch to the open feeds in memory. The feeds keep their own
exactly-once logic (events/consumers.py); the hub only passes messages on.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any, Protocol

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from events import selectors
from events.models import Sink
from events.sinks import CONTROL_MESSAGE_TYPE, FEED_GROUP, FEED_MESSAGE_TYPE, feed_frame

logger = logging.getLogger(__name__)

REJOIN_DELAY_SECONDS = 1.0
# The channel layer is at-most-once. A feed notices a lost message when the next live
# event shows the gap; if none comes (the last event before a quiet spell was lost, or
# Redis was down), this check catches it up from the log.
RESYNC_SECONDS = 5.0
# Seq follows commit order, but two publishers' messages can reach the layer in the
# other order (each is sent after its own commit). A feed that saw the later one first
# would read the gap from the log, every feed of the process one query after another
# through the one database thread: under load that backlog feeds itself. The hub holds a
# message that arrives ahead of a missing seq this long for the missing one to come.
REORDER_WAIT_SECONDS = 0.25
# What the hub reads from the log at once when a live message is lost (or the hub is
# behind the log): one read for every feed of the process instead of one per feed.
HUB_FILL_LIMIT = 500


class FeedListener(Protocol):
    user_id: int

    async def feed_live(self, items: list[dict[str, Any]]) -> None: ...

    async def feed_control(self, control: dict[str, Any]) -> None: ...

    async def feed_resync(self, committed_seq: int) -> None: ...


class FeedHub:
    def __init__(self) -> None:
        self.listeners: set[FeedListener] = set()
        self._joined: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        # The seq the next live item should carry (None: nothing handed out yet), the
        # items held until it comes, and the timer that hands them out regardless.
        self._next_seq: int | None = None
        self._held: list[dict[str, Any]] = []
        self._held_timer: asyncio.Task[None] | None = None
        self._handing_out = asyncio.Lock()

    async def join(self, listener: FeedListener) -> None:
        """Add ``listener``; returns once the hub is in the group, so that anything
        committed after this returns reaches the listener. Raises if the channel layer
        cannot be reached (the caller refuses the connection; the next join retries)."""
        if self._task is None or self._task.done():
            self._joined = asyncio.get_running_loop().create_future()
            self._task = asyncio.create_task(self._run(self._joined))
        await asyncio.shield(self._joined)
        self.listeners.add(listener)

    def leave(self, listener: FeedListener) -> None:
        self.listeners.discard(listener)

    async def _run(self, joined: asyncio.Future[None]) -> None:
        layer = get_channel_layer()
        try:
            channel = await layer.new_channel()
            await layer.group_add(FEED_GROUP, channel)
        except Exception as exc:
            joined.set_exception(exc)
            return
        joined.set_result(None)
        resync = asyncio.create_task(self._resync_forever())
        try:
            await self._receive_forever(layer, channel)
        finally:
            resync.cancel()

    async def _receive_forever(self, layer, channel: str) -> None:  # noqa: ANN001
        while True:
            try:
                message = await layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a list-based layer raises while Redis is away
                logger.warning("feed hub: channel layer receive failed: %s", exc)
                await asyncio.sleep(REJOIN_DELAY_SECONDS)
                await _rejoin(layer, channel)
                continue
            await self._hand_out(message)

    async def _resync_forever(self) -> None:
        # Feeds are asked to be at the seq read one period earlier: an event committed
        # that long ago whose live message has not come is lost, not merely in flight.
        committed_a_period_ago: int | None = None
        while True:
            await asyncio.sleep(RESYNC_SECONDS)
            if not self.listeners:
                committed_a_period_ago = None
                continue
            try:
                latest = await latest_seq()
            except Exception as exc:
                logger.warning("feed hub: could not read the latest seq: %s", exc)
                continue
            if committed_a_period_ago is not None:
                # Never beyond the log as it is now: a log that was reset (tests flush
                # it between cases) must not move feeds past seqs it has not reached.
                committed = min(committed_a_period_ago, latest)
                # Read once for every feed what the hub itself has not handed out; the
                # feeds' own check below then finds them up to date.
                await self._fill_from_log(up_to=committed)
                for listener in list(self.listeners):
                    await _call(listener.feed_resync, committed)
            committed_a_period_ago = latest

    async def _hand_out(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == FEED_MESSAGE_TYPE:
            await self._live(message["events"])
        elif kind == CONTROL_MESSAGE_TYPE:
            # A control message addressed to one user goes to that user's feeds only.
            user_id = message.get("user_id")
            for listener in list(self.listeners):
                if user_id is None or listener.user_id == user_id:
                    await _call(listener.feed_control, message["control"])

    async def _live(self, items: list[dict[str, Any]]) -> None:
        """Hand live items to the feeds in seq order, holding those that arrive ahead of a
        missing seq for up to ``REORDER_WAIT_SECONDS``."""
        async with self._handing_out:
            self._held.extend(items)
            self._held.sort(key=lambda item: item["seq"])
            if self._next_seq is not None and self._held[0]["seq"] > self._next_seq:
                if self._held_timer is None:
                    self._held_timer = asyncio.create_task(self._hand_out_held_later())
                return
            await self._hand_out_held()

    async def _hand_out_held_later(self) -> None:
        await asyncio.sleep(REORDER_WAIT_SECONDS)
        async with self._handing_out:
            self._held_timer = None
            # The missing seqs did not come: lost, not late. Every seq below a held one is
            # committed (seq follows commit order), so the log has them: read them once.
            if self._held and self._next_seq is not None:
                await self._read_into_held(self._next_seq - 1, self._held[0]["seq"] - 1)
            await self._hand_out_held()

    async def _fill_from_log(self, *, up_to: int) -> None:
        """Hand out, from the log, the committed seqs up to ``up_to`` that the hub has not."""
        async with self._handing_out:
            if self._next_seq is None or up_to < self._next_seq:
                return
            await self._read_into_held(self._next_seq - 1, up_to)
            await self._hand_out_held()

    async def _read_into_held(self, after: int, up_to: int) -> None:
        """Add the log's items for ``after < seq <= up_to`` to the held ones. A failed read
        adds nothing: the feeds then fill the gap themselves."""
        # A long outage is caught up a bounded read at a time (the next check goes on).
        up_to = min(up_to, after + HUB_FILL_LIMIT)
        if up_to <= after:
            return
        try:
            self._held.extend(await log_items(after, up_to))
        except Exception as exc:
            logger.warning("feed hub: reading seqs %s..%s failed: %s", after + 1, up_to, exc)
            return
        self._held.sort(key=lambda item: item["seq"])

    async def _hand_out_held(self) -> None:
        """Called with ``_handing_out`` held."""
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None
        items, self._held = self._held, []
        if not items:
            return
        # Never backwards: an older seq (a duplicate, or a log reset in tests) must not
        # make the hub wait for seqs it has handed out already.
        self._next_seq = max(self._next_seq or 0, items[-1]["seq"] + 1)
        for listener in list(self.listeners):
            await _call(listener.feed_live, items)


async def _call(method, argument) -> None:  # noqa: ANN001
    # One feed's failure (its socket gone mid-send) must not stop the others.
    try:
        await method(argument)
    except Exception:
        logger.exception("feed hub: a feed failed to take a message")


async def _rejoin(layer, channel: str) -> None:  # noqa: ANN001
    try:
        await layer.group_add(FEED_GROUP, channel)
    except Exception as exc:
        logger.warning("feed hub: could not rejoin the feed group yet: %s", exc)


@database_sync_to_async
def log_items(after: int, up_to: int) -> list[dict[str, Any]]:
    """Live items, as the sink sends them, for the committed seqs ``after < seq <= up_to``
    (at most ``HUB_FILL_LIMIT`` events): a seq the log does not route to this feed is a
    ``passed`` marker, since below a committed seq every seq is committed."""
    events = selectors.events_after(
        after=after, limit=HUB_FILL_LIMIT, up_to=up_to, sink=Sink.WEBSOCKET
    )
    complete = len(events) < HUB_FILL_LIMIT
    items: list[dict[str, Any]] = []
    expected = after + 1
    for event in events:
        items += [{"seq": seq, "passed": True, "frame": ""} for seq in range(expected, event.seq)]
        items.append(
            {
                "seq": event.seq,
                "frame": feed_frame(selectors.event_to_wire(event)),
                "synthetic": selectors.event_is_synthetic(event.event_type),
            }
        )
        expected = event.seq + 1
    if complete:
        items += [{"seq": seq, "passed": True, "frame": ""} for seq in range(expected, up_to + 1)]
    return items


@database_sync_to_async
def latest_seq() -> int:
    """The newest committed seq, read in the sync thread."""
    return selectors.event_latest_seq()


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, FeedHub] = weakref.WeakKeyDictionary()


def feed_hub() -> FeedHub:
    """The running event loop's hub (daphne runs one loop per process)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = FeedHub()
    return hub
