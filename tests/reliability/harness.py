"""Real processes, a steady producer and following clients for the fault suite.

``FaultStack`` runs a private ``redis-server`` (so restarting Redis hits only this stack),
daphne, a Celery worker and Celery beat, all on the test database and the session's
supabase_local; any of them can be stopped, killed and started again on the same port.

``SteadyPublisher`` is a producer: one event per POST at a steady rate, and on any failure
the same event again with the same idempotency key until the product answers 201, so it
ends up knowing the seq of everything it published. It counts every answer it got.

``LegacyFollower`` and ``SupabaseFollower`` follow one transport each, the way the
dashboard does (static/src/dashboard/legacy.js, supabase.js): the legacy one reconnects
with ``?after=`` its highest seq and keeps every event frame it is sent, duplicates
included; the Supabase one joins the private broadcast topic ``monitor:events`` with a
user token, asks for broadcast replay from a little before the last message it heard on
every (re)join, then backfills over REST from its highest gapless seq, and drops what it
has already shown (counting how often that happened).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import redis
import websockets
from django.db import connection

from monitor_project.devstack import redis_server_executable
from tests.fixtures.django_processes import (
    ProcessSet,
    celery_beat_argv,
    celery_worker_argv,
    daphne_argv,
    free_port,
    http_answers_ok,
    process_environment,
    wait_until,
)

logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise

EVENT_TYPE = "deploy.finished"  # routed to both sinks by the seeded routes
RECONNECT_DELAY_SECONDS = 0.5
CONNECT_TIMEOUT_SECONDS = 5
# As the page (static/src/dashboard/supabase.js): replay from 5 s before the last message
# heard, and the REST backfill after the replayed messages have come in.
REPLAY_MARGIN_MS = 5000
BACKFILL_AFTER_REPLAY_SECONDS = 0.3


class FaultStack(ProcessSet):
    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/1"
        super().__init__(env=process_environment(TEST_REDIS_URL=self.redis_url), log_dir=log_dir)

    def start_redis(self) -> None:
        # No persistence: a restart comes back empty, as a cache-only Redis does.
        argv = [redis_server_executable(), "--port", str(self.redis_port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--daemonize", "no"]  # fmt: skip
        self.start("redis", argv)
        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=0.5)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        self.wait_for(answers, what="redis-server")

    def start_daphne(self) -> None:
        self.start("daphne", daphne_argv(self.port))
        self.wait_for(lambda: http_answers_ok(f"{self.base_url}/healthz"), what="daphne")

    def start_worker(self) -> None:
        self.start("worker", celery_worker_argv())
        self.wait_for_log("worker", "ready.", timeout=60)

    def start_beat(self) -> None:
        self.start("beat", celery_beat_argv(schedule=self.log_dir / "beat-schedule"))
        self.wait_for_log("beat", "beat: Starting", timeout=60)

    def start_all(self) -> None:
        self.start_redis()
        self.start_daphne()
        self.start_worker()
        self.start_beat()

    def close(self) -> None:
        self.stop_all(signal.SIGKILL)

    def wait_for(self, check: Callable[[], bool], *, what: str, timeout: float = 60) -> None:
        try:
            wait_until(check, timeout=timeout, interval=0.1, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None


class SteadyPublisher(threading.Thread):
    def __init__(self, *, base_url: str, token: str, rate: float) -> None:
        super().__init__(name="steady-publisher", daemon=True)
        self.base_url, self.token, self.interval = base_url, token, 1 / rate
        self.stopping = threading.Event()
        self.seqs: list[int] = []
        self.answers: Counter[str] = Counter()
        self.retries = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            with httpx.Client(base_url=self.base_url, headers=headers, timeout=5) as client:
                due = time.monotonic()
                index = 0
                while not self.stopping.is_set():
                    self.seqs.append(self._publish(client, index))
                    index += 1
                    due += self.interval
                    self.stopping.wait(max(0.0, due - time.monotonic()))
        except BaseException as exc:  # reported by the test, not lost in a thread
            self.error = exc

    def _publish(self, client: httpx.Client, index: int) -> int:
        body = {
            "event_type": EVENT_TYPE,
            "source": "reliability",
            "idempotency_key": f"steady-{index}",
            "payload": {"index": index},
        }
        deadline = time.monotonic() + 120
        while True:
            try:
                response = client.post("/api/events", json=body)
                self.answers[str(response.status_code)] += 1
                if response.status_code == 201:
                    return response.json()["seq"]
            except httpx.HTTPError as exc:
                self.answers[type(exc).__name__] += 1
            if time.monotonic() > deadline:
                raise RuntimeError(f"event {index} not accepted within 120 s: {self.answers}")
            self.retries += 1
            time.sleep(0.2)

    def stop(self) -> list[int]:
        self.stopping.set()
        self.join(timeout=130)
        if self.error is not None:
            raise self.error
        return self.seqs

    def non_created_answers(self) -> dict[str, int]:
        return {answer: count for answer, count in self.answers.items() if answer != "201"}


class Follower:
    """A client of one transport, run on the followers' event loop; it can go offline."""

    transport = ""

    def __init__(self, name: str) -> None:
        self.name = name
        self.connections = 0
        self.online = True
        self._disconnect: Callable[[], None] | None = None

    @property
    def seqs(self) -> list[int]:
        raise NotImplementedError

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            if self.online:
                with contextlib.suppress(Exception):
                    await self.follow(stopping)
            await asyncio.sleep(RECONNECT_DELAY_SECONDS)

    async def follow(self, stopping: asyncio.Event) -> None:
        raise NotImplementedError

    def go_offline(self) -> None:
        self.online = False
        if self._disconnect is not None:
            self._disconnect()

    def come_online(self) -> None:
        self.online = True

    def summary(self) -> str:
        seqs = self.seqs
        duplicates = sum(count - 1 for count in Counter(seqs).values())
        return (
            f"{self.name} ({self.transport}): {len(set(seqs))} events, "
            f"{duplicates} duplicates, {self.connections} connections"
        )


class LegacyFollower(Follower):
    transport = "websocket"

    def __init__(self, name: str, *, base_url: str, session_id: str) -> None:
        super().__init__(name)
        self.ws_url = base_url.replace("http://", "ws://") + "/ws/events/"
        self.headers = {"Cookie": f"sessionid={session_id}", "Origin": base_url}
        self.frames: list[int] = []  # every event frame, over every connection

    @property
    def seqs(self) -> list[int]:
        return self.frames

    async def follow(self, stopping: asyncio.Event) -> None:
        after = max(self.frames, default=0)
        async with websockets.connect(
            f"{self.ws_url}?after={after}",
            additional_headers=self.headers,
            open_timeout=CONNECT_TIMEOUT_SECONDS,
            ping_interval=2,
            ping_timeout=4,
        ) as socket:
            if not self.online:  # sent offline while connecting
                return
            self.connections += 1
            loop = asyncio.get_running_loop()
            self._disconnect = lambda: loop.create_task(socket.close())
            stop_watch = loop.create_task(self._close_on(stopping, socket))
            try:
                async for text in socket:
                    message = json.loads(text)
                    if message.get("type") == "event":
                        self.frames.append(message["event"]["seq"])
            finally:
                self._disconnect = None
                stop_watch.cancel()

    @staticmethod
    async def _close_on(stopping: asyncio.Event, socket) -> None:  # noqa: ANN001
        await stopping.wait()
        await socket.close()


class SupabaseFollower(Follower):
    transport = "supabase"

    def __init__(self, name: str, *, user_id: int) -> None:
        super().__init__(name)
        self.user_id = user_id
        self.shown: list[int] = []  # what the page would show: each seq once
        self._shown = set()
        self.arrivals: Counter[str] = Counter()  # live / replay / backfill
        self.dropped: Counter[str] = Counter()  # already shown, dropped by the merger
        self.live: set[int] = set()
        self.heard_at_ms: int | None = None  # the last live message, for replay's since

    @property
    def seqs(self) -> list[int]:
        return self.shown

    def _accept(self, seq: int, via: str) -> None:
        self.arrivals[via] += 1
        if via == "live":
            self.live.add(seq)
        if seq in self._shown:
            self.dropped[via] += 1
            return
        self._shown.add(seq)
        self.shown.append(seq)

    def gapless_up_to(self) -> int:
        seq = 0
        while seq + 1 in self._shown:
            seq += 1
        return seq

    async def follow(self, stopping: asyncio.Event) -> None:
        from realtime import RealtimeSubscribeStates

        from events import supabase_client

        token = supabase_client.user_access_token_mint(user_id=self.user_id, expires_in=900)
        client = await supabase_client.async_client(access_token=token)
        client.realtime.auto_reconnect = False  # reconnects are ours, as on the page
        subscribed, ended = asyncio.Event(), asyncio.Event()

        def on_state(state, error=None) -> None:  # noqa: ANN001
            (subscribed if state == RealtimeSubscribeStates.SUBSCRIBED else ended).set()

        def on_broadcast(message: dict) -> None:
            replayed = bool((message.get("meta") or {}).get("replayed"))
            if not replayed:
                self.heard_at_ms = int(time.time() * 1000)
            for row in (message.get("payload") or {}).get("events") or []:
                self._accept(int(row["seq"]), "replay" if replayed else "live")
            # Seqs announced (too large to carry) are read by the backfill below.

        try:
            # As the page: no replay on the first join (the backfill covers it); on a
            # rejoin, replay from a margin before the last message heard.
            broadcast = {}
            if self.heard_at_ms is not None:
                since = max(0, self.heard_at_ms - REPLAY_MARGIN_MS)
                broadcast["replay"] = {"since": since, "limit": 25}
            channel = client.channel(
                supabase_client.EVENTS_TOPIC, {"config": {"private": True, "broadcast": broadcast}}
            )
            channel.on_broadcast(supabase_client.EVENTS_EVENT, on_broadcast)
            await asyncio.wait_for(channel.subscribe(on_state), CONNECT_TIMEOUT_SECONDS)
            await asyncio.wait_for(subscribed.wait(), CONNECT_TIMEOUT_SECONDS)
            if self.heard_at_ms is None:  # a rejoin before any message replays from here
                self.heard_at_ms = int(time.time() * 1000)
            await asyncio.sleep(BACKFILL_AFTER_REPLAY_SECONDS)
            if not self.online:  # sent offline while joining
                return
            self.connections += 1
            self._disconnect = ended.set
            await self._backfill(client, ended)
            while not (ended.is_set() or stopping.is_set()) and client.realtime.is_connected:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ended.wait(), 0.25)
        finally:
            self._disconnect = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.realtime.close(), 5)

    async def _backfill(self, client, ended: asyncio.Event) -> None:  # noqa: ANN001
        """Read what was missed from Supabase itself, retrying while REST fails."""
        from events import supabase_client

        while not ended.is_set():
            try:
                after = self.gapless_up_to()
                while True:
                    response = await (
                        client.table(supabase_client.MONITORING_EVENTS_TABLE)
                        .select("seq")
                        .gt("seq", after)
                        .order("seq")
                        .limit(1000)
                        .execute()
                    )
                    for row in response.data:
                        self._accept(int(row["seq"]), "backfill")
                    if len(response.data) < 1000:
                        return
                    after = response.data[-1]["seq"]
            except Exception:
                await asyncio.sleep(1)

    def summary(self) -> str:
        return (
            f"{super().summary()}; arrived live {self.arrivals['live']}, "
            f"by replay {self.arrivals['replay']}, by backfill {self.arrivals['backfill']}, "
            "already shown and dropped "
            f"{sum(self.dropped.values())}"
        )


class FollowerLoop:
    """An asyncio loop in its own thread, running the followers until closed."""

    def __init__(self, followers: list[Follower]) -> None:
        self.followers = followers
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.stopping = self.call(asyncio.Event)
        self.tasks = [self.call(self.loop.create_task, f.run(self.stopping)) for f in followers]

    def call(self, function: Callable, *args):  # noqa: ANN202
        """Run ``function(*args)`` on the loop's thread and return its result."""

        async def invoke():  # noqa: ANN202
            return function(*args)

        return asyncio.run_coroutine_threadsafe(invoke(), self.loop).result(timeout=10)

    def close(self) -> None:
        async def shut_down() -> None:
            self.stopping.set()
            await asyncio.wait(self.tasks, timeout=10)
            for task in self.tasks:
                task.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shut_down(), self.loop).result(timeout=15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


def local_log_seqs() -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT seq FROM events_event ORDER BY seq")
        return [row[0] for row in cursor.fetchall()]


class Scenario:
    """One fault test: the stack, a producer and followers of both transports.

    ``start`` brings everything up and publishes for a few seconds; the test injects its
    fault; ``verify`` stops publishing, waits (bounded) for every copy to catch up and
    asserts that nothing was lost or duplicated anywhere, printing what it counted.
    """

    def __init__(self, *, stack: FaultStack, supabase, producer_token: str, users) -> None:  # noqa: ANN001
        self.stack = stack
        self.supabase = supabase
        self.producer_token = producer_token
        self.users = users
        self.injected: list[str] = []
        self.report: list[str] = []  # what it injected and counted, for the summary
        self.publisher: SteadyPublisher | None = None
        self.followers: list[Follower] = []
        self.loop: FollowerLoop | None = None
        self.started_at = time.monotonic()

    def start(self, *, rate: float = 5.0, warm_up_seconds: float = 3.0) -> None:
        from django.test import Client

        self.stack.start_all()
        legacy_users, supabase_users = self.users[:2], self.users[2:]
        for number, user in enumerate(legacy_users, 1):
            browser = Client()
            browser.force_login(user)
            self.followers.append(
                LegacyFollower(
                    f"legacy-{number}",
                    base_url=self.stack.base_url,
                    session_id=browser.cookies["sessionid"].value,
                )
            )
        for number, user in enumerate(supabase_users, 1):
            self.followers.append(SupabaseFollower(f"supabase-{number}", user_id=user.pk))
        self.loop = FollowerLoop(self.followers)
        self.wait(lambda: all(f.connections for f in self.followers), 30, "followers to connect")
        self.publisher = SteadyPublisher(
            base_url=self.stack.base_url, token=self.producer_token, rate=rate
        )
        self.publisher.start()
        time.sleep(warm_up_seconds)

    def inject(self, what: str) -> None:
        self.injected.append(f"{time.monotonic() - self.started_at:6.1f} s  {what}")

    def say(self, line: str) -> None:
        print(line)
        self.report.append(line)

    def followers_of(self, transport: str) -> list[Follower]:
        return [f for f in self.followers if f.transport == transport]

    def set_online(self, follower: Follower, online: bool) -> None:
        assert self.loop is not None
        self.loop.call(follower.come_online if online else follower.go_offline)

    def wait(self, check: Callable[[], bool], timeout: float, what: str) -> float:
        started = time.monotonic()
        self.stack.wait_for(check, what=what, timeout=timeout)
        return time.monotonic() - started

    def verify(self, *, settle_seconds: float = 3.0, catch_up_timeout: float = 120.0) -> None:
        from tests.fixtures.integrity import assert_supabase_copy_matches_log

        assert self.publisher is not None
        time.sleep(settle_seconds)
        published = self.publisher.stop()
        expected = list(range(1, len(published) + 1))

        def supabase_seqs() -> list[int]:
            rows = self.supabase.sql("SELECT seq FROM public.monitoring_events ORDER BY seq")
            return [row["seq"] for row in rows]

        supabase_wait = self.wait(
            lambda: supabase_seqs() == expected, catch_up_timeout, "Supabase to hold every event"
        )
        clients_wait = self.wait(
            lambda: all(set(f.seqs) >= set(expected) for f in self.followers),
            catch_up_timeout,
            "every follower to have every event",
        )
        time.sleep(1)  # room for a late duplicate to show itself

        for line in ["injected:", *self.injected]:
            self.say(line)
        self.say(
            f"published {len(published)} events; producer retries {self.publisher.retries}, "
            f"answers other than 201: {self.publisher.non_created_answers() or 'none'}"
        )
        local = local_log_seqs()
        remote = {
            row["seq"]: row["checksum"]
            for row in self.supabase.sql("SELECT seq, checksum FROM public.monitoring_events")
        }
        self.say(
            f"local log {len(local)} events; Supabase {len(remote)} rows "
            f"(caught up {supabase_wait:.1f} s after publishing stopped); "
            f"followers caught up {clients_wait:.1f} s after that"
        )
        for follower in self.followers:
            self.say(f"  {follower.summary()}")

        assert sorted(published) == expected == local, "the producer's seqs are the log"
        server_errors = {a: n for a, n in self.publisher.answers.items() if a.startswith("5")}
        assert not server_errors, "a fault is never the producer's 5xx"
        assert_supabase_copy_matches_log(self.supabase)
        for follower in self.followers:
            assert sorted(follower.seqs) == expected, f"{follower.name} saw each event once"
            if follower.transport == "websocket":
                assert follower.seqs == sorted(follower.seqs), f"{follower.name} in seq order"
            else:  # Realtime works again, not only the backfill
                assert expected[-1] in follower.live, f"{follower.name} live after the fault"

        run = self.reconcile(to_seq=len(expected))
        self.say(
            f"reconciliation run #{run.pk}: {run.status}, {run.events_judged} judged, "
            f"{run.events_agreeing} agreeing, {run.discrepancy_count} discrepancies"
        )
        assert (run.status, run.events_agreeing, run.discrepancy_count) == (
            "clean",
            len(expected),
            0,
        )

    @staticmethod
    def reconcile(*, to_seq: int):  # noqa: ANN205
        """A reconciliation run over every published seq. Everything has arrived by now,
        so no event is young enough to be left out: the grace period is zero."""
        from django.test import override_settings

        from reconciliation.services import reconciliation_run

        with override_settings(RECONCILIATION_GRACE_SECONDS=0):
            for _ in range(10):  # beat's own re-check may hold the lock for a moment
                run = reconciliation_run(from_seq=1, to_seq=to_seq)
                if run.status != "skipped":
                    return run
                time.sleep(1)
        return run

    def close(self) -> None:
        if self.publisher is not None and self.publisher.is_alive():
            self.publisher.stopping.set()
            self.publisher.join(timeout=10)
        if self.loop is not None:
            self.loop.close()
        self.stack.close()
