"""The legacy live feed: ``/ws/events/`` over Django Channels.

Protocol (JSON text frames):
- connect to ``/ws/events/`` (optionally ``?after=N``, and ``&synthetic=show`` for staff
  who want synthetic events such as the prober's ``monitor.probe``; everyone else's feed
  leaves them out). Signed-in users only, others are refused at the handshake. The
  server sends ``{"type": "welcome", "latest_seq": N}``.
- client ``{"type": "resume", "after": N}``: every event with seq > N is replayed from the
  log, then ``{"type": "resumed", "seq": M}``; live events follow.
- server ``{"type": "event", "event": {...}}`` for each event, each seq at most once per
  connection, in seq order except for history the client asks for after live events
  have already been sent to it.
- server ``{"type": "position", "seq": N}``: every event of this feed with seq <= N has
  been sent on this connection (sent when the feed moves past events it leaves out, or
  that are not routed to it, so that the page does not take their seqs for lost events);
  ``resumed`` means the same.
- server ``{"type": "control", "action", ...}``: a rollout control message, to every
  feed or to one user's feeds (their own transport choice).
- client ``{"type": "ping"}`` → ``{"type": "pong", "latest_seq": N}``.
- anything else → ``{"type": "error", "code", "message"}``; the connection stays open.

Exactly once, in order: ``cursor`` is the highest seq sent such that every routed seq at or
below it has been sent. Seq is gapless and follows commit order, so a live event above
``cursor + 1`` means messages were lost in the channel layer, and the missing events are
read from the log before it is sent. Live events at or below ``cursor`` are duplicates.
"""

import asyncio
import json
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from events import selectors
from events.feed_hub import feed_hub, latest_seq
from events.models import Sink
from events.sinks import feed_frame

logger = logging.getLogger(__name__)

REPLAY_PAGE_SIZE = 500
CLOSE_UNAUTHENTICATED = 4401


@database_sync_to_async
def _feed_page(after: int, up_to: int | None, synthetic: bool) -> list[dict[str, Any]]:
    events = selectors.events_after(
        after=after,
        limit=REPLAY_PAGE_SIZE,
        up_to=up_to,
        sink=Sink.WEBSOCKET,
        include_synthetic=synthetic,
    )
    return [selectors.event_to_wire(event) for event in events]


async def _feed_from_log(
    after: int, up_to: int | None = None, *, synthetic: bool
) -> AsyncIterator[dict[str, Any]]:
    """Routed events with ``after < seq (<= up_to)`` from the log, page by page (without
    synthetic events unless ``synthetic``)."""
    while True:
        page = await _feed_page(after, up_to, synthetic)
        for event in page:
            yield event
        if len(page) < REPLAY_PAGE_SIZE:
            return
        after = page[-1]["seq"]


def _parse_after(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        return None
    return value


class EventFeedConsumer(AsyncJsonWebsocketConsumer):
    """One open feed. Live events come from the process's feed hub (events/feed_hub.py),
    not from a channel-layer group membership of its own.

    Exactly once, in order, with two paths sending: the hub sends a live event straight
    away while the feed is up to date, and queues it in ``pending`` while the feed is
    ``behind`` (replaying history, or filling a gap from the log); whoever holds
    ``history_lock`` then sends the queue before letting go.
    """

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels' own dispatch first hops to the sync thread to close stale database
        # connections, for every message. This consumer reaches the database only through
        # database_sync_to_async, which does that itself.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.user_id = user.pk
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        wants_synthetic = query.get("synthetic", [""])[0] == "show"
        self.synthetic = selectors.viewer_sees_synthetic(user, requested=wants_synthetic)
        self.cursor = 0
        self.told = 0  # the highest seq sent, or passed in a position frame
        self.lowest_sent: int | None = None
        self.pending: deque[dict[str, Any]] = deque()
        self.behind = 1  # until the welcome (and any ?after= replay) has gone out
        self.history_lock = asyncio.Lock()
        self.hub = feed_hub()
        async with self.history_lock:
            # Join before reading the log, so nothing committed from here on is missed.
            await self.hub.join(self)
            await self.accept()
            latest = await latest_seq()
            self.cursor = latest
            await self.send_json({"type": "welcome", "latest_seq": latest})
            if wants_synthetic and not self.synthetic:
                await self._send_error(
                    "forbidden", "only staff can show synthetic events; they are left out"
                )
            if "after" in query:
                try:
                    after = _parse_after(int(query["after"][0]))
                except ValueError:
                    after = None
                if after is None:
                    await self._send_error("invalid_after", "after must be a non-negative integer")
                else:
                    await self._replay(after, up_to=latest)
            await self._send_pending()
            self.behind -= 1

    async def disconnect(self, code: int) -> None:
        hub = getattr(self, "hub", None)
        if hub is not None:
            hub.leave(self)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            await self._send_error("unsupported", "send JSON text frames")
            return
        try:
            content = json.loads(text_data)
        except (ValueError, RecursionError):
            await self._send_error("malformed_json", "the message is not valid JSON")
            return
        await self.receive_json(content)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict):
            await self._send_error("invalid", "a message must be a JSON object")
            return
        kind = content.get("type")
        if kind == "resume":
            after = _parse_after(content.get("after"))
            if after is None:
                await self._send_error("invalid_after", "after must be a non-negative integer")
                return
            self.behind += 1
            try:
                async with self.history_lock:
                    await self._replay(after)
                    await self._send_pending()
            finally:
                self.behind -= 1
        elif kind == "ping":
            await self.send_json({"type": "pong", "latest_seq": self.cursor})
        else:
            await self._send_error("unknown_type", "type must be resume or ping")

    # --- from the feed hub -------------------------------------------------------------

    async def feed_live(self, items: list[dict[str, Any]]) -> None:
        """Live events (seq and frame, encoded once by the sink), in seq order."""
        if self.behind:
            self.pending.extend(items)
            return
        for index, item in enumerate(items):
            seq = item["seq"]
            if seq <= self.cursor:
                continue
            if seq > self.cursor + 1:
                # The layer lost messages: fill from the log in a task of this feed's own,
                # so the hub goes on serving the other feeds meanwhile.
                self.pending.extend(items[index:])
                self.behind += 1
                self.catch_up_task = asyncio.create_task(self._catch_up())
                return
            await self._send_item(item)

    async def feed_resync(self, committed_seq: int) -> None:
        """The hub's periodic check: events up to ``committed_seq`` are committed; if this
        feed has not sent them (their live message was lost and nothing came after),
        send them from the log."""
        if self.behind or committed_seq <= self.cursor:
            return
        self.behind += 1
        self.catch_up_task = asyncio.create_task(self._catch_up(up_to=committed_seq))

    async def feed_control(self, control: dict[str, Any]) -> None:
        """A rollout control message, e.g. "switch to the legacy path now"."""
        await self.send_json({"type": "control", **control})

    # --- sending -----------------------------------------------------------------------

    async def _catch_up(self, up_to: int | None = None) -> None:
        try:
            async with self.history_lock:
                if up_to is not None and up_to > self.cursor:
                    async for missing in _feed_from_log(
                        self.cursor, up_to, synthetic=self.synthetic
                    ):
                        await self._send_event(missing)
                    # Every routed event up to ``up_to`` is sent now (skipped ones too).
                    self.cursor = up_to
                await self._send_pending()
        except Exception:
            logger.exception("feed: filling a gap from the log failed; closing the feed")
            await self.close()
        finally:
            self.behind -= 1

    async def _send_pending(self) -> None:
        """Send the queued live events, reading any gap before one from the log. Called
        with ``history_lock`` held."""
        while self.pending:
            item = self.pending.popleft()
            seq = item["seq"]
            if seq <= self.cursor:
                continue
            if seq > self.cursor + 1:
                async for missing in _feed_from_log(self.cursor, seq - 1, synthetic=self.synthetic):
                    await self._send_event(missing)
                self.cursor = seq - 1
            await self._send_item(item)

    async def _replay(self, after: int, up_to: int | None = None) -> None:
        """History after ``after`` (up to ``up_to``, the latest seq read after joining the
        hub, when known), then ``resumed``. Called with ``history_lock`` held."""
        if self.lowest_sent is None:
            # Nothing sent yet: history and live continue from ``after`` in order.
            self.cursor = after
            async for event in _feed_from_log(after, up_to, synthetic=self.synthetic):
                await self._send_event(event)
                self.cursor = event["seq"]
            if up_to is not None and up_to > self.cursor:
                # Everything this feed carries up to ``up_to`` is sent; seqs it leaves out
                # (synthetic, or not routed here) are passed, so they never look lost.
                self.cursor = up_to
        elif after < self.lowest_sent - 1:
            # Live events went out first; send only the older history, never a duplicate.
            async for event in _feed_from_log(
                after, self.lowest_sent - 1, synthetic=self.synthetic
            ):
                await self._send_event(event)
        await self.send_json({"type": "resumed", "seq": self.cursor})

    async def _send_item(self, item: dict[str, Any]) -> None:
        """A live item at ``cursor + 1``: sent, or passed with a position when it is not
        routed to this feed or this feed leaves synthetic events out."""
        seq = item["seq"]
        if item.get("passed") or (item.get("synthetic") and not self.synthetic):
            self.cursor = seq
            await self._send_position()
            return
        await self._send_frame(seq, item["frame"])
        self.cursor = seq

    async def _send_position(self) -> None:
        """Tell the page the cursor when it has passed seqs the page was not sent."""
        if self.cursor > self.told:
            self.told = self.cursor
            await self.send_json({"type": "position", "seq": self.cursor})

    async def _send_event(self, event: dict[str, Any]) -> None:
        await self._send_frame(event["seq"], feed_frame(event))

    async def _send_frame(self, seq: int, frame: str) -> None:
        if self.lowest_sent is None or seq < self.lowest_sent:
            self.lowest_sent = seq
        self.told = max(self.told, seq)
        await self.send(text_data=frame)

    async def _send_error(self, code: str, message: str) -> None:
        await self.send_json({"type": "error", "code": code, "message": message})
