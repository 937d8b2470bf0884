"""A rollback tells every open page to switch, on BOTH transports.

The legacy page is a WebsocketCommunicator on /ws/events/ through the real ASGI stack and
Redis; the Supabase page is the official async client joined, with a user's token, to the
private control topic of the real supabase_local server (only the server may send there:
tests/security/test_forged_control.py).
"""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from realtime import RealtimeSubscribeStates

from events import supabase_client
from monitor_project.asgi import application
from rollout import services
from tests.rollout.factories import analysis_passing, samples_add

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(120),
]

WAIT = 10


class Page:
    """What a dashboard does with control messages: it keeps a transport and obeys."""

    def __init__(self, transport: str) -> None:
        self.transport = transport
        self.switched = asyncio.Event()
        self.controls: list[dict] = []

    def on_control(self, control: dict) -> None:
        self.controls.append(control)
        if control.get("action") == "switch_transport":
            self.transport = control["transport"]
            self.switched.set()


async def legacy_page(user) -> tuple[WebsocketCommunicator, Page]:
    client = Client()
    await sync_to_async(client.force_login)(user)
    headers = [
        (b"origin", b"http://127.0.0.1:8000"),
        (b"host", b"127.0.0.1:8000"),
        (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()),
    ]
    communicator = WebsocketCommunicator(application, "/ws/events/", headers=headers)
    connected, _ = await communicator.connect(timeout=WAIT)
    assert connected
    assert (await communicator.receive_json_from(timeout=WAIT))["type"] == "welcome"
    return communicator, Page("websocket")


async def supabase_page(user):
    token = await sync_to_async(supabase_client.user_access_token_mint)(user_id=user.pk)
    client = await supabase_client.async_client(access_token=token)
    page = Page("supabase")
    channel = client.channel(supabase_client.CONTROL_TOPIC, {"config": {"private": True}})
    channel.on_broadcast("control", lambda message: page.on_control(message["payload"]))
    subscribed = asyncio.Event()

    def on_state(state, error=None):
        if state == RealtimeSubscribeStates.SUBSCRIBED:
            subscribed.set()

    await channel.subscribe(on_state)
    await asyncio.wait_for(subscribed.wait(), WAIT)
    return client, channel, page


async def test_a_rollback_switches_pages_on_both_transports(user, staff_user, django_supabase):
    await sync_to_async(analysis_passing)()  # the stage in force passed its analysis
    await sync_to_async(services.rollout_stage_set)(
        stage="10", actor=staff_user, reason="first cohort"
    )
    communicator, legacy = await legacy_page(user)
    client, channel, on_supabase = await supabase_page(user)
    try:
        await sync_to_async(samples_add)(transport="supabase", kind="delivery", values=[0.0] * 30)

        evaluation = await sync_to_async(services.rollout_health_evaluate)()

        assert evaluation.rolled_back
        message = await communicator.receive_json_from(timeout=WAIT)
        assert message["type"] == "control"
        legacy.on_control(message)
        assert message["action"] == "switch_transport" and message["transport"] == "websocket"
        assert "reason" not in message  # every page hears it; the reason is for staff
        await asyncio.wait_for(on_supabase.switched.wait(), WAIT)
        assert on_supabase.transport == "websocket"
        assert on_supabase.controls[0] == {"action": "switch_transport", "transport": "websocket"}
    finally:
        await communicator.disconnect()
        await client.remove_channel(channel)


async def test_a_stage_change_tells_pages_to_reread_their_transport(user, staff_user):
    communicator, _ = await legacy_page(user)
    try:
        await sync_to_async(analysis_passing)()  # the stage in force passed its analysis
        await sync_to_async(services.rollout_stage_set)(stage="10", actor=staff_user, reason="go")
        message = await communicator.receive_json_from(timeout=WAIT)
        assert message == {
            "type": "control", "action": "transport_changed", "stage": "10", "killed": False,
        }  # fmt: skip
    finally:
        await communicator.disconnect()


async def test_the_legacy_feed_still_hears_the_switch_when_supabase_is_down(user, settings):
    settings.SUPABASE_URL = "http://127.0.0.1:9"  # nothing listens there
    settings.SUPABASE_SECRET_KEY = "sb_secret_x"
    communicator, _ = await legacy_page(user)
    try:
        outcome = await sync_to_async(services.control_broadcast)(control=services.switch_control())
        assert outcome["websocket"] is None and outcome["supabase"]
        message = await communicator.receive_json_from(timeout=WAIT)
        assert message["action"] == "switch_transport"
    finally:
        await communicator.disconnect()


async def test_a_users_own_choice_is_told_to_that_users_legacy_feeds_only(user, django_user_model):
    other = await sync_to_async(django_user_model.objects.create_user)(
        username="other", password="pw-for-tests-3"
    )
    mine, _ = await legacy_page(user)
    theirs, _ = await legacy_page(other)
    try:
        await sync_to_async(services.user_transport_preference_set)(user=user, choice="supabase")
        message = await mine.receive_json_from(timeout=WAIT)
        assert message == {
            "type": "control", "action": "transport_changed", "cause": "user_choice",
            "choice": "supabase",
        }  # fmt: skip
        assert await theirs.receive_nothing(timeout=1)
    finally:
        await mine.disconnect()
        await theirs.disconnect()


async def test_an_unchanged_or_refused_choice_tells_nobody(user):
    communicator, _ = await legacy_page(user)
    try:
        await sync_to_async(services.user_transport_preference_set)(user=user, choice="auto")
        with pytest.raises(services.RolloutError):
            await sync_to_async(services.user_transport_preference_set)(
                user=user, choice="carrier-pigeon"
            )
        assert await communicator.receive_nothing(timeout=1)
    finally:
        await communicator.disconnect()
