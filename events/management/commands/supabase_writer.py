import signal
import threading

from django.core.management.base import BaseCommand, CommandError

from events.supabase_client import supabase_configured
from events.supabase_writer import PENDING_CHANNEL, supabase_writer_listen


class Command(BaseCommand):
    help = (
        "Write events to Supabase as they commit, in a process of its own: listens for the "
        "delivery ledger's notification and runs the sink's batch write (docs/deploy.md). "
        "Stops on SIGTERM or Ctrl-C."
    )

    def handle(self, *args, **options) -> None:
        if not supabase_configured():
            raise CommandError(
                "Supabase is not configured: set SUPABASE_URL and its keys (docs/supabase.md)"
            )
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        self.stdout.write(f"supabase writer: listening on {PENDING_CHANNEL}")
        supabase_writer_listen(stop=stop)
        self.stdout.write("supabase writer: stopped")
