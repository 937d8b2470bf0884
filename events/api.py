"""The HTTP API of the event log: ingest (POST) and backfill (GET) on ``/api/events``.

Every error answer is JSON: ``{"error": {"code", "message", "field"?}}``.
"""

import hmac
import json
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from events import selectors, services
from events.metrics import metrics_registry
from events.models import Producer, Sink
from events.ratelimit import rate_limit_wait
from events.validation import EventInputError, parse_event_input


def error_response(
    *, status: int, code: str, message: str, field: str | None = None, headers=None
) -> JsonResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    return JsonResponse({"error": body}, status=status, headers=headers)


def _unauthorized(message: str = "a valid producer token is required") -> JsonResponse:
    return error_response(
        status=401,
        code="unauthorized",
        message=message,
        headers={"WWW-Authenticate": 'Bearer realm="monitor"'},
    )


def _bearer_producer(request: HttpRequest) -> Producer | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return selectors.producer_for_token(token.strip())


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _parse_json_body(request: HttpRequest) -> Any:
    """The request's JSON document, or raise ``EventInputError`` saying what is wrong."""
    content_type = request.content_type or ""
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise EventInputError(
            field="body",
            message="send JSON with Content-Type: application/json",
            status=415,
            code="unsupported_media_type",
        )
    try:
        raw = request.body
    except RequestDataTooBig:
        raise EventInputError(
            field="body",
            message=f"the body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes",
            status=413,
            code="body_too_large",
        ) from None
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise EventInputError(
            field="body", message=f"malformed JSON: {str(exc)[:200]}", code="malformed_json"
        ) from None


def _ingest(request: HttpRequest) -> JsonResponse:
    producer = _bearer_producer(request)
    if producer is None:
        return _unauthorized()
    wait = rate_limit_wait(
        scope="ingest",
        key=producer.pk,
        limit=int(getattr(settings, "INGEST_RATE_PER_MINUTE", 6000)),
    )
    if wait is not None:
        return error_response(
            status=429,
            code="rate_limited",
            message="too many ingest requests for this producer; slow down",
            headers={"Retry-After": str(wait)},
        )
    try:
        document = _parse_json_body(request)
        if isinstance(document, dict) and "events" in document:
            extra = sorted(set(document) - {"events"})
            if extra:
                raise EventInputError(field=extra[0], message="is not a known field")
            items = document["events"]
            if not isinstance(items, list) or not 1 <= len(items) <= settings.EVENTS_MAX_BATCH:
                raise EventInputError(
                    field="events",
                    message=f"must be a list of 1-{settings.EVENTS_MAX_BATCH} events",
                )
            results = services.event_publish_batch(events=items, producer=producer)
            body: dict[str, Any] = {
                "events": [{"seq": r.seq, "duplicate": r.duplicate} for r in results]
            }
        else:
            (result,) = services.event_publish_batch(
                events=[parse_event_input(document)], producer=producer
            )
            body = {"seq": result.seq, "duplicate": result.duplicate}
    except EventInputError as exc:
        return error_response(
            status=exc.status, code=exc.code, message=exc.message, field=exc.field
        )
    except services.IdempotencyConflict as exc:
        return error_response(
            status=409, code="idempotency_conflict", message=str(exc), field="idempotency_key"
        )
    return JsonResponse(body, status=201)


def _int_param(request: HttpRequest, name: str, *, default: int, low: int, high: int) -> int:
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise EventInputError(field=name, message="must be an integer") from None
    if not low <= value <= high:
        raise EventInputError(field=name, message=f"must be between {low} and {high}")
    return value


def _backfill(request: HttpRequest) -> JsonResponse:
    producer = None if request.user.is_authenticated else _bearer_producer(request)
    if not request.user.is_authenticated and producer is None:
        return _unauthorized("sign in or send a producer token")
    synthetic = request.GET.get("synthetic") or "hide"
    if synthetic not in ("hide", "show"):
        return error_response(
            status=400, code="invalid", message="must be hide or show", field="synthetic"
        )
    # Synthetic events (the prober's) are left out unless staff or a producer ask for them.
    include_synthetic = synthetic == "show" and (
        producer is not None or selectors.viewer_sees_synthetic(request.user, requested=True)
    )
    if synthetic == "show" and not include_synthetic:
        return error_response(
            status=403,
            code="forbidden",
            message="only staff can show synthetic events",
            field="synthetic",
        )
    try:
        after = _int_param(request, "after", default=0, low=0, high=2**63 - 1)
        limit = _int_param(
            request,
            "limit",
            default=settings.EVENTS_BACKFILL_DEFAULT_LIMIT,
            low=1,
            high=settings.EVENTS_BACKFILL_MAX_LIMIT,
        )
        sink = request.GET.get("sink") or None
        if sink is not None and sink not in Sink.values:
            raise EventInputError(field="sink", message=f"must be one of {', '.join(Sink.values)}")
    except EventInputError as exc:
        return error_response(status=400, code=exc.code, message=exc.message, field=exc.field)
    events = selectors.events_after(
        after=after, limit=limit, sink=sink, include_synthetic=include_synthetic
    )
    return JsonResponse(
        {
            "events": [selectors.event_to_wire(event) for event in events],
            "next_after": events[-1].seq if events else after,
        }
    )


@csrf_exempt  # POST is token-authenticated; the session is only read on GET
def events_collection(request: HttpRequest) -> JsonResponse:
    if request.method == "POST":
        return _ingest(request)
    if request.method in ("GET", "HEAD"):
        return _backfill(request)
    return error_response(
        status=405,
        code="method_not_allowed",
        message="use GET or POST",
        headers={"Allow": "GET, HEAD, POST"},
    )


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics of the sinks: for staff sessions or ``Bearer <METRICS_TOKEN>``.

    401 when no acceptable credential came (anonymous, or a wrong token); 403 to a
    signed-in user who is not staff and sent no token (signing in again will not help).
    """
    header = request.headers.get("Authorization", "")
    token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
    allowed = (request.user.is_authenticated and request.user.is_staff) or (
        settings.METRICS_TOKEN
        and token
        # Bytes: compare_digest refuses non-ASCII text, and a header may carry any.
        and hmac.compare_digest(token.encode(), settings.METRICS_TOKEN.encode())
    )
    if not allowed and request.user.is_authenticated and not header:
        return error_response(
            status=403, code="forbidden", message="metrics are for staff accounts"
        )
    if not allowed:
        return _unauthorized("staff sign-in or the metrics token is required")
    body = generate_latest(metrics_registry())
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)


@never_cache
def realtime_token(request: HttpRequest) -> JsonResponse:
    """A fresh short-lived Supabase token for the signed-in user (role authenticated)."""
    from events.views import realtime_token_for

    if request.method != "GET":
        return error_response(
            status=405, code="method_not_allowed", message="use GET", headers={"Allow": "GET"}
        )
    if not request.user.is_authenticated:
        return _unauthorized("sign in first")
    token = realtime_token_for(request.user)
    if token is None:
        return error_response(
            status=503,
            code="supabase_not_configured",
            message="Supabase Realtime is not configured on this server",
        )
    return JsonResponse(token)
