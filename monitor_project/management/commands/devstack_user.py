"""The local staff user that ``make run`` prints (development only).

Created once, with a generated password written to ``--password-file`` (mode 0600), or
with the password already in that file when the database was reset. An existing user is
never touched: a password changed in the admin stays changed. The password never appears
on a command line.
"""

import os
import secrets
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

MIN_PASSWORD_LENGTH = 12


def password_file_read_or_create(path: Path) -> str:
    """The password in ``path``; a new random one is written there first if it is missing."""
    try:
        password = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        password = secrets.token_urlsafe(12)
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(password + "\n")
        return password
    if len(password) < MIN_PASSWORD_LENGTH:
        raise CommandError(
            f"{path} holds a password shorter than {MIN_PASSWORD_LENGTH} characters; "
            "delete the file to have a new one generated"
        )
    return password


class Command(BaseCommand):
    help = (
        "Create the local staff user that `make run` prints, once, with the password in "
        "--password-file (generated there if missing). An existing user is left as it is."
    )

    def create_parser(self, prog_name, subcommand, **kwargs):
        # No prefix matching: `--password SECRET` must be refused, not taken for
        # `--password-file SECRET`.
        return super().create_parser(prog_name, subcommand, allow_abbrev=False, **kwargs)

    def add_arguments(self, parser) -> None:
        parser.add_argument("--username", required=True)
        parser.add_argument(
            "--password-file",
            required=True,
            type=Path,
            help="where the generated password is kept (.devstack/admin-password)",
        )

    def handle(self, *args, username: str, password_file: Path, **options) -> None:
        user_model = get_user_model()
        with transaction.atomic():
            if user_model.objects.filter(username=username).exists():
                self.stdout.write(
                    f"local user {username!r} exists; left as it is (its password is not reset)"
                )
                return
            password = password_file_read_or_create(password_file)
            user_model.objects.create_superuser(username=username, password=password)
        self.stdout.write(f"created local user {username!r}; its password is in {password_file}")
