import signal

from django.core.management.base import BaseCommand, CommandError
from rich.console import Console

from monitor_project import devstack
from monitor_project.asgi_servers import ASGI_SERVERS


def _stop_like_ctrl_c(signum, frame) -> None:
    raise KeyboardInterrupt


def install_stop_handlers() -> None:
    """Ctrl-C (SIGINT) and a supervisor's SIGTERM both stop the stack in order.

    SIGINT is installed explicitly too: a process started in the background by a
    non-interactive shell inherits SIGINT as ignored, and Python then never turns it into
    KeyboardInterrupt, so `kill -INT` would do nothing.
    """
    signal.signal(signal.SIGINT, _stop_like_ctrl_c)
    signal.signal(signal.SIGTERM, _stop_like_ctrl_c)


class Command(BaseCommand):
    help = (
        "Run the whole product locally: embedded PostgreSQL and Redis unless DATABASE_URL / "
        "REDIS_URL are set, supabase_local unless SUPABASE_URL is set, then the web server "
        "(daphne, or uvicorn with --server uvicorn), the Supabase writer, a Celery worker "
        "and beat, a demo producer and the prober. Logs go to .devstack/logs/; while it "
        "runs, manage.py in this checkout uses the stack (.devstack/settings.json). Ctrl-C "
        "stops everything."
    )
    # The launcher itself reads no setting it checks; the processes it starts run the
    # checks with the stack's settings (migrate first).
    requires_system_checks = []

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000, help="port of the web server")
        parser.add_argument(
            "--redis-port", type=int, default=6390, help="port of the embedded Redis"
        )
        parser.add_argument(
            "--supabase-port",
            type=int,
            default=devstack.SUPABASE_LOCAL_PORT,
            help="port of supabase_local",
        )
        parser.add_argument(
            "--server",
            choices=ASGI_SERVERS,
            default="daphne",
            help="the web server (docs/deploy.md, 'The web server')",
        )
        parser.add_argument(
            "--demo-rate",
            type=float,
            default=3.0,
            help="demo events per second; 0 turns the demo producer off",
        )

    def handle(
        self,
        *args,
        host: str,
        port: int,
        redis_port: int,
        supabase_port: int,
        demo_rate: float,
        server: str,
        **options,
    ) -> None:
        console = Console(highlight=False)
        stack = devstack.Stack(console=console)
        install_stop_handlers()
        logs = devstack.relative(devstack.LOG_DIR)
        console.print(f"Starting Monitor's dev stack (full output in {logs}/)")
        code, failure = 0, None
        try:
            devstack.stack_up(
                stack,
                host=host,
                port=port,
                redis_port=redis_port,
                supabase_port=supabase_port,
                demo_rate=demo_rate,
                web_server=server,
            )
            # soft_wrap: lines are not cut at 80 columns when the output is not a terminal.
            console.print(self.running_message(stack, host=host, port=port), soft_wrap=True)
            code = devstack.stack_watch(stack)
        except KeyboardInterrupt:
            console.print()
        except devstack.DevstackError as exc:
            failure = str(exc)
        finally:
            # A second Ctrl-C must not leave half the stack running.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            console.print("stopping…")
            stack.stop()
            console.print(f"stopped every process of the stack (logs kept in {logs}/)")
        if failure:
            raise CommandError(failure)
        if code:
            raise CommandError("a process of the stack exited")

    @staticmethod
    def running_message(stack: devstack.Stack, *, host: str, port: int) -> str:
        password = devstack.admin_password()
        password_file = devstack.relative(devstack.ADMIN_PASSWORD_FILE)
        sign_in = (
            f"Sign in as [bold]{devstack.DEV_USERNAME}[/bold], password [bold]{password}[/bold] "
            f"(generated once, kept in {password_file}; a password changed in the admin "
            "stays changed)"
            if password
            else f"Sign in as [bold]{devstack.DEV_USERNAME}[/bold] with the password you set"
        )
        shared = devstack.relative(devstack.devstack_settings_path(devstack.DEVSTACK_DIR))
        logs = devstack.relative(devstack.LOG_DIR)
        return (
            f"\n[bold green]Monitor is running:[/bold green] http://{host}:{port}/\n"
            f"{sign_in}\n"
            f"Admin and rollout panel: http://{host}:{port}/admin/\n"
            f"manage.py in this checkout uses this stack while it runs ({shared}), e.g. "
            "[bold].venv/bin/python manage.py reconcile[/bold]\n"
            f"Logs: {logs}/ (one file per process, rewritten on each start)\n"
            "Press Ctrl-C to stop."
        )
