"""``manage.py supabase_doctor [--json]``: check the configured Supabase project end to end
(events/doctor.py says what each check does). Exit 0 only when every check passes."""

import json
import logging
from contextlib import contextmanager

from django.core.management.base import BaseCommand, CommandError
from rich.console import Console
from rich.table import Table

from events.doctor import supabase_doctor_run

# The checks' own traffic: each request of httpx at INFO, and the Realtime client's ERROR
# when the "public channels off" check is (rightly) refused. The checklist says what they
# mean; with -v 2 they are shown.
CLIENT_LOGGERS = ("httpx", "realtime", "realtime._async.channel")


@contextmanager
def _clients_quiet(verbosity: int):
    if verbosity >= 2:
        yield
        return
    loggers = [logging.getLogger(name) for name in CLIENT_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


class Command(BaseCommand):
    help = "Check the configured Supabase project end to end and print a checklist."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--json", action="store_true", help="the checklist as JSON")

    def handle(self, *args, **options) -> None:
        with _clients_quiet(options["verbosity"]):
            report = supabase_doctor_run()
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
        else:
            console = Console(file=self.stdout, width=140)
            table = Table(title="Supabase doctor")
            for column in ("", "check", "seen", "to do"):
                table.add_column(column)
            for check in report.checks:
                table.add_row(
                    "[green]✓[/]" if check.passed else "[bold red]✗[/]",
                    check.name, check.detail, check.fix,
                )  # fmt: skip
            console.print(table)
            if report.round_trip_ms is not None:
                console.print(f"broadcast round trip: {report.round_trip_ms} ms")
        if not report.passed:
            failed = [check.name for check in report.checks if not check.passed]
            raise CommandError(f"{len(failed)} check(s) failed: {', '.join(failed)}")
