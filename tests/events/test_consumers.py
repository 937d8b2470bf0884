"""The legacy live feed at /ws/events/, through the real ASGI stack and Redis."""

import asyncio
import threading

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import close_old_connections, connection
from django.test import Client

from events import sinks
from events.services import event_publish, event_publish_batch
from monitor_project.asgi import application

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(120),
]

RECEIVE_TIMEOUT = 10


async def open_feed(user, *, query: str = "", origin: bytes = b"http://127.0.0.1:8000"):
    headers = [(b"origin", origin), (b"host", b"127.0.0.1:8000")]
    if user is not None:
        client = Client()
        await sync_to_async(client.force_login)(user)
        headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
    communicator = WebsocketCommunicator(application, f"/ws/events/{query}", headers=headers)
    connected, _ = await communicator.connect(timeout=RECEIVE_TIMEOUT)
    return communicator, connected


async def next_message(communicator) -> dict:
    return await communicator.receive_json_from(timeout=RECEIVE_TIMEOUT)


async def collect_events(communicator, *, until_seq: int) -> list[int]:
    seqs: list[int] = []
    while not seqs or seqs[-1] < until_seq:
        message = await next_message(communicator)
        if message["type"] == "event":
            seqs.append(message["event"]["seq"])
    return seqs


async def publish(count: int, **fields) -> list[int]:
    events = [{"event_type": "tool.call", "source": "test", **fields} for _ in range(count)]
    results = await sync_to_async(event_publish_batch)(events=events)
    return [r.seq for r in results]


def lose_first_sends(monkeypatch, count: int = 1) -> None:
    """The channel layer loses the sink's next ``count`` messages (it is at-most-once)."""
    real_send = sinks.websocket_sink_send
    calls = {"n": 0}

    def losing(*, events, passed_seqs=()):
        calls["n"] += 1
        if calls["n"] > count:
            real_send(events=events, passed_seqs=passed_seqs)

    monkeypatch.setattr(sinks, "websocket_sink_send", losing)


async def test_anonymous_users_are_refused_at_the_handshake():
    communicator, connected = await open_feed(None)
    assert not connected


async def test_a_foreign_origin_is_refused(user):
    communicator, connected = await open_feed(user, origin=b"http://evil.example")
    assert not connected


async def test_a_signed_in_user_receives_live_events(user):
    communicator, connected = await open_feed(user)
    assert connected
    welcome = await next_message(communicator)
    assert welcome["type"] == "welcome"
    published = await sync_to_async(event_publish)(
        event_type="tool.error", source="worker", payload={"error": "boom"}
    )
    message = await next_message(communicator)
    assert message["type"] == "event"
    event = message["event"]
    assert event["seq"] == published.seq == welcome["latest_seq"] + 1
    assert (event["criticality"], event["payload"]) == ("critical", {"error": "boom"})
    assert event["checksum"] == published.event.checksum
    await communicator.disconnect()


async def test_resume_replays_then_goes_live_with_no_gap_or_duplicate(user):
    history = await publish(30)
    communicator, _ = await open_feed(user)
    await next_message(communicator)  # welcome

    # Publishers keep going while the replay runs, so live events race the seam.
    racing = asyncio.ensure_future(asyncio.gather(*(publish(10) for _ in range(4))))
    await communicator.send_json_to({"type": "resume", "after": history[4]})
    live = await racing
    last = max(max(batch) for batch in live)
    received = await collect_events(communicator, until_seq=last)
    assert received == list(range(history[5], last + 1))
    await communicator.disconnect()


async def test_resume_in_the_url_is_the_same_as_a_resume_message(user):
    history = await publish(5)
    communicator, _ = await open_feed(user, query=f"?after={history[1]}")
    assert (await next_message(communicator))["type"] == "welcome"
    assert await collect_events(communicator, until_seq=history[-1]) == history[2:]
    assert await next_message(communicator) == {"type": "resumed", "seq": history[-1]}


async def test_history_asked_for_after_live_events_is_sent_without_duplicates(user):
    history = await publish(5)
    communicator, _ = await open_feed(user)
    await next_message(communicator)
    live = await publish(2)
    assert await collect_events(communicator, until_seq=live[-1]) == live
    await communicator.send_json_to({"type": "resume", "after": history[1]})
    assert await collect_events(communicator, until_seq=history[-1]) == history[2:]
    assert await next_message(communicator) == {"type": "resumed", "seq": live[-1]}
    more = await publish(1)
    assert await collect_events(communicator, until_seq=more[-1]) == more


async def test_events_lost_by_the_channel_layer_are_filled_from_the_log(user, monkeypatch):
    communicator, _ = await open_feed(user)
    await next_message(communicator)
    lose_first_sends(monkeypatch)
    lost = await publish(3)
    delivered = await publish(1)
    assert await collect_events(communicator, until_seq=delivered[0]) == lost + delivered


async def test_debug_events_routed_away_from_websocket_are_not_sent(user):
    from events.models import Route

    await sync_to_async(Route.objects.filter(criticality="debug").update)(to_websocket=False)
    await sync_to_async(lambda: Route.objects.get(criticality="debug").save())()
    communicator, _ = await open_feed(user)
    await next_message(communicator)
    hidden = await publish(2, event_type="debug.trace")
    shown = await publish(1)
    await communicator.send_json_to({"type": "resume", "after": hidden[0] - 1})
    received = await collect_events(communicator, until_seq=shown[0])
    assert hidden[0] not in received and hidden[1] not in received
    assert received == shown


async def test_events_routed_away_pass_live_with_a_position_and_no_read_of_the_log(
    user, monkeypatch
):
    from events import consumers
    from events.models import Route

    await sync_to_async(Route.objects.filter(criticality="debug").update)(to_websocket=False)
    await sync_to_async(lambda: Route.objects.get(criticality="debug").save())()
    communicator, _ = await open_feed(user)
    await next_message(communicator)
    log_reads = count_log_reads(monkeypatch, consumers)
    hidden = await publish(2, event_type="debug.trace")
    shown = await publish(1)
    assert await next_message(communicator) == {"type": "position", "seq": hidden[0]}
    assert await next_message(communicator) == {"type": "position", "seq": hidden[1]}
    assert (await next_message(communicator))["event"]["seq"] == shown[0]
    assert log_reads == []
    await communicator.disconnect()


def count_calls(monkeypatch, module, name: str) -> list[tuple]:
    """Record the arguments of every call of the coroutine ``module.name`` from now on."""
    calls: list[tuple] = []
    real = getattr(module, name)

    async def counted(*args):
        calls.append(args)
        return await real(*args)

    monkeypatch.setattr(module, name, counted)
    return calls


def count_log_reads(monkeypatch, consumers) -> list[tuple]:
    """Record every page a feed reads from the log from now on."""
    return count_calls(monkeypatch, consumers, "_feed_page")


async def test_messages_that_reach_the_hub_out_of_commit_order_are_handed_out_in_order(
    user, monkeypatch
):
    """Two publishers' messages can reach the layer in the other order than their commits;
    the hub waits for the missing one instead of sending every feed to the log."""
    from events import consumers

    communicator, _ = await open_feed(user)
    await next_message(communicator)
    warm = await publish(1)  # the hub now knows which seq comes next
    assert await collect_events(communicator, until_seq=warm[0]) == warm
    held: list[dict] = []
    real_send = sinks.websocket_sink_send

    def hold_the_first(*, events, passed_seqs=()):
        if not held:
            held.append({"events": events, "passed_seqs": passed_seqs})
            return
        real_send(events=events, passed_seqs=passed_seqs)
        real_send(**held[0])  # the earlier commit's message arrives second

    monkeypatch.setattr(sinks, "websocket_sink_send", hold_the_first)
    log_reads = count_log_reads(monkeypatch, consumers)
    first = await publish(1)
    second = await publish(2)
    assert await collect_events(communicator, until_seq=second[-1]) == first + second
    assert log_reads == []
    await communicator.disconnect()


async def test_a_message_lost_for_good_is_filled_from_the_log_after_the_hubs_wait(
    user, monkeypatch
):
    from events import consumers

    communicator, _ = await open_feed(user)
    await next_message(communicator)
    warm = await publish(1)
    assert await collect_events(communicator, until_seq=warm[0]) == warm
    lose_first_sends(monkeypatch)
    log_reads = count_log_reads(monkeypatch, consumers)
    lost = await publish(1)
    after = await publish(1)
    assert await collect_events(communicator, until_seq=after[0]) == lost + after
    # The hub read the lost seq once for every feed; the feed itself read nothing.
    assert log_reads == []
    await communicator.disconnect()


async def test_a_lost_message_costs_one_read_of_the_log_whatever_the_number_of_feeds(
    user, monkeypatch
):
    from events import feed_hub

    feeds = [(await open_feed(user))[0] for _ in range(5)]
    for communicator in feeds:
        await next_message(communicator)
    warm = await publish(1)
    for communicator in feeds:
        assert await collect_events(communicator, until_seq=warm[0]) == warm
    hub_reads = count_calls(monkeypatch, feed_hub, "log_items")
    lose_first_sends(monkeypatch)
    lost = await publish(2)
    after = await publish(1)
    for communicator in feeds:
        assert await collect_events(communicator, until_seq=after[0]) == lost + after
        await communicator.disconnect()
    assert hub_reads == [(warm[0], lost[-1])]


async def test_the_hubs_resync_never_moves_a_feed_beyond_the_log_as_it_is(user, monkeypatch):
    """A seq read before the log was reset (tests flush it) must not make feeds skip the
    seqs the new log reaches later."""
    from events import feed_hub

    real_latest = feed_hub.latest_seq
    reads = {"n": 0}

    async def stale_first(*args, **kwargs):
        reads["n"] += 1
        return 1000 if reads["n"] == 1 else await real_latest()

    monkeypatch.setattr(feed_hub, "RESYNC_SECONDS", 0.2)
    communicator, _ = await open_feed(user)
    await next_message(communicator)
    monkeypatch.setattr(feed_hub, "latest_seq", stale_first)
    while reads["n"] < 3:
        await asyncio.sleep(0.1)
    published = await publish(1)
    assert await collect_events(communicator, until_seq=published[0]) == published
    await communicator.disconnect()


async def test_a_users_feed_passes_synthetic_events_with_a_position(user):
    communicator, _ = await open_feed(user)
    await next_message(communicator)
    before = await publish(1)
    probe = await publish(1, event_type="monitor.probe", source="prober")
    after = await publish(1)
    assert (await next_message(communicator))["event"]["seq"] == before[0]
    assert await next_message(communicator) == {"type": "position", "seq": probe[0]}
    assert (await next_message(communicator))["event"]["seq"] == after[0]
    await communicator.disconnect()


async def test_a_replay_leaves_synthetic_events_out_and_resumes_past_them(user):
    shown = await publish(2)
    probes = await publish(2, event_type="monitor.probe", source="prober")
    communicator, _ = await open_feed(user, query=f"?after={shown[0] - 1}")
    await next_message(communicator)
    assert await collect_events(communicator, until_seq=shown[-1]) == shown
    # The page learns it has everything up to the last probe: no gap to backfill.
    assert await next_message(communicator) == {"type": "resumed", "seq": probes[-1]}
    await communicator.disconnect()


async def test_staff_who_ask_get_synthetic_events_and_users_who_ask_an_error(user, staff_user):
    staff, _ = await open_feed(staff_user, query="?synthetic=show")
    assert (await next_message(staff))["type"] == "welcome"
    asking, _ = await open_feed(user, query="?synthetic=show")
    assert (await next_message(asking))["type"] == "welcome"
    error = await next_message(asking)
    assert (error["type"], error["code"]) == ("error", "forbidden")
    probe = await publish(1, event_type="monitor.probe", source="prober")
    assert (await next_message(staff))["event"]["seq"] == probe[0]
    assert await next_message(asking) == {"type": "position", "seq": probe[0]}
    await staff.disconnect()
    await asking.disconnect()


async def test_control_messages_for_one_user_reach_only_that_users_feeds(user, staff_user):
    from events.sinks import control_broadcast_legacy

    mine, _ = await open_feed(user)
    theirs, _ = await open_feed(staff_user)
    await next_message(mine)
    await next_message(theirs)
    await sync_to_async(control_broadcast_legacy)(control={"action": "x"}, user_id=user.pk)
    assert await next_message(mine) == {"type": "control", "action": "x"}
    assert await theirs.receive_nothing(timeout=1)
    await mine.disconnect()
    await theirs.disconnect()


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", "malformed_json"),
        ("[1, 2]", "invalid"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"type": "resume", "after": -1}', "invalid_after"),
        ('{"type": "resume", "after": "7"}', "invalid_after"),
        ('{"type": "resume", "after": 1e400}', "invalid_after"),
        ('{"type": "resume", "after": true}', "invalid_after"),
    ],
)
async def test_bad_messages_get_an_error_and_the_feed_stays_open(user, raw, code):
    communicator, _ = await open_feed(user)
    await next_message(communicator)
    await communicator.send_to(text_data=raw)
    error = await next_message(communicator)
    assert (error["type"], error["code"]) == ("error", code)
    await communicator.send_json_to({"type": "ping"})
    assert (await next_message(communicator))["type"] == "pong"


async def test_concurrent_publishers_never_make_a_follower_skip_or_repeat(user):
    """Eight threads publish at once; the follower sees every seq once, in order."""
    communicator, _ = await open_feed(user)
    start = (await next_message(communicator))["latest_seq"]
    threads, per_thread, published = 8, 40, []
    lock = threading.Lock()

    def publisher() -> None:
        try:
            for index in range(per_thread):
                if index % 4 == 0:
                    seqs = [
                        r.seq
                        for r in event_publish_batch(
                            events=[{"event_type": "a", "source": "t"}] * 3
                        )
                    ]
                else:
                    seqs = [event_publish(event_type="a", source="t").seq]
                with lock:
                    published.extend(seqs)
        finally:
            close_old_connections()
            connection.close()

    def run_all() -> None:
        workers = [threading.Thread(target=publisher) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    await asyncio.to_thread(run_all)
    expected = list(range(start + 1, start + len(published) + 1))
    assert sorted(published) == expected
    received = await collect_events(communicator, until_seq=expected[-1])
    assert received == expected
    await communicator.disconnect()


async def test_control_messages_reach_every_open_feed(user):
    from events.sinks import control_broadcast_legacy

    communicator, _ = await open_feed(user)
    await next_message(communicator)
    await sync_to_async(control_broadcast_legacy)(control={"action": "switch", "to": "websocket"})
    assert await next_message(communicator) == {
        "type": "control",
        "action": "switch",
        "to": "websocket",
    }


async def test_a_lost_last_event_is_sent_from_the_log_without_a_later_one(user, monkeypatch):
    """The channel layer is at-most-once; when nothing comes after a lost message, the
    hub's periodic check still brings the feed up to date from the log."""
    from events import feed_hub

    monkeypatch.setattr(feed_hub, "RESYNC_SECONDS", 0.3)
    # All lost.
    monkeypatch.setattr(sinks, "websocket_sink_send", lambda *, events, passed_seqs=(): None)
    communicator, _ = await open_feed(user)
    await next_message(communicator)
    lost = await publish(2)
    assert await collect_events(communicator, until_seq=lost[-1]) == lost
    assert await communicator.receive_nothing(timeout=1)
    await communicator.disconnect()
