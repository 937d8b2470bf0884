"""``manage.py supabase_doctor [--json]``: check the configured Supabase project end to end
(events/doctor.py says what each check does). Exit 0 only when every check passes."""

import json

from django.core.management.base import BaseCommand, CommandError
from rich.console import Console
from rich.table import Table

from events.doctor import supabase_doctor_run


class Command(BaseCommand):
    help = "Check the configured Supabase project end to end and print a checklist."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--json", action="store_true", help="the checklist as JSON")

    def handle(self, *args, **options) -> None:
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
