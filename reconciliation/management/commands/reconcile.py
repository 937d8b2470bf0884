"""``manage.py reconcile``: one reconciliation run now, optionally followed by a repair.

Exit codes: 0 nothing left to fix; 1 discrepancies remain; 2 bad input or Supabase not
configured; 3 the run did not complete (another run held the lock, time limit, error).
"""

import json
import sys

from django.core.management.base import BaseCommand, CommandError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from events.supabase_client import supabase_configured
from reconciliation import services
from reconciliation.models import ERROR_CATEGORIES, RunStatus

EXIT_CLEAN, EXIT_DISCREPANCIES, EXIT_BAD_INPUT, EXIT_INCOMPLETE = 0, 1, 2, 3


def _run_figures(run) -> dict:
    return {
        "id": run.pk,
        "status": run.status,
        "trigger": run.trigger,
        "mode": run.mode,
        "from_seq": run.from_seq,
        "to_seq": run.to_seq,
        "started_at": run.started_at.isoformat(),
        "duration_ms": round(run.duration_ms or 0, 1),
        "chunks_compared": run.chunks_compared,
        "chunks_rehashed": run.chunks_rehashed,
        "stored_digests_rewritten": run.stored_digests_rewritten,
        "round_trips": {"supabase": run.round_trips_supabase, "local": run.round_trips_local},
        "rows_fetched": {"supabase": run.rows_fetched_supabase, "local": run.rows_fetched_local},
        "events_judged": run.events_judged,
        "events_agreeing": run.events_agreeing,
        "events_not_judged": run.events_not_judged,
        "consistency_rate": run.consistency_rate,
        "counts": run.counts,
        "phase_ms": run.phase_ms,
        "discrepancies": run.discrepancy_count,
        "error": run.error,
    }


class Command(BaseCommand):
    help = (
        "Compare the local event log with the Supabase copy now (seqs --from-seq .. "
        "--to-seq, inclusive; by default everything older than the grace period), "
        "incrementally or with --full, print a summary, and optionally repair. Exits 1 "
        "when discrepancies remain."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--from-seq", type=int, help="first seq to compare (default 1)")
        parser.add_argument(
            "--to-seq", type=int, help="last seq to compare (default: newest judgeable)"
        )
        parser.add_argument(
            "--full",
            action="store_true",
            help="re-hash every chunk of the range in Supabase (the full pass) instead of "
            "comparing the sealed chunks' stored digests; also rewrites the copy's stored digests",
        )
        parser.add_argument(
            "--repair", action="store_true", help="re-send missing and mismatched rows"
        )
        parser.add_argument(
            "--delete-extras",
            action="store_true",
            help="with --repair: also delete Supabase rows that have no local event",
        )
        parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
        parser.add_argument(
            "--show", type=int, default=20, help="discrepancies to list (default 20)"
        )
        parser.add_argument("--quiet", action="store_true", help="no progress bar")

    def _fail(self, message: str) -> CommandError:
        return CommandError(message, returncode=EXIT_BAD_INPUT)

    def handle(self, *args, **options) -> None:
        from_seq, to_seq = options["from_seq"], options["to_seq"]
        if from_seq is not None and from_seq < 1:
            raise self._fail("--from-seq must be 1 or more")
        if to_seq is not None and to_seq < 1:
            raise self._fail("--to-seq must be 1 or more")
        if from_seq is not None and to_seq is not None and to_seq < from_seq:
            raise self._fail(f"--to-seq ({to_seq}) is below --from-seq ({from_seq})")
        if options["delete_extras"] and not options["repair"]:
            raise self._fail("--delete-extras only makes sense with --repair")
        if options["show"] < 0:
            raise self._fail("--show must be 0 or more")
        if not supabase_configured():
            raise self._fail("Supabase is not configured: set SUPABASE_URL and SUPABASE_SECRET_KEY")

        progress = Progress(
            TextColumn("[bold]reconcile[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            disable=options["quiet"],
            transient=True,
        )
        tasks: dict[str, int] = {}

        def on_progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = progress.add_task(phase, total=total)
            progress.update(tasks[phase], completed=done, total=total)

        with progress:
            run = services.reconciliation_run(
                from_seq=from_seq, to_seq=to_seq, full=options["full"], progress=on_progress
            )
            repair = None
            if options["repair"] and run.discrepancy_count:
                try:
                    repair = services.reconciliation_repair(
                        run_id=run.pk, delete_extras=options["delete_extras"]
                    )
                except services.ReconciliationBusy as exc:
                    raise CommandError(str(exc), returncode=EXIT_INCOMPLETE) from None

        discrepancies = list(
            run.discrepancies.filter(category__in=ERROR_CATEGORIES).order_by("seq")[
                : options["show"]
            ]
        )
        if run.status not in (RunStatus.CLEAN, RunStatus.DISCREPANCIES):
            code = EXIT_INCOMPLETE
        elif repair is not None:
            code = EXIT_DISCREPANCIES if repair.remaining else EXIT_CLEAN
        else:
            code = EXIT_DISCREPANCIES if run.discrepancy_count else EXIT_CLEAN

        if options["json"]:
            document = {
                "run": _run_figures(run),
                "discrepancies": [
                    {
                        "seq": d.seq,
                        "category": d.category,
                        "fields": d.fields,
                        "criticality": d.criticality,
                        "details": d.details,
                        "repaired": d.repaired_at is not None
                        or (repair is not None and d.seq not in repair.remaining),
                    }
                    for d in discrepancies
                ],
                "repair": repair.as_dict() if repair is not None else None,
                "exit_code": code,
            }
            self.stdout.write(json.dumps(document, indent=2, default=str))
        else:
            self._print_tables(run, discrepancies, repair)
        if code:
            sys.exit(code)

    def _print_tables(self, run, discrepancies, repair) -> None:
        console = Console(file=self.stdout, width=110)
        summary = Table(title=f"Reconciliation run #{run.pk}: {run.get_status_display()}")
        summary.add_column("figure")
        summary.add_column("value", justify="right")
        rate = run.consistency_rate
        rows = [
            ("seqs", f"{run.from_seq} .. {run.to_seq}"),
            ("mode", run.mode),
            ("duration", f"{(run.duration_ms or 0) / 1000:.2f} s"),
            ("chunks compared", f"{run.chunks_compared:,}"),
            ("chunks re-hashed", f"{run.chunks_rehashed:,}"),
            (
                "round trips (supabase / local)",
                f"{run.round_trips_supabase} / {run.round_trips_local}",
            ),
            (
                "rows fetched (supabase / local)",
                f"{run.rows_fetched_supabase:,} / {run.rows_fetched_local:,}",
            ),
            ("events judged", f"{run.events_judged:,}"),
            ("events agreeing", f"{run.events_agreeing:,}"),
            ("events inside the grace period", f"{run.events_not_judged:,}"),
            ("consistency", "n/a" if rate is None else f"{rate:.4%}"),
        ]
        rows += [(f"  {category}", f"{count:,}") for category, count in run.counts.items()]
        if run.error:
            rows.append(("error", run.error))
        for name, value in rows:
            summary.add_row(name, value)
        console.print(summary)
        if discrepancies:
            table = Table(title=f"Discrepancies (first {len(discrepancies)})")
            for column in ("seq", "category", "fields", "criticality"):
                table.add_column(column)
            for d in discrepancies:
                table.add_row(str(d.seq), d.category, ", ".join(d.fields), d.criticality)
            console.print(table)
        if repair is not None:
            console.print(
                f"Repair: {repair.upserted} upserted, {repair.deleted} deleted, "
                f"{repair.repaired} verified fixed, {len(repair.remaining)} remaining"
                + (f" (seqs {repair.remaining[:20]})" if repair.remaining else "")
            )
            for seq, why in list(repair.not_attempted.items())[:20]:
                console.print(f"  not repaired: seq {seq}: {why}")
