"""JSON endpoints of the rollout app.

- ``GET /api/time``: the server clock, for pages to measure their offset.
- ``GET /api/transport``: the signed-in user's transport (pages re-read it when a
  ``transport_changed`` control message arrives).
- ``POST /api/telemetry``: a page's health report. Signed-in and CSRF-protected like any
  form of the site (the page sends the ``X-CSRFToken`` header), rate-limited per user,
  and only for the transport the server puts the user on (else 409, nothing stored).
  What a user's reports weigh is bounded when they are read (``rollout.weighting``).

Errors are JSON ``{"error": {"code", "message", "field"?}}`` as in the events API.
"""

import json
import logging
import time
from functools import wraps

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from events.api import error_response
from events.ratelimit import rate_limit_wait
from rollout import selectors, services
from rollout.conf import rollout_setting
from rollout.telemetry import TelemetryInputError, telemetry_parse

logger = logging.getLogger(__name__)


def signed_in_json(view):
    """401 JSON for anonymous callers (an API answers; it does not redirect to a form)."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        if not request.user.is_authenticated:
            return error_response(status=401, code="unauthorized", message="sign in first")
        return view(request, *args, **kwargs)

    return wrapper


@never_cache
@require_GET
def server_time(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"now_ms": time.time() * 1000})


@never_cache
@require_GET
@signed_in_json
def transport(request: HttpRequest) -> JsonResponse:
    state = selectors.rollout_state_get()
    answer = {
        "transport": selectors.user_transport(request.user),
        "choice": selectors.user_transport_choice(request.user),
        "stage": state.stage,
        "killed": state.killed,
    }
    if request.user.is_staff:  # end users read plain words, never the staff's reason
        answer["reason"] = selectors.rollout_reason_latest()
    return JsonResponse(answer)


def _rate_limited(user_id: int) -> int | None:
    """Seconds to wait when the user is over the per-minute budget, else None."""
    return rate_limit_wait(
        scope="telemetry",
        key=user_id,
        limit=int(rollout_setting("ROLLOUT_TELEMETRY_RATE_PER_MINUTE")),
    )


@require_POST
@signed_in_json
def telemetry(request: HttpRequest) -> JsonResponse:
    if (request.content_type or "") != "application/json":
        return error_response(
            status=415, code="unsupported_media_type", message="send application/json",
            field="body",
        )  # fmt: skip
    wait = _rate_limited(request.user.pk)
    if wait is not None:
        return error_response(
            status=429, code="rate_limited", message="too many telemetry reports; slow down",
            headers={"Retry-After": str(wait)},
        )  # fmt: skip
    try:
        raw = request.body
    except RequestDataTooBig:  # else Django answers an HTML 400
        return error_response(
            status=413, code="body_too_large", message="the report is too large", field="body"
        )
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return error_response(
            status=400, code="malformed_json", message="the body is not JSON", field="body"
        )
    try:
        report = telemetry_parse(data)
    except TelemetryInputError as exc:
        return error_response(status=400, code="invalid", message=exc.message, field=exc.field)
    try:
        recorded = services.telemetry_record(user=request.user, report=report)
    except services.TelemetryTransportMismatch as exc:
        return error_response(
            status=409, code="transport_mismatch", message=str(exc), field="transport"
        )
    except Exception:  # a page's report must never produce a 500; it can retry
        logger.exception("telemetry could not be stored")
        return error_response(status=503, code="unavailable", message="try again later")
    return JsonResponse({"recorded": recorded}, status=202)
