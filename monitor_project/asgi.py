"""ASGI entry point: Django for HTTP, Channels for the legacy WebSocket feed."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "monitor_project.settings.base")

# Django must be set up before anything imports models.
django.setup(set_prefix=False)

from monitor_project.asgi_http import PooledASGIHandler  # noqa: E402

# One thread hop per request and kept database connections (monitor_project/asgi_http.py).
django_asgi_app = PooledASGIHandler()

from events.supabase_writer import supabase_writer_start  # noqa: E402

# The first event after a (re)start should not wait for the Supabase client to be built.
supabase_writer_start()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from events.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
