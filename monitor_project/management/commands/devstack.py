import signal

from django.core.management.base import BaseCommand, CommandError

from monitor_project import devstack


def _stop_like_ctrl_c(signum, frame) -> None:
    """A supervisor's SIGTERM stops the stack the way Ctrl-C does."""
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = (
        "Run the whole product locally: embedded PostgreSQL and Redis unless DATABASE_URL / "
        "REDIS_URL are set, supabase_local unless SUPABASE_URL is set, then daphne, a Celery "
        "worker and beat, and a demo producer. Ctrl-C stops everything."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--redis-port", type=int, default=6390, help="port of the embedded Redis"
        )
        parser.add_argument(
            "--demo-rate",
            type=float,
            default=3.0,
            help="demo events per second; 0 turns the demo producer off",
        )

    def handle(
        self, *args, host: str, port: int, redis_port: int, demo_rate: float, **options
    ) -> None:
        stack = devstack.Stack(say=lambda text: self.stdout.write(text))
        signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
        code = 0
        try:
            devstack.stack_up(
                stack, host=host, port=port, redis_port=redis_port, demo_rate=demo_rate
            )
            self.stdout.write(
                self.style.SUCCESS(
                    f"\nMonitor is running: http://{host}:{port}/\n"
                    f"Sign in as {devstack.DEV_USERNAME!r} with password "
                    f"{devstack.dev_password()!r} (kept in .devstack/admin-password).\n"
                    f"Admin: http://{host}:{port}/admin/\n"
                    "To use manage.py against this stack:\n"
                    f"  export DATABASE_URL='{stack.env['DATABASE_URL']}' "
                    f"REDIS_URL='{stack.env['REDIS_URL']}'\n"
                    "Press Ctrl-C to stop.\n"
                )
            )
            code = devstack.stack_watch(stack)
        except KeyboardInterrupt:
            self.stdout.write("\nstopping…")
        except devstack.DevstackError as exc:
            raise CommandError(str(exc)) from None
        finally:
            stack.stop()
        if code:
            raise CommandError("a process of the stack exited")
