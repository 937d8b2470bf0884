"""``manage.py run_prober``: measure both transports continuously (see rollout/prober.py)."""

import asyncio
import signal

from django.core.management.base import BaseCommand, CommandError

from events import supabase_client
from events.supabase_writer import supabase_writer_start
from rollout import services
from rollout.conf import rollout_setting
from rollout.prober import Prober


class Command(BaseCommand):
    help = "Publish a probe event every few seconds and measure its delivery on both transports."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--interval", type=float, default=None,
            help="seconds between probes (default ROLLOUT_PROBER_INTERVAL_SECONDS, 5)",
        )  # fmt: skip
        parser.add_argument(
            "--base-url", default=None,
            help="the daphne serving /ws/events/ (default ROLLOUT_PROBER_BASE_URL, "
            "http://127.0.0.1:8000)",
        )  # fmt: skip
        parser.add_argument(
            "--loss-timeout", type=float, default=None,
            help="seconds after which an undelivered probe counts as lost "
            "(default ROLLOUT_PROBER_LOSS_TIMEOUT_SECONDS, 10)",
        )  # fmt: skip
        parser.add_argument(
            "--duration", type=float, default=None, help="stop after this many seconds"
        )

    def handle(self, *args, interval, base_url, loss_timeout, duration, **options) -> None:
        interval = (
            interval if interval is not None else rollout_setting("ROLLOUT_PROBER_INTERVAL_SECONDS")
        )
        loss_timeout = (
            loss_timeout
            if loss_timeout is not None
            else rollout_setting("ROLLOUT_PROBER_LOSS_TIMEOUT_SECONDS")
        )
        base_url = base_url or rollout_setting("ROLLOUT_PROBER_BASE_URL")
        if not 0.1 <= interval <= 3600:
            raise CommandError("--interval must be between 0.1 and 3600 seconds")
        if not 0.5 <= loss_timeout <= 3600:
            raise CommandError("--loss-timeout must be between 0.5 and 3600 seconds")
        if not base_url.startswith(("http://", "https://")):
            raise CommandError("--base-url must start with http:// or https://")
        user = services.prober_user_get_or_create()
        supabase = supabase_client.supabase_configured()
        if not supabase:
            self.stderr.write("Supabase is not configured: probing the legacy feed only")
        # The probes are published here, so this process's writer sends them to Supabase:
        # ready before the first one, or that one measures the client being built.
        supabase_writer_start()
        prober = Prober(
            base_url=base_url,
            user_id=user.pk,
            interval=interval,
            loss_timeout=loss_timeout,
            supabase=supabase,
        )
        self.stdout.write(
            f"prober: user {user.get_username()}, every {interval:g} s, lost after "
            f"{loss_timeout:g} s, feed {prober.feed_url}, transports {', '.join(prober.transports)}"
        )
        asyncio.run(self._run(prober, duration))
        self.stdout.write(f"prober stopped: {prober.counts}")

    async def _run(self, prober: Prober, duration: float | None) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, prober.stopping.set)
        await prober.run(duration=duration)
