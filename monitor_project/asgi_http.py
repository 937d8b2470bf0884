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
Work the view left for after its answer (``monitor_project.after_response``: a publish's
fan-out) runs after the response has been sent, on threads of its own
(``AFTER_RESPONSE_THREADS``), and also when the server abandons the request mid-view.
A thread keeps its database connection between requests for ``CONN_MAX_AGE`` seconds
(``DATABASE_CONN_MAX_AGE``), checked before use (``CONN_HEALTH_CHECKS``), so the pool
size bounds this process's HTTP connections to PostgreSQL. Responses, streaming ones
included, are sent by Django's own code. WebSockets do not come here (Channels).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers import base
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.db import close_old_connections
from django.http import FileResponse
from django.urls import set_script_prefix

from monitor_project import after_response

# Threads for the work after answers (a publish's fan-out), apart from the request pool:
# queued behind new requests there, a fan-out would wait for the whole backlog. Two, so
# that one slow piece (a channel-layer send waiting on Redis) does not hold up the next.
AFTER_RESPONSE_THREADS = 2


class PooledASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        base.BaseHandler.__init__(self)
        self.load_middleware(is_async=False)
        self._pool = ThreadPoolExecutor(
            max_workers=settings.HTTP_WORKER_THREADS, thread_name_prefix="http"
        )
        self._after_pool = ThreadPoolExecutor(
            max_workers=AFTER_RESPONSE_THREADS, thread_name_prefix="http-after"
        )

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django serves HTTP here, not {scope['type']}")
        # As under Django's own handler: thread-sensitive work of this request (a streaming
        # response's synchronous iterator, e.g. a static file) runs on a thread of its own,
        # not on the process-wide one that Channels' database calls share.
        async with ThreadSensitiveContext():
            await self._handle(scope, receive, send)

    async def _handle(self, scope, receive, send) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        responding = asyncio.ensure_future(
            self._in_pool(self._pool, self._respond, scope, body_file)
        )
        try:
            response, after_answer = await asyncio.shield(responding)
        except asyncio.CancelledError:
            # The server gave up on the request (its client went away, a timeout, shutdown)
            # while the view runs on: whatever the view committed still gets its fan-out
            # and the request its clean-up once the view returns.
            responding.add_done_callback(partial(self._finish_abandoned, body_file))
            raise
        try:
            await self.send_response(response, send)
        finally:
            try:
                # Shielded, for the same reason: the answer is out, the fan-out must follow.
                await asyncio.shield(
                    self._in_pool(self._after_pool, self._finish, response, after_answer)
                )
            finally:
                body_file.close()

    def _finish_abandoned(self, body_file, responding: asyncio.Future) -> None:
        body_file.close()
        if responding.cancelled() or responding.exception() is not None:
            return
        response, after_answer = responding.result()
        self._after_pool.submit(self._finish, response, after_answer)

    def _respond(self, scope, body_file):
        """In a worker thread: the response, and the work left for after it is sent."""
        after_response.collecting_start()
        try:
            response = self._response(scope, body_file)
        except BaseException:
            after_response.collected_run(after_response.collecting_stop())
            raise
        return response, after_response.collecting_stop()

    def _finish(self, response, after_answer) -> None:
        """On an after-answer thread, once the response is sent (or the client has gone)."""
        # This thread's connection was last checked by another request's clean-up, if
        # ever: drop it if it is broken or too old, as the start of a request does.
        close_old_connections()
        after_response.collected_run(after_answer)
        # The request-finished signal (close_old_connections) comes last: the work above
        # used this thread's connection.
        response.close()

    def _response(self, scope, body_file):
        """What Django's WSGI handler does for one request."""
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            return error_response
        response = self.get_response(request)
        response._handler_class = self.__class__
        if isinstance(response, FileResponse):
            response.block_size = self.chunk_size  # the ASGI server chunks further
        return response

    async def _in_pool(self, pool: ThreadPoolExecutor, function, *args):
        return await sync_to_async(function, thread_sensitive=False, executor=pool)(*args)
