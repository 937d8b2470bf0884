"""Sinks: where a stored event goes after commit.

The websocket sink hands events to the channel layer group that every legacy feed
consumer listens on. Channels is at-most-once, so a lost group message is not a lost
event: consumers notice the gap in seq and read the missing events from the log.
"""

import json
import logging
from collections.abc import Iterator, Sequence

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection
from django.db.models import F
from django.utils import timezone

from events.models import Delivery, DeliveryStatus, Event, Sink
from events.selectors import event_is_synthetic, event_to_wire

logger = logging.getLogger(__name__)

FEED_GROUP = "events.feed"
FEED_MESSAGE_TYPE = "events.batch"
CONTROL_MESSAGE_TYPE = "control.message"
# Large batches are split so that one channel-layer message stays small.
MAX_MESSAGE_BYTES = 256 * 1024


def feed_frame(wire_event: dict) -> str:
    """The legacy feed's text frame for one event (see events/consumers.py).

    Encoded once here, not once per consumer: with hundreds of dashboards on a daphne
    process, per-consumer encoding was a large share of the fan-out's CPU.
    """
    return json.dumps({"type": "event", "event": wire_event})


def _chunks(items: list[dict]) -> Iterator[list[dict]]:
    chunk: list[dict] = []
    size = 0
    for item in items:
        item_size = len(item["frame"]) + 64
        if chunk and size + item_size > MAX_MESSAGE_BYTES:
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += item_size
    if chunk:
        yield chunk


async def _group_send_all(chunks: list[list[dict]]) -> None:
    # One trip into the event loop for the whole batch, not one per chunk.
    layer = get_channel_layer()
    for chunk in chunks:
        await layer.group_send(FEED_GROUP, {"type": FEED_MESSAGE_TYPE, "events": chunk})


def websocket_sink_send(*, events: list[Event], passed_seqs: Sequence[int] = ()) -> None:
    """Broadcast committed events to the legacy feed and record the outcome.

    ``passed_seqs``: seqs of the same commit that are not routed to this feed. They go out
    as markers without content, so that the feed stream stays gapless: a gap makes every
    open feed read the log (one query per feed, through one thread per process), which is
    kept for the rare message the channel layer really loses.

    Called after commit (``transaction.on_commit``), and after the publisher's answer when
    there is one (``monitor_project.after_response``); it never raises, because the events
    are already durable.
    """
    if not events and not passed_seqs:
        return
    seqs = [event.seq for event in events]
    try:
        items = [
            {
                "seq": event.seq,
                "frame": feed_frame(event_to_wire(event)),
                # Feeds that leave synthetic events out still move their cursor past them.
                "synthetic": event_is_synthetic(event.event_type),
            }
            for event in events
        ]
        items += [{"seq": seq, "passed": True, "frame": ""} for seq in passed_seqs]
        items.sort(key=lambda item: item["seq"])
        async_to_sync(_group_send_all)(list(_chunks(items)))
    except Exception as exc:
        every_seq = [*seqs, *passed_seqs]
        logger.warning(
            "websocket sink failed for seqs %s..%s: %s", min(every_seq), max(every_seq), exc
        )
        # Built here, not up front: building the queryset cost ~0.1 ms on every
        # publish, and only a failure needs one.
        Delivery.objects.filter(
            event_id__in=seqs, sink=Sink.WEBSOCKET, status=DeliveryStatus.PENDING
        ).update(
            status=DeliveryStatus.FAILED,
            attempts=F("attempts") + 1,
            last_error=f"{type(exc).__name__}: {exc}"[:1000],
            updated_at=timezone.now(),
        )
        return
    if not seqs:
        return
    # Bookkeeping, not data: if a crash loses this mark the delivery merely stays pending
    # (nothing re-sends websocket deliveries), so its commit need not wait for the WAL
    # flush (set_config(..., true) lasts for this statement's own transaction). One
    # statement and an unflushed commit instead of the ORM's update and a flushed commit:
    # ~2 ms less on every publish request (docs/latency.md).
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH unflushed AS (SELECT set_config('synchronous_commit', 'off', true))
            UPDATE {Delivery._meta.db_table}
            SET status = %s, attempts = attempts + 1, sent_at = %s, updated_at = %s
            FROM unflushed
            WHERE event_id = ANY(%s) AND sink = %s AND status = %s
            """,
            [DeliveryStatus.SENT, now, now, seqs, Sink.WEBSOCKET, DeliveryStatus.PENDING],
        )


def control_broadcast_legacy(*, control: dict, user_id: int | None = None) -> None:
    """Send a control message to every open legacy feed (e.g. a rollback's switch order),
    or with ``user_id`` only to that user's open feeds (e.g. their own transport choice).

    Raises when the channel layer cannot be reached; the caller decides what that means.
    """
    message: dict = {"type": CONTROL_MESSAGE_TYPE, "control": control}
    if user_id is not None:
        message["user_id"] = user_id
    layer = get_channel_layer()
    async_to_sync(layer.group_send)(FEED_GROUP, message)
