import random
import time

from django.core.management.base import BaseCommand, CommandError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from events import services
from events.demo import demo_event
from events.validation import EVENT_TYPE_PATTERN, EventInputError

MAX_BATCH = 500


class Command(BaseCommand):
    help = (
        "Publish realistic monitoring events at a steady rate, for demos and load. "
        "--count 0 runs until interrupted."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--count", type=int, default=100, help="events to send; 0 = forever")
        parser.add_argument("--rate", type=float, default=10.0, help="events per second")
        parser.add_argument("--type", dest="event_type", help="one event type for all events")
        parser.add_argument("--source", help="one source for all events")
        parser.add_argument("--seed", type=int, help="random seed, for repeatable runs")
        parser.add_argument("--quiet", action="store_true", help="no progress bar")

    def handle(
        self,
        *args,
        count: int,
        rate: float,
        event_type: str | None,
        source: str | None,
        seed: int | None,
        quiet: bool,
        **options,
    ) -> None:
        if count < 0:
            raise CommandError("--count must be 0 (forever) or more")
        if not 0 < rate <= 100_000:
            raise CommandError("--rate must be above 0 and at most 100000 events per second")
        if event_type is not None and not EVENT_TYPE_PATTERN.fullmatch(event_type):
            raise CommandError("--type must be 1-64 characters of a-z 0-9 _ . : -")
        if source is not None and not 1 <= len(source) <= 100:
            raise CommandError("--source must be 1-100 characters")
        rng = random.Random(seed)
        sent = 0
        start = time.monotonic()
        progress = Progress(
            TextColumn("[bold]emit_events"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:.0f}/s"),
            TimeRemainingColumn(),
            disable=quiet,
        )
        with progress:
            task = progress.add_task("emit", total=count or None, rate=0.0)
            try:
                while count == 0 or sent < count:
                    due = int((time.monotonic() - start) * rate) + 1 - sent
                    if count:
                        due = min(due, count - sent)
                    if due <= 0:
                        time.sleep(min(0.05, (sent + 1) / rate - (time.monotonic() - start)))
                        continue
                    batch = [
                        demo_event(rng, event_type=event_type, source=source)
                        for _ in range(min(due, MAX_BATCH))
                    ]
                    try:
                        services.event_publish_batch(events=batch)
                    except EventInputError as exc:
                        raise CommandError(f"{exc.field} {exc.message}") from None
                    sent += len(batch)
                    elapsed = max(time.monotonic() - start, 1e-9)
                    progress.update(task, completed=sent, rate=sent / elapsed)
            except KeyboardInterrupt:
                pass
        elapsed = time.monotonic() - start
        self.stdout.write(
            f"sent {sent} events in {elapsed:.1f} s ({sent / max(elapsed, 1e-9):.0f}/s)"
        )
