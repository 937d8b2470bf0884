"""``create_producer NAME`` creates a producer; ``--rotate`` gives an existing one a new token.

Either way the token is printed once on stdout (only its hash is stored); everything else
goes to stderr, so ``TOKEN=$(manage.py create_producer billing)`` captures the token alone.
Errors exit with code 1 and a message that says what to do instead.
"""

import shlex

from django.core.management.base import BaseCommand, CommandError

from events import selectors, services
from events.validation import EventInputError


class Command(BaseCommand):
    help = (
        "Create a producer and print its token once (only a hash is stored). With --rotate, "
        "issue an existing producer a new token instead; its old token stops working at once."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="a unique name for the producer (1-100 characters)")
        parser.add_argument(
            "--rotate",
            action="store_true",
            help="issue a new token for the existing producer NAME; the old one is refused",
        )

    def handle(self, *args, name: str, rotate: bool, **options) -> None:
        if rotate:
            producer = selectors.producer_by_name(name)
            if producer is None:
                raise CommandError(
                    f"There is no producer named {name!r}; run without --rotate to create it."
                )
            issued = services.producer_token_rotate(producer=producer)
            self.stderr.write(
                f"Issued a new token for producer {producer.name!r}; the old token no longer "
                "works. The new token (shown once):"
            )
            self.stdout.write(issued.token)
            return
        try:
            issued = services.producer_create(name=name)
        except services.ProducerNameTaken as exc:
            raise CommandError(
                f"A producer named {exc.name!r} already exists. To issue it a new token "
                f"(the old one then stops working), run: manage.py create_producer "
                f"{shlex.quote(exc.name)} --rotate"
            ) from None
        except EventInputError as exc:
            raise CommandError(f"The producer name {exc.message}.") from None
        self.stderr.write(f"Created producer {issued.producer.name!r}. Its token (shown once):")
        self.stdout.write(issued.token)
