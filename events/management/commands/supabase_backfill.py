from django.core.management.base import BaseCommand, CommandError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from events import supabase_sink
from events.supabase_client import supabase_configured


class Command(BaseCommand):
    help = (
        "Re-send a seq range of routed events to Supabase (an upsert that ignores rows "
        "already there, so it is safe to repeat), and mark their deliveries sent."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--from-seq", type=int, default=1)
        parser.add_argument("--to-seq", type=int, default=None, help="default: the latest seq")
        parser.add_argument("--batch-size", type=int, default=500)
        parser.add_argument("--quiet", action="store_true")

    def handle(
        self, *args, from_seq: int, to_seq: int | None, batch_size: int, quiet: bool, **options
    ) -> None:
        if from_seq < 1 or (to_seq is not None and to_seq < from_seq):
            raise CommandError("need 1 <= --from-seq <= --to-seq")
        if not 1 <= batch_size <= 1000:
            raise CommandError("--batch-size must be 1-1000")
        if not supabase_configured():
            raise CommandError("Supabase is not configured (SUPABASE_URL, SUPABASE_SECRET_KEY)")
        total = supabase_sink.backfill_count(from_seq=from_seq, to_seq=to_seq)
        progress = Progress(
            TextColumn("[bold]supabase_backfill"), BarColumn(), MofNCompleteColumn(), disable=quiet
        )
        sent = 0
        with progress:
            task = progress.add_task("backfill", total=total)
            for batch in supabase_sink.backfill_batches(
                from_seq=from_seq, to_seq=to_seq, batch_size=batch_size
            ):
                try:
                    sent += supabase_sink.backfill_batch_send(seqs=batch)
                except supabase_sink.BackfillError as exc:
                    raise CommandError(f"stopped after {sent} events: {exc}") from None
                progress.update(task, completed=sent)
        self.stdout.write(f"re-sent {sent} events (seq {from_seq}..{to_seq or 'latest'})")
