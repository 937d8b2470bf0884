"""Django over ASGI for HTTP, with a request's synchronous work in one thread hop.

Django's own ``ASGIHandler`` runs the middleware chain in async mode: every middleware
(all of ours are synchronous) costs two trips between the event loop and a worker thread,
and each request gets a new worker thread of its own (``ThreadSensitiveContext``), so a
database connection can never be kept from one request to the next. Profiling
``POST /api/events`` (docs/latency.md) put those hops and the new connection per request
at about half of the request's time.

This handler does what a threaded WSGI server does: the request-started signal, the
whole (synchronous) middleware chain and the view, and afterwards ``response.close()``
(the request-finished signal), run on a fixed pool of worker threads, one trip each way.
A thread keeps its database connection between requests for ``CONN_MAX_AGE`` seconds
(``DATABASE_CONN_MAX_AGE``), checked before use (``CONN_HEALTH_CHECKS``), so the pool
size bounds this process's HTTP connections to PostgreSQL. Responses, streaming ones
included, are sent by Django's own code. WebSockets do not come here (Channels).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers import base
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import FileResponse
from django.urls import set_script_prefix


class PooledASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        base.BaseHandler.__init__(self)
        self.load_middleware(is_async=False)
        self._pool = ThreadPoolExecutor(
            max_workers=settings.HTTP_WORKER_THREADS, thread_name_prefix="http"
        )

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django serves HTTP here, not {scope['type']}")
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        try:
            response = await self._in_pool(self._respond, scope, body_file)
            try:
                await self.send_response(response, send)
            finally:
                # Runs the request-finished signal (close_old_connections) in the pool.
                await self._in_pool(response.close)
        finally:
            body_file.close()

    def _respond(self, scope, body_file):
        """In a worker thread: what Django's WSGI handler does for one request."""
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            return error_response
        response = self.get_response(request)
        response._handler_class = self.__class__
        if isinstance(response, FileResponse):
            response.block_size = self.chunk_size  # the ASGI server chunks further
        return response

    async def _in_pool(self, function, *args):
        return await sync_to_async(function, thread_sensitive=False, executor=self._pool)(*args)
