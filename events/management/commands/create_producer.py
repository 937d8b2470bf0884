from django.core.management.base import BaseCommand, CommandError

from events import services
from events.validation import EventInputError


class Command(BaseCommand):
    help = "Create a producer and print its token once (only a hash is stored)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="a unique name for the producer")

    def handle(self, *args, name: str, **options) -> None:
        try:
            issued = services.producer_create(name=name)
        except EventInputError as exc:
            raise CommandError(f"{exc.field} {exc.message}") from None
        self.stderr.write(f"Created producer {issued.producer.name!r}. Its token (shown once):")
        self.stdout.write(issued.token)
