"""The ASGI application: REST, Realtime and the fault endpoint over one PostgreSQL db.

Startup order matters: the database exists and is bootstrapped (roles, auth functions,
publication, migrations) before REST loads its schema cache and before Realtime starts
listening, so both see the final schema.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from supabase_local import db
from supabase_local.auth import AuthError, Gateway
from supabase_local.config import ServerConfig
from supabase_local.faults import FAULTS_PATH, FaultInjector
from supabase_local.metrics import metrics_endpoint
from supabase_local.rest import RestApi
from supabase_local.signing_keys import jwks_document

log = logging.getLogger(__name__)


async def _health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def _jwks(request: Request) -> JSONResponse:
    # Public halves only; the legacy HS256 secret is never published, as on Supabase.
    config: ServerConfig = request.app.state.config
    return JSONResponse(
        jwks_document(config.signing_keys), headers={"Cache-Control": "public, max-age=600"}
    )


class _CorsExceptFaults:
    """CORS for every route but ``/__faults``: a page of any origin may call REST, but
    no page may read or change the injected faults."""

    def __init__(self, app: ASGIApp, **options: Any) -> None:
        self.app = app
        self.cors = CORSMiddleware(app, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(FAULTS_PATH):
            await self.app(scope, receive, send)
        else:
            await self.cors(scope, receive, send)


def _is_service_role_key(gateway: Gateway) -> Callable[[str], bool]:
    """A secret key (or a legacy service_role key while legacy keys are on)."""

    def check(token: str) -> bool:
        try:
            return gateway.key_claims(token).role == "service_role"
        except AuthError:
            return False

    return check


def create_app(config: ServerConfig) -> Starlette:
    from supabase_local.realtime import Realtime

    injector = FaultInjector(
        enabled=config.faults_enabled, authorize=_is_service_role_key(config.gateway)
    )
    rest_api = RestApi(config=config, faults=injector)
    realtime = Realtime(config=config, faults=injector)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await db.ensure_database(config.database_url)
        applied = await db.bootstrap(config.database_url, config.migrations_dir)
        if applied:
            log.info("migrations applied: %s", ", ".join(applied))
        await rest_api.startup()
        try:
            await realtime.startup()
            try:
                yield
            finally:
                await realtime.shutdown()
        finally:
            await rest_api.shutdown()

    routes = [
        Route("/health", _health, methods=["GET"]),
        Route("/auth/v1/.well-known/jwks.json", _jwks, methods=["GET"]),
        Route(
            "/metrics",
            metrics_endpoint(realtime, _is_service_role_key(config.gateway)),
            methods=["GET"],
        ),
        *injector.routes(),
        *rest_api.routes(),
        *realtime.routes,
    ]
    # Dashboards on another origin (Django on :8000) call REST from the browser.
    middleware = [
        Middleware(
            _CorsExceptFaults,
            allow_origins=["*"],
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["Content-Range", "Content-Location", "Location", "Preference-Applied"],
        )
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.config = config
    app.state.faults = injector
    app.state.rest = rest_api
    app.state.realtime = realtime
    return app
