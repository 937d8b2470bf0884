"""How to start the web server (HTTP and the legacy WebSocket feed) on a host and port.

The application (``monitor_project.asgi:application``) is plain ASGI and runs unchanged on
either server:

* ``daphne`` (the default, as ``DESIGN.md`` names it): Channels' reference server, on
  Twisted.
* ``uvicorn`` with its sans-I/O ``websockets`` protocol, uvloop and httptools: about half
  daphne's CPU per WebSocket frame sent, because an asyncio transport writes a frame to the
  socket at once where Twisted registers the socket with the event loop and writes on
  the next turn (``docs/latency.md``, "The ASGI server"). Run as daphne runs by default:
  no proxy headers believed (a client's own ``X-Forwarded-For`` must not be; behind a
  proxy, see ``docs/deploy.md``), an access log on standard output, and no lifespan
  protocol (Django has none).
"""

from __future__ import annotations

import sys

APPLICATION = "monitor_project.asgi:application"
ASGI_SERVERS = ("daphne", "uvicorn")


def asgi_server_argv(server: str, *, host: str, port: int) -> list[str]:
    """The command that serves the application with ``server`` on ``host:port``."""
    if server == "daphne":
        return [sys.executable, "-m", "daphne", "-b", host, "-p", str(port), APPLICATION]
    if server == "uvicorn":
        return [sys.executable, "-m", "uvicorn", "--host", host, "--port", str(port),
                "--ws", "websockets-sansio", "--loop", "uvloop", "--http", "httptools",
                "--lifespan", "off", "--no-proxy-headers", APPLICATION]  # fmt: skip
    raise ValueError(f"unknown ASGI server {server!r} (one of {', '.join(ASGI_SERVERS)})")
