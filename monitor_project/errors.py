"""The site's answer to a refused request (``handler403``).

A ``PermissionDenied`` raised by a view (the rollout panel, the admin) is an expected
answer, not a fault: the caller gets a page in the site's look saying what was refused
and why (or, on the JSON API paths, the API's JSON error), and the log gets Django's one
``Forbidden (Permission denied): <path>`` warning without a traceback
(``monitor_project.log_filters``).
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from events.api import error_response

# Paths answered with JSON errors rather than pages.
JSON_PATH_PREFIXES = ("/api/", "/metrics")


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    reason = str(exception or "")
    if request.path.startswith(JSON_PATH_PREFIXES):
        return error_response(status=403, code="forbidden", message=reason or "you may not do this")
    return render(request, "403.html", {"reason": reason}, status=403)
